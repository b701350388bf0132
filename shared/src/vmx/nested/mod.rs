//! Pure logic of L0's nested VMX: what L1 sees of VMX ([`caps`]), the
//! VM-entry checks on its VMCS12 ([`entry_checks`]), which exits of L2 it
//! wants ([`reflect`]), how the MSRs of its MSR areas are emulated
//! ([`msr_class`]) and how VMCS02 is built from VMCS12 and L1's state is
//! restored from it ([`vmcs02`]). Everything here works over
//! [`crate::vmx::VmcsAccess`] and [`crate::mem::PhysMemory`] and is tested
//! on the host.

pub mod caps;
pub mod entry_checks;
pub mod invvpid;
pub mod msr_class;
pub mod reflect;
pub mod vmcs02;
