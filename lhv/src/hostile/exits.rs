//! Item 3: exits a guest can cause that stopped a CPU.
//! - GETSEC with SMX hidden: #UD (CR4.SMXE = 0);
//! - CPUID.1:ECX.SMX = 0;
//! - unclaimed bus space (above RAM, above 4 GiB, below the physical
//!   width): reads all ones, writes dropped, no exception.

use shared::trap::vector;
use shared::x86;

use super::trap::catch;
use super::{Env, check, window};

pub fn run(env: &Env) {
    let smx = x86::cpuid(1, 0).ecx & (1 << 6) != 0;
    check(
        "cpuid_smx_hidden",
        !smx || env.l0.is_none(),
        format_args!("CPUID.1:ECX.SMX = 0"),
        format_args!("1"),
    );
    if !smx {
        let t = catch!("getsec"; inout("eax") 0u32 => _,);
        check(
            "getsec_ud",
            t.is_some_and(|t| t.is(vector::UD, None)),
            format_args!("#UD"),
            format_args!("{t:?}"),
        );
    } else {
        super::skip("getsec_ud", "the processor reports SMX");
    }
    let top = 1u64 << env.max_phys;
    for (name, pa) in [
        ("unclaimed_4g", env.unclaimed),
        ("unclaimed_high", (top - (2 << 20)).min(32 << 30)),
    ] {
        let t = catch!("nop");
        let (before, after) = window::read_write_read(pa, 0x5a5a_5a5a);
        check(
            name,
            t.is_none() && before == u32::MAX && after == u32::MAX,
            format_args!("at {pa:#x}: all ones twice"),
            format_args!("{before:#x}, then {after:#x}"),
        );
    }
}

/// Item 6: Intel PT hidden (CPUID.7.0:EBX[25] = 0), and then its MSRs do
/// not exist: RDMSR IA32_RTIT_CTL is #GP(0), as on a processor without PT.
pub fn hidden_msrs(env: &Env) {
    let pt = x86::cpuid(7, 0).ebx & (1 << 25) != 0;
    check(
        "cpuid_pt_hidden",
        !pt || env.l0.is_none(),
        format_args!("CPUID.7.0:EBX.PT = 0"),
        format_args!("1"),
    );
    if pt {
        super::skip("rdmsr_rtit_ctl_gp", "the processor reports Intel PT");
        return;
    }
    let t = catch!("rdmsr"; in("ecx") 0x570u32, out("eax") _, out("edx") _,);
    if t.is_none() && env.l0.is_none() && env.bochs {
        super::skip(
            "rdmsr_rtit_ctl_gp",
            "Bochs answers MSRs it does not implement (ignore_bad_msrs=1)",
        );
        return;
    }
    check(
        "rdmsr_rtit_ctl_gp",
        t.is_some_and(|t| t.is(vector::GP, Some(0))),
        format_args!("#GP(0)"),
        format_args!("{t:?}"),
    );
}
