//! A guest's interprocessor interrupts as a hypervisor sees them: the value
//! written to the interrupt command register (ICR) decoded, what the
//! hypervisor does with it, and which local APICs it targets (Intel SDM
//! vol. 3A 11.6.1 "Interrupt Command Register", 11.6.2 "Determining IPI
//! Destination", 11.12.9 "ICR Operation in x2APIC Mode").
//!
//! Pure logic: [`decode`], [`action`] and [`accepts`] never fail on
//! guest-controlled values.

use crate::apic::{
    ApicMode, DeliveryMode, DestinationMode, DestinationShorthand, Icr, Level, TriggerMode,
};

/// x2APIC ICR bits that must be zero: a WRMSR setting any of them raises
/// #GP (SDM 11.12.9: bits 12-13, 16-17 and 20-31 are reserved).
pub const X2APIC_ICR_RESERVED: u64 = 0xFFF3_3000;

/// Decodes an ICR value (xAPIC: destination in bits 63:56; x2APIC: 63:32).
/// `None` for the reserved delivery modes 011b and 111b.
pub fn decode(value: u64, mode: ApicMode) -> Option<Icr> {
    let delivery_mode = match (value >> 8) & 0b111 {
        0b000 => DeliveryMode::Fixed,
        0b001 => DeliveryMode::LowestPriority,
        0b010 => DeliveryMode::Smi,
        0b100 => DeliveryMode::Nmi,
        0b101 => DeliveryMode::Init,
        0b110 => DeliveryMode::StartUp,
        _ => return None,
    };
    let bit = |n: u32| value & (1 << n) != 0;
    Some(Icr {
        vector: value as u8,
        delivery_mode,
        destination_mode: if bit(11) {
            DestinationMode::Logical
        } else {
            DestinationMode::Physical
        },
        level: if bit(14) {
            Level::Assert
        } else {
            Level::Deassert
        },
        trigger_mode: if bit(15) {
            TriggerMode::Level
        } else {
            TriggerMode::Edge
        },
        shorthand: match (value >> 18) & 0b11 {
            0b00 => DestinationShorthand::NoShorthand,
            0b01 => DestinationShorthand::ToSelf,
            0b10 => DestinationShorthand::AllIncludingSelf,
            _ => DestinationShorthand::AllExcludingSelf,
        },
        destination: match mode {
            ApicMode::XApic => (value >> 56) as u32,
            ApicMode::X2Apic => (value >> 32) as u32,
        },
    })
}

/// What a hypervisor that owns INIT does with a guest's ICR write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcrAction {
    /// Write it to the real ICR unchanged (fixed, lowest priority, SMI,
    /// NMI, STARTUP: a STARTUP only reaches processors waiting for one).
    Forward,
    /// An INIT (assert): the hypervisor emulates it; the processor never
    /// sees it.
    Init(Icr),
    /// Nothing happens: the INIT level de-assert (level 0, trigger level;
    /// processors since the
    /// Pentium 4 ignore it, SDM 11.6.1) and the reserved delivery modes.
    Drop,
}

/// The action for `value` written to the ICR in `mode`.
pub fn action(value: u64, mode: ApicMode) -> IcrAction {
    match decode(value, mode) {
        None => IcrAction::Drop,
        // The INIT level de-assert is INIT with level 0 *and* trigger
        // level (SDM 11.6.1, Figure 11-12); processors since the Pentium 4
        // ignore it. Otherwise they issue the level flag as 1 ("has no
        // meaning"): an INIT with level 0 and edge trigger is an INIT.
        Some(icr) if icr.delivery_mode == DeliveryMode::Init => {
            match (icr.level, icr.trigger_mode) {
                (Level::Deassert, TriggerMode::Level) => IcrAction::Drop,
                _ => IcrAction::Init(Icr {
                    level: Level::Assert,
                    ..icr
                }),
            }
        }
        Some(_) => IcrAction::Forward,
    }
}

/// The identity of one local APIC, as destination matching needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApicIdentity {
    /// The APIC ID (8 bits used in xAPIC mode).
    pub apic_id: u32,
    /// The logical destination register (xAPIC: ID in bits 31:24; in
    /// x2APIC mode it is derived from the APIC ID, see [`x2apic_ldr`]).
    pub ldr: u32,
    /// The destination format register (xAPIC: model in bits 31:28,
    /// 1111b flat, 0000b cluster).
    pub dfr: u32,
}

impl ApicIdentity {
    /// An APIC after reset: LDR 0, DFR all ones (flat model).
    pub const fn after_reset(apic_id: u32) -> Self {
        Self {
            apic_id,
            ldr: 0,
            dfr: u32::MAX,
        }
    }
}

/// The x2APIC logical ID of `apic_id`: cluster (ID bits 31:4) in bits 31:16,
/// one bit for ID bits 3:0 in bits 15:0 (SDM 11.12.10.2).
pub const fn x2apic_ldr(apic_id: u32) -> u32 {
    ((apic_id >> 4) << 16) | (1 << (apic_id & 0xf))
}

/// Whether the APIC `target` accepts `icr`, sent in `mode` by the APIC
/// whose ID is `sender` (SDM 11.6.2).
pub fn accepts(icr: &Icr, mode: ApicMode, sender: u32, target: &ApicIdentity) -> bool {
    let is_self = target.apic_id == sender;
    match icr.shorthand {
        DestinationShorthand::ToSelf => return is_self,
        DestinationShorthand::AllIncludingSelf => return true,
        DestinationShorthand::AllExcludingSelf => return !is_self,
        DestinationShorthand::NoShorthand => {}
    }
    let dest = icr.destination;
    match (icr.destination_mode, mode) {
        (DestinationMode::Physical, ApicMode::XApic) => {
            let dest = dest & 0xff;
            dest == 0xff || dest == target.apic_id & 0xff
        }
        (DestinationMode::Physical, ApicMode::X2Apic) => dest == u32::MAX || dest == target.apic_id,
        (DestinationMode::Logical, ApicMode::XApic) => {
            let (mda, ldr) = (dest & 0xff, target.ldr >> 24);
            if mda == 0xff {
                return true;
            }
            match target.dfr >> 28 {
                // Flat: a bit mask of logical IDs.
                0b1111 => mda & ldr != 0,
                // Cluster: cluster in bits 7:4, member mask in bits 3:0.
                0b0000 => mda >> 4 == ldr >> 4 && mda & ldr & 0xf != 0,
                // Other models are reserved: nobody matches.
                _ => false,
            }
        }
        (DestinationMode::Logical, ApicMode::X2Apic) => {
            let ldr = x2apic_ldr(target.apic_id);
            dest == u32::MAX || (dest >> 16 == ldr >> 16 && dest & ldr & 0xffff != 0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_the_sdm_mp_initialization_values() {
        // SDM vol. 3A 9.4.4.1: 000C4500H broadcast INIT, 000C46XXH SIPI.
        let init = decode(0x000C_4500, ApicMode::XApic).unwrap();
        assert_eq!(init.delivery_mode, DeliveryMode::Init);
        assert_eq!(init.shorthand, DestinationShorthand::AllExcludingSelf);
        assert_eq!(action(0x000C_4500, ApicMode::XApic), IcrAction::Init(init));
        let sipi = decode(0x000C_4608, ApicMode::XApic).unwrap();
        assert_eq!(
            (sipi.delivery_mode, sipi.vector),
            (DeliveryMode::StartUp, 8)
        );
        assert_eq!(action(0x000C_4608, ApicMode::XApic), IcrAction::Forward);
    }

    #[test]
    fn linux_init_deassert_and_reserved_modes_are_dropped() {
        // Linux: APIC_INT_LEVELTRIG | APIC_DM_INIT (level 0) after the assert.
        assert_eq!(action(0x8500, ApicMode::XApic), IcrAction::Drop);
        assert!(matches!(
            action(0xC500 | (3 << 56), ApicMode::XApic),
            IcrAction::Init(i) if i.destination == 3 && i.trigger_mode == TriggerMode::Level
        ));
        // Level 0 with edge trigger is not the de-assert: an INIT.
        assert!(matches!(
            action(0x0500 | (2 << 56), ApicMode::XApic),
            IcrAction::Init(i) if i.destination == 2 && i.level == Level::Assert
        ));
        assert_eq!(action(0x4300, ApicMode::XApic), IcrAction::Drop);
        assert_eq!(action(0x4700, ApicMode::X2Apic), IcrAction::Drop);
        for fwd in [0x40ef, 0x4400, 0x4200, 0x4140, 0x4_40ef] {
            assert_eq!(action(fwd, ApicMode::XApic), IcrAction::Forward);
        }
    }

    #[test]
    fn destination_field_depends_on_the_mode() {
        let v = 0x0300_0007_0000_4500;
        assert_eq!(decode(v, ApicMode::XApic).unwrap().destination, 3);
        assert_eq!(
            decode(v, ApicMode::X2Apic).unwrap().destination,
            0x0300_0007
        );
    }

    fn id(apic_id: u32) -> ApicIdentity {
        ApicIdentity::after_reset(apic_id)
    }

    #[test]
    fn shorthands_and_physical_destinations() {
        let x = ApicMode::XApic;
        let to = |dest: u32| Icr::init(dest);
        assert!(accepts(&to(2), x, 0, &id(2)));
        assert!(!accepts(&to(2), x, 0, &id(1)));
        assert!(accepts(&to(0xff), x, 0, &id(1)));
        // Only 8 bits count in xAPIC mode.
        assert!(accepts(&to(2), x, 0, &id(0x102)));
        assert!(accepts(&to(0x1_0002), ApicMode::X2Apic, 0, &id(0x1_0002)));
        assert!(!accepts(&to(0x1_0002), ApicMode::X2Apic, 0, &id(2)));
        assert!(accepts(&to(u32::MAX), ApicMode::X2Apic, 0, &id(9)));
        let sh = |s| to(5).with_shorthand(s);
        assert!(accepts(&sh(DestinationShorthand::ToSelf), x, 1, &id(1)));
        assert!(!accepts(&sh(DestinationShorthand::ToSelf), x, 1, &id(5)));
        assert!(accepts(
            &sh(DestinationShorthand::AllIncludingSelf),
            x,
            1,
            &id(1)
        ));
        assert!(!accepts(
            &sh(DestinationShorthand::AllExcludingSelf),
            x,
            1,
            &id(1)
        ));
        assert!(accepts(
            &sh(DestinationShorthand::AllExcludingSelf),
            x,
            1,
            &id(0)
        ));
    }

    #[test]
    fn logical_destinations() {
        let logical = |dest| Icr {
            destination_mode: DestinationMode::Logical,
            ..Icr::init(dest)
        };
        let flat = ApicIdentity {
            apic_id: 1,
            ldr: 0x02 << 24,
            dfr: u32::MAX,
        };
        assert!(accepts(&logical(0x03), ApicMode::XApic, 0, &flat));
        assert!(!accepts(&logical(0x01), ApicMode::XApic, 0, &flat));
        let cluster = ApicIdentity {
            apic_id: 1,
            ldr: 0x21 << 24,
            dfr: 0x0fff_ffff,
        };
        assert!(accepts(&logical(0x23), ApicMode::XApic, 0, &cluster));
        assert!(!accepts(&logical(0x13), ApicMode::XApic, 0, &cluster));
        assert!(!accepts(&logical(0x22), ApicMode::XApic, 0, &cluster));
        assert!(accepts(&logical(0xff), ApicMode::XApic, 0, &cluster));
        // x2APIC: ID 0x13 is cluster 1, bit 3.
        assert_eq!(x2apic_ldr(0x13), 0x0001_0008);
        assert!(accepts(
            &logical(0x0001_0008),
            ApicMode::X2Apic,
            0,
            &id(0x13)
        ));
        assert!(!accepts(
            &logical(0x0000_0008),
            ApicMode::X2Apic,
            0,
            &id(0x13)
        ));
    }

    proptest! {
        #[test]
        fn decode_roundtrips_encode_for_valid_modes(value in any::<u64>()) {
            for mode in [ApicMode::XApic, ApicMode::X2Apic] {
                if let Some(icr) = decode(value, mode) {
                    let keep = match mode {
                        ApicMode::XApic => 0xff00_0000_000c_cfff,
                        ApicMode::X2Apic => 0xffff_ffff_000c_cfff,
                    };
                    prop_assert_eq!(icr.encode(mode), Ok(value & keep));
                }
                let _ = action(value, mode);
                let icr = decode(value, mode);
                if let Some(icr) = icr {
                    let _ = accepts(&icr, mode, value as u32, &id((value >> 7) as u32));
                }
            }
        }
    }
}
