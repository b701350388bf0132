//! LHV's own interrupts: the LAPIC timer (periodic, every CPU) and the PIT
//! (one-shot, BSP), counted per CPU. They arrive either through the IDT
//! (LHV with IF = 1) or as external-interrupt VM exits, acknowledged on exit
//! (SDM 28.2.2: the vector is in the VM-exit interruption information);
//! both paths end in [`serve`]. The local APIC is driven through
//! `shared::apic::LocalApic` (timer, EOI).

use ::core::sync::atomic::{AtomicU64, Ordering};
use shared::apic::{LocalApic, TimerDivide};
use shared::percpu::{self, MAX_CPUS};
use shared::trap::{self, TrapFrame};

use crate::hw::pit;

/// The LAPIC timer's vector.
pub const TIMER_VECTOR: u8 = 0x40;
/// The LAPIC spurious vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;
/// LAPIC timer initial count (divided by [`TIMER_DIVIDE`]).
const TIMER_INITIAL: u32 = 0x4_0000;
/// LAPIC timer divide configuration.
const TIMER_DIVIDE: TimerDivide = TimerDivide::By16;
/// PIT one-shot length in ticks (about 5 ms).
pub const PIT_TICKS: u16 = 6000;

/// Interrupt counters of one CPU.
pub struct Counters {
    /// LAPIC timer interrupts.
    pub timer: AtomicU64,
    /// PIT interrupts.
    pub pit: AtomicU64,
}

static COUNTERS: [Counters; MAX_CPUS] = [const {
    Counters {
        timer: AtomicU64::new(0),
        pit: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// This CPU's counters.
pub fn counters() -> &'static Counters {
    &COUNTERS[percpu::current().index()]
}

/// Serves interrupt `vector` (counts it and signals EOI). Returns false for
/// a vector LHV does not expect.
pub fn serve(vector: u8) -> bool {
    let c = counters();
    match vector {
        TIMER_VECTOR => {
            c.timer.fetch_add(1, Ordering::Relaxed);
            LocalApic::current().eoi();
        }
        pit::VECTOR => {
            c.pit.fetch_add(1, Ordering::Relaxed);
            pit::eoi();
        }
        // LAPIC spurious; the master PIC's spurious IRQ 7 (no EOI, 8259A
        // data sheet).
        SPURIOUS_VECTOR | pit::SPURIOUS_VECTOR => {}
        _ => return false,
    }
    true
}

fn idt_handler(frame: &mut TrapFrame) {
    if !serve(frame.vector as u8) {
        crate::assert::fail(
            format_args!("interrupt in L1"),
            format_args!("vector {TIMER_VECTOR:#x} or {:#x}", pit::VECTOR),
            format_args!("vector {:#x}", frame.vector),
        );
    }
}

/// Installs the IDT handlers (once, on the BSP; the IDT is shared).
pub fn install_handlers() {
    for v in [
        TIMER_VECTOR,
        pit::VECTOR,
        pit::SPURIOUS_VECTOR,
        SPURIOUS_VECTOR,
    ] {
        trap::set_handler(v, idt_handler);
    }
}

/// Sets up this CPU's interrupt sources: LAPIC enabled, periodic timer
/// unless `timer` is false.
pub fn init_cpu(timer: bool) {
    let apic = LocalApic::current();
    apic.enable(SPURIOUS_VECTOR);
    if timer {
        apic.timer_periodic(TIMER_VECTOR, TIMER_INITIAL, TIMER_DIVIDE);
    } else {
        apic.timer_stop();
    }
}
