//! Host tests of the VM-entry checks: the fixtures are accepted; breaking
//! one rule gives exactly the failure the SDM names; random VMCSs never make
//! the checker panic, and what it accepts obeys the rules.

use super::testing::*;
use super::*;
use crate::ept::MemoryType;
use crate::mem::SparseMemory;
use crate::vmx::MemVmcs;
use crate::vmx::caps::tests::bochs_caps;
use crate::vmx::exit::{InterruptionInfo, InterruptionType as T};
use proptest::prelude::*;

const ERR_CONTROLS: VmInstructionError = VmInstructionError::EntryInvalidControlFields;
const ERR_HOST: VmInstructionError = VmInstructionError::EntryInvalidHostStateFields;

/// Runs every check of `v` under `caps` and the fixture memory.
fn run(v: &MemVmcs, caps: &VmxCaps) -> Result<(), EntryFailure> {
    let mem = memory();
    check_all(v, &ctx(caps, &mem))
}

/// Asserts that `v` fails with VMfailValid `error`, by a rule whose
/// description contains `rule`.
#[track_caller]
fn assert_vmfail(v: &MemVmcs, caps: &VmxCaps, error: VmInstructionError, rule: &str) {
    match run(v, caps) {
        Err(EntryFailure::VmFail { error: e, check }) => {
            assert_eq!(e, error, "{check}");
            assert!(check.contains(rule), "expected {rule:?}, got {check:?}");
        }
        other => panic!("expected VMfailValid {error} ({rule}), got {other:?}"),
    }
}

/// Asserts that `v` fails guest-state checks with `qualification` by a rule
/// whose description contains `rule`.
#[track_caller]
fn assert_guest(v: &MemVmcs, caps: &VmxCaps, qualification: u64, rule: &str) {
    match run(v, caps) {
        Err(EntryFailure::InvalidGuestState {
            qualification: q,
            check,
        }) => {
            assert_eq!(q, qualification, "{check}");
            assert!(check.contains(rule), "expected {rule:?}, got {check:?}");
        }
        other => panic!("expected invalid guest state ({rule}), got {other:?}"),
    }
}

fn core() -> (VmxCaps, MemVmcs) {
    let caps = core_caps();
    let v = valid_vmcs12(&caps);
    (caps, v)
}

fn inject(v: &mut MemVmcs, vector: u8, kind: T, error_code: bool) {
    v.write(
        F::VmEntryInterruptionInfo,
        InterruptionInfo::new(vector, kind, error_code).0.into(),
    );
}

// ---- the fixtures ----

#[test]
fn fixtures_are_accepted() {
    let core = core_caps();
    let full = full_caps();
    assert_eq!(run(&valid_vmcs12(&core), &core), Ok(()));
    assert_eq!(run(&valid_vmcs12(&full), &full), Ok(()));
    assert_eq!(run(&pae_vmcs12(&core), &core), Ok(()));
    assert_eq!(run(&real_mode_vmcs12(&full), &full), Ok(()));
    // The hardware's own capabilities accept them too (L0 checking VMCS01).
    let hw = bochs_caps();
    assert_eq!(run(&valid_vmcs12(&core), &hw), Ok(()));
    assert_eq!(run(&real_mode_vmcs12(&full), &hw), Ok(()));
}

#[test]
fn real_mode_needs_unrestricted_guest() {
    let full = full_caps();
    let v = real_mode_vmcs12(&full);
    // Under L1's core view, "enable EPT" is a reserved secondary control.
    assert_vmfail(&v, &core_caps(), ERR_CONTROLS, "reserved secondary");
}

#[test]
fn events_blocked_by_mov_ss() {
    assert_eq!(check_events_blocked_by_mov_ss(0), Ok(()));
    assert_eq!(check_events_blocked_by_mov_ss(BLOCKING_BY_STI), Ok(()));
    assert!(matches!(
        check_events_blocked_by_mov_ss(BLOCKING_BY_MOV_SS),
        Err(EntryFailure::VmFail {
            error: VmInstructionError::EntryEventsBlockedByMovSs,
            ..
        })
    ));
}

#[test]
fn cet_needs_write_protect() {
    // Bochs has no CET: allow CR4.CET in a copy of L1's caps.
    let mut caps = core_caps();
    caps.cr4_fixed1 |= CR4_CET;
    let v = valid_vmcs12(&caps);
    let mut w = v.clone();
    w.set_bits(F::GuestCr4, CR4_CET);
    assert_guest(&w, &caps, qualification::DEFAULT, "CR4.CET 1 with CR0.WP 0");
    w.set_bits(F::GuestCr0, CR0_WP);
    assert_eq!(run(&w, &caps), Ok(()));
    let mut w = v.clone();
    w.set_bits(F::HostCr4, CR4_CET);
    assert_vmfail(&w, &caps, ERR_HOST, "CR4.CET 1 with CR0.WP 0");
}

#[test]
fn failure_display_and_check() {
    let (caps, mut v) = core();
    v.write(F::HostCsSelector, 0);
    let e = run(&v, &caps).unwrap_err();
    assert_eq!(e.check(), "27.2.3: host CS selector is 0");
    let s = e.to_string();
    assert!(s.starts_with("VMfailValid"), "{s}");
    assert!(s.contains("(8)"), "{s}");
}

#[test]
fn order_is_controls_host_guest() {
    let (caps, mut v) = core();
    v.write(F::GuestRflags, 0);
    v.write(F::HostTrSelector, 0);
    assert_vmfail(&v, &caps, ERR_HOST, "TR selector");
    v.write(F::Cr3TargetCount, 5);
    assert_vmfail(&v, &caps, ERR_CONTROLS, "CR3-target count");
}

// ---- 27.2.1.1 VM-execution controls ----

#[test]
fn reserved_execution_control_bits() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.set_bits(
        F::PinBasedVmExecControls,
        PinBased::PROCESS_POSTED_INTERRUPTS.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved pin-based");
    let mut w = v.clone();
    w.clear_bits(F::PinBasedVmExecControls, u64::from(PinBased::DEFAULT1));
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved pin-based");
    let mut w = v.clone();
    w.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_TPR_SHADOW.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved primary");
    let mut w = v.clone();
    w.set_bits(
        F::SecondaryProcBasedVmExecControls,
        SecondaryProcBased::VMCS_SHADOWING.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved secondary");
    // Secondary controls are ignored while "activate secondary controls" is 0.
    w.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits().into(),
    );
    assert_eq!(run(&w, &caps), Ok(()));
    // TRUE controls: CR3-load exiting may be 0 (plain MSR forces it).
    let mut w = v.clone();
    w.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::CR3_LOAD_EXITING.bits().into(),
    );
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn cr3_target_count() {
    let (caps, mut v) = core();
    v.write(F::Cr3TargetCount, 4);
    assert_eq!(run(&v, &caps), Ok(()));
    v.write(F::Cr3TargetCount, 5);
    assert_vmfail(&v, &caps, ERR_CONTROLS, "CR3-target count");
}

#[test]
fn bitmap_addresses_only_when_used() {
    let (caps, v) = core();
    for (f, rule) in [
        (F::IoBitmapAAddress, "I/O bitmap A"),
        (F::IoBitmapBAddress, "I/O bitmap B"),
        (F::MsrBitmapAddress, "MSR-bitmap"),
    ] {
        for bad in [0x10_0800, 1 << MAXPHYADDR, u64::MAX] {
            let mut w = v.clone();
            w.write(f, bad);
            assert_vmfail(&w, &caps, ERR_CONTROLS, rule);
        }
    }
    // All ones while the controls are off (VMware does this).
    let mut w = v.clone();
    w.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        (PrimaryProcBased::USE_IO_BITMAPS | PrimaryProcBased::USE_MSR_BITMAPS)
            .bits()
            .into(),
    );
    for f in [
        F::IoBitmapAAddress,
        F::IoBitmapBAddress,
        F::MsrBitmapAddress,
    ] {
        w.write(f, u64::MAX);
    }
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn nmi_control_relations() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::NMI_EXITING.bits().into(),
    );
    assert_vmfail(
        &w,
        &caps,
        ERR_CONTROLS,
        "\"virtual NMIs\" without \"NMI exiting\"",
    );
    w.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::VIRTUAL_NMIS.bits().into(),
    );
    assert_eq!(run(&w, &caps), Ok(()));
    w.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::NMI_WINDOW_EXITING.bits().into(),
    );
    assert_vmfail(
        &w,
        &caps,
        ERR_CONTROLS,
        "\"NMI-window exiting\" without \"virtual NMIs\"",
    );
}

#[test]
fn tpr_shadow_rules_under_hardware_caps() {
    // L1 never gets "use TPR shadow"; the hardware does (L0's own VMCS).
    let caps = bochs_caps();
    let mut v = valid_vmcs12(&core_caps());
    v.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_TPR_SHADOW.bits().into(),
    );
    v.write(F::VirtualApicAddress, 0x18000);
    v.write(F::TprThreshold, 0);
    assert_eq!(run(&v, &caps), Ok(()));
    let mut w = v.clone();
    w.write(F::VirtualApicAddress, 0x18010);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "virtual-APIC address");
    let mut w = v.clone();
    w.write(F::TprThreshold, 0x10);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "TPR threshold bits 31:4");
    // Threshold 3 against VTPR 0x20 (bits 7:4 = 2) fails; VTPR 0x30 passes.
    let mut mem = memory();
    mem.write(0x18080, &[0x20]).unwrap();
    let mut w = v.clone();
    w.write(F::TprThreshold, 3);
    let r = check_all(&w, &super::testing::ctx(&caps, &mem));
    assert!(matches!(r, Err(EntryFailure::VmFail { check, .. }) if check.contains("VTPR")));
    mem.write(0x18080, &[0x30]).unwrap();
    assert_eq!(check_all(&w, &super::testing::ctx(&caps, &mem)), Ok(()));
    // A virtual-APIC page that cannot be read fails.
    w.write(F::VirtualApicAddress, 0x40_0000);
    assert!(check_all(&w, &super::testing::ctx(&caps, &mem)).is_err());
    // Without TPR shadow, APIC-register virtualization is invalid.
    let mut w = valid_vmcs12(&core_caps());
    w.set_bits(
        F::SecondaryProcBasedVmExecControls,
        SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION
            .bits()
            .into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "without \"use TPR shadow\"");
    // APIC-access address, when used.
    let mut w = valid_vmcs12(&core_caps());
    w.set_bits(
        F::SecondaryProcBasedVmExecControls,
        SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "APIC-access address");
    w.write(F::ApicAccessAddress, 0x19000);
    assert_eq!(run(&w, &caps), Ok(()));
}

/// EPT A/D flags are hidden from L1 (bit 21 of IA32_VMX_EPT_VPID_CAP is 0,
/// though Bochs has them), so an EPTP12 that enables them (bit 6) is
/// VMfailValid 7 (SDM 27.2.1.1: "bit 6 ... is 0 if bit 21 of the
/// IA32_VMX_EPT_VPID_CAP MSR is read as 0"); with the hardware's
/// capabilities the same EPTP is valid.
#[test]
fn eptp_accessed_dirty_needs_bit_21() {
    const EPT_VPID_CAP_ACCESSED_DIRTY: u64 = 1 << 21;
    let l1 = full_caps();
    assert_eq!(l1.ept_vpid.raw & EPT_VPID_CAP_ACCESSED_DIRTY, 0);
    assert!(!l1.ept_vpid.accessed_dirty);
    let hw = bochs_caps();
    assert_ne!(hw.ept_vpid.raw & EPT_VPID_CAP_ACCESSED_DIRTY, 0);
    let v = real_mode_vmcs12(&l1);
    let ad = Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, true);
    assert_eq!(ad.0 & Eptp::ACCESSED_DIRTY, 1 << 6);
    for mt in [MemoryType::WriteBack, MemoryType::Uncacheable] {
        let mut w = v.clone();
        w.write(F::EptPointer, Eptp::new(EPT_ROOT, mt, 4, true).0);
        assert_vmfail(&w, &l1, ERR_CONTROLS, "A/D enable");
        w.write(F::EptPointer, Eptp::new(EPT_ROOT, mt, 4, false).0);
        assert_eq!(run(&w, &l1), Ok(()));
    }
    let mut w = v.clone();
    w.write(F::EptPointer, ad.0);
    assert_eq!(run(&w, &hw), Ok(()));
}

#[test]
fn vpid_ept_and_unrestricted_guest() {
    let caps = full_caps();
    let v = real_mode_vmcs12(&caps);
    let mut w = v.clone();
    w.write(F::VirtualProcessorId, 0);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "VPID 0");
    // L1 sees no A/D flags, no UC... well UC yes; no 5-level walks.
    for eptp in [
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, true).0,
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 5, false).0,
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, false).0 | (1 << 8),
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, false).0 | (1 << MAXPHYADDR),
        (EPT_ROOT | 1 | (3 << 3)),
    ] {
        w = v.clone();
        w.write(F::EptPointer, eptp);
        assert_vmfail(&w, &caps, ERR_CONTROLS, "EPTP");
    }
    w = v.clone();
    w.write(
        F::EptPointer,
        Eptp::new(EPT_ROOT, MemoryType::Uncacheable, 4, false).0,
    );
    assert_eq!(run(&w, &caps), Ok(()));
    // The hardware has A/D.
    w.write(
        F::EptPointer,
        Eptp::new(EPT_ROOT, MemoryType::WriteBack, 4, true).0,
    );
    assert_eq!(run(&w, &bochs_caps()), Ok(()));
    w = v.clone();
    w.clear_bits(
        F::SecondaryProcBasedVmExecControls,
        SecondaryProcBased::ENABLE_EPT.bits().into(),
    );
    assert_vmfail(
        &w,
        &caps,
        ERR_CONTROLS,
        "\"unrestricted guest\" without \"enable EPT\"",
    );
}

#[test]
fn hardware_only_secondary_features() {
    // Under the hardware's caps (PML, VMCS shadowing, #VE, VMFUNC allowed).
    let caps = bochs_caps();
    let full = full_caps();
    let v = real_mode_vmcs12(&full);
    let set2 = |bits: SecondaryProcBased| {
        let mut w = v.clone();
        w.set_bits(F::SecondaryProcBasedVmExecControls, bits.bits().into());
        w
    };
    let mut w = set2(SecondaryProcBased::ENABLE_PML);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "PML address");
    w.write(F::PmlAddress, 0x19000);
    assert_eq!(run(&w, &caps), Ok(()));
    let mut w = set2(SecondaryProcBased::VMCS_SHADOWING);
    w.write(F::VmreadBitmapAddress, 0x19000);
    w.write(F::VmwriteBitmapAddress, 0x19001);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "VMWRITE-bitmap");
    let mut w = set2(SecondaryProcBased::EPT_VIOLATION_VE);
    w.write(F::VirtualizationExceptionInfoAddress, 1 << 50);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "virtualization-exception");
    let mut w = set2(SecondaryProcBased::ENABLE_VM_FUNCTIONS);
    w.write(F::VmFunctionControls, 2);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "VM-function control");
    w.write(F::VmFunctionControls, VMFUNC_EPTP_SWITCHING);
    w.write(F::EptpListAddress, 0x19008);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "EPTP-list");
    w.write(F::EptpListAddress, 0x19000);
    assert_eq!(run(&w, &caps), Ok(()));
}

// ---- 27.2.1.2 VM-exit controls ----

#[test]
fn exit_controls() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.set_bits(
        F::VmExitControls,
        ExitControls::LOAD_IA32_PERF_GLOBAL_CTRL.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved VM-exit");
    let mut w = v.clone();
    w.set_bits(
        F::VmExitControls,
        ExitControls::SAVE_PREEMPTION_TIMER_VALUE.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "save VMX-preemption timer value");
    w.set_bits(
        F::PinBasedVmExecControls,
        PinBased::ACTIVATE_PREEMPTION_TIMER.bits().into(),
    );
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn msr_area_addresses() {
    let (caps, v) = core();
    for (addr, count, rule) in [
        (
            F::VmExitMsrStoreAddress,
            F::VmExitMsrStoreCount,
            "MSR-store",
        ),
        (
            F::VmExitMsrLoadAddress,
            F::VmExitMsrLoadCount,
            "VM-exit MSR-load",
        ),
        (
            F::VmEntryMsrLoadAddress,
            F::VmEntryMsrLoadCount,
            "VM-entry MSR-load",
        ),
    ] {
        let mut w = v.clone();
        w.write(addr, MSR_AREA + 8);
        assert_vmfail(&w, &caps, ERR_CONTROLS, rule);
        // The last byte beyond the width.
        w.write(addr, (1 << MAXPHYADDR) - 0x10);
        w.write(count, 2);
        assert_vmfail(&w, &caps, ERR_CONTROLS, rule);
        w.write(count, 1);
        assert_eq!(run(&w, &caps), Ok(()));
        // With a count of 0, the address does not matter.
        w.write(addr, u64::MAX);
        w.write(count, 0);
        assert_eq!(run(&w, &caps), Ok(()));
    }
}

// ---- 27.2.1.3 VM-entry controls ----

#[test]
fn entry_controls_reserved_and_smm() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.set_bits(
        F::VmEntryControls,
        EntryControls::ENTRY_TO_SMM.bits().into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved VM-entry");
    // Under the hardware's caps, the SMM controls fail outside SMM.
    assert_vmfail(&w, &bochs_caps(), ERR_CONTROLS, "outside SMM");
}

#[test]
fn event_injection_type_and_vector() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.write(
        F::VmEntryInterruptionInfo,
        (InterruptionInfo::VALID | (1 << 8)).into(),
    );
    assert_vmfail(&w, &caps, ERR_CONTROLS, "reserved interruption type 1");
    inject(&mut w, 3, T::Nmi, false);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "NMI with a vector other than 2");
    inject(&mut w, 2, T::Nmi, false);
    assert_eq!(run(&w, &caps), Ok(()));
    inject(&mut w, 32, T::HardwareException, false);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "vector above 31");
    // Bochs corei7_skylake_x has no monitor trap flag: type 7 is invalid.
    inject(&mut w, 0, T::OtherEvent, false);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "type 7");
    let mut mtf = caps;
    mtf.proc.true_ctls = mtf.proc.true_ctls.map(|mut c| {
        c.allowed1 |= PrimaryProcBased::MONITOR_TRAP_FLAG.bits();
        c
    });
    assert_eq!(run(&w, &mtf), Ok(()));
    inject(&mut w, 1, T::OtherEvent, false);
    assert_vmfail(
        &w,
        &mtf,
        ERR_CONTROLS,
        "other event with a vector other than 0",
    );
    // Invalid injection information is ignored.
    w.write(F::VmEntryInterruptionInfo, 0x7fff_ffff);
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn event_injection_error_code_rule() {
    let (caps, v) = core();
    let mut w = v.clone();
    inject(&mut w, 13, T::HardwareException, false);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "deliver-error-code");
    inject(&mut w, 13, T::HardwareException, true);
    assert_eq!(run(&w, &caps), Ok(()));
    w.write(F::VmEntryExceptionErrorCode, 0x1_0000);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "error code bits 31:16");
    inject(&mut w, 6, T::HardwareException, true);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "deliver-error-code");
    inject(&mut w, 14, T::SoftwareInterrupt, true);
    w.write(F::VmEntryInstructionLength, 2);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "deliver-error-code");
    // IA32_VMX_BASIC bit 56: hardware exceptions with or without.
    let mut any = caps;
    any.basic.any_exception_error_code = true;
    let mut w = v.clone();
    inject(&mut w, 6, T::HardwareException, true);
    assert_eq!(run(&w, &any), Ok(()));
    inject(&mut w, 14, T::HardwareException, false);
    assert_eq!(run(&w, &any), Ok(()));
    // ... but still none for other types.
    inject(&mut w, 2, T::Nmi, true);
    assert_vmfail(&w, &any, ERR_CONTROLS, "deliver-error-code");
    // Real mode (unrestricted guest, CR0.PE 0): no error code, even #GP.
    let full = full_caps();
    let mut r = real_mode_vmcs12(&full);
    inject(&mut r, 13, T::HardwareException, true);
    assert_vmfail(&r, &full, ERR_CONTROLS, "deliver-error-code");
    inject(&mut r, 13, T::HardwareException, false);
    assert_eq!(run(&r, &full), Ok(()));
}

#[test]
fn event_injection_reserved_bits_and_length() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.write(
        F::VmEntryInterruptionInfo,
        (InterruptionInfo::new(0x20, T::ExternalInterrupt, false).0 | (1 << 12)).into(),
    );
    w.set_bits(F::GuestRflags, RFLAGS_IF);
    assert_vmfail(&w, &caps, ERR_CONTROLS, "bits 30:12");
    inject(&mut w, 0x20, T::ExternalInterrupt, false);
    assert_eq!(run(&w, &caps), Ok(()));
    for kind in [
        T::SoftwareInterrupt,
        T::PrivilegedSoftwareException,
        T::SoftwareException,
    ] {
        let vector = if kind == T::SoftwareException {
            3
        } else {
            0x80
        };
        inject(&mut w, vector, kind, false);
        for (len, ok) in [
            (0, true),
            (1, true),
            (15, true),
            (16, false),
            (u32::MAX, false),
        ] {
            w.write(F::VmEntryInstructionLength, len.into());
            if ok {
                assert_eq!(run(&w, &caps), Ok(()), "{kind:?} length {len}");
            } else {
                assert_vmfail(&w, &caps, ERR_CONTROLS, "instruction length");
            }
        }
        // Without IA32_VMX_MISC bit 30, 0 is invalid.
        let mut no_zero = caps;
        no_zero.misc.inject_zero_length = false;
        w.write(F::VmEntryInstructionLength, 0);
        assert_vmfail(&w, &no_zero, ERR_CONTROLS, "instruction length");
    }
}

// ---- 27.2.2 - 27.2.4 host state ----

#[test]
fn host_control_registers_and_msrs() {
    let (caps, v) = core();
    let cases: &[(F, u64, &str)] = &[
        (F::HostCr0, CR0_64 & !0x20, "host CR0"),
        (F::HostCr0, CR0_64 | (1 << 32), "host CR0"),
        (F::HostCr4, CR4_64 & !0x2000, "host CR4"),
        (F::HostCr4, CR4_64 | (1 << 22), "host CR4"),
        (F::HostCr3, 1 << MAXPHYADDR, "host CR3"),
        (F::HostIa32SysenterEsp, 0x0000_8000_0000_0000, "SYSENTER"),
        (F::HostIa32SysenterEip, 0xfff0_0000_0000_0000, "SYSENTER"),
        (F::HostIa32Pat, 0x0007_0406_0007_0402, "IA32_PAT"),
        (F::HostIa32Efer, EFER_64 | (1 << 1), "IA32_EFER reserved"),
        (F::HostIa32Efer, EFER_64 & !EFER_LMA, "LMA/LME"),
        (F::HostIa32Efer, EFER_64 & !EFER_LME, "LMA/LME"),
    ];
    for &(f, value, rule) in cases {
        let mut w = v.clone();
        w.write(f, value);
        assert_vmfail(&w, &caps, ERR_HOST, rule);
    }
    // PAT and EFER are not checked when not loaded.
    let mut w = v.clone();
    w.clear_bits(
        F::VmExitControls,
        (ExitControls::LOAD_IA32_PAT | ExitControls::LOAD_IA32_EFER)
            .bits()
            .into(),
    );
    w.write(F::HostIa32Pat, u64::MAX);
    w.write(F::HostIa32Efer, u64::MAX);
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn host_segments_and_tables() {
    let (caps, v) = core();
    let cases: &[(F, u64, &str)] = &[
        (F::HostDsSelector, 0x13, "RPL or TI"),
        (F::HostTrSelector, 0x1c, "RPL or TI"),
        (F::HostCsSelector, 0, "host CS selector is 0"),
        (F::HostTrSelector, 0, "host TR selector is 0"),
        (F::HostFsBase, 0x0000_8000_0000_0000, "not canonical"),
        (F::HostGsBase, 0x0001_0000_0000_0000, "not canonical"),
        (F::HostGdtrBase, 1 << 63, "not canonical"),
        (F::HostIdtrBase, 1 << 47, "not canonical"),
        (F::HostTrBase, 1 << 48, "not canonical"),
    ];
    for &(f, value, rule) in cases {
        let mut w = v.clone();
        w.write(f, value);
        assert_vmfail(&w, &caps, ERR_HOST, rule);
    }
    // A null SS is fine for a 64-bit host.
    let mut w = v.clone();
    w.write(F::HostSsSelector, 0);
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn host_address_space_size() {
    let (caps, v) = core();
    let mut w = v.clone();
    w.write(F::HostRip, 0x0000_8000_0000_0000);
    assert_vmfail(&w, &caps, ERR_HOST, "host RIP not canonical");
    let mut w = v.clone();
    w.write(F::HostCr4, CR4_64 & !CR4_PAE);
    assert_vmfail(&w, &caps, ERR_HOST, "CR4.PAE");
    // A 32-bit host from a 64-bit VMM: invalid.
    let mut w = pae_vmcs12(&caps);
    w.clear_bits(
        F::VmExitControls,
        ExitControls::HOST_ADDRESS_SPACE_SIZE.bits().into(),
    );
    w.write(F::HostIa32Efer, 0);
    w.write(F::HostRip, 0x1000);
    assert_vmfail(
        &w,
        &caps,
        ERR_HOST,
        "\"host address-space size\" 0 in IA-32e mode",
    );
    // From a 32-bit VMM: valid, unless the guest or host is 64-bit.
    let mem = memory();
    let mut c32 = ctx(&caps, &mem);
    c32.in_ia32e_mode = false;
    assert_eq!(check_all(&w, &c32), Ok(()));
    let mut bad = w.clone();
    bad.write(F::HostSsSelector, 0);
    assert!(
        matches!(check_all(&bad, &c32), Err(EntryFailure::VmFail { check, .. }) if check.contains("SS selector"))
    );
    let mut bad = w.clone();
    bad.write(F::HostRip, 1 << 32);
    assert!(
        matches!(check_all(&bad, &c32), Err(EntryFailure::VmFail { check, .. }) if check.contains("RIP bits 63:32"))
    );
    let mut bad = w.clone();
    bad.set_bits(F::HostCr4, CR4_PCIDE);
    assert!(
        matches!(check_all(&bad, &c32), Err(EntryFailure::VmFail { check, .. }) if check.contains("PCIDE"))
    );
    assert!(matches!(
        check_all(&v, &c32),
        Err(EntryFailure::VmFail { error: ERR_HOST, check }) if check.contains("outside IA-32e mode")
    ));
}

// ---- 27.3.1.1 guest control registers, debug registers, MSRs ----

#[test]
fn guest_control_registers() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    let cases: &[(F, u64, &str)] = &[
        (F::GuestCr0, CR0_64 & !0x20, "guest CR0 violates"),
        (F::GuestCr0, CR0_64 & !CR0_PG, "guest CR0 violates"),
        (F::GuestCr4, CR4_64 & !0x2000, "guest CR4"),
        (
            F::GuestCr4,
            CR4_64 & !CR4_PAE,
            "\"IA-32e mode guest\" without CR0.PG and CR4.PAE",
        ),
        (F::GuestCr3, 1 << MAXPHYADDR, "guest CR3"),
        (F::GuestIa32Debugctl, 1 << 2, "IA32_DEBUGCTL"),
        (F::GuestDr7, 1 << 32 | 0x400, "DR7"),
        (F::GuestIa32SysenterEsp, 1 << 47, "SYSENTER"),
        (F::GuestIa32Pat, 0x0007_0406_0007_0403, "IA32_PAT"),
        (F::GuestIa32Efer, EFER_64 | (1 << 9), "IA32_EFER reserved"),
        (F::GuestIa32Efer, EFER_64 & !EFER_LMA, "LMA differs"),
        (F::GuestIa32Efer, EFER_64 & !EFER_LME, "LME differs"),
    ];
    for &(f, value, rule) in cases {
        let mut w = v.clone();
        w.write(f, value);
        assert_guest(&w, &caps, q0, rule);
    }
    // Debug controls unchecked when not loaded.
    let mut w = v.clone();
    w.clear_bits(
        F::VmEntryControls,
        EntryControls::LOAD_DEBUG_CONTROLS.bits().into(),
    );
    w.write(F::GuestIa32Debugctl, 1 << 2);
    w.write(F::GuestDr7, u64::MAX);
    assert_eq!(run(&w, &caps), Ok(()));
    // PCIDE outside IA-32e mode.
    let mut p = pae_vmcs12(&caps);
    p.set_bits(F::GuestCr4, CR4_PCIDE);
    assert_guest(&p, &caps, q0, "PCIDE");
    // PG without PE: only expressible for an unrestricted guest.
    let full = full_caps();
    let mut r = real_mode_vmcs12(&full);
    r.set_bits(F::GuestCr0, CR0_PG);
    assert_guest(&r, &full, q0, "CR0.PG 1 with CR0.PE 0");
}

// ---- 27.3.1.2 guest segment registers ----

#[test]
fn guest_segments_protected_and_ia32e() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    let cases: &[(F, u64, &str)] = &[
        (F::GuestTrSelector, 0x1c, "TR selector TI"),
        (F::GuestSsSelector, 0x13, "SS selector RPL"),
        (F::GuestFsBase, 1 << 47, "TR, FS or GS base"),
        (F::GuestTrBase, 1 << 60, "TR, FS or GS base"),
        (F::GuestCsBase, 1 << 32, "CS base"),
        (F::GuestDsBase, 1 << 32, "SS, DS or ES base"),
        (F::GuestCsAccessRights, 0xa093, "CS type"),
        (F::GuestCsAccessRights, 0xa08b, "CS S bit"),
        (F::GuestCsAccessRights, 0xa0bb, "CS DPL"),
        (F::GuestCsAccessRights, 0xa01b, "CS not present"),
        (F::GuestCsAccessRights, 0xa19b, "CS access-rights reserved"),
        (F::GuestCsAccessRights, 0xe09b, "CS.L and CS.D"),
        (F::GuestCsAccessRights, 0x209b, "CS limit"),
        (F::GuestSsAccessRights, 0xc09b, "SS type"),
        (F::GuestDsAccessRights, 0xc092, "DS, ES, FS or GS type"),
        (F::GuestEsAccessRights, 0xc099, "DS, ES, FS or GS type"),
        (F::GuestFsAccessRights, 0xc083, "SS, DS, ES, FS or GS S bit"),
        (
            F::GuestGsAccessRights,
            0xc013,
            "SS, DS, ES, FS or GS not present",
        ),
        (F::GuestDsAccessRights, 0xc0093, "access-rights reserved"),
        (F::GuestDsLimit, 0xffff_f000, "G bit"),
        (F::GuestTrAccessRights, 0x83, "TR type"),
        (F::GuestTrAccessRights, 0x89, "TR type"),
        (F::GuestTrAccessRights, 0x9b, "TR S bit"),
        (F::GuestTrAccessRights, 0x0b, "TR not present"),
        (F::GuestTrAccessRights, 0x18b, "TR access-rights reserved"),
        (F::GuestTrAccessRights, 0x808b, "TR limit"),
        (F::GuestTrAccessRights, 0x1008b, "TR unusable"),
        (F::GuestLdtrAccessRights, 0x83, "LDTR type"),
        (F::GuestLdtrAccessRights, 0x92, "LDTR S bit"),
        (F::GuestLdtrAccessRights, 0x02, "LDTR not present"),
    ];
    for &(f, value, rule) in cases {
        let mut w = v.clone();
        w.write(f, value);
        assert_guest(&w, &caps, q0, rule);
    }
    // Usable LDTR: TI and canonical base.
    let mut w = v.clone();
    write_segment(&mut w, super::LDTR, 0x20, 0x8000, 0xff, 0x82);
    assert_eq!(run(&w, &caps), Ok(()));
    w.write(F::GuestLdtrBase, 1 << 47);
    assert_guest(&w, &caps, q0, "LDTR base not canonical");
    w.write(F::GuestLdtrBase, 0x8000);
    w.write(F::GuestLdtrSelector, 0x24);
    assert_guest(&w, &caps, q0, "LDTR selector TI");
    // Unusable segments may hold anything else.
    let mut w = v.clone();
    for f in [
        F::GuestDsAccessRights,
        F::GuestEsAccessRights,
        F::GuestFsAccessRights,
    ] {
        w.write(f, u64::from(AR_UNUSABLE | 0xfffe_0f00));
    }
    w.write(F::GuestDsBase, u64::MAX);
    w.write(F::GuestLdtrBase, u64::MAX);
    w.write(F::GuestLdtrSelector, 0xffff);
    assert_eq!(run(&w, &caps), Ok(()));
    // SS DPL must equal its RPL (CS RPL kept equal to SS RPL).
    let mut w = v.clone();
    w.write(F::GuestSsSelector, 0x13);
    w.write(F::GuestCsSelector, 0x0b);
    assert_guest(&w, &caps, q0, "SS DPL differs");
    // Ring 3 data segments must have DPL >= RPL.
    let mut w = v.clone();
    w.write(F::GuestDsSelector, 0x13);
    assert_guest(&w, &caps, q0, "DPL below its selector RPL");
    w.write(F::GuestDsAccessRights, 0xc0f3);
    assert_eq!(run(&w, &caps), Ok(()));
    // Conforming code segment: CS DPL may be below SS DPL? No: at most.
    let mut w = v.clone();
    w.write(F::GuestCsAccessRights, 0xa09f);
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn guest_segments_real_and_v8086() {
    let full = full_caps();
    let q0 = qualification::DEFAULT;
    let r = real_mode_vmcs12(&full);
    // Type 3 CS for an unrestricted guest, DPL 0.
    let mut w = r.clone();
    w.write(F::GuestCsAccessRights, 0x93);
    assert_eq!(run(&w, &full), Ok(()));
    w.write(F::GuestCsAccessRights, 0xb3);
    assert_guest(&w, &full, q0, "CS DPL");
    // CR0.PE 0: SS DPL must be 0 (and CS follows it).
    let mut w = r.clone();
    w.write(F::GuestSsAccessRights, 0xf3);
    w.write(F::GuestCsAccessRights, 0xfb);
    assert_guest(&w, &full, q0, "SS DPL not 0");
    // No RPL rules for an unrestricted guest.
    let mut w = r.clone();
    w.write(F::GuestSsSelector, 3);
    w.write(F::GuestDsSelector, 3);
    assert_eq!(run(&w, &full), Ok(()));

    // Virtual-8086 mode on the PAE fixture.
    let core = core_caps();
    let mut v = pae_vmcs12(&core);
    v.set_bits(F::GuestRflags, RFLAGS_VM);
    for f in [
        super::CS,
        super::SS,
        super::DS,
        super::ES,
        super::FS,
        super::GS,
    ] {
        write_segment(&mut v, f, 0x1234, 0x12340, 0xffff, 0xf3);
    }
    assert_eq!(run(&v, &core), Ok(()));
    let mut w = v.clone();
    w.write(F::GuestEsBase, 0x12341);
    assert_guest(&w, &core, q0, "selector * 16");
    let mut w = v.clone();
    w.write(F::GuestFsLimit, 0xfffff);
    assert_guest(&w, &core, q0, "limit not 0xffff");
    let mut w = v.clone();
    w.write(F::GuestGsAccessRights, 0xf1);
    assert_guest(&w, &core, q0, "access rights not 0xf3");
    // HLT with SS.DPL 3.
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::HLT.into());
    assert_guest(&w, &core, q0, "HLT activity state with SS DPL");
}

// ---- 27.3.1.3 and 27.3.1.4 ----

#[test]
fn guest_tables_rip_rflags() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    let cases: &[(F, u64, &str)] = &[
        (F::GuestGdtrBase, 1 << 47, "GDTR or IDTR base"),
        (F::GuestIdtrBase, 0x8000_0000_0000_0000, "GDTR or IDTR base"),
        (F::GuestGdtrLimit, 0x10000, "limit bits 31:16"),
        (F::GuestIdtrLimit, 0xffff_ffff, "limit bits 31:16"),
        (F::GuestRip, 0x0000_8000_0000_0000, "RIP not canonical"),
        (F::GuestRflags, 0, "RFLAGS reserved"),
        (F::GuestRflags, 0x2 | (1 << 15), "RFLAGS reserved"),
        (F::GuestRflags, 0x2 | (1 << 22), "RFLAGS reserved"),
    ];
    for &(f, value, rule) in cases {
        let mut w = v.clone();
        w.write(f, value);
        assert_guest(&w, &caps, q0, rule);
    }
    let mut p = pae_vmcs12(&caps);
    p.write(F::GuestRip, 1 << 32);
    assert_guest(&p, &caps, q0, "RIP bits 63:32");
    // Compatibility mode (CS.L 0) in IA-32e mode: 32-bit RIP.
    let mut w = v.clone();
    w.write(F::GuestCsAccessRights, 0xc09b);
    assert_guest(&w, &caps, q0, "RIP bits 63:32");
    w.write(F::GuestRip, 0x1000);
    assert_eq!(run(&w, &caps), Ok(()));
    // RFLAGS.VM in IA-32e mode (segments as virtual-8086 mode wants them).
    let mut w = v.clone();
    for f in [
        super::CS,
        super::SS,
        super::DS,
        super::ES,
        super::FS,
        super::GS,
    ] {
        write_segment(&mut w, f, 0x1234, 0x12340, 0xffff, 0xf3);
    }
    w.write(F::GuestRip, 0x1000);
    w.write(F::GuestRflags, RFLAGS_FIXED1 | RFLAGS_VM);
    assert_guest(&w, &caps, q0, "RFLAGS.VM 1 in IA-32e mode");
    // External interrupt needs IF.
    let mut w = v.clone();
    inject(&mut w, 0x30, T::ExternalInterrupt, false);
    assert_guest(&w, &caps, q0, "RFLAGS.IF 0");
}

// ---- 27.3.1.5 non-register state ----

#[test]
fn guest_activity_state() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::HLT.into());
    assert_eq!(run(&w, &caps), Ok(()));
    for (vector, kind, ok) in [
        (0x30, T::ExternalInterrupt, true),
        (2, T::Nmi, true),
        (1, T::HardwareException, true),
        (18, T::HardwareException, true),
        (6, T::HardwareException, false),
        (3, T::SoftwareException, false),
    ] {
        inject(&mut w, vector, kind, false);
        w.write(F::VmEntryInstructionLength, 1);
        w.write(F::GuestRflags, RFLAGS_FIXED1 | RFLAGS_IF);
        if ok {
            assert_eq!(run(&w, &caps), Ok(()), "{kind:?} {vector}");
        } else {
            assert_guest(&w, &caps, q0, "blocked in the target activity state");
        }
    }
    // L1 has no shutdown state (the hardware does); it has wait-for-SIPI,
    // where it parks its APs (a second L0 does), and no event goes in.
    for state in [activity::SHUTDOWN, 4, u32::MAX] {
        let mut w = v.clone();
        w.write(F::GuestActivityState, state.into());
        assert_guest(&w, &caps, q0, "activity state not supported");
    }
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::WAIT_FOR_SIPI.into());
    assert_eq!(run(&w, &caps), Ok(()));
    inject(&mut w, 0x30, T::ExternalInterrupt, false);
    w.write(F::GuestRflags, RFLAGS_FIXED1 | RFLAGS_IF);
    assert_guest(&w, &caps, q0, "blocked in the target activity state");
    let hw = bochs_caps();
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::WAIT_FOR_SIPI.into());
    assert_eq!(run(&w, &hw), Ok(()));
    inject(&mut w, 2, T::Nmi, false);
    assert_guest(&w, &hw, q0, "blocked in the target activity state");
    w.write(F::GuestActivityState, activity::SHUTDOWN.into());
    assert_eq!(run(&w, &hw), Ok(()));
    // Blocking by STI only in the active state.
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::HLT.into());
    w.write(F::GuestRflags, RFLAGS_FIXED1 | RFLAGS_IF);
    w.write(F::GuestInterruptibilityState, BLOCKING_BY_STI.into());
    assert_guest(&w, &caps, q0, "outside the active state");
}

#[test]
fn guest_interruptibility_state() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    let with = |bits: u32, rflags: u64| {
        let mut w = v.clone();
        w.write(F::GuestInterruptibilityState, bits.into());
        w.write(F::GuestRflags, rflags);
        w
    };
    let if1 = RFLAGS_FIXED1 | RFLAGS_IF;
    assert_eq!(run(&with(BLOCKING_BY_STI, if1), &caps), Ok(()));
    assert_eq!(run(&with(BLOCKING_BY_MOV_SS, RFLAGS_FIXED1), &caps), Ok(()));
    assert_eq!(run(&with(BLOCKING_BY_NMI, RFLAGS_FIXED1), &caps), Ok(()));
    assert_guest(&with(1 << 4, if1), &caps, q0, "reserved bits 31:4");
    assert_guest(&with(1 << 31, if1), &caps, q0, "reserved bits 31:4");
    assert_guest(
        &with(BLOCKING_BY_STI | BLOCKING_BY_MOV_SS, if1),
        &caps,
        q0,
        "both STI and MOV SS",
    );
    assert_guest(
        &with(BLOCKING_BY_STI, RFLAGS_FIXED1),
        &caps,
        q0,
        "blocking by STI with RFLAGS.IF 0",
    );
    assert_guest(&with(BLOCKING_BY_SMI, if1), &caps, q0, "SMI outside SMM");

    let mut w = with(BLOCKING_BY_STI, if1);
    inject(&mut w, 0x30, T::ExternalInterrupt, false);
    assert_guest(&w, &caps, q0, "external interrupt injected with blocking");
    let mut w = with(BLOCKING_BY_MOV_SS, if1);
    inject(&mut w, 2, T::Nmi, false);
    assert_guest(&w, &caps, q0, "NMI injected with blocking by MOV SS");
    let mut w = with(BLOCKING_BY_STI, if1);
    inject(&mut w, 2, T::Nmi, false);
    assert_guest(
        &w,
        &caps,
        qualification::NMI_INJECTION_STI,
        "NMI injected with blocking by STI",
    );
    // Virtual-NMI blocking and an injected NMI.
    let mut w = with(BLOCKING_BY_NMI, if1);
    inject(&mut w, 2, T::Nmi, false);
    assert_guest(&w, &caps, q0, "virtual-NMI blocking");
    // Without virtual NMIs, NMI blocking does not forbid the injection.
    w.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::VIRTUAL_NMIS.bits().into(),
    );
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn guest_pending_debug_exceptions() {
    let (caps, v) = core();
    let q0 = qualification::DEFAULT;
    for bad in [1 << 4, 1 << 13, 1 << 15, 1 << 16, 1 << 63] {
        let mut w = v.clone();
        w.write(F::GuestPendingDebugExceptions, bad);
        assert_guest(&w, &caps, q0, "pending debug exceptions reserved");
    }
    let mut w = v.clone();
    w.write(
        F::GuestPendingDebugExceptions,
        0xf | (1 << 12) | PENDING_DBG_BS,
    );
    assert_eq!(run(&w, &caps), Ok(()));
    // Blocking by MOV SS with TF: BS must be set, unless BTF.
    let mut w = v.clone();
    w.write(F::GuestInterruptibilityState, BLOCKING_BY_MOV_SS.into());
    w.write(F::GuestRflags, RFLAGS_FIXED1 | RFLAGS_TF);
    assert_guest(&w, &caps, q0, "BS differs");
    w.write(F::GuestPendingDebugExceptions, PENDING_DBG_BS);
    assert_eq!(run(&w, &caps), Ok(()));
    w.write(F::GuestIa32Debugctl, DEBUGCTL_BTF);
    assert_guest(&w, &caps, q0, "BS differs");
    w.write(F::GuestPendingDebugExceptions, 0);
    assert_eq!(run(&w, &caps), Ok(()));
    // HLT, no TF: BS must be clear.
    let mut w = v.clone();
    w.write(F::GuestActivityState, activity::HLT.into());
    w.write(F::GuestPendingDebugExceptions, PENDING_DBG_BS);
    assert_guest(&w, &caps, q0, "BS differs");
    // Not blocking, not halted: BS is free.
    let mut w = v.clone();
    w.write(F::GuestPendingDebugExceptions, PENDING_DBG_BS);
    assert_eq!(run(&w, &caps), Ok(()));
}

#[test]
fn guest_vmcs_link_pointer() {
    let (caps, v) = core();
    let q4 = qualification::VMCS_LINK_POINTER;
    let mut w = v.clone();
    w.write(F::VmcsLinkPointer, LINK_VMCS);
    assert_eq!(run(&w, &caps), Ok(()));
    for bad in [
        LINK_VMCS + 8,
        1 << MAXPHYADDR,
        0x40_0000,
        LINK_VMCS + 0x1000,
        0,
    ] {
        w.write(F::VmcsLinkPointer, bad);
        assert_guest(&w, &caps, q4, "VMCS link pointer");
    }
    let mut mem = memory();
    w.write(F::VmcsLinkPointer, LINK_VMCS);
    for word in [REVISION + 1, REVISION | VMCS_SHADOW_INDICATOR, u32::MAX] {
        mem.write_u32(LINK_VMCS, word).unwrap();
        let r = check_all(&w, &ctx(&caps, &mem));
        assert!(
            matches!(
                r,
                Err(EntryFailure::InvalidGuestState {
                    qualification: 4,
                    ..
                })
            ),
            "{word:#x}: {r:?}"
        );
    }
    let mem = memory();
    let mut c = ctx(&caps, &mem);
    c.current_vmcs = Some(LINK_VMCS);
    assert!(matches!(
        check_all(&w, &c),
        Err(EntryFailure::InvalidGuestState { qualification: 4, check }) if check.contains("current VMCS")
    ));
    // With VMCS shadowing (hardware caps), the region must be a shadow VMCS.
    let hw = bochs_caps();
    let mut s = real_mode_vmcs12(&full_caps());
    s.set_bits(
        F::SecondaryProcBasedVmExecControls,
        SecondaryProcBased::VMCS_SHADOWING.bits().into(),
    );
    s.write(F::VmreadBitmapAddress, 0x19000);
    s.write(F::VmwriteBitmapAddress, 0x1a000);
    s.write(F::VmcsLinkPointer, LINK_VMCS);
    assert_guest(&s, &hw, q4, "shadow-VMCS indicator");
    let mut mem = memory();
    mem.write_u32(LINK_VMCS, REVISION | VMCS_SHADOW_INDICATOR)
        .unwrap();
    assert_eq!(check_all(&s, &ctx(&hw, &mem)), Ok(()));
}

// ---- 27.3.1.6 PDPTEs ----

#[test]
fn guest_pdptes_from_memory() {
    let caps = core_caps();
    let v = pae_vmcs12(&caps);
    let q2 = qualification::PDPTE;
    for bad in [
        PDPTE0 | 0x2,
        PDPTE0 | 0x20,
        PDPTE0 | (1 << MAXPHYADDR),
        PDPTE0 | (1 << 63),
    ] {
        let mut mem = memory();
        mem.write_u64(PDPT + 24, bad).unwrap();
        let r = check_all(&v, &ctx(&caps, &mem));
        assert!(
            matches!(
                r,
                Err(EntryFailure::InvalidGuestState {
                    qualification: 2,
                    ..
                })
            ),
            "{bad:#x}: {r:?}"
        );
        // Not present: the rest does not matter.
        mem.write_u64(PDPT + 24, bad & !PDPTE_P).unwrap();
        assert_eq!(check_all(&v, &ctx(&caps, &mem)), Ok(()));
    }
    // CR3 bits 4:0 and 63:32 are not part of the PDPT address.
    let mut w = v.clone();
    w.write(F::GuestCr3, PDPT | 0x18);
    assert_eq!(run(&w, &caps), Ok(()));
    // An unreadable PDPT (L0's region, or no memory).
    w.write(F::GuestCr3, 0x40_0000);
    assert_guest(&w, &caps, q2, "PDPTE");
    w.write(F::GuestCr3, (1 << 32) - 0x20);
    assert_guest(&w, &caps, q2, "PDPTE");
    // Without paging, no PDPTE is read.
    let mut w = v.clone();
    w.write(F::GuestCr3, 0x40_0000);
    w.set_bits(F::GuestCr4, 0);
    let full = full_caps();
    let mut r = real_mode_vmcs12(&full);
    r.write(F::GuestCr3, 0x40_0000);
    r.set_bits(F::GuestCr4, CR4_PAE);
    assert_eq!(run(&r, &full), Ok(()));
}

#[test]
fn guest_pdptes_from_the_vmcs_with_ept() {
    let full = full_caps();
    // A PAE guest under EPT (unrestricted-guest fixture in protected mode).
    let mut v = real_mode_vmcs12(&full);
    v.write(F::GuestCr0, CR0_64);
    v.write(F::GuestCr4, CR4_64);
    v.write(F::GuestCr3, 0x40_0000);
    write_segment(&mut v, super::CS, 0x08, 0, 0xffff_ffff, 0xc09b);
    for f in [super::SS, super::DS, super::ES, super::FS, super::GS] {
        write_segment(&mut v, f, 0x10, 0, 0xffff_ffff, 0xc093);
    }
    v.write(F::GuestPdpte0, PDPTE0);
    assert_eq!(run(&v, &full), Ok(()));
    v.write(F::GuestPdpte3, 0x1e7);
    assert_guest(&v, &full, qualification::PDPTE, "PDPTE");
}

// ---- property tests ----

/// Field values worth trying: random, 0, all ones, one bit flipped.
fn value_for(original: u64) -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        Just(0u64),
        Just(u64::MAX),
        (0u32..64).prop_map(move |b| original ^ (1 << b)),
    ]
}

/// One field of the table and a new value for it.
fn mutation(base: MemVmcs) -> impl Strategy<Value = (F, u64)> {
    (0..F::COUNT).prop_flat_map(move |i| {
        let f = F::ALL[i];
        (Just(f), value_for(base.read(f)))
    })
}

/// What an accepted VMCS always satisfies.
fn assert_invariants(v: &MemVmcs, caps: &VmxCaps) -> Result<(), TestCaseError> {
    let proc2 = effective_proc2(v);
    let ug = proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST);
    prop_assert!(
        caps.pin
            .effective()
            .allows(v.read32(F::PinBasedVmExecControls))
    );
    prop_assert!(
        caps.proc
            .effective()
            .allows(v.read32(F::PrimaryProcBasedVmExecControls))
    );
    prop_assert!(caps.exit.effective().allows(v.read32(F::VmExitControls)));
    prop_assert!(caps.entry.effective().allows(v.read32(F::VmEntryControls)));
    prop_assert!(caps.proc2.can_set(proc2.bits()));
    prop_assert!(caps.cr0_valid(v.read(F::GuestCr0), ug));
    prop_assert!(caps.cr4_valid(v.read(F::GuestCr4)));
    prop_assert!(caps.cr0_valid(v.read(F::HostCr0), false));
    prop_assert!(caps.cr4_valid(v.read(F::HostCr4)));
    prop_assert!(v.read(F::GuestRflags) & RFLAGS_FIXED1 != 0);
    prop_assert_eq!(v.read(F::GuestRflags) & RFLAGS_RESERVED0, 0);
    prop_assert!(v.read32(F::GuestTrAccessRights) & AR_UNUSABLE == 0);
    prop_assert!(v.read16(F::HostCsSelector) != 0 && v.read16(F::HostTrSelector) != 0);
    let link = v.read(F::VmcsLinkPointer);
    prop_assert!(link == VMCS_LINK_POINTER_NONE || link == LINK_VMCS);
    prop_assert!(v.read32(F::Cr3TargetCount) <= u32::from(caps.misc.cr3_target_count));
    let state = v.read32(F::GuestActivityState);
    prop_assert!(state == activity::ACTIVE || state == activity::HLT);
    let entry = EntryControls::from_bits_retain(v.read32(F::VmEntryControls));
    let ia32e = entry.contains(EntryControls::IA32E_MODE_GUEST);
    if ia32e {
        prop_assert!(v.read(F::GuestCr0) & CR0_PG != 0 && v.read(F::GuestCr4) & CR4_PAE != 0);
        prop_assert_eq!(
            v.read32(F::GuestTrAccessRights) & AR_TYPE_MASK,
            TYPE_TSS_BUSY
        );
    }
    if entry.contains(EntryControls::LOAD_IA32_EFER) {
        prop_assert_eq!(v.read(F::GuestIa32Efer) & EFER_LMA != 0, ia32e);
    }
    prop_assert!(is_canonical(v.read(F::HostRip)));
    prop_assert!(is_canonical(v.read(F::GuestRip)));
    let info = InterruptionInfo(v.read32(F::VmEntryInterruptionInfo));
    if info.is_valid() {
        prop_assert!(info.kind().is_some());
        prop_assert_eq!(info.0 & InterruptionInfo::ENTRY_RESERVED, 0);
    }
    if ug && v.read(F::GuestCr0) & CR0_PG != 0 {
        prop_assert!(v.read(F::GuestCr0) & CR0_PE != 0);
    }
    Ok(())
}

fn fixtures() -> [(VmxCaps, MemVmcs); 3] {
    let core = core_caps();
    let full = full_caps();
    [
        (core, valid_vmcs12(&core)),
        (core, pae_vmcs12(&core)),
        (full, real_mode_vmcs12(&full)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn one_mutation_never_panics_and_accepted_is_valid(
        which in 0usize..3,
        m64 in mutation(valid_vmcs12(&core_caps())),
        mpae in mutation(pae_vmcs12(&core_caps())),
        mreal in mutation(real_mode_vmcs12(&full_caps())),
    ) {
        let [a, b, c] = fixtures();
        let ((caps, mut v), (f, value)) = match which {
            0 => (a, m64),
            1 => (b, mpae),
            _ => (c, mreal),
        };
        v.write(f, value);
        let mem = memory();
        let result = check_all(&v, &ctx(&caps, &mem));
        if result.is_ok() {
            assert_invariants(&v, &caps)?;
        }
        // The groups agree with check_all.
        let groups = check_controls(&v, &ctx(&caps, &mem))
            .and_then(|()| check_host_state(&v, &ctx(&caps, &mem)))
            .and_then(|()| check_guest_state(&v, &ctx(&caps, &mem)));
        prop_assert_eq!(groups, result);
        // Failure kinds match their group.
        match result {
            Err(EntryFailure::VmFail { error, .. }) => prop_assert!(
                error == ERR_CONTROLS || error == ERR_HOST
            ),
            Err(EntryFailure::InvalidGuestState { qualification, .. }) => prop_assert!(
                [0, 2, 3, 4].contains(&qualification)
            ),
            Ok(()) => {}
        }
    }

    #[test]
    fn many_mutations_never_panic(
        which in 0usize..3,
        muts in proptest::collection::vec((0..F::COUNT, any::<u64>()), 1..12),
        width in 0u8..=70,
        in_ia32e in any::<bool>(),
    ) {
        let [a, b, c] = fixtures();
        let (caps, mut v) = match which {
            0 => a,
            1 => b,
            _ => c,
        };
        for (i, value) in muts {
            v.write(F::ALL[i], value);
        }
        let mem = memory();
        let mut cx = ctx(&caps, &mem);
        cx.maxphyaddr = width;
        cx.in_ia32e_mode = in_ia32e;
        let _ = check_all(&v, &cx);
    }

    #[test]
    fn random_vmcs_and_caps_never_panic(
        values in proptest::collection::vec(any::<u64>(), F::COUNT),
        msrs in proptest::array::uniform18(any::<u64>()),
        width in any::<u8>(),
    ) {
        let mut v = MemVmcs::new();
        for (f, value) in F::ALL.iter().zip(values) {
            v.write(*f, value);
        }
        let caps = VmxCaps::read(|m| {
            m.checked_sub(0x480)
                .and_then(|i| msrs.get(i as usize).copied())
                .unwrap_or(0)
        });
        let mem = SparseMemory::new();
        let cx = CheckCtx::new(&caps, &mem, width, 0x2b);
        let _ = check_all(&v, &cx);
    }
}
