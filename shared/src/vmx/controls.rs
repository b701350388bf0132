//! The VMX control fields (Intel SDM Vol. 3C, 25.6 "VM-Execution Control
//! Fields", 25.7 "VM-Exit Control Fields", 25.8 "VM-Entry Control Fields";
//! chapter 24 in older editions) and their adjustment against the
//! capability MSRs (Appendix A.3-A.5).

use bitflags::bitflags;
use core::fmt;

bitflags! {
    /// Pin-based VM-execution controls (SDM 25.6.1, Table 25-5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PinBased: u32 {
        /// External-interrupt exiting.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// NMI exiting.
        const NMI_EXITING = 1 << 3;
        /// Virtual NMIs.
        const VIRTUAL_NMIS = 1 << 5;
        /// Activate VMX-preemption timer.
        const ACTIVATE_PREEMPTION_TIMER = 1 << 6;
        /// Process posted interrupts.
        const PROCESS_POSTED_INTERRUPTS = 1 << 7;
    }
}

impl PinBased {
    /// The default1 class: reserved bits that are 1 without TRUE MSRs (A.3.1).
    pub const DEFAULT1: u32 = 0x0000_0016;
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM 25.6.2, Table 25-6).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PrimaryProcBased: u32 {
        /// Interrupt-window exiting.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Use TSC offsetting.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exiting.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exiting.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exiting.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exiting.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC exiting.
        const RDTSC_EXITING = 1 << 12;
        /// CR3-load exiting.
        const CR3_LOAD_EXITING = 1 << 15;
        /// CR3-store exiting.
        const CR3_STORE_EXITING = 1 << 16;
        /// Activate tertiary controls.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// CR8-load exiting.
        const CR8_LOAD_EXITING = 1 << 19;
        /// CR8-store exiting.
        const CR8_STORE_EXITING = 1 << 20;
        /// Use TPR shadow.
        const USE_TPR_SHADOW = 1 << 21;
        /// NMI-window exiting.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV-DR exiting.
        const MOV_DR_EXITING = 1 << 23;
        /// Unconditional I/O exiting.
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// Use I/O bitmaps.
        const USE_IO_BITMAPS = 1 << 25;
        /// Monitor trap flag.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// Use MSR bitmaps.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exiting.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exiting.
        const PAUSE_EXITING = 1 << 30;
        /// Activate secondary controls.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

impl PrimaryProcBased {
    /// The default1 class (A.3.2): bits 1, 4-6, 8, 13-16 and 26.
    pub const DEFAULT1: u32 = 0x0401_e172;
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM 25.6.2, Table 25-7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SecondaryProcBased: u32 {
        /// Virtualize APIC accesses.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Enable EPT.
        const ENABLE_EPT = 1 << 1;
        /// Descriptor-table exiting.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// Enable RDTSCP.
        const ENABLE_RDTSCP = 1 << 3;
        /// Virtualize x2APIC mode.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Enable VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD exiting.
        const WBINVD_EXITING = 1 << 6;
        /// Unrestricted guest.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// APIC-register virtualization.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Virtual-interrupt delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// PAUSE-loop exiting.
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exiting.
        const RDRAND_EXITING = 1 << 11;
        /// Enable INVPCID.
        const ENABLE_INVPCID = 1 << 12;
        /// Enable VM functions.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// VMCS shadowing.
        const VMCS_SHADOWING = 1 << 14;
        /// Enable ENCLS exiting.
        const ENABLE_ENCLS_EXITING = 1 << 15;
        /// RDSEED exiting.
        const RDSEED_EXITING = 1 << 16;
        /// Enable PML.
        const ENABLE_PML = 1 << 17;
        /// EPT-violation #VE.
        const EPT_VIOLATION_VE = 1 << 18;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// Enable XSAVES/XRSTORS.
        const ENABLE_XSAVES_XRSTORS = 1 << 20;
        /// PASID translation.
        const PASID_TRANSLATION = 1 << 21;
        /// Mode-based execute control for EPT.
        const MODE_BASED_EXECUTE_CONTROL = 1 << 22;
        /// Sub-page write permissions for EPT.
        const SUB_PAGE_WRITE_PERMISSIONS = 1 << 23;
        /// Intel PT uses guest physical addresses.
        const PT_USES_GUEST_PHYSICAL_ADDRESSES = 1 << 24;
        /// Use TSC scaling.
        const USE_TSC_SCALING = 1 << 25;
        /// Enable user wait and pause.
        const ENABLE_USER_WAIT_AND_PAUSE = 1 << 26;
        /// Enable PCONFIG.
        const ENABLE_PCONFIG = 1 << 27;
        /// Enable ENCLV exiting.
        const ENABLE_ENCLV_EXITING = 1 << 28;
        /// VMM bus-lock detection.
        const VMM_BUS_LOCK_DETECTION = 1 << 30;
        /// Instruction timeout.
        const INSTRUCTION_TIMEOUT = 1 << 31;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM 25.7.1, Table 25-13).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ExitControls: u32 {
        /// Save debug controls.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// Host address-space size.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 12;
        /// Acknowledge interrupt on exit.
        const ACKNOWLEDGE_INTERRUPT_ON_EXIT = 1 << 15;
        /// Save IA32_PAT.
        const SAVE_IA32_PAT = 1 << 18;
        /// Load IA32_PAT.
        const LOAD_IA32_PAT = 1 << 19;
        /// Save IA32_EFER.
        const SAVE_IA32_EFER = 1 << 20;
        /// Load IA32_EFER.
        const LOAD_IA32_EFER = 1 << 21;
        /// Save VMX-preemption timer value.
        const SAVE_PREEMPTION_TIMER_VALUE = 1 << 22;
        /// Clear IA32_BNDCFGS.
        const CLEAR_IA32_BNDCFGS = 1 << 23;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Clear IA32_RTIT_CTL.
        const CLEAR_IA32_RTIT_CTL = 1 << 25;
        /// Clear IA32_LBR_CTL.
        const CLEAR_IA32_LBR_CTL = 1 << 26;
        /// Clear UINV.
        const CLEAR_UINV = 1 << 27;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 28;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 29;
        /// Save IA32_PERF_GLOBAL_CTL.
        const SAVE_IA32_PERF_GLOBAL_CTL = 1 << 30;
        /// Activate secondary controls.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

impl ExitControls {
    /// The default1 class (A.4): bits 0-8, 10, 11, 13, 14, 16 and 17.
    pub const DEFAULT1: u32 = 0x0003_6dff;
}

bitflags! {
    /// VM-entry controls (SDM 25.8.1, Table 25-15).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EntryControls: u32 {
        /// Load debug controls.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// IA-32e mode guest.
        const IA32E_MODE_GUEST = 1 << 9;
        /// Entry to SMM.
        const ENTRY_TO_SMM = 1 << 10;
        /// Deactivate dual-monitor treatment.
        const DEACTIVATE_DUAL_MONITOR_TREATMENT = 1 << 11;
        /// Load IA32_PERF_GLOBAL_CTRL.
        const LOAD_IA32_PERF_GLOBAL_CTRL = 1 << 13;
        /// Load IA32_PAT.
        const LOAD_IA32_PAT = 1 << 14;
        /// Load IA32_EFER.
        const LOAD_IA32_EFER = 1 << 15;
        /// Load IA32_BNDCFGS.
        const LOAD_IA32_BNDCFGS = 1 << 16;
        /// Conceal VMX from PT.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Load IA32_RTIT_CTL.
        const LOAD_IA32_RTIT_CTL = 1 << 18;
        /// Load UINV.
        const LOAD_UINV = 1 << 19;
        /// Load CET state.
        const LOAD_CET_STATE = 1 << 20;
        /// Load guest IA32_LBR_CTL.
        const LOAD_IA32_LBR_CTL = 1 << 21;
        /// Load PKRS.
        const LOAD_PKRS = 1 << 22;
    }
}

impl EntryControls {
    /// The default1 class (A.5): bits 0-8 and 12.
    pub const DEFAULT1: u32 = 0x0000_11ff;
}

/// The allowed settings of one 32-bit control field, from its capability MSR
/// (SDM Appendix A.3): a bit set in `allowed0` must be 1; a bit clear in
/// `allowed1` must be 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ControlCap {
    /// Bits 31:0 of the MSR: the allowed 0-settings (1 = must be 1).
    pub allowed0: u32,
    /// Bits 63:32 of the MSR: the allowed 1-settings (0 = must be 0).
    pub allowed1: u32,
}

/// Result of [`ControlCap::adjust`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Adjusted {
    /// The value to write: `(requested | allowed0) & allowed1`.
    pub value: u32,
    /// Requested bits that the processor does not allow to be 1.
    pub dropped: u32,
    /// Bits that were not requested but must be 1.
    pub forced: u32,
}

/// Requested control bits that the processor does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnsupportedControls {
    /// The requested bits that must be 0.
    pub bits: u32,
}

impl fmt::Display for UnsupportedControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsupported VMX control bits {:#010x}", self.bits)
    }
}

impl ControlCap {
    /// No control may be 1 (a capability MSR that does not exist).
    pub const NONE: Self = Self {
        allowed0: 0,
        allowed1: 0,
    };

    /// Splits a capability MSR value into its two halves.
    pub const fn from_msr(msr: u64) -> Self {
        Self {
            allowed0: msr as u32,
            allowed1: (msr >> 32) as u32,
        }
    }

    /// The MSR value these halves came from.
    pub const fn to_msr(self) -> u64 {
        ((self.allowed1 as u64) << 32) | self.allowed0 as u64
    }

    /// Whether every bit of `bits` may be set to 1.
    pub const fn can_set(self, bits: u32) -> bool {
        bits & !self.allowed1 == 0
    }

    /// Whether `value` satisfies both halves (the VM-entry check of SDM
    /// 26.2.1.1 for one control field).
    pub const fn allows(self, value: u32) -> bool {
        value & self.allowed0 == self.allowed0 && value & !self.allowed1 == 0
    }

    /// Adjusts `requested` to the capability: forced bits are set, bits not
    /// allowed are dropped. The result satisfies both halves whenever the MSR
    /// is consistent (`allowed0` a subset of `allowed1`).
    pub const fn adjust(self, requested: u32) -> Adjusted {
        Adjusted {
            value: (requested | self.allowed0) & self.allowed1,
            dropped: requested & !self.allowed1,
            forced: self.allowed0 & !requested,
        }
    }

    /// Like [`ControlCap::adjust`], but fails if any requested bit is not
    /// allowed to be 1.
    pub const fn require(self, requested: u32) -> Result<u32, UnsupportedControls> {
        let adjusted = self.adjust(requested);
        if adjusted.dropped != 0 {
            Err(UnsupportedControls {
                bits: adjusted.dropped,
            })
        } else {
            Ok(adjusted.value)
        }
    }

    /// The typed form of [`ControlCap::require`] for a control bitflags type.
    pub fn require_flags<F>(self, requested: F) -> Result<F, UnsupportedControls>
    where
        F: bitflags::Flags<Bits = u32>,
    {
        self.require(requested.bits()).map(F::from_bits_retain)
    }
}

/// Whether control value `value` satisfies capability `cap` (both halves).
pub const fn check_controls(value: u32, cap: ControlCap) -> bool {
    cap.allows(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bochs corei7_skylake_x IA32_VMX_TRUE_PROCBASED_CTLS.
    const BOCHS_TRUE_PROCBASED: u64 = 0xf7f9_fffe_0400_6172;

    #[test]
    fn adjust_with_bochs_values() {
        let cap = ControlCap::from_msr(BOCHS_TRUE_PROCBASED);
        assert_eq!(cap.to_msr(), BOCHS_TRUE_PROCBASED);
        let want = PrimaryProcBased::HLT_EXITING
            | PrimaryProcBased::USE_MSR_BITMAPS
            | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS;
        let a = cap.adjust(want.bits());
        assert_eq!(a.dropped, 0);
        assert!(cap.allows(a.value));
        assert_eq!(a.forced, 0x0400_6172 & !want.bits());
        assert!(cap.require_flags(want).is_ok());
        // Bit 0 is reserved and must be 0 (allowed1 bit 0 is clear).
        assert_eq!(
            cap.require(want.bits() | 1),
            Err(UnsupportedControls { bits: 1 })
        );
        assert!(!check_controls(0, cap));
    }

    #[test]
    fn default1_classes_match_bochs_non_true_msrs() {
        assert_eq!(
            ControlCap::from_msr(0x0000_007f_0000_0016).allowed0,
            PinBased::DEFAULT1
        );
        assert_eq!(
            ControlCap::from_msr(0xf7f9_fffe_0401_e172).allowed0,
            PrimaryProcBased::DEFAULT1
        );
        assert_eq!(
            ControlCap::from_msr(0x007f_ffff_0003_6dff).allowed0,
            ExitControls::DEFAULT1
        );
        assert_eq!(
            ControlCap::from_msr(0x0000_ffff_0000_11ff).allowed0,
            EntryControls::DEFAULT1
        );
    }

    proptest! {
        #[test]
        fn adjust_properties(a0 in any::<u32>(), a1 in any::<u32>(), req in any::<u32>()) {
            // A consistent MSR never forces a bit it does not allow.
            let cap = ControlCap { allowed0: a0, allowed1: a1 | a0 };
            let adj = cap.adjust(req);
            prop_assert!(cap.allows(adj.value));
            prop_assert!(check_controls(adj.value, cap));
            prop_assert_eq!(adj.value & req & cap.allowed1, req & cap.allowed1);
            prop_assert_eq!(adj.forced, cap.allowed0 & !req);
            prop_assert_eq!(adj.dropped, req & !cap.allowed1);
            prop_assert_eq!(cap.require(req).is_ok(), adj.dropped == 0);
        }
    }
}
