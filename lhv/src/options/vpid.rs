//! VPID (0x10): L2 runs with odd VPIDs that change every four iterations,
//! and L1 runs every INVVPID type each iteration, including the operands
//! that must fail (VPID 0, a non-canonical address, unsupported types),
//! checking each outcome (SDM 31.3 "INVVPID", 29.1 "VPIDs").

use lhv::invvpid_cases::{self, Expect, vpid_for};
use lhv::opt::LhvOpt;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::insn::invvpid;
use shared::vmx::{VmFail, VmInstructionError, VmcsField as F, VmxCaps};

use super::TestOption;
use crate::assert::{test_assert, test_assert_eq};
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// The VPID checks of one CPU.
pub struct Vpid {
    invvpids: u64,
}

impl Vpid {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { invvpids: 0 }
    }
}

impl TestOption for Vpid {
    fn bit(&self) -> LhvOpt {
        LhvOpt::VPID
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        if !caps.has_vpid() {
            Some("the CPU lacks VPID")
        } else if !caps.ept_vpid.invvpid {
            Some("the CPU lacks INVVPID")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.proc2 |= SecondaryProcBased::ENABLE_VPID;
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        let vpid = vpid_for(ctx.cpu, ctx.iter);
        ctx.write(F::VirtualProcessorId, vpid.into());
        test_assert_eq!(
            ctx.read(F::VirtualProcessorId),
            u64::from(vpid),
            "VPID read back"
        );
        let address = crate::l2::l2_main as *const () as u64;
        for case in invvpid_cases::cases(&ctx.caps.ept_vpid, vpid, address) {
            // SAFETY: VMX root operation; INVVPID only drops cached
            // translations, and unsupported operands fail without effect.
            let r = unsafe { invvpid(case.kind, &case.descriptor) };
            let want = match case.expect {
                Expect::Success => Ok(()),
                Expect::InvalidOperand => Err(VmFail::Valid(
                    VmInstructionError::InvalidInveptInvvpidOperand,
                )),
            };
            test_assert!(
                r == want,
                format_args!("INVVPID {} (VPID {:#x})", case.what, case.descriptor.vpid),
                want,
                r
            );
            self.invvpids += 1;
        }
    }

    fn count(&self) -> u64 {
        self.invvpids
    }
}
