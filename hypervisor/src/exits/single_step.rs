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
            undo(vcpu, prev.kind);
            prev.guest_tf
        }
        None => v.read(F::GuestRflags) & RFLAGS_TF != 0,
    };
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::open_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(true),
        // `nested::ept02` has installed the writable EPT02 entry.
        StepKind::Ept02Access { .. } => {}
    }
    vcpu.step = Some(SingleStep { kind, guest_tf });
    v.set_bits(F::GuestRflags, RFLAGS_TF);
    v.set_bits(F::ExceptionBitmap, 1 << vector::DB);
}

/// Ends the step in progress, if any; returns the guest's own TF then.
pub fn finish(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<bool> {
    let step = vcpu.step.take()?;
    undo(vcpu, step.kind);
    v.clear_bits(F::ExceptionBitmap, 1 << vector::DB);
    if !step.guest_tf {
        v.clear_bits(F::GuestRflags, RFLAGS_TF);
    }
    Some(step.guest_tf)
}

fn undo(vcpu: &mut Vcpu, kind: StepKind) {
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::close_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(false),
        StepKind::Ept02Access { root, gpa2, .. } => {
            crate::nested::ept02::end_write_step(vcpu, root, gpa2)
        }
    }
}
