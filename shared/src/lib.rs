//! Code shared by L0 (`hypervisor`) and L1 (`lhv`): VMX and EPT definitions,
//! capability decoding, ACPI/APIC/SMP helpers, the console and boot glue.
//!
//! Decisions are kept as pure code over small traits ([`mem::PhysMemory`],
//! `vmx::VmcsAccess`) so that they build and are tested on the host with
//! `cargo test`; hardware access sits in thin wrappers at the edges.
#![cfg_attr(not(test), no_std)]

// Modules marked `cfg(target_os = "none")` drive the hardware of the bare-metal
// kernels (boot assembly, per-CPU state, traps, console, SMP, VMXON); the
// others are pure logic or thin instruction wrappers and build on the host,
// where `cargo test` exercises them.

pub mod acpi;
pub mod apic;
pub mod apic_capture;
#[cfg(target_os = "none")]
pub mod boot;
pub mod cmdline;
#[cfg(target_os = "none")]
pub mod console;
pub mod debug_trap;
pub mod delay;
pub mod e820;
pub mod ept;
pub mod ept01;
pub mod exception_class;
pub mod exit_profile;
pub mod guard_page;
pub mod guest_paging;
pub mod hypercall;
pub mod init_state;
pub mod ipi;
pub mod mem;
pub mod mptable;
pub mod msr_area;
pub mod mtrr;
pub mod nmi_inject;
#[cfg(target_os = "none")]
pub mod panic;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod platform;
#[cfg(target_os = "none")]
pub mod safe_msr;
pub mod sipi_latch;
#[cfg(target_os = "none")]
pub mod smp;
pub mod store_insn;
pub mod task_switch;
#[cfg(target_os = "none")]
pub mod trap;
pub mod vmx;
#[cfg(target_os = "none")]
pub mod vmx_root;
pub mod x86;
pub mod xss;
