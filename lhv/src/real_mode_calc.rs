//! What the real-mode routine of the UNRESTRICTED_GUEST option computes,
//! so that L2 can check the result it brings back from real mode: for each
//! nibble `n_i` of the 32-bit input (low first), `r = rotl(r, 5) ^ (T[i] *
//! n_i)` with 32-bit wrapping arithmetic, `T` the 16-bit words of
//! [`TABLE`], which the routine reads through real-mode segmentation.

/// The table the real-mode routine reads (also emitted into the low code
/// page by the option's assembly, which must keep the same words).
pub const TABLE: [u16; 8] = [
    0x9e37, 0x79b9, 0x7f4a, 0x7c15, 0xf39c, 0xc060, 0x5ced, 0xc834,
];

/// The routine's result for `x`.
pub const fn expected(x: u32) -> u32 {
    let mut r: u32 = 0;
    let mut i = 0;
    while i < 8 {
        let n = (x >> (4 * i)) & 0xf;
        r = r.rotate_left(5) ^ (TABLE[i] as u32).wrapping_mul(n);
        i += 1;
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(expected(0), 0);
        // One nibble: only the last round's product survives unrotated.
        assert_eq!(expected(0x1000_0000), 0xc834);
        assert_eq!(expected(0x0000_0001), 0x9e37u32.rotate_left(35));
        assert_ne!(expected(0x1234_5678), expected(0x1234_5679));
    }
}
