//! Single-stepping one guest instruction: L0 sets RFLAGS.TF and intercepts
//! #DB; the #DB VM exit after the instruction ends the step (the
//! EPT-violation instruction length is undefined, SDM 28.2.5, and Bochs
//! has no monitor trap flag). Used to drop writes to L0's region (the sink
//! page) and to capture an xAPIC write L0 cannot decode (this CPU's private
//! view of the page names its scratch page; after the #DB L0 performs what
//! the instruction wrote there, see `apic_write::perform_captured`).
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

use shared::apic_capture;
use shared::percpu::MAX_CPUS;
use shared::vmx::controls::PinBased;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::vector;
use crate::vcpu::{Resume, SingleStep, StepFrom, StepKind, Vcpu};

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
        StepKind::ApicWrite { gpa, .. } => open_apic_step(vcpu.index, gpa),
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
    let captured = match step.kind {
        StepKind::ApicWrite { gpa, from } => Some((gpa, from)),
        StepKind::Ept02Access {
            gpa1,
            apic: Some(from),
            ..
        } => Some((gpa1, from)),
        _ => None,
    };
    let completed = captured.is_some_and(|(_, from)| completed(v) && step_from(vcpu, v) != from);
    undo(vcpu, step.kind);
    restore_controls(vcpu.index, v, vcpu.nested.in_l2());
    // The step's trap has been taken (as the #DB exit).
    v.clear_bits(F::GuestPendingDebugExceptions, PENDING_DEBUG_BS);
    if !step.guest_tf {
        v.clear_bits(F::GuestRflags, RFLAGS_TF);
    }
    if let Some((gpa, _)) = captured {
        let mut scratch = [0u8; apic_capture::PAGE_BYTES];
        if completed && crate::ept01::read_apic_scratch(vcpu.index, &mut scratch) {
            super::apic_write::perform_captured(vcpu, v, gpa, &scratch);
        }
    }
    Some(step.guest_tf)
}

/// Where the guest stands now, to tell whether the stepped instruction
/// completed (see [`StepFrom`]).
pub fn step_from(vcpu: &Vcpu, v: &impl VmcsAccess) -> StepFrom {
    StepFrom {
        rip: v.read(F::GuestRip),
        rsp: v.read(F::GuestRsp),
        rcx: vcpu.regs.gpr[crate::vcpu::reg::RCX],
    }
}

/// Whether this exit is a single-step #DB (DR6.BS in the qualification,
/// SDM 28.2.1). Every other exit that ends a step (a fault, an interrupt,
/// another EPT violation) comes before the instruction completed, which
/// then wrote nothing. A #DB with BS may also come before it: the BS bit
/// L0 sets in the pending debug exceptions under blocking by STI (SDM
/// 27.3.1.5) is delivered right after VM entry (SDM 27.7.3), so the caller
/// also asks for the instruction's progress.
fn completed(v: &impl VmcsAccess) -> bool {
    use shared::vmx::exit::{ExitReasonField, InterruptionInfo, InterruptionType};
    const QUAL_BS: u64 = 1 << 14;
    let reason = ExitReasonField(v.read32(F::VmExitReason));
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    reason.basic() == shared::vmx::ExitReason::ExceptionOrNmi
        && info.kind() == Some(InterruptionType::HardwareException)
        && info.vector() == vector::DB
        && v.read(F::ExitQualification) & QUAL_BS != 0
}

/// The value the scratch page holds at the register a write to the xAPIC
/// page at `gpa` goes to: the register's own (for a read-modify-write
/// instruction; the EOI register is write-only and reads 0).
pub fn apic_scratch_value(gpa: u64) -> u32 {
    const EOI: u64 = 0xb0;
    let reg = (gpa & !0xfff) | apic_capture::register_of(gpa & 0xfff);
    if reg & 0xfff == EOI {
        0
    } else {
        crate::lapic::mmio_read(reg)
    }
}

/// Starts capturing an xAPIC write at `gpa`: this CPU's view of the page
/// names its scratch page, which holds the register's value.
fn open_apic_step(cpu: usize, gpa: u64) {
    if !crate::ept01::open_apic_step(cpu, gpa, apic_scratch_value(gpa)) {
        shared::cpu_println!(
            "APIC write step at {gpa:#x}: no private EPT view; the write is retried"
        );
    }
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
        // `finish` reads the scratch page if the instruction completed.
        StepKind::ApicWrite { .. } => crate::ept01::close_apic_step(),
        StepKind::Ept02Access { root, gpa2, .. } => {
            crate::nested::ept02::end_write_step(vcpu, root, gpa2)
        }
    }
}
