//! VM-exit information: basic exit reasons (Intel SDM Vol. 3D, Appendix C
//! "VMX Basic Exit Reasons"), the exit-reason field, exit qualifications
//! (SDM Vol. 3C, 28.2.1 "Basic VM-Exit Information") and the
//! interruption-information format (28.2.2, 28.2.4, 25.8.3).
//!
//! Decoders take raw field values that may come from a guest (VMCS12) and
//! never panic; reserved encodings are reported, not assumed away.

use core::fmt;

numbered_enum! {
    /// Basic exit reasons (SDM Appendix C, Table C-1).
    pub enum ExitReason: u16 {
        /// Exception or non-maskable interrupt (NMI).
        ExceptionOrNmi = 0,
        /// External interrupt.
        ExternalInterrupt = 1,
        /// Triple fault.
        TripleFault = 2,
        /// INIT signal.
        InitSignal = 3,
        /// Start-up IPI (SIPI).
        StartupIpi = 4,
        /// I/O system-management interrupt (SMI).
        IoSmi = 5,
        /// Other SMI.
        OtherSmi = 6,
        /// Interrupt window.
        InterruptWindow = 7,
        /// NMI window.
        NmiWindow = 8,
        /// Task switch.
        TaskSwitch = 9,
        /// CPUID.
        Cpuid = 10,
        /// GETSEC.
        Getsec = 11,
        /// HLT.
        Hlt = 12,
        /// INVD.
        Invd = 13,
        /// INVLPG.
        Invlpg = 14,
        /// RDPMC.
        Rdpmc = 15,
        /// RDTSC.
        Rdtsc = 16,
        /// RSM.
        Rsm = 17,
        /// VMCALL.
        Vmcall = 18,
        /// VMCLEAR.
        Vmclear = 19,
        /// VMLAUNCH.
        Vmlaunch = 20,
        /// VMPTRLD.
        Vmptrld = 21,
        /// VMPTRST.
        Vmptrst = 22,
        /// VMREAD.
        Vmread = 23,
        /// VMRESUME.
        Vmresume = 24,
        /// VMWRITE.
        Vmwrite = 25,
        /// VMXOFF.
        Vmxoff = 26,
        /// VMXON.
        Vmxon = 27,
        /// Control-register accesses.
        ControlRegisterAccess = 28,
        /// MOV DR.
        MovDr = 29,
        /// I/O instruction.
        IoInstruction = 30,
        /// RDMSR.
        Rdmsr = 31,
        /// WRMSR.
        Wrmsr = 32,
        /// VM-entry failure due to invalid guest state.
        EntryFailureGuestState = 33,
        /// VM-entry failure due to MSR loading.
        EntryFailureMsrLoading = 34,
        /// MWAIT.
        Mwait = 36,
        /// Monitor trap flag.
        MonitorTrapFlag = 37,
        /// MONITOR.
        Monitor = 39,
        /// PAUSE.
        Pause = 40,
        /// VM-entry failure due to machine-check event.
        EntryFailureMachineCheck = 41,
        /// TPR below threshold.
        TprBelowThreshold = 43,
        /// APIC access.
        ApicAccess = 44,
        /// Virtualized EOI.
        VirtualizedEoi = 45,
        /// Access to GDTR or IDTR.
        GdtrIdtrAccess = 46,
        /// Access to LDTR or TR.
        LdtrTrAccess = 47,
        /// EPT violation.
        EptViolation = 48,
        /// EPT misconfiguration.
        EptMisconfiguration = 49,
        /// INVEPT.
        Invept = 50,
        /// RDTSCP.
        Rdtscp = 51,
        /// VMX-preemption timer expired.
        PreemptionTimerExpired = 52,
        /// INVVPID.
        Invvpid = 53,
        /// WBINVD or WBNOINVD.
        Wbinvd = 54,
        /// XSETBV.
        Xsetbv = 55,
        /// APIC write.
        ApicWrite = 56,
        /// RDRAND.
        Rdrand = 57,
        /// INVPCID.
        Invpcid = 58,
        /// VMFUNC.
        Vmfunc = 59,
        /// ENCLS.
        Encls = 60,
        /// RDSEED.
        Rdseed = 61,
        /// Page-modification log full.
        PmlFull = 62,
        /// XSAVES.
        Xsaves = 63,
        /// XRSTORS.
        Xrstors = 64,
        /// PCONFIG.
        Pconfig = 65,
        /// SPP-related event.
        SppRelatedEvent = 66,
        /// UMWAIT.
        Umwait = 67,
        /// TPAUSE.
        Tpause = 68,
        /// LOADIWKEY.
        Loadiwkey = 69,
        /// ENCLV.
        Enclv = 70,
        /// ENQCMD PASID translation failure.
        EnqcmdPasidTranslationFailure = 72,
        /// ENQCMDS PASID translation failure.
        EnqcmdsPasidTranslationFailure = 73,
        /// Bus lock.
        BusLock = 74,
        /// Instruction timeout.
        InstructionTimeout = 75,
        /// SEAMCALL.
        Seamcall = 76,
        /// TDCALL.
        Tdcall = 77,
        /// RDMSRLIST.
        Rdmsrlist = 78,
        /// WRMSRLIST.
        Wrmsrlist = 79,
    }
}

/// The 32-bit exit-reason field (SDM 28.2.1, Table 28-? "Format of Exit
/// Reason").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitReasonField(pub u32);

impl ExitReasonField {
    /// Bit 27: the exit was incident to enclave mode.
    pub const ENCLAVE_MODE: u32 = 1 << 27;
    /// Bit 28: a pending MTF VM exit.
    pub const PENDING_MTF: u32 = 1 << 28;
    /// Bit 29: the exit was from VMX root operation (SMM monitor).
    pub const FROM_VMX_ROOT: u32 = 1 << 29;
    /// Bit 31: VM-entry failure.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// The field for `reason` with no flag bits.
    pub const fn new(reason: ExitReason) -> Self {
        Self(reason.number())
    }

    /// Bits 15:0: the basic exit reason.
    pub const fn basic(self) -> ExitReason {
        ExitReason::from_u32(self.0 & 0xffff)
    }

    /// Bit 31: the VM exit is a VM-entry failure.
    pub const fn is_entry_failure(self) -> bool {
        self.0 & Self::ENTRY_FAILURE != 0
    }

    /// Bit 29: the exit came from VMX root operation.
    pub const fn is_from_vmx_root(self) -> bool {
        self.0 & Self::FROM_VMX_ROOT != 0
    }

    /// Bit 27: the exit was incident to enclave mode.
    pub const fn is_enclave_mode(self) -> bool {
        self.0 & Self::ENCLAVE_MODE != 0
    }

    /// Bit 28: a pending MTF VM exit.
    pub const fn is_pending_mtf(self) -> bool {
        self.0 & Self::PENDING_MTF != 0
    }

    /// The field with bit 31 (VM-entry failure) set.
    pub const fn with_entry_failure(self) -> Self {
        Self(self.0 | Self::ENTRY_FAILURE)
    }
}

impl fmt::Display for ExitReasonField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.basic())?;
        if self.is_entry_failure() {
            f.write_str(" [entry failure]")?;
        }
        Ok(())
    }
}

/// Access type of a control-register access (qualification bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrAccessType {
    /// MOV to CR.
    MovToCr = 0,
    /// MOV from CR.
    MovFromCr = 1,
    /// CLTS.
    Clts = 2,
    /// LMSW.
    Lmsw = 3,
}

/// Exit qualification for control-register accesses (SDM 28.2.1, Table 28-3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrAccessQual(pub u64);

impl CrAccessQual {
    /// Bits 3:0: the control register (0, 3, 4 or 8).
    pub const fn cr(self) -> u8 {
        (self.0 & 0xf) as u8
    }

    /// Bits 5:4: the access type.
    pub const fn access_type(self) -> CrAccessType {
        match (self.0 >> 4) & 0b11 {
            0 => CrAccessType::MovToCr,
            1 => CrAccessType::MovFromCr,
            2 => CrAccessType::Clts,
            _ => CrAccessType::Lmsw,
        }
    }

    /// Bit 6: LMSW operand is in memory (else a register).
    pub const fn lmsw_memory_operand(self) -> bool {
        self.0 & (1 << 6) != 0
    }

    /// Bits 11:8: the general-purpose register of MOV CR (0 RAX .. 15 R15).
    pub const fn gpr(self) -> u8 {
        ((self.0 >> 8) & 0xf) as u8
    }

    /// Bits 31:16: the LMSW source data.
    pub const fn lmsw_source(self) -> u16 {
        (self.0 >> 16) as u16
    }

    /// Encodes a MOV to/from CR qualification.
    pub const fn mov(cr: u8, access: CrAccessType, gpr: u8) -> Self {
        Self((cr as u64 & 0xf) | ((access as u64) << 4) | ((gpr as u64 & 0xf) << 8))
    }
}

/// Exit qualification for I/O instructions (SDM 28.2.1, Table 28-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoQual(pub u64);

impl IoQual {
    const IN: u64 = 1 << 3;
    const STRING: u64 = 1 << 4;
    const REP: u64 = 1 << 5;
    const IMMEDIATE: u64 = 1 << 6;
    const PORT_SHIFT: u32 = 16;

    /// Access size in bytes (bits 2:0 hold size - 1: 1, 2 or 4).
    pub const fn size(self) -> u8 {
        (self.0 & 0b111) as u8 + 1
    }

    /// Bit 3: IN (else OUT).
    pub const fn is_in(self) -> bool {
        self.0 & Self::IN != 0
    }

    /// Bit 4: string instruction (INS/OUTS).
    pub const fn is_string(self) -> bool {
        self.0 & Self::STRING != 0
    }

    /// Bit 5: REP prefixed.
    pub const fn is_rep(self) -> bool {
        self.0 & Self::REP != 0
    }

    /// Bit 6: port given as an immediate (else in DX).
    pub const fn is_immediate(self) -> bool {
        self.0 & Self::IMMEDIATE != 0
    }

    /// Bits 31:16: the port.
    pub const fn port(self) -> u16 {
        (self.0 >> Self::PORT_SHIFT) as u16
    }

    /// Encodes a qualification; `size` is 1, 2 or 4 (other values are
    /// reduced to their low 3 bits after subtracting 1).
    pub const fn new(port: u16, size: u8, is_in: bool, string: bool, rep: bool, imm: bool) -> Self {
        let mut q = (size.wrapping_sub(1) & 0b111) as u64 | ((port as u64) << Self::PORT_SHIFT);
        if is_in {
            q |= Self::IN;
        }
        if string {
            q |= Self::STRING;
        }
        if rep {
            q |= Self::REP;
        }
        if imm {
            q |= Self::IMMEDIATE;
        }
        Self(q)
    }
}

/// Exit qualification for EPT violations (SDM 28.2.1, Table 28-7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptViolationQual(pub u64);

impl EptViolationQual {
    /// Bit 0: the access was a data read.
    pub const READ: u64 = 1 << 0;
    /// Bit 1: the access was a data write.
    pub const WRITE: u64 = 1 << 1;
    /// Bit 2: the access was an instruction fetch.
    pub const FETCH: u64 = 1 << 2;
    /// Bit 3: the guest-physical address was readable (AND of the entries).
    pub const READABLE: u64 = 1 << 3;
    /// Bit 4: the guest-physical address was writable.
    pub const WRITABLE: u64 = 1 << 4;
    /// Bit 5: the guest-physical address was executable (supervisor-mode
    /// executable with mode-based execute control).
    pub const EXECUTABLE: u64 = 1 << 5;
    /// Bit 6: user-mode executable (mode-based execute control only).
    pub const USER_EXECUTABLE: u64 = 1 << 6;
    /// Bit 7: the guest-linear-address field is valid.
    pub const GLA_VALID: u64 = 1 << 7;
    /// Bit 8 (if bit 7): the access was to the translated linear address,
    /// not to a guest paging-structure entry.
    pub const GLA_IS_TRANSLATION: u64 = 1 << 8;
    /// Bit 12: NMI unblocking due to IRET.
    pub const NMI_UNBLOCKING: u64 = 1 << 12;

    /// The field bits for an access of kind `read`/`write`/`fetch` to an
    /// address whose entries allow `readable`/`writable`/`executable`.
    pub const fn new(access: [bool; 3], allowed: [bool; 3]) -> Self {
        let mut q = 0;
        let mut i = 0;
        while i < 3 {
            if access[i] {
                q |= 1 << i;
            }
            if allowed[i] {
                q |= 1 << (i + 3);
            }
            i += 1;
        }
        Self(q)
    }

    const fn has(self, bit: u64) -> bool {
        self.0 & bit != 0
    }

    /// Bit 0: data read.
    pub const fn read(self) -> bool {
        self.has(Self::READ)
    }

    /// Bit 1: data write.
    pub const fn write(self) -> bool {
        self.has(Self::WRITE)
    }

    /// Bit 2: instruction fetch.
    pub const fn fetch(self) -> bool {
        self.has(Self::FETCH)
    }

    /// Bit 3: the address was readable.
    pub const fn readable(self) -> bool {
        self.has(Self::READABLE)
    }

    /// Bit 4: the address was writable.
    pub const fn writable(self) -> bool {
        self.has(Self::WRITABLE)
    }

    /// Bit 5: the address was executable.
    pub const fn executable(self) -> bool {
        self.has(Self::EXECUTABLE)
    }

    /// Bit 7: the guest-linear-address field is valid.
    pub const fn gla_valid(self) -> bool {
        self.has(Self::GLA_VALID)
    }

    /// Bit 8 with bit 7: the access was to the translated address (`false`
    /// means an access to a guest paging-structure entry). `None` when the
    /// linear address is not valid (the bit is then reserved).
    pub const fn gla_is_translation(self) -> Option<bool> {
        if self.gla_valid() {
            Some(self.has(Self::GLA_IS_TRANSLATION))
        } else {
            None
        }
    }

    /// Bit 12: NMI unblocking due to IRET.
    pub const fn nmi_unblocking(self) -> bool {
        self.has(Self::NMI_UNBLOCKING)
    }
}

/// Interruption type (bits 10:8 of the interruption-information format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InterruptionType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception (faults and traps other than #BP and #OF).
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3, INTO).
    SoftwareException = 6,
    /// Other event (the MTF pending event on VM entry).
    OtherEvent = 7,
}

impl InterruptionType {
    /// Decodes the 3-bit type; 1 is reserved.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::ExternalInterrupt),
            2 => Some(Self::Nmi),
            3 => Some(Self::HardwareException),
            4 => Some(Self::SoftwareInterrupt),
            5 => Some(Self::PrivilegedSoftwareException),
            6 => Some(Self::SoftwareException),
            7 => Some(Self::OtherEvent),
            _ => None,
        }
    }

    /// Whether VM entry uses the VM-entry instruction length for this type
    /// (software interrupts and exceptions; SDM 25.8.3).
    pub const fn uses_instruction_length(self) -> bool {
        matches!(
            self,
            Self::SoftwareInterrupt | Self::PrivilegedSoftwareException | Self::SoftwareException
        )
    }
}

/// The interruption-information format, shared by the VM-exit
/// interruption-information, IDT-vectoring information and VM-entry
/// interruption-information fields (SDM 28.2.2, 28.2.4, 25.8.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    const VECTOR_MASK: u32 = 0xff;
    const TYPE_SHIFT: u32 = 8;
    const TYPE_MASK: u32 = 0b111;
    /// Bit 11: an error code is delivered (entry) / was pushed (exit).
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    /// Bit 12: NMI unblocking due to IRET (exit interruption information).
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Bit 31: valid.
    pub const VALID: u32 = 1 << 31;
    /// Bits that are reserved in the VM-entry form (30:12), checked at VM
    /// entry (SDM 26.2.1.3).
    pub const ENTRY_RESERVED: u32 = 0x7fff_f000;

    /// A valid event of `kind` with `vector`.
    pub const fn new(vector: u8, kind: InterruptionType, error_code: bool) -> Self {
        let mut v = Self::VALID | ((kind as u32) << Self::TYPE_SHIFT) | vector as u32;
        if error_code {
            v |= Self::ERROR_CODE_VALID;
        }
        Self(v)
    }

    /// Bits 7:0: the vector.
    pub const fn vector(self) -> u8 {
        (self.0 & Self::VECTOR_MASK) as u8
    }

    /// Bits 10:8: the type (`None` for the reserved value 1).
    pub const fn kind(self) -> Option<InterruptionType> {
        InterruptionType::from_bits(((self.0 >> Self::TYPE_SHIFT) & Self::TYPE_MASK) as u8)
    }

    /// Bit 11: error code valid.
    pub const fn error_code_valid(self) -> bool {
        self.0 & Self::ERROR_CODE_VALID != 0
    }

    /// Bit 12: NMI unblocking due to IRET.
    pub const fn nmi_unblocking(self) -> bool {
        self.0 & Self::NMI_UNBLOCKING != 0
    }

    /// Bit 31: valid.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// The same information with bit 12 set.
    pub const fn with_nmi_unblocking(self) -> Self {
        Self(self.0 | Self::NMI_UNBLOCKING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exit_reasons() {
        assert_eq!(ExitReason::from_u32(0), ExitReason::ExceptionOrNmi);
        assert_eq!(ExitReason::from_u32(4), ExitReason::StartupIpi);
        assert_eq!(ExitReason::from_u32(48), ExitReason::EptViolation);
        assert_eq!(ExitReason::from_u32(49), ExitReason::EptMisconfiguration);
        assert_eq!(ExitReason::from_u32(52), ExitReason::PreemptionTimerExpired);
        assert_eq!(ExitReason::from_u32(77), ExitReason::Tdcall);
        assert_eq!(ExitReason::from_u32(35), ExitReason::Unknown(35));
        assert_eq!(
            ExitReason::from_u32(0x1_0000),
            ExitReason::Unknown(u16::MAX)
        );
        for &r in ExitReason::KNOWN {
            assert_eq!(ExitReason::from_u32(r.number()), r);
        }
        assert_eq!(ExitReason::Cpuid.to_string(), "CPUID (10)");
    }

    #[test]
    fn exit_reason_field() {
        let f = ExitReasonField(0x8000_0021);
        assert!(f.is_entry_failure());
        assert_eq!(f.basic(), ExitReason::EntryFailureGuestState);
        let g = ExitReasonField::new(ExitReason::Hlt);
        assert!(!g.is_entry_failure() && !g.is_from_vmx_root() && !g.is_enclave_mode());
        assert!(ExitReasonField(ExitReasonField::FROM_VMX_ROOT).is_from_vmx_root());
        assert!(ExitReasonField(ExitReasonField::ENCLAVE_MODE | 10).is_enclave_mode());
        assert_eq!(g.with_entry_failure().0, 0x8000_000c);
    }

    #[test]
    fn cr_access() {
        // mov cr3, rbx ... MOV to CR3 from RBX (register 3).
        let q = CrAccessQual(0x0000_0303);
        assert_eq!(q.cr(), 3);
        assert_eq!(q.access_type(), CrAccessType::MovToCr);
        assert_eq!(q.gpr(), 3);
        assert_eq!(CrAccessQual::mov(3, CrAccessType::MovToCr, 3), q);
        let lmsw = CrAccessQual(0x0011_0070);
        assert_eq!(lmsw.access_type(), CrAccessType::Lmsw);
        assert!(lmsw.lmsw_memory_operand());
        assert_eq!(lmsw.lmsw_source(), 0x11);
    }

    #[test]
    fn io_qualification() {
        // in al, 0x60 (immediate).
        let q = IoQual(0x0060_0048);
        assert_eq!(
            (q.size(), q.is_in(), q.is_immediate(), q.port()),
            (1, true, true, 0x60)
        );
        assert_eq!(IoQual::new(0x60, 1, true, false, false, true), q);
        // rep outsw to dx=0x3f8.
        let q = IoQual::new(0x3f8, 2, false, true, true, false);
        assert_eq!(
            (q.size(), q.is_in(), q.is_string(), q.is_rep()),
            (2, false, true, true)
        );
        assert_eq!(q.port(), 0x3f8);
    }

    #[test]
    fn ept_violation_qualification() {
        let q = EptViolationQual(0x182 | EptViolationQual::READABLE);
        assert!(q.write() && !q.read() && !q.fetch());
        assert!(q.readable() && !q.writable() && !q.executable());
        assert_eq!(q.gla_is_translation(), Some(true));
        assert_eq!(EptViolationQual(0x100).gla_is_translation(), None);
        assert!(EptViolationQual(EptViolationQual::NMI_UNBLOCKING).nmi_unblocking());
        assert_eq!(
            EptViolationQual::new([false, true, false], [true, false, false]).0,
            0b1010
        );
    }

    #[test]
    fn interruption_info() {
        // #PF with error code.
        let pf = InterruptionInfo(0x8000_0b0e);
        assert_eq!(
            pf,
            InterruptionInfo::new(14, InterruptionType::HardwareException, true)
        );
        assert_eq!(pf.vector(), 14);
        assert!(pf.is_valid() && pf.error_code_valid() && !pf.nmi_unblocking());
        let nmi = InterruptionInfo::new(2, InterruptionType::Nmi, false).with_nmi_unblocking();
        assert_eq!(nmi.0, 0x8000_1202);
        assert_eq!(InterruptionInfo(0x8000_0100).kind(), None);
        assert!(InterruptionType::SoftwareInterrupt.uses_instruction_length());
        assert!(!InterruptionType::HardwareException.uses_instruction_length());
    }

    proptest! {
        #[test]
        fn interruption_info_round_trips(vector in any::<u8>(), t in 0u8..8, ec in any::<bool>()) {
            if let Some(kind) = InterruptionType::from_bits(t) {
                let i = InterruptionInfo::new(vector, kind, ec);
                prop_assert_eq!(i.vector(), vector);
                prop_assert_eq!(i.kind(), Some(kind));
                prop_assert_eq!(i.error_code_valid(), ec);
                prop_assert!(i.is_valid());
                prop_assert_eq!(i.0 & InterruptionInfo::ENTRY_RESERVED, 0);
            }
        }

        #[test]
        fn decoders_never_panic(v in any::<u64>()) {
            let _ = (CrAccessQual(v).access_type(), IoQual(v).size(), EptViolationQual(v).gla_is_translation());
            let _ = (InterruptionInfo(v as u32).kind(), ExitReasonField(v as u32).basic());
        }
    }
}
