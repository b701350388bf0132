//! A tiny multiboot2 kernel (hand-assembled, 32-bit) for the harness's own
//! self-test: prints [`SELFTEST_LINE`] on COM1, then stops the machine through
//! Bochs's shutdown port (0x8900) and QEMU's isa-debug-exit (0xf4).

use crate::scenario::SELFTEST_LINE;

const LOAD: u32 = 0x0010_0000;
const HEADER_LEN: u32 = 64;

fn u32le(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// The kernel image (a flat binary GRUB loads at 1 MiB via the address tag).
pub fn kernel() -> Vec<u8> {
    let msg = format!("{SELFTEST_LINE}\n");
    let shutdown = b"Shutdown";
    let mut k = Vec::new();
    // Multiboot2 header: magic, architecture 0 (i386), length, checksum.
    let magic: u32 = 0xE852_50D6;
    u32le(&mut k, magic);
    u32le(&mut k, 0);
    u32le(&mut k, HEADER_LEN);
    u32le(&mut k, 0u32.wrapping_sub(magic.wrapping_add(HEADER_LEN)));
    // Address tag (type 2, flags 0): header, load start, load end (0 = whole file), bss end.
    for x in [2u32, 24, LOAD, LOAD, 0, 0] {
        u32le(&mut k, x);
    }
    // Entry address tag (type 3), padded to 8 bytes.
    for x in [3u32, 12, LOAD + HEADER_LEN, 0] {
        u32le(&mut k, x);
    }
    // End tag.
    for x in [0u32, 8] {
        u32le(&mut k, x);
    }
    assert_eq!(k.len() as u32, HEADER_LEN);

    let code_len = 72u32;
    let msg_addr = LOAD + HEADER_LEN + code_len;
    let sd_addr = msg_addr + msg.len() as u32;
    let mut c = Vec::new();
    c.push(0xBE); // mov esi, msg
    u32le(&mut c, msg_addr);
    c.push(0xB9); // mov ecx, len
    u32le(&mut c, msg.len() as u32);
    // 1: wait for THR empty (LSR bit 5), else the UART drops bytes.
    c.extend_from_slice(&[0x66, 0xBA, 0xFD, 0x03]); // 1: mov dx, 0x3fd
    c.extend_from_slice(&[0xEC, 0xA8, 0x20, 0x74, 0xFB]); // 2: in al, dx; test al, 0x20; jz 2b
    c.extend_from_slice(&[0x66, 0xBA, 0xF8, 0x03]); // mov dx, 0x3f8
    c.extend_from_slice(&[0xAC, 0xEE, 0xE2, 0xEF]); // lodsb; out dx, al; loop 1b
    // Wait for the transmitter to be empty (LSR bit 6) before stopping.
    c.extend_from_slice(&[0x66, 0xBA, 0xFD, 0x03]); // mov dx, 0x3fd
    c.extend_from_slice(&[0xEC, 0xA8, 0x40, 0x74, 0xFB]); // 3: in al, dx; test al, 0x40; jz 3b
    c.push(0xBE); // mov esi, "Shutdown"
    u32le(&mut c, sd_addr);
    c.push(0xB9); // mov ecx, 8
    u32le(&mut c, shutdown.len() as u32);
    c.extend_from_slice(&[0x66, 0xBA, 0x00, 0x89]); // mov dx, 0x8900
    c.extend_from_slice(&[0xAC, 0xEE, 0xE2, 0xFC]); // 4: lodsb; out dx, al; loop 4b
    c.extend_from_slice(&[0x66, 0xBA, 0xF4, 0x00]); // mov dx, 0xf4
    c.extend_from_slice(&[0xB0, 0x00, 0xEE]); // mov al, 0; out dx, al
    c.extend_from_slice(&[0xFA, 0xF4, 0xEB, 0xFD]); // cli; 5: hlt; jmp 5b
    c.resize(code_len as usize, 0x90); // nop padding
    assert_eq!(c.len() as u32, code_len);
    k.extend_from_slice(&c);
    k.extend_from_slice(msg.as_bytes());
    k.extend_from_slice(shutdown);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_is_zero() {
        let k = kernel();
        let sum = (0..4).fold(0u32, |a, i| {
            a.wrapping_add(u32::from_le_bytes(k[i * 4..i * 4 + 4].try_into().unwrap()))
        });
        assert_eq!(sum, 0);
        let text = String::from_utf8_lossy(&k);
        assert!(text.contains(SELFTEST_LINE) && text.ends_with("Shutdown"));
    }
}
