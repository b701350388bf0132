//! Pure logic of L0's nested-VMX emulation: what VMX a guest hypervisor (L1)
//! sees and what its VMCS12 must satisfy, host-tested (Intel SDM Vol. 3C,
//! chapters 26-28, and Vol. 3D Appendix A).

pub mod caps;
pub mod entry_checks;
