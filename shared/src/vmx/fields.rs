//! The VMCS field table (Intel SDM Vol. 3D, Appendix B "Field Encoding in
//! VMCS"), declared once and turned into a typed field enum by a macro.
//!
//! Every field is listed with its encoding, width, group and nested policy.
//! The VMREAD/VMWRITE emulation (read-only and unsupported fields), the
//! VMCS dump format and the copy loops of the nested entry and exit phases are
//! all driven from this one table.
//!
//! # Encoding (SDM Vol. 3C, 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS Fields")
//!
//! | bits  | meaning                                                      |
//! |-------|--------------------------------------------------------------|
//! | 0     | access type: 0 full, 1 high (64-bit fields only)             |
//! | 9:1   | index                                                        |
//! | 11:10 | type: 0 control, 1 VM-exit information, 2 guest, 3 host      |
//! | 12    | reserved, 0                                                  |
//! | 14:13 | width: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural width         |
//! | 31:15 | reserved, 0                                                  |

use core::fmt;

/// Bit 0 of an encoding: set for the "high" half of a 64-bit field.
pub const ENCODING_ACCESS_HIGH: u32 = 1 << 0;
/// Bit position of the index field (bits 9:1).
pub const ENCODING_INDEX_SHIFT: u32 = 1;
/// Mask of the index field after shifting.
pub const ENCODING_INDEX_MASK: u32 = 0x1ff;
/// Bit position of the type field (bits 11:10).
pub const ENCODING_TYPE_SHIFT: u32 = 10;
/// Bit position of the width field (bits 14:13).
pub const ENCODING_WIDTH_SHIFT: u32 = 13;
/// Mask of the two-bit type and width fields after shifting.
pub const ENCODING_2BIT_MASK: u32 = 0b11;
/// Bits of an encoding that must be zero (bit 12 and bits 31:15).
pub const ENCODING_RESERVED_MASK: u32 = (1 << 12) | !0x7fff;

/// Width of a VMCS field (encoding bits 14:13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FieldWidth {
    /// 16-bit field.
    Bits16 = 0,
    /// 64-bit field (the full encoding; encoding + 1 is the high half).
    Bits64 = 1,
    /// 32-bit field.
    Bits32 = 2,
    /// Natural-width field: 64 bits on processors supporting Intel 64.
    Natural = 3,
}

impl FieldWidth {
    /// The width decoded from encoding bits 14:13.
    pub const fn from_encoding(encoding: u32) -> Self {
        match (encoding >> ENCODING_WIDTH_SHIFT) & ENCODING_2BIT_MASK {
            0 => Self::Bits16,
            1 => Self::Bits64,
            2 => Self::Bits32,
            _ => Self::Natural,
        }
    }

    /// Mask of the bits a field of this width holds (natural width is 64
    /// bits: this crate only supports processors with Intel 64).
    #[inline]
    pub const fn mask(self) -> u64 {
        match self {
            Self::Bits16 => 0xffff,
            Self::Bits32 => 0xffff_ffff,
            Self::Bits64 | Self::Natural => u64::MAX,
        }
    }
}

/// The group ("type") of a VMCS field (encoding bits 11:10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FieldGroup {
    /// VM-execution, VM-exit and VM-entry control fields.
    Control = 0,
    /// Read-only VM-exit information fields ("read-only data").
    ExitInfo = 1,
    /// Guest-state fields.
    Guest = 2,
    /// Host-state fields.
    Host = 3,
}

impl FieldGroup {
    /// The group decoded from encoding bits 11:10.
    pub const fn from_encoding(encoding: u32) -> Self {
        match (encoding >> ENCODING_TYPE_SHIFT) & ENCODING_2BIT_MASK {
            0 => Self::Control,
            1 => Self::ExitInfo,
            2 => Self::Guest,
            _ => Self::Host,
        }
    }
}

/// How L0 treats a field of a guest hypervisor's VMCS (VMCS12) when it builds
/// the VMCS it really runs L2 with (VMCS02), and on the way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nested {
    /// Copied from VMCS12 to VMCS02 as is (and back on exit for guest state).
    Copy,
    /// L0 decides the VMCS02 value alone (host state, MSR bitmaps, VM-exit
    /// controls, ...); VMCS12's value is only used by L0's emulation.
    Owned,
    /// Combined from L0's and L1's needs (execution controls, exception
    /// bitmap, CR guest/host masks, TSC offset, ...).
    Merged,
    /// A guest-physical address that L0 must validate and translate (I/O
    /// bitmaps, MSR areas, EPTP, virtual-APIC page, ...).
    Address,
    /// VM-exit information: written back to VMCS12 on a reflected exit.
    ExitInfo,
    /// Not offered to L1: the control that gives the field meaning is not
    /// exposed, so VMREAD/VMWRITE of it fail as for an unknown field.
    Unsupported,
}

/// Which half of a field an encoding names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldPart {
    /// The whole field (access type 0).
    Full,
    /// Bits 63:32 of a 64-bit field (access type 1).
    High,
}

impl FieldPart {
    /// The value an access of this part reads from a field holding `value`.
    pub const fn extract(self, value: u64) -> u64 {
        match self {
            Self::Full => value,
            Self::High => value >> 32,
        }
    }

    /// The new field value after writing `written` through this part to a
    /// field holding `old` (a high-half write keeps bits 31:0; SDM Vol. 3C,
    /// 25.11.2).
    pub const fn merge(self, old: u64, written: u64) -> u64 {
        match self {
            Self::Full => written,
            Self::High => (old & 0xffff_ffff) | (written << 32),
        }
    }
}

macro_rules! vmcs_fields {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident = $enc:literal, $width:ident, $group:ident, $nested:ident;
    )+) => {
        /// A VMCS field, named as in SDM Appendix B; the discriminant is the
        /// field's (full) encoding.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum VmcsField {
            $( $(#[doc = $doc])+ $name = $enc, )+
        }

        /// Dense positions of the fields in [`VmcsField::ALL`] (the
        /// discriminants count up from 0 in table order).
        #[allow(dead_code)]
        #[repr(usize)]
        enum DenseIndex {
            $( $name, )+
        }

        impl VmcsField {
            /// Every field, in table order (`ALL[f.index()] == f`).
            pub const ALL: &'static [VmcsField] = &[$(VmcsField::$name),+];

            /// Number of fields in the table.
            pub const COUNT: usize = Self::ALL.len();

            /// The field's encoding (the VMREAD/VMWRITE operand).
            pub const fn encoding(self) -> u32 {
                self as u32
            }

            /// The field's name, as the enum variant.
            pub const fn name(self) -> &'static str {
                match self { $( Self::$name => stringify!($name), )+ }
            }

            /// The SDM's description of the field (from the table's doc).
            pub const fn description(self) -> &'static str {
                match self { $( Self::$name => concat!($($doc),+).trim_ascii(), )+ }
            }

            /// The field's width.
            pub const fn width(self) -> FieldWidth {
                const WIDTHS: &[FieldWidth] = &[$(FieldWidth::$width),+];
                WIDTHS[self.index()]
            }

            /// The field's group.
            pub const fn group(self) -> FieldGroup {
                const GROUPS: &[FieldGroup] = &[$(FieldGroup::$group),+];
                GROUPS[self.index()]
            }

            /// How L0 treats the field when running a nested guest.
            pub const fn nested(self) -> Nested {
                const POLICIES: &[Nested] = &[$(Nested::$nested),+];
                POLICIES[self.index()]
            }

            /// Dense index of the field in [`VmcsField::ALL`], for
            /// array-backed VMCS copies: one load from [`DENSE_INDEX`]
            /// (L0 asks for every field it moves between VMCSs; a `match`
            /// over the sparse encodings cost a chain of comparisons and a
            /// jump each time).
            pub const fn index(self) -> usize {
                DENSE_INDEX[dense_key(self as u32)] as usize
            }

            /// [`VmcsField::index`] as the table's order defines it (from
            /// which [`DENSE_INDEX`] is made and against which it is tested).
            const fn table_index(self) -> usize {
                match self { $( Self::$name => DenseIndex::$name as usize, )+ }
            }

            /// The field whose full encoding is `encoding` (high-half
            /// encodings are not accepted: see [`VmcsField::from_encoding`]).
            pub const fn from_full_encoding(encoding: u32) -> Option<Self> {
                match encoding {
                    $( $enc => Some(Self::$name), )+
                    _ => None,
                }
            }
        }
    };
}

vmcs_fields! {
    // ---- 16-bit control fields (B.1.1) ----
    /// Virtual-processor identifier (VPID).
    VirtualProcessorId = 0x0000, Bits16, Control, Owned;
    /// Posted-interrupt notification vector.
    PostedInterruptNotificationVector = 0x0002, Bits16, Control, Unsupported;
    /// EPTP index.
    EptpIndex = 0x0004, Bits16, Control, Unsupported;
    /// HLAT prefix size.
    HlatPrefixSize = 0x0006, Bits16, Control, Unsupported;
    /// Last PID-pointer index.
    LastPidPointerIndex = 0x0008, Bits16, Control, Unsupported;

    // ---- 16-bit guest-state fields (B.1.2) ----
    /// Guest ES selector.
    GuestEsSelector = 0x0800, Bits16, Guest, Copy;
    /// Guest CS selector.
    GuestCsSelector = 0x0802, Bits16, Guest, Copy;
    /// Guest SS selector.
    GuestSsSelector = 0x0804, Bits16, Guest, Copy;
    /// Guest DS selector.
    GuestDsSelector = 0x0806, Bits16, Guest, Copy;
    /// Guest FS selector.
    GuestFsSelector = 0x0808, Bits16, Guest, Copy;
    /// Guest GS selector.
    GuestGsSelector = 0x080a, Bits16, Guest, Copy;
    /// Guest LDTR selector.
    GuestLdtrSelector = 0x080c, Bits16, Guest, Copy;
    /// Guest TR selector.
    GuestTrSelector = 0x080e, Bits16, Guest, Copy;
    /// Guest interrupt status (RVI and SVI, virtual-interrupt delivery).
    GuestInterruptStatus = 0x0810, Bits16, Guest, Unsupported;
    /// PML index.
    PmlIndex = 0x0812, Bits16, Guest, Unsupported;
    /// Guest UINV (user-interrupt notification vector).
    GuestUinv = 0x0814, Bits16, Guest, Unsupported;

    // ---- 16-bit host-state fields (B.1.3) ----
    /// Host ES selector.
    HostEsSelector = 0x0c00, Bits16, Host, Owned;
    /// Host CS selector.
    HostCsSelector = 0x0c02, Bits16, Host, Owned;
    /// Host SS selector.
    HostSsSelector = 0x0c04, Bits16, Host, Owned;
    /// Host DS selector.
    HostDsSelector = 0x0c06, Bits16, Host, Owned;
    /// Host FS selector.
    HostFsSelector = 0x0c08, Bits16, Host, Owned;
    /// Host GS selector.
    HostGsSelector = 0x0c0a, Bits16, Host, Owned;
    /// Host TR selector.
    HostTrSelector = 0x0c0c, Bits16, Host, Owned;

    // ---- 64-bit control fields (B.2.1) ----
    /// Address of I/O bitmap A.
    IoBitmapAAddress = 0x2000, Bits64, Control, Address;
    /// Address of I/O bitmap B.
    IoBitmapBAddress = 0x2002, Bits64, Control, Address;
    /// Address of MSR bitmaps (L0 builds VMCS02's own, merged with L1's).
    MsrBitmapAddress = 0x2004, Bits64, Control, Owned;
    /// VM-exit MSR-store address.
    VmExitMsrStoreAddress = 0x2006, Bits64, Control, Address;
    /// VM-exit MSR-load address.
    VmExitMsrLoadAddress = 0x2008, Bits64, Control, Address;
    /// VM-entry MSR-load address.
    VmEntryMsrLoadAddress = 0x200a, Bits64, Control, Address;
    /// Executive-VMCS pointer (dual-monitor treatment of SMM).
    ExecutiveVmcsPointer = 0x200c, Bits64, Control, Unsupported;
    /// PML address.
    PmlAddress = 0x200e, Bits64, Control, Unsupported;
    /// TSC offset.
    TscOffset = 0x2010, Bits64, Control, Merged;
    /// Virtual-APIC address.
    VirtualApicAddress = 0x2012, Bits64, Control, Unsupported;
    /// APIC-access address.
    ApicAccessAddress = 0x2014, Bits64, Control, Unsupported;
    /// Posted-interrupt descriptor address.
    PostedInterruptDescriptorAddress = 0x2016, Bits64, Control, Unsupported;
    /// VM-function controls.
    VmFunctionControls = 0x2018, Bits64, Control, Unsupported;
    /// EPT pointer (EPTP).
    EptPointer = 0x201a, Bits64, Control, Address;
    /// EOI-exit bitmap 0 (vectors 0-63).
    EoiExitBitmap0 = 0x201c, Bits64, Control, Unsupported;
    /// EOI-exit bitmap 1 (vectors 64-127).
    EoiExitBitmap1 = 0x201e, Bits64, Control, Unsupported;
    /// EOI-exit bitmap 2 (vectors 128-191).
    EoiExitBitmap2 = 0x2020, Bits64, Control, Unsupported;
    /// EOI-exit bitmap 3 (vectors 192-255).
    EoiExitBitmap3 = 0x2022, Bits64, Control, Unsupported;
    /// EPTP-list address.
    EptpListAddress = 0x2024, Bits64, Control, Unsupported;
    /// VMREAD-bitmap address.
    VmreadBitmapAddress = 0x2026, Bits64, Control, Unsupported;
    /// VMWRITE-bitmap address.
    VmwriteBitmapAddress = 0x2028, Bits64, Control, Unsupported;
    /// Virtualization-exception information address.
    VirtualizationExceptionInfoAddress = 0x202a, Bits64, Control, Unsupported;
    /// XSS-exiting bitmap.
    XssExitingBitmap = 0x202c, Bits64, Control, Merged;
    /// ENCLS-exiting bitmap.
    EnclsExitingBitmap = 0x202e, Bits64, Control, Unsupported;
    /// Sub-page-permission-table pointer.
    SubPagePermissionTablePointer = 0x2030, Bits64, Control, Unsupported;
    /// TSC multiplier.
    TscMultiplier = 0x2032, Bits64, Control, Unsupported;
    /// Tertiary processor-based VM-execution controls.
    TertiaryProcBasedVmExecControls = 0x2034, Bits64, Control, Unsupported;
    /// ENCLV-exiting bitmap.
    EnclvExitingBitmap = 0x2036, Bits64, Control, Unsupported;
    /// Low PASID directory address.
    LowPasidDirectoryAddress = 0x2038, Bits64, Control, Unsupported;
    /// High PASID directory address.
    HighPasidDirectoryAddress = 0x203a, Bits64, Control, Unsupported;
    /// Shared EPT pointer.
    SharedEptPointer = 0x203c, Bits64, Control, Unsupported;
    /// PCONFIG-exiting bitmap.
    PconfigExitingBitmap = 0x203e, Bits64, Control, Unsupported;
    /// Hypervisor-managed linear-address translation pointer (HLATP).
    HlatPointer = 0x2040, Bits64, Control, Unsupported;
    /// PID-pointer table address.
    PidPointerTableAddress = 0x2042, Bits64, Control, Unsupported;
    /// Secondary VM-exit controls.
    SecondaryVmExitControls = 0x2044, Bits64, Control, Unsupported;
    /// IA32_SPEC_CTRL mask.
    SpecCtrlMask = 0x204a, Bits64, Control, Unsupported;
    /// IA32_SPEC_CTRL shadow.
    SpecCtrlShadow = 0x204c, Bits64, Control, Unsupported;

    // ---- 64-bit read-only data field (B.2.2) ----
    /// Guest-physical address (EPT violations and misconfigurations).
    GuestPhysicalAddress = 0x2400, Bits64, ExitInfo, ExitInfo;

    // ---- 64-bit guest-state fields (B.2.3) ----
    /// VMCS link pointer (all ones unless VMCS shadowing is used).
    VmcsLinkPointer = 0x2800, Bits64, Guest, Address;
    /// Guest IA32_DEBUGCTL.
    GuestIa32Debugctl = 0x2802, Bits64, Guest, Copy;
    /// Guest IA32_PAT.
    GuestIa32Pat = 0x2804, Bits64, Guest, Copy;
    /// Guest IA32_EFER.
    GuestIa32Efer = 0x2806, Bits64, Guest, Copy;
    /// Guest IA32_PERF_GLOBAL_CTRL.
    GuestIa32PerfGlobalCtrl = 0x2808, Bits64, Guest, Unsupported;
    /// Guest PDPTE0.
    GuestPdpte0 = 0x280a, Bits64, Guest, Copy;
    /// Guest PDPTE1.
    GuestPdpte1 = 0x280c, Bits64, Guest, Copy;
    /// Guest PDPTE2.
    GuestPdpte2 = 0x280e, Bits64, Guest, Copy;
    /// Guest PDPTE3.
    GuestPdpte3 = 0x2810, Bits64, Guest, Copy;
    /// Guest IA32_BNDCFGS.
    GuestIa32Bndcfgs = 0x2812, Bits64, Guest, Unsupported;
    /// Guest IA32_RTIT_CTL.
    GuestIa32RtitCtl = 0x2814, Bits64, Guest, Unsupported;
    /// Guest IA32_LBR_CTL.
    GuestIa32LbrCtl = 0x2816, Bits64, Guest, Unsupported;
    /// Guest IA32_PKRS.
    GuestIa32Pkrs = 0x2818, Bits64, Guest, Unsupported;

    // ---- 64-bit host-state fields (B.2.4) ----
    /// Host IA32_PAT.
    HostIa32Pat = 0x2c00, Bits64, Host, Owned;
    /// Host IA32_EFER.
    HostIa32Efer = 0x2c02, Bits64, Host, Owned;
    /// Host IA32_PERF_GLOBAL_CTRL.
    HostIa32PerfGlobalCtrl = 0x2c04, Bits64, Host, Unsupported;
    /// Host IA32_PKRS.
    HostIa32Pkrs = 0x2c06, Bits64, Host, Unsupported;

    // ---- 32-bit control fields (B.3.1) ----
    /// Pin-based VM-execution controls.
    PinBasedVmExecControls = 0x4000, Bits32, Control, Merged;
    /// Primary processor-based VM-execution controls.
    PrimaryProcBasedVmExecControls = 0x4002, Bits32, Control, Merged;
    /// Exception bitmap.
    ExceptionBitmap = 0x4004, Bits32, Control, Merged;
    /// Page-fault error-code mask.
    PageFaultErrorCodeMask = 0x4006, Bits32, Control, Merged;
    /// Page-fault error-code match.
    PageFaultErrorCodeMatch = 0x4008, Bits32, Control, Merged;
    /// CR3-target count.
    Cr3TargetCount = 0x400a, Bits32, Control, Copy;
    /// Primary VM-exit controls (L0 emulates L1's on a reflected exit).
    VmExitControls = 0x400c, Bits32, Control, Owned;
    /// VM-exit MSR-store count (L0 emulates the MSR areas).
    VmExitMsrStoreCount = 0x400e, Bits32, Control, Owned;
    /// VM-exit MSR-load count (L0 emulates the MSR areas).
    VmExitMsrLoadCount = 0x4010, Bits32, Control, Owned;
    /// VM-entry controls.
    VmEntryControls = 0x4012, Bits32, Control, Merged;
    /// VM-entry MSR-load count (L0 emulates the MSR areas).
    VmEntryMsrLoadCount = 0x4014, Bits32, Control, Owned;
    /// VM-entry interruption-information field.
    VmEntryInterruptionInfo = 0x4016, Bits32, Control, Copy;
    /// VM-entry exception error code.
    VmEntryExceptionErrorCode = 0x4018, Bits32, Control, Copy;
    /// VM-entry instruction length.
    VmEntryInstructionLength = 0x401a, Bits32, Control, Copy;
    /// TPR threshold.
    TprThreshold = 0x401c, Bits32, Control, Unsupported;
    /// Secondary processor-based VM-execution controls.
    SecondaryProcBasedVmExecControls = 0x401e, Bits32, Control, Merged;
    /// PLE_Gap (PAUSE-loop exiting).
    PleGap = 0x4020, Bits32, Control, Unsupported;
    /// PLE_Window (PAUSE-loop exiting).
    PleWindow = 0x4022, Bits32, Control, Unsupported;
    /// Instruction-timeout control.
    InstructionTimeoutControl = 0x4024, Bits32, Control, Unsupported;

    // ---- 32-bit read-only data fields (B.3.2) ----
    /// VM-instruction error.
    VmInstructionError = 0x4400, Bits32, ExitInfo, ExitInfo;
    /// Exit reason.
    VmExitReason = 0x4402, Bits32, ExitInfo, ExitInfo;
    /// VM-exit interruption information.
    VmExitInterruptionInfo = 0x4404, Bits32, ExitInfo, ExitInfo;
    /// VM-exit interruption error code.
    VmExitInterruptionErrorCode = 0x4406, Bits32, ExitInfo, ExitInfo;
    /// IDT-vectoring information field.
    IdtVectoringInfo = 0x4408, Bits32, ExitInfo, ExitInfo;
    /// IDT-vectoring error code.
    IdtVectoringErrorCode = 0x440a, Bits32, ExitInfo, ExitInfo;
    /// VM-exit instruction length.
    VmExitInstructionLength = 0x440c, Bits32, ExitInfo, ExitInfo;
    /// VM-exit instruction information.
    VmExitInstructionInfo = 0x440e, Bits32, ExitInfo, ExitInfo;

    // ---- 32-bit guest-state fields (B.3.3) ----
    /// Guest ES limit.
    GuestEsLimit = 0x4800, Bits32, Guest, Copy;
    /// Guest CS limit.
    GuestCsLimit = 0x4802, Bits32, Guest, Copy;
    /// Guest SS limit.
    GuestSsLimit = 0x4804, Bits32, Guest, Copy;
    /// Guest DS limit.
    GuestDsLimit = 0x4806, Bits32, Guest, Copy;
    /// Guest FS limit.
    GuestFsLimit = 0x4808, Bits32, Guest, Copy;
    /// Guest GS limit.
    GuestGsLimit = 0x480a, Bits32, Guest, Copy;
    /// Guest LDTR limit.
    GuestLdtrLimit = 0x480c, Bits32, Guest, Copy;
    /// Guest TR limit.
    GuestTrLimit = 0x480e, Bits32, Guest, Copy;
    /// Guest GDTR limit.
    GuestGdtrLimit = 0x4810, Bits32, Guest, Copy;
    /// Guest IDTR limit.
    GuestIdtrLimit = 0x4812, Bits32, Guest, Copy;
    /// Guest ES access rights.
    GuestEsAccessRights = 0x4814, Bits32, Guest, Copy;
    /// Guest CS access rights.
    GuestCsAccessRights = 0x4816, Bits32, Guest, Copy;
    /// Guest SS access rights.
    GuestSsAccessRights = 0x4818, Bits32, Guest, Copy;
    /// Guest DS access rights.
    GuestDsAccessRights = 0x481a, Bits32, Guest, Copy;
    /// Guest FS access rights.
    GuestFsAccessRights = 0x481c, Bits32, Guest, Copy;
    /// Guest GS access rights.
    GuestGsAccessRights = 0x481e, Bits32, Guest, Copy;
    /// Guest LDTR access rights.
    GuestLdtrAccessRights = 0x4820, Bits32, Guest, Copy;
    /// Guest TR access rights.
    GuestTrAccessRights = 0x4822, Bits32, Guest, Copy;
    /// Guest interruptibility state.
    GuestInterruptibilityState = 0x4824, Bits32, Guest, Copy;
    /// Guest activity state.
    GuestActivityState = 0x4826, Bits32, Guest, Copy;
    /// Guest SMBASE.
    GuestSmbase = 0x4828, Bits32, Guest, Copy;
    /// Guest IA32_SYSENTER_CS.
    GuestIa32SysenterCs = 0x482a, Bits32, Guest, Copy;
    /// VMX-preemption timer value.
    VmxPreemptionTimerValue = 0x482e, Bits32, Guest, Copy;

    // ---- 32-bit host-state field (B.3.4) ----
    /// Host IA32_SYSENTER_CS.
    HostIa32SysenterCs = 0x4c00, Bits32, Host, Owned;

    // ---- Natural-width control fields (B.4.1) ----
    /// CR0 guest/host mask.
    Cr0GuestHostMask = 0x6000, Natural, Control, Merged;
    /// CR4 guest/host mask.
    Cr4GuestHostMask = 0x6002, Natural, Control, Merged;
    /// CR0 read shadow.
    Cr0ReadShadow = 0x6004, Natural, Control, Merged;
    /// CR4 read shadow.
    Cr4ReadShadow = 0x6006, Natural, Control, Merged;
    /// CR3-target value 0.
    Cr3TargetValue0 = 0x6008, Natural, Control, Copy;
    /// CR3-target value 1.
    Cr3TargetValue1 = 0x600a, Natural, Control, Copy;
    /// CR3-target value 2.
    Cr3TargetValue2 = 0x600c, Natural, Control, Copy;
    /// CR3-target value 3.
    Cr3TargetValue3 = 0x600e, Natural, Control, Copy;

    // ---- Natural-width read-only data fields (B.4.2) ----
    /// Exit qualification.
    ExitQualification = 0x6400, Natural, ExitInfo, ExitInfo;
    /// I/O RCX.
    IoRcx = 0x6402, Natural, ExitInfo, ExitInfo;
    /// I/O RSI.
    IoRsi = 0x6404, Natural, ExitInfo, ExitInfo;
    /// I/O RDI.
    IoRdi = 0x6406, Natural, ExitInfo, ExitInfo;
    /// I/O RIP.
    IoRip = 0x6408, Natural, ExitInfo, ExitInfo;
    /// Guest-linear address.
    GuestLinearAddress = 0x640a, Natural, ExitInfo, ExitInfo;

    // ---- Natural-width guest-state fields (B.4.3) ----
    /// Guest CR0.
    GuestCr0 = 0x6800, Natural, Guest, Copy;
    /// Guest CR3.
    GuestCr3 = 0x6802, Natural, Guest, Copy;
    /// Guest CR4.
    GuestCr4 = 0x6804, Natural, Guest, Copy;
    /// Guest ES base.
    GuestEsBase = 0x6806, Natural, Guest, Copy;
    /// Guest CS base.
    GuestCsBase = 0x6808, Natural, Guest, Copy;
    /// Guest SS base.
    GuestSsBase = 0x680a, Natural, Guest, Copy;
    /// Guest DS base.
    GuestDsBase = 0x680c, Natural, Guest, Copy;
    /// Guest FS base.
    GuestFsBase = 0x680e, Natural, Guest, Copy;
    /// Guest GS base.
    GuestGsBase = 0x6810, Natural, Guest, Copy;
    /// Guest LDTR base.
    GuestLdtrBase = 0x6812, Natural, Guest, Copy;
    /// Guest TR base.
    GuestTrBase = 0x6814, Natural, Guest, Copy;
    /// Guest GDTR base.
    GuestGdtrBase = 0x6816, Natural, Guest, Copy;
    /// Guest IDTR base.
    GuestIdtrBase = 0x6818, Natural, Guest, Copy;
    /// Guest DR7.
    GuestDr7 = 0x681a, Natural, Guest, Copy;
    /// Guest RSP.
    GuestRsp = 0x681c, Natural, Guest, Copy;
    /// Guest RIP.
    GuestRip = 0x681e, Natural, Guest, Copy;
    /// Guest RFLAGS.
    GuestRflags = 0x6820, Natural, Guest, Copy;
    /// Guest pending debug exceptions.
    GuestPendingDebugExceptions = 0x6822, Natural, Guest, Copy;
    /// Guest IA32_SYSENTER_ESP.
    GuestIa32SysenterEsp = 0x6824, Natural, Guest, Copy;
    /// Guest IA32_SYSENTER_EIP.
    GuestIa32SysenterEip = 0x6826, Natural, Guest, Copy;
    /// Guest IA32_S_CET.
    GuestIa32SCet = 0x6828, Natural, Guest, Unsupported;
    /// Guest SSP.
    GuestSsp = 0x682a, Natural, Guest, Unsupported;
    /// Guest IA32_INTERRUPT_SSP_TABLE_ADDR.
    GuestIa32InterruptSspTableAddr = 0x682c, Natural, Guest, Unsupported;

    // ---- Natural-width host-state fields (B.4.4) ----
    /// Host CR0.
    HostCr0 = 0x6c00, Natural, Host, Owned;
    /// Host CR3.
    HostCr3 = 0x6c02, Natural, Host, Owned;
    /// Host CR4.
    HostCr4 = 0x6c04, Natural, Host, Owned;
    /// Host FS base.
    HostFsBase = 0x6c06, Natural, Host, Owned;
    /// Host GS base.
    HostGsBase = 0x6c08, Natural, Host, Owned;
    /// Host TR base.
    HostTrBase = 0x6c0a, Natural, Host, Owned;
    /// Host GDTR base.
    HostGdtrBase = 0x6c0c, Natural, Host, Owned;
    /// Host IDTR base.
    HostIdtrBase = 0x6c0e, Natural, Host, Owned;
    /// Host IA32_SYSENTER_ESP.
    HostIa32SysenterEsp = 0x6c10, Natural, Host, Owned;
    /// Host IA32_SYSENTER_EIP.
    HostIa32SysenterEip = 0x6c12, Natural, Host, Owned;
    /// Host RSP.
    HostRsp = 0x6c14, Natural, Host, Owned;
    /// Host RIP.
    HostRip = 0x6c16, Natural, Host, Owned;
    /// Host IA32_S_CET.
    HostIa32SCet = 0x6c18, Natural, Host, Unsupported;
    /// Host SSP.
    HostSsp = 0x6c1a, Natural, Host, Unsupported;
    /// Host IA32_INTERRUPT_SSP_TABLE_ADDR.
    HostIa32InterruptSspTableAddr = 0x6c1c, Natural, Host, Unsupported;
}

impl VmcsField {
    /// The field and part named by a VMREAD/VMWRITE encoding, recognizing
    /// the high-half encodings (full + 1) of 64-bit fields.
    pub const fn from_encoding(encoding: u32) -> Option<(Self, FieldPart)> {
        if encoding & ENCODING_ACCESS_HIGH == 0 {
            match Self::from_full_encoding(encoding) {
                Some(f) => Some((f, FieldPart::Full)),
                None => None,
            }
        } else {
            match Self::from_full_encoding(encoding & !ENCODING_ACCESS_HIGH) {
                Some(f) if matches!(f.width(), FieldWidth::Bits64) => Some((f, FieldPart::High)),
                _ => None,
            }
        }
    }

    /// Encoding of the high half of a 64-bit field (`None` for other widths).
    pub const fn high_encoding(self) -> Option<u32> {
        match self.width() {
            FieldWidth::Bits64 => Some(self.encoding() | ENCODING_ACCESS_HIGH),
            _ => None,
        }
    }

    /// Index part of the encoding (bits 9:1).
    pub const fn encoding_index(self) -> u32 {
        (self.encoding() >> ENCODING_INDEX_SHIFT) & ENCODING_INDEX_MASK
    }

    /// Whether the field is a read-only VM-exit information field. VMWRITE
    /// to one fails unless IA32_VMX_MISC bit 29 allows it (SDM Vol. 3C,
    /// 25.11.2 and Appendix A.6).
    pub const fn is_read_only(self) -> bool {
        matches!(self.group(), FieldGroup::ExitInfo)
    }

    /// Whether a hardware VMCS with this field set to an arbitrary value
    /// could hand the guest L0's memory or L0 itself (SDM 25.5, 25.6): the
    /// host state the processor loads on every VM exit, every physical
    /// address it dereferences (bitmaps, MSR areas, EPT, other VMCSs,
    /// APIC pages) and the MSR-area counts that make it use them. Writing
    /// these into the current VMCS takes an `unsafe` call with a safety
    /// argument (`CurrentVmcs::write_sensitive`).
    ///
    /// One table lookup: L0's every VMWRITE asks (a chain of comparisons
    /// here cost about 7,000 Bochs cycles per nested round trip).
    pub const fn is_sensitive(self) -> bool {
        SENSITIVE[self.index()]
    }

    /// [`VmcsField::is_sensitive`]'s rule, from which its table is made.
    const fn sensitive_rule(self) -> bool {
        use VmcsField as F;
        matches!(self.group(), FieldGroup::Host)
            || matches!(
                self,
                F::IoBitmapAAddress
                    | F::IoBitmapBAddress
                    | F::MsrBitmapAddress
                    | F::VmExitMsrStoreAddress
                    | F::VmExitMsrLoadAddress
                    | F::VmEntryMsrLoadAddress
                    | F::VmExitMsrStoreCount
                    | F::VmExitMsrLoadCount
                    | F::VmEntryMsrLoadCount
                    | F::ExecutiveVmcsPointer
                    | F::PmlAddress
                    | F::VirtualApicAddress
                    | F::ApicAccessAddress
                    | F::PostedInterruptDescriptorAddress
                    | F::EptPointer
                    | F::EptpListAddress
                    | F::VmreadBitmapAddress
                    | F::VmwriteBitmapAddress
                    | F::VirtualizationExceptionInfoAddress
                    | F::SubPagePermissionTablePointer
                    | F::LowPasidDirectoryAddress
                    | F::HighPasidDirectoryAddress
                    | F::SharedEptPointer
                    | F::HlatPointer
                    | F::PidPointerTableAddress
                    | F::VmcsLinkPointer
            )
    }

    /// The guest-state fields of the segment registers, as (selector,
    /// base, limit, access rights), in the order ES, CS, SS, DS, FS, GS
    /// (the SDM's segment-register numbers 0-5), then LDTR and TR.
    pub const GUEST_SEGMENTS: [[VmcsField; 4]; 8] = {
        use VmcsField as F;
        [
            [
                F::GuestEsSelector,
                F::GuestEsBase,
                F::GuestEsLimit,
                F::GuestEsAccessRights,
            ],
            [
                F::GuestCsSelector,
                F::GuestCsBase,
                F::GuestCsLimit,
                F::GuestCsAccessRights,
            ],
            [
                F::GuestSsSelector,
                F::GuestSsBase,
                F::GuestSsLimit,
                F::GuestSsAccessRights,
            ],
            [
                F::GuestDsSelector,
                F::GuestDsBase,
                F::GuestDsLimit,
                F::GuestDsAccessRights,
            ],
            [
                F::GuestFsSelector,
                F::GuestFsBase,
                F::GuestFsLimit,
                F::GuestFsAccessRights,
            ],
            [
                F::GuestGsSelector,
                F::GuestGsBase,
                F::GuestGsLimit,
                F::GuestGsAccessRights,
            ],
            [
                F::GuestLdtrSelector,
                F::GuestLdtrBase,
                F::GuestLdtrLimit,
                F::GuestLdtrAccessRights,
            ],
            [
                F::GuestTrSelector,
                F::GuestTrBase,
                F::GuestTrLimit,
                F::GuestTrAccessRights,
            ],
        ]
    };

    /// Bits the field can hold (its width's mask).
    #[inline]
    pub const fn mask(self) -> u64 {
        self.width().mask()
    }
}

impl fmt::Display for VmcsField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#06x})", self.name(), self.encoding())
    }
}

/// Bits of a full encoding that [`dense_key`] keeps of the index (bits
/// 9:1): every field of the table has an index below 64 (checked when
/// [`DENSE_INDEX`] is built).
const DENSE_KEY_INDEX_BITS: u32 = 6;

/// A full encoding packed into [`DENSE_INDEX`]'s range: width (bits
/// 14:13), type (11:10) and the low bits of the index (9:1).
const fn dense_key(encoding: u32) -> usize {
    let width = (encoding >> ENCODING_WIDTH_SHIFT) & ENCODING_2BIT_MASK;
    let group = (encoding >> ENCODING_TYPE_SHIFT) & ENCODING_2BIT_MASK;
    let index = (encoding >> ENCODING_INDEX_SHIFT) & ((1 << DENSE_KEY_INDEX_BITS) - 1);
    (((width << 2 | group) << DENSE_KEY_INDEX_BITS) | index) as usize
}

/// [`VmcsField::index`] by [`dense_key`] of the field's encoding (1 KiB).
/// Building it fails to compile if two fields of the table share a key.
const DENSE_INDEX: [u8; 16 << DENSE_KEY_INDEX_BITS] = {
    const UNUSED: u8 = u8::MAX;
    assert!(VmcsField::ALL.len() < UNUSED as usize);
    let mut t = [UNUSED; 16 << DENSE_KEY_INDEX_BITS];
    let mut i = 0;
    while i < VmcsField::ALL.len() {
        let f = VmcsField::ALL[i];
        let e = f as u32;
        assert!((e >> ENCODING_INDEX_SHIFT) & ENCODING_INDEX_MASK < 1 << DENSE_KEY_INDEX_BITS);
        assert!(f.table_index() == i);
        let k = dense_key(e);
        assert!(t[k] == UNUSED);
        t[k] = i as u8;
        i += 1;
    }
    t
};

/// [`VmcsField::is_sensitive`] by dense index.
const SENSITIVE: [bool; VmcsField::ALL.len()] = {
    let mut t = [false; VmcsField::ALL.len()];
    let mut i = 0;
    while i < t.len() {
        t[VmcsField::ALL[i].index()] = VmcsField::ALL[i].sensitive_rule();
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_encoding_obeys_appendix_b_rules() {
        for &f in VmcsField::ALL {
            let e = f.encoding();
            assert_eq!(e & ENCODING_ACCESS_HIGH, 0, "{f}: full access type");
            assert_eq!(e & ENCODING_RESERVED_MASK, 0, "{f}: reserved bits");
            assert_eq!(FieldGroup::from_encoding(e), f.group(), "{f}: type bits");
            assert_eq!(FieldWidth::from_encoding(e), f.width(), "{f}: width bits");
            assert_eq!(
                e,
                (f.encoding_index() << ENCODING_INDEX_SHIFT)
                    | ((f.group() as u32) << ENCODING_TYPE_SHIFT)
                    | ((f.width() as u32) << ENCODING_WIDTH_SHIFT),
                "{f}: recomposed"
            );
        }
    }

    #[test]
    fn no_duplicate_encodings_or_names() {
        let encodings: HashSet<u32> = VmcsField::ALL.iter().map(|f| f.encoding()).collect();
        let names: HashSet<&str> = VmcsField::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(encodings.len(), VmcsField::COUNT);
        assert_eq!(names.len(), VmcsField::COUNT);
    }

    #[test]
    fn index_is_dense_and_matches_all() {
        for (i, &f) in VmcsField::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
    }

    #[test]
    fn from_encoding_round_trips_full_and_high() {
        for &f in VmcsField::ALL {
            assert_eq!(
                VmcsField::from_encoding(f.encoding()),
                Some((f, FieldPart::Full))
            );
            assert_eq!(VmcsField::from_full_encoding(f.encoding()), Some(f));
            match f.high_encoding() {
                Some(h) => {
                    assert_eq!(f.width(), FieldWidth::Bits64);
                    assert_eq!(VmcsField::from_encoding(h), Some((f, FieldPart::High)));
                    assert_eq!(VmcsField::from_full_encoding(h), None);
                }
                None => assert_eq!(VmcsField::from_encoding(f.encoding() | 1), None),
            }
        }
        assert_eq!(VmcsField::from_encoding(0xffff_ffff), None);
        assert_eq!(VmcsField::from_encoding(0x6c16 | (1 << 12)), None);
    }

    #[test]
    fn well_known_encodings() {
        use VmcsField::*;
        assert_eq!(GuestRip.encoding(), 0x681e);
        assert_eq!(VmExitReason.encoding(), 0x4402);
        assert_eq!(EptPointer.encoding(), 0x201a);
        assert_eq!(VmcsLinkPointer.encoding(), 0x2800);
        assert_eq!(HostRip.encoding(), 0x6c16);
        assert_eq!(PinBasedVmExecControls.encoding(), 0x4000);
        assert_eq!(PrimaryProcBasedVmExecControls.encoding(), 0x4002);
        assert_eq!(SecondaryProcBasedVmExecControls.encoding(), 0x401e);
        assert_eq!(VmInstructionError.encoding(), 0x4400);
        assert_eq!(ExitQualification.encoding(), 0x6400);
        assert_eq!(GuestPhysicalAddress.encoding(), 0x2400);
        assert_eq!(VmxPreemptionTimerValue.encoding(), 0x482e);
        assert_eq!(MsrBitmapAddress.encoding(), 0x2004);
        assert_eq!(VmEntryMsrLoadAddress.encoding(), 0x200a);
        assert_eq!(HostIa32SysenterCs.encoding(), 0x4c00);
        assert_eq!(VirtualProcessorId.encoding(), 0x0000);
    }

    #[test]
    fn read_only_is_exactly_the_exit_information_group() {
        for &f in VmcsField::ALL {
            assert_eq!(f.is_read_only(), f.group() == FieldGroup::ExitInfo, "{f}");
            // Exit information is written back on exit, and nothing else is.
            assert_eq!(f.nested() == Nested::ExitInfo, f.is_read_only(), "{f}");
        }
        assert!(VmcsField::VmExitReason.is_read_only());
        assert!(!VmcsField::GuestRip.is_read_only());
    }

    #[test]
    fn sensitive_fields() {
        // Every address field of the nested policy table is sensitive, and
        // so is all host state; guest state and plain controls are not.
        for &f in VmcsField::ALL {
            if f.nested() == Nested::Address || f.group() == FieldGroup::Host {
                assert!(f.is_sensitive(), "{f}");
            }
        }
        assert!(VmcsField::VmEntryMsrLoadCount.is_sensitive());
        assert!(!VmcsField::GuestRip.is_sensitive());
        assert!(!VmcsField::PrimaryProcBasedVmExecControls.is_sensitive());
        assert!(!VmcsField::VmEntryInterruptionInfo.is_sensitive());
    }

    #[test]
    fn host_state_is_owned_by_l0() {
        for &f in VmcsField::ALL
            .iter()
            .filter(|f| f.group() == FieldGroup::Host)
        {
            assert!(
                matches!(f.nested(), Nested::Owned | Nested::Unsupported),
                "{f}"
            );
        }
    }

    #[test]
    fn field_part_extract_and_merge() {
        let v = 0x1122_3344_5566_7788;
        assert_eq!(FieldPart::Full.extract(v), v);
        assert_eq!(FieldPart::High.extract(v), 0x1122_3344);
        assert_eq!(FieldPart::High.merge(v, 0xaabb_ccdd), 0xaabb_ccdd_5566_7788);
        assert_eq!(FieldPart::Full.merge(v, 5), 5);
    }

    #[test]
    fn sensitive_table_follows_the_rule() {
        for &f in VmcsField::ALL {
            assert_eq!(f.is_sensitive(), f.sensitive_rule(), "{f}");
        }
        assert!(VmcsField::HostRip.is_sensitive() && VmcsField::EptPointer.is_sensitive());
        assert!(!VmcsField::GuestRip.is_sensitive());
    }

    #[test]
    fn names_and_descriptions() {
        assert_eq!(VmcsField::GuestCr0.name(), "GuestCr0");
        assert_eq!(VmcsField::GuestCr0.description(), "Guest CR0.");
        assert_eq!(VmcsField::HostRip.to_string(), "HostRip (0x6c16)");
    }
}
