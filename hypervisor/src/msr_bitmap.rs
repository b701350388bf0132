//! The MSR bitmap shared by every VMCS01 (SDM 25.6.9): which RDMSR/WRMSR
//! exit. Everything passes through except the MSRs L0 owns or emulates.

use shared::x86::msr;

/// IA32_VMX_BASIC .. IA32_VMX_VMFUNC: hidden while VMX is hidden.
pub const VMX_CAPS: core::ops::RangeInclusive<u32> = 0x480..=0x491;

#[repr(C, align(4096))]
struct Bitmap([u8; 4096]);

/// The same bitmap as 64-bit words (for merging).
#[repr(C, align(4096))]
struct Words([u64; 512]);

static mut BITMAP: Bitmap = Bitmap([0; 4096]);

/// Offsets of the four 1-KiB bitmaps.
const READ_LOW: usize = 0;
const READ_HIGH: usize = 1024;
const WRITE_LOW: usize = 2048;
const WRITE_HIGH: usize = 3072;

fn set(bitmap: &mut [u8; 4096], msr: u32, read: bool, write: bool) {
    let (r, w, n) = match msr {
        0..=0x1fff => (READ_LOW, WRITE_LOW, msr),
        0xc000_0000..=0xc000_1fff => (READ_HIGH, WRITE_HIGH, msr - 0xc000_0000),
        // Outside both ranges every access exits anyway.
        _ => return,
    };
    let (byte, bit) = ((n / 8) as usize, 1u8 << (n % 8));
    if read {
        bitmap[r + byte] |= bit;
    }
    if write {
        bitmap[w + byte] |= bit;
    }
}

/// Fills the bitmap (once, on the BSP, before any VMCS uses it) and returns
/// its physical address.
pub fn init() -> u64 {
    // Called once on the BSP before any CPU runs a guest; afterwards the
    // bitmap is only read (by the processors).
    let bitmap: *mut Bitmap = &raw mut BITMAP;
    // SAFETY: as above: the only reference to the bitmap while it is built.
    let b = unsafe { &mut (*bitmap).0 };
    set(b, msr::IA32_FEATURE_CONTROL, true, true);
    for m in VMX_CAPS {
        set(b, m, true, true);
    }
    set(b, msr::IA32_EFER, true, true);
    // The guest's IPIs (x2APIC ICR) and APIC moves (see `exits::msr`).
    set(b, crate::lapic::X2APIC_ICR, false, true);
    set(b, msr::IA32_APIC_BASE, false, true);
    set(b, shared::mtrr::IA32_MTRR_DEF_TYPE, false, true);
    for m in shared::mtrr::FIXED_MSRS {
        set(b, m, false, true);
    }
    for m in shared::mtrr::IA32_MTRR_PHYSBASE0
        ..shared::mtrr::IA32_MTRR_PHYSBASE0 + 2 * shared::mtrr::MAX_VARIABLE as u32
    {
        set(b, m, false, true);
    }
    shared::boot::layout::phys_of(&raw const BITMAP)
}

/// The bitmap as 64-bit words (read-only after [`init`]), which L0 merges
/// into the MSR bitmaps of VMCS02s.
pub fn words() -> &'static [u64; 512] {
    let words: *const Words = (&raw const BITMAP).cast();
    // SAFETY: `Words` has the size and alignment of `Bitmap`, and after
    // `init` the bitmap is never written again.
    unsafe { &(*words).0 }
}
