//! SDM 27.2.1.2 "VM-Exit Control Fields" and 27.2.1.3 "VM-Entry Control
//! Fields": MSR-area addresses and event injection. Every failure is
//! VMfailValid(7).

use lhv::negative_cases::{Outcome, Skip, zero_length_injection};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::{EntryControls, ExitControls, PinBased};

use super::msr_load::area_pa;
use super::{Case, Env, Group};

/// VM-entry interruption-information field (SDM 25.8.3, Table 25-17).
mod info {
    pub const VALID: u64 = 1 << 31;
    pub const DELIVER_ERROR_CODE: u64 = 1 << 11;
    pub const EXTERNAL_INTERRUPT: u64 = 0 << 8;
    pub const RESERVED_TYPE_1: u64 = 1 << 8;
    pub const NMI: u64 = 2 << 8;
    pub const HARDWARE_EXCEPTION: u64 = 3 << 8;
    pub const SOFTWARE_INTERRUPT: u64 = 4 << 8;
}

/// The vector a software interrupt is injected with (no LHV handler: an
/// entry that delivers it counts a spurious interrupt and returns).
const SOFT_VECTOR: u64 = 0x90;

fn exit_msr_store_unaligned(e: &mut Env) {
    e.write(F::VmExitMsrStoreCount, 1);
    e.write(F::VmExitMsrStoreAddress, area_pa() + 8);
}

fn exit_msr_load_beyond_width(e: &mut Env) {
    e.write(F::VmExitMsrLoadCount, 1);
    let far = lhv::negative_cases::beyond_phys_width(e.max_phys);
    e.write(F::VmExitMsrLoadAddress, far);
}

fn save_preemption_timer_without_timer(e: &mut Env) {
    e.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::ACTIVATE_PREEMPTION_TIMER.bits().into(),
    );
    e.set_bits(
        F::VmExitControls,
        ExitControls::SAVE_PREEMPTION_TIMER_VALUE.bits().into(),
    );
}

fn save_timer_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.allows(
        F::VmExitControls,
        ExitControls::SAVE_PREEMPTION_TIMER_VALUE.bits(),
    ) {
        Ok(Outcome::CONTROLS)
    } else {
        Err(Skip::Unsupported("no save-preemption-timer exit control"))
    }
}

pub const EXIT_GROUP: Group = Group {
    section: "27.2.1.2 VM-exit control fields",
    cases: &[
        Case::launch(
            "exit-msr-store-unaligned",
            exit_msr_store_unaligned,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "exit-msr-load-beyond-width",
            exit_msr_load_beyond_width,
            Outcome::CONTROLS,
        ),
        Case::launch_if(
            "save-preemption-timer-without-timer",
            save_preemption_timer_without_timer,
            save_timer_rule,
        ),
    ],
};

fn inject(e: &mut Env, info: u64) {
    e.write(F::VmEntryInterruptionInfo, info | info::VALID);
}

fn inject_reserved_type(e: &mut Env) {
    inject(e, info::RESERVED_TYPE_1 | 0x20);
}

fn inject_nmi_vector_3(e: &mut Env) {
    inject(e, info::NMI | 3);
}

fn inject_reserved_bits(e: &mut Env) {
    // #UD with bit 12 (of reserved bits 30:12) set.
    inject(e, info::HARDWARE_EXCEPTION | 6 | (1 << 12));
}

fn inject_error_code_for_ud(e: &mut Env) {
    // #UD delivers no error code (SDM 27.2.1.3).
    inject(e, info::HARDWARE_EXCEPTION | 6 | info::DELIVER_ERROR_CODE);
}

fn inject_error_code_bits_31_16(e: &mut Env) {
    // #GP with an error code whose bits 31:16 are not 0 (SDM 27.2.1.3).
    inject(e, info::HARDWARE_EXCEPTION | 13 | info::DELIVER_ERROR_CODE);
    e.write(F::VmEntryExceptionErrorCode, 0x1_0000);
}

fn inject_external_vector_ok_but_length_16(e: &mut Env) {
    inject(e, info::SOFTWARE_INTERRUPT | SOFT_VECTOR);
    e.write(F::VmEntryInstructionLength, 16);
}

fn inject_soft_int_length_0(e: &mut Env) {
    inject(e, info::SOFTWARE_INTERRUPT | SOFT_VECTOR);
    e.write(F::VmEntryInstructionLength, 0);
}

fn zero_length_rule(e: &Env) -> Result<Outcome, Skip> {
    Ok(zero_length_injection(e.caps.misc.inject_zero_length))
}

fn inject_external_interrupt_with_if_0(e: &mut Env) {
    // Guest RFLAGS.IF = 0 (the base state): SDM 27.3.1.5 wants IF = 1 for
    // an injected external interrupt: invalid guest state.
    inject(e, info::EXTERNAL_INTERRUPT | 0x30);
}

fn deactivate_dual_monitor_outside_smm(e: &mut Env) {
    e.set_bits(
        F::VmEntryControls,
        EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT
            .bits()
            .into(),
    );
}

fn dual_monitor_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.allows(
        F::VmEntryControls,
        EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT.bits(),
    ) {
        Ok(Outcome::CONTROLS)
    } else {
        Err(Skip::Unsupported(
            "no deactivate-dual-monitor entry control",
        ))
    }
}

fn entry_msr_load_unaligned(e: &mut Env) {
    e.write(F::VmEntryMsrLoadCount, 1);
    e.write(F::VmEntryMsrLoadAddress, area_pa() + 8);
}

pub const GROUP: Group = Group {
    section: "27.2.1.3 VM-entry control fields",
    cases: &[
        Case::launch(
            "inject-reserved-type",
            inject_reserved_type,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "inject-nmi-vector-not-2",
            inject_nmi_vector_3,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "inject-bits-30-12-set",
            inject_reserved_bits,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "inject-error-code-for-ud",
            inject_error_code_for_ud,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "inject-error-code-bits-31-16",
            inject_error_code_bits_31_16,
            Outcome::CONTROLS,
        ),
        Case::launch(
            "inject-soft-int-length-16",
            inject_external_vector_ok_but_length_16,
            Outcome::CONTROLS,
        ),
        Case::launch_if(
            "inject-soft-int-length-0",
            inject_soft_int_length_0,
            zero_length_rule,
        ),
        Case::launch(
            "inject-external-interrupt-if-0",
            inject_external_interrupt_with_if_0,
            Outcome::guest_state(0),
        ),
        Case::launch_if(
            "deactivate-dual-monitor-outside-smm",
            deactivate_dual_monitor_outside_smm,
            dual_monitor_rule,
        ),
        Case::launch(
            "entry-msr-load-unaligned",
            entry_msr_load_unaligned,
            Outcome::CONTROLS,
        ),
    ],
};
