//! EPT01 shootdowns: after L0 narrows or re-types a mapping of EPT01 (an
//! MTRR write, a moved xAPIC page), no CPU runs guest code on translations
//! cached from the old tables.
//!
//! EPT01 is one set of tables for every CPU, but INVEPT flushes only the
//! processor that executes it (SDM 29.4.3.1, 31.3 "INVEPT"), and the EPT02s
//! built from EPT01 (`nested::ept02`) hold copies of its old leaves. So:
//!
//! 1. The changing CPU has written the tables (under EPT01's lock) and
//!    calls [`ept01_changed`], which bumps [`VERSION`] (and, for a changed
//!    mapping, the EPT02 generation: see [`Ept01Change`]), flushes this
//!    CPU and kicks every other running vCPU with
//!    an NMI (`guest_smp::kick`: an NMI exit in VMX non-root, the host NMI
//!    handler in VMX root; a CPU waiting for SIPI runs no guest code and
//!    catches up when it leaves that state).
//! 2. Every CPU, before every VM entry ([`catch_up`], from
//!    `events::before_entry`), compares its [`FLUSHED`] version with
//!    [`VERSION`]: if behind, it flushes every EPT-derived translation
//!    (INVEPT all-context: EPT01's and its EPT02s'), gives VMCS02 a fresh
//!    EPT02 root if L2 is running, then publishes the version it flushed.
//! 3. The changing CPU waits (bounded) until every kicked CPU has
//!    published a version at least its own, catching up itself while it
//!    waits, so that two CPUs changing EPT01 at once wait for each other
//!    without deadlock.
//!
//! Changes that only widen a mapping (an unclaimed page mapped) need no
//! shootdown: a CPU that cached the old, narrower translation takes a
//! spurious EPT violation, which re-walks (`exits::ept_violation`).

use core::sync::atomic::{AtomicU64, Ordering};

use shared::percpu::MAX_CPUS;
use shared::vmx::VmcsAccess;
use shared::vmx::insn::{self, InveptDescriptor, InveptType};

use crate::vcpu::Vcpu;

/// How long the changing CPU waits for the others, in microseconds.
const ACK_TIMEOUT_US: u32 = 100_000;
/// The poll interval of that wait.
const POLL_US: u32 = 10;

/// EPT01's version: bumped by every narrowing change.
static VERSION: AtomicU64 = AtomicU64::new(0);
/// The version each CPU last flushed.
static FLUSHED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// What changed in EPT01.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ept01Change {
    /// Memory types only (an MTRR write): translations and rights are
    /// the same, so the EPT02s built from EPT01 stay right (their types
    /// are EPT12's, `shared::ept::nested`); only the TLBs hold old types.
    Types,
    /// A mapping narrowed or moved (the trapped xAPIC page): EPT02
    /// leaves copied from it are wrong, and every EPT02 is dropped.
    Mappings,
}

/// EPT01's tables have been changed by CPU `index` (see the module
/// comment): shoots the old translations down on every CPU.
pub fn ept01_changed(index: usize, change: Ept01Change) {
    let version = VERSION.fetch_add(1, Ordering::AcqRel) + 1;
    if change == Ept01Change::Mappings {
        crate::nested::ept02::ept01_changed();
    }
    flush_this_cpu(index);
    let mut waiting = [false; MAX_CPUS];
    for (i, w) in waiting.iter_mut().enumerate() {
        if i != index && crate::guest_smp::runs_guest_code(i) && flushed(i) < version {
            *w = crate::guest_smp::kick(i);
        }
    }
    let mut waited = 0;
    while waited < ACK_TIMEOUT_US {
        flush_this_cpu(index);
        let pending = waiting
            .iter()
            .enumerate()
            .any(|(i, &w)| w && flushed(i) < version && crate::guest_smp::runs_guest_code(i));
        if !pending {
            return;
        }
        shared::delay::udelay(POLL_US);
        waited += POLL_US;
    }
    shared::cpu_println!("L0: EPT01 shootdown {version}: not every CPU flushed in time");
}

/// Before VM entry on CPU `vcpu`: flushes translations older than EPT01's
/// version, and re-roots a running L2's EPT02.
pub fn catch_up(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) {
    if flushed(vcpu.index) < VERSION.load(Ordering::Acquire) {
        flush_this_cpu(vcpu.index);
    }
    crate::nested::ept02::catch_up(vcpu, v);
}

fn flushed(index: usize) -> u64 {
    FLUSHED
        .get(index)
        .map_or(u64::MAX, |f| f.load(Ordering::Acquire))
}

/// Flushes every EPT-derived translation of this CPU and publishes the
/// version that covers.
fn flush_this_cpu(index: usize) {
    let Some(f) = FLUSHED.get(index) else { return };
    // Read before the flush: a change made during it bumps the version
    // again, and this CPU flushes again at its next entry.
    let version = VERSION.load(Ordering::Acquire);
    if f.load(Ordering::Acquire) >= version {
        return;
    }
    let d = InveptDescriptor {
        eptp: 0,
        reserved: 0,
    };
    // SAFETY: called in VMX root operation (exit handlers and the code
    // before VM entry). INVEPT only drops cached translations; the
    // all-context type ignores the descriptor's EPTP.
    if unsafe { insn::invept(InveptType::AllContext, &d) }.is_err() {
        crate::ept01::invept_all();
    }
    f.store(version, Ordering::Release);
}
