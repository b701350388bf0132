//! `mode=soak`: test mode's loop (every CPU, the options of `lhv_opt=`, `iters=N`)
//! with the duties of issue 11 items 3 and 4 between iterations, to show that a
//! long SMP run under L0 neither deadlocks, loses NMIs nor leaks L0's memory:
//!
//! - churn, every `soak_churn=K` iterations on every CPU: the VMCS moves to the
//!   next region of a ring of [`RING`] (VMCLEAR of the old one, the fields copied
//!   by VMREAD/VMWRITE, VMLAUNCH again), after a VMCLEAR and VMPTRLD of every
//!   other ring region, so that L0's VMCS12 cache (4 slots) loads, evicts and
//!   writes back; with SWITCH_EPT its four EPT12 hierarchies are built again at
//!   new addresses (fresh EPTP12s for L0's EPT02 root cache);
//! - MTRR writes, every `soak_mtrr=M` iterations on the BSP: one variable range
//!   switched on and off, which makes L0 re-type EPT01 and shoot the old
//!   types down on every CPU while the other CPUs run L2;
//! - L0's free frames (Stats, RDI: its pool plus the EPT02 free list), read on
//!   the BSP at two quiet points: after `soak_warmup=W` iterations and after the
//!   last, each time with every CPU stopped at a barrier and its EPT02 roots
//!   dropped (INVEPT all-context): the two must be equal;
//! - progress: test mode prints "LHV test iter N" after every iteration; the
//!   soak prints it every `soak_progress=P` iterations (and after the last).
//!   On 4 CPUs the lines of every iteration, sent one CPU at a time through
//!   L0's console, took about a seventh of an iteration; a 10,000-iteration
//!   run needs progress, not 40,000 lines;
//! - NMI accounting: every NMI LHV sends, and every one a CPU receives (NMI exit
//!   or LHV's handler, injected virtual NMIs not counted); at the end, with no
//!   NMI in flight, each CPU must have received exactly what was sent to it.

use ::core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use lhv::opt::LhvOpt;
use shared::boot::{BootInfo, layout};
use shared::vmx::VmcsField;
use shared::vmx::insn::{self, VmcsRegion};
use shared::{cmdline, cpu_println, println, x86};

use crate::assert::{fail, test_assert, test_assert_eq};
use crate::options::Registry;
use crate::options::nmi;
use crate::percpu_cell::per_cpu_static;
use crate::test_loop::{self, Ctx};

/// VMCS regions each CPU moves its VMCS through: more than L0's 4 VMCS12
/// cache slots, so that loading them all evicts.
pub const RING: usize = 6;
/// Defaults of `soak_churn=`, `soak_mtrr=`, `soak_warmup=`, `soak_progress=`.
const DEFAULT_CHURN: u64 = 8;
const DEFAULT_MTRR: u64 = 4;
const DEFAULT_WARMUP: u64 = 8;
const DEFAULT_PROGRESS: u64 = 100;
/// Polls at a soak barrier before it counts as a deadlock (another CPU may
/// be in the middle of an iteration, thousands of L0 exits).
const BARRIER_POLLS: u64 = 4_000_000_000;

/// MTRR MSRs and fields (SDM Vol. 3A 12.11.2.3, 12.11.2.4).
const IA32_MTRRCAP: u32 = 0xfe;
const IA32_MTRR_PHYSBASE0: u32 = 0x200;
const MTRRCAP_VCNT: u64 = 0xff;
const MTRR_PHYSMASK_VALID: u64 = 1 << 11;
const MTRR_TYPE_WRITE_THROUGH: u64 = 4;
const CPUID1_EDX_MTRR: u32 = 1 << 12;
/// The range the BSP's MTRR writes type: 2 MiB at 16 MiB (any RAM serves:
/// only memory types change, and Bochs ignores them).
const MTRR_RANGE_BASE: u64 = 16 << 20;
const MTRR_RANGE_SIZE: u64 = 2 << 20;

/// `mode=soak`'s settings.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    churn: u64,
    mtrr: u64,
    warmup: u64,
    progress: u64,
    /// Test mode's `iters=` (the soak needs one).
    iters: u64,
}

static CONFIG: spin::Once<Option<Config>> = spin::Once::new();

/// Reads `mode=soak` and its words (BSP, before the APs start); `iters` is
/// test mode's.
pub fn configure(boot: &BootInfo, iters: Option<u64>) {
    let c = boot.cmdline();
    let cfg = (cmdline::get(c, "mode") == Some("soak")).then(|| Config {
        iters: iters.unwrap_or(0),
        churn: cmdline::get_num(c, "soak_churn")
            .unwrap_or(DEFAULT_CHURN)
            .max(1),
        mtrr: cmdline::get_num(c, "soak_mtrr")
            .unwrap_or(DEFAULT_MTRR)
            .max(1),
        warmup: cmdline::get_num(c, "soak_warmup")
            .unwrap_or(DEFAULT_WARMUP)
            .max(1),
        progress: cmdline::get_num(c, "soak_progress")
            .unwrap_or(DEFAULT_PROGRESS)
            .max(1),
    });
    if let Some(s) = cfg {
        println!(
            "SOAK: churn every {} iterations, MTRR write every {}, pool read after {} and at the end, progress every {}",
            s.churn, s.mtrr, s.warmup, s.progress
        );
        // The pool's start figure is read at the warm-up point.
        if iters.is_none_or(|n| n <= s.warmup) {
            println!(
                "TEST_ASSERT failed: mode=soak iters, expected more than soak_warmup={}, got {iters:?}",
                s.warmup
            );
            shared::platform::shutdown(1);
        }
    }
    CONFIG.call_once(|| cfg);
}

per_cpu_static!(
    static REGIONS: [VmcsRegion; RING] = [const { VmcsRegion::new() }; RING];
);

/// L0's free frames at the warm-up point (BSP; `u64::MAX`: not read).
static POOL_START: AtomicU64 = AtomicU64::new(u64::MAX);
/// The fewest free frames seen by the BSP's samples (one per churn).
static POOL_LOW: AtomicU64 = AtomicU64::new(u64::MAX);

/// The soak's barriers, one counter each (every CPU passes each once).
#[derive(Clone, Copy, Debug)]
enum Barrier {
    /// Every CPU has dropped its EPT02 roots at the warm-up point.
    StartQuiet,
    /// The BSP has read the pool: go on.
    StartRead,
    /// Every CPU has finished its iterations and dropped its roots.
    EndQuiet,
    /// Every CPU has checked its NMI accounting.
    EndChecked,
    /// The BSP has checked the pool (L0 prints its figures on the Stats
    /// call: the other CPUs print nothing meanwhile, so that no console
    /// byte is dropped, see `shared::console::serial`).
    EndReported,
}

static ARRIVED: [AtomicUsize; 5] = [const { AtomicUsize::new(0) }; 5];

/// Waits until every CPU has reached `b`; a timeout is a failed check (a
/// CPU is stuck: the deadlock the soak looks for).
fn barrier(b: Barrier) {
    let n = test_loop::cpu_count().unwrap_or(1);
    let arrived = &ARRIVED[b as usize];
    arrived.fetch_add(1, Ordering::AcqRel);
    for _ in 0..BARRIER_POLLS {
        if arrived.load(Ordering::Acquire) >= n {
            return;
        }
        x86::pause();
    }
    fail(
        format_args!("SOAK barrier {b:?}: every CPU arrives"),
        format_args!("{n} CPUs"),
        format_args!("{} (a CPU is stuck)", arrived.load(Ordering::Acquire)),
    );
}

/// The BSP's MTRR duty: one variable-range pair LHV found unused.
#[derive(Clone, Copy, Debug)]
struct Mtrr {
    base_msr: u32,
    /// PHYSBASE and PHYSMASK as LHV found them (restored at the end).
    saved: (u64, u64),
    /// PHYSMASK with the valid bit for the soak's range.
    mask: u64,
    on: bool,
}

impl Mtrr {
    /// The highest variable range, if the CPU has MTRRs and it is unused
    /// (otherwise `SKIP` says why).
    fn find() -> Option<Self> {
        let skip = |why: &str| {
            cpu_println!("SKIP soak MTRR writes: {why}");
            None
        };
        if x86::cpuid(1, 0).edx & CPUID1_EDX_MTRR == 0 {
            return skip("CPUID.1:EDX.MTRR is 0");
        }
        // SAFETY: CPUID says the MTRRs, IA32_MTRRCAP included, exist.
        let vcnt = unsafe { x86::rdmsr(IA32_MTRRCAP) } & MTRRCAP_VCNT;
        if vcnt == 0 {
            return skip("no variable ranges (IA32_MTRRCAP.VCNT = 0)");
        }
        let base_msr = IA32_MTRR_PHYSBASE0 + 2 * (vcnt as u32 - 1);
        // SAFETY: range VCNT - 1 exists (IA32_MTRRCAP).
        let saved = unsafe { (x86::rdmsr(base_msr), x86::rdmsr(base_msr + 1)) };
        if saved.1 & MTRR_PHYSMASK_VALID != 0 {
            return skip("the highest variable range is in use");
        }
        let width = crate::options::ept_common::max_phys_addr();
        let addr_mask = ((1u64 << width) - 1) & !0xfff;
        Some(Self {
            base_msr,
            saved,
            mask: (!(MTRR_RANGE_SIZE - 1) & addr_mask) | MTRR_PHYSMASK_VALID,
            on: false,
        })
    }

    fn write(&self, msr: u32, value: u64) {
        // SAFETY: a variable-range MTRR that exists, with a valid memory
        // type and mask; memory types change, never contents.
        unsafe { x86::wrmsr(msr, value) };
    }

    /// Switches the range on (write-through) or off.
    fn toggle(&mut self) {
        self.on = !self.on;
        if self.on {
            self.write(self.base_msr, MTRR_RANGE_BASE | MTRR_TYPE_WRITE_THROUGH);
            self.write(self.base_msr + 1, self.mask);
        } else {
            self.write(self.base_msr + 1, self.mask & !MTRR_PHYSMASK_VALID);
        }
    }

    fn restore(&self) {
        self.write(self.base_msr + 1, self.saved.1);
        self.write(self.base_msr, self.saved.0);
    }
}

/// One CPU's soak state.
pub struct Soak {
    cfg: Config,
    regions: &'static mut [VmcsRegion; RING],
    next: usize,
    mtrr: Option<Mtrr>,
    churns: u64,
    ept12_moves: u64,
    mtrr_writes: u64,
    /// TSC at the start (on Bochs it counts instructions: the cost of an
    /// iteration is repeatable, wall time is not).
    tsc_start: u64,
}

impl Soak {
    /// This CPU's soak state, when the run is a soak.
    pub fn new(ctx: &Ctx) -> Option<Self> {
        let cfg = (*CONFIG.get()?)?;
        let regions = REGIONS.claim(ctx.cpu);
        for r in regions.iter_mut() {
            r.stamp(ctx.caps.basic.revision_id, false);
        }
        Some(Self {
            cfg,
            regions,
            next: 0,
            mtrr: if ctx.cpu == 0 { Mtrr::find() } else { None },
            churns: 0,
            ept12_moves: 0,
            mtrr_writes: 0,
            tsc_start: x86::rdtsc(),
        })
    }

    /// Whether test mode prints its progress line after iteration `iter`.
    pub fn progress_due(&self, iter: u64) -> bool {
        let done = iter + 1;
        done.is_multiple_of(self.cfg.progress) || done == self.cfg.iters
    }

    /// The soak's duties after iteration `ctx.iter`.
    pub fn after_iteration(&mut self, ctx: &mut Ctx, registry: &mut Registry) {
        let done = ctx.iter + 1;
        if done.is_multiple_of(self.cfg.churn) {
            self.churn(ctx, registry);
        }
        if done.is_multiple_of(self.cfg.mtrr) {
            self.mtrr_write();
        }
        if done == self.cfg.warmup {
            self.quiesce(ctx);
            if ctx.cpu == 0 {
                // Whatever EPT01 tables the MTRR range needs exist from
                // here on (L0 keeps EPT01's tables, it only re-types).
                self.mtrr_write();
                self.mtrr_write();
            }
            barrier(Barrier::StartQuiet);
            if ctx.cpu == 0
                && let Some(p) = crate::l0::pool_free()
            {
                POOL_START.store(p, Ordering::Release);
                println!("SOAK pool: start={p} (after iteration {done}, every CPU quiet)");
            }
            barrier(Barrier::StartRead);
        }
    }

    /// Moves the VMCS to the next ring region, and EPT12 to new tables.
    fn churn(&mut self, ctx: &mut Ctx, registry: &mut Registry) {
        let mut saved = [(false, 0u64); VmcsField::COUNT];
        for &f in VmcsField::ALL.iter().filter(|f| !f.is_read_only()) {
            // Fields this CPU (or L0) does not have fail: not copied.
            if let Ok(v) = ctx.try_read(f) {
                saved[f.index()] = (true, v);
            }
        }
        // SAFETY: LHV's own VMCS region, current; VMCLEAR writes it back.
        let r = unsafe { insn::vmclear(ctx.vmcs_pa) };
        test_assert!(r.is_ok(), "SOAK: VMCLEAR of the old VMCS", "success", r);
        let target = self.next;
        self.next = (self.next + 1) % RING;
        // Every other ring region loaded in turn: more than L0's cache holds.
        for i in (0..RING).filter(|&i| i != target) {
            let pa = layout::phys_of(&self.regions[i]);
            // SAFETY: a stamped, 4-KiB aligned region of this CPU's.
            let r = unsafe { insn::vmclear(pa).and_then(|()| insn::vmptrld(pa)) };
            test_assert!(
                r.is_ok(),
                "SOAK: VMCLEAR and VMPTRLD of a ring VMCS",
                "success",
                r
            );
        }
        let pa = layout::phys_of(&self.regions[target]);
        // SAFETY: as above.
        let r = unsafe { insn::vmclear(pa).and_then(|()| insn::vmptrld(pa)) };
        test_assert!(
            r.is_ok(),
            "SOAK: VMCLEAR and VMPTRLD of the new VMCS",
            "success",
            r
        );
        for &f in VmcsField::ALL {
            let (present, v) = saved[f.index()];
            if present && let Err(e) = ctx.try_write(f, v) {
                fail(
                    format_args!("SOAK: VMWRITE {f:?} = {v:#x} into the new VMCS"),
                    format_args!("success (VMREAD of the old one succeeded)"),
                    format_args!("{e}"),
                );
            }
        }
        ctx.vmcs_pa = pa;
        // A VMCS fresh from VMCLEAR is clear (SDM 25.11.3): VMLAUNCH next.
        ctx.launched = false;
        test_assert_eq!(
            ctx.try_read(VmcsField::GuestRip).ok(),
            Some(saved[VmcsField::GuestRip.index()].1),
            "SOAK: guest RIP in the new VMCS"
        );
        if ctx.opt.contains(LhvOpt::SWITCH_EPT) && registry.switch_ept.rederive() != 0 {
            self.ept12_moves += 1;
        }
        self.churns += 1;
        if ctx.cpu == 0
            && let Some(p) = crate::l0::pool_free()
        {
            POOL_LOW.fetch_min(p, Ordering::AcqRel);
        }
    }

    fn mtrr_write(&mut self) {
        if let Some(m) = self.mtrr.as_mut() {
            m.toggle();
            self.mtrr_writes += 1;
        }
    }

    /// Drops this CPU's EPT02 roots in L0 (INVEPT all-context: L0 frees
    /// them, SDM 31.3 makes INVEPT per logical processor).
    fn quiesce(&self, ctx: &Ctx) {
        if !ctx.opt.contains(LhvOpt::EPT) {
            return;
        }
        if ctx.caps.ept_vpid.invept_all_context {
            crate::options::ept_common::invept_ok(ctx, 2, 0, "SOAK: all-context at a quiet point");
        } else {
            cpu_println!(
                "SKIP soak EPT02 roots dropped: no all-context INVEPT (the pool figures include cached roots)"
            );
        }
    }

    /// The end of the soak on this CPU (before test mode's `finish`): the
    /// quiet point, the pool and NMI checks.
    pub fn finish(&mut self, ctx: &Ctx) {
        if let Some(m) = self.mtrr.take() {
            m.restore();
            self.mtrr_writes += 1;
        }
        self.quiesce(ctx);
        barrier(Barrier::EndQuiet);
        // Every CPU has finished its iterations: no NMI is in flight. Each
        // sender waited until its NMI was received before sending another
        // to the same CPU (the NMI option's steps), so no CPU ever had more
        // than one NMI pending while it blocked NMIs; the processor holds
        // one pending NMI while NMIs are blocked (SDM Vol. 3A 6.7.1) and
        // NMI exiting turns every other into an exit (SDM 26.2), so none
        // may merge or vanish: received must equal sent, exactly.
        let t = nmi::tally(ctx.cpu);
        let cycles = x86::rdtsc().wrapping_sub(self.tsc_start);
        cpu_println!(
            "SOAK counts churns={} ept12_moves={} mtrr_writes={} nmis_sent={} nmis_received={} tsc_per_iter={}",
            self.churns,
            self.ept12_moves,
            self.mtrr_writes,
            t.sent,
            t.received,
            cycles / ctx.iter.max(1)
        );
        test_assert_eq!(
            t.received,
            t.sent,
            "SOAK: NMIs this CPU received (NMI exits and LHV's handler, injected ones not counted), of those sent to it"
        );
        barrier(Barrier::EndChecked);
        if ctx.cpu == 0 {
            Self::report();
        }
        barrier(Barrier::EndReported);
    }

    /// The BSP's totals: NMIs of every CPU, L0's pool.
    fn report() {
        let n = test_loop::cpu_count().unwrap_or(1);
        let (sent, received) = (0..n)
            .map(nmi::tally)
            .fold((0, 0), |(s, r), t| (s + t.sent, r + t.received));
        println!("SOAK NMI accounting: ok, {received} received of {sent} sent on {n} CPUs");
        let Some(end) = crate::l0::pool_free() else {
            println!("SOAK pool: no L0 (bare)");
            return;
        };
        let start = POOL_START.load(Ordering::Acquire);
        let low = POOL_LOW.load(Ordering::Acquire).min(end);
        // Both figures are taken with every CPU stopped and its EPT02 roots
        // dropped, so nothing may hold a frame at either point: VMCS02s and
        // VMCS12 copies are L0's static memory, EPT01's tables stay once
        // made (the warm-up made those the MTRR range needs), and EPT02
        // tables return to the free list with their roots. Any difference
        // is a leak.
        test_assert_eq!(
            end,
            start,
            "SOAK: L0's free frames at the end, of those at the warm-up point"
        );
        println!(
            "SOAK pool: flat, start={start} end={end} low={low} (at most {} frames held by EPT02 roots during the run)",
            start.saturating_sub(low)
        );
    }
}
