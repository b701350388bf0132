//! The guest's IA32_APIC_BASE global enable, virtual per vCPU. Clearing EN
//! on the hardware would take the local APIC away from L0 as well (its
//! kicks, the INIT emulation), and on Bochs for good (later writes are
//! ignored, the APIC stays dead). So a guest that clears EN sees its APIC
//! disabled (RDMSR, CPUID.1:EDX.APIC = 0, its registers reset as a disable
//! resets them, SDM 11.4.3) while the hardware APIC stays enabled for L0;
//! setting EN again (disabled to xAPIC) enables it back. While disabled
//! the vCPU runs with EPT01's APIC-off view (`ept01`): its xAPIC page
//! reads all ones and drops writes, as a disabled APIC's page does (SDM
//! 11.4.3: its registers are not accessible; nothing else answers there).
//! Not virtualized: the x2APIC MSRs of a vCPU disabled from x2APIC mode,
//! the view while L2 runs (VMCS02 has its own EPTP), and a guest that was
//! in x2APIC mode and comes back in xAPIC mode keeps the hardware in
//! x2APIC mode (the hardware forbids that transition but through a
//! disable).

use core::sync::atomic::{AtomicBool, Ordering};

use shared::percpu::MAX_CPUS;
use shared::vmx::insn::Vmxon;
use shared::vmx::{VmcsAccess, VmcsField as F};
use shared::x86::msr;

use crate::vcpu::Vcpu;

use crate::lapic::base::{ADDRESS, BSP, EN, EXTD};

static DISABLED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether vCPU `cpu`'s guest has globally disabled its APIC.
pub fn disabled(cpu: usize) -> bool {
    DISABLED.get(cpu).is_some_and(|d| d.load(Ordering::Relaxed))
}

/// IA32_APIC_BASE as vCPU `cpu`'s guest sees it.
pub fn guest_view(cpu: usize) -> u64 {
    let b = crate::lapic::apic_base();
    if disabled(cpu) { b & !(EN | EXTD) } else { b }
}

/// WRMSR to IA32_APIC_BASE by vCPU `cpu` (SDM 11.4.4, 11.12.5): reserved
/// bits (7:0, 9, and above MAXPHYADDR) and invalid mode transitions
/// (x2APIC to xAPIC, disabled to x2APIC, EXTD without EN, EXTD without
/// x2APIC support) are #GP (false); the BSP flag is read-only here. L0
/// also refuses (#GP) an xAPIC page it could not trap: above 4 GiB, or in
/// its own region, where the APIC would shadow L0's memory.
pub fn write(cpu: usize, value: u64) -> bool {
    let old = guest_view(cpu);
    let phys_mask = (1u64 << crate::ept01::max_phys_addr().min(52)) - 1;
    if value & !(BSP | EXTD | EN | (ADDRESS & phys_mask)) != 0 {
        return false;
    }
    let mode = |b: u64| (b & EN != 0, b & EXTD != 0);
    // EXTD without EN; x2APIC back to xAPIC; disabled straight to x2APIC.
    let valid = !matches!(
        (mode(old), mode(value)),
        (_, (false, true)) | ((true, true), (true, false)) | ((false, _), (true, true))
    );
    // EXTD is reserved without x2APIC (CPUID.1:ECX[21]): #GP in the guest,
    // never a host #GP on L0's WRMSR.
    let x2apic = shared::x86::cpuid(1, 0).ecx & (1 << 21) != 0;
    let page = value & ADDRESS;
    if !valid || (value & EXTD != 0 && !x2apic) || !crate::lapic::apic_base_is_safe(page) {
        return false;
    }
    let Some(flag) = DISABLED.get(cpu) else {
        return false;
    };
    let hw = crate::lapic::apic_base();
    if value & EN == 0 {
        if !flag.swap(true, Ordering::Relaxed) {
            crate::init_reset::reset_lapic(cpu);
        }
        return true;
    }
    flag.store(false, Ordering::Relaxed);
    // The hardware keeps EN; from a virtual disable it stays in its mode.
    let new = if old & EN == 0 {
        (hw & !ADDRESS) | page
    } else {
        value
    };
    // SAFETY: the value passed the checks above, which are the hardware's
    // reasons for #GP, and keeps EN set (never a disable).
    unsafe { shared::x86::wrmsr(msr::IA32_APIC_BASE, (new & !BSP) | (hw & BSP) | EN) };
    if page != hw & ADDRESS {
        crate::ept01::set_apic_page(page);
        crate::shootdown::ept01_changed(cpu, crate::shootdown::Ept01Change::Mappings);
    }
    true
}

/// Whether the current VMCS runs its guest with EPT01's APIC-off view
/// (see [`select_ept_view`]).
pub fn runs_apic_off_view(v: &impl VmcsAccess) -> bool {
    crate::ept01::eptp_apic_off().is_some_and(|e| v.read(F::EptPointer) == e.0)
}

/// Makes VMCS01 run the vCPU with EPT01, or with its APIC-off view while
/// its guest has disabled its APIC (after a write to IA32_APIC_BASE).
pub fn select_ept_view(vcpu: &Vcpu) {
    if vcpu.nested.in_l2() {
        return;
    }
    let eptp = if disabled(vcpu.index) {
        crate::ept01::eptp_apic_off()
    } else {
        crate::ept01::eptp()
    };
    let Some(eptp) = eptp else { return };
    // SAFETY: called from an exit handler, in VMX root operation, with this
    // vCPU's VMCS01 current (L2 does not run).
    let vmx = unsafe { Vmxon::assume_enabled() };
    // SAFETY: EPT01 or its APIC-off view: L0's own tables, which never map
    // L0's region and live as long as L0.
    unsafe { vmx.guarded_vmcs().write_sensitive(F::EptPointer, eptp.0) };
    crate::ept01::invept_all();
}
