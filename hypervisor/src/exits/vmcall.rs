//! VMCALL (exit reason 18): the INT 15h stub's VMCALL (recognised by its
//! guest address, real mode only) or L0's hypercall ABI
//! (`shared::hypercall`: Print, Stats, Shutdown).

use shared::hypercall::{self, Hypercall};
use shared::mem::PhysMemory;
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, guest_cpl, skip_instruction};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, Vcpu, reg};

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit) -> Option<Resume> {
    if let Some(r) = super::int15::try_handle(vcpu, v, exit) {
        return Some(r);
    }
    let rax = match (guest_cpl(v), Hypercall::from_rax(vcpu.regs.gpr[reg::RAX])) {
        (0, Some(Hypercall::Print)) => print(vcpu),
        (0, Some(Hypercall::Stats)) => {
            let (b, e) = crate::memory::region();
            vcpu.regs.gpr[reg::RBX] = vcpu.exits;
            vcpu.regs.gpr[reg::RCX] = shared::percpu::online_count() as u64;
            vcpu.regs.gpr[reg::RDX] = (e - b) / 1024;
            vcpu.regs.gpr[reg::RSI] = b;
            vcpu.regs.gpr[reg::RDI] = crate::memory::pool_free();
            hypercall::OK
        }
        (0, Some(Hypercall::Shutdown)) => {
            let code = vcpu.regs.gpr[reg::RBX] as u8;
            shared::cpu_println!("guest requested shutdown (code {code})");
            shared::platform::shutdown(code);
        }
        _ => hypercall::UNKNOWN,
    };
    vcpu.regs.gpr[reg::RAX] = rax;
    // The hypercall returns like a VMX instruction that succeeded (CF, PF,
    // AF, ZF, SF and OF clear), so that a guest hypervisor's VMCALL
    // wrapper, which decodes VMfail from them, sees success.
    const VMX_RESULT_FLAGS: u64 = 0x8d5;
    v.write(F::GuestRflags, v.read(F::GuestRflags) & !VMX_RESULT_FLAGS);
    skip_instruction(v, exit);
    Some(Resume::Guest)
}

/// Print: RCX bytes at guest-physical RBX, on one console line per call.
fn print(vcpu: &Vcpu) -> u64 {
    let (addr, len) = (vcpu.regs.gpr[reg::RBX], vcpu.regs.gpr[reg::RCX]);
    if len > hypercall::PRINT_MAX {
        return hypercall::BAD_ARGUMENT;
    }
    let mut buf = [0u8; hypercall::PRINT_MAX as usize];
    let buf = &mut buf[..len as usize];
    if GuestMemory.read(addr, buf).is_err() {
        return hypercall::BAD_ARGUMENT;
    }
    let text = core::str::from_utf8(buf).unwrap_or("<not UTF-8>");
    shared::cpu_println!("guest: {}", text.trim_end_matches('\n'));
    hypercall::OK
}
