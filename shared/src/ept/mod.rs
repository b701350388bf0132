//! Extended page tables (Intel SDM Vol. 3C, 30.3 "The Extended Page Table
//! Mechanism (EPT)"; chapter 28/29 in older editions).
//!
//! - [`entry`]: paging-structure entries, the EPT pointer and its checks.
//! - [`walk`]: the translation of a guest-physical address through tables
//!   in [`PhysMemory`](crate::mem::PhysMemory), with EPT violations and
//!   misconfigurations told apart.
//! - [`nested`], [`ept02`]: nested EPT (EPT02 from EPT12 and EPT01, its
//!   tables and the per-CPU cache of its roots).
//! - [`build`]: building and editing tables (identity maps, unmapping,
//!   permission changes) with frames from a [`build::FrameAlloc`].

pub mod build;
pub mod entry;
pub mod ept02;
pub mod nested;
pub mod view;
pub mod walk;

pub use build::{BuildError, EptBuilder, FrameAlloc, Mapping};
pub use entry::{EptConfig, EptEntry, EptPerms, Eptp, EptpError, MemoryType, PageSize};
pub use view::EptView;
pub use walk::{EptFault, EptMisconfig, EptViolation, MisconfigReason, Translation, walk};
