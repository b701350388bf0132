//! L2 of benchmark mode (`mode=bench`, see [`crate::bench`]): it asks L1
//! for a job (an operation and a count), times each exiting instruction
//! with RDTSC right before and right after it, and reports the figures.
//!
//! Each figure is thus one whole round trip L2 -> L1 -> L2 as L2 sees it
//! (VM exit, L1's exit handler, VM entry), without L2's own loop; it also
//! counts the few instructions between the two RDTSCs (on Bochs, where the
//! TSC counts instructions, 4 for VMCALL and 5 for CPUID). L1 uses no TSC
//! offsetting, so L2 reads L1's TSC.
//!
//! Calls (RAX), all VMCALLs that exit to L1:
//! - [`READY`]: the first call; L1 answers RBX = [`Op`], RCX = count
//!   (and RDX = the buffer of [`Op::Touch`]).
//! - [`TIMED_VMCALL`]: the measured VMCALL; L1 only moves RIP past it.
//! - [`REPORT`]: RBX = sum of cycles, RCX = minimum, RDX = maximum,
//!   RSI = round trips measured; L1 answers with the next job.

use ::core::arch::asm;

use lhv::bench_figures::RoundTrips;

use crate::l2::{self, Args};

/// L2 waits for its first job.
pub const READY: u64 = 0x4c48_be01;
/// L2 reports a job's figures and waits for the next.
pub const REPORT: u64 = 0x4c48_be02;
/// The timed VMCALL (3 bytes: `0f 01 c1`).
pub const TIMED_VMCALL: u64 = 0x4c48_be03;

/// What L2 times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Op {
    /// VMCALL ([`TIMED_VMCALL`]).
    Vmcall = 1,
    /// CPUID leaf 0.
    Cpuid = 2,
    /// Touch RCX pages from linear address RDX, each at its first byte:
    /// one timed read of every page, then a write of every page (L1 sees
    /// no exit; under L0 the first access of a page may be an EPT02
    /// fault that L0 resolves).
    Touch = 3,
}

impl Op {
    /// Its name in the `BENCH op=<name>` line.
    pub fn name(self) -> &'static str {
        match self {
            Op::Vmcall => "vmcall",
            Op::Cpuid => "cpuid",
            Op::Touch => "touch",
        }
    }
}

/// One timed VMCALL: its round trip in TSC cycles.
fn timed_vmcall() -> u64 {
    let cycles: u64;
    // SAFETY: VMCALL exits to L1, which moves RIP past it and changes no
    // register; RDTSC only reads the TSC.
    unsafe {
        asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {t0}, rax",
            "mov eax, {nr}",
            "vmcall",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, {t0}",
            t0 = out(reg) _,
            nr = const TIMED_VMCALL as u32,
            out("rax") cycles,
            out("rdx") _,
            options(nostack),
        );
    }
    cycles
}

/// One timed CPUID (leaf 0): its round trip in TSC cycles.
fn timed_cpuid() -> u64 {
    let cycles: u64;
    // SAFETY: CPUID exits to L1 (unconditionally in VMX non-root), which
    // answers in RAX, RBX, RCX, RDX; RBX is reserved by the compiler, so it
    // is saved and restored around the sequence.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {t0}, rax",
            "xor eax, eax",
            "xor ecx, ecx",
            "cpuid",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, {t0}",
            "mov rbx, {saved}",
            saved = out(reg) _,
            t0 = out(reg) _,
            out("rax") cycles,
            out("rcx") _,
            out("rdx") _,
            options(nostack),
        );
    }
    cycles
}

/// One timed read of the byte at `addr`: its cycles.
fn timed_read(addr: u64) -> u64 {
    let cycles: u64;
    // SAFETY: `addr` is a byte of the touch buffer L1 named (a static of
    // LHV's image, mapped in L2's paging and EPT); RDTSC only reads the
    // TSC.
    unsafe {
        asm!(
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "mov {t0}, rax",
            "mov {b}, byte ptr [{addr}]",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "sub rax, {t0}",
            addr = in(reg) addr,
            b = out(reg_byte) _,
            t0 = out(reg) _,
            out("rax") cycles,
            out("rdx") _,
            options(nostack, readonly),
        );
    }
    cycles
}

/// [`Op::Touch`]: `pages` pages from `base`, read (timed) then written.
fn touch(base: u64, pages: u64, trips: &mut RoundTrips) {
    for i in 0..pages {
        trips.add(timed_read(base + i * PAGE));
    }
    for i in 0..pages {
        // SAFETY: as in `timed_read`; the buffer is L2's alone while the
        // job runs.
        unsafe { ::core::ptr::write_volatile((base + i * PAGE) as *mut u8, i as u8) };
    }
}

/// Bytes per page [`Op::Touch`] steps by.
pub const PAGE: u64 = 4096;

/// L2's entry point: jobs from L1 until the machine stops.
pub extern "C" fn l2_main() -> ! {
    let mut job = l2::vmcall(READY, Args::default());
    loop {
        let mut trips = RoundTrips::new();
        let timed: Option<fn() -> u64> = match job.rbx {
            x if x == Op::Vmcall as u64 => Some(timed_vmcall),
            x if x == Op::Cpuid as u64 => Some(timed_cpuid),
            _ => None,
        };
        if let Some(timed) = timed {
            for _ in 0..job.rcx {
                trips.add(timed());
            }
        } else if job.rbx == Op::Touch as u64 {
            touch(job.rdx, job.rcx, &mut trips);
        }
        job = l2::vmcall(
            REPORT,
            Args {
                rbx: trips.sum,
                rcx: trips.minimum(),
                rdx: trips.max,
                rsi: trips.n,
            },
        );
    }
}
