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
    let ok = match (q.access_type(), q.cr()) {
        (CrAccessType::MovToCr, 0) => set_cr0(v, vcpu.gpr(v, usize::from(q.gpr()))),
        (CrAccessType::MovToCr, 4) => set_cr4(vcpu, v, vcpu.gpr(v, usize::from(q.gpr()))),
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
    if paging_on && efer & efer::LME != 0 {
        if cr4 & cr4::PAE == 0 {
            return false;
        }
        efer |= efer::LMA;
        v.set_bits(
            F::VmEntryControls,
            u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        );
    } else if paging_off && efer & efer::LMA != 0 {
        efer &= !efer::LMA;
        v.clear_bits(
            F::VmEntryControls,
            u64::from(EntryControls::IA32E_MODE_GUEST.bits()),
        );
    }
    v.write(F::GuestIa32Efer, efer);
    v.write(F::Cr0ReadShadow, val);
    v.write(F::GuestCr0, vmcs01::cr0_real(caps, val));
    load_pdptes_if_pae(v);
    true
}

/// MOV to CR4 of a value that changes bits L0 owns: bits the processor
/// does not support are #GP, and so is VMXE when VMX is hidden, or clearing
/// it in VMX operation (SDM 24.8); the processor keeps VMXE set (L0's own
/// VMX operation), the read shadow shows the guest's value.
fn set_cr4(vcpu: &Vcpu, v: &mut impl VmcsAccess, val: u64) -> bool {
    let caps = crate::caps();
    let efer = v.read(F::GuestIa32Efer);
    let mut unsupported = !caps.cr4_fixed1;
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
    v.write(F::Cr4ReadShadow, val);
    v.write(F::GuestCr4, vmcs01::cr4_real(caps, val));
    load_pdptes_if_pae(v);
    true
}

/// With PAE paging active (CR0.PG, CR4.PAE, not IA-32e), copies the four
/// PDPTEs at guest CR3 into the VMCS.
fn load_pdptes_if_pae(v: &mut impl VmcsAccess) {
    let pae = vmcs01::guest_cr0(v) & cr0::PG != 0
        && vmcs01::guest_cr4(v) & cr4::PAE != 0
        && v.read(F::GuestIa32Efer) & efer::LMA == 0;
    if !pae {
        return;
    }
    let base = v.read(F::GuestCr3) & 0xffff_ffe0;
    let fields = [
        F::GuestPdpte0,
        F::GuestPdpte1,
        F::GuestPdpte2,
        F::GuestPdpte3,
    ];
    for (i, f) in fields.into_iter().enumerate() {
        let e = GuestMemory.read_u64(base + 8 * i as u64).unwrap_or(0);
        v.write(f, e);
    }
}
