//! L1's VMX instructions, emulated with the checks of their pages in SDM
//! Vol. 3C chapter 31 ("VMX Instruction Reference"), in the order the
//! pseudocode makes them: #UD conditions, then #GP for CPL > 0, then the
//! VMfailInvalid / VMfailValid outcomes with the error numbers of 31.4.
//!
//! Pointers L1 passes (VMXON region, VMCS12s) are checked for alignment
//! and the physical-address width; one inside L0's region is treated as
//! one beyond the width (L1 sees no memory there).

use shared::mem::PhysMemory;
use shared::vmx::insn::{GuardedVmcs, VmInstructionError as E};
use shared::vmx::insn_info::Operand;
use shared::vmx::{ExitReason, Nested as Policy, VmcsAccess, VmcsField, VmcsField as F};

use super::operand::{self, Fault};
use crate::exits::{Exit, guest_cpl, inject_gp, inject_ud, skip_instruction};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu};
use crate::vmcs01::{self, cr0, cr4};

/// RFLAGS bits VMX instructions report through (SDM 31.2).
mod flags {
    pub const CF: u64 = 1 << 0;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const OF: u64 = 1 << 11;
    pub const ALL: u64 = CF | PF | AF | ZF | SF | OF;
    /// RFLAGS.VM.
    pub const VM: u64 = 1 << 17;
}

/// IA32_VMX_MISC bit 29: VMWRITE may write any supported field, VM-exit
/// information included.
const MISC_VMWRITE_ANY: u64 = 1 << 29;
/// Bit 31 of a VMCS revision identifier: shadow VMCS.
const SHADOW_VMCS: u32 = 1 << 31;

/// How a VMX instruction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeed,
    FailInvalid,
    FailValid(E),
}

/// VMfail(e) of the SDM: VMfailValid with a current VMCS, else
/// VMfailInvalid.
pub fn vmfail(vcpu: &Vcpu, e: E) -> Outcome {
    if vcpu.nested.current.is_some() {
        Outcome::FailValid(e)
    } else {
        Outcome::FailInvalid
    }
}

/// Reports `o` in L1's RFLAGS (and VMCS12's VM-instruction error) and
/// moves L1 past the instruction.
pub fn finish(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit, o: Outcome) -> Option<Resume> {
    let mut rflags = v.read(F::GuestRflags) & !flags::ALL;
    match o {
        Outcome::Succeed => {}
        Outcome::FailInvalid => rflags |= flags::CF,
        Outcome::FailValid(e) => {
            rflags |= flags::ZF;
            // The error number is a shadowed field: after a VMREAD or
            // VMWRITE (which pull nothing) the shadow is brought back to
            // VMCS12 first, and refilled before L1 runs.
            super::shadow::pull(vcpu);
            if let Some(vmcs12) = vcpu.nested.current_vmcs12_mut() {
                vmcs12.write(F::VmInstructionError, u64::from(e.number()));
            }
        }
    }
    v.write(F::GuestRflags, rflags);
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

/// The #UD and #GP conditions every VMX instruction shares (SDM 31.3,
/// each instruction's "Operation"): VMX disabled (CR4.VMXE = 0, or hidden
/// with `vmx=off`), real or virtual-8086 mode, compatibility mode, outside
/// VMX operation (all but VMXON); then CPL > 0.
fn preconditions(
    vcpu: &Vcpu,
    v: &mut impl VmcsAccess,
    needs_vmx_operation: bool,
) -> Result<(), Option<Resume>> {
    let ud = !super::enabled()
        || vmcs01::guest_cr4(v) & cr4::VMXE == 0
        || vmcs01::guest_cr0(v) & cr0::PE == 0
        || v.read(F::GuestRflags) & flags::VM != 0
        || (v.read(F::GuestIa32Efer) & vmcs01::efer::LMA != 0 && !operand::long_mode(v))
        || (needs_vmx_operation && vcpu.nested.vmxon.is_none());
    if ud {
        return Err(inject_ud(v));
    }
    if guest_cpl(v) != 0 {
        return Err(inject_gp(v));
    }
    Ok(())
}

/// A VMXON or VMCS pointer is usable: 4-KiB aligned, within the
/// physical-address width, and not in L0's region.
fn pointer_ok(addr: u64) -> bool {
    let width = crate::ept01::max_phys_addr().min(52);
    addr & 0xfff == 0 && addr >> width == 0 && !crate::memory::overlaps_region(addr, 4096)
}

/// The VMCS revision identifier L1 must use (IA32_VMX_BASIC bits 30:0).
fn revision_id() -> u32 {
    crate::caps().basic.revision_id
}

/// Whether L1 may execute the instruction at all: INVEPT and INVVPID exist
/// only with the EPT/VPID support its capability MSRs show (SDM 31.3
/// INVEPT/INVVPID: #UD otherwise, before any other check); VMFUNC in VMX
/// root is #UD.
fn offered(reason: ExitReason) -> bool {
    use shared::vmx::controls::SecondaryProcBased as S;
    let Some(caps) = super::l1_msrs().map(|m| m.caps()) else {
        return false;
    };
    match reason {
        ExitReason::Invept => caps.proc2.can_set(S::ENABLE_EPT.bits()) && caps.ept_vpid.invept,
        ExitReason::Invvpid => caps.proc2.can_set(S::ENABLE_VPID.bits()) && caps.ept_vpid.invvpid,
        ExitReason::Vmfunc => false,
        _ => true,
    }
}

/// Dispatches one VMX instruction of L1.
pub fn handle(vcpu: &mut Vcpu, v: &mut GuardedVmcs<'_>, exit: &Exit) -> Option<Resume> {
    let reason = exit.reason.basic();
    if !super::enabled() || !offered(reason) {
        return inject_ud(v);
    }
    let needs_vmx_operation = reason != ExitReason::Vmxon;
    // INVEPT and INVVPID do not exist for an L1 whose capability MSRs
    // offer no EPT / VPID: #UD whatever the CPL (as on such a processor).
    let l1 = super::l1_msrs().map(|m| m.caps());
    let missing = match reason {
        ExitReason::Invept => !l1.is_some_and(|c| c.has_ept() && c.ept_vpid.invept),
        ExitReason::Invvpid => !l1.is_some_and(|c| c.has_vpid() && c.ept_vpid.invvpid),
        _ => false,
    };
    if missing {
        return inject_ud(v);
    }
    if let Err(r) = preconditions(vcpu, v, needs_vmx_operation) {
        return r;
    }
    // Every VMX instruction but VMREAD/VMWRITE reads or replaces VMCS12:
    // the fields L1 changed in the shadow come back first.
    if !matches!(reason, ExitReason::Vmread | ExitReason::Vmwrite) {
        super::shadow::pull(vcpu);
    }
    let outcome = match reason {
        ExitReason::Vmxon => vmxon(vcpu, v, exit),
        ExitReason::Vmxoff => {
            vcpu.nested.flush_vmcs12s();
            vcpu.nested.ept02.clear();
            vcpu.nested.vmxon = None;
            Ok(Outcome::Succeed)
        }
        ExitReason::Vmclear => vmclear(vcpu, v, exit),
        ExitReason::Vmptrld => vmptrld(vcpu, v, exit),
        ExitReason::Vmptrst => vmptrst(vcpu, v, exit),
        ExitReason::Vmread => vmread(vcpu, v, exit),
        ExitReason::Vmwrite => vmwrite(vcpu, v, exit),
        ExitReason::Vmlaunch => return super::entry::enter(vcpu, v, exit, true),
        ExitReason::Vmresume => return super::entry::enter(vcpu, v, exit, false),
        ExitReason::Invvpid => invvpid(vcpu, v, exit),
        ExitReason::Invept => super::ept02::invept(vcpu, v, exit),
        // EPT, VPID and VM functions are not offered to L1 (yet): the
        // instructions are #UD as on a processor without them.
        _ => return inject_ud(v),
    };
    match outcome {
        Ok(o) => finish(vcpu, v, exit, o),
        Err(fault) => {
            fault.inject(v);
            Some(Resume::Guest)
        }
    }
}

/// VMXON (SDM 31.3 "VMXON—Enter VMX Operation").
fn vmxon(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    if vcpu.nested.vmxon.is_some() {
        return Ok(vmfail(vcpu, E::VmxonInVmxRoot));
    }
    // CR0 and CR4 must have the values VMX operation requires (L1's view:
    // the fixed bits of the capability MSRs it reads).
    let caps = crate::caps();
    let (c0, c4) = (vmcs01::guest_cr0(v), vmcs01::guest_cr4(v));
    let fixed_ok = |val: u64, f0: u64, f1: u64| val & f0 == f0 && val & !f1 == 0;
    if !fixed_ok(c0, caps.cr0_fixed0, caps.cr0_fixed1)
        || !fixed_ok(c4, caps.cr4_fixed0, caps.cr4_fixed1)
    {
        return Err(Fault::Gp);
    }
    let addr = operand::read_m64(vcpu, v, exit)?;
    if !pointer_ok(addr) {
        return Ok(Outcome::FailInvalid);
    }
    let rev = GuestMemory.read_u32(addr).unwrap_or(u32::MAX);
    if rev != revision_id() {
        return Ok(Outcome::FailInvalid);
    }
    vcpu.nested.vmxon = Some(addr);
    vcpu.nested.current = None;
    Ok(Outcome::Succeed)
}

/// VMCLEAR (SDM 31.3 "VMCLEAR—Clear Virtual-Machine Control Structure").
fn vmclear(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    let addr = operand::read_m64(vcpu, v, exit)?;
    if !pointer_ok(addr) {
        return Ok(vmfail(vcpu, E::VmclearInvalidAddress));
    }
    if Some(addr) == vcpu.nested.vmxon {
        return Ok(vmfail(vcpu, E::VmclearVmxonPointer));
    }
    vcpu.nested.clear_vmcs12(addr);
    Ok(Outcome::Succeed)
}

/// VMPTRLD (SDM 31.3 "VMPTRLD—Load Pointer to Virtual-Machine Control
/// Structure").
fn vmptrld(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    let addr = operand::read_m64(vcpu, v, exit)?;
    if !pointer_ok(addr) {
        return Ok(vmfail(vcpu, E::VmptrldInvalidAddress));
    }
    if Some(addr) == vcpu.nested.vmxon {
        return Ok(vmfail(vcpu, E::VmptrldVmxonPointer));
    }
    // VMCS shadowing is not offered, so bit 31 must be 0 too.
    let rev = GuestMemory.read_u32(addr).unwrap_or(u32::MAX);
    if rev & !SHADOW_VMCS != revision_id() || rev & SHADOW_VMCS != 0 {
        return Ok(vmfail(vcpu, E::VmptrldIncorrectRevisionId));
    }
    vcpu.nested.load_vmcs12(addr);
    Ok(Outcome::Succeed)
}

/// VMPTRST (SDM 31.3 "VMPTRST—Store Pointer to Virtual-Machine Control
/// Structure"): all ones without a current VMCS.
fn vmptrst(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    let ptr = vcpu.nested.current_vmcs12_addr().unwrap_or(u64::MAX);
    match operand::operand(v, exit)? {
        Operand::Memory(m) => operand::write_mem(vcpu, v, &m, &ptr.to_le_bytes())?,
        Operand::Register(_) => return Err(Fault::Ud),
    }
    Ok(Outcome::Succeed)
}

/// The field a VMREAD/VMWRITE names (register `reg2`), if L1's VMCS has
/// it: fields of the table that L0 offers; encodings above 32 bits (64-bit
/// mode) name none.
fn field_operand(vcpu: &Vcpu, v: &impl VmcsAccess) -> Option<(VmcsField, shared::vmx::FieldPart)> {
    let mut enc = vcpu.gpr(v, usize::from(operand::reg2(v)));
    if !operand::long_mode(v) {
        enc &= 0xffff_ffff;
    }
    let enc = u32::try_from(enc).ok()?;
    VmcsField::from_encoding(enc).filter(|(f, _)| f.nested() != Policy::Unsupported)
}

/// Operand size of VMREAD/VMWRITE: 64 bits in 64-bit mode, else 32.
fn operand_bytes(v: &impl VmcsAccess) -> usize {
    if operand::long_mode(v) { 8 } else { 4 }
}

/// VMREAD (SDM 31.3 "VMREAD—Read Field from Virtual-Machine Control
/// Structure").
fn vmread(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    let Some(vmcs12) = vcpu.nested.current_vmcs12() else {
        return Ok(Outcome::FailInvalid);
    };
    let Some((field, part)) = field_operand(vcpu, v) else {
        return Ok(vmfail(vcpu, E::UnsupportedVmcsComponent));
    };
    let value = part.extract(vmcs12.read(field));
    let n = operand_bytes(v);
    match operand::operand(v, exit)? {
        Operand::Register(r) => {
            let value = if n == 8 { value } else { value & 0xffff_ffff };
            vcpu.set_gpr(v, usize::from(r), value);
        }
        Operand::Memory(m) => operand::write_mem(vcpu, v, &m, &value.to_le_bytes()[..n])?,
    }
    Ok(Outcome::Succeed)
}

/// VMWRITE (SDM 31.3 "VMWRITE—Write Field to Virtual-Machine Control
/// Structure").
fn vmwrite(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    if vcpu.nested.current.is_none() {
        return Ok(Outcome::FailInvalid);
    }
    let n = operand_bytes(v);
    let value = match operand::operand(v, exit)? {
        Operand::Register(r) => vcpu.gpr(v, usize::from(r)),
        Operand::Memory(m) => {
            let mut b = [0u8; 8];
            operand::read_mem(vcpu, v, &m, &mut b[..n])?;
            u64::from_le_bytes(b)
        }
    };
    let value = if n == 8 { value } else { value & 0xffff_ffff };
    let Some((field, part)) = field_operand(vcpu, v) else {
        return Ok(vmfail(vcpu, E::UnsupportedVmcsComponent));
    };
    let misc = super::l1_msrs().and_then(|m| m.get(0x485)).unwrap_or(0);
    if field.is_read_only() && misc & MISC_VMWRITE_ANY == 0 {
        return Ok(vmfail(vcpu, E::VmwriteReadOnlyComponent));
    }
    // A field L1 reads through the shadow (exit information, with the
    // VMWRITE-any rule offered) is written in VMCS12, and the shadow is
    // filled again before L1 runs.
    if shared::vmx::shadow::is_shadowed(field, true) {
        super::shadow::pull(vcpu);
    }
    if let Some(vmcs12) = vcpu.nested.current_vmcs12_mut() {
        let old = vmcs12.read(field);
        vmcs12.write(field, part.merge(old, value));
    }
    Ok(Outcome::Succeed)
}

/// VMCALL of L1 in VMX root operation (SDM 31.3 "VMCALL—Call to VM
/// Monitor"): #UD in virtual-8086 or compatibility mode, #GP(0) at CPL > 0;
/// then, as no dual-monitor treatment is offered, VMfail(1) ("VMCALL
/// executed in VMX root operation"), unless it is one of L0's hypercalls
/// (`None`: the caller handles it). Outside VMX operation: `None`.
pub fn vmcall_in_vmx_root(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    exit: &Exit,
) -> Option<Option<Resume>> {
    vcpu.nested.vmxon?;
    let lm_compat = v.read(F::GuestIa32Efer) & vmcs01::efer::LMA != 0 && !operand::long_mode(v);
    if v.read(F::GuestRflags) & flags::VM != 0 || lm_compat {
        return Some(inject_ud(v));
    }
    if guest_cpl(v) != 0 {
        return Some(inject_gp(v));
    }
    let rax = vcpu.gpr(v, crate::vcpu::reg::RAX);
    if crate::exits::is_enabled_hypercall(rax) {
        return None;
    }
    Some(finish(vcpu, v, exit, vmfail(vcpu, E::VmcallInVmxRoot)))
}

/// INVVPID (SDM 31.3 "INVVPID—Invalidate Translations Based on VPID"). All
/// of L1's VPIDs share this CPU's VPID02, so every valid INVVPID flushes it
/// (invalidating more than asked is allowed: the processor may drop TLB
/// entries at any time, SDM 29.4.1).
fn invvpid(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Result<Outcome, Fault> {
    use shared::vmx::nested::invvpid;
    let mut t = vcpu.gpr(v, usize::from(operand::reg2(v)));
    if !operand::long_mode(v) {
        t &= 0xffff_ffff;
    }
    let caps = super::l1_msrs().map(|m| m.caps()).unwrap_or_default();
    if !invvpid::type_supported(&caps.ept_vpid, t) {
        return Ok(vmfail(vcpu, E::InvalidInveptInvvpidOperand));
    }
    let mut descriptor = [0u8; 16];
    match operand::operand(v, exit)? {
        Operand::Memory(m) => operand::read_mem(vcpu, v, &m, &mut descriptor)?,
        Operand::Register(_) => return Err(Fault::Ud),
    }
    if invvpid::scope(t, descriptor).is_none() {
        return Ok(vmfail(vcpu, E::InvalidInveptInvvpidOperand));
    }
    super::entry::flush_vpid(super::entry::vpid02(vcpu.index));
    vcpu.nested.vpid12 = None;
    Ok(Outcome::Succeed)
}
