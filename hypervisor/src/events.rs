//! What L0 does before every VM entry on behalf of other CPUs and of the
//! hardware: take an INIT request (see `guest_smp`), turn NMIs seen since
//! the last entry into a pending guest NMI, and inject it or wait for the
//! guest's NMI window (see `shared::nmi_inject`).
//!
//! Exceptions L0 injects are merged with an exception being delivered
//! (IDT-vectoring information, re-injected by `exits::handle_exit`) as the
//! processor merges them (SDM 6.15, Tables 6-4 and 6-5): the second one,
//! #DF, or a triple fault (see [`inject_exception`]).
//!
//! NMIs reach L0 two ways: as NMI VM exits ("NMI exiting", counted by
//! `exits::exception`) and, while this CPU is in VMX root, through the host
//! IDT's NMI handler, which only counts them in the per-CPU `nmi_count` (no
//! locks, no printing). L0's own kick NMIs are subtracted; the rest are the
//! guest's. With "virtual NMIs", the guest's NMI blocking is the
//! interruptibility state's blocking-by-NMI bit, which the processor sets
//! on delivery of an injected NMI and clears on the guest's IRET (SDM
//! 25.3, 26.7.1); NMI-window exiting (SDM 26.7.5) tells L0 when it is
//! clear again.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::percpu::MAX_CPUS;

use shared::exception_class::{self, Merged};
use shared::nmi_inject::{self, NmiStep};
use shared::vmx::controls::PrimaryProcBased;
use shared::vmx::exit::{InterruptionInfo, InterruptionType};
use shared::vmx::{VmcsAccess, VmcsField as F};

use crate::vcpu::Vcpu;

/// The NMI vector.
const NMI_VECTOR: u8 = 2;

/// Called after every handled exit, just before VMRESUME.
pub fn before_entry(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) {
    // EPT01 changed on another CPU (its kick may be what exited).
    crate::shootdown::catch_up(vcpu, v);
    let seen = shared::percpu::current()
        .nmi_count
        .swap(0, Ordering::AcqRel)
        + core::mem::take(&mut vcpu.nmi_exits);
    if seen > 0 {
        let theirs = crate::guest_smp::guest_nmis(vcpu.index, seen);
        let n = u8::try_from(theirs).unwrap_or(u8::MAX);
        vcpu.nmis_pending = vcpu
            .nmis_pending
            .saturating_add(n)
            .min(crate::vcpu::MAX_PENDING_NMIS);
    }
    // While L2 runs, NMIs and INITs L1 intercepts are exits to L1 (this
    // may make VMCS01 current).
    crate::nested::exit::pending_events(vcpu, v);
    // INIT is blocked in VMX root operation (SDM 24.8): it waits for VMXOFF.
    if let Some(on) = vcpu
        .nested
        .on_vmcs01()
        .filter(|_| vcpu.nested.vmxon.is_none())
    {
        if crate::guest_smp::take_init_request(vcpu.index) {
            crate::exits::enter_init_state(vcpu, v, &on);
        }
        // A SIPI sent while this CPU was in VMX root (before or after its
        // INIT) never reached it as a SIPI exit: the latch has it.
        if v.read(F::GuestActivityState) == crate::vmcs01::activity::WAIT_FOR_SIPI
            && let Some(vector) = crate::guest_smp::take_sipi(vcpu.index)
        {
            crate::exits::start_at_sipi(vcpu, v, vector);
        }
    }
    // The guest never runs in SMM, where alone blocking by SMI may be set
    // (SDM 27.3.1.5). Bochs 2.7 keeps SMIs masked after wait-for-SIPI and
    // saves the bit at every later VM exit of that CPU.
    let state = v.read32(F::GuestInterruptibilityState);
    if state & nmi_inject::BLOCKING_BY_SMI != 0 {
        v.write(
            F::GuestInterruptibilityState,
            u64::from(state & !nmi_inject::BLOCKING_BY_SMI),
        );
    }
    let injecting = InterruptionInfo(v.read32(F::VmEntryInterruptionInfo)).is_valid();
    let step = nmi_inject::decide(
        vcpu.nmis_pending > 0,
        v.read32(F::GuestInterruptibilityState),
        v.read32(F::GuestActivityState),
        injecting,
        vcpu.step.is_some(),
    );
    let window = u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits());
    // L1's own NMI-window exiting of L2 stays as L1 set it.
    let keep_window = crate::nested::exit::l1_nmi_window(vcpu);
    match step {
        NmiStep::Wait if keep_window => {}
        NmiStep::Wait => v.clear_bits(F::PrimaryProcBasedVmExecControls, window),
        NmiStep::OpenWindow => v.set_bits(F::PrimaryProcBasedVmExecControls, window),
        NmiStep::Inject => {
            if !keep_window {
                v.clear_bits(F::PrimaryProcBasedVmExecControls, window);
            }
            let info = InterruptionInfo::new(NMI_VECTOR, InterruptionType::Nmi, false);
            v.write(F::VmEntryInterruptionInfo, u64::from(info.0));
            // Delivery wakes a halted processor (as KVM, leave HLT so the
            // NMI handler returns after the HLT).
            if v.read32(F::GuestActivityState) == nmi_inject::activity::HLT {
                v.write(
                    F::GuestActivityState,
                    u64::from(nmi_inject::activity::ACTIVE),
                );
            }
            vcpu.nmis_pending -= 1;
            vcpu.nmis_injected += 1;
        }
    }
    // An NMI that came after the count was taken above must not wait for
    // the guest's next exit (a guest that polls makes none): the window
    // exit comes as soon as the guest can take an NMI. Later ones set it
    // themselves (`host_nmi`).
    if shared::percpu::current().nmi_count.load(Ordering::Acquire) != 0 {
        v.set_bits(F::PrimaryProcBasedVmExecControls, window);
    }
}

/// Injects hardware exception `vector` (with `error_code` if it has one)
/// at the next VM entry, merged with the hardware exception already queued
/// for that entry: the one whose delivery the exit interrupted, which
/// `exits::reinject_vectored_event` queued again (SDM 28.2.4). The
/// processor would have raised `vector` during that delivery, so the
/// result is Table 6-5's (SDM 6.15): the second exception, #DF(0), or
/// shutdown, which L0 handles as a guest triple fault (machine reset, see
/// `exits::triple_fault`).
pub fn inject_exception(v: &mut impl VmcsAccess, vector: u8, error_code: Option<u32>) {
    let queued = InterruptionInfo(v.read32(F::VmEntryInterruptionInfo));
    let first = (queued.is_valid() && queued.kind() == Some(InterruptionType::HardwareException))
        .then(|| queued.vector());
    inject_exception_during(v, first, vector, error_code);
}

/// [`inject_exception`] with the event being delivered given: `first` is
/// its vector if it is a hardware exception (`None`: no event, or one that
/// is benign whatever its vector, SDM Table 6-4).
pub fn inject_exception_during(
    v: &mut impl VmcsAccess,
    first: Option<u8>,
    vector: u8,
    error_code: Option<u32>,
) {
    match exception_class::merge(first, vector) {
        Merged::Second => write_exception(v, vector, error_code),
        Merged::DoubleFault => write_exception(v, exception_class::DF, Some(0)),
        Merged::TripleFault => {
            shared::cpu_println!(
                "guest shutdown (exception {vector} while delivering a double fault) at RIP {:#x} \
                 (CS base {:#x}): resetting the machine",
                v.read(F::GuestRip),
                v.read(F::GuestCsBase)
            );
            shared::platform::reset()
        }
    }
}

/// Queues hardware exception `vec` for the next VM entry (a fault pushes
/// RFLAGS.RF = 1 in protected mode). The error code is only delivered in
/// protected mode (with unrestricted guest, VM entry requires none when
/// CR0.PE = 0, SDM 27.2.1.3).
fn write_exception(v: &mut impl VmcsAccess, vec: u8, error_code: Option<u32>) {
    let pe = v.read(F::GuestCr0) & crate::vmcs01::cr0::PE != 0;
    let code = error_code.filter(|_| pe);
    if pe && exception_class::is_fault(vec) {
        // Faults push RFLAGS with RF = 1 (SDM 6.6, 18.3.1.1), as the
        // hardware does for the faults it raises itself.
        v.set_bits(F::GuestRflags, exception_class::RFLAGS_RF);
    }
    let info = InterruptionInfo::new(vec, InterruptionType::HardwareException, code.is_some());
    v.write(F::VmEntryInterruptionInfo, u64::from(info.0));
    v.write(F::VmEntryExceptionErrorCode, u64::from(code.unwrap_or(0)));
}

/// CPUs whose own VMCS is current (set once VMCS01 is set up), on which
/// [`host_nmi`] may VMWRITE.
static VMCS_READY: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// This CPU has a current VMCS of L0's from now on.
pub fn vmcs_ready(index: usize) {
    if let Some(r) = VMCS_READY.get(index) {
        r.store(true, Ordering::Release);
    }
}

/// The NMI handler of L0's IDT (NMIs that arrive in VMX root): counts the
/// NMI for [`before_entry`] and asks for an NMI-window exit on the current
/// VMCS, so that an NMI arriving between `before_entry` and VM entry is
/// taken up as soon as the guest can take an NMI instead of at its next
/// exit, whenever that is (a guest hypervisor polling for its self-NMI
/// makes none). An extra window exit is harmless: `before_entry` finds
/// nothing pending and closes the window.
pub fn host_nmi(_frame: &mut shared::trap::TrapFrame) {
    let cpu = shared::percpu::current();
    cpu.nmi_count.fetch_add(1, Ordering::AcqRel);
    if VMCS_READY
        .get(cpu.index())
        .is_some_and(|r| r.load(Ordering::Acquire))
    {
        // SAFETY: this CPU is in VMX root operation with one of L0's VMCSs
        // current (`vmcs_ready`), whichever one it is entering next.
        let vmx = unsafe { shared::vmx::insn::Vmxon::assume_enabled() };
        vmx.guarded_vmcs().set_bits(
            F::PrimaryProcBasedVmExecControls,
            u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits()),
        );
    }
}

/// Ends the blocking of NMIs that an NMI VM exit leaves in VMX root
/// operation ("an NMI causes subsequent NMIs to be blocked, but only after
/// the VM exit completes", SDM 28.1): an IRET does (SDM 6.7.1), so L0
/// returns to itself with one. Without it L0's kicks could wait until the
/// next VM entry.
pub fn unblock_host_nmis() {
    use shared::percpu::selector;
    // SAFETY: the frame is a valid same-privilege 64-bit IRET frame for the
    // current stack and flags, returning to the label after IRETQ; RSP and
    // RFLAGS are as before afterwards (the target has no red zone).
    unsafe {
        core::arch::asm!(
            "mov {sp}, rsp",
            "push {ss}",
            "push {sp}",
            "pushfq",
            "push {cs}",
            "lea {sp}, [rip + 2f]",
            "push {sp}",
            "iretq",
            "2:",
            sp = out(reg) _,
            ss = in(reg) u64::from(selector::KERNEL_DATA),
            cs = in(reg) u64::from(selector::KERNEL_CODE),
        );
    }
}
