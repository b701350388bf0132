//! Exceptions that exit (exit reason 0). Only #DB is intercepted, and only
//! while a write to L0's region is single-stepped (`ept_violation`): the
//! hidden page goes back to the dummy page and the guest's own TF is
//! restored (its single-step trap is then delivered to it).

use shared::vmx::exit::InterruptionInfo;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::ept_violation::RFLAGS_TF;
use super::{Exit, inject_exception, vector};
use crate::vcpu::{Resume, Vcpu};

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, _exit: &Exit) -> Option<Resume> {
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    if info.vector() != vector::DB {
        return None;
    }
    let step = vcpu.sink.take()?;
    crate::ept01::close_sink(step.gpa);
    v.clear_bits(F::ExceptionBitmap, 1 << vector::DB);
    if step.guest_tf {
        inject_exception(v, vector::DB, None);
    } else {
        v.clear_bits(F::GuestRflags, RFLAGS_TF);
    }
    Some(Resume::Guest)
}
