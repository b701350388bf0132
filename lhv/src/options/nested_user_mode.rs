//! NESTED_USER_MODE (0x800): L2 runs on descriptor tables of its own (GDT,
//! IDT, TSS; see [`crate::ring3::l2`]), which L1 puts in L2's guest state
//! and checks against the access rights and selectors of the VMCS (SDM
//! 26.3.1.2). Each iteration L2 drops to CPL 3, runs a program that
//! computes 1 + ... + n, makes a system call by INT 0x80 (a DPL-3 gate),
//! takes four faults that L2's ring 0 checks exactly (#PF P|U on LHV's
//! data, #GP(0) from HLT, #GP(0x40a) from INT 0x81 through a DPL-0 gate,
//! #UD) and exits by INT 0x80, all without a VM exit.
//!
//! L2 brackets the section with two VMCALLs. At the first, L1 clears the
//! exception-bitmap bits of #UD, #GP and #PF (the baseline intercepts every
//! exception; with PFEC_MASK = PFEC_MATCH = 0 a clear bit 14 means no #PF
//! exits, SDM 26.2) and restores the bitmap at the second. L1 checks that every VM exit
//! between them was an external interrupt (asynchronous, served by L1 and
//! invisible to L2; the exit counters of the core) and that L2's results
//! are what L1 computes itself.

use lhv::opt::LhvOpt;
use lhv::ring3_abi::{access_rights, expected_result};
use shared::percpu::selector;
use shared::trap::vector;
use shared::vmx::VmcsField as F;
use shared::vmx::exit::ExitReason;

use super::{Handled, TestOption};
use crate::assert::{fail, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::ring3::l2 as ring3;
use crate::test_loop::Ctx;

/// L2 starts its ring-3 section (RBX = input n).
const BEGIN: u64 = l2::call_number(LhvOpt::NESTED_USER_MODE, 1);
/// L2 ended it: RBX = result, RCX = faults, RDX = system calls, RSI = n.
const END: u64 = l2::call_number(LhvOpt::NESTED_USER_MODE, 2);

/// The exceptions L2's ring 3 raises, which L2 handles itself.
const L2_OWNED_EXCEPTIONS: u64 = (1 << vector::UD) | (1 << vector::GP) | (1 << vector::PF);

/// The program's input in iteration `iter` (1 to 16).
const fn input(iter: u64, cpu: usize) -> u64 {
    (iter + 3 * cpu as u64) % 16 + 1
}

fn l2_action(env: &L2Env) {
    let n = input(env.iter, env.cpu);
    l2::vmcall(
        BEGIN,
        l2::Args {
            rbx: n,
            ..l2::Args::default()
        },
    );
    let out = ring3::run(env.cpu, n);
    l2::vmcall(
        END,
        l2::Args {
            rbx: out.result,
            rcx: out.faults as u64,
            rdx: out.syscalls,
            rsi: n,
        },
    );
    l2_assert_eq!(out.result, expected_result(n), "L2 ring-3 program's result");
}

/// The guest-state fields of L2's descriptor tables, in the order of
/// `saved_tables`.
const TABLE_FIELDS: [F; 6] = [
    F::GuestGdtrBase,
    F::GuestGdtrLimit,
    F::GuestIdtrBase,
    F::GuestIdtrLimit,
    F::GuestTrBase,
    F::GuestTrLimit,
];

/// The NESTED_USER_MODE checks of one CPU.
pub struct NestedUserMode {
    /// (exits, interrupt exits, n) at BEGIN, while a section runs.
    begin: Option<(u64, u64, u64)>,
    /// The exception bitmap outside the section.
    saved_bitmap: u64,
    /// PFEC_MASK and PFEC_MATCH at BEGIN, restored at END.
    saved_pfec: (u64, u64),
    /// L2's own GDT, IDT and TSS (built in `setup`, in force BEGIN..END).
    tables: Option<ring3::Built>,
    /// L2's GDTR, IDTR and TR (base, limit) at BEGIN, restored at END, so
    /// that other options' L2 code keeps LHV's tables.
    saved_tables: [u64; 6],
    sections: u64,
    interrupt_exits: u64,
}

impl NestedUserMode {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            begin: None,
            saved_bitmap: 0,
            saved_pfec: (0, 0),
            tables: None,
            saved_tables: [0; 6],
            sections: 0,
            interrupt_exits: 0,
        }
    }
}

impl TestOption for NestedUserMode {
    fn bit(&self) -> LhvOpt {
        LhvOpt::NESTED_USER_MODE
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        let t = ring3::build(ctx.cpu);
        self.tables = Some(t);
        // The guest state must describe the descriptors L2 will reload
        // (SDM 26.3.1.2 checks the VMCS; L2's own loads check memory).
        let segs = [
            (
                F::GuestCsSelector,
                F::GuestCsAccessRights,
                selector::KERNEL_CODE,
            ),
            (
                F::GuestSsSelector,
                F::GuestSsAccessRights,
                selector::KERNEL_DATA,
            ),
            (
                F::GuestDsSelector,
                F::GuestDsAccessRights,
                selector::KERNEL_DATA,
            ),
            (
                F::GuestEsSelector,
                F::GuestEsAccessRights,
                selector::KERNEL_DATA,
            ),
            (
                F::GuestFsSelector,
                F::GuestFsAccessRights,
                selector::KERNEL_DATA,
            ),
            (
                F::GuestGsSelector,
                F::GuestGsAccessRights,
                selector::KERNEL_DATA,
            ),
            (F::GuestTrSelector, F::GuestTrAccessRights, selector::TSS),
        ];
        for (sel, ar, s) in segs {
            test_assert_eq!(ctx.read(sel), u64::from(s), "L2 guest selector");
            test_assert_eq!(
                ctx.read(ar),
                access_rights(t.gdt[usize::from(s >> 3)]),
                "L2 guest access rights vs. L2's GDT descriptor"
            );
        }
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        let is_vmcall = exit.reason == ExitReason::Vmcall;
        let rax = ctx.regs.gpr[gpr::RAX];
        if self.begin.is_some() && !(is_vmcall && rax == END) {
            fail(
                format_args!("VM exit during L2's ring-3 section"),
                format_args!("none but external interrupts"),
                format_args!("{} at RIP {:#x}", exit.reason_field, exit.guest_rip),
            );
        }
        match (is_vmcall, rax) {
            (true, BEGIN) => {
                self.begin = Some((ctx.exits, ctx.interrupt_exits, ctx.regs.gpr[gpr::RBX]));
                self.saved_bitmap = ctx.read(F::ExceptionBitmap);
                ctx.write(F::ExceptionBitmap, self.saved_bitmap & !L2_OWNED_EXCEPTIONS);
                // With bit 14 of the bitmap clear, a #PF exits iff
                // (PFEC & MASK) != MATCH (SDM 25.6.3): MASK = MATCH = 0
                // keeps every #PF in L2, whatever other options left there.
                self.saved_pfec = (
                    ctx.read(F::PageFaultErrorCodeMask),
                    ctx.read(F::PageFaultErrorCodeMatch),
                );
                ctx.write(F::PageFaultErrorCodeMask, 0);
                ctx.write(F::PageFaultErrorCodeMatch, 0);
                // L2's own tables for the section only. Its segment
                // selectors mean the same in both GDTs (checked in `setup`),
                // so only the table registers and TR's base/limit change.
                for (slot, f) in self.saved_tables.iter_mut().zip(TABLE_FIELDS) {
                    *slot = ctx.read(f);
                }
                if let Some(t) = self.tables {
                    let own = [
                        t.gdt_base,
                        t.gdt_limit,
                        t.idt_base,
                        t.idt_limit,
                        t.tss_base,
                        ring3::TSS_LIMIT.into(),
                    ];
                    for (f, v) in TABLE_FIELDS.into_iter().zip(own) {
                        ctx.write(f, v);
                    }
                }
                ctx.skip_instruction(exit);
                Handled::Yes
            }
            (true, END) => {
                let Some((exits, ints, n)) = self.begin.take() else {
                    fail(
                        format_args!("L2's ring-3 section"),
                        format_args!("BEGIN before END"),
                        format_args!("END alone"),
                    );
                };
                let during = ctx.exits - exits - 1;
                let int_during = ctx.interrupt_exits - ints;
                test_assert_eq!(
                    during - int_during,
                    0u64,
                    "VM exits other than external interrupts during L2's ring-3 section"
                );
                let r = &ctx.regs.gpr;
                test_assert_eq!(r[gpr::RSI], n, "L2 ring-3 input");
                test_assert_eq!(r[gpr::RBX], expected_result(n), "L2 ring-3 result");
                test_assert_eq!(
                    r[gpr::RCX],
                    ring3::FAULTS.len() as u64,
                    "faults taken in L2's ring 3"
                );
                test_assert_eq!(
                    r[gpr::RDX],
                    1u64,
                    "system calls from L2's ring 3 before exit"
                );
                ctx.write(F::ExceptionBitmap, self.saved_bitmap);
                ctx.write(F::PageFaultErrorCodeMask, self.saved_pfec.0);
                ctx.write(F::PageFaultErrorCodeMatch, self.saved_pfec.1);
                for (f, v) in TABLE_FIELDS.into_iter().zip(self.saved_tables) {
                    ctx.write(f, v);
                }
                self.interrupt_exits += int_during;
                self.sections += 1;
                ctx.skip_instruction(exit);
                Handled::Yes
            }
            _ => Handled::NotMine,
        }
    }

    fn count(&self) -> u64 {
        self.sections
    }
}
