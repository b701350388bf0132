//! Translation of a guest's linear addresses through its own page tables
//! (Intel SDM vol. 3A chapter 4 "Paging"), for a hypervisor that must read
//! guest memory by linear address (e.g. the instruction at RIP).
//!
//! Only the translation: access rights, accessed/dirty bits and protection
//! keys are not checked or set. Every table is read through
//! [`PhysMemory`] (guest-physical), so a hostile table can only make the
//! walk fail.

use crate::mem::PhysMemory;

/// The guest's paging mode (SDM 4.1.1, Table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG = 0: linear = physical.
    Off,
    /// 32-bit paging; `pse`: CR4.PSE (4-MiB pages).
    Bits32 { pse: bool },
    /// PAE paging.
    Pae,
    /// 4-level paging.
    Level4,
    /// 5-level paging (CR4.LA57).
    Level5,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;

impl PagingMode {
    /// The mode selected by the guest's CR0, CR4 and IA32_EFER.
    pub const fn from_regs(cr0: u64, cr4: u64, efer: u64) -> Self {
        if cr0 & CR0_PG == 0 {
            Self::Off
        } else if cr4 & CR4_PAE == 0 {
            Self::Bits32 {
                pse: cr4 & CR4_PSE != 0,
            }
        } else if efer & EFER_LMA == 0 {
            Self::Pae
        } else if cr4 & CR4_LA57 != 0 {
            Self::Level5
        } else {
            Self::Level4
        }
    }
}

const PRESENT: u64 = 1 << 0;
const PAGE_SIZE: u64 = 1 << 7;
/// Bits 51:12 of an entry: the next table or the 4-KiB page.
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// The guest-physical address of `linear`, or `None` if a table is not
/// present or cannot be read.
pub fn translate(mem: &impl PhysMemory, mode: PagingMode, cr3: u64, linear: u64) -> Option<u64> {
    match mode {
        PagingMode::Off => Some(linear & 0xffff_ffff),
        PagingMode::Bits32 { pse } => {
            let la = linear & 0xffff_ffff;
            let pde = u64::from(read32(mem, (cr3 & 0xffff_f000) + ((la >> 22) << 2))?);
            if pde & PRESENT == 0 {
                return None;
            }
            if pse && pde & PAGE_SIZE != 0 {
                // 4-MiB page; bits 20:13 are physical-address bits 39:32.
                let base = (pde & 0xffc0_0000) | (((pde >> 13) & 0xff) << 32);
                return Some(base | (la & 0x3f_ffff));
            }
            let pte = u64::from(read32(
                mem,
                (pde & 0xffff_f000) + (((la >> 12) & 0x3ff) << 2),
            )?);
            (pte & PRESENT != 0).then_some((pte & 0xffff_f000) | (la & 0xfff))
        }
        PagingMode::Pae => {
            let la = linear & 0xffff_ffff;
            let pdpte = read64(mem, (cr3 & 0xffff_ffe0) + ((la >> 30) << 3))?;
            if pdpte & PRESENT == 0 {
                return None;
            }
            walk(mem, pdpte & ADDR, la, 2)
        }
        PagingMode::Level4 => walk(mem, cr3 & ADDR, linear, 4),
        PagingMode::Level5 => walk(mem, cr3 & ADDR, linear, 5),
    }
}

/// Walks `levels` levels of 64-bit entries from the table at `table`
/// (level 1 maps 4-KiB pages; PS is honoured at levels 2 and 3).
fn walk(mem: &impl PhysMemory, mut table: u64, la: u64, levels: u32) -> Option<u64> {
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level - 1);
        let entry = read64(mem, table + (((la >> shift) & 0x1ff) << 3))?;
        if entry & PRESENT == 0 {
            return None;
        }
        if level == 1 || ((level == 2 || level == 3) && entry & PAGE_SIZE != 0) {
            let page = (1u64 << shift) - 1;
            return Some((entry & ADDR & !page) | (la & page));
        }
        table = entry & ADDR;
    }
    None
}

fn read32(mem: &impl PhysMemory, addr: u64) -> Option<u32> {
    mem.read_u32(addr).ok()
}

fn read64(mem: &impl PhysMemory, addr: u64) -> Option<u64> {
    mem.read_u64(addr).ok()
}

/// Reads `buf.len()` bytes at `linear`, translating each page separately.
/// Fails if any byte is not mapped.
pub fn read_linear(
    mem: &impl PhysMemory,
    mode: PagingMode,
    cr3: u64,
    linear: u64,
    buf: &mut [u8],
) -> Option<()> {
    let mut done = 0;
    while done < buf.len() {
        let la = linear.wrapping_add(done as u64);
        let pa = translate(mem, mode, cr3, la)?;
        let in_page = (0x1000 - (la & 0xfff)) as usize;
        let n = in_page.min(buf.len() - done);
        mem.read(pa, &mut buf[done..done + n]).ok()?;
        done += n;
    }
    Some(())
}

/// The reserved bits of a present PAE PDPTE (SDM 4.4.1, Table 4-8: bits
/// 2:1, 8:5 and MAXPHYADDR..63). Loading a PDPTE that is present and has
/// any of them set is #GP, whether by MOV to CR0/CR4 enabling PAE paging
/// or by MOV to CR3 with PAE paging active (SDM 4.4.1).
pub const fn pdpte_reserved_bits(max_phys_addr: u8) -> u64 {
    let high = if max_phys_addr >= 64 {
        0
    } else {
        !0u64 << max_phys_addr
    };
    high | 0b1_1110_0110
}

/// Whether the four PDPTEs may be loaded (none present with a reserved bit).
pub fn pdptes_valid(pdptes: &[u64; 4], max_phys_addr: u8) -> bool {
    let reserved = pdpte_reserved_bits(max_phys_addr);
    pdptes
        .iter()
        .all(|&e| e & PRESENT == 0 || e & reserved == 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pdpte_reserved_bits_follow_table_4_8() {
        assert_eq!(pdpte_reserved_bits(36), 0xFFFF_FFF0_0000_01E6);
        assert!(pdptes_valid(
            &[0x1001, 0, 0x2001, 0xFFFF_FFFF_FFFF_FFFE],
            36
        ));
        // Bit 1 (R/W) is reserved in a PDPTE; not present entries are not checked.
        assert!(!pdptes_valid(&[0x1003, 0, 0, 0], 36));
        assert!(!pdptes_valid(&[0, 0, 0, 0x10_0000_1001], 36));
        assert!(!pdptes_valid(&[0, 0x1000_0000_1001, 0, 0], 36));
        assert!(pdptes_valid(&[0, 0x1000_0000_1001, 0, 0], 46));
        assert!(!pdptes_valid(&[0x1081, 0, 0, 0], 52));
        assert_eq!(pdpte_reserved_bits(64), 0x1E6);
    }

    use super::*;
    use crate::mem::SparseMemory;

    fn mem() -> SparseMemory {
        let mut m = SparseMemory::new();
        m.map(0, 0x40_0000);
        m
    }

    #[test]
    fn mode_from_registers() {
        assert_eq!(PagingMode::from_regs(0, 0, 0), PagingMode::Off);
        let pg = CR0_PG | 1;
        assert_eq!(
            PagingMode::from_regs(pg, CR4_PSE, 0),
            PagingMode::Bits32 { pse: true }
        );
        assert_eq!(PagingMode::from_regs(pg, CR4_PAE, 0), PagingMode::Pae);
        assert_eq!(
            PagingMode::from_regs(pg, CR4_PAE, EFER_LMA),
            PagingMode::Level4
        );
        assert_eq!(
            PagingMode::from_regs(pg, CR4_PAE | CR4_LA57, EFER_LMA),
            PagingMode::Level5
        );
    }

    #[test]
    fn four_level_with_4k_2m_and_1g_pages() {
        let mut m = mem();
        // PML4 at 0x1000, PDPT at 0x2000, PD at 0x3000, PT at 0x4000.
        let la: u64 = 0xffff_8000_4060_1234;
        let i4 = (la >> 39) & 0x1ff;
        let i3 = (la >> 30) & 0x1ff;
        let i2 = (la >> 21) & 0x1ff;
        let i1 = (la >> 12) & 0x1ff;
        m.write_u64(0x1000 + i4 * 8, 0x2003).unwrap();
        m.write_u64(0x2000 + i3 * 8, 0x3003).unwrap();
        m.write_u64(0x3000 + i2 * 8, 0x4003).unwrap();
        m.write_u64(0x4000 + i1 * 8, 0x0012_3000 | 3).unwrap();
        let t = |m: &SparseMemory, la| translate(m, PagingMode::Level4, 0x1000, la);
        assert_eq!(t(&m, la), Some(0x0012_3234));
        // 2-MiB page.
        m.write_u64(0x3000 + i2 * 8, 0x0060_0000 | 0x83).unwrap();
        assert_eq!(t(&m, la), Some(0x0060_0000 | (la & 0x1f_ffff)));
        // 1-GiB page.
        m.write_u64(0x2000 + i3 * 8, 0x4000_0000 | 0x83).unwrap();
        assert_eq!(t(&m, la), Some(0x4000_0000 | (la & 0x3fff_ffff)));
        // Not present.
        m.write_u64(0x1000 + i4 * 8, 0x2002).unwrap();
        assert_eq!(t(&m, la), None);
        // A table outside memory fails cleanly.
        m.write_u64(0x1000 + i4 * 8, 0x7_0000_0003).unwrap();
        assert_eq!(t(&m, la), None);
    }

    #[test]
    fn thirty_two_bit_and_pae() {
        let mut m = mem();
        let la: u64 = 0x8040_1abc;
        m.write_u32(0x1000 + (la >> 22) * 4, 0x2003).unwrap();
        m.write_u32(0x2000 + ((la >> 12) & 0x3ff) * 4, 0x0015_5003)
            .unwrap();
        let bits32 = PagingMode::Bits32 { pse: true };
        assert_eq!(translate(&m, bits32, 0x1000, la), Some(0x0015_5abc));
        m.write_u32(0x1000 + (la >> 22) * 4, 0x0080_0083 | (1 << 13))
            .unwrap();
        assert_eq!(
            translate(&m, bits32, 0x1000, la),
            Some(0x1_0080_0000 | (la & 0x3f_ffff))
        );
        // PAE: PDPT at 0x5020 (32-byte aligned), PD at 0x6000, PT 0x7000.
        m.write_u64(0x5020 + (la >> 30) * 8, 0x6001).unwrap();
        m.write_u64(0x6000 + ((la >> 21) & 0x1ff) * 8, 0x7003)
            .unwrap();
        m.write_u64(0x7000 + ((la >> 12) & 0x1ff) * 8, 0x0033_3003)
            .unwrap();
        assert_eq!(
            translate(&m, PagingMode::Pae, 0x5020, la),
            Some(0x0033_3abc)
        );
        assert_eq!(translate(&m, PagingMode::Off, 0, la), Some(la));
    }

    #[test]
    fn read_linear_crosses_pages() {
        let mut m = mem();
        // Linear page 0x1000 -> 0x9000, 0x2000 -> 0x8000 (32-bit paging).
        m.write_u32(0x1000, 0x2003).unwrap();
        m.write_u32(0x2000 + 4, 0x9003).unwrap();
        m.write_u32(0x2000 + 8, 0x8003).unwrap();
        m.write(0x9ffe, &[1, 2]).unwrap();
        m.write(0x8000, &[3, 4]).unwrap();
        let mut buf = [0u8; 4];
        let mode = PagingMode::Bits32 { pse: false };
        assert_eq!(read_linear(&m, mode, 0x1000, 0x1ffe, &mut buf), Some(()));
        assert_eq!(buf, [1, 2, 3, 4]);
        assert_eq!(read_linear(&m, mode, 0x1000, 0x2ffe, &mut buf), None);
    }
}
