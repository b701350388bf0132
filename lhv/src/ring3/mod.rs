//! Ring 3 for LHV's tests: the user pages, the way down (IRETQ) and back up
//! (system calls, faults), used by USER_MODE in L1 and NESTED_USER_MODE in
//! L2 (the entry points of both, the state of each section).
//!
//! # The user mapping
//! LHV's boot page tables map the low 4 GiB (identity) and the image (high
//! half) with supervisor-only 2-MiB pages. Rather than set the U bit on any
//! of those (which would expose 2 MiB of kernel data each), ring 3 gets a
//! separate subtree in PML4 slot 1 (`lhv::ring3_abi::USER_BASE`), all entries U = 1 down
//! to 4-KiB pages: the one page of ring-3 code (read-only, an alias of the
//! image's `.text.lhv_user` page) and one stack page per CPU and level.
//! Everything else, kernel data included, stays supervisor-only; the user
//! programs check exactly that with their page faults. L2 shares LHV's CR3
//! (identity EPT), so the same subtree serves L2's ring 3.

use ::core::cell::UnsafeCell;
use ::core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use lhv::ring3_abi::{
    self as abi, USER_CODE_PT_INDEX, USER_NOT_PRESENT_PT_INDEX, USER_PML4_INDEX, pf, pte,
};
use shared::boot::layout;
use shared::percpu::{MAX_CPUS, selector};
use shared::trap::{TrapFrame, vector};
use shared::x86;

pub mod l1;
pub mod l2;

/// System call numbers (RAX).
pub const SYS_EXIT: u64 = 0;
/// RAX = RDI + RSI.
pub const SYS_ADD: u64 = 1;
/// The `vector` of a frame built for SYSCALL (not an IDT vector).
pub const SYSCALL_VECTOR: u64 = 0x100;
/// RFLAGS in ring 3: bit 1 only (IF = 0, IOPL = 0).
pub const USER_RFLAGS: u64 = 0x2;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;

::core::arch::global_asm!(
    include_str!("entry.S"),
    user_ss = const selector::USER_DATA,
    user_cs = const selector::USER_CODE,
    kernel_ds = const selector::KERNEL_DATA,
    user_rflags = const USER_RFLAGS,
    syscall_vector = const SYSCALL_VECTOR,
    sys_add = const SYS_ADD,
    sys_exit = const SYS_EXIT,
    add_operand = const abi::SYSCALL_ADD_OPERAND,
);

unsafe extern "C" {
    fn lhv_ring3_enter(
        kernel_rsp_slot: *mut u64,
        rip: u64,
        user_rsp: u64,
        arg0: u64,
        arg1: u64,
        arg2: u64,
    ) -> u64;
    fn lhv_ring3_resume(kernel_rsp: u64, result: u64) -> !;
    static lhv_ring3_user_page: u8;
    static lhv_ring3_user_end: u8;
}

/// A user-page location: its offset in the user page.
#[derive(Clone, Copy, Debug)]
pub struct FaultSite {
    /// Offset of the faulting instruction.
    pub fault: u64,
    /// Offset of the instruction after it.
    pub resume: u64,
}

/// What a fault from ring 3 must look like.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedFault {
    /// What the fault is, for the failure message.
    pub what: &'static str,
    /// The vector.
    pub vector: u64,
    /// The error code (0 for the exceptions without one: the stubs push 0).
    pub error_code: u64,
    /// CR2 (page faults only).
    pub cr2: Option<Cr2>,
}

impl ExpectedFault {
    /// #PF reading a supervisor page (both programs).
    pub const PF_SUPERVISOR_READ: Self = Self {
        what: "#PF reading a supervisor page (P|U)",
        vector: vector::PF as u64,
        error_code: pf::P | pf::U,
        cr2: Some(Cr2::Probe),
    };
    /// #GP(0) from HLT at CPL 3 (both programs).
    pub const GP_HLT: Self = Self::gp0("#GP(0) from HLT at CPL 3");
    /// #UD from UD2 (both programs).
    pub const UD2: Self = Self {
        what: "#UD from UD2",
        vector: vector::UD as u64,
        error_code: 0,
        cr2: None,
    };

    /// #GP(0) from a privileged instruction.
    pub const fn gp0(what: &'static str) -> Self {
        Self::gp(what, 0)
    }

    /// #GP with `error_code`.
    pub const fn gp(what: &'static str, error_code: u64) -> Self {
        Self {
            what,
            vector: vector::GP as u64,
            error_code,
            cr2: None,
        }
    }
}

/// The CR2 a page fault must report.
#[derive(Clone, Copy, Debug)]
pub enum Cr2 {
    /// The supervisor address the program was given.
    Probe,
    /// The user code page (written).
    CodePage,
    /// The not-present page of the subtree.
    NotPresent,
}

/// Linear address of `sym` (in the user page) at its ring-3 alias.
pub fn user_alias(sym: *const u8) -> u64 {
    let page = &raw const lhv_ring3_user_page as u64;
    abi::user_page_va(USER_CODE_PT_INDEX) + (sym as u64 - page)
}

/// Linear address of offset `off` of the user page at its alias.
pub fn user_va(off: u64) -> u64 {
    abi::user_page_va(USER_CODE_PT_INDEX) + off
}

/// The address CR2 must hold for `kind`.
pub fn cr2_of(kind: Cr2, probe: u64) -> u64 {
    match kind {
        Cr2::Probe => probe,
        Cr2::CodePage => abi::user_page_va(USER_CODE_PT_INDEX),
        Cr2::NotPresent => abi::user_page_va(USER_NOT_PRESENT_PT_INDEX),
    }
}

/// CR2.
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe {
        ::core::arch::asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// A page of 512 entries or bytes, written through `UnsafeCell`.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u64; 512]>);

// SAFETY: the page tables are written once (inside `USER_MAP.call_once`)
// and afterwards read only by the processor; the stacks only by their CPU.
unsafe impl Sync for Page {}

impl Page {
    const fn new() -> Self {
        Self(UnsafeCell::new([0; 512]))
    }
}

static USER_PDPT: Page = Page::new();
static USER_PD: Page = Page::new();
static USER_PT: Page = Page::new();
/// User stacks: CPU `c` has `2c` (L1) and `2c + 1` (L2).
static USER_STACKS: [Page; 2 * MAX_CPUS] = [const { Page::new() }; 2 * MAX_CPUS];
static USER_MAP: spin::Once<()> = spin::Once::new();

/// The top of CPU `cpu`'s user stack (`l2`: L2's), at its user alias.
pub fn user_stack_top(cpu: usize, l2: bool) -> u64 {
    abi::user_page_va(abi::user_stack_pt_index(cpu, l2)) + 4096
}

/// Maps the user subtree into the live PML4 (once; every CPU shares it).
pub fn map_user_pages() {
    USER_MAP.call_once(|| {
        let page = &raw const lhv_ring3_user_page as u64;
        let end = &raw const lhv_ring3_user_end as u64;
        assert!(
            page.is_multiple_of(4096) && end - page <= 4096,
            "the user code fits one page"
        );
        let pt = USER_PT.0.get();
        // SAFETY: inside call_once: no other reference to the tables exists
        // and the processor does not use them before PML4 slot 1 is set.
        unsafe {
            (*pt)[USER_CODE_PT_INDEX] =
                abi::table_entry(layout::phys_of(page as *const u8), pte::P | pte::U);
            for (i, s) in USER_STACKS.iter().enumerate() {
                (*pt)[abi::USER_STACK_FIRST_PT_INDEX + i] =
                    abi::table_entry(layout::phys_of(s.0.get()), pte::P | pte::W | pte::U);
            }
            (*USER_PD.0.get())[0] = abi::table_entry(layout::phys_of(pt), pte::P | pte::W | pte::U);
            (*USER_PDPT.0.get())[0] =
                abi::table_entry(layout::phys_of(USER_PD.0.get()), pte::P | pte::W | pte::U);
        }
        let pml4 = x86::read_cr3() & pte::ADDR;
        assert!(pml4 < 1 << 32, "the PML4 is identity-mapped");
        let slot = (pml4 + 8 * USER_PML4_INDEX as u64) as *mut u64;
        // SAFETY: the live PML4 is identity-mapped (below 4 GiB); slot 1 is
        // unused by the boot tables (checked), so no translation changes.
        unsafe {
            assert_eq!(
                slot.read_volatile(),
                0,
                "PML4 slot {USER_PML4_INDEX} unused"
            );
            slot.write_volatile(abi::table_entry(
                layout::phys_of(USER_PDPT.0.get()),
                pte::P | pte::W | pte::U,
            ));
        }
    });
}

/// A ring-0 stack for traps from ring 3 (the TSS's RSP0).
#[repr(C, align(16))]
pub struct TrapStack(UnsafeCell<[u8; 16 * 1024]>);

// SAFETY: each CPU's trap stack is used only by that CPU, as a stack.
unsafe impl Sync for TrapStack {}

impl TrapStack {
    /// A zeroed stack.
    pub const fn new() -> Self {
        Self(UnsafeCell::new([0; 16 * 1024]))
    }

    /// Its top.
    pub fn top(&self) -> u64 {
        self.0.get() as u64 + 16 * 1024
    }
}

/// The state of one CPU's ring-3 section at one level (L1 or L2), shared
/// by the ring-0 code that starts it and the handlers that take it back.
/// Its first two words are what `lhv_ring3_syscall_entry` finds at
/// `gs:[0]` and `gs:[8]` after SWAPGS (see [`Section::syscall_area`]).
#[repr(C)]
pub struct Section {
    /// The kernel RSP `lhv_ring3_enter` saved (where `resume` returns).
    pub kernel_rsp: AtomicU64,
    /// The user RSP at SYSCALL (scratch of the entry stub).
    pub user_rsp: AtomicU64,
    /// Whether ring 3 runs now.
    pub active: AtomicBool,
    /// Index of the next expected fault.
    pub next_fault: AtomicUsize,
    /// System calls served (exit excluded).
    pub syscalls: AtomicU64,
    /// The supervisor address the program reads.
    pub probe: AtomicU64,
}

impl Section {
    /// Idle.
    pub const fn new() -> Self {
        Self {
            kernel_rsp: AtomicU64::new(0),
            user_rsp: AtomicU64::new(0),
            active: AtomicBool::new(false),
            next_fault: AtomicUsize::new(0),
            syscalls: AtomicU64::new(0),
            probe: AtomicU64::new(0),
        }
    }

    /// The value for IA32_KERNEL_GS_BASE while SYSCALL may come.
    pub fn syscall_area(&self) -> u64 {
        &raw const self.kernel_rsp as u64
    }

    /// Runs `program` (a symbol of the user page) at CPL 3 on `stack` with
    /// arguments `args`, until it exits; returns its exit value.
    pub fn run(&self, program: *const u8, stack: u64, args: [u64; 3]) -> u64 {
        self.next_fault.store(0, Ordering::Relaxed);
        self.syscalls.store(0, Ordering::Relaxed);
        self.probe.store(args[1], Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
        // SAFETY: the user page and stack are mapped user-accessible, the
        // handlers of every event ring 3 raises are installed by the caller
        // (they end the section with `resume` on the stack saved in
        // `kernel_rsp`), and the stub preserves the callee-saved registers
        // and RFLAGS.
        let r = unsafe {
            lhv_ring3_enter(
                self.kernel_rsp.as_ptr(),
                user_alias(program),
                stack,
                args[0],
                args[1],
                args[2],
            )
        };
        self.active.store(false, Ordering::Release);
        r
    }

    /// Ends the section: back in `run` with `result`.
    pub fn exit(&self, result: u64) -> ! {
        // SAFETY: `kernel_rsp` is the frame of the `run` in progress on this
        // CPU (the section is active), below which everything is abandoned.
        unsafe { lhv_ring3_resume(self.kernel_rsp.load(Ordering::Relaxed), result) }
    }

    /// Checks fault `frame` against site `sites[i]` / `expected[i]` (`i` =
    /// the next expected fault) and moves ring 3 past it. Returns the
    /// first mismatch as (what, expected, got).
    pub fn take_fault(
        &self,
        frame: &mut TrapFrame,
        sites: &[FaultSite],
        expected: &[ExpectedFault],
        stack_top: u64,
    ) -> Result<(), (&'static str, u64, u64)> {
        let i = self.next_fault.load(Ordering::Relaxed);
        let (Some(site), Some(exp)) = (sites.get(i), expected.get(i)) else {
            return Err((
                "fault count from ring 3",
                expected.len() as u64,
                i as u64 + 1,
            ));
        };
        let checks = [
            (exp.what, exp.vector, frame.vector),
            (
                "RIP of the faulting instruction",
                user_va(site.fault),
                frame.rip,
            ),
            (exp.what, exp.error_code, frame.error_code),
            (
                "CS (CPL 3) of the faulting frame",
                selector::USER_CODE.into(),
                frame.cs,
            ),
            (
                "SS of the faulting frame",
                selector::USER_DATA.into(),
                frame.ss,
            ),
            ("RSP of the faulting frame", stack_top, frame.rsp),
            (
                "RFLAGS.IF and IOPL in ring 3",
                0,
                frame.rflags & (RFLAGS_IF | 3 << 12),
            ),
        ];
        for (what, e, g) in checks {
            if e != g {
                return Err((what, e, g));
            }
        }
        if let Some(kind) = exp.cr2 {
            let e = cr2_of(kind, self.probe.load(Ordering::Relaxed));
            let g = read_cr2();
            if e != g {
                return Err(("CR2 of the page fault", e, g));
            }
        }
        frame.rip = user_va(site.resume);
        self.next_fault.store(i + 1, Ordering::Relaxed);
        Ok(())
    }
}

/// The fault sites of a table the assembly emits.
pub fn sites<const N: usize>(table: &'static [[u64; 2]; N]) -> [FaultSite; N] {
    table.map(|[fault, resume]| FaultSite { fault, resume })
}
