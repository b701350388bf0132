//! The bitmaps VMCS02 points to (SDM 25.6.4, 25.6.9):
//! - the MSR bitmap is L0's page, filled at every nested entry with L1's
//!   ORed with L0's own, so that an access exits if either intercepts it.
//!   It must be a copy: L1 may rewrite its page while L2 runs (undefined for
//!   L1's own exits, SDM 25.11.4) and must never clear an intercept of L0's;
//! - the I/O bitmaps are L1's own pages: L0 intercepts no I/O port of L1's,
//!   so L1's bitmaps are exactly VMCS02's, and the processor reads them as
//!   it would for L1. Only a page the processor must not read for L1 (in
//!   L0's region, beyond the identity map) is replaced by L0's page of all
//!   ones (every access exits to L1), as for an MSR bitmap L1 cannot read.

use shared::mem::PhysMemory;

use super::Page;
use crate::memory::GuestMemory;

/// Copies L1's page at `addr` into `page` (all ones if unreadable).
fn copy_page(addr: u64, page: &mut Page) {
    if GuestMemory.read_words(addr, &mut page.0).is_err() {
        page.0.fill(u64::MAX);
    }
}

/// The physical address of VMCS02's I/O bitmap for L1's at `addr` (4-KiB
/// aligned, VM-entry checked it): L1's page itself, or `page` filled with
/// ones when L1's page is not L1's to point at.
pub fn io_bitmap(addr: u64, page: &mut Page) -> u64 {
    if GuestMemory::contains(addr, size_of::<Page>()) {
        return addr;
    }
    page.0.fill(u64::MAX);
    shared::boot::layout::phys_of(page as *const Page)
}

/// `page` = L1's MSR bitmap at `addr` | L0's MSR bitmap.
pub fn merge_msr_bitmap(addr: u64, page: &mut Page) {
    copy_page(addr, page);
    crate::msr_bitmap::merge_into(&mut page.0);
}
