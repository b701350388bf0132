//! Memory type range registers (Intel SDM Vol. 3A, 13.11 "Memory Type Range
//! Registers (MTRRs)"): decoding the memory type of a physical range, and
//! checking a WRMSR to an MTRR before L0 performs it for a guest.
//!
//! With EPT the processor ignores the guest's MTRRs (SDM 30.3.7.2: the EPT
//! leaf's memory type replaces the MTRR type), so L0 derives the type of
//! every EPT01 leaf from the MTRRs with [`MtrrState::uniform_type`].

use crate::ept::MemoryType;

/// IA32_MTRRCAP (read-only).
pub const IA32_MTRRCAP: u32 = 0xFE;
/// IA32_MTRR_DEF_TYPE.
pub const IA32_MTRR_DEF_TYPE: u32 = 0x2FF;
/// IA32_MTRR_PHYSBASE0; PHYSMASKn is PHYSBASEn + 1, pairs follow.
pub const IA32_MTRR_PHYSBASE0: u32 = 0x200;
/// The fixed-range MTRRs in address order (SDM Table 13-9).
pub const FIXED_MSRS: [u32; 11] = [
    0x250, 0x258, 0x259, 0x268, 0x269, 0x26A, 0x26B, 0x26C, 0x26D, 0x26E, 0x26F,
];
/// Variable ranges the decoder keeps (IA32_MTRRCAP.VCNT is at most 255;
/// real processors have 8 to 10).
pub const MAX_VARIABLE: usize = 16;

const DEF_TYPE_FE: u64 = 1 << 10;
const DEF_TYPE_E: u64 = 1 << 11;
const PHYSMASK_VALID: u64 = 1 << 11;
const PAGE: u64 = 0x1000;
const ONE_MIB: u64 = 0x10_0000;

/// The MTRR registers of one processor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MtrrState {
    /// IA32_MTRR_DEF_TYPE.
    pub def_type: u64,
    /// The fixed-range MTRRs, in the order of [`FIXED_MSRS`].
    pub fixed: [u64; 11],
    /// (PHYSBASEn, PHYSMASKn) for n < `variable_count`.
    pub variable: [(u64, u64); MAX_VARIABLE],
    /// Number of variable ranges in use (IA32_MTRRCAP.VCNT, capped).
    pub variable_count: usize,
    /// Whether fixed ranges exist (IA32_MTRRCAP.FIX).
    pub fixed_supported: bool,
}

/// What a write to an MTRR-related MSR means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MtrrMsr {
    DefType,
    Fixed(usize),
    PhysBase(usize),
    PhysMask(usize),
}

/// Whether `bits` is a valid memory type for an MTRR (0, 1, 4, 5 or 6).
pub const fn valid_type(bits: u64) -> bool {
    matches!(bits, 0 | 1 | 4 | 5 | 6)
}

impl MtrrState {
    /// Reads the MTRRs with `rdmsr` (only the registers IA32_MTRRCAP says
    /// exist). Returns `None` when CPUID says there are no MTRRs (`mtrr`).
    pub fn read(mtrr: bool, rdmsr: impl Fn(u32) -> u64) -> Option<Self> {
        if !mtrr {
            return None;
        }
        let cap = rdmsr(IA32_MTRRCAP);
        let mut s = Self {
            def_type: rdmsr(IA32_MTRR_DEF_TYPE),
            variable_count: ((cap & 0xff) as usize).min(MAX_VARIABLE),
            fixed_supported: cap & (1 << 8) != 0,
            ..Self::default()
        };
        if s.fixed_supported {
            for (v, &msr) in s.fixed.iter_mut().zip(FIXED_MSRS.iter()) {
                *v = rdmsr(msr);
            }
        }
        for i in 0..s.variable_count {
            let base = IA32_MTRR_PHYSBASE0 + 2 * i as u32;
            s.variable[i] = (rdmsr(base), rdmsr(base + 1));
        }
        Some(s)
    }

    /// Classifies an MSR index as one of this processor's MTRRs.
    pub fn classify(&self, msr: u32) -> Option<MtrrMsr> {
        if msr == IA32_MTRR_DEF_TYPE {
            return Some(MtrrMsr::DefType);
        }
        if let Some(i) = FIXED_MSRS.iter().position(|&m| m == msr) {
            return self.fixed_supported.then_some(MtrrMsr::Fixed(i));
        }
        let off = msr.checked_sub(IA32_MTRR_PHYSBASE0)? as usize;
        if off < 2 * self.variable_count {
            return Some(if off.is_multiple_of(2) {
                MtrrMsr::PhysBase(off / 2)
            } else {
                MtrrMsr::PhysMask(off / 2)
            });
        }
        None
    }

    /// Whether WRMSR of `value` to `msr` would succeed on hardware with
    /// physical-address width `max_phys_addr` (otherwise it raises #GP).
    pub fn write_is_valid(&self, msr: MtrrMsr, value: u64, max_phys_addr: u8) -> bool {
        let addr_mask = ((1u64 << max_phys_addr) - 1) & !(PAGE - 1);
        match msr {
            MtrrMsr::DefType => {
                value & !(0xff | DEF_TYPE_FE | DEF_TYPE_E) == 0 && valid_type(value & 0xff)
            }
            MtrrMsr::Fixed(_) => value
                .to_le_bytes()
                .iter()
                .all(|&b| valid_type(u64::from(b))),
            MtrrMsr::PhysBase(_) => value & !(addr_mask | 0xff) == 0 && valid_type(value & 0xff),
            MtrrMsr::PhysMask(_) => value & !(addr_mask | PHYSMASK_VALID) == 0,
        }
    }

    /// The value of one of the registers (RDMSR of a virtual MTRR).
    pub fn value(&self, msr: MtrrMsr) -> u64 {
        match msr {
            MtrrMsr::DefType => self.def_type,
            MtrrMsr::Fixed(i) => self.fixed[i],
            MtrrMsr::PhysBase(i) => self.variable[i].0,
            MtrrMsr::PhysMask(i) => self.variable[i].1,
        }
    }

    /// Records a (valid) write.
    pub fn apply(&mut self, msr: MtrrMsr, value: u64) {
        match msr {
            MtrrMsr::DefType => self.def_type = value,
            MtrrMsr::Fixed(i) => self.fixed[i] = value,
            MtrrMsr::PhysBase(i) => self.variable[i].0 = value,
            MtrrMsr::PhysMask(i) => self.variable[i].1 = value,
        }
    }

    /// Whether writing `value` to `msr` can change the memory type of any
    /// address (if not, nothing derived from the MTRRs needs redoing: a
    /// guest that rewrites a disabled variable range, as MSR-load areas
    /// do, costs no EPT rebuild).
    pub fn write_changes_types(&self, msr: MtrrMsr, value: u64) -> bool {
        let (old, matters) = match msr {
            MtrrMsr::DefType => return value != self.def_type,
            MtrrMsr::Fixed(i) => (self.fixed[i], self.fixed_enabled()),
            MtrrMsr::PhysBase(i) => (self.variable[i].0, self.variable[i].1 & PHYSMASK_VALID != 0),
            MtrrMsr::PhysMask(i) => {
                let old = self.variable[i].1;
                (old, (old | value) & PHYSMASK_VALID != 0)
            }
        };
        old != value && matters && self.enabled()
    }

    fn enabled(&self) -> bool {
        self.def_type & DEF_TYPE_E != 0
    }

    fn fixed_enabled(&self) -> bool {
        self.fixed_supported && self.def_type & DEF_TYPE_FE != 0
    }

    /// Type of the fixed range holding `addr` (< 1 MiB).
    fn fixed_type(&self, addr: u64) -> u8 {
        // 0x00000-0x7FFFF: 8 x 64 KiB; 0x80000-0xBFFFF: 16 x 16 KiB;
        // 0xC0000-0xFFFFF: 64 x 4 KiB.
        let (reg, byte) = if addr < 0x80000 {
            (0, addr >> 16)
        } else if addr < 0xC0000 {
            let i = (addr - 0x80000) >> 14;
            (1 + (i / 8) as usize, i % 8)
        } else {
            let i = (addr - 0xC0000) >> 12;
            (3 + (i / 8) as usize, i % 8)
        };
        (self.fixed[reg] >> (8 * byte)) as u8
    }

    /// Combines the variable ranges matching `addr` (SDM 13.11.4.1).
    fn variable_type(&self, addr: u64) -> u8 {
        let mut found: Option<u8> = None;
        for &(base, mask) in &self.variable[..self.variable_count] {
            if mask & PHYSMASK_VALID == 0 {
                continue;
            }
            let m = mask & !(PAGE - 1);
            if addr & m != base & m {
                continue;
            }
            let t = base as u8;
            found = Some(match found {
                None => t,
                Some(prev) if prev == t => t,
                Some(0) => 0,
                Some(_) if t == 0 => 0,
                // WT and WB overlapping give WT.
                Some(4) if t == 6 => 4,
                Some(6) if t == 4 => 4,
                // Any other overlap is undefined: be safe.
                Some(_) => 0,
            });
        }
        found.unwrap_or(self.def_type as u8)
    }

    /// The memory type of the 4-KiB page at `addr`.
    pub fn page_type(&self, addr: u64) -> MemoryType {
        if !self.enabled() {
            return MemoryType::Uncacheable;
        }
        let bits = if addr < ONE_MIB && self.fixed_enabled() {
            self.fixed_type(addr)
        } else {
            self.variable_type(addr)
        };
        MemoryType::from_bits(bits).unwrap_or(MemoryType::Uncacheable)
    }

    /// The memory type of `[start, start + len)` if it is the same for
    /// every page, where `len` is a power of two of at least 4 KiB and
    /// `start` is aligned to it. `None` means "mixed or not known to be
    /// uniform": split the range and ask again for the parts.
    pub fn uniform_type(&self, start: u64, len: u64) -> Option<MemoryType> {
        let first = self.page_type(start);
        if len <= PAGE {
            return Some(first);
        }
        if !self.enabled() {
            return Some(first);
        }
        if start < ONE_MIB && self.fixed_enabled() {
            // Fixed ranges: compare page by page up to 1 MiB, then the rest.
            if start + len > ONE_MIB {
                return None;
            }
            let mut a = start;
            while a < start + len {
                if self.page_type(a) != first {
                    return None;
                }
                a += PAGE;
            }
            return Some(first);
        }
        // A variable range matches all or none of the range exactly when its
        // mask has no bit inside the range's offset bits.
        let offset_bits = (len - 1) & !(PAGE - 1);
        for &(_, mask) in &self.variable[..self.variable_count] {
            if mask & PHYSMASK_VALID != 0 && mask & offset_bits != 0 {
                return None;
            }
        }
        Some(first)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn value_reads_back_what_apply_wrote() {
        let mut s = MtrrState {
            variable_count: 2,
            fixed_supported: true,
            ..MtrrState::default()
        };
        for (m, v) in [
            (IA32_MTRR_DEF_TYPE, 0xc06),
            (FIXED_MSRS[3], 0x0505_0505_0606_0606),
            (IA32_MTRR_PHYSBASE0 + 2, 0x8000_0006),
            (IA32_MTRR_PHYSBASE0 + 3, 0xf_8000_0800),
        ] {
            let which = s.classify(m).unwrap();
            s.apply(which, v);
            assert_eq!(s.value(which), v);
        }
        assert_eq!(s.variable[1], (0x8000_0006, 0xf_8000_0800));
        assert_eq!(s.classify(IA32_MTRR_PHYSBASE0 + 4), None);
    }

    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_that_change_no_type() {
        let mut s = MtrrState {
            def_type: DEF_TYPE_E | DEF_TYPE_FE | 6,
            variable_count: 2,
            fixed_supported: true,
            ..MtrrState::default()
        };
        s.variable[0] = (0xc000_0000, 0xf_c000_0000 | PHYSMASK_VALID);
        // A disabled range: base and mask (staying disabled) change nothing.
        assert!(!s.write_changes_types(MtrrMsr::PhysBase(1), 0x1234_5000 | 6));
        assert!(!s.write_changes_types(MtrrMsr::PhysMask(1), 0xf_f000_0000));
        assert!(s.write_changes_types(MtrrMsr::PhysMask(1), 0xf_f000_0000 | PHYSMASK_VALID));
        // An enabled range, fixed ranges, the default type.
        assert!(s.write_changes_types(MtrrMsr::PhysBase(0), 0xd000_0000));
        assert!(!s.write_changes_types(MtrrMsr::PhysBase(0), 0xc000_0000));
        assert!(s.write_changes_types(MtrrMsr::Fixed(3), 0x0606_0606_0606_0600));
        assert!(s.write_changes_types(MtrrMsr::DefType, 6));
        // MTRRs disabled: only the default-type register matters.
        s.def_type = 6;
        assert!(!s.write_changes_types(MtrrMsr::PhysBase(0), 0xd000_0000));
    }

    /// MTRRs as a BIOS leaves them: WB default, fixed ranges, 0xC0000000+
    /// UC, with VGA (0xA0000-0xBFFFF) UC.
    fn bios_like() -> MtrrState {
        let mut s = MtrrState {
            def_type: DEF_TYPE_E | DEF_TYPE_FE | 6,
            variable_count: 8,
            fixed_supported: true,
            ..MtrrState::default()
        };
        s.fixed = [0x0606_0606_0606_0606; 11];
        // IA32_MTRR_FIX16K_A0000 (0x259) covers the VGA window.
        s.fixed[2] = 0;
        s.variable[0] = (0xC000_0000, 0xF_C000_0000 | PHYSMASK_VALID);
        s
    }

    #[test]
    fn types_follow_fixed_and_variable_ranges() {
        let s = bios_like();
        assert_eq!(s.page_type(0), MemoryType::WriteBack);
        assert_eq!(s.page_type(0x9_f000), MemoryType::WriteBack);
        assert_eq!(s.page_type(0xA_0000), MemoryType::Uncacheable);
        assert_eq!(s.page_type(0xb_f000), MemoryType::Uncacheable);
        assert_eq!(s.page_type(0xC_0000), MemoryType::WriteBack);
        assert_eq!(s.page_type(0x1000_0000), MemoryType::WriteBack);
        assert_eq!(s.page_type(0xFEE0_0000), MemoryType::Uncacheable);
        assert_eq!(s.uniform_type(0, 0x20_0000), None);
        assert_eq!(
            s.uniform_type(0x20_0000, 0x20_0000),
            Some(MemoryType::WriteBack)
        );
        assert_eq!(
            s.uniform_type(0xC000_0000, 1 << 30),
            Some(MemoryType::Uncacheable)
        );
        assert_eq!(
            s.uniform_type(0x8000_0000, 1 << 30),
            Some(MemoryType::WriteBack)
        );
        let mut off = s;
        off.def_type = 6;
        assert_eq!(off.page_type(0x1000_0000), MemoryType::Uncacheable);
    }

    #[test]
    fn overlaps_and_write_checks() {
        let mut s = bios_like();
        s.variable[1] = (0xC000_0000 | 6, 0xF_F000_0000 | PHYSMASK_VALID);
        assert_eq!(s.page_type(0xC000_0000), MemoryType::Uncacheable);
        s.variable[0] = (0xC000_0000 | 4, 0xF_C000_0000 | PHYSMASK_VALID);
        assert_eq!(s.page_type(0xC000_0000), MemoryType::WriteThrough);
        assert_eq!(s.classify(0x2FF), Some(MtrrMsr::DefType));
        assert_eq!(s.classify(0x259), Some(MtrrMsr::Fixed(2)));
        assert_eq!(s.classify(0x20F), Some(MtrrMsr::PhysMask(7)));
        assert_eq!(s.classify(0x210), None);
        assert!(s.write_is_valid(MtrrMsr::DefType, 0xC06, 36));
        assert!(!s.write_is_valid(MtrrMsr::DefType, 0x1006, 36));
        assert!(!s.write_is_valid(MtrrMsr::DefType, 0x2, 36));
        assert!(!s.write_is_valid(MtrrMsr::Fixed(0), 0x0606_0606_0606_0602, 36));
        assert!(s.write_is_valid(MtrrMsr::PhysBase(0), 0xF_F000_0006, 36));
        assert!(!s.write_is_valid(MtrrMsr::PhysBase(0), 0x10_0000_0006, 36));
        assert!(!s.write_is_valid(MtrrMsr::PhysMask(0), 0xF_F000_0100, 36));
    }

    proptest! {
        /// A uniform answer is the type of every page in the range.
        #[test]
        fn uniform_type_is_exact(
            bases in proptest::collection::vec((0u64..16, 0u64..8, prop::sample::select(vec![0u64, 1, 4, 5, 6])), 0..4),
            def in prop::sample::select(vec![0u64, 6]),
            chunk in 0u64..64,
        ) {
            let mut s = MtrrState { def_type: DEF_TYPE_E | def, variable_count: 4, ..MtrrState::default() };
            for (i, &(b, sz, t)) in bases.iter().enumerate() {
                let size = 0x1000u64 << (sz * 2);
                let base = (b * 0x4_0000) & !(size - 1);
                s.variable[i] = (base | t, (0xF_FFFF_F000 & !(size - 1)) | PHYSMASK_VALID);
            }
            let len = 0x4_0000;
            let start = chunk * len;
            if let Some(t) = s.uniform_type(start, len) {
                let mut a = start;
                while a < start + len {
                    prop_assert_eq!(s.page_type(a), t);
                    a += 0x1000;
                }
            }
        }
    }
}
