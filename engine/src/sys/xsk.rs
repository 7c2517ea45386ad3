//! An AF_XDP socket over the shard's pool region (the UMEM), with its four rings.
//!
//! ```text
//!            user (shard)                                  kernel
//!   FILL        produce free frame addresses  ──U->K──►  consume, DMA/copy frames in
//!   RX          consume received descriptors  ◄──K->U──  produce (addr, len)
//!   TX          produce descriptors to send   ──U->K──►  consume, transmit
//!   COMPLETION  consume sent frame addresses  ◄──K->U──  produce when done with a frame
//! ```
//!
//! | ring       | producer | consumer | entry        |
//! |------------|----------|----------|--------------|
//! | FILL       | user     | kernel   | u64 address  |
//! | RX         | kernel   | user     | `xdp_desc`   |
//! | TX         | user     | kernel   | `xdp_desc`   |
//! | COMPLETION | kernel   | user     | u64 address  |
//!
//! Memory ordering follows the kernel's `xsk_queue.h`: a producer writes entries, then
//! publishes with a release store of `producer` (pairs with the kernel's
//! `smp_load_acquire` of it); a consumer reads `producer` with acquire (pairs with the
//! kernel's `smp_store_release`) before reading entries, and releases `consumer` after.
//! Indices read from shared memory are untrusted: a difference larger than the ring is
//! clamped and counted, and every address/length in a descriptor is checked against the
//! UMEM by the caller before use.

use std::io;
use std::marker::PhantomData;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::region::Region;

const _: () = assert!(size_of::<libc::xdp_desc>() == 16);

/// What bind obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XskMode {
    ZeroCopy,
    Copy,
}

impl std::fmt::Display for XskMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            XskMode::ZeroCopy => "zero-copy",
            XskMode::Copy => "copy",
        })
    }
}

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly one ring mapping made in `map_ring`, used by nobody after
        // its ring drops.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One mmapped ring with cached indices. `T` is the entry type.
pub(crate) struct Ring<T> {
    _map: Mapping,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    size: u32,
    /// Local copies: for a producer ring, `cached_other` is the consumer index plus size
    /// (so `cached_other - local` is the free room); for a consumer ring, the producer index.
    local: u32,
    cached_other: u32,
    /// Times a shared index was out of range (clamped).
    pub bad_indices: u64,
    _t: PhantomData<T>,
}

// SAFETY: the ring memory is shared only with the kernel; the Rust side is owned by one shard.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn prod(&self) -> &AtomicU32 {
        // SAFETY: the offset came from XDP_MMAP_OFFSETS and lies in the live mapping; the
        // field is a 4-byte aligned u32 the kernel updates atomically.
        unsafe { &*self.producer }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as in `prod`.
        unsafe { &*self.consumer }
    }

    /// Entries between the two indices now (what the producer published and the consumer
    /// has not taken), clamped to the ring's size: a gauge for `porto stats`.
    pub(crate) fn occupancy(&self) -> u32 {
        let n = self
            .prod()
            .load(Ordering::Relaxed)
            .wrapping_sub(self.cons().load(Ordering::Relaxed));
        n.min(self.size)
    }

    /// The kernel asks to be woken (XDP_RING_NEED_WAKEUP).
    pub(crate) fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `prod`. Relaxed: a stale answer costs one extra or one late wake-up,
        // which the shard's next turn repairs.
        unsafe { &*self.flags }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // Producer side (FILL, TX).

    /// Free entries, refreshing the cached consumer index when needed.
    pub(crate) fn free(&mut self, want: u32) -> u32 {
        let mut free = self.cached_other.wrapping_sub(self.local);
        if free < want {
            // Acquire pairs with the kernel's release of `consumer` after it read entries.
            self.cached_other = self.cons().load(Ordering::Acquire).wrapping_add(self.size);
            free = self.cached_other.wrapping_sub(self.local);
            if free > self.size {
                self.bad_indices += 1;
                free = 0;
                self.cached_other = self.local;
            }
        }
        free
    }

    /// Writes entry `i` past the local producer index (call `free` first).
    pub(crate) fn write(&mut self, i: u32, v: T) {
        let idx = (self.local.wrapping_add(i) & (self.size - 1)) as usize;
        // SAFETY: idx < size, inside the mapped entry array; the slot is free (owned by the
        // user) because `free` said so.
        unsafe { self.entries.add(idx).write(v) };
    }

    /// Publishes `n` written entries.
    pub(crate) fn submit(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        // Release pairs with the kernel's smp_load_acquire of `producer`: entries first.
        self.prod().store(self.local, Ordering::Release);
    }

    // Consumer side (RX, COMPLETION).

    /// Entries available to read, at most `max`.
    pub(crate) fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached_other.wrapping_sub(self.local);
        if n == 0 {
            // Acquire pairs with the kernel's smp_store_release of `producer`.
            self.cached_other = self.prod().load(Ordering::Acquire);
            n = self.cached_other.wrapping_sub(self.local);
            if n > self.size {
                self.bad_indices += 1;
                self.cached_other = self.local;
                n = 0;
            }
        }
        n.min(max)
    }

    /// Reads entry `i` past the local consumer index (call `available` first).
    pub(crate) fn read(&self, i: u32) -> T {
        let idx = (self.local.wrapping_add(i) & (self.size - 1)) as usize;
        // SAFETY: idx < size, inside the mapped array; the kernel published it (acquire above).
        unsafe { self.entries.add(idx).read() }
    }

    /// Gives `n` read entries back to the kernel.
    pub(crate) fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        // Release: our reads of the entries happen before the kernel may reuse them.
        self.cons().store(self.local, Ordering::Release);
    }
}

/// The four rings and the socket.
pub(crate) struct Xsk {
    pub fill: Ring<u64>,
    pub comp: Ring<u64>,
    pub rx: Ring<libc::xdp_desc>,
    pub tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    pub mode: XskMode,
    pub ifindex: u32,
    pub queue: u32,
    /// Bound with XDP_USE_SG: packets may span several descriptors (multi-buffer).
    pub multi_buffer: bool,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("ifindex", &self.ifindex)
            .field("queue", &self.queue)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The kernel's counters of one AF_XDP socket (XDP_STATISTICS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStatistics {
    /// Frames dropped for reasons other than a full RX ring or an empty FILL ring.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the kernel found the FILL ring empty (a frame then had nowhere to go).
    pub rx_fill_ring_empty_descs: u64,
    pub tx_ring_empty_descs: u64,
}

impl std::ops::AddAssign for XskStatistics {
    fn add_assign(&mut self, o: XskStatistics) {
        self.rx_dropped += o.rx_dropped;
        self.rx_invalid_descs += o.rx_invalid_descs;
        self.tx_invalid_descs += o.tx_invalid_descs;
        self.rx_ring_full += o.rx_ring_full;
        self.rx_fill_ring_empty_descs += o.rx_fill_ring_empty_descs;
        self.tx_ring_empty_descs += o.tx_ring_empty_descs;
    }
}

/// XDP_STATISTICS of the AF_XDP socket `fd`.
pub(crate) fn statistics(fd: RawFd) -> io::Result<XskStatistics> {
    // SAFETY: all-zero is a valid xdp_statistics.
    let mut st: libc::xdp_statistics = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `st`, which is that large.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_XDP,
            libc::XDP_STATISTICS,
            (&mut st as *mut libc::xdp_statistics).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(XskStatistics {
        rx_dropped: st.rx_dropped,
        rx_invalid_descs: st.rx_invalid_descs,
        tx_invalid_descs: st.tx_invalid_descs,
        rx_ring_full: st.rx_ring_full,
        rx_fill_ring_empty_descs: st.rx_fill_ring_empty_descs,
        tx_ring_empty_descs: st.tx_ring_empty_descs,
    })
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size passed.
    cvt(unsafe { libc::setsockopt(fd, libc::SOL_XDP, name, (v as *const T).cast(), size_of::<T>() as u32) }).map(|_| ())
}

/// The interface index of `name`.
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

impl Xsk {
    /// Creates a socket on `iface` queue `queue` with `region` as its UMEM (chunks of
    /// `frame_size`), rings of `ring_size` entries; tries zero-copy, then copy mode (unless
    /// `force_copy`), retrying EBUSY (a queue just released) for up to 1.5 s.
    ///
    /// With `share`, the socket joins that socket's UMEM (XDP_SHARED_UMEM) on another queue,
    /// with FILL and COMPLETION rings of its own and the first socket's mode.
    pub(crate) fn new(
        region: &Region,
        frame_size: u32,
        iface: &str,
        queue: u32,
        ring_size: u32,
        force_copy: bool,
        share: Option<&Xsk>,
    ) -> io::Result<(Xsk, Option<String>)> {
        assert!(ring_size.is_power_of_two(), "ring sizes are powers of two");
        let ifindex = ifindex(iface)?;
        // SAFETY: socket(2) takes no pointers.
        let raw = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: region.as_ptr() as u64,
            len: region.len() as u64,
            chunk_size: frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        if share.is_none() {
            setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        }
        for opt in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            setsockopt(raw, opt, &ring_size)?;
        }
        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: off/len describe a live struct.
        cvt(unsafe {
            libc::getsockopt(
                raw,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut len,
            )
        })?;
        let fill = map_ring::<u64>(
            raw,
            &off.fr,
            ring_size,
            libc::XDP_UMEM_PGOFF_FILL_RING as libc::off_t,
            true,
        )?;
        let comp = map_ring::<u64>(
            raw,
            &off.cr,
            ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING as libc::off_t,
            false,
        )?;
        let rx = map_ring::<libc::xdp_desc>(raw, &off.rx, ring_size, libc::XDP_PGOFF_RX_RING, false)?;
        let tx = map_ring::<libc::xdp_desc>(raw, &off.tx, ring_size, libc::XDP_PGOFF_TX_RING, true)?;
        let mut fallback = None;
        // A socket sharing a UMEM may pass no mode flags: it inherits the first one's.
        let shared_modes = share.map(|f| [(f.mode, libc::XDP_SHARED_UMEM)]);
        let modes: &[(XskMode, u16)] = match &shared_modes {
            Some(m) => m,
            None if force_copy => &[(XskMode::Copy, libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP)],
            None => &[
                (XskMode::ZeroCopy, libc::XDP_ZEROCOPY | libc::XDP_USE_NEED_WAKEUP),
                (XskMode::Copy, libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP),
            ],
        };
        let shared_fd = share.map_or(0, |f| f.fd.as_raw_fd() as u32);
        let mut last_err = None;
        for &(mode, flag) in modes {
            // Multi-buffer first (header and payload in separate frames on TX); a kernel or
            // driver without it refuses the flag, and the same mode is tried without.
            let sg = share.is_none() && bind(raw, ifindex, queue, flag | libc::XDP_USE_SG, shared_fd).is_ok();
            let bound = if sg {
                Ok(())
            } else {
                bind(raw, ifindex, queue, flag, shared_fd)
            };
            match bound {
                Ok(()) => {
                    return Ok((
                        Xsk {
                            fill,
                            comp,
                            rx,
                            tx,
                            fd,
                            mode,
                            ifindex,
                            queue,
                            multi_buffer: sg,
                        },
                        fallback,
                    ));
                }
                Err(e) if mode == XskMode::ZeroCopy && share.is_none() => {
                    let why = match e.raw_os_error() {
                        Some(libc::EOPNOTSUPP) => {
                            "the driver has no zero-copy mode (EOPNOTSUPP); using copy mode".to_string()
                        }
                        _ => format!("zero-copy bind failed ({e}); using copy mode"),
                    };
                    tracing::warn!(iface, queue, "{why}");
                    fallback = Some(why);
                    last_err = Some(e);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one mode was tried"))
    }

    /// Kicks the kernel to transmit (TX always needs it in copy mode).
    pub(crate) fn kick_tx(&self) {
        // SAFETY: a zero-length sendto with null pointers is the documented AF_XDP kick.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // EAGAIN/EBUSY/ENOBUFS: the kernel is busy with the ring; the next kick retries.
            if !matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::ENETDOWN)
            ) {
                tracing::warn!(error = %e, "AF_XDP TX kick failed");
            }
        }
    }

    /// Wakes the kernel to process the FILL ring (when it asks).
    pub(crate) fn kick_rx(&self) {
        // SAFETY: a zero-length non-blocking recvfrom with null pointers is the AF_XDP RX kick.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }
}

/// `len` bytes of private anonymous memory (a probe's UMEM, a fake ring).
fn anon_mapping(len: usize) -> io::Result<Mapping> {
    // SAFETY: an anonymous private mapping; no pointer is passed in.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(Mapping {
        ptr: NonNull::new(p.cast::<u8>()).expect("mmap succeeded"),
        len,
    })
}

/// What this kernel lets a process do with AF_XDP, without an interface: open an AF_XDP
/// socket (`.0`), and register a small UMEM on it (`.1`, tried only if `.0` succeeded).
pub(crate) fn probe() -> (io::Result<()>, Option<io::Result<()>>) {
    let fd = match xdp_socket() {
        Ok(fd) => fd,
        Err(e) => return (Err(e), None),
    };
    (Ok(()), Some(small_umem(fd.as_raw_fd()).map(drop)))
}

/// A fresh AF_XDP socket.
fn xdp_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let raw = cvt(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// A two-frame UMEM of its own, registered on AF_XDP socket `raw` (the probes'): its mapping,
/// to be kept until the socket is closed.
fn small_umem(raw: RawFd) -> io::Result<Mapping> {
    const CHUNK: u32 = 2048;
    const LEN: usize = 2 * CHUNK as usize;
    let umem = anon_mapping(LEN)?;
    let reg = libc::xdp_umem_reg {
        addr: umem.ptr.as_ptr() as u64,
        len: LEN as u64,
        chunk_size: CHUNK,
        headroom: 0,
        flags: 0,
        tx_metadata_len: 0,
    };
    setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
    Ok(umem)
}

/// Has the kernel let go of interface queue `queue`? A zero-copy socket's buffer pool stays
/// attached to the driver's queue after `close(2)` until deferred work runs
/// (`xsk_destruct` -> `xp_put_pool` -> `xp_release_deferred` -> `xp_clear_dev`, which tells
/// the driver to stop using the pool, in Linux's `net/xdp/xsk_buff_pool.c`): until then the
/// NIC may still DMA into frames the socket had lent it. While a pool is attached, binding
/// any AF_XDP socket to the queue fails with EBUSY (`xp_assign_dev` checks
/// `xsk_get_pool_from_qid` first), so a probe bind tells: `Ok(true)` once the queue is free.
/// The probe is a copy-mode socket over a UMEM of its own (copy mode never hands its memory
/// to the driver), closed at once.
pub(crate) fn queue_released(ifindex: u32, queue: u32) -> io::Result<bool> {
    let fd = xdp_socket()?;
    let raw = fd.as_raw_fd();
    let umem = small_umem(raw)?;
    for opt in [
        libc::XDP_UMEM_FILL_RING,
        libc::XDP_UMEM_COMPLETION_RING,
        libc::XDP_RX_RING,
    ] {
        setsockopt(raw, opt, &2u32)?;
    }
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: libc::XDP_COPY,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: 0,
    };
    // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
    let r = unsafe {
        libc::bind(
            raw,
            (&sa as *const libc::sockaddr_xdp).cast(),
            size_of::<libc::sockaddr_xdp>() as u32,
        )
    };
    let busy = r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY);
    let err = (r < 0 && !busy).then(io::Error::last_os_error);
    // The probe's own pool is released later, as any: in copy mode nobody writes its pages
    // after the close (they stay pinned, not reused, until the kernel lets go).
    drop(fd);
    drop(umem);
    match err {
        Some(e) => Err(e),
        None => Ok(!busy),
    }
}

fn bind(fd: RawFd, ifindex: u32, queue: u32, flags: u16, shared_umem_fd: u32) -> io::Result<()> {
    let sa = libc::sockaddr_xdp {
        sxdp_family: libc::AF_XDP as u16,
        sxdp_flags: flags,
        sxdp_ifindex: ifindex,
        sxdp_queue_id: queue,
        sxdp_shared_umem_fd: shared_umem_fd,
    };
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        // SAFETY: `sa` is a live sockaddr_xdp of the size passed.
        let r = unsafe {
            libc::bind(
                fd,
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as u32,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // A queue released moments ago stays busy for up to about a second.
        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        return Err(e);
    }
}

fn map_ring<T: Copy>(
    fd: RawFd,
    off: &libc::xdp_ring_offset,
    size: u32,
    pgoff: libc::off_t,
    producer_side: bool,
) -> io::Result<Ring<T>> {
    let len = off.desc as usize + size as usize * size_of::<T>();
    // SAFETY: maps the ring the kernel set up for this socket at its documented page offset.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            fd,
            pgoff,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let map = Mapping {
        ptr: NonNull::new(p.cast::<u8>()).expect("mmap succeeded"),
        len,
    };
    Ok(ring_at(map, off, size, producer_side))
}

/// A ring over `map`, laid out as `off` says (the kernel's offsets, or a test's).
fn ring_at<T: Copy>(map: Mapping, off: &libc::xdp_ring_offset, size: u32, producer_side: bool) -> Ring<T> {
    let base = map.ptr.as_ptr();
    debug_assert!(off.desc as usize + size as usize * size_of::<T>() <= map.len);
    // SAFETY: the offsets come from XDP_MMAP_OFFSETS (or the test layout) and lie inside
    // the mapping.
    let (producer, consumer, flags, entries) = unsafe {
        (
            base.add(off.producer as usize).cast::<AtomicU32>().cast_const(),
            base.add(off.consumer as usize).cast::<AtomicU32>().cast_const(),
            base.add(off.flags as usize).cast::<AtomicU32>().cast_const(),
            base.add(off.desc as usize).cast::<T>(),
        )
    };
    let mut r = Ring {
        _map: map,
        producer,
        consumer,
        flags,
        entries,
        size,
        local: 0,
        cached_other: 0,
        bad_indices: 0,
        _t: PhantomData,
    };
    // The kernel initialises both indices (0 on a fresh ring); start from what it says.
    r.local = if producer_side {
        r.prod().load(Ordering::Relaxed)
    } else {
        r.cons().load(Ordering::Relaxed)
    };
    r.cached_other = if producer_side {
        r.cons().load(Ordering::Relaxed).wrapping_add(size)
    } else {
        r.prod().load(Ordering::Relaxed)
    };
    r
}

/// A stand-in for the kernel side of an AF_XDP socket, for tests: the four rings over
/// anonymous memory, whose kernel half (consume FILL and TX, produce RX and COMPLETION) the
/// test drives — including hostile indices and descriptors no real kernel writes — so the
/// engine's ring code and its validation are tested without a NIC (xskxceiver-style).
#[cfg(test)]
pub(crate) mod fake {
    use super::*;

    /// Raw views of one ring's shared words, as the kernel holds them.
    struct Side<T> {
        producer: *const AtomicU32,
        consumer: *const AtomicU32,
        entries: *mut T,
        size: u32,
    }

    impl<T: Copy> Side<T> {
        fn of(r: &Ring<T>) -> Side<T> {
            Side {
                producer: r.producer,
                consumer: r.consumer,
                entries: r.entries,
                size: r.size,
            }
        }

        fn prod(&self) -> &AtomicU32 {
            // SAFETY: the mapping outlives the test's Xsk and this Side (the test holds both;
            // `Kernel` is used only while the Xsk lives).
            unsafe { &*self.producer }
        }

        fn cons(&self) -> &AtomicU32 {
            // SAFETY: as in `prod`.
            unsafe { &*self.consumer }
        }

        /// Kernel as producer: writes `items` and publishes them.
        fn produce(&self, items: &[T]) {
            let p = self.prod().load(Ordering::Relaxed);
            for (i, v) in items.iter().enumerate() {
                let idx = (p.wrapping_add(i as u32) & (self.size - 1)) as usize;
                // SAFETY: idx < size, inside the entry array of the live mapping.
                unsafe { self.entries.add(idx).write(*v) };
            }
            self.prod().store(p.wrapping_add(items.len() as u32), Ordering::Release);
        }

        /// Kernel as consumer: takes what the user published.
        fn consume(&self) -> Vec<T> {
            let (c, p) = (self.cons().load(Ordering::Relaxed), self.prod().load(Ordering::Acquire));
            let n = p.wrapping_sub(c).min(self.size);
            let out = (0..n)
                .map(|i| {
                    let idx = (c.wrapping_add(i) & (self.size - 1)) as usize;
                    // SAFETY: as in `produce`.
                    unsafe { self.entries.add(idx).read() }
                })
                .collect();
            self.cons().store(c.wrapping_add(n), Ordering::Release);
            out
        }
    }

    /// The kernel's half of a fake socket.
    pub(crate) struct Kernel {
        fill: Side<u64>,
        comp: Side<u64>,
        rx: Side<libc::xdp_desc>,
        tx: Side<libc::xdp_desc>,
    }

    impl Kernel {
        /// Takes every address the user put on the FILL ring.
        pub(crate) fn take_fill(&self) -> Vec<u64> {
            self.fill.consume()
        }

        /// Takes every descriptor the user put on the TX ring.
        pub(crate) fn take_tx(&self) -> Vec<libc::xdp_desc> {
            self.tx.consume()
        }

        /// Publishes received descriptors (any addresses and lengths).
        pub(crate) fn receive(&self, descs: &[(u64, u32)]) {
            let d: Vec<libc::xdp_desc> = descs
                .iter()
                .map(|&(addr, len)| libc::xdp_desc { addr, len, options: 0 })
                .collect();
            self.rx.produce(&d);
        }

        /// Publishes COMPLETION addresses (any).
        pub(crate) fn complete(&self, addrs: &[u64]) {
            self.comp.produce(addrs);
        }

        /// Moves the RX producer index by `delta` (wrapping): forward past the ring, or back.
        pub(crate) fn jump_rx_producer(&self, delta: u32) {
            let p = self.rx.prod().load(Ordering::Relaxed);
            self.rx.prod().store(p.wrapping_add(delta), Ordering::Release);
        }

        /// Moves the FILL consumer index by `delta` (wrapping).
        pub(crate) fn jump_fill_consumer(&self, delta: u32) {
            let c = self.fill.cons().load(Ordering::Relaxed);
            self.fill.cons().store(c.wrapping_add(delta), Ordering::Release);
        }
    }

    fn anon_ring<T: Copy>(size: u32, producer_side: bool) -> Ring<T> {
        let off = libc::xdp_ring_offset {
            producer: 0,
            consumer: 64,
            flags: 128,
            desc: 192,
        };
        let map = anon_mapping(192 + size as usize * size_of::<T>()).expect("mmap");
        ring_at(map, &off, size, producer_side)
    }

    /// A copy-mode socket on "queue 0" whose kernel is the returned `Kernel`. Its fd is an
    /// unbound UDP socket: kicks fail harmlessly.
    pub(crate) fn socket(ring_size: u32) -> (Xsk, Kernel) {
        let (fill, comp) = (anon_ring::<u64>(ring_size, true), anon_ring::<u64>(ring_size, false));
        let (rx, tx) = (
            anon_ring::<libc::xdp_desc>(ring_size, false),
            anon_ring::<libc::xdp_desc>(ring_size, true),
        );
        let kernel = Kernel {
            fill: Side::of(&fill),
            comp: Side::of(&comp),
            rx: Side::of(&rx),
            tx: Side::of(&tx),
        };
        // SAFETY: socket(2) takes no pointers.
        let raw =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) }).expect("socket");
        // SAFETY: a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let xsk = Xsk {
            fill,
            comp,
            rx,
            tx,
            fd,
            mode: XskMode::Copy,
            ifindex: 0,
            queue: 0,
            multi_buffer: false,
        };
        (xsk, kernel)
    }
}
