//! The phases of a nested VM entry and exit that move state between VMCSs
//! (names after KVM's nested.c): [`prepare_vmcs02`] builds the VMCS L0 runs
//! L2 with from L1's VMCS12; [`save_guest_state`] and [`write_exit_info`]
//! sync VMCS02 back into VMCS12 on an exit L1 gets; [`load_host_state`]
//! gives L1 the state the processor loads from VMCS12's host-state area
//! (SDM Vol. 3C, 28.5 "Loading Host State").
//!
//! All of it is pure code over [`VmcsAccess`]: the hardware has only one
//! current VMCS, so L0 moves data through in-memory copies (VMCS12 lives in
//! a [`crate::vmx::MemVmcs`]; what VMCS01 contributes comes in
//! [`L1State`]).

use crate::vmx::controls::{
    EntryControls, ExitControls, PinBased, PrimaryProcBased, SecondaryProcBased,
};
use crate::vmx::exit::InterruptionInfo;
use crate::vmx::{FieldGroup, Nested, VmcsAccess, VmcsField as F, VmxCaps};

/// Guest-state fields that VM entry loads (or not) depending on controls,
/// or that VMCS02 gets from elsewhere; everything else of the guest-state
/// group with policy [`Nested::Copy`] moves as it is.
const CONDITIONAL_GUEST_FIELDS: &[F] = &[
    F::GuestDr7,
    F::GuestIa32Debugctl,
    F::GuestIa32Efer,
    F::GuestIa32Pat,
    F::GuestPdpte0,
    F::GuestPdpte1,
    F::GuestPdpte2,
    F::GuestPdpte3,
    F::VmxPreemptionTimerValue,
    // Only meaningful for entries to SMM, which L1 cannot ask for.
    F::GuestSmbase,
];

/// The guest-state fields VM entry loads and VM exit saves unconditionally.
pub fn plain_guest_fields() -> impl Iterator<Item = F> {
    PLAIN_GUEST_FIELDS.iter().copied()
}

/// [`plain_guest_fields`], selected from the field table at compile time:
/// every nested entry and reflected exit walks it, and filtering the whole
/// table each time cost about 3k cycles a walk (Bochs).
const PLAIN_GUEST_FIELDS: [F; plain_guest_count()] = plain_guest_table();

/// Of the guest-state group, policy [`Nested::Copy`], not conditional.
const fn is_plain_guest(f: F) -> bool {
    if !matches!(f.group(), FieldGroup::Guest) || !matches!(f.nested(), Nested::Copy) {
        return false;
    }
    let mut i = 0;
    while i < CONDITIONAL_GUEST_FIELDS.len() {
        if CONDITIONAL_GUEST_FIELDS[i].index() == f.index() {
            return false;
        }
        i += 1;
    }
    true
}

const fn plain_guest_count() -> usize {
    let (mut i, mut n) = (0, 0);
    while i < F::COUNT {
        if is_plain_guest(F::ALL[i]) {
            n += 1;
        }
        i += 1;
    }
    n
}

const fn plain_guest_table() -> [F; plain_guest_count()] {
    let mut out = [F::ALL[0]; plain_guest_count()];
    let (mut i, mut n) = (0, 0);
    while i < F::COUNT {
        if is_plain_guest(F::ALL[i]) {
            out[n] = F::ALL[i];
            n += 1;
        }
        i += 1;
    }
    out
}

/// PDPTE fields, in order.
pub const PDPTE_FIELDS: [F; 4] = [
    F::GuestPdpte0,
    F::GuestPdpte1,
    F::GuestPdpte2,
    F::GuestPdpte3,
];

/// CR0 and CR4 bits (SDM 2.5).
mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
}

/// L1's state that VMCS01 holds and VMCS02 inherits when VMCS12 does not
/// load it (SDM 27.3.2: "load debug controls", "load IA32_EFER", "load
/// IA32_PAT" clear).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L1State {
    pub dr7: u64,
    pub debugctl: u64,
    pub efer: u64,
    pub pat: u64,
}

/// What L0 adds to VMCS02 for its own needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L0Part {
    /// Pin-based bits L0 always needs (NMI exiting, virtual NMIs).
    pub pin: u32,
    /// Secondary bits L0 always needs (EPT with EPT01 while L1 has no
    /// EPT, VPID).
    pub proc2: u32,
    /// EPT pointer of VMCS02.
    pub eptp: u64,
    /// VPID of VMCS02.
    pub vpid: u16,
    /// L0's copy of the MSR bitmap (merged with L1's), used when L1 uses
    /// MSR bitmaps.
    pub msr_bitmap: u64,
    /// L0's copies of L1's I/O bitmaps A and B.
    pub io_bitmaps: (u64, u64),
    /// L0's own TSC offset for L1 (added to VMCS12's).
    pub tsc_offset: u64,
    /// CR0/CR4 bits that are fixed in VMX operation: VMCS02 intercepts
    /// them even where L1 does not, so L2 cannot change them.
    pub cr0_fixed_mask: u64,
    pub cr4_fixed_mask: u64,
    /// PDPTEs for VMCS02 when L2 uses PAE paging (VMCS02 has EPT, so the
    /// processor takes them from the VMCS; L0 reads them through L2's CR3).
    pub pdptes: Option<[u64; 4]>,
}

/// Secondary controls L1 may set that VMCS02 takes over as they are.
pub const L1_PROC2: SecondaryProcBased = SecondaryProcBased::DESCRIPTOR_TABLE_EXITING
    .union(SecondaryProcBased::ENABLE_RDTSCP)
    .union(SecondaryProcBased::WBINVD_EXITING)
    .union(SecondaryProcBased::ENABLE_INVPCID)
    .union(SecondaryProcBased::RDRAND_EXITING)
    .union(SecondaryProcBased::RDSEED_EXITING)
    .union(SecondaryProcBased::ENABLE_XSAVES_XRSTORS)
    // With EPT02 under it (VMCS02 always has EPT), L2 may run unpaged or
    // in real mode as L1 asks.
    .union(SecondaryProcBased::UNRESTRICTED_GUEST);

/// VM-exit controls L1 chooses for its own exits that VMCS02 does not use
/// as they are (VMCS02's exits go to L0, whose host state is fixed).
const L0_EXIT: ExitControls = ExitControls::HOST_ADDRESS_SPACE_SIZE
    .union(ExitControls::SAVE_DEBUG_CONTROLS)
    .union(ExitControls::SAVE_IA32_PAT)
    .union(ExitControls::LOAD_IA32_PAT)
    .union(ExitControls::SAVE_IA32_EFER)
    .union(ExitControls::LOAD_IA32_EFER);

/// VM-entry controls of VMCS02 besides "IA-32e mode guest": L0 loads
/// debug controls, EFER and PAT always, with values it computes.
const L0_ENTRY: EntryControls = EntryControls::LOAD_DEBUG_CONTROLS
    .union(EntryControls::LOAD_IA32_PAT)
    .union(EntryControls::LOAD_IA32_EFER);

fn has(v: u32, bits: u32) -> bool {
    v & bits == bits
}

/// The controls of VMCS12, with secondary controls only when activated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Controls12 {
    pub pin: u32,
    pub proc: u32,
    pub proc2: u32,
    pub exit: u32,
    pub entry: u32,
}

impl Controls12 {
    pub fn read(v: &impl VmcsAccess) -> Self {
        let proc = v.read32(F::PrimaryProcBasedVmExecControls);
        let proc2 = if has(proc, PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits()) {
            v.read32(F::SecondaryProcBasedVmExecControls)
        } else {
            0
        };
        Self {
            pin: v.read32(F::PinBasedVmExecControls),
            proc,
            proc2,
            exit: v.read32(F::VmExitControls),
            entry: v.read32(F::VmEntryControls),
        }
    }

    pub fn pin(&self, c: PinBased) -> bool {
        has(self.pin, c.bits())
    }
    pub fn proc(&self, c: PrimaryProcBased) -> bool {
        has(self.proc, c.bits())
    }
    pub fn proc2(&self, c: SecondaryProcBased) -> bool {
        has(self.proc2, c.bits())
    }
    pub fn exit(&self, c: ExitControls) -> bool {
        has(self.exit, c.bits())
    }
    pub fn entry(&self, c: EntryControls) -> bool {
        has(self.entry, c.bits())
    }
}

/// L2's IA32_EFER at VM entry: VMCS12's field with "load IA32_EFER", else
/// L1's with LMA and LME set from "IA-32e mode guest" (SDM 27.3.2.1).
pub fn l2_efer(vmcs12: &impl VmcsAccess, l1: &L1State) -> u64 {
    let c = Controls12::read(vmcs12);
    if c.entry(EntryControls::LOAD_IA32_EFER) {
        return vmcs12.read(F::GuestIa32Efer);
    }
    let lm = cr::EFER_LMA | cr::EFER_LME;
    if c.entry(EntryControls::IA32E_MODE_GUEST) {
        l1.efer | lm
    } else {
        l1.efer & !lm
    }
}

/// Whether L2 runs with PAE paging (CR0.PG, CR4.PAE, not IA-32e mode), in
/// which case VM entry loads the PDPTEs (SDM 27.3.2.4).
pub fn l2_uses_pae_paging(vmcs12: &impl VmcsAccess) -> bool {
    let c = Controls12::read(vmcs12);
    vmcs12.read(F::GuestCr0) & cr::CR0_PG != 0
        && vmcs12.read(F::GuestCr4) & cr::CR4_PAE != 0
        && !c.entry(EntryControls::IA32E_MODE_GUEST)
}

/// Writes every field of VMCS02 that depends on VMCS12 (guest state,
/// controls merged with L0's, event injection). Host state and VMCS02's
/// own addresses are L0's and set apart (`hw` adjusts the controls to the
/// processor's fixed bits, SDM Appendix A).
pub fn prepare_vmcs02(
    vmcs12: &impl VmcsAccess,
    l1: &L1State,
    l0: &L0Part,
    hw: &VmxCaps,
    vmcs02: &mut impl VmcsAccess,
) {
    let c = Controls12::read(vmcs12);

    // Guest state (SDM 27.3.2).
    for f in plain_guest_fields() {
        vmcs02.write(f, vmcs12.read(f));
    }
    let (dr7, debugctl) = if c.entry(EntryControls::LOAD_DEBUG_CONTROLS) {
        (vmcs12.read(F::GuestDr7), vmcs12.read(F::GuestIa32Debugctl))
    } else {
        (l1.dr7, l1.debugctl)
    };
    vmcs02.write(F::GuestDr7, dr7);
    vmcs02.write(F::GuestIa32Debugctl, debugctl);
    vmcs02.write(F::GuestIa32Efer, l2_efer(vmcs12, l1));
    let pat = if c.entry(EntryControls::LOAD_IA32_PAT) {
        vmcs12.read(F::GuestIa32Pat)
    } else {
        l1.pat
    };
    vmcs02.write(F::GuestIa32Pat, pat);
    for (f, e) in PDPTE_FIELDS.into_iter().zip(l0.pdptes.unwrap_or([0; 4])) {
        vmcs02.write(f, e);
    }
    vmcs02.write(
        F::VmxPreemptionTimerValue,
        vmcs12.read(F::VmxPreemptionTimerValue),
    );

    // CR0/CR4: L2 reads VMCS12's shadow for the bits L1 owns and the real
    // value for the fixed bits L0 adds to the mask (equal to VMCS12's, which
    // the entry checks held to the fixed values).
    for (mask, shadow, guest, fixed) in [
        (
            F::Cr0GuestHostMask,
            F::Cr0ReadShadow,
            F::GuestCr0,
            l0.cr0_fixed_mask,
        ),
        (
            F::Cr4GuestHostMask,
            F::Cr4ReadShadow,
            F::GuestCr4,
            l0.cr4_fixed_mask,
        ),
    ] {
        let m12 = vmcs12.read(mask);
        vmcs02.write(mask, m12 | fixed);
        vmcs02.write(
            shadow,
            (vmcs12.read(shadow) & m12) | (vmcs12.read(guest) & !m12),
        );
    }

    // Execution controls: L1's, plus what L0 needs.
    vmcs02.write(
        F::PinBasedVmExecControls,
        adjust(hw.pin.effective(), c.pin | l0.pin),
    );
    let mut proc = c.proc | PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits();
    if !c.proc(PrimaryProcBased::USE_MSR_BITMAPS) {
        // Every RDMSR/WRMSR of L2 then exits (to L0, which reflects it).
        proc &= !PrimaryProcBased::USE_MSR_BITMAPS.bits();
    }
    vmcs02.write(
        F::PrimaryProcBasedVmExecControls,
        adjust(hw.proc.effective(), proc),
    );
    let proc2 = adjust(hw.proc2, (c.proc2 & L1_PROC2.bits()) | l0.proc2);
    vmcs02.write(F::SecondaryProcBasedVmExecControls, proc2);
    vmcs02.write(F::ExceptionBitmap, vmcs12.read(F::ExceptionBitmap));
    vmcs02.write(
        F::PageFaultErrorCodeMask,
        vmcs12.read(F::PageFaultErrorCodeMask),
    );
    vmcs02.write(
        F::PageFaultErrorCodeMatch,
        vmcs12.read(F::PageFaultErrorCodeMatch),
    );
    vmcs02.write(F::Cr3TargetCount, vmcs12.read(F::Cr3TargetCount));
    for f in [
        F::Cr3TargetValue0,
        F::Cr3TargetValue1,
        F::Cr3TargetValue2,
        F::Cr3TargetValue3,
    ] {
        vmcs02.write(f, vmcs12.read(f));
    }
    let tsc = if c.proc(PrimaryProcBased::USE_TSC_OFFSETTING) {
        vmcs12.read(F::TscOffset)
    } else {
        0
    };
    vmcs02.write(F::TscOffset, tsc.wrapping_add(l0.tsc_offset));
    // The XSS-exiting bitmap exists only with "enable XSAVES/XRSTORS"
    // (SDM 25.6.20; Bochs refuses the VMWRITE otherwise, and logs it).
    if proc2 & u64::from(SecondaryProcBased::ENABLE_XSAVES_XRSTORS.bits()) != 0 {
        vmcs02.write(F::XssExitingBitmap, vmcs12.read(F::XssExitingBitmap));
    }
    vmcs02.write(F::VirtualProcessorId, u64::from(l0.vpid));

    // Exit controls: L0's host (64-bit, EFER/PAT switched, debug controls
    // saved), with L1's interrupt acknowledgement and timer saving; VMCS02
    // saves the timer whenever it runs, so that exits L0 handles alone do
    // not restart it.
    let mut exit = L0_EXIT.bits() | (c.exit & ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT.bits());
    if c.pin(PinBased::ACTIVATE_PREEMPTION_TIMER) {
        exit |= ExitControls::SAVE_PREEMPTION_TIMER_VALUE.bits();
    }
    vmcs02.write(F::VmExitControls, adjust(hw.exit.effective(), exit));
    let entry = L0_ENTRY.bits() | (c.entry & EntryControls::IA32E_MODE_GUEST.bits());
    vmcs02.write(F::VmEntryControls, adjust(hw.entry.effective(), entry));

    // Event injection (SDM 27.6), as L1 asked.
    for f in [
        F::VmEntryInterruptionInfo,
        F::VmEntryExceptionErrorCode,
        F::VmEntryInstructionLength,
    ] {
        vmcs02.write(f, vmcs12.read(f));
    }
}

/// VMCS02's sensitive fields (`VmcsField::is_sensitive`): L0's pages for
/// the bitmaps, its EPT, no MSR areas (L0 emulates VMCS12's), no link
/// pointer. [`prepare_vmcs02`] leaves them out; L0 writes them with the
/// safety argument that it owns what they point to.
pub fn pointers(l0: &L0Part) -> [(F, u64); 8] {
    [
        (F::MsrBitmapAddress, l0.msr_bitmap),
        (F::IoBitmapAAddress, l0.io_bitmaps.0),
        (F::IoBitmapBAddress, l0.io_bitmaps.1),
        (F::EptPointer, l0.eptp),
        (F::VmExitMsrStoreCount, 0),
        (F::VmExitMsrLoadCount, 0),
        (F::VmEntryMsrLoadCount, 0),
        (F::VmcsLinkPointer, u64::MAX),
    ]
}

/// `want` with the bits the processor requires set and those it does not
/// allow cleared (the entry checks already refused what L1 may not set).
fn adjust(cap: crate::vmx::ControlCap, want: u32) -> u64 {
    u64::from(cap.adjust(want).value)
}

/// The guest-state part of a VM exit L1 gets (SDM 28.3 "Saving Guest
/// State"), from VMCS02 into VMCS12.
pub fn save_guest_state(vmcs02: &impl VmcsAccess, vmcs12: &mut impl VmcsAccess) {
    let c = Controls12::read(vmcs12);
    for f in plain_guest_fields() {
        vmcs12.write(f, vmcs02.read(f));
    }
    if c.exit(ExitControls::SAVE_DEBUG_CONTROLS) {
        vmcs12.write(F::GuestDr7, vmcs02.read(F::GuestDr7));
        vmcs12.write(F::GuestIa32Debugctl, vmcs02.read(F::GuestIa32Debugctl));
    }
    if c.exit(ExitControls::SAVE_IA32_EFER) {
        vmcs12.write(F::GuestIa32Efer, vmcs02.read(F::GuestIa32Efer));
    }
    if c.exit(ExitControls::SAVE_IA32_PAT) {
        vmcs12.write(F::GuestIa32Pat, vmcs02.read(F::GuestIa32Pat));
    }
    if c.exit(ExitControls::SAVE_PREEMPTION_TIMER_VALUE) {
        vmcs12.write(
            F::VmxPreemptionTimerValue,
            vmcs02.read(F::VmxPreemptionTimerValue),
        );
    }
    // With EPT and PAE paging the PDPTEs are saved (SDM 28.3.4).
    let pae = vmcs02.read(F::GuestCr0) & cr::CR0_PG != 0
        && vmcs02.read(F::GuestCr4) & cr::CR4_PAE != 0
        && vmcs02.read(F::GuestIa32Efer) & cr::EFER_LMA == 0;
    if pae && c.proc2(SecondaryProcBased::ENABLE_EPT) {
        for f in PDPTE_FIELDS {
            vmcs12.write(f, vmcs02.read(f));
        }
    }
    // The real CR values: for the bits L1 owns they are what L2 wrote,
    // for the rest what VMCS12 held (a write to those exited to L1).
    // "IA-32e mode guest" follows EFER.LMA (IA32_VMX_MISC bit 5, SDM 28.2).
    let lma = vmcs02.read(F::GuestIa32Efer) & cr::EFER_LMA != 0;
    let ia32e = u64::from(EntryControls::IA32E_MODE_GUEST.bits());
    let entry = vmcs12.read(F::VmEntryControls);
    vmcs12.write(
        F::VmEntryControls,
        if lma { entry | ia32e } else { entry & !ia32e },
    );
}

/// The VM-exit information fields of one exit (SDM 28.2 "Recording VM-Exit
/// Information and Updating VM-Entry Control Fields").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    pub reason: u32,
    pub qualification: u64,
    pub guest_linear_address: u64,
    pub guest_physical_address: u64,
    pub intr_info: u32,
    pub intr_error_code: u32,
    pub idt_vectoring_info: u32,
    pub idt_vectoring_error_code: u32,
    pub instruction_len: u32,
    pub instruction_info: u32,
    pub io_rcx: u64,
    pub io_rsi: u64,
    pub io_rdi: u64,
    pub io_rip: u64,
}

impl ExitInfo {
    /// The exit information of the current exit of `v` (VMCS02).
    pub fn read(v: &impl VmcsAccess) -> Self {
        Self {
            reason: v.read32(F::VmExitReason),
            qualification: v.read(F::ExitQualification),
            guest_linear_address: v.read(F::GuestLinearAddress),
            guest_physical_address: v.read(F::GuestPhysicalAddress),
            intr_info: v.read32(F::VmExitInterruptionInfo),
            intr_error_code: v.read32(F::VmExitInterruptionErrorCode),
            idt_vectoring_info: v.read32(F::IdtVectoringInfo),
            idt_vectoring_error_code: v.read32(F::IdtVectoringErrorCode),
            instruction_len: v.read32(F::VmExitInstructionLength),
            instruction_info: v.read32(F::VmExitInstructionInfo),
            io_rcx: v.read(F::IoRcx),
            io_rsi: v.read(F::IoRsi),
            io_rdi: v.read(F::IoRdi),
            io_rip: v.read(F::IoRip),
        }
    }

    /// An exit L0 makes up (an NMI or INIT for L1, an entry failure):
    /// reason and qualification, nothing else valid.
    pub fn synthetic(reason: u32, qualification: u64) -> Self {
        Self {
            reason,
            qualification,
            ..Self::default()
        }
    }
}

/// Records `info` in VMCS12 and clears the valid bit of its VM-entry
/// interruption information (SDM 28.2.5: VM exits clear it).
pub fn write_exit_info(vmcs12: &mut impl VmcsAccess, info: &ExitInfo) {
    for (f, v) in [
        (F::VmExitReason, u64::from(info.reason)),
        (F::ExitQualification, info.qualification),
        (F::GuestLinearAddress, info.guest_linear_address),
        (F::GuestPhysicalAddress, info.guest_physical_address),
        (F::VmExitInterruptionInfo, u64::from(info.intr_info)),
        (
            F::VmExitInterruptionErrorCode,
            u64::from(info.intr_error_code),
        ),
        (F::IdtVectoringInfo, u64::from(info.idt_vectoring_info)),
        (
            F::IdtVectoringErrorCode,
            u64::from(info.idt_vectoring_error_code),
        ),
        (F::VmExitInstructionLength, u64::from(info.instruction_len)),
        (F::VmExitInstructionInfo, u64::from(info.instruction_info)),
        (F::IoRcx, info.io_rcx),
        (F::IoRsi, info.io_rsi),
        (F::IoRdi, info.io_rdi),
        (F::IoRip, info.io_rip),
    ] {
        vmcs12.write(f, v);
    }
    let entry = InterruptionInfo(vmcs12.read32(F::VmEntryInterruptionInfo));
    vmcs12.write(
        F::VmEntryInterruptionInfo,
        u64::from(entry.0 & !InterruptionInfo::VALID),
    );
}

/// CR0 bits a VM exit leaves as they were (SDM 28.5.1): ET, NW, CD, bits
/// 63:32, 28:19, 17 and 15:6; and the bits fixed in VMX operation.
const CR0_KEPT: u64 =
    cr::CR0_ET | cr::CR0_NW | cr::CR0_CD | !0xffff_ffff | 0x1ff8_0000 | (1 << 17) | 0xffc0;

/// L1's CR0 after a VM exit: `host_cr0` except the bits kept from `old`
/// (L1's CR0 before the entry), and the fixed ones. VirtualBox depends on
/// ET/CD/NW surviving (XMHF64's notes).
pub fn host_cr0(old: u64, host_cr0: u64, fixed0: u64, fixed1: u64) -> u64 {
    let fixed = fixed0 | !fixed1;
    let keep = CR0_KEPT | (fixed & 0xffff_ffff);
    (old & keep) | (host_cr0 & !keep)
}

/// L1's CR4 after a VM exit (SDM 28.5.1): the host field except the fixed
/// bits; PAE set with a 64-bit host, PCIDE clear without.
pub fn host_cr4(old: u64, host_cr4: u64, fixed0: u64, fixed1: u64, host_64: bool) -> u64 {
    let fixed = fixed0 | !fixed1;
    let v = (old & fixed) | (host_cr4 & !fixed);
    if host_64 {
        v | cr::CR4_PAE
    } else {
        v & !cr::CR4_PCIDE
    }
}

/// Access rights of the host segments after a VM exit (SDM 28.5.2).
pub mod host_ar {
    /// Code, execute/read accessed, S, P, G; with L for a 64-bit host, D
    /// otherwise.
    pub const fn cs(host_64: bool) -> u64 {
        0x809b | if host_64 { 1 << 13 } else { 1 << 14 }
    }
    /// Data, read/write accessed, S, P, D/B, G.
    pub const DATA: u64 = 0xc093;
    /// Busy TSS (64-bit), P.
    pub const TR: u64 = 0x8b;
    /// Unusable.
    pub const UNUSABLE: u64 = 1 << 16;
}

/// L1's architectural state after a VM exit from VMCS12's host-state area
/// (SDM 28.5.1-28.5.3), written into VMCS01's guest-state area. CR0 and CR4
/// are written as L1 sees them, both into the guest fields and the read
/// shadows; L0 then makes the guest fields what the processor must run with.
/// `old_cr0`/`old_cr4` are L1's values from before the entry.
pub fn load_host_state(
    vmcs12: &impl VmcsAccess,
    old_cr0: u64,
    old_cr4: u64,
    l1_caps: &VmxCaps,
    vmcs01: &mut impl VmcsAccess,
) {
    let c = Controls12::read(vmcs12);
    let host_64 = c.exit(ExitControls::HOST_ADDRESS_SPACE_SIZE);
    let cr0 = host_cr0(
        old_cr0,
        vmcs12.read(F::HostCr0),
        l1_caps.cr0_fixed0,
        l1_caps.cr0_fixed1,
    );
    let cr4 = host_cr4(
        old_cr4,
        vmcs12.read(F::HostCr4),
        l1_caps.cr4_fixed0,
        l1_caps.cr4_fixed1,
        host_64,
    );
    for f in [F::GuestCr0, F::Cr0ReadShadow] {
        vmcs01.write(f, cr0);
    }
    for f in [F::GuestCr4, F::Cr4ReadShadow] {
        vmcs01.write(f, cr4);
    }
    vmcs01.write(F::GuestCr3, vmcs12.read(F::HostCr3));
    vmcs01.write(F::GuestDr7, 0x400);
    vmcs01.write(F::GuestIa32Debugctl, 0);
    for (g, h) in [
        (F::GuestIa32SysenterCs, F::HostIa32SysenterCs),
        (F::GuestIa32SysenterEsp, F::HostIa32SysenterEsp),
        (F::GuestIa32SysenterEip, F::HostIa32SysenterEip),
        (F::GuestRsp, F::HostRsp),
        (F::GuestRip, F::HostRip),
        (F::GuestGdtrBase, F::HostGdtrBase),
        (F::GuestIdtrBase, F::HostIdtrBase),
    ] {
        vmcs01.write(g, vmcs12.read(h));
    }
    vmcs01.write(F::GuestGdtrLimit, 0xffff);
    vmcs01.write(F::GuestIdtrLimit, 0xffff);
    if c.exit(ExitControls::LOAD_IA32_PAT) {
        vmcs01.write(F::GuestIa32Pat, vmcs12.read(F::HostIa32Pat));
    }
    let lm = cr::EFER_LMA | cr::EFER_LME;
    let efer = if c.exit(ExitControls::LOAD_IA32_EFER) {
        vmcs12.read(F::HostIa32Efer)
    } else {
        let old = vmcs01.read(F::GuestIa32Efer);
        if host_64 { old | lm } else { old & !lm }
    };
    vmcs01.write(F::GuestIa32Efer, efer);
    let ia32e = u64::from(EntryControls::IA32E_MODE_GUEST.bits());
    let entry = vmcs01.read(F::VmEntryControls);
    vmcs01.write(
        F::VmEntryControls,
        if host_64 {
            entry | ia32e
        } else {
            entry & !ia32e
        },
    );

    // Segments (28.5.2).
    vmcs01.write(F::GuestCsSelector, vmcs12.read(F::HostCsSelector));
    vmcs01.write(F::GuestCsBase, 0);
    vmcs01.write(F::GuestCsLimit, 0xffff_ffff);
    vmcs01.write(F::GuestCsAccessRights, host_ar::cs(host_64));
    for (sel, base, limit, ar, host_sel, host_base) in [
        (
            F::GuestSsSelector,
            F::GuestSsBase,
            F::GuestSsLimit,
            F::GuestSsAccessRights,
            F::HostSsSelector,
            None,
        ),
        (
            F::GuestDsSelector,
            F::GuestDsBase,
            F::GuestDsLimit,
            F::GuestDsAccessRights,
            F::HostDsSelector,
            None,
        ),
        (
            F::GuestEsSelector,
            F::GuestEsBase,
            F::GuestEsLimit,
            F::GuestEsAccessRights,
            F::HostEsSelector,
            None,
        ),
        (
            F::GuestFsSelector,
            F::GuestFsBase,
            F::GuestFsLimit,
            F::GuestFsAccessRights,
            F::HostFsSelector,
            Some(F::HostFsBase),
        ),
        (
            F::GuestGsSelector,
            F::GuestGsBase,
            F::GuestGsLimit,
            F::GuestGsAccessRights,
            F::HostGsSelector,
            Some(F::HostGsBase),
        ),
    ] {
        let s = vmcs12.read(host_sel);
        vmcs01.write(sel, s);
        vmcs01.write(base, host_base.map_or(0, |b| vmcs12.read(b)));
        vmcs01.write(limit, 0xffff_ffff);
        // A null selector makes the segment unusable; SS keeps DPL 0
        // (28.5.2: "the DPL of SS is 0 in any case").
        vmcs01.write(
            ar,
            if s == 0 {
                host_ar::UNUSABLE | host_ar::DATA
            } else {
                host_ar::DATA
            },
        );
    }
    vmcs01.write(F::GuestTrSelector, vmcs12.read(F::HostTrSelector));
    vmcs01.write(F::GuestTrBase, vmcs12.read(F::HostTrBase));
    vmcs01.write(F::GuestTrLimit, 0x67);
    vmcs01.write(F::GuestTrAccessRights, host_ar::TR);
    vmcs01.write(F::GuestLdtrSelector, 0);
    vmcs01.write(F::GuestLdtrBase, 0);
    vmcs01.write(F::GuestLdtrLimit, 0);
    vmcs01.write(F::GuestLdtrAccessRights, host_ar::UNUSABLE);

    // 28.5.3: RFLAGS is 2; no blocking, active, nothing pending.
    vmcs01.write(F::GuestRflags, 0x2);
    vmcs01.write(F::GuestInterruptibilityState, 0);
    vmcs01.write(F::GuestActivityState, 0);
    vmcs01.write(F::GuestPendingDebugExceptions, 0);
}

/// Whether CR0.PE is set in `cr0` (for event-injection rules).
pub const fn protected_mode(cr0: u64) -> bool {
    cr0 & cr::CR0_PE != 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_guest_fields_are_the_table_filtered_in_order() {
        let filtered: Vec<F> = crate::vmx::access::fields_with(FieldGroup::Guest, Nested::Copy)
            .filter(|f| !CONDITIONAL_GUEST_FIELDS.contains(f))
            .collect();
        assert_eq!(super::plain_guest_fields().collect::<Vec<_>>(), filtered);
        assert!(filtered.len() > 40, "{} fields", filtered.len());
    }

    use super::*;
    use crate::vmx::MemVmcs;
    use crate::vmx::caps::ControlMsrs;
    use crate::vmx::controls::ControlCap;
    use proptest::prelude::*;

    fn hw() -> VmxCaps {
        let all = |allowed0: u32| ControlMsrs {
            plain: ControlCap {
                allowed0,
                allowed1: u32::MAX,
            },
            true_ctls: None,
        };
        VmxCaps {
            pin: all(0x16),
            proc: all(0x0401_e172),
            proc2: ControlCap {
                allowed0: 0,
                allowed1: u32::MAX,
            },
            exit: all(0x0003_6dff),
            entry: all(0x11ff),
            cr0_fixed0: 0x8000_0021,
            cr0_fixed1: 0xffff_ffff,
            cr4_fixed0: 0x2000,
            cr4_fixed1: 0x0037_27ff,
            ..VmxCaps::default()
        }
    }

    fn vmcs12() -> MemVmcs {
        let mut v = MemVmcs::new();
        v.write(F::GuestRip, 0x1234);
        v.write(F::GuestRsp, 0x8000);
        v.write(F::GuestCr0, 0x8000_0031);
        v.write(F::GuestCr4, 0x2020);
        v.write(F::GuestIa32Efer, 0x500);
        v.write(F::GuestIa32Pat, 0x0606);
        v.write(F::GuestDr7, 0x455);
        v.write(
            F::PinBasedVmExecControls,
            u64::from(PinBased::EXTERNAL_INTERRUPT_EXITING.bits() | 0x16),
        );
        v.write(
            F::PrimaryProcBasedVmExecControls,
            u64::from(PrimaryProcBased::USE_MSR_BITMAPS.bits() | 0x0401_e172),
        );
        v.write(
            F::VmEntryControls,
            u64::from(
                (EntryControls::IA32E_MODE_GUEST | EntryControls::LOAD_IA32_EFER).bits() | 0x11fb,
            ),
        );
        v.write(
            F::VmExitControls,
            u64::from(
                (ExitControls::HOST_ADDRESS_SPACE_SIZE
                    | ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT
                    | ExitControls::SAVE_IA32_EFER
                    | ExitControls::LOAD_IA32_EFER)
                    .bits()
                    | 0x0003_6dff,
            ),
        );
        v.write(F::Cr0GuestHostMask, 0x1);
        v.write(F::Cr0ReadShadow, 0x0);
        v
    }

    fn l0() -> L0Part {
        L0Part {
            pin: (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits(),
            proc2: (SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID).bits(),
            eptp: 0x5e,
            vpid: 7,
            msr_bitmap: 0x9000,
            io_bitmaps: (0xa000, 0xb000),
            cr0_fixed_mask: 0x8000_0021,
            cr4_fixed_mask: 0x2000,
            ..L0Part::default()
        }
    }

    #[test]
    fn vmcs02_merges_controls_and_copies_state() {
        let v12 = vmcs12();
        let l1 = L1State {
            dr7: 0x400,
            debugctl: 0,
            efer: 0xd01,
            pat: 0x0007_0406_0007_0406,
        };
        let mut v02 = MemVmcs::new();
        prepare_vmcs02(&v12, &l1, &l0(), &hw(), &mut v02);
        for (f, x) in pointers(&l0()) {
            v02.write(f, x);
        }
        assert_eq!(v02.read(F::GuestRip), 0x1234);
        assert_eq!(v02.read(F::GuestIa32Efer), 0x500);
        // No "load IA32_PAT"/"load debug controls": L1's values.
        assert_eq!(v02.read(F::GuestIa32Pat), l1.pat);
        assert_eq!(v02.read(F::GuestDr7), 0x400);
        let pin = v02.read32(F::PinBasedVmExecControls);
        assert!(has(
            pin,
            (PinBased::NMI_EXITING | PinBased::EXTERNAL_INTERRUPT_EXITING).bits()
        ));
        assert_eq!(v02.read(F::MsrBitmapAddress), 0x9000);
        assert_eq!(v02.read(F::EptPointer), 0x5e);
        assert_eq!(v02.read(F::VirtualProcessorId), 7);
        let exit = v02.read32(F::VmExitControls);
        assert!(has(
            exit,
            ExitControls::ACKNOWLEDGE_INTERRUPT_ON_EXIT.bits()
        ));
        assert!(has(exit, ExitControls::HOST_ADDRESS_SPACE_SIZE.bits()));
        // CR0: L1's mask plus the fixed bits; shadow for L1's bits, real
        // value for the fixed ones.
        assert_eq!(v02.read(F::Cr0GuestHostMask), 0x8000_0021);
        assert_eq!(v02.read(F::Cr0ReadShadow), 0x8000_0030);
        let proc2 = v02.read32(F::SecondaryProcBasedVmExecControls);
        assert!(has(proc2, SecondaryProcBased::ENABLE_EPT.bits()));
    }

    /// The XSS-exiting bitmap exists only with "enable XSAVES/XRSTORS"
    /// (SDM 25.6.20): without the control it is not written (Bochs refused
    /// that VMWRITE at every nested entry of Linux KVM's L2); with it, it
    /// is L1's.
    #[test]
    fn xss_exiting_bitmap_only_with_xsaves() {
        let xsaves = u64::from(SecondaryProcBased::ENABLE_XSAVES_XRSTORS.bits());
        let mut v12 = vmcs12();
        v12.set_bits(
            F::PrimaryProcBasedVmExecControls,
            u64::from(PrimaryProcBased::ACTIVATE_SECONDARY_CONTROLS.bits()),
        );
        v12.write(F::XssExitingBitmap, 0x100);
        let proc2 = v12.read(F::SecondaryProcBasedVmExecControls);
        for (on, want) in [(false, 0), (true, 0x100)] {
            let p = if on { proc2 | xsaves } else { proc2 & !xsaves };
            v12.write(F::SecondaryProcBasedVmExecControls, p);
            let mut v02 = MemVmcs::new();
            prepare_vmcs02(&v12, &L1State::default(), &l0(), &hw(), &mut v02);
            assert_eq!(v02.read(F::XssExitingBitmap), want, "XSAVES {on}");
        }
    }

    #[test]
    fn no_msr_bitmaps_means_every_msr_exits() {
        let mut v12 = vmcs12();
        v12.write(F::PrimaryProcBasedVmExecControls, 0x0401_e172);
        let mut v02 = MemVmcs::new();
        prepare_vmcs02(&v12, &L1State::default(), &l0(), &hw(), &mut v02);
        assert!(!has(
            v02.read32(F::PrimaryProcBasedVmExecControls),
            PrimaryProcBased::USE_MSR_BITMAPS.bits()
        ));
    }

    #[test]
    fn efer_without_load_follows_ia32e_mode() {
        let mut v12 = vmcs12();
        v12.write(
            F::VmEntryControls,
            u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        );
        let l1 = L1State {
            efer: 0x801,
            ..L1State::default()
        };
        assert_eq!(l2_efer(&v12, &l1), 0xd01);
        v12.write(F::VmEntryControls, 0);
        assert_eq!(l2_efer(&v12, &L1State { efer: 0xd01, ..l1 }), 0x801);
    }

    #[test]
    fn exit_saves_state_and_clears_injection() {
        let mut v12 = vmcs12();
        v12.write(F::VmEntryInterruptionInfo, 0x8000_0b0e);
        let mut v02 = MemVmcs::new();
        v02.write(F::GuestRip, 0x5555);
        v02.write(F::GuestIa32Efer, 0x100);
        v02.write(F::GuestIa32Pat, 0x1);
        save_guest_state(&v02, &mut v12);
        write_exit_info(&mut v12, &ExitInfo::synthetic(18, 0));
        assert_eq!(v12.read(F::GuestRip), 0x5555);
        // "save IA32_EFER" set, "save IA32_PAT" not.
        assert_eq!(v12.read(F::GuestIa32Efer), 0x100);
        assert_eq!(v12.read(F::GuestIa32Pat), 0x0606);
        // EFER.LMA = 0: "IA-32e mode guest" cleared.
        assert!(!has(
            v12.read32(F::VmEntryControls),
            EntryControls::IA32E_MODE_GUEST.bits()
        ));
        assert_eq!(v12.read(F::VmExitReason), 18);
        assert_eq!(v12.read(F::VmEntryInterruptionInfo), 0xb0e);
    }

    #[test]
    fn host_state_after_exit() {
        let mut v12 = vmcs12();
        v12.write(F::HostCr0, 0x8000_0033);
        v12.write(F::HostCr4, 0x2020);
        v12.write(F::HostRip, 0xffff_8000_0000_1000);
        v12.write(F::HostRsp, 0x9000);
        v12.write(F::HostCsSelector, 8);
        v12.write(F::HostSsSelector, 0x10);
        v12.write(F::HostTrSelector, 0x28);
        v12.write(F::HostIa32Efer, 0xd01);
        v12.write(F::HostGsBase, 0x7777);
        let mut v01 = MemVmcs::new();
        v01.write(F::VmEntryControls, 0);
        // L1's old CR0 had CD and NW set: kept (28.5.1).
        load_host_state(&v12, 0xe000_0031, 0x2020, &hw(), &mut v01);
        assert_eq!(v01.read(F::GuestCr0), 0xe000_0033);
        assert_eq!(v01.read(F::GuestRip), 0xffff_8000_0000_1000);
        assert_eq!(v01.read(F::GuestRflags), 2);
        assert_eq!(v01.read(F::GuestIa32Efer), 0xd01);
        assert_eq!(v01.read(F::GuestCsAccessRights), 0xa09b);
        assert_eq!(v01.read(F::GuestSsAccessRights), 0xc093);
        assert_eq!(v01.read(F::GuestDsAccessRights), 0x1_c093);
        assert_eq!(v01.read(F::GuestGsBase), 0x7777);
        assert_eq!(v01.read(F::GuestTrLimit), 0x67);
        assert_eq!(v01.read(F::GuestDr7), 0x400);
        assert!(has(
            v01.read32(F::VmEntryControls),
            EntryControls::IA32E_MODE_GUEST.bits()
        ));
    }

    proptest! {
        #[test]
        fn host_cr0_keeps_what_the_sdm_keeps(old in any::<u64>(), host in any::<u64>()) {
            let caps = hw();
            let v = host_cr0(old, host, caps.cr0_fixed0, caps.cr0_fixed1);
            prop_assert_eq!(v & CR0_KEPT, old & CR0_KEPT);
            let fixed = caps.cr0_fixed0 | !caps.cr0_fixed1;
            prop_assert_eq!(v & !CR0_KEPT & !fixed, host & !CR0_KEPT & !fixed);
        }

        #[test]
        fn prepare_never_panics_and_keeps_l0_bits(raw in proptest::collection::vec(any::<u64>(), VmcsField_COUNT)) {
            let mut v12 = MemVmcs::new();
            for (f, x) in crate::vmx::VmcsField::ALL.iter().zip(raw) {
                v12.write(*f, x);
            }
            let mut v02 = MemVmcs::new();
            let l0 = l0();
            prepare_vmcs02(&v12, &L1State::default(), &l0, &hw(), &mut v02);
            // The sensitive fields are not prepare's to write.
            prop_assert!(pointers(&l0).iter().all(|&(f, _)| f.is_sensitive() && v02.read(f) == 0));
            for (f, x) in pointers(&l0) {
                v02.write(f, x);
            }
            prop_assert!(has(v02.read32(F::PinBasedVmExecControls), l0.pin));
            prop_assert!(has(v02.read32(F::SecondaryProcBasedVmExecControls), l0.proc2));
            prop_assert_eq!(v02.read(F::EptPointer), l0.eptp);
            prop_assert_eq!(v02.read(F::VmExitMsrLoadCount), 0);
            prop_assert_eq!(v02.read(F::VmEntryMsrLoadCount), 0);
            prop_assert_eq!(v02.read(F::VmcsLinkPointer), u64::MAX);
            let exit = v02.read32(F::VmExitControls);
            prop_assert!(has(exit, L0_EXIT.bits()));
        }
    }

    #[allow(non_upper_case_globals)]
    const VmcsField_COUNT: usize = crate::vmx::VmcsField::COUNT;
}

#[cfg(test)]
#[path = "vmcs02/checked.rs"]
mod checked;
