//! Exception classes (SDM Vol. 3A 6.6 "Exception Classifications",
//! Table 6-1) and the double-fault rules (SDM 6.15, interrupt 8, Tables
//! 6-4 and 6-5): what a hypervisor needs to inject an exception as the
//! processor would deliver it, including one raised while it delivers
//! another.

/// RFLAGS.RF (resume flag).
pub const RFLAGS_RF: u64 = 1 << 16;

/// Whether exception `vector` is a fault (reported with RIP at the
/// faulting instruction, so that the processor pushes RFLAGS.RF = 1,
/// SDM 18.3.1.1). #DB is a fault or a trap depending on its cause; the
/// #DB a hypervisor injects for a single step is a trap, so it is not
/// counted here.
pub const fn is_fault(vector: u8) -> bool {
    matches!(
        vector,
        0 | 5 | 6 | 7 | 10 | 11 | 12 | 13 | 14 | 16 | 17 | 19 | 20 | 21
    )
}

/// #DF, the double fault.
pub const DF: u8 = 8;

/// The classes of SDM Table 6-4 "Interrupt and Exception Classes".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// #DB, NMI, #BP, #OF, #BR, #UD, #NM, #MF, #AC, #MC, #XM, every
    /// external interrupt and every INT n / INT3 / INTO / INT1.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP, #CP.
    Contributory,
    /// #PF and #VE.
    PageFault,
}

/// The class of hardware exception `vector` (Table 6-4). Vectors the
/// table does not list (#DF itself, reserved and user vectors) are
/// benign: [`merge`] treats #DF as the first event on its own.
pub const fn class(vector: u8) -> Class {
    match vector {
        0 | 10 | 11 | 12 | 13 | 21 => Class::Contributory,
        14 | 20 => Class::PageFault,
        _ => Class::Benign,
    }
}

/// What the processor does with an exception raised while it delivers an
/// earlier event (SDM Table 6-5 "Conditions for Generating a Double
/// Fault").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// "Handle exceptions serially": the second exception is delivered
    /// (the first is lost; a fault recurs when its instruction runs again).
    Second,
    /// A double fault, #DF with error code 0.
    DoubleFault,
    /// "Enter shutdown mode": a triple fault.
    TripleFault,
}

/// Merges exception `second` into the event being delivered: `first` is
/// its vector if it is a hardware exception, `None` for any other event
/// (NMI, external interrupt, INT n, INT3, INTO, INT1: all benign,
/// Table 6-4, whatever their vector).
pub const fn merge(first: Option<u8>, second: u8) -> Merged {
    let Some(first) = first else {
        return Merged::Second;
    };
    let second = class(second);
    if first == DF {
        // Table 6-5, row "Double Fault"; SDM 6.15 interrupt 8: "If another
        // contributory or page fault exception occurs while attempting to
        // call the double-fault handler, the processor enters shutdown".
        return match second {
            Class::Benign => Merged::Second,
            Class::Contributory | Class::PageFault => Merged::TripleFault,
        };
    }
    match (class(first), second) {
        (Class::Contributory, Class::Contributory)
        | (Class::PageFault, Class::Contributory | Class::PageFault) => Merged::DoubleFault,
        _ => Merged::Second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn faults_traps_and_aborts_follow_table_6_1() {
        let faults: Vec<u8> = (0..32).filter(|&v| is_fault(v)).collect();
        assert_eq!(faults, [0, 5, 6, 7, 10, 11, 12, 13, 14, 16, 17, 19, 20, 21]);
        // Traps (#DB single step, #BP, #OF), aborts (#DF, #MC), NMI.
        for v in [1, 2, 3, 4, 8, 18] {
            assert!(!is_fault(v), "{v}");
        }
    }

    #[test]
    fn classes_follow_table_6_4() {
        let of = |c| (0..=255u8).filter(|&v| class(v) == c).collect::<Vec<_>>();
        assert_eq!(of(Class::Contributory), [0, 10, 11, 12, 13, 21]);
        assert_eq!(of(Class::PageFault), [14, 20]);
        for v in [1, 2, 3, 4, 5, 6, 7, 9, 16, 17, 18, 19, 32, 255] {
            assert_eq!(class(v), Class::Benign, "{v}");
        }
    }

    /// Table 6-5, written out: rows are the first exception's class,
    /// columns the second's (benign, contributory, page fault).
    const TABLE_6_5: [[Merged; 3]; 3] = {
        use Merged::{DoubleFault as D, Second as S};
        [[S, S, S], [S, D, S], [S, D, D]]
    };

    fn index(c: Class) -> usize {
        match c {
            Class::Benign => 0,
            Class::Contributory => 1,
            Class::PageFault => 2,
        }
    }

    #[test]
    fn merge_is_table_6_5() {
        // One representative of each class: #UD, #GP, #PF.
        let rep = [6u8, 13, 14];
        for (i, &first) in rep.iter().enumerate() {
            for (j, &second) in rep.iter().enumerate() {
                assert_eq!(
                    merge(Some(first), second),
                    TABLE_6_5[i][j],
                    "{first} then {second}"
                );
            }
        }
        assert_eq!(merge(Some(13), 13), Merged::DoubleFault);
        assert_eq!(merge(Some(14), 14), Merged::DoubleFault);
        assert_eq!(merge(Some(14), 13), Merged::DoubleFault);
        assert_eq!(merge(Some(13), 14), Merged::Second);
        assert_eq!(merge(Some(0), 10), Merged::DoubleFault);
        assert_eq!(merge(Some(DF), 13), Merged::TripleFault);
        assert_eq!(merge(Some(DF), 14), Merged::TripleFault);
        assert_eq!(merge(Some(DF), 6), Merged::Second);
        // INT 0DH, an NMI or an interrupt being delivered is benign.
        assert_eq!(merge(None, 13), Merged::Second);
    }

    proptest! {
        #[test]
        fn merge_follows_the_classes(first in any::<u8>(), second in any::<u8>()) {
            let m = merge(Some(first), second);
            if first == DF {
                let shutdown = class(second) != Class::Benign;
                prop_assert_eq!(m == Merged::TripleFault, shutdown);
                prop_assert_eq!(m == Merged::Second, !shutdown);
            } else {
                prop_assert_eq!(m, TABLE_6_5[index(class(first))][index(class(second))]);
            }
            // A benign second exception is always handled serially, and
            // only a #DF being delivered can end in shutdown.
            if class(second) == Class::Benign {
                prop_assert_eq!(m, Merged::Second);
            }
            if first != DF {
                prop_assert_ne!(m, Merged::TripleFault);
            }
            prop_assert_eq!(merge(None, second), Merged::Second);
        }
    }
}
