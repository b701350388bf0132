//! VMX instructions executed by the guest (VMXON, VMCLEAR, ..., INVEPT,
//! INVVPID, VMFUNC): VMX is hidden from the guest (CPUID.1:ECX.VMX = 0,
//! CR4.VMXE cannot be set), so they raise #UD as on a processor without VMX.

use shared::vmx::VmcsAccess;

use crate::vcpu::Resume;

pub fn handle(v: &mut impl VmcsAccess) -> Option<Resume> {
    super::inject_ud(v)
}
