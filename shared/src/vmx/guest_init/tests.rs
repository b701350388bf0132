//! Host tests of L0's VMCS01 guest state against the VM-entry checks (the
//! entry guard of issue 7): what L0 enters passes; each breakage an
//! emulation bug would make fails with the rule named; the cheap check L0
//! runs after writes of "event" fields gives the full check's verdict.

use super::*;
use crate::mem::SparseMemory;
use crate::vmx::MemVmcs;
use crate::vmx::caps::tests::bochs_caps;
use crate::vmx::controls::{PinBased, PrimaryProcBased, SecondaryProcBased};
use crate::vmx::nested::entry_checks::arch::*;
use crate::vmx::nested::entry_checks::{
    CheckCtx, EntryFailure, GuestScope, check_guest_events, check_guest_state, guest_scope,
};
use crate::vmx::{FieldGroup, VmcsField};
use proptest::prelude::*;

const MAXPHYADDR: u8 = 39;
const BOOT_SECTOR: u64 = 0x7c00;

/// The controls L0 requests for VMCS01 (`hypervisor/src/vmcs01.rs`,
/// `Controls::from_caps`), adjusted to Bochs's capabilities.
fn write_l0_controls(v: &mut MemVmcs, caps: &VmxCaps) {
    let pin = caps
        .pin
        .effective()
        .require((PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits())
        .unwrap();
    let proc = caps
        .proc
        .effective()
        .require(
            (PrimaryProcBased::USE_MSR_BITMAPS | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS)
                .bits(),
        )
        .unwrap();
    let proc2 = caps
        .proc2
        .require(
            (SecondaryProcBased::ENABLE_EPT
                | SecondaryProcBased::ENABLE_VPID
                | SecondaryProcBased::UNRESTRICTED_GUEST)
                .bits(),
        )
        .unwrap();
    let entry = caps
        .entry
        .effective()
        .require(
            (EntryControls::LOAD_IA32_PAT
                | EntryControls::LOAD_IA32_EFER
                | EntryControls::LOAD_DEBUG_CONTROLS)
                .bits(),
        )
        .unwrap();
    v.write(F::PinBasedVmExecControls, pin.into());
    v.write(F::PrimaryProcBasedVmExecControls, proc.into());
    v.write(F::SecondaryProcBasedVmExecControls, proc2.into());
    v.write(F::VmEntryControls, entry.into());
    v.write(F::VmcsLinkPointer, u64::MAX);
    v.write(F::VmEntryInterruptionInfo, 0);
}

/// VMCS01 as L0 enters the guest at the boot sector.
fn boot_vmcs01(caps: &VmxCaps) -> MemVmcs {
    let mut v = MemVmcs::new();
    write_l0_controls(&mut v, caps);
    write_boot_sector_state(&mut v, caps, BOOT_SECTOR);
    v
}

/// The same guest after it entered 64-bit mode (flat segments, a 64-bit
/// TSS), as L0's CR0/CR4/EFER emulation leaves VMCS01.
fn long_mode_vmcs01(caps: &VmxCaps) -> MemVmcs {
    let mut v = boot_vmcs01(caps);
    v.write(F::GuestCr0, cr0_real(caps, cr0::PE | cr0::ET | cr0::PG));
    v.write(F::GuestCr4, cr4_real(caps, CR4_PAE));
    v.write(F::GuestCr3, 0x1000);
    v.write(F::GuestIa32Efer, EFER_LME | EFER_LMA);
    v.set_bits(
        F::VmEntryControls,
        u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
    );
    let seg = |v: &mut MemVmcs, s: Seg, sel: u64, ar: u64| {
        let [fs, fb, fl, fa] = s.fields();
        v.write(fs, sel);
        v.write(fb, 0);
        v.write(fl, 0xffff_ffff);
        v.write(fa, ar);
    };
    seg(&mut v, Seg::Cs, 0x08, 0xa09b);
    for s in [Seg::Ss, Seg::Ds, Seg::Es, Seg::Fs, Seg::Gs] {
        seg(&mut v, s, 0x10, 0xc093);
    }
    v.write(F::GuestTrSelector, 0x18);
    v.write(F::GuestTrLimit, 0x67);
    v.write(F::GuestLdtrAccessRights, u64::from(AR_UNUSABLE));
    v.write(F::GuestRip, 0xffff_ffff_8000_0000);
    v
}

fn check(v: &MemVmcs, caps: &VmxCaps) -> Result<(), EntryFailure> {
    let mem = SparseMemory::new();
    check_guest_state(
        v,
        &CheckCtx::new(caps, &mem, MAXPHYADDR, caps.basic.revision_id),
    )
}

fn events(v: &MemVmcs, caps: &VmxCaps) -> Result<(), EntryFailure> {
    let mem = SparseMemory::new();
    check_guest_events(
        v,
        &CheckCtx::new(caps, &mem, MAXPHYADDR, caps.basic.revision_id),
    )
}

#[track_caller]
fn assert_fails(v: &MemVmcs, caps: &VmxCaps, section: &str, rule: &str) {
    let e = check(v, caps).expect_err(rule);
    let (s, r) = e.rule();
    assert_eq!(s, section, "{r}");
    assert!(r.contains(rule), "expected {rule:?}, got {r:?}");
}

#[test]
fn what_l0_enters_passes() {
    let caps = bochs_caps();
    let boot = boot_vmcs01(&caps);
    assert_eq!(check(&boot, &caps), Ok(()));
    assert_eq!(events(&boot, &caps), Ok(()));
    // An AP waiting for the guest's SIPI, and a CPU after INIT.
    let mut ap = boot.clone();
    write_init_state(&mut ap, &caps);
    assert_eq!(check(&ap, &caps), Ok(()));
    ap.write(F::GuestActivityState, activity::WAIT_FOR_SIPI);
    assert_eq!(check(&ap, &caps), Ok(()));
    assert_eq!(check(&long_mode_vmcs01(&caps), &caps), Ok(()));
}

#[test]
fn emulation_breakages_are_named() {
    let caps = bochs_caps();
    let boot = boot_vmcs01(&caps);

    let mut v = boot.clone();
    v.write(F::GuestCr0, v.read(F::GuestCr0) | cr0::PG);
    assert_fails(&v, &caps, "27.3.1.1", "guest CR0.PG 1 with CR0.PE 0");

    let mut v = long_mode_vmcs01(&caps);
    v.clear_bits(F::GuestCr4, CR4_PAE);
    assert_fails(
        &v,
        &caps,
        "27.3.1.1",
        "\"IA-32e mode guest\" without CR0.PG and CR4.PAE",
    );

    let mut v = long_mode_vmcs01(&caps);
    v.clear_bits(
        F::VmEntryControls,
        u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
    );
    assert_fails(&v, &caps, "27.3.1.1", "IA32_EFER.LMA differs");

    let mut v = long_mode_vmcs01(&caps);
    v.write(F::GuestRip, 0x0000_8000_0000_0000);
    assert_fails(&v, &caps, "27.3.1.4", "RIP not canonical in 64-bit mode");

    // `skip_instruction` without the 4-GiB wrap.
    let mut v = boot.clone();
    v.write(F::GuestRip, 0x1_0000_0001);
    assert_fails(
        &v,
        &caps,
        "27.3.1.4",
        "RIP bits 63:32 set outside 64-bit mode",
    );

    for bit in [3, 5, 15, 22] {
        let mut v = boot.clone();
        v.set_bits(F::GuestRflags, 1 << bit);
        assert_fails(&v, &caps, "27.3.1.4", "RFLAGS reserved bits");
    }
    let mut v = boot.clone();
    v.clear_bits(F::GuestRflags, RFLAGS_FIXED1);
    assert_fails(&v, &caps, "27.3.1.4", "RFLAGS reserved bits");

    let mut v = boot.clone();
    v.clear_bits(F::GuestRflags, RFLAGS_IF);
    v.write(F::GuestInterruptibilityState, 1);
    assert_fails(&v, &caps, "27.3.1.5", "blocking by STI with RFLAGS.IF 0");

    // A single step after STI without the pending BS bit (issue 7, 2).
    let mut v = boot.clone();
    v.set_bits(F::GuestRflags, RFLAGS_TF);
    v.write(F::GuestInterruptibilityState, 1);
    assert_fails(&v, &caps, "27.3.1.5", "pending debug exceptions BS differs");
    v.write(F::GuestPendingDebugExceptions, 1 << 14);
    assert_eq!(check(&v, &caps), Ok(()));

    // The failures of event fields are the cheap check's too.
    let mut v = boot.clone();
    v.write(F::GuestRip, 0x1_0000_0001);
    assert!(events(&v, &caps).is_err());
}

#[test]
fn failure_rule_splits_section_and_text() {
    let caps = bochs_caps();
    let mut v = boot_vmcs01(&caps);
    v.write(F::GuestCr0, v.read(F::GuestCr0) | cr0::PG);
    let e = check(&v, &caps).unwrap_err();
    assert_eq!(e.rule(), ("27.3.1.1", "guest CR0.PG 1 with CR0.PE 0"));
}

#[test]
fn scope_classes() {
    for &f in VmcsField::ALL {
        let s = guest_scope(f);
        match f.group() {
            FieldGroup::Guest => assert_ne!(s, GuestScope::None, "{f:?}"),
            FieldGroup::Host | FieldGroup::ExitInfo => assert_eq!(s, GuestScope::None, "{f:?}"),
            FieldGroup::Control => {}
        }
    }
    assert_eq!(guest_scope(F::GuestRip), GuestScope::Events);
    assert_eq!(guest_scope(F::GuestCr0), GuestScope::All);
    assert_eq!(guest_scope(F::VmEntryControls), GuestScope::All);
    assert_eq!(guest_scope(F::ExceptionBitmap), GuestScope::None);
}

/// The fields of [`GuestScope::Events`].
fn event_fields() -> Vec<F> {
    VmcsField::ALL
        .iter()
        .copied()
        .filter(|&f| guest_scope(f) == GuestScope::Events)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    /// What the entry guard relies on: after writes of event fields only,
    /// the cheap check gives the full check's verdict (same rule).
    #[test]
    fn events_check_agrees_with_the_full_check(
        long in any::<bool>(),
        muts in proptest::collection::vec(
            (0usize..64, any::<u64>(), 0u32..64, 0u8..4), 1..4),
    ) {
        let caps = bochs_caps();
        let mut v = if long { long_mode_vmcs01(&caps) } else { boot_vmcs01(&caps) };
        let fields = event_fields();
        for (i, random, bit, how) in muts {
            let f = fields[i % fields.len()];
            let old = v.read(f);
            let new = match how {
                0 => random,
                1 => old ^ (1 << bit),
                2 => 1 << (bit % 32),
                _ => 0,
            };
            v.write(f, new);
        }
        let full = check(&v, &caps).map_err(|e| e.check());
        let cheap = events(&v, &caps).map_err(|e| e.check());
        prop_assert_eq!(cheap, full);
    }
}
