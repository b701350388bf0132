//! Nested EPT: what L0 does about an EPT violation of L2 when L1 uses EPT.
//!
//! L2's guest-physical address `gpa2` goes through L1's EPT (EPT12, tables
//! in L1's memory) to an L1-physical address `gpa1`, and that through L0's
//! EPT01 to a host-physical address: EPT02(x) = EPT01(EPT12(x)). EPT02 is
//! built on demand, one entry per EPT violation of L2 (the design of the
//! Turtles paper and of XMHF64). [`resolve`] decides one violation:
//!
//! - EPT12 does not allow the access (an entry not present, or the AND of
//!   the rights of *every* level lacks the access: XMHF64's bug was to
//!   check the last level only): L1's EPT violation, with the exit
//!   qualification hardware would give L1 (SDM 28.2.1, Table 28-7);
//! - an entry of the EPT12 walk is misconfigured (SDM 30.3.3.1), at any
//!   level, or a table of EPT12 is outside L1's memory (hardware would read
//!   all ones there, which is a misconfiguration): L1's EPT misconfiguration;
//! - EPT12 allows the access but EPT01 does not (L0's region, the trapped
//!   xAPIC page, beyond EPT01): L0's business, never L1's;
//! - otherwise the EPT02 leaf to install: the host page, the rights of
//!   both walks intersected, EPT12's memory type and ignore-PAT bit (the
//!   types L1 chose for L2; EPT01 only hides and traps), and the largest
//!   page both walks map linearly (and the processor supports).
//!
//! The walk of EPT12 reads at most one entry per level (4), so nothing L1
//! puts in its tables makes it loop.

use super::entry::{EptConfig, EptEntry, EptPerms, Eptp, PageSize, level_size};
use super::walk::{EptFault, walk};
use crate::mem::PhysMemory;
use crate::vmx::exit::EptViolationQual;

/// How EPT01 maps one L1-physical address (a model in tests, L0's EPT01
/// tables in L0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ept01Leaf {
    /// The host-physical address `gpa1` maps to.
    pub hpa: u64,
    /// EPT01's rights for it (AND of its levels).
    pub perms: EptPerms,
    /// The size of EPT01's page that maps it (the mapping is linear and
    /// uniform over that page).
    pub page_size: PageSize,
}

/// EPT01 as nested EPT sees it.
pub trait Ept01View {
    /// EPT01's translation of `gpa1`, or `None` when `gpa1` is L0's own
    /// (L0's region) or not mapped at all: no EPT02 entry may lead there.
    fn lookup(&self, gpa1: u64) -> Option<Ept01Leaf>;
}

impl<F: Fn(u64) -> Option<Ept01Leaf>> Ept01View for F {
    fn lookup(&self, gpa1: u64) -> Option<Ept01Leaf> {
        self(gpa1)
    }
}

/// An EPT02 leaf to add.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Install {
    /// The guest-physical (L2) address the leaf maps, aligned to its size.
    pub gpa2: u64,
    /// The size of the page (its level: 1, 2 or 3).
    pub page_size: PageSize,
    /// The entry.
    pub leaf: EptEntry,
    /// The L1-physical address of the page (EPT12's output), for the log.
    pub gpa1: u64,
}

/// What L0 does with an EPT violation of L2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ept02Outcome {
    /// Add this entry to EPT02 and resume L2.
    Install(Install),
    /// Reflect an EPT violation to L1 with this exit qualification (the
    /// guest-physical and guest-linear addresses are L2's exit's).
    Violation { qualification: u64 },
    /// Reflect an EPT misconfiguration to L1 (qualification 0; the
    /// guest-physical address is L2's exit's).
    Misconfig,
    /// EPT12 allows the access to `gpa1` but EPT01 does not: L0's own
    /// fault (as if L1 had made the access), never reflected.
    L0Fault {
        /// The L1-physical address.
        gpa1: u64,
        /// The rights EPT12 grants there.
        perms12: EptPerms,
    },
}

/// Bits of L2's exit qualification that go to L1 unchanged: the access
/// (2:0), guest-linear address valid (7), access to the translation rather
/// than to a paging-structure entry (8), NMI unblocking due to IRET (12).
/// Bits 5:3 come from EPT12's walk; bits 6 and 9:11 are 0 (L1 has neither
/// mode-based execute control nor advanced EPT exit information).
pub const COPIED_QUAL_BITS: u64 = EptViolationQual::READ
    | EptViolationQual::WRITE
    | EptViolationQual::FETCH
    | EptViolationQual::GLA_VALID
    | EptViolationQual::GLA_IS_TRANSLATION
    | EptViolationQual::NMI_UNBLOCKING;

/// The access an EPT-violation qualification reports (bits 2:0). A
/// qualification without any (Bochs, for some accesses to L2's paging
/// structures) is taken as a read, which every access needs.
pub fn access_of(qualification: u64) -> EptPerms {
    let a = EptPerms::from_bits_truncate((qualification & 0b111) as u8);
    if a.is_empty() { EptPerms::READ } else { a }
}

/// The parameters of one resolution.
#[derive(Clone, Copy, Debug)]
pub struct Resolve<'a> {
    /// VMCS12's EPT pointer (checked at VM entry).
    pub eptp12: Eptp,
    /// EPT as L1 sees it (its capability MSRs): the rules of EPT12's walk.
    pub cfg12: &'a EptConfig,
    /// EPT as the processor has it: the page sizes EPT02 may use.
    pub cfg02: &'a EptConfig,
}

/// Decides an EPT violation of L2 at `gpa2` with exit qualification
/// `qualification` (VMCS02's), EPT12 read from `mem12` (L1's memory).
pub fn resolve(
    p: &Resolve<'_>,
    mem12: &impl PhysMemory,
    ept01: &impl Ept01View,
    gpa2: u64,
    qualification: u64,
) -> Ept02Outcome {
    let access = access_of(qualification);
    let copied = qualification & COPIED_QUAL_BITS;
    let t12 = match walk(mem12, p.eptp12, gpa2, access, p.cfg12) {
        Ok(t) => t,
        Err(EptFault::Violation(v)) => {
            return Ept02Outcome::Violation {
                qualification: copied | (u64::from(v.allowed.bits()) << 3),
            };
        }
        // Not translatable by a 4-level walk: no entry maps it.
        Err(EptFault::GpaTooWide(_)) => {
            return Ept02Outcome::Violation {
                qualification: copied,
            };
        }
        // A table outside L1's memory reads as all ones: reserved bits.
        // An invalid EPTP cannot pass VM entry; kept total.
        Err(EptFault::Misconfig(_) | EptFault::Memory(_) | EptFault::InvalidEptp(_)) => {
            return Ept02Outcome::Misconfig;
        }
    };
    let gpa1 = t12.hpa;
    let fault = Ept02Outcome::L0Fault {
        gpa1,
        perms12: t12.perms,
    };
    let Some(t01) = ept01.lookup(gpa1) else {
        return fault;
    };
    let perms = t12.perms & t01.perms;
    if !perms.contains(access) {
        return fault;
    }
    let page_size = largest_common(t12.page_size, t01.page_size, p.cfg02);
    let mask = level_size(page_size.level()) - 1;
    let mut leaf = EptEntry::leaf(t01.hpa & !mask, page_size.level(), perms, t12.memory_type);
    if t12.ignore_pat {
        leaf.0 |= EptEntry::IGNORE_PAT;
    }
    Ept02Outcome::Install(Install {
        gpa2: gpa2 & !mask,
        page_size,
        leaf,
        gpa1: gpa1 & !mask,
    })
}

/// The largest page that maps linearly in both walks (both leaves are at
/// least that large and aligned to their size) and that EPT02 may use.
fn largest_common(a: PageSize, b: PageSize, cfg02: &EptConfig) -> PageSize {
    let s = a.min(b);
    match s {
        PageSize::Size1G if cfg02.pages_1g => s,
        PageSize::Size1G | PageSize::Size2M if cfg02.pages_2m => PageSize::Size2M,
        _ => PageSize::Size4K,
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tests_support;
