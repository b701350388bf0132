//! Runs a vCPU to its next exit and checks that it is the expected one.

use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd};

/// A vCPU and what it has done so far.
pub struct Driver<'a> {
    pub vcpu: &'a mut VcpuFd,
    /// Exits to this program so far.
    pub exits: u64,
}

impl std::fmt::Debug for Driver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Driver({} exits)", self.exits)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What an unexpected exit was, in words.
fn describe(e: &VcpuExit) -> String {
    match e {
        VcpuExit::IoOut(p, d) => format!("OUT port {p:#x} [{}]", hex(d)),
        VcpuExit::IoIn(p, d) => format!("IN port {p:#x} ({} bytes)", d.len()),
        VcpuExit::MmioWrite(a, d) => format!("MMIO write {a:#x} [{}]", hex(d)),
        VcpuExit::MmioRead(a, d) => format!("MMIO read {a:#x} ({} bytes)", d.len()),
        VcpuExit::FailEntry(reason, cpu) => {
            format!("KVM_EXIT_FAIL_ENTRY (hardware entry failure reason {reason:#x}, cpu {cpu})")
        }
        other => format!("{other:?}"),
    }
}

impl<'a> Driver<'a> {
    pub fn new(vcpu: &'a mut VcpuFd) -> Self {
        Driver { vcpu, exits: 0 }
    }

    /// Runs to the next exit and hands it to `f`, which checks it (and
    /// answers IN and MMIO reads). Interrupted runs are retried.
    fn next(&mut self, f: impl FnOnce(VcpuExit) -> Result<(), String>) -> Result<(), String> {
        loop {
            match self.vcpu.run() {
                Ok(VcpuExit::Intr) => continue,
                Ok(e) => {
                    self.exits += 1;
                    return f(e);
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
                Err(e) => return Err(format!("KVM_RUN failed: {e}")),
            }
        }
    }

    fn rip(&self) -> String {
        match self.vcpu.get_regs() {
            Ok(r) => format!("rip={:#x}", r.rip),
            Err(e) => format!("(KVM_GET_REGS: {e})"),
        }
    }

    /// Expects `OUT port` with exactly `data`.
    pub fn expect_out(&mut self, port: u16, data: &[u8]) -> Result<(), String> {
        let r = self.next(|e| match e {
            VcpuExit::IoOut(p, d) if p == port && d == data => Ok(()),
            other => Err(format!(
                "expected OUT port {port:#x} [{}], got {}",
                hex(data),
                describe(&other)
            )),
        });
        r.map_err(|e| format!("{e} at {}", self.rip()))
    }

    /// Expects `IN port` of `answer.len()` bytes and answers `answer`.
    pub fn expect_in(&mut self, port: u16, answer: &[u8]) -> Result<(), String> {
        let r = self.next(|e| match e {
            VcpuExit::IoIn(p, d) if p == port && d.len() == answer.len() => {
                d.copy_from_slice(answer);
                Ok(())
            }
            other => Err(format!(
                "expected IN port {port:#x} ({} bytes), got {}",
                answer.len(),
                describe(&other)
            )),
        });
        r.map_err(|e| format!("{e} at {}", self.rip()))
    }

    /// Expects an MMIO write of exactly `data` at `addr`.
    pub fn expect_mmio_write(&mut self, addr: u64, data: &[u8]) -> Result<(), String> {
        let r = self.next(|e| match e {
            VcpuExit::MmioWrite(a, d) if a == addr && d == data => Ok(()),
            other => Err(format!(
                "expected MMIO write {addr:#x} [{}], got {}",
                hex(data),
                describe(&other)
            )),
        });
        r.map_err(|e| format!("{e} at {}", self.rip()))
    }

    /// Expects an MMIO read of `answer.len()` bytes at `addr` and answers `answer`.
    pub fn expect_mmio_read(&mut self, addr: u64, answer: &[u8]) -> Result<(), String> {
        let r = self.next(|e| match e {
            VcpuExit::MmioRead(a, d) if a == addr && d.len() == answer.len() => {
                d.copy_from_slice(answer);
                Ok(())
            }
            other => Err(format!(
                "expected MMIO read {addr:#x} ({} bytes), got {}",
                answer.len(),
                describe(&other)
            )),
        });
        r.map_err(|e| format!("{e} at {}", self.rip()))
    }

    /// Expects HLT.
    pub fn expect_hlt(&mut self) -> Result<(), String> {
        let r = self.next(|e| match e {
            VcpuExit::Hlt => Ok(()),
            other => Err(format!("expected HLT, got {}", describe(&other))),
        });
        r.map_err(|e| format!("{e} at {}", self.rip()))
    }

    /// `n` OUTs to `port`, the i-th (from 0) carrying `value(i)` in `width`
    /// bytes; returns a summary with the time per exit.
    pub fn expect_out_loop(
        &mut self,
        port: u16,
        width: usize,
        n: u32,
        value: impl Fn(u32) -> u32,
    ) -> Result<String, String> {
        let t = Instant::now();
        for i in 0..n {
            let v = value(i).to_le_bytes();
            self.expect_out(port, &v[..width])
                .map_err(|e| format!("exit {i} of {n}: {e}"))?;
        }
        let us = t.elapsed().as_micros() as u64;
        Ok(format!(
            "{n} exits in {} ms, {} us per exit",
            us / 1000,
            us / u64::from(n.max(1))
        ))
    }
}

/// `Ok(())` when `got == want`, else a message naming `what`.
pub fn same<T: PartialEq + std::fmt::LowerHex>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} = {got:#x}, expected {want:#x}"))
    }
}
