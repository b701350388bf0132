//! INIT (exit reason 3) and SIPI (4) in VMX non-root operation (SDM 26.2,
//! "Other Causes of VM Exits": INIT signals always exit; a SIPI exits in the
//! wait-for-SIPI activity state). The guest's own INIT-SIPI-SIPI thus
//! starts (or restarts) its APs: INIT puts the virtual CPU in its INIT
//! state waiting for a SIPI; the SIPI starts it in real mode at
//! vector * 4096 (SDM 10.4.4, MP initialization).

use shared::vmx::{VmcsAccess, VmcsField as F};

use super::Exit;
use crate::vcpu::{GuestRegs, Resume, Vcpu, reg};
use crate::vmcs01::{self, Seg, activity};

/// INIT: the virtual CPU takes its INIT state and waits for a SIPI.
///
/// Bochs 2.7 keeps a physical INIT pending after the INIT VM exit (its
/// reset path is what clears it), and masks it in wait-for-SIPI: after the
/// SIPI exit starts the CPU, the same INIT exits again before the first
/// instruction, and the CPU is back here. On Bochs a guest's AP therefore
/// stays parked; the fix is to intercept the guest's INIT IPIs at its local
/// APIC (ICR) instead of letting them reach the processor (as XMHF does).
pub fn init(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<Resume> {
    vmcs01::write_init_state(v, crate::caps());
    v.write(F::GuestActivityState, activity::WAIT_FOR_SIPI);
    v.write(F::VmEntryInterruptionInfo, 0);
    if let Some(step) = vcpu.sink.take() {
        crate::ept01::close_sink(step.gpa);
        v.write(F::ExceptionBitmap, 0);
    }
    vcpu.regs = GuestRegs::default();
    // EDX after INIT holds the processor signature (SDM 10.1.2).
    vcpu.regs.gpr[reg::RDX] = u64::from(shared::x86::cpuid(1, 0).eax);
    Some(Resume::Guest)
}

pub fn sipi(_vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let vector = exit.qualification & 0xff;
    vmcs01::set_real_mode_segment(v, Seg::Cs, (vector << 8) as u16, vector << 12);
    v.write(F::GuestRip, 0);
    v.write(F::GuestActivityState, activity::ACTIVE);
    // A processor leaving wait-for-SIPI has no event blocking; Bochs saves
    // blocking by SMI and NMI here, which VM entry rejects outside SMM
    // (SDM 27.3.1.5).
    v.write(F::GuestInterruptibilityState, 0);
    v.write(F::GuestPendingDebugExceptions, 0);
    Some(Resume::Guest)
}
