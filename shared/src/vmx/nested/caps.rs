//! The VMX capability MSRs a guest hypervisor (L1) reads under L0
//! (IA32_VMX_BASIC 480H through IA32_VMX_VMFUNC 491H; Intel SDM Vol. 3D,
//! Appendix A "VMX Capability Reporting Facility").
//!
//! One pure function, [`L1VmxMsrs::compute`], derives them from the
//! hardware's values and from what L0 emulates ([`NestedFeatures`]): a
//! control bit is allowed to be 1 for L1 only if the hardware allows it *and*
//! L0 implements it, so L1 can never enable a control that L0 would silently
//! ignore. Bits the hardware forces to 1 (allowed-0 settings) stay forced:
//! L0 cannot make them optional. [`forced_but_unimplemented`] names any such
//! bit that L0 does not implement, for L0 to report at boot.

use crate::vmx::caps::{VmxCaps, msr};
use crate::vmx::controls::{
    ControlCap, EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use crate::vmx::fields::{Nested, VmcsField};

/// What of VMX L0 emulates for its guest (grows with the nested issues).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NestedFeatures {
    /// Nested EPT (EPT12 shadowed by EPT02).
    pub ept: bool,
    /// VPID for L2 (VPID12 mapped to a VPID02).
    pub vpid: bool,
    /// Unrestricted guest (needs `ept` as well: SDM 27.2.1.1).
    pub unrestricted_guest: bool,
}

/// Number of MSRs from IA32_VMX_BASIC (480H) to IA32_VMX_VMFUNC (491H).
pub const L1_VMX_MSR_COUNT: usize = (msr::IA32_VMX_VMFUNC - msr::IA32_VMX_BASIC + 1) as usize;

/// The raw values of MSRs 0x480..=0x491 as L1 reads them (0 for an MSR
/// that does not exist, which L0 turns into #GP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1VmxMsrs {
    values: [u64; L1_VMX_MSR_COUNT],
    /// `values` decoded (every nested entry, exit and EPT02 fault asks).
    caps: VmxCaps,
}

/// Pin-based controls L0 emulates (posted interrupts are not).
pub const PIN_IMPLEMENTED: PinBased = PinBased::EXTERNAL_INTERRUPT_EXITING
    .union(PinBased::NMI_EXITING)
    .union(PinBased::VIRTUAL_NMIS)
    .union(PinBased::ACTIVATE_PREEMPTION_TIMER);

/// Primary processor-based controls L0 emulates: all but "use TPR shadow"
/// (no virtual-APIC emulation yet) and "activate tertiary controls".
pub const PROC_IMPLEMENTED: PrimaryProcBased = PrimaryProcBased::INTERRUPT_WINDOW_EXITING
    .union(PrimaryProcBased::USE_TSC_OFFSETTING)
    .union(PrimaryProcBased::HLT_EXITING)
    .union(PrimaryProcBased::INVLPG_EXITING)
    .union(PrimaryProcBased::MWAIT_EXITING)
    .union(PrimaryProcBased::RDPMC_EXITING)
    .union(PrimaryProcBased::RDTSC_EXITING)
    .union(PrimaryProcBased::CR3_LOAD_EXITING)
    .union(PrimaryProcBased::CR3_STORE_EXITING)
    .union(PrimaryProcBased::CR8_LOAD_EXITING)
    .union(PrimaryProcBased::CR8_STORE_EXITING)
    .union(PrimaryProcBased::NMI_WINDOW_EXITING)
    .union(PrimaryProcBased::MOV_DR_EXITING)
    .union(PrimaryProcBased::UNCONDITIONAL_IO_EXITING)
    .union(PrimaryProcBased::USE_IO_BITMAPS)
    .union(PrimaryProcBased::MONITOR_TRAP_FLAG)
    .union(PrimaryProcBased::USE_MSR_BITMAPS)
    .union(PrimaryProcBased::MONITOR_EXITING)
    .union(PrimaryProcBased::PAUSE_EXITING)
    .union(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS);

/// Secondary controls L0 emulates whatever [`NestedFeatures`] says: the
/// instruction-exiting and instruction-enabling ones.
pub const PROC2_IMPLEMENTED_CORE: SecondaryProcBased = SecondaryProcBased::DESCRIPTOR_TABLE_EXITING
    .union(SecondaryProcBased::ENABLE_RDTSCP)
    .union(SecondaryProcBased::WBINVD_EXITING)
    .union(SecondaryProcBased::ENABLE_INVPCID)
    .union(SecondaryProcBased::RDRAND_EXITING)
    .union(SecondaryProcBased::RDSEED_EXITING)
    .union(SecondaryProcBased::ENABLE_XSAVES_XRSTORS);

/// VM-exit controls L0 emulates. Not "load IA32_PERF_GLOBAL_CTRL" (Bochs
/// advertises but does not implement it), nor the BNDCFGS, PT, LBR, CET,
/// PKRS and secondary-exit-control ones.
pub const EXIT_IMPLEMENTED: ExitControls = ExitControls::SAVE_DEBUG_CONTROLS
    .union(ExitControls::HOST_ADDRESS_SPACE_SIZE)
    .union(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT)
    .union(ExitControls::SAVE_IA32_PAT)
    .union(ExitControls::LOAD_IA32_PAT)
    .union(ExitControls::SAVE_IA32_EFER)
    .union(ExitControls::LOAD_IA32_EFER)
    .union(ExitControls::SAVE_PREEMPTION_TIMER_VALUE);

/// VM-entry controls L0 emulates (no SMM, no dual-monitor treatment, no
/// PERF_GLOBAL_CTRL, BNDCFGS, PT, CET, LBR or PKRS loading).
pub const ENTRY_IMPLEMENTED: EntryControls = EntryControls::LOAD_DEBUG_CONTROLS
    .union(EntryControls::IA32E_MODE_GUEST)
    .union(EntryControls::LOAD_IA32_PAT)
    .union(EntryControls::LOAD_IA32_EFER);

/// IA32_VMX_BASIC (SDM A.1): bits 30:0, VMCS revision identifier.
const BASIC_REVISION_MASK: u64 = 0x7fff_ffff;
/// Bits 44:32: VMCS region size.
const BASIC_VMCS_SIZE_SHIFT: u32 = 32;
/// The VMCS region size L0 reports: one page (its VMCS12 layout fits).
pub const L1_VMCS_SIZE: u64 = 4096;
/// Bit 48: VMX structures limited to 32-bit physical addresses.
const BASIC_PHYS_ADDR_32BIT: u64 = 1 << 48;
/// Bit 49: dual-monitor treatment of SMIs and SMM.
pub const BASIC_DUAL_MONITOR: u64 = 1 << 49;
/// Bits 53:50: memory type of VMX structures.
const BASIC_MEMORY_TYPE_MASK: u64 = 0xf << 50;
/// Bit 54: INS/OUTS instruction information.
const BASIC_INS_OUTS_INFO: u64 = 1 << 54;
/// Bit 55: the TRUE_*_CTLS MSRs exist.
pub const BASIC_TRUE_CONTROLS: u64 = 1 << 55;
/// Bit 56: hardware exceptions may be injected with or without error code.
const BASIC_ANY_EXCEPTION_ERROR_CODE: u64 = 1 << 56;

/// IA32_VMX_MISC (SDM A.6): bits 4:0, preemption-timer rate.
const MISC_PREEMPTION_TIMER_RATE: u64 = 0x1f;
/// Bit 5: VM exits store EFER.LMA into "IA-32e mode guest".
const MISC_STORES_LMA: u64 = 1 << 5;
/// Bit 6: activity state HLT.
pub const MISC_ACTIVITY_HLT: u64 = 1 << 6;
/// Bit 7: activity state shutdown.
pub const MISC_ACTIVITY_SHUTDOWN: u64 = 1 << 7;
/// Bit 8: activity state wait-for-SIPI.
pub const MISC_ACTIVITY_WAIT_FOR_SIPI: u64 = 1 << 8;
/// Bits 24:16: number of CR3-target values.
const MISC_CR3_TARGET_COUNT: u64 = 0x1ff << 16;
/// Bits 27:25: recommended maximum MSR-list size.
const MISC_MAX_MSR_LIST: u64 = 0x7 << 25;
/// Bit 29: VMWRITE may write any supported field, VM-exit information too.
pub const MISC_VMWRITE_ANY_FIELD: u64 = 1 << 29;
/// Bit 30: software events may be injected with instruction length 0.
const MISC_INJECT_ZERO_LENGTH: u64 = 1 << 30;

/// IA32_VMX_VMCS_ENUM (SDM A.9): bits 9:1, highest field index.
const VMCS_ENUM_INDEX_SHIFT: u32 = 1;
/// Mask of the index after shifting.
const VMCS_ENUM_INDEX_MASK: u64 = 0x1ff;

/// IA32_VMX_EPT_VPID_CAP bits (SDM A.10) L0's nested EPT implements: execute
/// only (0), 4-level walk (6), UC (8) and WB (14) EPTP memory types, 2-MByte
/// (16) and 1-GByte (17) pages, INVEPT (20) single-context (25) and
/// all-context (26). Not: 5-level walks, A/D flags (21), advanced exit
/// information (22), supervisor shadow stacks (23).
pub const EPT_CAP_IMPLEMENTED: u64 = (1 << 0)
    | (1 << 6)
    | (1 << 8)
    | (1 << 14)
    | (1 << 16)
    | (1 << 17)
    | (1 << 20)
    | (1 << 25)
    | (1 << 26);
/// The VPID bits L0 implements: INVVPID (32) and its individual-address
/// (40), single-context (41), all-context (42) and
/// single-context-retaining-globals (43) types.
pub const VPID_CAP_IMPLEMENTED: u64 = (1 << 32) | (1 << 40) | (1 << 41) | (1 << 42) | (1 << 43);

/// The allowed settings of one control field for L1, from the hardware's
/// plain and (when it exists) TRUE MSR.
///
/// Allowed-1 = hardware allowed-1 (of both MSRs) AND (implemented OR forced
/// by the plain MSR); forced bits stay forced (clipped to allowed-1, which
/// only matters for inconsistent inputs); the TRUE MSR may relax a forced
/// bit only inside the default1 class (SDM A.2).
fn mask_control(
    plain: u64,
    true_msr: Option<u64>,
    implemented: u32,
    default1: u32,
) -> (ControlCap, Option<ControlCap>) {
    let p = ControlCap::from_msr(plain);
    let t = true_msr.map(ControlCap::from_msr);
    let hw_allowed1 = p.allowed1 & t.map_or(u32::MAX, |t| t.allowed1);
    let allowed0 = p.allowed0 & hw_allowed1;
    let allowed1 = hw_allowed1 & (implemented | allowed0);
    let plain_l1 = ControlCap { allowed0, allowed1 };
    let true_l1 = t.map(|t| ControlCap {
        allowed0: allowed0 & (t.allowed0 | !default1),
        allowed1,
    });
    (plain_l1, true_l1)
}

/// Index of `m` in [`L1VmxMsrs`]'s table, if it is one of 480H..=491H.
fn slot(m: u32) -> Option<usize> {
    let i = m.checked_sub(msr::IA32_VMX_BASIC)? as usize;
    (i < L1_VMX_MSR_COUNT).then_some(i)
}

/// The highest index (encoding bits 9:1) of a field L0 offers to L1.
pub fn highest_supported_field_index() -> u16 {
    VmcsField::ALL
        .iter()
        .filter(|f| f.nested() != Nested::Unsupported)
        .map(|f| f.encoding_index() as u16)
        .max()
        .unwrap_or(0)
}

impl L1VmxMsrs {
    /// Computes L1's view from the hardware's MSRs (`hw` is called only for
    /// MSRs that exist on the hardware, as [`VmxCaps::read`] does) and from
    /// what L0 implements.
    pub fn compute(hw: impl Fn(u32) -> u64, features: NestedFeatures) -> Self {
        let caps = VmxCaps::read(&hw);
        let mut values = [0u64; L1_VMX_MSR_COUNT];
        let mut set = |m: u32, v: u64| {
            if let Some(i) = slot(m) {
                values[i] = v;
            }
        };

        // A.1: same revision and memory type; one page per VMCS; no
        // dual-monitor treatment of SMM.
        let basic_hw = caps.basic.raw;
        let basic = (basic_hw
            & (BASIC_REVISION_MASK
                | BASIC_PHYS_ADDR_32BIT
                | BASIC_MEMORY_TYPE_MASK
                | BASIC_INS_OUTS_INFO
                | BASIC_TRUE_CONTROLS
                | BASIC_ANY_EXCEPTION_ERROR_CODE))
            | (L1_VMCS_SIZE << BASIC_VMCS_SIZE_SHIFT);
        set(msr::IA32_VMX_BASIC, basic);

        let controls = |c: &crate::vmx::caps::ControlMsrs, implemented: u32, default1: u32| {
            mask_control(
                c.plain.to_msr(),
                c.true_ctls.map(ControlCap::to_msr),
                implemented,
                default1,
            )
        };
        let (pin, pin_true) = controls(&caps.pin, PIN_IMPLEMENTED.bits(), PinBased::DEFAULT1);
        let (proc, proc_true) = controls(
            &caps.proc,
            PROC_IMPLEMENTED.bits(),
            PrimaryProcBased::DEFAULT1,
        );
        let (exit, exit_true) =
            controls(&caps.exit, EXIT_IMPLEMENTED.bits(), ExitControls::DEFAULT1);
        let (entry, entry_true) = controls(
            &caps.entry,
            ENTRY_IMPLEMENTED.bits(),
            EntryControls::DEFAULT1,
        );
        set(msr::IA32_VMX_PINBASED_CTLS, pin.to_msr());
        set(msr::IA32_VMX_PROCBASED_CTLS, proc.to_msr());
        set(msr::IA32_VMX_EXIT_CTLS, exit.to_msr());
        set(msr::IA32_VMX_ENTRY_CTLS, entry.to_msr());
        let true_pairs = [
            (msr::IA32_VMX_TRUE_PINBASED_CTLS, pin_true),
            (msr::IA32_VMX_TRUE_PROCBASED_CTLS, proc_true),
            (msr::IA32_VMX_TRUE_EXIT_CTLS, exit_true),
            (msr::IA32_VMX_TRUE_ENTRY_CTLS, entry_true),
        ];
        for (m, c) in true_pairs {
            set(m, c.map_or(0, ControlCap::to_msr));
        }

        // A.6: activity states HLT and wait-for-SIPI (VMCS02 takes L2's
        // activity state as it is, and a SIPI exit of L2 goes to L1, SDM
        // 26.2; a guest hypervisor parks its APs there, as L0 does), not
        // shutdown; no PT in VMX, no SMM features; VMWRITE of every
        // supported field (L0 holds VMCS12 in memory, so it can write exit
        // information too).
        let misc = (caps.misc.raw
            & (MISC_PREEMPTION_TIMER_RATE
                | MISC_STORES_LMA
                | MISC_ACTIVITY_HLT
                | MISC_ACTIVITY_WAIT_FOR_SIPI
                | MISC_CR3_TARGET_COUNT
                | MISC_MAX_MSR_LIST
                | MISC_INJECT_ZERO_LENGTH))
            | MISC_VMWRITE_ANY_FIELD;
        set(msr::IA32_VMX_MISC, misc);

        // A.7, A.8: the hardware's fixed bits (without "unrestricted guest"
        // PE and PG are then fixed to 1 by CR0_FIXED0).
        set(msr::IA32_VMX_CR0_FIXED0, caps.cr0_fixed0);
        set(msr::IA32_VMX_CR0_FIXED1, caps.cr0_fixed1);
        set(msr::IA32_VMX_CR4_FIXED0, caps.cr4_fixed0);
        set(msr::IA32_VMX_CR4_FIXED1, caps.cr4_fixed1);

        // A.9: the highest index among the fields L0 offers, never above
        // the hardware's.
        let index = highest_supported_field_index().min(caps.vmcs_max_index);
        set(
            msr::IA32_VMX_VMCS_ENUM,
            (u64::from(index) & VMCS_ENUM_INDEX_MASK) << VMCS_ENUM_INDEX_SHIFT,
        );

        // A.3.3: the secondary controls, if "activate secondary controls"
        // may be 1 for L1.
        let mut proc2_impl = PROC2_IMPLEMENTED_CORE;
        if features.ept {
            proc2_impl |= SecondaryProcBased::ENABLE_EPT;
        }
        if features.vpid {
            proc2_impl |= SecondaryProcBased::ENABLE_VPID;
        }
        if features.unrestricted_guest && features.ept {
            proc2_impl |= SecondaryProcBased::UNRESTRICTED_GUEST;
        }
        // No processor forces a secondary control to 1 (A.3.3); should one
        // claim to, L1 is still offered only what L0 implements (and
        // [`forced_but_unimplemented`] reports it).
        let proc2 = if proc.can_set(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits()) {
            let hw2 = ControlCap {
                allowed0: 0,
                allowed1: caps.proc2.allowed1,
            };
            mask_control(hw2.to_msr(), None, proc2_impl.bits(), 0).0
        } else {
            ControlCap::NONE
        };
        set(msr::IA32_VMX_PROCBASED_CTLS2, proc2.to_msr());

        // A.10: EPT_VPID_CAP exists if EPT or VPID may be 1; only the
        // features L0 implements are reported.
        let mut ept_vpid_mask = 0;
        if proc2.can_set(SecondaryProcBased::ENABLE_EPT.bits()) {
            ept_vpid_mask |= EPT_CAP_IMPLEMENTED;
        }
        if proc2.can_set(SecondaryProcBased::ENABLE_VPID.bits()) {
            ept_vpid_mask |= VPID_CAP_IMPLEMENTED;
        }
        set(
            msr::IA32_VMX_EPT_VPID_CAP,
            caps.ept_vpid.raw & ept_vpid_mask,
        );

        // A.11: VM functions are never offered, so IA32_VMX_VMFUNC does
        // not exist.
        set(msr::IA32_VMX_VMFUNC, 0);

        let mut s = Self {
            values,
            caps: VmxCaps::default(),
        };
        s.caps = VmxCaps::read(|m| s.raw(m));
        s
    }

    /// The stored value of `m` (0 when it does not exist), any index.
    fn raw(&self, m: u32) -> u64 {
        slot(m)
            .and_then(|i| self.values.get(i).copied())
            .unwrap_or(0)
    }

    /// Whether `m` (one of 480H..=491H) exists for L1, by the rules of
    /// Appendix A (the same ones [`VmxCaps::read`] follows).
    fn exists(&self, m: u32) -> bool {
        let proc2 = ControlCap::from_msr(self.raw(msr::IA32_VMX_PROCBASED_CTLS2));
        match m {
            msr::IA32_VMX_TRUE_PINBASED_CTLS..=msr::IA32_VMX_TRUE_ENTRY_CTLS => {
                self.raw(msr::IA32_VMX_BASIC) & BASIC_TRUE_CONTROLS != 0
            }
            msr::IA32_VMX_PROCBASED_CTLS2 => {
                ControlCap::from_msr(self.raw(msr::IA32_VMX_PROCBASED_CTLS))
                    .can_set(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits())
            }
            msr::IA32_VMX_EPT_VPID_CAP => {
                let ept_or_vpid = SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID;
                proc2.allowed1 & ept_or_vpid.bits() != 0
            }
            msr::IA32_VMX_VMFUNC => proc2.can_set(SecondaryProcBased::ENABLE_VM_FUNCTIONS.bits()),
            _ => slot(m).is_some(),
        }
    }

    /// The value of `msr` if it is one of 0x480..=0x491 and exists for L1
    /// (else None -> #GP).
    pub fn get(&self, msr: u32) -> Option<u64> {
        self.exists(msr).then(|| self.raw(msr))
    }

    /// Every MSR of 0x480..=0x491 with its value for L1 (None: it does not
    /// exist), for L0's boot report and the README's feature table.
    pub fn entries(&self) -> impl Iterator<Item = (u32, Option<u64>)> + '_ {
        (msr::IA32_VMX_BASIC..=msr::IA32_VMX_VMFUNC).map(|m| (m, self.get(m)))
    }

    /// The same values decoded (VmxCaps::read over them), for the entry
    /// checks.
    pub fn caps(&self) -> VmxCaps {
        self.caps
    }
}

/// The first control field in which the hardware forces a bit to 1 (its
/// allowed-0 setting, from the TRUE MSR when it exists) that L0 does not
/// implement and that is not a reserved default1 bit, with those bits. L1
/// would see the bit forced and L0 could not honour it: L0 reports it at
/// boot. None on every processor known so far.
pub fn forced_but_unimplemented(hw: impl Fn(u32) -> u64) -> Option<(&'static str, u32)> {
    let caps = VmxCaps::read(hw);
    let proc2_impl = PROC2_IMPLEMENTED_CORE
        | SecondaryProcBased::ENABLE_EPT
        | SecondaryProcBased::ENABLE_VPID
        | SecondaryProcBased::UNRESTRICTED_GUEST;
    [
        (
            "pin-based",
            caps.pin.effective().allowed0,
            PIN_IMPLEMENTED.bits() | PinBased::DEFAULT1,
        ),
        (
            "primary processor-based",
            caps.proc.effective().allowed0,
            PROC_IMPLEMENTED.bits() | PrimaryProcBased::DEFAULT1,
        ),
        (
            "secondary processor-based",
            caps.proc2.allowed0,
            proc2_impl.bits(),
        ),
        (
            "VM-exit",
            caps.exit.effective().allowed0,
            EXIT_IMPLEMENTED.bits() | ExitControls::DEFAULT1,
        ),
        (
            "VM-entry",
            caps.entry.effective().allowed0,
            ENTRY_IMPLEMENTED.bits() | EntryControls::DEFAULT1,
        ),
    ]
    .into_iter()
    .map(|(name, forced, ok)| (name, forced & !ok))
    .find(|&(_, bits)| bits != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::caps::tests::BOCHS;
    use proptest::prelude::*;

    fn bochs_hw(m: u32) -> u64 {
        BOCHS.iter().find(|&&(i, _)| i == m).map_or(0, |&(_, v)| v)
    }

    /// What L0 offers today (VPID, no EPT yet): the README's feature table.
    #[test]
    fn bochs_vpid_view() {
        let l1 = L1VmxMsrs::compute(
            bochs_hw,
            NestedFeatures {
                vpid: true,
                ..NestedFeatures::default()
            },
        );
        assert_eq!(l1.get(0x48b), Some(0x0011_186c_0000_0000));
        assert_eq!(l1.get(0x48c), Some(0x0000_0f01_0000_0000));
        let c = l1.caps();
        assert!(c.has_vpid() && !c.has_ept() && !c.has_unrestricted_guest());
    }

    /// L1's view on Bochs corei7_skylake_x with the core features (no EPT,
    /// VPID or unrestricted guest).
    const L1_CORE: &[(u32, Option<u64>)] = &[
        (0x480, Some(0x00d8_1000_0000_002b)),
        (0x481, Some(0x0000_007f_0000_0016)),
        (0x482, Some(0xf7d9_fffe_0401_e172)),
        (0x483, Some(0x007f_efff_0003_6dff)),
        (0x484, Some(0x0000_d3ff_0000_11ff)),
        (0x485, Some(0x0000_0000_6004_0160)),
        (0x486, Some(0x0000_0000_8000_0021)),
        (0x487, Some(0x0000_0000_ffff_ffff)),
        (0x488, Some(0x0000_0000_0000_2000)),
        (0x489, Some(0x0000_0000_0037_27ff)),
        (0x48a, Some(0x0000_0000_0000_002e)),
        (0x48b, Some(0x0011_184c_0000_0000)),
        (0x48c, None),
        (0x48d, Some(0x0000_007f_0000_0016)),
        (0x48e, Some(0xf7d9_fffe_0400_6172)),
        (0x48f, Some(0x007f_efff_0003_6dfb)),
        (0x490, Some(0x0000_d3ff_0000_11fb)),
        (0x491, None),
    ];

    #[test]
    fn bochs_core_view_exact() {
        let l1 = L1VmxMsrs::compute(bochs_hw, NestedFeatures::default());
        for &(m, want) in L1_CORE {
            assert_eq!(l1.get(m), want, "MSR {m:#x}: {:#x?}", l1.get(m));
        }
        assert!(l1.entries().eq(L1_CORE.iter().copied()));
        assert_eq!(l1.get(0x47f), None);
        assert_eq!(l1.get(0x492), None);
        assert_eq!(l1.get(u32::MAX), None);
        assert_eq!(forced_but_unimplemented(bochs_hw), None);
    }

    #[test]
    fn bochs_core_view_decoded() {
        let c = L1VmxMsrs::compute(bochs_hw, NestedFeatures::default()).caps();
        assert_eq!(c.basic.revision_id, 0x2b);
        assert_eq!(c.basic.vmcs_size, 4096);
        assert!(!c.basic.dual_monitor && c.basic.true_controls);
        assert!(!c.has_ept() && !c.has_vpid() && !c.has_unrestricted_guest());
        assert!(!c.has_vmcs_shadowing());
        assert!(c.has_preemption_timer());
        assert!(
            !c.proc
                .effective()
                .can_set(PrimaryProcBased::USE_TPR_SHADOW.bits())
        );
        assert!(
            !c.pin
                .effective()
                .can_set(PinBased::PROCESS_POSTED_INTERRUPTS.bits())
        );
        assert!(c.misc.activity_hlt && !c.misc.activity_shutdown);
        assert!(c.misc.activity_wait_for_sipi);
        assert!(c.misc.vmwrite_exit_info && c.misc.inject_zero_length);
        assert_eq!(c.misc.cr3_target_count, 4);
        assert_eq!(c.vmfunc, 0);
        assert_eq!(c.ept_vpid.raw, 0);
        assert_eq!(
            c.vmcs_max_index,
            VmcsField::VmxPreemptionTimerValue.encoding_index() as u16
        );
    }

    #[test]
    fn bochs_with_ept_and_vpid() {
        let all = NestedFeatures {
            ept: true,
            vpid: true,
            unrestricted_guest: true,
        };
        let l1 = L1VmxMsrs::compute(bochs_hw, all);
        assert_eq!(
            l1.get(msr::IA32_VMX_PROCBASED_CTLS2),
            Some(0x0011_18ee_0000_0000)
        );
        // The hardware's value without A/D flags (bit 21).
        assert_eq!(
            l1.get(msr::IA32_VMX_EPT_VPID_CAP),
            Some(0x0000_0f01_0613_4141)
        );
        assert_eq!(l1.get(msr::IA32_VMX_VMFUNC), None);
        let c = l1.caps();
        assert!(c.has_ept() && c.has_vpid() && c.has_unrestricted_guest());
        assert!(!c.ept_vpid.accessed_dirty && c.ept_vpid.walk_length_4);

        let vpid_only = NestedFeatures {
            vpid: true,
            unrestricted_guest: true,
            ..NestedFeatures::default()
        };
        let l1 = L1VmxMsrs::compute(bochs_hw, vpid_only);
        assert_eq!(
            l1.get(msr::IA32_VMX_PROCBASED_CTLS2),
            Some(0x0011_186c_0000_0000),
            "unrestricted guest needs EPT"
        );
        assert_eq!(
            l1.get(msr::IA32_VMX_EPT_VPID_CAP),
            Some(0x0000_0f01_0000_0000)
        );
    }

    #[test]
    fn no_true_no_secondary_hardware() {
        let hw = |m: u32| match m {
            0x480 => 0x0000_1000_0000_0001,
            0x481 => 0x0000_003f_0000_0016,
            0x482 => 0x7fff_fffe_0401_e172,
            0x483 => 0x003f_ffff_0003_6dff,
            0x484 => 0x0000_ffff_0000_11ff,
            0x485..=0x48a => 1,
            _ => panic!("read of MSR {m:#x} that does not exist"),
        };
        let l1 = L1VmxMsrs::compute(hw, NestedFeatures::default());
        for m in [0x48b, 0x48c, 0x48d, 0x48e, 0x48f, 0x490, 0x491] {
            assert_eq!(l1.get(m), None, "{m:#x}");
        }
        assert_eq!(l1.caps().proc2, ControlCap::NONE);
        assert!(l1.get(0x485).is_some());
    }

    #[test]
    fn a_forced_unimplemented_bit_is_reported() {
        let hw = |m: u32| match m {
            // TRUE entry controls forcing "entry to SMM".
            0x490 => 0x0000_ffff_0000_05fb,
            m => bochs_hw(m),
        };
        assert_eq!(
            forced_but_unimplemented(hw),
            Some(("VM-entry", EntryControls::ENTRY_TO_SMM.bits()))
        );
    }

    fn table(vals: &[u64; L1_VMX_MSR_COUNT]) -> impl Fn(u32) -> u64 + '_ {
        move |m| slot(m).and_then(|i| vals.get(i).copied()).unwrap_or(0)
    }

    proptest! {
        #[test]
        fn l1_view_is_allowed_implemented_and_consistent(
            vals in proptest::array::uniform18(any::<u64>()),
            ept in any::<bool>(),
            vpid in any::<bool>(),
            ug in any::<bool>(),
        ) {
            let features = NestedFeatures { ept, vpid, unrestricted_guest: ug };
            let hw = VmxCaps::read(table(&vals));
            let l1 = L1VmxMsrs::compute(table(&vals), features);
            let c = l1.caps();
            let mut proc2_impl = PROC2_IMPLEMENTED_CORE;
            if ept { proc2_impl |= SecondaryProcBased::ENABLE_EPT; }
            if vpid { proc2_impl |= SecondaryProcBased::ENABLE_VPID; }
            if ept && ug { proc2_impl |= SecondaryProcBased::UNRESTRICTED_GUEST; }
            let groups = [
                (c.pin, hw.pin, PIN_IMPLEMENTED.bits(), PinBased::DEFAULT1),
                (c.proc, hw.proc, PROC_IMPLEMENTED.bits(), PrimaryProcBased::DEFAULT1),
                (c.exit, hw.exit, EXIT_IMPLEMENTED.bits(), ExitControls::DEFAULT1),
                (c.entry, hw.entry, ENTRY_IMPLEMENTED.bits(), EntryControls::DEFAULT1),
            ];
            for (l, h, implemented, default1) in groups {
                for cap in [Some(l.plain), l.true_ctls].into_iter().flatten() {
                    // Allowed-1 of L1 is allowed by the hardware (both MSRs)...
                    prop_assert_eq!(cap.allowed1 & !h.plain.allowed1, 0);
                    prop_assert_eq!(cap.allowed1 & !h.effective().allowed1, 0);
                    // ... and implemented, unless the hardware forces it.
                    prop_assert_eq!(cap.allowed1 & !(implemented | h.plain.allowed0), 0);
                    // Allowed-0 of L1 within its allowed-1.
                    prop_assert_eq!(cap.allowed0 & !cap.allowed1, 0);
                }
                prop_assert_eq!(l.true_ctls.is_some(), h.true_ctls.is_some());
                if let Some(t) = l.true_ctls {
                    // A.2: TRUE relaxes only default1 bits, same allowed-1.
                    prop_assert_eq!(t.allowed0 & !l.plain.allowed0, 0);
                    prop_assert_eq!((l.plain.allowed0 & !t.allowed0) & !default1, 0);
                    prop_assert_eq!(t.allowed1, l.plain.allowed1);
                }
            }
            prop_assert_eq!(c.proc2.allowed1 & !hw.proc2.allowed1, 0);
            prop_assert_eq!(c.proc2.allowed1 & !proc2_impl.bits(), 0);
            prop_assert_eq!(c.proc2.allowed0, 0);
            prop_assert!(!c.has_vmcs_shadowing());
            prop_assert_eq!(c.vmfunc, 0);
            prop_assert!(!c.basic.dual_monitor);
            prop_assert_eq!(c.basic.vmcs_size, 4096);
            prop_assert_eq!(c.basic.revision_id, hw.basic.revision_id);
            prop_assert!(!c.misc.activity_shutdown);
            prop_assert!(!c.misc.activity_wait_for_sipi || hw.misc.activity_wait_for_sipi);
            prop_assert!(c.misc.vmwrite_exit_info);
            prop_assert!(c.vmcs_max_index <= hw.vmcs_max_index);
            prop_assert_eq!(c.ept_vpid.raw & !hw.ept_vpid.raw, 0);
            prop_assert!(!c.ept_vpid.accessed_dirty);
            if !c.has_ept() && !c.has_vpid() {
                prop_assert_eq!(l1.get(msr::IA32_VMX_EPT_VPID_CAP), None);
            }
            // Every MSR that exists for L1 reads back what caps() decoded from.
            for m in msr::IA32_VMX_BASIC..=msr::IA32_VMX_VMFUNC {
                if let Some(v) = l1.get(m) {
                    prop_assert_eq!(v, l1.raw(m));
                }
            }
        }
    }
}
