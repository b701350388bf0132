//! SDM 27.3.1.2 "Checks on Guest Segment Registers": access rights of CS
//! and SS, TR and LDTR, and the unusable bit (an unusable data segment is
//! not checked; FS's base must be canonical even then). Failures are a
//! VM-entry failure, exit reason 33, qualification 0.

use lhv::negative_cases::{Outcome, non_canonical};
use shared::vmx::VmcsField as F;

use super::{Case, Env, Group};

const FAIL: Outcome = Outcome::guest_state(lhv::negative_cases::entry_qual::DEFAULT);
/// Access rights bit 16: unusable.
const AR_UNUSABLE: u64 = 1 << 16;
/// Data read/write accessed, present, DPL 0, 64-bit flags (L = 1, G = 1):
/// not a code type, so not valid for CS.
const AR_DATA_AS_CS: u64 = 0xa093;
/// SS: data read/write accessed, present, DPL 3, D/B, G.
const AR_DATA_DPL3: u64 = 0xc0f3;
/// LDT, present.
const AR_LDT: u64 = 0x82;

fn cs_type_data(e: &mut Env) {
    e.write(F::GuestCsAccessRights, AR_DATA_AS_CS);
}

fn ss_dpl_not_cs_dpl(e: &mut Env) {
    e.write(F::GuestSsAccessRights, AR_DATA_DPL3);
}

fn cs_not_present(e: &mut Env) {
    e.clear_bits(F::GuestCsAccessRights, 1 << 7);
}

fn cs_reserved_ar_bits(e: &mut Env) {
    // Bits 11:8 are reserved.
    e.set_bits(F::GuestCsAccessRights, 1 << 8);
}

fn cs_l_and_d(e: &mut Env) {
    // In IA-32e mode CS.L = 1 requires CS.D = 0.
    e.set_bits(F::GuestCsAccessRights, 1 << 14);
}

fn ss_type_code(e: &mut Env) {
    // Type 11 (execute/read code) is not a valid SS type.
    e.write(F::GuestSsAccessRights, 0xc09b);
}

fn ds_not_accessed(e: &mut Env) {
    // A usable data segment must be accessed (type bit 0).
    e.clear_bits(F::GuestDsAccessRights, 1);
}

fn tr_unusable(e: &mut Env) {
    e.set_bits(F::GuestTrAccessRights, AR_UNUSABLE);
}

fn tr_ti_set(e: &mut Env) {
    e.set_bits(F::GuestTrSelector, 4);
}

fn ldtr_ti_set(e: &mut Env) {
    e.write(F::GuestLdtrSelector, 4);
    e.write(F::GuestLdtrBase, 0);
    e.write(F::GuestLdtrLimit, 0);
    e.write(F::GuestLdtrAccessRights, AR_LDT);
}

fn unusable_ds_not_checked(e: &mut Env) {
    // Not present, type 0, S = 0, a base above 4 GiB and a limit that fits
    // no granularity: every check is waived for an unusable DS.
    e.write(F::GuestDsAccessRights, AR_UNUSABLE);
    e.write(F::GuestDsBase, 0x0000_dead_0000_0000);
    e.write(F::GuestDsLimit, 0x1234_5678);
}

fn unusable_fs_base_non_canonical(e: &mut Env) {
    e.write(F::GuestFsAccessRights, AR_UNUSABLE);
    let v = non_canonical(e.linear_width);
    e.write(F::GuestFsBase, v);
}

fn limit_granularity_mismatch(e: &mut Env) {
    // G = 1 (AR_DATA) needs limit bits 11:0 all ones.
    e.write(F::GuestDsLimit, 0xffff_f000);
}

pub const GROUP: Group = Group {
    section: "27.3.1.2 guest segment registers",
    cases: &[
        Case::launch("cs-type-data", cs_type_data, FAIL),
        Case::launch("cs-not-present", cs_not_present, FAIL),
        Case::launch("cs-reserved-ar-bits", cs_reserved_ar_bits, FAIL),
        Case::launch("cs-l-and-d-set", cs_l_and_d, FAIL),
        Case::launch("ss-dpl-not-cs-dpl", ss_dpl_not_cs_dpl, FAIL),
        Case::launch("ss-type-code", ss_type_code, FAIL),
        Case::launch("ds-not-accessed", ds_not_accessed, FAIL),
        Case::launch(
            "ds-limit-granularity-mismatch",
            limit_granularity_mismatch,
            FAIL,
        ),
        Case::launch("tr-unusable", tr_unusable, FAIL),
        Case::launch("tr-ti-set", tr_ti_set, FAIL),
        Case::launch("ldtr-ti-set", ldtr_ti_set, FAIL),
        Case::launch(
            "unusable-ds-not-checked",
            unusable_ds_not_checked,
            Outcome::Success,
        ),
        Case::launch(
            "unusable-fs-base-non-canonical",
            unusable_fs_base_non_canonical,
            FAIL,
        ),
    ],
};
