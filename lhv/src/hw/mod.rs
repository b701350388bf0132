//! LHV's thin hardware wrappers: the local APIC timer and EOI, the PIT and
//! PIC, and the descriptor-table registers the VMCS host state copies.

pub mod lapic;
pub mod pit;
pub mod tables;
