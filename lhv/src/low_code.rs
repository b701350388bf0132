//! The low code page in the running kernel (its layout, and that of the
//! low stacks, is the host-tested [`lhv::low_mem`]): whether the loader's
//! memory map lets LHV use the low pages, and installing a code blob into
//! the code page (once per boot: one blob per boot, shared by every CPU).

use lhv::low_mem::{self, CODE, CODE_SIZE, RANGE};
use shared::boot::BootInfo;
use shared::boot::info::MemoryKind;

use crate::assert::{fail, test_assert};

static USABLE: spin::Once<bool> = spin::Once::new();
/// Start address (in the image) of the blob in the code page.
static INSTALLED: spin::Once<u64> = spin::Once::new();

/// Checks the memory map (BSP, at boot) and says so.
pub fn check(boot: &BootInfo) {
    let map = boot
        .memory_map
        .iter()
        .map(|r| (r.base, r.len, r.kind == MemoryKind::Usable));
    let ok = low_mem::range_usable(map, RANGE.0, RANGE.1);
    USABLE.call_once(|| ok);
    if !ok {
        shared::println!(
            "LHV: low pages [{:#x}, {:#x}) are not usable RAM in the memory map",
            RANGE.0,
            RANGE.1
        );
    }
}

/// Whether the low pages may be used.
pub fn usable() -> bool {
    USABLE.get().copied().unwrap_or(false)
}

/// Copies `[start, end)` (a blob of the image assembled for address
/// [`CODE`]) into the code page; later calls with the same blob wait for
/// the first copy, another blob is a failed check.
pub fn install(start: *const u8, end: *const u8) {
    test_assert!(usable(), "low pages usable in the memory map", true, false);
    let len = end as u64 - start as u64;
    test_assert!(
        len <= CODE_SIZE,
        "low code blob size",
        format_args!("at most {CODE_SIZE:#x}"),
        len
    );
    let first = *INSTALLED.call_once(|| {
        // SAFETY: the code page is usable RAM below 1 MiB (checked above)
        // that nothing else in LHV uses, identity-mapped; the blob is `len`
        // bytes of the image's read-only data.
        unsafe { ::core::ptr::copy_nonoverlapping(start, CODE as *mut u8, len as usize) };
        start as u64
    });
    if first != start as u64 {
        fail(
            format_args!("low code page"),
            format_args!("one blob per boot"),
            format_args!("a second blob"),
        );
    }
}

/// The address in the code page of `sym`, a label of the blob starting at
/// `start`.
pub fn low_address(start: *const u8, sym: *const u8) -> u64 {
    CODE + (sym as u64 - start as u64)
}
