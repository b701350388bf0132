//! Item 9: devices the guest owns. The guest parks PIT channel 2 (mode 0,
//! gate off through port 0x61, so it does not count), then makes L0 wait:
//! an INIT to a running AP, which L0 emulates by kicking the AP and
//! waiting (bounded) for it to reach wait-for-SIPI. A hypervisor that
//! times that wait with PIT channel 2 reprograms the guest's channel and
//! port 0x61 behind its back; the channel must still hold the guest's
//! count, and port 0x61 the guest's gate and speaker bits.

use shared::{percpu, x86};

use super::{Env, check, skip};

const PORT_B: u16 = 0x61;
const PIT_CH2: u16 = 0x42;
const PIT_MODE: u16 = 0x43;
/// Channel 2, low then high byte, mode 0, binary.
const CH2_MODE0: u8 = 0b1011_0000;
/// Latch channel 2's count.
const CH2_LATCH: u8 = 0b1000_0000;
const COUNT: u16 = 0x1234;

fn outb(port: u16, v: u8) {
    // SAFETY: the PIT and port B belong to this guest; only channel 2 (the
    // speaker's, silent with its data bit off) and the gate are touched.
    unsafe { x86::outb(port, v) }
}

fn inb(port: u16) -> u8 {
    // SAFETY: as above; reads of a latched count.
    unsafe { x86::inb(port) }
}

fn ch2_count() -> u16 {
    outb(PIT_MODE, CH2_LATCH);
    let lo = inb(PIT_CH2);
    let hi = inb(PIT_CH2);
    u16::from_le_bytes([lo, hi])
}

pub fn run(_env: &Env) {
    let Some(ap) = percpu::get(1).filter(|c| c.is_online()) else {
        skip("pit_ch2_untouched", "needs a second CPU (the INIT target)");
        return;
    };
    let port_b = inb(PORT_B) & 0x0f;
    // Gate and speaker off: channel 2 holds its count.
    outb(PORT_B, port_b & !0x03);
    outb(PIT_MODE, CH2_MODE0);
    outb(PIT_CH2, COUNT as u8);
    outb(PIT_CH2, (COUNT >> 8) as u8);
    for _ in 0..1000 {
        x86::pause();
    }
    let before = ch2_count();
    let lapic = shared::apic::LocalApic::current();
    let sent = lapic.send_init(ap.apic_id()).is_ok();
    for _ in 0..200_000 {
        x86::pause();
    }
    let after = ch2_count();
    let port_b_after = inb(PORT_B) & 0x03;
    outb(PORT_B, port_b);
    check(
        "pit_ch2_untouched",
        sent && before == after && port_b_after == port_b & !0x03,
        format_args!(
            "channel 2 count {before:#x} and port 0x61 gate/speaker 0 across L0's INIT wait"
        ),
        format_args!("sent {sent}, count {after:#x}, port 0x61 bits {port_b_after:#x}"),
    );
}
