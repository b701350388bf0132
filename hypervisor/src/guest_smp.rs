//! The guest's INIT IPIs, emulated by L0 (as XMHF does).
//!
//! Bochs keeps a physical INIT pending after the INIT VM exit, so a guest's
//! INIT must never reach a processor: L0 traps the guest's ICR writes
//! (`exits::apic_write`, `exits::msr`) and emulates INIT here. The other
//! IPIs reach the hardware unchanged; a STARTUP IPI in particular reaches
//! a target waiting for it in the wait-for-SIPI activity state as a SIPI VM
//! exit (SDM 26.2), which starts it (`exits::init_sipi`).
//!
//! INIT (SDM 10.4.4 / 9.4 MP initialization; 26.2: in VMX non-root an
//! INIT puts the virtual processor in its INIT state, waiting for SIPI):
//! - to a vCPU already waiting for SIPI: nothing to do;
//! - to this CPU: done at once;
//! - to another running vCPU: L0 posts an INIT request in the target's
//!   mailbox and kicks it with an NMI (the "NMI exiting" control makes it a
//!   VM exit; in VMX root the NMI handler counts it); the target takes the
//!   request before its next VM entry (`events::before_entry`). The sender
//!   waits (bounded) for the target to have taken it (an AP then waits for
//!   SIPI, the BSP restarts at the reset vector, SDM 9.4.1), so that the
//!   guest's STARTUP IPIs, sent after its INIT delay, find it there.
//!
//! STARTUP IPIs go only to registered vCPUs (`send_startup`). A SIPI is
//! latched only in wait-for-SIPI; one that reaches a target still in VMX
//! root (its INIT not yet taken, or taken and the VM entry not yet made)
//! would be lost. So the sender also posts it in the target's latch
//! (`shared::sipi_latch`): the target takes it at its SIPI exit or before
//! it enters the guest waiting for SIPI (`events::before_entry`), and the
//! sender repeats the physical SIPI (bounded) while the latch stays full.
//!
//! Kicks are counted, so that the target can tell its own kick NMIs from
//! the guest's NMIs (which it injects). Two NMIs pending at once merge into
//! one on the hardware: a guest NMI that arrives while a kick is pending is
//! lost, as it would be if the guest's own NMIs collided.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use shared::apic::{ApicMode, Icr};
use shared::ipi::{self, ApicIdentity};
use shared::percpu::MAX_CPUS;
use shared::sipi_latch::SipiLatch;

/// What other CPUs may know about and ask of one vCPU.
struct Shared {
    /// The vCPU exists (its CPU runs the guest).
    present: AtomicBool,
    apic_id: AtomicU32,
    /// The guest's xAPIC LDR and DFR, recorded when it writes them
    /// (destination matching in logical mode).
    ldr: AtomicU32,
    dfr: AtomicU32,
    /// In the wait-for-SIPI activity state.
    waiting_for_sipi: AtomicBool,
    /// INIT requested by another CPU.
    init_request: AtomicBool,
    /// INITs it has taken (the senders' acknowledgement).
    inits_taken: AtomicU32,
    /// A SIPI sent to it after an INIT, until it takes it.
    sipi: SipiLatch,
    /// Kick NMIs sent to it and not yet seen by it.
    kicks: AtomicU32,
}

static SHARED: [Shared; MAX_CPUS] = [const {
    Shared {
        present: AtomicBool::new(false),
        apic_id: AtomicU32::new(0),
        ldr: AtomicU32::new(0),
        dfr: AtomicU32::new(u32::MAX),
        waiting_for_sipi: AtomicBool::new(false),
        init_request: AtomicBool::new(false),
        inits_taken: AtomicU32::new(0),
        sipi: SipiLatch::new(),
        kicks: AtomicU32::new(0),
    }
}; MAX_CPUS];

/// How long a sender waits for a target to take its INIT (a CPU in VMX
/// root may be busy, e.g. printing), in microseconds.
const INIT_ACK_TIMEOUT_US: u32 = 20_000;

/// How often a sender repeats a SIPI its target has not taken, in
/// microseconds.
const SIPI_REPEAT_US: u32 = 1_000;

fn me(index: usize) -> Option<&'static Shared> {
    SHARED.get(index)
}

/// Registers CPU `index` (APIC ID `apic_id`) before it first enters the
/// guest; `waiting`: it starts in wait-for-SIPI.
pub fn register(index: usize, apic_id: u32, waiting: bool) {
    if let Some(s) = me(index) {
        s.apic_id.store(apic_id, Ordering::Relaxed);
        s.waiting_for_sipi.store(waiting, Ordering::Relaxed);
        s.present.store(true, Ordering::Release);
    }
}

/// The guest wrote its xAPIC LDR (`ldr = true`) or DFR on CPU `index`.
pub fn record_logical(index: usize, ldr: bool, value: u32) {
    if let Some(s) = me(index) {
        let r = if ldr { &s.ldr } else { &s.dfr };
        r.store(value, Ordering::Relaxed);
    }
}

/// CPU `index` entered wait-for-SIPI (INIT) or left it (SIPI).
pub fn set_waiting(index: usize, waiting: bool) {
    if let Some(s) = me(index) {
        if !waiting {
            // A STARTUP supersedes any INIT requested before it.
            s.init_request.store(false, Ordering::Relaxed);
            s.sipi.clear();
        }
        s.waiting_for_sipi.store(waiting, Ordering::Release);
    }
}

/// Posts an INIT request for CPU `index` (the CPU itself, when it cannot
/// take its own INIT at once; see `exits::init_self`).
pub fn request_init(index: usize) {
    if let Some(s) = me(index) {
        s.init_request.store(true, Ordering::Release);
    }
}

/// Kicks vCPU `index` with an NMI, counted so that it does not take it for
/// the guest's (it exits, or its host NMI handler runs, and it does what
/// is asked of it before its next VM entry). Returns whether the NMI was
/// sent.
pub fn kick(index: usize) -> bool {
    let Some(t) = me(index) else { return false };
    t.kicks.fetch_add(1, Ordering::AcqRel);
    let sent = crate::lapic::send_nmi(t.apic_id.load(Ordering::Relaxed));
    if !sent {
        // Not sent: no kick will arrive, so none may be counted (it would
        // swallow the guest's next NMI).
        let _ = t
            .kicks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| {
                Some(k.saturating_sub(1))
            });
    }
    sent
}

/// Whether vCPU `index` exists and may be running guest code (not
/// waiting for SIPI).
pub fn runs_guest_code(index: usize) -> bool {
    me(index).is_some_and(|s| {
        s.present.load(Ordering::Acquire) && !s.waiting_for_sipi.load(Ordering::Acquire)
    })
}

/// CPU `index` took an INIT: it waits for SIPI (`waiting`, an AP) or
/// runs from the reset vector (the BSP).
pub fn init_taken(index: usize, waiting: bool) {
    set_waiting(index, waiting);
    if let Some(s) = me(index) {
        s.inits_taken.fetch_add(1, Ordering::AcqRel);
    }
}

/// Takes CPU `index`'s INIT request, if any.
pub fn take_init_request(index: usize) -> bool {
    me(index).is_some_and(|s| s.init_request.swap(false, Ordering::AcqRel))
}

/// Takes the SIPI posted for CPU `index` (waiting for SIPI), if any.
pub fn take_sipi(index: usize) -> Option<u8> {
    me(index).and_then(|s| s.sipi.take())
}

/// Of `nmis` NMIs seen by CPU `index`, how many were not kicks (i.e. are
/// the guest's).
pub fn guest_nmis(index: usize, nmis: u32) -> u32 {
    let Some(s) = me(index) else { return nmis };
    let mut kicks = s.kicks.load(Ordering::Acquire);
    loop {
        let used = kicks.min(nmis);
        match s.kicks.compare_exchange_weak(
            kicks,
            kicks - used,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => return nmis - used,
            Err(k) => kicks = k,
        }
    }
}

/// Emulates the guest's INIT `icr` sent in `mode` by CPU `sender`. Returns
/// whether the sender itself is a target (the caller then INITs it, after
/// this has dealt with the others).
pub fn send_init(sender: usize, icr: &Icr, mode: ApicMode) -> bool {
    let mut to_self = false;
    let mut waiting_for = [None; MAX_CPUS];
    for (i, t) in targets(sender, icr, mode) {
        if i == sender {
            to_self = true;
        } else if !t.waiting_for_sipi.load(Ordering::Acquire) {
            waiting_for[i] = Some(t.inits_taken.load(Ordering::Acquire));
            t.init_request.store(true, Ordering::Release);
            kick(i);
        }
    }
    for (i, t) in SHARED.iter().enumerate() {
        let Some(taken) = waiting_for[i] else {
            continue;
        };
        let mut waited = 0;
        while t.inits_taken.load(Ordering::Acquire) == taken && waited < INIT_ACK_TIMEOUT_US {
            shared::delay::udelay(10);
            waited += 10;
        }
    }
    to_self
}

/// The registered vCPUs (index and state) that the IPI `icr`, written in
/// `mode` by CPU `sender`, addresses (none if the sender is unknown).
fn targets(
    sender: usize,
    icr: &Icr,
    mode: ApicMode,
) -> impl Iterator<Item = (usize, &'static Shared)> + '_ {
    let sender_id = me(sender).map(|s| s.apic_id.load(Ordering::Relaxed));
    SHARED.iter().enumerate().filter(move |(_, t)| {
        let Some(sender_id) = sender_id else {
            return false;
        };
        let id = ApicIdentity {
            apic_id: t.apic_id.load(Ordering::Relaxed),
            ldr: t.ldr.load(Ordering::Relaxed),
            dfr: t.dfr.load(Ordering::Relaxed),
        };
        t.present.load(Ordering::Acquire) && ipi::accepts(icr, mode, sender_id, &id)
    })
}

/// Whether the ICR value `value` (written in `mode`) is a STARTUP IPI.
pub fn is_startup(value: u64, mode: ApicMode) -> Option<Icr> {
    ipi::decode(value, mode).filter(|icr| icr.delivery_mode == shared::apic::DeliveryMode::StartUp)
}

/// Sends the guest's STARTUP `icr` (written in `mode` by CPU `sender`) to
/// the registered vCPUs it addresses only, one physical STARTUP each: a
/// processor that does not run under L0 (one the firmware does not list,
/// or lists as disabled) must never start guest code outside VMX, whatever
/// destination (shorthand, logical, broadcast) the guest used.
pub fn send_startup(sender: usize, icr: &Icr, mode: ApicMode) {
    let mut posted = [false; MAX_CPUS];
    for (i, t) in targets(sender, icr, mode) {
        let expects =
            t.waiting_for_sipi.load(Ordering::Acquire) || t.init_request.load(Ordering::Acquire);
        posted[i] = i != sender && t.sipi.post(icr.vector, expects);
        crate::lapic::send_startup(t.apic_id.load(Ordering::Relaxed), icr.vector);
    }
    // A target that was still in VMX root missed the physical SIPI; once
    // it waits for SIPI in the guest, it takes it from the latch or from
    // the repeated SIPI, whichever comes first.
    for (i, t) in SHARED.iter().enumerate() {
        let mut waited = 0;
        while posted[i] && t.sipi.is_full() && waited < INIT_ACK_TIMEOUT_US {
            shared::delay::udelay(SIPI_REPEAT_US);
            waited += SIPI_REPEAT_US;
            if t.sipi.is_full() {
                crate::lapic::send_startup(t.apic_id.load(Ordering::Relaxed), icr.vector);
            }
        }
    }
}
