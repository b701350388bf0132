//! Does L1 want this exit of its L2? One pure function of the exit and of
//! VMCS12, following Intel SDM Vol. 3C chapter 26 "VMX Non-Root Operation"
//! (chapter 25 in older editions): 26.1.2 "Instructions That Cause VM Exits
//! Unconditionally", 26.1.3 "Instructions That Cause VM Exits Conditionally"
//! and 26.2 "Other Causes of VM Exits", with the control fields of 25.6
//! "VM-Execution Control Fields".
//!
//! The question answered is: had L2 run on the processor that L1 believes
//! it has, with VMCS12 as the current VMCS, would this event have caused a
//! VM exit to L1? If yes, L0 reflects the exit (syncs VMCS02 to VMCS12 and
//! loads L1's host state); if no, the exit is L0's business: it emulates
//! the instruction for L2, delivers the event to L2, or just resumes it.
//!
//! # Contract with the caller (L0's exit path)
//!
//! L0 runs L2 with VMCS02, whose controls are the union of what L1 asks
//! and what L0 needs, so some exits are L0's alone. The caller takes those
//! *before* asking [`l1_wants_exit`]:
//!
//! - NMIs that L0 sent itself (kicks, quiesce): L0 always has NMI exiting
//!   in VMCS02; an NMI that is not L0's is then decided here (L1's "NMI
//!   exiting").
//! - EPT violations and misconfigurations of EPT01 (L2's EPT while L1 has
//!   no EPT), L0's own interrupt-window and NMI-window exits (requested to
//!   inject L0's or L1's pending events), L0's preemption-timer use, and any
//!   L0 hypercall L0 accepts from L2.
//! - Exits that L0 caused by setting a control L1 did not set are answered
//!   `false` here, so the L0 handlers run for them.
//!
//! Everything L0 does not claim is decided here. Input that no processor
//! would produce (an exit reason this table does not know, an invalid
//! interruption-information field, a CR number that does not exist) is
//! reflected: L1 then gets what the hardware gave L0, and L0 never panics.
//!
//! # Bitmaps in L1's memory
//!
//! The I/O, MSR and VMREAD/VMWRITE bitmaps are read through [`PhysMemory`]
//! at the addresses in VMCS12 (checked at VM entry). A bitmap byte that
//! cannot be read is treated as all ones, i.e. the exit is reflected; the
//! [`Rule::UnreadableBitmap`] decision names the address so that L0 can
//! report it (on hardware, a read of nonexistent memory returns all ones as
//! well).

use crate::mem::PhysMemory;
use crate::vmx::VmcsAccess;
use crate::vmx::VmcsField as F;
use crate::vmx::controls::{PinBased, PrimaryProcBased, SecondaryProcBased};
use crate::vmx::exit::{
    CrAccessQual, CrAccessType, ExitReason, ExitReasonField, InterruptionInfo, InterruptionType,
    IoQual,
};

/// SDM register numbers of the general-purpose registers used here (Table
/// 28-3, "Exit Qualification for Control-Register Accesses").
pub mod reg {
    /// RAX (0).
    pub const RAX: usize = 0;
    /// RCX (1): the MSR index of RDMSR/WRMSR.
    pub const RCX: usize = 1;
    /// RDX (2).
    pub const RDX: usize = 2;
}

/// Vector of the page-fault exception (#PF).
pub const PAGE_FAULT_VECTOR: u8 = 14;
/// Number of exception vectors covered by the exception bitmap (0-31).
pub const EXCEPTION_VECTORS: u8 = 32;
/// CR0.PE (bit 0).
pub const CR0_PE: u64 = 1 << 0;
/// CR0.TS (bit 3).
pub const CR0_TS: u64 = 1 << 3;
/// The CR0 bits LMSW writes: PE, MP, EM and TS (bits 3:0).
pub const LMSW_BITS: u64 = 0xf;
/// The CR3-target value fields, in order (SDM 25.6.7 "CR3-Target
/// Controls"); only the first CR3-target count of them are compared.
pub const CR3_TARGET_FIELDS: [F; 4] = [
    F::Cr3TargetValue0,
    F::Cr3TargetValue1,
    F::Cr3TargetValue2,
    F::Cr3TargetValue3,
];
/// Tertiary processor-based control "LOADIWKEY exiting" (bit 0; SDM
/// 25.6.2, Table 25-8).
pub const TERTIARY_LOADIWKEY_EXITING: u64 = 1 << 0;
/// The highest I/O port.
pub const IO_PORT_MAX: u32 = 0xffff;
/// First port of I/O bitmap B (bitmap A covers 0000H-7FFFH; SDM 25.6.4).
pub const IO_BITMAP_B_FIRST: u32 = 0x8000;
/// MSRs per range of the MSR bitmap (0-1FFFH, C0000000H-C0001FFFH).
pub const MSR_BITMAP_RANGE_LEN: u32 = 0x2000;
/// First MSR of the high range of the MSR bitmap.
pub const MSR_BITMAP_HIGH_BASE: u32 = 0xc000_0000;
/// Byte offsets of the four 1-KiB MSR bitmaps in the 4-KiB page (SDM
/// 25.6.9 "MSR-Bitmap Address").
pub const MSR_BITMAP_READ_LOW: u64 = 0;
/// Read bitmap for the high MSRs.
pub const MSR_BITMAP_READ_HIGH: u64 = 1024;
/// Write bitmap for the low MSRs.
pub const MSR_BITMAP_WRITE_LOW: u64 = 2048;
/// Write bitmap for the high MSRs.
pub const MSR_BITMAP_WRITE_HIGH: u64 = 3072;
/// Bits 14:0 of a VMCS-field encoding select the bit of the VMREAD and
/// VMWRITE bitmaps; an encoding with any higher bit set always exits (SDM
/// 26.1.3, VMREAD/VMWRITE with "VMCS shadowing").
pub const VMCS_BITMAP_ENCODING_BITS: u64 = 0x7fff;
/// Bits 31:28 of the VM-exit instruction-information field of VMREAD and
/// VMWRITE: Reg2, the register holding the field encoding (SDM 28.2.5).
pub const VMREAD_INFO_REG2_SHIFT: u32 = 28;
/// The bit of the ENCLS/ENCLV/PCONFIG-exiting bitmaps that stands for
/// every leaf number of 63 and above (SDM 25.6 "ENCLS-Exiting Bitmap",
/// "ENCLV-Exiting Bitmap", "PCONFIG-Exiting Bitmap"; 26.1.3).
pub const LEAF_BITMAP_LAST: u64 = 63;
/// Bits 7:0 of the exit qualification of a virtualized-EOI exit: the
/// vector (SDM 28.2.1).
pub const EOI_QUAL_VECTOR_MASK: u64 = 0xff;

/// What the decision needs to know about an exit of L2, read from VMCS02
/// and L2's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Exit {
    /// The exit-reason field of VMCS02.
    pub reason: ExitReasonField,
    /// The exit qualification of VMCS02.
    pub qualification: u64,
    /// The VM-exit interruption-information field (exceptions, NMIs,
    /// external interrupts acknowledged on exit).
    pub intr_info: InterruptionInfo,
    /// The VM-exit interruption error code (valid when `intr_info` says so).
    pub intr_error_code: u32,
    /// The VM-exit instruction-information field.
    pub instruction_info: u32,
    /// L2's general-purpose registers by SDM register number (0 RAX .. 15
    /// R15, RSP included, read from VMCS02). Outside 64-bit mode the caller
    /// gives 32-bit values zero-extended, as the instructions see them.
    pub gpr: [u64; 16],
}

impl L2Exit {
    /// An exit with `reason` and `qualification`, no event information and
    /// zeroed registers (callers set the other fields as needed).
    pub const fn new(reason: ExitReason, qualification: u64) -> Self {
        Self {
            reason: ExitReasonField::new(reason),
            qualification,
            intr_info: InterruptionInfo(0),
            intr_error_code: 0,
            instruction_info: 0,
            gpr: [0; 16],
        }
    }
}

/// The rule that decided, for `nested_trace`, diagnostics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// The exit is unconditional in VMX non-root operation (SDM 26.1.2;
    /// triple fault, INIT, SIPI and task switch in 26.2).
    Unconditional,
    /// A VM-entry failure of VMCS02 (exit reason bit 31): the failure of
    /// L1's own VM entry.
    EntryFailure,
    /// One or more VM-execution controls of VMCS12 decide.
    Control,
    /// The CR0/CR4 guest/host mask and read shadow, or the CR3-target values.
    CrAccess,
    /// The exception bitmap, with the #PF error-code mask and match.
    ExceptionBitmap,
    /// L1's I/O bitmaps (or a port range that wraps past FFFFH).
    IoBitmap,
    /// L1's MSR bitmap (or an MSR outside the bitmap's ranges).
    MsrBitmap,
    /// Another exiting bitmap of VMCS12 (VMREAD/VMWRITE, ENCLS, ENCLV,
    /// PCONFIG, XSS, EOI-exit).
    ExitingBitmap,
    /// A bitmap byte at `addr` could not be read: treated as all ones.
    UnreadableBitmap {
        /// The physical address that could not be read.
        addr: u64,
    },
    /// EPT-related exits: L1 has no EPT in the core nested issue, so they
    /// are all EPT01's and never reflected. When VMCS12 enables EPT, the
    /// nested-EPT work decides them with EPT12 (walk L1's tables for the
    /// faulting address) before asking here.
    NeedsNestedEpt,
    /// An exit reason or input that this module does not know: reflected.
    Unknown,
}

/// The answer of [`decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// Whether L1 wants the exit.
    pub reflect: bool,
    /// Why.
    pub rule: Rule,
}

impl Decision {
    const fn new(reflect: bool, rule: Rule) -> Self {
        Self { reflect, rule }
    }

    const fn reflect(rule: Rule) -> Self {
        Self::new(true, rule)
    }

    const fn control(set: bool) -> Self {
        Self::new(set, Rule::Control)
    }
}

/// Whether L1 wants this exit of its L2 (see the module documentation for
/// what the caller must have handled before).
pub fn l1_wants_exit(exit: &L2Exit, vmcs12: &impl VmcsAccess, mem: &impl PhysMemory) -> bool {
    decide(exit, vmcs12, mem).reflect
}

/// [`l1_wants_exit`] with the rule that decided.
pub fn decide(exit: &L2Exit, vmcs12: &impl VmcsAccess, mem: &impl PhysMemory) -> Decision {
    use ExitReason as R;
    if exit.reason.is_entry_failure() {
        return Decision::reflect(Rule::EntryFailure);
    }
    let c = Controls::read(vmcs12);
    match exit.reason.basic() {
        R::ExceptionOrNmi => exception_or_nmi(exit, &c, vmcs12),
        R::ExternalInterrupt => Decision::control(c.pin(PinBased::EXTERNAL_INTERRUPT_EXITING)),
        // SDM 26.1.2 and 26.2: triple fault, INIT, SIPI (delivered only in
        // wait-for-SIPI), task switches, CPUID, GETSEC, INVD, XSETBV and
        // the VMX instructions other than VMREAD/VMWRITE.
        R::TripleFault
        | R::InitSignal
        | R::StartupIpi
        | R::TaskSwitch
        | R::Cpuid
        | R::Getsec
        | R::Invd
        | R::Xsetbv
        | R::Vmcall
        | R::Vmclear
        | R::Vmlaunch
        | R::Vmptrld
        | R::Vmptrst
        | R::Vmresume
        | R::Vmxoff
        | R::Vmxon
        | R::Invept
        | R::Invvpid => Decision::reflect(Rule::Unconditional),
        // Normally with bit 31 set (handled above); without it, still
        // a failure of L1's entry.
        R::EntryFailureGuestState | R::EntryFailureMsrLoading | R::EntryFailureMachineCheck => {
            Decision::reflect(Rule::EntryFailure)
        }
        R::InterruptWindow => {
            Decision::control(c.primary(PrimaryProcBased::INTERRUPT_WINDOW_EXITING))
        }
        R::NmiWindow => Decision::control(c.primary(PrimaryProcBased::NMI_WINDOW_EXITING)),
        R::Hlt => Decision::control(c.primary(PrimaryProcBased::HLT_EXITING)),
        R::Invlpg => Decision::control(c.primary(PrimaryProcBased::INVLPG_EXITING)),
        R::Rdpmc => Decision::control(c.primary(PrimaryProcBased::RDPMC_EXITING)),
        R::Rdtsc => Decision::control(c.primary(PrimaryProcBased::RDTSC_EXITING)),
        R::Vmread | R::Vmwrite => vmread_vmwrite(exit, &c, vmcs12, mem),
        R::ControlRegisterAccess => cr_access(exit, &c, vmcs12),
        R::MovDr => Decision::control(c.primary(PrimaryProcBased::MOV_DR_EXITING)),
        R::IoInstruction => io_instruction(exit, &c, vmcs12, mem),
        R::Rdmsr => rdmsr_wrmsr(exit, &c, vmcs12, mem, MsrAccess::Read),
        R::Wrmsr => rdmsr_wrmsr(exit, &c, vmcs12, mem, MsrAccess::Write),
        R::Mwait => Decision::control(c.primary(PrimaryProcBased::MWAIT_EXITING)),
        R::MonitorTrapFlag => Decision::control(c.primary(PrimaryProcBased::MONITOR_TRAP_FLAG)),
        R::Monitor => Decision::control(c.primary(PrimaryProcBased::MONITOR_EXITING)),
        // PAUSE-loop exiting depends on timing that L0 cannot reproduce; a
        // PAUSE exit while L1 asked for PAUSE-loop exits is one L1 may get.
        R::Pause => Decision::control(
            c.primary(PrimaryProcBased::PAUSE_EXITING)
                || c.secondary(SecondaryProcBased::PAUSE_LOOP_EXITING),
        ),
        // SDM 30.1.2 "TPR Virtualization": only with "use TPR shadow"
        // (hidden from L1 for now).
        R::TprBelowThreshold => Decision::control(c.primary(PrimaryProcBased::USE_TPR_SHADOW)),
        R::ApicAccess => {
            Decision::control(c.secondary(SecondaryProcBased::VIRTUALIZE_APIC_ACCESSES))
        }
        R::VirtualizedEoi => virtualized_eoi(exit, &c, vmcs12),
        // SDM 30.4.3.3 "APIC-Write Emulation": trap-like exits of APIC-register
        // virtualization and virtual-interrupt delivery.
        R::ApicWrite => Decision::control(
            c.secondary(SecondaryProcBased::APIC_REGISTER_VIRTUALIZATION)
                || c.secondary(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY),
        ),
        R::GdtrIdtrAccess | R::LdtrTrAccess => {
            Decision::control(c.secondary(SecondaryProcBased::DESCRIPTOR_TABLE_EXITING))
        }
        R::EptViolation | R::EptMisconfiguration | R::PmlFull | R::SppRelatedEvent => {
            Decision::new(false, Rule::NeedsNestedEpt)
        }
        // Without "enable RDTSCP", RDTSCP is #UD (no exit).
        R::Rdtscp => Decision::control(
            c.primary(PrimaryProcBased::RDTSC_EXITING)
                && c.secondary(SecondaryProcBased::ENABLE_RDTSCP),
        ),
        R::PreemptionTimerExpired => Decision::control(c.pin(PinBased::ACTIVATE_PREEMPTION_TIMER)),
        R::Wbinvd => Decision::control(c.secondary(SecondaryProcBased::WBINVD_EXITING)),
        R::Rdrand => Decision::control(c.secondary(SecondaryProcBased::RDRAND_EXITING)),
        R::Rdseed => Decision::control(c.secondary(SecondaryProcBased::RDSEED_EXITING)),
        // INVPCID exits with "INVLPG exiting" and "enable INVPCID" (else #UD).
        R::Invpcid => Decision::control(
            c.primary(PrimaryProcBased::INVLPG_EXITING)
                && c.secondary(SecondaryProcBased::ENABLE_INVPCID),
        ),
        // Without "enable VM functions" VMFUNC is #UD; with it, a function
        // that is not enabled or fails exits (VM functions are hidden from
        // L1, so L0 never emulates one).
        R::Vmfunc => Decision::control(c.secondary(SecondaryProcBased::ENABLE_VM_FUNCTIONS)),
        R::Encls => leaf_bitmap(
            exit,
            vmcs12,
            c.secondary(SecondaryProcBased::ENABLE_ENCLS_EXITING),
            F::EnclsExitingBitmap,
        ),
        R::Enclv => leaf_bitmap(
            exit,
            vmcs12,
            c.secondary(SecondaryProcBased::ENABLE_ENCLV_EXITING),
            F::EnclvExitingBitmap,
        ),
        R::Pconfig => leaf_bitmap(
            exit,
            vmcs12,
            c.secondary(SecondaryProcBased::ENABLE_PCONFIG),
            F::PconfigExitingBitmap,
        ),
        // The exact rule ANDs the XSS-exiting bitmap with IA32_XSS and
        // EDX:EAX (XSAVES) or the XSAVE header (XRSTORS), which this input
        // does not carry: L1 gets the exit whenever it asked for any.
        R::Xsaves | R::Xrstors => {
            let enabled = c.secondary(SecondaryProcBased::ENABLE_XSAVES_XRSTORS);
            Decision::new(
                enabled && vmcs12.read(F::XssExitingBitmap) != 0,
                Rule::ExitingBitmap,
            )
        }
        R::Umwait | R::Tpause => Decision::control(
            c.primary(PrimaryProcBased::RDTSC_EXITING)
                && c.secondary(SecondaryProcBased::ENABLE_USER_WAIT_AND_PAUSE),
        ),
        R::Loadiwkey => Decision::control(c.tertiary & TERTIARY_LOADIWKEY_EXITING != 0),
        R::EnqcmdPasidTranslationFailure | R::EnqcmdsPasidTranslationFailure => {
            Decision::control(c.secondary(SecondaryProcBased::PASID_TRANSLATION))
        }
        R::BusLock => Decision::control(c.secondary(SecondaryProcBased::VMM_BUS_LOCK_DETECTION)),
        R::InstructionTimeout => {
            Decision::control(c.secondary(SecondaryProcBased::INSTRUCTION_TIMEOUT))
        }
        // SMIs and RSM exits go to an SMM monitor, never to L0; SEAMCALL,
        // TDCALL and the MSR-list instructions are not offered to L1.
        R::IoSmi
        | R::OtherSmi
        | R::Rsm
        | R::Seamcall
        | R::Tdcall
        | R::Rdmsrlist
        | R::Wrmsrlist
        | R::Unknown(_) => Decision::reflect(Rule::Unknown),
    }
}

/// VMCS12's execution controls, with the secondary and tertiary ones read
/// only when "activate secondary/tertiary controls" is set (SDM 25.6.2:
/// otherwise the processor behaves as if they were all 0).
struct Controls {
    pin: PinBased,
    primary: PrimaryProcBased,
    secondary: SecondaryProcBased,
    tertiary: u64,
}

impl Controls {
    fn read(v: &impl VmcsAccess) -> Self {
        let primary =
            PrimaryProcBased::from_bits_retain(v.read32(F::PrimaryProcBasedVmExecControls));
        let secondary = if primary.contains(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS) {
            SecondaryProcBased::from_bits_retain(v.read32(F::SecondaryProcBasedVmExecControls))
        } else {
            SecondaryProcBased::empty()
        };
        let tertiary = if primary.contains(PrimaryProcBased::ACTIVATE_TERTIARY_CONTROLS) {
            v.read(F::TertiaryProcBasedVmExecControls)
        } else {
            0
        };
        Self {
            pin: PinBased::from_bits_retain(v.read32(F::PinBasedVmExecControls)),
            primary,
            secondary,
            tertiary,
        }
    }

    fn pin(&self, bits: PinBased) -> bool {
        self.pin.contains(bits)
    }

    fn primary(&self, bits: PrimaryProcBased) -> bool {
        self.primary.contains(bits)
    }

    fn secondary(&self, bits: SecondaryProcBased) -> bool {
        self.secondary.contains(bits)
    }
}

/// Reads bit `bit` of the bitmap at physical address `base`; the address of
/// the byte that could not be read on failure.
fn bitmap_bit(mem: &impl PhysMemory, base: u64, bit: u64) -> Result<bool, u64> {
    let addr = base.checked_add(bit / 8).ok_or(base)?;
    let byte = mem.read_u8(addr).map_err(|_| addr)?;
    Ok(byte & (1 << (bit % 8)) != 0)
}

/// A bitmap lookup as a decision: set bits reflect, unreadable ones too.
fn bitmap_decision(lookup: Result<bool, u64>, rule: Rule) -> Decision {
    match lookup {
        Ok(set) => Decision::new(set, rule),
        Err(addr) => Decision::reflect(Rule::UnreadableBitmap { addr }),
    }
}

/// Whether bit `n` of a 64-bit value is set (`false` for `n` >= 64).
const fn bit64(value: u64, n: u32) -> bool {
    match value.checked_shr(n) {
        Some(v) => v & 1 != 0,
        None => false,
    }
}

/// Exception or NMI (exit reason 0; SDM 26.2 "Other Causes of VM Exits").
fn exception_or_nmi(exit: &L2Exit, c: &Controls, v: &impl VmcsAccess) -> Decision {
    let info = exit.intr_info;
    if !info.is_valid() {
        return Decision::reflect(Rule::Unknown);
    }
    match info.kind() {
        Some(InterruptionType::Nmi) => Decision::control(c.pin(PinBased::NMI_EXITING)),
        // Faults, traps and aborts, and the exceptions of INT1, INT3, INTO
        // (and BOUND, UD0-2, which are hardware exceptions) go by the
        // exception bitmap.
        Some(
            InterruptionType::HardwareException
            | InterruptionType::SoftwareException
            | InterruptionType::PrivilegedSoftwareException,
        ) if info.vector() < EXCEPTION_VECTORS => {
            let vector = info.vector();
            let bit = bit64(u64::from(v.read32(F::ExceptionBitmap)), u32::from(vector));
            let exits = if vector == PAGE_FAULT_VECTOR {
                page_fault_exits(bit, exit.intr_error_code, v)
            } else {
                bit
            };
            Decision::new(exits, Rule::ExceptionBitmap)
        }
        _ => Decision::reflect(Rule::Unknown),
    }
}

/// The #PF rule (SDM 26.2; 25.6.3 "Exception Bitmap"): if the error code
/// ANDed with the mask equals the match value, bit 14 of the exception
/// bitmap decides as for other exceptions; otherwise its meaning is
/// inverted (a clear bit 14 then means "exit").
fn page_fault_exits(bitmap_bit: bool, error_code: u32, v: &impl VmcsAccess) -> bool {
    let mask = v.read32(F::PageFaultErrorCodeMask);
    let matched = v.read32(F::PageFaultErrorCodeMatch);
    if error_code & mask == matched {
        bitmap_bit
    } else {
        !bitmap_bit
    }
}

/// Control-register accesses (exit reason 28; SDM 26.1.3 on CLTS, LMSW,
/// MOV from/to CR3, CR8, MOV to CR0/CR4).
fn cr_access(exit: &L2Exit, c: &Controls, v: &impl VmcsAccess) -> Decision {
    let q = CrAccessQual(exit.qualification);
    let source = exit.gpr[usize::from(q.gpr())];
    let masked_write = |mask: F, shadow: F| {
        // Exits unless the source matches the read shadow in every bit set
        // in the guest/host mask.
        let differs = (source ^ v.read(shadow)) & v.read(mask) != 0;
        Decision::new(differs, Rule::CrAccess)
    };
    match (q.access_type(), q.cr()) {
        (CrAccessType::MovToCr, 0) => masked_write(F::Cr0GuestHostMask, F::Cr0ReadShadow),
        (CrAccessType::MovToCr, 4) => masked_write(F::Cr4GuestHostMask, F::Cr4ReadShadow),
        (CrAccessType::MovToCr, 3) => {
            if !c.primary(PrimaryProcBased::CR3_LOAD_EXITING) {
                return Decision::control(false);
            }
            // Only the first CR3-target-count values count; a count above
            // the four fields fails VM entry, so it cannot reach here.
            let count = (v.read32(F::Cr3TargetCount) as usize).min(CR3_TARGET_FIELDS.len());
            let hit = CR3_TARGET_FIELDS[..count]
                .iter()
                .any(|&f| v.read(f) == source);
            Decision::new(!hit, Rule::CrAccess)
        }
        (CrAccessType::MovFromCr, 3) => {
            Decision::control(c.primary(PrimaryProcBased::CR3_STORE_EXITING))
        }
        (CrAccessType::MovToCr, 8) => {
            Decision::control(c.primary(PrimaryProcBased::CR8_LOAD_EXITING))
        }
        (CrAccessType::MovFromCr, 8) => {
            Decision::control(c.primary(PrimaryProcBased::CR8_STORE_EXITING))
        }
        (CrAccessType::Clts, 0) => {
            let set = |f: F| v.read(f) & CR0_TS != 0;
            Decision::new(
                set(F::Cr0GuestHostMask) && set(F::Cr0ReadShadow),
                Rule::CrAccess,
            )
        }
        (CrAccessType::Lmsw, 0) => {
            let mask = v.read(F::Cr0GuestHostMask) & LMSW_BITS;
            let shadow = v.read(F::Cr0ReadShadow);
            let src = u64::from(q.lmsw_source()) & LMSW_BITS;
            // LMSW never clears PE: PE exits only when it would set a PE
            // that the shadow has clear; MP, EM, TS when they differ.
            let pe = mask & src & !shadow & CR0_PE != 0;
            let others = mask & (src ^ shadow) & (LMSW_BITS & !CR0_PE) != 0;
            Decision::new(pe || others, Rule::CrAccess)
        }
        // MOV from CR0/CR4 never exits, and no other CR is intercepted.
        _ => Decision::reflect(Rule::Unknown),
    }
}

/// Which I/O bitmap holds the bit of `port` (0-FFFFH), and the bit number
/// in it (SDM 25.6.4 "I/O-Bitmap Addresses").
pub const fn io_bitmap_bit(port: u16) -> (F, u64) {
    let p = port as u32;
    if p < IO_BITMAP_B_FIRST {
        (F::IoBitmapAAddress, p as u64)
    } else {
        (F::IoBitmapBAddress, (p - IO_BITMAP_B_FIRST) as u64)
    }
}

/// I/O instructions (exit reason 30; SDM 26.1.3 on IN/INS/OUT/OUTS).
fn io_instruction(
    exit: &L2Exit,
    c: &Controls,
    v: &impl VmcsAccess,
    mem: &impl PhysMemory,
) -> Decision {
    if !c.primary(PrimaryProcBased::USE_IO_BITMAPS) {
        return Decision::control(c.primary(PrimaryProcBased::UNCONDITIONAL_IO_EXITING));
    }
    // With I/O bitmaps, "unconditional I/O exiting" is ignored.
    let q = IoQual(exit.qualification);
    let first = u32::from(q.port());
    let last = first + u32::from(q.size()) - 1;
    if last > IO_PORT_MAX {
        // An access that wraps around the port space always exits.
        return Decision::reflect(Rule::IoBitmap);
    }
    for port in first..=last {
        let (field, bit) = io_bitmap_bit(port as u16);
        let d = bitmap_decision(bitmap_bit(mem, v.read(field), bit), Rule::IoBitmap);
        if d.reflect {
            return d;
        }
    }
    Decision::new(false, Rule::IoBitmap)
}

/// The direction of an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MsrAccess {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

/// The bit of `msr` for `access` in an MSR bitmap, counted from the start
/// of its 4-KiB page; `None` for an MSR outside both ranges, whose
/// accesses always exit (SDM 25.6.9, 26.1.3 on RDMSR/WRMSR).
pub const fn msr_bitmap_bit(msr: u32, access: MsrAccess) -> Option<u64> {
    let (low, high) = match access {
        MsrAccess::Read => (MSR_BITMAP_READ_LOW, MSR_BITMAP_READ_HIGH),
        MsrAccess::Write => (MSR_BITMAP_WRITE_LOW, MSR_BITMAP_WRITE_HIGH),
    };
    let (byte_base, index) = if msr < MSR_BITMAP_RANGE_LEN {
        (low, msr)
    } else if msr >= MSR_BITMAP_HIGH_BASE && msr - MSR_BITMAP_HIGH_BASE < MSR_BITMAP_RANGE_LEN {
        (high, msr - MSR_BITMAP_HIGH_BASE)
    } else {
        return None;
    };
    Some(byte_base * 8 + index as u64)
}

/// RDMSR and WRMSR (exit reasons 31, 32): without MSR bitmaps every access
/// exits; with them, the MSR's bit in L1's bitmap decides.
fn rdmsr_wrmsr(
    exit: &L2Exit,
    c: &Controls,
    v: &impl VmcsAccess,
    mem: &impl PhysMemory,
    access: MsrAccess,
) -> Decision {
    if !c.primary(PrimaryProcBased::USE_MSR_BITMAPS) {
        return Decision::reflect(Rule::Control);
    }
    let msr = exit.gpr[reg::RCX] as u32;
    match msr_bitmap_bit(msr, access) {
        Some(bit) => bitmap_decision(
            bitmap_bit(mem, v.read(F::MsrBitmapAddress), bit),
            Rule::MsrBitmap,
        ),
        None => Decision::reflect(Rule::MsrBitmap),
    }
}

/// VMREAD and VMWRITE (exit reasons 23, 25; SDM 26.1.3): unconditional
/// without "VMCS shadowing"; with it, an encoding above bits 14:0 exits,
/// else its bit in the VMREAD or VMWRITE bitmap decides. (VMCS shadowing
/// is hidden from L1 until its issue lands, so VMCS12 cannot enable it.)
fn vmread_vmwrite(
    exit: &L2Exit,
    c: &Controls,
    v: &impl VmcsAccess,
    mem: &impl PhysMemory,
) -> Decision {
    if !c.secondary(SecondaryProcBased::VMCS_SHADOWING) {
        return Decision::reflect(Rule::Unconditional);
    }
    let reg2 = (exit.instruction_info >> VMREAD_INFO_REG2_SHIFT) as usize & 0xf;
    let encoding = exit.gpr[reg2];
    if encoding & !VMCS_BITMAP_ENCODING_BITS != 0 {
        return Decision::reflect(Rule::ExitingBitmap);
    }
    let bitmap = if exit.reason.basic() == ExitReason::Vmread {
        F::VmreadBitmapAddress
    } else {
        F::VmwriteBitmapAddress
    };
    bitmap_decision(
        bitmap_bit(mem, v.read(bitmap), encoding),
        Rule::ExitingBitmap,
    )
}

/// ENCLS, ENCLV and PCONFIG (SDM 26.1.3): with their enabling control, bit
/// EAX of the exiting bitmap (bit 63 for EAX >= 63) decides; without it
/// the instruction does not exit (it runs, or is #UD).
fn leaf_bitmap(exit: &L2Exit, v: &impl VmcsAccess, enabled: bool, bitmap: F) -> Decision {
    if !enabled {
        return Decision::control(false);
    }
    let leaf = (exit.gpr[reg::RAX] as u32 as u64).min(LEAF_BITMAP_LAST);
    Decision::new(bit64(v.read(bitmap), leaf as u32), Rule::ExitingBitmap)
}

/// Virtualized EOI (exit reason 45; SDM 30.1.4 "EOI Virtualization"): with
/// virtual-interrupt delivery, an EOI exits when the EOI-exit bitmap bit
/// of the vector (exit qualification bits 7:0) is set.
fn virtualized_eoi(exit: &L2Exit, c: &Controls, v: &impl VmcsAccess) -> Decision {
    if !c.secondary(SecondaryProcBased::VIRTUAL_INTERRUPT_DELIVERY) {
        return Decision::control(false);
    }
    let vector = (exit.qualification & EOI_QUAL_VECTOR_MASK) as u32;
    const BITMAPS: [F; 4] = [
        F::EoiExitBitmap0,
        F::EoiExitBitmap1,
        F::EoiExitBitmap2,
        F::EoiExitBitmap3,
    ];
    let word = v.read(BITMAPS[(vector / 64) as usize]);
    Decision::new(bit64(word, vector % 64), Rule::ExitingBitmap)
}

#[cfg(test)]
mod tests;
