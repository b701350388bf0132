//! RDMSR (31) and WRMSR (32) of the MSRs the bitmap traps, and of MSRs
//! outside the bitmap's ranges (which always exit).
//!
//! - VMX capability MSRs: what L1 may use of VMX (`nested::l1_msrs`),
//!   read-only; #GP with `vmx=off`, as on a processor without VMX.
//! - IA32_FEATURE_CONTROL: reads as locked, with VMX outside SMX enabled
//!   (disabled with `vmx=off`); writes #GP (a locked register).
//! - IA32_EFER: kept in the VMCS ("load/save IA32_EFER"); LMA is preserved
//!   and follows CR0.PG (see `cr`), as KVM does.
//! - MTRRs: virtual per vCPU (`vmtrr`), never written to the hardware;
//!   EPT01 is re-typed after a write.
//! - The x2APIC ICR (writes): the guest's IPIs, see `x2apic_icr`.
//! - IA32_APIC_BASE: its global enable is virtual (`vapic_base`); writes
//!   are checked and performed, and the trapped xAPIC page follows the base.
//! - IA32_XSS: exists and takes the supervisor states the guest's CPUID
//!   leaf 0DH sub-leaf 1 lists (`shared::xss`: never Intel PT's); other
//!   bits #GP.
//! - Anything else that exits: #GP (no such MSR on Intel processors).

use shared::vmx::{VmcsAccess, VmcsField as F};
use shared::x86::msr;
use shared::xss;

use super::{Exit, guest_cpl, inject_gp, skip_instruction};
use crate::msr_bitmap::VMX_CAPS;
use crate::vcpu::{Resume, Vcpu, reg};
use crate::vmcs01::{cr0, efer};

const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// The value of an MSR that L0 emulates for reads (None: #GP).
pub fn emulated_rdmsr(index: u32) -> Option<u64> {
    match index {
        msr::IA32_FEATURE_CONTROL if crate::nested::enabled() => {
            Some(FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_OUTSIDE_SMX)
        }
        msr::IA32_FEATURE_CONTROL => Some(FEATURE_CONTROL_LOCKED),
        m if VMX_CAPS.contains(&m) && crate::nested::enabled() => crate::nested::l1_msrs()?.get(m),
        _ => None,
    }
}

fn msr_index(vcpu: &Vcpu) -> u32 {
    vcpu.regs.gpr[reg::RCX] as u32
}

pub fn rdmsr(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    if guest_cpl(v) != 0 {
        return inject_gp(v);
    }
    let index = msr_index(vcpu);
    let value = match index {
        msr::IA32_EFER => v.read(F::GuestIa32Efer),
        msr::IA32_APIC_BASE => crate::vapic_base::guest_view(vcpu.index),
        // SAFETY: the MSR exists (the guest's CPUID is the processor's
        // with less, see `guest_xsaves`).
        xss::IA32_XSS if super::guest_xsaves().has_xss() => unsafe {
            shared::x86::rdmsr(xss::IA32_XSS)
        },
        m => match emulated_rdmsr(m).or_else(|| crate::vmtrr::read(vcpu.index, m)) {
            Some(value) => value,
            None => return inject_gp(v),
        },
    };
    vcpu.regs.gpr[reg::RAX] = value & 0xffff_ffff;
    vcpu.regs.gpr[reg::RDX] = value >> 32;
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

pub fn wrmsr(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    if guest_cpl(v) != 0 {
        return inject_gp(v);
    }
    let index = msr_index(vcpu);
    let value = (vcpu.regs.gpr[reg::RDX] << 32) | (vcpu.regs.gpr[reg::RAX] & 0xffff_ffff);
    let ok = match index {
        msr::IA32_EFER => write_efer(v, value),
        crate::lapic::X2APIC_ICR => {
            return x2apic_icr(vcpu, v, exit, value);
        }
        msr::IA32_APIC_BASE => {
            let ok = crate::vapic_base::write(vcpu.index, value);
            crate::vapic_base::select_ept_view(vcpu);
            ok
        }
        xss::IA32_XSS => write_xss(value),
        m if VMX_CAPS.contains(&m) => false,
        m => crate::vmtrr::write(vcpu.index, m, value),
    };
    if !ok {
        return inject_gp(v);
    }
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

/// WRMSR to IA32_XSS: only the states the guest's CPUID lists, a subset
/// of the processor's, so the hardware takes the value (never a host #GP).
fn write_xss(value: u64) -> bool {
    if !super::guest_xsaves().xss_write_ok(value) {
        return false;
    }
    // SAFETY: IA32_XSS exists and `value` sets only supported supervisor
    // states (checked above); L0 itself does not use XSAVES.
    unsafe { shared::x86::wrmsr(xss::IA32_XSS, value) };
    true
}

/// WRMSR to IA32_EFER (SDM 2.2.1, and KVM's `set_efer`): reserved bits,
/// NXE without CPUID support, and changing LME while paging is on are #GP;
/// LMA is read-only.
fn write_efer(v: &mut impl VmcsAccess, value: u64) -> bool {
    let ext = shared::x86::cpuid(0x8000_0001, 0);
    let mut allowed = efer::SCE | efer::LME | efer::LMA;
    if ext.edx & (1 << 20) != 0 {
        allowed |= efer::NXE;
    }
    let old = v.read(F::GuestIa32Efer);
    if value & !allowed != 0 {
        return false;
    }
    let paging = crate::vmcs01::guest_cr0(v) & cr0::PG != 0;
    if paging && (old ^ value) & efer::LME != 0 {
        return false;
    }
    v.write(F::GuestIa32Efer, (value & !efer::LMA) | (old & efer::LMA));
    true
}

/// WRMSR to the x2APIC ICR (SDM 11.12.9): #GP outside x2APIC mode or with
/// reserved bits set; otherwise the IPI is sent, except an INIT, which L0
/// emulates (`guest_smp`), and the INIT level de-assert, which is dropped.
fn x2apic_icr(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit, value: u64) -> Option<Resume> {
    use shared::apic::ApicMode;
    use shared::ipi::{self, IcrAction};
    if crate::lapic::mode() != Some(ApicMode::X2Apic) || value & ipi::X2APIC_ICR_RESERVED != 0 {
        return inject_gp(v);
    }
    skip_instruction(v, exit);
    match ipi::action(value, ApicMode::X2Apic) {
        IcrAction::Forward => match crate::guest_smp::is_startup(value, ApicMode::X2Apic) {
            Some(s) => crate::guest_smp::send_startup(vcpu.index, &s, ApicMode::X2Apic),
            None => crate::lapic::write_icr(ApicMode::X2Apic, value),
        },
        IcrAction::Drop => {}
        IcrAction::Init(icr) => {
            if crate::guest_smp::send_init(vcpu.index, &icr, ApicMode::X2Apic) {
                super::init_self(vcpu, v);
            }
        }
    }
    Some(Resume::Guest)
}
