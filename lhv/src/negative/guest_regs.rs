//! SDM 27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and
//! MSRs", 27.3.1.3 "Checks on Guest Descriptor-Table Registers" and
//! 27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP". Every failure is a
//! VM-entry failure, exit reason 33, qualification 0.

use lhv::negative_cases::{Outcome, Skip, non_canonical};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::EntryControls;

use super::{Case, Env, Group};

const CR0_PE: u64 = 1 << 0;
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const EFER_LMA: u64 = 1 << 10;
const RFLAGS_FIXED1: u64 = 1 << 1;
const RFLAGS_BIT15: u64 = 1 << 15;
const RFLAGS_VM: u64 = 1 << 17;

const FAIL: Outcome = Outcome::guest_state(lhv::negative_cases::entry_qual::DEFAULT);

fn guest_cr0_pg_without_pe(e: &mut Env) {
    // Without unrestricted guest, PE and PG are fixed to 1 (SDM 27.3.1.1).
    e.clear_bits(F::GuestCr0, CR0_PE);
}

fn guest_cr4_without_vmxe(e: &mut Env) {
    e.clear_bits(F::GuestCr4, CR4_VMXE);
}

fn ia32e_guest_cr4_pae_0(e: &mut Env) {
    e.clear_bits(F::GuestCr4, CR4_PAE);
}

fn guest_cr3_beyond_width(e: &mut Env) {
    let far = lhv::negative_cases::beyond_phys_width(e.max_phys);
    e.write(F::GuestCr3, far);
}

fn load_efer_lma_mismatch(e: &mut Env) {
    // Load IA32_EFER is a base control; LMA must equal "IA-32e mode guest".
    e.clear_bits(F::GuestIa32Efer, EFER_LMA);
}

fn load_efer_reserved_bit(e: &mut Env) {
    // Bit 9 of IA32_EFER is reserved.
    e.set_bits(F::GuestIa32Efer, 1 << 9);
}

fn load_pat_reserved_type(e: &mut Env) {
    let pat = e.read(F::GuestIa32Pat);
    e.write(F::GuestIa32Pat, (pat & !0xff) | 3);
}

fn dr7_high_bits(e: &mut Env) {
    e.set_bits(
        F::VmEntryControls,
        EntryControls::LOAD_DEBUG_CONTROLS.bits().into(),
    );
    e.write(F::GuestIa32Debugctl, 0);
    e.write(F::GuestDr7, (1 << 32) | 0x400);
}

fn dr7_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.allows(
        F::VmEntryControls,
        EntryControls::LOAD_DEBUG_CONTROLS.bits(),
    ) {
        Ok(FAIL)
    } else {
        Err(Skip::Unsupported("no load-debug-controls entry control"))
    }
}

fn sysenter_esp_non_canonical(e: &mut Env) {
    let v = non_canonical(e.linear_width);
    e.write(F::GuestIa32SysenterEsp, v);
}

pub const CR_GROUP: Group = Group {
    section: "27.3.1.1 guest control registers, debug registers, MSRs",
    cases: &[
        Case::launch("guest-cr0-pe-clear", guest_cr0_pg_without_pe, FAIL),
        Case::launch("guest-cr4-without-vmxe", guest_cr4_without_vmxe, FAIL),
        Case::launch("ia32e-guest-cr4-pae-0", ia32e_guest_cr4_pae_0, FAIL),
        Case::launch("guest-cr3-beyond-width", guest_cr3_beyond_width, FAIL),
        Case::launch("load-efer-lma-mismatch", load_efer_lma_mismatch, FAIL),
        Case::launch("load-efer-reserved-bit", load_efer_reserved_bit, FAIL),
        Case::launch("load-pat-reserved-type", load_pat_reserved_type, FAIL),
        Case::launch_if("load-debug-dr7-high-bits", dr7_high_bits, dr7_rule),
        Case::launch(
            "guest-sysenter-esp-non-canonical",
            sysenter_esp_non_canonical,
            FAIL,
        ),
    ],
};

fn gdtr_limit_above_ffff(e: &mut Env) {
    e.write(F::GuestGdtrLimit, 0x1_0000);
}

fn idtr_base_non_canonical(e: &mut Env) {
    let v = non_canonical(e.linear_width);
    e.write(F::GuestIdtrBase, v);
}

pub const TABLES_GROUP: Group = Group {
    section: "27.3.1.3 guest descriptor-table registers",
    cases: &[
        Case::launch("gdtr-limit-above-ffff", gdtr_limit_above_ffff, FAIL),
        Case::launch("idtr-base-non-canonical", idtr_base_non_canonical, FAIL),
    ],
};

fn rip_non_canonical(e: &mut Env) {
    let v = non_canonical(e.linear_width);
    e.write(F::GuestRip, v);
}

fn rip_rule(e: &Env) -> Result<Outcome, Skip> {
    if e.bochs_skips() {
        return Err(Skip::Bochs(
            "does not check that guest RIP is canonical in 64-bit mode (it enters and faults)",
        ));
    }
    Ok(FAIL)
}

fn rflags_bit1_clear(e: &mut Env) {
    e.clear_bits(F::GuestRflags, RFLAGS_FIXED1);
}

fn rflags_bit15_set(e: &mut Env) {
    e.set_bits(F::GuestRflags, RFLAGS_BIT15);
}

fn rflags_vm_in_ia32e(e: &mut Env) {
    e.set_bits(F::GuestRflags, RFLAGS_VM);
}

pub const RIP_GROUP: Group = Group {
    section: "27.3.1.4 guest RIP and RFLAGS",
    cases: &[
        Case::launch_if("rip-non-canonical-64bit", rip_non_canonical, rip_rule),
        Case::launch("rflags-bit1-clear", rflags_bit1_clear, FAIL),
        Case::launch("rflags-bit15-set", rflags_bit15_set, FAIL),
        Case::launch("rflags-vm-in-ia32e-mode", rflags_vm_in_ia32e, FAIL),
    ],
};
