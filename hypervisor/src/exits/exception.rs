//! Exceptions and NMIs that exit (exit reason 0).
//! - NMI ("NMI exiting"): counted; `events::before_entry` tells L0's kicks
//!   from the guest's NMIs and injects these.
//! - While L0 single-steps an instruction (see `single_step`) every
//!   exception exits. #DB: the step ends, and the guest gets the #DB it
//!   would have taken itself (its own TF: DR6.BS; its breakpoints:
//!   DR6.B0-B3, BD), with DR6 written as the processor would have (a #DB
//!   exit leaves DR6 alone, SDM 28.2.1). Any other exception: the
//!   instruction did not complete; the step ends (L0's TF leaves RFLAGS
//!   before the guest's handler can push it) and the exception is
//!   delivered to the guest as it was raised (#PF with CR2 from the exit
//!   qualification, SDM 28.1). If the exit interrupted the delivery of
//!   another event, that event is re-delivered (`handle_exit`) and the
//!   exception recurs by itself.

use shared::debug_trap;
use shared::vmx::exit::{InterruptionInfo, InterruptionType};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, inject_exception, single_step, vector};
use crate::vcpu::{Resume, Vcpu};

/// #PF.
const PF: u8 = 14;

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    if info.kind() == Some(InterruptionType::Nmi) {
        vcpu.nmi_exits = vcpu.nmi_exits.saturating_add(1);
        crate::events::unblock_host_nmis();
        return Some(Resume::Guest);
    }
    let kind = info.kind();
    let single_step_db =
        info.vector() == vector::DB && kind == Some(InterruptionType::HardwareException);
    if single_step_db {
        let guest_tf = single_step::finish(vcpu, v)?;
        if let Some(bits) = debug_trap::reflect(exit.qualification, guest_tf) {
            deliver_db(v, bits);
        }
        return Some(Resume::Guest);
    }
    // Any other exception exits only during a step.
    single_step::finish(vcpu, v)?;
    redeliver(v, exit)
}

/// Delivers the exception of this exit to the guest as it was raised (the
/// instruction did not complete): #PF with its CR2, software exceptions
/// with their instruction length. If the exit interrupted the delivery of
/// another event, that event is re-delivered instead (`handle_exit`) and
/// the exception recurs by itself.
pub fn redeliver(v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    let kind = info.kind();
    if InterruptionInfo(v.read32(F::IdtVectoringInfo)).is_valid() {
        return Some(Resume::Guest);
    }
    match kind {
        Some(InterruptionType::HardwareException) => {
            if info.vector() == PF {
                set_cr2(exit.qualification);
            }
            let code = info
                .error_code_valid()
                .then(|| v.read32(F::VmExitInterruptionErrorCode));
            inject_exception(v, info.vector(), code);
        }
        // INT3, INTO, INT1: again, with their instruction length.
        Some(k) => {
            let code = info.error_code_valid();
            let again = InterruptionInfo::new(info.vector(), k, code);
            v.write(F::VmEntryInterruptionInfo, u64::from(again.0));
            v.write(
                F::VmEntryExceptionErrorCode,
                v.read(F::VmExitInterruptionErrorCode),
            );
            v.write(F::VmEntryInstructionLength, exit.instruction_len);
        }
        None => return None,
    }
    Some(Resume::Guest)
}

/// Gives the guest the #DB it would have taken itself, with `bits` in DR6.
pub fn deliver_db(v: &mut impl VmcsAccess, bits: u64) {
    set_dr6_bits(bits);
    inject_exception(v, vector::DB, None);
}

/// Sets `bits` in DR6 (the guest's: VMX does not switch DR6).
fn set_dr6_bits(bits: u64) {
    // SAFETY: DR6 is a status register; L0 does not use debug registers,
    // and the guest's DR6 is the processor's while it runs.
    unsafe {
        let dr6: u64;
        core::arch::asm!("mov {}, dr6", out(reg) dr6, options(nomem, nostack, preserves_flags));
        core::arch::asm!("mov dr6, {}", in(reg) dr6 | bits, options(nomem, nostack, preserves_flags));
    }
}

/// CR2 for a #PF L0 reflects (a #PF exit leaves CR2 alone, SDM 28.1).
fn set_cr2(linear: u64) {
    // SAFETY: L0 does not take page faults between here and VM entry;
    // the guest's CR2 is the processor's while it runs.
    unsafe {
        core::arch::asm!("mov cr2, {}", in(reg) linear, options(nomem, nostack, preserves_flags))
    };
}
