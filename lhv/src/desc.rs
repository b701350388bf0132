//! Segment-descriptor decoding the VMCS setup needs (SDM Vol. 3A 3.4.5,
//! 8.2.3 "TSS Descriptor in 64-bit mode").

/// The base address in a 16-byte system-segment descriptor (TSS or LDT in
/// IA-32e mode), given as its low and high quadwords.
pub const fn system_descriptor_base(low: u64, high: u64) -> u64 {
    let base_15_0 = (low >> 16) & 0xffff;
    let base_23_16 = (low >> 32) & 0xff;
    let base_31_24 = (low >> 56) & 0xff;
    base_15_0 | (base_23_16 << 16) | (base_31_24 << 24) | ((high & 0xffff_ffff) << 32)
}

/// The limit (in bytes, granularity applied) of a segment descriptor.
pub const fn descriptor_limit(low: u64) -> u32 {
    let raw = ((low & 0xffff) | ((low >> 32) & 0xf_0000)) as u32;
    if low & (1 << 55) != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// Whether `addr` is canonical for 48-bit linear addresses (bits 63:47 all
/// equal).
pub const fn is_canonical(addr: u64) -> bool {
    let top = (addr as i64) >> 47;
    top == 0 || top == -1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tss_descriptor_base_and_limit() {
        // Base 0xffff_ffff_8012_3456, limit 0x67, type 0x9 (available TSS), P.
        let base: u64 = 0xffff_ffff_8012_3456;
        let low = 0x67 | ((base & 0xff_ffff) << 16) | (0x89 << 40) | (((base >> 24) & 0xff) << 56);
        let high = base >> 32;
        assert_eq!(system_descriptor_base(low, high), base);
        assert_eq!(descriptor_limit(low), 0x67);
        // Granularity set: limit 0xfffff pages.
        assert_eq!(
            descriptor_limit(0x000f_0000_0000_ffff | (1 << 55)),
            0xffff_ffff
        );
    }

    #[test]
    fn canonical_addresses() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7fff_ffff_ffff));
        assert!(is_canonical(0xffff_8000_0000_0000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(0x8000_0000_0000_0000));
    }
}
