//! The VGA text screen (80x25 at physical 0xB8000, identity-mapped).
//!
//! Rows `0..SCROLL_ROWS` scroll like a terminal; the rows below are status
//! rows that code can write at fixed places (LHV's live per-CPU counters).

use core::sync::atomic::{AtomicUsize, Ordering};

const BUFFER: usize = 0xB8000;
pub const COLS: usize = 80;
pub const ROWS: usize = 25;
/// Rows kept for status lines at the bottom of the screen.
pub const STATUS_ROWS: usize = 4;
const SCROLL_ROWS: usize = ROWS - STATUS_ROWS;
const ATTR: u16 = 0x07 << 8;

static COLUMN: AtomicUsize = AtomicUsize::new(0);

fn cell(row: usize, col: usize) -> *mut u16 {
    (BUFFER as *mut u16).wrapping_add(row * COLS + col)
}

fn put(row: usize, col: usize, ch: u8) {
    if row < ROWS && col < COLS {
        // SAFETY: the cell is inside the 80x25 text buffer, which the kernels
        // identity-map; volatile because the screen is a device.
        unsafe { cell(row, col).write_volatile(ATTR | u16::from(ch)) };
    }
}

fn get(row: usize, col: usize) -> u16 {
    // SAFETY: as in `put`; callers pass in-range cells.
    unsafe { cell(row, col).read_volatile() }
}

/// Clears the screen.
pub fn clear() {
    for r in 0..ROWS {
        for c in 0..COLS {
            put(r, c, b' ');
        }
    }
    COLUMN.store(0, Ordering::Relaxed);
}

fn newline() {
    for r in 1..SCROLL_ROWS {
        for c in 0..COLS {
            // SAFETY: in-range cells (see `put`).
            unsafe { cell(r - 1, c).write_volatile(get(r, c)) };
        }
    }
    for c in 0..COLS {
        put(SCROLL_ROWS - 1, c, b' ');
    }
    COLUMN.store(0, Ordering::Relaxed);
}

/// Writes text on the bottom scrolling line. Callers hold the console lock.
pub fn write_str(s: &str) {
    for b in s.bytes() {
        match b {
            b'\n' => newline(),
            b'\r' => {}
            _ => {
                let col = COLUMN.load(Ordering::Relaxed);
                if col >= COLS {
                    newline();
                }
                let col = COLUMN.load(Ordering::Relaxed);
                put(
                    SCROLL_ROWS - 1,
                    col,
                    if b.is_ascii_graphic() || b == b' ' {
                        b
                    } else {
                        b'?'
                    },
                );
                COLUMN.store(col + 1, Ordering::Relaxed);
            }
        }
    }
}

/// Writes `text` at a fixed place of the status area: row `row` (0-based,
/// below the scrolling part), column `col`; cut at the screen's edge.
/// Lock-free: each cell is one aligned 16-bit store.
pub fn write_status(row: usize, col: usize, text: &str) {
    let r = SCROLL_ROWS + row;
    for (i, b) in text.bytes().enumerate() {
        put(r, col + i, b);
    }
}
