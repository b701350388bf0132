//! INVD (13) and WBINVD (54). INVD exits unconditionally; L0 performs
//! WBINVD instead, since discarding dirty lines could discard L0's own
//! writes. WBINVD exits only if WBINVD exiting is on (it is not); handled
//! the same way for completeness.

use shared::vmx::VmcsAccess;

use super::{Exit, skip_instruction};
use crate::vcpu::Resume;

pub fn handle(v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    // SAFETY: WBINVD writes back and invalidates caches; it cannot break
    // memory safety.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    skip_instruction(v, exit);
    Some(Resume::Guest)
}
