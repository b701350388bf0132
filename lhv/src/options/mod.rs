//! The test options: one module per `LHV_OPT` bit (plus the always-on
//! baseline), each implementing [`TestOption`], listed once in
//! [`registry!`] below.
//!
//! # Adding an option
//! 1. Write `options/<name>.rs` with a `pub struct` that has a
//!    `pub const fn new() -> Self` and implements [`TestOption`]: say which
//!    `LHV_OPT` bit it is, what the CPU must support (else `SKIP`), which
//!    controls it needs, and its hooks; give L2 work with
//!    [`TestOption::l2_action`] and VMCALL numbers from
//!    [`crate::l2::call_number`].
//! 2. Add one line `name: module::Type,` to the `registry!` invocation.
//!
//! # Order of the hooks, per CPU
//! `unsupported` and `request` (before the VMCS is written), `setup` (once,
//! VMCS current and written), then for each iteration `before_entry`, any
//! number of `on_exit` while L2 runs its actions, `after_iteration`; `count`
//! is printed at the end.

use lhv::opt::LhvOpt;
use shared::vmx::VmxCaps;

use crate::exit::Exit;
use crate::l2::L2Action;
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

pub mod baseline;
pub mod ept;
pub mod ept_common;
pub mod intercepts;
pub mod large_page;
pub mod msr_bitmap;
pub mod msr_load;
pub mod nested_user_mode;
pub mod nmi;
pub mod no_eflags_if;
pub mod no_interrupt;
pub mod preemption_timer;
mod safe_msr;
pub mod switch_ept;
pub mod unrestricted_guest;

pub mod user_mode;
pub mod vmxoff;
pub mod vpid;

/// Whether an option took care of a VM exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Handled; resume L2.
    Yes,
    /// Not this option's exit; ask the next one.
    NotMine,
}

/// One test option.
pub trait TestOption {
    /// Its `LHV_OPT` bit (empty for the always-on baseline).
    fn bit(&self) -> LhvOpt;

    /// Its name in `SKIP` and counts lines.
    fn name(&self) -> &'static str {
        lhv::opt::name(self.bit())
    }

    /// Why this CPU cannot run the option (`SKIP <name>: <reason>`), if so.
    fn unsupported(&self, _caps: &VmxCaps) -> Option<&'static str> {
        None
    }

    /// Adds the VMX controls the option needs.
    fn request(&self, _controls: &mut Controls) {}

    /// Once per CPU, after the VMCS is written and current.
    fn setup(&mut self, _ctx: &mut Ctx) {}

    /// Before each iteration's first VM entry.
    fn before_entry(&mut self, _ctx: &mut Ctx) {}

    /// A VM exit the core does not own.
    fn on_exit(&mut self, _ctx: &mut Ctx, _exit: &Exit) -> Handled {
        Handled::NotMine
    }

    /// After L2 finished the iteration.
    fn after_iteration(&mut self, _ctx: &mut Ctx) {}

    /// L2's part of each iteration, if any.
    fn l2_action(&self) -> Option<L2Action> {
        None
    }

    /// How many times the option's checks have been exercised.
    fn count(&self) -> u64;
}

/// Declares [`Registry`]: one field per option, in hook order.
macro_rules! registry {
    ($($field:ident: $ty:ty,)+) => {
        /// Every option's state on one CPU.
        pub struct Registry {
            $(pub $field: $ty,)+
        }

        impl Registry {
            /// Fresh state.
            pub const fn new() -> Self {
                Self { $($field: <$ty>::new(),)+ }
            }

            /// Calls `f` on every option whose bit is in `active` (the
            /// baseline always).
            pub fn for_each(&mut self, active: LhvOpt, f: &mut dyn FnMut(&mut dyn TestOption)) {
                $(if active.contains(self.$field.bit()) { f(&mut self.$field); })+
            }
        }
    };
}

registry! {
    baseline: baseline::Baseline,
    no_eflags_if: no_eflags_if::NoEflagsIf,
    no_interrupt: no_interrupt::NoInterrupt,
    ept: ept::Ept,
    large_page: large_page::LargePage,
    switch_ept: switch_ept::SwitchEpt,
    vpid: vpid::Vpid,
    unrestricted_guest: unrestricted_guest::UnrestrictedGuest,
    preemption_timer: preemption_timer::PreemptionTimer,
    vmxoff: vmxoff::VmxOff,
    msr_load: msr_load::MsrLoad,
    msr_bitmap: msr_bitmap::MsrBitmap,
    user_mode: user_mode::UserMode,
    nested_user_mode: nested_user_mode::NestedUserMode,
    nmi: nmi::Nmi,
    intercepts: intercepts::Intercepts,
}
