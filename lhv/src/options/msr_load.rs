//! MSR_LOAD (0x1): the VM-entry MSR-load, VM-exit MSR-store and VM-exit
//! MSR-load areas (SDM 25.7.2, 25.8.2; 26.4 "Loading MSRs", 28.4 "Saving
//! MSRs", 28.6 "Loading MSRs"), each crossing a page boundary, with three
//! kinds of MSRs (see the XMHF64 note on guest MSR load/store):
//! - EFER-like, also switched by the controls: IA32_EFER (SCE toggled) and
//!   IA32_PAT (entries 6 and 7). The areas are processed after the guest
//!   and host state (SDM 26.4, 28.6): L2 sees the entry-area value although
//!   the VMCS guest field holds another, L1 gets the exit-area value
//!   although the host field holds another, and the guest field saved on
//!   exit holds L2's value;
//! - MTRR-like: the last variable-range MTRR pair, kept disabled;
//! - normal: machine-check bank registers (IA32_MCi_ADDR/MISC) that this
//!   CPU lets software write (probed with #GP-safe RDMSR/WRMSR).
//!
//! Each iteration the values change, and so do the counts: the entry-load
//! count leaves out some normal MSRs (L2 then sees L1's values) and every
//! second iteration the store count leaves out the last entry (whose data
//! must stay untouched). L2 reads every MSR (the MSR bitmap lets it) and
//! compares with what it must see, writes new values to the normal MSRs
//! and reports: the store area must hold L2's values and L1's MSRs the
//! exit-load values. Every fourth iteration an entry-load area with a bad
//! entry (x2APIC MSR, reserved bits, IA32_FS_BASE) must make VMRESUME fail
//! with exit reason 34 and the entry's 1-based index (SDM 26.4, 26.8).

// The loops walk several parallel per-MSR arrays by index.
#![allow(clippy::needless_range_loop)]

use ::core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use lhv::opt::LhvOpt;
use shared::boot::layout::phys_of;
use shared::cpu_println;
use shared::msr_area::{IA32_FS_BASE, MsrEntry};
use shared::mtrr::{IA32_MTRR_PHYSBASE0, IA32_MTRRCAP};
use shared::percpu::MAX_CPUS;
use shared::vmx::VmcsField as F;
use shared::vmx::exit::{ExitReason, ExitReasonField};
use shared::x86::{self, msr};

use super::{Handled, TestOption, safe_msr};
use crate::assert::{fail, test_assert, test_assert_eq};
use crate::exit::{self, EntryOutcome, Exit, gpr};
use crate::l2::{self, L2Env, l2_assert_eq};
use crate::percpu_cell::per_cpu_static;
use crate::test_loop::Ctx;

/// L2 reports after writing the normal MSRs (RBX = attempt); L1 answers
/// RBX = 0 (done) or 1 (an external-interrupt exit intervened: again).
const CHECK: u64 = l2::call_number(LhvOpt::MSR_LOAD, 1);
/// Attempts L2 makes before the store check must hold.
const ATTEMPTS: u64 = 8;

/// Most MSRs in the areas.
const MAX: usize = 10;
/// Candidate normal MSRs: IA32_MC0/1/2_ADDR and _MISC, then IA32_TSC_AUX,
/// IA32_KERNEL_GS_BASE and IA32_LSTAR (Bochs lacks writable MC banks;
/// for the last two L1's own value is what the exit-load area restores).
const NORMAL_CANDIDATES: [u32; 9] = [
    0x402,
    0x403,
    0x406,
    0x407,
    0x40a,
    0x40b,
    IA32_TSC_AUX,
    msr::IA32_KERNEL_GS_BASE,
    msr::IA32_LSTAR,
];
/// IA32_TSC_AUX (bits 63:32 reserved).
const IA32_TSC_AUX: u32 = 0xc000_0103;

/// Keeps a value valid for `msr`: 32 bits for IA32_TSC_AUX, canonical for
/// the address MSRs of the high range.
const fn fit(msr: u32, v: u64) -> u64 {
    if msr == IA32_TSC_AUX {
        v & 0xffff_ffff
    } else if msr >= 0xc000_0000 {
        v & 0x0000_7fff_ffff_fff0
    } else {
        v
    }
}
/// At most this many normal MSRs are used.
const MAX_NORMAL: usize = 4;
/// Each area starts this many entries before the page boundary.
const BEFORE_BOUNDARY: [usize; 3] = [3, 2, 1];
/// The data of store entries before a VM exit writes them.
const POISON: u64 = 0xdead_5107_e000_0000;
/// EFER.SCE.
const SCE: u64 = 1;
/// Valid PAT and MTRR memory types: UC, WC, WT, WP, WB.
const TYPES: [u64; 5] = [0, 1, 4, 5, 6];
/// The MTRR-mask valid bit.
const MTRR_VALID: u64 = 1 << 11;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Efer,
    Pat,
    MtrrBase,
    MtrrMask,
    Normal,
}

/// Two pages of entries; an area starts a few entries before the second.
#[repr(C, align(4096))]
struct AreaPages([MsrEntry; 512]);
const PAGE_ENTRIES: usize = 256;

per_cpu_static!(
    static AREAS: [AreaPages; 3] = [const { AreaPages([MsrEntry::new(0, 0); 512]) }; 3];
);

/// Per CPU, for L2: MSR indices, the values L2 must see, the count.
static INDEX: [[AtomicU64; MAX]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; MAX] }; MAX_CPUS];
static VIEW: [[AtomicU64; MAX]; MAX_CPUS] =
    [const { [const { AtomicU64::new(0) }; MAX] }; MAX_CPUS];
static COUNT: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];
static FIRST_NORMAL: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

/// What L2 writes to normal MSR `i`.
const fn l2_written(msr: u32, cpu: usize, iter: u64, i: usize) -> u64 {
    fit(
        msr,
        0x4c32_0000_0000_0000 | (cpu as u64) << 40 | (iter & 0xff_ffff) << 8 | (i as u64) << 4,
    )
}

fn l2_rdmsr(msr: u32) -> u64 {
    // SAFETY: L1 puts only MSRs it probed into the list.
    unsafe { l2::rdmsr(msr) }
}

fn l2_action(env: &L2Env) {
    let cpu = env.cpu;
    let n = COUNT[cpu].load(Ordering::Relaxed);
    let first_normal = FIRST_NORMAL[cpu].load(Ordering::Relaxed);
    for attempt in 0..ATTEMPTS {
        for i in 0..n {
            let msr = INDEX[cpu][i].load(Ordering::Relaxed) as u32;
            l2_assert_eq!(
                l2_rdmsr(msr),
                VIEW[cpu][i].load(Ordering::Relaxed),
                "RDMSR in L2 of an MSR of the MSR areas"
            );
        }
        for i in first_normal..n {
            let msr = INDEX[cpu][i].load(Ordering::Relaxed) as u32;
            let v = l2_written(msr, cpu, env.iter, i);
            // SAFETY: a probed machine-check bank register; no effect on L2.
            unsafe {
                ::core::arch::asm!("wrmsr", in("ecx") msr, in("eax") v as u32,
                    in("edx") (v >> 32) as u32, options(nostack, preserves_flags));
            }
        }
        let again = l2::vmcall(
            CHECK,
            l2::Args {
                rbx: attempt,
                ..l2::Args::default()
            },
        );
        if again.rbx == 0 {
            return;
        }
    }
}

/// The MSR-area checks of one CPU.
pub struct MsrLoad {
    areas: Option<&'static mut [AreaPages; 3]>,
    msrs: [(u32, Kind); MAX],
    n: usize,
    first_normal: usize,
    phys_mask: u64,
    efer: u64,
    pat: u64,
    /// This iteration's values: L2's (entry-load) and L1's (exit-load).
    l2: [u64; MAX],
    l1: [u64; MAX],
    orig: [u64; MAX],
    entry_count: usize,
    store_count: usize,
    retries: u64,
    checks: u64,
    failures: u64,
}

impl MsrLoad {
    /// Fresh state.
    pub const fn new() -> Self {
        Self {
            areas: None,
            msrs: [(0, Kind::Normal); MAX],
            n: 0,
            first_normal: 0,
            phys_mask: 0,
            efer: 0,
            pat: 0,
            l2: [0; MAX],
            l1: [0; MAX],
            orig: [0; MAX],
            entry_count: 0,
            store_count: 0,
            retries: 0,
            checks: 0,
            failures: 0,
        }
    }

    fn push(&mut self, msr: u32, kind: Kind) {
        self.msrs[self.n] = (msr, kind);
        self.n += 1;
    }

    /// The area `which` (0 entry-load, 1 exit-store, 2 exit-load).
    fn area(&mut self, which: usize) -> &mut [MsrEntry] {
        let start = PAGE_ENTRIES - BEFORE_BOUNDARY[which];
        &mut self.areas.as_mut().expect("set up")[which].0[start..start + MAX]
    }

    fn area_pa(&self, which: usize) -> u64 {
        let start = PAGE_ENTRIES - BEFORE_BOUNDARY[which];
        phys_of(&self.areas.as_ref().expect("set up")[which].0[start])
    }

    /// L2's (`l2`) or L1's value of MSR `i` in iteration `iter`.
    fn value(&self, cpu: usize, iter: u64, i: usize, l2: bool) -> u64 {
        let (msr, kind) = self.msrs[i];
        let t = |k: u64| TYPES[((iter + k) % TYPES.len() as u64) as usize];
        let addr = |x: u64| ((x & 0xffff) << 12) & self.phys_mask;
        match (kind, l2) {
            (Kind::Efer, true) => self.efer ^ if iter.is_multiple_of(2) { SCE } else { 0 },
            (Kind::Pat, true) => (self.pat & !(0xffff << 48)) | t(0) << 56 | t(2) << 48,
            (Kind::Efer, false) => self.efer,
            (Kind::Pat, false) => self.pat,
            (Kind::MtrrBase, true) => addr(0x100 + iter + cpu as u64 * 0x1000) | t(1),
            (Kind::MtrrBase, false) => addr(0x7700 + iter) | t(3),
            (Kind::MtrrMask, true) => addr(!iter) & !MTRR_VALID,
            (Kind::MtrrMask, false) => addr(!(iter << 4)) & !MTRR_VALID,
            (Kind::Normal, true) => fit(
                msr,
                0x4c30_0000_0000_0000 ^ u64::from(msr) << 32 ^ iter << 4,
            ),
            (Kind::Normal, false) if msr == IA32_TSC_AUX || msr < 0xc000_0000 => fit(
                msr,
                0x4c31_0000_0000_0000 ^ u64::from(msr) << 32 ^ iter << 8,
            ),
            // L1's own value (it may use it, e.g. SWAPGS, SYSCALL).
            (Kind::Normal, false) => self.orig[i],
        }
    }

    /// Looks for the MSRs this CPU lets LHV use.
    fn probe(&mut self, ctx: &Ctx) {
        self.push(msr::IA32_EFER, Kind::Efer);
        self.push(msr::IA32_PAT, Kind::Pat);
        let vcnt = safe_msr::rdmsr(IA32_MTRRCAP).map_or(0, |c| (c & 0xff) as u32);
        if vcnt > 0 {
            let base = IA32_MTRR_PHYSBASE0 + 2 * (vcnt - 1);
            match safe_msr::rdmsr(base + 1) {
                Some(mask) if mask & MTRR_VALID == 0 => {
                    self.push(base, Kind::MtrrBase);
                    self.push(base + 1, Kind::MtrrMask);
                }
                _ => cpu_println!("SKIP MSR_LOAD MTRR: last variable MTRR pair in use"),
            }
        } else {
            cpu_println!("SKIP MSR_LOAD MTRR: no variable-range MTRRs");
        }
        self.first_normal = self.n;
        for msr in NORMAL_CANDIDATES {
            if self.n - self.first_normal == MAX_NORMAL {
                break;
            }
            // MSR_BITMAP intercepts IA32_TSC_AUX in some iterations.
            if msr == IA32_TSC_AUX && ctx.opt.contains(LhvOpt::MSR_BITMAP) {
                continue;
            }
            let old = safe_msr::rdmsr(msr).unwrap_or(0);
            // SAFETY: machine-check bank address/misc registers and
            // IA32_TSC_AUX have no effect on LHV; IA32_KERNEL_GS_BASE and
            // IA32_LSTAR only on SWAPGS/SYSCALL, which LHV does not run
            // here; the old value is restored.
            if unsafe { safe_msr::writable(msr, fit(msr, 0x5a5a_0000_1234_5670)) } {
                self.orig[self.n] = old;
                self.push(msr, Kind::Normal);
            }
        }
        if self.n == self.first_normal {
            cpu_println!("SKIP MSR_LOAD normal MSRs: none writable");
        } else if ctx.cpu == 0 {
            let mut list = [0u32; MAX_NORMAL];
            for (d, s) in list.iter_mut().zip(&self.msrs[self.first_normal..self.n]) {
                *d = s.0;
            }
            cpu_println!(
                "MSR_LOAD: normal MSRs {:x?}",
                &list[..self.n - self.first_normal]
            );
        }
    }

    /// Writes L1's value of every MTRR-like and normal MSR (what the
    /// exit-load area loads).
    fn load_l1_values(&self) {
        for i in 0..self.n {
            if matches!(self.msrs[i].1, Kind::Efer | Kind::Pat) {
                continue;
            }
            // SAFETY: probed MSRs; MTRR pair stays disabled.
            let ok = unsafe { safe_msr::wrmsr(self.msrs[i].0, self.l1[i]) };
            test_assert!(ok, "WRMSR in L1 of a probed MSR", "success", self.msrs[i].0);
        }
    }

    /// The L1 checks after an exit: MSR-store area, L1's MSRs, the saved
    /// guest EFER and PAT. Returns whether L2 must try again.
    fn check_after_exit(&mut self, ctx: &Ctx, last_attempt: bool) -> bool {
        let (cpu, iter, n, store_count) = (ctx.cpu, ctx.iter, self.n, self.store_count);
        let mut again = false;
        for i in 0..n {
            let (msr, kind) = self.msrs[i];
            let stored = self.area(1)[i];
            test_assert_eq!(stored.index, msr, "MSR index in the MSR-store area");
            if i >= store_count {
                test_assert_eq!(
                    stored.data,
                    POISON,
                    format_args!("MSR-store entry {} beyond the store count", i + 1)
                );
                continue;
            }
            let view = VIEW[cpu][i].load(Ordering::Relaxed);
            if kind == Kind::Normal {
                let w = l2_written(msr, cpu, iter, i);
                // An external-interrupt exit after L2's WRMSR reloads the
                // entry value: the store then holds L2's view again.
                if stored.data == view && !last_attempt {
                    again = true;
                    continue;
                }
                test_assert_eq!(
                    stored.data,
                    w,
                    format_args!("MSR-store data of MSR {msr:#x} (written by L2)")
                );
            } else {
                test_assert_eq!(
                    stored.data,
                    view,
                    format_args!("MSR-store data of MSR {msr:#x}")
                );
            }
        }
        for i in 0..n {
            let msr = self.msrs[i].0;
            test_assert_eq!(
                safe_msr::rdmsr(msr),
                Some(self.l1[i]),
                format_args!("MSR {msr:#x} in L1 after VM exit (exit MSR-load area)")
            );
        }
        test_assert_eq!(
            ctx.read(F::GuestIa32Efer),
            self.l2[0],
            "guest IA32_EFER saved on exit (loaded from the entry MSR-load area)"
        );
        test_assert_eq!(
            ctx.read(F::GuestIa32Pat),
            self.l2[1],
            "guest IA32_PAT saved on exit (loaded from the entry MSR-load area)"
        );
        again
    }

    /// VMRESUME with a bad entry at 1-based position `pos` of the entry
    /// MSR-load area: VM-entry failure due to MSR loading (SDM 26.4, 26.8).
    fn expect_entry_failure(&mut self, ctx: &mut Ctx) {
        let round = ctx.iter / 4;
        let pos = 1 + (round % 2) as usize;
        let good = self.area(0)[pos - 1];
        let (bad, what) = match round % 3 {
            0 => (MsrEntry::new(0x808, 0), "x2APIC MSR 808H"),
            1 => (
                MsrEntry {
                    reserved: 1,
                    ..good
                },
                "reserved bits 63:32 set",
            ),
            _ => (MsrEntry::new(IA32_FS_BASE, 0), "IA32_FS_BASE"),
        };
        self.area(0)[pos - 1] = bad;
        ctx.write(F::VmEntryMsrLoadCount, pos as u64);
        // SAFETY: as for every LHV entry; the failure loads host state.
        let outcome = unsafe { exit::enter(&mut ctx.regs, true) };
        self.area(0)[pos - 1] = good;
        ctx.write(F::VmEntryMsrLoadCount, self.entry_count as u64);
        test_assert_eq!(
            outcome,
            EntryOutcome::Exited,
            format_args!("VMRESUME with {what} in the entry MSR-load area")
        );
        let reason = ExitReasonField(ctx.read(F::VmExitReason) as u32);
        test_assert!(
            reason.is_entry_failure() && reason.basic() == ExitReason::EntryFailureMsrLoading,
            format_args!("exit reason of VMRESUME with {what} in the entry MSR-load area"),
            "VM-entry failure (bit 31) due to MSR loading (34)",
            reason
        );
        test_assert_eq!(
            ctx.read(F::ExitQualification),
            pos as u64,
            format_args!("exit qualification (1-based entry) for {what}")
        );
        // The entries before the bad one were loaded, then host state (SDM
        // 26.8); put L1's values back without relying on more.
        // SAFETY: L1's own EFER and PAT.
        unsafe {
            x86::wrmsr(msr::IA32_EFER, self.efer);
            x86::wrmsr(msr::IA32_PAT, self.pat);
        }
        self.load_l1_values();
        self.failures += 1;
    }
}

impl TestOption for MsrLoad {
    fn bit(&self) -> LhvOpt {
        LhvOpt::MSR_LOAD
    }

    fn setup(&mut self, ctx: &mut Ctx) {
        safe_msr::install();
        self.areas = Some(AREAS.claim(ctx.cpu));
        let width = x86::cpuid(0x8000_0008, 0).eax & 0xff;
        self.phys_mask = ((1u64 << width.clamp(36, 52)) - 1) & !0xfff;
        // SAFETY: architectural MSRs.
        (self.efer, self.pat) = unsafe { (x86::rdmsr(msr::IA32_EFER), x86::rdmsr(msr::IA32_PAT)) };
        self.probe(ctx);
        let n = self.n;
        for which in 0..3 {
            for i in 0..n {
                let index = self.msrs[i].0;
                self.area(which)[i] = MsrEntry::new(index, 0);
            }
        }
        for (f, which) in [
            (F::VmEntryMsrLoadAddress, 0),
            (F::VmExitMsrStoreAddress, 1),
            (F::VmExitMsrLoadAddress, 2),
        ] {
            let pa = self.area_pa(which);
            test_assert!(
                pa / 4096 != (pa + n as u64 * 16 - 1) / 4096,
                "MSR area placement",
                "crossing a page boundary",
                pa
            );
            ctx.write(f, pa);
        }
        ctx.write(F::VmExitMsrLoadCount, n as u64);
        // The host fields differ from what the exit-load area loads, which
        // comes after them (SDM 28.6).
        ctx.write(F::HostIa32Efer, self.efer ^ SCE);
        ctx.write(F::HostIa32Pat, self.pat ^ (1 << 56));
        for i in 0..n {
            INDEX[ctx.cpu][i].store(u64::from(self.msrs[i].0), Ordering::Relaxed);
        }
        COUNT[ctx.cpu].store(n, Ordering::Relaxed);
        FIRST_NORMAL[ctx.cpu].store(self.first_normal, Ordering::Relaxed);
    }

    fn before_entry(&mut self, ctx: &mut Ctx) {
        let (cpu, iter, n) = (ctx.cpu, ctx.iter, self.n);
        for i in 0..n {
            self.l2[i] = self.value(cpu, iter, i, true);
            self.l1[i] = self.value(cpu, iter, i, false);
        }
        let normals = (n - self.first_normal) as u64;
        self.entry_count = n - (iter % (normals + 1)) as usize;
        self.store_count = if iter % 2 == 1 { n - 1 } else { n };
        for i in 0..n {
            let (l2v, l1v) = (self.l2[i], self.l1[i]);
            self.area(0)[i].data = l2v;
            self.area(1)[i].data = POISON;
            self.area(2)[i].data = l1v;
            let view = if i < self.entry_count { l2v } else { l1v };
            VIEW[cpu][i].store(view, Ordering::Relaxed);
        }
        // The guest EFER and PAT fields differ from the area's values.
        ctx.write(F::GuestIa32Efer, self.efer);
        ctx.write(F::GuestIa32Pat, self.pat);
        self.load_l1_values();
        ctx.write(F::VmEntryMsrLoadCount, self.entry_count as u64);
        ctx.write(F::VmExitMsrStoreCount, self.store_count as u64);
        if ctx.launched && iter % 4 == 2 {
            self.expect_entry_failure(ctx);
        }
    }

    fn on_exit(&mut self, ctx: &mut Ctx, exit: &Exit) -> Handled {
        if exit.reason != ExitReason::Vmcall || ctx.regs.gpr[gpr::RAX] != CHECK {
            return Handled::NotMine;
        }
        let attempt = ctx.regs.gpr[gpr::RBX];
        if attempt >= ATTEMPTS {
            fail(
                format_args!("MSR_LOAD attempt"),
                format_args!("< {ATTEMPTS}"),
                format_args!("{attempt}"),
            );
        }
        let again = self.check_after_exit(ctx, attempt + 1 == ATTEMPTS);
        if again {
            self.retries += 1;
            let n = self.n;
            for i in 0..n {
                self.area(1)[i].data = POISON;
            }
        } else {
            self.checks += 1;
        }
        ctx.regs.gpr[gpr::RBX] = u64::from(again);
        ctx.skip_instruction(exit);
        Handled::Yes
    }

    fn l2_action(&self) -> Option<l2::L2Action> {
        Some(l2_action)
    }

    fn count(&self) -> u64 {
        self.checks + self.failures
    }
}
