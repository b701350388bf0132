//! A small, strict decoder for the 32-bit stores that kernels use to write
//! memory-mapped device registers (the local APIC), so that a hypervisor
//! trapping such a write (EPT violation) can perform it itself:
//!
//! - `89 /r`: MOV r/m32, r32
//! - `C7 /0 id`: MOV r/m32, imm32
//! - `0F C3 /r`: MOVNTI m32, r32
//! - `87 /r`: XCHG r/m32, r32 (also loads the old value; LOCK allowed)
//! - `AB`: STOSD (stores EAX at ES:[(E/R)DI], then moves (E/R)DI by 4)
//!
//! with segment-override prefixes, an address-size prefix in 64-bit mode
//! and a REX prefix (W = 0). Anything else (operand-size or REP prefixes,
//! LOCK but on XCHG, 16-bit addressing, register destinations, other
//! opcodes) is `None`: the caller falls back to another mechanism. Intel
//! SDM vol. 2A 2.1 (instruction format) and 2.2.1 (REX prefixes).

/// The default operand/address size of the code segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeSize {
    /// Real mode, virtual-8086 mode or a 16-bit code segment.
    Bits16,
    /// A 32-bit code segment (CS.D = 1) in protected or compatibility mode.
    Bits32,
    /// 64-bit mode (IA32_EFER.LMA = 1 and CS.L = 1).
    Bits64,
}

/// Where the stored value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The low 32 bits of general register number `n` (0 RAX .. 15 R15).
    Reg(u8),
    /// An immediate.
    Imm(u32),
}

/// What the instruction does besides the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// XCHG: general register `n` receives the old 32-bit value of the
    /// destination (zero-extended in 64-bit mode).
    LoadOld(u8),
    /// STOSD: RDI (`bits` 64) or EDI (`bits` 32) moves by 4, down if
    /// RFLAGS.DF = 1.
    AdvanceDi {
        bits: u8,
    },
}

/// A decoded 32-bit store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// Length of the instruction in bytes.
    pub len: u8,
    /// The value's source.
    pub source: Source,
    /// What else it does.
    pub effect: Effect,
}

impl Store {
    const fn plain(len: usize, source: Source) -> Self {
        Self {
            len: len as u8,
            source,
            effect: Effect::None,
        }
    }
}

/// Longest x86 instruction.
pub const MAX_LEN: usize = 15;

/// Decodes the store at the start of `bytes`.
pub fn decode(bytes: &[u8], code: CodeSize) -> Option<Store> {
    if code == CodeSize::Bits16 {
        return None;
    }
    let mut i = 0;
    let (mut lock, mut addr32) = (false, false);
    // Legacy prefixes.
    loop {
        match *bytes.get(i)? {
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            // 32-bit addressing in 64-bit mode has the same ModRM forms;
            // 16-bit addressing (0x67 in 32-bit code) is not supported.
            0x67 if code == CodeSize::Bits64 => addr32 = true,
            0xf0 => lock = true,
            _ => break,
        }
        i += 1;
        if i >= MAX_LEN {
            return None;
        }
    }
    let mut rex_r = 0;
    if code == CodeSize::Bits64 {
        let b = *bytes.get(i)?;
        if b & 0xf0 == 0x40 {
            if b & 0x08 != 0 {
                return None; // REX.W: a 64-bit store.
            }
            rex_r = (b >> 2) & 1;
            i += 1;
        }
    }
    let mut opcode = u16::from(*bytes.get(i)?);
    i += 1;
    if opcode == 0xab {
        // STOSD: no ModRM; ES:[(E/R)DI].
        if lock {
            return None;
        }
        let bits = if code == CodeSize::Bits64 && !addr32 {
            64
        } else {
            32
        };
        return Some(Store {
            len: i as u8,
            source: Source::Reg(0),
            effect: Effect::AdvanceDi { bits },
        });
    }
    if opcode == 0x0f {
        opcode = 0x0f00 | u16::from(*bytes.get(i)?);
        i += 1;
    }
    if lock && opcode != 0x87 {
        return None;
    }
    let modrm = *bytes.get(i)?;
    i += 1;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md == 0b11 {
        return None; // A register destination is not a memory store.
    }
    // SIB byte and displacement (32- and 64-bit addressing, SDM Table 2-2).
    if rm == 0b100 {
        let sib = *bytes.get(i)?;
        i += 1;
        if md == 0b00 && sib & 0b111 == 0b101 {
            i += 4;
        }
    } else if md == 0b00 && rm == 0b101 {
        i += 4; // disp32 (RIP-relative in 64-bit mode).
    }
    match md {
        0b01 => i += 1,
        0b10 => i += 4,
        _ => {}
    }
    let r = reg | (rex_r << 3);
    let (source, effect) = match (opcode, reg) {
        (0x89 | 0x0fc3, _) => (Source::Reg(r), Effect::None),
        (0x87, _) => (Source::Reg(r), Effect::LoadOld(r)),
        (0xc7, 0) => {
            let imm = bytes.get(i..i + 4)?;
            i += 4;
            (
                Source::Imm(u32::from_le_bytes([imm[0], imm[1], imm[2], imm[3]])),
                Effect::None,
            )
        }
        _ => return None,
    };
    if i > MAX_LEN || i > bytes.len() {
        return None;
    }
    Some(Store {
        effect,
        ..Store::plain(i, source)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d64(b: &[u8]) -> Option<Store> {
        decode(b, CodeSize::Bits64)
    }

    #[test]
    fn register_stores() {
        // mov [rax+0x300], ecx
        assert_eq!(
            d64(&[0x89, 0x88, 0x00, 0x03, 0x00, 0x00]),
            Some(Store::plain(6, Source::Reg(1)))
        );
        // mov [rdi], r9d (REX.R)
        assert_eq!(
            d64(&[0x44, 0x89, 0x0f]),
            Some(Store::plain(3, Source::Reg(9)))
        );
        // Linux: mov %eax, 0xffffffffff5fd300 (SIB, no base, disp32)
        assert_eq!(
            d64(&[0x89, 0x04, 0x25, 0x00, 0xd3, 0x5f, 0xff]),
            Some(Store::plain(7, Source::Reg(0)))
        );
        // mov [rip+disp32], edx
        assert_eq!(
            d64(&[0x89, 0x15, 1, 2, 3, 4]),
            Some(Store::plain(6, Source::Reg(2)))
        );
        // 32-bit code: mov [ebx+8], esi ; with a DS override.
        assert_eq!(
            decode(&[0x3e, 0x89, 0x73, 0x08], CodeSize::Bits32),
            Some(Store::plain(4, Source::Reg(6)))
        );
    }

    #[test]
    fn immediate_stores() {
        // mov dword [rax+0xb0], 0
        assert_eq!(
            d64(&[0xc7, 0x80, 0xb0, 0, 0, 0, 0, 0, 0, 0]),
            Some(Store::plain(10, Source::Imm(0)))
        );
        // mov dword [rax], 0x12345678
        assert_eq!(
            d64(&[0xc7, 0x00, 0x78, 0x56, 0x34, 0x12]),
            Some(Store::plain(6, Source::Imm(0x1234_5678)))
        );
        // mov dword [rsp+8], 1 (SIB + disp8)
        assert_eq!(
            d64(&[0xc7, 0x44, 0x24, 0x08, 1, 0, 0, 0]),
            Some(Store::plain(8, Source::Imm(1)))
        );
    }

    #[test]
    fn more_store_forms() {
        // movnti [rdi], eax
        assert_eq!(
            d64(&[0x0f, 0xc3, 0x07]),
            Some(Store::plain(3, Source::Reg(0)))
        );
        // xchg [rdi], r10d ; lock xchg [rbx+rcx*1+0x300], eax
        let x = |len, r| {
            Some(Store {
                effect: Effect::LoadOld(r),
                ..Store::plain(len, Source::Reg(r))
            })
        };
        assert_eq!(d64(&[0x44, 0x87, 0x17]), x(3, 10));
        assert_eq!(d64(&[0xf0, 0x87, 0x84, 0x0b, 0x00, 0x03, 0, 0]), x(8, 0));
        // stosd (RDI), addr32 stosd (EDI), 32-bit code (EDI)
        let st = |len, bits| {
            Some(Store {
                effect: Effect::AdvanceDi { bits },
                ..Store::plain(len, Source::Reg(0))
            })
        };
        assert_eq!(d64(&[0xab]), st(1, 64));
        assert_eq!(d64(&[0x67, 0xab]), st(2, 32));
        assert_eq!(decode(&[0xab], CodeSize::Bits32), st(1, 32));
        // mov es:[rdi], eax ; mov [rbx+rcx*1+0x300], eax
        assert_eq!(
            d64(&[0x26, 0x89, 0x07]),
            Some(Store::plain(3, Source::Reg(0)))
        );
        assert_eq!(
            d64(&[0x89, 0x84, 0x0b, 0x00, 0x03, 0, 0]),
            Some(Store::plain(7, Source::Reg(0)))
        );
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(d64(&[0x48, 0x89, 0x08]), None); // REX.W
        assert_eq!(d64(&[0x66, 0x89, 0x08]), None); // 16-bit operand
        assert_eq!(d64(&[0x89, 0xc8]), None); // register destination
        assert_eq!(d64(&[0xc7, 0x08, 0, 0, 0, 0]), None); // C7 /1
        assert_eq!(d64(&[0xf3, 0xab]), None); // REP STOSD
        assert_eq!(d64(&[0xf0, 0x89, 0x08]), None); // LOCK MOV
        assert_eq!(d64(&[0x0f, 0xc3, 0xc8]), None); // MOVNTI to a register
        assert_eq!(d64(&[0x87, 0xc8]), None); // XCHG of registers
        assert_eq!(d64(&[0xc7, 0x00, 0, 0]), None); // truncated
        assert_eq!(decode(&[0x89, 0x08], CodeSize::Bits16), None);
        assert_eq!(decode(&[0x67, 0x89, 0x08], CodeSize::Bits32), None);
        assert_eq!(d64(&[0x2e; 20]), None); // too many prefixes
        assert_eq!(d64(&[]), None);
    }

    /// The forms LHV's hostile mode writes the ICR with to check L0's
    /// capture path (`lhv/src/hostile/smp.rs`): none is decoded here.
    #[test]
    fn forms_left_to_the_capture() {
        assert_eq!(d64(&[0xf3, 0xab]), None); // REP STOSD
        assert_eq!(d64(&[0xa5]), None); // MOVSD
        assert_eq!(d64(&[0xf0, 0x0f, 0xb1, 0x08]), None); // LOCK CMPXCHG
        assert_eq!(d64(&[0xf0, 0x0f, 0xc1, 0x08]), None); // LOCK XADD
        assert_eq!(d64(&[0x01, 0x08]), None); // ADD
        assert_eq!(d64(&[0x09, 0x08]), None); // OR
        assert_eq!(d64(&[0x0f, 0xab, 0x08]), None); // BTS
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            for code in [CodeSize::Bits16, CodeSize::Bits32, CodeSize::Bits64] {
                if let Some(s) = decode(&bytes, code) {
                    prop_assert!(usize::from(s.len) <= bytes.len().min(MAX_LEN));
                }
            }
        }
    }
}
