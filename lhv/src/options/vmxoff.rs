//! VMXOFF (0x80): every fourth iteration, before entering L2: VMPTRST (our
//! VMCS), VMCLEAR (current-VMCS pointer becomes all ones, SDM 31.3
//! "VMCLEAR"), VMWRITE and VMREAD without a current VMCS (VMfailInvalid),
//! VMXOFF and VMXON, VMPTRLD, VMRESUME of the now clear VMCS (VMfailValid,
//! error 5), and the core then VMLAUNCHes again. The VMCS contents must
//! survive all of it.

use lhv::opt::LhvOpt;
use shared::vmx::insn::{self, VmFail};
use shared::vmx::{VmInstructionError, VmcsField as F};

use super::TestOption;
use crate::assert::{fail, test_assert, test_assert_eq};
use crate::exit::{self, EntryOutcome};
use crate::test_loop::Ctx;

/// The VMXOFF checks of one CPU.
pub struct VmxOff {
    cycles: u64,
}

impl VmxOff {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { cycles: 0 }
    }
}

impl TestOption for VmxOff {
    fn bit(&self) -> LhvOpt {
        LhvOpt::VMXOFF
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        if ctx.iter % 4 != 2 {
            return;
        }
        let rip = ctx.read(F::GuestRip);
        let token = ctx.vmx.take().expect("in VMX operation");
        test_assert_eq!(token.vmptrst(), Ok(ctx.vmcs_pa), "VMPTRST");
        // SAFETY: VMX root operation; the VMCS is LHV's own.
        let r = unsafe { insn::vmclear(ctx.vmcs_pa) };
        test_assert_eq!(r, Ok(()), "VMCLEAR of the current VMCS");
        test_assert_eq!(token.vmptrst(), Ok(u64::MAX), "VMPTRST after VMCLEAR");
        // SAFETY: no current VMCS: VMWRITE fails without effect.
        let w = unsafe { insn::vmwrite(F::GuestRip.encoding(), 0) };
        test_assert_eq!(w, Err(VmFail::Invalid), "VMWRITE without a current VMCS");
        test_assert_eq!(
            token.vmread(F::GuestRip),
            Err(VmFail::Invalid),
            "VMREAD without a current VMCS"
        );
        // SAFETY: the only VMCS is cleared; nothing else uses VMX here.
        let off = unsafe { token.disable() };
        test_assert_eq!(off, Ok(()), "VMXOFF");
        match shared::vmx_root::enter(ctx.caps) {
            Ok(t) => ctx.vmx = Some(t),
            Err(e) => fail(
                format_args!("VMXON after VMXOFF"),
                format_args!("success"),
                format_args!("{e}"),
            ),
        }
        // SAFETY: VMX root operation again; the region is LHV's VMCS.
        let r = unsafe { insn::vmptrld(ctx.vmcs_pa) };
        test_assert_eq!(r, Ok(()), "VMPTRLD after VMXON");
        test_assert_eq!(
            ctx.read(F::GuestRip),
            rip,
            "guest RIP kept across VMCLEAR/VMXOFF/VMXON"
        );
        // SAFETY: the VMCS is fully set up; VMRESUME of a clear VMCS fails
        // before entering (SDM 31.3 "VMLAUNCH/VMRESUME").
        let out = unsafe { exit::enter(&mut ctx.regs, true) };
        test_assert_eq!(out, EntryOutcome::FailValid, "VMRESUME of a clear VMCS");
        let err = VmInstructionError::from_u32(ctx.read(F::VmInstructionError) as u32);
        test_assert!(
            err == VmInstructionError::VmresumeNonLaunchedVmcs,
            "VM-instruction error of VMRESUME",
            VmInstructionError::VmresumeNonLaunchedVmcs,
            err
        );
        ctx.launched = false;
        self.cycles += 1;
    }

    fn count(&self) -> u64 {
        self.cycles
    }
}
