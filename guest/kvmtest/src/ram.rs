//! Guest RAM: anonymous memory mapped into this process and given to KVM
//! as one memory slot.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;

/// One mapping of `len` bytes, guest-physical `[0, len)`.
#[derive(Debug)]
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; vCPU threads
// access it only through KVM (and the rendezvous counter with atomics in the
// guest), and the host only through `&self`/`&mut self` methods.
unsafe impl Send for GuestRam {}
// SAFETY: as above; the host reads through `read` (volatile copies).
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Maps `len` bytes (a multiple of the page size) and registers them as
    /// slot `slot` of `vm` at guest-physical 0.
    pub fn new(vm: &VmFd, slot: u32, len: usize) -> Result<Self, String> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap {len} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let ram = GuestRam { ptr: p.cast(), len };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: len as u64,
            userspace_addr: ram.ptr as u64,
        };
        // SAFETY: the region is this mapping, which stays mapped until `ram`
        // is dropped; `ram` is dropped after the VM (see its users: the VM
        // fd is declared after and so dropped before).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
        Ok(ram)
    }

    /// Copies `data` to guest-physical `gpa`.
    pub fn write(&mut self, gpa: u64, data: &[u8]) {
        let at = gpa as usize;
        assert!(at.checked_add(data.len()).is_some_and(|e| e <= self.len));
        // SAFETY: in bounds (checked above) of a mapping we own.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(at), data.len()) }
    }

    /// Writes a little-endian u64 at `gpa`.
    pub fn write_u64(&mut self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }

    /// Reads `N` bytes at `gpa` (volatile: the guest may have written them).
    pub fn read<const N: usize>(&self, gpa: u64) -> [u8; N] {
        let at = gpa as usize;
        assert!(at.checked_add(N).is_some_and(|e| e <= self.len));
        let mut out = [0u8; N];
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (checked above) of a mapping we own.
            *b = unsafe { std::ptr::read_volatile(self.ptr.add(at + i)) };
        }
        out
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
