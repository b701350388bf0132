//! The EPT walk: translation of a guest-physical address (SDM Vol. 3C,
//! 30.3.2 "EPT Translation Mechanism", 30.3.3 "EPT-Induced VM Exits").
//!
//! The walk reads tables through [`PhysMemory`] and never panics on their
//! contents. It does not set accessed or dirty flags: callers that emulate
//! A/D updates for a guest's EPT do so themselves.

use super::entry::{
    BITS_PER_LEVEL, ENTRY_SIZE, EptConfig, EptEntry, EptPerms, Eptp, EptpError, MemoryType,
    PAGE_SHIFT, PageSize, level_index, level_size,
};
use crate::mem::{MemError, PhysMemory};
use crate::vmx::exit::EptViolationQual;
use core::fmt;

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The host-physical (output) address.
    pub hpa: u64,
    /// The effective rights: the AND of the rights of every entry used.
    pub perms: EptPerms,
    /// The size of the page that maps the address.
    pub page_size: PageSize,
    /// The leaf's memory type.
    pub memory_type: MemoryType,
    /// The leaf's ignore-PAT bit.
    pub ignore_pat: bool,
    /// The physical address of the leaf entry (for A/D emulation and edits).
    pub leaf_entry_addr: u64,
}

/// An EPT violation (SDM 30.3.3.2): an entry is not present, or the
/// rights of the entries do not allow the access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptViolation {
    /// Level of the not-present entry, or of the leaf when the rights did
    /// not allow the access (1 = PT).
    pub level: u8,
    /// Whether an entry was not present (else the rights were insufficient).
    pub not_present: bool,
    /// The AND of the rights of the entries read (empty if not present).
    pub allowed: EptPerms,
    /// The access that was attempted.
    pub access: EptPerms,
}

impl EptViolation {
    /// The access and permission bits (5:0) of the exit qualification.
    pub const fn qualification(&self) -> EptViolationQual {
        EptViolationQual(((self.allowed.bits() as u64) << 3) | self.access.bits() as u64)
    }
}

/// Why an entry is an EPT misconfiguration (SDM 30.3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MisconfigReason {
    /// Write allowed but read not allowed.
    WriteWithoutRead,
    /// Execute-only, and execute-only translations are not supported.
    ExecuteOnlyUnsupported,
    /// Reserved bits set (these bits).
    ReservedBits(u64),
    /// A leaf with memory type 2, 3 or 7 (this value).
    InvalidMemoryType(u8),
}

/// An EPT misconfiguration: a present entry with an invalid setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptMisconfig {
    /// Level of the entry (1 = PT).
    pub level: u8,
    /// The entry's value.
    pub entry: u64,
    /// What is wrong with it.
    pub reason: MisconfigReason,
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptFault {
    /// EPT violation.
    Violation(EptViolation),
    /// EPT misconfiguration.
    Misconfig(EptMisconfig),
    /// The EPTP itself is invalid (a VM-entry failure, not a walk fault).
    InvalidEptp(EptpError),
    /// The guest-physical address has bits beyond what the walk translates.
    GpaTooWide(u64),
    /// A paging structure could not be read.
    Memory(MemError),
}

impl From<MemError> for EptFault {
    fn from(e: MemError) -> Self {
        Self::Memory(e)
    }
}

impl fmt::Display for EptFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Violation(v) => write!(
                f,
                "EPT violation at level {} ({}, access {:?}, allowed {:?})",
                v.level,
                if v.not_present {
                    "not present"
                } else {
                    "rights"
                },
                v.access,
                v.allowed
            ),
            Self::Misconfig(m) => write!(
                f,
                "EPT misconfiguration at level {}: entry {:#x}, {:?}",
                m.level, m.entry, m.reason
            ),
            Self::InvalidEptp(e) => write!(f, "{e}"),
            Self::GpaTooWide(gpa) => write!(f, "guest-physical address {gpa:#x} too wide"),
            Self::Memory(e) => write!(f, "EPT table unreadable: {e:?}"),
        }
    }
}

/// Checks a present entry at `level` for the conditions of an EPT
/// misconfiguration (SDM 30.3.3.1).
pub fn check_entry(entry: EptEntry, level: u8, cfg: &EptConfig) -> Result<(), EptMisconfig> {
    let fail = |reason| EptMisconfig {
        level,
        entry: entry.0,
        reason,
    };
    let perms = entry.perms();
    if perms.is_write_without_read() {
        return Err(fail(MisconfigReason::WriteWithoutRead));
    }
    if perms.is_execute_only() && !cfg.execute_only {
        return Err(fail(MisconfigReason::ExecuteOnlyUnsupported));
    }
    let reserved = entry.reserved_bits(level, cfg);
    if reserved != 0 {
        return Err(fail(MisconfigReason::ReservedBits(reserved)));
    }
    if entry.is_leaf(level) && entry.memory_type().is_none() {
        return Err(fail(MisconfigReason::InvalidMemoryType(
            entry.memory_type_bits(),
        )));
    }
    Ok(())
}

/// Translates `gpa` for an `access` (one or more of read, write, execute)
/// through the tables named by `eptp`, read from `mem`.
///
/// The walk checks each entry as it reads it (a misconfiguration is found
/// before anything below it is read) and the rights at the end, as the
/// processor does.
pub fn walk(
    mem: &impl PhysMemory,
    eptp: Eptp,
    gpa: u64,
    access: EptPerms,
    cfg: &EptConfig,
) -> Result<Translation, EptFault> {
    eptp.validate(cfg).map_err(EptFault::InvalidEptp)?;
    let levels = eptp.levels();
    let width = PAGE_SHIFT + BITS_PER_LEVEL * levels as u32;
    if gpa >> width != 0 {
        return Err(EptFault::GpaTooWide(gpa));
    }

    let mut table = eptp.root();
    let mut allowed = EptPerms::RWX;
    let mut level = levels;
    loop {
        let entry_addr = table + level_index(gpa, level) * ENTRY_SIZE;
        let entry = EptEntry(mem.read_u64(entry_addr)?);
        if !entry.is_present() {
            return Err(EptFault::Violation(EptViolation {
                level,
                not_present: true,
                allowed: EptPerms::empty(),
                access,
            }));
        }
        check_entry(entry, level, cfg).map_err(EptFault::Misconfig)?;
        allowed &= entry.perms();

        if entry.is_leaf(level) {
            if !allowed.contains(access) {
                return Err(EptFault::Violation(EptViolation {
                    level,
                    not_present: false,
                    allowed,
                    access,
                }));
            }
            let offset_mask = level_size(level) - 1;
            return match (PageSize::from_level(level), entry.memory_type()) {
                (Some(page_size), Some(memory_type)) => Ok(Translation {
                    hpa: (entry.addr() & !offset_mask) | (gpa & offset_mask),
                    perms: allowed,
                    page_size,
                    memory_type,
                    ignore_pat: entry.ignore_pat(),
                    leaf_entry_addr: entry_addr,
                }),
                // Excluded by check_entry and is_leaf; kept total.
                _ => Err(EptFault::Misconfig(EptMisconfig {
                    level,
                    entry: entry.0,
                    reason: MisconfigReason::InvalidMemoryType(entry.memory_type_bits()),
                })),
            };
        }
        table = entry.addr();
        level -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::entry::PAGE_SIZE;
    use crate::mem::SparseMemory;

    /// Tables at fixed addresses: PML4 0x1000, PDPT 0x2000, PD 0x3000,
    /// PT 0x4000, mapping GPA 0x5000 to `leaf`.
    fn tables(leaf: u64) -> (SparseMemory, Eptp) {
        let mut m = SparseMemory::new();
        m.map(0x1000, 4 * PAGE_SIZE);
        m.write_u64(0x1000, EptEntry::table(0x2000).0).unwrap();
        m.write_u64(0x2000, EptEntry::table(0x3000).0).unwrap();
        m.write_u64(0x3000, EptEntry::table(0x4000).0).unwrap();
        m.write_u64(0x4000 + 5 * 8, leaf).unwrap();
        (m, Eptp::new(0x1000, MemoryType::WriteBack, 4, false))
    }

    fn misconfig(leaf: u64, cfg: &EptConfig) -> MisconfigReason {
        let (m, eptp) = tables(leaf);
        match walk(&m, eptp, 0x5000, EptPerms::READ, cfg) {
            Err(EptFault::Misconfig(mc)) => {
                assert_eq!(mc.level, 1);
                mc.reason
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn translates_4k_leaf() {
        let cfg = EptConfig::full(40);
        let leaf = EptEntry::leaf(0xabc_d000, 1, EptPerms::RW, MemoryType::WriteBack).0
            | EptEntry::IGNORE_PAT;
        let (m, eptp) = tables(leaf);
        let t = walk(&m, eptp, 0x5123, EptPerms::WRITE, &cfg).unwrap();
        assert_eq!(t.hpa, 0xabc_d123);
        assert_eq!(t.perms, EptPerms::RW);
        assert_eq!(t.page_size, PageSize::Size4K);
        assert!(t.ignore_pat);
        assert_eq!(t.leaf_entry_addr, 0x4028);
        let v = walk(&m, eptp, 0x5123, EptPerms::EXECUTE, &cfg).unwrap_err();
        let EptFault::Violation(v) = v else {
            panic!("{v:?}")
        };
        assert!(!v.not_present);
        assert_eq!(v.qualification().0, 0b011_100);
        let v = walk(&m, eptp, 0x6000, EptPerms::READ, &cfg).unwrap_err();
        assert!(matches!(
            v,
            EptFault::Violation(EptViolation {
                level: 1,
                not_present: true,
                ..
            })
        ));
    }

    #[test]
    fn misconfigurations() {
        let cfg = EptConfig::full(40);
        let wb = (MemoryType::WriteBack as u64) << EptEntry::MEMORY_TYPE_SHIFT;
        assert_eq!(
            misconfig(0x7000 | wb | 0b010, &cfg),
            MisconfigReason::WriteWithoutRead
        );
        assert_eq!(
            misconfig(0x7000 | wb | 0b110, &cfg),
            MisconfigReason::WriteWithoutRead
        );
        let no_xo = EptConfig {
            execute_only: false,
            ..cfg
        };
        assert_eq!(
            misconfig(0x7000 | wb | 0b100, &no_xo),
            MisconfigReason::ExecuteOnlyUnsupported
        );
        for mt in [2u64, 3, 7] {
            assert_eq!(
                misconfig(0x7000 | (mt << 3) | 1, &cfg),
                MisconfigReason::InvalidMemoryType(mt as u8)
            );
        }
        assert_eq!(
            misconfig((1 << 41) | 0x7000 | wb | 1, &cfg),
            MisconfigReason::ReservedBits(1 << 41)
        );
        // Execute-only is fine where supported.
        let (m, eptp) = tables(0x7000 | wb | 0b100);
        assert!(walk(&m, eptp, 0x5000, EptPerms::EXECUTE, &cfg).is_ok());
    }

    #[test]
    fn misconfig_in_upper_level_and_large_pages() {
        let cfg = EptConfig::full(40);
        let (mut m, eptp) = tables(0);
        // A 2-MiB leaf in the PD with a misaligned address.
        let pde = EptEntry::leaf(0x20_0000, 2, EptPerms::RWX, MemoryType::WriteBack).0 | 0x1000;
        m.write_u64(0x3000 + 8, pde).unwrap();
        let f = walk(&m, eptp, 0x20_0000, EptPerms::READ, &cfg).unwrap_err();
        assert!(
            matches!(f, EptFault::Misconfig(EptMisconfig { level: 2, .. })),
            "{f:?}"
        );
        // A well-formed 2-MiB leaf.
        m.write_u64(0x3000 + 8, pde & !0x1000).unwrap();
        let t = walk(&m, eptp, 0x2f_ffff, EptPerms::READ, &cfg).unwrap();
        assert_eq!((t.hpa, t.page_size), (0x2f_ffff, PageSize::Size2M));
        // Bit 7 in the PML4E.
        m.write_u64(0x1000, EptEntry::table(0x2000).0 | EptEntry::LARGE)
            .unwrap();
        let f = walk(&m, eptp, 0x5000, EptPerms::READ, &cfg).unwrap_err();
        assert!(
            matches!(f, EptFault::Misconfig(EptMisconfig { level: 4, .. })),
            "{f:?}"
        );
    }

    #[test]
    fn bad_eptp_gpa_and_memory() {
        let cfg = EptConfig::full(40);
        let (m, eptp) = tables(0);
        let bad = Eptp(eptp.0 | (1 << 9));
        assert_eq!(
            walk(&m, bad, 0, EptPerms::READ, &cfg),
            Err(EptFault::InvalidEptp(EptpError::ReservedBits))
        );
        assert_eq!(
            walk(&m, eptp, 1 << 48, EptPerms::READ, &cfg),
            Err(EptFault::GpaTooWide(1 << 48))
        );
        let elsewhere = Eptp::new(0x9000, MemoryType::WriteBack, 4, false);
        assert!(matches!(
            walk(&m, elsewhere, 0, EptPerms::READ, &cfg),
            Err(EptFault::Memory(_))
        ));
    }
}
