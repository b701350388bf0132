//! Talking to L0 from LHV when LHV is L1 under it: whether L0 is there
//! (its CPUID signature, [`lhv::bench_figures::is_l0_signature`]) and its
//! Stats hypercall. A VMCALL is a VMX instruction in VMX root operation,
//! which fails on bare hardware, so Stats is only called when the
//! signature says L0 is present; in VMX non-root operation (under L0)
//! VMCALL always exits to L0.

use lhv::bench_figures::{L0_CPUID_LEAF, is_l0_signature};
use shared::hypercall::{self, Hypercall, NestedEptStats, StatsKind};
use shared::vmx::insn::{self, VmcallRegs};
use shared::x86;

use crate::assert::fail;

static PRESENT: spin::Once<bool> = spin::Once::new();

/// Whether LHV runs under L0 (CPUID leaf 0x40000000 says `L0LateLaunch`),
/// asked once (CPUID exits to L0: later calls cost nothing).
pub fn present() -> bool {
    *PRESENT.call_once(|| {
        let r = x86::cpuid(L0_CPUID_LEAF, 0);
        is_l0_signature(r.ebx, r.ecx, r.edx)
    })
}

/// The VM exits L0 has handled on this CPU (Stats, RBX), or `None` without
/// L0. Any answer but OK is a failed check.
pub fn exits() -> Option<u64> {
    stats().map(|r| r.rbx)
}

/// L0's Stats registers, or `None` without L0.
fn stats() -> Option<VmcallRegs> {
    if !present() {
        return None;
    }
    let mut regs = VmcallRegs {
        rax: Hypercall::Stats.rax(),
        ..VmcallRegs::default()
    };
    // SAFETY: L0 is present (its signature), so VMCALL exits to it; Stats
    // only returns values in registers.
    let r = unsafe { insn::vmcall(&mut regs) };
    if r.is_err() || regs.rax != hypercall::OK {
        fail(
            format_args!("L0 Stats hypercall from L1"),
            format_args!("RAX = OK"),
            format_args!("RAX {:#x}, {r:?}", regs.rax),
        );
    }
    Some(regs)
}

/// The 4-KiB frames L0 has free (Stats, RDI: its pool and the EPT02 free
/// list), or `None` without L0.
pub fn pool_free() -> Option<u64> {
    stats().map(|r| r.rdi)
}

/// This CPU's nested-EPT counters from L0 (Stats sub-function
/// [`StatsKind::NestedEpt`]), or `None` without L0. Any answer but OK is a
/// failed check.
pub fn nested_ept() -> Option<NestedEptStats> {
    if !present() {
        return None;
    }
    let mut regs = VmcallRegs {
        rax: Hypercall::Stats.rax(),
        rbx: StatsKind::NestedEpt as u64,
        ..VmcallRegs::default()
    };
    // SAFETY: L0 is present (its signature), so VMCALL exits to it; Stats
    // only returns values in registers.
    let r = unsafe { insn::vmcall(&mut regs) };
    if r.is_err() || regs.rax != hypercall::OK {
        fail(
            format_args!("L0 Stats (nested EPT) hypercall from L1"),
            format_args!("RAX = OK"),
            format_args!("RAX {:#x}, {r:?}", regs.rax),
        );
    }
    Some(NestedEptStats::from_regs([
        regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi,
    ]))
}

/// Asks L0 to print this CPU's VMCS01 and L0's copy of LHV's current VMCS
/// (VMCS12) in the `vmcs-diff` form; false without L0 or if L0 refused.
pub fn dump_vmcs() -> bool {
    if !present() {
        return false;
    }
    let mut regs = VmcallRegs {
        rax: Hypercall::DumpVmcs.rax(),
        ..VmcallRegs::default()
    };
    // SAFETY: L0 is present, so VMCALL exits to it; the dump only prints.
    let r = unsafe { insn::vmcall(&mut regs) };
    r.is_ok() && regs.rax == hypercall::OK
}
