//! The MSR bitmap shared by every VMCS01 (SDM 25.6.9): which RDMSR/WRMSR
//! exit. Everything passes through except the MSRs L0 owns or emulates.

use shared::x86::msr;

/// IA32_VMX_BASIC .. IA32_VMX_VMFUNC: hidden while VMX is hidden.
pub const VMX_CAPS: core::ops::RangeInclusive<u32> = 0x480..=0x491;

/// MSRs of features that write to memory by physical address or through
/// the debug store (Intel PT's IA32_RTIT_*, IA32_DS_AREA, IA32_PEBS_ENABLE):
/// the features are hidden in CPUID and every access to these exits and is
/// #GP (`exits::msr`), so they can never point at L0's memory.
pub const HIDDEN_FEATURE_MSRS: [core::ops::RangeInclusive<u32>; 5] = [
    0x3f1..=0x3f1, // IA32_PEBS_ENABLE
    0x560..=0x561, // IA32_RTIT_OUTPUT_BASE, IA32_RTIT_OUTPUT_MASK_PTRS
    0x570..=0x572, // IA32_RTIT_CTL, IA32_RTIT_STATUS, IA32_RTIT_CR3_MATCH
    0x580..=0x587, // IA32_RTIT_ADDR0_A .. IA32_RTIT_ADDR3_B
    0x600..=0x600, // IA32_DS_AREA
];

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
    for m in HIDDEN_FEATURE_MSRS.into_iter().flatten() {
        set(b, m, true, true);
    }
    // The guest's IPIs (x2APIC ICR) and APIC moves (see `exits::msr`).
    set(b, crate::lapic::X2APIC_ICR, false, true);
    set(b, msr::IA32_APIC_BASE, true, true);
    // IA32_XSS follows the guest's CPUID (see `exits::msr`).
    set(b, shared::xss::IA32_XSS, true, true);
    // The virtual MTRRs (see `vmtrr`).
    set(b, shared::mtrr::IA32_MTRR_DEF_TYPE, true, true);
    for m in shared::mtrr::FIXED_MSRS {
        set(b, m, true, true);
    }
    for m in shared::mtrr::IA32_MTRR_PHYSBASE0
        ..shared::mtrr::IA32_MTRR_PHYSBASE0 + 2 * shared::mtrr::MAX_VARIABLE as u32
    {
        set(b, m, true, true);
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
