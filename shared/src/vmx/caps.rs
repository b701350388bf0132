//! The VMX capability MSRs (Intel SDM Vol. 3D, Appendix A "VMX Capability
//! Reporting Facility"), read once through an MSR-reading closure.
//!
//! The kernel passes `rdmsr`; host tests pass a table. MSRs whose existence
//! depends on a control (A.3.3, A.10, A.11) are read only when that control
//! may be 1, so a closure over real hardware never faults.

use super::controls::{ControlCap, PinBased, PrimaryProcBased, SecondaryProcBased};
use core::fmt;

/// Indices of the VMX capability MSRs.
pub mod msr {
    /// IA32_VMX_BASIC.
    pub const IA32_VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// IA32_VMX_MISC.
    pub const IA32_VMX_MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0.
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1.
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0.
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_VMCS_ENUM.
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
    /// IA32_VMX_PROCBASED_CTLS2.
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP.
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    /// IA32_VMX_VMFUNC.
    pub const IA32_VMX_VMFUNC: u32 = 0x491;
}

const fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 != 0
}

const fn bits(v: u64, lo: u32, width: u32) -> u64 {
    (v >> lo) & ((1 << width) - 1)
}

/// IA32_VMX_BASIC, decoded (SDM A.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxBasic {
    /// The raw MSR value.
    pub raw: u64,
    /// VMCS revision identifier (bits 30:0).
    pub revision_id: u32,
    /// Bytes to allocate for a VMXON or VMCS region (bits 44:32, at most 4096).
    pub vmcs_size: u16,
    /// Bit 48: physical addresses of VMX structures are limited to 32 bits.
    pub phys_addr_32bit: bool,
    /// Bit 49: dual-monitor treatment of SMIs and SMM is supported.
    pub dual_monitor: bool,
    /// Bits 53:50: memory type for VMX structures (0 UC, 6 WB).
    pub memory_type: u8,
    /// Bit 54: VM exits due to INS/OUTS report instruction information.
    pub ins_outs_info: bool,
    /// Bit 55: the IA32_VMX_TRUE_*_CTLS MSRs exist.
    pub true_controls: bool,
    /// Bit 56: VM entry may deliver hardware exceptions with or without an
    /// error code (the error-code consistency check is skipped).
    pub any_exception_error_code: bool,
}

impl VmxBasic {
    /// Decodes the MSR value.
    pub const fn from_msr(raw: u64) -> Self {
        Self {
            raw,
            revision_id: bits(raw, 0, 31) as u32,
            vmcs_size: bits(raw, 32, 13) as u16,
            phys_addr_32bit: bit(raw, 48),
            dual_monitor: bit(raw, 49),
            memory_type: bits(raw, 50, 4) as u8,
            ins_outs_info: bit(raw, 54),
            true_controls: bit(raw, 55),
            any_exception_error_code: bit(raw, 56),
        }
    }
}

/// The capability MSR of one control field: the plain MSR and, when BASIC
/// bit 55 is set, the TRUE MSR (which may allow default1 bits to be 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlMsrs {
    /// The IA32_VMX_*_CTLS value.
    pub plain: ControlCap,
    /// The IA32_VMX_TRUE_*_CTLS value, when it exists.
    pub true_ctls: Option<ControlCap>,
}

impl ControlMsrs {
    /// The capability that governs VM entry: the TRUE MSR when it exists
    /// (SDM A.3.1, A.4, A.5).
    pub const fn effective(&self) -> ControlCap {
        match self.true_ctls {
            Some(c) => c,
            None => self.plain,
        }
    }
}

/// IA32_VMX_MISC, decoded (SDM A.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxMisc {
    /// The raw MSR value.
    pub raw: u64,
    /// Bits 4:0: the preemption timer counts down by 1 every time TSC bit
    /// `preemption_timer_rate` changes.
    pub preemption_timer_rate: u8,
    /// Bit 5: VM exits store EFER.LMA into "IA-32e mode guest".
    pub stores_lma: bool,
    /// Bit 6: the HLT activity state is supported.
    pub activity_hlt: bool,
    /// Bit 7: the shutdown activity state is supported.
    pub activity_shutdown: bool,
    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub activity_wait_for_sipi: bool,
    /// Bit 14: Intel PT can be used in VMX operation.
    pub pt_in_vmx: bool,
    /// Bit 15: RDMSR can read IA32_SMBASE in SMM.
    pub rdmsr_smbase: bool,
    /// Bits 24:16: number of CR3-target values supported.
    pub cr3_target_count: u16,
    /// Recommended maximum number of MSRs in each MSR list:
    /// 512 * (N + 1) with N in bits 27:25.
    pub max_msr_list: u32,
    /// Bit 28: IA32_SMM_MONITOR_CTL bit 2 can be set.
    pub smm_monitor_ctl_bit2: bool,
    /// Bit 29: VMWRITE may write any field, including exit information.
    pub vmwrite_exit_info: bool,
    /// Bit 30: VM entry may inject software interrupts and exceptions with
    /// an instruction length of 0.
    pub inject_zero_length: bool,
    /// Bits 63:32: MSEG revision identifier.
    pub mseg_revision_id: u32,
}

/// Size of one unit of N in IA32_VMX_MISC bits 27:25 (SDM A.6).
pub const MSR_LIST_UNIT: u32 = 512;

impl VmxMisc {
    /// Decodes the MSR value.
    pub const fn from_msr(raw: u64) -> Self {
        Self {
            raw,
            preemption_timer_rate: bits(raw, 0, 5) as u8,
            stores_lma: bit(raw, 5),
            activity_hlt: bit(raw, 6),
            activity_shutdown: bit(raw, 7),
            activity_wait_for_sipi: bit(raw, 8),
            pt_in_vmx: bit(raw, 14),
            rdmsr_smbase: bit(raw, 15),
            cr3_target_count: bits(raw, 16, 9) as u16,
            max_msr_list: MSR_LIST_UNIT * (bits(raw, 25, 3) as u32 + 1),
            smm_monitor_ctl_bit2: bit(raw, 28),
            vmwrite_exit_info: bit(raw, 29),
            inject_zero_length: bit(raw, 30),
            mseg_revision_id: (raw >> 32) as u32,
        }
    }
}

/// IA32_VMX_EPT_VPID_CAP, decoded (SDM A.10).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptVpidCap {
    /// The raw MSR value (0 when the MSR does not exist).
    pub raw: u64,
    /// Bit 0: execute-only EPT translations.
    pub execute_only: bool,
    /// Bit 6: page-walk length of 4.
    pub walk_length_4: bool,
    /// Bit 7: page-walk length of 5.
    pub walk_length_5: bool,
    /// Bit 8: the EPTP may use memory type UC.
    pub memory_type_uc: bool,
    /// Bit 14: the EPTP may use memory type WB.
    pub memory_type_wb: bool,
    /// Bit 16: 2-MByte pages (PDE with bit 7 set).
    pub pages_2m: bool,
    /// Bit 17: 1-GByte pages (PDPTE with bit 7 set).
    pub pages_1g: bool,
    /// Bit 20: INVEPT is supported.
    pub invept: bool,
    /// Bit 21: accessed and dirty flags for EPT.
    pub accessed_dirty: bool,
    /// Bit 22: advanced VM-exit information for EPT violations.
    pub advanced_exit_info: bool,
    /// Bit 23: supervisor shadow-stack control.
    pub supervisor_shadow_stack: bool,
    /// Bit 25: single-context INVEPT.
    pub invept_single_context: bool,
    /// Bit 26: all-context INVEPT.
    pub invept_all_context: bool,
    /// Bit 32: INVVPID is supported.
    pub invvpid: bool,
    /// Bit 40: individual-address INVVPID.
    pub invvpid_individual_address: bool,
    /// Bit 41: single-context INVVPID.
    pub invvpid_single_context: bool,
    /// Bit 42: all-context INVVPID.
    pub invvpid_all_context: bool,
    /// Bit 43: single-context-retaining-globals INVVPID.
    pub invvpid_single_context_retaining_globals: bool,
}

impl EptVpidCap {
    /// Decodes the MSR value.
    pub const fn from_msr(raw: u64) -> Self {
        Self {
            raw,
            execute_only: bit(raw, 0),
            walk_length_4: bit(raw, 6),
            walk_length_5: bit(raw, 7),
            memory_type_uc: bit(raw, 8),
            memory_type_wb: bit(raw, 14),
            pages_2m: bit(raw, 16),
            pages_1g: bit(raw, 17),
            invept: bit(raw, 20),
            accessed_dirty: bit(raw, 21),
            advanced_exit_info: bit(raw, 22),
            supervisor_shadow_stack: bit(raw, 23),
            invept_single_context: bit(raw, 25),
            invept_all_context: bit(raw, 26),
            invvpid: bit(raw, 32),
            invvpid_individual_address: bit(raw, 40),
            invvpid_single_context: bit(raw, 41),
            invvpid_all_context: bit(raw, 42),
            invvpid_single_context_retaining_globals: bit(raw, 43),
        }
    }
}

/// The VMX capabilities of one processor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmxCaps {
    /// IA32_VMX_BASIC.
    pub basic: VmxBasic,
    /// Pin-based controls (IA32_VMX_[TRUE_]PINBASED_CTLS).
    pub pin: ControlMsrs,
    /// Primary processor-based controls (IA32_VMX_[TRUE_]PROCBASED_CTLS).
    pub proc: ControlMsrs,
    /// Secondary processor-based controls (IA32_VMX_PROCBASED_CTLS2), or
    /// [`ControlCap::NONE`] when "activate secondary controls" must be 0.
    pub proc2: ControlCap,
    /// VM-exit controls (IA32_VMX_[TRUE_]EXIT_CTLS).
    pub exit: ControlMsrs,
    /// VM-entry controls (IA32_VMX_[TRUE_]ENTRY_CTLS).
    pub entry: ControlMsrs,
    /// IA32_VMX_MISC.
    pub misc: VmxMisc,
    /// IA32_VMX_CR0_FIXED0: CR0 bits that must be 1.
    pub cr0_fixed0: u64,
    /// IA32_VMX_CR0_FIXED1: CR0 bits that may be 1.
    pub cr0_fixed1: u64,
    /// IA32_VMX_CR4_FIXED0: CR4 bits that must be 1.
    pub cr4_fixed0: u64,
    /// IA32_VMX_CR4_FIXED1: CR4 bits that may be 1.
    pub cr4_fixed1: u64,
    /// Highest index value used in VMCS field encodings (VMCS_ENUM bits 9:1).
    pub vmcs_max_index: u16,
    /// IA32_VMX_EPT_VPID_CAP (all false when neither EPT nor VPID may be used).
    pub ept_vpid: EptVpidCap,
    /// IA32_VMX_VMFUNC: the VM functions that may be enabled (0 when VM
    /// functions may not be enabled).
    pub vmfunc: u64,
}

/// CR0.PE (bit 0) and CR0.PG (bit 31), exempt from CR0_FIXED0 for an
/// unrestricted guest (SDM 26.3.1.1).
const CR0_PE_PG: u64 = (1 << 0) | (1 << 31);

impl VmxCaps {
    /// Reads every capability MSR that exists through `rdmsr`.
    pub fn read(rdmsr: impl Fn(u32) -> u64) -> Self {
        let basic = VmxBasic::from_msr(rdmsr(msr::IA32_VMX_BASIC));
        let controls = |plain: u32, true_msr: u32| ControlMsrs {
            plain: ControlCap::from_msr(rdmsr(plain)),
            true_ctls: basic
                .true_controls
                .then(|| ControlCap::from_msr(rdmsr(true_msr))),
        };
        let pin = controls(
            msr::IA32_VMX_PINBASED_CTLS,
            msr::IA32_VMX_TRUE_PINBASED_CTLS,
        );
        let proc = controls(
            msr::IA32_VMX_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
        );
        let exit = controls(msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS);
        let entry = controls(msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS);

        // A.3.3: PROCBASED_CTLS2 exists only if secondary controls may be 1.
        let proc2 = if proc
            .plain
            .can_set(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits())
        {
            ControlCap::from_msr(rdmsr(msr::IA32_VMX_PROCBASED_CTLS2))
        } else {
            ControlCap::NONE
        };
        // A.10: EPT_VPID_CAP exists if EPT or VPID may be enabled.
        let ept_or_vpid = SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID;
        let ept_vpid = if proc2.allowed1 & ept_or_vpid.bits() != 0 {
            EptVpidCap::from_msr(rdmsr(msr::IA32_VMX_EPT_VPID_CAP))
        } else {
            EptVpidCap::default()
        };
        // A.11: VMFUNC exists if VM functions may be enabled.
        let vmfunc = if proc2.can_set(SecondaryProcBased::ENABLE_VM_FUNCTIONS.bits()) {
            rdmsr(msr::IA32_VMX_VMFUNC)
        } else {
            0
        };

        Self {
            basic,
            pin,
            proc,
            proc2,
            exit,
            entry,
            misc: VmxMisc::from_msr(rdmsr(msr::IA32_VMX_MISC)),
            cr0_fixed0: rdmsr(msr::IA32_VMX_CR0_FIXED0),
            cr0_fixed1: rdmsr(msr::IA32_VMX_CR0_FIXED1),
            cr4_fixed0: rdmsr(msr::IA32_VMX_CR4_FIXED0),
            cr4_fixed1: rdmsr(msr::IA32_VMX_CR4_FIXED1),
            vmcs_max_index: bits(rdmsr(msr::IA32_VMX_VMCS_ENUM), 1, 9) as u16,
            ept_vpid,
            vmfunc,
        }
    }

    /// Whether secondary control bits `bits` may all be 1 (false when the
    /// secondary controls do not exist).
    pub const fn secondary_allows(&self, bits: SecondaryProcBased) -> bool {
        self.proc2.can_set(bits.bits())
    }

    /// Whether "enable EPT" may be 1.
    pub const fn has_ept(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_EPT)
    }

    /// Whether "enable VPID" may be 1.
    pub const fn has_vpid(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::ENABLE_VPID)
    }

    /// Whether "unrestricted guest" may be 1.
    pub const fn has_unrestricted_guest(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::UNRESTRICTED_GUEST)
    }

    /// Whether "VMCS shadowing" may be 1.
    pub const fn has_vmcs_shadowing(&self) -> bool {
        self.secondary_allows(SecondaryProcBased::VMCS_SHADOWING)
    }

    /// Whether "activate VMX-preemption timer" may be 1.
    pub const fn has_preemption_timer(&self) -> bool {
        self.pin
            .effective()
            .can_set(PinBased::ACTIVATE_PREEMPTION_TIMER.bits())
    }

    /// `cr0` adjusted to the fixed bits: `(cr0 | FIXED0) & FIXED1`.
    pub const fn adjust_cr0(&self, cr0: u64) -> u64 {
        (cr0 | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// `cr4` adjusted to the fixed bits: `(cr4 | FIXED0) & FIXED1`.
    pub const fn adjust_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// Whether `cr0` obeys the fixed bits; with "unrestricted guest" PE and
    /// PG may be 0 (SDM 26.3.1.1, A.7).
    pub const fn cr0_valid(&self, cr0: u64, unrestricted_guest: bool) -> bool {
        let fixed0 = if unrestricted_guest {
            self.cr0_fixed0 & !CR0_PE_PG
        } else {
            self.cr0_fixed0
        };
        cr0 & fixed0 == fixed0 && cr0 & !self.cr0_fixed1 == 0
    }

    /// Whether `cr4` obeys the fixed bits (A.8).
    pub const fn cr4_valid(&self, cr4: u64) -> bool {
        cr4 & self.cr4_fixed0 == self.cr4_fixed0 && cr4 & !self.cr4_fixed1 == 0
    }

    /// A one-line human-readable summary.
    pub const fn summary(&self) -> CapsSummary<'_> {
        CapsSummary(self)
    }
}

/// The one-line summary of [`VmxCaps::summary`].
#[derive(Clone, Copy, Debug)]
pub struct CapsSummary<'a>(&'a VmxCaps);

impl fmt::Display for CapsSummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        let yn = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "VMX rev {:#x} vmcs {}B ept {} vpid {} ug {} shadow {} ",
            c.basic.revision_id,
            c.basic.vmcs_size,
            yn(c.has_ept()),
            yn(c.has_vpid()),
            yn(c.has_unrestricted_guest()),
            yn(c.has_vmcs_shadowing()),
        )?;
        if c.has_ept() {
            let e = &c.ept_vpid;
            write!(
                f,
                "(ept 2M {} 1G {} A/D {} x-only {}) ",
                yn(e.pages_2m),
                yn(e.pages_1g),
                yn(e.accessed_dirty),
                yn(e.execute_only)
            )?;
        }
        if c.has_preemption_timer() {
            write!(f, "ptimer TSC>>{} ", c.misc.preemption_timer_rate)?;
        } else {
            write!(f, "ptimer no ")?;
        }
        write!(
            f,
            "true-ctls {} msr-list {}",
            yn(c.basic.true_controls),
            c.misc.max_msr_list
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The capability MSRs of Bochs 2.7, model corei7_skylake_x.
    pub(crate) const BOCHS: &[(u32, u64)] = &[
        (0x480, 0x00d8_1000_0000_002b),
        (0x481, 0x0000_007f_0000_0016),
        (0x482, 0xf7f9_fffe_0401_e172),
        (0x483, 0x007f_ffff_0003_6dff),
        (0x484, 0x0000_ffff_0000_11ff),
        (0x485, 0x0000_0000_6004_01e0),
        (0x486, 0x0000_0000_8000_0021),
        (0x487, 0x0000_0000_ffff_ffff),
        (0x488, 0x0000_0000_0000_2000),
        (0x489, 0x0000_0000_0037_27ff),
        (0x48a, 0x0000_0000_0000_0034),
        (0x48b, 0x0217_7fff_0000_0000),
        (0x48c, 0x0000_0f01_0633_4141),
        (0x48d, 0x0000_007f_0000_0016),
        (0x48e, 0xf7f9_fffe_0400_6172),
        (0x48f, 0x007f_ffff_0003_6dfb),
        (0x490, 0x0000_ffff_0000_11fb),
        (0x491, 0x0000_0000_0000_0001),
    ];

    pub(crate) fn bochs_caps() -> VmxCaps {
        VmxCaps::read(|m| BOCHS.iter().find(|&&(i, _)| i == m).map_or(0, |&(_, v)| v))
    }

    #[test]
    fn bochs_basic_and_misc() {
        let c = bochs_caps();
        assert_eq!(c.basic.revision_id, 0x2b);
        assert_eq!(c.basic.vmcs_size, 4096);
        assert!(!c.basic.phys_addr_32bit);
        assert!(!c.basic.dual_monitor);
        assert_eq!(c.basic.memory_type, 6);
        assert!(c.basic.ins_outs_info);
        assert!(c.basic.true_controls);
        assert!(!c.basic.any_exception_error_code);

        assert_eq!(c.misc.preemption_timer_rate, 0);
        assert!(c.misc.stores_lma);
        assert!(c.misc.activity_hlt && c.misc.activity_shutdown && c.misc.activity_wait_for_sipi);
        assert_eq!(c.misc.cr3_target_count, 4);
        assert_eq!(c.misc.max_msr_list, 512);
        assert!(c.misc.vmwrite_exit_info);
        assert!(c.misc.inject_zero_length);
        assert_eq!(c.vmcs_max_index, 0x1a);
        assert_eq!(VmxMisc::from_msr(3 << 25).max_msr_list, 2048);
    }

    #[test]
    fn bochs_controls_keep_both_msrs() {
        let c = bochs_caps();
        assert_eq!(c.proc.plain.allowed0, 0x0401_e172);
        assert_eq!(c.proc.effective().allowed0, 0x0400_6172);
        assert_eq!(c.exit.effective().allowed0, 0x0003_6dfb);
        assert_eq!(c.entry.effective().allowed0, 0x0000_11fb);
        assert_eq!(c.proc2.allowed1, 0x0217_7fff);
        assert!(c.has_ept() && c.has_vpid() && c.has_unrestricted_guest());
        assert!(c.has_vmcs_shadowing());
        assert!(c.has_preemption_timer());
        assert_eq!(c.vmfunc, 1);
    }

    #[test]
    fn bochs_ept_vpid() {
        let e = bochs_caps().ept_vpid;
        assert!(e.execute_only && e.walk_length_4 && !e.walk_length_5);
        assert!(e.memory_type_uc && e.memory_type_wb);
        assert!(e.pages_2m && e.pages_1g);
        assert!(e.invept && e.invept_single_context && e.invept_all_context);
        assert!(e.accessed_dirty && !e.advanced_exit_info);
        assert!(e.invvpid && e.invvpid_individual_address && e.invvpid_single_context);
        assert!(e.invvpid_all_context && e.invvpid_single_context_retaining_globals);
    }

    #[test]
    fn cr_fixed_bits() {
        let c = bochs_caps();
        assert_eq!(c.adjust_cr0(0), 0x8000_0021);
        assert!(c.cr0_valid(0x8000_0031, false));
        assert!(!c.cr0_valid(0x30, false));
        assert!(c.cr0_valid(0x30, true));
        assert!(!c.cr0_valid(1 << 32 | 0x8000_0021, false));
        assert!(c.cr4_valid(0x2000));
        assert!(!c.cr4_valid(0));
        assert_eq!(c.adjust_cr4(1 << 30), 0x2000);
    }

    #[test]
    fn dependent_msrs_are_not_read_without_their_controls() {
        // No TRUE controls, no secondary controls: reading 0x48b..0x491
        // would fault on hardware.
        let c = VmxCaps::read(|m| match m {
            0x480 => 0x0000_1000_0000_0001,
            0x482 => 0x7fff_fffe_0401_e172,
            0x481 | 0x483..=0x48a => 0,
            _ => panic!("read of MSR {m:#x} that does not exist"),
        });
        assert_eq!(c.proc2, ControlCap::NONE);
        assert!(c.pin.true_ctls.is_none());
        assert!(!c.has_ept() && !c.ept_vpid.pages_2m);
        assert_eq!(c.proc.effective(), c.proc.plain);
    }

    #[test]
    fn summary_line() {
        let s = bochs_caps().summary().to_string();
        assert!(
            s.starts_with("VMX rev 0x2b vmcs 4096B ept yes vpid yes ug yes shadow yes"),
            "{s}"
        );
        assert!(s.contains("ptimer TSC>>0"), "{s}");
        assert!(!s.contains('\n'));
    }
}
