//! The SMP cases (2+ CPUs): CPU 1 runs an L2 that loops VMCALLs (one
//! nested entry and exit per iteration, reading one EPT12-mapped
//! quadword each time), while the BSP, in VMX root operation:
//! 1. `ept12-changed-on-other-cpu`: changes the EPT12 entry of the page L2
//!    reads (page A to page B) and does INVEPT on itself. INVEPT acts on
//!    the executing processor only (SDM 29.4.3.1, 31.3 INVEPT), so until
//!    CPU 1 does its own INVEPT its L2 may read A or B; after it, B.
//! 2. `nmi-storm`: sends NMIs to CPU 1 (NMI exiting on in its VMCS). Each
//!    NMI reaches L1 as an NMI exit (reason 0, vector 2) when it arrives
//!    in L2, or LHV's NMI handler when it arrives in VMX root. An NMI that
//!    arrives while another is pending or blocked may merge with it (the
//!    processor latches one, SDM Vol. 3A 6.7.1), so 1 <= received <= sent.
//! 3. `nmi-paced`: sends NMIs one at a time, each after CPU 1 took the
//!    previous one: nothing can merge, so none may be lost (received ==
//!    sent; the wait for each is bounded).
//! 4. `init-storm`: sends INITs to CPU 1. In VMX non-root operation INIT
//!    causes an INIT-signal exit (reason 3, SDM 26.2); in VMX root it is
//!    blocked (SDM 24.8 "Restrictions on VMX operation": held pending) and
//!    so exits at the next VM entry; one held INIT absorbs the INITs after
//!    it: 1 <= INIT exits <= sent. (Bochs drops an INIT that arrives in
//!    VMX root instead of holding it, so L2 spins to take most of them.) CPU 1 stays in VMX root
//!    at the end (it never executes VMXOFF with an INIT latched).
//!
//! Every phase must end (no deadlock: bounded waits), and L0 must answer
//! Stats after them (in `super::run`).

use ::core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use lhv::ept_layout::{self, IdentityEpt, TablePhys};
use lhv::negative_cases::{Outcome, Skip};
use shared::apic::LocalApic;
use shared::boot::BootInfo;
use shared::boot::layout::phys_of;
use shared::cpu_println;
use shared::percpu;
use shared::vmx::controls::{PinBased, SecondaryProcBased};
use shared::vmx::exit::{ExitReason, ExitReasonField, InterruptionInfo, InterruptionType};
use shared::vmx::insn::{InveptDescriptor, InveptType, VmcsRegion, invept};
use shared::vmx::{VmcsField as F, VmxCaps};

use super::Verdict;
use super::ept12::{leaf, pt_index};
use crate::events;
use crate::exit::{self, EntryOutcome, gpr};
use crate::negative::Page;
use crate::percpu_cell::per_cpu_static;
use crate::test_loop::Ctx;
use crate::vmcs_setup::{Controls, RFLAGS_FIXED};

const EPT_CASE: &str = "ept12-changed-on-other-cpu";
const NMI_CASE: &str = "nmi-storm";
const PACED_CASE: &str = "nmi-paced";
const INIT_CASE: &str = "init-storm";

/// The names of the SMP cases, in order.
pub const NAMES: &[&str] = &[EPT_CASE, NMI_CASE, PACED_CASE, INIT_CASE];

/// NMIs and INITs the BSP sends.
const NMIS: u64 = 64;
const INITS: u64 = 16;
/// NMIs of the paced phase (each waits for the previous to be taken).
const PACED_NMIS: u64 = 32;
/// Round trips CPU 1 makes after a phase ends, to take what is pending.
const DRAIN: u32 = 64;
/// Polls of a bounded wait (tens of seconds of Bochs time at most).
const POLLS: u64 = 200_000_000;
/// Spin iterations between two IPIs (lets some land in L2, some in L1).
const GAP: u32 = 200;

/// The phases, in order (PHASE, set by the BSP; ACK, by CPU 1 once the
/// previous phase is drained).
const SETUP: u32 = 0;
const EPT: u32 = 1;
const NMI: u32 = 2;
const NMI_PACED: u32 = 3;
const INIT: u32 = 4;
const END: u32 = 5;

static PHASE: AtomicU32 = AtomicU32::new(SETUP);
static ACK: AtomicU32 = AtomicU32::new(u32::MAX);
/// CPU 1's failure (an unexpected exit or entry failure), 0 if none: the
/// raw exit-reason field, or u64::MAX for a VMfail.
static AP_ERROR: AtomicU64 = AtomicU64::new(0);
static NMI_EXITS: AtomicU64 = AtomicU64::new(0);
static INIT_EXITS: AtomicU64 = AtomicU64::new(0);
/// NMI exits whose saved guest interruptibility state says "blocking by
/// NMI". The NMI that causes the exit blocks NMIs only after the exit
/// completes (SDM 28.1), so L2's saved state is L2's own blocking, 0 here
/// (L2 never takes an NMI); Bochs saves 1, which (with NMI exiting) would
/// keep L2 blocking NMIs for as long as it runs (27.6.1). L1 clears the bit
/// before it resumes L2 (a no-op where the SDM is followed).
static NMI_EXITS_BLOCKED: AtomicU64 = AtomicU64::new(0);
/// EPT phase: the last value L2 read, whether it read one not A or B,
/// whether the BSP changed the entry, and what L2 read after CPU 1's own
/// INVEPT.
static SEEN_A: AtomicBool = AtomicBool::new(false);
static EPT_BAD: AtomicU64 = AtomicU64::new(0);
static EPT_BAD_SEEN: AtomicBool = AtomicBool::new(false);
static CHANGED: AtomicBool = AtomicBool::new(false);
static AFTER_INVEPT: AtomicU64 = AtomicU64::new(0);
static AFTER_DONE: AtomicBool = AtomicBool::new(false);
/// CPU 1's EPTP (0: no EPT).
static EPTP: AtomicU64 = AtomicU64::new(0);

static CAPS: spin::Once<&'static VmxCaps> = spin::Once::new();
static ON_BOCHS: AtomicBool = AtomicBool::new(false);

per_cpu_static!(
    static VMCS: VmcsRegion = VmcsRegion::new();
);

/// L2's EPT12 (built by the BSP before CPU 1 starts, changed by it later).
struct Tables(::core::cell::UnsafeCell<IdentityEpt>);

// SAFETY: the BSP writes the tables before starting CPU 1 and then only
// the one entry it changes (an aligned u64, written volatile); the
// processors read them.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables(::core::cell::UnsafeCell::new(IdentityEpt::new()));
/// L2 reads the first quadword of its guest-physical page `PROBE`, which
/// EPT12 maps to `PAGE_A`, later `PAGE_B`.
static PROBE: Page = Page::new();
static PAGE_A: Page = Page::new();
static PAGE_B: Page = Page::new();
const VALUE_A: u64 = 0x4550_5431_3241_0000;
const VALUE_B: u64 = 0x4550_5431_3242_0000;

/// L2's stack.
static L2_STACK: Page = Page::new();

// L2: read [RDI] into RAX, spin RSI times (so that CPU 1 spends most of
// its time in L2, where an INIT is not blocked: Bochs drops an INIT that
// arrives in VMX root instead of holding it), VMCALL, again.
::core::arch::global_asm!(
    ".section .text.lhv_hostile_l1_smp, \"ax\"",
    ".global lhv_hostile_l1_loop",
    "lhv_hostile_l1_loop:",
    "mov rax, [rdi]",
    "mov rcx, rsi",
    "2:",
    "pause",
    "loop 2b",
    "vmcall",
    "jmp lhv_hostile_l1_loop",
    ".previous",
);

/// L2's spin count per iteration.
const L2_SPIN: u64 = 2000;

unsafe extern "C" {
    fn lhv_hostile_l1_loop();
}

fn ept_supported(caps: &VmxCaps) -> bool {
    super::ept12::usable(caps).is_ok()
}

fn build_ept() -> u64 {
    // SAFETY: CPU 1 is not started yet; nothing else uses the tables.
    let t = unsafe { &mut *TABLES.0.get() };
    let phys = TablePhys {
        pml4: phys_of(&t.pml4),
        pdpt: phys_of(&t.pdpt),
        pd: [0, 1, 2, 3].map(|i| phys_of(&t.pd[i])),
        pt: phys_of(&t.pt),
    };
    t.build(&phys, PROBE.pa());
    PAGE_A.set(0, VALUE_A);
    PAGE_B.set(0, VALUE_B);
    PROBE.clear();
    t.pt.0[pt_index(PROBE.pa())] = leaf(PAGE_A.pa());
    ept_layout::eptp(phys.pml4, false)
}

/// Single-context INVEPT of `eptp` on this CPU (in VMX root operation,
/// EPT and the type checked by [`ept_supported`]).
fn invept_here(eptp: u64) -> bool {
    let desc = InveptDescriptor { eptp, reserved: 0 };
    // SAFETY: both callers run in VMX root operation (the BSP keeps the
    // suite's VMXON, CPU 1 its own) with EPT and single-context INVEPT
    // supported; INVEPT only drops cached translations.
    unsafe { invept(InveptType::SingleContext, &desc) }.is_ok()
}

/// Points the probe's EPT12 entry at page B (a single aligned store).
fn remap_to_b() {
    // SAFETY: see `impl Sync for Tables`: one aligned quadword store of an
    // entry CPU 1's processor may be walking (an atomic update, as SDM
    // 29.4.3 expects software to make).
    unsafe {
        let e = &raw mut (*TABLES.0.get()).pt.0[pt_index(PROBE.pa())];
        e.write_volatile(leaf(PAGE_B.pa()));
    }
}

/// Runs the SMP cases from the BSP (in VMX root operation, `env` of the
/// suite kept): starts the APs, drives the phases, and returns each case's
/// verdict. With one CPU every case SKIPs.
pub fn run(
    boot: &'static BootInfo,
    caps: &'static VmxCaps,
    on_bochs: bool,
    l0: bool,
) -> [(&'static str, Result<Verdict, Skip>); 4] {
    CAPS.call_once(|| caps);
    ON_BOCHS.store(on_bochs, Ordering::Relaxed);
    let ept = ept_supported(caps);
    if ept {
        EPTP.store(build_ept(), Ordering::Release);
    }
    events::install_nmi();
    let smp = shared::smp::start_aps(boot, ap_main);
    shared::println!("HOSTILE-L1: {} CPUs online", smp.online);
    let one = Skip::Unsupported("one CPU");
    if smp.online < 2 {
        return [
            (EPT_CASE, Err(one)),
            (NMI_CASE, Err(one)),
            (PACED_CASE, Err(one)),
            (INIT_CASE, Err(one)),
        ];
    }
    let target = percpu::get(1).map_or(u32::MAX, |c| c.apic_id());
    let ept_verdict = if ept {
        Ok(ept_phase())
    } else {
        Err(Skip::Unsupported("EPT with single-context INVEPT"))
    };
    let send_nmi = || events::send_nmi(target);
    let nmis = || NMI_EXITS.load(Ordering::Acquire) + events::NMI_COUNT[1].load(Ordering::Acquire);
    let nmi_verdict = storm(&Storm {
        phase: NMI,
        count: NMIS,
        send: &send_nmi,
        received: &nmis,
        paced: false,
        departure: None,
    });
    let paced_verdict = storm(&Storm {
        phase: NMI_PACED,
        count: PACED_NMIS,
        send: &send_nmi,
        received: &nmis,
        paced: true,
        departure: None,
    });
    // Bare Bochs departs from 24.8/26.2 for INIT (under L0 the INIT is
    // L0's emulation, judged strictly).
    let init_departure = (on_bochs && !l0).then_some(
        "keeps an INIT pending after its INIT-signal exit (an exit at every VM entry) and drops an INIT that arrives in VMX root",
    );
    let send_init = || {
        let apic = LocalApic::current();
        apic.send_init(target).is_ok() && apic.wait_icr_idle().is_ok()
    };
    let inits = || INIT_EXITS.load(Ordering::Acquire);
    let init_verdict = storm(&Storm {
        phase: INIT,
        count: INITS,
        send: &send_init,
        received: &inits,
        paced: false,
        departure: init_departure,
    });
    let ended = enter_phase(END);
    let end = |v: Verdict| if ended { v } else { timeout() };
    [
        (EPT_CASE, ept_verdict.map(end)),
        (NMI_CASE, nmi_verdict.map(end)),
        (PACED_CASE, paced_verdict.map(end)),
        (INIT_CASE, init_verdict.map(end)),
    ]
}

/// The verdict of a wait that timed out (CPU 1 stuck, or an IPI never
/// taken): said on the console, and a value no run gives (the phase CPU 1
/// last acknowledged).
fn timeout() -> Verdict {
    cpu_println!(
        "HOSTILE-L1: CPU 1 did not answer in time (phase {}, acknowledged {})",
        PHASE.load(Ordering::Acquire),
        ACK.load(Ordering::Acquire)
    );
    Verdict::is(
        Outcome::Success,
        Outcome::WrongValue {
            expected: 0,
            got: u64::from(ACK.load(Ordering::Acquire)),
        },
    )
}

/// CPU 1's failure, if any.
fn ap_failed() -> Option<Verdict> {
    match AP_ERROR.load(Ordering::Acquire) {
        0 => None,
        u64::MAX => Some(Verdict::is(Outcome::Success, Outcome::FailValid(0))),
        r => Some(Verdict::is(
            Outcome::Success,
            Outcome::Exit {
                reason: r as u32,
                qualification: 0,
            },
        )),
    }
}

/// Starts `phase` and waits until CPU 1 has drained the previous one.
fn enter_phase(phase: u32) -> bool {
    PHASE.store(phase, Ordering::Release);
    events::wait_until(POLLS, || {
        ACK.load(Ordering::Acquire) == phase || AP_ERROR.load(Ordering::Acquire) != 0
    }) && AP_ERROR.load(Ordering::Acquire) == 0
}

fn ept_phase() -> Verdict {
    if !enter_phase(EPT) {
        return ap_failed().unwrap_or_else(timeout);
    }
    if !events::wait_until(POLLS, || SEEN_A.load(Ordering::Acquire)) {
        return ap_failed().unwrap_or_else(timeout);
    }
    remap_to_b();
    // INVEPT here flushes this CPU only (31.3): CPU 1 must do its own.
    if !invept_here(EPTP.load(Ordering::Acquire)) {
        return Verdict::is(Outcome::Success, Outcome::FailValid(0));
    }
    CHANGED.store(true, Ordering::Release);
    if !events::wait_until(POLLS, || {
        AFTER_DONE.load(Ordering::Acquire) || AP_ERROR.load(Ordering::Acquire) != 0
    }) {
        return timeout();
    }
    if let Some(v) = ap_failed() {
        return v;
    }
    if EPT_BAD_SEEN.load(Ordering::Acquire) {
        let bad = EPT_BAD.load(Ordering::Acquire);
        return Verdict::is(Outcome::Success, super::value(VALUE_B, bad));
    }
    Verdict::is(
        Outcome::Success,
        super::value(VALUE_B, AFTER_INVEPT.load(Ordering::Acquire)),
    )
}

/// How a storm phase sends.
struct Storm<'a> {
    /// Its phase.
    phase: u32,
    /// IPIs to send.
    count: u64,
    /// Sends one (false if the ICR stayed busy).
    send: &'a dyn Fn() -> bool,
    /// What CPU 1 has received so far (cumulative).
    received: &'a dyn Fn() -> u64,
    /// Wait for each IPI to be received before the next: then none may be
    /// lost (received == sent); otherwise 1 <= received <= sent.
    paced: bool,
    /// A known departure of the platform that SKIPs a failed check.
    departure: Option<&'static str>,
}

/// A storm phase: `send` `count` times, then the next phase (CPU 1 drains
/// this one first).
fn storm(s: &Storm) -> Result<Verdict, Skip> {
    if !enter_phase(s.phase) {
        return Ok(ap_failed().unwrap_or_else(timeout));
    }
    let before = (s.received)();
    let mut sent = 0;
    for i in 0..s.count {
        if (s.send)() {
            sent += 1;
        }
        if s.paced {
            // Bounded: an NMI never taken is a lost NMI (the check fails).
            events::wait_until(POLLS / s.count, || (s.received)() - before >= sent);
        } else {
            for _ in 0..GAP * (i as u32 % 4) {
                ::core::hint::spin_loop();
            }
        }
    }
    if !enter_phase(s.phase + 1) {
        return Ok(ap_failed().unwrap_or_else(timeout));
    }
    let got = (s.received)() - before;
    cpu_println!(
        "HOSTILE-L1: phase {}: sent {sent}, CPU 1 received {got} (so far NMI exits {}, {} with blocking by NMI saved; NMI handler {})",
        s.phase,
        NMI_EXITS.load(Ordering::Acquire),
        NMI_EXITS_BLOCKED.load(Ordering::Acquire),
        events::NMI_COUNT[1].load(Ordering::Acquire)
    );
    let ok = sent == s.count && got >= 1 && got <= sent && (!s.paced || got == sent);
    if let (false, Some(why)) = (ok, s.departure) {
        return Err(Skip::Bochs(why));
    }
    Ok(Verdict::is(
        Outcome::Success,
        if ok {
            Outcome::Success
        } else {
            Outcome::WrongValue {
                expected: sent,
                got,
            }
        },
    ))
}

fn ap_main() -> ! {
    let cpu = percpu::current().index();
    let caps = *CAPS.get().expect("set before the APs start");
    let vmx = shared::vmx_root::enter_or_halt(caps);
    if cpu != 1 {
        // Only CPU 1 takes part; the others wait in VMX root.
        shared::x86::halt_forever()
    }
    let mut ctx = Ctx::new(
        cpu,
        vmx,
        caps,
        lhv::opt::LhvOpt::empty(),
        ON_BOCHS.load(Ordering::Relaxed),
        VMCS.claim(cpu),
    );
    let mut c = Controls::base();
    c.pin |= PinBased::NMI_EXITING;
    let eptp = EPTP.load(Ordering::Acquire);
    if eptp != 0 {
        c.proc2 |= SecondaryProcBased::ENABLE_EPT;
    }
    let top = &L2_STACK as *const Page as u64 + 4096;
    ctx.init_vmcs(
        &c,
        lhv_hostile_l1_loop as *const () as u64,
        top - 16,
        RFLAGS_FIXED,
    );
    ctx.write(F::ExceptionBitmap, u32::MAX.into());
    if eptp != 0 {
        ctx.write(F::EptPointer, eptp);
        let _ = invept_here(eptp);
    }
    ctx.regs.gpr[gpr::RDI] = &PROBE as *const Page as u64;
    ctx.regs.gpr[gpr::RSI] = L2_SPIN;
    ap_loop(&mut ctx, eptp)
}

fn ap_loop(ctx: &mut Ctx, eptp: u64) -> ! {
    let mut phase = SETUP;
    let mut drain = 0u32;
    let mut invept_done = false;
    loop {
        // SAFETY: the current VMCS holds this CPU's host state with
        // HOST_RIP = exit::host_rip() (init_vmcs) and an L2 of LHV's own
        // code, stack and pages.
        let r = unsafe { exit::enter(&mut ctx.regs, ctx.launched) };
        if r != EntryOutcome::Exited {
            AP_ERROR.store(u64::MAX, Ordering::Release);
            shared::x86::halt_forever()
        }
        ctx.launched = true;
        let field = ExitReasonField(ctx.read(F::VmExitReason) as u32);
        let mut read = None;
        match field.basic() {
            ExitReason::Vmcall if !field.is_entry_failure() => {
                let rip = ctx.read(F::GuestRip);
                let len = ctx.read(F::VmExitInstructionLength);
                ctx.write(F::GuestRip, rip + len);
                read = Some(ctx.regs.gpr[gpr::RAX]);
            }
            ExitReason::ExceptionOrNmi => {
                let info = InterruptionInfo(ctx.read(F::VmExitInterruptionInfo) as u32);
                if info.kind() != Some(InterruptionType::Nmi) {
                    AP_ERROR.store(field.0.into(), Ordering::Release);
                    shared::x86::halt_forever()
                }
                NMI_EXITS.fetch_add(1, Ordering::AcqRel);
                let blocking = u64::from(shared::nmi_inject::BLOCKING_BY_NMI);
                let state = ctx.read(F::GuestInterruptibilityState);
                if state & blocking != 0 {
                    NMI_EXITS_BLOCKED.fetch_add(1, Ordering::AcqRel);
                    ctx.write(F::GuestInterruptibilityState, state & !blocking);
                }
                // The NMI exit left blocking by NMI in L1 (SDM 28.5.5:
                // VM exits caused by NMIs block NMIs): IRET ends it, so
                // the next NMI is not held back.
                events::iret_to_self();
            }
            ExitReason::InitSignal => {
                INIT_EXITS.fetch_add(1, Ordering::AcqRel);
            }
            ExitReason::ExternalInterrupt => {}
            _ => {
                AP_ERROR.store(field.0.into(), Ordering::Release);
                shared::x86::halt_forever()
            }
        }
        // The phase machine.
        let want = PHASE.load(Ordering::Acquire);
        if want != phase {
            // Drain the previous phase first.
            if drain < DRAIN {
                drain += 1;
                continue;
            }
            drain = 0;
            // End blocking by NMI of an NMI taken in VMX root, so that a
            // held NMI lands now (in LHV's handler).
            events::iret_to_self();
            phase = want;
            ACK.store(phase, Ordering::Release);
            if phase == END {
                // Stay in VMX root (INIT stays blocked): never VMXOFF.
                shared::x86::halt_forever()
            }
            continue;
        }
        if let (EPT, true, Some(v)) = (phase, eptp != 0, read) {
            if v != VALUE_A && v != VALUE_B {
                EPT_BAD.store(v, Ordering::Release);
                EPT_BAD_SEEN.store(true, Ordering::Release);
            }
            if invept_done {
                AFTER_INVEPT.store(v, Ordering::Release);
                AFTER_DONE.store(true, Ordering::Release);
            } else if v == VALUE_A {
                SEEN_A.store(true, Ordering::Release);
            }
            if CHANGED.load(Ordering::Acquire) && !invept_done {
                // This CPU's INVEPT: now the new entry must be used.
                if !invept_here(eptp) {
                    AP_ERROR.store(u64::MAX, Ordering::Release);
                    shared::x86::halt_forever()
                }
                invept_done = true;
            }
        }
    }
}
