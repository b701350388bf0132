//! Per-CPU state of the kernels: index, APIC id, GDT, TSS and stacks.
//!
//! Every CPU's IA32_GS_BASE points to its [`PerCpu`]; the first field is a
//! pointer to itself, so `mov rax, gs:[0]` finds it without an MSR read
//! (which would cost a VM exit in a guest). Set before anything is printed.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use x86_64::VirtAddr;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

use crate::x86;

/// Most CPUs the kernels run on.
pub const MAX_CPUS: usize = 64;
/// Kernel stack of each CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// Each interrupt-stack-table stack (NMI, #DF, #MC).
pub const IST_STACK_SIZE: usize = 16 * 1024;

/// IST slots (1-based in the IDT, 0-based in the TSS).
pub const IST_NMI: u16 = 1;
pub const IST_DOUBLE_FAULT: u16 = 2;
pub const IST_MACHINE_CHECK: u16 = 3;
const IST_COUNT: usize = 3;

/// GDT selectors, identical on every CPU. The order (kernel code, kernel
/// data, user data, user code) is the one SYSCALL/SYSRET require.
pub mod selector {
    pub const KERNEL_CODE: u16 = 0x08;
    pub const KERNEL_DATA: u16 = 0x10;
    pub const USER_DATA: u16 = 0x18 | 3;
    pub const USER_CODE: u16 = 0x20 | 3;
    pub const TSS: u16 = 0x28;
}

#[repr(C, align(16))]
struct Stack<const N: usize>([u8; N]);

/// One CPU's state. Only its own CPU mutates the interior-mutable parts
/// (GDT/TSS, during `init_this_cpu`).
#[repr(C, align(64))]
pub struct PerCpu {
    /// `gs:[0]`: pointer to this structure.
    self_ptr: UnsafeCell<*const PerCpu>,
    index: AtomicU32,
    apic_id: AtomicU32,
    online: AtomicBool,
    /// NMIs seen by this CPU's host-mode NMI handler (see `trap`).
    pub nmi_count: AtomicU32,
    gdt: UnsafeCell<GlobalDescriptorTable<8>>,
    tss: UnsafeCell<TaskStateSegment>,
}

/// A CPU's stacks, kept apart from `PerCpu` so that they are all zeros and
/// land in `.bss` rather than in the image file.
struct CpuStacks {
    kernel: UnsafeCell<Stack<STACK_SIZE>>,
    ist: UnsafeCell<[Stack<IST_STACK_SIZE>; IST_COUNT]>,
}

// SAFETY: each CPU's stacks are used only by that CPU (as stacks, by the
// hardware and compiled code); Rust code only takes their addresses.
unsafe impl Sync for CpuStacks {}

// SAFETY: the UnsafeCell parts are written only by the owning CPU during its
// initialisation, before any other code can observe them; the rest is atomic.
unsafe impl Sync for PerCpu {}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_ptr: UnsafeCell::new(core::ptr::null()),
            index: AtomicU32::new(u32::MAX),
            apic_id: AtomicU32::new(u32::MAX),
            online: AtomicBool::new(false),
            nmi_count: AtomicU32::new(0),
            gdt: UnsafeCell::new(GlobalDescriptorTable::empty()),
            tss: UnsafeCell::new(TaskStateSegment::new()),
        }
    }

    /// Dense CPU index (0 = BSP).
    pub fn index(&self) -> usize {
        self.index.load(Ordering::Relaxed) as usize
    }

    /// Local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Whether the CPU has finished `init_this_cpu`.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }
}

static CPUS: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];
static STACKS: [CpuStacks; MAX_CPUS] = [const {
    CpuStacks {
        kernel: UnsafeCell::new(Stack([0; STACK_SIZE])),
        ist: UnsafeCell::new([const { Stack([0; IST_STACK_SIZE]) }; IST_COUNT]),
    }
}; MAX_CPUS];

/// The state of CPU `index`.
pub fn get(index: usize) -> Option<&'static PerCpu> {
    CPUS.get(index)
}

/// Top of CPU `index`'s kernel stack (for the AP trampoline and the TSS).
pub fn stack_top(index: usize) -> Option<u64> {
    STACKS
        .get(index)
        .map(|s| s.kernel.get() as u64 + STACK_SIZE as u64)
}

/// Number of CPUs that have finished their initialisation.
pub fn online_count() -> usize {
    CPUS.iter().filter(|c| c.is_online()).count()
}

/// Points GS at CPU `index`'s state. First thing every CPU does in Rust.
///
/// # Safety
/// Must be called once per CPU, on that CPU, with a distinct index.
pub unsafe fn set_current(index: usize, apic_id: u32) {
    let cpu = &CPUS[index];
    // SAFETY: only this CPU touches its own `self_ptr`, and only now.
    unsafe { *cpu.self_ptr.get() = cpu as *const PerCpu };
    cpu.index.store(index as u32, Ordering::Relaxed);
    cpu.apic_id.store(apic_id, Ordering::Relaxed);
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; the kernels never use
    // GS for anything else.
    unsafe { x86::wrmsr(x86::msr::IA32_GS_BASE, cpu as *const PerCpu as u64) };
    GS_READY.store(true, Ordering::Release);
}

/// This CPU's state. Only valid after `set_current` on this CPU.
pub fn current() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: GS points to this CPU's `PerCpu` (see `set_current`), whose
    // first field is a pointer to itself.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
    };
    // SAFETY: the pointer refers to an element of the static `CPUS`.
    unsafe { &*p }
}

/// Set once the BSP's GS points to its `PerCpu`. Every AP sets its GS before
/// running any other code, so after this only the BSP's early boot lacks it.
static GS_READY: AtomicBool = AtomicBool::new(false);

/// This CPU's index, or 0 while GS is not set up yet (early boot on the BSP).
/// No MSR access: printing must not cost a VM exit when running as a guest.
pub fn index_or_boot() -> usize {
    if GS_READY.load(Ordering::Acquire) {
        current().index()
    } else {
        0
    }
}

/// Loads this CPU's GDT (with its TSS and IST stacks) and the shared IDT,
/// and marks the CPU online.
///
/// # Safety
/// Call once per CPU, on that CPU, after `set_current`.
pub unsafe fn init_this_cpu() {
    let cpu = current();
    // SAFETY: only this CPU accesses its TSS and GDT, and it does so here,
    // before loading them; afterwards they are only read by the hardware.
    let (tss, gdt) = unsafe { (&mut *cpu.tss.get(), &mut *cpu.gdt.get()) };
    // SAFETY: as above for the IST stacks.
    let ist = unsafe { &*STACKS[cpu.index()].ist.get() };
    for (slot, stack) in ist.iter().enumerate() {
        tss.interrupt_stack_table[slot] =
            VirtAddr::from_ptr(stack.0.as_ptr()) + IST_STACK_SIZE as u64;
    }
    tss.privilege_stack_table[0] =
        VirtAddr::new(STACKS[cpu.index()].kernel.get() as u64 + STACK_SIZE as u64);
    let tss: &'static TaskStateSegment = tss;
    *gdt = GlobalDescriptorTable::empty();
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    gdt.append(Descriptor::user_data_segment());
    gdt.append(Descriptor::user_code_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!(code.0, selector::KERNEL_CODE);
    debug_assert_eq!(tss_sel.0, selector::TSS);
    let gdt: &'static GlobalDescriptorTable<8> = gdt;
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded.
    unsafe {
        use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        x86_64::instructions::tables::load_tss(SegmentSelector(selector::TSS));
    }
    crate::trap::load_idt();
    cpu.online.store(true, Ordering::Release);
}
