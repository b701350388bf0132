//! Triple fault (exit reason 2): the guest would have shut the processor
//! down. Reported with the guest state, then the machine stops (as a
//! real machine would reset, which is of no use to anyone debugging it).

use shared::vmx::insn::GuardedVmcs;

use super::{Exit, unhandled};
use crate::vcpu::{Resume, Vcpu};

pub fn handle(vcpu: &Vcpu, v: &GuardedVmcs<'_>, exit: &Exit) -> Option<Resume> {
    unhandled(vcpu, v, exit, "guest triple fault (shutdown)");
    shared::platform::shutdown(1)
}
