//! Triple fault (exit reason 2): the guest would have shut the processor
//! down; on a PC the chipset turns the shutdown cycle into a reset (SDM
//! 6.15, interrupt 8 "Double Fault": the processor enters shutdown; the
//! platform resets), which is how OSes reboot (Linux `reboot=t`). L0
//! reports the guest state and resets the machine, which boots again
//! (firmware, GRUB, L0, the guest).

use shared::vmx::insn::GuardedVmcs;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::Exit;
use crate::vcpu::{Resume, Vcpu};

pub fn handle(vcpu: &Vcpu, v: &GuardedVmcs<'_>, exit: &Exit) -> Option<Resume> {
    crate::dump::vmcs(v, vcpu);
    shared::cpu_println!(
        "guest shutdown (triple-fault exit) at RIP {:#x} (CS base {:#x}): resetting the machine",
        exit.rip,
        v.read(F::GuestCsBase)
    );
    shared::platform::reset()
}
