//! An io_uring provided-buffer ring (`IORING_REGISTER_PBUF_RING`), written by hand because the
//! io-uring crate has no helper for it.
//!
//! ```text
//!   user (shard)                         kernel
//!   ───────────                          ──────
//!   push(addr,len,bid) ─► entries[tail & mask]
//!   publish(): tail.store(Release) ────► reads tail (smp_load_acquire), consumes at head,
//!                                        hands the bid back in a CQE (IORING_CQE_F_BUFFER)
//! ```
//!
//! Ownership: a frame whose address is pushed here belongs to the kernel until a CQE names its
//! buffer id. The shard tracks how many entries are outstanding and never pushes more than the
//! ring holds.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use super::region::Region;

/// `struct io_uring_buf`: the layout the kernel reads.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    /// In entry 0 this field is the ring's tail (`struct io_uring_buf_ring`).
    resv: u16,
}
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);
const TAIL_OFFSET: usize = 14;

#[derive(Debug)]
pub(crate) struct BufRing {
    mem: Region,
    entries: u16,
    tail: u16,
}

impl BufRing {
    /// Maps a ring of `entries` slots (a power of two, at most 32768).
    pub(crate) fn new(entries: u16) -> io::Result<BufRing> {
        assert!(entries.is_power_of_two() && entries <= 32768, "bad buffer ring size");
        let mem = Region::new(usize::from(entries) * std::mem::size_of::<RawBuf>(), false)?;
        Ok(BufRing { mem, entries, tail: 0 })
    }

    pub(crate) fn entries(&self) -> u16 {
        self.entries
    }

    /// Address to register with `register_buf_ring_with_flags`.
    pub(crate) fn addr(&self) -> u64 {
        self.mem.as_ptr() as u64
    }

    /// Writes one buffer into the next free slot; invisible to the kernel until `publish`.
    ///
    /// # Safety
    /// `addr..addr+len` must stay valid and must not be read or written by anyone else until
    /// the kernel returns buffer `bid` in a completion. The caller must also keep the number
    /// of outstanding entries at or below `entries()`.
    pub(crate) unsafe fn push(&mut self, addr: u64, len: u32, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        // SAFETY: idx < entries, so the entry lies inside the mapping. The slot is free by the
        // caller's outstanding-count contract. Entry 0's `resv` is the shared tail: write
        // the other fields individually so the tail is never clobbered.
        unsafe {
            let e = self.mem.as_ptr().cast::<RawBuf>().add(idx);
            std::ptr::addr_of_mut!((*e).addr).write(addr);
            std::ptr::addr_of_mut!((*e).len).write(len);
            std::ptr::addr_of_mut!((*e).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the kernel.
    pub(crate) fn publish(&mut self) {
        // SAFETY: the tail lives at byte 14 of entry 0, a 2-byte aligned u16 inside the
        // mapping; the kernel only reads it.
        let tail = unsafe { &*self.mem.as_ptr().add(TAIL_OFFSET).cast::<AtomicU16>() };
        // Release pairs with the kernel's smp_load_acquire(&br->tail) in io_ring_buffer_select:
        // the entries written by `push` are visible before the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}
