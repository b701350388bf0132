//! L2's ring 3 (NESTED_USER_MODE): L2 runs on descriptor tables of its own,
//! which L1 builds per CPU and puts in L2's guest state (GDTR, IDTR, TR):
//! - GDT: LHV's layout (kernel code 0x08, kernel data 0x10, user data
//!   0x1B, user code 0x23, TSS 0x28), so the selectors of the VMCS guest
//!   state stay valid, with the access rights the VMCS holds;
//! - TSS: RSP0 and the three IST stacks (NMI, #DF, #MC) on L2 stacks;
//! - IDT: LHV's gates, except #UD, #GP and #PF (this module's stubs, DPL 0)
//!   and INT 0x80 (DPL 3: L2's system call). INT 0x81 keeps LHV's DPL-0
//!   gate: from ring 3 it is a #GP.
//!
//! None of it causes a VM exit: the exception bitmap is 0 and INT n,
//! IRETQ and CPL changes never exit (SDM Vol. 3C 26.1.2, 26.2).

use ::core::cell::UnsafeCell;
use ::core::sync::atomic::Ordering;

use lhv::ring3_abi::{self as abi, int_gate_gp_error};
use shared::percpu::{self, MAX_CPUS, selector};
use shared::trap::{TrapFrame, vector};
use x86_64::VirtAddr;
use x86_64::structures::tss::TaskStateSegment;

use super::{ExpectedFault, SYS_ADD, SYS_EXIT, Section, TrapStack};
use crate::hw::tables;
use crate::l2 as guest;

unsafe extern "C" {
    static lhv_ring3_l2_program: u8;
    static lhv_ring3_l2_int_ret: u8;
    static lhv_ring3_l2_faults: [[u64; 2]; 4];
    fn lhv_ring3_l2_vec6();
    fn lhv_ring3_l2_vec13();
    fn lhv_ring3_l2_vec14();
    fn lhv_ring3_l2_vec128();
}

/// The vector of L2's system calls (a DPL-3 gate).
pub const SYSCALL_GATE: u8 = 0x80;

/// The faults of L2's program, in order (see `entry.S`).
pub const FAULTS: [ExpectedFault; 4] = [
    ExpectedFault::PF_SUPERVISOR_READ,
    ExpectedFault::GP_HLT,
    ExpectedFault::gp(
        "#GP(0x81 << 3 | IDT) from INT 0x81 through a DPL-0 gate",
        int_gate_gp_error(0x81),
    ),
    ExpectedFault::UD2,
];

/// GDT slots.
pub const GDT_ENTRIES: usize = 7;
/// The TSS limit (104-byte 64-bit TSS, no I/O bitmap).
pub const TSS_LIMIT: u32 = 0x67;

/// One CPU's tables for L2.
#[repr(C, align(4096))]
pub struct Tables {
    idt: [[u64; 2]; 256],
    gdt: [u64; GDT_ENTRIES],
    tss: TaskStateSegment,
}

/// L2's tables of every CPU, written by each CPU's L1 before its first VM
/// entry and afterwards used by that CPU's L2 (and its processor) only.
struct AllTables(UnsafeCell<[Tables; MAX_CPUS]>);

// SAFETY: slot `c` is written only by CPU c's L1 in `build` (once, before
// its L2 runs) and then read only by CPU c.
unsafe impl Sync for AllTables {}

static TABLES: AllTables = AllTables(UnsafeCell::new(
    [const {
        Tables {
            idt: [[0; 2]; 256],
            gdt: [0; GDT_ENTRIES],
            tss: TaskStateSegment::new(),
        }
    }; MAX_CPUS],
));
static RING0_STACKS: [TrapStack; MAX_CPUS] = [const { TrapStack::new() }; MAX_CPUS];
static IST_STACKS: [[TrapStack; 3]; MAX_CPUS] =
    [const { [const { TrapStack::new() }; 3] }; MAX_CPUS];
static SECTIONS: [Section; MAX_CPUS] = [const { Section::new() }; MAX_CPUS];

/// Where CPU `cpu`'s L2 tables are: (GDT base, GDT limit, IDT base, IDT
/// limit, TSS base, descriptors of the GDT).
#[derive(Clone, Copy, Debug)]
pub struct Built {
    /// GDTR base.
    pub gdt_base: u64,
    /// GDTR limit.
    pub gdt_limit: u64,
    /// IDTR base.
    pub idt_base: u64,
    /// IDTR limit.
    pub idt_limit: u64,
    /// TR base.
    pub tss_base: u64,
    /// The GDT as built.
    pub gdt: [u64; GDT_ENTRIES],
}

/// Builds CPU `cpu`'s L2 tables (in L1, once, before L2 first runs).
pub fn build(cpu: usize) -> Built {
    super::map_user_pages();
    // SAFETY: slot `cpu` is this CPU's, and its L2 has not run yet.
    let t = unsafe { &mut (*TABLES.0.get())[cpu] };
    t.tss = TaskStateSegment::new();
    t.tss.privilege_stack_table[0] = VirtAddr::new(RING0_STACKS[cpu].top());
    for (slot, s) in IST_STACKS[cpu].iter().enumerate() {
        t.tss.interrupt_stack_table[slot] = VirtAddr::new(s.top());
    }
    let tss_base = &raw const t.tss as u64;
    let (tss_lo, tss_hi) = abi::tss_descriptor(tss_base, TSS_LIMIT, true);
    t.gdt = [
        0,
        abi::code64_descriptor(0),
        abi::data_descriptor(0),
        abi::data_descriptor(3),
        abi::code64_descriptor(3),
        tss_lo,
        tss_hi,
    ];
    // LHV's gates, then L2's own.
    let lhv_idt = tables::sidt();
    for (v, gate) in t.idt.iter_mut().enumerate() {
        let at = lhv_idt.base + 16 * v as u64;
        // SAFETY: LHV's IDT has 256 16-byte gates (shared::trap) and is
        // mapped; reading it has no side effect.
        *gate = unsafe {
            [
                ::core::ptr::read_unaligned(at as *const u64),
                ::core::ptr::read_unaligned((at + 8) as *const u64),
            ]
        };
    }
    let own: [(u8, unsafe extern "C" fn(), u8); 4] = [
        (vector::UD, lhv_ring3_l2_vec6, 0),
        (vector::GP, lhv_ring3_l2_vec13, 0),
        (vector::PF, lhv_ring3_l2_vec14, 0),
        (SYSCALL_GATE, lhv_ring3_l2_vec128, 3),
    ];
    for (v, stub, dpl) in own {
        let (lo, hi) = abi::interrupt_gate(stub as *const () as u64, selector::KERNEL_CODE, 0, dpl);
        t.idt[usize::from(v)] = [lo, hi];
    }
    Built {
        gdt_base: t.gdt.as_ptr() as u64,
        gdt_limit: (8 * GDT_ENTRIES - 1) as u64,
        idt_base: t.idt.as_ptr() as u64,
        idt_limit: (16 * 256 - 1) as u64,
        tss_base,
        gdt: t.gdt,
    }
}

/// What L2's section reported.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The program's exit value.
    pub result: u64,
    /// Faults taken (and checked).
    pub faults: usize,
    /// System calls served before the exit.
    pub syscalls: u64,
}

/// Runs L2's ring-3 program with input `n` (≥ 1) on this CPU (in L2).
pub fn run(cpu: usize, n: u64) -> Outcome {
    let section = &SECTIONS[cpu];
    let probe = &raw const SECTIONS as u64;
    let result = section.run(
        &raw const lhv_ring3_l2_program,
        super::user_stack_top(cpu, true),
        [n, probe, 0],
    );
    Outcome {
        result,
        faults: section.next_fault.load(Ordering::Relaxed),
        syscalls: section.syscalls.load(Ordering::Relaxed),
    }
}

/// L2's handler for its own gates (#UD, #GP, #PF, INT 0x80), in L2's ring 0
/// on L2's RSP0 stack. A failed check goes to L1 by VMCALL.
#[unsafe(no_mangle)]
extern "C" fn lhv_ring3_l2_trap(frame: &mut TrapFrame) {
    let cpu = percpu::current().index();
    let section = &SECTIONS[cpu];
    let top = super::user_stack_top(cpu, true);
    if frame.cs & 3 != 3 || !section.active.load(Ordering::Acquire) {
        guest::report_failure(
            "L2: trap through L2's own gates from ring 0 or outside a section (vector in got)",
            u64::MAX,
            frame.vector,
        );
    }
    if frame.vector == u64::from(SYSCALL_GATE) {
        match frame.rax {
            SYS_ADD => {
                let checks = [
                    (
                        "L2 ring 3 INT 0x80: return RIP",
                        super::user_alias(&raw const lhv_ring3_l2_int_ret),
                        frame.rip,
                    ),
                    (
                        "L2 ring 3 INT 0x80: CS (CPL 3)",
                        selector::USER_CODE.into(),
                        frame.cs,
                    ),
                    (
                        "L2 ring 3 INT 0x80: SS",
                        selector::USER_DATA.into(),
                        frame.ss,
                    ),
                    ("L2 ring 3 INT 0x80: user RSP", top - 8, frame.rsp),
                    (
                        "L2 ring 3 INT 0x80: ADD operand",
                        abi::SYSCALL_ADD_OPERAND,
                        frame.rsi,
                    ),
                ];
                for (what, e, g) in checks {
                    if e != g {
                        guest::report_failure(what, e, g);
                    }
                }
                frame.rax = frame.rdi.wrapping_add(frame.rsi);
                section.syscalls.fetch_add(1, Ordering::Relaxed);
            }
            SYS_EXIT => section.exit(frame.rdi),
            n => guest::report_failure("L2 ring 3: system call number", SYS_ADD, n),
        }
        return;
    }
    // SAFETY: the table is emitted by entry.S and never written.
    let sites = super::sites(unsafe { &lhv_ring3_l2_faults });
    if let Err((what, e, g)) = section.take_fault(frame, &sites, &FAULTS, top) {
        guest::report_failure(what, e, g);
    }
}
