//! Control-register accesses (exit reason 28): writes to CR0 and CR4 that
//! touch bits L0 owns (the guest/host masks of `vmcs01`). The guest sees
//! its own values through the read shadows; the processor runs with them
//! plus the bits VMX fixes (SDM 25.6.6, 26.3.1.1).
//!
//! CR0.PG decides IA-32e mode: when the guest turns paging on with
//! EFER.LME = 1, L0 sets EFER.LMA and the "IA-32e mode guest" entry control;
//! when it turns paging off, L0 clears them (SDM 26.3.1.1 and 26.3.2.1 check
//! that LMA, LME and the control agree). When PAE paging (not IA-32e) becomes
//! active through an emulated write, L0 loads the PDPTEs into the VMCS, as
//! VM entry takes them from there with EPT (SDM 26.3.2.4).

use shared::mem::PhysMemory;
use shared::vmx::controls::EntryControls;
use shared::vmx::exit::{CrAccessQual, CrAccessType};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, inject_gp, skip_instruction};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu};
use crate::vmcs01::{self, cr0, cr4, efer};

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    let q = CrAccessQual(exit.qualification);
    let src = || operand(v, vcpu.gpr(v, usize::from(q.gpr())));
    let ok = match (q.access_type(), q.cr()) {
        (CrAccessType::MovToCr, 0) => set_cr0(v, src()),
        (CrAccessType::MovToCr, 4) => set_cr4(vcpu, v, src()),
        (CrAccessType::Clts, _) => {
            let shadow = vmcs01::guest_cr0(v);
            set_cr0(v, shadow & !(1 << 3))
        }
        (CrAccessType::Lmsw, _) => {
            // LMSW loads CR0[3:0] but cannot clear PE (SDM Vol. 2A, LMSW).
            let shadow = vmcs01::guest_cr0(v);
            let src = u64::from(q.lmsw_source()) & 0xf;
            set_cr0(v, (shadow & !0xe) | src | (shadow & cr0::PE))
        }
        _ => return None,
    };
    if !ok {
        return inject_gp(v);
    }
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

/// CS.L in the access rights (64-bit code segment).
const CS_L: u64 = 1 << 13;

/// Whether the guest runs in 64-bit mode (IA-32e mode and CS.L = 1).
pub fn in_64bit_mode(v: &impl VmcsAccess) -> bool {
    v.read(F::GuestIa32Efer) & efer::LMA != 0 && v.read(F::GuestCsAccessRights) & CS_L != 0
}

/// The source operand of MOV to CRn: outside 64-bit mode the operand
/// size is 32 bits, whatever the upper half of the register holds (SDM
/// Vol. 2B, MOV-Move to/from Control Registers).
fn operand(v: &impl VmcsAccess, reg: u64) -> u64 {
    if in_64bit_mode(v) {
        reg
    } else {
        reg & 0xffff_ffff
    }
}

/// MOV to CR0 (SDM Vol. 2B, MOV-Move to/from Control Registers: the #GP
/// conditions); returns false for #GP.
fn set_cr0(v: &mut impl VmcsAccess, val: u64) -> bool {
    let caps = crate::caps();
    let old = vmcs01::guest_cr0(v);
    let cr4 = vmcs01::guest_cr4(v);
    let mut efer = v.read(F::GuestIa32Efer);
    if val >> 32 != 0
        || (val & cr0::PG != 0 && val & cr0::PE == 0)
        || (val & cr0::NW != 0 && val & cr0::CD == 0)
    {
        return false;
    }
    let paging_on = val & cr0::PG != 0 && old & cr0::PG == 0;
    let paging_off = val & cr0::PG == 0 && old & cr0::PG != 0;
    // Only compatibility mode may leave IA-32e mode, and never with
    // CR4.PCIDE = 1 (MOV to CR0, #GP conditions; SDM 10.8.5.4).
    if paging_off && (in_64bit_mode(v) || cr4 & cr4::PCIDE != 0) {
        return false;
    }
    if paging_on && efer & efer::LME != 0 {
        if cr4 & cr4::PAE == 0 {
            return false;
        }
        efer |= efer::LMA;
    } else if paging_off && efer & efer::LMA != 0 {
        efer &= !efer::LMA;
    }
    let Ok(pdptes) = pae_pdptes(v, val, cr4, efer) else {
        return false;
    };
    let ia32e = u64::from(EntryControls::IA32E_MODE_GUEST.bits());
    if efer & efer::LMA != 0 {
        v.set_bits(F::VmEntryControls, ia32e);
    } else {
        v.clear_bits(F::VmEntryControls, ia32e);
    }
    v.write(F::GuestIa32Efer, efer);
    v.write(F::Cr0ReadShadow, val);
    v.write(F::GuestCr0, vmcs01::cr0_real(caps, val));
    write_pdptes(v, pdptes);
    true
}

/// MOV to CR4 of a value that changes bits L0 owns: bits the processor
/// does not support are #GP, and so are SMXE (SMX is hidden), VMXE when VMX
/// is hidden, and clearing VMXE in VMX operation (SDM 24.8); the processor
/// keeps VMXE set (L0's own VMX operation), the read shadow shows the
/// guest's value.
fn set_cr4(vcpu: &Vcpu, v: &mut impl VmcsAccess, val: u64) -> bool {
    let caps = crate::caps();
    let efer = v.read(F::GuestIa32Efer);
    let mut unsupported = !caps.cr4_fixed1 | cr4::SMXE;
    if !crate::nested::enabled() {
        unsupported |= cr4::VMXE;
    }
    if vcpu.nested.vmxon.is_some() && val & cr4::VMXE == 0 {
        return false;
    }
    if val & unsupported != 0 || (efer & efer::LMA != 0 && val & cr4::PAE == 0) {
        return false;
    }
    if val & cr4::PCIDE != 0 && efer & efer::LMA == 0 {
        return false;
    }
    let Ok(pdptes) = pae_pdptes(v, vmcs01::guest_cr0(v), val, efer) else {
        return false;
    };
    v.write(F::Cr4ReadShadow, val);
    v.write(F::GuestCr4, vmcs01::cr4_real(caps, val));
    write_pdptes(v, pdptes);
    true
}

/// With PAE paging active for the new CR0/CR4/EFER (CR0.PG, CR4.PAE, not
/// IA-32e), the four PDPTEs at guest CR3, which VM entry takes from the
/// VMCS with EPT (SDM 27.3.2.4); `Err` (#GP) if one that is present has a
/// reserved bit set, as the processor checks when it loads them (SDM
/// 4.4.1). `Ok(None)` without PAE paging.
fn pae_pdptes(v: &impl VmcsAccess, cr0: u64, cr4: u64, efer: u64) -> Result<Option<[u64; 4]>, ()> {
    let pae = cr0 & cr0::PG != 0 && cr4 & cr4::PAE != 0 && efer & efer::LMA == 0;
    if !pae {
        return Ok(None);
    }
    let base = v.read(F::GuestCr3) & 0xffff_ffe0;
    let mut e = [0u64; 4];
    for (i, slot) in e.iter_mut().enumerate() {
        *slot = GuestMemory.read_u64(base + 8 * i as u64).unwrap_or(0);
    }
    if !shared::guest_paging::pdptes_valid(&e, crate::ept01::max_phys_addr()) {
        return Err(());
    }
    Ok(Some(e))
}

fn write_pdptes(v: &mut impl VmcsAccess, pdptes: Option<[u64; 4]>) {
    let Some(e) = pdptes else { return };
    let fields = [
        F::GuestPdpte0,
        F::GuestPdpte1,
        F::GuestPdpte2,
        F::GuestPdpte3,
    ];
    for (f, e) in fields.into_iter().zip(e) {
        v.write(f, e);
    }
}

/// After L0 loaded guest CR3 itself (a task switch): with PAE paging,
/// loads the PDPTEs into the VMCS; false if one is invalid (#GP).
pub(super) fn reload_pdptes(v: &mut impl VmcsAccess) -> bool {
    let (cr0, cr4) = (vmcs01::guest_cr0(v), vmcs01::guest_cr4(v));
    match pae_pdptes(v, cr0, cr4, v.read(F::GuestIa32Efer)) {
        Ok(p) => {
            write_pdptes(v, p);
            true
        }
        Err(()) => false,
    }
}
