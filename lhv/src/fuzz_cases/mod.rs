//! The pure side of LHV's differential VMCS fuzzer (`mode=fuzz`): the
//! seeded PRNG ([`rng`]), what may be mutated ([`profile`]), the mutation
//! engine ([`mutate`]) and the outcome lines with their digest
//! ([`outcome`]). The kernel side (`src/fuzz/`) applies a plan to a fresh
//! VMCS, enters, and prints the outcome.

pub mod mutate;
pub mod outcome;
pub mod profile;
pub mod rng;

#[cfg(test)]
mod tests {
    use shared::vmx::VmcsField as F;

    use super::mutate::{self, MAX_ENTRY_LOAD, Plan};
    use super::profile::{Ctl, Pages, Profile, RESERVED, TARGET};
    use super::rng::SplitMix64;

    /// Bochs's corei7_skylake_x capabilities (bochs.md, TRUE MSRs).
    fn bochs() -> Profile {
        Profile::new(
            [
                Ctl {
                    must1: 0x16,
                    may1: 0x7f,
                },
                Ctl {
                    must1: 0x0400_6172,
                    may1: 0xf7f9_fffe,
                },
                Ctl {
                    must1: 0,
                    may1: 0x0217_7fff,
                },
                Ctl {
                    must1: 0x0003_6dfb,
                    may1: 0x007f_ffff,
                },
                Ctl {
                    must1: 0x11fb,
                    may1: 0xffff,
                },
            ],
            39,
            48,
            512,
            true,
            0x0037_27ff,
            0x2b,
        )
    }

    fn pages() -> Pages {
        let p = |n: u64| 0x10_0000 + n * 0x1000;
        Pages {
            entry_load: p(0),
            exit_store: p(1),
            exit_load: p(2),
            io_a: p(3),
            io_b: p(4),
            msr_bitmap: p(5),
            virtual_apic: p(6),
            apic_access: p(7),
            vmread_bitmap: p(8),
            vmwrite_bitmap: p(9),
            link_zero: p(10),
            link_vmcs: p(11),
            link_shadow: p(12),
            idt: p(13),
        }
    }

    /// A plausible base VMCS12 (what LHV's bring-up writes).
    fn base(f: F) -> u64 {
        match f {
            F::PinBasedVmExecControls => 0x17,
            F::PrimaryProcBasedVmExecControls => 0x1400_6172,
            F::VmExitControls => 0x003f_ee00 | 0x36dfb,
            F::VmEntryControls => 0xc3fb,
            F::GuestRflags => 2,
            F::GuestIa32Efer | F::HostIa32Efer => 0xd01,
            F::GuestCr0 | F::HostCr0 => 0x8001_0033,
            F::GuestCr4 | F::HostCr4 => 0x20a0,
            F::VmcsLinkPointer => u64::MAX,
            F::ExceptionBitmap => 0xffff_ffff,
            _ => 0,
        }
    }

    fn plans(n: u64) -> impl Iterator<Item = Plan> {
        let (p, pg) = (bochs(), pages());
        (0..n).map(move |c| mutate::plan(SplitMix64::for_case(42, c), &p, &pg, &base))
    }

    fn get(p: &Plan, f: F) -> u64 {
        p.get(f).unwrap_or_else(|| base(f))
    }

    #[test]
    fn the_same_seed_and_case_give_the_same_plan() {
        let (p, pg) = (bochs(), pages());
        for c in 0..200 {
            let a = mutate::plan(SplitMix64::for_case(9, c), &p, &pg, &base);
            let b = mutate::plan(SplitMix64::for_case(9, c), &p, &pg, &base);
            assert_eq!(a.writes(), b.writes());
            assert_eq!(a.entry_load, b.entry_load);
        }
    }

    #[test]
    fn every_case_mutates_something_and_classes_are_all_reached() {
        let mut seen = std::collections::BTreeSet::new();
        for p in plans(5000) {
            for (f, _) in p.writes() {
                seen.insert(f.encoding());
            }
        }
        for f in [
            F::PinBasedVmExecControls,
            F::GuestCr0,
            F::GuestRflags,
            F::GuestTrAccessRights,
            F::GuestActivityState,
            F::VmEntryInterruptionInfo,
            F::VmEntryMsrLoadCount,
            F::VmExitMsrStoreAddress,
            F::VmcsLinkPointer,
            F::VmxPreemptionTimerValue,
            F::HostCr3,
            F::IoBitmapAAddress,
        ] {
            assert!(seen.contains(&f.encoding()), "{}", f.name());
        }
    }

    #[test]
    fn never_makes_the_cases_without_one_outcome() {
        for p in plans(20_000) {
            let activity = get(&p, F::GuestActivityState);
            assert!(!matches!(activity, 2 | 3), "shutdown / wait-for-SIPI");
            let info = get(&p, F::VmEntryInterruptionInfo);
            let injects = info >> 31 == 1;
            let ty = (info >> 8) & 7;
            if activity == 1 {
                let v = info & 0xff;
                assert!(
                    injects && (ty == 0 || ty == 2 || (ty == 3 && (v == 1 || v == 18))),
                    "HLT with an event it cannot take: {info:#x}"
                );
            }
            assert_eq!(get(&p, F::GuestPendingDebugExceptions) >> 32, 0);
            assert_eq!(get(&p, F::GuestIa32Debugctl) & !3, 0);
            assert_eq!(get(&p, F::GuestDr7) >> 32, 0, "DR7 63:32");
            assert!(p.entry_load.iter().all(|e| e.index != 0x9e), "SMBASE");
            assert!((1..=4).contains(&p.mutations));
            assert_eq!(get(&p, F::GuestRflags) & (1 << 8), 0, "TF");
            assert!(p.get(F::GuestRip).is_none(), "RIP");
            assert_eq!(get(&p, F::GuestPendingDebugExceptions) & (1 << 14), 0, "BS");
            let int = get(&p, F::GuestInterruptibilityState);
            if injects && ty == 2 {
                assert_eq!(int & 1, 0, "NMI with STI blocking");
                if get(&p, F::PinBasedVmExecControls) & (1 << 5) != 0 {
                    assert_eq!(int & 8, 0, "NMI with NMI blocking, virtual NMIs");
                }
            }
            assert!(get(&p, F::VmEntryMsrLoadCount) <= MAX_ENTRY_LOAD as u64);
            assert_eq!(get(&p, F::GuestIa32Efer) & (1 << 11), 1 << 11, "NXE kept");
            for e in p.entry_load {
                if e.index == mutate::msr::EFER {
                    assert_eq!(e.value & (1 << 11), 1 << 11, "NXE kept");
                    assert_eq!(e.value & (1 << 10), 1 << 10, "LMA kept");
                }
            }
            for e in p.exit_load {
                assert_eq!(e.reserved, 0);
                assert!(matches!(
                    e.index,
                    0 | mutate::msr::SYSENTER_CS | mutate::msr::KERNEL_GS_BASE
                ));
            }
            // Bits Bochs allows outside the target (perf-global-ctrl
            // loads, what L0 does not offer) are never set.
            for (f, i) in [
                (F::PinBasedVmExecControls, 0),
                (F::PrimaryProcBasedVmExecControls, 1),
                (F::SecondaryProcBasedVmExecControls, 2),
                (F::VmExitControls, 3),
                (F::VmEntryControls, 4),
            ] {
                let outside = !RESERVED[i] & !TARGET[i] & !bochs().ctl[i].must1;
                assert_eq!(get(&p, f) & u64::from(outside), 0, "{}", f.name());
            }
        }
    }

    #[test]
    fn addresses_are_lhvs_pages_or_invalid() {
        let pg = pages();
        let own = [
            pg.entry_load,
            pg.exit_store,
            pg.exit_load,
            pg.io_a,
            pg.io_b,
            pg.msr_bitmap,
            pg.virtual_apic,
            pg.apic_access,
            pg.vmread_bitmap,
            pg.vmwrite_bitmap,
            pg.link_vmcs,
        ];
        for p in plans(20_000) {
            for f in [
                F::VmEntryMsrLoadAddress,
                F::VmExitMsrStoreAddress,
                F::VmExitMsrLoadAddress,
                F::IoBitmapAAddress,
                F::IoBitmapBAddress,
                F::MsrBitmapAddress,
                F::VirtualApicAddress,
                F::ApicAccessAddress,
                F::VmreadBitmapAddress,
                F::VmwriteBitmapAddress,
            ] {
                let Some(a) = p.get(f) else { continue };
                let ok = own.contains(&a)
                    || a >= 1 << 39
                    || (own.contains(&(a & !0xfff)) && a & 0xfff != 0);
                assert!(ok, "{} = {a:#x}", f.name());
            }
            for f in [F::GuestCr3, F::GuestIdtrBase] {
                if let Some(v) = p.get(f) {
                    assert!(v >> 39 != 0 || v >> 47 != 0, "{} = {v:#x}", f.name());
                }
            }
        }
    }

    #[test]
    fn the_profile_narrows_controls_to_the_target() {
        let p = bochs();
        assert_eq!(p.ctl[2].may1 & (1 << 1), 0, "EPT");
        assert_eq!(p.ctl[4].may1 & (1 << 13), 0, "entry perf global ctrl");
        assert_eq!(p.ctl[2].may1 & (1 << 5), 0, "VPID");
        assert_ne!(p.ctl[2].may1 & (1 << 3), 0, "RDTSCP");
        assert_eq!(p.ctl[1].may1 & (1 << 21), 0, "TPR shadow");
        assert!(
            p.to_string().starts_with(
                "pin=00000016/0000007f proc=04006172/f7d9fffe proc2=00000000/0011184c"
            )
        );
    }
}
