//! The INVVPID cases LHV runs each iteration (SDM Vol. 3C 31.3 "INVVPID"):
//! the four types with a valid VPID, and the operands that must fail with
//! VMfailValid, "invalid operand to INVEPT/INVVPID" (error 28): VPID 0 for
//! every type but all-context, a non-canonical address for
//! individual-address, and any type the processor does not support.

use crate::desc::is_canonical;
use shared::vmx::caps::EptVpidCap;
use shared::vmx::insn::{InvvpidDescriptor, InvvpidType};

/// What one INVVPID must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// VMsucceed.
    Success,
    /// VMfailValid with "invalid operand to INVEPT/INVVPID".
    InvalidOperand,
}

/// One INVVPID to execute and its expected outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The INVVPID type.
    pub kind: InvvpidType,
    /// The descriptor.
    pub descriptor: InvvpidDescriptor,
    /// The expected outcome.
    pub expect: Expect,
    /// A short description for failure reports.
    pub what: &'static str,
}

/// The VPID L2 runs with on CPU `cpu` in iteration `iter`: odd (so never
/// 0), different per CPU, changing every four iterations.
pub const fn vpid_for(cpu: usize, iter: u64) -> u16 {
    let k = (iter / 4 + cpu as u64 * 0x11) % 0x7fff;
    (2 * k + 1) as u16
}

fn supported(cap: &EptVpidCap, kind: InvvpidType) -> bool {
    cap.invvpid
        && match kind {
            InvvpidType::IndividualAddress => cap.invvpid_individual_address,
            InvvpidType::SingleContext => cap.invvpid_single_context,
            InvvpidType::AllContext => cap.invvpid_all_context,
            InvvpidType::SingleContextRetainingGlobals => {
                cap.invvpid_single_context_retaining_globals
            }
        }
}

/// The expected outcome of INVVPID `kind` with `descriptor` (SDM 31.3,
/// INVVPID "Operation").
pub fn expected(cap: &EptVpidCap, kind: InvvpidType, d: &InvvpidDescriptor) -> Expect {
    let ok = supported(cap, kind)
        && match kind {
            InvvpidType::IndividualAddress => d.vpid != 0 && is_canonical(d.linear_address),
            InvvpidType::SingleContext | InvvpidType::SingleContextRetainingGlobals => d.vpid != 0,
            InvvpidType::AllContext => true,
        };
    if ok {
        Expect::Success
    } else {
        Expect::InvalidOperand
    }
}

/// The cases for `vpid` and a canonical `address`.
pub fn cases(cap: &EptVpidCap, vpid: u16, address: u64) -> [Case; 8] {
    const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
    let table: [(InvvpidType, u16, u64, &'static str); 8] = [
        (
            InvvpidType::IndividualAddress,
            vpid,
            address,
            "individual-address",
        ),
        (
            InvvpidType::IndividualAddress,
            vpid,
            NON_CANONICAL,
            "individual-address, non-canonical",
        ),
        (
            InvvpidType::IndividualAddress,
            0,
            address,
            "individual-address, VPID 0",
        ),
        (InvvpidType::SingleContext, vpid, 0, "single-context"),
        (InvvpidType::SingleContext, 0, 0, "single-context, VPID 0"),
        (InvvpidType::AllContext, 0, 0, "all-context"),
        (
            InvvpidType::SingleContextRetainingGlobals,
            vpid,
            0,
            "single-context-retaining-globals",
        ),
        (
            InvvpidType::SingleContextRetainingGlobals,
            0,
            0,
            "single-context-retaining-globals, VPID 0",
        ),
    ];
    table.map(|(kind, vpid, address, what)| {
        let descriptor = InvvpidDescriptor::new(vpid, address);
        Case {
            kind,
            descriptor,
            expect: expected(cap, kind, &descriptor),
            what,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bochs corei7_skylake_x IA32_VMX_EPT_VPID_CAP: all four types.
    const BOCHS: u64 = 0x0000_0f01_0633_4141;

    #[test]
    fn vpids_are_odd_and_change() {
        for cpu in 0..8 {
            let mut last = None;
            for iter in 0..100 {
                let v = vpid_for(cpu, iter);
                assert_eq!(v % 2, 1);
                if iter % 4 == 0 && iter > 0 {
                    assert_ne!(Some(v), last);
                }
                last = Some(v);
            }
            assert_ne!(vpid_for(cpu, 0), vpid_for(cpu + 1, 0));
        }
        assert_eq!(vpid_for(0, 4 * 0x7ffe), 0xfffd);
    }

    #[test]
    fn bochs_cases() {
        let cap = EptVpidCap::from_msr(BOCHS);
        let c = cases(&cap, 3, 0x1000);
        let ok: Vec<bool> = c.iter().map(|c| c.expect == Expect::Success).collect();
        assert_eq!(ok, [true, false, false, true, false, true, true, false]);
    }

    #[test]
    fn unsupported_types_must_fail() {
        // INVVPID with only single-context (bits 32 and 41).
        let cap = EptVpidCap::from_msr((1 << 32) | (1 << 41));
        let c = cases(&cap, 5, 0x1000);
        let ok: Vec<bool> = c.iter().map(|c| c.expect == Expect::Success).collect();
        assert_eq!(ok, [false, false, false, true, false, false, false, false]);
        let none = cases(&EptVpidCap::default(), 5, 0x1000);
        assert!(none.iter().all(|c| c.expect == Expect::InvalidOperand));
    }
}
