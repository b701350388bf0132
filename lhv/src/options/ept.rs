//! EPT (0x4): L2 runs on an identity EPT with one 4-KiB hole. Each
//! iteration L1 unmaps the hole (and flushes with single-context INVEPT),
//! L2 reads from it, and the EPT violation must report a data read of a
//! not-present page at the right guest-physical and guest-linear addresses
//! (SDM 28.2.1 Table 28-7, 28.2.4); L1 maps the page, L2's read then
//! completes and L2 checks the value it read.

use ::core::sync::atomic::{AtomicU64, Ordering};
use lhv::ept_layout::{self, IdentityEpt, TablePhys};
use lhv::opt::LhvOpt;
use shared::boot::layout::phys_of;
use shared::percpu::MAX_CPUS;
use shared::vmx::controls::SecondaryProcBased;
use shared::vmx::exit::{EptViolationQual, ExitReason};
use shared::vmx::insn::{InveptDescriptor, InveptType, invept};
use shared::vmx::{VmcsField as F, VmxCaps};

use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::Exit;
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::percpu_cell::per_cpu_static;
use crate::test_loop::Ctx;
use crate::vmcs_setup::Controls;

/// The page L2 reads through the hole.
#[repr(C, align(4096))]
struct HolePage([u64; 512]);

per_cpu_static!(
    static TABLES: IdentityEpt = IdentityEpt::new();
);
per_cpu_static!(
    static HOLE: HolePage = HolePage([0; 512]);
);

/// Linear address of each CPU's hole page (L2 reads it; set in `setup`).
static HOLE_VA: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// L2 reports the read value and the violation count with this VMCALL.
const CHECK: u64 = l2::call_number(LhvOpt::EPT, 1);

fn pattern(cpu: usize, index: usize) -> u64 {
    0x4550_5400_0000_0000 ^ ((cpu as u64) << 32) ^ index as u64
}

fn index_for(iter: u64) -> usize {
    (iter as usize * 7) % 512
}

fn l2_action(env: &L2Env) {
    let va = HOLE_VA[env.cpu].load(Ordering::Relaxed);
    let i = index_for(env.iter);
    // SAFETY: the hole page is a static of LHV's image; the read exits to
    // L1 with an EPT violation and completes after L1 maps the page.
    let v = unsafe { ::core::ptr::read_volatile((va as *const u64).add(i)) };
    l2_assert_eq!(v, pattern(env.cpu, i), "value read through the EPT hole");
    l2::vmcall(CHECK, l2::Args::default());
}

/// The EPT checks of one CPU.
pub struct Ept {
    tables: Option<&'static mut IdentityEpt>,
    phys: Option<TablePhys>,
    hole_pa: u64,
    hole_va: u64,
    eptp: u64,
    violations_this_iter: u64,
    violations: u64,
}

impl Ept {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            tables: None,
            phys: None,
            hole_pa: 0,
            hole_va: 0,
            eptp: 0,
            violations_this_iter: 0,
            violations: 0,
        }
    }

    fn set_hole(&mut self, ctx: &Ctx, present: bool) {
        let hole = self.hole_pa;
        if let Some(t) = self.tables.as_deref_mut() {
            t.set_hole_present(hole, present);
        }
        // SDM 29.4.3.1: after making an entry less permissive, flush the
        // EPTP's cached translations with INVEPT.
        let _ = ctx;
        let desc = InveptDescriptor {
            eptp: self.eptp,
            reserved: 0,
        };
        // SAFETY: VMX root operation; support checked in `unsupported`.
        let r = unsafe { invept(InveptType::SingleContext, &desc) };
        test_assert!(r.is_ok(), "single-context INVEPT", "success", r);
    }
}

impl TestOption for Ept {
    fn bit(&self) -> LhvOpt {
        LhvOpt::EPT
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        let e = &caps.ept_vpid;
        if !caps.has_ept() {
            Some("the CPU lacks EPT")
        } else if !(e.walk_length_4 && e.memory_type_wb && e.pages_2m) {
            Some("EPT lacks a 4-level walk, WB memory type or 2-MiB pages")
        } else if !(e.invept && e.invept_single_context) {
            Some("the CPU lacks single-context INVEPT")
        } else {
            None
        }
    }

    fn request(&self, c: &mut Controls) {
        c.proc2 |= SecondaryProcBased::ENABLE_EPT;
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        let tables = TABLES.claim(ctx.cpu);
        let hole = HOLE.claim(ctx.cpu);
        for (i, q) in hole.0.iter_mut().enumerate() {
            *q = pattern(ctx.cpu, i);
        }
        let phys = TablePhys {
            pml4: phys_of(&tables.pml4),
            pdpt: phys_of(&tables.pdpt),
            pd: [0, 1, 2, 3].map(|i| phys_of(&tables.pd[i])),
            pt: phys_of(&tables.pt),
        };
        self.hole_pa = phys_of(hole as *const HolePage);
        self.hole_va = hole as *const HolePage as u64;
        HOLE_VA[ctx.cpu].store(self.hole_va, Ordering::Relaxed);
        tables.build(&phys, self.hole_pa);
        test_assert_eq!(
            tables.translate(&phys, self.hole_pa + 8),
            None,
            "EPT translation of the hole"
        );
        let kernel = phys_of(l2::l2_main as *const u8);
        test_assert_eq!(
            tables.translate(&phys, kernel),
            Some(kernel),
            "EPT translation of LHV's code"
        );
        self.eptp = ept_layout::eptp(phys.pml4, false);
        self.tables = Some(tables);
        self.phys = Some(phys);
        ctx.write(F::EptPointer, self.eptp);
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        self.violations_this_iter = 0;
        self.set_hole(ctx, false);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        match exit.reason {
            ExitReason::EptViolation => {
                let i = index_for(ctx.iter) as u64;
                let gpa = ctx.read(F::GuestPhysicalAddress);
                test_assert_eq!(
                    gpa,
                    self.hole_pa + 8 * i,
                    "EPT violation guest-physical address"
                );
                let gla = ctx.read(F::GuestLinearAddress);
                test_assert_eq!(
                    gla,
                    self.hole_va + 8 * i,
                    "EPT violation guest-linear address"
                );
                let q = EptViolationQual(exit.qualification);
                // A data read (bit 0) of a not-present page (bits 5:3 = 0),
                // linear address valid and the access a translation (bits 7,
                // 8) (SDM Table 28-7).
                let got = (
                    q.read(),
                    q.write(),
                    q.fetch(),
                    q.readable(),
                    q.writable(),
                    q.executable(),
                    q.gla_valid(),
                    q.gla_is_translation(),
                );
                let want = (true, false, false, false, false, false, true, Some(true));
                test_assert!(
                    got == want,
                    "EPT violation qualification (r,w,x,R,W,X,gla,translation)",
                    want,
                    got
                );
                self.violations_this_iter += 1;
                self.violations += 1;
                self.set_hole(ctx, true);
                Handled::Yes
            }
            ExitReason::Vmcall if ctx.regs.gpr[crate::exit::gpr::RAX] == CHECK => {
                test_assert_eq!(
                    self.violations_this_iter,
                    1u64,
                    "EPT violations for one read of the hole"
                );
                ctx.skip_instruction(exit);
                Handled::Yes
            }
            _ => Handled::NotMine,
        }
    }

    fn count(&self) -> u64 {
        self.violations
    }
}
