//! `mode=fuzz seed=<n> cases=<n> [fuzz_dump=<case>]`: LHV's differential
//! VMCS fuzzer, on the BSP only. Each case starts from a fresh valid VMCS
//! (the negative suite's bring-up and [`Env::fresh`]), applies the plan the
//! mutation engine draws from the case's own PRNG stream
//! (`lhv::fuzz_cases`), VMLAUNCHes, and prints one line, `FUZZ <case>
//! <outcome>[ refused=<encoding>][ m=<n>]` (`refused`: the first field
//! whose VMWRITE failed; `m`: the number of mutations when more than one).
//! L2 is the negative suite's (VMCALL at once); every
//! exception in L2 exits (exception bitmap all ones) and L2's IDT is an
//! all-zero page, so injected events end in an exception exit too. The run
//! ends with `FUZZ digest <hex> cases=<n>`, L0's statistics under L0, and
//! `FUZZ done`. The same seed gives the same lines on every correct
//! implementation; the harness (`harness fuzz`) compares bare Bochs with
//! L0.
//!
//! `fuzz_dump=<case>` runs that case alone and first prints what it wrote,
//! as `CPU(0): VMCS12 <encoding> <name> = <value>` (read back after the
//! writes) and `FUZZ msr <area>[<i>] = <index> <reserved> <value>`;
//! `fuzz_dump_all=1` does so for every case of the run (for triage).
//!
//! Between cases LHV restores the MSRs an MSR-load area or a guest that
//! the exit did not reload could change (`RESTORED_MSRS`).

use core::fmt::Write as _;

use lhv::fuzz_cases::mutate::{self, MsrEntry, Plan, RESTORED_MSRS};
use lhv::fuzz_cases::outcome::{self, Digest, ExitFields, Outcome, Raw};
use lhv::fuzz_cases::profile::{Ctl, Pages, Profile};
use lhv::fuzz_cases::rng::SplitMix64;
use lhv::negative_cases::Outcome as Insn;
use shared::boot::BootInfo;
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::{cmdline, println, x86};

use crate::exit;
use crate::negative::{self, Env, Page, guard};

/// The fuzzer's pages, in the order of [`Pages`]'s fields.
const N_PAGES: usize = 14;
static PAGES: [Page; N_PAGES] = [const { Page::new() }; N_PAGES];

fn pages() -> Pages {
    let pa = |i: usize| PAGES[i].pa();
    Pages {
        entry_load: pa(0),
        exit_store: pa(1),
        exit_load: pa(2),
        io_a: pa(3),
        io_b: pa(4),
        msr_bitmap: pa(5),
        virtual_apic: pa(6),
        apic_access: pa(7),
        vmread_bitmap: pa(8),
        vmwrite_bitmap: pa(9),
        link_zero: pa(10),
        link_vmcs: pa(11),
        link_shadow: pa(12),
        idt: pa(13),
    }
}

fn profile(env: &Env) -> Profile {
    let c = env.caps;
    let ctl = |cap: shared::vmx::controls::ControlCap| Ctl {
        must1: cap.allowed0,
        may1: cap.allowed1,
    };
    Profile::new(
        [
            ctl(c.pin.effective()),
            ctl(c.proc.effective()),
            ctl(c.proc2),
            ctl(c.exit.effective()),
            ctl(c.entry.effective()),
        ],
        env.max_phys,
        env.linear_width,
        c.misc.max_msr_list,
        c.misc.activity_hlt,
        c.cr4_fixed1,
        c.basic.revision_id,
    )
}

/// A VMWRITE that may fail (a field the processor lacks): whether it did.
fn try_write(f: F, v: u64) -> bool {
    guard::vmwrite(f.encoding().into(), v) == Insn::Success
}

/// A VMREAD that may fail (0 then).
fn try_read(f: F) -> u64 {
    match guard::vmread(f.encoding().into()) {
        (Insn::Success, v) => v,
        _ => 0,
    }
}

/// Points the fresh VMCS's address fields at the fuzzer's pages (the
/// valid VMCS12 every case mutates) and resets the pages.
fn base(env: &Env, pg: &Pages, prof: &Profile) {
    for p in &PAGES {
        p.clear();
    }
    let rev = u64::from(env.caps.basic.revision_id);
    PAGES[11].set(0, rev);
    PAGES[12].set(0, rev | (1 << 31));
    for (f, v) in [
        (F::GuestIdtrBase, pg.idt),
        (F::GuestIdtrLimit, 0xfff),
        (F::VmEntryMsrLoadAddress, pg.entry_load),
        (F::VmExitMsrStoreAddress, pg.exit_store),
        (F::VmExitMsrLoadAddress, pg.exit_load),
        (F::IoBitmapAAddress, pg.io_a),
        (F::IoBitmapBAddress, pg.io_b),
        (F::MsrBitmapAddress, pg.msr_bitmap),
    ] {
        env_write(f, v);
    }
    // Fields of features outside the profile stay unwritten: they exist
    // on one side only.
    if prof.primary(21) {
        env_write(F::VirtualApicAddress, pg.virtual_apic);
    }
    if prof.secondary(0) {
        env_write(F::ApicAccessAddress, pg.apic_access);
    }
    if prof.secondary(14) {
        env_write(F::VmreadBitmapAddress, pg.vmread_bitmap);
        env_write(F::VmwriteBitmapAddress, pg.vmwrite_bitmap);
    }
    let _ = env;
}

fn put(page: &Page, i: usize, e: MsrEntry) {
    page.set(2 * i, u64::from(e.index) | (u64::from(e.reserved) << 32));
    page.set(2 * i + 1, e.value);
}

/// A base VMWRITE: a failure is a failed check.
fn env_write(f: F, v: u64) {
    if !try_write(f, v) {
        crate::assert::fail(
            format_args!("fuzz: base VMWRITE of {}", f.name()),
            format_args!("success"),
            format_args!("refused"),
        );
    }
}

/// Writes the plan's MSR areas and fields; the first field the processor
/// refused, if any.
fn apply(plan: &Plan) -> Option<F> {
    for (i, e) in plan.entry_load.iter().enumerate() {
        put(&PAGES[0], i, *e);
    }
    for (i, idx) in plan.exit_store.iter().enumerate() {
        put(
            &PAGES[1],
            i,
            MsrEntry {
                index: *idx,
                ..MsrEntry::default()
            },
        );
    }
    for (i, e) in plan.exit_load.iter().enumerate() {
        put(&PAGES[2], i, *e);
    }
    let mut refused = None;
    for &(f, v) in plan.writes() {
        if !try_write(f, v) && refused.is_none() {
            refused = Some(f);
        }
    }
    refused
}

fn dump(plan: &Plan) {
    for &(f, _) in plan.writes() {
        println!(
            "CPU(0): VMCS12 {:#06x} {} = {:#x}",
            f.encoding(),
            f.name(),
            try_read(f)
        );
    }
    let areas: [(&str, &[MsrEntry]); 2] = [
        ("entry-load", &plan.entry_load),
        ("exit-load", &plan.exit_load),
    ];
    for (name, entries) in areas {
        for (i, e) in entries.iter().enumerate().filter(|(_, e)| e.index != 0) {
            println!(
                "FUZZ msr {name}[{i}] = {:#x} {:#x} {:#x}",
                e.index, e.reserved, e.value
            );
        }
    }
    for (i, idx) in plan.exit_store.iter().enumerate().filter(|(_, x)| **x != 0) {
        println!("FUZZ msr exit-store[{i}] = {idx:#x}");
    }
}

/// VMLAUNCH and the raw outcome.
fn launch(env: &mut Env, plan: &Plan, pg: &Pages) -> Raw {
    // SAFETY: the current VMCS holds this CPU's host state with HOST_RIP =
    // exit::host_rip() (written by `fresh`) unless a host mutation broke a
    // check (then VM entry fails before using it, module doc of
    // `lhv::fuzz_cases::mutate`); every address the plan writes is one of
    // the fuzzer's pages or one the checks must refuse.
    match unsafe { exit::enter(&mut env.ctx.regs, false) } {
        exit::EntryOutcome::FailInvalid => Raw::FailInvalid,
        exit::EntryOutcome::FailValid => Raw::FailValid(env.read(F::VmInstructionError) as u32),
        exit::EntryOutcome::Exited => {
            let reason = env.read(F::VmExitReason) as u32;
            let n = plan.get(F::VmExitMsrStoreCount).unwrap_or(0) as usize;
            // Entry failures store no MSRs (SDM 27.8).
            let stored = (n > 0
                && reason >> 31 == 0
                && plan.get(F::VmExitMsrStoreAddress) == Some(pg.exit_store))
            .then(|| outcome::hash_values((0..n).map(|i| PAGES[1].get(2 * i + 1))));
            Raw::Exit(ExitFields {
                reason,
                qualification: env.read(F::ExitQualification),
                interruption_info: env.read(F::VmExitInterruptionInfo) as u32,
                interruption_error: env.read(F::VmExitInterruptionErrorCode) as u32,
                idt_info: env.read(F::IdtVectoringInfo) as u32,
                idt_error: env.read(F::IdtVectoringErrorCode) as u32,
                instruction_len: env.read(F::VmExitInstructionLength) as u32,
                stored,
            })
        }
    }
}

/// The MSRs of [`RESTORED_MSRS`] as they are now.
fn save_msrs() -> [u64; RESTORED_MSRS.len()] {
    // SAFETY: every MSR of the list exists on x86-64 processors with VMX.
    RESTORED_MSRS.map(|m| unsafe { x86::rdmsr(m) })
}

fn restore_msrs(saved: &[u64; RESTORED_MSRS.len()]) {
    for (m, v) in RESTORED_MSRS.iter().zip(saved) {
        // SAFETY: the values were read from these MSRs at the start of
        // the run; writing them back restores LHV's own state.
        unsafe { x86::wrmsr(*m, *v) };
    }
}

/// A line buffer for one outcome line.
struct Line {
    buf: [u8; 160],
    len: usize,
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let b = s.as_bytes();
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        Ok(())
    }
}

impl Line {
    fn as_str(&self) -> &str {
        // The buffer holds only whole `&str`s (or a cut inside ASCII).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

/// Runs the fuzzer and shuts down.
pub fn run(boot: &BootInfo, caps: &'static spin::Once<VmxCaps>) -> ! {
    let args = boot.cmdline();
    let seed = cmdline::get_num(args, "seed").unwrap_or(1);
    let cases = cmdline::get_num(args, "cases").unwrap_or(100);
    let only = cmdline::get_num(args, "fuzz_dump");
    // `fuzz_dump_all=1`: every case's mutations (for triage; long).
    let dump_all = cmdline::get_num(args, "fuzz_dump_all") == Some(1);
    println!("FUZZ: mode=fuzz seed={seed} cases={cases}, BSP only");
    let mut env = negative::bring_up(boot, caps, "FUZZ");
    let pg = pages();
    let prof = profile(&env);
    println!("FUZZ profile {prof}");
    let saved = save_msrs();
    let range = match only {
        Some(c) => c..c + 1,
        None => 0..cases,
    };
    let mut digest = Digest::default();
    let start = x86::rdtsc();
    let mut n = 0u64;
    for case in range {
        env.fresh();
        base(&env, &pg, &prof);
        let plan = mutate::plan(SplitMix64::for_case(seed, case), &prof, &pg, &try_read);
        let refused = apply(&plan);
        if only.is_some() || dump_all {
            println!("FUZZ case {case} writes:");
            dump(&plan);
        }
        let raw = launch(&mut env, &plan, &pg);
        restore_msrs(&saved);
        let mut line = Line {
            buf: [0; 160],
            len: 0,
        };
        let _ = write!(line, "FUZZ {case} {}", Outcome(raw));
        if let Some(f) = refused {
            let _ = write!(line, " refused={:#06x}", f.encoding());
        }
        if plan.mutations > 1 {
            let _ = write!(line, " m={}", plan.mutations);
        }
        println!("{}", line.as_str());
        digest.add_line(line.as_str());
        if n == 0 && env.l0.is_some() {
            // The first case allocated what one VMCS12 needs; from here on
            // L0's pool must stay flat (issue 11, item 4).
            println!(
                "FUZZ L0: pool={} after the first case",
                negative::l0_stats().pool_free
            );
        }
        n += 1;
    }
    let cycles = x86::rdtsc() - start;
    println!(
        "FUZZ digest {:016x} cases={n} ({cycles} cycles)",
        digest.value()
    );
    negative::finish(&mut env, "FUZZ");
    println!("FUZZ done");
    shared::console::flush();
    shared::platform::shutdown(0)
}
