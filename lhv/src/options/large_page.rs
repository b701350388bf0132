//! LARGE_PAGE (0x100, needs EPT): two 2-MiB regions A and B of free RAM,
//! mapped by 2-MiB leaves of the EPT option's hierarchy, are swapped
//! (guest-physical A maps host-physical B and B maps A) on even iterations
//! and mapped back on odd ones, each change flushed with single-context
//! INVEPT. Every iteration L1 writes fresh patterns (dependent on the
//! host-physical address and the iteration) into A and B through its own
//! view; L2 reads one qword of every 4-KiB page of both through its view
//! and checks them against the mapping in force; L2 then writes a value
//! through each, and L1 checks where it landed (SDM 29.3.2, Table 29-4).
//! Where the CPU has 1-GiB pages, guest-physical `[1, 2) GiB` is switched
//! to a 1-GiB leaf onto host-physical `[0, 1 GiB)` two iterations out of
//! four, and L2 reads A through it too.

use lhv::ept_variants::{
    self, ALIAS_GIB, Alias1G, Bump, PAGE_1G, PAGE_2M, PAGE_4K, large_pattern, scratch,
};
use lhv::opt::LhvOpt;
use shared::cpu_println;
use shared::ept::{EptConfig, EptPerms, Eptp, PageSize, walk};
use shared::mem::PhysMemory;
use shared::vmx::exit::ExitReason;
use shared::vmx::{VmcsField as F, VmxCaps};

use super::ept_common::{self, IdentityMem};
use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::test_loop::Ctx;

/// L2 asks for the layout: L1 answers RBX = A, RCX = B, RDX = bit 0
/// swapped, bit 1 the 1-GiB alias on (RBX = 0: nothing to do).
const QUERY: u64 = l2::call_number(LhvOpt::LARGE_PAGE, 1);
/// L2 reports: RBX = qwords checked, RCX = the value it wrote through A,
/// RDX = through B, RSI = the offset of both writes.
const REPORT: u64 = l2::call_number(LhvOpt::LARGE_PAGE, 2);

const SWAPPED: u64 = 1;
const ALIAS: u64 = 2;

/// The offset in the 2-MiB region of the qword checked in 4-KiB page `p`.
const fn offset(p: u64, iter: u64) -> u64 {
    p * PAGE_4K + ((p * 3 + iter * 5) % 512) * 8
}

/// The offset of L2's writes.
const fn write_offset(iter: u64) -> u64 {
    offset((iter * 11) % 512, iter + 1) ^ 8
}

fn l2_action(env: &L2Env) {
    let r = l2::vmcall(QUERY, l2::Args::default());
    let (a, b, flags) = (r.rbx, r.rcx, r.rdx);
    if a == 0 {
        return;
    }
    let swapped = flags & SWAPPED != 0;
    let (ha, hb) = if swapped { (b, a) } else { (a, b) };
    let read = |va: u64| {
        // SAFETY: A, B and their 1-GiB alias are in LHV's identity map and
        // mapped by L2's EPT to RAM L1 reserved for this option.
        unsafe { ::core::ptr::read_volatile(va as *const u64) }
    };
    let mut checked = 0u64;
    for p in 0..(PAGE_2M / PAGE_4K) {
        let o = offset(p, env.iter);
        l2_assert_eq!(
            read(a + o),
            large_pattern(ha + o, env.iter),
            "LARGE_PAGE: read through A"
        );
        l2_assert_eq!(
            read(b + o),
            large_pattern(hb + o, env.iter),
            "LARGE_PAGE: read through B"
        );
        checked += 2;
        if flags & ALIAS != 0 {
            let v = read(ALIAS_GIB * PAGE_1G + a + o);
            l2_assert_eq!(
                v,
                large_pattern(a + o, env.iter),
                "LARGE_PAGE: read through 1 GiB"
            );
            checked += 1;
        }
    }
    let o = write_offset(env.iter);
    let (wa, wb) = (
        0x4c32_0000_0000_0a0a ^ env.iter,
        0x4c32_0000_0000_0b0b ^ env.iter,
    );
    // SAFETY: as above; L1 reads these back.
    unsafe {
        ::core::ptr::write_volatile((a + o) as *mut u64, wa);
        ::core::ptr::write_volatile((b + o) as *mut u64, wb);
    }
    l2::vmcall(
        REPORT,
        l2::Args {
            rbx: checked,
            rcx: wa,
            rdx: wb,
            rsi: o,
        },
    );
}

/// The LARGE_PAGE checks of one CPU.
pub struct LargePage {
    ready: bool,
    base_root: u64,
    a: u64,
    b: u64,
    alias: Option<Alias1G>,
    cfg: Option<EptConfig>,
    swapped: bool,
    alias_on: bool,
    reported: bool,
    checks: u64,
}

impl LargePage {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            ready: false,
            base_root: 0,
            a: 0,
            b: 0,
            alias: None,
            cfg: None,
            swapped: false,
            alias_on: false,
            reported: true,
            checks: 0,
        }
    }

    /// The host-physical address guest-physical `gpa` in A or B maps to now.
    fn host_of(&self, gpa: u64) -> u64 {
        let (base, off) = (gpa & !(PAGE_2M - 1), gpa & (PAGE_2M - 1));
        let other = if base == self.a { self.b } else { self.a };
        (if self.swapped { other } else { base }) + off
    }

    fn check_walk(&self, gpa: u64, want: u64, size: PageSize) {
        let cfg = self.cfg.expect("set in setup");
        let eptp = Eptp::new(self.base_root, shared::ept::MemoryType::WriteBack, 4, false);
        let t = walk(&IdentityMem, eptp, gpa, EptPerms::READ, &cfg).map(|t| (t.hpa, t.page_size));
        test_assert_eq!(
            t,
            Ok((want, size)),
            "LARGE_PAGE: walk of the EPT option's tables"
        );
    }
}

impl TestOption for LargePage {
    fn bit(&self) -> LhvOpt {
        LhvOpt::LARGE_PAGE
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        let e = &caps.ept_vpid;
        if !(caps.has_ept() && e.walk_length_4 && e.memory_type_wb) {
            Some("the CPU lacks EPT with a 4-level walk and WB")
        } else if !e.pages_2m {
            Some("EPT lacks 2-MiB pages")
        } else if !(e.invept && e.invept_single_context) {
            Some("the CPU lacks single-context INVEPT")
        } else {
            None
        }
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        let Some(base) = ept_common::base(ctx, "LARGE_PAGE", "2-MiB pages") else {
            return;
        };
        let chunk = base.chunk;
        self.cfg = Some(base.cfg);
        self.base_root = base.root;
        self.a = chunk + scratch::LARGE_A;
        self.b = chunk + scratch::LARGE_B;
        for r in [self.a, self.b] {
            self.check_walk(r + 0x1238, r + 0x1238, PageSize::Size2M);
        }
        if !ctx.caps.ept_vpid.pages_1g {
            cpu_println!("SKIP LARGE_PAGE 1-GiB alias: EPT lacks 1-GiB pages");
        } else if chunk + scratch::SIZE > PAGE_1G {
            cpu_println!("SKIP LARGE_PAGE 1-GiB alias: scratch RAM above 1 GiB");
        } else {
            let alias = Alias1G::new(&IdentityMem, self.base_root, ALIAS_GIB * PAGE_1G, 0);
            test_assert!(
                alias.is_ok(),
                "LARGE_PAGE: 1-GiB alias entry",
                "readable",
                alias
            );
            self.alias = alias.ok();
        }
        self.ready = true;
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        if !self.ready {
            return;
        }
        self.swapped = ctx.iter.is_multiple_of(2);
        self.alias_on = self.alias.is_some() && ctx.iter % 4 < 2;
        let cfg = self.cfg.expect("set in setup");
        let mem = &mut IdentityMem;
        // No frames: both regions are 2-MiB leaves rewritten in place.
        let mut no_frames = Bump { next: 0, end: 0 };
        let r = ept_variants::set_swapped_2m(
            mem,
            &mut no_frames,
            &cfg,
            self.base_root,
            (self.a, self.b),
            self.swapped,
        );
        test_assert!(r.is_ok(), "LARGE_PAGE: swap the 2-MiB leaves", "success", r);
        if let Some(alias) = self.alias {
            let r = alias.set(mem, self.alias_on);
            test_assert!(r.is_ok(), "LARGE_PAGE: 1-GiB alias", "success", r);
        }
        self.check_walk(self.a + 8, self.host_of(self.a + 8), PageSize::Size2M);
        self.check_walk(self.b + 8, self.host_of(self.b + 8), PageSize::Size2M);
        if self.alias_on {
            self.check_walk(ALIAS_GIB * PAGE_1G + self.a, self.a, PageSize::Size1G);
        }
        // Fresh patterns through L1's (host-physical) view.
        for p in 0..(PAGE_2M / PAGE_4K) {
            let o = offset(p, ctx.iter);
            for h in [self.a + o, self.b + o] {
                let r = mem.write_u64(h, large_pattern(h, ctx.iter));
                test_assert!(r.is_ok(), "LARGE_PAGE: pattern write", "success", r);
            }
        }
        // SDM 29.4.3.1: flush the mappings of the EPTP in use (SWITCH_EPT,
        // later in the registry, flushes the EPTP it switches to).
        let eptp = ctx.read(F::EptPointer);
        ept_common::invept_ok(ctx, 1, eptp, "single-context after the swap");
        self.reported = false;
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        if exit.reason != ExitReason::Vmcall {
            return Handled::NotMine;
        }
        let rax = ctx.regs.gpr[gpr::RAX];
        if rax == QUERY {
            let g = &mut ctx.regs.gpr;
            let ready = self.ready;
            g[gpr::RBX] = if ready { self.a } else { 0 };
            g[gpr::RCX] = self.b;
            g[gpr::RDX] = u64::from(self.swapped) * SWAPPED + u64::from(self.alias_on) * ALIAS;
        } else if rax == REPORT {
            let g = ctx.regs.gpr;
            let pages = PAGE_2M / PAGE_4K;
            let want = 2 * pages + if self.alias_on { pages } else { 0 };
            test_assert_eq!(g[gpr::RBX], want, "LARGE_PAGE: qwords L2 checked");
            let o = write_offset(ctx.iter);
            test_assert_eq!(g[gpr::RSI], o, "LARGE_PAGE: offset of L2's writes");
            // L1's direct view of where L2's writes went.
            for (gpa, v) in [(self.a + o, g[gpr::RCX]), (self.b + o, g[gpr::RDX])] {
                let got = IdentityMem.read_u64(self.host_of(gpa));
                test_assert_eq!(got, Ok(v), "LARGE_PAGE: L2's write seen by L1");
            }
            self.reported = true;
            self.checks += 1;
        } else {
            return Handled::NotMine;
        }
        ctx.skip_instruction(exit);
        Handled::Yes
    }

    fn after_iteration(&mut self, _ctx: &mut Ctx) {
        test_assert!(
            !self.ready || self.reported,
            "LARGE_PAGE: L2 reported this iteration",
            true,
            false
        );
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
