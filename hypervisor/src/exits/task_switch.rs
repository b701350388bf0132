//! Task switches (exit reason 9): performed by `shared::task_switch` on
//! the guest state (SDM 7.3), as the processor would have done outside
//! VMX non-root operation. 32-bit OSes reach here through task gates for
//! #DF and NMIs, and through CALL/JMP to a TSS and IRET with NT = 1.
//!
//! A switch through a task gate in the IDT delivers the event that the
//! IDT-vectoring information describes (SDM 28.2.4): the switch itself
//! delivers it (with its error code pushed on the new stack), so the
//! re-injection `handle_exit` prepared is cancelled; an NMI delivered so
//! blocks NMIs, as its delivery does.

use shared::nmi_inject::BLOCKING_BY_NMI;
use shared::task_switch::{self, Fault, Request, Source};
use shared::vmx::exit::{InterruptionInfo, InterruptionType};
use shared::vmx::insn::{self, InvvpidDescriptor, InvvpidType};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, inject_gp};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu};
use crate::vmcs01::efer;

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    // No task switches in IA-32e mode (SDM 7.7); the processor faults
    // before the exit, so this is only a guard.
    if v.read(F::GuestIa32Efer) & efer::LMA != 0 {
        return inject_gp(v);
    }
    let (selector, source) = Source::from_qualification(exit.qualification);
    let idt = InterruptionInfo(v.read32(F::IdtVectoringInfo));
    let mut req = Request {
        selector,
        source,
        // CALL, JMP, IRET: the instruction completes with the switch.
        return_rip: exit.rip.wrapping_add(exit.instruction_len),
        error_code: None,
        external: false,
    };
    if source == Source::IdtGate && idt.is_valid() {
        v.write(F::VmEntryInterruptionInfo, 0);
        let kind = idt.kind();
        req.return_rip = match kind {
            Some(k) if k.uses_instruction_length() => exit.rip.wrapping_add(exit.instruction_len),
            _ => exit.rip,
        };
        req.external = matches!(
            kind,
            Some(
                InterruptionType::ExternalInterrupt
                    | InterruptionType::Nmi
                    | InterruptionType::HardwareException
            )
        );
        if idt.error_code_valid() {
            req.error_code = Some(v.read32(F::IdtVectoringErrorCode));
        }
        if kind == Some(InterruptionType::Nmi) {
            v.set_bits(F::GuestInterruptibilityState, u64::from(BLOCKING_BY_NMI));
        }
    }
    // A fault of the switch is raised while the gate delivers that event
    // (SDM 6.15, Table 6-5: e.g. #TS while delivering #GP is #DF).
    let delivering = (source == Source::IdtGate
        && idt.is_valid()
        && idt.kind() == Some(InterruptionType::HardwareException))
    .then(|| idt.vector());
    let mut gpr = vcpu.regs.gpr;
    match task_switch::switch(&mut GuestMemory, v, &mut gpr, &req) {
        Err(f) => deliver(v, delivering, f),
        Ok(done) => {
            vcpu.regs.gpr = gpr;
            if done.cr3_loaded {
                flush_guest_tlb(vcpu);
                if !super::cr::reload_pdptes(v) {
                    // Invalid PDPTEs in the new CR3: #GP in the new task.
                    deliver(
                        v,
                        delivering,
                        Fault {
                            vector: 13,
                            error_code: Some(0),
                        },
                    );
                }
            }
            if let Some(f) = done.fault {
                deliver(v, delivering, f);
            }
        }
    }
    // The switch ends STI / MOV SS blocking as any instruction does.
    v.clear_bits(F::GuestInterruptibilityState, 0b11);
    Some(Resume::Guest)
}

fn deliver(v: &mut impl VmcsAccess, delivering: Option<u8>, f: Fault) {
    crate::events::inject_exception_during(v, delivering, f.vector, f.error_code);
}

/// The TLB flush of a CR3 load (the guest's own VPID, all its mappings:
/// a superset of what MOV to CR3 flushes).
fn flush_guest_tlb(vcpu: &Vcpu) {
    let d = InvvpidDescriptor {
        vpid: vcpu.index as u16 + 1,
        reserved: [0; 3],
        linear_address: 0,
    };
    // SAFETY: called in VMX root operation; the VPID is this CPU's
    // (`vmcs01` sets VPID = index + 1).
    let _ = unsafe { insn::invvpid(InvvpidType::SingleContext, &d) };
}
