//! Guard pages: 4-KiB pages of the image that the kernel's own page tables
//! leave not present, so that a stack growing past its end faults (a #PF
//! whose delivery faults again, hence a #DF on its IST stack) instead of
//! silently overwriting whatever the linker put below it.
//!
//! The image is mapped with 2-MiB pages; a large page that holds a guard is
//! mapped through a 4-KiB page table instead ([`split_large_page`]). The
//! arithmetic is here, pure and host-tested; the kernel writes the tables.

/// Bytes of a small page (and of one guard).
pub const PAGE: u64 = 4096;
/// Bytes of a large page (a PD entry with PS = 1).
pub const LARGE_PAGE: u64 = 2 << 20;
/// Entries of a page table.
const ENTRIES: usize = 512;

/// An array of `count` elements of `stride` bytes at virtual `base`, each
/// beginning with one guard page (a stack's lowest page, for stacks that
/// grow down from the element's guard towards its end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardedArray {
    pub base: u64,
    pub stride: u64,
    pub count: u64,
}

impl GuardedArray {
    /// Whether the page at `va` is one of the guards. Usable arrays have a
    /// page-aligned base and stride of at least two pages; others have no
    /// guards (nothing is unmapped that might be used).
    pub fn is_guard(&self, va: u64) -> bool {
        if !self.is_usable() || va < self.base {
            return false;
        }
        let off = va - self.base;
        off / self.stride < self.count && off % self.stride < PAGE
    }

    /// Base and stride page-aligned, an element bigger than its guard.
    pub fn is_usable(&self) -> bool {
        self.base & (PAGE - 1) == 0 && self.stride & (PAGE - 1) == 0 && self.stride > PAGE
    }

    /// The array's virtual range `[start, end)`.
    pub fn span(&self) -> (u64, u64) {
        (
            self.base,
            self.base
                .saturating_add(self.stride.saturating_mul(self.count)),
        )
    }

    /// The guard of the element that holds `va`, if `va` is in a guard (for
    /// the fault report: which CPU's stack overflowed).
    pub fn element_of_guard(&self, va: u64) -> Option<u64> {
        self.is_guard(va).then(|| (va - self.base) / self.stride)
    }

    /// The 2-MiB pages (virtual, aligned) that hold at least one guard: at
    /// most [`max_split_pages`] of them.
    pub fn large_pages(&self) -> impl Iterator<Item = u64> + '_ {
        let (start, end) = self.span();
        let first = start - start % LARGE_PAGE;
        (first..end)
            .step_by(LARGE_PAGE as usize)
            .filter(move |&lp| {
                self.is_usable()
                    && (lp..lp + LARGE_PAGE)
                        .step_by(PAGE as usize)
                        .any(|va| self.is_guard(va))
            })
    }
}

/// An upper bound on the large pages an array of `bytes` bytes touches
/// (for sizing the page tables at compile time).
pub const fn max_split_pages(bytes: u64) -> u64 {
    bytes.div_ceil(LARGE_PAGE) + 1
}

/// The 512 entries of a page table that maps the large page at virtual
/// `va` onto physical `pa` with `flags` (P, W, G...), its guards not
/// present (zero).
pub fn split_large_page(va: u64, pa: u64, flags: u64, guards: &GuardedArray) -> [u64; ENTRIES] {
    let mut table = [0u64; ENTRIES];
    for (i, e) in table.iter_mut().enumerate() {
        let off = i as u64 * PAGE;
        if !guards.is_guard(va + off) {
            *e = (pa + off) | flags;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BASE: u64 = 0xffff_ffff_8026_c000;

    fn array(count: u64) -> GuardedArray {
        GuardedArray {
            base: BASE,
            stride: 19 * PAGE,
            count,
        }
    }

    #[test]
    fn only_each_elements_first_page_is_a_guard() {
        let a = array(4);
        assert!(a.is_guard(BASE));
        assert!(a.is_guard(BASE + PAGE - 1));
        assert!(!a.is_guard(BASE + PAGE));
        assert!(!a.is_guard(BASE - 1));
        assert!(a.is_guard(BASE + 19 * PAGE));
        assert!(a.is_guard(BASE + 3 * 19 * PAGE));
        assert!(!a.is_guard(BASE + 4 * 19 * PAGE), "past the last element");
        assert_eq!(a.element_of_guard(BASE + 2 * 19 * PAGE + 8), Some(2));
        assert_eq!(a.element_of_guard(BASE + 2 * 19 * PAGE + PAGE), None);
    }

    #[test]
    fn misaligned_arrays_have_no_guards() {
        let mut a = array(4);
        a.base += 16;
        assert!(!a.is_guard(a.base));
        assert_eq!(a.large_pages().count(), 0);
        let b = GuardedArray {
            base: BASE,
            stride: PAGE,
            count: 4,
        };
        assert!(!b.is_guard(BASE), "an element that is all guard");
    }

    #[test]
    fn split_table_maps_all_but_the_guards() {
        let a = array(64);
        let lp = a.large_pages().next().unwrap();
        assert_eq!(lp, BASE - BASE % LARGE_PAGE);
        let pa = 0x1be0_0000;
        let t = split_large_page(lp, pa, 0x103, &a);
        for (i, e) in t.iter().enumerate() {
            let va = lp + i as u64 * PAGE;
            if a.is_guard(va) {
                assert_eq!(*e, 0, "guard {va:#x} mapped");
            } else {
                assert_eq!(*e, (pa + i as u64 * PAGE) | 0x103);
            }
        }
        assert!(t.contains(&0));
    }

    proptest! {
        #[test]
        fn large_pages_are_exactly_those_with_guards(count in 0u64..80, stride_pages in 2u64..40, base_page in 0u64..1024) {
            let a = GuardedArray { base: BASE + base_page * PAGE, stride: stride_pages * PAGE, count };
            let pages: Vec<u64> = a.large_pages().collect();
            prop_assert!(pages.len() as u64 <= max_split_pages(a.stride * a.count));
            for k in 0..count {
                let g = a.base + k * a.stride;
                prop_assert!(pages.contains(&(g - g % LARGE_PAGE)));
            }
            for lp in pages {
                let t = split_large_page(lp, 0, 1, &a);
                prop_assert!(t.contains(&0));
            }
        }
    }
}
