//! INVVPID as L1 executes it (SDM Vol. 3C, 31.3 "INVVPID—Invalidate
//! Translations Based on VPID"): the operand checks, in the order of the
//! instruction's pseudocode, and what must be invalidated.

use crate::vmx::caps::EptVpidCap;
use crate::vmx::insn_info::is_canonical;

/// INVVPID types (the register operand).
pub const INDIVIDUAL_ADDRESS: u64 = 0;
pub const SINGLE_CONTEXT: u64 = 1;
pub const ALL_CONTEXT: u64 = 2;
pub const SINGLE_CONTEXT_RETAINING_GLOBALS: u64 = 3;

/// What a valid INVVPID invalidates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Mappings of one linear address for one VPID.
    Address { vpid: u16, linear: u64 },
    /// Every mapping of one VPID (globals kept or not).
    Context { vpid: u16, keep_globals: bool },
    /// Every mapping of every VPID but 0 (L1's own).
    All,
}

/// Whether `caps` (L1's IA32_VMX_EPT_VPID_CAP) supports INVVPID type `t`
/// (bits 40 + t).
pub fn type_supported(caps: &EptVpidCap, t: u64) -> bool {
    caps.invvpid
        && match t {
            INDIVIDUAL_ADDRESS => caps.invvpid_individual_address,
            SINGLE_CONTEXT => caps.invvpid_single_context,
            ALL_CONTEXT => caps.invvpid_all_context,
            SINGLE_CONTEXT_RETAINING_GLOBALS => caps.invvpid_single_context_retaining_globals,
            _ => false,
        }
}

/// The checks after the type's: the 128-bit descriptor (VPID in bits 15:0,
/// bits 63:16 reserved, linear address in 127:64). `None`: VMfailValid 28
/// ("invalid operand to INVEPT/INVVPID").
pub fn scope(t: u64, descriptor: [u8; 16]) -> Option<Scope> {
    let lo = u64::from_le_bytes(descriptor[..8].try_into().ok()?);
    let linear = u64::from_le_bytes(descriptor[8..].try_into().ok()?);
    if lo >> 16 != 0 {
        return None;
    }
    let vpid = lo as u16;
    match t {
        INDIVIDUAL_ADDRESS if vpid != 0 && is_canonical(linear) => {
            Some(Scope::Address { vpid, linear })
        }
        SINGLE_CONTEXT if vpid != 0 => Some(Scope::Context {
            vpid,
            keep_globals: false,
        }),
        ALL_CONTEXT => Some(Scope::All),
        SINGLE_CONTEXT_RETAINING_GLOBALS if vpid != 0 => Some(Scope::Context {
            vpid,
            keep_globals: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn desc(vpid: u64, la: u64) -> [u8; 16] {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&vpid.to_le_bytes());
        d[8..].copy_from_slice(&la.to_le_bytes());
        d
    }

    #[test]
    fn the_sdm_cases() {
        assert_eq!(
            scope(0, desc(5, 0x1000)),
            Some(Scope::Address {
                vpid: 5,
                linear: 0x1000
            })
        );
        // VPID 0 is refused by every type but all-context.
        for t in [0, 1, 3] {
            assert_eq!(scope(t, desc(0, 0)), None, "type {t}");
        }
        assert_eq!(scope(2, desc(0, 0)), Some(Scope::All));
        // Reserved bits 63:16, a non-canonical address for type 0.
        assert_eq!(scope(1, desc(1 << 16 | 1, 0)), None);
        assert_eq!(scope(0, desc(1, 0x8000_0000_0000)), None);
        assert_eq!(
            scope(1, desc(1, 0x8000_0000_0000)),
            Some(Scope::Context {
                vpid: 1,
                keep_globals: false
            })
        );
        assert_eq!(scope(4, desc(1, 0)), None);
    }

    #[test]
    fn types_follow_the_capability_bits() {
        let mut caps = EptVpidCap::from_msr(0x0000_0f01_0000_0000);
        assert!((0..4).all(|t| type_supported(&caps, t)));
        assert!(!type_supported(&caps, 4));
        caps.invvpid_individual_address = false;
        assert!(!type_supported(&caps, 0));
        caps.invvpid = false;
        assert!(!type_supported(&caps, 2));
    }

    proptest! {
        #[test]
        fn never_panics_and_rejects_reserved_bits(t in any::<u64>(), d in any::<[u8; 16]>()) {
            let r = scope(t, d);
            let lo = u64::from_le_bytes(d[..8].try_into().unwrap());
            if lo >> 16 != 0 || t > 3 {
                prop_assert_eq!(r, None);
            }
        }
    }
}
