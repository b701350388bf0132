//! What the fuzzer may mutate: the capability MSRs LHV reads, narrowed to
//! the feature set it targets, and the addresses of LHV's own pages.
//!
//! A differential fuzzer must draw the same mutations on both sides. Both
//! sides derive the same [`Profile`] from their capability MSRs when those
//! offer at least [`TARGET`]'s features; each side prints its profile
//! (`FUZZ profile ...`) and the harness refuses to compare runs whose
//! profiles differ.

use core::fmt;

/// One control field's capability: bits that must be 1 (`allowed0` of the
/// MSR) and bits that may be 1 (`allowed1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ctl {
    pub must1: u32,
    pub may1: u32,
}

impl Ctl {
    /// Bits the fuzzer may turn on or off: allowed either way and in
    /// `target`.
    pub const fn flexible(&self, target: u32) -> u32 {
        self.may1 & !self.must1 & target
    }
}

/// The five control fields, in the order pin, primary, secondary, exit,
/// entry.
pub const CONTROLS: usize = 5;

/// Control bits the fuzzer may set (SDM 25.6-25.8), per field: the ones
/// both bare Bochs (corei7_skylake_x) and L0 offer. Left out, with the
/// reason:
/// - pin 7 (process posted interrupts): Bochs lacks it (bochs.md);
/// - primary 21 (use TPR shadow): L0 does not offer it to L1 yet;
/// - secondary: all but 2 (descriptor-table exiting), 3 (RDTSCP), 6
///   (WBINVD exiting), 11 (RDRAND exiting), 12 (INVPCID), 16 (RDSEED
///   exiting) and 20 (XSAVES): L0 offers no EPT (nested EPT is its own
///   issue; with it go unrestricted guest, PML, #VE, VMFUNC), VPID, APIC
///   virtualization, PAUSE-loop exiting, VMCS shadowing or TSC scaling yet;
/// - exit 12 and entry 13 (load IA32_PERF_GLOBAL_CTRL): advertised by Bochs
///   but not implemented (bochs.md);
/// - entry 10/11 (entry to SMM, deactivate dual-monitor treatment): Bochs
///   allows them to be 1 (and fails the entry outside SMM, SDM 27.2.1.3),
///   L0 does not (VMfailValid earlier, at the control check): the two are
///   both right, but not the same outcome.
///
/// A capability bit outside the target is never touched, neither set nor
/// violated: on one side it may be allowed, on the other reserved.
pub const TARGET: [u32; CONTROLS] = [
    0x0000_007f,
    !(1 << 21),
    (1 << 2) | (1 << 3) | (1 << 6) | (1 << 11) | (1 << 12) | (1 << 16) | (1 << 20),
    !(1 << 12),
    !((1 << 10) | (1 << 11) | (1 << 13)),
];

/// Control bits reserved (must be 0) on bare Bochs and under L0 alike: the
/// complement of Bochs's allowed-1 settings (bochs.md), which include L0's.
/// The fuzzer's "reserved bit" mutations pick from these.
pub const RESERVED: [u32; CONTROLS] = [
    !0x0000_007f,
    !0xf7f9_fffe,
    !0x0217_7fff,
    !0x007f_ffff,
    !0x0000_ffff,
];

/// Everything the mutation engine knows about the platform.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Pin, primary, secondary, exit, entry (the TRUE MSRs where they
    /// exist), each narrowed to [`TARGET`] for `may1`.
    pub ctl: [Ctl; CONTROLS],
    /// MAXPHYADDR.
    pub max_phys: u8,
    /// Linear-address width.
    pub linear_width: u8,
    /// IA32_VMX_MISC's recommended maximum MSR-list length (SDM A.6).
    pub max_msr_list: u32,
    /// IA32_VMX_MISC bit 6: the HLT activity state.
    pub activity_hlt: bool,
    /// CR4 bits that may be 1 in VMX operation (IA32_VMX_CR4_FIXED1).
    pub cr4_fixed1: u64,
    /// The VMCS revision identifier.
    pub revision: u32,
}

impl Profile {
    /// The profile of capabilities `raw` (must1, may1 per control).
    pub fn new(
        raw: [Ctl; CONTROLS],
        max_phys: u8,
        linear_width: u8,
        max_msr_list: u32,
        activity_hlt: bool,
        cr4_fixed1: u64,
        revision: u32,
    ) -> Self {
        let mut ctl = raw;
        for (c, t) in ctl.iter_mut().zip(TARGET) {
            c.may1 &= t | c.must1;
        }
        Self {
            ctl,
            max_phys,
            linear_width,
            max_msr_list,
            activity_hlt,
            cr4_fixed1,
            revision,
        }
    }

    /// Whether secondary control `bit` may be 1 (and "activate secondary
    /// controls", primary bit 31, too).
    pub const fn secondary(&self, bit: u32) -> bool {
        self.ctl[1].may1 & (1 << 31) != 0 && self.ctl[2].may1 & (1 << bit) != 0
    }

    /// Whether primary control `bit` may be 1.
    pub const fn primary(&self, bit: u32) -> bool {
        self.ctl[1].may1 & (1 << bit) != 0
    }

    /// Whether the VMX-preemption timer exists (pin bit 6).
    pub const fn preemption_timer(&self) -> bool {
        self.ctl[0].may1 & (1 << 6) != 0
    }
}

impl fmt::Display for Profile {
    /// The `FUZZ profile` line's body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, c) in ["pin", "proc", "proc2", "exit", "entry"]
            .iter()
            .zip(self.ctl)
        {
            write!(f, "{name}={:08x}/{:08x} ", c.must1, c.may1)?;
        }
        write!(
            f,
            "maxphys={} linear={} msrlist={} hlt={} cr4f1={:#x} rev={:#x}",
            self.max_phys,
            self.linear_width,
            self.max_msr_list,
            u8::from(self.activity_hlt),
            self.cr4_fixed1,
            self.revision
        )
    }
}

/// Physical addresses of LHV's pages that mutations may point fields at.
/// Each is zeroed (or re-stamped) before every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pages {
    pub entry_load: u64,
    pub exit_store: u64,
    pub exit_load: u64,
    pub io_a: u64,
    pub io_b: u64,
    pub msr_bitmap: u64,
    pub virtual_apic: u64,
    pub apic_access: u64,
    pub vmread_bitmap: u64,
    pub vmwrite_bitmap: u64,
    /// All zeros: not a VMCS (wrong revision).
    pub link_zero: u64,
    /// The VMCS revision identifier in its first 4 bytes.
    pub link_vmcs: u64,
    /// The revision identifier with bit 31 (shadow-VMCS indicator) set.
    pub link_shadow: u64,
    /// L2's IDT: all zeros (every gate not present).
    pub idt: u64,
}
