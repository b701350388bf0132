//! VM-exit handling: decode first (reason, qualification, instruction
//! length, guest RIP), then dispatch to one module per exit reason. Nothing
//! here prints before the exit is decoded, and nothing panics on values the
//! guest controls; what L0 cannot handle is reported with a VMCS dump and
//! stops this CPU only.

mod apic_write;
mod cache;
mod cpuid;
mod cr;
mod ept_violation;
mod exception;
mod init_sipi;
mod int15;
mod msr;
mod single_step;
mod task_switch;
mod triple_fault;
mod vmcall;
mod xsetbv;

use shared::vmx::exit::{ExitReasonField, InterruptionInfo, InterruptionType};
use shared::vmx::insn::{GuardedVmcs, Vmxon};
use shared::vmx::nested::entry_checks::GuestScope;
use shared::vmx::{ExitReason, VmcsAccess, VmcsField as F};

use crate::vcpu::{Resume, Vcpu};

pub use apic_write::emulate as emulate_apic_write;
pub use cpuid::guest_xsaves;
pub use ept_violation::handle as ept_violation;
pub use exception::{deliver_db, handle as exception, redeliver as redeliver_exception};
pub use init_sipi::{enter_init_state, init_self, start as start_at_sipi};
pub use int15::try_handle_l2 as int15_l2;
pub use msr::{emulated_rdmsr, rdmsr, wrmsr};
pub use single_step::{
    apic_scratch_value, finish as single_step_finish, start as single_step_start, step_from,
};
pub use vmcall::{configure as configure_hypercalls, is_enabled_hypercall};

/// A decoded VM exit.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    pub reason: ExitReasonField,
    pub qualification: u64,
    pub instruction_len: u64,
    pub rip: u64,
}

impl Exit {
    pub fn read(v: &impl VmcsAccess) -> Self {
        Self {
            reason: ExitReasonField(v.read32(F::VmExitReason)),
            qualification: v.read(F::ExitQualification),
            instruction_len: v.read(F::VmExitInstructionLength),
            rip: v.read(F::GuestRip),
        }
    }
}

/// The basic reason of the exit being handled (for the exit profile).
pub fn basic_reason() -> u16 {
    // SAFETY: called by the exit stub's callee in VMX root operation, with
    // the VMCS that exited current.
    let vmx = unsafe { Vmxon::assume_enabled() };
    vmx.guarded_vmcs().read32(F::VmExitReason) as u16
}

/// The one entry point of the exit path (called by the exit stub). Exits
/// of L2 (VMCS02 current) go to `nested::exit`; L1's are handled here.
pub fn handle_exit(vcpu: &mut Vcpu) -> Resume {
    // SAFETY: the exit stub runs in VMX root operation, with this CPU's
    // VMCS01 or one of its VMCS02s current.
    let vmx = unsafe { Vmxon::assume_enabled() };
    let mut v = vmx.guarded_vmcs();
    if vcpu.nested.in_l2() {
        let handled = crate::nested::exit::handle(vcpu, &mut v);
        return finish(vcpu, &mut v, handled, None);
    }
    let exit = Exit::read(&v);
    if exit.reason.is_entry_failure() {
        return unhandled(vcpu, &v, &exit, "VM-entry failure");
    }
    reinject_vectored_event(&mut v, &exit);
    let handled = match exit.reason.basic() {
        ExitReason::Cpuid => cpuid::handle(vcpu, &mut v, &exit),
        ExitReason::Rdmsr => msr::rdmsr(vcpu, &mut v, &exit),
        ExitReason::Wrmsr => msr::wrmsr(vcpu, &mut v, &exit),
        ExitReason::ControlRegisterAccess => cr::handle(vcpu, &mut v, &exit),
        ExitReason::Xsetbv => xsetbv::handle(vcpu, &mut v, &exit),
        ExitReason::Invd | ExitReason::Wbinvd => cache::handle(&mut v, &exit),
        ExitReason::Vmcall => vmcall::handle(vcpu, &mut v, &exit),
        ExitReason::InitSignal => init_sipi::init(vcpu, &mut v),
        ExitReason::StartupIpi => init_sipi::sipi(vcpu, &mut v, &exit),
        ExitReason::TripleFault => triple_fault::handle(vcpu, &v, &exit),
        ExitReason::TaskSwitch => task_switch::handle(vcpu, &mut v, &exit),
        ExitReason::EptViolation => ept_violation::handle(vcpu, &mut v, &exit),
        ExitReason::ExceptionOrNmi => exception::handle(vcpu, &mut v, &exit),
        ExitReason::ExternalInterrupt => single_step::interrupted(vcpu, &mut v),
        // SMX is hidden (CPUID.1:ECX.SMX = 0, CR4.SMXE refused): GETSEC
        // is #UD as with CR4.SMXE = 0 (SDM Vol. 2D, GETSEC).
        ExitReason::Getsec => inject_ud(&mut v),
        // `events::before_entry` injects the pending NMI.
        ExitReason::NmiWindow => Some(Resume::Guest),
        ExitReason::Vmclear
        | ExitReason::Vmlaunch
        | ExitReason::Vmptrld
        | ExitReason::Vmptrst
        | ExitReason::Vmread
        | ExitReason::Vmresume
        | ExitReason::Vmwrite
        | ExitReason::Vmxoff
        | ExitReason::Vmxon
        | ExitReason::Invept
        | ExitReason::Invvpid
        | ExitReason::Vmfunc => crate::nested::insn::handle(vcpu, &mut v, &exit),
        _ => None,
    };
    finish(vcpu, &mut v, handled, Some(&exit))
}

/// After a handler: the events of the next entry and, entering VMCS01, the
/// guest-state checks (`entry_guard`), or the report of an exit nobody
/// handled. `exit` is `None` for an exit of L2: if L1 runs next, VMCS01's
/// guest state is L1's host state, all of it new.
fn finish(
    vcpu: &mut Vcpu,
    v: &mut GuardedVmcs<'_>,
    handled: Option<Resume>,
    exit: Option<&Exit>,
) -> Resume {
    match handled {
        Some(Resume::Guest) => {
            crate::events::before_entry(vcpu, v);
            if vcpu.nested.in_l2() {
                return Resume::Guest;
            }
            crate::nested::shadow::before_l1(vcpu, v);
            let scope = match exit {
                Some(_) => v.written(),
                None => GuestScope::All,
            };
            crate::entry_guard::check(vcpu, v, scope)
        }
        Some(r) => r,
        None => {
            let exit = exit.copied().unwrap_or_else(|| Exit::read(v));
            unhandled(vcpu, v, &exit, "unhandled VM exit")
        }
    }
}

/// An exit during event delivery through the guest's IDT (IDT-vectoring
/// information valid, SDM 28.2.4) loses the event unless L0 injects it
/// again at the next entry (SDM 28.2.4 / 27.6: "re-injection"); a handler
/// that injects something else overrides it. An NMI being re-injected was
/// blocking NMIs, which must be clear again for its injection. An exit
/// after IRET unblocked virtual NMIs and faulted (bit 12 of the exit
/// interruption information or EPT qualification) must block them again
/// (SDM 28.2.3), as the IRET will run again.
pub fn reinject_vectored_event(v: &mut impl VmcsAccess, exit: &Exit) {
    use shared::nmi_inject::BLOCKING_BY_NMI;
    let idt = InterruptionInfo(v.read32(F::IdtVectoringInfo));
    if idt.is_valid() {
        v.write(F::VmEntryInterruptionInfo, u64::from(idt.0 & 0x8000_0fff));
        v.write(
            F::VmEntryExceptionErrorCode,
            v.read(F::IdtVectoringErrorCode),
        );
        v.write(F::VmEntryInstructionLength, exit.instruction_len);
        if idt.kind() == Some(InterruptionType::Nmi) {
            v.clear_bits(F::GuestInterruptibilityState, u64::from(BLOCKING_BY_NMI));
        }
        return;
    }
    let unblocked_by_iret = match exit.reason.basic() {
        ExitReason::ExceptionOrNmi => {
            let info = InterruptionInfo(v.read32(F::VmExitInterruptionInfo));
            info.nmi_unblocking() && info.vector() != 8
        }
        ExitReason::EptViolation => exit.qualification & (1 << 12) != 0,
        _ => false,
    };
    if unblocked_by_iret {
        v.set_bits(F::GuestInterruptibilityState, u64::from(BLOCKING_BY_NMI));
    }
}

/// Reports an exit L0 does not handle and stops this CPU. The VMCS dump
/// comes first, so that a log reader that stops at the summary line has it.
fn unhandled(vcpu: &Vcpu, v: &GuardedVmcs<'_>, exit: &Exit, what: &str) -> Resume {
    crate::dump::vmcs(v, vcpu);
    shared::cpu_println!(
        "{what}: reason {}, qualification {:#x}, guest RIP {:#x} (CS base {:#x})",
        exit.reason,
        exit.qualification,
        exit.rip,
        v.read(F::GuestCsBase)
    );
    Resume::Stop
}

/// Moves the guest past the instruction that exited, ending any blocking
/// by STI or MOV SS (SDM 25.4.2) as the instruction's completion would.
/// Outside 64-bit mode the instruction pointer wraps at the code
/// segment's operand size: 4 GiB (CS.D = 1) or 64 KiB (CS.D = 0: real and
/// virtual-8086 mode, 16-bit code), SDM Vol. 1 3.5 "Instruction Pointer".
pub fn skip_instruction(v: &mut impl VmcsAccess, exit: &Exit) {
    const CS_L: u64 = 1 << 13;
    const CS_D: u64 = 1 << 14;
    const EFER_LMA: u64 = 1 << 10;
    let next = exit.rip.wrapping_add(exit.instruction_len);
    let cs = v.read(F::GuestCsAccessRights);
    let next = if v.read(F::GuestIa32Efer) & EFER_LMA != 0 && cs & CS_L != 0 {
        next
    } else if cs & CS_D != 0 {
        next & 0xffff_ffff
    } else {
        next & 0xffff
    };
    v.write(F::GuestRip, next);
    let state = v.read(F::GuestInterruptibilityState);
    if state & 0b11 != 0 {
        v.write(F::GuestInterruptibilityState, state & !0b11);
    }
}

/// RFLAGS.VM (virtual-8086 mode).
const RFLAGS_VM: u64 = 1 << 17;

/// Exception vectors L0 injects.
pub mod vector {
    pub const DB: u8 = 1;
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
}

/// Injects hardware exception `vec` at the next VM entry, merged with an
/// exception whose delivery this exit interrupted (see
/// `events::inject_exception`).
pub fn inject_exception(v: &mut impl VmcsAccess, vec: u8, error_code: Option<u32>) {
    crate::events::inject_exception(v, vec, error_code);
}

/// Injects #GP(0).
pub fn inject_gp(v: &mut impl VmcsAccess) -> Option<Resume> {
    inject_exception(v, vector::GP, Some(0));
    Some(Resume::Guest)
}

/// Injects #UD.
pub fn inject_ud(v: &mut impl VmcsAccess) -> Option<Resume> {
    inject_exception(v, vector::UD, None);
    Some(Resume::Guest)
}

/// The guest's current privilege level (SS.DPL, SDM 5.5), 0 in real mode.
pub fn guest_cpl(v: &impl VmcsAccess) -> u8 {
    if v.read(F::GuestCr0) & crate::vmcs01::cr0::PE == 0 {
        return 0;
    }
    if v.read(F::GuestRflags) & RFLAGS_VM != 0 {
        return 3;
    }
    ((v.read(F::GuestSsAccessRights) >> 5) & 3) as u8
}
