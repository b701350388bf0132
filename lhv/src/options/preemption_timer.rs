//! PREEMPTION_TIMER (0x4000): each iteration L2 asks L1 to arm the
//! VMX-preemption timer and spins until it fires. The exit must come no
//! earlier than the programmed value times the rate of IA32_VMX_MISC bits
//! 4:0 (SDM 26.5.1), and with "save VMX-preemption timer value" the saved
//! value must be 0 (SDM 28.3.3).

use ::core::sync::atomic::{AtomicBool, Ordering};
use lhv::opt::LhvOpt;
use shared::percpu::MAX_CPUS;
use shared::vmx::controls::{ExitControls, PinBased};
use shared::vmx::exit::ExitReason;
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, L2Env};
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// L2 asks L1 to arm the timer.
const ARM: u64 = l2::call_number(LhvOpt::PREEMPTION_TIMER, 1);
/// The timer value while not testing: far beyond any iteration.
const IDLE: u64 = u32::MAX as u64;
/// The value programmed for the test.
const VALUE: u64 = 2000;

/// Set by L1 when the timer fired; L2 spins on it.
static FIRED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

fn l2_action(env: &L2Env) {
    FIRED[env.cpu].store(false, Ordering::Relaxed);
    l2::vmcall(ARM, l2::Args::default());
    while !FIRED[env.cpu].load(Ordering::Relaxed) {
        ::core::hint::spin_loop();
    }
}

/// The preemption-timer checks of one CPU.
pub struct PreemptionTimer {
    armed_tsc: Option<u64>,
    expiries: u64,
}

impl PreemptionTimer {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            armed_tsc: None,
            expiries: 0,
        }
    }
}

impl TestOption for PreemptionTimer {
    fn bit(&self) -> LhvOpt {
        LhvOpt::PREEMPTION_TIMER
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        if !caps.has_preemption_timer() {
            Some("the CPU lacks the VMX-preemption timer")
        } else if !caps
            .exit
            .effective()
            .can_set(ExitControls::SAVE_PREEMPTION_TIMER_VALUE.bits())
        {
            Some("the CPU cannot save the VMX-preemption timer value")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.pin |= PinBased::ACTIVATE_PREEMPTION_TIMER;
        c.exit |= ExitControls::SAVE_PREEMPTION_TIMER_VALUE;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        ctx.write(F::VmxPreemptionTimerValue, IDLE);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        match exit.reason {
            ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == ARM => {
                let saved = ctx.read(F::VmxPreemptionTimerValue);
                test_assert!(
                    saved <= IDLE,
                    "saved VMX-preemption timer value while idle",
                    format_args!("at most {IDLE:#x}"),
                    saved
                );
                ctx.write(F::VmxPreemptionTimerValue, VALUE);
                ctx.skip_instruction(exit);
                self.armed_tsc = Some(shared::x86::rdtsc());
                Handled::Yes
            }
            ExitReason::PreemptionTimerExpired => {
                let now = shared::x86::rdtsc();
                let Some(armed) = self.armed_tsc.take() else {
                    crate::assert::fail(
                        format_args!("VMX-preemption timer exit"),
                        format_args!("only after L2 armed it"),
                        format_args!("at RIP {:#x}", exit.guest_rip),
                    );
                };
                test_assert_eq!(
                    ctx.read(F::VmxPreemptionTimerValue),
                    0u64,
                    "saved VMX-preemption timer value at expiry"
                );
                let min = VALUE << ctx.caps.misc.preemption_timer_rate;
                test_assert!(
                    now - armed >= min,
                    "TSC ticks before the VMX-preemption timer fired",
                    format_args!("at least {min}"),
                    now - armed
                );
                ctx.write(F::VmxPreemptionTimerValue, IDLE);
                FIRED[ctx.cpu].store(true, Ordering::Relaxed);
                self.expiries += 1;
                Handled::Yes
            }
            _ => Handled::NotMine,
        }
    }

    fn count(&self) -> u64 {
        self.expiries
    }
}
