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

/// IA32_XSS.
const IA32_XSS: u32 = 0xda0;
/// CPUID.(EAX=0DH,ECX=1):EAX[3]: XSAVES/XRSTORS and IA32_XSS.
const LEAF_D1_XSAVES: u32 = 1 << 3;
/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;

/// An XSAVE area (64-byte aligned) big enough for the x87 state in the
/// compacted format.
#[repr(C, align(64))]
struct XsaveArea([u8; 4096]);
static mut XSAVE_AREA: XsaveArea = XsaveArea([0; 4096]);

/// Item 6: XSAVES and IA32_XSS agree with CPUID leaf 0DH sub-leaf 1 (SDM
/// Vol. 1 13.2-13.3): bit i of IA32_XSS can be set iff EDX:ECX[i] lists a
/// supervisor state (never Intel PT's under L0, which hides PT), every
/// other bit is #GP(0); XSAVES runs (no #UD, and no VM exit L0 would not
/// handle: the XSS-exiting bitmap).
pub fn xsaves(env: &Env) {
    let d1 = x86::cpuid(0xd, 1);
    if d1.eax & LEAF_D1_XSAVES == 0 {
        super::skip("xss_follows_cpuid", "CPUID.(0DH,1):EAX.XSAVES = 0");
        return;
    }
    let listed = (u64::from(d1.edx) << 32) | u64::from(d1.ecx);
    let mut accepted = 0u64;
    let mut not_gp = None;
    for bit in 0..64 {
        let value = 1u64 << bit;
        let t = catch!("wrmsr"; in("ecx") IA32_XSS, in("eax") value as u32, in("edx") (value >> 32) as u32,);
        match t {
            None => accepted |= value,
            Some(t) if t.is(vector::GP, Some(0)) => {}
            Some(t) => not_gp = not_gp.or(Some((bit, t))),
        }
    }
    let zero = catch!("wrmsr"; in("ecx") IA32_XSS, in("eax") 0u32, in("edx") 0u32,);
    if accepted != listed && env.l0.is_none() && env.bochs {
        super::skip(
            "xss_follows_cpuid",
            "Bochs takes IA32_XSS bits its CPUID leaf 0DH does not list",
        );
        shared::println!(
            "HOSTILE: bare Bochs IA32_XSS takes {accepted:#x}, CPUID lists {listed:#x}"
        );
    } else {
        check(
            "xss_follows_cpuid",
            accepted == listed && not_gp.is_none() && zero.is_none() && listed & (1 << 8) == 0,
            format_args!(
                "IA32_XSS takes exactly the states CPUID lists ({listed:#x}, not PT), else #GP(0)"
            ),
            format_args!("takes {accepted:#x}, other fault {not_gp:?}, WRMSR 0 {zero:?}"),
        );
    }
    let cr4 = x86::read_cr4();
    // SAFETY: CR4.OSXSAVE may be set (CPUID says XSAVE, implied by
    // XSAVES); XCR0 keeps its value; CR4 is put back after the case.
    unsafe { x86::write_cr4(cr4 | CR4_OSXSAVE) };
    let area = (&raw mut XSAVE_AREA).cast::<u8>();
    // x87 state only (RFBM = 1, which XCR0 always enables).
    let t = catch!("xsaves64 [{a}]"; a = in(reg) area, in("eax") 1u32, in("edx") 0u32,);
    // SAFETY: as above.
    unsafe { x86::write_cr4(cr4) };
    check(
        "xsaves_runs",
        t.is_none(),
        format_args!("XSAVES completes"),
        format_args!("{t:?}"),
    );
}
