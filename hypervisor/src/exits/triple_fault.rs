//! Triple fault (exit reason 2): the guest would have shut the processor
//! down. Reported with the guest state, then this CPU stops.

use shared::vmx::insn::CurrentVmcs;

use super::{Exit, unhandled};
use crate::vcpu::{Resume, Vcpu};

pub fn handle(vcpu: &Vcpu, v: &CurrentVmcs<'_>, exit: &Exit) -> Option<Resume> {
    Some(unhandled(vcpu, v, exit, "guest triple fault (shutdown)"))
}
