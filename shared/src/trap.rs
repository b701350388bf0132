//! Interrupts and exceptions in host mode (VMX root for L0 and LHV).
//!
//! All 256 vectors enter through the assembly stubs of `boot/entry.S`, which
//! build a [`TrapFrame`] and call [`trap_dispatch`]. A trap goes to, in
//! order: the vector's claiming handlers ([`add_handler`]: several pieces
//! of code may each own some of a vector's traps, e.g. the #GP of a guarded
//! MSR probe and the #GP of a ring-3 test, and each claims only its own),
//! then the vector's one handler ([`set_handler`]), then the default: NMIs
//! are counted, exceptions are fatal (printed with the frame, then the CPU
//! stops), other interrupts are counted as spurious.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::percpu::{self, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, selector};
use crate::{println, x86};

/// Exception vectors by their SDM mnemonic.
pub mod vector {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;
    pub const VE: u8 = 20;
    pub const CP: u8 = 21;
}

/// The machine state saved on a trap, in the order the stubs push it.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A handler for one vector. It may change the frame (e.g. RIP to skip an
/// instruction, or registers to return values).
pub type Handler = fn(&mut TrapFrame);

/// Whether a claiming handler took a trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// It was this handler's trap, and it has been dealt with.
    Handled,
    /// Not this handler's: try the next one.
    NotMine,
}

/// A handler that takes only the traps it recognises as its own.
pub type ClaimHandler = fn(&mut TrapFrame) -> Claim;

/// Claiming handlers per vector.
pub const MAX_CLAIMS: usize = 4;

/// No room for another claiming handler on a vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyHandlers {
    pub vector: u8,
}

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static CLAIMS: [[AtomicUsize; MAX_CLAIMS]; 256] =
    [const { [const { AtomicUsize::new(0) }; MAX_CLAIMS] }; 256];
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Installs `handler` for `vec` on every CPU.
pub fn set_handler(vec: u8, handler: Handler) {
    HANDLERS[usize::from(vec)].store(handler as usize, Ordering::Release);
}

/// Adds `handler` to the claiming handlers of `vec` on every CPU (once: adding
/// the same handler again does nothing). Claiming handlers are tried in the
/// order they were added, before the [`set_handler`] handler.
pub fn add_handler(vec: u8, handler: ClaimHandler) -> Result<(), TooManyHandlers> {
    let h = handler as usize;
    for slot in &CLAIMS[usize::from(vec)] {
        match slot.compare_exchange(0, h, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(existing) if existing == h => return Ok(()),
            Err(_) => {}
        }
    }
    Err(TooManyHandlers { vector: vec })
}

/// Removes the handler for `vec` (back to the default).
pub fn clear_handler(vec: u8) {
    HANDLERS[usize::from(vec)].store(0, Ordering::Release);
}

/// Interrupts that arrived with no handler installed.
pub fn spurious_count() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

/// Called by `trap_common` in `boot/entry.S`.
#[unsafe(no_mangle)]
extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let vec = (frame.vector & 0xff) as usize;
    for slot in &CLAIMS[vec] {
        let c = slot.load(Ordering::Acquire);
        if c == 0 {
            break;
        }
        // SAFETY: only `add_handler` stores into CLAIMS, and it stores
        // values of type `ClaimHandler`.
        let claim: ClaimHandler = unsafe { core::mem::transmute::<usize, ClaimHandler>(c) };
        if claim(frame) == Claim::Handled {
            return;
        }
    }
    let h = HANDLERS[vec].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `set_handler` stores into HANDLERS, and it stores
        // values of type `Handler`.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
        return;
    }
    match vec as u8 {
        vector::NMI => {
            percpu::current().nmi_count.fetch_add(1, Ordering::Relaxed);
        }
        v if v < 32 => fatal_exception(frame),
        _ => {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints an unexpected exception with its frame and stops this CPU.
pub fn fatal_exception(f: &TrapFrame) -> ! {
    let cr2 = crate::x86::read_cr2();
    println!(
        "PANIC on CPU({}): exception {} error code {:#x} at RIP {:#x} (CS {:#x}, RFLAGS {:#x}, RSP {:#x}, CR2 {:#x})",
        percpu::index_or_boot(),
        f.vector,
        f.error_code,
        f.rip,
        f.cs,
        f.rflags,
        f.rsp,
        cr2
    );
    println!(
        "  RAX {:#x} RBX {:#x} RCX {:#x} RDX {:#x} RSI {:#x} RDI {:#x} RBP {:#x}",
        f.rax, f.rbx, f.rcx, f.rdx, f.rsi, f.rdi, f.rbp
    );
    println!(
        "  R8 {:#x} R9 {:#x} R10 {:#x} R11 {:#x} R12 {:#x} R13 {:#x} R14 {:#x} R15 {:#x}",
        f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15
    );
    crate::console::flush();
    x86::halt_forever()
}

/// One IDT gate descriptor (64-bit interrupt gate), SDM vol. 3A 6.14.1.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const GATE_INTERRUPT: u8 = 0x8E;

impl Gate {
    const fn missing() -> Self {
        Self {
            offset_low: 0,
            selector: 0,
            ist: 0,
            type_attr: 0,
            offset_mid: 0,
            offset_high: 0,
            reserved: 0,
        }
    }

    fn new(handler: u64, ist: u16) -> Self {
        Self {
            offset_low: handler as u16,
            selector: selector::KERNEL_CODE,
            ist: ist as u8,
            type_attr: GATE_INTERRUPT,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

/// Size of each stub in `trap_stubs` (see `boot/entry.S`).
const STUB_SIZE: u64 = 16;

unsafe extern "C" {
    static trap_stubs: u8;
}

fn build_idt() -> Idt {
    let base = &raw const trap_stubs as u64;
    let mut idt = Idt([Gate::missing(); 256]);
    for (v, gate) in idt.0.iter_mut().enumerate() {
        let ist = match v as u8 {
            vector::NMI => IST_NMI,
            vector::DF => IST_DOUBLE_FAULT,
            vector::MC => IST_MACHINE_CHECK,
            _ => 0,
        };
        *gate = Gate::new(base + v as u64 * STUB_SIZE, ist);
    }
    idt
}

/// Loads the shared IDT on this CPU (building it on first use).
pub fn load_idt() {
    let idt = IDT.call_once(build_idt);
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::from_ptr(idt),
    };
    // SAFETY: the IDT is static and every gate points to a stub of trap_stubs.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}
