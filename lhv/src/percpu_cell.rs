//! Per-CPU statics: one slot per CPU, each claimed once by its CPU and then
//! owned by it for the rest of the run.

use ::core::cell::UnsafeCell;
use ::core::sync::atomic::{AtomicBool, Ordering};
use shared::percpu::MAX_CPUS;

/// `MAX_CPUS` slots of `T`; [`PerCpuCell::claim`] hands out each slot once.
pub struct PerCpuCell<T> {
    slots: [UnsafeCell<T>; MAX_CPUS],
    claimed: [AtomicBool; MAX_CPUS],
}

// SAFETY: a slot is reachable only through the one `&'static mut` that
// `claim` returns for it (the `claimed` flag guarantees uniqueness).
unsafe impl<T: Send> Sync for PerCpuCell<T> {}

impl<T> PerCpuCell<T> {
    /// Slots initialised with `init` (a constant expression per slot).
    pub const fn new(slots: [UnsafeCell<T>; MAX_CPUS]) -> Self {
        Self {
            slots,
            claimed: [const { AtomicBool::new(false) }; MAX_CPUS],
        }
    }

    /// The slot of CPU `cpu`, exclusively; panics if it was claimed before.
    // The `claimed` flag makes the returned reference unique.
    #[allow(clippy::mut_from_ref)]
    pub fn claim(&'static self, cpu: usize) -> &'static mut T {
        assert!(
            !self.claimed[cpu].swap(true, Ordering::AcqRel),
            "per-CPU slot {cpu} claimed twice"
        );
        // SAFETY: the flag above was false, so no other reference to this
        // slot exists or will ever be created.
        unsafe { &mut *self.slots[cpu].get() }
    }
}

/// Declares a `static NAME: PerCpuCell<T>` whose slots are `init`.
macro_rules! per_cpu_static {
    ($(#[$m:meta])* $vis:vis static $name:ident: $t:ty = $init:expr;) => {
        $(#[$m])*
        $vis static $name: $crate::percpu_cell::PerCpuCell<$t> =
            $crate::percpu_cell::PerCpuCell::new(
                [const { ::core::cell::UnsafeCell::new($init) }; shared::percpu::MAX_CPUS],
            );
    };
}
pub(crate) use per_cpu_static;
