//! The virtual CPU: per-CPU guest state and the VM-entry/VM-exit path.
//!
//! An assembly stub is the host RIP of every VMCS01. It saves the guest's
//! general registers into the CPU's [`Vcpu`] (found in the slot at the top of
//! the exit stack, i.e. at host RSP), calls [`crate::exits::handle_exit`]
//! through [`exit_entry`], restores the registers and executes VMRESUME.
//! VMLAUNCH and VMRESUME failures end in Rust functions that report the
//! VM-instruction error and stop the CPU.

use core::cell::UnsafeCell;
use core::mem::{MaybeUninit, offset_of};

use shared::percpu::MAX_CPUS;
use shared::vmx::insn::{GuardedVmcs, VmcsRegion, Vmxon};
use shared::vmx::nested::entry_checks::GuestScope;
use shared::vmx::{VmcsAccess, VmcsField};

/// The guest's general registers, indexed by the SDM's register numbers
/// (0 RAX, 1 RCX, 2 RDX, 3 RBX, 4 RSP, 5 RBP, 6 RSI, 7 RDI, 8-15 R8-R15).
/// Slot 4 is unused: the guest's RSP lives in the VMCS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestRegs {
    pub gpr: [u64; 16],
}

/// Register numbers (SDM Table 28-3 and the instruction encodings).
pub mod reg {
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
}

/// What the exit handler wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// VMRESUME the guest.
    Guest,
    /// Stop this CPU (the reason has been reported).
    Stop,
}

/// Why L0 single-steps one guest instruction (RFLAGS.TF and #DB exiting;
/// the EPT-violation instruction length is undefined and Bochs has no
/// monitor trap flag).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// A write to the hidden page holding `gpa` lands in the sink page.
    HiddenWrite { gpa: u64 },
    /// A write to the xAPIC page at `gpa` that L0 cannot decode: this
    /// CPU's view of the page names its scratch page for the step, and L0
    /// performs what the instruction wrote there (`exits::apic_write`).
    /// `from` is where the guest stood before the step (its progress
    /// tells the instruction's completion from an earlier #DB).
    ApicWrite { gpa: u64, from: StepFrom },
    /// A write of L2 that EPT12 allows and EPT01 does not: the EPT02 entry
    /// of `gpa2` (in the EPT02 whose PML4 is `root`) names the sink page
    /// for one instruction, or, for a write to the xAPIC page at `gpa1` that
    /// L0 cannot decode (`apic`: where L2 stood before the step), this
    /// CPU's scratch page, whose captured writes L0 then performs as for
    /// [`StepKind::ApicWrite`] (see `nested::ept02`).
    Ept02Access {
        root: u64,
        gpa2: u64,
        gpa1: u64,
        apic: Option<StepFrom>,
    },
}

/// Guest state an instruction changes when it completes: RIP, and for a
/// REP iteration (RIP unchanged) RCX, for a stack store RSP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepFrom {
    pub rip: u64,
    pub rsp: u64,
    pub rcx: u64,
}

/// A single-stepped instruction in progress.
#[derive(Clone, Copy, Debug)]
pub struct SingleStep {
    pub kind: StepKind,
    /// The guest's own RFLAGS.TF before L0 set it.
    pub guest_tf: bool,
}

/// One CPU's virtual CPU. `regs` must stay the first field (the exit stub
/// addresses it at offset 0).
#[repr(C)]
pub struct Vcpu {
    pub regs: GuestRegs,
    /// Dense CPU index.
    pub index: usize,
    /// VM exits handled on this CPU.
    pub exits: u64,
    /// Exits and L0's cycles by reason (`exit_profile`).
    pub profile: shared::exit_profile::ExitProfile,
    /// Cycles per phase of nested entries and exits (`exit_profile=phases`).
    pub phases: shared::exit_profile::PhaseTimer,
    /// The instruction being single-stepped, if any.
    pub step: Option<SingleStep>,
    /// NMI VM exits since the last VM entry (see `events`).
    pub nmi_exits: u32,
    /// NMIs pending for the guest: at most [`MAX_PENDING_NMIS`], as the
    /// processor holds one NMI while it delivers (or blocks) another.
    pub nmis_pending: u8,
    /// NMIs injected into the guest.
    pub nmis_injected: u64,
    /// Physical address of this CPU's VMCS01.
    pub vmcs_phys: u64,
    /// L1's VMX operation and L0's state for it (see `nested`).
    pub nested: crate::nested::Nested,
}

impl Vcpu {
    /// Reads a guest register by number (RSP from the VMCS).
    pub fn gpr(&self, vmcs: &impl VmcsAccess, n: usize) -> u64 {
        match n {
            reg::RSP => vmcs.read(VmcsField::GuestRsp),
            n => self.regs.gpr[n & 15],
        }
    }

    /// Writes a guest register by number (RSP into the VMCS).
    pub fn set_gpr(&mut self, vmcs: &mut impl VmcsAccess, n: usize, value: u64) {
        match n {
            reg::RSP => vmcs.write(VmcsField::GuestRsp, value),
            n => self.regs.gpr[n & 15] = value,
        }
    }
}

/// NMIs a processor can hold for later: one being delivered or blocked,
/// and one latched behind it (SDM 6.7.1; KVM's `nmi_pending` rule).
pub const MAX_PENDING_NMIS: u8 = 2;

/// Bytes of each CPU's exit stack. L0's deepest exit paths (a nested
/// entry with its checks, EPT02 faults, single steps with a page of
/// scratch) use about 9 KiB; Stats reports each CPU's high-water mark.
const EXIT_STACK_SIZE: usize = 32 * 1024;
/// A high-water mark above this is reported as a fault (the harness fails
/// the run): the stack must be made bigger or the path shallower.
const EXIT_STACK_WARN: usize = EXIT_STACK_SIZE * 3 / 4;

/// The page below each exit stack, which L0's page tables leave not present
/// (`memory::relocate`): an overflow faults instead of overwriting the
/// previous CPU's slot.
#[repr(C, align(4096))]
struct GuardPage([u8; 4096]);

#[repr(C, align(4096))]
struct ExitStack([u8; EXIT_STACK_SIZE]);

/// One CPU's VMX state, laid out (`repr(C)`) with the guard page first and
/// the stack right above it.
#[repr(C, align(4096))]
struct PerCpuVmx {
    _guard: GuardPage,
    stack: UnsafeCell<ExitStack>,
    vmcs: UnsafeCell<VmcsRegion>,
    vcpu: UnsafeCell<MaybeUninit<Vcpu>>,
    taken: core::sync::atomic::AtomicBool,
}

const _: () = assert!(offset_of!(PerCpuVmx, stack) == 4096);

// SAFETY: CPU i only ever touches slot i (by its own index), and the
// hardware uses the VMCS and stack of the CPU that runs them.
unsafe impl Sync for PerCpuVmx {}

static SLOTS: [PerCpuVmx; MAX_CPUS] = [const {
    PerCpuVmx {
        _guard: GuardPage([0; 4096]),
        stack: UnsafeCell::new(ExitStack([0; EXIT_STACK_SIZE])),
        vmcs: UnsafeCell::new(VmcsRegion::new()),
        vcpu: UnsafeCell::new(MaybeUninit::uninit()),
        taken: core::sync::atomic::AtomicBool::new(false),
    }
}; MAX_CPUS];

/// The exit stacks' guard pages, for L0's page tables and fault reports.
pub fn exit_stack_guards() -> shared::guard_page::GuardedArray {
    shared::guard_page::GuardedArray {
        base: SLOTS.as_ptr() as u64,
        stride: size_of::<PerCpuVmx>() as u64,
        count: MAX_CPUS as u64,
    }
}

/// A #PF or #DF whose address is an exit stack's guard page: says so
/// before the default handler prints the frame and stops the CPU.
pub fn stack_overflow_claim(_frame: &mut shared::trap::TrapFrame) -> shared::trap::Claim {
    let cr2 = shared::x86::read_cr2();
    if let Some(cpu) = exit_stack_guards().element_of_guard(cr2) {
        shared::cpu_println!(
            "L0: exit stack overflow: CPU {cpu}'s stack ran into its guard page at {cr2:#x}"
        );
    }
    shared::trap::Claim::NotMine
}

/// `selftest=exit-stack-overflow` on L0's command line: the BSP's first
/// VMCALL exit (the boot loader's INT 15h) recurses until its exit stack runs into the guard page (scenario
/// `l0-stack-guard`, which expects the fault report).
static OVERFLOW_SELFTEST: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// Reads `selftest=` from L0's command line (BSP, at boot).
pub fn configure_selftest(cmdline: &str) {
    let on = shared::cmdline::get(cmdline, "selftest") == Some("exit-stack-overflow");
    OVERFLOW_SELFTEST.store(on, core::sync::atomic::Ordering::Relaxed);
}

/// Runs the overflow self-test if asked for (called at every VMCALL exit).
pub fn maybe_overflow_selftest(index: usize) {
    if index == 0 && OVERFLOW_SELFTEST.load(core::sync::atomic::Ordering::Relaxed) {
        shared::cpu_println!("L0 self-test: overflowing the exit stack");
        core::hint::black_box(consume_stack(0));
    }
}

/// Uses 1 KiB of stack per call, without end (the guard page ends it).
#[inline(never)]
fn consume_stack(depth: u64) -> u64 {
    let mut frame = [0u8; 1024];
    core::hint::black_box(&mut frame);
    if depth == u64::MAX {
        return 0;
    }
    consume_stack(depth + 1) + u64::from(core::hint::black_box(frame[0]))
}

/// Bytes of [`exit_stack_guards`]'s span (sizes L0's page tables).
pub const SLOTS_BYTES: u64 = size_of::<[PerCpuVmx; MAX_CPUS]>() as u64;

/// The byte an exit stack is painted with before its first use.
const STACK_PAINT: u8 = 0xa5;

/// The most of its exit stack CPU `index` has used: the lowest word that
/// no longer holds the paint marks the deepest point (0 before the CPU
/// took its slot).
pub fn exit_stack_high_water(index: usize) -> usize {
    let Some(slot) = SLOTS.get(index) else {
        return 0;
    };
    if !slot.taken.load(core::sync::atomic::Ordering::Acquire) {
        return 0;
    }
    let words = slot.stack.get().cast::<u64>();
    (0..EXIT_STACK_SIZE / 8)
        // SAFETY: inside this slot's stack, 8-byte aligned; a racy read of
        // another CPU's stack only gives a stale figure.
        .find(|&i| unsafe { words.add(i).read_volatile() } != u64::from_ne_bytes([STACK_PAINT; 8]))
        .map_or(0, |i| EXIT_STACK_SIZE - i * 8)
}

/// Prints CPU `index`'s exit-stack high-water mark (Stats), as a fault
/// when it passes [`EXIT_STACK_WARN`].
pub fn report_exit_stack(index: usize) {
    let used = exit_stack_high_water(index);
    let verdict = if used > EXIT_STACK_WARN {
        "exit stack nearly full"
    } else {
        "exit stack"
    };
    shared::cpu_println!("L0 {verdict}: {used} of {EXIT_STACK_SIZE} bytes used at most");
}

/// Everything `vmcs01` needs to set up this CPU's VMCS.
pub struct CpuVmx {
    pub vcpu: &'static mut Vcpu,
    /// The VMCS region (to stamp and VMPTRLD).
    pub vmcs: &'static mut VmcsRegion,
    /// Host RSP: the top of the exit stack, with the `Vcpu` pointer above.
    pub host_rsp: u64,
}

/// Takes this CPU's VMX slot (once per CPU: a second call for the same
/// index finds the slot taken and returns `None`, so no two references to
/// one slot can exist).
pub fn take(index: usize, nested_trace: bool) -> Option<CpuVmx> {
    let slot = SLOTS.get(index)?;
    if slot.taken.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    let nested = crate::nested::Nested::take(index, nested_trace)?;
    // SAFETY: `taken` was false: this is the only call for slot `index`,
    // so nothing else holds references into it.
    let (vcpu, vmcs, stack) = unsafe {
        (
            &mut *slot.vcpu.get(),
            &mut *slot.vmcs.get(),
            &mut *slot.stack.get(),
        )
    };
    let vcpu = vcpu.write(Vcpu {
        regs: GuestRegs::default(),
        index,
        exits: 0,
        profile: shared::exit_profile::ExitProfile::new(),
        phases: shared::exit_profile::PhaseTimer::new(),
        step: None,
        nmi_exits: 0,
        nmis_pending: 0,
        nmis_injected: 0,
        vmcs_phys: shared::boot::layout::phys_of(vmcs as *const VmcsRegion),
        nested,
    });
    // Painted, so that the high-water mark finds the deepest word written
    // whatever its value (stack probes write zeros).
    stack.0.fill(STACK_PAINT);
    // The top 16 bytes hold the Vcpu pointer; host RSP is 16-byte aligned.
    let top = stack.0.as_mut_ptr() as u64 + EXIT_STACK_SIZE as u64 - 16;
    // SAFETY: `top` is inside this CPU's exit stack and 8-byte aligned.
    unsafe { (top as *mut u64).write(vcpu as *mut Vcpu as u64) };
    Some(CpuVmx {
        vcpu,
        vmcs,
        host_rsp: top,
    })
}

/// Address of the exit stub (host RIP).
pub fn exit_stub() -> u64 {
    l0_vm_exit as *const () as u64
}

unsafe extern "C" {
    fn l0_vm_exit();
    fn l0_vm_launch(vcpu: *mut core::ffi::c_void, host_rsp: u64) -> !;
}

/// Enters the guest with VMLAUNCH on the current VMCS. Never returns: the
/// guest's exits go to the exit stub; a failure is reported and stops the
/// CPU.
///
/// # Safety
/// The current VMCS must be this CPU's fully set-up VMCS01 whose host state
/// points at the exit stub and `vcpu`'s exit stack.
pub unsafe fn launch(vcpu: &'static mut Vcpu, host_rsp: u64) -> ! {
    // SAFETY: the caller guarantees VMX root operation (VMCS01 current).
    let vmx = unsafe { Vmxon::assume_enabled() };
    if crate::entry_guard::check(vcpu, &vmx.guarded_vmcs(), GuestScope::All) == Resume::Stop {
        stop_cpu();
    }
    // SAFETY: forwarded to the caller; `host_rsp` is the exit stack's top,
    // which holds the Vcpu pointer.
    unsafe { l0_vm_launch((vcpu as *mut Vcpu).cast(), host_rsp) }
}

/// How the exit stub enters the guest next: VMLAUNCH for a VMCS that was
/// never launched (a new VMCS02), VMRESUME otherwise.
fn next_entry(vcpu: &Vcpu) -> u64 {
    u64::from(vcpu.nested.needs_launch())
}

/// Called by the exit stub with the guest registers saved; returns 1 for
/// VMLAUNCH, 0 for VMRESUME.
extern "C" fn exit_entry(vcpu: &mut Vcpu) -> u64 {
    vcpu.exits += 1;
    let start = shared::x86::rdtsc();
    let origin = crate::exit_profile::origin(vcpu.nested.in_l2());
    let reason = crate::exits::basic_reason();
    if crate::exits::handle_exit(vcpu) == Resume::Stop {
        stop_cpu();
    }
    let end = shared::x86::rdtsc();
    vcpu.profile.record(origin, reason, start, end);
    next_entry(vcpu)
}

/// VMLAUNCH or VMRESUME failed (the stub comes here with the guest
/// registers loaded). A VMCS02 that the processor refuses means L0's
/// checks missed something: reported, and L1 gets a VM-entry failure;
/// VMCS01 failing stops the CPU. Returns as [`exit_entry`].
extern "C" fn entry_failed(vcpu: &mut Vcpu) -> u64 {
    let what = if vcpu.nested.in_l2() {
        "VMCS02 entry"
    } else {
        "VMRESUME/VMLAUNCH"
    };
    report_entry_failure(what, vcpu);
    if !crate::nested::exit::entry_refused(vcpu) {
        stop_cpu();
    }
    // L1 next, with its host state from VMCS12 in VMCS01, and the VM-entry
    // failure in VMCS12 pushed into the shadow VMCS it reads.
    // SAFETY: the stub only calls this in VMX root operation.
    let vmx = unsafe { Vmxon::assume_enabled() };
    let mut v = vmx.guarded_vmcs();
    crate::nested::shadow::before_l1(vcpu, &mut v);
    if crate::entry_guard::check(vcpu, &v, GuestScope::All) == Resume::Stop {
        stop_cpu();
    }
    next_entry(vcpu)
}

fn report_entry_failure(what: &str, vcpu: &Vcpu) {
    // SAFETY: the stub only calls these in VMX root operation.
    let vmx = unsafe { Vmxon::assume_enabled() };
    let vmcs: GuardedVmcs<'_> = vmx.guarded_vmcs();
    match vmcs.try_read(VmcsField::VmInstructionError) {
        Ok(e) => {
            let e = shared::vmx::VmInstructionError::from_u32(e as u32);
            shared::cpu_println!("{what} failed: VMfailValid, VM-instruction error {e}");
        }
        Err(_) => shared::cpu_println!("{what} failed: VMfailInvalid (no current VMCS)"),
    }
    crate::dump::vmcs(&vmcs, vcpu);
}

/// Stops this CPU for good (interrupts off, HLT loop).
pub fn stop_cpu() -> ! {
    shared::cpu_println!("stopping this CPU");
    shared::console::flush();
    shared::x86::halt_forever()
}

core::arch::global_asm!(
    ".global l0_vm_exit",
    "l0_vm_exit:",
    "push rax",
    "mov rax, [rsp + 8]",
    "mov [rax + {rcx}], rcx",
    "mov [rax + {rdx}], rdx",
    "mov [rax + {rbx}], rbx",
    "mov [rax + {rbp}], rbp",
    "mov [rax + {rsi}], rsi",
    "mov [rax + {rdi}], rdi",
    "mov [rax + {r8}], r8",
    "mov [rax + {r9}], r9",
    "mov [rax + {r10}], r10",
    "mov [rax + {r11}], r11",
    "mov [rax + {r12}], r12",
    "mov [rax + {r13}], r13",
    "mov [rax + {r14}], r14",
    "mov [rax + {r15}], r15",
    "pop rcx",
    "mov [rax + {rax}], rcx",
    "mov rdi, rax",
    "cld",
    "call {exit_entry}",
    // rax: 1 = VMLAUNCH, 0 = VMRESUME; [rsp] is the Vcpu pointer.
    "4:",
    "mov rcx, rax",
    "mov rax, [rsp]",
    "test rcx, rcx",
    "jnz 5f",
    "call 3f",
    "vmresume",
    "jmp 6f",
    "5:",
    "call 3f",
    "vmlaunch",
    // The entry failed: report, and enter whatever the handler chose.
    "6:",
    "mov rdi, [rsp]",
    "cld",
    "call {entry_failed}",
    "jmp 4b",
    // l0_vm_launch(vcpu: rdi, host_rsp: rsi): the first entry, from the
    // exit stack as every later one.
    ".global l0_vm_launch",
    "l0_vm_launch:",
    "mov rsp, rsi",
    "mov eax, 1",
    "jmp 4b",
    // Loads the guest registers from the Vcpu at rax (rax last). Called,
    // so it leaves the stack as it found it; only MOVs: flags survive.
    "3:",
    "mov rcx, [rax + {rcx}]",
    "mov rdx, [rax + {rdx}]",
    "mov rbx, [rax + {rbx}]",
    "mov rbp, [rax + {rbp}]",
    "mov rsi, [rax + {rsi}]",
    "mov rdi, [rax + {rdi}]",
    "mov r8, [rax + {r8}]",
    "mov r9, [rax + {r9}]",
    "mov r10, [rax + {r10}]",
    "mov r11, [rax + {r11}]",
    "mov r12, [rax + {r12}]",
    "mov r13, [rax + {r13}]",
    "mov r14, [rax + {r14}]",
    "mov r15, [rax + {r15}]",
    "mov rax, [rax + {rax}]",
    "ret",
    rax = const slot(0),
    rcx = const slot(1),
    rdx = const slot(2),
    rbx = const slot(3),
    rbp = const slot(5),
    rsi = const slot(6),
    rdi = const slot(7),
    r8 = const slot(8),
    r9 = const slot(9),
    r10 = const slot(10),
    r11 = const slot(11),
    r12 = const slot(12),
    r13 = const slot(13),
    r14 = const slot(14),
    r15 = const slot(15),
    exit_entry = sym exit_entry,
    entry_failed = sym entry_failed,
);

/// Offset in `Vcpu` of guest register number `n`.
const fn slot(n: usize) -> usize {
    offset_of!(Vcpu, regs) + offset_of!(GuestRegs, gpr) + 8 * n
}
