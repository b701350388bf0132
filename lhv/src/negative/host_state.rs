//! SDM 27.2.2 "Checks on Host Control Registers, MSRs, and SSP", 27.2.3
//! "Checks on Host Segment and Descriptor-Table Registers", 27.2.4
//! "Checks Related to Address-Space Size". Every failure is
//! VMfailValid(8).

use lhv::negative_cases::{Outcome, non_canonical};
use shared::vmx::VmcsField as F;
use shared::vmx::controls::ExitControls;

use super::{Case, Env, Group};

const CR0_PE: u64 = 1 << 0;
const CR0_PG: u64 = 1 << 31;
const CR4_VMXE: u64 = 1 << 13;

fn host_cr0_without_pe(e: &mut Env) {
    e.clear_bits(F::HostCr0, CR0_PE);
}

fn host_cr0_without_pg(e: &mut Env) {
    e.clear_bits(F::HostCr0, CR0_PG);
}

fn host_cr4_without_vmxe(e: &mut Env) {
    e.clear_bits(F::HostCr4, CR4_VMXE);
}

fn host_fs_base_non_canonical(e: &mut Env) {
    let v = non_canonical(e.linear_width);
    e.write(F::HostFsBase, v);
}

fn host_cs_selector_0(e: &mut Env) {
    e.write(F::HostCsSelector, 0);
}

fn host_tr_selector_0(e: &mut Env) {
    e.write(F::HostTrSelector, 0);
}

fn host_ss_rpl_3(e: &mut Env) {
    e.set_bits(F::HostSsSelector, 3);
}

fn host_ds_ti_set(e: &mut Env) {
    e.set_bits(F::HostDsSelector, 4);
}

fn host_rip_non_canonical(e: &mut Env) {
    let v = non_canonical(e.linear_width);
    e.write(F::HostRip, v);
}

fn host_address_space_size_off(e: &mut Env) {
    // LHV runs in IA-32e mode: the control must be 1 (SDM 27.2.4).
    e.clear_bits(
        F::VmExitControls,
        ExitControls::HOST_ADDRESS_SPACE_SIZE.bits().into(),
    );
}

fn host_efer_lma_clear(e: &mut Env) {
    // Load IA32_EFER on exit is a base control: LMA and LME must equal
    // "host address-space size" (1).
    e.clear_bits(F::HostIa32Efer, 1 << 10);
}

fn host_pat_reserved_type(e: &mut Env) {
    // Memory type 2 in PAT entry 0 is reserved.
    let pat = e.read(F::HostIa32Pat);
    e.write(F::HostIa32Pat, (pat & !0xff) | 2);
}

pub const GROUP: Group = Group {
    section: "27.2.2-27.2.4 host-state area",
    cases: &[
        Case::launch(
            "host-cr0-without-pe",
            host_cr0_without_pe,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-cr0-without-pg",
            host_cr0_without_pg,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-cr4-without-vmxe",
            host_cr4_without_vmxe,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-fs-base-non-canonical",
            host_fs_base_non_canonical,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-cs-selector-0",
            host_cs_selector_0,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-tr-selector-0",
            host_tr_selector_0,
            Outcome::HOST_STATE,
        ),
        Case::launch("host-ss-rpl-3", host_ss_rpl_3, Outcome::HOST_STATE),
        Case::launch("host-ds-ti-set", host_ds_ti_set, Outcome::HOST_STATE),
        Case::launch(
            "host-rip-non-canonical",
            host_rip_non_canonical,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-address-space-size-off",
            host_address_space_size_off,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-efer-lma-clear",
            host_efer_lma_clear,
            Outcome::HOST_STATE,
        ),
        Case::launch(
            "host-pat-reserved-type",
            host_pat_reserved_type,
            Outcome::HOST_STATE,
        ),
    ],
};
