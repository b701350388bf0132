//! The bitmaps VMCS02 points to are L0's pages, filled from L1's at every
//! nested entry (the processor would read L1's memory directly, which could
//! be L0's region): the MSR bitmap is L1's ORed with L0's own, so that an
//! MSR either wants to intercept exits; the I/O bitmaps are L1's. A page L1
//! cannot read counts as all ones (every access exits to L1).

use shared::mem::PhysMemory;

use super::Page;
use crate::memory::GuestMemory;

/// Copies L1's page at `addr` into `page` (all ones if unreadable).
pub fn copy_page(addr: u64, page: &mut Page) {
    if GuestMemory.read_words(addr, &mut page.0).is_err() {
        page.0.fill(u64::MAX);
    }
}

/// `page` = L1's MSR bitmap at `addr` | L0's MSR bitmap.
pub fn merge_msr_bitmap(addr: u64, page: &mut Page) {
    copy_page(addr, page);
    crate::msr_bitmap::merge_into(&mut page.0);
}
