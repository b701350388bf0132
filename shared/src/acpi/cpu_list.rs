//! The processor and interrupt controller list produced from the ACPI MADT
//! or the MP Configuration Table: fixed capacity, no allocation.

use core::ops::Deref;

/// Processors kept in a [`CpuList`]; further ones are counted in
/// [`FixedList::ignored`] and otherwise ignored.
pub const MAX_CPUS: usize = 64;
/// I/O APICs kept in a [`CpuList`].
pub const MAX_IO_APICS: usize = 16;
/// Interrupt source overrides kept in a [`CpuList`] (there are 16 ISA IRQs).
pub const MAX_INTERRUPT_SOURCE_OVERRIDES: usize = 16;
/// Local APIC NMI structures kept in a [`CpuList`] (one per processor at
/// most, usually a single one for all processors).
pub const MAX_LOCAL_APIC_NMIS: usize = MAX_CPUS;

/// A list of at most `N` items that counts, rather than stores, the items
/// pushed beyond its capacity. Dereferences to the slice of kept items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedList<T, const N: usize> {
    items: [T; N],
    len: usize,
    ignored: usize,
}

impl<T: Copy + Default, const N: usize> FixedList<T, N> {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
            ignored: 0,
        }
    }

    /// Appends `item`, or counts it as ignored if the list is full.
    pub(crate) fn push(&mut self, item: T) {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
            }
            None => self.ignored += 1,
        }
    }
}

impl<T: Copy + Default, const N: usize> Default for FixedList<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, const N: usize> FixedList<T, N> {
    /// How many items did not fit.
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The kept items.
    pub fn as_slice(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T, const N: usize> Deref for FixedList<T, N> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

/// A processor that can be started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// Local APIC ID (8 bits from a Processor Local APIC or MP processor
    /// entry, 32 bits from a Processor Local x2APIC structure).
    pub apic_id: u32,
    /// ACPI Processor UID, which Local APIC NMI structures refer to (`None`
    /// for MP table processors).
    pub acpi_processor_uid: Option<u32>,
    /// Enabled at boot. `false`: only Online Capable (ACPI 6.3+), i.e. it
    /// may be brought online later.
    pub enabled: bool,
    /// Marked as the bootstrap processor (MP table only; ACPI does not say,
    /// although firmware lists the BSP first).
    pub bsp: bool,
}

/// An I/O APIC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoApic {
    /// I/O APIC ID.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u32,
    /// First Global System Interrupt it handles (ACPI; 0 from the MP table,
    /// which routes interrupts by I/O APIC ID instead).
    pub gsi_base: u32,
}

/// Polarity of an interrupt input (MPS INTI flags bits 1:0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Conforms to the specification of the bus (ISA: active high).
    Conforming,
    /// Active high.
    ActiveHigh,
    /// Active low.
    ActiveLow,
    /// The reserved encoding 2.
    Reserved,
}

/// Trigger mode of an interrupt input (MPS INTI flags bits 3:2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerMode {
    /// Conforms to the specification of the bus (ISA: edge).
    Conforming,
    /// Edge-triggered.
    Edge,
    /// Level-triggered.
    Level,
    /// The reserved encoding 2.
    Reserved,
}

/// MPS INTI flags (ACPI 6.5, table 5.26), as found in interrupt source
/// override and NMI structures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MpsIntiFlags(pub u16);

impl MpsIntiFlags {
    /// Bits 1:0.
    pub fn polarity(self) -> Polarity {
        match self.0 & 0b11 {
            0 => Polarity::Conforming,
            1 => Polarity::ActiveHigh,
            2 => Polarity::Reserved,
            _ => Polarity::ActiveLow,
        }
    }

    /// Bits 3:2.
    pub fn trigger_mode(self) -> TriggerMode {
        match (self.0 >> 2) & 0b11 {
            0 => TriggerMode::Conforming,
            1 => TriggerMode::Edge,
            2 => TriggerMode::Reserved,
            _ => TriggerMode::Level,
        }
    }
}

/// An Interrupt Source Override: ISA IRQ `source` is wired to `gsi`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterruptSourceOverride {
    /// Bus (0: ISA).
    pub bus: u8,
    /// Bus-relative interrupt source (the ISA IRQ).
    pub source: u8,
    /// The Global System Interrupt it signals.
    pub gsi: u32,
    /// Polarity and trigger mode.
    pub flags: MpsIntiFlags,
}

/// A Local APIC NMI structure: which local APIC LINT input is wired to NMI.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalApicNmi {
    /// ACPI Processor UID it applies to; `None`: all processors.
    pub acpi_processor_uid: Option<u32>,
    /// Polarity and trigger mode.
    pub flags: MpsIntiFlags,
    /// Local APIC interrupt input: 0 (LINT0) or 1 (LINT1).
    pub lint: u8,
}

/// Which firmware table a [`CpuList`] comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuSource {
    /// The ACPI MADT.
    #[default]
    Acpi,
    /// The MP Configuration Table (or an MP default configuration).
    MpTable,
}

/// The processors and interrupt controllers described by the firmware.
///
/// Holds up to [`MAX_CPUS`] usable (enabled or online-capable) processors,
/// each APIC ID once, in firmware order; the ones beyond are counted by
/// `cpus().ignored()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList {
    pub(crate) cpus: FixedList<Cpu, MAX_CPUS>,
    pub(crate) io_apics: FixedList<IoApic, MAX_IO_APICS>,
    pub(crate) overrides: FixedList<InterruptSourceOverride, MAX_INTERRUPT_SOURCE_OVERRIDES>,
    pub(crate) local_apic_nmis: FixedList<LocalApicNmi, MAX_LOCAL_APIC_NMIS>,
    pub(crate) local_apic_base: u64,
    pub(crate) pcat_compat: bool,
    pub(crate) source: CpuSource,
}

impl CpuList {
    /// An empty list.
    pub(crate) fn new(source: CpuSource, local_apic_base: u64) -> Self {
        Self {
            cpus: FixedList::new(),
            io_apics: FixedList::new(),
            overrides: FixedList::new(),
            local_apic_nmis: FixedList::new(),
            local_apic_base,
            pcat_compat: false,
            source,
        }
    }

    /// Adds a processor unless its APIC ID is already listed (firmware may
    /// describe a processor by both a local APIC and a local x2APIC
    /// structure).
    pub(crate) fn add_cpu(&mut self, cpu: Cpu) {
        if self.find(cpu.apic_id).is_none() {
            self.cpus.push(cpu);
        }
    }

    /// The usable processors, and how many did not fit.
    pub fn cpus(&self) -> &FixedList<Cpu, MAX_CPUS> {
        &self.cpus
    }

    /// The processor with local APIC ID `apic_id`.
    pub fn find(&self, apic_id: u32) -> Option<&Cpu> {
        self.cpus.iter().find(|cpu| cpu.apic_id == apic_id)
    }

    /// The I/O APICs.
    pub fn io_apics(&self) -> &FixedList<IoApic, MAX_IO_APICS> {
        &self.io_apics
    }

    /// The interrupt source overrides (ACPI only).
    pub fn interrupt_source_overrides(
        &self,
    ) -> &FixedList<InterruptSourceOverride, MAX_INTERRUPT_SOURCE_OVERRIDES> {
        &self.overrides
    }

    /// The local APIC NMI inputs (ACPI only).
    pub fn local_apic_nmis(&self) -> &FixedList<LocalApicNmi, MAX_LOCAL_APIC_NMIS> {
        &self.local_apic_nmis
    }

    /// Physical address of the local APICs' registers (xAPIC mode).
    pub fn local_apic_base(&self) -> u64 {
        self.local_apic_base
    }

    /// The system also has dual 8259 PICs, which must be masked when the
    /// APICs are used (MADT `PCAT_COMPAT` flag; always true for MP table
    /// systems, which are PC/AT compatible).
    pub fn has_8259_pics(&self) -> bool {
        self.pcat_compat
    }

    /// Which firmware table this list comes from.
    pub fn source(&self) -> CpuSource {
        self.source
    }
}
