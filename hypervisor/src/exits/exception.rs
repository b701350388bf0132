//! Exceptions and NMIs that exit (exit reason 0).
//! - NMI ("NMI exiting"): counted; `events::before_entry` tells L0's kicks
//!   from the guest's NMIs and injects these.
//! - #DB, intercepted only while L0 single-steps an instruction (see
//!   `single_step`): the step ends; if the guest had TF set itself, its
//!   single-step trap is delivered to it.

use shared::vmx::exit::{InterruptionInfo, InterruptionType};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, inject_exception, single_step, vector};
use crate::vcpu::{Resume, Vcpu};

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, _exit: &Exit) -> Option<Resume> {
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    if info.kind() == Some(InterruptionType::Nmi) {
        vcpu.nmi_exits = vcpu.nmi_exits.saturating_add(1);
        crate::events::unblock_host_nmis();
        return Some(Resume::Guest);
    }
    if info.vector() != vector::DB {
        return None;
    }
    if single_step::finish(vcpu, v)? {
        inject_exception(v, vector::DB, None);
    }
    Some(Resume::Guest)
}
