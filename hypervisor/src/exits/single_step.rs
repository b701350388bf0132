//! Single-stepping one guest instruction: L0 sets RFLAGS.TF and intercepts
//! #DB; the #DB VM exit after the instruction ends the step (the
//! EPT-violation instruction length is undefined, SDM 28.2.5, and Bochs
//! has no monitor trap flag). Used to drop writes to L0's region (the sink
//! page) and to let an xAPIC write L0 cannot decode pass through.

use shared::vmx::{VmcsAccess, VmcsField as F};

use super::vector;
use crate::vcpu::{SingleStep, StepKind, Vcpu};

/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

/// Starts stepping for `kind` (ending any step in progress first).
pub fn start(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, kind: StepKind) {
    let guest_tf = match vcpu.step.take() {
        // The previous step never completed (its instruction faulted
        // again): keep the guest's own TF from before it.
        Some(prev) => {
            undo(prev.kind);
            prev.guest_tf
        }
        None => v.read(F::GuestRflags) & RFLAGS_TF != 0,
    };
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::open_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(true),
    }
    vcpu.step = Some(SingleStep { kind, guest_tf });
    v.set_bits(F::GuestRflags, RFLAGS_TF);
    v.set_bits(F::ExceptionBitmap, 1 << vector::DB);
    set_pending_bs_if_blocked(v);
}

/// Pending debug exceptions: BS (a single-step trap is pending).
const PENDING_DEBUG_BS: u64 = 1 << 14;
/// Interruptibility state: blocking by STI (bit 0) or by MOV SS (bit 1).
const BLOCKING_STI_MOVSS: u64 = 0b11;

/// With TF set and blocking by STI or MOV SS, VM entry requires the BS
/// bit of the pending debug exceptions (SDM 27.3.1.5: "bit 14 (BS) must
/// be 1 if the TF flag is 1 ... and blocking by STI or MOV SS is
/// indicated"); the processor would have recorded the pending trap the
/// same way. Without it, a guest's `sti; <write to L0's region>` would
/// fail the next VM entry.
fn set_pending_bs_if_blocked(v: &mut impl VmcsAccess) {
    if v.read(F::GuestInterruptibilityState) & BLOCKING_STI_MOVSS != 0
        && v.read(F::GuestRflags) & RFLAGS_TF != 0
    {
        v.set_bits(F::GuestPendingDebugExceptions, PENDING_DEBUG_BS);
    }
}

/// Ends the step in progress, if any; returns the guest's own TF then.
pub fn finish(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<bool> {
    let step = vcpu.step.take()?;
    undo(step.kind);
    v.clear_bits(F::ExceptionBitmap, 1 << vector::DB);
    // The step's trap has been taken (as the #DB exit).
    v.clear_bits(F::GuestPendingDebugExceptions, PENDING_DEBUG_BS);
    if !step.guest_tf {
        v.clear_bits(F::GuestRflags, RFLAGS_TF);
    }
    Some(step.guest_tf)
}

fn undo(kind: StepKind) {
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::close_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(false),
    }
}
