//! LHV's pure logic, built for the host as well as for bare metal so that
//! `cargo test -p lhv` checks it: the `LHV_OPT` option set and its rules,
//! the identity EPT layout with its hole, the INVVPID case table, the
//! negative suite's outcomes and rules, the descriptor decoding the VMCS setup needs, and
//! benchmark arithmetic.
//!
//! The kernel (`src/main.rs` and its modules) uses these and keeps every
//! hardware access on its side.
#![cfg_attr(not(test), no_std)]

pub mod bench_figures;
pub mod desc;
pub mod ept_layout;
pub mod ept_variants;
pub mod fuzz_cases;
pub mod invvpid_cases;
pub mod low_mem;
pub mod msr_bitmap;
pub mod negative_cases;
pub mod opt;
pub mod real_mode_calc;
pub mod ring3_abi;
pub mod va_layout;
