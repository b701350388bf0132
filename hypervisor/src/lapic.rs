//! This CPU's local APIC as L0 uses it on the guest's behalf. The guest
//! owns its APIC (mode, base, registers: they are the hardware's); L0 only
//! performs the writes it traps (see `exits::apic_write`, `exits::msr`) and
//! sends its own NMIs to kick other CPUs (see `guest_smp`).

use shared::apic::ApicMode;
use shared::x86::{self, msr};

/// IA32_APIC_BASE bits (SDM vol. 3A 11.4.4).
pub mod base {
    /// BSP flag.
    pub const BSP: u64 = 1 << 8;
    /// x2APIC mode.
    pub const EXTD: u64 = 1 << 10;
    /// APIC global enable.
    pub const EN: u64 = 1 << 11;
    /// Bits 51:12: the xAPIC page (narrowed by MAXPHYADDR).
    pub const ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;
}

/// xAPIC register offsets L0 cares about.
pub mod reg {
    pub const LDR: u64 = 0xD0;
    pub const DFR: u64 = 0xE0;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
}

/// The x2APIC ICR MSR.
pub const X2APIC_ICR: u32 = 0x830;

/// IA32_APIC_BASE of this CPU.
pub fn apic_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every processor with VMX.
    unsafe { x86::rdmsr(msr::IA32_APIC_BASE) }
}

/// The mode of this CPU's APIC, `None` while it is globally disabled.
pub fn mode() -> Option<ApicMode> {
    let b = apic_base();
    match (b & base::EN != 0, b & base::EXTD != 0) {
        (false, _) => None,
        (true, false) => Some(ApicMode::XApic),
        (true, true) => Some(ApicMode::X2Apic),
    }
}

/// The xAPIC page this CPU decodes (meaningful in xAPIC mode).
pub fn xapic_page() -> u64 {
    apic_base() & base::ADDRESS
}

/// Writes `value` at physical `addr` in an xAPIC page that passed
/// [`apic_base_is_safe`] (the guest's trapped page or this CPU's APIC).
pub fn mmio_write(addr: u64, value: u32) {
    // SAFETY: `addr` is a 4-byte aligned offset in a page below 4 GiB and
    // outside L0's region (`apic_base_is_safe`), which L0's identity map
    // covers; the store does what the guest's own store would have done.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) }
}

/// Reads the xAPIC register at physical `addr` (see [`mmio_write`]).
pub fn mmio_read(addr: u64) -> u32 {
    // SAFETY: as in `mmio_write`; APIC register reads have no side effects.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Whether an xAPIC page at `page` is one L0 can reach and trap: below
/// 4 GiB (L0's identity map) and outside L0's region (the APIC would
/// shadow L0's own memory there, even in VMX root operation).
pub fn apic_base_is_safe(page: u64) -> bool {
    page + 0x1000 <= shared::mem::IDENTITY_MAP_END && !crate::memory::overlaps_region(page, 0x1000)
}

/// Writes the ICR: sends the IPI `value` (encoded for `mode`).
pub fn write_icr(mode: ApicMode, value: u64) {
    match mode {
        ApicMode::XApic => {
            let page = xapic_page();
            mmio_write(page + reg::ICR_HIGH, (value >> 32) as u32);
            mmio_write(page + reg::ICR_LOW, value as u32);
        }
        // SAFETY: x2APIC mode is on (so the MSR exists) and callers pass
        // values without reserved bits (checked by `exits::msr`).
        ApicMode::X2Apic => unsafe { x86::wrmsr(X2APIC_ICR, value) },
    }
}

/// Sends an NMI to `apic_id` from L0 (not the guest). `shared::apic` puts
/// the guest's xAPIC ICR high half back afterwards (the guest may be between
/// its own two ICR stores, and may read it). Nothing is sent while the
/// guest keeps its APIC globally disabled: `LocalApic::current` would
/// enable it, changing guest state.
/// Returns whether it was sent.
pub fn send_nmi(apic_id: u32) -> bool {
    // A busy ICR or an id out of range for xAPIC: the kick is lost, as an
    // IPI to a missing CPU would be, and the sender's bounded wait for the
    // target (`guest_smp`) gives up.
    mode().is_some() && shared::apic::LocalApic::current().send_nmi(apic_id).is_ok()
}

/// Sends a STARTUP IPI with `vector` to `apic_id` on the guest's behalf
/// (see `guest_smp::send_startup`); `shared::apic` restores the guest's
/// xAPIC ICR high half afterwards.
pub fn send_startup(apic_id: u32, vector: u8) {
    if mode().is_some() {
        let _ = shared::apic::LocalApic::current().send_startup(apic_id, vector);
    }
}
