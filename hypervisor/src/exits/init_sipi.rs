//! INIT (exit reason 3) and SIPI (4) in VMX non-root operation (SDM 26.2,
//! "Other Causes of VM Exits": INIT signals always exit; a SIPI exits in the
//! wait-for-SIPI activity state), and the INIT state L0 gives a vCPU.
//!
//! The guest's INIT IPIs never reach a processor (L0 emulates them, see
//! `guest_smp`): Bochs 2.7 keeps a physical INIT pending after the INIT VM
//! exit, so a vCPU that took one would exit again after its SIPI. A
//! physical INIT exit is still handled the same way. The guest's STARTUP
//! IPIs reach the hardware: a vCPU waiting for SIPI takes a SIPI exit and
//! starts in real mode at vector * 4096 (SDM 10.4.4, MP initialization).

use shared::vmx::controls::PrimaryProcBased;
use shared::vmx::{VmcsAccess, VmcsField as F};

use shared::init_state::{self, AfterInit};

use super::{Exit, single_step};
use crate::nested::OnVmcs01;
use crate::vcpu::{GuestRegs, Resume, Vcpu, reg};
use crate::vmcs01::{self, Seg, activity};

/// A physical INIT signal.
pub fn init(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<Resume> {
    // L2's INIT exits are `nested::exit`'s: this is L1's (or the plain
    // guest's), VMCS01 current.
    let on = vcpu.nested.on_vmcs01()?;
    enter_init_state(vcpu, v, &on);
    Some(Resume::Guest)
}

/// The guest sent an INIT to its own CPU. In VMX operation (L1 is a
/// guest hypervisor) it is not taken at once: in VMX non-root operation
/// it is a VM exit to L1 (SDM 26.2, `nested::exit::pending_events`), in
/// VMX root operation it is blocked until VMXOFF (SDM 24.8,
/// `events::before_entry`); both take it from the CPU's INIT request.
pub fn init_self(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) {
    match vcpu.nested.on_vmcs01() {
        Some(on) if vcpu.nested.vmxon.is_none() => enter_init_state(vcpu, v, &on),
        _ => crate::guest_smp::request_init(vcpu.index),
    }
}

/// Gives the vCPU the state INIT gives a processor (SDM Table 9-1, INIT
/// column: CR0 keeps CD and NW; `shared::init_state`): no event pending,
/// no single step, no NMI. The BSP then runs from the reset vector at once
/// (F000:FFF0, CS base FFFF0000H: the firmware decides what an INIT means,
/// e.g. by the CMOS shutdown code), an AP waits for SIPI (SDM 9.4.1).
pub fn enter_init_state(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, _on: &OnVmcs01) {
    let caps = crate::caps();
    let cr0 = init_state::cr0_after_init(vmcs01::guest_cr0(v));
    vmcs01::write_init_state(v, caps);
    v.write(F::Cr0ReadShadow, cr0);
    v.write(F::GuestCr0, vmcs01::cr0_real(caps, cr0));
    let bsp = crate::lapic::apic_base() & crate::lapic::base::BSP != 0;
    let waits = init_state::after_init(bsp) == AfterInit::WaitForSipi;
    if waits {
        v.write(F::GuestActivityState, activity::WAIT_FOR_SIPI);
    }
    v.write(F::VmEntryInterruptionInfo, 0);
    v.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        u64::from(PrimaryProcBased::NMI_WINDOW_EXITING.bits()),
    );
    let _ = single_step::finish(vcpu, v);
    vcpu.nmis_pending = 0;
    crate::init_reset::reset_this_cpu(vcpu.index);
    vcpu.regs = GuestRegs::default();
    // EDX after INIT holds the processor signature (SDM 10.1.2).
    vcpu.regs.gpr[reg::RDX] = u64::from(shared::x86::cpuid(1, 0).eax);
    crate::guest_smp::init_taken(vcpu.index, waits);
}

pub fn sipi(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    start(vcpu, v, exit.qualification as u8);
    Some(Resume::Guest)
}

/// Starts the vCPU, waiting for SIPI, as a SIPI with `vector` does: in
/// real mode at vector * 4096 (at its SIPI exit, or from the SIPI latch,
/// see `guest_smp`).
pub fn start(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, vector: u8) {
    let vector = u64::from(vector);
    vmcs01::set_real_mode_segment(v, Seg::Cs, (vector << 8) as u16, vector << 12);
    v.write(F::GuestRip, 0);
    v.write(F::GuestActivityState, activity::ACTIVE);
    // A processor leaving wait-for-SIPI has no event blocking; Bochs saves
    // blocking by SMI and NMI here, which VM entry rejects outside SMM
    // (SDM 27.3.1.5).
    v.write(F::GuestInterruptibilityState, 0);
    v.write(F::GuestPendingDebugExceptions, 0);
    // Bochs also keeps physical NMIs blocked in this CPU after the SIPI
    // exit (it unblocks them when it leaves wait-for-SIPI itself); with
    // "virtual NMIs" VM entry does not load them, so only an IRET in VMX
    // root ends it (SDM 6.7.1). Without it the CPU never sees an NMI
    // again: neither L0's kicks nor the guest's (a guest hypervisor's
    // NMI exits).
    crate::events::unblock_host_nmis();
    crate::guest_smp::set_waiting(vcpu.index, false);
}
