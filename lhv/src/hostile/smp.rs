//! The APs: started by the usual INIT-SIPI-SIPI (through L0's ICR
//! emulation under L0); each reports and halts. Then AP 1 is restarted
//! once per ICR store form of item 4 (SIB addressing, `xchg`, `stosd`,
//! `movnti`, a `mov` with a segment override, and forms L0's decoder does
//! not know: `rep stosd`, `movsd`, `lock cmpxchg`, `lock xadd`, `add`): the
//! INIT must reach L0's emulation whatever instruction writes it.

use ::core::sync::atomic::{AtomicUsize, Ordering};
use shared::boot::BootInfo;
use shared::{cpu_println, println, x86};

use super::{Env, check, skip};

static ONLINE: AtomicUsize = AtomicUsize::new(1);

fn ap_main() -> ! {
    // SAFETY: an execute breakpoint at an address nothing executes; INIT
    // must clear it (checked by `store_forms`).
    unsafe {
        ::core::arch::asm!(
            "mov dr0, {a}",
            "mov dr7, {c}",
            a = in(reg) AP_DR0,
            c = in(reg) AP_DR7,
            options(nomem, nostack, preserves_flags)
        );
    }
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
/// [`COUNTER`], stores DR0 and DR7 as INIT left them, halts:
/// `lock inc word cs:[0x40]; mov eax, dr0; mov cs:[0x44], eax;
/// mov eax, dr7; mov cs:[0x48], eax; cli; hlt; jmp $-1`.
const TRAMPOLINE: u64 = 0x6000;
const COUNTER: u64 = TRAMPOLINE + 0x40;
const SEEN_DR0: u64 = TRAMPOLINE + 0x44;
const SEEN_DR7: u64 = TRAMPOLINE + 0x48;
const TRAMPOLINE_CODE: [u8; 26] = [
    0xf0, 0x2e, 0xff, 0x06, 0x40, 0x00, // lock inc word cs:[0x40]
    0x0f, 0x21, 0xc0, // mov eax, dr0
    0x66, 0x2e, 0xa3, 0x44, 0x00, // mov cs:[0x44], eax
    0x0f, 0x21, 0xf8, // mov eax, dr7
    0x66, 0x2e, 0xa3, 0x48, 0x00, // mov cs:[0x48], eax
    0xfa, 0xf4, 0xeb, 0xfd, // cli; hlt; jmp $-1
];
/// What the APs put in DR0 and DR7 before they halt, for INIT to reset
/// (an execute breakpoint at an address nothing runs).
const AP_DR0: u64 = 0x1234_5000;
const AP_DR7: u64 = 0x401;

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
            4 => ::core::arch::asm!(
                "mov dword ptr es:[{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value, options(nostack)
            ),
            // The forms `shared::store_insn` does not decode: L0 captures
            // their write in a scratch page (issue 7, item 4).
            5 => ::core::arch::asm!(
                "cld",
                "rep stosd",
                inout("rdi") icr => _, inout("rcx") 1u64 => _, in("eax") value,
                options(nostack)
            ),
            6 => {
                let src = value;
                ::core::arch::asm!(
                    "cld",
                    "movsd",
                    inout("rdi") icr => _, inout("rsi") &raw const src => _,
                    options(nostack)
                )
            }
            // Read-modify-write forms, from the value the ICR holds now.
            7 => ::core::arch::asm!(
                "lock cmpxchg dword ptr [{p}], {v:e}",
                p = in(reg) icr, v = in(reg) value,
                inout("eax") mmio_read(icr) => _, options(nostack)
            ),
            8 => ::core::arch::asm!(
                "lock xadd dword ptr [{p}], {d:e}",
                p = in(reg) icr, d = inout(reg) value.wrapping_sub(mmio_read(icr)) => _,
                options(nostack)
            ),
            _ => ::core::arch::asm!(
                "add dword ptr [{p}], {d:e}",
                p = in(reg) icr, d = in(reg) value.wrapping_sub(mmio_read(icr)),
                options(nostack)
            ),
        }
    }
}

/// The forms of item 4: every one must reach L0's ICR emulation (the
/// first five through `shared::store_insn`, the others captured).
const FORMS: [&str; 10] = [
    "icr_store_sib",
    "icr_store_xchg",
    "icr_store_stosd",
    "icr_store_movnti",
    "icr_store_mov_es_override",
    "icr_store_rep_stosd",
    "icr_store_movsd",
    "icr_store_lock_cmpxchg",
    "icr_store_lock_xadd",
    "icr_store_add",
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
        if form == 0 {
            // SAFETY: the trampoline's data words.
            let (dr0, dr7) = unsafe {
                (
                    ::core::ptr::read_volatile(SEEN_DR0 as *const u32),
                    ::core::ptr::read_volatile(SEEN_DR7 as *const u32),
                )
            };
            check(
                "init_resets_debug_registers",
                count == 1 && dr0 == 0 && dr7 == 0x400,
                format_args!("DR0 0, DR7 0x400 after INIT (the AP had {AP_DR0:#x}, {AP_DR7:#x})"),
                format_args!("ran {count}, DR0 {dr0:#x}, DR7 {dr7:#x}"),
            );
        }
        check(
            name,
            ok && count == 1,
            format_args!("the AP restarted once (INIT by this store form, then STARTUP)"),
            format_args!("ICR idle {ok}, trampoline ran {count} time(s)"),
        );
    }
}
