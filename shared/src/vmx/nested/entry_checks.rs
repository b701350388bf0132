//! The VM-entry checks, done in software on a VMCS held in any
//! [`VmcsAccess`] (Intel SDM Vol. 3C, 27.2 "Checks on VMX Controls and
//! Host-State Area" and 27.3.1 "Checks on the Guest State Area"; 26.2 and
//! 26.3.1 in older editions).
//!
//! L0 runs them on a guest hypervisor's VMCS12 before it builds VMCS02, so
//! that L1 gets the answer the hardware would give (VMfailValid 7 or 8, or a
//! VM-entry failure with exit reason 33 and the SDM's exit qualification)
//! and L0 itself never meets an unexpected VM-entry failure. The guest-state
//! checks know nothing of nesting: L0 also uses them on the state it writes
//! into its own guests' VMCS01.
//!
//! Every check names its rule in the `check` string of the failure. Checks
//! follow the SDM's order inside each group; the SDM lets hardware check in
//! any order, so when several rules are broken another processor may name
//! another one (but the same error number, and for guest state the same
//! exit reason).
//!
//! Not covered (each behind a control L0 never offers and that a capability
//! check therefore rejects first, unless the caller passes hardware
//! capabilities that allow it): tertiary processor-based controls and their
//! MSR, secondary VM-exit controls, PASID translation, the
//! PERF_GLOBAL_CTRL, RTIT_CTL and CET state loads (their reserved bits are
//! model specific), SMM and
//! dual-monitor treatment beyond "not in SMM", SGX's enclave interruption
//! and RTM's pending-debug bit (treated as reserved), 5-level paging
//! (linear addresses are 48 bits wide), and the rule that the VMCS link
//! pointer is not the current VMCS (only when
//! [`CheckCtx::current_vmcs`] is given).

use crate::ept::{EptConfig, Eptp};
use crate::mem::PhysMemory;
use crate::msr_area::check_area;
use crate::nmi_inject::{
    BLOCKING_BY_MOV_SS, BLOCKING_BY_NMI, BLOCKING_BY_SMI, BLOCKING_BY_STI, activity,
};
use crate::vmx::caps::VmxCaps;
use crate::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use crate::vmx::exit::{InterruptionInfo, InterruptionType};
use crate::vmx::{VmInstructionError, VmcsAccess, VmcsField as F};

/// Architectural bits the checks look at (SDM Vol. 3A, 2.5 "Control
/// Registers", 2.2.1 "Extended Feature Enable Register", 3.4.5 "Segment
/// Descriptors", 17.2 "Debug Registers"; Vol. 3C 25.4.1 for the VMCS
/// access-rights format).
pub mod arch {
    /// CR0.PE: protection enable.
    pub const CR0_PE: u64 = 1 << 0;
    /// CR0.WP: write protect.
    pub const CR0_WP: u64 = 1 << 16;
    /// CR0.PG: paging.
    pub const CR0_PG: u64 = 1 << 31;
    /// CR4.PAE: physical-address extension.
    pub const CR4_PAE: u64 = 1 << 5;
    /// CR4.PCIDE: process-context identifiers.
    pub const CR4_PCIDE: u64 = 1 << 17;
    /// CR4.CET: control-flow enforcement technology.
    pub const CR4_CET: u64 = 1 << 23;
    /// IA32_EFER.SCE: SYSCALL enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// IA32_EFER.LME: IA-32e mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// IA32_EFER.LMA: IA-32e mode active.
    pub const EFER_LMA: u64 = 1 << 10;
    /// IA32_EFER.NXE: execute-disable enable.
    pub const EFER_NXE: u64 = 1 << 11;
    /// The IA32_EFER bits an Intel 64 processor defines; the rest are
    /// reserved.
    pub const EFER_DEFINED: u64 = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
    /// RFLAGS bit 1: always 1.
    pub const RFLAGS_FIXED1: u64 = 1 << 1;
    /// RFLAGS.TF: trap flag.
    pub const RFLAGS_TF: u64 = 1 << 8;
    /// RFLAGS.IF: interrupt enable.
    pub const RFLAGS_IF: u64 = 1 << 9;
    /// RFLAGS.VM: virtual-8086 mode.
    pub const RFLAGS_VM: u64 = 1 << 17;
    /// RFLAGS reserved bits that must be 0: 63:22, 15, 5 and 3.
    pub const RFLAGS_RESERVED0: u64 = !0x3f_ffff | (1 << 15) | (1 << 5) | (1 << 3);
    /// IA32_DEBUGCTL.BTF: single-step on branches.
    pub const DEBUGCTL_BTF: u64 = 1 << 1;
    /// IA32_DEBUGCTL bits that are reserved on the processors this project
    /// targets: 5:2 and 63:16 (bits 0, 1 and 6-15 are LBR, BTF, TR, BTS,
    /// BTINT, BTS_OFF_OS/USR, FREEZE_LBRS/PERFMON_ON_PMI,
    /// ENABLE_UNCORE_PMI, FREEZE_WHILE_SMM and RTM_DEBUG).
    pub const DEBUGCTL_RESERVED: u64 = 0x3c | !0xffff;
    /// DR7 bits 63:32, reserved.
    pub const DR7_RESERVED_HIGH: u64 = !0xffff_ffff;
    /// Segment access rights (VMCS format): bits 3:0, type.
    pub const AR_TYPE_MASK: u32 = 0xf;
    /// Bit 4: S, descriptor type (1 = code or data).
    pub const AR_S: u32 = 1 << 4;
    /// Bits 6:5: DPL.
    pub const AR_DPL_SHIFT: u32 = 5;
    /// Bit 7: P, present.
    pub const AR_P: u32 = 1 << 7;
    /// Bit 13: L, 64-bit code segment.
    pub const AR_L: u32 = 1 << 13;
    /// Bit 14: D/B, default operation size.
    pub const AR_DB: u32 = 1 << 14;
    /// Bit 15: G, granularity.
    pub const AR_G: u32 = 1 << 15;
    /// Bit 16: segment unusable (VMX only).
    pub const AR_UNUSABLE: u32 = 1 << 16;
    /// Bits 11:8 and 31:17: reserved, must be 0.
    pub const AR_RESERVED: u32 = 0xf00 | 0xfffe_0000;
    /// The access rights of every segment in virtual-8086 mode: present,
    /// DPL 3, read/write accessed data.
    pub const AR_V8086: u32 = 0xf3;
    /// Segment limit of every segment in virtual-8086 mode.
    pub const LIMIT_V8086: u32 = 0xffff;
    /// Code segment types: execute/read, accessed (11) and the others of
    /// 9, 11, 13, 15 are "accessed code".
    pub const TYPE_CODE: u32 = 1 << 3;
    /// Type bit 0: accessed.
    pub const TYPE_ACCESSED: u32 = 1 << 0;
    /// Type bit 1: readable (code) or writable (data).
    pub const TYPE_READ_WRITE: u32 = 1 << 1;
    /// Type bit 2: conforming (code) or expand-down (data).
    pub const TYPE_CONFORMING: u32 = 1 << 2;
    /// Type 3: read/write, accessed data (CS of an unrestricted guest).
    pub const TYPE_DATA_RW_ACCESSED: u32 = 3;
    /// Type 7: read/write, expand-down, accessed data.
    pub const TYPE_DATA_RW_DOWN_ACCESSED: u32 = 7;
    /// System type 2: LDT.
    pub const TYPE_LDT: u32 = 2;
    /// System type 3: 16-bit busy TSS.
    pub const TYPE_TSS16_BUSY: u32 = 3;
    /// System type 11: 32/64-bit busy TSS.
    pub const TYPE_TSS_BUSY: u32 = 11;
    /// Selector bits 1:0, RPL.
    pub const SEL_RPL_MASK: u16 = 0b11;
    /// Selector bit 2, TI (table indicator).
    pub const SEL_TI: u16 = 1 << 2;
    /// Vectors of the exceptions that push an error code (#DF, #TS, #NP,
    /// #SS, #GP, #PF, #AC).
    pub const ERROR_CODE_VECTORS: [u8; 7] = [8, 10, 11, 12, 13, 14, 17];
    /// #DB.
    pub const VECTOR_DB: u8 = 1;
    /// NMI.
    pub const VECTOR_NMI: u8 = 2;
    /// #MC.
    pub const VECTOR_MC: u8 = 18;
    /// The valid memory types of a PAT entry: UC, WC, WT, WP, WB, UC-.
    pub const PAT_VALID_TYPES: [u8; 6] = [0, 1, 4, 5, 6, 7];
    /// PAE PDPTE bit 0: present.
    pub const PDPTE_P: u64 = 1 << 0;
    /// PAE PDPTE reserved bits below the physical-address width: 2:1 and 8:5.
    pub const PDPTE_RESERVED_LOW: u64 = 0x1e6;
    /// CR3 bits 31:5: the PDPT address under PAE paging.
    pub const CR3_PAE_PDPT_MASK: u64 = 0xffff_ffe0;
    /// IA32_BNDCFGS bits 11:2, reserved.
    pub const BNDCFGS_RESERVED: u64 = 0xffc;
    /// Width of linear addresses (4-level paging).
    pub const LINEAR_ADDRESS_BITS: u32 = 48;
}

use arch::*;

/// Exit qualifications of a VM-entry failure due to invalid guest state
/// (SDM 27.8 "VM-Entry Failures During or After Loading Guest State").
pub mod qualification {
    /// No detail.
    pub const DEFAULT: u64 = 0;
    /// A problem loading the PDPTEs (27.3.1.6).
    pub const PDPTE: u64 = 2;
    /// An NMI injected into a guest blocking events by STI (an
    /// implementation-specific check, 27.3.1.5).
    pub const NMI_INJECTION_STI: u64 = 3;
    /// An invalid VMCS link pointer (27.3.1.5).
    pub const VMCS_LINK_POINTER: u64 = 4;
}

/// Interruptibility-state bits 31:4: reserved (bit 4, enclave
/// interruption, needs SGX, which is never offered).
pub const INTERRUPTIBILITY_RESERVED: u32 = !0xf;
/// Pending debug exceptions (SDM Table 25-4): bit 14, BS (single step).
pub const PENDING_DBG_BS: u64 = 1 << 14;
/// Bits 11:4, 13, 15 and 63:16 (bit 16, RTM, needs RTM debugging, which is
/// never offered): reserved.
pub const PENDING_DBG_RESERVED: u64 = 0xff0 | (1 << 13) | (1 << 15) | !0xffff;
/// Bit 31 of the first word of a VMCS region: shadow-VMCS indicator.
pub const VMCS_SHADOW_INDICATOR: u32 = 1 << 31;
/// Bits 30:0 of the first word of a VMCS region: revision identifier.
pub const VMCS_REVISION_MASK: u32 = 0x7fff_ffff;
/// The VMCS link pointer value that means "no shadow VMCS".
pub const VMCS_LINK_POINTER_NONE: u64 = u64::MAX;
/// Offset of VTPR in the virtual-APIC page (SDM 30.1.1).
pub const VTPR_OFFSET: u64 = 0x80;
/// Maximum VM-entry instruction length (SDM 27.2.1.3).
pub const MAX_INSTRUCTION_LENGTH: u32 = 15;
/// VM-function control bit 0: EPTP switching.
pub const VMFUNC_EPTP_SWITCHING: u64 = 1 << 0;
/// Bits 11:0 of a page address.
const PAGE_OFFSET_MASK: u64 = 0xfff;
/// Bits 5:0 of the posted-interrupt descriptor address (64-byte aligned).
const POSTED_DESC_ALIGN_MASK: u64 = 0x3f;

/// What the checks need beyond the VMCS itself.
pub struct CheckCtx<'a, M: PhysMemory> {
    /// The capabilities the VMCS must obey (L1's view for a VMCS12).
    pub caps: &'a VmxCaps,
    /// Physical memory as the VMCS's owner sees it (L1 guest-physical
    /// memory for a VMCS12; reads of L0's region fail).
    pub mem: &'a M,
    /// The physical-address width (MAXPHYADDR) the owner sees.
    pub maxphyaddr: u8,
    /// The VMCS revision identifier the VMCS link pointer's region must
    /// carry.
    pub vmcs_revision: u32,
    /// Whether the processor executing VMLAUNCH/VMRESUME is in IA-32e mode
    /// (for a VMCS12: L1's EFER.LMA), SDM 27.2.4.
    pub in_ia32e_mode: bool,
    /// The current-VMCS pointer, when known: the VMCS link pointer may not
    /// be it (27.3.1.5).
    pub current_vmcs: Option<u64>,
}

// Manual impls: a derive would require `M: Copy`, but only a reference is held.
impl<M: PhysMemory> Clone for CheckCtx<'_, M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M: PhysMemory> Copy for CheckCtx<'_, M> {}

impl<'a, M: PhysMemory> CheckCtx<'a, M> {
    /// A context for a 64-bit VMM (in IA-32e mode), current VMCS unknown.
    pub fn new(caps: &'a VmxCaps, mem: &'a M, maxphyaddr: u8, vmcs_revision: u32) -> Self {
        Self {
            caps,
            mem,
            maxphyaddr,
            vmcs_revision,
            in_ia32e_mode: true,
            current_vmcs: None,
        }
    }
}

/// How a VM entry fails the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    /// VMfailValid with this error number (7 invalid control fields, 8
    /// invalid host-state fields, 26 events blocked by MOV SS).
    VmFail {
        /// The VM-instruction error.
        error: VmInstructionError,
        /// The rule that failed.
        check: &'static str,
    },
    /// VM-entry failure: exit reason 33 "VM-entry failure due to invalid
    /// guest state", exit qualification per SDM 27.8 (0 default, 2 PDPTE
    /// load, 3 NMI injection with blocking by STI, 4 VMCS link pointer).
    InvalidGuestState {
        /// The exit qualification.
        qualification: u64,
        /// The rule that failed.
        check: &'static str,
    },
}

impl EntryFailure {
    /// The rule that failed.
    pub const fn check(&self) -> &'static str {
        match self {
            Self::VmFail { check, .. } | Self::InvalidGuestState { check, .. } => check,
        }
    }

    /// The rule split into its SDM section and its text: ("27.3.1.1",
    /// "guest CR0.PG 1 with CR0.PE 0").
    pub fn rule(&self) -> (&'static str, &'static str) {
        let check = self.check();
        check.split_once(": ").unwrap_or(("27", check))
    }
}

impl core::fmt::Display for EntryFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::VmFail { error, check } => write!(f, "VMfailValid {error}: {check}"),
            Self::InvalidGuestState {
                qualification,
                check,
            } => write!(
                f,
                "VM-entry failure, invalid guest state (qualification {qualification}): {check}"
            ),
        }
    }
}

type CheckResult = Result<(), EntryFailure>;

/// `Ok` if `ok`, else `fail`.
fn ensure(ok: bool, fail: EntryFailure) -> CheckResult {
    if ok { Ok(()) } else { Err(fail) }
}

const fn control(check: &'static str) -> EntryFailure {
    EntryFailure::VmFail {
        error: VmInstructionError::EntryInvalidControlFields,
        check,
    }
}

const fn host(check: &'static str) -> EntryFailure {
    EntryFailure::VmFail {
        error: VmInstructionError::EntryInvalidHostStateFields,
        check,
    }
}

const fn guest(check: &'static str) -> EntryFailure {
    EntryFailure::InvalidGuestState {
        qualification: qualification::DEFAULT,
        check,
    }
}

const fn guest_q(qualification: u64, check: &'static str) -> EntryFailure {
    EntryFailure::InvalidGuestState {
        qualification,
        check,
    }
}

/// Whether `addr` sets no bit at or above `width`.
const fn within_width(addr: u64, width: u8) -> bool {
    width >= 64 || addr >> width == 0
}

/// Whether `addr` is 4-KByte aligned and within `width`.
const fn page_address_ok(addr: u64, width: u8) -> bool {
    addr & PAGE_OFFSET_MASK == 0 && within_width(addr, width)
}

/// Whether `addr` is canonical for 48-bit linear addresses.
pub const fn is_canonical(addr: u64) -> bool {
    let shift = 64 - LINEAR_ADDRESS_BITS;
    (((addr << shift) as i64) >> shift) as u64 == addr
}

/// Whether every entry of a PAT value names a valid memory type.
pub fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes()
        .iter()
        .all(|b| PAT_VALID_TYPES.contains(b))
}

/// The secondary controls in effect: 0 unless "activate secondary
/// controls" is 1 (SDM 25.6.2).
fn effective_proc2(v: &impl VmcsAccess) -> SecondaryProcBased {
    let proc = PrimaryProcBased::from_bits_retain(v.read32(F::PrimaryProcBasedVmExecControls));
    if proc.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
        SecondaryProcBased::from_bits_retain(v.read32(F::SecondaryProcBasedVmExecControls))
    } else {
        SecondaryProcBased::empty()
    }
}

/// The checks on VMX controls (SDM 27.2.1: 27.2.1.1 VM-execution, 27.2.1.2
/// VM-exit and 27.2.1.3 VM-entry control fields); failure is VMfailValid 7.
pub fn check_controls<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    check_execution_controls(v, ctx)?;
    check_exit_controls(v, ctx)?;
    check_entry_controls(v, ctx)
}

fn check_execution_controls<M: PhysMemory>(
    v: &impl VmcsAccess,
    ctx: &CheckCtx<'_, M>,
) -> CheckResult {
    let caps = ctx.caps;
    let width = ctx.maxphyaddr;
    let pin_raw = v.read32(F::PinBasedVmExecControls);
    let proc_raw = v.read32(F::PrimaryProcBasedVmExecControls);
    ensure(
        caps.pin.effective().allows(pin_raw),
        control(
            "27.2.1.1: reserved pin-based VM-execution control bits (IA32_VMX_TRUE_PINBASED_CTLS)",
        ),
    )?;
    ensure(
        caps.proc.effective().allows(proc_raw),
        control(
            "27.2.1.1: reserved primary processor-based VM-execution control bits (IA32_VMX_TRUE_PROCBASED_CTLS)",
        ),
    )?;
    let pin = PinBased::from_bits_retain(pin_raw);
    let proc = PrimaryProcBased::from_bits_retain(proc_raw);
    if proc.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
        ensure(
            caps.proc2
                .allows(v.read32(F::SecondaryProcBasedVmExecControls)),
            control(
                "27.2.1.1: reserved secondary processor-based VM-execution control bits (IA32_VMX_PROCBASED_CTLS2)",
            ),
        )?;
    }
    let proc2 = effective_proc2(v);

    ensure(
        v.read32(F::Cr3TargetCount) <= u32::from(caps.misc.cr3_target_count),
        control("27.2.1.1: CR3-target count above IA32_VMX_MISC bits 24:16"),
    )?;
    if proc.contains(PrimaryProcBased::USE_IO_BITMAPS) {
        ensure(
            page_address_ok(v.read(F::IoBitmapAAddress), width),
            control(
                "27.2.1.1: I/O bitmap A address not 4K aligned or beyond the physical-address width",
            ),
        )?;
        ensure(
            page_address_ok(v.read(F::IoBitmapBAddress), width),
            control(
                "27.2.1.1: I/O bitmap B address not 4K aligned or beyond the physical-address width",
            ),
        )?;
    }
    if proc.contains(PrimaryProcBased::USE_MSR_BITMAPS) {
        ensure(
            page_address_ok(v.read(F::MsrBitmapAddress), width),
            control(
                "27.2.1.1: MSR-bitmap address not 4K aligned or beyond the physical-address width",
            ),
        )?;
    }

    let vid = proc2.contains(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY);
    let apic_accesses = proc2.contains(SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES);
    if proc.contains(PrimaryProcBased::USE_TPR_SHADOW) {
        let vapic = v.read(F::VirtualApicAddress);
        ensure(
            page_address_ok(vapic, width),
            control(
                "27.2.1.1: virtual-APIC address not 4K aligned or beyond the physical-address width",
            ),
        )?;
        let threshold = v.read32(F::TprThreshold);
        if !vid {
            ensure(
                threshold >> 4 == 0,
                control(
                    "27.2.1.1: TPR threshold bits 31:4 set with \"use TPR shadow\" and no virtual-interrupt delivery",
                ),
            )?;
        }
        if !vid && !apic_accesses {
            // The VTPR byte is read from the virtual-APIC page; a page that
            // cannot be read fails the entry rather than being guessed.
            let vtpr = vapic
                .checked_add(VTPR_OFFSET)
                .and_then(|a| ctx.mem.read_u8(a).ok());
            ensure(
                vtpr.is_some_and(|vtpr| threshold & 0xf <= u32::from(vtpr >> 4)),
                control("27.2.1.1: TPR threshold bits 3:0 above VTPR bits 7:4"),
            )?;
        }
    } else {
        ensure(
            !proc2.intersects(
                SecondaryProcBased::VIRTUALIZE_X2APIC_MODE
                    | SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION
                    | SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY,
            ),
            control(
                "27.2.1.1: x2APIC virtualization, APIC-register virtualization or virtual-interrupt delivery without \"use TPR shadow\"",
            ),
        )?;
    }
    ensure(
        pin.contains(PinBased::NMI_EXITING) || !pin.contains(PinBased::VIRTUAL_NMIS),
        control("27.2.1.1: \"virtual NMIs\" without \"NMI exiting\""),
    )?;
    ensure(
        pin.contains(PinBased::VIRTUAL_NMIS)
            || !proc.contains(PrimaryProcBased::NMI_WINDOW_EXITING),
        control("27.2.1.1: \"NMI-window exiting\" without \"virtual NMIs\""),
    )?;
    if apic_accesses {
        ensure(
            page_address_ok(v.read(F::ApicAccessAddress), width),
            control(
                "27.2.1.1: APIC-access address not 4K aligned or beyond the physical-address width",
            ),
        )?;
    }
    ensure(
        !(proc2.contains(SecondaryProcBased::VIRTUALIZE_X2APIC_MODE) && apic_accesses),
        control("27.2.1.1: \"virtualize x2APIC mode\" with \"virtualize APIC accesses\""),
    )?;
    ensure(
        !vid || pin.contains(PinBased::EXTERNAL_INTERRUPT_EXITING),
        control("27.2.1.1: virtual-interrupt delivery without external-interrupt exiting"),
    )?;
    if pin.contains(PinBased::PROCESS_POSTED_INTERRUPTS) {
        let exit = ExitControls::from_bits_retain(v.read32(F::VmExitControls));
        ensure(
            vid && exit.contains(ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT),
            control(
                "27.2.1.1: posted interrupts without virtual-interrupt delivery and \"acknowledge interrupt on exit\"",
            ),
        )?;
        ensure(
            v.read16(F::PostedInterruptNotificationVector) >> 8 == 0,
            control("27.2.1.1: posted-interrupt notification vector bits 15:8 set"),
        )?;
        let desc = v.read(F::PostedInterruptDescriptorAddress);
        ensure(
            desc & POSTED_DESC_ALIGN_MASK == 0 && within_width(desc, width),
            control(
                "27.2.1.1: posted-interrupt descriptor address not 64-byte aligned or beyond the physical-address width",
            ),
        )?;
    }
    if proc2.contains(SecondaryProcBased::ENABLE_VPID) {
        ensure(
            v.read16(F::VirtualProcessorId) != 0,
            control("27.2.1.1: \"enable VPID\" with VPID 0"),
        )?;
    }
    let ept = proc2.contains(SecondaryProcBased::ENABLE_EPT);
    if ept {
        let cfg = EptConfig::from_caps(caps, width);
        ensure(
            Eptp(v.read(F::EptPointer)).validate(&cfg).is_ok(),
            control(
                "27.2.1.1: EPTP memory type, page-walk length, A/D enable, reserved bits or width",
            ),
        )?;
    }
    if proc2.contains(SecondaryProcBased::ENABLE_PML) {
        ensure(
            ept,
            control("27.2.1.1: \"enable PML\" without \"enable EPT\""),
        )?;
        ensure(
            page_address_ok(v.read(F::PmlAddress), width),
            control("27.2.1.1: PML address not 4K aligned or beyond the physical-address width"),
        )?;
    }
    ensure(
        ept || !proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST),
        control("27.2.1.1: \"unrestricted guest\" without \"enable EPT\""),
    )?;
    ensure(
        ept || !proc2.contains(SecondaryProcBased::MODE_BASED_EXECUTE_CONTROL),
        control("27.2.1.1: mode-based execute control without \"enable EPT\""),
    )?;
    if proc2.contains(SecondaryProcBased::SUB_PAGE_WRITE_PERMISSIONS) {
        ensure(
            ept,
            control("27.2.1.1: sub-page write permissions without \"enable EPT\""),
        )?;
        ensure(
            page_address_ok(v.read(F::SubPagePermissionTablePointer), width),
            control("27.2.1.1: SPPTP not 4K aligned or beyond the physical-address width"),
        )?;
    }
    if proc2.contains(SecondaryProcBased::PT_USES_GUEST_PHYSICAL_ADDRESSES) {
        let exit = ExitControls::from_bits_retain(v.read32(F::VmExitControls));
        let entry = EntryControls::from_bits_retain(v.read32(F::VmEntryControls));
        ensure(
            ept && exit.contains(ExitControls::CLEAR_IA32_RTIT_CTL)
                && entry.contains(EntryControls::LOAD_IA32_RTIT_CTL),
            control(
                "27.2.1.1: \"Intel PT uses guest physical addresses\" without \"enable EPT\", \"clear IA32_RTIT_CTL\" and \"load IA32_RTIT_CTL\"",
            ),
        )?;
    }
    if proc2.contains(SecondaryProcBased::ENABLE_VM_FUNCTIONS) {
        let vmfunc = v.read(F::VmFunctionControls);
        ensure(
            vmfunc & !caps.vmfunc == 0,
            control("27.2.1.1: reserved VM-function control bits (IA32_VMX_VMFUNC)"),
        )?;
        if vmfunc & VMFUNC_EPTP_SWITCHING != 0 {
            ensure(
                ept,
                control("27.2.1.1: EPTP switching without \"enable EPT\""),
            )?;
            ensure(
                page_address_ok(v.read(F::EptpListAddress), width),
                control(
                    "27.2.1.1: EPTP-list address not 4K aligned or beyond the physical-address width",
                ),
            )?;
        }
    }
    if proc2.contains(SecondaryProcBased::VMCS_SHADOWING) {
        ensure(
            page_address_ok(v.read(F::VmreadBitmapAddress), width),
            control(
                "27.2.1.1: VMREAD-bitmap address not 4K aligned or beyond the physical-address width",
            ),
        )?;
        ensure(
            page_address_ok(v.read(F::VmwriteBitmapAddress), width),
            control(
                "27.2.1.1: VMWRITE-bitmap address not 4K aligned or beyond the physical-address width",
            ),
        )?;
    }
    if proc2.contains(SecondaryProcBased::EPT_VIOLATION_VE) {
        ensure(
            page_address_ok(v.read(F::VirtualizationExceptionInfoAddress), width),
            control(
                "27.2.1.1: virtualization-exception information address not 4K aligned or beyond the physical-address width",
            ),
        )?;
    }
    Ok(())
}

/// An MSR area's address checks (SDM 27.2.1.2, 27.2.1.3), made only when its
/// count is not zero: an unused area's address does not matter.
fn msr_area_ok(v: &impl VmcsAccess, addr: F, count: F, width: u8) -> bool {
    let count = v.read32(count);
    count == 0 || check_area(v.read(addr), count, width).is_ok()
}

fn check_exit_controls<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    let exit_raw = v.read32(F::VmExitControls);
    ensure(
        ctx.caps.exit.effective().allows(exit_raw),
        control("27.2.1.2: reserved VM-exit control bits (IA32_VMX_TRUE_EXIT_CTLS)"),
    )?;
    let exit = ExitControls::from_bits_retain(exit_raw);
    let pin = PinBased::from_bits_retain(v.read32(F::PinBasedVmExecControls));
    ensure(
        pin.contains(PinBased::ACTIVATE_PREEMPTION_TIMER)
            || !exit.contains(ExitControls::SAVE_PREEMPTION_TIMER_VALUE),
        control(
            "27.2.1.2: \"save VMX-preemption timer value\" without \"activate VMX-preemption timer\"",
        ),
    )?;
    ensure(
        msr_area_ok(
            v,
            F::VmExitMsrStoreAddress,
            F::VmExitMsrStoreCount,
            ctx.maxphyaddr,
        ),
        control(
            "27.2.1.2: VM-exit MSR-store address not 16-byte aligned or area beyond the physical-address width",
        ),
    )?;
    ensure(
        msr_area_ok(
            v,
            F::VmExitMsrLoadAddress,
            F::VmExitMsrLoadCount,
            ctx.maxphyaddr,
        ),
        control(
            "27.2.1.2: VM-exit MSR-load address not 16-byte aligned or area beyond the physical-address width",
        ),
    )
}

fn check_entry_controls<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    let caps = ctx.caps;
    let entry_raw = v.read32(F::VmEntryControls);
    ensure(
        caps.entry.effective().allows(entry_raw),
        control("27.2.1.3: reserved VM-entry control bits (IA32_VMX_TRUE_ENTRY_CTLS)"),
    )?;
    let entry = EntryControls::from_bits_retain(entry_raw);

    let info = InterruptionInfo(v.read32(F::VmEntryInterruptionInfo));
    if info.is_valid() {
        let Some(kind) = info.kind() else {
            return Err(control(
                "27.2.1.3: event injection with reserved interruption type 1",
            ));
        };
        let vector = info.vector();
        if kind == InterruptionType::OtherEvent {
            ensure(
                caps.proc
                    .effective()
                    .can_set(PrimaryProcBased::MONITOR_TRAP_FLAG.bits()),
                control(
                    "27.2.1.3: event injection of type 7 (other event) without monitor-trap-flag support",
                ),
            )?;
        }
        match kind {
            InterruptionType::Nmi => ensure(
                vector == VECTOR_NMI,
                control("27.2.1.3: injected NMI with a vector other than 2"),
            )?,
            InterruptionType::HardwareException => ensure(
                vector <= 31,
                control("27.2.1.3: injected hardware exception with a vector above 31"),
            )?,
            InterruptionType::OtherEvent => ensure(
                vector == 0,
                control("27.2.1.3: injected other event with a vector other than 0"),
            )?,
            _ => {}
        }
        // The error-code rule: "protected mode" is CR0.PE, or any CR0 when
        // "unrestricted guest" is 0 (CR0.PE is then fixed to 1 anyway).
        let unrestricted = effective_proc2(v).contains(SecondaryProcBased::UNRESTRICTED_GUEST);
        let protected = !unrestricted || v.read(F::GuestCr0) & CR0_PE != 0;
        let hw_exception = kind == InterruptionType::HardwareException;
        if !(caps.basic.any_exception_error_code && protected && hw_exception) {
            let should = hw_exception && protected && ERROR_CODE_VECTORS.contains(&vector);
            ensure(
                info.error_code_valid() == should,
                control(
                    "27.2.1.3: deliver-error-code bit does not match the event (type, vector, CR0.PE)",
                ),
            )?;
        }
        ensure(
            info.0 & InterruptionInfo::ENTRY_RESERVED == 0,
            control("27.2.1.3: VM-entry interruption-information bits 30:12 set"),
        )?;
        if info.error_code_valid() {
            ensure(
                v.read32(F::VmEntryExceptionErrorCode) >> 16 == 0,
                control("27.2.1.3: VM-entry exception error code bits 31:16 set"),
            )?;
        }
        if kind.uses_instruction_length() {
            let len = v.read32(F::VmEntryInstructionLength);
            let min = if caps.misc.inject_zero_length { 0 } else { 1 };
            ensure(
                (min..=MAX_INSTRUCTION_LENGTH).contains(&len),
                control(
                    "27.2.1.3: VM-entry instruction length outside 1-15 (0-15 if IA32_VMX_MISC bit 30) for a software event",
                ),
            )?;
        }
    }
    ensure(
        msr_area_ok(
            v,
            F::VmEntryMsrLoadAddress,
            F::VmEntryMsrLoadCount,
            ctx.maxphyaddr,
        ),
        control(
            "27.2.1.3: VM-entry MSR-load address not 16-byte aligned or area beyond the physical-address width",
        ),
    )?;
    // Never in SMM: neither SMM control may be 1.
    ensure(
        !entry.intersects(
            EntryControls::ENTRY_TO_SMM | EntryControls::DEACTIVATE_DUAL_MONITOR_TREATMENT,
        ),
        control("27.2.1.3: \"entry to SMM\" or \"deactivate dual-monitor treatment\" outside SMM"),
    )
}

/// The checks on host-state fields (SDM 27.2.2 control registers and MSRs,
/// 27.2.3 segment and descriptor-table registers, 27.2.4 address-space
/// size); failure is VMfailValid 8.
pub fn check_host_state<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    let caps = ctx.caps;
    let exit = ExitControls::from_bits_retain(v.read32(F::VmExitControls));
    let entry = EntryControls::from_bits_retain(v.read32(F::VmEntryControls));
    let host64 = exit.contains(ExitControls::HOST_ADDRESS_SPACE_SIZE);
    let cr4 = v.read(F::HostCr4);

    // 27.2.2
    ensure(
        caps.cr0_valid(v.read(F::HostCr0), false),
        host("27.2.2: host CR0 violates IA32_VMX_CR0_FIXED0/FIXED1"),
    )?;
    ensure(
        caps.cr4_valid(cr4),
        host("27.2.2: host CR4 violates IA32_VMX_CR4_FIXED0/FIXED1"),
    )?;
    ensure(
        cr4 & CR4_CET == 0 || v.read(F::HostCr0) & CR0_WP != 0,
        host("27.2.2: host CR4.CET 1 with CR0.WP 0"),
    )?;
    ensure(
        within_width(v.read(F::HostCr3), ctx.maxphyaddr),
        host("27.2.2: host CR3 beyond the physical-address width"),
    )?;
    ensure(
        is_canonical(v.read(F::HostIa32SysenterEsp))
            && is_canonical(v.read(F::HostIa32SysenterEip)),
        host("27.2.2: host IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical"),
    )?;
    if exit.contains(ExitControls::LOAD_IA32_PAT) {
        ensure(
            pat_valid(v.read(F::HostIa32Pat)),
            host("27.2.2: host IA32_PAT with an invalid memory type"),
        )?;
    }
    if exit.contains(ExitControls::LOAD_IA32_EFER) {
        let efer = v.read(F::HostIa32Efer);
        ensure(
            efer & !EFER_DEFINED == 0,
            host("27.2.2: host IA32_EFER reserved bits set"),
        )?;
        ensure(
            (efer & EFER_LMA != 0) == host64 && (efer & EFER_LME != 0) == host64,
            host("27.2.2: host IA32_EFER.LMA/LME differ from \"host address-space size\""),
        )?;
    }
    if exit.contains(ExitControls::LOAD_PKRS) {
        ensure(
            v.read(F::HostIa32Pkrs) >> 32 == 0,
            host("27.2.2: host IA32_PKRS bits 63:32 set"),
        )?;
    }

    // 27.2.3
    let selectors = [
        F::HostEsSelector,
        F::HostCsSelector,
        F::HostSsSelector,
        F::HostDsSelector,
        F::HostFsSelector,
        F::HostGsSelector,
        F::HostTrSelector,
    ];
    ensure(
        selectors
            .iter()
            .all(|&s| v.read16(s) & (SEL_RPL_MASK | SEL_TI) == 0),
        host("27.2.3: host selector with RPL or TI set"),
    )?;
    ensure(
        v.read16(F::HostCsSelector) != 0,
        host("27.2.3: host CS selector is 0"),
    )?;
    ensure(
        v.read16(F::HostTrSelector) != 0,
        host("27.2.3: host TR selector is 0"),
    )?;
    ensure(
        host64 || v.read16(F::HostSsSelector) != 0,
        host("27.2.3: host SS selector is 0 with \"host address-space size\" 0"),
    )?;
    let bases = [
        F::HostFsBase,
        F::HostGsBase,
        F::HostGdtrBase,
        F::HostIdtrBase,
        F::HostTrBase,
    ];
    ensure(
        bases.iter().all(|&b| is_canonical(v.read(b))),
        host("27.2.3: host FS, GS, GDTR, IDTR or TR base not canonical"),
    )?;

    // 27.2.4
    let guest64 = entry.contains(EntryControls::IA32E_MODE_GUEST);
    if ctx.in_ia32e_mode {
        ensure(
            host64,
            host("27.2.4: \"host address-space size\" 0 in IA-32e mode"),
        )?;
    } else {
        ensure(
            !guest64 && !host64,
            host(
                "27.2.4: \"IA-32e mode guest\" or \"host address-space size\" outside IA-32e mode",
            ),
        )?;
    }
    let rip = v.read(F::HostRip);
    if host64 {
        ensure(
            cr4 & CR4_PAE != 0,
            host("27.2.4: host CR4.PAE 0 with \"host address-space size\" 1"),
        )?;
        ensure(is_canonical(rip), host("27.2.4: host RIP not canonical"))?;
    } else {
        ensure(
            !guest64,
            host("27.2.4: \"IA-32e mode guest\" with \"host address-space size\" 0"),
        )?;
        ensure(
            cr4 & CR4_PCIDE == 0,
            host("27.2.4: host CR4.PCIDE 1 with \"host address-space size\" 0"),
        )?;
        ensure(
            rip >> 32 == 0,
            host("27.2.4: host RIP bits 63:32 set with \"host address-space size\" 0"),
        )?;
    }
    Ok(())
}

/// One guest segment register as the VMCS holds it.
#[derive(Clone, Copy, Debug)]
struct Segment {
    selector: u16,
    base: u64,
    limit: u32,
    ar: u32,
}

impl Segment {
    fn read(v: &impl VmcsAccess, [sel, base, limit, ar]: [F; 4]) -> Self {
        Self {
            selector: v.read16(sel),
            base: v.read(base),
            limit: v.read32(limit),
            ar: v.read32(ar),
        }
    }

    const fn usable(self) -> bool {
        self.ar & AR_UNUSABLE == 0
    }

    const fn kind(self) -> u32 {
        self.ar & AR_TYPE_MASK
    }

    const fn s(self) -> bool {
        self.ar & AR_S != 0
    }

    const fn dpl(self) -> u16 {
        ((self.ar >> AR_DPL_SHIFT) & 0b11) as u16
    }

    const fn present(self) -> bool {
        self.ar & AR_P != 0
    }

    const fn rpl(self) -> u16 {
        self.selector & SEL_RPL_MASK
    }

    const fn ti(self) -> bool {
        self.selector & SEL_TI != 0
    }

    const fn reserved_clear(self) -> bool {
        self.ar & AR_RESERVED == 0
    }

    /// SDM 27.3.1.2: limit bits 11:0 not all ones => G = 0; limit bits
    /// 31:20 not all zeros => G = 1.
    const fn granularity_ok(self) -> bool {
        let g = self.ar & AR_G != 0;
        (self.limit & 0xfff == 0xfff || !g) && (self.limit >> 20 == 0 || g)
    }
}

const CS: [F; 4] = [
    F::GuestCsSelector,
    F::GuestCsBase,
    F::GuestCsLimit,
    F::GuestCsAccessRights,
];
const SS: [F; 4] = [
    F::GuestSsSelector,
    F::GuestSsBase,
    F::GuestSsLimit,
    F::GuestSsAccessRights,
];
const DS: [F; 4] = [
    F::GuestDsSelector,
    F::GuestDsBase,
    F::GuestDsLimit,
    F::GuestDsAccessRights,
];
const ES: [F; 4] = [
    F::GuestEsSelector,
    F::GuestEsBase,
    F::GuestEsLimit,
    F::GuestEsAccessRights,
];
const FS: [F; 4] = [
    F::GuestFsSelector,
    F::GuestFsBase,
    F::GuestFsLimit,
    F::GuestFsAccessRights,
];
const GS: [F; 4] = [
    F::GuestGsSelector,
    F::GuestGsBase,
    F::GuestGsLimit,
    F::GuestGsAccessRights,
];
const TR: [F; 4] = [
    F::GuestTrSelector,
    F::GuestTrBase,
    F::GuestTrLimit,
    F::GuestTrAccessRights,
];
const LDTR: [F; 4] = [
    F::GuestLdtrSelector,
    F::GuestLdtrBase,
    F::GuestLdtrLimit,
    F::GuestLdtrAccessRights,
];

/// What the guest-state checks derive from the controls and CRs.
#[derive(Clone, Copy, Debug)]
struct GuestMode {
    entry: EntryControls,
    pin: PinBased,
    proc2: SecondaryProcBased,
    ia32e: bool,
    unrestricted: bool,
    cr0: u64,
    cr4: u64,
    rflags: u64,
    v8086: bool,
    injection: InterruptionInfo,
}

impl GuestMode {
    fn read(v: &impl VmcsAccess) -> Self {
        let entry = EntryControls::from_bits_retain(v.read32(F::VmEntryControls));
        let proc2 = effective_proc2(v);
        let rflags = v.read(F::GuestRflags);
        Self {
            entry,
            pin: PinBased::from_bits_retain(v.read32(F::PinBasedVmExecControls)),
            proc2,
            ia32e: entry.contains(EntryControls::IA32E_MODE_GUEST),
            unrestricted: proc2.contains(SecondaryProcBased::UNRESTRICTED_GUEST),
            cr0: v.read(F::GuestCr0),
            cr4: v.read(F::GuestCr4),
            rflags,
            v8086: rflags & RFLAGS_VM != 0,
            injection: InterruptionInfo(v.read32(F::VmEntryInterruptionInfo)),
        }
    }

    /// The type of the event VM entry injects, if any.
    fn injected(&self) -> Option<InterruptionType> {
        if self.injection.is_valid() {
            self.injection.kind()
        } else {
            None
        }
    }
}

/// The checks on the guest-state area (SDM 27.3.1.1-27.3.1.6); failure is
/// a VM-entry failure with exit reason 33 and the qualification of 27.8.
///
/// Independent of nesting: it checks any VMCS against `ctx.caps`.
pub fn check_guest_state<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    let m = GuestMode::read(v);
    check_guest_registers(v, ctx, &m)?;
    check_guest_segments(v, &m)?;
    check_guest_tables(v)?;
    check_guest_rip_rflags(v, &m)?;
    check_guest_non_register(v, ctx, &m)?;
    check_guest_pdptes(v, ctx, &m)
}

/// Which guest-state checks a write of one field can break (L0's entry
/// guard on VMCS01 re-checks only what its exit handler wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum GuestScope {
    /// No guest-state check reads the field.
    None = 0,
    /// Only the checks of [`check_guest_events`] read it.
    Events = 1,
    /// Any check may read it: run [`check_guest_state`].
    All = 2,
}

/// The checks a write of `f` can break: [`GuestScope::Events`] for what the
/// exit path writes on almost every exit (RIP, RSP, RFLAGS other than VM,
/// interruptibility and activity states, pending debug exceptions, the
/// event to inject, the NMI controls), [`GuestScope::All`] for the other
/// guest-state fields and the controls the guest checks derive modes from,
/// [`GuestScope::None`] for the rest. RFLAGS.VM changes the segment rules:
/// [`check_guest_events`] runs every check when it is set.
pub const fn guest_scope(f: F) -> GuestScope {
    use crate::vmx::FieldGroup;
    // The group from the encoding (bits 11:10): cheaper than the table's
    // match, on a path taken at every VMWRITE of L0.
    let group = FieldGroup::from_encoding(f.encoding());
    if matches!(group, FieldGroup::ExitInfo | FieldGroup::Host) {
        return GuestScope::None;
    }
    match f {
        F::GuestRip
        | F::GuestRsp
        | F::GuestRflags
        | F::GuestInterruptibilityState
        | F::GuestActivityState
        | F::GuestPendingDebugExceptions
        | F::VmEntryInterruptionInfo
        | F::VmEntryExceptionErrorCode
        | F::VmEntryInstructionLength
        | F::PinBasedVmExecControls => GuestScope::Events,
        F::VmEntryControls | F::SecondaryProcBasedVmExecControls | F::VmcsLinkPointer => {
            GuestScope::All
        }
        _ => match group {
            FieldGroup::Guest => GuestScope::All,
            _ => GuestScope::None,
        },
    }
}

/// The guest-state checks that fields of [`GuestScope::Events`] can break:
/// 27.3.1.4 (RIP, RFLAGS) and 27.3.1.5 (activity and interruptibility
/// states, pending debug exceptions, VMCS link pointer), on a VMCS whose
/// other guest state passed [`check_guest_state`] before. With RFLAGS.VM
/// set (virtual-8086 segment rules, 27.3.1.2) it runs every check.
pub fn check_guest_events<M: PhysMemory>(
    v: &impl VmcsAccess,
    ctx: &CheckCtx<'_, M>,
) -> CheckResult {
    let m = GuestMode::read(v);
    if m.v8086 {
        return check_guest_state(v, ctx);
    }
    check_guest_rip_rflags(v, &m)?;
    check_guest_non_register(v, ctx, &m)
}

/// 27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and MSRs".
fn check_guest_registers<M: PhysMemory>(
    v: &impl VmcsAccess,
    ctx: &CheckCtx<'_, M>,
    m: &GuestMode,
) -> CheckResult {
    let (cr0, cr4) = (m.cr0, m.cr4);
    ensure(
        ctx.caps.cr0_valid(cr0, m.unrestricted),
        guest(
            "27.3.1.1: guest CR0 violates IA32_VMX_CR0_FIXED0/FIXED1 (PE and PG free only for an unrestricted guest)",
        ),
    )?;
    ensure(
        cr0 & CR0_PG == 0 || cr0 & CR0_PE != 0,
        guest("27.3.1.1: guest CR0.PG 1 with CR0.PE 0"),
    )?;
    ensure(
        ctx.caps.cr4_valid(cr4),
        guest("27.3.1.1: guest CR4 violates IA32_VMX_CR4_FIXED0/FIXED1"),
    )?;
    ensure(
        cr4 & CR4_CET == 0 || cr0 & CR0_WP != 0,
        guest("27.3.1.1: guest CR4.CET 1 with CR0.WP 0"),
    )?;
    let load_debug = m.entry.contains(EntryControls::LOAD_DEBUG_CONTROLS);
    if load_debug {
        ensure(
            v.read(F::GuestIa32Debugctl) & DEBUGCTL_RESERVED == 0,
            guest("27.3.1.1: guest IA32_DEBUGCTL reserved bits set"),
        )?;
    }
    if m.ia32e {
        ensure(
            cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0,
            guest("27.3.1.1: \"IA-32e mode guest\" without CR0.PG and CR4.PAE"),
        )?;
    } else {
        ensure(
            cr4 & CR4_PCIDE == 0,
            guest("27.3.1.1: guest CR4.PCIDE 1 without \"IA-32e mode guest\""),
        )?;
    }
    ensure(
        within_width(v.read(F::GuestCr3), ctx.maxphyaddr),
        guest("27.3.1.1: guest CR3 beyond the physical-address width"),
    )?;
    if load_debug {
        ensure(
            v.read(F::GuestDr7) & DR7_RESERVED_HIGH == 0,
            guest("27.3.1.1: guest DR7 bits 63:32 set"),
        )?;
    }
    ensure(
        is_canonical(v.read(F::GuestIa32SysenterEsp))
            && is_canonical(v.read(F::GuestIa32SysenterEip)),
        guest("27.3.1.1: guest IA32_SYSENTER_ESP or IA32_SYSENTER_EIP not canonical"),
    )?;
    if m.entry.contains(EntryControls::LOAD_IA32_PAT) {
        ensure(
            pat_valid(v.read(F::GuestIa32Pat)),
            guest("27.3.1.1: guest IA32_PAT with an invalid memory type"),
        )?;
    }
    if m.entry.contains(EntryControls::LOAD_IA32_EFER) {
        let efer = v.read(F::GuestIa32Efer);
        ensure(
            efer & !EFER_DEFINED == 0,
            guest("27.3.1.1: guest IA32_EFER reserved bits set"),
        )?;
        let lma = efer & EFER_LMA != 0;
        ensure(
            lma == m.ia32e,
            guest("27.3.1.1: guest IA32_EFER.LMA differs from \"IA-32e mode guest\""),
        )?;
        ensure(
            cr0 & CR0_PG == 0 || (efer & EFER_LME != 0) == lma,
            guest("27.3.1.1: guest IA32_EFER.LME differs from LMA with CR0.PG 1"),
        )?;
    }
    if m.entry.contains(EntryControls::LOAD_IA32_BNDCFGS) {
        let bnd = v.read(F::GuestIa32Bndcfgs);
        ensure(
            bnd & BNDCFGS_RESERVED == 0 && is_canonical(bnd & !PAGE_OFFSET_MASK),
            guest("27.3.1.1: guest IA32_BNDCFGS reserved bits set or base not canonical"),
        )?;
    }
    if m.entry.contains(EntryControls::LOAD_PKRS) {
        ensure(
            v.read(F::GuestIa32Pkrs) >> 32 == 0,
            guest("27.3.1.1: guest IA32_PKRS bits 63:32 set"),
        )?;
    }
    Ok(())
}

/// 27.3.1.2 "Checks on Guest Segment Registers".
fn check_guest_segments(v: &impl VmcsAccess, m: &GuestMode) -> CheckResult {
    let cs = Segment::read(v, CS);
    let ss = Segment::read(v, SS);
    let data = [
        Segment::read(v, DS),
        Segment::read(v, ES),
        Segment::read(v, FS),
        Segment::read(v, GS),
    ];
    let tr = Segment::read(v, TR);
    let ldtr = Segment::read(v, LDTR);
    let [ds, es, fs, gs] = data;
    let all6 = [cs, ss, ds, es, fs, gs];

    // Selectors.
    ensure(!tr.ti(), guest("27.3.1.2: TR selector TI flag set"))?;
    ensure(
        !ldtr.usable() || !ldtr.ti(),
        guest("27.3.1.2: usable LDTR selector TI flag set"),
    )?;
    if !m.v8086 && !m.unrestricted {
        ensure(
            ss.rpl() == cs.rpl(),
            guest("27.3.1.2: SS selector RPL differs from CS RPL"),
        )?;
    }

    // Base addresses.
    if m.v8086 {
        ensure(
            all6.iter().all(|s| s.base == u64::from(s.selector) << 4),
            guest("27.3.1.2: virtual-8086 segment base not selector * 16"),
        )?;
    }
    ensure(
        is_canonical(tr.base) && is_canonical(fs.base) && is_canonical(gs.base),
        guest("27.3.1.2: TR, FS or GS base not canonical"),
    )?;
    ensure(
        !ldtr.usable() || is_canonical(ldtr.base),
        guest("27.3.1.2: usable LDTR base not canonical"),
    )?;
    ensure(
        cs.base >> 32 == 0,
        guest("27.3.1.2: CS base bits 63:32 set"),
    )?;
    ensure(
        [ss, ds, es]
            .iter()
            .all(|s| !s.usable() || s.base >> 32 == 0),
        guest("27.3.1.2: usable SS, DS or ES base bits 63:32 set"),
    )?;

    if m.v8086 {
        // Limits and access rights in virtual-8086 mode.
        ensure(
            all6.iter().all(|s| s.limit == LIMIT_V8086),
            guest("27.3.1.2: virtual-8086 segment limit not 0xffff"),
        )?;
        ensure(
            all6.iter().all(|s| s.ar == AR_V8086),
            guest("27.3.1.2: virtual-8086 segment access rights not 0xf3"),
        )?;
    } else {
        check_protected_segments(cs, ss, &data, m)?;
    }
    check_tr_ldtr(tr, ldtr, m)
}

/// The access-rights checks of 27.3.1.2 outside virtual-8086 mode.
fn check_protected_segments(
    cs: Segment,
    ss: Segment,
    data: &[Segment; 4],
    m: &GuestMode,
) -> CheckResult {
    let cs_type = cs.kind();
    // Type.
    let cs_type_ok =
        matches!(cs_type, 9 | 11 | 13 | 15) || (m.unrestricted && cs_type == TYPE_DATA_RW_ACCESSED);
    ensure(
        cs_type_ok,
        guest("27.3.1.2: CS type not accessed code (or type 3 for an unrestricted guest)"),
    )?;
    ensure(
        !ss.usable()
            || matches!(
                ss.kind(),
                TYPE_DATA_RW_ACCESSED | TYPE_DATA_RW_DOWN_ACCESSED
            ),
        guest("27.3.1.2: usable SS type not 3 or 7"),
    )?;
    ensure(
        data.iter().all(|s| {
            !s.usable()
                || (s.kind() & TYPE_ACCESSED != 0
                    && (s.kind() & TYPE_CODE == 0 || s.kind() & TYPE_READ_WRITE != 0))
        }),
        guest("27.3.1.2: usable DS, ES, FS or GS type not accessed, or code not readable"),
    )?;
    // S.
    ensure(cs.s(), guest("27.3.1.2: CS S bit 0"))?;
    ensure(
        [ss, data[0], data[1], data[2], data[3]]
            .iter()
            .all(|s| !s.usable() || s.s()),
        guest("27.3.1.2: usable SS, DS, ES, FS or GS S bit 0"),
    )?;
    // DPL.
    let cs_dpl_ok = match cs_type {
        TYPE_DATA_RW_ACCESSED => cs.dpl() == 0,
        9 | 11 => cs.dpl() == ss.dpl(),
        _ => cs.dpl() <= ss.dpl(),
    };
    ensure(
        cs_dpl_ok,
        guest(
            "27.3.1.2: CS DPL (0 for type 3, SS DPL for non-conforming, at most SS DPL for conforming)",
        ),
    )?;
    if !m.unrestricted {
        ensure(
            ss.dpl() == ss.rpl(),
            guest("27.3.1.2: SS DPL differs from its selector RPL"),
        )?;
    }
    if cs_type == TYPE_DATA_RW_ACCESSED || m.cr0 & CR0_PE == 0 {
        ensure(
            ss.dpl() == 0,
            guest("27.3.1.2: SS DPL not 0 with CS type 3 or CR0.PE 0"),
        )?;
    }
    if !m.unrestricted {
        ensure(
            data.iter().all(|s| {
                // Conforming code segments (types 12-15) are exempt.
                !s.usable()
                    || (s.kind() & TYPE_CODE != 0 && s.kind() & TYPE_CONFORMING != 0)
                    || s.dpl() >= s.rpl()
            }),
            guest("27.3.1.2: usable DS, ES, FS or GS DPL below its selector RPL"),
        )?;
    }
    // P.
    ensure(cs.present(), guest("27.3.1.2: CS not present"))?;
    let others = [ss, data[0], data[1], data[2], data[3]];
    ensure(
        others.iter().all(|s| !s.usable() || s.present()),
        guest("27.3.1.2: usable SS, DS, ES, FS or GS not present"),
    )?;
    // Reserved bits.
    ensure(
        cs.reserved_clear(),
        guest("27.3.1.2: CS access-rights reserved bits set"),
    )?;
    ensure(
        others.iter().all(|s| !s.usable() || s.reserved_clear()),
        guest("27.3.1.2: usable SS, DS, ES, FS or GS access-rights reserved bits set"),
    )?;
    // D/B.
    ensure(
        !(m.ia32e && cs.ar & AR_L != 0 && cs.ar & AR_DB != 0),
        guest("27.3.1.2: CS.L and CS.D both 1 in IA-32e mode"),
    )?;
    // G.
    ensure(
        cs.granularity_ok(),
        guest("27.3.1.2: CS limit inconsistent with its G bit"),
    )?;
    ensure(
        others.iter().all(|s| !s.usable() || s.granularity_ok()),
        guest("27.3.1.2: usable SS, DS, ES, FS or GS limit inconsistent with its G bit"),
    )
}

/// The TR and LDTR access-rights checks of 27.3.1.2.
fn check_tr_ldtr(tr: Segment, ldtr: Segment, m: &GuestMode) -> CheckResult {
    let tr_type_ok = match tr.kind() {
        TYPE_TSS_BUSY => true,
        TYPE_TSS16_BUSY => !m.ia32e,
        _ => false,
    };
    ensure(
        tr_type_ok,
        guest("27.3.1.2: TR type not a busy TSS (11, or 3 outside IA-32e mode)"),
    )?;
    ensure(!tr.s(), guest("27.3.1.2: TR S bit 1"))?;
    ensure(tr.present(), guest("27.3.1.2: TR not present"))?;
    ensure(
        tr.reserved_clear(),
        guest("27.3.1.2: TR access-rights reserved bits set"),
    )?;
    ensure(
        tr.granularity_ok(),
        guest("27.3.1.2: TR limit inconsistent with its G bit"),
    )?;
    ensure(tr.usable(), guest("27.3.1.2: TR unusable"))?;
    if ldtr.usable() {
        ensure(
            ldtr.kind() == TYPE_LDT,
            guest("27.3.1.2: usable LDTR type not 2"),
        )?;
        ensure(!ldtr.s(), guest("27.3.1.2: usable LDTR S bit 1"))?;
        ensure(ldtr.present(), guest("27.3.1.2: usable LDTR not present"))?;
        ensure(
            ldtr.reserved_clear(),
            guest("27.3.1.2: usable LDTR access-rights reserved bits set"),
        )?;
        ensure(
            ldtr.granularity_ok(),
            guest("27.3.1.2: usable LDTR limit inconsistent with its G bit"),
        )?;
    }
    Ok(())
}

/// 27.3.1.3 "Checks on Guest Descriptor-Table Registers".
fn check_guest_tables(v: &impl VmcsAccess) -> CheckResult {
    ensure(
        is_canonical(v.read(F::GuestGdtrBase)) && is_canonical(v.read(F::GuestIdtrBase)),
        guest("27.3.1.3: GDTR or IDTR base not canonical"),
    )?;
    ensure(
        v.read32(F::GuestGdtrLimit) >> 16 == 0 && v.read32(F::GuestIdtrLimit) >> 16 == 0,
        guest("27.3.1.3: GDTR or IDTR limit bits 31:16 set"),
    )
}

/// 27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP".
fn check_guest_rip_rflags(v: &impl VmcsAccess, m: &GuestMode) -> CheckResult {
    let rip = v.read(F::GuestRip);
    let cs_l = v.read32(F::GuestCsAccessRights) & AR_L != 0;
    if m.ia32e && cs_l {
        ensure(
            is_canonical(rip),
            guest("27.3.1.4: RIP not canonical in 64-bit mode"),
        )?;
    } else {
        ensure(
            rip >> 32 == 0,
            guest("27.3.1.4: RIP bits 63:32 set outside 64-bit mode"),
        )?;
    }
    let rflags = m.rflags;
    ensure(
        rflags & RFLAGS_RESERVED0 == 0 && rflags & RFLAGS_FIXED1 != 0,
        guest("27.3.1.4: RFLAGS reserved bits (63:22, 15, 5, 3 zero; 1 one)"),
    )?;
    if m.ia32e || m.cr0 & CR0_PE == 0 {
        ensure(
            rflags & RFLAGS_VM == 0,
            guest("27.3.1.4: RFLAGS.VM 1 in IA-32e mode or with CR0.PE 0"),
        )?;
    }
    if m.injected() == Some(InterruptionType::ExternalInterrupt) {
        ensure(
            rflags & RFLAGS_IF != 0,
            guest("27.3.1.4: external interrupt injected with RFLAGS.IF 0"),
        )?;
    }
    Ok(())
}

/// Whether an event of `kind` and `vector` may be injected into a guest in
/// activity state `state` (27.3.1.5).
fn injectable_in(state: u32, kind: InterruptionType, vector: u8) -> bool {
    use InterruptionType as T;
    match state {
        activity::ACTIVE => true,
        activity::HLT => match kind {
            T::ExternalInterrupt | T::Nmi => true,
            T::HardwareException => vector == VECTOR_DB || vector == VECTOR_MC,
            T::OtherEvent => vector == 0,
            _ => false,
        },
        activity::SHUTDOWN => {
            kind == T::Nmi || (kind == T::HardwareException && vector == VECTOR_MC)
        }
        _ => false,
    }
}

/// 27.3.1.5 "Checks on Guest Non-Register State".
fn check_guest_non_register<M: PhysMemory>(
    v: &impl VmcsAccess,
    ctx: &CheckCtx<'_, M>,
    m: &GuestMode,
) -> CheckResult {
    let misc = &ctx.caps.misc;
    let state = v.read32(F::GuestActivityState);
    let interruptibility = v.read32(F::GuestInterruptibilityState);
    let sti = interruptibility & BLOCKING_BY_STI != 0;
    let mov_ss = interruptibility & BLOCKING_BY_MOV_SS != 0;
    let injected = m.injected();

    // Activity state.
    let supported = match state {
        activity::ACTIVE => true,
        activity::HLT => misc.activity_hlt,
        activity::SHUTDOWN => misc.activity_shutdown,
        activity::WAIT_FOR_SIPI => misc.activity_wait_for_sipi,
        _ => false,
    };
    ensure(
        supported,
        guest("27.3.1.5: activity state not supported (IA32_VMX_MISC bits 8:6)"),
    )?;
    let ss_dpl = (v.read32(F::GuestSsAccessRights) >> AR_DPL_SHIFT) & 0b11;
    ensure(
        state != activity::HLT || ss_dpl == 0,
        guest("27.3.1.5: HLT activity state with SS DPL not 0"),
    )?;
    ensure(
        state == activity::ACTIVE || !(sti || mov_ss),
        guest("27.3.1.5: blocking by STI or MOV SS outside the active state"),
    )?;
    if let Some(kind) = injected {
        ensure(
            injectable_in(state, kind, m.injection.vector()),
            guest("27.3.1.5: injected event blocked in the target activity state"),
        )?;
    }

    // Interruptibility state.
    ensure(
        interruptibility & INTERRUPTIBILITY_RESERVED == 0,
        guest("27.3.1.5: interruptibility-state reserved bits 31:4 set"),
    )?;
    ensure(
        !(sti && mov_ss),
        guest("27.3.1.5: blocking by both STI and MOV SS"),
    )?;
    ensure(
        !sti || m.rflags & RFLAGS_IF != 0,
        guest("27.3.1.5: blocking by STI with RFLAGS.IF 0"),
    )?;
    match injected {
        Some(InterruptionType::ExternalInterrupt) => ensure(
            !sti && !mov_ss,
            guest("27.3.1.5: external interrupt injected with blocking by STI or MOV SS"),
        )?,
        Some(InterruptionType::Nmi) => {
            ensure(
                !mov_ss,
                guest("27.3.1.5: NMI injected with blocking by MOV SS"),
            )?;
            // Implementation specific (27.8, qualification 3); done here so
            // that such a VMCS is never handed to a processor that does it.
            ensure(
                !sti,
                guest_q(
                    qualification::NMI_INJECTION_STI,
                    "27.3.1.5: NMI injected with blocking by STI",
                ),
            )?;
        }
        _ => {}
    }
    ensure(
        interruptibility & BLOCKING_BY_SMI == 0,
        guest("27.3.1.5: blocking by SMI outside SMM"),
    )?;
    if m.pin.contains(PinBased::VIRTUAL_NMIS) && injected == Some(InterruptionType::Nmi) {
        ensure(
            interruptibility & BLOCKING_BY_NMI == 0,
            guest("27.3.1.5: NMI injected with virtual-NMI blocking"),
        )?;
    }

    // Pending debug exceptions.
    let pending = v.read(F::GuestPendingDebugExceptions);
    ensure(
        pending & PENDING_DBG_RESERVED == 0,
        guest("27.3.1.5: pending debug exceptions reserved bits (11:4, 13, 15, 63:16) set"),
    )?;
    if sti || mov_ss || state == activity::HLT {
        let tf = m.rflags & RFLAGS_TF != 0;
        let btf = v.read(F::GuestIa32Debugctl) & DEBUGCTL_BTF != 0;
        let bs = pending & PENDING_DBG_BS != 0;
        ensure(
            bs == (tf && !btf),
            guest(
                "27.3.1.5: pending debug exceptions BS differs from RFLAGS.TF && !IA32_DEBUGCTL.BTF while blocking or halted",
            ),
        )?;
    }

    // VMCS link pointer.
    let link = v.read(F::VmcsLinkPointer);
    if link != VMCS_LINK_POINTER_NONE {
        let bad = |check| guest_q(qualification::VMCS_LINK_POINTER, check);
        ensure(
            page_address_ok(link, ctx.maxphyaddr),
            bad("27.3.1.5: VMCS link pointer not 4K aligned or beyond the physical-address width"),
        )?;
        ensure(
            ctx.current_vmcs != Some(link),
            bad("27.3.1.5: VMCS link pointer is the current VMCS"),
        )?;
        // Memory that cannot be read is treated as reading all ones (no
        // such revision identifier exists).
        let word = ctx.mem.read_u32(link).unwrap_or(u32::MAX);
        let shadowing = m.proc2.contains(SecondaryProcBased::VMCS_SHADOWING);
        ensure(
            word & VMCS_REVISION_MASK == ctx.vmcs_revision
                && (word & VMCS_SHADOW_INDICATOR != 0) == shadowing,
            bad(
                "27.3.1.5: VMCS link pointer region revision identifier or shadow-VMCS indicator wrong",
            ),
        )?;
    }
    Ok(())
}

/// 27.3.1.6 "Checks on Guest Page-Directory-Pointer-Table Entries": with PAE
/// paging (CR0.PG, CR4.PAE, not IA-32e mode), present PDPTEs may not set
/// reserved bits; they come from memory at CR3 without EPT, from the
/// guest-state fields with EPT.
fn check_guest_pdptes<M: PhysMemory>(
    v: &impl VmcsAccess,
    ctx: &CheckCtx<'_, M>,
    m: &GuestMode,
) -> CheckResult {
    if m.cr0 & CR0_PG == 0 || m.cr4 & CR4_PAE == 0 || m.ia32e {
        return Ok(());
    }
    let reserved = PDPTE_RESERVED_LOW
        | if ctx.maxphyaddr >= 64 {
            0
        } else {
            !((1u64 << ctx.maxphyaddr) - 1)
        };
    let ok = |pdpte: u64| pdpte & PDPTE_P == 0 || pdpte & reserved == 0;
    let fail = guest_q(
        qualification::PDPTE,
        "27.3.1.6: PDPTE present with reserved bits set (or not readable)",
    );
    if m.proc2.contains(SecondaryProcBased::ENABLE_EPT) {
        let fields = [
            F::GuestPdpte0,
            F::GuestPdpte1,
            F::GuestPdpte2,
            F::GuestPdpte3,
        ];
        return ensure(fields.iter().all(|&f| ok(v.read(f))), fail);
    }
    let pdpt = v.read(F::GuestCr3) & CR3_PAE_PDPT_MASK;
    for i in 0..4u64 {
        // An unreadable entry reads as all ones: present with reserved bits.
        let pdpte = ctx.mem.read_u64(pdpt + i * 8).unwrap_or(u64::MAX);
        ensure(ok(pdpte), fail)?;
    }
    Ok(())
}

/// The one check of SDM 27.1 ("Basic VM-Entry Checks") on the state of
/// the VMM itself rather than the VMCS: VMLAUNCH/VMRESUME right after MOV SS
/// or POP SS fails with VMfailValid 26. `vmm_interruptibility` is the
/// VMM's interruptibility state (for L1: VMCS01's guest field at the exit).
/// The other basic checks (CPL, mode, launch state) belong to the
/// instruction's emulation, and come first.
pub fn check_events_blocked_by_mov_ss(vmm_interruptibility: u32) -> CheckResult {
    ensure(
        vmm_interruptibility & BLOCKING_BY_MOV_SS == 0,
        EntryFailure::VmFail {
            error: VmInstructionError::EntryEventsBlockedByMovSs,
            check: "27.1: VM entry with events blocked by MOV SS",
        },
    )
}

/// All the checks of VM entry on a VMCS, in the SDM's order: controls
/// (27.2.1), host state (27.2.2-27.2.4), guest state (27.3.1).
pub fn check_all<M: PhysMemory>(v: &impl VmcsAccess, ctx: &CheckCtx<'_, M>) -> CheckResult {
    check_controls(v, ctx)?;
    check_host_state(v, ctx)?;
    check_guest_state(v, ctx)
}

#[cfg(test)]
pub mod testing;

#[cfg(test)]
mod tests;
