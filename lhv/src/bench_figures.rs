//! The arithmetic of benchmark mode (`mode=bench`), kept pure so that the
//! host tests check it: L0's CPUID signature, the round-trip statistics L2
//! gathers, and the L0 exits per L2 exit with their calibration.

use core::fmt;

/// The hypervisor CPUID leaf in which L0 puts its signature.
pub const L0_CPUID_LEAF: u32 = 0x4000_0000;
/// L0's signature in that leaf, as EBX, ECX, EDX spell it.
pub const L0_SIGNATURE: &[u8; 12] = b"L0LateLaunch";

/// Whether CPUID leaf [`L0_CPUID_LEAF`] returned L0's signature.
pub fn is_l0_signature(ebx: u32, ecx: u32, edx: u32) -> bool {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&ebx.to_le_bytes());
    s[4..8].copy_from_slice(&ecx.to_le_bytes());
    s[8..12].copy_from_slice(&edx.to_le_bytes());
    &s == L0_SIGNATURE
}

/// The cycles of each measured round trip, summed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTrips {
    /// How many were measured.
    pub n: u64,
    /// Their sum.
    pub sum: u64,
    /// The shortest.
    pub min: u64,
    /// The longest.
    pub max: u64,
}

impl RoundTrips {
    /// None measured yet.
    pub const fn new() -> Self {
        Self {
            n: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// Adds one round trip of `cycles`.
    pub fn add(&mut self, cycles: u64) {
        self.n += 1;
        self.sum = self.sum.saturating_add(cycles);
        self.min = self.min.min(cycles);
        self.max = self.max.max(cycles);
    }

    /// The mean, rounded to the nearest cycle (0 when none was measured).
    pub fn average(&self) -> u64 {
        (self.sum.saturating_add(self.n / 2))
            .checked_div(self.n)
            .unwrap_or(0)
    }

    /// The shortest (0 when none was measured).
    pub fn minimum(&self) -> u64 {
        if self.n == 0 { 0 } else { self.min }
    }
}

impl Default for RoundTrips {
    fn default() -> Self {
        Self::new()
    }
}

/// A count per operation in hundredths, printed as `x.yy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hundredths(pub u64);

impl fmt::Display for Hundredths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// L0's exits per L2 exit: L0's exit counter moved by `delta` across a
/// loop of `n` round trips and by `calibration` across the same loop with
/// none (the Stats calls, the hand-over between L1 and L2), so each round
/// trip cost `(delta - calibration) / n` exits of L0, rounded to the
/// nearest hundredth. `None` when `n` is 0.
pub fn l0_exits_per_exit(delta: u64, calibration: u64, n: u64) -> Option<Hundredths> {
    if n == 0 {
        return None;
    }
    let extra = delta.saturating_sub(calibration) as u128;
    let n = n as u128;
    Some(Hundredths(((extra * 100 + n / 2) / n) as u64))
}

/// `part / whole` in hundredths (rounded to nearest), `None` when `whole`
/// is 0: EPT02 faults per page touched.
pub fn per(part: u64, whole: u64) -> Option<Hundredths> {
    if whole == 0 {
        return None;
    }
    let (p, w) = (part as u128, whole as u128);
    Some(Hundredths(((p * 100 + w / 2) / w) as u64))
}

/// `part / whole` as a percentage in hundredths (`x.yy` percent), `None`
/// when `whole` is 0: the EPT02 root hit rate.
pub fn percent(part: u64, whole: u64) -> Option<Hundredths> {
    per(part.saturating_mul(100), whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
        (w(0), w(4), w(8))
    }

    #[test]
    fn signature() {
        let (b, c, d) = words(L0_SIGNATURE);
        assert!(is_l0_signature(b, c, d));
        assert!(!is_l0_signature(c, b, d));
        let (b, c, d) = words(b"GenuineIntel");
        assert!(!is_l0_signature(b, c, d));
        assert!(!is_l0_signature(0, 0, 0));
    }

    #[test]
    fn round_trips() {
        let mut r = RoundTrips::new();
        assert_eq!((r.average(), r.minimum()), (0, 0));
        for c in [10, 12, 11, 30] {
            r.add(c);
        }
        assert_eq!(r.n, 4);
        assert_eq!(r.sum, 63);
        assert_eq!((r.average(), r.minimum(), r.max), (16, 10, 30));
        let mut r = RoundTrips::new();
        r.add(5);
        r.add(6);
        assert_eq!(r.average(), 6, "5.5 rounds up");
    }

    #[test]
    fn per_page_and_hit_rates() {
        assert_eq!(per(64, 64).unwrap().to_string(), "1.00");
        assert_eq!(per(1, 64).unwrap().to_string(), "0.02");
        assert_eq!(per(0, 64).unwrap().to_string(), "0.00");
        assert_eq!(per(130, 64).unwrap().to_string(), "2.03");
        assert_eq!(per(1, 0), None);
        assert_eq!(percent(1001, 1001).unwrap().to_string(), "100.00");
        assert_eq!(percent(0, 1001).unwrap().to_string(), "0.00");
        assert_eq!(percent(998, 1001).unwrap().to_string(), "99.70");
        assert_eq!(percent(2, 3).unwrap().to_string(), "66.67");
        assert_eq!(percent(5, 0), None);
    }

    #[test]
    fn exits_per_exit() {
        assert_eq!(l0_exits_per_exit(7005, 5, 1000), Some(Hundredths(700)));
        assert_eq!(
            l0_exits_per_exit(7005, 5, 1000).unwrap().to_string(),
            "7.00"
        );
        assert_eq!(
            l0_exits_per_exit(1238, 4, 1000).unwrap().to_string(),
            "1.23"
        );
        assert_eq!(
            l0_exits_per_exit(1239, 4, 1000).unwrap().to_string(),
            "1.24"
        );
        assert_eq!(l0_exits_per_exit(3, 5, 10).unwrap().to_string(), "0.00");
        assert_eq!(l0_exits_per_exit(1, 0, 3).unwrap().to_string(), "0.33");
        assert_eq!(l0_exits_per_exit(10, 0, 0), None);
        assert_eq!(Hundredths(1205).to_string(), "12.05");
    }
}
