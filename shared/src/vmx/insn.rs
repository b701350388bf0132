//! Thin `unsafe` wrappers around the VMX instructions (Intel SDM Vol. 3C,
//! chapter 31 "VMX Instruction Reference"), and the VMX lifecycle types.
//!
//! Each wrapper decodes the VMX outcome from RFLAGS (SDM 31.2 "Conventions"):
//! VMsucceed clears CF and ZF; VMfailInvalid sets CF (no current VMCS);
//! VMfailValid sets ZF and stores an error number in the current VMCS's
//! VM-instruction error field, read here with VMREAD.
//!
//! VMLAUNCH and VMRESUME live with the exit path, which owns the register
//! save/restore around them.

use super::access::VmcsAccess;
use super::fields::VmcsField;
use super::nested::entry_checks::{GuestScope, guest_scope};
use core::arch::asm;
use core::fmt;

numbered_enum! {
    /// VM-instruction error numbers (SDM 31.4 "VM Instruction Error Numbers").
    pub enum VmInstructionError: u32 {
        /// VMCALL executed in VMX root operation.
        VmcallInVmxRoot = 1,
        /// VMCLEAR with invalid physical address.
        VmclearInvalidAddress = 2,
        /// VMCLEAR with VMXON pointer.
        VmclearVmxonPointer = 3,
        /// VMLAUNCH with non-clear VMCS.
        VmlaunchNonClearVmcs = 4,
        /// VMRESUME with non-launched VMCS.
        VmresumeNonLaunchedVmcs = 5,
        /// VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and VMRESUME).
        VmresumeAfterVmxoff = 6,
        /// VM entry with invalid control field(s).
        EntryInvalidControlFields = 7,
        /// VM entry with invalid host-state field(s).
        EntryInvalidHostStateFields = 8,
        /// VMPTRLD with invalid physical address.
        VmptrldInvalidAddress = 9,
        /// VMPTRLD with VMXON pointer.
        VmptrldVmxonPointer = 10,
        /// VMPTRLD with incorrect VMCS revision identifier.
        VmptrldIncorrectRevisionId = 11,
        /// VMREAD/VMWRITE from/to unsupported VMCS component.
        UnsupportedVmcsComponent = 12,
        /// VMWRITE to read-only VMCS component.
        VmwriteReadOnlyComponent = 13,
        /// VMXON executed in VMX root operation.
        VmxonInVmxRoot = 15,
        /// VM entry with invalid executive-VMCS pointer.
        EntryInvalidExecutiveVmcsPointer = 16,
        /// VM entry with non-launched executive VMCS.
        EntryNonLaunchedExecutiveVmcs = 17,
        /// VM entry with executive-VMCS pointer not VMXON pointer.
        EntryExecutiveVmcsNotVmxonPointer = 18,
        /// VMCALL with non-clear VMCS.
        VmcallNonClearVmcs = 19,
        /// VMCALL with invalid VM-exit control fields.
        VmcallInvalidExitControls = 20,
        /// VMCALL with incorrect MSEG revision identifier.
        VmcallIncorrectMsegRevisionId = 22,
        /// VMXOFF under dual-monitor treatment of SMIs and SMM.
        VmxoffUnderDualMonitor = 23,
        /// VMCALL with invalid SMM-monitor features.
        VmcallInvalidSmmMonitorFeatures = 24,
        /// VM entry with invalid VM-execution control fields in executive VMCS.
        EntryInvalidExecutiveControls = 25,
        /// VM entry with events blocked by MOV SS.
        EntryEventsBlockedByMovSs = 26,
        /// Invalid operand to INVEPT/INVVPID.
        InvalidInveptInvvpidOperand = 28,
    }
}

/// Why a VMX instruction failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VmFail {
    /// VMfailInvalid (CF = 1): there is no current VMCS to hold an error.
    Invalid,
    /// VMfailValid (ZF = 1), with the VM-instruction error field's value.
    Valid(VmInstructionError),
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("VMfailInvalid"),
            Self::Valid(e) => write!(f, "VMfailValid: {e}"),
        }
    }
}

/// Turns the CF and ZF captured after a VMX instruction into its outcome.
///
/// # Safety
/// Only to be called in VMX operation, right after the instruction that
/// produced `cf` and `zf` (a VMfailValid is decoded with VMREAD).
#[inline]
unsafe fn vm_result(cf: u8, zf: u8) -> Result<(), VmFail> {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        // SAFETY: VMfailValid means there is a current VMCS, whose
        // VM-instruction error field VMREAD may read; the caller guarantees
        // VMX operation.
        let error = unsafe { vmread_raw(VmcsField::VmInstructionError.encoding()) };
        Err(VmFail::Valid(VmInstructionError::from_u32(
            error.map_or(0, |v| v as u32),
        )))
    } else {
        Ok(())
    }
}

/// VMREAD without decoding the VM-instruction error (used by [`vm_result`]
/// itself, which must not recurse).
///
/// # Safety
/// The processor must be in VMX operation.
unsafe fn vmread_raw(encoding: u32) -> Result<u64, ()> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: VMREAD reads the current VMCS into a register and changes
    // only RFLAGS; the caller guarantees VMX operation, so it cannot #UD.
    unsafe {
        asm!(
            "vmread {value}, {enc}",
            "setc {cf}",
            "setz {zf}",
            value = out(reg) value,
            enc = in(reg) u64::from(encoding),
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    if cf != 0 || zf != 0 {
        Err(())
    } else {
        Ok(value)
    }
}

/// Enters VMX operation with the VMXON region at physical address `region`.
///
/// # Safety
/// CR4.VMXE must be set, CR0/CR4 must obey the VMX fixed bits, IA32_FEATURE_CONTROL
/// must allow VMXON, and `region` must be the 4-KiB aligned physical address of a
/// [`VmxonRegion`] stamped with the revision identifier, which stays allocated and
/// untouched until VMXOFF.
pub unsafe fn vmxon(region: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller upholds VMXON's preconditions; the operand is a
    // readable u64 on our stack.
    unsafe {
        asm!(
            "vmxon [{ptr}]",
            "setc {cf}",
            "setz {zf}",
            ptr = in(reg) &region,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    // SAFETY: if VMXON succeeded we are in VMX operation; if it failed with
    // VMfailValid we already were (SDM: VMXON in VMX root operation).
    unsafe { vm_result(cf, zf) }
}

/// Leaves VMX operation.
///
/// # Safety
/// The processor must be in VMX root operation, and nothing may use VMX
/// afterwards (every VMCS should have been cleared with [`vmclear`]).
pub unsafe fn vmxoff() -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation.
    unsafe {
        asm!(
            "vmxoff",
            "setc {cf}",
            "setz {zf}",
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    if cf == 0 && zf == 0 {
        return Ok(());
    }
    // SAFETY: VMXOFF failed, so we are still in VMX operation.
    unsafe { vm_result(cf, zf) }
}

/// Clears the VMCS at physical address `vmcs`: its data is written back to
/// its region and its launch state becomes "clear".
///
/// # Safety
/// The processor must be in VMX root operation and `vmcs` must be the
/// physical address of a VMCS region owned by the caller.
pub unsafe fn vmclear(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and that the region
    // belongs to it; the operand is a u64 on our stack.
    unsafe {
        asm!(
            "vmclear [{ptr}]",
            "setc {cf}",
            "setz {zf}",
            ptr = in(reg) &vmcs,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    // SAFETY: we are in VMX operation (caller's precondition).
    unsafe { vm_result(cf, zf) }
}

/// Makes the VMCS at physical address `vmcs` current and active.
///
/// # Safety
/// The processor must be in VMX root operation and `vmcs` must be the
/// physical address of a [`VmcsRegion`] owned by the caller, stamped with the
/// revision identifier, that stays allocated while it is current or active.
pub unsafe fn vmptrld(vmcs: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and the region's
    // validity; the operand is a u64 on our stack.
    unsafe {
        asm!(
            "vmptrld [{ptr}]",
            "setc {cf}",
            "setz {zf}",
            ptr = in(reg) &vmcs,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    // SAFETY: we are in VMX operation (caller's precondition).
    unsafe { vm_result(cf, zf) }
}

/// The physical address of the current VMCS (all ones when there is none).
///
/// # Safety
/// The processor must be in VMX root operation.
pub unsafe fn vmptrst() -> Result<u64, VmFail> {
    let mut current: u64 = 0;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation; VMPTRST writes 8
    // bytes to `current`, a u64 we own.
    unsafe {
        asm!(
            "vmptrst [{ptr}]",
            "setc {cf}",
            "setz {zf}",
            ptr = in(reg) &mut current,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
        vm_result(cf, zf)?;
    }
    Ok(current)
}

/// Reads field `encoding` of the current VMCS.
///
/// # Safety
/// The processor must be in VMX operation.
#[inline]
pub unsafe fn vmread(encoding: u32) -> Result<u64, VmFail> {
    let value: u64;
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX operation; VMREAD writes a register.
    unsafe {
        asm!(
            "vmread {value}, {enc}",
            "setc {cf}",
            "setz {zf}",
            value = out(reg) value,
            enc = in(reg) u64::from(encoding),
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
        vm_result(cf, zf)?;
    }
    Ok(value)
}

/// Writes `value` to field `encoding` of the current VMCS.
///
/// # Safety
/// The processor must be in VMX operation, and the write must not break
/// memory safety of code relying on the VMCS (host RIP/RSP/CR3, addresses of
/// bitmaps and tables the processor will access).
#[inline]
pub unsafe fn vmwrite(encoding: u32, value: u64) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX operation and the value's meaning.
    unsafe {
        asm!(
            "vmwrite {enc}, {value}",
            "setc {cf}",
            "setz {zf}",
            enc = in(reg) u64::from(encoding),
            value = in(reg) value,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
        vm_result(cf, zf)
    }
}

/// INVEPT types (SDM 31.3 "INVEPT").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InveptType {
    /// Invalidate mappings associated with the descriptor's EPTP.
    SingleContext = 1,
    /// Invalidate mappings associated with all EPTPs.
    AllContext = 2,
}

/// INVVPID types (SDM 31.3 "INVVPID").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum InvvpidType {
    /// One linear address of one VPID.
    IndividualAddress = 0,
    /// All mappings of one VPID.
    SingleContext = 1,
    /// All mappings of all VPIDs except VPID 0.
    AllContext = 2,
    /// All mappings of one VPID except global translations.
    SingleContextRetainingGlobals = 3,
}

/// The 128-bit INVEPT descriptor: bits 63:0 EPTP, bits 127:64 reserved (0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InveptDescriptor {
    /// The EPT pointer whose mappings to invalidate (single-context).
    pub eptp: u64,
    /// Reserved, must be 0.
    pub reserved: u64,
}

/// The 128-bit INVVPID descriptor: bits 15:0 VPID, bits 63:16 reserved (0),
/// bits 127:64 linear address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InvvpidDescriptor {
    /// The VPID whose mappings to invalidate.
    pub vpid: u16,
    /// Reserved, must be 0.
    pub reserved: [u16; 3],
    /// The linear address (individual-address type).
    pub linear_address: u64,
}

impl InvvpidDescriptor {
    /// A descriptor for `vpid` and `linear_address`, reserved bits zero.
    pub const fn new(vpid: u16, linear_address: u64) -> Self {
        Self {
            vpid,
            reserved: [0; 3],
            linear_address,
        }
    }
}

/// Invalidates EPT-derived translations.
///
/// # Safety
/// The processor must be in VMX root operation with INVEPT supported (and
/// the type supported, see `EptVpidCap`).
pub unsafe fn invept(kind: InveptType, descriptor: &InveptDescriptor) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and support; the
    // descriptor is a readable 16-byte value.
    unsafe {
        asm!(
            "invept {kind}, [{desc}]",
            "setc {cf}",
            "setz {zf}",
            kind = in(reg) kind as u64,
            desc = in(reg) descriptor,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, readonly),
        );
        vm_result(cf, zf)
    }
}

/// Invalidates VPID-tagged linear and combined translations.
///
/// # Safety
/// The processor must be in VMX root operation with INVVPID supported (and
/// the type supported, see `EptVpidCap`).
pub unsafe fn invvpid(kind: InvvpidType, descriptor: &InvvpidDescriptor) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller guarantees VMX root operation and support; the
    // descriptor is a readable 16-byte value.
    unsafe {
        asm!(
            "invvpid {kind}, [{desc}]",
            "setc {cf}",
            "setz {zf}",
            kind = in(reg) kind as u64,
            desc = in(reg) descriptor,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack, readonly),
        );
        vm_result(cf, zf)
    }
}

/// Registers passed to and returned from the hypervisor by [`vmcall`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcallRegs {
    /// RAX (by convention the call number in, the status out).
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
}

/// Calls the hypervisor with VMCALL; `regs` are passed in and updated with
/// the values the hypervisor leaves in the same registers.
///
/// The hypervisor reports success as VMsucceed (CF = ZF = 0 in the guest's
/// RFLAGS); VMCALL in VMX root operation without dual-monitor SMM fails
/// with VMfailValid (error 1), or VMfailInvalid without a current VMCS.
///
/// # Safety
/// The hypervisor's VMCALL protocol must not break the caller's memory
/// safety (it may, for example, write to memory named by the arguments).
pub unsafe fn vmcall(regs: &mut VmcallRegs) -> Result<(), VmFail> {
    let (cf, zf): (u8, u8);
    // SAFETY: the caller accepts the hypervisor's protocol. RBX is reserved
    // by the compiler, so it is swapped with a scratch register around
    // VMCALL and restored.
    unsafe {
        asm!(
            "xchg {rbx}, rbx",
            "vmcall",
            "setc {cf}",
            "setz {zf}",
            "xchg {rbx}, rbx",
            rbx = inout(reg) regs.rbx,
            inout("rax") regs.rax,
            inout("rcx") regs.rcx,
            inout("rdx") regs.rdx,
            inout("rsi") regs.rsi,
            inout("rdi") regs.rdi,
            cf = out(reg_byte) cf,
            zf = out(reg_byte) zf,
            options(nostack),
        );
    }
    if cf == 0 && zf == 0 {
        return Ok(());
    }
    if cf != 0 {
        return Err(VmFail::Invalid);
    }
    // SAFETY: VMfailValid from VMCALL happens only in VMX root operation,
    // where VMREAD of the current VMCS is allowed.
    unsafe { vm_result(cf, zf) }
}

/// Proof that VMXON succeeded on this CPU: the wrappers that need VMX
/// operation are safe methods on it. Not `Send`: VMX operation is per CPU.
#[derive(Debug)]
pub struct Vmxon {
    _not_send: core::marker::PhantomData<*const ()>,
}

impl Vmxon {
    /// Executes VMXON with the region at physical address `region_pa`.
    ///
    /// # Safety
    /// As for [`vmxon`]; additionally the token must stay on this CPU and
    /// nothing else may execute VMXOFF while it exists.
    pub unsafe fn enable(region_pa: u64) -> Result<Self, VmFail> {
        // SAFETY: forwarded to the caller.
        unsafe { vmxon(region_pa)? };
        Ok(Self {
            _not_send: core::marker::PhantomData,
        })
    }

    /// Takes the token for a CPU that is known to be in VMX root operation
    /// (for example in an exit handler).
    ///
    /// # Safety
    /// The processor must be in VMX root operation for the token's lifetime.
    pub unsafe fn assume_enabled() -> Self {
        Self {
            _not_send: core::marker::PhantomData,
        }
    }

    /// Leaves VMX operation, consuming the token.
    ///
    /// # Safety
    /// Every VMCS this CPU used must have been cleared, and no one may still
    /// use VMX on this CPU.
    pub unsafe fn disable(self) -> Result<(), VmFail> {
        // SAFETY: the token proves VMX operation; the rest is the caller's.
        unsafe { vmxoff() }
    }

    /// The current VMCS, with sensitive fields writable only through
    /// `unsafe` (see [`GuardedVmcs`]).
    pub fn guarded_vmcs(&self) -> GuardedVmcs<'_> {
        GuardedVmcs {
            vmcs: self.current_vmcs(),
            written: GuestScope::None,
        }
    }

    /// The current VMCS, for VMREAD/VMWRITE.
    pub fn current_vmcs(&self) -> CurrentVmcs<'_> {
        CurrentVmcs { _vmx: self }
    }

    /// Reads a field of the current VMCS.
    pub fn vmread(&self, f: VmcsField) -> Result<u64, VmFail> {
        // SAFETY: the token proves VMX operation.
        unsafe { vmread(f.encoding()) }
    }

    /// The physical address of the current VMCS (all ones if none).
    pub fn vmptrst(&self) -> Result<u64, VmFail> {
        // SAFETY: the token proves VMX root operation.
        unsafe { vmptrst() }
    }
}

/// The current VMCS, accessed with VMREAD and VMWRITE.
///
/// Its [`VmcsAccess`] methods never panic: a failed VMREAD reads as 0 and a
/// failed VMWRITE is ignored; use [`CurrentVmcs::try_read`] and
/// [`CurrentVmcs::try_write`] to see failures.
#[derive(Debug)]
pub struct CurrentVmcs<'a> {
    _vmx: &'a Vmxon,
}

impl CurrentVmcs<'_> {
    /// VMREAD of `f`.
    #[inline]
    pub fn try_read(&self, f: VmcsField) -> Result<u64, VmFail> {
        // SAFETY: the borrowed token proves VMX operation.
        unsafe { vmread(f.encoding()) }
    }

    /// VMWRITE of `f`.
    ///
    /// # Safety
    /// As for [`vmwrite`]: the value must not let the processor break memory
    /// safety (host state, addresses of structures it accesses).
    #[inline]
    pub unsafe fn try_write(&mut self, f: VmcsField, v: u64) -> Result<(), VmFail> {
        // SAFETY: the token proves VMX operation; the caller vouches for v.
        unsafe { vmwrite(f.encoding(), v) }
    }
}

/// The current VMCS for a hypervisor whose guests are hostile (L0): its
/// safe [`VmcsAccess::write`] refuses the sensitive fields (host state,
/// physical addresses, MSR-area counts: [`VmcsField::is_sensitive`]), so
/// that no safe code, whatever guest values it forwards, can point the
/// processor at memory or code of the guest's choice. Those fields take
/// [`GuardedVmcs::write_sensitive`] with a safety argument. A refused write
/// is counted ([`refused_writes`]: a bug when not 0) and otherwise ignored.
///
/// It also records which VM-entry guest-state checks its writes can break
/// ([`GuardedVmcs::written`]), so that L0 re-checks before VM entry only
/// what its exit handler changed.
#[derive(Debug)]
pub struct GuardedVmcs<'a> {
    vmcs: CurrentVmcs<'a>,
    written: GuestScope,
}

/// Sensitive-field writes refused by [`GuardedVmcs`].
static REFUSED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many writes of sensitive fields [`GuardedVmcs`] refused.
pub fn refused_writes() -> u64 {
    REFUSED.load(core::sync::atomic::Ordering::Relaxed)
}

impl<'a> GuardedVmcs<'a> {
    /// VMREAD of `f`.
    pub fn try_read(&self, f: VmcsField) -> Result<u64, VmFail> {
        self.vmcs.try_read(f)
    }

    /// The widest [`GuestScope`] of the fields written through this
    /// accessor (sensitive ones included) since it was made.
    pub const fn written(&self) -> GuestScope {
        self.written
    }

    /// Writes a field [`VmcsAccess::write`] refuses; failures are ignored.
    ///
    /// # Safety
    /// The value must be one the processor may use as the SDM describes
    /// without breaking memory safety: host state that returns to the exit
    /// path, and addresses of structures the caller owns for as long as the
    /// VMCS can be entered.
    pub unsafe fn write_sensitive(&mut self, f: VmcsField, v: u64) {
        self.note(f);
        // SAFETY: forwarded to the caller.
        let _ = unsafe { self.vmcs.try_write(f, v) };
    }

    fn note(&mut self, f: VmcsField) {
        // Once everything is to be checked, nothing more to note (the
        // VMCS02 preparation writes a hundred fields).
        if matches!(self.written, GuestScope::All) {
            return;
        }
        let scope = guest_scope(f);
        if scope as u8 > self.written as u8 {
            self.written = scope;
        }
    }
}

impl VmcsAccess for GuardedVmcs<'_> {
    #[inline]
    fn read(&self, f: VmcsField) -> u64 {
        self.vmcs.read(f)
    }

    #[inline]
    fn write(&mut self, f: VmcsField, v: u64) {
        if f.is_sensitive() {
            REFUSED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.note(f);
        self.vmcs.write(f, v);
    }
}

impl VmcsAccess for CurrentVmcs<'_> {
    #[inline]
    fn read(&self, f: VmcsField) -> u64 {
        self.try_read(f).unwrap_or(0)
    }

    /// Writes through VMWRITE; failures are ignored.
    ///
    /// This is a safe trait method because the VMCS fields only take effect
    /// at VM entry, whose code (VMLAUNCH/VMRESUME, owned by the exit path)
    /// carries the obligation that the VMCS is valid for memory safety. A
    /// hypervisor whose guests are hostile uses [`GuardedVmcs`] instead.
    fn write(&mut self, f: VmcsField, v: u64) {
        // SAFETY: see the method's documentation: the entry code checks.
        let _ = unsafe { self.try_write(f, v) };
    }
}

/// Size of a VMXON or VMCS region (SDM A.1: at most 4 KiB).
pub const VMX_REGION_SIZE: usize = 4096;

macro_rules! vmx_region {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[repr(C, align(4096))]
        pub struct $name(pub [u8; VMX_REGION_SIZE]);

        impl $name {
            /// A zeroed region.
            pub const fn new() -> Self {
                Self([0; VMX_REGION_SIZE])
            }

            /// Zeroes the region and writes the VMCS revision identifier
            /// (IA32_VMX_BASIC bits 30:0) into its first 4 bytes; bit 31 (the
            /// shadow-VMCS indicator) is `shadow`.
            pub fn stamp(&mut self, revision_id: u32, shadow: bool) {
                const SHADOW_BIT: u32 = 1 << 31;
                self.0.fill(0);
                let id = (revision_id & !SHADOW_BIT) | if shadow { SHADOW_BIT } else { 0 };
                self.0[..4].copy_from_slice(&id.to_le_bytes());
            }

            /// The revision identifier in the first 4 bytes.
            pub fn revision_id(&self) -> u32 {
                u32::from_le_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }
    };
}

vmx_region! {
    /// The VMXON region (SDM 25.11.5): 4 KiB, 4-KiB aligned, starting with
    /// the VMCS revision identifier. Use `stamp(revision, false)`.
    VmxonRegion
}

vmx_region! {
    /// A VMCS region (SDM 25.2): 4 KiB, 4-KiB aligned, starting with the
    /// VMCS revision identifier (bit 31 set for a shadow VMCS).
    VmcsRegion
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_errors_round_trip() {
        for &e in VmInstructionError::KNOWN {
            assert_eq!(VmInstructionError::from_u32(e.number()), e);
        }
        assert_eq!(
            VmInstructionError::from_u32(7),
            VmInstructionError::EntryInvalidControlFields
        );
        assert_eq!(
            VmInstructionError::from_u32(14),
            VmInstructionError::Unknown(14)
        );
        assert_eq!(VmInstructionError::from_u32(28).number(), 28);
        assert_eq!(
            VmFail::Valid(VmInstructionError::VmwriteReadOnlyComponent).to_string(),
            "VMfailValid: VMWRITE to read-only VMCS component (13)"
        );
    }

    #[test]
    fn descriptor_layouts_are_128_bits() {
        assert_eq!(size_of::<InvvpidDescriptor>(), 16);
        assert_eq!(size_of::<InveptDescriptor>(), 16);
        let d = InvvpidDescriptor::new(0x1234, 0xdead_b000);
        // SAFETY: the descriptor is repr(C) with no padding: 16 plain bytes.
        let bytes: [u8; 16] = unsafe { core::mem::transmute(d) };
        assert_eq!(&bytes[..8], &[0x34, 0x12, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            u64::from_le_bytes(bytes[8..].try_into().unwrap()),
            0xdead_b000
        );
    }

    #[test]
    fn regions_are_stamped() {
        let mut r = Box::new(VmcsRegion::new());
        assert_eq!(core::mem::align_of::<VmcsRegion>(), 4096);
        r.0[100] = 7;
        r.stamp(0x2b, true);
        assert_eq!(r.revision_id(), 0x8000_002b);
        assert_eq!(r.0[100], 0);
        let mut x = Box::new(VmxonRegion::new());
        x.stamp(0x8000_002b, false);
        assert_eq!(x.revision_id(), 0x2b);
    }
}
