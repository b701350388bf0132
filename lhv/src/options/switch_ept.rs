//! SWITCH_EPT (0x8, needs EPT): four EPT hierarchies derived from the EPT
//! option's (they share its page directories, hole included) differ in
//! what the two test pages at guest-physical 2 GiB map to: hierarchy `k`
//! maps page 0 to marker page `k` and page 1 to marker page `k + 1 mod 4`.
//!
//! Each iteration L2 asks L1 for the next step (VMCALL NEXT) and L1, on
//! that exit, before resuming L2:
//! - steps 0-2: switches the EPTP to hierarchy `iter + step mod 4`
//!   (INVEPT single-context on it, as the shared tables may have changed);
//! - step 3: remaps the current hierarchy's page 0 to a spare marker page
//!   and flushes with single-context INVEPT (SDM 29.4.3.1), right after L2
//!   read through the old mapping;
//! - step 4: restores it and flushes with all-context INVEPT.
//!
//! L1 returns the marker values L2 must read (which tell L2 which EPTP is
//! in use); L2 checks them and reports what it read (VMCALL REPORT), which
//! L1 checks again. Before each iteration L1 also runs the INVEPT operands
//! that must fail with error 28: types 0 and 3, single-context with
//! invalid EPTPs (SDM 31.3), and all-context where unsupported.

use lhv::ept_variants::{
    self, Bump, Derived, PAGE_4K, SWITCH_GIB, SWITCH_TEST_GPA, marker, scratch,
};
use lhv::invvpid_cases::Expect;
use lhv::opt::LhvOpt;
use shared::ept::{EptConfig, EptPerms, walk};
use shared::mem::PhysMemory;
use shared::vmx::exit::ExitReason;
use shared::vmx::{VmFail, VmInstructionError, VmcsField as F, VmxCaps};

use super::ept_common::{self, IdentityMem};
use super::{Handled, TestOption};
use crate::assert::{test_assert, test_assert_eq};
use crate::exit::{Exit, gpr};
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::test_loop::Ctx;

/// Hierarchies cycled.
const N: usize = 4;
/// The spare marker page (step 3).
const SPARE: u64 = N as u64;
/// Steps per iteration.
const STEPS: u8 = 5;
/// Spare frames per set of hierarchy frames, beyond what a build takes.
const SET_MARGIN_FRAMES: u64 = 2;

/// L2 asks for the next step: L1 answers RBX = 1 (go) or 0 (done), RCX =
/// the qword index to read, RDX/RSI = the values expected in pages 0/1.
const NEXT: u64 = l2::call_number(LhvOpt::SWITCH_EPT, 1);
/// L2 reports what it read: RBX/RCX = pages 0/1.
const REPORT: u64 = l2::call_number(LhvOpt::SWITCH_EPT, 2);

fn l2_action(_env: &L2Env) {
    loop {
        let r = l2::vmcall(NEXT, l2::Args::default());
        if r.rbx == 0 {
            break;
        }
        let i = r.rcx as usize % 512;
        let read = |gpa: u64| {
            // SAFETY: the test pages are in LHV's identity map (2 GiB) and
            // mapped by every SWITCH_EPT hierarchy to a marker page.
            unsafe { ::core::ptr::read_volatile((gpa as *const u64).add(i)) }
        };
        let (v0, v1) = (read(SWITCH_TEST_GPA[0]), read(SWITCH_TEST_GPA[1]));
        l2_assert_eq!(
            v0,
            r.rdx,
            "SWITCH_EPT: test page 0 through the current EPTP"
        );
        l2_assert_eq!(
            v1,
            r.rsi,
            "SWITCH_EPT: test page 1 through the current EPTP"
        );
        l2::vmcall(
            REPORT,
            l2::Args {
                rbx: v0,
                rcx: v1,
                ..l2::Args::default()
            },
        );
    }
}

/// The SWITCH_EPT checks of one CPU.
pub struct SwitchEpt {
    ready: bool,
    base_root: u64,
    hier: [Derived; N],
    markers: u64,
    frames: Bump,
    /// Where the scratch frames start, how many bytes one build of the
    /// four hierarchies takes (a "set", margin included), and which set
    /// they are in now (`mode=soak` moves them, see [`SwitchEpt::rederive`]).
    frames_base: u64,
    set_bytes: u64,
    set: u64,
    cfg: Option<EptConfig>,
    step: u8,
    current: usize,
    index: u64,
    expect: [u64; 2],
    reported: bool,
    checks: u64,
}

impl SwitchEpt {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            ready: false,
            base_root: 0,
            hier: [Derived {
                pml4: 0,
                pdpt: 0,
                pd: 0,
                gib: 0,
            }; N],
            markers: 0,
            frames: Bump { next: 0, end: 0 },
            frames_base: 0,
            set_bytes: 0,
            set: 0,
            cfg: None,
            step: 0,
            current: 0,
            index: 0,
            expect: [0; 2],
            reported: true,
            checks: 0,
        }
    }

    fn marker_pa(&self, m: u64) -> u64 {
        self.markers + m * PAGE_4K
    }

    fn cfg(&self) -> EptConfig {
        self.cfg.expect("set in setup")
    }

    /// Maps hierarchy `k`'s test page `page` to marker page `m`.
    fn map_test_page(&mut self, k: usize, page: usize, m: u64) {
        let cfg = self.cfg();
        let (root, hpa) = (self.hier[k].pml4, self.marker_pa(m));
        let r = ept_variants::remap_4k(
            &mut IdentityMem,
            &mut self.frames,
            &cfg,
            root,
            SWITCH_TEST_GPA[page],
            hpa,
        );
        test_assert!(r.is_ok(), "SWITCH_EPT: remap a test page", "success", r);
    }

    /// Makes hierarchy `k` L2's and flushes what the processor cached for it.
    fn select(&mut self, ctx: &mut Ctx, k: usize) {
        let eptp = self.hier[k].eptp().0;
        ctx.write(F::EptPointer, eptp);
        ept_common::invept_ok(ctx, 1, eptp, "single-context on switching");
        self.current = k;
    }

    /// The marker values at qword `index` L2 must read in hierarchy `k`
    /// with page 0 mapped to marker `m0`.
    fn expected(&self, cpu: usize, k: usize, m0: u64) -> [u64; 2] {
        let m1 = ((k + 1) % N) as u64;
        [marker(cpu, m0, self.index), marker(cpu, m1, self.index)]
    }

    fn invalid_invepts(&mut self, ctx: &Ctx) {
        let cap = &ctx.caps.ept_vpid;
        let cfg = self.cfg();
        let eptp = self.hier[0].eptp().0;
        let mut cases = [(0u64, 0u64, ""); 7];
        cases[..6].copy_from_slice(&ept_variants::invalid_invept_cases(eptp, cfg.max_phys_addr));
        cases[6] = (2, 0, "all-context");
        for (kind, e, what) in cases {
            let want = match ept_variants::invept_expect(cap, &cfg, kind, e) {
                Expect::Success => Ok(()),
                Expect::InvalidOperand => Err(VmFail::Valid(
                    VmInstructionError::InvalidInveptInvvpidOperand,
                )),
            };
            let got = ept_common::invept_raw(ctx, kind, e);
            test_assert!(
                got == want,
                format_args!("INVEPT {what} (EPTP {e:#x})"),
                want,
                got
            );
            self.checks += 1;
        }
    }

    /// Builds the four hierarchies from `self.frames` and checks their
    /// walks.
    fn build(&mut self) {
        let mem = &mut IdentityMem;
        let cfg = self.cfg();
        for k in 0..N {
            let d = ept_variants::derive(mem, &mut self.frames, self.base_root, SWITCH_GIB);
            test_assert!(d.is_ok(), "SWITCH_EPT: derive a hierarchy", "success", d);
            self.hier[k] = d.unwrap_or_default();
            self.map_test_page(k, 0, k as u64);
            self.map_test_page(k, 1, ((k + 1) % N) as u64);
        }
        // The tables as the processor will walk them.
        for (k, d) in self.hier.iter().enumerate() {
            for (page, m) in [(0, k as u64), (1, ((k + 1) % N) as u64)] {
                let t = walk(
                    mem,
                    d.eptp(),
                    SWITCH_TEST_GPA[page] + 8,
                    EptPerms::READ,
                    &cfg,
                )
                .map(|t| t.hpa);
                test_assert_eq!(
                    t,
                    Ok(self.marker_pa(m) + 8),
                    "SWITCH_EPT: walk of a test page"
                );
            }
            let code = shared::boot::layout::phys_of(l2::l2_main as *const u8);
            let t = walk(mem, d.eptp(), code, EptPerms::EXECUTE, &cfg).map(|t| t.hpa);
            test_assert_eq!(t, Ok(code), "SWITCH_EPT: walk of L2's code");
        }
    }

    /// How many sets of hierarchy frames the scratch frames hold.
    fn sets(&self) -> u64 {
        (scratch::FRAME_COUNT * PAGE_4K)
            .checked_div(self.set_bytes)
            .unwrap_or(0)
    }

    /// `mode=soak`'s EPT12 churn: builds the four hierarchies again in the
    /// next set of frames, so that L2 runs with EPTP12s that L0 has not
    /// seen for [`SwitchEpt::sets`] - 1 churns (its EPT02 roots for the old
    /// ones age out of its LRU, and their frames go back to its pool). The
    /// old tables stay as they are until their set comes round again;
    /// [`SwitchEpt::select`] flushes every EPTP (single-context INVEPT)
    /// before L2 uses it, so nothing cached from a set's previous life can
    /// be used (SDM 29.4.3.1). Returns the new hierarchies' first EPTP (0
    /// when the option is not set up).
    pub fn rederive(&mut self) -> u64 {
        if !self.ready {
            return 0;
        }
        self.set = (self.set + 1) % self.sets();
        let start = self.frames_base + self.set * self.set_bytes;
        ept_common::zero(&mut IdentityMem, start, self.set_bytes);
        self.frames = Bump {
            next: start,
            end: start + self.set_bytes,
        };
        self.build();
        self.hier[0].eptp().0
    }
}

impl TestOption for SwitchEpt {
    fn bit(&self) -> LhvOpt {
        LhvOpt::SWITCH_EPT
    }

    fn unsupported(&self, caps: &VmxCaps) -> Option<&'static str> {
        let e = &caps.ept_vpid;
        if !(caps.has_ept() && e.walk_length_4 && e.memory_type_wb && e.pages_2m) {
            Some("the CPU lacks EPT with a 4-level walk, WB and 2-MiB pages")
        } else if !(e.invept && e.invept_single_context) {
            Some("the CPU lacks single-context INVEPT")
        } else {
            None
        }
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        let Some(base) = ept_common::base(ctx, "SWITCH_EPT", "EPT tables") else {
            return;
        };
        let (chunk, cfg) = (base.chunk, base.cfg);
        self.cfg = Some(cfg);
        self.base_root = base.root;
        let mem = &mut IdentityMem;
        self.frames = Bump {
            next: chunk + scratch::FRAMES,
            end: chunk + scratch::FRAMES + scratch::FRAME_COUNT * PAGE_4K,
        };
        ept_common::zero(mem, self.frames.next, scratch::FRAME_COUNT * PAGE_4K);
        self.frames_base = self.frames.next;
        self.markers = chunk + scratch::MARKERS;
        for m in 0..=SPARE {
            for i in 0..512 {
                let r = mem.write_u64(self.marker_pa(m) + 8 * i, marker(ctx.cpu, m, i));
                test_assert!(r.is_ok(), "SWITCH_EPT: marker write", "success", r);
            }
        }
        self.build();
        // One set: what the build took, and room for the tables a later
        // remap may add (steps 3 and 4 reuse the build's).
        self.set_bytes = self.frames.next - self.frames_base + SET_MARGIN_FRAMES * PAGE_4K;
        self.frames.end = self.frames_base + self.set_bytes;
        test_assert!(
            self.sets() >= 2,
            "SWITCH_EPT: sets of hierarchy frames in the scratch chunk",
            "at least 2",
            self.sets()
        );
        self.ready = true;
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        if !self.ready {
            return;
        }
        // Other options edit the base's PDPT (LARGE_PAGE's 1-GiB alias).
        for d in self.hier {
            let r = ept_variants::sync(&mut IdentityMem, &d, self.base_root);
            test_assert!(r.is_ok(), "SWITCH_EPT: sync a hierarchy", "success", r);
        }
        self.invalid_invepts(ctx);
        self.step = 0;
        self.reported = true;
        self.select(ctx, ctx.iter as usize % N);
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        if exit.reason != ExitReason::Vmcall {
            return Handled::NotMine;
        }
        let rax = ctx.regs.gpr[gpr::RAX];
        if rax == NEXT {
            test_assert!(
                self.reported,
                "SWITCH_EPT: L2 reported the last step",
                true,
                false
            );
            let cpu = ctx.cpu;
            let go = self.ready && self.step < STEPS;
            if go {
                self.index = (ctx.iter * u64::from(STEPS) + u64::from(self.step)) * 37 % 512;
                let k = self.current;
                self.expect = match self.step {
                    0..=2 => {
                        let k = (ctx.iter as usize + self.step as usize) % N;
                        self.select(ctx, k);
                        self.expected(cpu, k, k as u64)
                    }
                    3 => {
                        // L2 just read through this hierarchy's page 0.
                        self.map_test_page(k, 0, SPARE);
                        ept_common::invept_ok(ctx, 1, self.hier[k].eptp().0, "single-context");
                        self.expected(cpu, k, SPARE)
                    }
                    _ => {
                        self.map_test_page(k, 0, k as u64);
                        let kind = if ctx.caps.ept_vpid.invept_all_context {
                            2
                        } else {
                            1
                        };
                        ept_common::invept_ok(ctx, kind, self.hier[k].eptp().0, "after restoring");
                        self.expected(cpu, k, k as u64)
                    }
                };
                self.step += 1;
                self.reported = false;
            }
            let g = &mut ctx.regs.gpr;
            g[gpr::RBX] = go.into();
            g[gpr::RCX] = self.index;
            g[gpr::RDX] = self.expect[0];
            g[gpr::RSI] = self.expect[1];
        } else if rax == REPORT {
            let g = &ctx.regs.gpr;
            let got = [g[gpr::RBX], g[gpr::RCX]];
            test_assert!(
                got == self.expect,
                format_args!(
                    "SWITCH_EPT: markers read by L2 (step {}, hierarchy {})",
                    self.step - 1,
                    self.current
                ),
                self.expect,
                got
            );
            test_assert_eq!(
                ctx.read(F::EptPointer),
                self.hier[self.current].eptp().0,
                "SWITCH_EPT: EPTP in the VMCS"
            );
            self.reported = true;
            self.checks += 1;
        } else {
            return Handled::NotMine;
        }
        ctx.skip_instruction(exit);
        Handled::Yes
    }

    fn count(&self) -> u64 {
        self.checks
    }
}
