//! Single-stepping one guest instruction: L0 sets RFLAGS.TF and intercepts
//! #DB; the #DB VM exit after the instruction ends the step (the
//! EPT-violation instruction length is undefined, SDM 28.2.5, and Bochs
//! has no monitor trap flag). Used to drop writes to L0's region (the sink
//! page) and to let an xAPIC write L0 cannot decode pass through.
//!
//! A step must end even when its instruction never completes: while it
//! is in progress every exception and every external interrupt exits
//! (exception bitmap all ones, external-interrupt exiting), so that the
//! first event that would run guest code other than the instruction ends
//! the step (closing the sink or APIC page, clearing L0's TF) before the
//! guest sees it; `exception` reflects the exception, an external
//! interrupt stays pending in the local APIC (no acknowledge on exit) and
//! is taken at the next VM entry. The instruction runs again later.

use core::sync::atomic::{AtomicU64, Ordering};

use shared::percpu::MAX_CPUS;
use shared::vmx::controls::PinBased;
use shared::vmx::{VmcsAccess, VmcsField as F};

use crate::vcpu::{Resume, SingleStep, StepKind, Vcpu};

/// RFLAGS.TF.
pub const RFLAGS_TF: u64 = 1 << 8;

/// Each CPU's exception bitmap and pin-based controls from before its
/// step (low and high half), restored when the step ends.
static SAVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Starts stepping for `kind` (ending any step in progress first).
pub fn start(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, kind: StepKind) {
    let guest_tf = match vcpu.step.take() {
        // The previous step never completed (its instruction faulted
        // again): keep the guest's own TF from before it.
        Some(prev) => {
            undo(vcpu, prev.kind);
            prev.guest_tf
        }
        None => {
            save_controls(vcpu.index, v);
            v.read(F::GuestRflags) & RFLAGS_TF != 0
        }
    };
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::open_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(true),
        // `nested::ept02` has installed the writable EPT02 entry.
        StepKind::Ept02Access { .. } => {}
    }
    vcpu.step = Some(SingleStep { kind, guest_tf });
    v.set_bits(F::GuestRflags, RFLAGS_TF);
    v.write(F::ExceptionBitmap, u64::from(u32::MAX));
    if external_interrupt_exiting_allowed() {
        v.set_bits(
            F::PinBasedVmExecControls,
            u64::from(PinBased::EXTERNAL_INTERRUPT_EXITING.bits()),
        );
    }
    set_pending_bs_if_blocked(v);
}

fn external_interrupt_exiting_allowed() -> bool {
    let ext = PinBased::EXTERNAL_INTERRUPT_EXITING.bits();
    crate::caps().pin.effective().require(ext).is_ok()
}

fn save_controls(cpu: usize, v: &impl VmcsAccess) {
    let saved =
        v.read(F::ExceptionBitmap) & 0xffff_ffff | (v.read(F::PinBasedVmExecControls) << 32);
    if let Some(s) = SAVED.get(cpu) {
        s.store(saved, Ordering::Relaxed);
    }
}

/// The controls as they were before the step. VMCS01 never intercepts #DB
/// outside a step; VMCS02's exception bitmap is L1's, which may (a guest
/// hypervisor single-stepping L2, as L0 does), so there #DB stays
/// intercepted if it was.
fn restore_controls(cpu: usize, v: &mut impl VmcsAccess, in_l2: bool) {
    let saved = SAVED.get(cpu).map_or(0, |s| s.load(Ordering::Relaxed));
    let db = if in_l2 { 0 } else { 1 << super::vector::DB };
    v.write(F::ExceptionBitmap, saved & 0xffff_ffff & !db);
    v.write(F::PinBasedVmExecControls, saved >> 32);
}

/// Pending debug exceptions: BS (a single-step trap is pending).
const PENDING_DEBUG_BS: u64 = 1 << 14;
/// Interruptibility state: blocking by STI (bit 0) or by MOV SS (bit 1).
const BLOCKING_STI_MOVSS: u64 = 0b11;

/// With TF set and blocking by STI or MOV SS, VM entry requires the BS
/// bit of the pending debug exceptions (SDM 27.3.1.5: "bit 14 (BS) must
/// be 1 if the TF flag is 1 ... and blocking by STI or MOV SS is
/// indicated"); the processor would have recorded the pending trap the
/// same way. Without it, a guest's `sti; <write to L0's region>` would
/// fail the next VM entry.
fn set_pending_bs_if_blocked(v: &mut impl VmcsAccess) {
    if v.read(F::GuestInterruptibilityState) & BLOCKING_STI_MOVSS != 0
        && v.read(F::GuestRflags) & RFLAGS_TF != 0
    {
        v.set_bits(F::GuestPendingDebugExceptions, PENDING_DEBUG_BS);
    }
}

/// Ends the step in progress, if any; returns the guest's own TF then.
pub fn finish(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<bool> {
    let step = vcpu.step.take()?;
    undo(vcpu, step.kind);
    restore_controls(vcpu.index, v, vcpu.nested.in_l2());
    // The step's trap has been taken (as the #DB exit).
    v.clear_bits(F::GuestPendingDebugExceptions, PENDING_DEBUG_BS);
    if !step.guest_tf {
        v.clear_bits(F::GuestRflags, RFLAGS_TF);
    }
    Some(step.guest_tf)
}

/// An external-interrupt exit (exit reason 1): only while a step is in
/// progress. The step ends; the interrupt, still pending in the local
/// APIC, is delivered to the guest at the next VM entry.
pub fn interrupted(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<Resume> {
    if finish(vcpu, v).is_none() {
        // Not stepping (a stale control): stop intercepting.
        v.clear_bits(
            F::PinBasedVmExecControls,
            u64::from(PinBased::EXTERNAL_INTERRUPT_EXITING.bits()),
        );
    }
    Some(Resume::Guest)
}

fn undo(vcpu: &mut Vcpu, kind: StepKind) {
    match kind {
        StepKind::HiddenWrite { gpa } => crate::ept01::close_sink(gpa),
        StepKind::ApicWrite => crate::ept01::open_apic_page(false),
        StepKind::Ept02Access { root, gpa2, .. } => {
            crate::nested::ept02::end_write_step(vcpu, root, gpa2)
        }
    }
}
