//! Code shared by L0 (`hypervisor`) and L1 (`lhv`): VMX and EPT definitions,
//! capability decoding, ACPI/APIC/SMP helpers, the console and boot glue.
//!
//! Decisions are kept as pure code over small traits ([`mem::PhysMemory`],
//! `vmx::VmcsAccess`) so that they build and are tested on the host with
//! `cargo test`; hardware access sits in thin wrappers at the edges.
#![cfg_attr(not(test), no_std)]

pub mod acpi;
pub mod apic;
pub mod delay;
pub mod ept;
pub mod mem;
pub mod mptable;
pub mod msr_area;
pub mod vmx;
pub mod boot;
pub mod cmdline;
pub mod console;
pub mod percpu;
pub mod platform;
pub mod trap;
pub mod x86;
pub mod panic;
