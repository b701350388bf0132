//! Where the kernel image is, virtually and physically (see `link/kernel.ld`).
//!
//! The image is linked at `KERNEL_VIRT_BASE + load address`. Code reaches
//! physical memory through the identity map of the low 4 GiB; the image's
//! own data is reached through the high-half window, whose physical base can
//! change once (L0 moves itself to the top of RAM).

use core::sync::atomic::{AtomicU64, Ordering};

/// Virtual base of the high-half window.
pub const KERNEL_VIRT_BASE: u64 = 0xFFFF_FFFF_8000_0000;
/// Physical address GRUB loads the image at.
pub const KERNEL_LOAD_PHYS: u64 = 0x20_0000;

unsafe extern "C" {
    static __image_phys_start: u8;
    static __image_virt_start: u8;
    static __image_virt_end: u8;
}

/// Physical address that `KERNEL_VIRT_BASE` maps to: 0 until the image moves.
static WINDOW_PHYS_BASE: AtomicU64 = AtomicU64::new(0);

/// Translates an address of the kernel image (high half) or of the identity
/// map to a physical address.
pub fn virt_to_phys(va: u64) -> u64 {
    if va >= KERNEL_VIRT_BASE {
        va - KERNEL_VIRT_BASE + WINDOW_PHYS_BASE.load(Ordering::Relaxed)
    } else {
        va
    }
}

/// Physical address of a kernel object.
pub fn phys_of<T: ?Sized>(p: *const T) -> u64 {
    virt_to_phys(p as *const u8 as u64)
}

/// Records that the high-half window now maps `KERNEL_VIRT_BASE` to `base`.
pub fn set_window_phys_base(base: u64) {
    WINDOW_PHYS_BASE.store(base, Ordering::Relaxed);
}

/// The image's virtual range `[start, end)` (high half, page aligned).
pub fn image_virt_range() -> (u64, u64) {
    (
        &raw const __image_virt_start as u64,
        &raw const __image_virt_end as u64,
    )
}

/// Physical range the image occupies now (boot section included).
pub fn image_phys_range() -> (u64, u64) {
    let start = &raw const __image_phys_start as u64;
    let (_, end) = image_virt_range();
    (start, virt_to_phys(end))
}
