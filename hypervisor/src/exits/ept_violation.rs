//! EPT violations (exit reason 48). Expected ones:
//! - writes to L0's hidden region (see `ept01`): the write is dropped by
//!   letting the instruction write a sink page for one single-stepped
//!   instruction; L0 logs the first access to its region;
//! - writes to the guest's xAPIC page, which EPT01 maps without write
//!   access so that L0 sees the guest's IPIs (see `apic_write`).
//!
//! Anything else is unhandled.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::vmx::exit::EptViolationQual;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, apic_write, single_step};
use crate::vcpu::{Resume, StepKind, Vcpu};

static LOGGED: AtomicBool = AtomicBool::new(false);

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let gpa = v.read(F::GuestPhysicalAddress);
    let q = EptViolationQual(exit.qualification);
    if !q.write() {
        return None;
    }
    if crate::ept01::apic_page() == Some(gpa & !0xfff) {
        return apic_write::handle(vcpu, v, exit, gpa);
    }
    if !crate::ept01::is_hidden(gpa) {
        return None;
    }
    if !LOGGED.swap(true, Ordering::Relaxed) {
        shared::cpu_println!(
            "guest wrote L0's region at {gpa:#x} (RIP {:#x}); the write is dropped (logged once)",
            exit.rip
        );
    }
    single_step::start(vcpu, v, StepKind::HiddenWrite { gpa });
    Some(Resume::Guest)
}
