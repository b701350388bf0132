//! The fuzzer's PRNG: SplitMix64 (Steele, Lea and Flood, "Fast splittable
//! pseudorandom number generators", 2014), written out so that a seed gives
//! the same stream on every platform and every build. Each case has its own
//! stream, derived from the run's seed and the case number, so a case can
//! be re-run alone (`fuzz_dump=<case>`).

/// SplitMix64's increment (the golden ratio in 64-bit fixed point).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// A SplitMix64 generator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting at `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The stream of case `case` of a run with `seed`: independent of every
    /// other case's.
    pub fn for_case(seed: u64, case: u64) -> Self {
        let mut mix = Self::new(seed ^ case.wrapping_mul(0xd1b5_4a32_d192_ed03));
        Self::new(mix.next_u64())
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One element of `items` (non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// One set bit of `mask` (non-zero), as a mask.
    pub fn pick_bit(&mut self, mask: u64) -> u64 {
        let n = self.below(u64::from(mask.count_ones()));
        let mut m = mask;
        for _ in 0..n {
            m &= m - 1;
        }
        m & m.wrapping_neg()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_stream() {
        // Reference values of SplitMix64 seeded with 1234567 (from the
        // published C implementation, splitmix64.c).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn cases_have_different_streams_and_repeat() {
        let a = SplitMix64::for_case(7, 0).next_u64();
        let b = SplitMix64::for_case(7, 1).next_u64();
        assert_ne!(a, b);
        assert_eq!(a, SplitMix64::for_case(7, 0).next_u64());
    }

    #[test]
    fn pick_bit_picks_set_bits_only() {
        let mut r = SplitMix64::new(3);
        for _ in 0..1000 {
            let b = r.pick_bit(0b1010_0100);
            assert_eq!(b.count_ones(), 1);
            assert_ne!(b & 0b1010_0100, 0);
        }
    }
}
