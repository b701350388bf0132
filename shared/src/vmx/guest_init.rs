//! The guest state L0 writes into a VMCS01 for a processor after INIT (SDM
//! Vol. 3A 10.1.1, Table 10-1) and for the BIOS's boot state (real mode at
//! 0000:7C00): pure functions over any [`VmcsAccess`], so that the host
//! tests can run the VM-entry guest-state checks on exactly what L0 enters
//! (see [`crate::vmx::nested::entry_checks::check_guest_state`]).

use crate::vmx::controls::EntryControls;
use crate::vmx::{VmcsAccess, VmcsField as F, VmxCaps};

/// CR0 bits (SDM 2.5).
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// Guest activity states (SDM 25.4.2).
pub mod activity {
    pub const ACTIVE: u64 = 0;
    pub const WAIT_FOR_SIPI: u64 = 3;
}

/// The PAT's power-up value (SDM 13.12.4).
pub const PAT_RESET: u64 = 0x0007_0406_0007_0406;

/// The CR0 value the processor runs the guest with for guest value `v`
/// (PE and PG free: unrestricted guest).
pub fn cr0_real(caps: &VmxCaps, v: u64) -> u64 {
    let fixed0 = caps.cr0_fixed0 & !(cr0::PE | cr0::PG);
    (v | fixed0) & caps.cr0_fixed1
}

/// The CR4 value the processor runs the guest with for guest value `v`.
pub fn cr4_real(caps: &VmxCaps, v: u64) -> u64 {
    (v | caps.cr4_fixed0) & caps.cr4_fixed1
}

/// Writes the guest state a processor has after INIT (SDM Table 10-1),
/// active, with the VM-entry control that depends on it ("IA-32e mode
/// guest" off).
pub fn write_init_state(v: &mut impl VmcsAccess, caps: &VmxCaps) {
    let cr0 = cr0::CD | cr0::NW | cr0::ET;
    v.write(F::Cr0ReadShadow, cr0);
    v.write(F::GuestCr0, cr0_real(caps, cr0));
    v.write(F::Cr4ReadShadow, 0);
    v.write(F::GuestCr4, cr4_real(caps, 0));
    v.write(F::GuestCr3, 0);
    v.write(F::GuestIa32Efer, 0);
    v.clear_bits(
        F::VmEntryControls,
        u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
    );
    set_real_mode_segment(v, Seg::Cs, 0xf000, 0xffff_0000);
    for s in [Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs, Seg::Ss] {
        set_real_mode_segment(v, s, 0, 0);
    }
    v.write(F::GuestLdtrSelector, 0);
    v.write(F::GuestLdtrBase, 0);
    v.write(F::GuestLdtrLimit, 0xffff);
    v.write(F::GuestLdtrAccessRights, 0x82);
    v.write(F::GuestTrSelector, 0);
    v.write(F::GuestTrBase, 0);
    v.write(F::GuestTrLimit, 0xffff);
    // A busy TSS (type 11), as VM entry requires (SDM 27.3.1.2).
    v.write(F::GuestTrAccessRights, 0x8b);
    v.write(F::GuestGdtrBase, 0);
    v.write(F::GuestGdtrLimit, 0xffff);
    v.write(F::GuestIdtrBase, 0);
    v.write(F::GuestIdtrLimit, 0xffff);
    v.write(F::GuestRip, 0xfff0);
    v.write(F::GuestRsp, 0);
    v.write(F::GuestRflags, 0x2);
    v.write(F::GuestDr7, 0x400);
    v.write(F::GuestIa32Debugctl, 0);
    v.write(F::GuestIa32SysenterCs, 0);
    v.write(F::GuestIa32SysenterEsp, 0);
    v.write(F::GuestIa32SysenterEip, 0);
    v.write(F::GuestIa32Pat, PAT_RESET);
    v.write(F::GuestInterruptibilityState, 0);
    v.write(F::GuestPendingDebugExceptions, 0);
    v.write(F::GuestActivityState, activity::ACTIVE);
    for f in [
        F::GuestPdpte0,
        F::GuestPdpte1,
        F::GuestPdpte2,
        F::GuestPdpte3,
    ] {
        v.write(f, 0);
    }
}

/// The state the BIOS leaves for a boot sector (after [`write_init_state`]):
/// real mode, caches on, CS:IP = 0000:`boot_sector`, SS:SP = 0000:`boot_sector`,
/// interrupts enabled.
pub fn write_boot_sector_state(v: &mut impl VmcsAccess, caps: &VmxCaps, boot_sector: u64) {
    write_init_state(v, caps);
    let cr0 = cr0::ET;
    v.write(F::Cr0ReadShadow, cr0);
    v.write(F::GuestCr0, cr0_real(caps, cr0));
    set_real_mode_segment(v, Seg::Cs, 0, 0);
    v.write(F::GuestRip, boot_sector);
    v.write(F::GuestRsp, boot_sector);
    v.write(F::GuestRflags, 0x202);
    v.write(F::GuestActivityState, activity::ACTIVE);
}

/// Segment registers.
#[derive(Clone, Copy, Debug)]
pub enum Seg {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

impl Seg {
    /// The selector, base, limit and access-rights fields.
    pub const fn fields(self) -> [F; 4] {
        match self {
            Seg::Es => [
                F::GuestEsSelector,
                F::GuestEsBase,
                F::GuestEsLimit,
                F::GuestEsAccessRights,
            ],
            Seg::Cs => [
                F::GuestCsSelector,
                F::GuestCsBase,
                F::GuestCsLimit,
                F::GuestCsAccessRights,
            ],
            Seg::Ss => [
                F::GuestSsSelector,
                F::GuestSsBase,
                F::GuestSsLimit,
                F::GuestSsAccessRights,
            ],
            Seg::Ds => [
                F::GuestDsSelector,
                F::GuestDsBase,
                F::GuestDsLimit,
                F::GuestDsAccessRights,
            ],
            Seg::Fs => [
                F::GuestFsSelector,
                F::GuestFsBase,
                F::GuestFsLimit,
                F::GuestFsAccessRights,
            ],
            Seg::Gs => [
                F::GuestGsSelector,
                F::GuestGsBase,
                F::GuestGsLimit,
                F::GuestGsAccessRights,
            ],
        }
    }
}

/// Loads a real-mode segment: 64-KiB limit, present, accessed read/write
/// data (CS: accessed execute/read code), DPL 0.
pub fn set_real_mode_segment(v: &mut impl VmcsAccess, s: Seg, selector: u16, base: u64) {
    let [sel, b, lim, ar] = s.fields();
    v.write(sel, u64::from(selector));
    v.write(b, base);
    v.write(lim, 0xffff);
    v.write(ar, if matches!(s, Seg::Cs) { 0x9b } else { 0x93 });
}

#[cfg(test)]
mod tests;
