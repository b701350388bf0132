//! The mutation engine: from a case's PRNG stream, the profile, LHV's pages
//! and the valid VMCS12 a case starts from, the fields to write (with
//! their final values) and the MSR areas' contents.
//!
//! Each case makes 1 to 4 mutations, each from one class: control bits
//! (allowed and reserved ones), guest CR0/CR3/CR4, EFER/PAT/DEBUGCTL/DR7,
//! RFLAGS, a segment register, GDTR/IDTR, activity/interruptibility/pending
//! debug exceptions, event injection, an MSR area, bitmap and APIC-page
//! addresses, the VMCS link pointer, the preemption timer, one host-state
//! field, and the rest (CR3 targets, VPID, #PF mask/match, PDPTEs, ...).
//!
//! # Cases the engine never makes (no single defined outcome)
//! - Guest activity state shutdown (2) or wait-for-SIPI (3), and HLT (1)
//!   without an injected event to wake it: L2 would wait for ever (and
//!   Bochs does not wake HLT on interrupt-window exiting, bochs.md).
//! - An NMI injected with blocking by STI: SDM 27.3.1.5 lets VM entry fail
//!   (qualification 3) or succeed, model-specifically (the negative suite's
//!   `nmi-injection-sti-blocking` SKIP).
//! - An NMI injected with blocking by NMI while virtual NMIs are on: Bochs
//!   does not check it (SDM 27.3.1.5; negative suite SKIP).
//! - HLT with an injected event other than an external interrupt, NMI,
//!   #DB or #MC: it must fail (SDM 27.3.1.5), Bochs enters and delivers it.
//! - Bits 63:32 of guest DR7 with "load debug controls": the entry must
//!   fail (SDM 27.3.1.1), Bochs enters (or fails later, at the MSR loads).
//! - Reserved bits of guest IA32_DEBUGCTL (with "load debug controls") and
//!   bits 63:32 of the pending debug exceptions: they must fail (SDM
//!   27.3.1.1, 27.3.1.5), Bochs does not check them (it does not implement
//!   IA32_DEBUGCTL; of the pending-debug field it checks the low half).
//! - IA32_SMBASE and other MSRs Bochs does not implement in the VM-entry
//!   MSR-load area: WRMSR raises #GP on hardware, so the entry fails (SDM
//!   27.4); Bochs, with `ignore_bad_msrs=1` (which Linux guests need),
//!   drops the write and enters.
//! - RFLAGS.TF = 1: Bochs does not check pending-debug BS against TF (SDM
//!   27.3.1.5; negative suite SKIP); BS itself is never set either.
//! - Event type 7 ("other event") without the monitor trap flag: it must
//!   fail (SDM 27.2.1.3), Bochs stops with a panic instead.
//! - Guest RIP: Bochs does not check it for canonicality (SDM 27.3.1.4;
//!   negative suite SKIP), so it is never mutated.
//! - MSR lists longer than IA32_VMX_MISC's maximum (SDM A.6: undefined).
//! - VM-exit MSR-load/store entries that fail (SDM 28.6: VMX abort, the CPU
//!   stops), or that load an MSR LHV's host code relies on: only harmless
//!   MSRs with valid values, which LHV restores after each case.
//! - EFER.NXE changes (guest field or MSR-load area): with VM-exit "load
//!   IA32_EFER" off the host would keep NXE = 0 under page tables that use
//!   XD, and fault; EFER.LMA in MSR-load entries (read-only).
//! - Guest CR3 and GDTR/IDTR bases other than invalid ones, and MSR-area,
//!   bitmap and APIC-page addresses other than LHV's pages or invalid ones:
//!   any other memory may differ between bare Bochs and L0 (its region
//!   reads all ones).
//! - Host-state mutations that pass the checks (SDM 27.2.2-27.2.4): LHV
//!   would return into them; every host mutation breaks a check.
//! - The control bits outside [`super::profile::TARGET`].

use shared::vmx::VmcsField as F;

use super::profile::{Pages, Profile};
use super::rng::SplitMix64;

/// At most this many field writes per case.
pub const MAX_WRITES: usize = 24;
/// At most this many VM-entry MSR-load entries.
pub const MAX_ENTRY_LOAD: usize = 8;
/// At most this many VM-exit MSR-store entries.
pub const MAX_EXIT_STORE: usize = 4;
/// At most this many VM-exit MSR-load entries.
pub const MAX_EXIT_LOAD: usize = 2;

/// One entry of an MSR area (SDM 25.7.2, Table 25-15).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub value: u64,
}

/// MSRs that an MSR-load area may change and LHV restores after every case.
pub const RESTORED_MSRS: [u32; 11] = [
    msr::EFER,
    msr::PAT,
    msr::FS_BASE,
    msr::GS_BASE,
    msr::KERNEL_GS_BASE,
    msr::SYSENTER_CS,
    msr::SYSENTER_ESP,
    msr::SYSENTER_EIP,
    msr::STAR,
    msr::LSTAR,
    msr::SFMASK,
];

/// MSR indices the engine uses.
pub mod msr {
    pub const SYSENTER_CS: u32 = 0x174;
    pub const SYSENTER_ESP: u32 = 0x175;
    pub const SYSENTER_EIP: u32 = 0x176;
    pub const PAT: u32 = 0x277;
    pub const X2APIC_TPR: u32 = 0x808;
    pub const X2APIC_SIVR: u32 = 0x80f;
    pub const EFER: u32 = 0xc000_0080;
    pub const STAR: u32 = 0xc000_0081;
    pub const LSTAR: u32 = 0xc000_0082;
    pub const SFMASK: u32 = 0xc000_0084;
    pub const FS_BASE: u32 = 0xc000_0100;
    pub const GS_BASE: u32 = 0xc000_0101;
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
}

/// What a case writes: fields (final values, in order) and the MSR areas.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    writes: [(F, u64); MAX_WRITES],
    n: usize,
    /// VM-entry MSR-load area contents (its count is a field).
    pub entry_load: [MsrEntry; MAX_ENTRY_LOAD],
    /// VM-exit MSR-store area indices.
    pub exit_store: [u32; MAX_EXIT_STORE],
    /// VM-exit MSR-load area contents.
    pub exit_load: [MsrEntry; MAX_EXIT_LOAD],
    /// How many mutations made it (1 to 4). With more than one, several
    /// checks may fail, and the SDM lets an implementation report any of
    /// them (26.2: "These checks may be performed in any order"; the
    /// guest-state checks likewise): the harness then compares the kind of
    /// failure only.
    pub mutations: u32,
}

impl Plan {
    /// The field writes, in order, each with its final value.
    pub fn writes(&self) -> &[(F, u64)] {
        &self.writes[..self.n]
    }

    /// The final value of `f` if the plan writes it.
    pub fn get(&self, f: F) -> Option<u64> {
        self.writes().iter().find(|(g, _)| *g == f).map(|(_, v)| *v)
    }
}

/// The engine's working state for one case.
struct Gen<'a> {
    rng: SplitMix64,
    p: &'a Profile,
    pages: &'a Pages,
    base: &'a dyn Fn(F) -> u64,
    plan: Plan,
}

const PIN: F = F::PinBasedVmExecControls;
const PROC: F = F::PrimaryProcBasedVmExecControls;
const PROC2: F = F::SecondaryProcBasedVmExecControls;
const EXIT: F = F::VmExitControls;
const ENTRY: F = F::VmEntryControls;
const CTL_FIELDS: [F; 5] = [PIN, PROC, PROC2, EXIT, ENTRY];

/// Interruptibility bits (SDM 25.4.2, Table 25-3).
const BLOCK_STI: u64 = 1 << 0;
const BLOCK_NMI: u64 = 1 << 3;
/// Event types (SDM 25.8.3).
const TYPE_NMI: u64 = 2;
/// Pin-based "virtual NMIs".
const VIRTUAL_NMIS: u64 = 1 << 5;
/// Primary "monitor trap flag".
const MONITOR_TRAP_FLAG: u32 = 1 << 27;
/// Activity states (SDM 25.4.2).
const ACTIVITY_HLT: u64 = 1;

impl Gen<'_> {
    fn get(&self, f: F) -> u64 {
        self.plan.get(f).unwrap_or_else(|| (self.base)(f))
    }

    fn set(&mut self, f: F, v: u64) {
        let v = v & f.mask();
        if let Some(w) = self.plan.writes[..self.plan.n]
            .iter_mut()
            .find(|(g, _)| *g == f)
        {
            w.1 = v;
        } else if self.plan.n < MAX_WRITES {
            self.plan.writes[self.plan.n] = (f, v);
            self.plan.n += 1;
        }
    }

    fn xor(&mut self, f: F, bits: u64) {
        let v = self.get(f) ^ bits;
        self.set(f, v);
    }

    fn or(&mut self, f: F, bits: u64) {
        let v = self.get(f) | bits;
        self.set(f, v);
    }

    fn bit(&mut self, lo: u32, hi: u32) -> u64 {
        1 << (lo + self.rng.below(u64::from(hi - lo + 1)) as u32)
    }

    fn non_canonical(&mut self) -> u64 {
        let w = u32::from(self.p.linear_width);
        // Bit w-1 set with the bits above it clear, or bit 63 alone, or
        // both halves mixed: never a sign extension.
        self.rng.pick(&[
            1u64 << (w - 1),
            1 << 63,
            (1 << 63) | 0x1000,
            0x00ff_0000_0000_0000,
        ])
    }

    fn beyond_phys(&self) -> u64 {
        1 << self.p.max_phys
    }

    /// A page address: LHV's `page` mostly, else misaligned by `off` or
    /// beyond MAXPHYADDR (both must fail their checks).
    fn address(&mut self, page: u64, off: u64) -> u64 {
        match self.rng.below(4) {
            0 | 1 => page,
            2 => page + off,
            _ => self.beyond_phys(),
        }
    }

    /// Turns on control `bit` of field `i` if the profile allows it.
    fn enable(&mut self, i: usize, bit: u32) {
        if self.p.ctl[i].may1 & (1 << bit) != 0 {
            self.or(CTL_FIELDS[i], 1 << bit);
            if i == 2 {
                self.or(PROC, 1 << 31);
            }
        }
    }

    fn controls(&mut self, violate: bool) {
        let i = self.rng.below(5) as usize;
        let c = self.p.ctl[i];
        let f = CTL_FIELDS[i];
        if violate {
            // A bit that must be 0, or one that must be 1 cleared (SDM
            // 27.2.1.1-27.2.1.3); never one outside the target, which
            // may be allowed on one side and reserved on the other.
            let must0 = !c.may1 & super::profile::RESERVED[i];
            let choice = if c.must1 != 0 && (must0 == 0 || self.rng.chance(1, 3)) {
                (false, c.must1)
            } else {
                (true, must0)
            };
            if choice.1 == 0 {
                return;
            }
            let b = self.rng.pick_bit(choice.1.into());
            if choice.0 {
                self.or(f, b);
            } else {
                let v = self.get(f) & !b;
                self.set(f, v);
            }
            return;
        }
        let flex = c.flexible(u32::MAX);
        if flex == 0 {
            return;
        }
        let b = self.rng.pick_bit(flex.into());
        self.xor(f, b);
        if i == 2 && self.get(PROC2) != 0 {
            self.or(PROC, 1 << 31);
        }
    }

    fn guest_crs(&mut self) {
        match self.rng.below(3) {
            0 => {
                let b = if self.rng.chance(1, 4) {
                    self.bit(32, 63)
                } else {
                    1 << self.rng.pick(&[0u32, 1, 2, 3, 4, 5, 16, 18, 29, 30, 31])
                };
                self.xor(F::GuestCr0, b);
            }
            1 => {
                let b = if self.rng.chance(1, 4) {
                    self.bit(32, 63)
                } else {
                    self.bit(0, 23)
                };
                self.xor(F::GuestCr4, b);
            }
            _ => {
                let b = self.bit(u32::from(self.p.max_phys), 63);
                self.or(F::GuestCr3, b);
            }
        }
    }

    fn guest_msrs(&mut self) {
        match self.rng.below(4) {
            0 => {
                // EFER: SCE, LME, LMA, reserved bits (not NXE, see above).
                let b = 1u64
                    << self
                        .rng
                        .pick(&[0u32, 8, 10, 1, 7, 9, 12, 13, 14, 15, 16, 40, 63]);
                self.xor(F::GuestIa32Efer, b);
            }
            1 => {
                let byte = self.rng.below(8) * 8;
                let ty = self.rng.pick(&[0u64, 1, 4, 5, 6, 7, 2, 3, 8, 0xff]);
                let v = (self.get(F::GuestIa32Pat) & !(0xff << byte)) | (ty << byte);
                self.set(F::GuestIa32Pat, v);
            }
            2 => {
                // LBR and BTF only: Bochs does not check the reserved bits
                // (see above).
                let b = self.bit(0, 1);
                self.xor(F::GuestIa32Debugctl, b);
                if self.rng.chance(1, 2) {
                    self.enable(4, 2);
                }
            }
            _ => {
                // Bits 31:0 only: Bochs does not check that bits 63:32 are
                // 0 (see above).
                let b = self.bit(0, 31);
                self.xor(F::GuestDr7, b);
                if self.rng.chance(1, 2) {
                    self.enable(4, 2);
                }
            }
        }
    }

    fn rflags(&mut self) {
        // Every bit but TF (8), see above.
        let b = if self.rng.chance(1, 4) {
            self.bit(22, 63)
        } else {
            1 << self.rng.pick(&[
                0u32, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
            ])
        };
        self.xor(F::GuestRflags, b);
    }

    fn segment(&mut self) {
        let [sel, base, limit, ar] = self.rng.pick(&F::GUEST_SEGMENTS);
        match self.rng.below(5) {
            0 => {
                let b = self.bit(0, 15);
                self.xor(sel, b);
            }
            1 => {
                let v = match self.rng.below(3) {
                    0 => self.non_canonical(),
                    1 => 1 << 32,
                    _ => 0x1000,
                };
                self.set(base, v);
            }
            2 => {
                let b = self.bit(0, 31);
                self.xor(limit, b);
            }
            _ => {
                let b = self.bit(0, 31);
                self.xor(ar, b);
            }
        }
    }

    fn tables(&mut self) {
        let (base, limit) = self.rng.pick(&[
            (F::GuestGdtrBase, F::GuestGdtrLimit),
            (F::GuestIdtrBase, F::GuestIdtrLimit),
        ]);
        if self.rng.chance(1, 2) {
            let v = self.non_canonical();
            self.set(base, v);
        } else {
            // The IDT page is all zeros, so any limit up to 0xffff keeps
            // delivery inside it (gates not present).
            let b = self.bit(0, 31);
            self.xor(limit, b);
        }
    }

    fn non_register(&mut self) {
        match self.rng.below(3) {
            0 => {
                let v = self
                    .rng
                    .pick(&[0u64, ACTIVITY_HLT, ACTIVITY_HLT, 4, 5, 0xffff]);
                self.set(F::GuestActivityState, v);
            }
            1 => {
                let mut v = self.rng.below(16);
                if self.rng.chance(1, 6) {
                    v |= self.bit(4, 31);
                }
                self.set(F::GuestInterruptibilityState, v);
            }
            _ => {
                // Reserved bits below 32 only (BS is never set, and Bochs
                // does not check bits 63:32, see above).
                let b = 1u64
                    << self
                        .rng
                        .pick(&[4u32, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 31]);
                self.or(F::GuestPendingDebugExceptions, b);
            }
        }
    }

    fn injection(&mut self) {
        let mut ty = self.rng.pick(&[0u64, 2, 3, 3, 3, 4, 5, 6, 7, 1]);
        if ty == 7 && self.p.ctl[1].may1 & MONITOR_TRAP_FLAG == 0 {
            // Without the monitor trap flag, type 7 must fail (SDM
            // 27.2.1.3); Bochs panics ("unsupported event injection type
            // 7"). Type 1 (reserved) stands in for it.
            ty = 1;
        }
        let vector = match ty {
            0 | 4 => self.rng.below(256),
            2 => self.rng.pick(&[2, 2, 2, 0, 13]),
            3 => self.rng.pick(&[
                0u64, 1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 16, 17, 18, 19, 15, 21, 31,
            ]),
            5 => self.rng.pick(&[1, 1, 3]),
            6 => self.rng.pick(&[3, 4, 3, 1, 13]),
            _ => self.rng.pick(&[0, 0, 1]),
        };
        let wants_ec = ty == 3 && matches!(vector, 8 | 10..=14 | 17 | 21);
        let ec = if self.rng.chance(1, 5) {
            !wants_ec
        } else {
            wants_ec
        };
        let mut info = (1 << 31) | (ty << 8) | vector | (u64::from(ec) << 11);
        if self.rng.chance(1, 10) {
            info |= self.bit(12, 30);
        }
        if self.rng.chance(1, 20) {
            info &= !(1 << 31);
        }
        self.set(F::VmEntryInterruptionInfo, info);
        let code = self.rng.pick(&[0u64, 0x10, 0x1a, 0x8000, 0xffff_ffff]);
        self.set(F::VmEntryExceptionErrorCode, code);
        let len = self.rng.pick(&[0u64, 1, 2, 3, 15, 16]);
        self.set(F::VmEntryInstructionLength, len);
        if self.rng.chance(1, 4) {
            self.set(F::GuestActivityState, ACTIVITY_HLT);
        }
    }

    fn entry_msr(&mut self) -> MsrEntry {
        let efer = (self.base)(F::GuestIa32Efer);
        let canon = 0xffff_8000_0000_1000u64;
        let (index, value) = match self.rng.below(14) {
            0 => (msr::SYSENTER_CS, self.rng.below(0x1_0000)),
            1 => (msr::SYSENTER_ESP, self.rng.pick(&[canon, 1 << 63])),
            2 => (msr::SYSENTER_EIP, self.rng.pick(&[0x1000, 1 << 47])),
            3 => (msr::FS_BASE, 0x1000),
            4 => (msr::GS_BASE, 0x2000),
            5 => (msr::KERNEL_GS_BASE, self.rng.pick(&[canon, 1 << 50])),
            6 => (
                msr::EFER,
                self.rng
                    .pick(&[efer, efer ^ 1, efer | 2, efer ^ (1 << 8), efer | (1 << 20)]),
            ),
            7 => (
                msr::PAT,
                self.rng.pick(&[
                    0x0007_0406_0007_0406,
                    0x0007_0406_0007_0402,
                    0x0606_0606_0606_0606,
                ]),
            ),
            8 => (msr::STAR, self.rng.next_u64() & 0xffff_ffff_0000_0000),
            9 => (msr::LSTAR, self.rng.pick(&[canon, 1 << 60])),
            10 => (msr::SFMASK, self.rng.below(0x1_0000_0000)),
            11 => (msr::X2APIC_TPR, 0),
            12 => (msr::X2APIC_SIVR, 0x1ff),
            _ => (msr::SYSENTER_CS, 0),
        };
        let reserved = if self.rng.chance(1, 12) { 1 } else { 0 };
        MsrEntry {
            index,
            reserved,
            value,
        }
    }

    fn msr_areas(&mut self) {
        let max = self.p.max_msr_list.max(1) as u64;
        match self.rng.below(3) {
            0 => {
                let n = 1 + self.rng.below((MAX_ENTRY_LOAD as u64).min(max));
                for i in 0..n as usize {
                    self.plan.entry_load[i] = self.entry_msr();
                }
                self.set(F::VmEntryMsrLoadCount, n);
                let off = self.rng.pick(&[4, 8]);
                let a = self.address(self.pages.entry_load, off);
                self.set(F::VmEntryMsrLoadAddress, a);
            }
            1 => {
                let n = 1 + self.rng.below((MAX_EXIT_STORE as u64).min(max));
                for i in 0..n as usize {
                    self.plan.exit_store[i] = self.rng.pick(&[
                        msr::SYSENTER_CS,
                        msr::SYSENTER_ESP,
                        msr::EFER,
                        msr::PAT,
                        msr::KERNEL_GS_BASE,
                        msr::STAR,
                    ]);
                }
                self.set(F::VmExitMsrStoreCount, n);
                let off = self.rng.pick(&[4, 8]);
                let a = self.address(self.pages.exit_store, off);
                self.set(F::VmExitMsrStoreAddress, a);
            }
            _ => {
                let n = 1 + self.rng.below((MAX_EXIT_LOAD as u64).min(max));
                for i in 0..n as usize {
                    self.plan.exit_load[i] = if self.rng.chance(1, 2) {
                        MsrEntry {
                            index: msr::SYSENTER_CS,
                            reserved: 0,
                            value: self.rng.below(0x1_0000),
                        }
                    } else {
                        MsrEntry {
                            index: msr::KERNEL_GS_BASE,
                            reserved: 0,
                            value: 0xffff_8000_0000_2000,
                        }
                    };
                }
                self.set(F::VmExitMsrLoadCount, n);
                let off = self.rng.pick(&[4, 8]);
                let a = self.address(self.pages.exit_load, off);
                self.set(F::VmExitMsrLoadAddress, a);
            }
        }
    }

    fn addresses(&mut self) {
        match self.rng.below(6) {
            0 => {
                let f = self.rng.pick(&[F::IoBitmapAAddress, F::IoBitmapBAddress]);
                let page = if f == F::IoBitmapAAddress {
                    self.pages.io_a
                } else {
                    self.pages.io_b
                };
                let a = self.address(page, 0x800);
                self.set(f, a);
                self.enable(1, 25);
            }
            1 => {
                let a = self.address(self.pages.msr_bitmap, 0x10);
                self.set(F::MsrBitmapAddress, a);
            }
            2 if self.p.primary(21) => {
                let a = self.address(self.pages.virtual_apic, 0x80);
                self.set(F::VirtualApicAddress, a);
                self.enable(1, 21);
                let t = self.rng.pick(&[0u64, 0, 1, 15, 0x10, 0x100]);
                self.set(F::TprThreshold, t);
            }
            3 if self.p.secondary(0) => {
                let a = self.address(self.pages.apic_access, 1);
                self.set(F::ApicAccessAddress, a);
                self.enable(2, 0);
            }
            4 if self.p.secondary(14) => {
                let (f, page) = self.rng.pick(&[
                    (F::VmreadBitmapAddress, self.pages.vmread_bitmap),
                    (F::VmwriteBitmapAddress, self.pages.vmwrite_bitmap),
                ]);
                let a = self.address(page, 0x8);
                self.set(f, a);
                self.enable(2, 14);
            }
            5 if self.p.primary(21) => {
                let t = self.rng.pick(&[0u64, 0, 1, 15, 0x10]);
                self.set(F::TprThreshold, t);
            }
            _ => {
                let a = self.address(self.pages.msr_bitmap, 0x800);
                self.set(F::MsrBitmapAddress, a);
                let v = self.get(PROC) & !(1 << 28);
                self.set(PROC, v);
            }
        }
    }

    fn link_pointer(&mut self) {
        let v = match self.rng.below(6) {
            0 => u64::MAX,
            1 => self.pages.link_zero,
            2 => self.pages.link_vmcs,
            3 => self.pages.link_shadow,
            4 => self.pages.link_vmcs + 8,
            _ => self.beyond_phys(),
        };
        self.set(F::VmcsLinkPointer, v);
        if self.rng.chance(1, 3) && self.p.secondary(14) {
            self.enable(2, 14);
        }
    }

    fn preemption_timer(&mut self) {
        if !self.p.preemption_timer() {
            return;
        }
        self.enable(0, 6);
        // 0 exits before L2's first instruction (SDM 26.7.4); large
        // values never expire before L2's VMCALL. Small non-zero values
        // are left out: how many ticks L0's own work costs is not defined.
        let v = self.rng.pick(&[0u64, 0x10_0000, 0xffff_ffff]);
        self.set(F::VmxPreemptionTimerValue, v);
        if self.rng.chance(1, 2) {
            self.enable(3, 22);
        }
    }

    fn host_state(&mut self) {
        // Each breaks one host-state check (SDM 27.2.2-27.2.4).
        match self.rng.below(14) {
            0 => {
                let b = self.rng.pick(&[1u64, 1 << 31, 1 << 5]);
                let v = self.get(F::HostCr0) & !b;
                self.set(F::HostCr0, v);
            }
            1 => {
                let b = self.bit(32, 63);
                self.or(F::HostCr0, b);
            }
            2 => {
                let v = self.get(F::HostCr4) & !self.rng.pick(&[1u64 << 13, 1 << 5]);
                self.set(F::HostCr4, v);
            }
            3 => {
                let forbidden = !self.p.cr4_fixed1 & 0xffff_ffff;
                if forbidden != 0 {
                    let b = self.rng.pick_bit(forbidden);
                    self.or(F::HostCr4, b);
                }
            }
            4 => {
                let b = self.bit(u32::from(self.p.max_phys), 63);
                self.or(F::HostCr3, b);
            }
            5 => {
                let f = self.rng.pick(&[
                    F::HostCsSelector,
                    F::HostSsSelector,
                    F::HostDsSelector,
                    F::HostEsSelector,
                    F::HostFsSelector,
                    F::HostGsSelector,
                    F::HostTrSelector,
                ]);
                let b = self.bit(0, 2);
                self.or(f, b);
            }
            6 => {
                let f = self.rng.pick(&[F::HostCsSelector, F::HostTrSelector]);
                self.set(f, 0);
            }
            7 | 8 => {
                let f = self.rng.pick(&[
                    F::HostFsBase,
                    F::HostGsBase,
                    F::HostTrBase,
                    F::HostGdtrBase,
                    F::HostIdtrBase,
                    F::HostIa32SysenterEsp,
                    F::HostIa32SysenterEip,
                    F::HostRip,
                ]);
                let v = self.non_canonical();
                self.set(f, v);
            }
            9 => {
                let b = 1u64 << self.rng.pick(&[1u32, 9, 12, 40]);
                self.or(F::HostIa32Efer, b);
            }
            10 => {
                let v = self.get(F::HostIa32Efer) & !(1 << self.rng.pick(&[8u32, 10]));
                self.set(F::HostIa32Efer, v);
            }
            11 => {
                let byte = self.rng.below(8) * 8;
                let v = self.get(F::HostIa32Pat) | (2 << byte);
                let v = v & !(5 << byte);
                self.set(F::HostIa32Pat, v);
            }
            12 => {
                // Host address-space size off while LHV runs in IA-32e mode.
                let v = self.get(EXIT) & !(1 << 9);
                self.set(EXIT, v);
            }
            _ => {
                self.set(F::HostSsSelector, 0);
                self.set(F::HostCsSelector, 0);
            }
        }
    }

    fn misc(&mut self) {
        match self.rng.below(7) {
            0 => {
                let v = self.rng.pick(&[0u64, 1, 4, 5, 0x100]);
                self.set(F::Cr3TargetCount, v);
            }
            1 if self.p.secondary(5) => {
                let v = self.rng.pick(&[0u64, 1, 0xffff]);
                self.set(F::VirtualProcessorId, v);
                self.enable(2, 5);
            }
            2 => {
                let (m, v) = (self.rng.below(0x20), self.rng.below(0x20));
                self.set(F::PageFaultErrorCodeMask, m);
                self.set(F::PageFaultErrorCodeMatch, v);
            }
            3 => {
                let v = self.rng.next_u64();
                let f =
                    self.rng
                        .pick(&[F::Cr0GuestHostMask, F::Cr4GuestHostMask, F::Cr0ReadShadow]);
                self.set(f, v);
            }
            4 => {
                let v = self.rng.next_u64();
                self.set(F::TscOffset, v);
            }
            5 if self.p.secondary(9) => {
                // Virtual-interrupt delivery needs external-interrupt
                // exiting and the TPR shadow (SDM 27.2.1.1).
                self.enable(2, 9);
                let v = self.rng.pick(&[0u64, 0x20, 0x2020]);
                self.set(F::GuestInterruptStatus, v);
            }
            _ => {
                let v = self.rng.pick(&[0u64, 0x1f, 0xfff]);
                self.set(F::ExceptionBitmap, u64::from(u32::MAX) & !v);
            }
        }
    }

    fn mutation(&mut self) {
        match self.rng.below(20) {
            0..=2 => self.controls(false),
            3 => self.controls(true),
            4 => self.guest_crs(),
            5 => self.guest_msrs(),
            6 => self.rflags(),
            7 | 8 => self.segment(),
            9 => self.tables(),
            10 | 11 => self.non_register(),
            12 | 13 => self.injection(),
            14 | 15 => self.msr_areas(),
            16 => self.addresses(),
            17 => self.link_pointer(),
            18 => {
                if self.rng.chance(1, 2) {
                    self.preemption_timer();
                } else {
                    self.misc();
                }
            }
            _ => self.host_state(),
        }
    }

    /// Removes the combinations without one defined outcome (module doc).
    fn avoid_undefined(&mut self) {
        let info = self.get(F::VmEntryInterruptionInfo);
        let injects = info & (1 << 31) != 0;
        let ty = (info >> 8) & 7;
        let nmi = injects && ty == TYPE_NMI;
        let int = self.get(F::GuestInterruptibilityState);
        if nmi && int & BLOCK_STI != 0 {
            self.set(F::GuestInterruptibilityState, int & !BLOCK_STI);
        }
        let int = self.get(F::GuestInterruptibilityState);
        if nmi && int & BLOCK_NMI != 0 && self.get(PIN) & VIRTUAL_NMIS != 0 {
            self.set(F::GuestInterruptibilityState, int & !BLOCK_NMI);
        }
        let activity = self.get(F::GuestActivityState);
        // SDM 27.3.1.5: in HLT only external interrupts, NMIs, #DB, #MC
        // and MTF may be injected; Bochs does not check it (see above), so
        // HLT goes with those only (and not without an event to wake it).
        let vector = info & 0xff;
        let hlt_event = injects && (matches!(ty, 0 | 2) || (ty == 3 && matches!(vector, 1 | 18)));
        if activity == ACTIVITY_HLT && !hlt_event {
            self.set(F::GuestActivityState, 0);
        }
        if self.get(F::GuestRflags) & (1 << 8) != 0 {
            let v = self.get(F::GuestRflags) & !(1 << 8);
            self.set(F::GuestRflags, v);
        }
    }
}

/// The plan of one case: `rng` is the case's stream, `base` reads the
/// valid VMCS12 the case starts from.
pub fn plan(rng: SplitMix64, p: &Profile, pages: &Pages, base: &dyn Fn(F) -> u64) -> Plan {
    let mut g = Gen {
        rng,
        p,
        pages,
        base,
        plan: Plan {
            writes: [(F::GuestRip, 0); MAX_WRITES],
            n: 0,
            entry_load: [MsrEntry::default(); MAX_ENTRY_LOAD],
            exit_store: [0; MAX_EXIT_STORE],
            exit_load: [MsrEntry::default(); MAX_EXIT_LOAD],
            mutations: 0,
        },
    };
    let n = 1 + g.rng.below(4);
    g.plan.mutations = n as u32;
    for _ in 0..n {
        g.mutation();
    }
    g.avoid_undefined();
    g.plan
}
