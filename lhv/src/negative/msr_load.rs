//! SDM 27.4 "Loading MSRs": the VM-entry MSR-load area. An entry that
//! cannot be loaded makes the VM entry fail with exit reason 34 and the
//! entry's 1-based index as exit qualification; entries before it have
//! been loaded (the suite loads only MSRs the host state restores).

use lhv::negative_cases::{Outcome, Skip, beyond_msr_list_max};
use shared::vmx::VmcsField as F;
use shared::x86::msr;

use super::{Action, Case, Env, Expect, Group, Page};

/// Pages of the MSR areas (contiguous in the image, so physically too).
const AREA_PAGES: usize = 5;
static AREA: [Page; AREA_PAGES] = [const { Page::new() }; AREA_PAGES];
/// Most entries the area holds.
const AREA_ENTRIES: usize = AREA_PAGES * 4096 / 16;

/// IA32_SYSENTER_CS/ESP/EIP: the VM exit reloads them from the host
/// state, so loading them on entry leaves LHV unchanged.
const IA32_SYSENTER_CS: u32 = 0x174;
const IA32_SYSENTER_ESP: u32 = 0x175;
const IA32_SYSENTER_EIP: u32 = 0x176;
/// IA32_LSTAR: not switched by VMX; LHV does not use SYSCALL.
const IA32_LSTAR: u32 = 0xc000_0082;
/// An x2APIC register MSR (TPR): never loadable (SDM 27.4).
const X2APIC_TPR: u32 = 0x808;

/// Physical address of the area.
pub fn area_pa() -> u64 {
    AREA[0].pa()
}

/// Writes entry `i` (index, reserved word, value) of the area.
fn entry(i: usize, index: u32, reserved: u32, value: u64) {
    let (page, slot) = (i * 2 / 512, i * 2 % 512);
    AREA[page].set(slot, u64::from(index) | (u64::from(reserved) << 32));
    AREA[page].set(slot + 1, value);
}

fn clear_area() {
    for p in &AREA {
        p.clear();
    }
}

fn load_list(e: &mut Env, first: usize, count: usize) {
    e.write(F::VmEntryMsrLoadCount, count as u64);
    e.write(F::VmEntryMsrLoadAddress, area_pa() + 16 * first as u64);
}

fn fs_base(e: &mut Env) {
    clear_area();
    entry(0, msr::IA32_FS_BASE, 0, 0);
    load_list(e, 0, 1);
}

/// WRMSR of a non-canonical address to IA32_SYSENTER_ESP raises #GP (SDM
/// Vol. 4, and 27.4: the load fails as WRMSR would). Found by the fuzzer
/// (seed 1, case 486): L0 loaded it into VMCS02 and went on.
fn sysenter_esp_non_canonical(e: &mut Env) {
    clear_area();
    let v = lhv::negative_cases::non_canonical(e.linear_width);
    entry(0, IA32_SYSENTER_ESP, 0, v);
    load_list(e, 0, 1);
}

/// The same for IA32_LSTAR, an MSR VMX does not switch: L0 passes the
/// WRMSR to the processor (found by the fuzzer, seed 1, case 571: the #GP
/// of that WRMSR stopped L0).
fn lstar_non_canonical(e: &mut Env) {
    clear_area();
    let v = lhv::negative_cases::non_canonical(e.linear_width);
    entry(0, IA32_LSTAR, 0, v);
    load_list(e, 0, 1);
}

/// WRMSR of IA32_EFER that clears LME while paging is on raises #GP (SDM
/// Vol. 3A 2.2.1, 10.8.5), so the load fails. Found by the fuzzer (seed 3,
/// case 17446): L0 put it into VMCS02 and failed the entry as invalid guest
/// state (exit 33) instead.
fn efer_lme_cleared(e: &mut Env) {
    clear_area();
    let efer = e.read(F::GuestIa32Efer);
    entry(0, msr::IA32_EFER, 0, efer & !(1 << 8));
    load_list(e, 0, 1);
}

fn reserved_bits(e: &mut Env) {
    clear_area();
    entry(0, IA32_SYSENTER_CS, 1, 0);
    load_list(e, 0, 1);
}

fn second_entry_fails(e: &mut Env) {
    clear_area();
    entry(0, IA32_SYSENTER_CS, 0, 0);
    entry(1, X2APIC_TPR, 0, 0);
    load_list(e, 0, 2);
}

/// Values the page-crossing list loads (canonical, unused by LHV: the VM
/// exit reloads both from the host state).
const CROSS_ESP: u64 = 0x0000_1234_5678_9000;
const CROSS_EIP: u64 = 0x0000_7654_3210_f000;

/// Entries 255 and 256 (the last 16 bytes of the first page and the first
/// 16 of the second) load IA32_SYSENTER_ESP/EIP; the VM-exit MSR-store
/// area (in the third page) stores them back at the VMCALL exit, which
/// shows both were loaded.
fn crosses_page(e: &mut Env) -> Outcome {
    clear_area();
    entry(255, IA32_SYSENTER_ESP, 0, CROSS_ESP);
    entry(256, IA32_SYSENTER_EIP, 0, CROSS_EIP);
    load_list(e, 255, 2);
    entry(512, IA32_SYSENTER_ESP, 0, 0);
    entry(513, IA32_SYSENTER_EIP, 0, 0);
    e.write(F::VmExitMsrStoreCount, 2);
    e.write(F::VmExitMsrStoreAddress, AREA[2].pa());
    match e.launch() {
        Outcome::Success => {}
        other => return other,
    }
    for (slot, expected) in [(1, CROSS_ESP), (3, CROSS_EIP)] {
        let got = AREA[2].get(slot);
        if got != expected {
            return Outcome::WrongValue { expected, got };
        }
    }
    Outcome::Success
}

fn max_entries(e: &Env) -> usize {
    e.caps.misc.max_msr_list as usize
}

fn beyond_max(e: &mut Env) {
    clear_area();
    let n = beyond_msr_list_max(max_entries(e) as u32) as usize;
    for i in 0..n.min(AREA_ENTRIES) {
        entry(i, IA32_SYSENTER_CS, 0, 0);
    }
    load_list(e, 0, n);
}

fn beyond_max_rule(e: &Env) -> Result<Outcome, Skip> {
    let n = beyond_msr_list_max(max_entries(e) as u32);
    if n as usize > AREA_ENTRIES {
        return Err(Skip::Unsupported(
            "IA32_VMX_MISC's maximum exceeds the suite's area",
        ));
    }
    if e.bochs_skips() {
        return Err(Skip::Bochs(
            "loads lists longer than IA32_VMX_MISC's recommended maximum (SDM A.6: undefined; the project expects KVM's exit 34)",
        ));
    }
    Ok(Outcome::msr_loading(n.into()))
}

pub const GROUP: Group = Group {
    section: "27.4 loading MSRs",
    cases: &[
        Case::launch("msr-load-fs-base", fs_base, Outcome::msr_loading(1)),
        Case::launch(
            "msr-load-sysenter-esp-non-canonical",
            sysenter_esp_non_canonical,
            Outcome::msr_loading(1),
        ),
        Case::launch(
            "msr-load-lstar-non-canonical",
            lstar_non_canonical,
            Outcome::msr_loading(1),
        ),
        Case::launch(
            "msr-load-efer-lme-cleared",
            efer_lme_cleared,
            Outcome::msr_loading(1),
        ),
        Case::launch(
            "msr-load-reserved-bits",
            reserved_bits,
            Outcome::msr_loading(1),
        ),
        Case::launch(
            "msr-load-second-entry-x2apic",
            second_entry_fails,
            Outcome::msr_loading(2),
        ),
        Case {
            name: "msr-load-crosses-page",
            action: Action::Fresh(crosses_page),
            expect: Expect::Is(Outcome::Success),
        },
        Case::launch_if("msr-load-beyond-max-count", beyond_max, beyond_max_rule),
    ],
};
