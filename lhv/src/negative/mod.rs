//! `mode=negative`: LHV's negative suite. On the BSP only, it feeds the
//! processor (or L0 emulating it) invalid VMCS contents, bad VMX
//! instruction operands, VMX instructions at CPL 3 and outside VMX
//! operation, and broken MSR areas, and checks each outcome exactly
//! against the Intel SDM (Vol. 3C 27.2-27.4, chapter 31).
//!
//! Each case of a group's table starts from a valid VMCS (VMCLEAR, VMPTRLD
//! and LHV's usual bring-up, [`Env::fresh`]), makes one mutation and one
//! action, and compares what happened with its expected [`Outcome`]:
//! `NEGATIVE <case>: ok`, or `TEST_ASSERT failed: negative <case>,
//! expected <x>, got <y>`. A case that cannot run prints
//! `SKIP negative <case>: <reason>` (Bochs departures only when on Bochs).
//! The suite ends with `NEGATIVE done: <n> cases, <f> failed, <s> skipped`
//! and, under L0, L0's statistics (L0 alive).
//!
//! # Adding a case
//! Add one entry to the table of its group (`negative/<group>.rs`); a new
//! group also goes into [`GROUPS`].

use lhv::negative_cases::{Outcome, Skip, Tally};
use shared::boot::{BootInfo, layout};
use shared::hypercall::{self, Hypercall};
use shared::vmx::insn::{VmcsRegion, Vmxon, VmxonRegion};
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::{println, vmx_root, x86};

use crate::assert::fail;
use crate::exit;
use crate::test_loop::Ctx;
use crate::vmcs_setup::{Controls, RFLAGS_FIXED};

pub mod guard;

mod cpl3;
mod entry_controls;
mod exec_controls;
mod guest_non_reg;
mod guest_regs;
mod guest_segments;
mod host_state;
mod instructions;
mod msr_load;
mod outside_vmx;

/// What a case does.
#[derive(Clone, Copy)]
pub enum Action {
    /// From a fresh valid VMCS: `mutate` it, then VMLAUNCH.
    Launch(fn(&mut Env)),
    /// From a fresh valid VMCS: run the action, return its outcome.
    Fresh(fn(&mut Env) -> Outcome),
    /// From the state the previous case left (a sequence, e.g. outside VMX
    /// operation): run the action.
    Sequel(fn(&mut Env) -> Outcome),
}

/// The expected outcome.
#[derive(Clone, Copy)]
pub enum Expect {
    /// Always this.
    Is(Outcome),
    /// Decided from the capabilities and the platform, or skipped.
    Rule(fn(&Env) -> Result<Outcome, Skip>),
}

/// One case.
#[derive(Clone, Copy)]
pub struct Case {
    /// Its name in the `NEGATIVE`/`SKIP` lines.
    pub name: &'static str,
    /// The action.
    pub action: Action,
    /// The outcome the SDM requires.
    pub expect: Expect,
}

impl Case {
    /// A VMLAUNCH case with a fixed expectation.
    pub const fn launch(name: &'static str, mutate: fn(&mut Env), expected: Outcome) -> Self {
        Self {
            name,
            action: Action::Launch(mutate),
            expect: Expect::Is(expected),
        }
    }

    /// A VMLAUNCH case whose expectation is a rule.
    pub const fn launch_if(
        name: &'static str,
        mutate: fn(&mut Env),
        rule: fn(&Env) -> Result<Outcome, Skip>,
    ) -> Self {
        Self {
            name,
            action: Action::Launch(mutate),
            expect: Expect::Rule(rule),
        }
    }
}

/// A group of checks, named by its SDM section.
pub struct Group {
    /// SDM section and title.
    pub section: &'static str,
    /// Its cases, in order.
    pub cases: &'static [Case],
}

/// Every group, in the order the SDM checks them.
pub const GROUPS: &[Group] = &[
    exec_controls::GROUP,
    entry_controls::EXIT_GROUP,
    entry_controls::GROUP,
    host_state::GROUP,
    guest_regs::CR_GROUP,
    guest_segments::GROUP,
    guest_regs::TABLES_GROUP,
    guest_regs::RIP_GROUP,
    guest_non_reg::GROUP,
    guest_non_reg::PDPTE_GROUP,
    msr_load::GROUP,
    instructions::GROUP,
    cpl3::GROUP,
    outside_vmx::GROUP,
];

/// L0, as its Stats hypercall describes it.
#[derive(Clone, Copy, Debug)]
pub struct L0 {
    /// Base of L0's region (guest-physical, unbacked for its guest).
    pub region_base: u64,
    /// Its size in bytes.
    pub region_size: u64,
}

impl L0 {
    /// The page at `offset` bytes into the region (clamped to its last
    /// page).
    pub fn page(&self, offset: u64) -> u64 {
        lhv::negative_cases::region_page(self.region_base, self.region_size, offset)
    }
}

/// A 4-KiB page of the suite's own (the processor reads it; the suite
/// writes it between cases only).
#[repr(C, align(4096))]
pub struct Page(::core::cell::UnsafeCell<[u64; 512]>);

// SAFETY: the negative suite runs on the BSP only; pages are written only
// between VM entries, by that CPU.
unsafe impl Sync for Page {}

impl Page {
    /// A zeroed page.
    pub const fn new() -> Self {
        Self(::core::cell::UnsafeCell::new([0; 512]))
    }

    /// Its physical address.
    pub fn pa(&self) -> u64 {
        layout::phys_of(self.0.get())
    }

    /// Fills it with zeros.
    pub fn clear(&self) {
        // SAFETY: see `impl Sync`: only the BSP writes, outside VM entries.
        unsafe { (*self.0.get()).fill(0) };
    }

    /// Reads quadword `i`.
    pub fn get(&self, i: usize) -> u64 {
        // SAFETY: as for `clear`; the processor writes it only during VM
        // entries and exits, which are over.
        unsafe { ::core::ptr::read_volatile(&raw const (*self.0.get())[i]) }
    }

    /// Writes quadword `i`.
    pub fn set(&self, i: usize, v: u64) {
        // SAFETY: as for `clear`.
        unsafe { (*self.0.get())[i] = v };
    }
}

/// The suite's state: the VMCS context and what the cases need to know.
pub struct Env {
    /// LHV's VMCS context (current VMCS, capabilities, L2 registers).
    pub ctx: Ctx,
    /// The capabilities.
    pub caps: &'static VmxCaps,
    /// Whether the platform is Bochs.
    pub on_bochs: bool,
    /// `negative_strict=1`: run the checks Bochs is known to fail anyway
    /// (to re-check its departures).
    pub strict: bool,
    /// L0, when LHV runs under it.
    pub l0: Option<L0>,
    /// The VMXON region's physical address.
    pub vmxon_pa: u64,
    /// The suite's VMCS region (re-stamped by [`Env::fresh`]).
    vmcs_region: *mut VmcsRegion,
    /// MAXPHYADDR.
    pub max_phys: u8,
    /// Linear-address width.
    pub linear_width: u8,
    /// The base controls every case starts from.
    pub controls: Controls,
}

// L2 of the suite: one VMCALL (the success exit), then UD2.
::core::arch::global_asm!(
    ".section .text.lhv_negative, \"ax\"",
    ".global lhv_negative_l2",
    "lhv_negative_l2:",
    "vmcall",
    "ud2",
    ".previous",
);

unsafe extern "C" {
    fn lhv_negative_l2();
}

/// L2's stack (L2 pushes nothing; injected events may).
#[repr(C, align(4096))]
struct Stack([u8; 4096]);
static mut L2_STACK: Stack = Stack([0; 4096]);

impl Env {
    /// L2's entry point.
    pub fn l2_rip() -> u64 {
        lhv_negative_l2 as *const () as u64
    }

    /// Makes the suite's VMCS clear, current and valid again: VMCLEAR,
    /// VMPTRLD, the base controls, host and guest state; L2 registers 0.
    pub fn fresh(&mut self) {
        let pa = self.ctx.vmcs_pa;
        // VMCLEAR writes the VMCS back and leaves fields as the previous
        // case left them: the region is zeroed and stamped again (as for a
        // new VMCS), cleared, and made current.
        let mut r = guard::vmclear(pa);
        if r == Outcome::Success {
            // SAFETY: the region is the suite's own VMCS, not active after
            // the VMCLEAR; no reference to it is alive (Ctx keeps only its
            // address).
            unsafe { (*self.vmcs_region).stamp(self.caps.basic.revision_id, false) };
            r = guard::vmclear(pa);
        }
        if r == Outcome::Success {
            r = guard::vmptrld(pa);
        }
        if r != Outcome::Success {
            fail(
                format_args!("negative: VMCLEAR and VMPTRLD of the suite's VMCS"),
                format_args!("success"),
                format_args!("{r}"),
            );
        }
        let top = (&raw const L2_STACK as u64) + 4096;
        let controls = self.controls;
        self.ctx
            .init_vmcs(&controls, Self::l2_rip(), top - 16, RFLAGS_FIXED);
        // Every exception in L2 exits (an entry that should have failed
        // and ran L2 into a fault shows as that exit).
        self.write(F::ExceptionBitmap, u32::MAX.into());
        self.ctx.regs = exit::GuestRegs::default();
    }

    /// VMREAD of the current VMCS (a failure is a failed check).
    pub fn read(&self, f: F) -> u64 {
        self.ctx.read(f)
    }

    /// VMWRITE to the current VMCS (a failure is a failed check).
    pub fn write(&mut self, f: F, v: u64) {
        self.ctx.write(f, v);
    }

    /// Sets `bits` in field `f`.
    pub fn set_bits(&mut self, f: F, bits: u64) {
        let v = self.read(f);
        self.write(f, v | bits);
    }

    /// Clears `bits` in field `f`.
    pub fn clear_bits(&mut self, f: F, bits: u64) {
        let v = self.read(f);
        self.write(f, v & !bits);
    }

    /// Whether a known Bochs departure is to be reported as a SKIP.
    pub fn bochs_skips(&self) -> bool {
        self.on_bochs && !self.strict
    }

    /// VMLAUNCH (or VMRESUME with `resume`) of the current VMCS.
    pub fn enter(&mut self, resume: bool) -> Outcome {
        // SAFETY: the current VMCS holds this CPU's host state with
        // HOST_RIP = exit::host_rip() (written by `fresh`); every address
        // a case writes points to the suite's static pages, or is one the
        // processor must refuse before using it.
        let outcome = unsafe { exit::enter(&mut self.ctx.regs, resume) };
        match outcome {
            exit::EntryOutcome::FailInvalid => Outcome::FailInvalid,
            exit::EntryOutcome::FailValid => {
                Outcome::FailValid(self.read(F::VmInstructionError) as u32)
            }
            exit::EntryOutcome::Exited => lhv::negative_cases::decode_exit(
                self.read(F::VmExitReason) as u32,
                self.read(F::ExitQualification),
            ),
        }
    }

    /// VMLAUNCH.
    pub fn launch(&mut self) -> Outcome {
        self.enter(false)
    }

    /// Whether `f`'s allowed-1 settings include `bits` (primary/secondary
    /// processor-based, pin-based, exit and entry controls).
    pub fn allows(&self, f: F, bits: u32) -> bool {
        let cap = match f {
            F::PinBasedVmExecControls => self.caps.pin.effective(),
            F::PrimaryProcBasedVmExecControls => self.caps.proc.effective(),
            F::SecondaryProcBasedVmExecControls => self.caps.proc2,
            F::VmExitControls => self.caps.exit.effective(),
            F::VmEntryControls => self.caps.entry.effective(),
            _ => return false,
        };
        cap.can_set(bits)
    }

    /// Turns on secondary controls `bits` (and "activate secondary
    /// controls").
    pub fn set_secondary(&mut self, bits: u32) {
        use shared::vmx::controls::PrimaryProcBased as P;
        self.set_bits(
            F::PrimaryProcBasedVmExecControls,
            P::ACTIVATE_SECONDARY_CONTROLS.bits().into(),
        );
        let v = self.caps.proc2.adjust(bits).value;
        self.write(F::SecondaryProcBasedVmExecControls, v.into());
    }
}

/// The suite's VMCS and VMXON regions.
static mut VMCS: VmcsRegion = VmcsRegion::new();
static mut VMXON: VmxonRegion = VmxonRegion::new();

/// CPUID leaf 0x40000000's signature of L0.
const L0_SIGNATURE: &[u8; 12] = b"L0LateLaunch";

fn l0_present() -> bool {
    let r = x86::cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..].copy_from_slice(&r.edx.to_le_bytes());
    &sig == L0_SIGNATURE
}

/// L0's answer to Stats (`shared::hypercall`).
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    exits: u64,
    cpus: u64,
    region_kib: u64,
    region_base: u64,
    /// Frames left in L0's pool.
    pub pool_free: u64,
}

/// L0's Stats hypercall (only called when L0 is present). L0 answers in
/// RAX and leaves RFLAGS as they were, so the answer is RAX alone (not the
/// VMX-style CF/ZF that `shared::vmx::insn::vmcall` decodes).
pub fn l0_stats() -> Stats {
    let mut rax = Hypercall::Stats.rax();
    let mut rbx: u64 = 0;
    let (rcx, rdx, rsi, rdi): (u64, u64, u64, u64);
    // SAFETY: L0's Stats call only returns values in RAX, RBX, RCX, RDX and
    // RSI. RBX is reserved by the compiler, hence the exchange.
    unsafe {
        ::core::arch::asm!(
            "xchg {b}, rbx",
            "vmcall",
            "xchg {b}, rbx",
            b = inout(reg) rbx,
            inout("rax") rax,
            inout("rcx") 0u64 => rcx,
            inout("rdx") 0u64 => rdx,
            inout("rsi") 0u64 => rsi,
            inout("rdi") 0u64 => rdi,
            options(nostack),
        );
    }
    if rax != hypercall::OK {
        fail(
            format_args!("negative: L0 Stats hypercall"),
            format_args!("RAX = OK"),
            format_args!("RAX {rax:#x}"),
        );
    }
    Stats {
        exits: rbx,
        cpus: rcx,
        region_kib: rdx,
        region_base: rsi,
        pool_free: rdi,
    }
}

/// Linear-address width (CPUID.80000008H:EAX[15:8]; 48 without the leaf).
fn linear_width() -> u8 {
    if x86::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (x86::cpuid(0x8000_0008, 0).eax >> 8) as u8
    } else {
        48
    }
}

fn run_case(env: &mut Env, case: &Case, tally: &mut Tally) {
    let expected = match case.expect {
        Expect::Is(o) => Ok(o),
        Expect::Rule(rule) => rule(env),
    };
    let expected = match expected {
        Ok(o) => o,
        Err(skip) => {
            tally.skipped += 1;
            println!("SKIP negative {}: {skip}", case.name);
            return;
        }
    };
    let got = match case.action {
        Action::Launch(mutate) => {
            env.fresh();
            mutate(env);
            env.launch()
        }
        Action::Fresh(run) => {
            env.fresh();
            run(env)
        }
        Action::Sequel(run) => run(env),
    };
    if tally.judge(expected, got) {
        println!("NEGATIVE {}: ok ({expected})", case.name);
    } else {
        println!(
            "TEST_ASSERT failed: negative {}, expected {expected}, got {got}",
            case.name
        );
    }
}

/// The BSP's bring-up for a suite of fresh-VMCS cases (this one and
/// `mode=fuzz`): L0's presence (`<tag> L0: present ...` / `<tag> L0: none
/// (bare)`), the capabilities (kept in `caps`), the claiming #UD/#GP
/// handlers, VMXON on the suite's own region and the suite's VMCS context.
pub fn bring_up(boot: &BootInfo, caps: &'static spin::Once<VmxCaps>, tag: &str) -> Env {
    let l0 = l0_present().then(|| {
        let s = l0_stats();
        let size = s.region_kib * 1024;
        println!(
            "{tag} L0: present, exits={} cpus={} region [{:#x}, {:#x}) pool={}",
            s.exits,
            s.cpus,
            s.region_base,
            s.region_base + size,
            s.pool_free
        );
        L0 {
            region_base: s.region_base,
            region_size: size,
        }
    });
    if l0.is_none() {
        println!("{tag} L0: none (bare)");
    }
    let caps = caps.call_once(|| vmx_root::probe_or_shutdown(vmx_root::Needs::default()));
    // The suite controls every event itself: no legacy interrupts.
    crate::hw::pit::mask_all();
    guard::install();
    // VMXON through the usual bring-up (feature control, fixed CR bits),
    // then again on the suite's own region, whose address cases need.
    let first = match vmx_root::enter(caps) {
        Ok(v) => v,
        Err(e) => {
            println!("VMX is not available: {e}");
            shared::platform::shutdown(1);
        }
    };
    // SAFETY: no VMCS was used under the first VMXON.
    if let Err(e) = unsafe { first.disable() } {
        fail(
            format_args!("negative: VMXOFF after bring-up"),
            format_args!("success"),
            format_args!("{e}"),
        );
    }
    let vmcs_ptr = &raw mut VMCS;
    // SAFETY: the suite runs on the BSP only and takes these statics once
    // (`fresh` later re-stamps the VMCS through `vmcs_ptr`, while no
    // reference to it is alive: Ctx keeps only its address).
    let (vmxon_region, vmcs_region) = unsafe {
        (
            crate::repro::exclusive(&raw mut VMXON),
            crate::repro::exclusive(vmcs_ptr),
        )
    };
    vmxon_region.stamp(caps.basic.revision_id, false);
    let vmxon_pa = layout::phys_of(vmxon_region as *const VmxonRegion);
    // SAFETY: CR0/CR4 meet the fixed bits (the bring-up set them), the
    // region is aligned, stamped and stays the suite's.
    let vmx = match unsafe { Vmxon::enable(vmxon_pa) } {
        Ok(v) => v,
        Err(e) => fail(
            format_args!("negative: VMXON on the suite's region"),
            format_args!("success"),
            format_args!("{e}"),
        ),
    };
    println!("CPU(0): VMXON done");
    let on_bochs = crate::test_loop::firmware_is_bochs(boot);
    let ctx = Ctx::new(
        0,
        vmx,
        caps,
        lhv::opt::LhvOpt::empty(),
        on_bochs,
        vmcs_region,
    );
    let env = Env {
        ctx,
        caps,
        on_bochs,
        strict: shared::cmdline::get_num(boot.cmdline(), "negative_strict") == Some(1),
        l0,
        vmxon_pa,
        vmcs_region: vmcs_ptr,
        max_phys: crate::options::ept_common::max_phys_addr(),
        linear_width: linear_width(),
        controls: Controls::base(),
    };
    println!(
        "{tag}: bochs={on_bochs} MAXPHYADDR={} linear={} VMXON at {vmxon_pa:#x} VMCS at {:#x}",
        env.max_phys, env.linear_width, env.ctx.vmcs_pa
    );
    env
}

/// Leaves VMX operation (VMCLEAR of the suite's VMCS, VMXOFF) and, under
/// L0, prints `<tag> L0: alive after the suite` with L0's statistics.
pub fn finish(env: &mut Env, tag: &str) {
    let _ = guard::vmclear(env.ctx.vmcs_pa);
    if let Some(vmx) = env.ctx.vmx.take() {
        // SAFETY: the suite's only VMCS was just cleared.
        let _ = unsafe { vmx.disable() };
    }
    if env.l0.is_some() {
        let s = l0_stats();
        println!(
            "{tag} L0: alive after the suite, exits={} cpus={} pool={}",
            s.exits, s.cpus, s.pool_free
        );
    }
}

/// Runs the suite on the BSP and shuts down; `caps` is where LHV keeps the
/// capabilities (read here, after L0's presence is reported).
pub fn run(boot: &BootInfo, caps: &'static spin::Once<VmxCaps>) -> ! {
    println!("NEGATIVE: mode=negative, BSP only");
    let names = GROUPS.iter().flat_map(|g| g.cases.iter().map(|c| c.name));
    if let Err(n) = lhv::negative_cases::names_well_formed(names) {
        fail(
            format_args!("negative: case names unique and well-formed"),
            format_args!("yes"),
            format_args!("{n:?}"),
        );
    }
    let mut env = bring_up(boot, caps, "NEGATIVE");
    let start = x86::rdtsc();
    let mut tally = Tally::default();
    for g in GROUPS {
        println!("NEGATIVE group {}: {} cases", g.section, g.cases.len());
        for case in g.cases {
            run_case(&mut env, case, &mut tally);
        }
    }
    let cycles = x86::rdtsc() - start;
    println!("NEGATIVE done: {tally} ({cycles} cycles)");
    // Under L0, its dump of the suite's last VMCS (VMCS12) and of VMCS01.
    if env.l0.is_some() {
        println!(
            "NEGATIVE L0: VMCS dump {}",
            if crate::l0::dump_vmcs() {
                "ok"
            } else {
                "refused"
            }
        );
    }
    finish(&mut env, "NEGATIVE");
    shared::console::flush();
    shared::platform::shutdown(if tally.passed() { 0 } else { 1 })
}
