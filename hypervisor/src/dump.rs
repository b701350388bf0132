//! A parseable dump of the current VMCS (`CPU(n): VMCS01 <encoding> <name>
//! = <value>`, or VMCS02 while L2 runs, then L1's VMCS12), then the guest's
//! general registers.

use shared::vmx::insn::GuardedVmcs;

use crate::vcpu::Vcpu;

const GPR_NAMES: [&str; 16] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15",
];

/// Prints every field of the current VMCS (`unavailable` where VMREAD
/// fails), VMCS12 when L1 has one, and the guest's registers.
pub fn vmcs(_v: &GuardedVmcs<'_>, vcpu: &Vcpu) {
    let kind = if vcpu.nested.in_l2() { "02" } else { "01" };
    crate::nested::dump::current(kind);
    if vcpu.nested.current_vmcs12().is_some() {
        crate::nested::dump::vmcs12(vcpu);
    }
    shared::cpu_println!(
        "sensitive VMCS writes refused by the safe accessor: {}",
        shared::vmx::insn::refused_writes()
    );
    for (i, name) in GPR_NAMES.iter().enumerate() {
        if i != crate::vcpu::reg::RSP {
            shared::cpu_println!("GPR {} = {:#x}", name, vcpu.regs.gpr[i]);
        }
    }
}
