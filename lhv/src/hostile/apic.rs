//! Item 10: the guest globally disables its local APIC (IA32_APIC_BASE.EN
//! = 0): RDMSR shows EN = 0 and CPUID.1:EDX.APIC = 0 (SDM 11.4.3); then it
//! enables it again (xAPIC mode) and the APIC answers. Run last: on bare
//! Bochs the APIC stays dead once EN was cleared (a Bochs departure,
//! reported as such), while L0 keeps the hardware APIC enabled for itself.

use shared::x86::{self, msr};

use super::{Env, check, skip};

const EN: u64 = 1 << 11;
const EXTD: u64 = 1 << 10;

fn apic_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every processor with an APIC.
    unsafe { x86::rdmsr(msr::IA32_APIC_BASE) }
}

pub fn run(env: &Env) {
    let b = apic_base();
    if b & EN == 0 {
        skip("apic_global_disable", "the APIC is already disabled");
        return;
    }
    // SAFETY: a valid transition (xAPIC or x2APIC to disabled); every
    // other hostile case that needs the APIC has run.
    unsafe { x86::wrmsr(msr::IA32_APIC_BASE, b & !(EN | EXTD)) };
    let off = apic_base();
    let cpuid_apic = x86::cpuid(1, 0).edx & (1 << 9) != 0;
    check(
        "apic_global_disable",
        off & EN == 0 && !cpuid_apic,
        format_args!("IA32_APIC_BASE.EN = 0, CPUID.1:EDX.APIC = 0"),
        format_args!("{off:#x}, CPUID APIC {cpuid_apic}"),
    );
    // SAFETY: disabled to xAPIC is a valid transition.
    unsafe { x86::wrmsr(msr::IA32_APIC_BASE, (b & !EXTD) | EN) };
    let on = apic_base();
    let page = on & 0xf_ffff_f000;
    // SAFETY: the xAPIC version register (identity-mapped page).
    let version = unsafe { ::core::ptr::read_volatile((page + 0x30) as *const u32) };
    if env.l0.is_none() && env.bochs && version == u32::MAX {
        skip(
            "apic_enable_again",
            "Bochs ignores IA32_APIC_BASE writes once EN was cleared",
        );
        return;
    }
    check(
        "apic_enable_again",
        on & EN != 0 && version != u32::MAX && x86::cpuid(1, 0).edx & (1 << 9) != 0,
        format_args!("EN = 1, the APIC answers, CPUID.1:EDX.APIC = 1"),
        format_args!("{on:#x}, version {version:#x}"),
    );
}
