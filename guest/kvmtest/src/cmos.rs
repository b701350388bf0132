//! A minimal MC146818 CMOS RTC at ports 0x70/0x71 for the Linux guest: a
//! fixed, valid date and time that never updates. Linux polls register A's
//! update-in-progress bit before it reads the clock; without a device,
//! reads float to 0xff, UIP looks stuck at 1 and every poll is another exit
//! (thousands, each a trip through L1 and, under L0, through L0 too).

/// The index port and the data port.
pub const INDEX: u16 = 0x70;
pub const DATA: u16 = 0x71;

/// Register A: no update in progress (bit 7 clear), 32.768 kHz divider,
/// 1024 Hz rate, as firmware leaves it.
const REG_A: u8 = 0x26;
/// Register B: 24-hour mode, BCD, no interrupts.
const REG_B: u8 = 0x02;
/// Register D: valid RAM and time (VRT).
const REG_D: u8 = 0x80;

/// The time it shows, BCD: 2026-01-01 00:00:00, a Thursday.
const CLOCK: [(u8, u8); 8] = [
    (0x00, 0x00), // seconds
    (0x02, 0x00), // minutes
    (0x04, 0x00), // hours
    (0x06, 0x05), // day of week
    (0x07, 0x01), // day of month
    (0x08, 0x01), // month
    (0x09, 0x26), // year
    (0x32, 0x20), // century
];

#[derive(Debug, Default)]
pub struct Cmos {
    index: u8,
}

impl Cmos {
    /// A write to `port` (`INDEX` selects a register; bit 7 is the NMI mask).
    pub fn write(&mut self, port: u16, value: u8) {
        if port == INDEX {
            self.index = value & 0x7f;
        }
    }

    /// A read of `port`: the selected register from `DATA`.
    pub fn read(&self, port: u16) -> u8 {
        if port != DATA {
            return 0xff;
        }
        match self.index {
            0x0a => REG_A,
            0x0b => REG_B,
            0x0c => 0,
            0x0d => REG_D,
            i => CLOCK.iter().find(|(r, _)| *r == i).map_or(0, |(_, v)| *v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(c: &mut Cmos, i: u8) -> u8 {
        c.write(INDEX, i);
        c.read(DATA)
    }

    #[test]
    fn no_update_in_progress_and_a_valid_bcd_date() {
        let mut c = Cmos::default();
        assert_eq!(reg(&mut c, 0x0a) & 0x80, 0, "UIP clear");
        // With the NMI-mask bit set, the same register.
        assert_eq!(reg(&mut c, 0x8a), REG_A);
        assert_eq!(reg(&mut c, 0x0b) & 0x06, 0x02, "BCD, 24-hour");
        assert_eq!(reg(&mut c, 0x0d), 0x80, "valid");
        assert_eq!(
            [0x09, 0x08, 0x07].map(|i| reg(&mut c, i)),
            [0x26, 0x01, 0x01]
        );
        assert_eq!(reg(&mut c, 0x32), 0x20);
        assert_eq!(reg(&mut c, 0x40), 0, "CMOS RAM reads 0");
        assert_eq!(c.read(INDEX), 0xff);
    }
}
