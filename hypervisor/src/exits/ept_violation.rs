//! EPT violations (exit reason 48). Expected ones:
//! - writes to L0's hidden region (see `ept01`): the write is dropped by
//!   letting the instruction write a sink page for one single-stepped
//!   instruction; L0 logs the first access to its region;
//! - accesses to unclaimed bus space (above what EPT01 maps, below the
//!   physical-address width): the page is mapped to the all-ones page, so
//!   the guest sees what a real bus gives (reads all ones, writes dropped,
//!   the write again through the sink);
//! - writes to the guest's xAPIC page, which EPT01 maps without write
//!   access so that L0 sees the guest's IPIs (see `apic_write`); while the
//!   guest's APIC is globally disabled (`vapic_base`) the page reads all
//!   ones and the write is dropped, as in L0's region;
//! - spurious ones: EPT01 allows the access now (a translation cached
//!   before another CPU changed EPT01); L0 flushes and resumes, the
//!   instruction runs again.
//!
//! Anything else is unhandled.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::ept::EptPerms;
use shared::vmx::exit::EptViolationQual;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, apic_write, single_step};
use crate::vcpu::{Resume, StepKind, Vcpu};

static LOGGED: AtomicBool = AtomicBool::new(false);
static LOGGED_UNCLAIMED: AtomicBool = AtomicBool::new(false);

/// The access that faulted, as EPT rights.
fn access(q: EptViolationQual) -> EptPerms {
    let mut a = EptPerms::empty();
    if q.read() {
        a |= EptPerms::READ;
    }
    if q.write() {
        a |= EptPerms::WRITE;
    }
    if q.fetch() {
        a |= EptPerms::EXECUTE;
    }
    a
}

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let gpa = v.read(F::GuestPhysicalAddress);
    let q = EptViolationQual(exit.qualification);
    if q.write() && crate::ept01::apic_page() == Some(gpa & !0xfff) {
        if crate::vapic_base::runs_apic_off_view(v) {
            single_step::start(vcpu, v, StepKind::HiddenWrite { gpa });
            return Some(Resume::Guest);
        }
        return apic_write::handle(vcpu, v, exit, gpa);
    }
    let a = access(q);
    if !a.is_empty() && crate::ept01::allows(gpa, a) {
        crate::ept01::invept_all();
        return Some(Resume::Guest);
    }
    if crate::ept01::is_hidden(gpa) {
        if !q.write() {
            return None;
        }
        if !LOGGED.swap(true, Ordering::Relaxed) {
            shared::cpu_println!(
                "guest wrote L0's region at {gpa:#x} (RIP {:#x}); the write is dropped (logged once)",
                exit.rip
            );
        }
        single_step::start(vcpu, v, StepKind::HiddenWrite { gpa });
        return Some(Resume::Guest);
    }
    if crate::ept01::is_unclaimed(gpa) {
        if !LOGGED_UNCLAIMED.swap(true, Ordering::Relaxed) {
            shared::cpu_println!(
                "guest accessed unclaimed bus space at {gpa:#x} (RIP {:#x}): reads all ones, writes dropped (logged once)",
                exit.rip
            );
        }
        if !crate::ept01::map_unclaimed(gpa) {
            return None;
        }
        if q.write() {
            single_step::start(vcpu, v, StepKind::HiddenWrite { gpa });
        }
        return Some(Resume::Guest);
    }
    None
}
