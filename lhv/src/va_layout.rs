//! LHV's virtual address space, one PML4 slot (512 GiB) per purpose, so that
//! options never pick the same "free" addresses:
//!
//! | slot | what |
//! |---|---|
//! | 0 | identity map of the low 4 GiB (boot page tables) |
//! | 1 | ring-3 code and stacks of USER_MODE / NESTED_USER_MODE ([`crate::ring3_abi::USER_BASE`]) |
//! | 2 | never mapped: addresses that must fault (INTERCEPTS' #PF tests) |
//! | 511 | the kernel image (high half) |

/// Bytes covered by one PML4 entry.
pub const PML4_SLOT_SIZE: u64 = 1 << 39;
/// PML4 slot that stays unmapped.
pub const UNMAPPED_PML4_INDEX: usize = 2;
/// An address that is never mapped in LHV's page tables.
pub const UNMAPPED: u64 = UNMAPPED_PML4_INDEX as u64 * PML4_SLOT_SIZE;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring3_abi::{USER_BASE, USER_PML4_INDEX};

    #[test]
    fn slots_do_not_collide() {
        assert_ne!(USER_PML4_INDEX, UNMAPPED_PML4_INDEX);
        assert_ne!(USER_PML4_INDEX, 0);
        assert_ne!(UNMAPPED_PML4_INDEX, 0);
        assert_ne!(UNMAPPED_PML4_INDEX, 511);
        assert_eq!(USER_BASE / PML4_SLOT_SIZE, USER_PML4_INDEX as u64);
        assert_eq!(UNMAPPED, 0x100_0000_0000);
    }
}
