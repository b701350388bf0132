//! The core of test mode: per CPU, one VMCS and one L2, and the endless (or
//! `iters=N`) loop: option hooks, VM entries, exit dispatch, progress lines
//! and the per-CPU status on the VGA screen.

use ::core::fmt::{self, Write};
use ::core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use lhv::opt::LhvOpt;
use shared::boot::{BootInfo, layout};
use shared::vmx::exit::ExitReason;
use shared::vmx::insn::{VmcsRegion, Vmxon};
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::{cmdline, console, cpu_println, percpu, println, x86};

use crate::assert::{fail, test_assert, test_assert_eq};
use crate::exit::{self, EntryOutcome, Exit, GuestRegs, gpr};
use crate::hw::pit;
use crate::irq;
use crate::l2::{self, L2Plan, Stack, call};
use crate::options::{Handled, Registry};
use crate::percpu_cell::per_cpu_static;
use crate::vmcs_setup::{self, Controls, RFLAGS_IF};

/// Run-wide settings, fixed by the BSP before the APs start.
#[derive(Clone, Copy, Debug)]
struct Config {
    opt: LhvOpt,
    iters: Option<u64>,
    on_bochs: bool,
}

static CONFIG: spin::Once<Config> = spin::Once::new();
static BOOT: spin::Once<&'static BootInfo> = spin::Once::new();
static CPU_COUNT: AtomicUsize = AtomicUsize::new(1);
static CPUS_DONE: AtomicUsize = AtomicUsize::new(0);
static COUNT_SET: AtomicBool = AtomicBool::new(false);

/// The MSR bitmap (SDM 25.6.9): all zeros, no RDMSR/WRMSR exits.
#[repr(C, align(4096))]
struct MsrBitmap([u8; 4096]);
static MSR_BITMAP: MsrBitmap = MsrBitmap([0; 4096]);

per_cpu_static!(
    static VMCS: VmcsRegion = VmcsRegion::new();
);
per_cpu_static!(
    static L2_STACK: Stack = Stack([0; l2::STACK_SIZE]);
);
per_cpu_static!(
    static L2_PLAN: L2Plan = L2Plan::new();
);
per_cpu_static!(
    static REGISTRY: Registry = Registry::new();
);

/// Whether the ACPI RSDP says the firmware is Bochs's (OEM id "BOCHS ").
pub fn firmware_is_bochs(boot: &BootInfo) -> bool {
    boot.rsdp.get(9..15) == Some(b"BOCHS ".as_slice())
}

/// The boot information (memory map) for options that need free RAM.
pub fn boot_info() -> &'static BootInfo {
    BOOT.get().expect("configured by the BSP")
}

/// Reads the run-wide settings (BSP, before the APs start).
pub fn configure(boot: &'static BootInfo, opt: LhvOpt) {
    BOOT.call_once(|| boot);
    let iters = cmdline::get_num(boot.cmdline(), "iters");
    let on_bochs = firmware_is_bochs(boot);
    CONFIG.call_once(|| Config {
        opt,
        iters,
        on_bochs,
    });
    match iters {
        Some(n) => println!("LHV: iters={n} bochs={on_bochs}"),
        None => println!("LHV: iters=endless bochs={on_bochs}"),
    }
    crate::soak::configure(boot, iters);
    irq::install_handlers();
    pit::init_pic();
}

/// Records how many CPUs run the test (BSP, after starting the APs).
pub fn set_cpu_count(n: usize) {
    CPU_COUNT.store(n.max(1), Ordering::Release);
    COUNT_SET.store(true, Ordering::Release);
}

/// How many CPUs run the test, once the BSP knows (for options that
/// coordinate CPUs).
pub fn cpu_count() -> Option<usize> {
    COUNT_SET
        .load(Ordering::Acquire)
        .then(|| CPU_COUNT.load(Ordering::Acquire))
}

/// One CPU's test state, handed to every option hook.
pub struct Ctx {
    /// This CPU's index.
    pub cpu: usize,
    /// VMX operation (taken out while the VMXOFF option is outside it).
    pub vmx: Option<Vmxon>,
    /// The capabilities.
    pub caps: &'static VmxCaps,
    /// The options active on this CPU (requested minus skipped).
    pub opt: LhvOpt,
    /// Whether the platform is Bochs (for `SKIP <check>: Bochs ...`; the
    /// options that meet Bochs's departures from the SDM use it).
    #[allow(dead_code)]
    pub on_bochs: bool,
    /// L2's general registers (RSP and RIP are in the VMCS).
    pub regs: GuestRegs,
    /// Physical address of the VMCS.
    pub vmcs_pa: u64,
    /// Whether the VMCS is launched (VMRESUME) or clear (VMLAUNCH).
    pub launched: bool,
    /// The current iteration.
    pub iter: u64,
    /// VM exits so far (entry failures excluded).
    pub exits: u64,
    /// ... of which external-interrupt exits (served by the core).
    pub interrupt_exits: u64,
}

impl Ctx {
    /// This CPU's test state around `region`, stamped with the VMCS
    /// revision identifier and made the current VMCS (VMCLEAR then
    /// VMPTRLD, SDM 25.11.3); `region` stays allocated for the whole run.
    pub fn new(
        cpu: usize,
        vmx: Vmxon,
        caps: &'static VmxCaps,
        opt: LhvOpt,
        on_bochs: bool,
        region: &'static mut VmcsRegion,
    ) -> Self {
        region.stamp(caps.basic.revision_id, false);
        let vmcs_pa = layout::phys_of(region as *const VmcsRegion);
        // SAFETY: the region is 4-KiB aligned, stamped, owned by this CPU
        // and static.
        let loaded = unsafe {
            shared::vmx::insn::vmclear(vmcs_pa).and_then(|()| shared::vmx::insn::vmptrld(vmcs_pa))
        };
        test_assert!(
            loaded.is_ok(),
            "VMCLEAR and VMPTRLD of the VMCS",
            "success",
            loaded
        );
        Self {
            cpu,
            vmx: Some(vmx),
            caps,
            opt,
            on_bochs,
            regs: GuestRegs::default(),
            vmcs_pa,
            launched: false,
            iter: 0,
            exits: 0,
            interrupt_exits: 0,
        }
    }

    /// Fills the current VMCS: `controls`, this CPU's host state, the base
    /// guest state entering at `rip` with stack `rsp` and `rflags`, and the
    /// all-zero MSR bitmap.
    pub fn init_vmcs(&mut self, controls: &Controls, rip: u64, rsp: u64, rflags: u64) {
        {
            let caps = self.caps;
            let mut vmcs = self.token().current_vmcs();
            controls.apply(caps, &mut vmcs);
            vmcs_setup::write_host_state(&mut vmcs, exit::host_rip());
            vmcs_setup::write_guest_state(&mut vmcs, rip, rsp, rflags);
        }
        self.write(F::MsrBitmapAddress, layout::phys_of(&MSR_BITMAP));
    }

    /// Rewrites the current VMCS's control fields (between entries).
    pub fn apply_controls(&mut self, controls: &Controls) {
        let caps = self.caps;
        let mut vmcs = self.token().current_vmcs();
        controls.apply(caps, &mut vmcs);
    }

    fn token(&self) -> &Vmxon {
        match &self.vmx {
            Some(v) => v,
            None => fail(
                format_args!("VMX operation"),
                format_args!("in VMX root operation"),
                format_args!("outside VMX operation"),
            ),
        }
    }

    /// VMREAD; a failure is a failed check.
    pub fn read(&self, f: F) -> u64 {
        match self.token().vmread(f) {
            Ok(v) => v,
            Err(e) => fail(
                format_args!("VMREAD {f:?}"),
                format_args!("success"),
                format_args!("{e}"),
            ),
        }
    }

    /// VMREAD that may fail (a field the processor, or L0, does not have).
    pub fn try_read(&self, f: F) -> Result<u64, shared::vmx::VmFail> {
        self.token().vmread(f)
    }

    /// VMWRITE that may fail (`mode=soak` copies a VMCS field by field).
    pub fn try_write(&mut self, f: F, v: u64) -> Result<(), shared::vmx::VmFail> {
        let mut vmcs = self.token().current_vmcs();
        // SAFETY: only values VMREAD gave for the same field of LHV's own
        // VMCS, which was safe to enter, are written back.
        unsafe { vmcs.try_write(f, v) }
    }

    /// VMWRITE; a failure is a failed check.
    pub fn write(&mut self, f: F, v: u64) {
        let mut vmcs = self.token().current_vmcs();
        // SAFETY: LHV writes only values that keep the VMCS safe to enter
        // (host state of this CPU, structures LHV owns for the whole run).
        if let Err(e) = unsafe { vmcs.try_write(f, v) } {
            fail(
                format_args!("VMWRITE {f:?} = {v:#x}"),
                format_args!("success"),
                format_args!("{e}"),
            );
        }
    }

    /// Moves L2 past the instruction that caused `exit`.
    pub fn skip_instruction(&mut self, exit: &Exit) {
        self.write(F::GuestRip, exit.guest_rip + exit.instruction_len);
    }

    /// Prints `SKIP <check>: Bochs <reason>` (callers check `on_bochs`).
    #[allow(dead_code)]
    pub fn skip_bochs(&self, check: &str, reason: &str) {
        cpu_println!("SKIP {check}: Bochs {reason}");
    }
}

/// What the core made of one exit.
enum Dispatch {
    /// Keep running L2.
    Resume,
    /// L2 finished the iteration.
    IterDone,
}

/// Runs the test on this CPU; never returns.
pub fn run_cpu(vmx: Vmxon, caps: &'static VmxCaps) -> ! {
    let cfg = *CONFIG.get().expect("configured by the BSP");
    let cpu = percpu::current().index();
    let registry = REGISTRY.claim(cpu);

    let mut active = cfg.opt;
    registry.for_each(cfg.opt, &mut |o| {
        if let Some(reason) = o.unsupported(caps) {
            cpu_println!("SKIP {}: {reason}", o.name());
            active = lhv::opt::without(active, o.bit());
        }
    });
    irq::init_cpu(!active.contains(LhvOpt::NO_INTERRUPT));

    let mut controls = Controls::base();
    registry.for_each(active, &mut |o| o.request(&mut controls));
    if let Some((field, bits)) = controls.unsupported(caps) {
        fail(
            format_args!("{field} controls allowed"),
            format_args!("0 unsupported bits"),
            format_args!("{bits:#x}"),
        );
    }

    let plan = L2_PLAN.claim(cpu);
    plan.cpu = cpu;
    let mut n = 0;
    registry.for_each(active, &mut |o| {
        if let Some(a) = o.l2_action() {
            plan.actions[n] = Some(a);
            n += 1;
        }
    });
    let stack = L2_STACK.claim(cpu);
    let stack_top = stack.0.as_ptr_range().end as u64;

    let mut ctx = Ctx::new(cpu, vmx, caps, active, cfg.on_bochs, VMCS.claim(cpu));
    // L2 never executes STI either; with NO_EFLAGS_IF its IF is still set
    // through the VMCS so that external interrupts exit (Bochs does not
    // exit on them while the guest has IF = 0).
    ctx.init_vmcs(
        &controls,
        l2::l2_main as *const () as u64,
        stack_top - 8,
        RFLAGS_IF,
    );
    ctx.regs.gpr[gpr::RDI] = plan as *const L2Plan as u64;
    registry.for_each(active, &mut |o| o.setup(&mut ctx));
    let mut soak = crate::soak::Soak::new(&ctx);

    if cpu == 0 {
        pit::one_shot(irq::PIT_TICKS);
    }
    let mut pit_seen = 0;
    loop {
        registry.for_each(active, &mut |o| o.before_entry(&mut ctx));
        loop {
            let exit = enter_once(&mut ctx);
            match dispatch(&mut ctx, registry, &exit) {
                Dispatch::Resume => {}
                Dispatch::IterDone => break,
            }
        }
        registry.for_each(active, &mut |o| o.after_iteration(&mut ctx));
        if let Some(s) = soak.as_mut() {
            s.after_iteration(&mut ctx, registry);
        }
        if soak.as_ref().is_none_or(|s| s.progress_due(ctx.iter)) {
            cpu_println!("LHV test iter {}", ctx.iter);
        }
        show_status(&ctx);
        take_interrupts(&ctx);
        if cpu == 0 {
            let fired = irq::counters().pit.load(Ordering::Relaxed);
            if fired != pit_seen {
                pit_seen = fired;
                pit::one_shot(irq::PIT_TICKS);
            }
        }
        ctx.iter += 1;
        if cfg.iters.is_some_and(|n| ctx.iter >= n) {
            if let Some(s) = soak.as_mut() {
                s.finish(&ctx);
            }
            finish(&ctx, registry);
        }
    }
}

/// One VM entry and its exit, decoded; entry failures are failed checks.
pub(crate) fn enter_once(ctx: &mut Ctx) -> Exit {
    // SAFETY: the VMCS was written by `run_cpu` with this CPU's host state,
    // HOST_RIP = exit::host_rip(), and only LHV-owned static structures.
    let outcome = unsafe { exit::enter(&mut ctx.regs, ctx.launched) };
    let insn = if ctx.launched { "VMRESUME" } else { "VMLAUNCH" };
    match outcome {
        EntryOutcome::Exited => {}
        EntryOutcome::FailInvalid => fail(
            format_args!("{insn}"),
            format_args!("VM entry"),
            format_args!("VMfailInvalid"),
        ),
        EntryOutcome::FailValid => {
            let err =
                shared::vmx::VmInstructionError::from_u32(ctx.read(F::VmInstructionError) as u32);
            fail(
                format_args!("{insn}"),
                format_args!("VM entry"),
                format_args!("VMfailValid: {err}"),
            )
        }
    }
    ctx.launched = true;
    ctx.exits += 1;
    let reason_field = shared::vmx::exit::ExitReasonField(ctx.read(F::VmExitReason) as u32);
    let exit = Exit {
        reason_field,
        reason: reason_field.basic(),
        qualification: ctx.read(F::ExitQualification),
        instruction_len: ctx.read(F::VmExitInstructionLength),
        guest_rip: ctx.read(F::GuestRip),
        interruption_info: ctx.read(F::VmExitInterruptionInfo) as u32,
    };
    if reason_field.is_entry_failure() {
        fail(
            format_args!("{insn}"),
            format_args!("VM entry"),
            format_args!(
                "entry failure: {reason_field}, qualification {:#x}",
                exit.qualification
            ),
        );
    }
    exit
}

/// The core's exits first (external interrupts, its VMCALLs), then the
/// options'; an exit nobody handles is a failed check.
fn dispatch(ctx: &mut Ctx, registry: &mut Registry, exit: &Exit) -> Dispatch {
    match exit.reason {
        ExitReason::ExternalInterrupt => {
            ctx.interrupt_exits += 1;
            let info = shared::vmx::exit::InterruptionInfo(exit.interruption_info);
            test_assert!(
                info.is_valid(),
                "interruption info of an external-interrupt exit with acknowledge-on-exit (SDM 28.2.2)",
                "valid",
                info.0
            );
            test_assert!(
                irq::serve(info.vector()),
                "external interrupt vector",
                "LHV's",
                info.vector()
            );
            return Dispatch::Resume;
        }
        ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == call::ITER_DONE => {
            test_assert_eq!(exit.instruction_len, 3u64, "VMCALL exit instruction length");
            test_assert_eq!(ctx.regs.gpr[gpr::RBX], ctx.iter, "L2's iteration number");
            ctx.regs.gpr[gpr::RBX] = ctx.iter + 1;
            ctx.skip_instruction(exit);
            return Dispatch::IterDone;
        }
        ExitReason::Vmcall if ctx.regs.gpr[gpr::RAX] == call::ASSERT_FAILED => {
            let (ptr, len) = (ctx.regs.gpr[gpr::RBX], ctx.regs.gpr[gpr::RCX]);
            // SAFETY: L2 is LHV's own code in LHV's address space; it passes
            // a `&'static str` of the image.
            let what = unsafe {
                ::core::str::from_utf8(::core::slice::from_raw_parts(
                    ptr as *const u8,
                    len.min(256) as usize,
                ))
            };
            fail(
                format_args!("L2: {}", what.unwrap_or("?")),
                format_args!("{:#x}", ctx.regs.gpr[gpr::RDX]),
                format_args!("{:#x}", ctx.regs.gpr[gpr::RSI]),
            );
        }
        _ => {}
    }
    let mut handled = Handled::NotMine;
    registry.for_each(ctx.opt, &mut |o| {
        if handled == Handled::NotMine {
            handled = o.on_exit(ctx, exit);
        }
    });
    if handled == Handled::NotMine {
        fail(
            format_args!("VM exit"),
            format_args!("an exit an option expects"),
            format_args!(
                "{} qualification {:#x} at RIP {:#x} RAX {:#x}",
                exit.reason_field,
                exit.qualification,
                exit.guest_rip,
                ctx.regs.gpr[gpr::RAX]
            ),
        );
    }
    Dispatch::Resume
}

/// Lets LHV take its interrupts between iterations: a short IF = 1 window,
/// and every fourth iteration a HLT wait for the next timer interrupt
/// (whose arrival is checked). Nothing with NO_EFLAGS_IF (never STI);
/// no HLT wait with NO_INTERRUPT.
fn take_interrupts(ctx: &Ctx) {
    if ctx.opt.contains(LhvOpt::NO_EFLAGS_IF) {
        return;
    }
    // SAFETY: LHV's IDT handlers are installed for every vector it enables.
    unsafe { x86::sti() };
    x86::pause();
    if !ctx.opt.contains(LhvOpt::NO_INTERRUPT) && ctx.iter % 4 == 3 {
        let before = irq::counters().timer.load(Ordering::Relaxed);
        // The next periodic timer interrupt ends each HLT.
        for _ in 0..4 {
            if irq::counters().timer.load(Ordering::Relaxed) != before {
                break;
            }
            // SAFETY: as above; HLT with IF = 1 ends at the next interrupt.
            unsafe { ::core::arch::asm!("sti; hlt", options(nomem, nostack)) };
        }
        let after = irq::counters().timer.load(Ordering::Relaxed);
        test_assert!(
            after > before,
            "LAPIC timer interrupt during HLT wait",
            format_args!("more than {before}"),
            after
        );
    }
    x86::cli();
}

/// A fixed-size text buffer for one line.
struct Line<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Line<N> {
    const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        ::core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl<const N: usize> Write for Line<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// The live counter of this CPU in the VGA status rows (four per row).
fn show_status(ctx: &Ctx) {
    let mut line = Line::<20>::new();
    let _ = write!(line, "CPU{} it {:<10}", ctx.cpu, ctx.iter);
    console::vga::write_status(ctx.cpu / 4, (ctx.cpu % 4) * 20, line.as_str());
}

/// `CPU(n): LHV done`, the counts line; the BSP waits for every CPU and
/// shuts down.
fn finish(ctx: &Ctx, registry: &mut Registry) -> ! {
    shared::apic::LocalApic::current().timer_stop();
    let mut line = Line::<256>::new();
    let _ = write!(line, "LHV counts");
    let mut unexercised = None;
    registry.for_each(ctx.opt, &mut |o| {
        let _ = write!(line, " {}={}", o.name(), o.count());
        if o.count() == 0 && unexercised.is_none() {
            unexercised = Some(o.name());
        }
    });
    // Issue 4: a run passes only if every enabled option was exercised.
    if let Some(name) = unexercised {
        cpu_println!("{}", line.as_str());
        fail(
            format_args!("option {name} exercised at least once"),
            format_args!("a count >= 1"),
            format_args!("0"),
        );
    }
    let c = irq::counters();
    let _ = write!(
        line,
        " TIMER={} PIT={}",
        c.timer.load(Ordering::Relaxed),
        c.pit.load(Ordering::Relaxed)
    );
    cpu_println!("LHV done");
    cpu_println!("{}", line.as_str());
    CPUS_DONE.fetch_add(1, Ordering::AcqRel);
    if ctx.cpu != 0 {
        x86::cli();
        x86::halt_forever();
    }
    while !COUNT_SET.load(Ordering::Acquire)
        || CPUS_DONE.load(Ordering::Acquire) < CPU_COUNT.load(Ordering::Acquire)
    {
        x86::pause();
    }
    println!("LHV: all CPUs done");
    // Under L0, show that L0 survived the run (the l0-lhv scenarios need it).
    if let Some(exits) = crate::l0::exits() {
        println!("LHV: L0 alive (Stats: {exits} exits on this CPU)");
    }
    shared::platform::shutdown(0)
}
