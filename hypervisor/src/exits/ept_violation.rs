//! EPT violations (exit reason 48). The only expected ones are writes to
//! L0's hidden region (see `ept01`): the write is dropped by letting the
//! instruction write a sink page for one single-stepped instruction. L0
//! logs the first access to its region. Anything else is unhandled.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::vmx::exit::EptViolationQual;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::Exit;
use super::vector;
use crate::vcpu::{Resume, SinkStep, Vcpu};

static LOGGED: AtomicBool = AtomicBool::new(false);
/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let gpa = v.read(F::GuestPhysicalAddress);
    let q = EptViolationQual(exit.qualification);
    if !crate::ept01::is_hidden(gpa) || !q.write() {
        return None;
    }
    if !LOGGED.swap(true, Ordering::Relaxed) {
        shared::cpu_println!(
            "guest wrote L0's region at {gpa:#x} (RIP {:#x}); the write is dropped (logged once)",
            exit.rip
        );
    }
    if let Some(prev) = vcpu.sink.take() {
        crate::ept01::close_sink(prev.gpa);
    }
    let rflags = v.read(F::GuestRflags);
    vcpu.sink = Some(SinkStep {
        gpa,
        guest_tf: rflags & RFLAGS_TF != 0,
    });
    crate::ept01::open_sink(gpa);
    v.write(F::GuestRflags, rflags | RFLAGS_TF);
    v.set_bits(F::ExceptionBitmap, 1 << vector::DB);
    Some(Resume::Guest)
}
