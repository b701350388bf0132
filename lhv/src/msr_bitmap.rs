//! The MSR bitmap (Intel SDM Vol. 3C 25.6.9 "MSR-Bitmap Address", and
//! 26.1.3 "Instructions That Cause VM Exits Conditionally", RDMSR/WRMSR):
//! one 4-KiB page of four 1-KiB bitmaps, read-low (MSRs 0-1FFFH),
//! read-high (C0000000H-C0001FFFH), write-low and write-high, one bit per
//! MSR. With "use MSR bitmaps", RDMSR/WRMSR exits when the MSR's bit is
//! set, and always when ECX is outside both ranges.

/// Size of the bitmap page.
pub const BITMAP_SIZE: usize = 4096;

/// First MSR of the high range.
pub const HIGH_BASE: u32 = 0xc000_0000;
/// MSRs per range.
pub const RANGE_LEN: u32 = 0x2000;

/// The direction of an MSR access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

/// The bit for `msr` and `access` as (byte offset, bit in byte), or `None`
/// for an MSR outside both ranges (whose accesses always exit).
pub const fn bit_position(msr: u32, access: Access) -> Option<(usize, u8)> {
    let (range_off, index) = if msr < RANGE_LEN {
        (0, msr)
    } else if msr >= HIGH_BASE && msr - HIGH_BASE < RANGE_LEN {
        (1024, msr - HIGH_BASE)
    } else {
        return None;
    };
    let base = match access {
        Access::Read => range_off,
        Access::Write => range_off + 2048,
    };
    Some((base + (index / 8) as usize, (index % 8) as u8))
}

/// Whether RDMSR/WRMSR of `msr` exits under `bitmap`.
pub fn exits(bitmap: &[u8; BITMAP_SIZE], msr: u32, access: Access) -> bool {
    match bit_position(msr, access) {
        Some((byte, bit)) => bitmap[byte] & (1 << bit) != 0,
        None => true,
    }
}

/// Sets or clears the bit of `msr` and `access`; false for an MSR outside
/// both ranges (which has no bit).
pub fn set(bitmap: &mut [u8; BITMAP_SIZE], msr: u32, access: Access, intercept: bool) -> bool {
    let Some((byte, bit)) = bit_position(msr, access) else {
        return false;
    };
    if intercept {
        bitmap[byte] |= 1 << bit;
    } else {
        bitmap[byte] &= !(1 << bit);
    }
    true
}

/// Whether test MSR number `k` is intercepted for `access` in iteration
/// `iter` on CPU `cpu`: every combination of the first few MSRs' read and
/// write bits occurs within 2^(2*n) iterations, offset per CPU.
pub const fn intercept_in_iter(iter: u64, cpu: usize, k: usize, access: Access) -> bool {
    let bit = 2 * k
        + match access {
            Access::Read => 0,
            Access::Write => 1,
        };
    let x = iter.wrapping_add(cpu as u64 * 5);
    // Gray-code-like mixing so that neighbouring iterations differ in
    // several bits, not only the lowest.
    let mixed = x ^ (x >> 1) ^ x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    (mixed >> (bit % 64)) & 1 != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_follow_the_sdm_layout() {
        assert_eq!(bit_position(0, Access::Read), Some((0, 0)));
        assert_eq!(bit_position(0x1fff, Access::Read), Some((1023, 7)));
        assert_eq!(bit_position(0xc000_0000, Access::Read), Some((1024, 0)));
        assert_eq!(bit_position(0xc000_1fff, Access::Read), Some((2047, 7)));
        assert_eq!(bit_position(0, Access::Write), Some((2048, 0)));
        assert_eq!(bit_position(0x175, Access::Write), Some((2048 + 0x2e, 5)));
        assert_eq!(
            bit_position(0xc000_0100, Access::Write),
            Some((3072 + 0x20, 0))
        );
        assert_eq!(bit_position(0xc000_1fff, Access::Write), Some((4095, 7)));
        assert_eq!(bit_position(0x2000, Access::Read), None);
        assert_eq!(bit_position(0xbfff_ffff, Access::Write), None);
        assert_eq!(bit_position(0xc000_2000, Access::Read), None);
        assert_eq!(bit_position(0x4000_0000, Access::Write), None);
    }

    #[test]
    fn set_and_query() {
        let mut b = [0u8; BITMAP_SIZE];
        assert!(!exits(&b, 0x175, Access::Read));
        assert!(set(&mut b, 0x175, Access::Write, true));
        assert!(exits(&b, 0x175, Access::Write));
        assert!(!exits(&b, 0x175, Access::Read));
        assert!(!exits(&b, 0x174, Access::Write));
        assert!(!exits(&b, 0xc000_0175, Access::Write));
        assert!(set(&mut b, 0x175, Access::Write, false));
        assert_eq!(b, [0; BITMAP_SIZE]);
        assert!(!set(&mut b, 0x2000, Access::Read, true));
        assert!(exits(&b, 0x2000, Access::Read));
        assert!(exits(&b, 0xc000_2000, Access::Write));
    }

    #[test]
    fn every_combination_occurs_in_twenty_iterations() {
        for cpu in 0..2 {
            let mut seen = [false; 16];
            for iter in 0..20 {
                let mut v = 0;
                for k in 0..2 {
                    for (j, a) in [Access::Read, Access::Write].into_iter().enumerate() {
                        if intercept_in_iter(iter, cpu, k, a) {
                            v |= 1 << (2 * k + j);
                        }
                    }
                }
                seen[v] = true;
            }
            let n = seen.iter().filter(|s| **s).count();
            assert!(n >= 10, "cpu {cpu}: only {n} of 16 combinations");
        }
    }
}
