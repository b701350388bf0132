//! A parseable dump of the current VMCS: one `field = value` line per field
//! of the shared field table, then the guest's general registers.

use shared::vmx::VmcsField;
use shared::vmx::insn::CurrentVmcs;

use crate::vcpu::Vcpu;

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Prints every VMCS field (`unavailable` where VMREAD fails) and the
/// guest's registers, prefixed with `CPU(n): VMCS `.
pub fn vmcs(v: &CurrentVmcs<'_>, vcpu: &Vcpu) {
    shared::cpu_println!("VMCS dump begin");
    for &f in VmcsField::ALL {
        match v.try_read(f) {
            Ok(x) => shared::cpu_println!("VMCS {} = {:#x}", f.name(), x),
            Err(_) => shared::cpu_println!("VMCS {} = unavailable", f.name()),
        }
    }
    for (i, name) in GPR_NAMES.iter().enumerate() {
        if i != crate::vcpu::reg::RSP {
            shared::cpu_println!("GPR {} = {:#x}", name, vcpu.regs.gpr[i]);
        }
    }
    shared::cpu_println!("VMCS dump end");
}
