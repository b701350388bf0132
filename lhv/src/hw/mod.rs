//! LHV's thin hardware wrappers: the PIT and PIC, and the descriptor-table
//! registers the VMCS host state copies (the local APIC is
//! `shared::apic::LocalApic`).

pub mod pit;
pub mod tables;
