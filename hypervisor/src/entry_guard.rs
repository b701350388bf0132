//! L0's own VM entries, checked in software: before VMCS01 is entered, its
//! guest state passes the checks of SDM 27.3.1 (the checker of nested VM
//! entries, `shared::vmx::nested::entry_checks`, with the processor's
//! capabilities), so that an emulation bug in L0 shows as the rule it
//! breaks, with a VMCS dump, instead of a bare VM-entry failure or a CPU
//! that stops without a word.
//!
//! What is checked (`entry_check=` on L0's command line):
//! - `dirty` (default in release builds): what the exit handler's writes can break, as the
//!   typed writer records it (`GuardedVmcs::written`): nothing, the RIP /
//!   RFLAGS / interruptibility / pending-debug / injection checks
//!   (`check_guest_events`), or every guest-state check; every check on
//!   the first entry, after INIT or SIPI and whenever L1 comes back from
//!   L2 (VMCS01's guest state then holds VMCS12's host state);
//! - `all` (default in debug builds): every guest-state check before every
//!   entry of VMCS01;
//! - `off`: none (the processor's own checks only).
//!
//! A failure prints `L0: VMCS01 guest state fails <rule> (SDM 27.3.1.x)`,
//! dumps the VMCS and stops this CPU, as L0's other fatal errors do.

use core::sync::atomic::{AtomicU8, Ordering};

use shared::vmx::insn::GuardedVmcs;
use shared::vmx::nested::entry_checks::{self, CheckCtx, GuestScope};

use crate::memory::HostMemory;
use crate::vcpu::{Resume, Vcpu};

/// How much L0 checks (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Policy {
    Off = 0,
    Dirty = 1,
    All = 2,
}

static POLICY: AtomicU8 = AtomicU8::new(Policy::Dirty as u8);
/// The processor's physical-address width, read once.
static MAXPHYADDR: AtomicU8 = AtomicU8::new(0);

/// Reads `entry_check=off|dirty|all` from L0's command line.
pub fn configure(cmdline: &str) -> Policy {
    let policy = match shared::cmdline::get(cmdline, "entry_check") {
        Some("all") => Policy::All,
        Some("off") => Policy::Off,
        Some("dirty") => Policy::Dirty,
        // A debug build checks everything by default.
        _ if cfg!(debug_assertions) => Policy::All,
        _ => Policy::Dirty,
    };
    POLICY.store(policy as u8, Ordering::Relaxed);
    MAXPHYADDR.store(crate::ept01::max_phys_addr(), Ordering::Relaxed);
    policy
}

fn policy() -> Policy {
    match POLICY.load(Ordering::Relaxed) {
        0 => Policy::Off,
        2 => Policy::All,
        _ => Policy::Dirty,
    }
}

/// Checks VMCS01 (current) before VM entry; `scope` is what changed since
/// the last check. `Resume::Stop` (reported, VMCS dumped) on a failure.
pub fn check(vcpu: &Vcpu, v: &GuardedVmcs<'_>, scope: GuestScope) -> Resume {
    let scope = match policy() {
        Policy::Off => return Resume::Guest,
        Policy::All => GuestScope::All,
        Policy::Dirty => scope,
    };
    let caps = crate::caps();
    let ctx = CheckCtx {
        current_vmcs: Some(vcpu.vmcs_phys),
        // VMCS01 is checked as the processor checks it, against physical
        // memory: its VMCS link pointer names L0's own shadow VMCS
        // (`nested::shadow`), which the guest's view does not contain.
        ..CheckCtx::new(
            caps,
            &HostMemory,
            MAXPHYADDR.load(Ordering::Relaxed),
            caps.basic.revision_id,
        )
    };
    let r = match scope {
        GuestScope::None => return Resume::Guest,
        GuestScope::Events => entry_checks::check_guest_events(v, &ctx),
        GuestScope::All => entry_checks::check_guest_state(v, &ctx),
    };
    let Err(e) = r else {
        return Resume::Guest;
    };
    crate::dump::vmcs(v, vcpu);
    let (section, rule) = e.rule();
    shared::cpu_println!("L0: VMCS01 guest state fails {rule} (SDM {section})");
    Resume::Stop
}
