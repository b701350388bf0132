//! Capturing an xAPIC write that L0 cannot decode (issue 7, item 4): the
//! instruction is single-stepped with this CPU's view of the xAPIC page
//! naming a scratch page (XMHF's scheme), and after its #DB L0 reads what
//! it wrote there and performs those register writes itself, exactly as
//! for a decoded store. Any store form works: `or`, `bts`, `xadd`,
//! `cmpxchg`, `movsd`, `rep stosd`, SSE and AVX stores.
//!
//! Before the step the scratch page holds zeros but the faulting
//! register's dword, which holds the register's current value, so that a
//! read-modify-write instruction computes from what the register holds.
//! xAPIC registers are 32 bits wide at 16-byte aligned offsets (SDM Vol. 3A
//! 11.4.1, Table 11-1); bytes 4 to 15 of each 16-byte slot are reserved and
//! a write there does nothing.

/// Bytes of the xAPIC page.
pub const PAGE_BYTES: usize = 4096;
/// Bytes between two xAPIC registers.
const SLOT: usize = 16;

/// Offset (in the page) of the register whose slot holds `offset`.
pub const fn register_of(offset: u64) -> u64 {
    offset & 0xff0
}

/// Fills `scratch` as the step needs it: zeros, and `current` (the
/// register's value now) at the register holding `fault_offset`.
pub fn prepare(scratch: &mut [u8; PAGE_BYTES], fault_offset: u64, current: u32) {
    scratch.fill(0);
    let r = register_of(fault_offset) as usize;
    scratch[r..r + 4].copy_from_slice(&current.to_le_bytes());
}

fn dword(page: &[u8; PAGE_BYTES], offset: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&page[offset..offset + 4]);
    u32::from_le_bytes(b)
}

/// The register writes (offset, value) the stepped instruction made to a
/// page prepared by [`prepare`]: the faulting register first, when the
/// faulting write touched its 32 bits (a write of the value it held is a
/// write too: an IPI sent again), then, in address order, every other
/// register whose value is no longer 0 (a second register an instruction
/// wider than 4 bytes wrote; one written with 0 cannot be told from one
/// not written, and is missed).
pub fn captured(
    scratch: &[u8; PAGE_BYTES],
    fault_offset: u64,
) -> impl Iterator<Item = (u64, u32)> + '_ {
    let fault_reg = register_of(fault_offset) as usize;
    let fault_in_register = fault_offset & 0xf < 4;
    let first = (fault_in_register || dword(scratch, fault_reg) != 0)
        .then(|| (fault_reg as u64, dword(scratch, fault_reg)));
    let others = (0..PAGE_BYTES)
        .step_by(SLOT)
        .filter(move |&r| r != fault_reg)
        .map(move |r| (r as u64, dword(scratch, r)))
        .filter(|&(_, v)| v != 0);
    first.into_iter().chain(others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ICR_LOW: u64 = 0x300;

    fn page(fault: u64, current: u32) -> [u8; PAGE_BYTES] {
        let mut p = [0xa5; PAGE_BYTES];
        prepare(&mut p, fault, current);
        p
    }

    fn store(p: &mut [u8; PAGE_BYTES], at: u64, bytes: &[u8]) {
        let at = at as usize;
        p[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn a_dword_store_to_the_icr() {
        let mut p = page(ICR_LOW, 0x4606);
        store(&mut p, ICR_LOW, &0x4500u32.to_le_bytes());
        assert_eq!(
            captured(&p, ICR_LOW).collect::<Vec<_>>(),
            [(ICR_LOW, 0x4500)]
        );
    }

    #[test]
    fn read_modify_write_sees_the_register() {
        // `or dword [icr], 0x100` on 0x4400: the page held the value.
        let mut p = page(ICR_LOW, 0x4400);
        assert_eq!(dword(&p, ICR_LOW as usize), 0x4400);
        let v = dword(&p, ICR_LOW as usize) | 0x100;
        store(&mut p, ICR_LOW, &v.to_le_bytes());
        assert_eq!(
            captured(&p, ICR_LOW).collect::<Vec<_>>(),
            [(ICR_LOW, 0x4500)]
        );
    }

    #[test]
    fn the_same_value_again_is_a_write() {
        let p = page(0xb0, 0);
        // EOI: a store of 0 over the 0 it held.
        assert_eq!(captured(&p, 0xb0).collect::<Vec<_>>(), [(0xb0, 0)]);
    }

    #[test]
    fn a_byte_store_merges_into_the_register() {
        let mut p = page(ICR_LOW + 1, 0x4606);
        store(&mut p, ICR_LOW + 1, &[0x45]);
        assert_eq!(
            captured(&p, ICR_LOW + 1).collect::<Vec<_>>(),
            [(ICR_LOW, 0x4506)]
        );
    }

    #[test]
    fn reserved_bytes_alone_write_nothing() {
        let mut p = page(ICR_LOW + 4, 0);
        store(&mut p, ICR_LOW + 4, &[1, 2, 3, 4]);
        assert_eq!(captured(&p, ICR_LOW + 4).count(), 0);
    }

    #[test]
    fn a_wide_store_writes_two_registers() {
        // A 32-byte AVX store at 0x300: ICR low and ICR high (0x310).
        let mut p = page(ICR_LOW, 0);
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&0x4500u32.to_le_bytes());
        b[16..20].copy_from_slice(&0x0100_0000u32.to_le_bytes());
        store(&mut p, ICR_LOW, &b);
        assert_eq!(
            captured(&p, ICR_LOW).collect::<Vec<_>>(),
            [(ICR_LOW, 0x4500), (0x310, 0x0100_0000)]
        );
    }

    proptest! {
        /// A 4-byte store at any register gives exactly that write.
        #[test]
        fn any_dword_store(reg in 0u64..256, old in any::<u32>(), new in any::<u32>()) {
            let off = reg * 16;
            let mut p = page(off, old);
            store(&mut p, off, &new.to_le_bytes());
            prop_assert_eq!(captured(&p, off).collect::<Vec<_>>(), vec![(off, new)]);
        }
    }
}
