//! The low pages LHV gives to code that runs with paging off or in real
//! mode (L2 of the UNRESTRICTED_GUEST option, the reproducers): a code page
//! and per-CPU stacks, all below 1 MiB so that real-mode code reaches them
//! (SDM Vol. 3A 21.1.1: real-mode addresses are 20 bits), apart from the AP
//! trampoline page (0x8000). Before use, the loader's memory map must say
//! the pages are usable RAM: [`range_usable`]. This is the layout (pure,
//! host-tested); the kernel checks the memory map and installs code with
//! the binary's `low_code` module.

/// Selectors of the low GDT the code in the code page loads (its first
/// entries: `LOW_GDT_64_32` in `mode_switch.S`).
pub mod gdt {
    /// 64-bit code.
    pub const CODE64: u64 = 0x08;
    /// Flat data.
    pub const DATA: u64 = 0x10;
    /// 32-bit code.
    pub const CODE32: u64 = 0x18;
}

/// CR0.PE. This and the next bits are those the low code changes on the
/// way out of 64-bit mode and back (SDM Vol. 3A 2.5 "Control Registers",
/// 2.2.1 "Extended Feature Enable Register").
pub const CR0_PE: u64 = 1 << 0;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// IA32_EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// IA32_EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;

/// Physical (and identity-mapped linear) address of the code page.
pub const CODE: u64 = 0x7000;
/// Size of the code page.
pub const CODE_SIZE: u64 = 0x1000;
/// First per-CPU stack area.
pub const STACKS: u64 = 0x5000;
/// Bytes of each CPU's area: a save slot (64-bit RSP at +0, the GDTR at
/// +8..+18) and a stack that grows down from the end.
pub const AREA: u64 = 128;
/// Areas available (64 CPUs fill the two pages below [`CODE`]).
pub const AREAS: usize = ((CODE - STACKS) / AREA) as usize;

/// The whole low range LHV uses: `[STACKS, CODE + CODE_SIZE)`.
pub const RANGE: (u64, u64) = (STACKS, CODE + CODE_SIZE);

/// Base of CPU `cpu`'s area, if there is one.
pub const fn area(cpu: usize) -> Option<u64> {
    if cpu < AREAS {
        Some(STACKS + cpu as u64 * AREA)
    } else {
        None
    }
}

/// Whether `[start, end)` lies inside the union of the `usable` regions
/// `(base, len)` and overlaps no region that is not usable (a map may list
/// overlapping entries; any non-usable overlap wins, as in E820).
pub fn range_usable(
    regions: impl Iterator<Item = (u64, u64, bool)> + Clone,
    start: u64,
    end: u64,
) -> bool {
    if start >= end {
        return false;
    }
    if regions
        .clone()
        .any(|(b, l, usable)| !usable && b < end && start < b.saturating_add(l))
    {
        return false;
    }
    // Walk forward through usable regions that cover `at`.
    let mut at = start;
    while at < end {
        let next = regions
            .clone()
            .filter(|&(b, l, usable)| usable && b <= at && at < b.saturating_add(l))
            .map(|(b, l, _)| b.saturating_add(l))
            .max();
        match next {
            Some(n) => at = n,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bochs() -> Vec<(u64, u64, bool)> {
        vec![
            (0, 0x9f000, true),
            (0x9f000, 0x1000, false),
            (0xe8000, 0x18000, false),
            (0x10_0000, 0x1ff0_0000, true),
        ]
    }

    #[test]
    fn low_pages_are_usable_on_a_bochs_map() {
        assert!(range_usable(bochs().into_iter(), RANGE.0, RANGE.1));
        assert!(!range_usable(bochs().into_iter(), 0x9e000, 0xa0000));
        assert!(!range_usable(bochs().into_iter(), 0xa0000, 0xa1000));
        assert!(!range_usable(bochs().into_iter(), 0x7000, 0x7000));
    }

    #[test]
    fn adjacent_usable_regions_join_and_reserved_overlaps_win() {
        let m = [(0, 0x6000, true), (0x6000, 0x2000, true)];
        assert!(range_usable(m.into_iter(), 0x5000, 0x8000));
        let m = [(0, 0x9f000, true), (0x7800, 0x10, false)];
        assert!(!range_usable(m.into_iter(), RANGE.0, RANGE.1));
        let m = [(0, 0x6000, true), (0x6800, 0x2000, true)];
        assert!(!range_usable(m.into_iter(), 0x5000, 0x8000));
    }

    #[test]
    fn areas_fit_below_the_code_page() {
        assert_eq!(AREAS, 64);
        assert_eq!(area(0), Some(STACKS));
        assert_eq!(area(63), Some(CODE - AREA));
        assert_eq!(area(64), None);
        // Below 1 MiB and 64 KiB: real-mode SS = 0 reaches every stack.
        assert!(RANGE.1 <= 0x1_0000);
    }
}
