//! Operands of L1's VMX instructions: registers, and memory reached through
//! L1's segmentation and paging as the processor would (SDM Vol. 3C,
//! 28.2.5 for the instruction information; Vol. 3A, 4 for paging). A memory
//! operand L1 cannot access is a fault L0 injects into L1: #GP(0) (#SS(0)
//! for SS) for a non-canonical address, #PF for an unmapped page.

use shared::guest_paging::{self, PagingMode};
use shared::mem::PhysMemory;
use shared::vmx::insn_info::{MemOperand, Operand, Segment, VmxInsnInfo, is_canonical};
use shared::vmx::{VmcsAccess, VmcsField as F};

use crate::exits::{Exit, inject_exception, vector};
use crate::memory::GuestMemory;
use crate::vcpu::Vcpu;
use crate::vmcs01::{self, efer};

/// The #SS and #PF vectors.
const SS: u8 = 12;
const PF: u8 = 14;
/// Page-fault error code bits (SDM 4.7): write access.
const PFEC_WRITE: u32 = 1 << 1;

/// Why an operand could not be accessed: the fault L1 gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// #UD: an encoding the SDM leaves undefined.
    Ud,
    /// #GP(0).
    Gp,
    /// #SS(0).
    Ss,
    /// #PF at `linear`.
    Pf { linear: u64, write: bool },
}

impl Fault {
    /// Injects the fault into L1 (the VMX instruction does not complete).
    pub fn inject(self, v: &mut impl VmcsAccess) {
        match self {
            Fault::Ud => inject_exception(v, vector::UD, None),
            Fault::Gp => inject_exception(v, vector::GP, Some(0)),
            Fault::Ss => inject_exception(v, SS, Some(0)),
            Fault::Pf { linear, write } => {
                // SAFETY: CR2 is the guest's while it runs (VM entries do
                // not load it); L0 itself takes no page faults.
                unsafe { shared::x86::write_cr2(linear) };
                inject_exception(v, PF, Some(if write { PFEC_WRITE } else { 0 }));
            }
        }
    }
}

/// L1 runs in 64-bit mode (EFER.LMA and CS.L).
pub fn long_mode(v: &impl VmcsAccess) -> bool {
    const CS_L: u64 = 1 << 13;
    v.read(F::GuestIa32Efer) & efer::LMA != 0 && v.read(F::GuestCsAccessRights) & CS_L != 0
}

/// The decoded operand of the exiting instruction.
pub fn operand(v: &impl VmcsAccess, exit: &Exit) -> Result<Operand, Fault> {
    VmxInsnInfo(v.read32(F::VmExitInstructionInfo))
        .operand(exit.qualification)
        .ok_or(Fault::Ud)
}

/// Register number `reg2` of the instruction information (VMREAD/VMWRITE
/// field encoding, INVEPT/INVVPID type).
pub fn reg2(v: &impl VmcsAccess) -> u8 {
    VmxInsnInfo(v.read32(F::VmExitInstructionInfo)).reg2()
}

fn segment_base(v: &impl VmcsAccess, s: Segment) -> u64 {
    v.read(match s {
        Segment::Es => F::GuestEsBase,
        Segment::Cs => F::GuestCsBase,
        Segment::Ss => F::GuestSsBase,
        Segment::Ds => F::GuestDsBase,
        Segment::Fs => F::GuestFsBase,
        Segment::Gs => F::GuestGsBase,
    })
}

/// The guest-physical address of each byte of `[linear, linear + len)`
/// lies in at most two pages: their translations.
fn translate(v: &impl VmcsAccess, linear: u64, write: bool) -> Result<u64, Fault> {
    let mode = PagingMode::from_regs(
        vmcs01::guest_cr0(v),
        vmcs01::guest_cr4(v),
        v.read(F::GuestIa32Efer),
    );
    guest_paging::translate(&GuestMemory, mode, v.read(F::GuestCr3), linear)
        .ok_or(Fault::Pf { linear, write })
}

/// The linear address of memory operand `m`, checked for canonicality.
fn linear(vcpu: &Vcpu, v: &impl VmcsAccess, m: &MemOperand) -> Result<u64, Fault> {
    let lm = long_mode(v);
    let la = m.linear_address(
        |r| vcpu.gpr(v, usize::from(r)),
        segment_base(v, m.segment),
        lm,
    );
    if lm && !is_canonical(la) {
        return Err(if m.segment == Segment::Ss {
            Fault::Ss
        } else {
            Fault::Gp
        });
    }
    Ok(la)
}

/// Reads `buf.len()` bytes of memory operand `m`.
pub fn read_mem(
    vcpu: &Vcpu,
    v: &impl VmcsAccess,
    m: &MemOperand,
    buf: &mut [u8],
) -> Result<(), Fault> {
    let la = linear(vcpu, v, m)?;
    for (i, b) in buf.iter_mut().enumerate() {
        let a = la.wrapping_add(i as u64);
        let pa = translate(v, a, false)?;
        // Memory L1 cannot see (L0's region) reads as all ones.
        *b = GuestMemory.read_u8(pa).unwrap_or(0xff);
    }
    Ok(())
}

/// Writes `bytes` to memory operand `m` (all pages are checked first, so a
/// fault writes nothing).
pub fn write_mem(
    vcpu: &Vcpu,
    v: &impl VmcsAccess,
    m: &MemOperand,
    bytes: &[u8],
) -> Result<(), Fault> {
    let la = linear(vcpu, v, m)?;
    let last = la.wrapping_add(bytes.len().saturating_sub(1) as u64);
    translate(v, la, true)?;
    translate(v, last, true)?;
    for (i, b) in bytes.iter().enumerate() {
        let a = la.wrapping_add(i as u64);
        let pa = translate(v, a, true)?;
        // Writes to memory L1 cannot see are dropped.
        let _ = GuestMemory.write(pa, core::slice::from_ref(b));
    }
    Ok(())
}

/// The m64 operand of VMXON, VMCLEAR and VMPTRLD.
pub fn read_m64(vcpu: &Vcpu, v: &impl VmcsAccess, exit: &Exit) -> Result<u64, Fault> {
    match operand(v, exit)? {
        Operand::Memory(m) => {
            let mut b = [0u8; 8];
            read_mem(vcpu, v, &m, &mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        // These instructions have no register form (the processor would
        // have raised #UD before the exit).
        Operand::Register(_) => Err(Fault::Ud),
    }
}
