//! Reproducers of known nested-VMX bugs (`lhv_repro=<name>`): each runs a
//! short experiment on the BSP and prints `repro <name>: GOOD <why>` when
//! the processor (or the hypervisor below) behaves as the SDM says, `BAD
//! <what>` otherwise, on serial and VGA; then LHV shuts down.
//!
//! Adding one: a module with `pub fn run(vm: &mut ReproVm) -> Verdict` and
//! one line in [`REPROS`].

use core::fmt::Write;

use shared::boot::layout;
use shared::vmx::insn::{VmcsRegion, Vmxon};
use shared::vmx::{VmcsField as F, VmxCaps};
use shared::{println, x86};

use crate::exit::{self, EntryOutcome, Exit, GuestRegs};
use crate::l2::Stack;
use crate::test_loop::Ctx;
use crate::vmcs_setup::{self, Controls, RFLAGS_IF};

pub mod nmi_blocking;

/// A reproducer's result.
pub enum Verdict {
    /// As the SDM says; why.
    Good(&'static str),
    /// Not; what was seen (formatted into a buffer).
    Bad(Text),
}

/// A fixed-size text buffer (no allocator in LHV).
pub struct Text {
    buf: [u8; 200],
    len: usize,
}

impl Text {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            buf: [0; 200],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// One reproducer.
pub struct Repro {
    /// Its `lhv_repro=` name.
    pub name: &'static str,
    /// Adds the controls it needs to the base ones.
    pub request: fn(&mut Controls),
    /// Its L2's entry point.
    pub l2_entry: fn() -> u64,
    /// Runs it.
    pub run: fn(&mut ReproVm) -> Verdict,
}

/// The registry.
pub const REPROS: &[Repro] = &[Repro {
    name: "nmi-blocking",
    request: nmi_blocking::request,
    l2_entry: nmi_blocking::l2_entry,
    run: nmi_blocking::run,
}];

/// A VMCS and an L2 for a reproducer (the test loop's [`Ctx`] for VMCS
/// access).
pub struct ReproVm {
    /// VMCS access and L2's registers.
    pub ctx: Ctx,
}

static VMCS: spin::Mutex<VmcsRegion> = spin::Mutex::new(VmcsRegion::new());
static STACK: spin::Mutex<Stack> = spin::Mutex::new(Stack([0; crate::l2::STACK_SIZE]));

impl ReproVm {
    /// One VM entry; the decoded exit. Entry failures are failed checks.
    pub fn enter(&mut self) -> Exit {
        let ctx = &mut self.ctx;
        // SAFETY: the VMCS was written by `run` with this CPU's host state
        // and only static structures.
        let outcome = unsafe { exit::enter(&mut ctx.regs, ctx.launched) };
        if outcome != EntryOutcome::Exited {
            crate::assert::fail(
                format_args!("reproducer VM entry"),
                format_args!("success"),
                format_args!("{outcome:?} error {:#x}", ctx.read(F::VmInstructionError)),
            );
        }
        ctx.launched = true;
        let reason_field = shared::vmx::exit::ExitReasonField(ctx.read(F::VmExitReason) as u32);
        Exit {
            reason_field,
            reason: reason_field.basic(),
            qualification: ctx.read(F::ExitQualification),
            instruction_len: ctx.read(F::VmExitInstructionLength),
            guest_rip: ctx.read(F::GuestRip),
            interruption_info: ctx.read(F::VmExitInterruptionInfo) as u32,
        }
    }
}

/// Runs reproducer `name` on this CPU (the BSP) and shuts down.
pub fn run(name: &str, vmx: Vmxon, caps: &'static VmxCaps, on_bochs: bool) -> ! {
    let Some(repro) = REPROS.iter().find(|r| r.name == name) else {
        println!("TEST_ASSERT failed: lhv_repro, expected a known reproducer, got {name}");
        shared::platform::shutdown(1);
    };
    crate::hw::lapic::enable(crate::irq::SPURIOUS_VECTOR);
    let mut region = VMCS.lock();
    region.stamp(caps.basic.revision_id, false);
    let vmcs_pa = layout::phys_of(&*region as *const VmcsRegion);
    // SAFETY: the region is static, 4-KiB aligned and stamped.
    let loaded = unsafe {
        shared::vmx::insn::vmclear(vmcs_pa).and_then(|()| shared::vmx::insn::vmptrld(vmcs_pa))
    };
    if loaded.is_err() {
        println!(
            "TEST_ASSERT failed: reproducer VMCLEAR/VMPTRLD, expected success, got {loaded:?}"
        );
        shared::platform::shutdown(1);
    }
    let stack_top = STACK.lock().0.as_ptr_range().end as u64;
    let mut controls = Controls::base();
    (repro.request)(&mut controls);
    if let Some((field, bits)) = controls.unsupported(caps) {
        println!("repro {name}: SKIP the CPU lacks {field} controls {bits:#x}");
        shared::platform::shutdown(0);
    }
    {
        let mut vmcs = vmx.current_vmcs();
        controls.apply(caps, &mut vmcs);
        vmcs_setup::write_host_state(&mut vmcs, exit::host_rip());
        vmcs_setup::write_guest_state(&mut vmcs, (repro.l2_entry)(), stack_top - 8, RFLAGS_IF);
    }
    let mut vm = ReproVm {
        ctx: Ctx {
            cpu: shared::percpu::current().index(),
            vmx: Some(vmx),
            caps,
            opt: lhv::opt::LhvOpt::empty(),
            on_bochs,
            regs: GuestRegs::default(),
            vmcs_pa,
            launched: false,
            iter: 0,
        },
    };
    match (repro.run)(&mut vm) {
        Verdict::Good(why) => println!("repro {name}: GOOD {why}"),
        Verdict::Bad(what) => println!("repro {name}: BAD {}", what.as_str()),
    }
    x86::cli();
    shared::platform::shutdown(0)
}
