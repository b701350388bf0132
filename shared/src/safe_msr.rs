//! #GP-safe RDMSR and WRMSR for the kernels (LHV probing which MSRs this
//! processor implements; L0 performing MSR loads of a guest's MSR areas): a #GP
//! raised by the one RDMSR/WRMSR of [`rdmsr`]/[`wrmsr`] on this CPU is
//! caught, the instruction skipped, and the access reported as failed.
//!
//! A #GP anywhere else stays fatal (the handler falls back to
//! [`trap::fatal_exception`]).

use crate::percpu::{self, MAX_CPUS};
use crate::trap::{self, Claim, TrapFrame, vector};
use ::core::sync::atomic::{AtomicBool, Ordering};

/// Set while this CPU runs a guarded RDMSR/WRMSR.
static GUARDED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Set by the handler when the guarded instruction faulted.
static FAULTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// RDMSR is 0F 32, WRMSR 0F 30 (both two bytes).
const RDMSR: [u8; 2] = [0x0f, 0x32];
const WRMSR: [u8; 2] = [0x0f, 0x30];

/// Claims the #GP of a guarded RDMSR/WRMSR on this CPU.
fn gp_handler(frame: &mut TrapFrame) -> Claim {
    let cpu = percpu::current().index();
    if !GUARDED[cpu].load(Ordering::Acquire) || frame.cs & 3 != 0 {
        return Claim::NotMine;
    }
    // SAFETY: a guarded #GP at CPL 0 comes from this kernel's own code, so
    // RIP points at the faulting instruction in its image.
    let bytes = unsafe { ::core::ptr::read_unaligned(frame.rip as *const [u8; 2]) };
    if bytes != RDMSR && bytes != WRMSR {
        return Claim::NotMine;
    }
    FAULTED[cpu].store(true, Ordering::Release);
    frame.rip += 2;
    Claim::Handled
}

/// Installs the #GP handler (idempotent; every CPU shares the IDT).
pub fn install() {
    // #GP has room for four claiming handlers; each kernel adds at most two.
    let _ = trap::add_handler(vector::GP, gp_handler);
}

fn guarded<R>(f: impl FnOnce() -> R) -> Option<R> {
    let cpu = percpu::current().index();
    FAULTED[cpu].store(false, Ordering::Release);
    GUARDED[cpu].store(true, Ordering::Release);
    let r = f();
    GUARDED[cpu].store(false, Ordering::Release);
    (!FAULTED[cpu].load(Ordering::Acquire)).then_some(r)
}

/// RDMSR `msr`, or `None` if it raised #GP. [`install`] must have run.
pub fn rdmsr(msr: u32) -> Option<u64> {
    guarded(|| {
        let (lo, hi): (u32, u32);
        // SAFETY: a #GP is caught by `gp_handler`, which skips the
        // instruction; RDMSR has no other effect.
        unsafe {
            ::core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
                options(nostack, preserves_flags));
        }
        (u64::from(hi) << 32) | u64::from(lo)
    })
}

/// WRMSR `msr` = `value`; false if it raised #GP.
///
/// # Safety
/// The write must not break the kernel (the caller picks MSRs without
/// effect on it, or values that keep it running).
pub unsafe fn wrmsr(msr: u32, value: u64) -> bool {
    guarded(|| {
        // SAFETY: the caller vouches for the effect; a #GP is caught.
        unsafe {
            ::core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
                in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
        }
    })
    .is_some()
}

/// Whether `msr` holds `probe` after writing it (it is restored after):
/// with Bochs's `ignore_bad_msrs`, writes to MSRs it lacks are dropped
/// without #GP, so only a read-back tells.
///
/// # Safety
/// Writing `probe` (and the old value back) must be harmless to the kernel.
pub unsafe fn writable(msr: u32, probe: u64) -> bool {
    let Some(old) = rdmsr(msr) else {
        return false;
    };
    // SAFETY: the caller vouches for `probe`; `old` was the MSR's value.
    let ok = unsafe { wrmsr(msr, probe) } && rdmsr(msr) == Some(probe);
    // SAFETY: as above.
    unsafe { wrmsr(msr, old) };
    ok
}
