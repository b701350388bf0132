//! What an INIT resets besides the VMCS guest state (SDM Table 10-1,
//! "IA-32 and Intel 64 Processor States Following Power-up, Reset, or
//! INIT", and 11.4.7.3 "Local APIC State After an INIT Reset"), for the
//! INITs L0 emulates (`exits::init_sipi`): the debug registers DR0-DR3 and
//! DR6 (DR7 is in the VMCS), XCR0, and the local APIC's registers but its
//! ID and IA32_APIC_BASE (and the mode they select). A physical INIT would
//! have done this; L0's emulated one runs on the target CPU, in VMX root,
//! just before it enters the guest in wait-for-SIPI.

use shared::apic::ApicMode;
use shared::x86;

/// xAPIC register offsets (x2APIC MSR = 0x800 + offset / 16).
mod reg {
    pub const TPR: u64 = 0x80;
    pub const LDR: u64 = 0xd0;
    pub const DFR: u64 = 0xe0;
    pub const SVR: u64 = 0xf0;
    pub const ESR: u64 = 0x280;
    pub const LVT_CMCI: u64 = 0x2f0;
    /// Timer, thermal, performance counters, LINT0, LINT1, error.
    pub const LVTS: [u64; 6] = [0x320, 0x330, 0x340, 0x350, 0x360, 0x370];
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
    pub const VERSION: u64 = 0x30;
}

/// LVT mask bit.
const MASKED: u32 = 1 << 16;
/// The spurious-interrupt vector register after INIT: vector FFH, APIC
/// software-disabled.
const SVR_AFTER_INIT: u32 = 0xff;

/// Resets this CPU's INIT-affected state (see the module doc).
pub fn reset_this_cpu(cpu: usize) {
    // SAFETY: the debug registers are the guest's (VMX switches only DR7,
    // through the VMCS); L0 does not use them. The values are INIT's.
    unsafe {
        core::arch::asm!(
            "mov dr0, {z}",
            "mov dr1, {z}",
            "mov dr2, {z}",
            "mov dr3, {z}",
            "mov dr6, {dr6}",
            z = in(reg) 0u64,
            dr6 = in(reg) 0xffff_0ff0u64,
            options(nomem, nostack, preserves_flags)
        );
    }
    if x86::read_cr4() & crate::vmcs01::cr4::OSXSAVE != 0 {
        // SAFETY: L0 runs with CR4.OSXSAVE (checked); XCR0 = 1 (x87 only)
        // is valid on every XSAVE processor and is INIT's value.
        unsafe {
            core::arch::asm!("xsetbv", in("ecx") 0u32, in("eax") 1u32, in("edx") 0u32,
                options(nomem, nostack, preserves_flags));
        }
    }
    reset_lapic(cpu);
}

/// The local APIC's registers as INIT (or a global disable) leaves them.
pub fn reset_lapic(cpu: usize) {
    let Some(mode) = crate::lapic::mode() else {
        return;
    };
    let write = |off: u64, value: u32| match mode {
        ApicMode::XApic => crate::lapic::mmio_write(crate::lapic::xapic_page() + off, value),
        // SAFETY: x2APIC mode is on, so these register MSRs exist; the
        // values are their INIT values.
        ApicMode::X2Apic => unsafe { x86::wrmsr(0x800 + (off >> 4) as u32, u64::from(value)) },
    };
    let read_version = || match mode {
        ApicMode::XApic => crate::lapic::mmio_read(crate::lapic::xapic_page() + reg::VERSION),
        // SAFETY: as above; the version register is readable.
        ApicMode::X2Apic => unsafe { x86::rdmsr(0x803) as u32 },
    };
    let max_lvt = (read_version() >> 16) & 0xff;
    write(reg::TPR, 0);
    write(reg::TIMER_INITIAL, 0);
    write(reg::TIMER_DIVIDE, 0);
    for lvt in reg::LVTS {
        write(lvt, MASKED);
    }
    if max_lvt >= 6 {
        write(reg::LVT_CMCI, MASKED);
    }
    write(reg::ESR, 0);
    if mode == ApicMode::XApic {
        // x2APIC's LDR is read-only and its DFR does not exist.
        write(reg::DFR, u32::MAX);
        write(reg::LDR, 0);
        crate::guest_smp::record_logical(cpu, true, 0);
        crate::guest_smp::record_logical(cpu, false, u32::MAX);
    }
    write(reg::SVR, SVR_AFTER_INIT);
}
