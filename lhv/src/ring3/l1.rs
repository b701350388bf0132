//! L1's ring 3 (USER_MODE): SYSCALL/SYSRET through IA32_STAR, IA32_LSTAR
//! and IA32_FMASK with EFER.SCE (SDM Vol. 3A 5.8.8), faults through LHV's
//! shared IDT, whose gates are all DPL 0 (so `INT 0x80` from ring 3 is
//! itself a #GP, SDM 6.12.1.1). Traps from ring 3 land on the TSS's RSP0,
//! which for the section points to a stack of this module: shared::percpu
//! sets RSP0 to the CPU's kernel stack, on which LHV runs.
//!
//! The MSRs, EFER.SCE and RSP0 are set at the start of each section and
//! restored at its end (a VM exit reloads the host EFER from the VMCS, and
//! L2 shares these MSRs).

use ::core::sync::atomic::Ordering;

use lhv::ring3_abi::{self as abi, int_gate_gp_error, pf};
use shared::percpu::{self, MAX_CPUS, selector};
use shared::trap::{self, Claim, TrapFrame, vector};
use shared::x86::{self, msr};

use super::{Cr2, ExpectedFault, SYS_ADD, SYS_EXIT, Section, TrapStack, USER_RFLAGS};
use crate::assert::fail;
use crate::hw::tables;

unsafe extern "C" {
    static lhv_ring3_l1_program: u8;
    static lhv_ring3_l1_syscall_ret: u8;
    static lhv_ring3_l1_faults: [[u64; 2]; 7];
    fn lhv_ring3_syscall_entry();
}

/// EFER.SCE.
const EFER_SCE: u64 = 1 << 0;
/// IA32_FMASK: IF, TF, DF, AC and NT cleared on SYSCALL.
const FMASK: u64 = (1 << 9) | (1 << 8) | (1 << 10) | (1 << 18) | (1 << 14);

/// The faults of L1's program, in order (see `entry.S`).
pub const FAULTS: [ExpectedFault; 7] = [
    ExpectedFault::PF_SUPERVISOR_READ,
    ExpectedFault {
        what: "#PF writing the read-only user code page (P|W|U)",
        vector: vector::PF as u64,
        error_code: pf::P | pf::W | pf::U,
        cr2: Some(Cr2::CodePage),
    },
    ExpectedFault {
        what: "#PF reading a not-present page (U)",
        vector: vector::PF as u64,
        error_code: pf::U,
        cr2: Some(Cr2::NotPresent),
    },
    ExpectedFault::GP_HLT,
    ExpectedFault::gp0("#GP(0) from MOV from CR0 at CPL 3"),
    ExpectedFault::gp(
        "#GP(0x80 << 3 | IDT) from INT 0x80 through a DPL-0 gate",
        int_gate_gp_error(0x80),
    ),
    ExpectedFault::UD2,
];

static SECTIONS: [Section; MAX_CPUS] = [const { Section::new() }; MAX_CPUS];
static TRAP_STACKS: [TrapStack; MAX_CPUS] = [const { TrapStack::new() }; MAX_CPUS];
static HANDLERS: spin::Once<()> = spin::Once::new();

/// What one section reported.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The program's exit value.
    pub result: u64,
    /// Faults taken (and checked).
    pub faults: usize,
    /// System calls served before the exit.
    pub syscalls: u64,
}

/// This CPU's TSS RSP0 (at offset 4 of the 64-bit TSS, SDM Vol. 3A 8.7).
fn rsp0_ptr() -> *mut u64 {
    (tables::tss_base() + 4) as *mut u64
}

/// Runs L1's ring-3 program with input `n` (≥ 1) on this CPU.
pub fn run(n: u64) -> Outcome {
    super::map_user_pages();
    HANDLERS.call_once(|| {
        for v in [vector::UD, vector::GP, vector::PF] {
            // Three vectors, each with room for four claiming handlers.
            let _ = trap::add_handler(v, fault_handler);
        }
    });
    let cpu = percpu::current().index();
    let section = &SECTIONS[cpu];
    let probe = &raw const SECTIONS as u64;
    // SAFETY: these MSRs exist on every 64-bit processor; the values make
    // SYSCALL enter `lhv_ring3_syscall_entry` at CPL 0 with LHV's
    // selectors and IF clear, and are restored below. RSP0 is this CPU's
    // own TSS field (the TSS is mapped writable in the image), pointed at
    // this CPU's trap stack for the section only.
    let saved = unsafe {
        let saved = (
            x86::rdmsr(msr::IA32_EFER),
            x86::rdmsr(msr::IA32_STAR),
            x86::rdmsr(msr::IA32_LSTAR),
            x86::rdmsr(msr::IA32_FMASK),
            x86::rdmsr(msr::IA32_KERNEL_GS_BASE),
            rsp0_ptr().read_unaligned(),
        );
        x86::wrmsr(
            msr::IA32_STAR,
            abi::star(selector::KERNEL_CODE, selector::KERNEL_DATA),
        );
        x86::wrmsr(msr::IA32_LSTAR, lhv_ring3_syscall_entry as *const () as u64);
        x86::wrmsr(msr::IA32_FMASK, FMASK);
        x86::wrmsr(msr::IA32_KERNEL_GS_BASE, section.syscall_area());
        x86::wrmsr(msr::IA32_EFER, saved.0 | EFER_SCE);
        rsp0_ptr().write_unaligned(TRAP_STACKS[cpu].top());
        saved
    };
    let result = section.run(
        &raw const lhv_ring3_l1_program,
        super::user_stack_top(cpu, false),
        [n, probe, abi::user_page_va(abi::USER_NOT_PRESENT_PT_INDEX)],
    );
    // SAFETY: restores the values read above.
    unsafe {
        x86::wrmsr(msr::IA32_EFER, saved.0);
        x86::wrmsr(msr::IA32_STAR, saved.1);
        x86::wrmsr(msr::IA32_LSTAR, saved.2);
        x86::wrmsr(msr::IA32_FMASK, saved.3);
        x86::wrmsr(msr::IA32_KERNEL_GS_BASE, saved.4);
        rsp0_ptr().write_unaligned(saved.5);
    }
    Outcome {
        result,
        faults: section.next_fault.load(Ordering::Relaxed),
        syscalls: section.syscalls.load(Ordering::Relaxed),
    }
}

/// #UD, #GP and #PF on every CPU: from L1's ring 3 during a section, a
/// checked fault; anything else is fatal as without a handler.
/// Claims the faults of L1's ring-3 program (CPL 3 during a section).
fn fault_handler(frame: &mut TrapFrame) -> Claim {
    let cpu = percpu::current().index();
    let section = &SECTIONS[cpu];
    if frame.cs & 3 != 3 || !section.active.load(Ordering::Acquire) {
        return Claim::NotMine;
    }
    // SAFETY: the table is emitted by entry.S and never written.
    let sites = super::sites(unsafe { &lhv_ring3_l1_faults });
    if let Err((what, e, g)) =
        section.take_fault(frame, &sites, &FAULTS, super::user_stack_top(cpu, false))
    {
        fail(
            format_args!("L1 ring 3: {what}"),
            format_args!("{e:#x}"),
            format_args!("{g:#x}"),
        );
    }
    Claim::Handled
}

/// L1's SYSCALL handler (called by `lhv_ring3_syscall_entry` on the kernel
/// stack with the frame it built: RIP = RCX, RFLAGS = R11, RSP = user RSP).
#[unsafe(no_mangle)]
extern "C" fn lhv_ring3_l1_syscall(frame: &mut TrapFrame) {
    let cpu = percpu::current().index();
    let section = &SECTIONS[cpu];
    let check = |what: &str, expected: u64, got: u64| {
        if expected != got {
            fail(
                format_args!("L1 ring 3 SYSCALL: {what}"),
                format_args!("{expected:#x}"),
                format_args!("{got:#x}"),
            );
        }
    };
    check(
        "section active",
        1,
        section.active.load(Ordering::Acquire).into(),
    );
    check("R11 (user RFLAGS)", USER_RFLAGS, frame.r11 & !0x8d5);
    match frame.rax {
        SYS_ADD => {
            check(
                "RCX (return RIP)",
                super::user_alias(&raw const lhv_ring3_l1_syscall_ret),
                frame.rcx,
            );
            check(
                "user RSP at the ADD call",
                super::user_stack_top(cpu, false) - 8,
                frame.rsp,
            );
            check("ADD operand", abi::SYSCALL_ADD_OPERAND, frame.rsi);
            frame.rax = frame.rdi.wrapping_add(frame.rsi);
            section.syscalls.fetch_add(1, Ordering::Relaxed);
        }
        SYS_EXIT => section.exit(frame.rdi),
        n => check("system call number", SYS_ADD, n),
    }
}
