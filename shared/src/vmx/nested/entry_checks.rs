//! TEMPORARY stub (the entry-checks branch replaces this file).
use crate::mem::PhysMemory;
use crate::vmx::{VmInstructionError, VmcsAccess, VmxCaps};

pub struct CheckCtx<'a, M: PhysMemory> {
    pub caps: &'a VmxCaps,
    pub mem: &'a M,
    pub maxphyaddr: u8,
    pub vmcs_revision: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryFailure {
    VmFail {
        error: VmInstructionError,
        check: &'static str,
    },
    InvalidGuestState {
        qualification: u64,
        check: &'static str,
    },
}

pub fn check_all(
    _v: &impl VmcsAccess,
    _ctx: &CheckCtx<'_, impl PhysMemory>,
) -> Result<(), EntryFailure> {
    Ok(())
}
