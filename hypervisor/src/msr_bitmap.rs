//! The MSR bitmap shared by every VMCS01 (SDM 25.6.9): which RDMSR/WRMSR
//! exit. Everything passes through except the MSRs L0 owns or emulates.
//! The bitmap is built at compile time and never written: the processors
//! read it, and L0 merges its few non-zero words into VMCS02's bitmaps.

use shared::vmx::msr_bitmap::{MsrBitmap, SparseMsrBitmap, WORDS};
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

/// The bitmap: what L0 owns or emulates.
const fn build() -> MsrBitmap {
    let mut b = MsrBitmap::EMPTY
        .intercept(msr::IA32_FEATURE_CONTROL, true, true)
        .intercept_range(*VMX_CAPS.start(), *VMX_CAPS.end())
        .intercept(msr::IA32_EFER, true, true);
    let mut i = 0;
    while i < HIDDEN_FEATURE_MSRS.len() {
        let r = &HIDDEN_FEATURE_MSRS[i];
        b = b.intercept_range(*r.start(), *r.end());
        i += 1;
    }
    b = b
        // The guest's IPIs (x2APIC ICR) and APIC moves (see `exits::msr`).
        .intercept(crate::lapic::X2APIC_ICR, false, true)
        .intercept(msr::IA32_APIC_BASE, true, true)
        // IA32_XSS follows the guest's CPUID (see `exits::msr`).
        .intercept(shared::xss::IA32_XSS, true, true)
        // The virtual MTRRs (see `vmtrr`).
        .intercept(shared::mtrr::IA32_MTRR_DEF_TYPE, true, true);
    let mut i = 0;
    while i < shared::mtrr::FIXED_MSRS.len() {
        b = b.intercept(shared::mtrr::FIXED_MSRS[i], true, true);
        i += 1;
    }
    let base = shared::mtrr::IA32_MTRR_PHYSBASE0;
    b.intercept_range(base, base + 2 * shared::mtrr::MAX_VARIABLE as u32 - 1)
}

/// The bitmap every VMCS01 points to (the processors only read it).
static BITMAP: MsrBitmap = build();

/// Its non-zero words, which L0 ORs into VMCS02's bitmaps.
static SPARSE: SparseMsrBitmap<{ build().nonzero_words() }> = build().sparse();

/// The bitmap's physical address (for VMCS01).
pub fn phys() -> u64 {
    shared::boot::layout::phys_of(&raw const BITMAP)
}

/// ORs L0's bitmap into `words` (an MSR bitmap): an access exits by it if
/// L0 or `words` intercepts it.
pub fn merge_into(words: &mut [u64; WORDS]) {
    SPARSE.merge_into(words);
}
