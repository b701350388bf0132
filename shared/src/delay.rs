//! Busy-wait delays timed by the 8254 PIT, and the TSC calibrated against
//! it; after [`switch_to_tsc`], delays are timed by the TSC alone.
//!
//! Channel 2 of the PIT counts at 1.193182 MHz on every PC, emulated or
//! not, and needs no calibration: it is loaded with a count in mode 0
//! ("interrupt on terminal count"), gated on through System Control Port B
//! (port 0x61, bit 0), and its output (port 0x61, bit 5) goes high when the
//! count reaches zero. Polling it gives delays that hold on Bochs, QEMU and
//! hardware alike. Channel 2 drives only the PC speaker, which stays off.
//!
//! Channel 2 is one device shared by all processors: a countdown holds a
//! spin lock, so these functions must not be called from interrupt or NMI
//! handlers (which could interrupt a countdown on the same processor).

use spin::Mutex;
use x86_64::instructions::port::Port;

/// The PIT input clock, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Channel 2 counter (data port).
const CHANNEL2_PORT: u16 = 0x42;
/// Mode/command register.
const MODE_COMMAND_PORT: u16 = 0x43;
/// System Control Port B (NMI status and control).
const PORT_B: u16 = 0x61;

/// Port B bit 0: channel 2 gate.
const TIMER2_GATE: u8 = 1 << 0;
/// Port B bit 1: speaker data enable.
const SPEAKER_DATA_ENABLE: u8 = 1 << 1;
/// Port B bit 5 (read-only): channel 2 output.
const TIMER2_OUT: u8 = 1 << 5;
/// Port B bits 3:0 are writable; bits 7:4 are read-only status.
const PORT_B_WRITABLE: u8 = 0x0F;

/// Mode/command: channel 2 (bits 7:6 = 10), low then high byte (bits 5:4 =
/// 11), mode 0 (bits 3:1 = 000), binary (bit 0 = 0).
const CHANNEL2_MODE0_LOHI: u8 = 0b1011_0000;

/// Polls of the channel 2 output per countdown before giving up, so that a
/// missing PIT cannot hang the caller. A port read takes at least hundreds
/// of nanoseconds (a VM exit when virtualized), so this bound is far above
/// the longest countdown (65535 ticks, 55 ms).
const MAX_POLLS_PER_COUNTDOWN: u32 = 20_000_000;

/// Serializes the use of channel 2 between processors.
static CHANNEL2: Mutex<()> = Mutex::new(());

/// TSC ticks per millisecond once [`switch_to_tsc`] ran (0: use the PIT).
static TSC_TICKS_PER_MS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The rate assumed when calibration fails: no processor runs its TSC
/// faster than 10 GHz, so delays computed with it are at least as long as
/// asked.
pub const FALLBACK_TSC_TICKS_PER_MS: u64 = 10_000_000;

/// From now on every delay is timed by the TSC, calibrated once here
/// against the PIT, and the PIT and port 0x61 are never touched again: a
/// hypervisor calls this before its guest runs, since the guest owns
/// those devices then (its speaker, its own PIT channel 2 timing). Returns
/// the rate used.
pub fn switch_to_tsc() -> u64 {
    let rate = calibrate_tsc_ticks_per_ms()
        .filter(|&r| r > 0)
        .unwrap_or(FALLBACK_TSC_TICKS_PER_MS);
    TSC_TICKS_PER_MS.store(rate, core::sync::atomic::Ordering::Release);
    rate
}

/// TSC ticks covering at least `us` microseconds at `ticks_per_ms`.
pub const fn us_to_tsc_ticks(us: u64, ticks_per_ms: u64) -> u64 {
    saturate((us as u128 * ticks_per_ms as u128).div_ceil(1_000))
}

fn delay_tsc_ticks(ticks: u64) {
    let end = Deadline::after(rdtsc(), ticks);
    while !end.expired() {
        core::hint::spin_loop();
    }
}

/// Waits at least `us` microseconds.
pub fn udelay(us: u32) {
    match TSC_TICKS_PER_MS.load(core::sync::atomic::Ordering::Acquire) {
        0 => delay_pit_ticks(us_to_pit_ticks(us)),
        rate => delay_tsc_ticks(us_to_tsc_ticks(u64::from(us), rate)),
    }
}

/// Waits at least `ms` milliseconds.
pub fn mdelay(ms: u32) {
    match TSC_TICKS_PER_MS.load(core::sync::atomic::Ordering::Acquire) {
        0 => delay_pit_ticks(ms_to_pit_ticks(ms)),
        rate => delay_tsc_ticks(us_to_tsc_ticks(u64::from(ms) * 1000, rate)),
    }
}

/// PIT ticks covering at least `us` microseconds.
pub const fn us_to_pit_ticks(us: u32) -> u64 {
    (us as u64 * PIT_HZ).div_ceil(1_000_000)
}

/// PIT ticks covering at least `ms` milliseconds.
pub const fn ms_to_pit_ticks(ms: u32) -> u64 {
    (ms as u64 * PIT_HZ).div_ceil(1_000)
}

/// Splits `ticks` into countdowns that fit the 16-bit counter.
fn countdowns(ticks: u64) -> impl Iterator<Item = u16> {
    let full = ticks / u64::from(u16::MAX);
    let rest = (ticks % u64::from(u16::MAX)) as u16;
    (0..full)
        .map(|_| u16::MAX)
        .chain((rest != 0).then_some(rest))
}

/// Waits `ticks` PIT ticks, in countdowns of at most 55 ms. Without a
/// working PIT, each countdown ends after its bounded polling instead.
fn delay_pit_ticks(ticks: u64) {
    for count in countdowns(ticks) {
        let countdown = Countdown::arm(count);
        countdown.start();
        let _expired = countdown.wait();
    }
}

/// A countdown of channel 2, holding the channel; gated off on drop.
struct Countdown {
    _channel: spin::MutexGuard<'static, ()>,
    /// The writable bits of port B, gate and speaker off.
    port_b: u8,
}

impl Countdown {
    /// Takes channel 2 and loads `count` in mode 0, gate off.
    fn arm(count: u16) -> Self {
        let channel = CHANNEL2.lock();
        let port_b = inb(PORT_B) & PORT_B_WRITABLE & !(TIMER2_GATE | SPEAKER_DATA_ENABLE);
        outb(PORT_B, port_b);
        outb(MODE_COMMAND_PORT, CHANNEL2_MODE0_LOHI);
        let [low, high] = count.to_le_bytes();
        outb(CHANNEL2_PORT, low);
        outb(CHANNEL2_PORT, high);
        Self {
            _channel: channel,
            port_b,
        }
    }

    /// Raises the gate: counting starts.
    fn start(&self) {
        outb(PORT_B, self.port_b | TIMER2_GATE);
    }

    /// Polls until the output goes high (the count reached zero); `false`
    /// if it did not within [`MAX_POLLS_PER_COUNTDOWN`] polls.
    fn wait(&self) -> bool {
        (0..MAX_POLLS_PER_COUNTDOWN).any(|_| inb(PORT_B) & TIMER2_OUT != 0)
    }
}

impl Drop for Countdown {
    fn drop(&mut self) {
        outb(PORT_B, self.port_b);
    }
}

/// Reads one of the PIT channel 2 ports.
fn inb(port: u16) -> u8 {
    // SAFETY: only the PIT ports above are passed; reading port B or the
    // counter has no effect on memory, and the caller holds `CHANNEL2`.
    unsafe { Port::<u8>::new(port).read() }
}

/// Writes one of the PIT channel 2 ports.
fn outb(port: u16, value: u8) {
    // SAFETY: only the PIT ports above are passed, with values that program
    // channel 2 and the writable bits of port B (gate, speaker, and the
    // parity/channel check enables, which are preserved); none of it
    // affects memory, and the caller holds `CHANNEL2`.
    unsafe { Port::<u8>::new(port).write(value) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (the kernels leave CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// PIT ticks of one calibration run: 10 ms.
const CALIBRATION_PIT_TICKS: u16 = 11_932;
/// Calibration runs; the shortest is kept, since interruptions (SMIs, VM
/// exits, preemption of a virtual CPU) only make a run look longer.
const CALIBRATION_RUNS: u32 = 3;

/// Measures the TSC frequency, in ticks per millisecond, against PIT
/// channel 2; `None` if the PIT output never went high.
pub fn calibrate_tsc_ticks_per_ms() -> Option<u64> {
    (0..CALIBRATION_RUNS)
        .filter_map(|_| {
            let countdown = Countdown::arm(CALIBRATION_PIT_TICKS);
            let start = rdtsc();
            countdown.start();
            let expired = countdown.wait();
            let end = rdtsc();
            expired.then(|| end.wrapping_sub(start))
        })
        .min()
        .map(|tsc_ticks| tsc_ticks_per_ms(tsc_ticks, CALIBRATION_PIT_TICKS.into()))
}

/// The TSC rate, given `tsc_ticks` elapsed over `pit_ticks` PIT ticks.
pub const fn tsc_ticks_per_ms(tsc_ticks: u64, pit_ticks: u64) -> u64 {
    if pit_ticks == 0 {
        return 0;
    }
    let per_ms = tsc_ticks as u128 * PIT_HZ as u128 / (pit_ticks as u128 * 1000);
    if per_ms > u64::MAX as u128 {
        u64::MAX
    } else {
        per_ms as u64
    }
}

/// The time-stamp counter with a known rate, for timeouts and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tsc {
    ticks_per_ms: u64,
}

impl Tsc {
    /// Calibrates against the PIT (see [`calibrate_tsc_ticks_per_ms`]).
    pub fn calibrate() -> Option<Self> {
        calibrate_tsc_ticks_per_ms().and_then(Self::from_ticks_per_ms)
    }

    /// A TSC running at `ticks_per_ms`; `None` if zero.
    pub const fn from_ticks_per_ms(ticks_per_ms: u64) -> Option<Self> {
        match ticks_per_ms {
            0 => None,
            _ => Some(Self { ticks_per_ms }),
        }
    }

    /// The rate, in ticks per millisecond.
    pub const fn ticks_per_ms(self) -> u64 {
        self.ticks_per_ms
    }

    /// The current count.
    pub fn now(self) -> u64 {
        rdtsc()
    }

    /// `ticks` in nanoseconds.
    pub const fn ticks_to_ns(self, ticks: u64) -> u64 {
        saturate(ticks as u128 * 1_000_000 / self.ticks_per_ms as u128)
    }

    /// `ticks` in microseconds.
    pub const fn ticks_to_us(self, ticks: u64) -> u64 {
        saturate(ticks as u128 * 1_000 / self.ticks_per_ms as u128)
    }

    /// Ticks in `us` microseconds (rounded up).
    pub const fn us_to_ticks(self, us: u64) -> u64 {
        saturate((us as u128 * self.ticks_per_ms as u128).div_ceil(1_000))
    }

    /// A deadline `us` microseconds from now.
    pub fn deadline_after_us(self, us: u64) -> Deadline {
        Deadline::after(self.now(), self.us_to_ticks(us))
    }
}

/// A TSC value to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    at: u64,
}

impl Deadline {
    /// The deadline `ticks` after TSC value `now` (saturating).
    pub const fn after(now: u64, ticks: u64) -> Self {
        Self {
            at: now.saturating_add(ticks),
        }
    }

    /// Whether TSC value `now` is at or past the deadline.
    pub const fn is_reached_at(self, now: u64) -> bool {
        now >= self.at
    }

    /// Whether the deadline has passed.
    pub fn expired(self) -> bool {
        self.is_reached_at(rdtsc())
    }
}

const fn saturate(v: u128) -> u64 {
    if v > u64::MAX as u128 {
        u64::MAX
    } else {
        v as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_delays_round_up() {
        assert_eq!(us_to_tsc_ticks(0, 2_000_000), 0);
        assert_eq!(us_to_tsc_ticks(1, 2_000_000), 2_000);
        assert_eq!(us_to_tsc_ticks(1, 1), 1);
        assert_eq!(us_to_tsc_ticks(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(us_to_tsc_ticks(10, FALLBACK_TSC_TICKS_PER_MS), 100_000);
    }

    #[test]
    fn delays_round_up_to_whole_pit_ticks() {
        assert_eq!(us_to_pit_ticks(0), 0);
        assert_eq!(us_to_pit_ticks(1), 2); // 1.19 ticks
        assert_eq!(us_to_pit_ticks(200), 239); // 238.6
        assert_eq!(us_to_pit_ticks(1_000_000), PIT_HZ);
        assert_eq!(ms_to_pit_ticks(10), 11_932);
        assert_eq!(
            ms_to_pit_ticks(u32::MAX),
            (u64::from(u32::MAX) * PIT_HZ).div_ceil(1000)
        );
    }

    #[test]
    fn long_delays_are_split_into_16_bit_countdowns() {
        let split = |ticks| countdowns(ticks).collect::<Vec<_>>();
        assert_eq!(split(0), []);
        assert_eq!(split(1), [1]);
        assert_eq!(split(65_535), [65_535]);
        assert_eq!(split(65_536), [65_535, 1]);
        assert_eq!(split(ms_to_pit_ticks(100)), [65_535, 53_784]);
        let total: u64 = countdowns(ms_to_pit_ticks(60_000)).map(u64::from).sum();
        assert_eq!(total, ms_to_pit_ticks(60_000));
    }

    #[test]
    fn tsc_rate_and_conversions() {
        // A 3 GHz TSC over a 10 ms calibration run.
        assert_eq!(tsc_ticks_per_ms(30_000_000, 11_932), 2_999_954);
        assert_eq!(tsc_ticks_per_ms(1, 0), 0);
        assert_eq!(tsc_ticks_per_ms(u64::MAX, 1), u64::MAX);
        assert_eq!(Tsc::from_ticks_per_ms(0), None);
        let tsc = Tsc::from_ticks_per_ms(3_000_000).unwrap();
        assert_eq!(tsc.ticks_to_ns(3_000), 1_000);
        assert_eq!(tsc.ticks_to_us(3_000_000), 1_000);
        assert_eq!(tsc.us_to_ticks(1), 3_000);
        assert_eq!(tsc.us_to_ticks(u64::MAX), u64::MAX);
        assert_eq!(Tsc::from_ticks_per_ms(7).unwrap().us_to_ticks(1), 1);
    }

    #[test]
    fn deadlines_saturate_and_compare() {
        let deadline = Deadline::after(100, 50);
        assert!(!deadline.is_reached_at(149));
        assert!(deadline.is_reached_at(150));
        assert!(!Deadline::after(u64::MAX - 1, 10).is_reached_at(u64::MAX - 1));
    }
}
