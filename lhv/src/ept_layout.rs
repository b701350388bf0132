//! The identity EPT LHV gives L2 (SDM Vol. 3C 29.3.2 "EPT Translation
//! Mechanism", Tables 29-1..29-6): guest-physical `[0, 4 GiB)` maps to the
//! same host-physical addresses with 2-MiB pages, except for the 2-MiB
//! region holding the *hole*, which is split into 4-KiB pages; the hole's
//! own entry can be made not present so that L2's access to it causes an
//! EPT violation.
//!
//! The tables are plain arrays; their physical addresses are supplied by
//! the caller, so the layout is built and checked on the host.

/// Entries per EPT paging structure.
pub const ENTRIES: usize = 512;
/// 4 KiB.
pub const PAGE_4K: u64 = 1 << 12;
/// 2 MiB.
pub const PAGE_2M: u64 = 1 << 21;
/// 1 GiB.
pub const PAGE_1G: u64 = 1 << 30;
/// The identity map covers `[0, COVERED)`.
pub const COVERED: u64 = 4 * PAGE_1G;

/// EPT entry bits (Tables 29-2..29-6).
pub mod bits {
    /// Read access.
    pub const READ: u64 = 1 << 0;
    /// Write access.
    pub const WRITE: u64 = 1 << 1;
    /// Execute access (supervisor-mode linear addresses when MBEC is on).
    pub const EXECUTE: u64 = 1 << 2;
    /// Read, write and execute.
    pub const RWX: u64 = READ | WRITE | EXECUTE;
    /// Memory type field of a leaf entry (bits 5:3).
    pub const MEMORY_TYPE_SHIFT: u32 = 3;
    /// Bit 7 of a PDE or PDPTE: the entry maps a page.
    pub const LARGE_PAGE: u64 = 1 << 7;
    /// Physical-address bits of an entry (51:12).
    pub const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
}

/// Memory type write-back (SDM 29.3.7, Table 12-8 encodings).
pub const MEMORY_TYPE_WB: u64 = 6;

/// An EPT pointer for a 4-level walk (SDM 25.6.11, Table 25-9): memory type
/// WB (bits 2:0), walk length minus one in bits 5:3, bit 6 enables A/D.
pub const fn eptp(pml4_phys: u64, accessed_dirty: bool) -> u64 {
    let ad = if accessed_dirty { 1 << 6 } else { 0 };
    (pml4_phys & bits::ADDRESS_MASK) | MEMORY_TYPE_WB | (3 << 3) | ad
}

/// One 4-KiB EPT paging structure.
#[derive(Clone, Copy)]
#[repr(C, align(4096))]
pub struct Table(pub [u64; ENTRIES]);

impl Table {
    /// An all-not-present table.
    pub const fn new() -> Self {
        Self([0; ENTRIES])
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

/// The paging structures of one identity EPT with one hole.
#[repr(C, align(4096))]
pub struct IdentityEpt {
    /// The PML4 (one entry used).
    pub pml4: Table,
    /// The PDPT (four entries used: four 1-GiB regions).
    pub pdpt: Table,
    /// One page directory per 1-GiB region.
    pub pd: [Table; 4],
    /// The page table of the 2-MiB region that holds the hole.
    pub pt: Table,
}

/// Physical addresses of the tables of an [`IdentityEpt`] (from the
/// kernel's virtual-to-physical translation; arbitrary in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablePhys {
    /// PML4.
    pub pml4: u64,
    /// PDPT.
    pub pdpt: u64,
    /// Page directories.
    pub pd: [u64; 4],
    /// Page table of the hole's 2-MiB region.
    pub pt: u64,
}

const fn leaf(addr: u64, large: bool) -> u64 {
    let l = if large { bits::LARGE_PAGE } else { 0 };
    addr | bits::RWX | (MEMORY_TYPE_WB << bits::MEMORY_TYPE_SHIFT) | l
}

const fn index(addr: u64, level_shift: u32) -> usize {
    ((addr >> level_shift) & (ENTRIES as u64 - 1)) as usize
}

impl IdentityEpt {
    /// All-zero tables (for statics).
    pub const fn new() -> Self {
        Self {
            pml4: Table::new(),
            pdpt: Table::new(),
            pd: [Table::new(); 4],
            pt: Table::new(),
        }
    }

    /// Builds the identity map with `hole` (4-KiB aligned, below 4 GiB) not
    /// present.
    pub fn build(&mut self, phys: &TablePhys, hole: u64) {
        assert!(
            hole.is_multiple_of(PAGE_4K) && hole < COVERED,
            "hole {hole:#x}"
        );
        *self = Self::new();
        self.pml4.0[0] = phys.pdpt | bits::RWX;
        for (g, pd) in self.pd.iter_mut().enumerate() {
            self.pdpt.0[g] = phys.pd[g] | bits::RWX;
            for (i, e) in pd.0.iter_mut().enumerate() {
                *e = leaf(g as u64 * PAGE_1G + i as u64 * PAGE_2M, true);
            }
        }
        let region = hole & !(PAGE_2M - 1);
        self.pd[(hole / PAGE_1G) as usize].0[index(hole, 21)] = phys.pt | bits::RWX;
        for (i, e) in self.pt.0.iter_mut().enumerate() {
            *e = leaf(region + i as u64 * PAGE_4K, false);
        }
        self.set_hole_present(hole, false);
    }

    /// Maps or unmaps the 4-KiB `hole` given to [`IdentityEpt::build`].
    pub fn set_hole_present(&mut self, hole: u64, present: bool) {
        self.pt.0[index(hole, 12)] = if present { leaf(hole, false) } else { 0 };
    }

    /// Walks the tables (for checks): the host-physical address `gpa` maps
    /// to, or `None` if an entry on the way is not present.
    pub fn translate(&self, phys: &TablePhys, gpa: u64) -> Option<u64> {
        let e = self.pml4.0[index(gpa, 39)];
        if e & bits::RWX == 0 || e & bits::ADDRESS_MASK != phys.pdpt {
            return None;
        }
        let e = self.pdpt.0[index(gpa, 30)];
        let g = phys.pd.iter().position(|&p| p == e & bits::ADDRESS_MASK)?;
        if e & bits::RWX == 0 {
            return None;
        }
        let e = self.pd[g].0[index(gpa, 21)];
        if e & bits::RWX == 0 {
            return None;
        }
        if e & bits::LARGE_PAGE != 0 {
            return Some((e & bits::ADDRESS_MASK & !(PAGE_2M - 1)) | (gpa & (PAGE_2M - 1)));
        }
        if e & bits::ADDRESS_MASK != phys.pt {
            return None;
        }
        let e = self.pt.0[index(gpa, 12)];
        (e & bits::RWX != 0).then_some((e & bits::ADDRESS_MASK) | (gpa & (PAGE_4K - 1)))
    }
}

impl Default for IdentityEpt {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHYS: TablePhys = TablePhys {
        pml4: 0x10_0000,
        pdpt: 0x10_1000,
        pd: [0x10_2000, 0x10_3000, 0x10_4000, 0x10_5000],
        pt: 0x10_6000,
    };

    fn built(hole: u64) -> Box<IdentityEpt> {
        let mut e = Box::new(IdentityEpt::new());
        e.build(&PHYS, hole);
        e
    }

    #[test]
    fn identity_everywhere_but_the_hole() {
        let hole = 0x0123_4000;
        let mut e = built(hole);
        for gpa in [
            0,
            0x1000,
            hole - 1,
            hole + PAGE_4K,
            0x8000_0000,
            COVERED - 8,
            0x0120_0000,
        ] {
            assert_eq!(e.translate(&PHYS, gpa), Some(gpa), "{gpa:#x}");
        }
        assert_eq!(e.translate(&PHYS, hole), None);
        assert_eq!(e.translate(&PHYS, hole + 0xff8), None);
        e.set_hole_present(hole, true);
        assert_eq!(e.translate(&PHYS, hole + 0x18), Some(hole + 0x18));
        e.set_hole_present(hole, false);
        assert_eq!(e.translate(&PHYS, hole), None);
        assert_eq!(e.translate(&PHYS, COVERED), None);
    }

    #[test]
    fn leaves_are_write_back_and_large_where_expected() {
        let e = built(0xfff_f000);
        assert_eq!(e.pd[0].0[1], 0x20_0000 | 7 | (6 << 3) | (1 << 7));
        assert_eq!(e.pd[0].0[127] & bits::ADDRESS_MASK, PHYS.pt);
        assert_eq!(e.pt.0[0], 0xfe0_0000 | 7 | (6 << 3));
        assert_eq!(e.pt.0[511], 0);
    }

    #[test]
    fn eptp_format() {
        assert_eq!(eptp(0x1234_5000, false), 0x1234_501e);
        assert_eq!(eptp(0x1234_5000, true), 0x1234_505e);
    }
}
