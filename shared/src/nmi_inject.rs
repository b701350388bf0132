//! When a hypervisor may inject a pending NMI into its guest (with the
//! "NMI exiting" and "virtual NMIs" controls), and when it must wait for
//! the NMI window instead (Intel SDM vol. 3C 25.3 "Changes to Instruction
//! Behavior in VMX Non-Root Operation" for virtual-NMI blocking, 26.7.5
//! "NMI-Window Exiting", 27.3.1.5 "Checks on Guest Non-Register State").

/// Guest interruptibility state (SDM Table 25-3): blocking by STI.
pub const BLOCKING_BY_STI: u32 = 1 << 0;
/// Blocking by MOV SS.
pub const BLOCKING_BY_MOV_SS: u32 = 1 << 1;
/// Blocking by SMI.
pub const BLOCKING_BY_SMI: u32 = 1 << 2;
/// Blocking by NMI (virtual-NMI blocking when "virtual NMIs" is 1).
pub const BLOCKING_BY_NMI: u32 = 1 << 3;

/// Guest activity states (SDM 25.4.2).
pub mod activity {
    pub const ACTIVE: u32 = 0;
    pub const HLT: u32 = 1;
    pub const SHUTDOWN: u32 = 2;
    pub const WAIT_FOR_SIPI: u32 = 3;
}

/// What to do with a pending NMI at the next VM entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiStep {
    /// Nothing pending, or it must wait without an exit (wait-for-SIPI and
    /// shutdown block NMIs; a hypervisor single-step is in progress).
    Wait,
    /// Inject it now (VM-entry interruption information: NMI, vector 2).
    Inject,
    /// Keep it pending and request an NMI-window exit: the guest blocks
    /// NMIs (virtual-NMI blocking, or STI/MOV SS blocking, which VM entry
    /// rejects with an injected NMI for MOV SS and some processors for
    /// STI), or another event is being injected.
    OpenWindow,
}

/// The decision for one VM entry.
///
/// - `pending`: an NMI is pending for the guest;
/// - `interruptibility`, `activity`: the guest's state about to be entered;
/// - `injecting`: the VM-entry interruption information is already valid;
/// - `stepping`: the hypervisor is single-stepping one guest instruction.
pub fn decide(
    pending: bool,
    interruptibility: u32,
    activity: u32,
    injecting: bool,
    stepping: bool,
) -> NmiStep {
    if !pending || stepping || matches!(activity, activity::SHUTDOWN | activity::WAIT_FOR_SIPI) {
        return NmiStep::Wait;
    }
    let blocked = BLOCKING_BY_STI | BLOCKING_BY_MOV_SS | BLOCKING_BY_NMI;
    if injecting || interruptibility & blocked != 0 {
        NmiStep::OpenWindow
    } else {
        NmiStep::Inject
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn injects_only_when_nothing_blocks() {
        use activity::*;
        assert_eq!(decide(false, 0, ACTIVE, false, false), NmiStep::Wait);
        assert_eq!(decide(true, 0, ACTIVE, false, false), NmiStep::Inject);
        assert_eq!(decide(true, 0, HLT, false, false), NmiStep::Inject);
        for b in [BLOCKING_BY_STI, BLOCKING_BY_MOV_SS, BLOCKING_BY_NMI] {
            assert_eq!(decide(true, b, ACTIVE, false, false), NmiStep::OpenWindow);
        }
        // Blocking by SMI alone does not block NMIs outside SMM.
        assert_eq!(
            decide(true, BLOCKING_BY_SMI, ACTIVE, false, false),
            NmiStep::Inject
        );
        assert_eq!(decide(true, 0, ACTIVE, true, false), NmiStep::OpenWindow);
        assert_eq!(decide(true, 0, WAIT_FOR_SIPI, false, false), NmiStep::Wait);
        assert_eq!(decide(true, 0, SHUTDOWN, false, false), NmiStep::Wait);
        assert_eq!(decide(true, 0, ACTIVE, false, true), NmiStep::Wait);
    }

    proptest! {
        #[test]
        fn never_injects_into_blocking(state in any::<u32>(), act in 0u32..4, inj: bool, step: bool) {
            let d = decide(true, state, act, inj, step);
            if d == NmiStep::Inject {
                prop_assert!(state & (BLOCKING_BY_NMI | BLOCKING_BY_MOV_SS | BLOCKING_BY_STI) == 0);
                prop_assert!(!inj && !step && act <= activity::HLT);
            }
            prop_assert_eq!(decide(false, state, act, inj, step), NmiStep::Wait);
        }
    }
}
