//! The BIOS memory map (INT 15h, EAX = E820h) as L0 edits it for its guest,
//! and the older size calls derived from it (E801h, AH = 88h).
//!
//! A [`E820Map`] is always normalised: entries sorted by base, non-empty,
//! non-overlapping, and adjacent entries of the same type merged. Overlaps in
//! the firmware's map are resolved the way Linux's `e820__update_table`
//! does: where entries overlap, the larger type number wins (so any
//! reserved kind beats usable RAM). [`E820Map::set_range`] overrides a range
//! with one type whatever was there, which is how L0 hides its own memory.

use heapless::Vec;

/// Most entries a map holds (firmware maps have a few dozen at most).
pub const MAX_ENTRIES: usize = 128;

/// E820 address-range types (ACPI 6.5, Table 15.312).
pub mod kind {
    /// Usable RAM.
    pub const USABLE: u32 = 1;
    /// Reserved, must not be used by the OS.
    pub const RESERVED: u32 = 2;
    /// ACPI tables, reclaimable after they are read.
    pub const ACPI_RECLAIMABLE: u32 = 3;
    /// ACPI NVS memory.
    pub const ACPI_NVS: u32 = 4;
    /// Memory with errors.
    pub const UNUSABLE: u32 = 5;
}

/// One address range of the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    pub base: u64,
    pub len: u64,
    /// E820 type (see [`kind`]).
    pub kind: u32,
}

impl E820Entry {
    /// End of the range (exclusive, saturating).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.len)
    }

    /// The 20-byte record INT 15h E820h writes to ES:DI.
    pub fn to_bytes(&self) -> [u8; 20] {
        let mut b = [0u8; 20];
        b[0..8].copy_from_slice(&self.base.to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b[16..20].copy_from_slice(&self.kind.to_le_bytes());
        b
    }
}

/// The map did not fit in [`MAX_ENTRIES`] entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFull;

/// A normalised memory map (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct E820Map {
    entries: Vec<E820Entry, MAX_ENTRIES>,
}

const fn priority(kind: u32) -> u32 {
    // Usable RAM loses against every other type; otherwise larger wins.
    if kind == kind::USABLE { 0 } else { kind }
}

impl E820Map {
    /// An empty map.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Builds a normalised map from firmware entries in any order, possibly
    /// overlapping; empty entries are dropped.
    pub fn from_entries(raw: impl IntoIterator<Item = E820Entry>) -> Result<Self, MapFull> {
        let mut map = Self::new();
        // Insert in increasing priority, so that each insertion (which
        // overrides) leaves the highest-priority type in every overlap.
        let mut pending: Vec<E820Entry, MAX_ENTRIES> = Vec::new();
        for e in raw {
            if e.len != 0 {
                pending.push(e).map_err(|_| MapFull)?;
            }
        }
        pending.sort_unstable_by_key(|e| priority(e.kind));
        for e in pending {
            map.set_range(e.base, e.end(), e.kind)?;
        }
        Ok(map)
    }

    /// The entries, sorted by base.
    pub fn entries(&self) -> &[E820Entry] {
        &self.entries
    }

    /// Makes `[start, end)` one range of type `kind`, replacing whatever the
    /// map said about it (parts of other entries outside it are kept).
    pub fn set_range(&mut self, start: u64, end: u64, kind: u32) -> Result<(), MapFull> {
        if start >= end {
            return Ok(());
        }
        let mut out: Vec<E820Entry, MAX_ENTRIES> = Vec::new();
        let push = |out: &mut Vec<E820Entry, MAX_ENTRIES>, e: E820Entry| {
            if e.len == 0 {
                return Ok(());
            }
            if let Some(last) = out.last_mut()
                && last.kind == e.kind
                && last.end() == e.base
            {
                last.len += e.len;
                return Ok(());
            }
            out.push(e).map_err(|_| MapFull)
        };
        let mut inserted = false;
        for &e in self.entries.iter() {
            if e.end() <= start {
                push(&mut out, e)?;
                continue;
            }
            if !inserted {
                if e.base < start {
                    push(
                        &mut out,
                        E820Entry {
                            base: e.base,
                            len: start - e.base,
                            kind: e.kind,
                        },
                    )?;
                }
                push(
                    &mut out,
                    E820Entry {
                        base: start,
                        len: end - start,
                        kind,
                    },
                )?;
                inserted = true;
            }
            if e.end() > end {
                let b = e.base.max(end);
                push(
                    &mut out,
                    E820Entry {
                        base: b,
                        len: e.end() - b,
                        kind: e.kind,
                    },
                )?;
            }
        }
        if !inserted {
            push(
                &mut out,
                E820Entry {
                    base: start,
                    len: end - start,
                    kind,
                },
            )?;
        }
        self.entries = out;
        Ok(())
    }

    /// The type of the byte at `addr`, if the map covers it.
    pub fn kind_at(&self, addr: u64) -> Option<u32> {
        self.entries
            .iter()
            .find(|e| e.base <= addr && addr < e.end())
            .map(|e| e.kind)
    }

    /// End of the usable RAM that starts at `from` and continues without a
    /// gap or a non-usable range (`from` itself if `from` is not usable).
    pub fn usable_run_end(&self, from: u64) -> u64 {
        let mut end = from;
        for e in self.entries.iter() {
            if e.kind == kind::USABLE && e.base <= end && end < e.end() {
                end = e.end();
            }
        }
        end
    }

    /// INT 15h AX = E801h: (AX = KiB of contiguous RAM between 1 MiB and
    /// 16 MiB, at most 15 MiB; BX = 64-KiB blocks of contiguous RAM from
    /// 16 MiB up to the first hole, below 4 GiB). CX/DX repeat AX/BX.
    pub fn e801(&self) -> (u16, u16) {
        const MIB: u64 = 1 << 20;
        let low_end = self.usable_run_end(MIB).min(16 * MIB);
        let ax = (low_end.saturating_sub(MIB) / 1024) as u16;
        let bx = if low_end == 16 * MIB {
            let high_end = self.usable_run_end(16 * MIB).min(4 << 30);
            ((high_end - 16 * MIB) / (64 * 1024)).min(u64::from(u16::MAX)) as u16
        } else {
            0
        };
        (ax, bx)
    }

    /// INT 15h AH = 88h: KiB of contiguous RAM from 1 MiB, capped at 63 MiB
    /// (0xFC00), as CMOS-based BIOSes report it.
    pub fn int15_88(&self) -> u16 {
        const MIB: u64 = 1 << 20;
        let kb = self.usable_run_end(MIB).saturating_sub(MIB) / 1024;
        kb.min(0xFC00) as u16
    }

    /// The highest `size`-byte range aligned to `align` (a power of two)
    /// that lies in one usable entry, below `limit` and at or above `floor`.
    pub fn highest_usable_fit(&self, size: u64, align: u64, floor: u64, limit: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        self.entries
            .iter()
            .filter(|e| e.kind == kind::USABLE)
            .filter_map(|e| {
                let top = e.end().min(limit);
                let base = top.checked_sub(size)? & !(align - 1);
                (base >= e.base.max(floor)).then_some(base)
            })
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn e(base: u64, len: u64, kind: u32) -> E820Entry {
        E820Entry { base, len, kind }
    }

    /// The map Bochs's BIOS reports with 512 MiB.
    fn bochs_512() -> E820Map {
        E820Map::from_entries([
            e(0, 0x9f000, 1),
            e(0x9f000, 0x1000, 2),
            e(0xe8000, 0x18000, 2),
            e(0x10_0000, 0x1fef_0000, 1),
            e(0x1fff_0000, 0x10000, 3),
            e(0xfffc_0000, 0x40000, 2),
        ])
        .unwrap()
    }

    fn invariant(m: &E820Map) {
        for w in m.entries().windows(2) {
            assert!(w[0].end() <= w[1].base, "sorted, disjoint: {m:?}");
            assert!(
                !(w[0].end() == w[1].base && w[0].kind == w[1].kind),
                "merged: {m:?}"
            );
        }
        assert!(m.entries().iter().all(|e| e.len > 0));
    }

    #[test]
    fn carving_l0_region_out_of_ram() {
        let mut m = bochs_512();
        m.set_range(0x1c00_0000, 0x1fe0_0000, kind::RESERVED)
            .unwrap();
        invariant(&m);
        assert_eq!(m.kind_at(0x1bff_ffff), Some(kind::USABLE));
        assert_eq!(m.kind_at(0x1c00_0000), Some(kind::RESERVED));
        assert_eq!(m.kind_at(0x1fdf_ffff), Some(kind::RESERVED));
        assert_eq!(m.kind_at(0x1fe0_0000), Some(kind::USABLE));
        assert_eq!(m.kind_at(0x1fff_0000), Some(kind::ACPI_RECLAIMABLE));
        assert_eq!(
            m.e801(),
            (0x3c00, ((0x1c00_0000 - 16 * MIB) / 0x10000) as u16)
        );
        assert_eq!(m.int15_88(), 0xfc00);
    }

    #[test]
    fn reserving_a_kib_of_conventional_memory() {
        let mut m = bochs_512();
        m.set_range(0x9e800, 0x9ec00, kind::RESERVED).unwrap();
        invariant(&m);
        assert_eq!(m.entries()[0], e(0, 0x9e800, 1));
        assert_eq!(m.entries()[1], e(0x9e800, 0x400, 2));
        assert_eq!(m.entries()[2], e(0x9ec00, 0x400, 1));
    }

    #[test]
    fn overlaps_resolve_to_the_larger_type() {
        let m =
            E820Map::from_entries([e(0, 100 * MIB, 1), e(10 * MIB, MIB, 2), e(0, 0, 4)]).unwrap();
        invariant(&m);
        assert_eq!(m.entries().len(), 3);
        assert_eq!(m.kind_at(10 * MIB), Some(2));
        assert_eq!(m.e801(), (9 * 1024, 0));
        assert_eq!(m.int15_88(), 9 * 1024);
    }

    #[test]
    fn highest_fit_is_aligned_and_inside_usable_ram() {
        let m = bochs_512();
        let b = m
            .highest_usable_fit(64 * MIB, 2 * MIB, 16 * MIB, 4 << 30)
            .unwrap();
        assert_eq!(b, 0x1be0_0000);
        assert!(b + 64 * MIB <= 0x1fff_0000);
        assert_eq!(
            m.highest_usable_fit(1 << 30, 2 * MIB, 16 * MIB, 4 << 30),
            None
        );
    }

    #[test]
    fn records_are_20_bytes_little_endian() {
        let b = e(0x1122_3344_5566_7788, 0x10, 2).to_bytes();
        assert_eq!(b[0], 0x88);
        assert_eq!(b[8], 0x10);
        assert_eq!(b[16], 2);
    }

    proptest! {
        #[test]
        fn set_range_keeps_the_map_normalised_and_exact(
            raw in proptest::collection::vec((0u64..64, 1u64..16, 1u32..6), 0..12),
            cuts in proptest::collection::vec((0u64..64, 1u64..16, 1u32..6), 1..6),
        ) {
            let page = 0x1000;
            let mut m = E820Map::from_entries(
                raw.iter().map(|&(b, l, k)| e(b * page, l * page, k))).unwrap();
            invariant(&m);
            // Model: the type of every page, larger type wins, usable lowest.
            let mut model = [0u32; 96];
            for &(b, l, k) in &raw {
                for p in b..b + l {
                    let cur = model[p as usize];
                    if cur == 0 || priority(k) > priority(cur) { model[p as usize] = k; }
                }
            }
            for &(b, l, k) in &cuts {
                m.set_range(b * page, (b + l) * page, k).unwrap();
                for p in b..b + l { model[p as usize] = k; }
                invariant(&m);
            }
            for (p, &k) in model.iter().enumerate() {
                let want = (k != 0).then_some(k);
                prop_assert_eq!(m.kind_at(p as u64 * page), want);
            }
        }
    }
}
