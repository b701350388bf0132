//! The APs: started by the usual INIT-SIPI-SIPI (through L0's ICR
//! emulation under L0); each reports and halts. Then AP 1 is restarted
//! once per ICR store form of item 4 (SIB addressing, `xchg`, `stosd`,
//! `movnti`, a `mov` with a segment override): the INIT must reach L0's
//! emulation whatever instruction writes it.

use ::core::sync::atomic::{AtomicUsize, Ordering};
use shared::boot::BootInfo;
use shared::{cpu_println, println, x86};

use super::{Env, check, skip};

static ONLINE: AtomicUsize = AtomicUsize::new(1);

fn ap_main() -> ! {
    ONLINE.fetch_add(1, Ordering::AcqRel);
    cpu_println!("HOSTILE: AP up");
    x86::halt_forever()
}

/// Starts the APs the firmware lists.
pub fn start(boot: &BootInfo) {
    let smp = shared::smp::start_aps(boot, ap_main);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    for _ in 0..1_000_000 {
        if ONLINE.load(Ordering::Acquire) >= smp.online {
            break;
        }
        x86::pause();
    }
    let up = ONLINE.load(Ordering::Acquire);
    check(
        "aps_started",
        up == smp.listed,
        format_args!("{} CPUs running", smp.listed),
        format_args!("{up}"),
    );
}

/// The real-mode code an AP restarted by a form runs: counts itself in
/// [`COUNTER`] and halts (`lock inc word cs:[0x10]; cli; hlt; jmp $-1`).
const TRAMPOLINE: u64 = 0x6000;
const COUNTER: u64 = TRAMPOLINE + 0x10;
const TRAMPOLINE_CODE: [u8; 10] = [0xf0, 0x2e, 0xff, 0x06, 0x10, 0x00, 0xfa, 0xf4, 0xeb, 0xfd];
/// xAPIC register offsets.
const ICR_LOW: u64 = 0x300;
const ICR_HIGH: u64 = 0x310;
const ICR_BUSY: u32 = 1 << 12;
/// ICR low: INIT, level assert.
const INIT_ASSERT: u32 = 0x4500;
/// ICR low: STARTUP, level assert, vector = the trampoline's page.
const STARTUP: u32 = 0x4600 | (TRAMPOLINE >> 12) as u32;

fn mmio_read(a: u64) -> u32 {
    // SAFETY: `a` is a register of this CPU's xAPIC (identity-mapped).
    unsafe { ::core::ptr::read_volatile(a as *const u32) }
}

fn mmio_write(a: u64, v: u32) {
    // SAFETY: as above; the caller sends an IPI on purpose.
    unsafe { ::core::ptr::write_volatile(a as *mut u32, v) }
}

fn wait_idle(base: u64) -> bool {
    (0..1_000_000).any(|_| {
        x86::pause();
        mmio_read(base + ICR_LOW) & ICR_BUSY == 0
    })
}

/// Writes `value` to the ICR's low half at `icr` with store form `form`.
fn store(form: usize, base: u64, value: u32) {
    let icr = base + ICR_LOW;
    // SAFETY: each form is one 32-bit store of `value` to the ICR's low
    // half (an IPI the caller means to send); XCHG also reads it, STOSD
    // also moves RDI.
    unsafe {
        match form {
            0 => ::core::arch::asm!(
                "mov dword ptr [{b} + {i}*1 + 0x300], {v:e}",
                b = in(reg) base, i = in(reg) 0u64, v = in(reg) value, options(nostack)
            ),
            1 => ::core::arch::asm!(
                "xchg dword ptr [{p}], {v:e}",
                p = in(reg) icr, v = inout(reg) value => _, options(nostack)
            ),
            2 => ::core::arch::asm!(
                "cld",
                "stosd",
                inout("rdi") icr => _, in("eax") value, options(nostack)
            ),
            3 => ::core::arch::asm!(
                "movnti dword ptr [{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value, options(nostack)
            ),
            _ => ::core::arch::asm!(
                "mov dword ptr es:[{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value, options(nostack)
            ),
        }
    }
}

/// The forms of item 4: every one must reach L0's ICR emulation.
const FORMS: [&str; 5] = [
    "icr_store_sib",
    "icr_store_xchg",
    "icr_store_stosd",
    "icr_store_movnti",
    "icr_store_mov_es_override",
];

/// Restarts AP 1 once per store form: INIT written with the form, then a
/// STARTUP (plain MOV) to a real-mode trampoline that counts itself.
pub fn store_forms(_env: &Env) {
    let Some(ap) = shared::percpu::get(1).filter(|c| c.is_online()) else {
        for f in FORMS {
            skip(f, "needs a second CPU (the restarted AP)");
        }
        return;
    };
    if !crate::low_code::usable() {
        for f in FORMS {
            skip(f, "the low pages are not usable RAM in the memory map");
        }
        return;
    }
    let lapic = shared::apic::LocalApic::current();
    if lapic.mode() != shared::apic::ApicMode::XApic {
        for f in FORMS {
            skip(f, "the local APIC is in x2APIC mode");
        }
        return;
    }
    // SAFETY: IA32_APIC_BASE exists on every processor with an xAPIC.
    let base = unsafe { x86::rdmsr(x86::msr::IA32_APIC_BASE) } & 0xf_ffff_f000;
    // SAFETY: the trampoline page is conventional memory below 1 MiB in
    // LHV's low range (checked usable), unused by hostile mode otherwise.
    unsafe {
        ::core::ptr::copy_nonoverlapping(
            TRAMPOLINE_CODE.as_ptr(),
            TRAMPOLINE as *mut u8,
            TRAMPOLINE_CODE.len(),
        );
    }
    for (form, name) in FORMS.iter().enumerate() {
        // SAFETY: the trampoline's counter word.
        unsafe { ::core::ptr::write_volatile(COUNTER as *mut u16, 0) };
        let mut ok = wait_idle(base);
        mmio_write(base + ICR_HIGH, ap.apic_id() << 24);
        store(form, base, INIT_ASSERT);
        ok &= wait_idle(base);
        for _ in 0..100_000 {
            x86::pause();
        }
        mmio_write(base + ICR_HIGH, ap.apic_id() << 24);
        mmio_write(base + ICR_LOW, STARTUP);
        ok &= wait_idle(base);
        let count = (0..2_000_000)
            .map(|_| {
                x86::pause();
                // SAFETY: as above.
                unsafe { ::core::ptr::read_volatile(COUNTER as *const u16) }
            })
            .find(|&c| c != 0)
            .unwrap_or(0);
        check(
            name,
            ok && count == 1,
            format_args!("the AP restarted once (INIT by this store form, then STARTUP)"),
            format_args!("ICR idle {ok}, trampoline ran {count} time(s)"),
        );
    }
}
