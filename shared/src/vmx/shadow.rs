//! VMCS shadowing for a guest hypervisor (SDM 25.10, 25.6.15, 26.1.3): the
//! fields of L1's current VMCS that L0 keeps in a shadow VMCS, where L1's
//! VMREAD and VMWRITE reach them without a VM exit, and the VMREAD and
//! VMWRITE bitmaps that say so.
//!
//! The fields are the ones a guest hypervisor touches at nearly every exit
//! of its guest (the exit information, the guest's RIP, RSP, RFLAGS,
//! interruptibility and control registers, event injection, the host RSP).
//! All have the nested policy `Copy` or `ExitInfo`, or are L1's host state
//! (`Owned`, loaded into VMCS01 at a reflected exit): L0 reads them only while it handles
//! L1's VMX instructions or while L2 runs, and it copies the shadow back
//! into its VMCS12 before either (see the hypervisor's `nested::shadow`).

use super::fields::{FieldGroup, Nested, VmcsField as F};

/// Fields L1 both reads and writes through the shadow.
pub const READ_WRITE: [F; 13] = [
    F::GuestRip,
    F::GuestRsp,
    F::GuestRflags,
    F::GuestInterruptibilityState,
    F::GuestCr0,
    F::GuestCr3,
    F::GuestCr4,
    F::VmEntryInterruptionInfo,
    F::VmEntryExceptionErrorCode,
    F::VmEntryInstructionLength,
    F::VmxPreemptionTimerValue,
    F::GuestActivityState,
    // A guest hypervisor's exit stub sets it before every entry (LHV's,
    // KVM's when its stack moved); L0 reads it at a reflected exit only.
    F::HostRsp,
];

/// Exit information L1 reads through the shadow; its VMWRITEs still exit,
/// so that L0 applies the VMWRITE rules it offers (IA32_VMX_MISC bit 29).
/// L0 can fill them only on a processor whose VMWRITE may write any field.
pub const READ_ONLY: [F; 11] = [
    F::VmInstructionError,
    F::VmExitReason,
    F::ExitQualification,
    F::VmExitInstructionLength,
    F::VmExitInstructionInfo,
    F::VmExitInterruptionInfo,
    F::VmExitInterruptionErrorCode,
    F::IdtVectoringInfo,
    F::IdtVectoringErrorCode,
    F::GuestLinearAddress,
    F::GuestPhysicalAddress,
];

/// 64-bit words of a VMREAD or VMWRITE bitmap (4 KiB).
pub const WORDS: usize = 512;

/// Bits 14:0 of an encoding index a bitmap (SDM 25.6.15).
const INDEX_MASK: u32 = 0x7fff;

/// A VMREAD or VMWRITE bitmap: bit n set means that the instruction exits
/// for the encodings whose bits 14:0 are n (encodings with any of bits
/// 63:15 set always exit, SDM 26.1.3).
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct Bitmap(pub [u64; WORDS]);

impl Bitmap {
    /// Every access exits except those to the fields of `lists`; for a
    /// 64-bit field, to both its full and its high encoding.
    pub const fn passing(lists: &[&[F]]) -> Self {
        let mut words = [u64::MAX; WORDS];
        let mut l = 0;
        while l < lists.len() {
            let mut i = 0;
            while i < lists[l].len() {
                let f = lists[l][i];
                clear(&mut words, f.encoding());
                if let Some(high) = f.high_encoding() {
                    clear(&mut words, high);
                }
                i += 1;
            }
            l += 1;
        }
        Self(words)
    }

    /// Whether VMREAD/VMWRITE of `encoding` exits by this bitmap.
    pub const fn exits(&self, encoding: u64) -> bool {
        if encoding > INDEX_MASK as u64 {
            return true;
        }
        let n = encoding as usize;
        self.0[n / 64] & (1 << (n % 64)) != 0
    }
}

const fn clear(words: &mut [u64; WORDS], encoding: u32) {
    let n = (encoding & INDEX_MASK) as usize;
    words[n / 64] &= !(1 << (n % 64));
}

/// The VMREAD bitmap: both lists pass (`with_exit_info`), or only
/// [`READ_WRITE`] on a processor whose VMWRITE cannot fill exit information.
pub const fn vmread_bitmap(with_exit_info: bool) -> Bitmap {
    if with_exit_info {
        Bitmap::passing(&[&READ_WRITE, &READ_ONLY])
    } else {
        Bitmap::passing(&[&READ_WRITE])
    }
}

/// The VMWRITE bitmap: [`READ_WRITE`] passes.
pub const fn vmwrite_bitmap() -> Bitmap {
    Bitmap::passing(&[&READ_WRITE])
}

/// Whether `f` is shadowed (read through the shadow VMCS).
pub fn is_shadowed(f: F, with_exit_info: bool) -> bool {
    READ_WRITE.contains(&f) || (with_exit_info && READ_ONLY.contains(&f))
}

// Checked at compile time: the read-write fields are not exit information,
// and VMCS02 takes them as they are (`Copy`) or L0 loads them into VMCS01
// at a reflected exit (host state); the read-only ones are exit information.
const _: () = {
    let mut i = 0;
    while i < READ_WRITE.len() {
        assert!(!READ_WRITE[i].is_read_only());
        assert!(matches!(
            (READ_WRITE[i].nested(), READ_WRITE[i].group()),
            (Nested::Copy, _) | (Nested::Owned, FieldGroup::Host)
        ));
        i += 1;
    }
    let mut i = 0;
    while i < READ_ONLY.len() {
        assert!(READ_ONLY[i].is_read_only());
        assert!(matches!(READ_ONLY[i].nested(), Nested::ExitInfo));
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bitmaps_pass_exactly_the_listed_fields() {
        let read = vmread_bitmap(true);
        let write = vmwrite_bitmap();
        for f in F::ALL {
            let rw = READ_WRITE.contains(f);
            let ro = READ_ONLY.contains(f);
            assert_eq!(read.exits(f.encoding().into()), !(rw || ro), "{}", f.name());
            assert_eq!(write.exits(f.encoding().into()), !rw, "{}", f.name());
            if let Some(h) = f.high_encoding() {
                assert_eq!(read.exits(h.into()), !(rw || ro), "{} high", f.name());
                assert_eq!(write.exits(h.into()), !rw, "{} high", f.name());
            }
        }
        assert!(!read.exits(F::GuestPhysicalAddress.encoding().into()));
        assert!(!read.exits((F::GuestPhysicalAddress.encoding() | 1).into()));
        let rw_only = vmread_bitmap(false);
        assert!(rw_only.exits(F::VmExitReason.encoding().into()));
        assert!(!rw_only.exits(F::GuestRip.encoding().into()));
    }

    #[test]
    fn fields_l0_consults_while_l1_runs_are_never_shadowed() {
        // L0 reads these outside L1's VMX instructions and L2's exits (EPT
        // shootdowns, the entry's merges): the shadow must not hold a newer
        // value than VMCS12.
        for f in [
            F::EptPointer,
            F::PrimaryProcBasedVmExecControls,
            F::SecondaryProcBasedVmExecControls,
            F::PinBasedVmExecControls,
            F::VmcsLinkPointer,
            F::MsrBitmapAddress,
        ] {
            assert!(!is_shadowed(f, true), "{}", f.name());
            assert!(vmwrite_bitmap().exits(f.encoding().into()));
        }
    }

    proptest! {
        #[test]
        fn encodings_above_bit_14_always_exit(e in 0x8000u64..) {
            prop_assert!(vmread_bitmap(true).exits(e));
            prop_assert!(vmwrite_bitmap().exits(e));
        }

        #[test]
        fn an_encoding_passes_only_as_a_listed_field(e in 0u64..0x8000) {
            let listed = F::from_encoding(e as u32)
                .is_some_and(|(f, _)| is_shadowed(f, true));
            prop_assert_eq!(!vmread_bitmap(true).exits(e), listed);
        }
    }
}
