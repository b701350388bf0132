//! SDM 27.2.1.1 "VM-Execution Control Fields": reserved control bits
//! against the capability MSRs, the CR3-target count, bitmap addresses,
//! the NMI controls, EPTP, unrestricted guest and VPID. Every failure is
//! VMfailValid(7).

use lhv::negative_cases::{Outcome, Skip, forbidden_bit, forced_bit};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::{PinBased, PrimaryProcBased, SecondaryProcBased};

use super::{Case, Env, Group, Page};

/// Two zeroed 4-KiB I/O bitmaps (no I/O exits).
static IO_BITMAP_A: Page = Page::new();
static IO_BITMAP_B: Page = Page::new();
/// A zeroed page standing for an EPT PML4 (no case walks it).
static EPT_PML4: Page = Page::new();

/// A zeroed virtual-APIC page (TPR shadow 0).
static VIRTUAL_APIC: Page = Page::new();

/// EPTP memory type WB, 4-level walk (SDM 25.6.11).
const EPTP_WB_4LEVEL: u64 = 6 | (3 << 3);
/// EPTP bit 6: enable accessed and dirty flags for EPT (SDM 25.6.11).
const EPTP_ACCESSED_DIRTY: u64 = 1 << 6;

fn pin_forbidden_bit(e: &mut Env) {
    if let Some(b) = forbidden_bit(e.caps.pin.effective().allowed1) {
        e.set_bits(F::PinBasedVmExecControls, b.into());
    }
}

fn pin_reserved_rule(e: &Env) -> Result<Outcome, Skip> {
    forbidden_bit(e.caps.pin.effective().allowed1)
        .map(|_| Outcome::CONTROLS)
        .ok_or(Skip::Unsupported("every pin-based control may be 1"))
}

fn proc_forced_bit_clear(e: &mut Env) {
    if let Some(b) = forced_bit(e.caps.proc.effective().allowed0) {
        e.clear_bits(F::PrimaryProcBasedVmExecControls, b.into());
    }
}

fn proc_forced_rule(e: &Env) -> Result<Outcome, Skip> {
    forced_bit(e.caps.proc.effective().allowed0)
        .map(|_| Outcome::CONTROLS)
        .ok_or(Skip::Unsupported("no processor-based control must be 1"))
}

fn cr3_targets_beyond(e: &mut Env) {
    let n = e.caps.misc.cr3_target_count;
    e.write(F::Cr3TargetCount, u64::from(n) + 1);
}

fn io_bitmaps_on(e: &mut Env, a: u64, b: u64) {
    e.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_IO_BITMAPS.bits().into(),
    );
    e.write(F::IoBitmapAAddress, a);
    e.write(F::IoBitmapBAddress, b);
}

fn io_bitmap_a_unaligned(e: &mut Env) {
    io_bitmaps_on(e, IO_BITMAP_A.pa() + 0x800, IO_BITMAP_B.pa());
}

fn io_bitmap_b_beyond_width(e: &mut Env) {
    let far = lhv::negative_cases::beyond_phys_width(e.max_phys);
    io_bitmaps_on(e, IO_BITMAP_A.pa(), far);
}

fn io_bitmaps_ignored_when_off(e: &mut Env) {
    e.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_IO_BITMAPS.bits().into(),
    );
    e.write(F::IoBitmapAAddress, u64::MAX);
    e.write(F::IoBitmapBAddress, u64::MAX);
}

fn io_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.allows(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_IO_BITMAPS.bits(),
    ) {
        Ok(Outcome::CONTROLS)
    } else {
        Err(Skip::Unsupported("no I/O bitmaps"))
    }
}

fn msr_bitmap_unaligned(e: &mut Env) {
    let pa = e.read(F::MsrBitmapAddress);
    e.write(F::MsrBitmapAddress, pa + 8);
}

fn virtual_nmis_without_nmi_exiting(e: &mut Env) {
    e.set_bits(
        F::PinBasedVmExecControls,
        PinBased::VIRTUAL_NMIS.bits().into(),
    );
    e.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::NMI_EXITING.bits().into(),
    );
}

fn virtual_nmi_rule(e: &Env) -> Result<Outcome, Skip> {
    if !e.allows(F::PinBasedVmExecControls, PinBased::VIRTUAL_NMIS.bits()) {
        return Err(Skip::Unsupported("no virtual NMIs"));
    }
    Ok(Outcome::CONTROLS)
}

fn nmi_window_without_virtual_nmis(e: &mut Env) {
    e.set_bits(
        F::PinBasedVmExecControls,
        PinBased::NMI_EXITING.bits().into(),
    );
    e.clear_bits(
        F::PinBasedVmExecControls,
        PinBased::VIRTUAL_NMIS.bits().into(),
    );
    e.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::NMI_WINDOW_EXITING.bits().into(),
    );
}

fn nmi_window_rule(e: &Env) -> Result<Outcome, Skip> {
    if !e.allows(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::NMI_WINDOW_EXITING.bits(),
    ) {
        return Err(Skip::Unsupported("no NMI-window exiting"));
    }
    Ok(Outcome::CONTROLS)
}

fn secondary_rule(e: &Env, bits: SecondaryProcBased, what: &'static str) -> Result<Outcome, Skip> {
    if e.caps.proc2.can_set(bits.bits()) {
        Ok(Outcome::CONTROLS)
    } else {
        Err(Skip::Unsupported(what))
    }
}

fn ept_rule(e: &Env) -> Result<Outcome, Skip> {
    secondary_rule(e, SecondaryProcBased::ENABLE_EPT, "no EPT")
}

fn ept_with(e: &mut Env, eptp: u64) {
    e.set_secondary(SecondaryProcBased::ENABLE_EPT.bits());
    e.write(F::EptPointer, EPT_PML4.pa() | eptp);
}

fn eptp_memory_type_reserved(e: &mut Env) {
    // Memory type 2 is reserved (SDM 25.6.11: UC 0 or WB 6 as allowed).
    ept_with(e, 2 | (3 << 3));
}

fn eptp_walk_length_2(e: &mut Env) {
    // Bits 5:3 = walk length - 1; a 2-level walk is never supported.
    ept_with(e, 6 | (1 << 3));
}

fn eptp_reserved_bits(e: &mut Env) {
    // Bits 11:7 are reserved (bit 6: A/D flags).
    ept_with(e, EPTP_WB_4LEVEL | (1 << 7));
}

fn eptp_accessed_dirty(e: &mut Env) {
    ept_with(e, EPTP_WB_4LEVEL | EPTP_ACCESSED_DIRTY);
}

/// SDM 27.2.1.1: EPTP bit 6 must be 0 if bit 21 of IA32_VMX_EPT_VPID_CAP
/// is 0. Bochs offers A/D flags (the EPTP is then valid: the case cannot
/// fail and is skipped); L0 hides them, so under L0 it is VMfailValid 7.
fn accessed_dirty_rule(e: &Env) -> Result<Outcome, Skip> {
    ept_rule(e)?;
    if e.caps.ept_vpid.accessed_dirty {
        Err(Skip::Unsupported(
            "EPT A/D flags are offered (IA32_VMX_EPT_VPID_CAP bit 21), so EPTP bit 6 is valid",
        ))
    } else {
        Ok(Outcome::CONTROLS)
    }
}

fn unrestricted_guest_without_ept(e: &mut Env) {
    e.set_secondary(SecondaryProcBased::UNRESTRICTED_GUEST.bits());
}

fn unrestricted_rule(e: &Env) -> Result<Outcome, Skip> {
    secondary_rule(
        e,
        SecondaryProcBased::UNRESTRICTED_GUEST,
        "no unrestricted guest",
    )
}

fn tpr_shadow_on(e: &mut Env, page: u64, threshold: u64) {
    e.set_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_TPR_SHADOW.bits().into(),
    );
    e.write(F::VirtualApicAddress, page);
    e.write(F::TprThreshold, threshold);
}

fn virtual_apic_unaligned(e: &mut Env) {
    VIRTUAL_APIC.clear();
    tpr_shadow_on(e, VIRTUAL_APIC.pa() + 0x80, 0);
}

fn tpr_threshold_bits_31_4(e: &mut Env) {
    VIRTUAL_APIC.clear();
    tpr_shadow_on(e, VIRTUAL_APIC.pa(), 0x10);
}

fn tpr_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.allows(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_TPR_SHADOW.bits(),
    ) {
        Ok(Outcome::CONTROLS)
    } else {
        Err(Skip::Unsupported("no TPR shadow"))
    }
}

fn x2apic_mode_without_tpr_shadow(e: &mut Env) {
    e.clear_bits(
        F::PrimaryProcBasedVmExecControls,
        PrimaryProcBased::USE_TPR_SHADOW.bits().into(),
    );
    e.set_secondary(SecondaryProcBased::VIRTUALIZE_X2APIC_MODE.bits());
}

fn x2apic_rule(e: &Env) -> Result<Outcome, Skip> {
    secondary_rule(
        e,
        SecondaryProcBased::VIRTUALIZE_X2APIC_MODE,
        "no x2APIC virtualization",
    )
}

fn vpid_zero(e: &mut Env) {
    e.set_secondary(SecondaryProcBased::ENABLE_VPID.bits());
    e.write(F::VirtualProcessorId, 0);
}

fn vpid_rule(e: &Env) -> Result<Outcome, Skip> {
    secondary_rule(e, SecondaryProcBased::ENABLE_VPID, "no VPID")
}

pub const GROUP: Group = Group {
    section: "27.2.1.1 VM-execution control fields",
    cases: &[
        Case::launch("baseline-valid-vmcs", |_| {}, Outcome::Success),
        Case::launch_if("pin-reserved-bit-set", pin_forbidden_bit, pin_reserved_rule),
        Case::launch_if(
            "proc-default1-bit-clear",
            proc_forced_bit_clear,
            proc_forced_rule,
        ),
        Case::launch(
            "cr3-target-count-beyond",
            cr3_targets_beyond,
            Outcome::CONTROLS,
        ),
        Case::launch_if("io-bitmap-a-unaligned", io_bitmap_a_unaligned, io_rule),
        Case::launch_if(
            "io-bitmap-b-beyond-width",
            io_bitmap_b_beyond_width,
            io_rule,
        ),
        Case::launch(
            "io-bitmaps-ignored-when-off",
            io_bitmaps_ignored_when_off,
            Outcome::Success,
        ),
        Case::launch(
            "msr-bitmap-unaligned",
            msr_bitmap_unaligned,
            Outcome::CONTROLS,
        ),
        Case::launch_if(
            "virtual-nmis-without-nmi-exiting",
            virtual_nmis_without_nmi_exiting,
            virtual_nmi_rule,
        ),
        Case::launch_if(
            "nmi-window-without-virtual-nmis",
            nmi_window_without_virtual_nmis,
            nmi_window_rule,
        ),
        Case::launch_if(
            "eptp-memory-type-reserved",
            eptp_memory_type_reserved,
            ept_rule,
        ),
        Case::launch_if("eptp-walk-length-2", eptp_walk_length_2, ept_rule),
        Case::launch_if("eptp-reserved-bit-7", eptp_reserved_bits, ept_rule),
        Case::launch_if(
            "eptp-accessed-dirty-hidden",
            eptp_accessed_dirty,
            accessed_dirty_rule,
        ),
        Case::launch_if(
            "unrestricted-guest-without-ept",
            unrestricted_guest_without_ept,
            unrestricted_rule,
        ),
        Case::launch_if("vpid-zero", vpid_zero, vpid_rule),
        Case::launch_if("virtual-apic-unaligned", virtual_apic_unaligned, tpr_rule),
        Case::launch_if("tpr-threshold-bits-31-4", tpr_threshold_bits_31_4, tpr_rule),
        Case::launch_if(
            "x2apic-mode-without-tpr-shadow",
            x2apic_mode_without_tpr_shadow,
            x2apic_rule,
        ),
    ],
};
