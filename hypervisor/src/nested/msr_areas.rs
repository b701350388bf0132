//! VMCS12's MSR areas, emulated MSR by MSR as KVM does (never by pointing
//! the processor at L1's memory): the VM-entry MSR-load area (SDM 27.4),
//! the VM-exit MSR-store area (28.4) and the VM-exit MSR-load area (28.6).
//! Entries are checked by `shared::msr_area`; each MSR goes where its class
//! says (`shared::vmx::nested::msr_class`): a VMCS field, the vCPU's
//! virtual MTRRs (`vmtrr`), the hardware (MSRs nobody switches), or nowhere (MSRs L0
//! owns: loading one fails as a WRMSR that raises #GP would).

use heapless::Vec;
use shared::msr_area::{self, AreaKind, MsrAreaError, MsrAreaFailure};
use shared::vmx::nested::msr_class::{MsrClass, classify, emulated_for_l1, entry_load_allowed};
use shared::vmx::{VmcsAccess, VmcsField as F};

use crate::memory::GuestMemory;

/// VMCS-field MSR loads of one VM entry, applied to VMCS02 once it is
/// current (the MSR-load area comes after the guest-state loads, 27.4).
pub type FieldLoads = Vec<(F, u64), 16>;

/// The recommended maximum number of entries of one area (IA32_VMX_MISC
/// bits 27:25, SDM A.6): 512 * (N + 1).
fn max_entries() -> u32 {
    let misc = super::l1_msrs().and_then(|m| m.get(0x485)).unwrap_or(0);
    512 * (((misc >> 25) & 7) as u32 + 1)
}

/// IA32_EFER.LMA (bit 10).
const EFER_LMA: u64 = 1 << 10;

/// The value a WRMSR of `value` leaves in field `f` that held `old`: a
/// WRMSR to IA32_EFER does not change LMA, which follows CR0.PG and LME
/// (SDM Vol. 3A, 2.2.1 and 10.8.5; KVM's `set_efer` keeps it likewise).
pub fn as_loaded(f: F, value: u64, old: u64) -> u64 {
    if f == F::GuestIa32Efer {
        (value & !EFER_LMA) | (old & EFER_LMA)
    } else {
        value
    }
}

/// What a WRMSR of IA32_EFER is checked against: whether paging is on and
/// EFER as it is (SDM Vol. 3A, 2.2.1: LME may not change while CR0.PG = 1;
/// such a WRMSR is #GP). Updated by each load of EFER in the area.
#[derive(Clone, Copy, Debug)]
pub struct EferState {
    pub paging: bool,
    pub efer: u64,
}

/// IA32_EFER.LME (bit 8).
const EFER_LME: u64 = 1 << 8;

/// Performs a WRMSR of one area entry for L1 or L2: a field goes to
/// `fields` (or is written into `vmcs` at once when `vmcs` is given).
fn load_one(
    cpu: usize,
    msr: u32,
    value: u64,
    efer: &mut EferState,
    fields: &mut FieldLoads,
    vmcs: Option<&mut dyn VmcsAccess>,
) -> Result<(), MsrAreaFailure> {
    let refused = Err(MsrAreaFailure::Refused);
    if !entry_load_allowed(msr, value) {
        return refused;
    }
    if classify(msr) == MsrClass::VmcsField(F::GuestIa32Efer) {
        if efer.paging && (value ^ efer.efer) & EFER_LME != 0 {
            return refused;
        }
        efer.efer = as_loaded(F::GuestIa32Efer, value, efer.efer);
    }
    match classify(msr) {
        MsrClass::VmcsField(f) => {
            match vmcs {
                Some(v) => {
                    let old = v.read(f);
                    v.write(f, as_loaded(f, value, old));
                }
                None => {
                    if let Some(slot) = fields.iter_mut().find(|(g, _)| *g == f) {
                        slot.1 = value;
                    } else if fields.push((f, value)).is_err() {
                        return refused;
                    }
                }
            }
            Ok(())
        }
        MsrClass::Mtrr => {
            if crate::vmtrr::write(cpu, msr, value) {
                Ok(())
            } else {
                refused
            }
        }
        // As L1's WRMSR of it (exits/msr.rs): the virtual APIC base checks
        // and applies the value (or refuses it as the hardware's #GP).
        MsrClass::L0Owned if emulated_for_l1(msr) => {
            if crate::vapic_base::write(cpu, value) {
                Ok(())
            } else {
                refused
            }
        }
        MsrClass::L0Owned => refused,
        MsrClass::Passthrough => {
            // SAFETY: these MSRs are not switched by VMX and L0 does not
            // use them; a #GP is caught and becomes the load's failure.
            if unsafe { shared::safe_msr::wrmsr(msr, value) } {
                Ok(())
            } else {
                refused
            }
        }
    }
}

/// Emulates VMCS12's VM-entry MSR-load area into `fields` (and the
/// hardware). `Err` carries the 1-based index of the failing entry
/// (exit reason 34's qualification).
pub fn entry_load(
    cpu: usize,
    vmcs12: &impl VmcsAccess,
    mut efer: EferState,
    fields: &mut FieldLoads,
) -> Result<(), MsrAreaError> {
    let count = vmcs12.read32(F::VmEntryMsrLoadCount);
    let addr = vmcs12.read(F::VmEntryMsrLoadAddress);
    msr_area::process_area(
        &mut GuestMemory,
        AreaKind::EntryLoad,
        addr,
        count,
        max_entries(),
        |_, _, e| load_one(cpu, e.index, e.data, &mut efer, fields, None),
    )
}

/// Emulates VMCS12's VM-exit MSR-store area: the values L2 had, read from
/// VMCS02 (`vmcs02`, current) or the hardware.
pub fn exit_store(
    cpu: usize,
    vmcs12: &impl VmcsAccess,
    vmcs02: &impl VmcsAccess,
) -> Result<(), MsrAreaError> {
    let count = vmcs12.read32(F::VmExitMsrStoreCount);
    let addr = vmcs12.read(F::VmExitMsrStoreAddress);
    msr_area::process_area(
        &mut GuestMemory,
        AreaKind::ExitStore,
        addr,
        count,
        max_entries(),
        |mem, i, e| {
            let value = match classify(e.index) {
                MsrClass::VmcsField(f) => Some(vmcs02.read(f)),
                // As L1's RDMSR of it (exits/msr.rs).
                MsrClass::L0Owned if emulated_for_l1(e.index) => {
                    Some(crate::vapic_base::guest_view(cpu))
                }
                MsrClass::L0Owned => crate::exits::emulated_rdmsr(e.index),
                MsrClass::Mtrr => crate::vmtrr::read(cpu, e.index),
                MsrClass::Passthrough => shared::safe_msr::rdmsr(e.index),
            };
            let value = value.ok_or(MsrAreaFailure::Refused)?;
            msr_area::store_data(mem, addr, i, value).map_err(MsrAreaFailure::Memory)
        },
    )
}

/// Emulates VMCS12's VM-exit MSR-load area into L1's state (`vmcs01`,
/// current).
pub fn exit_load(
    cpu: usize,
    vmcs12: &impl VmcsAccess,
    vmcs01: &mut dyn VmcsAccess,
) -> Result<(), MsrAreaError> {
    let count = vmcs12.read32(F::VmExitMsrLoadCount);
    let addr = vmcs12.read(F::VmExitMsrLoadAddress);
    let mut unused = FieldLoads::new();
    let mut efer = EferState {
        paging: vmcs01.read(F::Cr0ReadShadow) & (1 << 31) != 0,
        efer: vmcs01.read(F::GuestIa32Efer),
    };
    msr_area::process_area(
        &mut GuestMemory,
        AreaKind::ExitLoad,
        addr,
        count,
        max_entries(),
        |_, _, e| {
            load_one(
                cpu,
                e.index,
                e.data,
                &mut efer,
                &mut unused,
                Some(&mut *vmcs01),
            )
        },
    )
}
