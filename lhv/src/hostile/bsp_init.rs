//! `mode=bsp-init`: the BSP sends INIT to itself. A processor restarts
//! from INIT in wait-for-SIPI only if it is an AP; the BSP runs from the
//! reset vector (F000:FFF0, CS base FFFF0000H) with the INIT state (SDM
//! 9.1.1 Table 9-1, 9.4.1), i.e. through the firmware again. LHV asks the
//! firmware, by the CMOS shutdown code 0AH ("JMP via 40:67", the AT BIOS
//! warm-start protocol), to jump to its low code page (`bsp_init.S`), which
//! checks what INIT resets and the firmware keeps (DR0, CR4), prints the
//! outcome and powers off. If the BSP never restarts (parked waiting for a
//! SIPI) nothing is printed and the run times out.

use shared::boot::BootInfo;
use shared::{cmdline, println, x86};

use crate::low_code;

::core::arch::global_asm!(include_str!("bsp_init.S"), options(att_syntax));

unsafe extern "C" {
    static lhv_bi_start: u8;
    static lhv_bi_port: u8;
    static lhv_bi_ok: u8;
    static lhv_bi_fail: u8;
    static lhv_bi_end: u8;
}

/// The outcome lines the blob prints (each at most 127 bytes).
const OK_TEXT: &str = "HOSTILE ok bsp_init_reset_vector\nBSPINIT: done\n";
const FAIL_TEXT: &str = "TEST_ASSERT failed: hostile bsp_init_reset_vector, expected DR0 = 0 \
                         and CR4 = 0 after INIT, got another state\n";

/// CMOS RAM: the shutdown status byte, and code 0AH (jump through the
/// far pointer at 40:67 without EOI).
const CMOS_SHUTDOWN: u8 = 0x0f;
const SHUTDOWN_JMP_467: u8 = 0x0a;
/// The warm-start vector (offset, segment) in the BIOS data area.
const WARM_START_VECTOR: u64 = 0x467;
/// A DR0 value (no breakpoint is enabled) INIT must clear.
const DR0_MARK: u64 = 0x1234_5000;

/// xAPIC registers.
const APIC_ID: u64 = 0x20;
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
/// ICR low: INIT, level assert, physical destination (no shorthand).
const INIT_ASSERT: u32 = 0x4500;
const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_EXTD: u64 = 1 << 10;
const X2APIC_ICR: u32 = 0x830;
const X2APIC_ID: u32 = 0x802;

fn cmos_write(index: u8, value: u8) {
    // SAFETY: the RTC/CMOS index and data ports; the shutdown byte is
    // the firmware's, set as the warm-start protocol asks.
    unsafe {
        x86::outb(0x70, index);
        x86::outb(0x71, value);
    }
}

/// Copies `text` (NUL-terminated) to the blob's buffer at `sym`.
fn put_text(start: *const u8, sym: *const u8, text: &str) {
    let at = low_code::low_address(start, sym) as *mut u8;
    let n = text.len().min(127);
    // SAFETY: the buffer is 128 bytes of the installed blob in the code
    // page (identity-mapped low RAM that only this mode uses).
    unsafe {
        ::core::ptr::copy_nonoverlapping(text.as_ptr(), at, n);
        at.add(n).write_volatile(0);
    }
}

/// Sends INIT to this CPU by its APIC ID, in the APIC's mode.
fn init_self() {
    // SAFETY: IA32_APIC_BASE exists on every processor with an APIC.
    let base = unsafe { x86::rdmsr(IA32_APIC_BASE) };
    if base & APIC_BASE_EXTD != 0 {
        // SAFETY: x2APIC mode is on: its ID and ICR MSRs exist; the value
        // is an INIT to this CPU.
        unsafe {
            let id = x86::rdmsr(X2APIC_ID);
            x86::wrmsr(X2APIC_ICR, (id << 32) | u64::from(INIT_ASSERT));
        }
        return;
    }
    let page = base & 0xf_ffff_f000;
    // SAFETY: the xAPIC page is identity-mapped (uncached) MMIO; these are
    // its ID and ICR registers, written as an INIT to this CPU.
    unsafe {
        let id = ::core::ptr::read_volatile((page + APIC_ID) as *const u32) >> 24;
        ::core::ptr::write_volatile((page + ICR_HIGH) as *mut u32, id << 24);
        ::core::ptr::write_volatile((page + ICR_LOW) as *mut u32, INIT_ASSERT);
    }
}

pub fn run(boot: &'static BootInfo) -> ! {
    println!("BSPINIT: INIT to the BSP, expecting a restart at the reset vector");
    low_code::check(boot);
    let (start, end) = (&raw const lhv_bi_start, &raw const lhv_bi_end);
    low_code::install(start, end);
    put_text(start, &raw const lhv_bi_ok, OK_TEXT);
    put_text(start, &raw const lhv_bi_fail, FAIL_TEXT);
    let port = cmdline::get_hex(boot.cmdline(), "serial").unwrap_or(0x3f8) as u16;
    let port_at = low_code::low_address(start, &raw const lhv_bi_port) as *mut u16;
    let code = low_code::low_address(start, start);
    // SAFETY: the blob's port slot in the code page, and the warm-start
    // vector of the BIOS data area (identity-mapped low RAM).
    unsafe {
        port_at.write_volatile(port);
        (WARM_START_VECTOR as *mut u16).write_volatile(0);
        ((WARM_START_VECTOR + 2) as *mut u16).write_volatile((code >> 4) as u16);
    }
    cmos_write(CMOS_SHUTDOWN, SHUTDOWN_JMP_467);
    // SAFETY: DR0 holds an address; DR7 enables no breakpoint, so it has
    // no effect but to be visible after INIT.
    unsafe { ::core::arch::asm!("mov dr0, {}", in(reg) DR0_MARK, options(nomem, nostack)) };
    shared::console::flush();
    init_self();
    // The INIT is taken at the next instruction boundary (on bare
    // hardware) or when L0 emulates the ICR write.
    loop {
        ::core::hint::spin_loop();
    }
}
