//! The local APIC of the executing processor, in xAPIC or x2APIC mode
//! (Intel SDM vol. 3A, chapter 11 "Advanced Programmable Interrupt
//! Controller (APIC)").
//!
//! In xAPIC mode the registers are 32-bit MMIO at the base address in
//! `IA32_APIC_BASE`; in x2APIC mode (`IA32_APIC_BASE` bit 10) they are the
//! MSRs `0x800 + offset / 16`, and the interrupt command register (ICR) is
//! the single 64-bit MSR `0x830`.
//!
//! The encodings (register numbers, [`Icr`], the timer and LVT values, the
//! MP initialization sequence) are pure and host-tested; the hardware access
//! is in [`LocalApic`]'s private `read`/`write` wrappers. They rely on the
//! kernels' environment: CPL 0, and the xAPIC register page identity-mapped
//! (so its physical address is usable as a pointer) and uncacheable.

use core::hint::spin_loop;

use x86_64::instructions::interrupts;
use x86_64::registers::model_specific::Msr;

/// The `IA32_APIC_BASE` MSR.
pub const IA32_APIC_BASE: u32 = 0x1B;
/// `IA32_APIC_BASE` bit 8: this processor is the bootstrap processor.
const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE` bit 10 (EXTD): x2APIC mode enabled.
const APIC_BASE_EXTD: u64 = 1 << 10;
/// `IA32_APIC_BASE` bit 11 (EN): APIC global enable. Never cleared here:
/// re-enabling a globally disabled APIC needs a reset on some platforms
/// (Bochs among them).
const APIC_BASE_EN: u64 = 1 << 11;
/// `IA32_APIC_BASE` bits 51:12: the xAPIC register page.
const APIC_BASE_ADDRESS: u64 = 0x000F_FFFF_FFFF_F000;

/// First x2APIC MSR; register at xAPIC offset `o` is MSR `0x800 + o / 16`.
const X2APIC_MSR_BASE: u32 = 0x800;
/// xAPIC offsets of the two halves of the ICR; writing the low half sends.
const XAPIC_ICR_LOW: usize = 0x300;
const XAPIC_ICR_HIGH: usize = 0x310;
/// The x2APIC ICR: one 64-bit MSR.
const X2APIC_ICR: u32 = 0x830;

/// Spurious-interrupt vector register bit 8: APIC software enable.
const SVR_APIC_ENABLE: u32 = 1 << 8;
/// LVT bit 16: masked.
const LVT_MASKED: u32 = 1 << 16;
/// Version register bits 23:16: number of LVT entries minus one.
const VERSION_MAX_LVT_SHIFT: u32 = 16;

/// Polls of the ICR delivery status before [`LocalApic::wait_icr_idle`]
/// gives up. Each poll is an uncached MMIO read (a VM exit when
/// virtualized), so this is well beyond the few microseconds an IPI takes.
pub const ICR_IDLE_POLLS: u32 = 1_000_000;

/// The delays of the MP initialization protocol (SDM vol. 3A 9.4.4.1):
/// after INIT, and after each STARTUP IPI.
pub const INIT_DELAY_US: u32 = 10_000;
/// See [`INIT_DELAY_US`].
pub const STARTUP_DELAY_US: u32 = 200;

/// Local APIC registers, by xAPIC MMIO offset (SDM vol. 3A table 11-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Register {
    /// Local APIC ID.
    Id = 0x20,
    /// Local APIC version (and number of LVT entries).
    Version = 0x30,
    /// Task priority.
    Tpr = 0x80,
    /// End of interrupt (write-only).
    Eoi = 0xB0,
    /// Spurious-interrupt vector.
    Svr = 0xF0,
    /// Error status.
    Esr = 0x280,
    /// LVT corrected machine check interrupt.
    LvtCmci = 0x2F0,
    /// LVT timer.
    LvtTimer = 0x320,
    /// LVT thermal sensor.
    LvtThermal = 0x330,
    /// LVT performance monitoring counters.
    LvtPerformanceMonitoring = 0x340,
    /// LVT LINT0.
    LvtLint0 = 0x350,
    /// LVT LINT1.
    LvtLint1 = 0x360,
    /// LVT error.
    LvtError = 0x370,
    /// Timer initial count.
    TimerInitialCount = 0x380,
    /// Timer current count (read-only).
    TimerCurrentCount = 0x390,
    /// Timer divide configuration.
    TimerDivideConfiguration = 0x3E0,
}

impl Register {
    /// Offset from the xAPIC base.
    pub const fn mmio_offset(self) -> usize {
        self as usize
    }

    /// The x2APIC MSR (SDM vol. 3A table 11-6).
    pub const fn x2apic_msr(self) -> u32 {
        X2APIC_MSR_BASE + (self as usize >> 4) as u32
    }
}

/// The local vector table entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// APIC timer.
    Timer,
    /// Thermal sensor (Pentium 4 and later).
    Thermal,
    /// Performance monitoring counters (P6 and later).
    PerformanceMonitoring,
    /// LINT0 pin.
    Lint0,
    /// LINT1 pin.
    Lint1,
    /// APIC internal error.
    Error,
    /// Corrected machine check interrupt (Nehalem and later).
    Cmci,
}

impl Lvt {
    /// Every LVT entry.
    pub const ALL: [Lvt; 7] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::PerformanceMonitoring,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
        Lvt::Cmci,
    ];

    /// Its register.
    pub const fn register(self) -> Register {
        match self {
            Lvt::Timer => Register::LvtTimer,
            Lvt::Thermal => Register::LvtThermal,
            Lvt::PerformanceMonitoring => Register::LvtPerformanceMonitoring,
            Lvt::Lint0 => Register::LvtLint0,
            Lvt::Lint1 => Register::LvtLint1,
            Lvt::Error => Register::LvtError,
            Lvt::Cmci => Register::LvtCmci,
        }
    }

    /// Whether an APIC whose version register reports `max_lvt_entry`
    /// (entries minus one) implements this entry: 4 for P6 (timer, LINT0/1,
    /// error, performance), 5 adds thermal, 6 adds CMCI (SDM vol. 3A
    /// 11.4.8). Accessing a missing one faults in x2APIC mode.
    pub const fn is_present(self, max_lvt_entry: u8) -> bool {
        match self {
            Lvt::Thermal => max_lvt_entry >= 5,
            Lvt::Cmci => max_lvt_entry >= 6,
            _ => true,
        }
    }
}

/// Timer modes (LVT timer bits 18:17).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TimerMode {
    /// Counts down once from the initial count.
    OneShot = 0b00,
    /// Reloads the initial count at zero.
    Periodic = 0b01,
    /// Fires at the TSC deadline in `IA32_TSC_DEADLINE`.
    TscDeadline = 0b10,
}

/// The LVT timer value: `vector` in `mode`, not masked.
pub const fn lvt_timer(vector: u8, mode: TimerMode) -> u32 {
    vector as u32 | (mode as u32) << 17
}

/// Timer divide configuration: the bus clock divided by 1 to 128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerDivide {
    /// Divide by 1.
    By1,
    /// Divide by 2.
    By2,
    /// Divide by 4.
    By4,
    /// Divide by 8.
    By8,
    /// Divide by 16.
    By16,
    /// Divide by 32.
    By32,
    /// Divide by 64.
    By64,
    /// Divide by 128.
    By128,
}

impl TimerDivide {
    /// The divide configuration register value (bits 3, 1:0; SDM vol. 3A
    /// figure 11-10).
    pub const fn encoding(self) -> u32 {
        match self {
            TimerDivide::By2 => 0b0000,
            TimerDivide::By4 => 0b0001,
            TimerDivide::By8 => 0b0010,
            TimerDivide::By16 => 0b0011,
            TimerDivide::By32 => 0b1000,
            TimerDivide::By64 => 0b1001,
            TimerDivide::By128 => 0b1010,
            TimerDivide::By1 => 0b1011,
        }
    }
}

/// The mode of a local APIC, which decides the ICR destination format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicMode {
    /// xAPIC: MMIO registers, 8-bit APIC IDs.
    XApic,
    /// x2APIC: MSRs, 32-bit APIC IDs.
    X2Apic,
}

/// ICR delivery mode (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DeliveryMode {
    /// The vector, to the destination.
    Fixed = 0b000,
    /// The vector, to the lowest-priority processor of the destination.
    LowestPriority = 0b001,
    /// A system management interrupt.
    Smi = 0b010,
    /// A non-maskable interrupt.
    Nmi = 0b100,
    /// INIT.
    Init = 0b101,
    /// STARTUP (SIPI): the vector is the page number of the start code.
    StartUp = 0b110,
}

/// ICR destination mode (bit 11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationMode {
    /// The destination is an APIC ID.
    Physical,
    /// The destination is a logical destination.
    Logical,
}

/// ICR level (bit 14): 0 only for the obsolete INIT level de-assert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// De-assert.
    Deassert,
    /// Assert.
    Assert,
}

/// ICR trigger mode (bit 15), meaningful only for INIT level de-assert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// Edge.
    Edge,
    /// Level.
    Level,
}

/// ICR destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum DestinationShorthand {
    /// The destination field says.
    NoShorthand = 0b00,
    /// This processor.
    ToSelf = 0b01,
    /// Every processor, this one included.
    AllIncludingSelf = 0b10,
    /// Every processor but this one.
    AllExcludingSelf = 0b11,
}

/// An interprocessor interrupt, as the fields of the interrupt command
/// register (SDM vol. 3A 11.6.1, figure 11-12).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icr {
    /// Vector (for STARTUP: the page number of the start code).
    pub vector: u8,
    /// Delivery mode.
    pub delivery_mode: DeliveryMode,
    /// Destination mode.
    pub destination_mode: DestinationMode,
    /// Level.
    pub level: Level,
    /// Trigger mode.
    pub trigger_mode: TriggerMode,
    /// Destination shorthand.
    pub shorthand: DestinationShorthand,
    /// Destination APIC ID (8 bits in xAPIC mode, 32 in x2APIC mode);
    /// ignored with a shorthand.
    pub destination: u32,
}

impl Icr {
    /// An edge-triggered, asserted, physically addressed IPI.
    const fn to(destination: u32, delivery_mode: DeliveryMode, vector: u8) -> Self {
        Self {
            vector,
            delivery_mode,
            destination_mode: DestinationMode::Physical,
            level: Level::Assert,
            trigger_mode: TriggerMode::Edge,
            shorthand: DestinationShorthand::NoShorthand,
            destination,
        }
    }

    /// Interrupt `vector` on `apic_id`.
    pub const fn fixed(apic_id: u32, vector: u8) -> Self {
        Self::to(apic_id, DeliveryMode::Fixed, vector)
    }

    /// An NMI to `apic_id`.
    pub const fn nmi(apic_id: u32) -> Self {
        Self::to(apic_id, DeliveryMode::Nmi, 0)
    }

    /// INIT (assert) to `apic_id`.
    pub const fn init(apic_id: u32) -> Self {
        Self::to(apic_id, DeliveryMode::Init, 0)
    }

    /// STARTUP to `apic_id`: it starts in real mode at `vector_page * 4096`.
    pub const fn startup(apic_id: u32, vector_page: u8) -> Self {
        Self::to(apic_id, DeliveryMode::StartUp, vector_page)
    }

    /// The same IPI, addressed by `shorthand` instead of the destination.
    pub const fn with_shorthand(self, shorthand: DestinationShorthand) -> Self {
        Self {
            shorthand,
            destination: 0,
            ..self
        }
    }

    /// The 64-bit ICR value in `mode`: destination in bits 63:56 (xAPIC)
    /// or 63:32 (x2APIC). Fails if the destination does not fit.
    pub const fn encode(self, mode: ApicMode) -> Result<u64, ApicError> {
        let destination = self.destination as u64;
        let destination = match mode {
            ApicMode::XApic if destination > 0xFF => {
                return Err(ApicError::DestinationOutOfRange(self.destination));
            }
            ApicMode::XApic => destination << 56,
            ApicMode::X2Apic => destination << 32,
        };
        Ok(destination
            | (self.shorthand as u64) << 18
            | (matches!(self.trigger_mode, TriggerMode::Level) as u64) << 15
            | (matches!(self.level, Level::Assert) as u64) << 14
            | (matches!(self.destination_mode, DestinationMode::Logical) as u64) << 11
            | (self.delivery_mode as u64) << 8
            | self.vector as u64)
    }
}

/// ICR bit 12 (xAPIC only): the previous IPI is not yet accepted.
const ICR_SEND_PENDING: u32 = 1 << 12;

/// One step of the INIT-SIPI-SIPI sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartupStep {
    /// Send this IPI and wait until it is accepted.
    Send(Icr),
    /// Wait this many microseconds.
    DelayUs(u32),
}

/// The MP initialization protocol for one AP (SDM vol. 3A 9.4.4.1 "Typical
/// BSP Initialization Sequence"): INIT, 10 ms, STARTUP, 200 us, STARTUP,
/// 200 us. The INIT level de-assert IPI of 486-era systems is not sent:
/// processors with VMX ignore it, and x2APIC mode does not support it.
pub const fn startup_sequence(apic_id: u32, trampoline_page: u8) -> [StartupStep; 6] {
    let startup = StartupStep::Send(Icr::startup(apic_id, trampoline_page));
    let wait = StartupStep::DelayUs(STARTUP_DELAY_US);
    [
        StartupStep::Send(Icr::init(apic_id)),
        StartupStep::DelayUs(INIT_DELAY_US),
        startup,
        wait,
        startup,
        wait,
    ]
}

/// Why an APIC operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApicError {
    /// The previous IPI was still pending after [`ICR_IDLE_POLLS`] polls.
    IcrBusy,
    /// The destination APIC ID does not fit in xAPIC mode's 8 bits.
    DestinationOutOfRange(u32),
    /// This APIC does not implement the LVT entry.
    LvtNotPresent(Lvt),
}

/// The local APIC of the executing processor.
///
/// Every method acts on the APIC of the processor that runs it: the xAPIC
/// MMIO page and the x2APIC MSRs are per processor at the same address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalApic {
    mode: ApicMode,
    /// Physical (= virtual, identity-mapped) address of the xAPIC registers.
    base: u64,
    bsp: bool,
}

impl LocalApic {
    /// The executing processor's local APIC, in the mode `IA32_APIC_BASE`
    /// selects.
    ///
    /// If the APIC is globally disabled (EN clear), sets EN; it never
    /// clears it. The APIC still has to be software-enabled with
    /// [`LocalApic::enable`].
    pub fn current() -> Self {
        let mut apic_base = read_msr(IA32_APIC_BASE);
        if apic_base & APIC_BASE_EN == 0 {
            apic_base |= APIC_BASE_EN;
            // SAFETY: setting EN on a disabled APIC (EXTD is then clear,
            // as EN=0/EXTD=1 is invalid) is the valid disabled -> xAPIC
            // transition; the base address is unchanged.
            unsafe { Msr::new(IA32_APIC_BASE).write(apic_base) };
        }
        let mode = match apic_base & APIC_BASE_EXTD {
            0 => ApicMode::XApic,
            _ => ApicMode::X2Apic,
        };
        Self {
            mode,
            base: apic_base & APIC_BASE_ADDRESS,
            bsp: apic_base & APIC_BASE_BSP != 0,
        }
    }

    /// xAPIC or x2APIC.
    pub fn mode(&self) -> ApicMode {
        self.mode
    }

    /// This processor's APIC ID.
    pub fn id(&self) -> u32 {
        let id = self.read(Register::Id);
        match self.mode {
            ApicMode::XApic => id >> 24,
            ApicMode::X2Apic => id,
        }
    }

    /// Whether this processor is the bootstrap processor.
    pub fn is_bsp(&self) -> bool {
        self.bsp
    }

    /// Software-enables the APIC, with `spurious_vector` as the spurious
    /// interrupt vector.
    pub fn enable(&self, spurious_vector: u8) {
        let svr = self.read(Register::Svr) & !0xFF;
        self.write(
            Register::Svr,
            svr | SVR_APIC_ENABLE | u32::from(spurious_vector),
        );
    }

    /// Signals the end of the interrupt being serviced.
    pub fn eoi(&self) {
        self.write(Register::Eoi, 0);
    }

    /// Sends `icr` once the previous IPI has been accepted.
    pub fn send(&self, icr: Icr) -> Result<(), ApicError> {
        let value = icr.encode(self.mode)?;
        self.wait_icr_idle()?;
        self.write_icr(value);
        Ok(())
    }

    /// [`LocalApic::send`], with the xAPIC ICR's low half (the store that
    /// sends) written by `store(address, value)`, an instruction of the
    /// caller's choosing (a hypervisor under test must take every store
    /// form); in x2APIC mode the same as `send`.
    pub fn send_with_store(
        &self,
        icr: Icr,
        store: impl FnOnce(*mut u32, u32),
    ) -> Result<(), ApicError> {
        let value = icr.encode(self.mode)?;
        self.wait_icr_idle()?;
        match self.mode {
            ApicMode::XApic => interrupts::without_interrupts(|| {
                let found = self.read_mmio(XAPIC_ICR_HIGH);
                self.write_mmio(XAPIC_ICR_HIGH, (value >> 32) as u32);
                store(self.mmio(XAPIC_ICR_LOW), value as u32);
                let _ = self.wait_icr_idle();
                self.write_mmio(XAPIC_ICR_HIGH, found);
            }),
            ApicMode::X2Apic => self.write_icr(value),
        }
        Ok(())
    }

    /// Sends INIT to `apic_id`.
    pub fn send_init(&self, apic_id: u32) -> Result<(), ApicError> {
        self.send(Icr::init(apic_id))
    }

    /// Sends STARTUP to `apic_id`, which starts at `vector_page * 4096`.
    pub fn send_startup(&self, apic_id: u32, vector_page: u8) -> Result<(), ApicError> {
        self.send(Icr::startup(apic_id, vector_page))
    }

    /// Sends interrupt `vector` to `apic_id`.
    pub fn send_fixed(&self, apic_id: u32, vector: u8) -> Result<(), ApicError> {
        self.send(Icr::fixed(apic_id, vector))
    }

    /// Sends an NMI to `apic_id`.
    pub fn send_nmi(&self, apic_id: u32) -> Result<(), ApicError> {
        self.send(Icr::nmi(apic_id))
    }

    /// Sends an NMI to every other processor.
    pub fn send_nmi_all_excluding_self(&self) -> Result<(), ApicError> {
        self.send(Icr::nmi(0).with_shorthand(DestinationShorthand::AllExcludingSelf))
    }

    /// Waits until the last IPI has been accepted (xAPIC delivery status;
    /// x2APIC has none and needs no wait), for at most [`ICR_IDLE_POLLS`]
    /// polls.
    pub fn wait_icr_idle(&self) -> Result<(), ApicError> {
        if self.mode == ApicMode::X2Apic {
            return Ok(());
        }
        for _ in 0..ICR_IDLE_POLLS {
            if self.read_mmio(XAPIC_ICR_LOW) & ICR_SEND_PENDING == 0 {
                return Ok(());
            }
            spin_loop();
        }
        Err(ApicError::IcrBusy)
    }

    /// Starts the AP `apic_id` at `trampoline_page * 4096` with the MP
    /// initialization protocol ([`startup_sequence`]); `delay_us` waits the
    /// given number of microseconds.
    ///
    /// Returns once the IPIs are sent; whether the AP runs is for the
    /// trampoline to signal.
    pub fn start_ap(
        &self,
        apic_id: u32,
        trampoline_page: u8,
        delay_us: &dyn Fn(u32),
    ) -> Result<(), ApicError> {
        for step in startup_sequence(apic_id, trampoline_page) {
            match step {
                StartupStep::Send(icr) => {
                    self.send(icr)?;
                    self.wait_icr_idle()?;
                }
                StartupStep::DelayUs(us) => delay_us(us),
            }
        }
        Ok(())
    }

    /// Starts the timer: `vector` every `initial_count` ticks of the bus
    /// clock divided by `divide`.
    pub fn timer_periodic(&self, vector: u8, initial_count: u32, divide: TimerDivide) {
        self.start_timer(
            lvt_timer(vector, TimerMode::Periodic),
            initial_count,
            divide,
        );
    }

    /// Starts the timer: `vector` once, after `initial_count` ticks of the
    /// bus clock divided by `divide`.
    pub fn timer_one_shot(&self, vector: u8, initial_count: u32, divide: TimerDivide) {
        self.start_timer(lvt_timer(vector, TimerMode::OneShot), initial_count, divide);
    }

    /// Stops the timer and masks its LVT entry.
    pub fn timer_stop(&self) {
        self.write(Register::TimerInitialCount, 0);
        self.write(
            Register::LvtTimer,
            self.read(Register::LvtTimer) | LVT_MASKED,
        );
    }

    /// The timer's current count (0 when stopped or expired in one-shot).
    pub fn current_count(&self) -> u32 {
        self.read(Register::TimerCurrentCount)
    }

    /// The number of LVT entries minus one (version register bits 23:16).
    pub fn max_lvt_entry(&self) -> u8 {
        (self.read(Register::Version) >> VERSION_MAX_LVT_SHIFT) as u8
    }

    /// Whether this APIC implements `lvt`.
    pub fn has_lvt(&self, lvt: Lvt) -> bool {
        lvt.is_present(self.max_lvt_entry())
    }

    /// Masks the interrupts of `lvt`.
    pub fn mask_lvt(&self, lvt: Lvt) -> Result<(), ApicError> {
        self.update_lvt(lvt, |value| value | LVT_MASKED)
    }

    /// Unmasks the interrupts of `lvt`.
    pub fn unmask_lvt(&self, lvt: Lvt) -> Result<(), ApicError> {
        self.update_lvt(lvt, |value| value & !LVT_MASKED)
    }

    /// Masks every LVT entry this APIC implements.
    pub fn mask_all_lvts(&self) {
        let max = self.max_lvt_entry();
        for lvt in Lvt::ALL.into_iter().filter(|lvt| lvt.is_present(max)) {
            self.write(lvt.register(), self.read(lvt.register()) | LVT_MASKED);
        }
    }

    fn update_lvt(&self, lvt: Lvt, f: impl FnOnce(u32) -> u32) -> Result<(), ApicError> {
        if !self.has_lvt(lvt) {
            return Err(ApicError::LvtNotPresent(lvt));
        }
        self.write(lvt.register(), f(self.read(lvt.register())));
        Ok(())
    }

    /// Programs the LVT timer and divide configuration, then the initial
    /// count, whose write starts the countdown.
    fn start_timer(&self, lvt: u32, initial_count: u32, divide: TimerDivide) {
        self.write(Register::LvtTimer, lvt);
        self.write(Register::TimerDivideConfiguration, divide.encoding());
        self.write(Register::TimerInitialCount, initial_count);
    }

    /// Reads `reg`.
    fn read(&self, reg: Register) -> u32 {
        match self.mode {
            ApicMode::XApic => self.read_mmio(reg.mmio_offset()),
            // The x2APIC registers are 32 bits wide in the low half.
            ApicMode::X2Apic => read_msr(reg.x2apic_msr()) as u32,
        }
    }

    /// Writes `reg`.
    fn write(&self, reg: Register, value: u32) {
        match self.mode {
            ApicMode::XApic => self.write_mmio(reg.mmio_offset(), value),
            // SAFETY: in x2APIC mode every `Register` has its MSR (callers
            // check LVT presence); the values written are valid encodings.
            ApicMode::X2Apic => unsafe { Msr::new(reg.x2apic_msr()).write(value.into()) },
        }
    }

    /// Writes the ICR, which sends the IPI.
    ///
    /// In xAPIC mode an IPI is two stores (destination into the high half,
    /// then the low half, which sends: SDM Vol. 3A 11.6.1), and the ICR is
    /// shared with whatever this code interrupted: an interrupted sender, or,
    /// in a VM-exit handler, a guest that drives the same local APIC and may
    /// be between its own two stores. So the high half is put back as it was
    /// found once the IPI has been accepted. Maskable interrupts are off
    /// meanwhile; an NMI handler that sends an IPI is covered by the restore.
    fn write_icr(&self, value: u64) {
        match self.mode {
            ApicMode::XApic => interrupts::without_interrupts(|| {
                let found = self.read_mmio(XAPIC_ICR_HIGH);
                self.write_mmio(XAPIC_ICR_HIGH, (value >> 32) as u32);
                self.write_mmio(XAPIC_ICR_LOW, value as u32);
                // Bounded; the destination is latched by the low store, so
                // a timeout only means the IPI is still being delivered.
                let _ = self.wait_icr_idle();
                self.write_mmio(XAPIC_ICR_HIGH, found);
            }),
            // SAFETY: x2APIC mode is enabled, so the ICR MSR exists; `value`
            // is an encoded IPI.
            ApicMode::X2Apic => unsafe { Msr::new(X2APIC_ICR).write(value) },
        }
    }

    /// The xAPIC register at `offset`, as a pointer.
    fn mmio(&self, offset: usize) -> *mut u32 {
        (self.base as usize + offset) as *mut u32
    }

    fn read_mmio(&self, offset: usize) -> u32 {
        // SAFETY: in xAPIC mode `base` is the APIC register page, which the
        // kernels identity-map uncacheable; `offset` is a 16-byte aligned
        // register offset below 4 KiB. The access is a volatile 32-bit load
        // as the SDM requires; no reference to MMIO is formed.
        unsafe { self.mmio(offset).read_volatile() }
    }

    fn write_mmio(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_mmio`; the APIC registers are not memory
        // Rust knows about, so the store only affects the APIC.
        unsafe { self.mmio(offset).write_volatile(value) }
    }
}

/// Reads an MSR that exists on every processor with a local APIC and, in
/// x2APIC mode, the x2APIC register MSRs.
fn read_msr(msr: u32) -> u64 {
    // SAFETY: callers pass `IA32_APIC_BASE` (architectural since P6) or an
    // x2APIC register MSR while x2APIC mode is enabled; RDMSR has no side
    // effect on these (the timer current count is read-only).
    unsafe { Msr::new(msr).read() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x2apic_msrs_follow_the_mmio_offsets() {
        assert_eq!(Register::Id.x2apic_msr(), 0x802);
        assert_eq!(Register::Eoi.x2apic_msr(), 0x80B);
        assert_eq!(Register::Svr.x2apic_msr(), 0x80F);
        assert_eq!(Register::LvtCmci.x2apic_msr(), 0x82F);
        assert_eq!(Register::LvtTimer.x2apic_msr(), 0x832);
        assert_eq!(Register::TimerDivideConfiguration.x2apic_msr(), 0x83E);
        assert_eq!(X2APIC_ICR, X2APIC_MSR_BASE + (XAPIC_ICR_LOW >> 4) as u32);
    }

    #[test]
    fn icr_encodes_the_sdm_mp_initialization_values() {
        // SDM vol. 3A 9.4.4.1: 000C4500H broadcast INIT, 000C46XXH SIPI.
        let all = DestinationShorthand::AllExcludingSelf;
        let init = Icr::init(0).with_shorthand(all).encode(ApicMode::XApic);
        assert_eq!(init, Ok(0x000C_4500));
        let sipi = Icr::startup(0, 0x08)
            .with_shorthand(all)
            .encode(ApicMode::XApic);
        assert_eq!(sipi, Ok(0x000C_4608));
    }

    #[test]
    fn icr_destination_is_bits_63_56_in_xapic_and_63_32_in_x2apic() {
        assert_eq!(
            Icr::init(3).encode(ApicMode::XApic),
            Ok(0x0300_0000_0000_4500)
        );
        assert_eq!(
            Icr::init(3).encode(ApicMode::X2Apic),
            Ok(0x0000_0003_0000_4500)
        );
        let big = Icr::fixed(0x1_0203, 0x40);
        assert_eq!(big.encode(ApicMode::X2Apic), Ok(0x0001_0203_0000_4040));
        assert_eq!(
            big.encode(ApicMode::XApic),
            Err(ApicError::DestinationOutOfRange(0x1_0203))
        );
    }

    #[test]
    fn icr_encodes_every_field() {
        let nmi_others = Icr::nmi(7).with_shorthand(DestinationShorthand::AllExcludingSelf);
        assert_eq!(nmi_others.destination, 0);
        assert_eq!(nmi_others.encode(ApicMode::X2Apic), Ok(0x000C_4400));
        let deassert = Icr {
            vector: 0,
            delivery_mode: DeliveryMode::Init,
            destination_mode: DestinationMode::Logical,
            level: Level::Deassert,
            trigger_mode: TriggerMode::Level,
            shorthand: DestinationShorthand::AllIncludingSelf,
            destination: 0,
        };
        assert_eq!(deassert.encode(ApicMode::XApic), Ok(0x0008_8D00));
        let to_self = Icr::fixed(0, 0xEF).with_shorthand(DestinationShorthand::ToSelf);
        assert_eq!(to_self.encode(ApicMode::XApic), Ok(0x0004_40EF));
        let lowest = Icr {
            delivery_mode: DeliveryMode::LowestPriority,
            ..Icr::fixed(1, 0x31)
        };
        assert_eq!(lowest.encode(ApicMode::XApic), Ok(0x0100_0000_0000_4131));
        let smi = Icr {
            delivery_mode: DeliveryMode::Smi,
            ..Icr::fixed(2, 0)
        };
        assert_eq!(smi.encode(ApicMode::X2Apic), Ok(0x0000_0002_0000_4200));
    }

    #[test]
    fn startup_sequence_is_init_then_two_startups() {
        use StartupStep::{DelayUs, Send};
        let steps = startup_sequence(5, 0x08);
        let sipi = Send(Icr::startup(5, 0x08));
        assert_eq!(
            steps,
            [
                Send(Icr::init(5)),
                DelayUs(10_000),
                sipi,
                DelayUs(200),
                sipi,
                DelayUs(200)
            ]
        );
    }

    #[test]
    fn timer_encodings() {
        let divides = [
            (TimerDivide::By1, 0b1011),
            (TimerDivide::By2, 0b0000),
            (TimerDivide::By4, 0b0001),
            (TimerDivide::By8, 0b0010),
            (TimerDivide::By16, 0b0011),
            (TimerDivide::By32, 0b1000),
            (TimerDivide::By64, 0b1001),
            (TimerDivide::By128, 0b1010),
        ];
        for (divide, encoding) in divides {
            assert_eq!(divide.encoding(), encoding, "{divide:?}");
        }
        assert_eq!(lvt_timer(0x20, TimerMode::OneShot), 0x0_0020);
        assert_eq!(lvt_timer(0x20, TimerMode::Periodic), 0x2_0020);
        assert_eq!(lvt_timer(0xEC, TimerMode::TscDeadline), 0x4_00EC);
    }

    #[test]
    fn lvt_presence_follows_max_lvt_entry() {
        let present = |max| Lvt::ALL.into_iter().filter(|l| l.is_present(max)).count();
        assert_eq!(present(4), 5); // P6
        assert_eq!(present(5), 6); // Pentium 4: + thermal
        assert_eq!(present(6), 7); // Nehalem: + CMCI
        assert!(!Lvt::Cmci.is_present(5));
        assert_eq!(Lvt::Lint1.register(), Register::LvtLint1);
    }
}
