//! The baseline, always on: VMCALL with register round trip, CPUID exits
//! (unconditional, SDM 26.1.2), and a hardware exception (#UD) intercepted
//! through the exception bitmap (SDM 26.2, 28.2.2).

use ::core::sync::atomic::{AtomicU64, Ordering};
use lhv::opt::LhvOpt;
use shared::trap::vector;
use shared::vmx::exit::{ExitReason, InterruptionInfo, InterruptionType};

use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, Args, L2Env, l2_assert_eq};
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// L2's VMCALL: RBX..RSI carry patterns that L1 checks and transforms.
const PING: u64 = l2::call_number(LhvOpt::empty(), 0x10);
/// The CPUID leaf L2 asks for (L1 answers it; no real CPU has it).
const LEAF: u32 = 0x4c48_0000;
/// The bytes of UD2.
const UD2: [u8; 2] = [0x0f, 0x0b];

fn pattern(env: &L2Env, i: u64) -> u64 {
    (env.iter << 32) ^ (env.cpu as u64) << 24 ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn answer(v: u64) -> u64 {
    !v.rotate_left(7)
}

/// CPUID in L2 (L1 answers).
fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = shared::x86::cpuid(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

static UD_SEEN: AtomicU64 = AtomicU64::new(0);

fn l2_action(env: &L2Env) {
    let sent = Args {
        rbx: pattern(env, 1),
        rcx: pattern(env, 2),
        rdx: pattern(env, 3),
        rsi: pattern(env, 4),
    };
    let got = l2::vmcall(PING, sent);
    l2_assert_eq!(got.rbx, answer(sent.rbx), "VMCALL answer in RBX");
    l2_assert_eq!(got.rcx, answer(sent.rcx), "VMCALL answer in RCX");
    l2_assert_eq!(got.rdx, answer(sent.rdx), "VMCALL answer in RDX");
    l2_assert_eq!(got.rsi, answer(sent.rsi), "VMCALL answer in RSI");

    let sub = env.iter as u32;
    let r = cpuid(LEAF, sub);
    l2_assert_eq!(r[0], LEAF ^ sub, "CPUID EAX from L1");
    l2_assert_eq!(r[1], sub, "CPUID EBX from L1 (ECX in)");
    l2_assert_eq!(r[3], env.cpu, "CPUID EDX from L1");

    // SAFETY: #UD exits to L1 (exception bitmap), which moves RIP past it.
    unsafe { ::core::arch::asm!("ud2", options(nomem, nostack)) };
}

/// Baseline checks.
pub struct Baseline {
    checks: u64,
}

impl Baseline {
    /// Fresh state.
    pub const fn new() -> Self {
        Self { checks: 0 }
    }
}

impl TestOption for Baseline {
    fn bit(&self) -> LhvOpt {
        LhvOpt::empty()
    }

    fn name(&self) -> &'static str {
        "BASE"
    }

    fn request(&self, c: &mut Controls) {
        // Every exception in L2 exits; options handle the ones they cause.
        c.exception_bitmap = u32::MAX;
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        match exit.reason {
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == PING => {
                test_assert_eq!(exit.instruction_len, 3u64, "VMCALL instruction length");
                for r in [gpr::RBX, gpr::RCX, gpr::RDX, gpr::RSI] {
                    ctx.regs.gpr[r] = answer(ctx.regs.gpr[r]);
                }
                ctx.skip_instruction(exit);
            }
            ExitReason::Cpuid => {
                test_assert_eq!(exit.instruction_len, 2u64, "CPUID instruction length");
                let (leaf, sub) = (ctx.regs.gpr[gpr::RAX] as u32, ctx.regs.gpr[gpr::RCX] as u32);
                if leaf == LEAF {
                    ctx.regs.gpr[gpr::RAX] = u64::from(leaf ^ sub);
                    ctx.regs.gpr[gpr::RBX] = u64::from(sub);
                    ctx.regs.gpr[gpr::RCX] = 0;
                    ctx.regs.gpr[gpr::RDX] = ctx.cpu as u64;
                } else {
                    let r = shared::x86::cpuid(leaf, sub);
                    ctx.regs.gpr[gpr::RAX] = r.eax.into();
                    ctx.regs.gpr[gpr::RBX] = r.ebx.into();
                    ctx.regs.gpr[gpr::RCX] = r.ecx.into();
                    ctx.regs.gpr[gpr::RDX] = r.edx.into();
                }
                ctx.skip_instruction(exit);
            }
            // Other vectors and NMIs belong to the options that cause them.
            ExitReason::ExceptionOrNmi
                if InterruptionInfo(exit.interruption_info).vector() == vector::UD =>
            {
                let info = InterruptionInfo(exit.interruption_info);
                let want =
                    InterruptionInfo::new(vector::UD, InterruptionType::HardwareException, false);
                test_assert_eq!(
                    info.0,
                    want.0,
                    "VM-exit interruption information for #UD (SDM 28.2.2)"
                );
                // SAFETY: L2's RIP is an address of LHV's own code.
                let bytes =
                    unsafe { ::core::ptr::read_unaligned(exit.guest_rip as *const [u8; 2]) };
                test_assert!(
                    bytes == UD2,
                    "guest RIP of the #UD exit points at UD2",
                    UD2,
                    bytes
                );
                UD_SEEN.fetch_add(1, Ordering::Relaxed);
                ctx.write(
                    shared::vmx::VmcsField::GuestRip,
                    exit.guest_rip + UD2.len() as u64,
                );
            }
            _ => return Handled::NotMine,
        }
        self.checks += 1;
        Handled::Yes
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
