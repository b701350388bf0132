//! TEMPORARY stub (the exit-reflect branch replaces this file).
use crate::mem::PhysMemory;
use crate::vmx::controls::{PinBased, PrimaryProcBased};
use crate::vmx::exit::{ExitReasonField, InterruptionInfo, InterruptionType};
use crate::vmx::{ExitReason, VmcsAccess, VmcsField as F};

pub struct L2Exit {
    pub reason: ExitReasonField,
    pub qualification: u64,
    pub intr_info: InterruptionInfo,
    pub intr_error_code: u32,
    pub instruction_info: u32,
    pub gpr: [u64; 16],
}

pub fn l1_wants_exit(exit: &L2Exit, vmcs12: &impl VmcsAccess, _mem: &impl PhysMemory) -> bool {
    let pin = vmcs12.read32(F::PinBasedVmExecControls);
    let proc = vmcs12.read32(F::PrimaryProcBasedVmExecControls);
    match exit.reason.basic() {
        ExitReason::ExceptionOrNmi => {
            if exit.intr_info.kind() == Some(InterruptionType::Nmi) {
                return pin & PinBased::NMI_EXITING.bits() != 0;
            }
            vmcs12.read32(F::ExceptionBitmap) & (1 << (exit.intr_info.vector() & 31)) != 0
        }
        ExitReason::ExternalInterrupt => pin & PinBased::EXTERNAL_INTERRUPT_EXITING.bits() != 0,
        ExitReason::NmiWindow => proc & PrimaryProcBased::NMI_WINDOW_EXITING.bits() != 0,
        ExitReason::InterruptWindow => {
            proc & PrimaryProcBased::INTERRUPT_WINDOW_EXITING.bits() != 0
        }
        ExitReason::Rdmsr | ExitReason::Wrmsr => true,
        _ => true,
    }
}
