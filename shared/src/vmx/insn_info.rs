//! The VM-exit instruction-information field of the VMX instructions and
//! their operands (SDM Vol. 3C, 28.2.5 "Information for VM Exits Due to
//! Instruction Execution", Tables 28-12 to 28-14), and the effective
//! address of a memory operand.
//!
//! L0 decodes these to emulate its guest's VMX instructions: VMXON,
//! VMCLEAR, VMPTRLD and VMPTRST take an m64; VMREAD and VMWRITE a register
//! or memory operand plus a register holding the field encoding; INVEPT and
//! INVVPID a register (the type) and an m128 descriptor. The memory
//! operand's displacement is the exit qualification.

/// Bits 1:0: scaling of the index register (1, 2, 4, 8).
const SCALING: u32 = 0b11;
/// Bits 6:3: "reg1" of VMREAD/VMWRITE (the register operand).
const REG1_SHIFT: u32 = 3;
/// Bits 9:7: address size (0 16-bit, 1 32-bit, 2 64-bit).
const ADDR_SIZE_SHIFT: u32 = 7;
/// Bit 10: set for a register operand (VMREAD/VMWRITE only).
const REG_OPERAND: u32 = 1 << 10;
/// Bits 17:15: segment register (0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS).
const SEGMENT_SHIFT: u32 = 15;
/// Bits 21:18: index register.
const INDEX_SHIFT: u32 = 18;
/// Bit 22: no index register.
const INDEX_INVALID: u32 = 1 << 22;
/// Bits 26:23: base register.
const BASE_SHIFT: u32 = 23;
/// Bit 27: no base register.
const BASE_INVALID: u32 = 1 << 27;
/// Bits 31:28: "reg2" (VMREAD/VMWRITE field encoding, INVEPT/INVVPID type).
const REG2_SHIFT: u32 = 28;

/// A segment register, by the number the instruction information uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Es,
    Cs,
    Ss,
    Ds,
    Fs,
    Gs,
}

impl Segment {
    const fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            0 => Self::Es,
            1 => Self::Cs,
            2 => Self::Ss,
            3 => Self::Ds,
            4 => Self::Fs,
            5 => Self::Gs,
            _ => return None,
        })
    }
}

/// A memory operand: `segment:[base + index * scale + displacement]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    pub segment: Segment,
    pub base: Option<u8>,
    pub index: Option<u8>,
    pub scale_log2: u8,
    /// Address size in bytes (2, 4 or 8).
    pub address_size: u8,
    pub displacement: u64,
}

/// The operand of an instruction that takes a register or memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Register(u8),
    Memory(MemOperand),
}

/// The decoded instruction-information field of a VMX instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmxInsnInfo(pub u32);

impl VmxInsnInfo {
    /// The register or memory operand (bit 10 selects; only VMREAD and
    /// VMWRITE may have a register operand, for the others bit 10 is 0).
    /// `None` for an encoding the SDM leaves undefined (address size 3,
    /// segment 6 or 7).
    pub fn operand(self, qualification: u64) -> Option<Operand> {
        let i = self.0;
        if i & REG_OPERAND != 0 {
            return Some(Operand::Register(((i >> REG1_SHIFT) & 0xf) as u8));
        }
        let address_size = match (i >> ADDR_SIZE_SHIFT) & 0b111 {
            0 => 2,
            1 => 4,
            2 => 8,
            _ => return None,
        };
        Some(Operand::Memory(MemOperand {
            segment: Segment::from_number((i >> SEGMENT_SHIFT) & 0b111)?,
            base: (i & BASE_INVALID == 0).then_some(((i >> BASE_SHIFT) & 0xf) as u8),
            index: (i & INDEX_INVALID == 0).then_some(((i >> INDEX_SHIFT) & 0xf) as u8),
            scale_log2: (i & SCALING) as u8,
            address_size,
            displacement: qualification,
        }))
    }

    /// "reg2": the register holding the field encoding (VMREAD/VMWRITE) or
    /// the INVEPT/INVVPID type.
    pub fn reg2(self) -> u8 {
        ((self.0 >> REG2_SHIFT) & 0xf) as u8
    }
}

impl MemOperand {
    /// The effective address (base + index * scale + displacement, SDM Vol.
    /// 1, 3.7.5), truncated to the address size; `gpr` reads a register by
    /// its number.
    pub fn effective_address(&self, gpr: impl Fn(u8) -> u64) -> u64 {
        let base = self.base.map_or(0, &gpr);
        let index = self.index.map_or(0, &gpr) << self.scale_log2;
        let ea = base.wrapping_add(index).wrapping_add(self.displacement);
        match self.address_size {
            2 => ea & 0xffff,
            4 => ea & 0xffff_ffff,
            _ => ea,
        }
    }

    /// The linear address for segment base `segment_base`: in 64-bit mode
    /// only FS and GS have a base (SDM Vol. 1, 3.3.7.1); outside it the
    /// sum wraps at 4 GiB.
    pub fn linear_address(
        &self,
        gpr: impl Fn(u8) -> u64,
        segment_base: u64,
        long_mode: bool,
    ) -> u64 {
        let ea = self.effective_address(gpr);
        if long_mode {
            match self.segment {
                Segment::Fs | Segment::Gs => ea.wrapping_add(segment_base),
                _ => ea,
            }
        } else {
            ea.wrapping_add(segment_base) & 0xffff_ffff
        }
    }
}

/// Whether `la` is canonical for 48-bit linear addresses (bits 63:47 equal).
pub const fn is_canonical(la: u64) -> bool {
    let top = la >> 47;
    top == 0 || top == 0x1_ffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info(
        scale: u32,
        asz: u32,
        seg: u32,
        index: Option<u32>,
        base: Option<u32>,
        reg2: u32,
    ) -> u32 {
        scale
            | (asz << ADDR_SIZE_SHIFT)
            | (seg << SEGMENT_SHIFT)
            | index.map_or(INDEX_INVALID, |r| r << INDEX_SHIFT)
            | base.map_or(BASE_INVALID, |r| r << BASE_SHIFT)
            | (reg2 << REG2_SHIFT)
    }

    #[test]
    fn vmptrld_rax_plus_disp() {
        // vmptrld [rax + 0x10]: base RAX, no index, DS, 64-bit.
        let i = VmxInsnInfo(info(0, 2, 3, None, Some(0), 0));
        let Some(Operand::Memory(m)) = i.operand(0x10) else {
            panic!("memory operand expected");
        };
        assert_eq!(m.segment, Segment::Ds);
        assert_eq!(m.base, Some(0));
        assert_eq!(m.index, None);
        let gpr = |r: u8| if r == 0 { 0x1000 } else { 0 };
        assert_eq!(m.effective_address(gpr), 0x1010);
        assert_eq!(m.linear_address(gpr, 0x5000, true), 0x1010);
        assert_eq!(m.linear_address(gpr, 0x5000, false), 0x6010);
    }

    #[test]
    fn sib_with_scale_and_fs() {
        // vmclear fs:[rbx + rcx*8 - 8], 64-bit.
        let i = VmxInsnInfo(info(3, 2, 4, Some(1), Some(3), 0));
        let Some(Operand::Memory(m)) = i.operand((-8i64) as u64) else {
            panic!("memory operand expected");
        };
        let gpr = |r: u8| match r {
            3 => 0x2000,
            1 => 2,
            _ => 0,
        };
        assert_eq!(m.effective_address(gpr), 0x2008);
        assert_eq!(m.linear_address(gpr, 0x10_0000, true), 0x10_2008);
    }

    #[test]
    fn register_operand_and_reg2() {
        // vmread rbx, rdx: reg1 = RBX (3), reg2 = RDX (2).
        let i = VmxInsnInfo(REG_OPERAND | (3 << REG1_SHIFT) | (2 << REG2_SHIFT));
        assert_eq!(i.operand(0), Some(Operand::Register(3)));
        assert_eq!(i.reg2(), 2);
    }

    #[test]
    fn address_size_truncates() {
        let i = VmxInsnInfo(info(0, 1, 3, None, Some(0), 0));
        let Some(Operand::Memory(m)) = i.operand(0x10) else {
            panic!("memory operand expected");
        };
        assert_eq!(m.effective_address(|_| 0xffff_fff8), 0x8);
        let i16 = VmxInsnInfo(info(0, 0, 3, None, Some(0), 0));
        let Some(Operand::Memory(m)) = i16.operand(0x10) else {
            panic!("memory operand expected");
        };
        assert_eq!(m.effective_address(|_| 0xfff8), 0x8);
    }

    #[test]
    fn undefined_encodings_are_rejected() {
        assert_eq!(VmxInsnInfo(info(0, 3, 3, None, None, 0)).operand(0), None);
        assert_eq!(VmxInsnInfo(info(0, 2, 6, None, None, 0)).operand(0), None);
    }

    #[test]
    fn canonical() {
        assert!(is_canonical(0x7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000));
        assert!(!is_canonical(0x0001_0000_0000_0000));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(raw in any::<u32>(), q in any::<u64>(), regs in any::<[u64; 16]>(), seg_base in any::<u64>()) {
            let i = VmxInsnInfo(raw);
            let _ = i.reg2();
            if let Some(Operand::Memory(m)) = i.operand(q) {
                let gpr = |r: u8| regs[usize::from(r & 15)];
                let ea = m.effective_address(gpr);
                prop_assert!(m.address_size == 8 || ea >> (8 * u32::from(m.address_size)) == 0);
                let la = m.linear_address(gpr, seg_base, false);
                prop_assert!(la >> 32 == 0);
            }
        }
    }
}
