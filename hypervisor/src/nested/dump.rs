//! VMCS dumps in one parseable form, `CPU(n): VMCS<kind> <encoding>
//! <name> = <value>` (kind 01, 12 or 02), which
//! `cargo run -p harness -- vmcs-diff` compares field by field.

use shared::vmx::VmcsField;
use shared::vmx::insn::CurrentVmcs;

use crate::vcpu::Vcpu;

/// Every field of `vmcs12` (L0's copy of L1's current VMCS).
pub fn vmcs12(vcpu: &Vcpu) {
    let Some(v) = vcpu.nested.current_vmcs12() else {
        shared::cpu_println!("VMCS12 none (no current VMCS)");
        return;
    };
    shared::cpu_println!(
        "VMCS12 dump begin (at {:#x})",
        vcpu.nested.current_vmcs12_addr().unwrap_or(u64::MAX)
    );
    if vcpu.nested.shadow.is_live() {
        shared::cpu_println!(
            "VMCS12 note: the shadow VMCS is live; L1 may have changed its fields (shared::vmx::shadow) since these copies"
        );
    }
    for (f, x) in v.iter() {
        shared::cpu_println!("VMCS12 {:#06x} {} = {:#x}", f.encoding(), f.name(), x);
    }
    shared::cpu_println!("VMCS12 dump end");
}

/// Every field of the current hardware VMCS, labelled `kind` (01 or 02);
/// `unavailable` where VMREAD fails.
pub fn current(kind: &str) {
    // The generic accessor reads a failed VMREAD as 0; the token tells.
    // SAFETY: dumps only run in VMX root operation, on the exit path.
    let vmx = unsafe { shared::vmx::insn::Vmxon::assume_enabled() };
    let hw: CurrentVmcs<'_> = vmx.current_vmcs();
    shared::cpu_println!("VMCS{kind} dump begin");
    for &f in VmcsField::ALL {
        match hw.try_read(f) {
            Ok(x) => {
                shared::cpu_println!("VMCS{kind} {:#06x} {} = {:#x}", f.encoding(), f.name(), x)
            }
            Err(_) => shared::cpu_println!(
                "VMCS{kind} {:#06x} {} = unavailable",
                f.encoding(),
                f.name()
            ),
        }
    }
    shared::cpu_println!("VMCS{kind} dump end");
}
