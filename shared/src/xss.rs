//! IA32_XSS and the supervisor state components of XSAVES/XRSTORS (SDM
//! Vol. 1 13.2 "Enumeration of CPU Support for XSAVE Instructions and
//! XSAVE-Supported Features", 13.3; Vol. 4 IA32_XSS): what a hypervisor
//! gives its guest, consistently across CPUID leaf 0DH sub-leaf 1 and the
//! MSR.
//!
//! IA32_XSS exists if CPUID.(EAX=0DH,ECX=1):EAX[3] (XSAVES) = 1; bit `i`
//! of it may be set only if CPUID.(EAX=0DH,ECX=1):EDX:ECX[i] = 1 (a
//! supervisor state the processor supports), any other bit is #GP. A state
//! component whose feature the hypervisor hides must also be refused: with
//! IA32_XSS[8] (Intel PT) XRSTORS would load the IA32_RTIT_* MSRs that
//! the MSR bitmap hides, and PT would then write to physical addresses.

/// The MSR.
pub const IA32_XSS: u32 = 0xda0;
/// CPUID.(EAX=0DH,ECX=1):EAX[3]: XSAVES/XRSTORS and IA32_XSS.
pub const LEAF_D1_EAX_XSAVES: u32 = 1 << 3;
/// State component 8: Intel PT (a supervisor state).
pub const XSS_PT: u64 = 1 << 8;

/// CPUID leaf 0DH sub-leaf 1 as the processor gives it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeafD1 {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

impl LeafD1 {
    /// The guest's view: XSAVES only if the hypervisor enables it
    /// (`xsaves_enabled`: the "enable XSAVES/XRSTORS" VM-execution
    /// control, without which XSAVES is #UD, SDM 26.3), and the
    /// supervisor states in `hidden` (features the guest does not have)
    /// removed from EDX:ECX. Without XSAVES no supervisor state is listed.
    pub const fn guest_view(self, xsaves_enabled: bool, hidden: u64) -> Self {
        let mut r = self;
        if !xsaves_enabled {
            r.eax &= !LEAF_D1_EAX_XSAVES;
        }
        let states = if r.eax & LEAF_D1_EAX_XSAVES != 0 {
            ((self.edx as u64) << 32 | self.ecx as u64) & !hidden
        } else {
            0
        };
        r.ecx = states as u32;
        r.edx = (states >> 32) as u32;
        r
    }

    /// Whether IA32_XSS exists.
    pub const fn has_xss(self) -> bool {
        self.eax & LEAF_D1_EAX_XSAVES != 0
    }

    /// The bits of IA32_XSS that may be 1.
    pub const fn xss_writable(self) -> u64 {
        if self.has_xss() {
            (self.edx as u64) << 32 | self.ecx as u64
        } else {
            0
        }
    }

    /// Whether WRMSR of `value` to IA32_XSS succeeds (otherwise #GP; also
    /// #GP when the MSR does not exist).
    pub const fn xss_write_ok(self, value: u64) -> bool {
        self.has_xss() && value & !self.xss_writable() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A processor with XSAVES and the PT (8) and CET (11, 12) states.
    const HW: LeafD1 = LeafD1 {
        eax: 0xf,
        ebx: 0x3c0,
        ecx: (1 << 8) | (1 << 11) | (1 << 12),
        edx: 0,
    };

    #[test]
    fn pt_is_hidden_and_refused() {
        let g = HW.guest_view(true, XSS_PT);
        assert_eq!(g.ecx, (1 << 11) | (1 << 12));
        assert!(g.has_xss());
        assert!(!g.xss_write_ok(XSS_PT));
        assert!(g.xss_write_ok(1 << 11));
        assert!(g.xss_write_ok(0));
        assert!(!g.xss_write_ok(1 << 63));
    }

    #[test]
    fn without_the_control_there_is_no_xsaves_nor_xss() {
        let g = HW.guest_view(false, XSS_PT);
        assert_eq!(g.eax, 0x7);
        assert_eq!((g.ecx, g.edx), (0, 0));
        assert!(!g.has_xss());
        assert!(!g.xss_write_ok(0), "no MSR: even 0 is #GP");
        // The other sub-leaf 1 bits (XSAVEOPT, XSAVEC, XGETBV1) and the
        // size stay.
        assert_eq!(g.ebx, HW.ebx);
    }

    #[test]
    fn bochs_skylake_x_lists_no_supervisor_state() {
        let bochs = LeafD1 {
            eax: 0xf,
            ebx: 0,
            ecx: 0,
            edx: 0,
        };
        let g = bochs.guest_view(true, XSS_PT);
        assert!(g.xss_write_ok(0));
        for bit in 0..64 {
            assert!(!g.xss_write_ok(1 << bit), "{bit}");
        }
    }

    proptest! {
        #[test]
        fn the_msr_follows_the_guests_cpuid(eax in any::<u32>(), ecx in any::<u32>(), edx in any::<u32>(),
                                           enabled in any::<bool>(), value in any::<u64>()) {
            let hw = LeafD1 { eax, ebx: 0, ecx, edx };
            let g = hw.guest_view(enabled, XSS_PT);
            let listed = (u64::from(g.edx) << 32) | u64::from(g.ecx);
            // Bit i is writable iff the guest's CPUID lists state i.
            prop_assert_eq!(g.xss_write_ok(value), g.has_xss() && value & !listed == 0);
            // Never PT, never more than the processor has.
            prop_assert_eq!(listed & XSS_PT, 0);
            prop_assert_eq!(listed & !((u64::from(edx) << 32) | u64::from(ecx)), 0);
            prop_assert!(enabled || !g.has_xss());
        }
    }
}
