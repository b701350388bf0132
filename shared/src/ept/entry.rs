//! EPT paging-structure entries and the EPT pointer (SDM Vol. 3C, 30.3.2
//! "EPT Translation Mechanism", 25.6.11 "Extended-Page-Table Pointer").

use crate::vmx::caps::VmxCaps;
use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// Access rights of an EPT entry (bits 2:0), also used for the kind of
    /// an access being translated.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptPerms: u8 {
        /// Bit 0: reads allowed.
        const READ = 1 << 0;
        /// Bit 1: writes allowed.
        const WRITE = 1 << 1;
        /// Bit 2: instruction fetches allowed (supervisor-mode fetches with
        /// mode-based execute control).
        const EXECUTE = 1 << 2;
    }
}

impl EptPerms {
    /// Read, write and execute.
    pub const RWX: Self = Self::all();
    /// Read and write.
    pub const RW: Self = Self::READ.union(Self::WRITE);
    /// Read and execute.
    pub const RX: Self = Self::READ.union(Self::EXECUTE);

    /// Whether these rights are always an EPT misconfiguration in a present
    /// entry: write without read (SDM 30.3.3.1).
    pub const fn is_write_without_read(self) -> bool {
        self.contains(Self::WRITE) && !self.contains(Self::READ)
    }

    /// Whether these rights are execute-only (valid only if supported).
    pub const fn is_execute_only(self) -> bool {
        self.bits() == Self::EXECUTE.bits()
    }
}

/// The memory types an EPT leaf or the EPTP may name (SDM 30.3.7; 2, 3 and
/// 7 are reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemoryType {
    /// Uncacheable (UC).
    Uncacheable = 0,
    /// Write combining (WC).
    WriteCombining = 1,
    /// Write through (WT).
    WriteThrough = 4,
    /// Write protected (WP).
    WriteProtected = 5,
    /// Write back (WB).
    WriteBack = 6,
}

impl MemoryType {
    /// Decodes a 3-bit memory type; reserved values give `None`.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::Uncacheable),
            1 => Some(Self::WriteCombining),
            4 => Some(Self::WriteThrough),
            5 => Some(Self::WriteProtected),
            6 => Some(Self::WriteBack),
            _ => None,
        }
    }
}

/// Size of the region one entry maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PageSize {
    /// 4 KiB (a PTE).
    Size4K,
    /// 2 MiB (a PDE with bit 7 set).
    Size2M,
    /// 1 GiB (a PDPTE with bit 7 set).
    Size1G,
}

impl PageSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        level_size(self.level())
    }

    /// The paging level whose leaf maps a page of this size (1 = PT).
    pub const fn level(self) -> u8 {
        match self {
            Self::Size4K => 1,
            Self::Size2M => 2,
            Self::Size1G => 3,
        }
    }

    /// The page size of a leaf at `level` (1, 2 or 3).
    pub const fn from_level(level: u8) -> Option<Self> {
        match level {
            1 => Some(Self::Size4K),
            2 => Some(Self::Size2M),
            3 => Some(Self::Size1G),
            _ => None,
        }
    }
}

/// log2 of the 4-KiB page size.
pub const PAGE_SHIFT: u32 = 12;
/// The 4-KiB page size.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
/// Address bits translated per level.
pub const BITS_PER_LEVEL: u32 = 9;
/// Entries in one paging structure.
pub const ENTRIES_PER_TABLE: u64 = 1 << BITS_PER_LEVEL;
/// Bytes in one entry.
pub const ENTRY_SIZE: u64 = 8;
/// Highest physical-address width of the architecture (MAXPHYADDR <= 52).
pub const MAX_PHYS_ADDR_BITS: u8 = 52;

/// Bytes mapped by one entry at `level` (1 = PT: 4 KiB, 2: 2 MiB, ...).
pub const fn level_size(level: u8) -> u64 {
    PAGE_SIZE << (BITS_PER_LEVEL * (level as u32 - 1))
}

/// Index of `gpa`'s entry in the paging structure at `level`.
pub const fn level_index(gpa: u64, level: u8) -> u64 {
    (gpa >> (PAGE_SHIFT + BITS_PER_LEVEL * (level as u32 - 1))) & (ENTRIES_PER_TABLE - 1)
}

/// Mask of physical-address bits below `bits` (`bits` at most 52).
const fn phys_mask(bits: u8) -> u64 {
    let b = if bits > MAX_PHYS_ADDR_BITS {
        MAX_PHYS_ADDR_BITS
    } else {
        bits
    };
    (1u64 << b) - 1
}

/// One EPT paging-structure entry (SDM 30.3.2, Tables 30-1 to 30-6).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EptEntry(pub u64);

impl EptEntry {
    /// Bits 2:0: the access rights.
    pub const PERMS_MASK: u64 = 0b111;
    /// Bits 5:3 of a leaf: the memory type.
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Mask of the memory-type bits.
    pub const MEMORY_TYPE_MASK: u64 = 0b111 << Self::MEMORY_TYPE_SHIFT;
    /// Bit 6 of a leaf: ignore PAT memory type.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// Bit 7 of a PDPTE or PDE: the entry maps a page (1 GiB / 2 MiB).
    pub const LARGE: u64 = 1 << 7;
    /// Bit 8: accessed (when EPT A/D flags are enabled).
    pub const ACCESSED: u64 = 1 << 8;
    /// Bit 9 of a leaf: dirty (when EPT A/D flags are enabled).
    pub const DIRTY: u64 = 1 << 9;
    /// Bit 10: user-mode execute (mode-based execute control only).
    pub const USER_EXECUTE: u64 = 1 << 10;
    /// Bit 63: suppress #VE (EPT-violation #VE only).
    pub const SUPPRESS_VE: u64 = 1 << 63;
    /// Bits 51:12: the physical address (up to MAXPHYADDR).
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Bits 7:3 of a PML4E/PML5E and bits 6:3 of an entry referencing a
    /// table are reserved; bit 7 separately checked.
    const TABLE_RESERVED: u64 = 0b1111 << 3;

    /// A not-present entry.
    pub const EMPTY: Self = Self(0);

    /// An entry referencing the next paging structure at `table`, with all
    /// rights (the leaves decide).
    pub const fn table(table: u64) -> Self {
        Self((table & Self::ADDR_MASK) | EptPerms::RWX.bits() as u64)
    }

    /// A leaf at `level` (1, 2 or 3) mapping the page at `addr`.
    pub const fn leaf(addr: u64, level: u8, perms: EptPerms, memory_type: MemoryType) -> Self {
        let large = if level > 1 { Self::LARGE } else { 0 };
        Self(
            (addr & Self::ADDR_MASK)
                | perms.bits() as u64
                | ((memory_type as u64) << Self::MEMORY_TYPE_SHIFT)
                | large,
        )
    }

    /// Bits 2:0 as rights.
    pub const fn perms(self) -> EptPerms {
        EptPerms::from_bits_truncate((self.0 & Self::PERMS_MASK) as u8)
    }

    /// The entry with its rights replaced by `perms`.
    pub const fn with_perms(self, perms: EptPerms) -> Self {
        Self((self.0 & !Self::PERMS_MASK) | perms.bits() as u64)
    }

    /// Whether the entry is present: any of bits 2:0 set (mode-based
    /// execute control, which would add bit 10, is not used).
    pub const fn is_present(self) -> bool {
        self.0 & Self::PERMS_MASK != 0
    }

    /// Bit 7.
    pub const fn is_large(self) -> bool {
        self.0 & Self::LARGE != 0
    }

    /// Whether a present entry at `level` maps a page (rather than
    /// referencing a table).
    pub const fn is_leaf(self, level: u8) -> bool {
        level == 1 || (matches!(level, 2 | 3) && self.is_large())
    }

    /// Bits 51:12: the physical address of the page or table.
    pub const fn addr(self) -> u64 {
        self.0 & Self::ADDR_MASK
    }

    /// Bits 5:3 as a number.
    pub const fn memory_type_bits(self) -> u8 {
        ((self.0 & Self::MEMORY_TYPE_MASK) >> Self::MEMORY_TYPE_SHIFT) as u8
    }

    /// Bits 5:3 of a leaf (`None` for the reserved values 2, 3 and 7).
    pub const fn memory_type(self) -> Option<MemoryType> {
        MemoryType::from_bits(self.memory_type_bits())
    }

    /// Bit 6 of a leaf.
    pub const fn ignore_pat(self) -> bool {
        self.0 & Self::IGNORE_PAT != 0
    }

    /// Bit 8.
    pub const fn accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }

    /// Bit 9.
    pub const fn dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }

    /// Reserved bits that are set in this present entry at `level`, given
    /// the physical-address width and the supported large pages (SDM
    /// 30.3.3.1 "EPT Misconfigurations"); 0 if none.
    pub const fn reserved_bits(self, level: u8, cfg: &EptConfig) -> u64 {
        let above_width = self.0 & Self::ADDR_MASK & !phys_mask(cfg.max_phys_addr);
        let structural = match level {
            1 => 0,
            2 | 3 if self.is_large() => {
                let supported = if level == 2 {
                    cfg.pages_2m
                } else {
                    cfg.pages_1g
                };
                if !supported {
                    Self::LARGE
                } else {
                    // Address bits below the page size.
                    self.0 & (level_size(level) - 1) & Self::ADDR_MASK
                }
            }
            2 | 3 => self.0 & Self::TABLE_RESERVED,
            _ => self.0 & (Self::TABLE_RESERVED | Self::LARGE),
        };
        above_width | structural
    }
}

impl fmt::Debug for EptEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EptEntry({:#x}: {:?})", self.0, self.perms())
    }
}

/// What the processor supports for EPT, plus its physical-address width:
/// the context of EPTP validation and of walks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptConfig {
    /// MAXPHYADDR (CPUID.80000008H:EAX[7:0]).
    pub max_phys_addr: u8,
    /// Execute-only translations are supported.
    pub execute_only: bool,
    /// 4-level walks are supported.
    pub walk_4: bool,
    /// 5-level walks are supported.
    pub walk_5: bool,
    /// The EPTP may use UC.
    pub memory_type_uc: bool,
    /// The EPTP may use WB.
    pub memory_type_wb: bool,
    /// 2-MiB pages are supported.
    pub pages_2m: bool,
    /// 1-GiB pages are supported.
    pub pages_1g: bool,
    /// Accessed and dirty flags are supported.
    pub accessed_dirty: bool,
}

impl EptConfig {
    /// The configuration of a processor with capabilities `caps` and
    /// physical-address width `max_phys_addr`.
    pub const fn from_caps(caps: &VmxCaps, max_phys_addr: u8) -> Self {
        let e = &caps.ept_vpid;
        Self {
            max_phys_addr,
            execute_only: e.execute_only,
            walk_4: e.walk_length_4,
            walk_5: e.walk_length_5,
            memory_type_uc: e.memory_type_uc,
            memory_type_wb: e.memory_type_wb,
            pages_2m: e.pages_2m,
            pages_1g: e.pages_1g,
            accessed_dirty: e.accessed_dirty,
        }
    }

    /// Everything supported, with a 4-level walk and the given width
    /// (convenient for tests and for tables L0 builds for itself).
    pub const fn full(max_phys_addr: u8) -> Self {
        Self {
            max_phys_addr,
            execute_only: true,
            walk_4: true,
            walk_5: false,
            memory_type_uc: true,
            memory_type_wb: true,
            pages_2m: true,
            pages_1g: true,
            accessed_dirty: true,
        }
    }
}

/// Why an EPTP is invalid (SDM 26.2.1.1, checks on "enable EPT").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EptpError {
    /// Bits 2:0 name a memory type the processor does not allow.
    MemoryType(u8),
    /// Bits 5:3 give an unsupported page-walk length (the value is the
    /// number of levels).
    WalkLength(u8),
    /// Bit 6 is set but A/D flags are not supported.
    AccessedDirty,
    /// Bits 11:7 are not zero.
    ReservedBits,
    /// Address bits at or above the physical-address width are set.
    AddressTooWide,
}

impl fmt::Display for EptpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MemoryType(t) => write!(f, "EPTP memory type {t} not supported"),
            Self::WalkLength(l) => write!(f, "EPTP page-walk length {l} not supported"),
            Self::AccessedDirty => f.write_str("EPTP A/D flags not supported"),
            Self::ReservedBits => f.write_str("EPTP reserved bits 11:7 set"),
            Self::AddressTooWide => f.write_str("EPTP address beyond physical-address width"),
        }
    }
}

/// The EPT pointer (SDM 25.6.11, Table 25-9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Eptp(pub u64);

impl Eptp {
    const MEMORY_TYPE_MASK: u64 = 0b111;
    const WALK_SHIFT: u32 = 3;
    const WALK_MASK: u64 = 0b111;
    /// Bit 6: enable accessed and dirty flags.
    pub const ACCESSED_DIRTY: u64 = 1 << 6;
    /// Bits 11:7: reserved here (bit 7, supervisor shadow-stack control, is
    /// not used by this project).
    pub const RESERVED: u64 = 0x1f << 7;

    /// An EPTP for the paging structure at `root` with `levels` levels.
    pub const fn new(root: u64, memory_type: MemoryType, levels: u8, accessed_dirty: bool) -> Self {
        let ad = if accessed_dirty {
            Self::ACCESSED_DIRTY
        } else {
            0
        };
        Self(
            (root & EptEntry::ADDR_MASK)
                | memory_type as u64
                | ((levels.wrapping_sub(1) as u64 & Self::WALK_MASK) << Self::WALK_SHIFT)
                | ad,
        )
    }

    /// Bits 2:0: the memory type for accessing the paging structures.
    pub const fn memory_type_bits(self) -> u8 {
        (self.0 & Self::MEMORY_TYPE_MASK) as u8
    }

    /// The page-walk length: bits 5:3 plus 1.
    pub const fn levels(self) -> u8 {
        ((self.0 >> Self::WALK_SHIFT) & Self::WALK_MASK) as u8 + 1
    }

    /// Bit 6: accessed and dirty flags enabled.
    pub const fn accessed_dirty(self) -> bool {
        self.0 & Self::ACCESSED_DIRTY != 0
    }

    /// Bits 51:12: the physical address of the root paging structure.
    pub const fn root(self) -> u64 {
        self.0 & EptEntry::ADDR_MASK
    }

    /// Checks the EPTP against the processor (SDM 26.2.1.1): memory type
    /// UC or WB as supported, a supported walk length (4 or 5), A/D only
    /// if supported, bits 11:7 zero, no address bit at or above MAXPHYADDR.
    pub const fn validate(self, cfg: &EptConfig) -> Result<(), EptpError> {
        let mt = self.memory_type_bits();
        let mt_ok = (mt == MemoryType::Uncacheable as u8 && cfg.memory_type_uc)
            || (mt == MemoryType::WriteBack as u8 && cfg.memory_type_wb);
        if !mt_ok {
            return Err(EptpError::MemoryType(mt));
        }
        let levels = self.levels();
        if !((levels == 4 && cfg.walk_4) || (levels == 5 && cfg.walk_5)) {
            return Err(EptpError::WalkLength(levels));
        }
        if self.accessed_dirty() && !cfg.accessed_dirty {
            return Err(EptpError::AccessedDirty);
        }
        if self.0 & Self::RESERVED != 0 {
            return Err(EptpError::ReservedBits);
        }
        if self.0 & !phys_mask(cfg.max_phys_addr) & !0xfff != 0 {
            return Err(EptpError::AddressTooWide);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::tests::bochs_caps;

    fn bochs() -> EptConfig {
        EptConfig::from_caps(&bochs_caps(), 40)
    }

    #[test]
    fn eptp_fields_and_validation() {
        let cfg = bochs();
        let p = Eptp::new(0x12_3000, MemoryType::WriteBack, 4, true);
        assert_eq!(p.0, 0x12_305e);
        assert_eq!(
            (p.levels(), p.accessed_dirty(), p.root()),
            (4, true, 0x12_3000)
        );
        assert_eq!(p.validate(&cfg), Ok(()));
        assert_eq!(
            Eptp::new(0x1000, MemoryType::Uncacheable, 4, false).validate(&cfg),
            Ok(())
        );
        let wt = Eptp::new(0x1000, MemoryType::WriteThrough, 4, false);
        assert_eq!(wt.validate(&cfg), Err(EptpError::MemoryType(4)));
        let five = Eptp::new(0x1000, MemoryType::WriteBack, 5, false);
        assert_eq!(five.validate(&cfg), Err(EptpError::WalkLength(5)));
        assert_eq!(
            Eptp(0x1000 | 6 | (3 << 3) | (1 << 8)).validate(&cfg),
            Err(EptpError::ReservedBits)
        );
        assert_eq!(
            Eptp((1 << 40) | 0x5e).validate(&cfg),
            Err(EptpError::AddressTooWide)
        );
        let no_ad = EptConfig {
            accessed_dirty: false,
            ..cfg
        };
        assert_eq!(p.validate(&no_ad), Err(EptpError::AccessedDirty));
    }

    #[test]
    fn entry_fields() {
        let e = EptEntry::leaf(0x4000_0000, 3, EptPerms::RX, MemoryType::WriteBack);
        assert_eq!(e.0, 0x4000_00b5);
        assert!(e.is_present() && e.is_large() && e.is_leaf(3) && !e.is_leaf(4));
        assert_eq!(e.memory_type(), Some(MemoryType::WriteBack));
        assert_eq!(e.perms(), EptPerms::RX);
        assert!(!e.with_perms(EptPerms::empty()).is_present());
        assert_eq!(EptEntry(0x10).memory_type(), None);
        assert_eq!(EptEntry::table(0x5000).0, 0x5007);
        assert!(EptPerms::WRITE.is_write_without_read());
        assert!(EptPerms::EXECUTE.is_execute_only());
    }

    #[test]
    fn reserved_bits_by_level() {
        let cfg = bochs();
        // A 2-MiB page whose address is not 2-MiB aligned.
        let e = EptEntry(0x20_1000 | EptEntry::LARGE | 7);
        assert_eq!(e.reserved_bits(2, &cfg), 0x1000);
        // Bit 7 in a PML4E.
        assert_ne!(
            EptEntry(0x1000 | EptEntry::LARGE | 7).reserved_bits(4, &cfg),
            0
        );
        // Memory-type bits in a table entry.
        assert_ne!(EptEntry(0x1000 | (6 << 3) | 7).reserved_bits(2, &cfg), 0);
        // Address beyond MAXPHYADDR (40).
        assert_eq!(EptEntry((1 << 40) | 7).reserved_bits(1, &cfg), 1 << 40);
        // 1-GiB page on a processor without them.
        let no1g = EptConfig {
            pages_1g: false,
            ..cfg
        };
        let g = EptEntry(0x4000_0000 | EptEntry::LARGE | 7);
        assert_eq!(g.reserved_bits(3, &cfg), 0);
        assert_eq!(g.reserved_bits(3, &no1g), EptEntry::LARGE);
        // A PTE's bit 7 is ignored.
        assert_eq!(
            EptEntry(0x1000 | EptEntry::LARGE | 7).reserved_bits(1, &cfg),
            0
        );
    }

    #[test]
    fn sizes_and_indices() {
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        assert_eq!(PageSize::Size1G.bytes(), 1 << 30);
        assert_eq!(PageSize::from_level(2), Some(PageSize::Size2M));
        assert_eq!(level_index(0x0080_4030_0000, 4), 1);
        assert_eq!(level_index(0x0080_4030_0000, 3), 1);
        assert_eq!(level_index(0x0080_4030_0000, 2), 1);
        assert_eq!(level_index(0x0080_4030_0000, 1), 0x100);
    }
}
