//! The local APIC as LHV uses it: timer (periodic), EOI, and IPIs, in xAPIC
//! (MMIO through the identity map) or x2APIC (MSR) mode, whichever the
//! firmware left on (SDM Vol. 3A 11.4, 11.5.4, 11.12).
//!
//! IA32_APIC_BASE's global-enable bit is never cleared (Bochs keeps the APIC
//! dead afterwards).

use shared::x86::{self, msr};

/// APIC_BASE bit 10: x2APIC mode.
const X2APIC_ENABLE: u64 = 1 << 10;
/// APIC_BASE bits 51:12: the xAPIC MMIO page.
const BASE_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Register offsets (xAPIC MMIO; x2APIC MSR = 0x800 + offset / 16).
mod reg {
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const LVT_TIMER: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// SVR bit 8: APIC software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT timer mode periodic (bits 18:17 = 01).
const LVT_PERIODIC: u32 = 1 << 17;
/// LVT mask bit.
const LVT_MASKED: u32 = 1 << 16;
/// Divide configuration "divide by 16" (SDM Figure 11-10).
const DIVIDE_BY_16: u32 = 0b0011;

fn x2apic() -> bool {
    // SAFETY: IA32_APIC_BASE exists on every processor with a local APIC.
    unsafe { x86::rdmsr(msr::IA32_APIC_BASE) & X2APIC_ENABLE != 0 }
}

fn write(offset: u32, value: u32) {
    if x2apic() {
        // SAFETY: x2APIC mode is on; the registers used here are writable.
        unsafe { x86::wrmsr(0x800 + offset / 16, u64::from(value)) }
    } else {
        // SAFETY: IA32_APIC_BASE reads safely; its page is below 4 GiB on
        // every platform LHV runs on, inside the boot identity map.
        let base = unsafe { x86::rdmsr(msr::IA32_APIC_BASE) } & BASE_MASK;
        // SAFETY: an aligned 32-bit APIC register in the identity map.
        unsafe { ::core::ptr::write_volatile((base + u64::from(offset)) as *mut u32, value) }
    }
}

/// Software-enables the APIC (spurious vector `spurious`).
pub fn enable(spurious: u8) {
    write(reg::SVR, SVR_ENABLE | u32::from(spurious));
}

/// Starts the timer in periodic mode on `vector` with `initial` counts
/// (divide by 16).
pub fn start_periodic_timer(vector: u8, initial: u32) {
    write(reg::TIMER_DIVIDE, DIVIDE_BY_16);
    write(reg::LVT_TIMER, LVT_PERIODIC | u32::from(vector));
    write(reg::TIMER_INITIAL, initial);
}

/// Masks and stops the timer.
pub fn stop_timer() {
    write(reg::LVT_TIMER, LVT_MASKED);
    write(reg::TIMER_INITIAL, 0);
}

/// Signals end of interrupt.
pub fn eoi() {
    write(reg::EOI, 0);
}
