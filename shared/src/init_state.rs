//! The processor state INIT gives (SDM Vol. 3A 9.1.1, Table 9-1 "IA-32
//! and Intel 64 Processor States Following Power-up, Reset, or INIT", the
//! INIT column) and where the processor goes after it (SDM 9.4.1 / 9.4.4,
//! 10.4.7.3): the bootstrap processor restarts at the reset vector, an
//! application processor waits for a STARTUP IPI. What a hypervisor that
//! emulates INIT writes into the guest state.

/// CR0.ET (bit 4), set by INIT.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NW (bit 29), kept by INIT.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD (bit 30), kept by INIT.
pub const CR0_CD: u64 = 1 << 30;
/// CR0 after power-up or RESET (60000010H).
pub const CR0_RESET: u64 = CR0_CD | CR0_NW | CR0_ET;

/// CR0 after INIT from CR0 `before`: "CD and NW are unchanged, bit 4 is
/// set to 1, all other bits are cleared" (Table 9-1, note 2).
pub const fn cr0_after_init(before: u64) -> u64 {
    (before & (CR0_CD | CR0_NW)) | CR0_ET
}

/// CS after RESET and INIT: selector F000H, base FFFF0000H, limit FFFFH.
pub const CS_SELECTOR: u16 = 0xf000;
pub const CS_BASE: u64 = 0xffff_0000;
/// EIP after RESET and INIT.
pub const RIP: u64 = 0xfff0;
/// The reset vector (CS base + EIP): the firmware's first instruction.
pub const RESET_VECTOR: u64 = CS_BASE + RIP;
/// Every other segment: selector 0, base 0, limit FFFFH (as the GDTR,
/// IDTR, LDTR and TR limits).
pub const SEGMENT_LIMIT: u32 = 0xffff;
/// EFLAGS: only the fixed bit 1.
pub const RFLAGS: u64 = 0x2;
/// DR0-DR3 are 0; DR6 and DR7 have their fixed bits.
pub const DR6: u64 = 0xffff_0ff0;
pub const DR7: u64 = 0x400;
/// XCR0: x87 state only.
pub const XCR0: u64 = 1;

/// What a processor does after INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterInit {
    /// Runs from the reset vector at once (the BSP: the firmware's INIT
    /// handling, e.g. the CMOS shutdown code, decides what follows).
    ResetVector,
    /// Waits for SIPI (an AP; the SIPI's vector gives its start address).
    WaitForSipi,
}

/// Where a processor goes after INIT: `bsp` is IA32_APIC_BASE.BSP.
pub const fn after_init(bsp: bool) -> AfterInit {
    if bsp {
        AfterInit::ResetVector
    } else {
        AfterInit::WaitForSipi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table_9_1_init_column() {
        assert_eq!(CR0_RESET, 0x6000_0010);
        assert_eq!(cr0_after_init(CR0_RESET), 0x6000_0010);
        // A running OS's CR0 (PG, WP, NE, MP, PE; caches on).
        assert_eq!(cr0_after_init(0x8005_0033), 0x10);
        assert_eq!(cr0_after_init(0xe005_0033), 0x6000_0010);
        assert_eq!(RESET_VECTOR, 0xffff_fff0);
        assert_eq!(u64::from(CS_SELECTOR) << 4, 0xf0000, "real-mode alias");
        assert_eq!((RFLAGS, DR6, DR7, XCR0), (2, 0xffff_0ff0, 0x400, 1));
    }

    #[test]
    fn the_bsp_restarts_and_aps_wait() {
        assert_eq!(after_init(true), AfterInit::ResetVector);
        assert_eq!(after_init(false), AfterInit::WaitForSipi);
    }

    proptest! {
        #[test]
        fn init_cr0_keeps_only_cd_and_nw(cr0 in any::<u32>()) {
            let cr0 = u64::from(cr0);
            let after = cr0_after_init(cr0);
            prop_assert_eq!(after & !(CR0_CD | CR0_NW), CR0_ET);
            prop_assert_eq!(after & (CR0_CD | CR0_NW), cr0 & (CR0_CD | CR0_NW));
            // Paging and protection are off: real mode at the reset vector.
            prop_assert_eq!(after & ((1 << 31) | 1), 0);
        }
    }
}
