//! Reading and writing VMCS fields by their typed names.
//!
//! [`VmcsAccess`] is implemented by the current hardware VMCS
//! ([`super::insn::CurrentVmcs`], through VMREAD/VMWRITE) and by [`MemVmcs`],
//! an array-backed VMCS used as L0's copy of a guest's VMCS12 and in host
//! tests. Code that translates between VMCSs is written once over the trait.

use super::fields::{FieldGroup, Nested, VmcsField};

/// Access to the fields of one VMCS.
///
/// Infallible at this level: the hardware implementation reports VMfail
/// through its own checked methods. Values are 64 bits wide; writes of
/// narrower fields keep only the field's bits (as VMWRITE does).
pub trait VmcsAccess {
    /// Reads field `f`.
    fn read(&self, f: VmcsField) -> u64;

    /// Writes field `f` (truncated to the field's width).
    fn write(&mut self, f: VmcsField, v: u64);

    /// Reads a 16-bit field's value (other widths are truncated).
    fn read16(&self, f: VmcsField) -> u16 {
        self.read(f) as u16
    }

    /// Reads a 32-bit field's value (other widths are truncated).
    fn read32(&self, f: VmcsField) -> u32 {
        self.read(f) as u32
    }

    /// Sets the bits of `bits` in field `f` (read-modify-write).
    fn set_bits(&mut self, f: VmcsField, bits: u64) {
        let v = self.read(f);
        self.write(f, v | bits);
    }

    /// Clears the bits of `bits` in field `f` (read-modify-write).
    fn clear_bits(&mut self, f: VmcsField, bits: u64) {
        let v = self.read(f);
        self.write(f, v & !bits);
    }
}

/// Copies every field of `fields` from `src` to `dst`.
pub fn copy_fields<'a>(
    src: &impl VmcsAccess,
    dst: &mut impl VmcsAccess,
    fields: impl IntoIterator<Item = &'a VmcsField>,
) {
    for &f in fields {
        dst.write(f, src.read(f));
    }
}

/// The fields of `group` whose nested policy is `nested`, in table order
/// (e.g. the guest-state fields copied from VMCS12 to VMCS02).
pub fn fields_with(group: FieldGroup, nested: Nested) -> impl Iterator<Item = VmcsField> {
    VmcsField::ALL
        .iter()
        .copied()
        .filter(move |f| f.group() == group && f.nested() == nested)
}

/// An in-memory VMCS: one `u64` per field, indexed by [`VmcsField::index`].
///
/// Its layout is private to this program (the hardware VMCS format is
/// implementation specific); L0 keeps a guest's VMCS12 as one of these.
#[derive(Clone, PartialEq, Eq)]
pub struct MemVmcs {
    values: [u64; VmcsField::COUNT],
}

impl MemVmcs {
    /// A VMCS whose fields are all zero.
    pub const fn new() -> Self {
        Self {
            values: [0; VmcsField::COUNT],
        }
    }

    /// Every field with its value, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (VmcsField, u64)> + '_ {
        VmcsField::ALL.iter().map(|&f| (f, self.values[f.index()]))
    }
}

impl Default for MemVmcs {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for MemVmcs {
    /// Lists the non-zero fields only.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_map()
            .entries(
                self.iter()
                    .filter(|&(_, v)| v != 0)
                    .map(|(k, v)| (k.name(), v)),
            )
            .finish()
    }
}

impl VmcsAccess for MemVmcs {
    #[inline]
    fn read(&self, f: VmcsField) -> u64 {
        self.values[f.index()]
    }

    #[inline]
    fn write(&mut self, f: VmcsField, v: u64) {
        self.values[f.index()] = v & f.mask();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmx::fields::FieldWidth;

    #[test]
    fn writes_are_truncated_to_the_field_width() {
        let mut v = MemVmcs::new();
        for &f in VmcsField::ALL {
            v.write(f, u64::MAX);
            let expect = match f.width() {
                FieldWidth::Bits16 => 0xffff,
                FieldWidth::Bits32 => 0xffff_ffff,
                FieldWidth::Bits64 | FieldWidth::Natural => u64::MAX,
            };
            assert_eq!(v.read(f), expect, "{f}");
        }
    }

    #[test]
    fn fields_are_independent() {
        let mut v = MemVmcs::new();
        for (i, &f) in VmcsField::ALL.iter().enumerate() {
            v.write(f, i as u64 + 1);
        }
        for (i, &f) in VmcsField::ALL.iter().enumerate() {
            assert_eq!(v.read(f), i as u64 + 1);
        }
        assert_eq!(v.read16(VmcsField::VirtualProcessorId), 1);
    }

    #[test]
    fn bit_helpers_and_copy() {
        let mut a = MemVmcs::new();
        a.write(VmcsField::ExceptionBitmap, 0b1010);
        a.set_bits(VmcsField::ExceptionBitmap, 0b0101);
        assert_eq!(a.read32(VmcsField::ExceptionBitmap), 0b1111);
        a.clear_bits(VmcsField::ExceptionBitmap, 0b0011);
        assert_eq!(a.read(VmcsField::ExceptionBitmap), 0b1100);

        a.write(VmcsField::GuestRip, 0xdead_beef);
        a.write(VmcsField::HostRip, 0x1234);
        let mut b = MemVmcs::new();
        let copied: Vec<VmcsField> = fields_with(FieldGroup::Guest, Nested::Copy).collect();
        assert!(copied.contains(&VmcsField::GuestRip));
        copy_fields(&a, &mut b, &copied);
        assert_eq!(b.read(VmcsField::GuestRip), 0xdead_beef);
        assert_eq!(b.read(VmcsField::HostRip), 0);
        assert!(format!("{b:?}").contains("GuestRip"));
    }
}
