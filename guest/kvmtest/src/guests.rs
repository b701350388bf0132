//! The three guests: real mode, 64-bit mode, and two vCPUs at once. Each
//! runs its code from `guest_code.rs` and checks every exit, every value
//! the guest sends back, and its registers and memory at the end.

use std::time::Instant;

use kvm_bindings::{CpuId, kvm_segment};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::exits::{Driver, same};
use crate::guest_code;
use crate::layout::*;
use crate::ram::GuestRam;
use crate::report::{Aborted, Report};

/// What CPUID the guests get (KVM's supported table) and what they must see.
#[derive(Debug)]
pub struct Cpuid {
    pub table: CpuId,
    /// CPUID.0:EBX of the table.
    pub leaf0_ebx: u32,
}

/// "KVMK", CPUID.40000000H:EBX of KVM's own leaf.
pub const KVM_SIGNATURE_EBX: u32 = u32::from_le_bytes(*b"KVMK");

impl Cpuid {
    pub fn new(kvm: &Kvm) -> Result<Self, String> {
        let table = kvm
            .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID: {e}"))?;
        let leaf0_ebx = table
            .as_slice()
            .iter()
            .find(|e| e.function == 0)
            .map(|e| e.ebx)
            .ok_or("KVM_GET_SUPPORTED_CPUID has no leaf 0")?;
        let has_kvm_leaf = table
            .as_slice()
            .iter()
            .any(|e| e.function == 0x4000_0000 && e.ebx == KVM_SIGNATURE_EBX);
        if !has_kvm_leaf {
            return Err("KVM_GET_SUPPORTED_CPUID has no KVM leaf 0x40000000".into());
        }
        Ok(Cpuid { table, leaf0_ebx })
    }
}

fn new_vm(kvm: &Kvm) -> Result<VmFd, String> {
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;
    // Needed for real mode without unrestricted guest (KVM's vm86 TSS);
    // three pages outside guest RAM.
    vm.set_tss_address(TSS as usize)
        .map_err(|e| format!("KVM_SET_TSS_ADDR: {e}"))?;
    Ok(vm)
}

fn new_vcpu(vm: &VmFd, id: u64, cpuid: &Cpuid) -> Result<VcpuFd, String> {
    let vcpu = vm
        .create_vcpu(id)
        .map_err(|e| format!("KVM_CREATE_VCPU {id}: {e}"))?;
    vcpu.set_cpuid2(&cpuid.table)
        .map_err(|e| format!("KVM_SET_CPUID2: {e}"))?;
    Ok(vcpu)
}

fn real_mode_segment(s: &mut kvm_segment) {
    s.base = 0;
    s.selector = 0;
}

/// The real-mode guest: CS:IP = 0000:1000, every segment 0.
pub fn real_mode(kvm: &Kvm, cpuid: &Cpuid, r: &mut Report) -> Result<(), Aborted> {
    let started = Instant::now();
    let mut made = None;
    r.run("realmode setup", || {
        let vm = new_vm(kvm)?;
        let mut ram = GuestRam::new(&vm, 0, RM_RAM)?;
        ram.write(CODE, guest_code::real_mode());
        let vcpu = new_vcpu(&vm, 0, cpuid)?;
        let mut sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        for s in [
            &mut sregs.cs,
            &mut sregs.ds,
            &mut sregs.es,
            &mut sregs.ss,
            &mut sregs.fs,
            &mut sregs.gs,
        ] {
            real_mode_segment(s);
        }
        vcpu.set_sregs(&sregs)
            .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
        let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        regs.rip = CODE;
        regs.rflags = 2;
        regs.rsp = 0x8000;
        vcpu.set_regs(&regs)
            .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
        made = Some((vm, ram, vcpu));
        Ok(format!(
            "{} bytes of code at {CODE:#x}",
            guest_code::real_mode().len()
        ))
    })?;
    let (_vm, ram, mut vcpu) = made.expect("set up");
    let mut d = Driver::new(&mut vcpu);
    r.run("realmode io-out", || {
        d.expect_out(0x10, &[0x42]).map(|()| String::new())
    })?;
    r.run("realmode io-in", || {
        d.expect_in(0x11, &[0x5a])?;
        d.expect_out(0x12, &[0x5a])?;
        Ok("IN answered 0x5a, the guest sent it back".into())
    })?;
    r.run("realmode mmio-write", || {
        d.expect_mmio_write(RM_MMIO, &0xbeef_u16.to_le_bytes())
            .map(|()| format!("{RM_MMIO:#x} = 0xbeef"))
    })?;
    r.run("realmode mmio-read", || {
        d.expect_mmio_read(RM_MMIO + 2, &0x1234_u16.to_le_bytes())?;
        d.expect_out(0x13, &0x1234_u16.to_le_bytes())?;
        Ok("answered 0x1234, the guest sent it back".into())
    })?;
    r.run("realmode cpuid", || {
        d.expect_out(0x14, &cpuid.leaf0_ebx.to_le_bytes())?;
        d.expect_out(0x14, &KVM_SIGNATURE_EBX.to_le_bytes())?;
        Ok("leaf 0 and KVM's leaf 0x40000000 as set".into())
    })?;
    r.run("realmode exit-loop", || {
        d.expect_out_loop(0x15, 2, 300, |i| 300 - i)
    })?;
    r.run("realmode hlt", || d.expect_hlt().map(|()| String::new()))?;
    let exits = d.exits;
    r.run("realmode state", || {
        let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let end = CODE + guest_code::real_mode().len() as u64;
        same("rip after HLT", regs.rip, end)?;
        same("si", regs.rsi & 0xffff, 0x55aa)?;
        same("cx after the loop", regs.rcx & 0xffff, 0)?;
        same(
            "word at 0x7000",
            u16::from_le_bytes(ram.read::<2>(0x7000)),
            0x1357,
        )?;
        Ok(format!(
            "{exits} exits to user space, {} ms in all",
            started.elapsed().as_millis()
        ))
    })
}

/// Writes the 64-bit guest's GDT and page tables: 2M pages at 0 (RAM) and
/// at [`LM_MMIO`] (no memory behind it, so accesses exit as MMIO).
fn long_mode_tables(ram: &mut GuestRam) {
    ram.write_u64(GDT, 0);
    ram.write_u64(GDT + 8, 0x00af_9b00_0000_ffff); // 64-bit code, DPL 0
    ram.write_u64(GDT + 16, 0x00cf_9300_0000_ffff); // data
    ram.write_u64(PML4, PDPT | 3);
    ram.write_u64(PDPT, PD | 3);
    ram.write_u64(PD, 0x83); // 2M page at 0: present, writable, PS
    ram.write_u64(PD + 8 * (LM_MMIO >> 21), LM_MMIO | 0x83);
}

/// RFLAGS of the 64-bit guests: IF set. Nothing is ever injected (no
/// interrupt controller, no KVM_INTERRUPT), so IF only matters to the CPU
/// below: Bochs turns a pending external interrupt into the "external-
/// interrupt exiting" VM exit only while the guest has IF=1 (a departure
/// from the SDM, ../shared/reference/bochs.md). With IF=0, a vCPU spinning in
/// the guest never exits for the host's IPIs, and the other vCPU's KVM,
/// waiting for its remote TLB flush to be acknowledged, stalls until the
/// spinner exits by itself.
const RFLAGS_IF: u64 = 0x202;

fn long_mode_vcpu(vcpu: &VcpuFd, rsi: u64) -> Result<(), String> {
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    let code = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 8,
        type_: 11,
        present: 1,
        dpl: 0,
        db: 0,
        s: 1,
        l: 1,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_segment {
        selector: 16,
        type_: 3,
        db: 1,
        l: 0,
        ..code
    };
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.ss, sregs.fs, sregs.gs) = (data, data, data, data, data);
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 23;
    sregs.cr3 = PML4;
    sregs.cr4 = 1 << 5; // PAE
    sregs.cr0 = 0x8005_0033; // PG, AM, WP, NE, ET, MP, PE
    sregs.efer = EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = CODE;
    regs.rflags = RFLAGS_IF;
    regs.rsp = 0x8000;
    regs.rsi = rsi;
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))
}

/// The 64-bit guest: its own GDT and 4-level page tables in guest memory.
pub fn long_mode(kvm: &Kvm, cpuid: &Cpuid, r: &mut Report) -> Result<(), Aborted> {
    let started = Instant::now();
    let mut made = None;
    r.run("longmode setup", || {
        let vm = new_vm(kvm)?;
        let mut ram = GuestRam::new(&vm, 0, LM_RAM)?;
        long_mode_tables(&mut ram);
        ram.write(CODE, guest_code::long_mode());
        let vcpu = new_vcpu(&vm, 0, cpuid)?;
        long_mode_vcpu(&vcpu, 0)?;
        made = Some((vm, ram, vcpu));
        Ok(format!(
            "{} bytes of code at {CODE:#x}, CR3 {PML4:#x}, GDT {GDT:#x}",
            guest_code::long_mode().len()
        ))
    })?;
    let (_vm, ram, mut vcpu) = made.expect("set up");
    let mut d = Driver::new(&mut vcpu);
    r.run("longmode io-out", || {
        d.expect_out(0x10, &[0x42]).map(|()| String::new())
    })?;
    r.run("longmode io-in", || {
        d.expect_in(0x11, &[0x5a])?;
        d.expect_out(0x12, &[0x5a])?;
        Ok("IN answered 0x5a, the guest sent it back".into())
    })?;
    r.run("longmode mmio-write", || {
        d.expect_mmio_write(LM_MMIO, &0xdead_beef_u32.to_le_bytes())
            .map(|()| format!("{LM_MMIO:#x} = 0xdeadbeef"))
    })?;
    r.run("longmode mmio-read", || {
        d.expect_mmio_read(LM_MMIO + 8, &LM_MMIO_ANSWER.to_le_bytes())
            .map(|()| format!("8 bytes at {:#x}", LM_MMIO + 8))
    })?;
    r.run("longmode 64-bit", || {
        d.expect_out(0x16, &[1])
            .map(|()| "a 64-bit shift gave 1".into())
    })?;
    r.run("longmode exit-loop", || {
        d.expect_out_loop(0x15, 4, 500, |i| 500 - i)
    })?;
    r.run("longmode hlt", || d.expect_hlt().map(|()| String::new()))?;
    let exits = d.exits;
    r.run("longmode cpuid", || {
        let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        same("CPUID.0:EBX (r9)", regs.r9, u64::from(cpuid.leaf0_ebx))?;
        same(
            "CPUID.40000000H:EBX (r10)",
            regs.r10,
            u64::from(KVM_SIGNATURE_EBX),
        )?;
        Ok("leaf 0 and KVM's leaf 0x40000000 as set".into())
    })?;
    r.run("longmode state", || {
        let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
        let sregs = vcpu
            .get_sregs()
            .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
        let end = CODE + guest_code::long_mode().len() as u64;
        same("rip after HLT", regs.rip, end)?;
        same("r8 (the MMIO read)", regs.r8, LM_MMIO_ANSWER)?;
        same("rsi", regs.rsi, 0x1122_3344_5566_7788)?;
        same("EFER.LMA", sregs.efer & EFER_LMA, EFER_LMA)?;
        same("CS.L", sregs.cs.l, 1)?;
        same(
            "qword at 0x7000",
            u64::from_le_bytes(ram.read::<8>(0x7000)),
            LM_MMIO_ANSWER,
        )?;
        Ok(format!(
            "{exits} exits to user space, {} ms in all",
            started.elapsed().as_millis()
        ))
    })
}

/// Pins the calling thread to host CPU `cpu`.
fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write only into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 = this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "sched_setaffinity(CPU {cpu}): {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn this_cpu() -> i32 {
    // SAFETY: no arguments, no memory.
    unsafe { libc::sched_getcpu() }
}

/// One vCPU's part of the SMP guest, on its own thread pinned to host CPU
/// `id`: it waits in the guest for the other, then 200 exits.
fn smp_vcpu(id: u32, mut vcpu: VcpuFd, ram: &GuestRam) -> Result<String, String> {
    pin_to(id as usize)?;
    let mut d = Driver::new(&mut vcpu);
    d.expect_out_loop(0x17, 4, 200, |i| (id << 16) | (200 - i))
        .map_err(|e| {
            if e.contains("OUT port 0x18") {
                let counter = u32::from_le_bytes(ram.read::<4>(SMP_COUNTER));
                format!(
                    "vCPU {id} waited in the guest and never saw both vCPUs arrive (the OUT carries the counter it read; the counter in memory is {counter}): {e}"
                )
            } else {
                format!("vCPU {id}: {e}")
            }
        })?;
    d.expect_hlt().map_err(|e| format!("vCPU {id}: {e}"))?;
    Ok(format!("vCPU {id} on host CPU {}", this_cpu()))
}

/// Two vCPUs of one VM on two threads on two host CPUs at once: both enter
/// the guest and meet there (a counter in guest memory), then each makes
/// 200 exits carrying its id.
pub fn two_vcpus(kvm: &Kvm, cpuid: &Cpuid, r: &mut Report) -> Result<(), Aborted> {
    let mut made = None;
    r.run("smp setup", || {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpus < 2 {
            return Err(format!("needs two CPUs, Linux has {cpus}"));
        }
        let vm = new_vm(kvm)?;
        let mut ram = GuestRam::new(&vm, 0, LM_RAM)?;
        long_mode_tables(&mut ram);
        ram.write(CODE, guest_code::smp());
        let v0 = new_vcpu(&vm, 0, cpuid)?;
        let v1 = new_vcpu(&vm, 1, cpuid)?;
        long_mode_vcpu(&v0, 0)?;
        long_mode_vcpu(&v1, 1)?;
        made = Some((vm, ram, v0, v1));
        Ok(format!("{cpus} host CPUs"))
    })?;
    let (_vm, ram, v0, v1) = made.expect("set up");
    r.run("smp two-vcpus", || {
        let t = Instant::now();
        let (a, b) = std::thread::scope(|s| {
            let h0 = s.spawn(|| smp_vcpu(0, v0, &ram));
            let h1 = s.spawn(|| smp_vcpu(1, v1, &ram));
            let j = |h: std::thread::ScopedJoinHandle<'_, Result<String, String>>| {
                h.join().unwrap_or_else(|_| Err("thread panicked".into()))
            };
            (j(h0), j(h1))
        });
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
            (Err(a), Err(b)) => return Err(format!("{a}; {b}")),
        };
        same(
            "rendezvous counter",
            u32::from_le_bytes(ram.read::<4>(SMP_COUNTER)),
            2,
        )?;
        Ok(format!(
            "{a}, {b}, met in the guest, 2 x 200 exits in {} ms",
            t.elapsed().as_millis()
        ))
    })
}
