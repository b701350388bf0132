//! Hostile mode (`mode=hostile`): a plain guest (no VMX) that does what a
//! hostile or merely unusual OS does to the machine under it, and checks
//! every result against what the hardware gives (the same exception and
//! error code, the same values). On bare Bochs it shows what the hardware
//! does; under L0 that L0 does the same and survives: it ends by asking L0
//! for Stats (`hypercalls=stats` on L0's command line) and prints
//! `HOSTILE done: <n> cases, <f> failed`.
//!
//! One module per group of L0 hardening (issue 7): [`cr`] (guest-state
//! checks, item 2), [`legacy`] (the same outside 64-bit mode, and task
//! switches), [`exits`] (exits that stopped a CPU, item 3),
//! [`transparency`] (item 10), [`hypercalls`] (item 11); [`smp`] starts the
//! APs.

mod apic;
mod bsp_init;
mod cr;
mod devices;
mod exits;
mod hypercalls;
mod legacy;
mod mtrr;
mod smp;
mod step;
mod transparency;
pub mod trap;
mod triple_fault;
mod window;

use ::core::sync::atomic::{AtomicU32, Ordering};
use shared::boot::BootInfo;
use shared::{println, x86};

pub use bsp_init::run as run_bsp_init;
pub use triple_fault::run as run_triple_fault;

static CASES: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// What a case needs to know about the machine.
pub struct Env {
    /// Running under L0 (its CPUID signature).
    pub l0: Option<L0>,
    /// A guest-physical address of unclaimed bus space (nothing answers).
    pub unclaimed: u64,
    /// The processor's physical-address width.
    pub max_phys: u8,
    /// The firmware is Bochs's (for its known departures).
    pub bochs: bool,
}

/// What L0's Stats said.
#[derive(Clone, Copy, Debug)]
pub struct L0 {
    pub region_base: u64,
    pub region_end: u64,
}

impl Env {
    /// Where writes must be dropped and reads give all ones: L0's region
    /// under L0, unclaimed bus space on bare hardware.
    pub fn sink(&self) -> u64 {
        match self.l0 {
            Some(l0) => l0.region_base + 0x800,
            None => self.unclaimed,
        }
    }
}

/// Reports one case: `HOSTILE ok <name>` or a failed check.
pub fn check(name: &str, ok: bool, expected: ::core::fmt::Arguments, got: ::core::fmt::Arguments) {
    CASES.fetch_add(1, Ordering::Relaxed);
    if ok {
        println!("HOSTILE ok {name}");
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        println!("TEST_ASSERT failed: hostile {name}, expected {expected}, got {got}");
    }
}

/// Reports a case that cannot run here, and why (never silently).
pub fn skip(name: &str, why: &str) {
    println!("SKIP hostile {name}: {why}");
}

/// Whether L0's CPUID signature is there (leaf 0x40000000).
fn under_l0() -> bool {
    let r = x86::cpuid(0x4000_0000, 0);
    let mut sig = [0u8; 12];
    sig[..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..].copy_from_slice(&r.edx.to_le_bytes());
    x86::cpuid(1, 0).ecx & (1 << 31) != 0 && &sig == b"L0LateLaunch"
}

fn max_phys_addr() -> u8 {
    if x86::cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        x86::cpuid(0x8000_0008, 0).eax as u8
    } else {
        36
    }
}

/// Masks the legacy PICs: the BIOS leaves IRQ 0 on vector 8, and the
/// STI cases open the interrupt window.
fn mask_pics() {
    // SAFETY: the PICs' mask registers; LHV uses no legacy interrupts.
    unsafe {
        x86::outb(0x21, 0xff);
        x86::outb(0xa1, 0xff);
    }
}

/// Runs hostile mode on the BSP; never returns.
pub fn run(boot: &'static BootInfo) -> ! {
    println!("HOSTILE: mode=hostile (plain guest, no VMX)");
    mask_pics();
    trap::install();
    crate::low_code::check(boot);
    smp::start(boot);
    let l0 = if under_l0() {
        match hypercalls::stats() {
            Some(r) => Some(L0 {
                region_base: r.rsi,
                region_end: r.rsi + r.rdx * 1024,
            }),
            None => {
                check(
                    "stats_at_start",
                    false,
                    format_args!("L0 answers Stats (hypercalls=stats)"),
                    format_args!("#UD"),
                );
                None
            }
        }
    } else {
        None
    };
    let max_phys = max_phys_addr();
    let env = Env {
        l0,
        // 4 GiB: above the RAM of every scenario, below any width.
        unclaimed: 1 << 32,
        max_phys,
        bochs: crate::test_loop::firmware_is_bochs(boot),
    };
    match env.l0 {
        Some(l0) => println!(
            "HOSTILE: under L0, region [{:#x}, {:#x})",
            l0.region_base, l0.region_end
        ),
        None => println!("HOSTILE: no L0 (bare machine)"),
    }
    cr::run(&env);
    step::run(&env);
    legacy::run(&env);
    exits::run(&env);
    exits::hidden_msrs(&env);
    exits::xsaves(&env);
    mtrr::run(&env);
    transparency::run(&env);
    hypercalls::run(&env);
    smp::store_forms(&env);
    devices::run(&env);
    apic::run(&env);
    if env.l0.is_some() {
        match hypercalls::stats() {
            Some(r) => println!("HOSTILE: L0 alive (Stats: exits={} cpus={})", r.rbx, r.rcx),
            None => check(
                "stats_at_end",
                false,
                format_args!("L0 answers Stats"),
                format_args!("#UD"),
            ),
        }
    }
    let (n, f) = (
        CASES.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    );
    println!("HOSTILE done: {n} cases, {f} failed");
    shared::platform::shutdown(u8::from(f != 0))
}
