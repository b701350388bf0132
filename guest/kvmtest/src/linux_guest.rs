//! The `linux` group: boots a Linux kernel (bzImage, with `linux-loader`)
//! with a tiny initramfs as a KVM guest, its console on an emulated 16550
//! (`vm-superio`) at COM1, a CMOS RTC ([`crate::cmos`]), and the in-kernel
//! PIC, IOAPIC and PIT. The initramfs's /init is kvmtest itself
//! ([`l2_init`]): it prints [`L2_MARKER`] and reboots, which (`reboot=t`)
//! ends in a triple fault, KVM_EXIT_SHUTDOWN. While L2 runs, a signal every
//! few seconds interrupts KVM_RUN so that a boot that hangs says where
//! (`KVM linux: <s> s, exits ..., rip=...` every 30 s).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_fpu, kvm_pit_config, kvm_segment};
use kvm_ioctls::{Kvm, VcpuExit};
use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::boot_params;
use linux_loader::loader::{Cmdline, KernelLoader, bzimage::BzImage, load_cmdline};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::cmos::{self, Cmos};
use crate::guests::Cpuid;
use crate::report::{Aborted, Report, say};

/// What L2's /init prints on its console.
pub const L2_MARKER: &str = "KVMTEST L2: init reached";

/// The guest's RAM: [0, 128M).
const MEM: usize = 128 << 20;
const BOOT_PARAMS: u64 = 0x7000;
const CMDLINE_AT: u64 = 0x2_0000;
const GDT: u64 = 0x500;
const PML4: u64 = 0x9000;
const PDPT: u64 = 0xa000;
const PD: u64 = 0xb000;
const HIMEM: u64 = 0x10_0000;
const COM1: u16 = 0x3f8;
const COM1_IRQ: u32 = 4;

/// L2's kernel command line: its console on the 16550 at COM1, reboot by
/// triple fault (a KVM shutdown exit), and what makes Linux boot fast
/// where every console byte and port access is an exit to this program.
pub const L2_CMDLINE: &str = "console=ttyS0 reboot=t panic=-1 nokaslr \
mitigations=off tsc=reliable no_timer_check cryptomgr.notests=1 pci=off acpi=off \
i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd \
initcall_blacklist=load_system_certificate_list,trace_eval_init rdinit=/init";

/// Added to [`L2_CMDLINE`]: `quiet` by default, the decompressor's and the
/// kernel's messages with `kvm_l2_verbose=1`.
fn l2_cmdline_tail(verbose: bool) -> &'static str {
    if verbose {
        "earlyprintk=serial,ttyS0"
    } else {
        "quiet loglevel=3"
    }
}

/// How often a running L2 boot reports where it is, and how often its
/// KVM_RUN is interrupted to look at the time.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
const KICK_EVERY: Duration = Duration::from_secs(2);

/// kvmtest as PID 1 of L2's initramfs: print the marker and reboot.
pub fn l2_init() -> ! {
    let mut u: libc::utsname =
        // SAFETY: utsname is plain data; uname fills it.
        unsafe { std::mem::zeroed() };
    // SAFETY: `u` is a valid utsname.
    unsafe { libc::uname(&mut u) };
    // SAFETY: uname NUL-terminates the release field.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    say(&format!(
        "{L2_MARKER} (Linux {} in KVM)",
        release.to_string_lossy()
    ));
    // SAFETY: no pointers; reboot(2) only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_AUTOBOOT);
    }
    std::process::exit(1)
}

struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// The serial device's output: whole lines, prefixed, to our console.
struct Console {
    line: Vec<u8>,
    marker: Arc<AtomicBool>,
    lines: Vec<String>,
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                let l = String::from_utf8_lossy(&self.line).trim_end().to_string();
                self.line.clear();
                if l.contains(L2_MARKER) {
                    self.marker.store(true, Ordering::SeqCst);
                }
                say(&format!("L2: {l}"));
                self.lines.push(l);
            } else if b != b'\r' {
                self.line.push(b);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn gdt_and_page_tables(mem: &GuestMemoryMmap) -> Result<(), String> {
    let w = |at: u64, v: u64| {
        mem.write_obj(v, GuestAddress(at))
            .map_err(|e| format!("write guest memory at {at:#x}: {e}"))
    };
    // The 64-bit boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18.
    w(GDT, 0)?;
    w(GDT + 8, 0)?;
    w(GDT + 0x10, 0x00af_9b00_0000_ffff)?;
    w(GDT + 0x18, 0x00cf_9300_0000_ffff)?;
    w(PML4, PDPT | 3)?;
    w(PDPT, PD | 3)?;
    for i in 0..512u64 {
        w(PD + 8 * i, (i << 21) | 0x83)?; // identity, 2M pages, first 1G
    }
    Ok(())
}

fn boot_params(
    hdr: linux_loader::loader::bootparam::setup_header,
    cmdline_len: usize,
    initrd: (u64, usize),
) -> boot_params {
    let mut p = boot_params {
        hdr,
        ..Default::default()
    };
    p.hdr.type_of_loader = 0xff;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = 0x5372_6448; // "HdrS"
    p.hdr.cmd_line_ptr = CMDLINE_AT as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    p.hdr.ramdisk_image = initrd.0 as u32;
    p.hdr.ramdisk_size = initrd.1 as u32;
    let ram = [(0u64, 0x9_fc00u64), (HIMEM, MEM as u64 - HIMEM)];
    for (i, (addr, size)) in ram.iter().enumerate() {
        p.e820_table[i].addr = *addr;
        p.e820_table[i].size = *size;
        p.e820_table[i].r#type = 1; // RAM
    }
    p.e820_entries = ram.len() as u8;
    p
}

fn segment(selector: u16, type_: u8, l: u8, db: u8) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db,
        s: 1,
        l,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Boots `kernel` with `initrd` in a one-vCPU VM and waits for L2's marker.
pub fn boot_linux(
    kvm: &Kvm,
    cpuid: &Cpuid,
    kernel: &str,
    initrd: &str,
    verbose: bool,
    r: &mut Report,
) -> Result<(), Aborted> {
    let started = Instant::now();
    let cmdline_text = format!("{L2_CMDLINE} {}", l2_cmdline_tail(verbose));
    let mut made = None;
    r.run("linux setup", || {
        let kernel_bytes = std::fs::read(kernel).map_err(|e| format!("read {kernel}: {e}"))?;
        let initrd_bytes = std::fs::read(initrd).map_err(|e| format!("read {initrd}: {e}"))?;
        let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
        vm.set_tss_address(crate::layout::TSS as usize)
            .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
        vm.create_irq_chip()
            .map_err(|e| format!("KVM_CREATE_IRQCHIP: {e}"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(|e| format!("KVM_CREATE_PIT2: {e}"))?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)])
            .map_err(|e| format!("guest memory: {e}"))?;
        let host = mem
            .get_host_address(GuestAddress(0))
            .map_err(|e| format!("guest memory: {e}"))?;
        let region = kvm_bindings::kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: MEM as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: the region is `mem`'s one mapping, which lives (in `made`)
        // as long as the VM.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        let loaded = BzImage::load(
            &mem,
            None,
            &mut std::io::Cursor::new(&kernel_bytes),
            Some(GuestAddress(HIMEM)),
        )
        .map_err(|e| format!("linux-loader: {kernel} is no bzImage it can load: {e}"))?;
        let hdr = loaded
            .setup_header
            .ok_or("linux-loader gave no setup header")?;
        let mut cmdline = Cmdline::new(4096).map_err(|e| format!("cmdline: {e}"))?;
        cmdline
            .insert_str(&cmdline_text)
            .map_err(|e| format!("cmdline: {e}"))?;
        load_cmdline(&mem, GuestAddress(CMDLINE_AT), &cmdline)
            .map_err(|e| format!("load the command line: {e}"))?;
        let initrd_at = (MEM as u64 - initrd_bytes.len() as u64 - 0x1000) & !0xfff;
        mem.write_slice(&initrd_bytes, GuestAddress(initrd_at))
            .map_err(|e| format!("load the initrd: {e}"))?;
        let params = boot_params(hdr, cmdline_text.len() + 1, (initrd_at, initrd_bytes.len()));
        LinuxBootConfigurator::write_bootparams::<GuestMemoryMmap>(
            &BootParams::new::<boot_params>(&params, GuestAddress(BOOT_PARAMS)),
            &mem,
        )
        .map_err(|e| format!("write boot_params: {e}"))?;
        gdt_and_page_tables(&mem)?;
        let vcpu = vm
            .create_vcpu(0)
            .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
        vcpu.set_cpuid2(&cpuid.table)
            .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        sregs.cs = segment(0x10, 11, 1, 0);
        let ds = segment(0x18, 3, 0, 1);
        (sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs) = (ds, ds, ds, ds, ds);
        sregs.gdt.base = GDT;
        sregs.gdt.limit = 0x1f;
        sregs.cr3 = PML4;
        sregs.cr4 = 1 << 5;
        sregs.cr0 = 0x8000_0011; // PG, ET, PE
        sregs.efer = crate::layout::EFER_LME | crate::layout::EFER_LMA;
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = loaded.kernel_load.raw_value() + 0x200; // the 64-bit entry
        regs.rsi = BOOT_PARAMS;
        regs.rflags = 2;
        regs.rsp = 0x8ff0;
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        vcpu.set_fpu(&fpu)
            .map_err(|e| format!("KVM_SET_FPU: {e}"))?;
        // As firmware leaves them: MTRRs enabled, write-back by default
        // (IA32_MTRR_DEF_TYPE; otherwise all memory is uncacheable), and
        // fast strings on (IA32_MISC_ENABLE bit 0).
        let msr = |index, data| kvm_bindings::kvm_msr_entry {
            index,
            data,
            ..Default::default()
        };
        let wanted = [msr(0x2ff, (1 << 11) | 6), msr(0x1a0, 1)];
        let msrs =
            kvm_bindings::Msrs::from_entries(&wanted).map_err(|e| format!("MSR list: {e:?}"))?;
        let set = vcpu
            .set_msrs(&msrs)
            .map_err(|e| format!("KVM_SET_MSRS: {e}"))?;
        if set != wanted.len() {
            return Err(format!(
                "KVM_SET_MSRS set {set} of {} MSRs (MTRR_DEF_TYPE, MISC_ENABLE)",
                wanted.len()
            ));
        }
        // LINT0 ExtINT (the PIC), LINT1 NMI, as a BIOS leaves them.
        let mut lapic = vcpu
            .get_lapic()
            .map_err(|e| format!("KVM_GET_LAPIC: {e}"))?;
        let mut set = |off: usize, v: u32| {
            for (i, b) in v.to_le_bytes().iter().enumerate() {
                lapic.regs[off + i] = *b as _;
            }
        };
        set(0x350, 0x700);
        set(0x360, 0x400);
        vcpu.set_lapic(&lapic)
            .map_err(|e| format!("KVM_SET_LAPIC: {e}"))?;
        let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| format!("eventfd: {e}"))?;
        vm.register_irqfd(&irq, COM1_IRQ)
            .map_err(|e| format!("KVM_IRQFD: {e}"))?;
        let marker = Arc::new(AtomicBool::new(false));
        let serial = Serial::new(
            IrqTrigger(irq),
            Console {
                line: Vec::new(),
                marker: marker.clone(),
                lines: Vec::new(),
            },
        );
        let what = format!(
            "{} KiB kernel at {:#x}, {} KiB initrd at {initrd_at:#x}, {} MiB RAM",
            kernel_bytes.len() >> 10,
            loaded.kernel_load.raw_value(),
            initrd_bytes.len() >> 10,
            MEM >> 20
        );
        made = Some((vm, mem, vcpu, serial, marker));
        Ok(what)
    })?;
    let (_vm, _mem, mut vcpu, mut serial, marker) = made.expect("set up");
    r.run("linux boot", || {
        let kicker = Kicker::start(KICK_EVERY)?;
        let mut n = Exits::default();
        let mut cmos = Cmos::default();
        let mut last_report = Instant::now();
        loop {
            let exit = match vcpu.run() {
                Ok(e) => e,
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if last_report.elapsed() >= PROGRESS_EVERY {
                        last_report = Instant::now();
                        say(&format!(
                            "KVM linux: {} s, {n}, {}",
                            started.elapsed().as_secs(),
                            where_is(&vcpu)
                        ));
                    }
                    continue;
                }
                Err(e) => return Err(format!("KVM_RUN: {e}")),
            };
            match exit {
                VcpuExit::IoOut(p, d) if (COM1..COM1 + 8).contains(&p) => {
                    n.serial += 1;
                    serial
                        .write((p - COM1) as u8, d[0])
                        .map_err(|e| format!("serial: {e:?}"))?;
                }
                VcpuExit::IoIn(p, d) if (COM1..COM1 + 8).contains(&p) => {
                    n.serial += 1;
                    d[0] = serial.read((p - COM1) as u8);
                }
                VcpuExit::IoOut(p, d) if p == cmos::INDEX || p == cmos::DATA => {
                    n.rtc += 1;
                    cmos.write(p, d[0]);
                }
                VcpuExit::IoIn(p, d) if p == cmos::INDEX || p == cmos::DATA => {
                    n.rtc += 1;
                    d.fill(cmos.read(p));
                }
                // No other devices: reads float high, writes vanish.
                VcpuExit::IoIn(p, d) => {
                    n.io += 1;
                    *n.ports.entry(p).or_default() += 1;
                    d.fill(0xff)
                }
                VcpuExit::MmioRead(_, d) => {
                    n.mmio += 1;
                    d.fill(0xff)
                }
                VcpuExit::IoOut(p, _) => {
                    n.io += 1;
                    *n.ports.entry(p).or_default() += 1;
                }
                VcpuExit::MmioWrite(..) => n.mmio += 1,
                VcpuExit::Shutdown | VcpuExit::Hlt => break,
                other => {
                    return Err(format!(
                        "unexpected exit {other:?} after {n}; last console lines: {}",
                        last_lines(serial.writer())
                    ));
                }
            }
        }
        drop(kicker);
        if marker.load(Ordering::SeqCst) {
            Ok(format!(
                "L2's /init ran and rebooted; {n}, {} s",
                started.elapsed().as_secs()
            ))
        } else {
            Err(format!(
                "the guest stopped (shutdown) before `{L2_MARKER}` after {n}; last console lines: {}",
                last_lines(serial.writer())
            ))
        }
    })
}

/// Exits to this program, by kind.
#[derive(Default)]
struct Exits {
    serial: u64,
    rtc: u64,
    io: u64,
    mmio: u64,
    /// The other I/O exits by port.
    ports: std::collections::BTreeMap<u16, u64>,
}

impl std::fmt::Display for Exits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exits to user space: {} serial, {} RTC, {} other I/O, {} MMIO",
            self.serial, self.rtc, self.io, self.mmio
        )?;
        let mut top: Vec<_> = self.ports.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        for (i, (port, n)) in top.iter().take(4).enumerate() {
            let sep = if i == 0 { " (ports: " } else { ", " };
            write!(f, "{sep}{port:#x} {n}")?;
        }
        if !top.is_empty() {
            write!(f, ")")?;
        }
        Ok(())
    }
}

/// Where the vCPU is: RIP, CR3, and RCX/RSI/RDI (a copy loop's state).
fn where_is(vcpu: &kvm_ioctls::VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rcx={:#x} rsi={:#x} rdi={:#x} cr3={:#x} cr0={:#x}",
            r.rip, r.rcx, r.rsi, r.rdi, s.cr3, s.cr0
        ),
        (Err(e), _) | (_, Err(e)) => format!("(registers unreadable: {e})"),
    }
}

/// Interrupts this thread's KVM_RUN every `period` with a signal whose
/// handler does nothing, so that the run loop can report progress.
struct Kicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const KICK: libc::c_int = libc::SIGUSR1;

extern "C" fn ignore_kick(_: libc::c_int) {}

impl Kicker {
    fn start(period: Duration) -> Result<Self, String> {
        // SAFETY: a zeroed sigaction is valid; the handler is async-signal
        // safe (it does nothing); no SA_RESTART, so KVM_RUN returns EINTR.
        let installed = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(KICK, &sa, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() } as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                std::thread::park_timeout(period);
                if !flag.load(Ordering::SeqCst) {
                    // SAFETY: `target` is the vCPU thread, alive until
                    // Drop has joined this thread.
                    unsafe { libc::pthread_kill(target as libc::pthread_t, KICK) };
                }
            }
        });
        Ok(Kicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Kicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn last_lines(c: &Console) -> String {
    let mut lines: Vec<&str> = c.lines.iter().map(String::as_str).collect();
    let partial = String::from_utf8_lossy(&c.line);
    if !partial.is_empty() {
        lines.push(&partial);
    }
    let n = lines.len().saturating_sub(3);
    if lines.is_empty() {
        "(none)".into()
    } else {
        lines[n..].join(" / ")
    }
}
