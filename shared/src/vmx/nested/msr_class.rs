//! Classes of MSRs for L0's emulation of VMCS12's MSR areas, entry by entry
//! (as KVM's `nested_vmx_load_msr` does), never by pointing the processor
//! at L1's memory: a hardware MSR load would skip L0's checks and would
//! load MSRs that L0 must own, and a partly valid area (MTRR, 0xdead,
//! MTRR) would not fail at the same entry as on hardware (see
//! ../shared/notes/guest-hypervisor-msr-load-store.md).
//!
//! SDM Vol. 3C: 27.4 "Loading MSRs" (VM entry), 28.4 "Saving MSRs" and
//! 28.6 "Loading MSRs" (VM exit), 27.3.2.1 and 28.3.1 for the MSRs held in
//! guest-state fields. The structural rules of an area entry (reserved
//! bits, FS/GS base, x2APIC MSRs, SMM-only MSRs) are
//! [`crate::msr_area::check_entry`]'s; this module adds what depends on
//! the MSR and its value.
//!
//! What L0 does with each class (VMCS02 for L2's MSRs, VMCS01 for L1's):
//!
//! | class         | VM-entry load (L2)       | VM-exit store (L2)      | VM-exit load (L1)        |
//! |---------------|--------------------------|-------------------------|--------------------------|
//! | `VmcsField`   | write VMCS02's field     | read VMCS02's field     | write VMCS01's field     |
//! | `Mtrr`        | L0's WRMSR emulation     | L0's RDMSR emulation    | L0's WRMSR emulation     |
//! | `L0Owned`     | [`load_check`], then L0's WRMSR emulation for L1 | L0's RDMSR emulation | as VM-entry load |
//! | `Passthrough` | WRMSR (with #GP fixup)   | RDMSR (with #GP fixup)  | WRMSR (with #GP fixup)   |
//!
//! A `VmcsField` MSR goes through the field only when the VM entry loads
//! it ([`loaded_on_entry`] with VMCS02's VM-entry controls) or the VM exit
//! saves it ([`saved_on_exit`]); otherwise the processor leaves the MSR
//! alone and L0 treats it as `Passthrough`. IA32_EFER is the exception:
//! L0 always runs its VMCSs with "load IA32_EFER" (a root-mode WRMSR of
//! L1's EFER would take L0 out of IA-32e mode).
//!
//! A WRMSR that would #GP makes the VM-entry load fail (exit reason 34,
//! qualification = the entry's 1-based index) and a VM-exit load or store
//! a VMX abort; [`load_check`] gives that answer where L0 knows it without
//! asking the hardware.

use crate::ept::MemoryType;
use crate::msr_area::{self, AreaKind, MsrEntry};
use crate::mtrr;
use crate::vmx::VmcsField;
use crate::vmx::caps::msr as vmx_msr;
use crate::vmx::controls::{EntryControls, ExitControls};
use crate::x86::{efer, msr};

/// The last VMX capability MSR, IA32_VMX_EXIT_CTLS2 (493H; SDM Vol. 4,
/// Table 2-2). 480H-493H are read-only.
pub const VMX_CAPABILITY_LAST: u32 = 0x493;
/// The PAT memory type UC- (7), valid in IA32_PAT but not in MTRRs or EPT.
pub const PAT_UNCACHED_MINUS: u8 = 7;
/// The IA32_EFER bits that exist on Intel processors.
pub const EFER_DEFINED: u64 = efer::SCE | efer::LME | efer::LMA | efer::NXE;

/// How L0 treats an MSR named in one of VMCS12's MSR areas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrClass {
    /// Held in a guest-state field of the VMCS (IA32_EFER, IA32_PAT,
    /// IA32_SYSENTER_CS/ESP/EIP, IA32_DEBUGCTL, IA32_PERF_GLOBAL_CTRL,
    /// IA32_BNDCFGS, IA32_RTIT_CTL, IA32_LBR_CTL, IA32_PKRS, the CET MSRs,
    /// and FS/GS base, which no area may load but a store area may save).
    VmcsField(VmcsField),
    /// Emulated by L0 per vCPU: IA32_MTRRCAP (read-only), IA32_MTRR_DEF_TYPE,
    /// the fixed ranges and the variable ranges L0 knows (L0's MTRR
    /// emulation rejects the ranges this processor lacks, as WRMSR would).
    Mtrr,
    /// Owned by L0 and never loaded from L1's areas into the hardware:
    /// IA32_FEATURE_CONTROL, the VMX capability MSRs (480H-493H),
    /// IA32_APIC_BASE, the x2APIC MSRs (800H-8FFH, illegal in areas),
    /// IA32_SMM_MONITOR_CTL, IA32_SMBASE, the SMRRs and the microcode MSRs
    /// (IA32_BIOS_UPDT_TRIG, IA32_BIOS_SIGN_ID). Those L0 emulates for L1's
    /// RDMSR and WRMSR ([`emulated_for_l1`]) go through that emulation in
    /// an area too; the others fail to load (and store what L0's RDMSR
    /// emulation gives, if anything).
    L0Owned,
    /// Context-switched by nobody: read from and written to the hardware
    /// (IA32_STAR, IA32_LSTAR, IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE,
    /// IA32_TSC_AUX, IA32_SPEC_CTRL, IA32_TSC, ... and MSRs that do not
    /// exist, whose WRMSR/RDMSR #GP gives the hardware's failure).
    Passthrough,
}

/// The class of MSR `msr`.
pub fn classify(msr: u32) -> MsrClass {
    if let Some(field) = guest_field(msr) {
        return MsrClass::VmcsField(field);
    }
    if is_mtrr(msr) {
        return MsrClass::Mtrr;
    }
    if is_l0_owned(msr) {
        return MsrClass::L0Owned;
    }
    MsrClass::Passthrough
}

/// The guest-state field that holds `msr` (SDM 25.4.2 "Guest Non-Register
/// State" and 25.4.1 for FS/GS base), if any.
pub const fn guest_field(msr: u32) -> Option<VmcsField> {
    use VmcsField as F;
    Some(match msr {
        msr::IA32_SYSENTER_CS => F::GuestIa32SysenterCs,
        msr::IA32_SYSENTER_ESP => F::GuestIa32SysenterEsp,
        msr::IA32_SYSENTER_EIP => F::GuestIa32SysenterEip,
        msr::IA32_DEBUGCTL => F::GuestIa32Debugctl,
        msr::IA32_PAT => F::GuestIa32Pat,
        msr::IA32_PERF_GLOBAL_CTRL => F::GuestIa32PerfGlobalCtrl,
        msr::IA32_RTIT_CTL => F::GuestIa32RtitCtl,
        msr::IA32_S_CET => F::GuestIa32SCet,
        msr::IA32_INTERRUPT_SSP_TABLE_ADDR => F::GuestIa32InterruptSspTableAddr,
        msr::IA32_PKRS => F::GuestIa32Pkrs,
        msr::IA32_BNDCFGS => F::GuestIa32Bndcfgs,
        msr::IA32_LBR_CTL => F::GuestIa32LbrCtl,
        msr::IA32_EFER => F::GuestIa32Efer,
        msr::IA32_FS_BASE => F::GuestFsBase,
        msr::IA32_GS_BASE => F::GuestGsBase,
        _ => return None,
    })
}

/// Whether `msr` is one of the MTRRs L0 emulates (the variable ranges up
/// to [`mtrr::MAX_VARIABLE`], as L0's MSR bitmap traps them).
fn is_mtrr(msr: u32) -> bool {
    let variable_end = mtrr::IA32_MTRR_PHYSBASE0 + 2 * mtrr::MAX_VARIABLE as u32;
    msr == mtrr::IA32_MTRRCAP
        || msr == mtrr::IA32_MTRR_DEF_TYPE
        || mtrr::FIXED_MSRS.contains(&msr)
        || (mtrr::IA32_MTRR_PHYSBASE0..variable_end).contains(&msr)
}

/// Whether L0 emulates L1's RDMSR and WRMSR of the L0-owned `msr` with
/// the hardware's answers (IA32_APIC_BASE: a virtual global enable, the
/// SDM's #GP rules). An area entry for it then gets the same answer as
/// L1's WRMSR or RDMSR of it (SDM 27.4 fails a load only where WRMSR
/// would #GP; 28.4 stores what RDMSR reads). Found by LHV's hostile-L1
/// suite (`msr-load-apic-base-unchanged`): a load of IA32_APIC_BASE with
/// the value it held failed with exit reason 34.
pub const fn emulated_for_l1(msr: u32) -> bool {
    msr == msr::IA32_APIC_BASE
}

fn is_l0_owned(msr: u32) -> bool {
    matches!(
        msr,
        msr::IA32_FEATURE_CONTROL
            | msr::IA32_APIC_BASE
            | msr::IA32_BIOS_UPDT_TRIG
            | msr::IA32_BIOS_SIGN_ID
            | msr::IA32_SMRR_PHYSBASE
            | msr::IA32_SMRR_PHYSMASK
            | msr_area::IA32_SMM_MONITOR_CTL
            | msr_area::IA32_SMBASE
    ) || (vmx_msr::IA32_VMX_BASIC..=VMX_CAPABILITY_LAST).contains(&msr)
        || (msr::X2APIC_FIRST..=msr::X2APIC_LAST).contains(&msr)
}

/// Whether a VM entry with `entry` controls loads the MSR held in `field`
/// from the guest-state area (SDM 27.3.2.1 "Loading Guest Control
/// Registers, Debug Registers, and MSRs"); `false` for fields that hold no
/// MSR. SYSENTER and FS/GS base are always loaded.
pub const fn loaded_on_entry(field: VmcsField, entry: EntryControls) -> bool {
    use VmcsField as F;
    let needed = match field {
        F::GuestIa32SysenterCs
        | F::GuestIa32SysenterEsp
        | F::GuestIa32SysenterEip
        | F::GuestFsBase
        | F::GuestGsBase => return true,
        F::GuestIa32Debugctl => EntryControls::LOAD_DEBUG_CONTROLS,
        F::GuestIa32Pat => EntryControls::LOAD_IA32_PAT,
        F::GuestIa32Efer => EntryControls::LOAD_IA32_EFER,
        F::GuestIa32PerfGlobalCtrl => EntryControls::LOAD_IA32_PERF_GLOBAL_CTRL,
        F::GuestIa32Bndcfgs => EntryControls::LOAD_IA32_BNDCFGS,
        F::GuestIa32RtitCtl => EntryControls::LOAD_IA32_RTIT_CTL,
        F::GuestIa32LbrCtl => EntryControls::LOAD_IA32_LBR_CTL,
        F::GuestIa32Pkrs => EntryControls::LOAD_PKRS,
        F::GuestIa32SCet | F::GuestIa32InterruptSspTableAddr => EntryControls::LOAD_CET_STATE,
        _ => return false,
    };
    entry.contains(needed)
}

/// Whether a VM exit with `exit` controls saves the MSR held in `field`
/// into the guest-state area (SDM 28.3.1 "Saving Control Registers, Debug
/// Registers, and MSRs"). SYSENTER and FS/GS base are always saved. The
/// MSRs whose saving depends on the processor's capabilities rather than
/// on a control (IA32_BNDCFGS, IA32_RTIT_CTL, IA32_LBR_CTL, IA32_PKRS, CET)
/// answer `false`: the hardware still holds L2's value after the exit
/// while VMCS02 does not clear or load them, so L0 reads the MSR.
pub const fn saved_on_exit(field: VmcsField, exit: ExitControls) -> bool {
    use VmcsField as F;
    let needed = match field {
        F::GuestIa32SysenterCs
        | F::GuestIa32SysenterEsp
        | F::GuestIa32SysenterEip
        | F::GuestFsBase
        | F::GuestGsBase => return true,
        F::GuestIa32Debugctl => ExitControls::SAVE_DEBUG_CONTROLS,
        F::GuestIa32Pat => ExitControls::SAVE_IA32_PAT,
        F::GuestIa32Efer => ExitControls::SAVE_IA32_EFER,
        F::GuestIa32PerfGlobalCtrl => ExitControls::SAVE_IA32_PERF_GLOBAL_CTL,
        _ => return false,
    };
    exit.contains(needed)
}

/// What the processor would answer to loading an MSR-area entry, as far as
/// L0 knows without asking the hardware.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoadCheck {
    /// The load succeeds on every processor with this MSR.
    Accepted,
    /// The load fails: the entry breaks an area rule, or WRMSR at CPL 0
    /// would #GP (SDM 27.4). A VM-entry load then fails with exit reason 34
    /// and this entry's 1-based index; a VM-exit load is a VMX abort.
    Fails,
    /// The answer depends on state read at the time (CPUID, MAXPHYADDR,
    /// L2's CR0, the MTRR count, the APIC mode) or on the hardware itself:
    /// the class's emulation decides, or a WRMSR with a #GP fixup.
    Depends,
}

/// Checks one entry of a load area (`kind` is [`AreaKind::EntryLoad`] or
/// [`AreaKind::ExitLoad`]; a store area only gets the structural rules)
/// with the area rules of [`msr_area::check_entry`] and the hardware's
/// answers L0 knows:
///
/// - the VMX capability MSRs and IA32_MTRRCAP are read-only (#GP);
/// - IA32_FEATURE_CONTROL is locked, as L0 reports it (#GP);
/// - IA32_SMBASE and the SMRRs are accessible only in SMM (#GP);
/// - IA32_EFER with a reserved bit set (#GP); whether NXE is supported and
///   whether LME may change (CR0.PG) depend on the CPU and L2's state;
/// - IA32_PAT with a reserved memory type in any entry (#GP).
pub fn load_check(kind: AreaKind, entry: &MsrEntry) -> LoadCheck {
    if msr_area::check_entry(kind, entry).is_err() {
        return LoadCheck::Fails;
    }
    if matches!(kind, AreaKind::ExitStore) {
        return LoadCheck::Depends;
    }
    let value = entry.data;
    match entry.index {
        msr::IA32_FEATURE_CONTROL
        | mtrr::IA32_MTRRCAP
        | msr_area::IA32_SMBASE
        | msr::IA32_SMRR_PHYSBASE
        | msr::IA32_SMRR_PHYSMASK => LoadCheck::Fails,
        m if (vmx_msr::IA32_VMX_BASIC..=VMX_CAPABILITY_LAST).contains(&m) => LoadCheck::Fails,
        msr::IA32_EFER if value & !EFER_DEFINED != 0 => LoadCheck::Fails,
        // WRMSR of a non-canonical address is #GP (SDM Vol. 4 and the
        // instruction page; 48-bit linear addresses: L1 is offered no LA57).
        msr::IA32_SYSENTER_ESP
        | msr::IA32_SYSENTER_EIP
        | msr::IA32_KERNEL_GS_BASE
        | msr::IA32_LSTAR
        | msr::IA32_CSTAR
            if !crate::vmx::insn_info::is_canonical(value) =>
        {
            LoadCheck::Fails
        }
        msr::IA32_PAT if pat_is_valid(value) => LoadCheck::Accepted,
        msr::IA32_PAT => LoadCheck::Fails,
        _ => LoadCheck::Depends,
    }
}

/// Whether a VM-entry MSR-load entry for `msr` with `value` may succeed:
/// `false` exactly when [`load_check`] knows the load fails.
pub fn entry_load_allowed(msr: u32, value: u64) -> bool {
    load_check(AreaKind::EntryLoad, &MsrEntry::new(msr, value)) != LoadCheck::Fails
}

/// Whether every entry of an IA32_PAT value is a valid memory type (SDM
/// Vol. 3A, 13.12.2 "IA32_PAT MSR": 0, 1, 4, 5, 6 or 7 in bits 2:0 of each
/// byte, bits 7:3 reserved).
pub fn pat_is_valid(value: u64) -> bool {
    value
        .to_le_bytes()
        .iter()
        .all(|&t| MemoryType::from_bits(t).is_some() || t == PAT_UNCACHED_MINUS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::VmcsField as F;
    use proptest::prelude::*;

    #[test]
    fn non_canonical_addresses_fail_to_load() {
        let e = |m: u32, v: u64| load_check(AreaKind::EntryLoad, &MsrEntry::new(m, v));
        for m in [0x175, 0x176, 0xc000_0102, 0xc000_0082, 0xc000_0083] {
            assert_eq!(e(m, 0x8000_0000_0000), LoadCheck::Fails, "{m:#x}");
            assert_eq!(e(m, 1 << 60), LoadCheck::Fails, "{m:#x}");
            assert_ne!(e(m, 0xffff_8000_0000_1000), LoadCheck::Fails, "{m:#x}");
        }
    }

    #[test]
    fn vmcs_field_msrs() {
        for (m, f) in [
            (0x174, F::GuestIa32SysenterCs),
            (0x175, F::GuestIa32SysenterEsp),
            (0x176, F::GuestIa32SysenterEip),
            (0x1d9, F::GuestIa32Debugctl),
            (0x277, F::GuestIa32Pat),
            (0x38f, F::GuestIa32PerfGlobalCtrl),
            (0x570, F::GuestIa32RtitCtl),
            (0x6a2, F::GuestIa32SCet),
            (0x6a8, F::GuestIa32InterruptSspTableAddr),
            (0x6e1, F::GuestIa32Pkrs),
            (0xd90, F::GuestIa32Bndcfgs),
            (0x14ce, F::GuestIa32LbrCtl),
            (0xc000_0080, F::GuestIa32Efer),
            (0xc000_0100, F::GuestFsBase),
            (0xc000_0101, F::GuestGsBase),
        ] {
            assert_eq!(classify(m), MsrClass::VmcsField(f), "{m:#x}");
            assert_eq!(f.group(), crate::vmx::FieldGroup::Guest);
        }
    }

    #[test]
    fn mtrr_msrs() {
        for m in [
            0xfe, 0x2ff, 0x250, 0x258, 0x259, 0x26f, 0x200, 0x201, 0x20f, 0x21f,
        ] {
            assert_eq!(classify(m), MsrClass::Mtrr, "{m:#x}");
        }
        // IA32_PAT sits among the fixed ranges but is not an MTRR.
        assert_ne!(classify(0x277), MsrClass::Mtrr);
        assert_eq!(classify(0x220), MsrClass::Passthrough);
        assert_eq!(classify(0x1ff), MsrClass::Passthrough);
    }

    #[test]
    fn only_the_apic_base_is_emulated_among_the_l0_owned() {
        assert!(emulated_for_l1(msr::IA32_APIC_BASE));
        assert_eq!(classify(msr::IA32_APIC_BASE), MsrClass::L0Owned);
        for m in [0x3a, 0x79, 0x8b, 0x9b, 0x9e, 0x1f2, 0x480, 0x491, 0x830] {
            assert!(!emulated_for_l1(m), "{m:#x}");
        }
    }

    #[test]
    fn l0_owned_msrs() {
        for m in [
            0x1b, 0x3a, 0x79, 0x8b, 0x9b, 0x9e, 0x1f2, 0x1f3, 0x480, 0x48d, 0x491, 0x493, 0x800,
            0x830, 0x8ff,
        ] {
            assert_eq!(classify(m), MsrClass::L0Owned, "{m:#x}");
        }
        assert_eq!(classify(0x47f), MsrClass::Passthrough);
        assert_eq!(classify(0x494), MsrClass::Passthrough);
        assert_eq!(classify(0x7ff), MsrClass::Passthrough);
        assert_eq!(classify(0x900), MsrClass::Passthrough);
    }

    #[test]
    fn passthrough_msrs() {
        for m in [
            msr::IA32_STAR,
            msr::IA32_LSTAR,
            msr::IA32_CSTAR,
            msr::IA32_FMASK,
            msr::IA32_KERNEL_GS_BASE,
            msr::IA32_TSC_AUX,
            msr::IA32_SPEC_CTRL,
            0x10, // IA32_TSC
            0x402,
            0xdead,
            u32::MAX,
        ] {
            assert_eq!(classify(m), MsrClass::Passthrough, "{m:#x}");
        }
    }

    #[test]
    fn field_load_and_save_controls() {
        let none = EntryControls::empty();
        assert!(loaded_on_entry(F::GuestIa32SysenterEsp, none));
        assert!(loaded_on_entry(F::GuestFsBase, none));
        assert!(!loaded_on_entry(F::GuestIa32Efer, none));
        assert!(loaded_on_entry(
            F::GuestIa32Efer,
            EntryControls::LOAD_IA32_EFER
        ));
        assert!(!loaded_on_entry(
            F::GuestIa32Pat,
            EntryControls::LOAD_IA32_EFER
        ));
        assert!(loaded_on_entry(
            F::GuestIa32Pat,
            EntryControls::LOAD_IA32_PAT
        ));
        assert!(loaded_on_entry(
            F::GuestIa32Debugctl,
            EntryControls::LOAD_DEBUG_CONTROLS
        ));
        assert!(loaded_on_entry(
            F::GuestIa32SCet,
            EntryControls::LOAD_CET_STATE
        ));
        assert!(!loaded_on_entry(F::GuestRip, EntryControls::all()));
        let none = ExitControls::empty();
        assert!(saved_on_exit(F::GuestIa32SysenterCs, none));
        assert!(!saved_on_exit(F::GuestIa32Efer, none));
        assert!(saved_on_exit(
            F::GuestIa32Efer,
            ExitControls::SAVE_IA32_EFER
        ));
        assert!(!saved_on_exit(
            F::GuestIa32Efer,
            ExitControls::LOAD_IA32_EFER
        ));
        assert!(saved_on_exit(F::GuestIa32Pat, ExitControls::SAVE_IA32_PAT));
        assert!(saved_on_exit(
            F::GuestIa32Debugctl,
            ExitControls::SAVE_DEBUG_CONTROLS
        ));
        assert!(!saved_on_exit(F::GuestIa32Bndcfgs, ExitControls::all()));
        // Every field-class MSR is loaded by some entry-control setting.
        for m in 0..=u16::MAX as u32 {
            for msr in [m, 0xc000_0000 | m] {
                if let MsrClass::VmcsField(f) = classify(msr) {
                    assert!(loaded_on_entry(f, EntryControls::all()), "{msr:#x}");
                }
            }
        }
    }

    #[test]
    fn loads_the_hardware_refuses() {
        // Read-only and locked MSRs.
        for m in [0x480, 0x48b, 0x491, 0x493, 0x3a, 0xfe, 0x9e, 0x1f2, 0x1f3] {
            assert!(!entry_load_allowed(m, 0), "{m:#x}");
        }
        // The area rules of msr_area are applied, not repeated.
        assert!(!entry_load_allowed(msr::IA32_FS_BASE, 0));
        assert!(!entry_load_allowed(0x808, 0));
        assert!(!entry_load_allowed(msr_area::IA32_SMM_MONITOR_CTL, 0));
        let reserved = MsrEntry {
            index: msr::IA32_STAR,
            reserved: 1,
            data: 0,
        };
        assert_eq!(load_check(AreaKind::EntryLoad, &reserved), LoadCheck::Fails);
        // EFER: reserved bits fail; defined bits depend on the CPU and L2.
        assert!(!entry_load_allowed(msr::IA32_EFER, 1 << 1));
        assert!(!entry_load_allowed(msr::IA32_EFER, 1 << 12));
        let efer = |v| load_check(AreaKind::EntryLoad, &MsrEntry::new(msr::IA32_EFER, v));
        assert_eq!(
            efer(efer::SCE | efer::LME | efer::LMA | efer::NXE),
            LoadCheck::Depends
        );
        // PAT: 0, 1, 4, 5, 6, 7 per byte.
        let pat = |v| load_check(AreaKind::EntryLoad, &MsrEntry::new(msr::IA32_PAT, v));
        assert_eq!(pat(0x0007_0406_0007_0406), LoadCheck::Accepted);
        assert_eq!(pat(0x0706_0504_0100_0100), LoadCheck::Accepted);
        assert_eq!(pat(0x0007_0406_0007_0402), LoadCheck::Fails);
        assert_eq!(pat(0x0007_0406_0007_0403), LoadCheck::Fails);
        assert_eq!(pat(0x0007_0406_0007_0408), LoadCheck::Fails);
        assert!(!entry_load_allowed(msr::IA32_PAT, 0x0007_0406_0007_0402));
        // The same rules for VM-exit loads; a store area only has the
        // structural ones.
        assert_eq!(
            load_check(AreaKind::ExitLoad, &MsrEntry::new(0x480, 0)),
            LoadCheck::Fails
        );
        assert_eq!(
            load_check(AreaKind::ExitStore, &MsrEntry::new(0x480, 0)),
            LoadCheck::Depends
        );
        assert_eq!(
            load_check(
                AreaKind::ExitStore,
                &MsrEntry::new(msr_area::IA32_SMBASE, 0)
            ),
            LoadCheck::Fails
        );
        // Everything else is for the class's emulation or the hardware.
        for m in [msr::IA32_STAR, 0x200, 0x2ff, msr::IA32_APIC_BASE, 0xdead] {
            assert!(entry_load_allowed(m, 0x1234), "{m:#x}");
            assert_eq!(
                load_check(AreaKind::EntryLoad, &MsrEntry::new(m, 0)),
                LoadCheck::Depends
            );
        }
    }

    proptest! {
        #[test]
        fn classification_never_panics_and_agrees(
            msr in prop_oneof![0u32..0x2000, 0xc000_0000u32..0xc000_0200, any::<u32>()],
            value in any::<u64>(),
        ) {
            let class = classify(msr);
            let allowed = entry_load_allowed(msr, value);
            let address_msr = matches!(
                msr,
                msr::IA32_KERNEL_GS_BASE | msr::IA32_LSTAR | msr::IA32_CSTAR
            );
            if class == MsrClass::Passthrough {
                // Nothing but the hardware refuses a passthrough MSR, except
                // the address MSRs whose non-canonical values are #GP.
                prop_assert_eq!(allowed, !address_msr || crate::vmx::insn_info::is_canonical(value));
            }
            if let MsrClass::VmcsField(f) = class {
                prop_assert_eq!(guest_field(msr), Some(f));
            }
        }
    }
}
