//! #GP-safe RDMSR and WRMSR (in `shared`, which L0 uses too).

pub use shared::safe_msr::*;
