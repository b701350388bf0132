//! The property that ties VM-entry checking to VMCS02 preparation: a
//! VMCS12 that L0's checks accept (over L1's capabilities) yields a VMCS02
//! that the same checks accept over the hardware's, so the processor never
//! refuses what L0 let through (issue 8's acceptance).

use super::*;
use crate::vmx::MemVmcs;
use crate::vmx::caps::tests::BOCHS;
use crate::vmx::nested::entry_checks::{check_all, testing};
use proptest::prelude::*;

fn hw_caps() -> VmxCaps {
    VmxCaps::read(|m| BOCHS.iter().find(|&&(i, _)| i == m).map_or(0, |&(_, v)| v))
}

/// What L0 adds on Bochs: NMI exiting and virtual NMIs, EPT (EPT01:
/// write-back, 4-level) and VPID, its own bitmaps, the CR bits fixed in VMX
/// operation.
fn l0_part(hw: &VmxCaps, unrestricted: bool) -> L0Part {
    let pe_pg = (1 << 0) | (1 << 31);
    L0Part {
        pin: (PinBased::NMI_EXITING | PinBased::VIRTUAL_NMIS).bits(),
        proc2: (SecondaryProcBased::ENABLE_EPT | SecondaryProcBased::ENABLE_VPID).bits(),
        eptp: testing::EPT_ROOT | (3 << 3) | 6,
        vpid: 65,
        msr_bitmap: testing::MSR_BITMAP,
        io_bitmaps: (testing::IO_BITMAP_A, testing::IO_BITMAP_B),
        tsc_offset: 0,
        cr0_fixed_mask: (hw.cr0_fixed0 | !hw.cr0_fixed1)
            & 0xffff_ffff
            & if unrestricted { !pe_pg } else { !0 },
        cr4_fixed_mask: (hw.cr4_fixed0 | !hw.cr4_fixed1) & 0xffff_ffff,
        pdptes: None,
    }
}

/// VMCS02's host state is L0's: here the (valid) host state of the
/// fixture.
fn vmcs02_for(v12: &MemVmcs, hw: &VmxCaps, unrestricted: bool) -> MemVmcs {
    let mut v02 = MemVmcs::new();
    for (f, x) in v12.iter().filter(|(f, _)| f.group() == FieldGroup::Host) {
        v02.write(f, x);
    }
    let l1 = L1State {
        dr7: 0x400,
        debugctl: 0,
        efer: testing::EFER_64,
        pat: testing::PAT,
    };
    let mut l0 = l0_part(hw, unrestricted);
    if l2_uses_pae_paging(v12) {
        l0.pdptes = Some([testing::PDPTE0, 0, 0, 0]);
    }
    prepare_vmcs02(v12, &l1, &l0, hw, &mut v02);
    for (f, x) in pointers(&l0) {
        v02.write(f, x);
    }
    v02
}

#[test]
fn the_fixtures_pass_both_checks() {
    let hw = hw_caps();
    let mem = testing::memory();
    for (caps, v12, ug) in [
        (
            testing::core_caps(),
            testing::valid_vmcs12(&testing::core_caps()),
            false,
        ),
        (
            testing::full_caps(),
            testing::real_mode_vmcs12(&testing::full_caps()),
            true,
        ),
        (
            testing::core_caps(),
            testing::pae_vmcs12(&testing::core_caps()),
            false,
        ),
    ] {
        assert_eq!(check_all(&v12, &testing::ctx(&caps, &mem)), Ok(()));
        let v02 = vmcs02_for(&v12, &hw, ug);
        assert_eq!(check_all(&v02, &testing::ctx(&hw, &mem)), Ok(()));
    }
}

/// Values a mutation writes: the common edge cases and a random one.
fn value(choice: u8, old: u64, random: u64, bit: u32) -> u64 {
    match choice % 6 {
        0 => 0,
        1 => u64::MAX,
        2 => old ^ (1 << (bit % 64)),
        3 => old | (1 << (bit % 64)),
        4 => old & !(1 << (bit % 64)),
        _ => random,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn accepted_vmcs12_gives_accepted_vmcs02(
        muts in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u64>(), any::<u32>()), 1..4),
        which in 0u8..3,
    ) {
        let hw = hw_caps();
        let mem = testing::memory();
        let (caps, mut v12, ug) = match which {
            0 => (testing::core_caps(), testing::valid_vmcs12(&testing::core_caps()), false),
            1 => (testing::full_caps(), testing::real_mode_vmcs12(&testing::full_caps()), true),
            _ => (testing::core_caps(), testing::pae_vmcs12(&testing::core_caps()), false),
        };
        for (i, choice, random, bit) in muts {
            let f = crate::vmx::VmcsField::ALL[i % crate::vmx::VmcsField::COUNT];
            // L0 does not take VMCS02's host state from VMCS12.
            if f.group() == FieldGroup::Host {
                continue;
            }
            v12.write(f, value(choice, v12.read(f), random, bit));
        }
        if check_all(&v12, &testing::ctx(&caps, &mem)).is_ok() {
            let v02 = vmcs02_for(&v12, &hw, ug);
            prop_assert_eq!(check_all(&v02, &testing::ctx(&hw, &mem)), Ok(()));
        }
    }
}
