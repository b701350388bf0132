//! IDT handlers shared by L1 and L2 (both use LHV's IDT and TSS) for the
//! NMI and INTERCEPTS options: an NMI counter, and a recorder of the events
//! L2 receives (vector, error code, return RIP, CR2). The handlers run with
//! NMIs possibly pending and never take locks or print: they only store to
//! per-CPU atomics; the checks and prints happen later, outside them.
//!
//! Also the small helpers around NMIs: an IRET to the next instruction (to
//! end blocking by NMI in L1, SDM Vol. 3A 6.7.1), sending an NMI by APIC ID
//! (the ICR's "self" shorthand is not valid with the NMI delivery mode, SDM
//! Vol. 3A 11.6.1, so a self-NMI names its own APIC ID), bounded waits.

use ::core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use shared::apic::{Icr, LocalApic};
use shared::percpu::{self, MAX_CPUS};
use shared::trap::{self, Claim, TrapFrame, vector};

/// NMIs that reached LHV's NMI handler (vector 2 through the IDT, in L1 or
/// as an event delivered to L2), per CPU.
pub static NMI_COUNT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// The RIP the last NMI interrupted (its IRET frame), per CPU.
pub static NMI_LAST_RIP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// NMIs sent to each CPU (by its index) with [`send_nmi`], counted before
/// the ICR write so that a count of received NMIs never runs ahead.
pub static NMI_SENT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// NMIs L1 injected into its L2 (VM-entry interruption information, type
/// NMI), per CPU: they reach LHV's handler too (L2 shares the IDT) without
/// ever being sent. See [`note_injected_nmi`].
pub static NMI_INJECTED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Records that L1 set up the injection of an NMI into L2 at the next VM
/// entry (the options that inject one assert that L2's handler took it).
pub fn note_injected_nmi(cpu: usize) {
    NMI_INJECTED[cpu].fetch_add(1, Ordering::AcqRel);
}

/// The index of the CPU with `apic_id`, if it is online.
fn cpu_of(apic_id: u32) -> Option<usize> {
    (0..MAX_CPUS).find(|&i| percpu::get(i).is_some_and(|p| p.is_online() && p.apic_id() == apic_id))
}

/// What the last recorded event was, per CPU.
pub struct Record {
    /// Set by whoever expects one event; the handler clears it.
    pub armed: AtomicBool,
    /// Where the handler resumes (0: return to the pushed RIP).
    pub recover: AtomicU64,
    /// Vector.
    pub vector: AtomicU64,
    /// Error code (0 for vectors without one).
    pub error_code: AtomicU64,
    /// Pushed RIP.
    pub rip: AtomicU64,
    /// CR2 at delivery.
    pub cr2: AtomicU64,
    /// Events recorded.
    pub count: AtomicU64,
}

/// One record per CPU.
pub static RECORDS: [Record; MAX_CPUS] = [const {
    Record {
        armed: AtomicBool::new(false),
        recover: AtomicU64::new(0),
        vector: AtomicU64::new(0),
        error_code: AtomicU64::new(0),
        rip: AtomicU64::new(0),
        cr2: AtomicU64::new(0),
        count: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// The vectors [`install_recorder`] takes over: #BP, #OF, #GP, #PF, and two
/// vectors LHV uses for nothing else (injected INT n and external
/// interrupt).
pub const RECORDED: [u8; 6] = [
    vector::BP,
    vector::OF,
    vector::GP,
    vector::PF,
    INT_N_VECTOR,
    EXTINT_VECTOR,
];
/// The vector of the injected software interrupt (INT n).
pub const INT_N_VECTOR: u8 = 0x33;
/// The vector of the injected external interrupt.
pub const EXTINT_VECTOR: u8 = 0x34;

fn cpu() -> usize {
    percpu::current().index()
}

fn nmi_handler(frame: &mut TrapFrame) {
    let c = cpu();
    NMI_LAST_RIP[c].store(frame.rip, Ordering::Relaxed);
    NMI_COUNT[c].fetch_add(1, Ordering::Release);
}

/// Claims an event on a [`RECORDED`] vector while this CPU has armed the
/// recorder.
fn record_handler(frame: &mut TrapFrame) -> Claim {
    let r = &RECORDS[cpu()];
    if !r.armed.swap(false, Ordering::AcqRel) {
        return Claim::NotMine;
    }
    r.vector.store(frame.vector, Ordering::Relaxed);
    r.error_code.store(frame.error_code, Ordering::Relaxed);
    r.rip.store(frame.rip, Ordering::Relaxed);
    r.cr2.store(shared::x86::read_cr2(), Ordering::Relaxed);
    r.count.fetch_add(1, Ordering::Release);
    let recover = r.recover.swap(0, Ordering::AcqRel);
    if recover != 0 {
        frame.rip = recover;
    }
    Claim::Handled
}

/// Installs the NMI counter (idempotent; the IDT is shared by all CPUs).
pub fn install_nmi() {
    trap::set_handler(vector::NMI, nmi_handler);
}

/// Installs the event recorder for [`RECORDED`] (idempotent). An event on
/// these vectors that nobody armed is still fatal.
pub fn install_recorder() {
    for v in RECORDED {
        // Each vector has room for four claiming handlers; LHV adds at most two.
        let _ = trap::add_handler(v, record_handler);
    }
}

/// IRETQ to the next instruction, same privilege level and stack: ends
/// blocking by NMI (SDM Vol. 3A 6.7.1) and, in VMX non-root operation with
/// virtual NMIs, virtual-NMI blocking (SDM Vol. 3C 26.3).
pub fn iret_to_self() {
    // SAFETY: builds a valid 64-bit IRET frame (SS, RSP, RFLAGS, CS, RIP)
    // for the current context and returns to the label right after IRETQ;
    // RSP and RFLAGS end as they were.
    unsafe {
        ::core::arch::asm!(
            "mov {tmp}, rsp",
            "push {ss}",
            "push {tmp}",
            "pushfq",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            tmp = out(reg) _,
            ss = in(reg) u64::from(percpu::selector::KERNEL_DATA),
            cs = in(reg) u64::from(percpu::selector::KERNEL_CODE),
        );
    }
}

/// This CPU's APIC ID.
pub fn apic_id() -> u32 {
    percpu::current().apic_id()
}

/// `IA32_APIC_BASE` and its fields (SDM Vol. 3A 11.4.4): x2APIC mode
/// (EXTD) and the xAPIC register page.
const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_ADDRESS: u64 = 0x000f_ffff_ffff_f000;
/// xAPIC offset of the ICR's high half (the destination, bits 63:32).
const XAPIC_ICR_HIGH: u64 = 0x310;

/// The xAPIC ICR high half of this CPU, as a pointer; `None` in x2APIC
/// mode, whose ICR is one MSR written at once.
fn xapic_icr_high() -> Option<*mut u32> {
    // SAFETY: IA32_APIC_BASE is architectural (P6 on) and RDMSR of it has
    // no side effect.
    let base = unsafe { shared::x86::rdmsr(IA32_APIC_BASE) };
    (base & APIC_BASE_EXTD == 0).then(|| ((base & APIC_BASE_ADDRESS) + XAPIC_ICR_HIGH) as *mut u32)
}

/// The xAPIC ICR high half (the next IPI's destination in bits 31:24);
/// `None` in x2APIC mode.
pub fn icr_high() -> Option<u32> {
    // SAFETY: in xAPIC mode the register page is identity-mapped
    // uncacheable by LHV (as `LocalApic` relies on); a volatile 32-bit
    // load of the ICR high half has no side effect.
    xapic_icr_high().map(|p| unsafe { p.read_volatile() })
}

/// Writes the xAPIC ICR high half (nothing in x2APIC mode). Sends nothing:
/// only the low half's store does.
pub fn set_icr_high(value: u32) {
    if let Some(p) = xapic_icr_high() {
        // SAFETY: as in `icr_high`; the store only sets the destination of
        // the next IPI.
        unsafe { p.write_volatile(value) };
    }
}

/// Sends an NMI to the CPU with `apic_id` (physical destination; also the
/// way to NMI oneself) and waits until it is accepted. Returns false if the
/// ICR stayed busy.
///
/// L1 and L2 drive the same local APIC (LHV passes it through, without
/// APIC virtualization), and a VM exit can come between L2's two ICR stores
/// (an NMI exit does exactly when the previous CPU NMIs this one while this
/// one NMIs the next). `shared::apic` puts the ICR's high half back after
/// each IPI, so L1's IPIs in exit handlers do not redirect L2's; step 2 of
/// the NMI option checks that.
pub fn send_nmi(apic_id: u32) -> bool {
    count_sent(apic_id);
    let apic = LocalApic::current();
    apic.send_nmi(apic_id).is_ok() && apic.wait_icr_idle().is_ok()
}

/// [`send_nmi`] with the ICR's low half written by `lock cmpxchg`, a store
/// form L0 does not decode and captures by single-stepping it into a
/// scratch page (the IPI must arrive exactly as from a `mov`).
pub fn send_nmi_by_cmpxchg(apic_id: u32) -> bool {
    count_sent(apic_id);
    let apic = LocalApic::current();
    let store = |p: *mut u32, v: u32| {
        // SAFETY: `p` is this CPU's xAPIC ICR low half (identity-mapped);
        // the locked compare-exchange with the register's own value in EAX
        // is one 32-bit store of `v`, the IPI the caller means to send.
        unsafe {
            ::core::arch::asm!(
                "lock cmpxchg dword ptr [{p}], {v:e}",
                p = in(reg) p,
                v = in(reg) v,
                inout("eax") ::core::ptr::read_volatile(p) => _,
                options(nostack)
            );
        }
    };
    apic.send_with_store(Icr::nmi(apic_id), store).is_ok() && apic.wait_icr_idle().is_ok()
}

/// Counts an NMI about to be sent to `apic_id` in [`NMI_SENT`] (every way
/// of sending one must).
fn count_sent(apic_id: u32) {
    if let Some(target) = cpu_of(apic_id) {
        NMI_SENT[target].fetch_add(1, Ordering::AcqRel);
    }
}

/// Polls `done` at most `polls` times; whether it became true.
pub fn wait_until(polls: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..polls {
        if done() {
            return true;
        }
        ::core::hint::spin_loop();
    }
    done()
}

/// Polls for a short while (for "nothing happens" checks).
pub fn settle() {
    for _ in 0..2000 {
        ::core::hint::spin_loop();
    }
}
