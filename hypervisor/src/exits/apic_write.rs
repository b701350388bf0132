//! Guest writes to its xAPIC page (EPT violations on the page EPT01 maps
//! without write access, see `ept01::set_apic_page`).
//!
//! L0 decodes the instruction (`shared::store_insn`: MOV m32, r32, MOV
//! m32, imm32, MOVNTI, XCHG and STOSD, with any addressing form and
//! segment overrides), performs the
//! write on the real APIC itself and moves the guest past the instruction:
//! one exit per write. The exceptions are the ICR's low half, whose write
//! sends an IPI (an INIT is emulated instead, see `guest_smp`; the INIT
//! level de-assert is dropped; everything else is sent unchanged), and the
//! LDR and DFR, which L0 records for logical-destination matching.
//!
//! An instruction L0 cannot decode (or fetch), and a write that is not the
//! instruction's own data write (event delivery, paging-structure
//! updates), is single-stepped instead with this CPU's private view of the
//! page naming its scratch page (`ept01::open_apic_step`; the shared EPT01
//! never lets a write through, so no other CPU's write can pass meanwhile);
//! after the step's #DB, L0 performs the register writes it finds there
//! ([`perform_captured`], `shared::apic_capture`) exactly as for a decoded
//! store: an INIT is emulated whatever instruction wrote it. Logged once.

use core::sync::atomic::{AtomicBool, Ordering};

use shared::apic::ApicMode;
use shared::apic_capture;
use shared::guest_paging::{self, PagingMode};
use shared::ipi::{self, IcrAction};
use shared::mem::PhysMemory;
use shared::store_insn::{self, CodeSize, Effect, Source, Store};
use shared::vmx::exit::{EptViolationQual, InterruptionInfo};
use shared::vmx::{VmcsAccess, VmcsField as F};

use super::{Exit, single_step};
use crate::lapic::{self, reg};
use crate::memory::GuestMemory;
use crate::vcpu::{Resume, StepKind, Vcpu};
use crate::vmcs01::efer;

static FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// CS access rights: L (64-bit code) and D/B (32-bit default size).
const CS_L: u64 = 1 << 13;
const CS_DB: u64 = 1 << 14;

pub fn handle(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, exit: &Exit, gpa: u64) -> Option<Resume> {
    if let Some(r) = emulate(vcpu, v, exit, gpa, &GuestMemory) {
        return Some(r);
    }
    if !FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
        shared::cpu_println!(
            "APIC write at {gpa:#x} by an instruction L0 does not decode (RIP {:#x}): single-stepped into a scratch page, then performed (logged once)",
            exit.rip
        );
    }
    let from = single_step::step_from(vcpu, v);
    single_step::start(vcpu, v, StepKind::ApicWrite { gpa, from });
    Some(Resume::Guest)
}

/// Emulates the write at `gpa` (this CPU's xAPIC page, as the guest of the
/// current VMCS sees it physically: L1's for VMCS01 and for an L2 without
/// EPT, L2's through EPT12 otherwise) of the guest's current instruction,
/// read through `mem`, the guest's physical memory. `None` if it is not an
/// instruction L0 decodes, or not the instruction's own write: the caller
/// then single-steps it.
pub fn emulate(
    vcpu: &mut Vcpu,
    v: &mut impl VmcsAccess,
    exit: &Exit,
    gpa: u64,
    mem: &impl PhysMemory,
) -> Option<Resume> {
    // Only the instruction's own data write is emulated: not a write done
    // while delivering an event (IDT-vectoring information valid: a stack
    // or IDT in the APIC page), nor one to a guest paging-structure entry
    // (A/D bits; qualification bit 8 clear, SDM Table 28-7).
    let own_write = !InterruptionInfo(v.read32(F::IdtVectoringInfo)).is_valid()
        && EptViolationQual(exit.qualification).gla_is_translation() == Some(true);
    if !own_write || gpa & 3 != 0 || gpa & 0xfff > 0xffc {
        return None;
    }
    let store = fetch_store(v, exit.rip, mem)?;
    let value = match store.source {
        Source::Reg(n) => vcpu.gpr(v, usize::from(n)) as u32,
        Source::Imm(i) => i,
    };
    // XCHG reads the register before it writes it.
    let old = matches!(store.effect, Effect::LoadOld(_)).then(|| lapic::mmio_read(gpa));
    // Past the instruction first (with its other effects): a self-INIT
    // below replaces the state.
    super::skip_instruction(
        v,
        &Exit {
            instruction_len: u64::from(store.len),
            ..*exit
        },
    );
    match store.effect {
        Effect::None => {}
        Effect::LoadOld(n) => set_gpr(vcpu, v, n, u64::from(old.unwrap_or(0))),
        Effect::AdvanceDi { bits } => {
            const RFLAGS_DF: u64 = 1 << 10;
            let rdi = vcpu.regs.gpr[reg_rdi()];
            let next = if v.read(F::GuestRflags) & RFLAGS_DF != 0 {
                rdi.wrapping_sub(4)
            } else {
                rdi.wrapping_add(4)
            };
            vcpu.regs.gpr[reg_rdi()] = if bits == 64 { next } else { next & 0xffff_ffff };
        }
    }
    perform(vcpu, v, gpa, value);
    Some(Resume::Guest)
}

const fn reg_rdi() -> usize {
    crate::vcpu::reg::RDI
}

/// Writes a 32-bit result to general register `n` (zero-extended, as a
/// 32-bit destination is in 64-bit mode; RSP lives in the VMCS).
fn set_gpr(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, n: u8, value: u64) {
    match usize::from(n) {
        crate::vcpu::reg::RSP => v.write(F::GuestRsp, value),
        n => vcpu.regs.gpr[n & 15] = value,
    }
}

/// The guest's 32-bit store at `rip`, if L0 can decode it (code and
/// paging structures read from `mem`).
fn fetch_store(v: &impl VmcsAccess, rip: u64, mem: &impl PhysMemory) -> Option<Store> {
    let ar = v.read(F::GuestCsAccessRights);
    let lma = v.read(F::GuestIa32Efer) & efer::LMA != 0;
    let code = if lma && ar & CS_L != 0 {
        CodeSize::Bits64
    } else if v.read(F::GuestCr0) & crate::vmcs01::cr0::PE != 0 && ar & CS_DB != 0 {
        CodeSize::Bits32
    } else {
        CodeSize::Bits16
    };
    let linear = match code {
        CodeSize::Bits64 => rip,
        _ => v.read(F::GuestCsBase).wrapping_add(rip) & 0xffff_ffff,
    };
    let mode = PagingMode::from_regs(
        v.read(F::GuestCr0),
        v.read(F::GuestCr4),
        v.read(F::GuestIa32Efer),
    );
    let mut bytes = [0u8; store_insn::MAX_LEN];
    // The instruction may end before a page that is not mapped: try the
    // shortest reads that can hold each form first.
    let cr3 = v.read(F::GuestCr3);
    for len in [store_insn::MAX_LEN, 8, 4] {
        let buf = &mut bytes[..len];
        if guest_paging::read_linear(mem, mode, cr3, linear, buf).is_some()
            && let Some(s) = store_insn::decode(buf, code)
        {
            return Some(s);
        }
    }
    None
}

/// Performs the register writes a single-stepped instruction made to the
/// scratch page that stood for the xAPIC page at `gpa` (the faulting
/// address; `shared::apic_capture` says which), as for a decoded store.
pub fn perform_captured(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, gpa: u64, scratch: &[u8; 4096]) {
    let page = gpa & !0xfff;
    for (offset, value) in apic_capture::captured(scratch, gpa & 0xfff) {
        perform(vcpu, v, page | offset, value);
    }
}

/// Performs the guest's write of `value` at `gpa` in its xAPIC page.
fn perform(vcpu: &mut Vcpu, v: &mut impl VmcsAccess, gpa: u64, value: u32) {
    let page = gpa & !0xfff;
    let is_apic = lapic::mode() == Some(ApicMode::XApic) && lapic::xapic_page() == page;
    if !is_apic {
        // Not this CPU's APIC (x2APIC mode, or the page moved): the write
        // goes where the guest's would have. The page passed
        // `lapic::apic_base_is_safe` when it was trapped.
        lapic::mmio_write(gpa, value);
        return;
    }
    match gpa & 0xfff {
        reg::ICR_LOW => {
            let high = lapic::mmio_read(page + reg::ICR_HIGH);
            let icr = (u64::from(high) << 32) | u64::from(value);
            match ipi::action(icr, ApicMode::XApic) {
                IcrAction::Forward => match crate::guest_smp::is_startup(icr, ApicMode::XApic) {
                    Some(s) => crate::guest_smp::send_startup(vcpu.index, &s, ApicMode::XApic),
                    None => lapic::mmio_write(gpa, value),
                },
                IcrAction::Drop => {}
                IcrAction::Init(icr) => {
                    if crate::guest_smp::send_init(vcpu.index, &icr, ApicMode::XApic) {
                        super::init_self(vcpu, v);
                    }
                }
            }
        }
        reg::LDR => {
            crate::guest_smp::record_logical(vcpu.index, true, value);
            lapic::mmio_write(gpa, value);
        }
        reg::DFR => {
            crate::guest_smp::record_logical(vcpu.index, false, value);
            lapic::mmio_write(gpa, value);
        }
        _ => lapic::mmio_write(gpa, value),
    }
}
