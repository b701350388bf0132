//! An MSR bitmap (SDM Vol. 3C, 25.6.9 "MSR-Bitmap Address") built at
//! compile time, and the sparse form a hypervisor merges into another
//! bitmap: the processor reads a 4-KiB page of four 1-KiB bitmaps, and a
//! hypervisor that intercepts a few dozen MSRs has only a few dozen
//! non-zero 64-bit words in it.

use super::nested::reflect::{MsrAccess, msr_bitmap_bit};

/// 64-bit words in the 4-KiB page.
pub const WORDS: usize = 512;

/// The page as 64-bit words (the processor's byte layout on a
/// little-endian machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(4096))]
pub struct MsrBitmap(pub [u64; WORDS]);

impl MsrBitmap {
    /// Nothing intercepted (MSRs outside both ranges exit anyway).
    pub const EMPTY: Self = Self([0; WORDS]);

    /// The bitmap with the accesses of `msr` set to exit (RDMSR if `read`,
    /// WRMSR if `write`); unchanged for an MSR outside both ranges.
    pub const fn intercept(mut self, msr: u32, read: bool, write: bool) -> Self {
        if read && let Some(bit) = msr_bitmap_bit(msr, MsrAccess::Read) {
            self.0[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        if write && let Some(bit) = msr_bitmap_bit(msr, MsrAccess::Write) {
            self.0[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self
    }

    /// [`MsrBitmap::intercept`] of both directions for `first..=last`.
    pub const fn intercept_range(mut self, first: u32, last: u32) -> Self {
        let mut m = first;
        while m <= last {
            self = self.intercept(m, true, true);
            if m == u32::MAX {
                break;
            }
            m += 1;
        }
        self
    }

    /// Whether `access` of `msr` exits (always, outside both ranges).
    pub const fn intercepts(&self, msr: u32, access: MsrAccess) -> bool {
        match msr_bitmap_bit(msr, access) {
            Some(bit) => self.0[(bit / 64) as usize] & (1 << (bit % 64)) != 0,
            None => true,
        }
    }

    /// How many words are not zero (the `N` of [`MsrBitmap::sparse`]).
    pub const fn nonzero_words(&self) -> usize {
        let (mut i, mut n) = (0, 0);
        while i < WORDS {
            if self.0[i] != 0 {
                n += 1;
            }
            i += 1;
        }
        n
    }

    /// The non-zero words with their indices, in order, in room for `N`
    /// (at least [`MsrBitmap::nonzero_words`]: a constant evaluation
    /// fails if not).
    pub const fn sparse<const N: usize>(&self) -> SparseMsrBitmap<N> {
        assert!(N >= self.nonzero_words());
        let mut words = [(0, 0); N];
        let (mut i, mut n) = (0, 0);
        while i < WORDS {
            if self.0[i] != 0 {
                words[n] = (i as u16, self.0[i]);
                n += 1;
            }
            i += 1;
        }
        SparseMsrBitmap { words, len: n }
    }
}

/// The non-zero words of an [`MsrBitmap`] as (index, word), the first
/// `len` of `words`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseMsrBitmap<const N: usize> {
    words: [(u16, u64); N],
    len: usize,
}

impl<const N: usize> SparseMsrBitmap<N> {
    /// The (index, word) pairs.
    pub fn words(&self) -> &[(u16, u64)] {
        &self.words[..self.len]
    }

    /// ORs the bitmap into `words`: afterwards an access exits by `words`
    /// if it exited by either (one operation per non-zero word instead of
    /// 512).
    pub fn merge_into(&self, words: &mut [u64; WORDS]) {
        for &(i, w) in self.words() {
            words[usize::from(i)] |= w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const B: MsrBitmap = MsrBitmap::EMPTY
        .intercept(0x3a, true, true)
        .intercept(0x830, false, true)
        .intercept(0xc000_0080, true, false)
        .intercept_range(0x200, 0x21f)
        .intercept(0x4000_0000, true, true);

    #[test]
    fn intercepts_what_was_set_and_nothing_else() {
        use MsrAccess::{Read, Write};
        assert!(B.intercepts(0x3a, Read) && B.intercepts(0x3a, Write));
        assert!(!B.intercepts(0x830, Read) && B.intercepts(0x830, Write));
        assert!(B.intercepts(0xc000_0080, Read) && !B.intercepts(0xc000_0080, Write));
        assert!((0x200..=0x21f).all(|m| B.intercepts(m, Read) && B.intercepts(m, Write)));
        for m in [
            0x0,
            0x39,
            0x3b,
            0x1ff,
            0x220,
            0x1fff,
            0xc000_0081,
            0xc000_1fff,
        ] {
            assert!(!B.intercepts(m, Read) && !B.intercepts(m, Write), "{m:#x}");
        }
        // Outside both ranges: always exits, and no bit was set for it.
        assert!(B.intercepts(0x4000_0000, Read));
        assert_eq!(
            B.0.iter().map(|w| w.count_ones()).sum::<u32>(),
            2 + 1 + 1 + 64
        );
    }

    #[test]
    fn layout_is_the_sdms() {
        // Read low at byte 0, read high at 1024, write low at 2048, write
        // high at 3072 (SDM 25.6.9).
        let b = MsrBitmap::EMPTY.intercept(0x3a, true, false);
        assert_eq!(b.0[0], 1 << 0x3a);
        let b = MsrBitmap::EMPTY.intercept(0xc000_0080, false, true);
        assert_eq!(b.0[(3072 * 8 + 0x80) / 64], 1 << (0x80 % 64));
    }

    #[test]
    fn sparse_lists_the_nonzero_words() {
        const S: SparseMsrBitmap<{ B.nonzero_words() }> = B.sparse();
        let w = S.words();
        assert_eq!(w.len(), B.0.iter().filter(|&&w| w != 0).count());
        assert!(w.windows(2).all(|p| p[0].0 < p[1].0));
        assert!(w.iter().all(|&(i, x)| B.0[usize::from(i)] == x && x != 0));
        assert!(MsrBitmap::EMPTY.sparse::<0>().words().is_empty());
    }

    proptest! {
        #[test]
        fn merge_is_the_or_of_every_word(
            msrs in proptest::collection::vec(
                (0u32..0x2000, any::<bool>(), any::<bool>(), any::<bool>()),
                0..40,
            ),
            seed in any::<u64>(),
        ) {
            let mut b = MsrBitmap::EMPTY;
            for (m, high, r, w) in msrs {
                b = b.intercept(if high { 0xc000_0000 + m } else { m }, r, w);
            }
            let mut words: [u64; WORDS] = core::array::from_fn(|i| {
                seed.rotate_left(i as u32) & (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            });
            let expect: [u64; WORDS] = core::array::from_fn(|i| words[i] | b.0[i]);
            let sparse = b.sparse::<WORDS>();
            prop_assert_eq!(sparse.words().len(), b.nonzero_words());
            sparse.merge_into(&mut words);
            prop_assert_eq!(words, expect);
        }
    }
}
