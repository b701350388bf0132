//! Exits of L2 (VMCS02 current). One question first: is the exit L0's own
//! (an NMI, EPT01, L0's single step, L0's NMI window)? If not, does L1 want
//! it (`shared::vmx::nested::reflect`, a pure function of the exit and
//! VMCS12)? If yes it is reflected: VMCS02 synced into VMCS12 (SDM 28.2,
//! 28.3), the VM-exit MSR-store area, VMCS01 made current with L1's host
//! state (28.5) and the VM-exit MSR-load area (28.6). Otherwise L0 emulates
//! what the processor would have done for L2.
//!
//! Events L0 holds for the virtual CPU go the same way before every entry
//! ([`pending_events`]): an NMI while L2 runs is an NMI exit to L1 when L1
//! has "NMI exiting", an INIT an INIT-signal exit (SDM 26.2).

use shared::exit_profile::Phase;
use shared::nmi_inject::BLOCKING_BY_NMI;
use shared::vmx::controls::{PinBased, PrimaryProcBased, SecondaryProcBased};
use shared::vmx::exit::{InterruptionInfo, InterruptionType};
use shared::vmx::insn as hw;
use shared::vmx::nested::reflect::{self, L2Exit};
use shared::vmx::nested::vmcs02::{self, Controls12, ExitInfo};
use shared::vmx::{ExitReason, VmcsAccess, VmcsField as F};

use super::entry::ENTRY_FAILURE;
use super::{OnVmcs01, OnVmcs02};
use crate::exits::{Exit, inject_gp};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu};
use crate::vmcs01;

/// VMX-abort indicators (SDM 28.7).
const ABORT_SAVING_GUEST_MSRS: u32 = 1;
const ABORT_LOADING_HOST_MSRS: u32 = 4;
/// The activity state "shutdown" (SDM 25.4.2).
pub(super) const ACTIVITY_SHUTDOWN: u64 = 2;

/// Handles one exit of L2. `v` is VMCS02 (current); on return the current
/// VMCS is whichever the CPU enters next (VMCS01 after a reflection).
pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) -> Option<Resume> {
    crate::exit_profile::phase_start(&mut vcpu.phases);
    let on = vcpu.nested.on_vmcs02()?;
    let slot = on.slot();
    let exit = Exit::read(v);
    if exit.reason.is_entry_failure() {
        // The processor refused VMCS02: L0's checks missed something.
        // L1 gets the processor's answer; the log gets the evidence (the
        // dumps first: a log reader that stops at the summary has them).
        super::dump::vmcs12(vcpu);
        super::dump::current("02");
        shared::cpu_println!(
            "nested: VMCS02 entry failed (reason {}, qualification {:#x}); VMCS12 and VMCS02 above",
            exit.reason,
            exit.qualification
        );
        let on = switch_to_vmcs01(vcpu, v, on);
        let info = ExitInfo::synthetic(exit.reason.0, exit.qualification);
        vmcs02::write_exit_info(&mut vcpu.nested.store.vmcs12[slot], &info);
        load_l1(vcpu, v, &on, false);
        return Some(Resume::Guest);
    }
    vcpu.nested.cache.meta_mut(slot).vmcs02_launched = true;

    if let Some(r) = l0_exit(vcpu, v, &exit) {
        return Some(r);
    }
    // Not L0's: still on VMCS02 (an L0 exit that reflected returned above).
    let on = vcpu.nested.on_vmcs02()?;
    // L0's INT 15h stub is firmware to L1, whichever level runs it.
    if exit.reason.basic() == ExitReason::Vmcall
        && let Some(r) = crate::exits::int15_l2(vcpu, v, &exit)
    {
        return Some(r);
    }
    let l2_exit = L2Exit {
        reason: exit.reason,
        qualification: exit.qualification,
        intr_info: InterruptionInfo(v.read32(F::VmExitInterruptionInfo)),
        intr_error_code: v.read32(F::VmExitInterruptionErrorCode),
        instruction_info: v.read32(F::VmExitInstructionInfo),
        gpr: core::array::from_fn(|i| vcpu.gpr(v, i)),
    };
    let wanted = reflect::l1_wants_exit(&l2_exit, &vcpu.nested.store.vmcs12[slot], &GuestMemory);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::ExitDecide);
    if wanted {
        let _ = reflect_exit(vcpu, v, on, ExitInfo::read(v));
        if exit.reason.basic() == ExitReason::StartupIpi {
            // L2 left wait-for-SIPI (L1 starts it): Bochs keeps physical
            // NMIs blocked after a SIPI exit, as for L0's own guest (see
            // `exits::init_sipi::sipi`).
            crate::events::unblock_host_nmis();
        }
        return Some(Resume::Guest);
    }
    // L1 does not want it: the exit exists for L0's own interceptions.
    crate::exits::reinject_vectored_event(v, &exit);
    match exit.reason.basic() {
        ExitReason::Rdmsr => crate::exits::rdmsr(vcpu, v, &exit),
        ExitReason::Wrmsr => crate::exits::wrmsr(vcpu, v, &exit),
        // VMCS02 adds the bits fixed in VMX operation to L1's CR masks: an
        // exit L1 does not want tried to change one of those, which is
        // #GP (SDM 24.8 "Restrictions on VMX Operation").
        ExitReason::ControlRegisterAccess => inject_gp(v),
        // Exits that ended one of L0's single steps: the exception goes to
        // L2 as raised; the interrupt stays pending in the local APIC (L1
        // does not acknowledge it on exit, or it would want the exit).
        ExitReason::ExceptionOrNmi => crate::exits::redeliver_exception(v, &exit),
        ExitReason::ExternalInterrupt => Some(Resume::Guest),
        _ => {
            // Nothing else exits only for L0; give L1 what it would get.
            let _ = reflect_exit(vcpu, v, on, ExitInfo::read(v));
            Some(Resume::Guest)
        }
    }
}

/// Exits that are L0's whatever L1 asked for.
fn l0_exit(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let c = Controls12::read(vcpu.nested.current_vmcs12()?);
    let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
    let is_exception = exit.reason.basic() == ExitReason::ExceptionOrNmi;
    let nmi = is_exception && info.kind() == Some(InterruptionType::Nmi);
    let step_db = is_exception
        && info.vector() == crate::exits::vector::DB
        && info.kind() == Some(InterruptionType::HardwareException);
    // NMIs are L0's to sort out: its kicks, or NMIs for the virtual CPU
    // (see `pending_events`); so is the #DB that ends one of L0's single
    // steps of L2.
    if nmi {
        crate::exits::reinject_vectored_event(v, exit);
        return crate::exits::exception(vcpu, v, exit);
    }
    if step_db && vcpu.step.is_some() {
        crate::exits::reinject_vectored_event(v, exit);
        return step_db_of_l2(vcpu, v, exit);
    }
    // Any other exit during L0's step ends the step first (VMCS02's
    // controls as they were), then is L1's or L0's as usual.
    if vcpu.step.is_some() {
        let _ = crate::exits::single_step_finish(vcpu, v);
    }
    match exit.reason.basic() {
        // L1 uses EPT: VMCS02 uses an EPT02 (see `ept02`).
        ExitReason::EptViolation | ExitReason::EptMisconfiguration
            if c.proc2(SecondaryProcBased::ENABLE_EPT) =>
        {
            let r = super::ept02::handle_exit(vcpu, v, exit);
            if vcpu.nested.in_l2() {
                no_step_trap_before_retry(v);
            }
            r
        }
        // L1 has no EPT: VMCS02 uses EPT01, whose faults are L0's.
        ExitReason::EptViolation | ExitReason::EptMisconfiguration => {
            crate::exits::reinject_vectored_event(v, exit);
            crate::exits::ept_violation(vcpu, v, exit)
        }
        ExitReason::NmiWindow if !c.proc(PrimaryProcBased::NMI_WINDOW_EXITING) => {
            Some(Resume::Guest)
        }
        _ => None,
    }
}

/// The #DB that ends L0's single step of L2. The step ends; if L2 would
/// have taken a #DB itself (its TF, which L1 may have set to step L2 as
/// L0 does, or its breakpoints), that #DB is L1's when L1 intercepts #DB
/// (its exception bitmap, SDM 25.2), with the causes as the exit
/// qualification (SDM 28.2.1, Table 28-1), and L2's otherwise.
fn step_db_of_l2(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let guest_tf = crate::exits::single_step_finish(vcpu, v)?;
    let Some(bits) = shared::debug_trap::reflect(exit.qualification, guest_tf) else {
        return Some(Resume::Guest);
    };
    let l2_exit = L2Exit {
        reason: exit.reason,
        qualification: bits,
        intr_info: InterruptionInfo(v.read32(F::VmExitInterruptionInfo)),
        intr_error_code: 0,
        instruction_info: 0,
        gpr: core::array::from_fn(|i| vcpu.gpr(v, i)),
    };
    let vmcs12 = vcpu.nested.current_vmcs12()?;
    if reflect::l1_wants_exit(&l2_exit, vmcs12, &GuestMemory) {
        let info = ExitInfo {
            qualification: bits,
            ..ExitInfo::read(v)
        };
        let _ = reflect_exit(vcpu, v, vcpu.nested.on_vmcs02()?, info);
    } else {
        crate::exits::deliver_db(v, bits);
    }
    Some(Resume::Guest)
}

/// L2 retries an instruction whose EPT02 fault L0 resolved: an EPT
/// violation is a fault, so no single-step trap of that instruction is
/// pending (`shared::debug_trap::pending_at_retry`; SDM 28.3.4 saves the
/// pending debug exceptions at the exit, 27.3.1.5). Bochs saves BS there
/// when the instruction started with RFLAGS.TF = 1 and would deliver that
/// #DB at the retry before the instruction runs: L1 stepping L2 over a
/// fault L0 resolves (a second L0 stepping its guest's xAPIC write) then
/// saw its step end without the instruction, and retried it for ever.
fn no_step_trap_before_retry(v: &mut impl VmcsAccess) {
    let pending = v.read(F::GuestPendingDebugExceptions);
    let at_retry =
        shared::debug_trap::pending_at_retry(pending, v.read32(F::GuestInterruptibilityState));
    if at_retry != pending {
        v.write(F::GuestPendingDebugExceptions, at_retry);
    }
}

/// Before every VM entry while L1 is in VMX operation: NMIs and INITs that
/// L1 intercepts become exits to it.
pub fn pending_events(vcpu: &mut Vcpu, v: &mut impl VmcsAccess) {
    let Some(on) = vcpu.nested.on_vmcs02() else {
        return;
    };
    let Some(vmcs12) = vcpu.nested.current_vmcs12() else {
        return;
    };
    let c = Controls12::read(vmcs12);
    if crate::guest_smp::take_init_request(vcpu.index) {
        // INIT in VMX non-root operation is a VM exit (SDM 26.2).
        reflect_event(
            vcpu,
            v,
            on,
            ExitInfo::synthetic(ExitReason::InitSignal.number(), 0),
        );
        return;
    }
    // A processor waiting for SIPI takes no NMI (SDM 26.2, 25.4.2: only
    // INIT and SIPI end wait-for-SIPI); the NMI stays pending until L1
    // runs again, as for L0's own guest (`shared::nmi_inject::decide`).
    let waiting_for_sipi =
        v.read32(F::GuestActivityState) == shared::nmi_inject::activity::WAIT_FOR_SIPI;
    if vcpu.nmis_pending > 0 && c.pin(PinBased::NMI_EXITING) && !waiting_for_sipi {
        let nmi = InterruptionInfo::new(2, InterruptionType::Nmi, false);
        let info = ExitInfo {
            intr_info: nmi.0,
            ..ExitInfo::synthetic(ExitReason::ExceptionOrNmi.number(), 0)
        };
        vcpu.nmis_pending -= 1;
        reflect_event(vcpu, v, on, info);
    }
}

/// Whether L1 asked for NMI-window exits of L2 (L0 must keep the control).
pub fn l1_nmi_window(vcpu: &Vcpu) -> bool {
    vcpu.nested.in_l2()
        && vcpu
            .nested
            .current_vmcs12()
            .is_some_and(|v| Controls12::read(v).proc(PrimaryProcBased::NMI_WINDOW_EXITING))
}

/// Reflects an exit L0 makes up for an event: an event VMCS02 was about to
/// deliver to L2 (L0's re-injection) is what L1 sees as IDT-vectoring
/// information, and is not delivered (SDM 28.2.4).
fn reflect_event(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, on: OnVmcs02, mut info: ExitInfo) {
    let pending = InterruptionInfo(v.read32(F::VmEntryInterruptionInfo));
    if pending.is_valid() {
        info.idt_vectoring_info = pending.0;
        info.idt_vectoring_error_code = v.read32(F::VmEntryExceptionErrorCode);
        info.instruction_len = v.read32(F::VmEntryInstructionLength);
        v.write(F::VmEntryInterruptionInfo, 0);
    }
    let _ = reflect_exit(vcpu, v, on, info);
}

/// Gives L1 the exit `info` of L2: VMCS02 current (`on`), VMCS01 current
/// after (the proof returned).
pub fn reflect_exit(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    on: OnVmcs02,
    info: ExitInfo,
) -> OnVmcs01 {
    let slot = on.slot();
    // L0's step of L2 ends before L2's state is saved (`end_l0_step`).
    end_l0_step(vcpu, v, &on);
    let nested = &mut vcpu.nested;
    let vmcs12 = &mut nested.store.vmcs12[slot];
    vmcs02::save_guest_state(v, vmcs12);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::ExitSaveGuest);
    // L2 never runs in SMM, where alone blocking by SMI may be set (SDM
    // 27.3.1.5); Bochs keeps the bit after wait-for-SIPI and saves it at
    // every exit of that CPU (see `events`). L1 must not inherit it.
    vmcs12.clear_bits(
        F::GuestInterruptibilityState,
        u64::from(shared::nmi_inject::BLOCKING_BY_SMI),
    );
    vmcs02::write_exit_info(vmcs12, &info);
    nested.reflected += 1;
    if nested.trace {
        shared::cpu_println!(
            "nested exit reason {:#x} qualification {:#x} L2 RIP {:#x} intr {:#x}",
            info.reason,
            info.qualification,
            v.read(F::GuestRip),
            info.intr_info
        );
    }
    let store_failed = super::msr_areas::exit_store(vcpu.index, vmcs12, v).is_err();
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::ExitInfo);
    let on = switch_to_vmcs01(vcpu, v, on);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::ExitLoadVmcs01);
    if store_failed {
        vmx_abort(vcpu, v, &on, ABORT_SAVING_GUEST_MSRS);
        return on;
    }
    let nmi = info.reason == ExitReason::ExceptionOrNmi.number()
        && InterruptionInfo(info.intr_info).kind() == Some(InterruptionType::Nmi);
    load_l1(vcpu, v, &on, nmi);
    crate::exit_profile::phase_end(&mut vcpu.phases, Phase::ExitLoadHost);
    on
}

/// The processor refused to enter VMCS02 (VMfail of VMLAUNCH/VMRESUME,
/// reported by the exit stub): L1 gets a VM-entry failure, as L0's checks
/// should have given it. False if L2 was not being entered.
pub fn entry_refused(vcpu: &mut Vcpu) -> bool {
    let Some(on) = vcpu.nested.on_vmcs02() else {
        return false;
    };
    let slot = on.slot();
    super::dump::vmcs12(vcpu);
    // SAFETY: the exit stub runs in VMX root operation; VMCS02 is current,
    // then VMCS01 after `switch_to_vmcs01`.
    let vmx = unsafe { hw::Vmxon::assume_enabled() };
    let mut v = vmx.guarded_vmcs();
    let on = switch_to_vmcs01(vcpu, &mut v, on);
    let info = ExitInfo::synthetic(
        ExitReason::EntryFailureGuestState.number() | ENTRY_FAILURE,
        0,
    );
    vmcs02::write_exit_info(&mut vcpu.nested.store.vmcs12[slot], &info);
    load_l1(vcpu, &mut v, &on, false);
    true
}

/// A single step of L2's that L0 has in progress (e.g. an NMI exit came
/// before its #DB, and the NMI is L1's) ends while VMCS02 is current: its
/// TF, pending BS, exception bitmap and writable EPT02 entry are L0's and
/// must reach neither VMCS12 nor VMCS01; and while a step is in progress
/// L0 injects no NMI (`events::before_entry`), so L1 would never get the
/// ones it is owed. An instruction that has not completed faults again
/// when L1 resumes L2, and is stepped again.
fn end_l0_step(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, _on: &OnVmcs02) {
    if vcpu.step.is_some() {
        let _ = crate::exits::single_step_finish(vcpu, v);
    }
}

/// Makes VMCS01 current again, L0's step of L2 ended first: the one way
/// from a VMCS02 back to VMCS01.
fn switch_to_vmcs01(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, on: OnVmcs02) -> OnVmcs01 {
    end_l0_step(vcpu, v, &on);
    // SAFETY: VMCS01 is this CPU's, set up by `vmcs01::setup`.
    if unsafe { hw::vmptrld(vcpu.vmcs_phys) }.is_err() {
        shared::cpu_println!("nested: VMPTRLD of VMCS01 failed");
    }
    vcpu.nested.now_on_vmcs01(on)
}

/// L1's side of a VM exit, VMCS01 current: host state from VMCS12
/// (SDM 28.5), the VM-exit MSR-load area (28.6); `nmi`: the exit was an
/// NMI, which leaves NMIs blocked (SDM 28.1 / 6.7.1).
pub fn load_l1(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, on: &OnVmcs01, nmi: bool) {
    let Some(slot) = vcpu.nested.current else {
        return;
    };
    let caps = super::l1_msrs().map(|m| m.caps()).unwrap_or(*crate::caps());
    let nested = &mut vcpu.nested;
    let vmcs12 = &nested.store.vmcs12[slot];
    vmcs02::load_host_state(vmcs12, nested.l1_cr0, nested.l1_cr4, &caps, v);
    let hw_caps = crate::caps();
    let cr0 = v.read(F::Cr0ReadShadow);
    let cr4 = v.read(F::Cr4ReadShadow);
    v.write(F::GuestCr0, vmcs01::cr0_real(hw_caps, cr0));
    v.write(F::GuestCr4, vmcs01::cr4_real(hw_caps, cr4));
    v.write(F::VmEntryInterruptionInfo, 0);
    if nmi {
        v.set_bits(F::GuestInterruptibilityState, u64::from(BLOCKING_BY_NMI));
    }
    let load = super::msr_areas::exit_load(vcpu.index, vmcs12, v);
    // Without VPID a VM exit flushes L1's linear mappings (SDM 29.4.3.1).
    let l1_vpid =
        Controls12::read(vmcs12).proc2(shared::vmx::controls::SecondaryProcBased::ENABLE_VPID);
    if !l1_vpid {
        super::entry::flush_vpid(vcpu.index as u16 + 1);
    }
    if load.is_err() {
        vmx_abort(vcpu, v, on, ABORT_LOADING_HOST_MSRS);
    }
    // L1 resumes where its host state says; the general registers are
    // L2's, as after a real VM exit.
}

/// A VMX abort (SDM 28.7): the indicator in VMCS12's region, and L1's CPU
/// shut down (L0 and the other CPUs carry on).
fn vmx_abort(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, _on: &OnVmcs01, indicator: u32) {
    use shared::mem::PhysMemory;
    shared::cpu_println!("nested: VMX abort {indicator}: L1's CPU shuts down");
    if let Some(addr) = vcpu.nested.current_vmcs12_addr() {
        let _ = GuestMemory.write_u32(addr + super::vmcs12::ABORT_OFFSET, indicator);
    }
    v.write(F::GuestActivityState, ACTIVITY_SHUTDOWN);
}
