//! Probe mode (`mode=probe`), for checking L0's late launch: no VMX needed.
//! Prints the memory map from the boot loader, writes and verifies an
//! address-dependent pattern over usable RAM above 1 MiB and below 4 GiB
//! (the boot identity map ends there) except LHV's image and the multiboot
//! information, split among all CPUs, then asks L0 for its statistics
//! (VMCALL Stats; without L0 VMCALL raises #UD, which is caught). Under L0
//! it then reads and writes L0's region (first page, middle, last page),
//! which must read all ones and drop the writes, and asks for the
//! statistics again to show that L0 survived.

use ::core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use shared::boot::{BootInfo, MemoryKind, layout};
use shared::hypercall::{self, Hypercall};
use shared::trap::{self, TrapFrame, vector};
use shared::{cpu_println, percpu, println, x86};

use crate::assert::fail;

/// The identity map ends here.
const LIMIT: u64 = 1 << 32;
/// Memory below this is left alone (BIOS, trampoline, VGA).
const LOW: u64 = 1 << 20;
/// Most ranges kept.
const MAX_RANGES: usize = 64;

static BOOT: spin::Once<&'static BootInfo> = spin::Once::new();
static CPUS: AtomicUsize = AtomicUsize::new(1);
static STARTED: AtomicBool = AtomicBool::new(false);
static DONE: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static VMCALL_UD: AtomicBool = AtomicBool::new(false);

/// The value stored at `addr`.
const fn pattern(addr: u64) -> u64 {
    addr ^ 0x5a5a_c3c3_0f0f_9696 ^ (addr << 29)
}

/// `[start, end)` minus `hole`, as up to two ranges.
fn subtract((s, e): (u64, u64), (hs, he): (u64, u64)) -> [Option<(u64, u64)>; 2] {
    if he <= s || hs >= e {
        return [Some((s, e)), None];
    }
    [(hs > s).then_some((s, hs)), (he < e).then_some((he, e))]
}

/// The ranges to test, page aligned.
fn ranges(boot: &BootInfo) -> heapless_ranges::Ranges {
    let mut out = heapless_ranges::Ranges::new();
    let image = layout::image_phys_range();
    let mbi = boot.mbi_range;
    for r in boot
        .memory_map
        .iter()
        .filter(|r| r.kind == MemoryKind::Usable)
    {
        let s = r.base.max(LOW).next_multiple_of(4096);
        let e = r.end().min(LIMIT) & !4095;
        if s >= e {
            continue;
        }
        for a in subtract((s, e), (image.0 & !4095, image.1.next_multiple_of(4096)))
            .into_iter()
            .flatten()
        {
            for b in subtract(a, (mbi.0 & !4095, mbi.1.next_multiple_of(4096)))
                .into_iter()
                .flatten()
            {
                out.push(b);
            }
        }
    }
    out
}

mod heapless_ranges {
    use super::MAX_RANGES;

    /// A fixed-capacity list of ranges.
    pub struct Ranges {
        items: [(u64, u64); MAX_RANGES],
        len: usize,
    }

    impl Ranges {
        pub const fn new() -> Self {
            Self {
                items: [(0, 0); MAX_RANGES],
                len: 0,
            }
        }
        pub fn push(&mut self, r: (u64, u64)) {
            if self.len < MAX_RANGES {
                self.items[self.len] = r;
                self.len += 1;
            }
        }
        pub fn as_slice(&self) -> &[(u64, u64)] {
            &self.items[..self.len]
        }
    }
}

/// This CPU's share of `r`: the `cpu`-th of `n` page-aligned slices.
fn share((s, e): (u64, u64), cpu: usize, n: usize) -> (u64, u64) {
    let pages = (e - s) / 4096;
    let per = pages.div_ceil(n as u64);
    let a = (s + per * 4096 * cpu as u64).min(e);
    let b = (a + per * 4096).min(e);
    (a, b)
}

fn test_range((s, e): (u64, u64)) {
    // SAFETY: [s, e) is usable RAM below 4 GiB (identity-mapped), outside
    // LHV's image and the boot information, given to this CPU only.
    unsafe {
        let mut a = s;
        while a < e {
            ::core::ptr::write_volatile(a as *mut u64, pattern(a));
            a += 8;
        }
        let mut a = s;
        while a < e {
            let v = ::core::ptr::read_volatile(a as *const u64);
            if v != pattern(a) {
                fail(
                    format_args!("memory pattern at {a:#x}"),
                    format_args!("{:#x}", pattern(a)),
                    format_args!("{v:#x}"),
                );
            }
            a += 8;
        }
    }
    BYTES.fetch_add(e - s, Ordering::Relaxed);
}

fn cpu_part() {
    while !STARTED.load(Ordering::Acquire) {
        x86::pause();
    }
    let boot = BOOT.get().expect("set by the BSP");
    let (cpu, n) = (percpu::current().index(), CPUS.load(Ordering::Acquire));
    for r in ranges(boot).as_slice() {
        let part = share(*r, cpu, n);
        if part.0 < part.1 {
            test_range(part);
        }
    }
    cpu_println!("PROBE: memory part done");
    DONE.fetch_add(1, Ordering::AcqRel);
}

fn ap_main() -> ! {
    cpu_part();
    x86::halt_forever()
}

fn ud_handler(frame: &mut TrapFrame) {
    // SAFETY: RIP points at the faulting instruction in LHV's image.
    let bytes = unsafe { ::core::ptr::read_unaligned(frame.rip as *const [u8; 3]) };
    if bytes != [0x0f, 0x01, 0xc1] {
        trap::fatal_exception(frame);
    }
    VMCALL_UD.store(true, Ordering::Release);
    frame.rip += 3;
}

/// Runs probe mode on the BSP; never returns.
pub fn run(boot: &'static BootInfo) -> ! {
    println!("PROBE: mode=probe (no VMX needed)");
    for r in boot.memory_map.iter() {
        println!(
            "E820: [{:#x}, {:#x}) type {}",
            r.base,
            r.end(),
            r.kind.e820_type()
        );
    }
    println!(
        "PROBE: testing usable RAM in [1 MiB, 4 GiB) only (the boot identity map ends at 4 GiB)"
    );
    BOOT.call_once(|| boot);
    let smp = shared::smp::start_aps(boot, ap_main);
    println!(
        "SMP: {} CPUs online ({} listed by firmware)",
        smp.online, smp.listed
    );
    CPUS.store(smp.online.max(1), Ordering::Release);
    STARTED.store(true, Ordering::Release);
    cpu_part();
    while DONE.load(Ordering::Acquire) < smp.online.max(1) {
        x86::pause();
    }
    println!(
        "PROBE: memory pattern OK {} MiB",
        BYTES.load(Ordering::Relaxed) >> 20
    );

    match stats() {
        None => println!("PROBE: no L0 (VMCALL #UD)"),
        Some(regs) => {
            println!("PROBE: L0 stats exits={} cpus={}", regs.rbx, regs.rcx);
            let region = (
                regs.rsi,
                regs.rsi.saturating_add(regs.rdx.saturating_mul(1024)),
            );
            check_l0_region(region);
            match stats() {
                Some(again) => println!(
                    "PROBE: L0 alive after the region check (exits={})",
                    again.rbx
                ),
                None => fail(
                    format_args!("L0 Stats after the region check"),
                    format_args!("an answer"),
                    format_args!("#UD"),
                ),
            }
        }
    }
    println!("PROBE: done");
    shared::platform::shutdown(0)
}

/// Asks L0 for its statistics: `None` without L0 (VMCALL raises #UD,
/// caught by `ud_handler`); fails the run on any other answer than OK.
fn stats() -> Option<shared::vmx::insn::VmcallRegs> {
    trap::set_handler(vector::UD, ud_handler);
    VMCALL_UD.store(false, Ordering::Release);
    let mut regs = shared::vmx::insn::VmcallRegs {
        rax: Hypercall::Stats.rax(),
        ..Default::default()
    };
    // SAFETY: L0's Stats call only returns values in registers; without L0
    // the #UD is caught by `ud_handler`, which skips the VMCALL.
    let r = unsafe { shared::vmx::insn::vmcall(&mut regs) };
    trap::clear_handler(vector::UD);
    if VMCALL_UD.load(Ordering::Acquire) {
        return None;
    }
    if r.is_err() || regs.rax != hypercall::OK {
        fail(
            format_args!("L0 Stats hypercall"),
            format_args!("RAX = OK"),
            format_args!("RAX {:#x}, {r:?}", regs.rax),
        );
    }
    Some(regs)
}

/// The places checked in L0's region `[b, e)`: first page, middle, last
/// page (8-byte aligned).
fn region_probes((b, e): (u64, u64)) -> [u64; 3] {
    let mid = (b + (e - b) / 2) & !7;
    [b, mid, e.saturating_sub(8)]
}

/// L0's region must behave as unbacked memory for its guest (issue 3):
/// reads return all ones, writes are dropped, L0 keeps running.
fn check_l0_region((b, e): (u64, u64)) {
    if b == 0 || e <= b || e > LIMIT {
        fail(
            format_args!("L0 region from Stats"),
            format_args!("a range below 4 GiB"),
            format_args!("[{b:#x}, {e:#x})"),
        );
    }
    for a in region_probes((b, e)) {
        // SAFETY: `a` is below 4 GiB (identity-mapped) in L0's region,
        // which L0's EPT makes unbacked memory for this guest: the
        // accesses cannot touch anything of LHV's.
        let (before, after) = unsafe {
            let p = a as *mut u64;
            let before = ::core::ptr::read_volatile(p);
            ::core::ptr::write_volatile(p, pattern(a));
            (before, ::core::ptr::read_volatile(p))
        };
        if before != u64::MAX || after != u64::MAX {
            fail(
                format_args!("L0 region at {a:#x}: read, write, read back"),
                format_args!("all ones twice"),
                format_args!("{before:#x}, then {after:#x}"),
            );
        }
    }
    println!("PROBE: L0 region [{b:#x}, {e:#x}) reads all ones, writes dropped");
}

#[cfg(test)]
mod tests {}
