//! Pure decisions of L0's nested VMX (issue 8): which exits of L2 L1 wants,
//! how the MSRs of VMCS12's MSR areas are treated, and (on other branches)
//! the capabilities L1 sees and the VM-entry checks on VMCS12.

pub mod msr_class;
pub mod reflect;
