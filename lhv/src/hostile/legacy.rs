//! Hostile cases outside 64-bit mode (item 2 and the task switches of
//! item 3): `legacy.S`, run from the low code page, goes through
//! compatibility mode and 32-bit protected mode and back, recording what
//! each case raised; this module checks the records against the hardware's
//! answers.
//! - compatibility mode: MOV to CR0 uses the low 32 bits of the register
//!   (no fault though RAX's upper half is not zero); clearing CR0.PG with
//!   CR4.PCIDE = 1 is #GP(0);
//! - 32-bit protected mode: JMP to a TSS and back, CALL to a TSS and IRET
//!   back (task switches, SDM 7.3: the new task's registers, TR, NT and the
//!   back link); PAE paging with a reserved PDPTE bit is #GP(0); CPUID at
//!   EIP 0xFFFFFFFE continues at EIP 0 (the instruction pointer wraps);
//!   VMCALL Stats at CPL 3 is #UD (item 11); INT 15h E820 from
//!   virtual-8086 mode, reflected by a minimal v86 monitor to the
//!   real-mode vector (L0's hook under L0), answers the first entry.

use shared::{println, x86};

use super::{Env, check, skip};
use crate::low_code;

::core::arch::global_asm!(
    include_str!("legacy.S"),
    low = const lhv::low_mem::CODE,
    stats_rax = const shared::hypercall::MAGIC | 2,
    options(att_syntax)
);

unsafe extern "C" {
    static lhv_hl_start: u8;
    static lhv_hl_end: u8;
    static lhv_hl_entry64: u8;
    static lhv_hl_wrap_back: u8;
    static lhv_hl_pcid_ok: u8;
    static lhv_hl_results: u8;
}

/// The records `legacy.S` leaves (`r_base` onwards).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Results {
    /// Per case: vector + 1 (0: none), error code.
    cases: [[u32; 2]; 8],
    tr_after_jmp: u32,
    task_b_eax: u32,
    eflags_after_iret: u32,
    tr_after_iret: u32,
    task_c_eflags: u32,
    task_c_link: u32,
    wrapped: u32,
    user_ran: u32,
    v86_eax: u32,
    v86_ecx: u32,
    v86_flags: u32,
    v86_done: u32,
    /// Case i: the #DF handler's vector + 1 and error code, TR after it.
    df_vec: u32,
    df_err: u32,
    tr_after_df: u32,
    /// The E820 entry INT 15h wrote: base, length, type.
    e820: [u8; 24],
}

const SEL_TSS_A: u32 = 0x20;
/// Task B's TSS, which case i switches to through a task gate.
const SEL_TSS_B: u32 = 0x28;
/// #DF.
const DF: u8 = 8;
const RFLAGS_NT: u32 = 1 << 14;
/// Where CPUID sits (offset 0xFFFFFFFE of a segment based at 0x10000)
/// and where EIP 0 of that segment is.
const WRAP_CPUID: u64 = 0xfffe;
const WRAP_TARGET: u64 = 0x1_0000;

fn low(sym: *const u8) -> u64 {
    let start = &raw const lhv_hl_start;
    low_code::low_address(start, sym)
}

/// Outcome of case `i`: `None` (no fault) or (vector, error code).
fn outcome(r: &Results, i: usize) -> Option<(u8, u32)> {
    let [v, e] = r.cases[i];
    (v != 0).then(|| ((v - 1) as u8, e))
}

pub fn run(env: &Env) {
    if !low_code::usable() {
        skip(
            "legacy_mode",
            "the low pages are not usable RAM in the memory map",
        );
        return;
    }
    let _ = env;
    let (start, end) = (&raw const lhv_hl_start, &raw const lhv_hl_end);
    low_code::install(start, end);
    let pcid = x86::cpuid(1, 0).ecx & (1 << 17) != 0;
    // SAFETY: the blob is in the code page (installed above); these are
    // its data words, identity-mapped.
    unsafe {
        ::core::ptr::write_volatile(low(&raw const lhv_hl_pcid_ok) as *mut u32, u32::from(pcid));
    }
    // The wrap case's bytes: CPUID at 0xFFFE, a far JMP back at 0x10000.
    let back = low(&raw const lhv_hl_wrap_back) as u32;
    let mut jmp = [0u8; 7];
    jmp[0] = 0xea;
    jmp[1..5].copy_from_slice(&back.to_le_bytes());
    jmp[5..7].copy_from_slice(&0x18u16.to_le_bytes());
    let mut saved = [0u8; 9];
    // SAFETY: [0xFFFE, 0x10007) is conventional memory below 1 MiB that
    // LHV does not use; its bytes are put back afterwards.
    unsafe {
        let p = WRAP_CPUID as *mut u8;
        ::core::ptr::copy_nonoverlapping(p, saved.as_mut_ptr(), 9);
        ::core::ptr::copy_nonoverlapping([0x0f, 0xa2].as_ptr(), p, 2);
        ::core::ptr::copy_nonoverlapping(jmp.as_ptr(), WRAP_TARGET as *mut u8, 7);
    }
    let entry = low(&raw const lhv_hl_entry64);
    println!("HOSTILE: leaving 64-bit mode for the legacy cases");
    x86::cli();
    // SAFETY: the blob saves and restores everything of LHV's it changes
    // (callee-saved registers, GDT, IDT, TR, segments, FS/GS bases, CR0,
    // CR3, CR4, EFER) and returns here; interrupts are off throughout.
    unsafe {
        ::core::arch::asm!("call {e}", e = in(reg) entry, clobber_abi("C"));
    }
    // SAFETY: as above.
    let r: Results = unsafe {
        ::core::ptr::copy_nonoverlapping(saved.as_ptr(), WRAP_CPUID as *mut u8, 9);
        ::core::ptr::read_volatile(low(&raw const lhv_hl_results) as *const Results)
    };
    println!("HOSTILE: back in 64-bit mode");
    check(
        "compat_mov_cr0_32bit_operand",
        outcome(&r, 0).is_none(),
        format_args!("no exception"),
        format_args!("{:?}", outcome(&r, 0)),
    );
    if pcid {
        check(
            "compat_clear_pg_with_pcide",
            outcome(&r, 1) == Some((13, 0)),
            format_args!("#GP(0)"),
            format_args!("{:?}", outcome(&r, 1)),
        );
    } else {
        skip("compat_clear_pg_with_pcide", "the processor has no PCID");
    }
    check(
        "task_switch_jmp",
        outcome(&r, 2).is_none() && r.task_b_eax == 0x7a5b && r.tr_after_jmp == SEL_TSS_A,
        format_args!("no exception, task B's EAX 0x7a5b, TR back to {SEL_TSS_A:#x}"),
        format_args!(
            "{:?}, EAX {:#x}, TR {:#x}",
            outcome(&r, 2),
            r.task_b_eax,
            r.tr_after_jmp
        ),
    );
    check(
        "task_switch_call_iret",
        outcome(&r, 3).is_none()
            && r.task_c_eflags & RFLAGS_NT != 0
            && r.task_c_link == SEL_TSS_A
            && r.eflags_after_iret & RFLAGS_NT == 0
            && r.tr_after_iret == SEL_TSS_A,
        format_args!(
            "NT and back link {SEL_TSS_A:#x} in task C, NT clear and TR {SEL_TSS_A:#x} after IRET"
        ),
        format_args!(
            "{:?}, C EFLAGS {:#x} link {:#x}, after IRET EFLAGS {:#x} TR {:#x}",
            outcome(&r, 3),
            r.task_c_eflags,
            r.task_c_link,
            r.eflags_after_iret,
            r.tr_after_iret
        ),
    );
    check(
        "double_fault_task_gate",
        r.df_vec == u32::from(DF) + 1 && r.df_err == 0 && r.tr_after_df == SEL_TSS_B,
        format_args!(
            "#DF(0) in task {SEL_TSS_B:#x} (#TS of the switch while #DE is delivered, SDM Table 6-5)"
        ),
        format_args!(
            "vector {} error {:#x}, TR {:#x}",
            i64::from(r.df_vec) - 1,
            r.df_err,
            r.tr_after_df
        ),
    );
    check(
        "pae_pdpte_reserved_gp",
        outcome(&r, 4) == Some((13, 0)),
        format_args!("#GP(0)"),
        format_args!("{:?}", outcome(&r, 4)),
    );
    check(
        "eip_wraps_at_4g",
        outcome(&r, 5).is_none() && r.wrapped == 1,
        format_args!("CPUID at EIP 0xFFFFFFFE continues at EIP 0"),
        format_args!("{:?}, wrapped {}", outcome(&r, 5), r.wrapped),
    );
    check(
        "vmcall_stats_cpl3_ud",
        outcome(&r, 6) == Some((6, 0)) && r.user_ran == 0,
        format_args!("#UD, the next instruction not reached"),
        format_args!("{:?}, reached {}", outcome(&r, 6), r.user_ran),
    );
    let base = u64::from_le_bytes(r.e820[0..8].try_into().unwrap_or([0; 8]));
    let len = u64::from_le_bytes(r.e820[8..16].try_into().unwrap_or([0; 8]));
    let kind = u32::from_le_bytes(r.e820[16..20].try_into().unwrap_or([0; 4]));
    println!(
        "HOSTILE: E820 from v86 mode: [{base:#x}, {:#x}) type {kind}",
        base + len
    );
    check(
        "e820_from_v86",
        r.v86_done == 1
            && r.v86_eax == 0x534d_4150
            && r.v86_ecx == 20
            && r.v86_flags & 1 == 0
            && base == 0
            && len > 0
            && kind == 1
            && outcome(&r, 7) == Some((13, 0)),
        format_args!("EAX 'SMAP', ECX 20, CF 0, entry [0, ..) type 1, then HLT #GP(0)"),
        format_args!(
            "done {}, EAX {:#x}, ECX {}, FLAGS {:#x}, entry [{base:#x}, +{len:#x}) type {kind}, {:?}",
            r.v86_done,
            r.v86_eax,
            r.v86_ecx,
            r.v86_flags,
            outcome(&r, 7)
        ),
    );
}
