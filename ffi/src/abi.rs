//! The exported functions and types (`include/porto.h`). This module is where C's pointers
//! are read and written: each is checked for NULL, each length against its buffer, and each
//! call runs under `guard`, so a panic becomes `WSASYSCALLFAILURE`, never an unwind into C.
//!
//! Thread safety: every function may be called from any thread, concurrently; a socket's
//! calls are serialised inside the library, and any number of threads may wait in
//! `porto_GetQueuedCompletionStatusEx` on one port (its concurrency value applies).

// The C boundary: raw pointers from the caller, `#[no_mangle]` exports.
#![allow(unsafe_code)]
// Winsock's names, kept so a port is mostly renaming.
#![allow(non_snake_case, non_camel_case_types)]

use std::ffi::c_void;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::codes::*;
use crate::state::{self, AcceptTarget, Out, RecvTarget, Startup, Wsa};

/// Winsock's `WSABUF`.
#[repr(C)]
#[derive(Debug)]
pub struct PORTO_WSABUF {
    pub len: u32,
    /// `CHAR FAR *buf`, as Windows declares it.
    pub buf: *mut core::ffi::c_char,
}

/// Win32's `OVERLAPPED`: the per-operation token. Its address comes back in the
/// completion; `Internal` receives the operation's WSA status (0: success) and
/// `InternalHigh` its byte count when it is dequeued.
#[repr(C)]
#[derive(Debug)]
pub struct PORTO_OVERLAPPED {
    pub Internal: u64,
    pub InternalHigh: u64,
    pub Offset: u32,
    pub OffsetHigh: u32,
    pub hEvent: *mut c_void,
}

/// Win32's `OVERLAPPED_ENTRY`. `Internal` is the operation's WSA status (0: success,
/// else e.g. `PORTO_WSA_OPERATION_ABORTED`).
#[repr(C)]
#[derive(Debug)]
pub struct PORTO_OVERLAPPED_ENTRY {
    pub lpCompletionKey: u64,
    pub lpOverlapped: *mut PORTO_OVERLAPPED,
    pub Internal: u64,
    pub dwNumberOfBytesTransferred: u32,
}

/// How `porto_WSAStartupEx` configures the engine (`porto_WSAStartup` uses 1 shard, not
/// pinned, 4096 frames, provider auto).
#[repr(C)]
#[derive(Debug)]
pub struct PORTO_STARTUP {
    /// Shards: threads, each with its own rings and pool.
    pub shards: u32,
    /// Nonzero: pin shard i to core i.
    pub pin: u32,
    /// Registered pool frames per shard.
    pub frames_per_shard: u32,
    /// 0 auto (io_uring, else epoll), 1 io_uring, 2 epoll.
    pub provider: u32,
    /// Bytes per pool frame (a power of two from 512); 0: 2048.
    pub frame_size: u32,
    /// Operations in flight per shard; 0: 4096.
    pub ops_max: u32,
    /// Sockets per shard; 0: 1024. The next one is `PORTO_WSAEMFILE`.
    pub sockets_max: u32,
    /// Commands queued to a shard (requests between its turns); 0: 4096.
    pub commands_max: u32,
}

/// Runs `f` for an exported call: its error or a panic becomes the thread's last error and
/// the call returns `fail`.
pub(crate) fn guard<T>(fail: T, f: impl FnOnce() -> Result<T, Wsa>) -> T {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => v,
        Ok(Err(Wsa(code))) => {
            state::set_last_error(code);
            fail
        }
        Err(_) => {
            state::set_last_error(PORTO_WSASYSCALLFAILURE);
            fail
        }
    }
}

/// As [`guard`], for calls that return their error (WSAStartup): 0 or the WSA number.
fn status(f: impl FnOnce() -> Result<(), Wsa>) -> i32 {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(Wsa(code))) => code,
        Err(_) => PORTO_WSASYSCALLFAILURE,
    }
}

pub(crate) fn non_null<T>(p: *const T) -> Result<*const T, Wsa> {
    if p.is_null() {
        Err(Wsa(PORTO_WSAEFAULT))
    } else {
        Ok(p)
    }
}

/// Reads a `sockaddr_in` / `sockaddr_in6` of `len` bytes at `name`.
///
/// # Safety
/// `name` is NULL or readable for `len` bytes.
pub(crate) unsafe fn read_sockaddr(name: *const libc::sockaddr, len: i32) -> Result<SocketAddr, Wsa> {
    let name = non_null(name)?;
    let len = usize::try_from(len).map_err(|_| Wsa(PORTO_WSAEFAULT))?;
    if len < std::mem::size_of::<libc::sa_family_t>() {
        return Err(Wsa(PORTO_WSAEFAULT));
    }
    // SAFETY: the caller's contract: `len` readable bytes; u8 has no alignment.
    let b = unsafe { std::slice::from_raw_parts(name.cast::<u8>(), len) };
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, port(b))))
        }
        libc::AF_INET6 if len >= std::mem::size_of::<libc::sockaddr_in6>() => {
            let flow = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let ip: [u8; 16] = b[8..24].try_into().map_err(|_| Wsa(PORTO_WSAEFAULT))?;
            let scope = u32::from_ne_bytes([b[24], b[25], b[26], b[27]]);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port(b),
                flow,
                scope,
            )))
        }
        libc::AF_INET | libc::AF_INET6 => Err(Wsa(PORTO_WSAEFAULT)),
        _ => Err(Wsa(PORTO_WSAEAFNOSUPPORT)),
    }
}

/// Writes `addr` at `name` (room: `*len` bytes) and its length into `*len`.
///
/// # Safety
/// `name` is writable for `*len` bytes and `len` is a valid `i32`, or either is NULL.
pub(crate) unsafe fn write_sockaddr(addr: SocketAddr, name: *mut libc::sockaddr, len: *mut i32) -> Result<(), Wsa> {
    if name.is_null() || len.is_null() {
        return Err(Wsa(PORTO_WSAEFAULT));
    }
    let mut b = [0u8; std::mem::size_of::<libc::sockaddr_in6>()];
    let n = match addr {
        SocketAddr::V4(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[2..4].copy_from_slice(&a.port().to_be_bytes());
            b[4..8].copy_from_slice(&a.flowinfo().to_be_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
            b[24..28].copy_from_slice(&a.scope_id().to_ne_bytes());
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    // SAFETY: `len` is non-NULL and valid (the caller's contract).
    let room = unsafe { len.read_unaligned() };
    if usize::try_from(room).map_or(true, |r| r < n) {
        return Err(Wsa(PORTO_WSAEFAULT));
    }
    // SAFETY: `name` has `room >= n` writable bytes; `len` is valid.
    unsafe {
        std::ptr::copy_nonoverlapping(b.as_ptr(), name.cast::<u8>(), n);
        len.write_unaligned(n as i32);
    }
    Ok(())
}

/// Reads `count` WSABUFs as (address, length) pairs, each non-NULL.
///
/// # Safety
/// `bufs` points to `count` valid `PORTO_WSABUF`s.
pub(crate) unsafe fn wsabufs(bufs: *const PORTO_WSABUF, count: u32) -> Result<Vec<(usize, usize)>, Wsa> {
    non_null(bufs)?;
    if count == 0 {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    // SAFETY: `count` valid WSABUFs (the caller's contract).
    let list = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    // A zero-length WSABUF may point nowhere (the zero-byte receive passes NULL).
    list.iter()
        .map(|b| {
            if b.len == 0 {
                Ok((b.buf as usize, 0))
            } else {
                non_null(b.buf).map(|p| (p as usize, b.len as usize))
            }
        })
        .collect()
}

/// Reads `count` WSABUFs as byte slices (empty ones skipped).
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each readable for `len` bytes, for `'a`.
pub(crate) unsafe fn pieces<'a>(bufs: *const PORTO_WSABUF, count: u32) -> Result<Vec<&'a [u8]>, Wsa> {
    non_null(bufs)?;
    // SAFETY: `count` valid WSABUFs.
    let list = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    let mut out = Vec::with_capacity(list.len());
    for b in list {
        if b.len > 0 {
            non_null(b.buf)?;
            // SAFETY: `len` readable bytes at `buf` (the caller's contract).
            out.push(unsafe { std::slice::from_raw_parts(b.buf.cast_const().cast::<u8>(), b.len as usize) });
        }
    }
    Ok(out)
}

/// Winsock's overlapped-only rule here: no completion routine (`WSAEOPNOTSUPP`), an
/// `OVERLAPPED` (`WSAEFAULT` if NULL).
pub(crate) fn overlapped_only(ov: *const PORTO_OVERLAPPED, routine: *const c_void) -> Result<(), Wsa> {
    if !routine.is_null() {
        return Err(Wsa(PORTO_WSAEOPNOTSUPP));
    }
    non_null(ov).map(|_| ())
}

/// An operation that completed inline: its bytes into the caller's count (if given) and
/// into its OVERLAPPED (`Internal` 0, `InternalHigh` the bytes, as Windows leaves them), and
/// the call's 0.
///
/// # Safety
/// `out` is NULL or valid; `ov` is valid.
pub(crate) unsafe fn report(out: *mut u32, ov: *mut PORTO_OVERLAPPED, n: usize) -> Result<i32, Wsa> {
    if !out.is_null() {
        // SAFETY: non-NULL: the caller's `lpNumberOfBytes…` (its contract).
        unsafe { out.write(n as u32) };
    }
    // SAFETY: the caller's OVERLAPPED (checked non-NULL by `overlapped_only`).
    unsafe {
        (*ov).Internal = 0;
        (*ov).InternalHigh = n as u64;
    }
    Ok(0)
}

/// A receive with no OVERLAPPED (Windows: the socket treated as non-overlapped, the call
/// blocking): `porto_recvfrom`'s work, the bytes spread over the WSABUFs in order; 0 with the
/// count in `*received`, the source in `from`/`fromlen` if given.
///
/// # Safety
/// `targets` are the caller's writable WSABUFs; `received`, `from`, `fromlen` NULL or valid.
pub(crate) unsafe fn recv_blocking(
    s: PORTO_SOCKET,
    targets: &[(usize, usize)],
    received: *mut u32,
    from: *mut libc::sockaddr,
    fromlen: *mut i32,
) -> Result<i32, Wsa> {
    let room: usize = targets.iter().map(|t| t.1).sum();
    let mut tmp = vec![0u8; room];
    let (n, peer) = crate::bsd::recv_from(s, &mut tmp)?;
    let t = RecvTarget {
        bufs: targets.to_vec(),
        from: from as usize,
        fromlen: fromlen as usize,
        counted: None,
    };
    // SAFETY: the caller's buffers and address out-pointers.
    let n = unsafe { copy_out(n, &t, &[&tmp[..n]], peer) }.map_err(Wsa)?;
    if !received.is_null() {
        // SAFETY: non-NULL: the caller's.
        unsafe { received.write(n as u32) };
    }
    Ok(0)
}

/// A send with no OVERLAPPED: `porto_sendto`'s work over the WSABUFs gathered; 0 with the
/// bytes in `*sent`.
///
/// # Safety
/// `sent` NULL or valid.
pub(crate) unsafe fn send_blocking(
    s: PORTO_SOCKET,
    pieces: &[&[u8]],
    to: Option<SocketAddr>,
    sent: *mut u32,
) -> Result<i32, Wsa> {
    let data = pieces.concat();
    let n = crate::bsd::send_to(s, &data, to)?;
    if !sent.is_null() {
        // SAFETY: non-NULL: the caller's.
        unsafe { sent.write(n as u32) };
    }
    Ok(0)
}

/// An operation's end into its OVERLAPPED (NULL: none). The status goes last, atomically
/// (Release): a thread polling it (`HasOverlappedIoCompleted`, `WSAGetOverlappedResult`)
/// that sees it done sees the byte count too.
///
/// # Safety
/// `ov` is NULL or the OVERLAPPED of an operation not yet dequeued (the caller's contract:
/// valid until then).
unsafe fn write_overlapped(ov: *mut PORTO_OVERLAPPED, status: u64, bytes: u64) {
    if ov.is_null() {
        return;
    }
    // SAFETY: the function's contract.
    unsafe {
        (*ov).InternalHigh = bytes;
        AtomicU64::from_ptr(&raw mut (*ov).Internal).store(status, Ordering::Release);
    }
}

/// A failed operation ended (on its shard's thread, as its completion is queued): its
/// OVERLAPPED (`token`) holds `code` from now on, before any thread dequeues it.
pub(crate) fn overlapped_ended(token: u64, code: i32) {
    // SAFETY: `token` is the OVERLAPPED the operation was started with (`pend`), which the
    // program keeps valid until the completion is dequeued; the completion is being queued
    // now, so it is not dequeued yet.
    unsafe { write_overlapped(token as *mut PORTO_OVERLAPPED, code as u64, 0) };
}

/// Starts an overlapped operation as Windows does: its OVERLAPPED says
/// `PORTO_STATUS_PENDING` (so `PORTO_HasOverlappedIoCompleted` is false) from before the
/// operation is handed over until it fails (written as its completion is queued, as Windows
/// writes it when the operation ends) or its successful completion is dequeued (where its
/// data is copied), which writes the status and the byte count. `start` hands it over; if it cannot, the OVERLAPPED holds the error and
/// the call fails with it; else the call's answer is `WSA_IO_PENDING`.
///
/// # Safety
/// `ov` is valid (checked non-NULL) and stays so until the completion is dequeued.
pub(crate) unsafe fn pend(ov: *mut PORTO_OVERLAPPED, start: impl FnOnce() -> Result<(), Wsa>) -> Result<i32, Wsa> {
    // SAFETY: the caller's OVERLAPPED; nothing else writes it before the operation starts.
    unsafe {
        (*ov).Internal = PORTO_STATUS_PENDING;
        (*ov).InternalHigh = 0;
    }
    match start() {
        Ok(()) => Err(Wsa(PORTO_WSA_IO_PENDING)),
        Err(e) => {
            // SAFETY: as above: the operation never started, so no completion will write it.
            unsafe { (*ov).Internal = e.0 as u64 };
            Err(e)
        }
    }
}

/// `WSAStartup`: starts the engine on the first call (later calls count). `data` may be
/// NULL (porto fills nothing in it). Returns 0 or a WSA error.
#[no_mangle]
pub extern "C" fn porto_WSAStartup(version: u16, data: *mut c_void) -> i32 {
    let _ = (version, data);
    status(|| state::startup(None))
}

/// `WSAStartup` with the engine's configuration (NULL: the defaults).
///
/// # Safety
/// `cfg` is NULL or points to a valid `PORTO_STARTUP`.
#[no_mangle]
pub unsafe extern "C" fn porto_WSAStartupEx(cfg: *const PORTO_STARTUP) -> i32 {
    status(|| {
        let s = if cfg.is_null() {
            None
        } else {
            // SAFETY: non-NULL and valid (the caller's contract).
            let c = unsafe { &*cfg };
            Some(Startup {
                shards: c.shards as usize,
                pin: c.pin != 0,
                frames_per_shard: c.frames_per_shard,
                provider: c.provider,
                frame_size: c.frame_size,
                ops_max: c.ops_max,
                sockets_max: c.sockets_max,
                commands_max: c.commands_max,
            })
        };
        state::startup(s)
    })
}

/// `WSACleanup`: the last call closes every socket and port and stops the engine.
#[no_mangle]
pub extern "C" fn porto_WSACleanup() -> i32 {
    guard(PORTO_SOCKET_ERROR, || state::cleanup().map(|()| 0))
}

/// The calling thread's last error (Windows' numbers).
#[no_mangle]
pub extern "C" fn porto_WSAGetLastError() -> i32 {
    state::last_error()
}

/// `WSASocket`: `AF_INET` or `AF_INET6`, `SOCK_DGRAM` (TCP is not in this version of the
/// ABI: `WSAESOCKTNOSUPPORT`). `info`, `group` and `flags` are accepted and ignored (every
/// porto socket is overlapped).
#[no_mangle]
pub extern "C" fn porto_WSASocket(
    af: i32,
    ty: i32,
    protocol: i32,
    info: *const c_void,
    group: u32,
    flags: u32,
) -> PORTO_SOCKET {
    let _ = (info, group, flags);
    guard(PORTO_INVALID_SOCKET, || state::socket(af, ty, protocol))
}

/// `bind`.
///
/// # Safety
/// `name` is NULL or readable for `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_bind(s: PORTO_SOCKET, name: *const libc::sockaddr, namelen: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        // SAFETY: forwarded contract.
        let addr = unsafe { read_sockaddr(name, namelen) }?;
        state::bind(s, addr).map(|()| 0)
    })
}

/// `getsockname`.
///
/// # Safety
/// `name` is writable for `*namelen` bytes, or NULL.
#[no_mangle]
pub unsafe extern "C" fn porto_getsockname(s: PORTO_SOCKET, name: *mut libc::sockaddr, namelen: *mut i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        let a = state::local_addr(s)?;
        // SAFETY: forwarded contract.
        unsafe { write_sockaddr(a, name, namelen) }.map(|()| 0)
    })
}

/// `CreateIoCompletionPort`: with `file == PORTO_INVALID_HANDLE_VALUE`, a new port
/// (`concurrency` 0: as many threads as CPUs); with a socket and an existing port,
/// associates them once with `key` and returns the port. NULL (0) on failure, with kernel32's
/// codes: `PORTO_ERROR_INVALID_PARAMETER` (associated already, or a port with
/// `PORTO_INVALID_HANDLE_VALUE`), `PORTO_ERROR_INVALID_HANDLE` (no socket, no port).
#[no_mangle]
pub extern "C" fn porto_CreateIoCompletionPort(
    file: PORTO_HANDLE,
    existing: PORTO_HANDLE,
    key: u64,
    concurrency: u32,
) -> PORTO_HANDLE {
    let port = guard(0, || {
        if file == PORTO_INVALID_HANDLE_VALUE {
            if !existing.0.is_null() {
                return Err(Wsa(PORTO_ERROR_INVALID_PARAMETER));
            }
            return state::create_port(concurrency);
        }
        // A socket, as Windows programs pass it: `(HANDLE)sock`.
        let sock = file.id();
        let associated = if existing.0.is_null() {
            // Creating a port and associating in one call: supported as on Windows.
            let p = state::create_port(concurrency)?;
            state::associate(sock, p, key)
        } else {
            state::associate(sock, existing.id(), key)
        };
        // kernel32's codes, not Winsock's: a handle associated already is
        // ERROR_INVALID_PARAMETER, one that is no socket ERROR_INVALID_HANDLE.
        associated.map_err(|e| match e.0 {
            PORTO_WSAEINVAL => Wsa(PORTO_ERROR_INVALID_PARAMETER),
            PORTO_WSAENOTSOCK => Wsa(PORTO_ERROR_INVALID_HANDLE),
            _ => e,
        })
    });
    PORTO_HANDLE::of(port)
}

/// `WSARecvFrom` (overlapped only: `ov` is required, `routine` must be NULL). Returns
/// `PORTO_SOCKET_ERROR` with `PORTO_WSA_IO_PENDING`: the datagram completes into the
/// socket's port, and is copied into `bufs` (and its source into `from`/`*fromlen`) when
/// `porto_GetQueuedCompletionStatusEx` dequeues it. `bufs`, `from`, `fromlen` and `ov` must
/// stay valid until then, as on Windows.
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each writable for `len` bytes; `from`/`fromlen`
/// are NULL or valid; `ov` is valid until the operation's completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_WSARecvFrom(
    s: PORTO_SOCKET,
    bufs: *mut PORTO_WSABUF,
    count: u32,
    received: *mut u32,
    flags: *mut u32,
    from: *mut libc::sockaddr,
    fromlen: *mut i32,
    ov: *mut PORTO_OVERLAPPED,
    routine: *const c_void,
) -> i32 {
    let _ = flags;
    guard(PORTO_SOCKET_ERROR, || {
        if ov.is_null() && routine.is_null() {
            // SAFETY: forwarded contract.
            let targets = unsafe { wsabufs(bufs, count) }?;
            // SAFETY: forwarded contract.
            return unsafe { recv_blocking(s, &targets, received, from, fromlen) };
        }
        overlapped_only(ov, routine)?;
        // SAFETY: forwarded contract.
        let targets = unsafe { wsabufs(bufs, count) }?;
        // SAFETY: forwarded contract (the WSABUFs, from, fromlen).
        if let Some(n) = unsafe { recv_inline(s, &targets, from, fromlen, true) }? {
            // SAFETY: the caller's `received` and OVERLAPPED.
            return unsafe { report(received, ov, n) };
        }
        let target = RecvTarget {
            bufs: targets,
            from: from as usize,
            fromlen: fromlen as usize,
            counted: None,
        };
        // SAFETY: the caller's OVERLAPPED, valid until the completion is dequeued.
        unsafe { pend(ov, || state::recv_from(s, ov as u64, target)) }
    })
}

/// `WSASendTo` (overlapped only). The `bufs` are gathered into one datagram at once (they
/// may be reused as soon as this returns); the completion reports the bytes sent. Returns
/// `PORTO_SOCKET_ERROR` with `PORTO_WSA_IO_PENDING`.
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each readable for `len` bytes; `to` is readable
/// for `tolen` bytes; `ov` stays valid until the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_WSASendTo(
    s: PORTO_SOCKET,
    bufs: *const PORTO_WSABUF,
    count: u32,
    sent: *mut u32,
    flags: u32,
    to: *const libc::sockaddr,
    tolen: i32,
    ov: *mut PORTO_OVERLAPPED,
    routine: *const c_void,
) -> i32 {
    let _ = flags;
    guard(PORTO_SOCKET_ERROR, || {
        // SAFETY: forwarded contract.
        let to = unsafe { read_sockaddr(to, tolen) }?;
        // SAFETY: forwarded contract.
        let pieces = unsafe { pieces(bufs, count) }?;
        if ov.is_null() && routine.is_null() {
            // SAFETY: the caller's `sent`.
            return unsafe { send_blocking(s, &pieces, Some(to), sent) };
        }
        overlapped_only(ov, routine)?;
        // SAFETY: the pieces are the caller's readable WSABUFs.
        if let Some(n) = unsafe { send_inline(s, &pieces, to) }? {
            // SAFETY: the caller's `sent` and OVERLAPPED.
            return unsafe { report(sent, ov, n) };
        }
        // SAFETY: the caller's OVERLAPPED, valid until the completion is dequeued.
        unsafe { pend(ov, || state::send_to(s, ov as u64, &pieces, to).map(drop)) }
    })
}

/// `SetFileCompletionNotificationModes`: `PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` makes
/// a receive (`WSARecvFrom`, `WSARecv`) that finds data waiting, and a datagram send
/// (`WSASendTo`) the socket buffer takes at once, complete inline — 0 returned, the bytes in
/// `*received` / `*sent`, **no completion queued** — when no operation of its kind is in
/// flight ahead of it; otherwise it pends as usual. A receive too small for the datagram
/// fails inline with `PORTO_WSAEMSGSIZE` (its buffers filled). Stream sends always pend.
/// `PORTO_FILE_SKIP_SET_EVENT_ON_HANDLE` is accepted (porto signals no event objects).
/// TRUE (1), or FALSE with `PORTO_WSAEINVAL` for unknown bits.
#[no_mangle]
pub extern "C" fn porto_SetFileCompletionNotificationModes(s: PORTO_SOCKET, flags: u8) -> i32 {
    guard(0, || {
        if flags & !(PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | PORTO_FILE_SKIP_SET_EVENT_ON_HANDLE) != 0 {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        state::set_skip(s, flags & PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS != 0).map(|()| 1)
    })
}

/// A receive tried at once (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`): `Some(bytes)` when data
/// was waiting (copied into `bufs`, the source into `from`), `None` when it must pend.
///
/// # Safety
/// `bufs` are the caller's writable buffers; `from`/`fromlen` NULL or valid.
pub(crate) unsafe fn recv_inline(
    s: PORTO_SOCKET,
    bufs: &[(usize, usize)],
    from: *mut libc::sockaddr,
    fromlen: *mut i32,
    datagram: bool,
) -> Result<Option<usize>, Wsa> {
    if !state::may_complete_inline(s, true)? {
        return Ok(None);
    }
    state::with_fd(s, |fd| {
        let mut iov: Vec<libc::iovec> = bufs
            .iter()
            .map(|&(p, l)| libc::iovec {
                iov_base: p as *mut c_void,
                iov_len: l,
            })
            .collect();
        // SAFETY: plain C structs; all zeroes is a valid value of each.
        let (mut name, mut msg): (libc::sockaddr_storage, libc::msghdr) = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        let flags = libc::MSG_DONTWAIT | if datagram { libc::MSG_TRUNC } else { 0 };
        // SAFETY: the iovecs are the caller's writable buffers, the name our local; `fd` is
        // the socket's, held open by `with_fd`'s lock.
        let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(Wsa::from(porto::Error::from(e)));
        }
        let n = n as usize;
        if datagram && !from.is_null() && !fromlen.is_null() {
            let name = (&name as *const libc::sockaddr_storage).cast::<libc::sockaddr>();
            // SAFETY: the kernel wrote `msg_namelen` bytes of our local `name`.
            let peer = unsafe { read_sockaddr(name, msg.msg_namelen as i32) };
            if let Ok(peer) = peer {
                // SAFETY: from/fromlen as given (the caller's contract).
                let _ = unsafe { write_sockaddr(peer, from, fromlen) };
            }
        }
        let room: usize = bufs.iter().map(|b| b.1).sum();
        if datagram && n > room {
            return Err(Wsa(PORTO_WSAEMSGSIZE));
        }
        Ok(Some(n))
    })
}

/// A datagram send tried at once (`FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`): `Some(bytes)` when
/// the socket buffer took it, `None` when it must pend.
///
/// # Safety
/// The pieces are readable (they are slices).
unsafe fn send_inline(s: PORTO_SOCKET, pieces: &[&[u8]], to: SocketAddr) -> Result<Option<usize>, Wsa> {
    if !state::may_complete_inline(s, false)? {
        return Ok(None);
    }
    state::with_fd(s, |fd| {
        let mut iov: Vec<libc::iovec> = pieces
            .iter()
            .map(|p| libc::iovec {
                iov_base: p.as_ptr() as *mut c_void,
                iov_len: p.len(),
            })
            .collect();
        // SAFETY: plain C structs; all zeroes is a valid value of each.
        let (mut name, mut msg): (libc::sockaddr_storage, libc::msghdr) = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as i32;
        // SAFETY: our local storage, `len` bytes.
        unsafe { write_sockaddr(to, (&mut name as *mut libc::sockaddr_storage).cast(), &mut len) }?;
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = len as libc::socklen_t;
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: the iovecs point at the caller's readable pieces (the kernel only reads);
        // `fd` is the socket's, held open by `with_fd`'s lock.
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(Wsa::from(porto::Error::from(e)));
        }
        Ok(Some(n as usize))
    })
}

/// `GetQueuedCompletionStatusEx`: up to `count` completions into `entries`, waiting up to
/// `timeout_ms` (`PORTO_INFINITE`: no limit) for the first; a receive's datagram is copied
/// into its `WSABUF`s here. Returns 1, or 0 with `PORTO_WAIT_TIMEOUT` when nothing came.
/// `alertable` is ignored.
///
/// # Safety
/// `entries` is writable for `count` entries; `removed` is valid; the receives' buffers and
/// `OVERLAPPED`s given to `porto_WSARecvFrom` are still valid.
#[no_mangle]
pub unsafe extern "C" fn porto_GetQueuedCompletionStatusEx(
    port: PORTO_HANDLE,
    entries: *mut PORTO_OVERLAPPED_ENTRY,
    count: u32,
    removed: *mut u32,
    timeout_ms: u32,
    alertable: i32,
) -> i32 {
    let _ = alertable;
    guard(0, || {
        non_null(entries)?;
        non_null(removed)?;
        if count == 0 {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        let timeout = (timeout_ms != PORTO_INFINITE).then(|| Duration::from_millis(u64::from(timeout_ms)));
        let done = state::dequeue(port.id(), count as usize, timeout)?;
        // SAFETY: `count` writable entries (the caller's contract); `done.len() <= count`.
        let out = unsafe { std::slice::from_raw_parts_mut(entries, count as usize) };
        for (e, d) in out.iter_mut().zip(&done) {
            let mut result = d.result;
            if let Ok(n) = result {
                result = match &d.out {
                    Out::None => Ok(n),
                    Out::Recv(target, buf, peer) => {
                        let one: Option<&[u8]> = buf.as_deref();
                        let parts: &[&[u8]] = match &one {
                            Some(b) => std::slice::from_ref(b),
                            None => &[],
                        };
                        // SAFETY: the targets are the caller's WSABUFs, from, fromlen, still valid.
                        unsafe { copy_out(n, target, parts, *peer) }
                    }
                    Out::RecvFrames(target, g) => {
                        let parts: Vec<&[u8]> = g.bufs().map(|b| &b[..]).collect();
                        // SAFETY: as above.
                        unsafe { copy_out(n, target, &parts, None) }
                    }
                    Out::Accept {
                        target,
                        data,
                        local,
                        peer,
                    } => {
                        // SAFETY: AcceptEx's buffer, still valid (its contract).
                        unsafe { accept_out(n, target, data.as_deref(), *local, *peer) }
                    }
                };
            }
            let ov = d.token as *mut PORTO_OVERLAPPED;
            let (status, bytes) = match result {
                Ok(n) => (0u64, n as u64),
                Err(code) => (code as u64, 0),
            };
            if !d.ov_written {
                // SAFETY: the OVERLAPPED given with the operation, valid until now.
                unsafe { write_overlapped(ov, status, bytes) };
            }
            *e = PORTO_OVERLAPPED_ENTRY {
                lpCompletionKey: d.key,
                lpOverlapped: ov,
                Internal: status,
                dwNumberOfBytesTransferred: bytes as u32,
            };
        }
        // SAFETY: `removed` is non-NULL and valid.
        unsafe { removed.write(done.len() as u32) };
        Ok(1)
    })
}

/// `GetQueuedCompletionStatus`: one completion. TRUE (1) with its bytes, key and
/// OVERLAPPED; FALSE (0) with `*ov` set and the operation's error in
/// `porto_WSAGetLastError` when the operation failed; FALSE with `*ov` NULL and
/// `PORTO_WAIT_TIMEOUT` when nothing came in `timeout_ms`.
///
/// # Safety
/// `bytes`, `key` and `ov` are valid; as for `porto_GetQueuedCompletionStatusEx` otherwise.
#[no_mangle]
pub unsafe extern "C" fn porto_GetQueuedCompletionStatus(
    port: PORTO_HANDLE,
    bytes: *mut u32,
    key: *mut u64,
    ov: *mut *mut PORTO_OVERLAPPED,
    timeout_ms: u32,
) -> i32 {
    guard(0, || {
        non_null(bytes)?;
        non_null(key)?;
        non_null(ov)?;
        // SAFETY: `ov` is valid: NULL until an operation comes.
        unsafe { ov.write(std::ptr::null_mut()) };
        let mut e = PORTO_OVERLAPPED_ENTRY {
            lpCompletionKey: 0,
            lpOverlapped: std::ptr::null_mut(),
            Internal: 0,
            dwNumberOfBytesTransferred: 0,
        };
        let mut n = 0u32;
        // SAFETY: one entry and a count on this stack; the rest is the caller's contract.
        if unsafe { porto_GetQueuedCompletionStatusEx(port, &mut e, 1, &mut n, timeout_ms, 0) } == 0 {
            return Err(Wsa(state::last_error()));
        }
        // SAFETY: the three out-pointers are valid (checked non-NULL; the caller's contract).
        unsafe {
            bytes.write(e.dwNumberOfBytesTransferred);
            key.write(e.lpCompletionKey);
            ov.write(e.lpOverlapped);
        }
        if e.Internal != 0 {
            // The operation failed: FALSE with its OVERLAPPED, as Windows reports it.
            state::set_last_error(e.Internal as i32);
            return Ok(0);
        }
        Ok(1)
    })
}

/// Copies a received datagram into its receive's buffers and source address: the bytes
/// copied, or `WSAEMSGSIZE` (with the buffers filled) when it did not fit.
///
/// # Safety
/// The addresses in `t` are the caller's live WSABUFs and from/fromlen pointers.
unsafe fn copy_out(n: usize, t: &RecvTarget, parts: &[&[u8]], peer: Option<SocketAddr>) -> Result<usize, i32> {
    // The received bytes: the first `n` of `parts`, in order.
    let mut left = n;
    let data = parts.iter().map_while(|p| {
        if left == 0 {
            return None;
        }
        let k = left.min(p.len());
        left -= k;
        Some(&p[..k])
    });
    let mut total = 0;
    let mut at = 0; // index into the caller's buffers, and the offset in the current one
    let mut off = 0;
    let mut overflow = false;
    for mut chunk in data {
        total += chunk.len();
        while !chunk.is_empty() {
            let Some(&(ptr, len)) = t.bufs.get(at) else {
                overflow = true;
                break;
            };
            let k = (len - off).min(chunk.len());
            // SAFETY: `len` writable bytes at `ptr` (the receive's contract); off + k <= len.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), (ptr as *mut u8).add(off), k) };
            chunk = &chunk[k..];
            off += k;
            if off == len {
                at += 1;
                off = 0;
            }
        }
    }
    if let Some(p) = peer {
        if t.from != 0 && t.fromlen != 0 {
            // SAFETY: from/fromlen as given to WSARecvFrom.
            let _ = unsafe { write_sockaddr(p, t.from as *mut libc::sockaddr, t.fromlen as *mut i32) };
        }
    }
    if overflow {
        Err(PORTO_WSAEMSGSIZE)
    } else {
        Ok(total)
    }
}

/// Writes an accepted connection's first data and its two addresses into `AcceptEx`'s
/// buffer: the bytes of data.
///
/// # Safety
/// `t.buf` is writable for `recvlen + laddrlen + raddrlen` bytes (AcceptEx's contract).
unsafe fn accept_out(
    n: usize,
    t: &AcceptTarget,
    data: Option<&[u8]>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Result<usize, i32> {
    let data = data.unwrap_or(&[]);
    let k = n.min(data.len()).min(t.recvlen);
    let base = t.buf as *mut u8;
    // SAFETY: `k <= recvlen` bytes at the start of the buffer.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), base, k) };
    for (addr, at, room) in [
        (local, t.recvlen, t.laddrlen),
        (peer, t.recvlen + t.laddrlen, t.raddrlen),
    ] {
        let mut len = i32::try_from(room).unwrap_or(i32::MAX);
        // SAFETY: the address area `[at, at + room)` is inside the buffer.
        unsafe { write_sockaddr(addr, base.add(at).cast::<libc::sockaddr>(), &mut len) }.map_err(|Wsa(e)| e)?;
    }
    Ok(k)
}

/// `PostQueuedCompletionStatus`: `ov` comes back as given (it is not dereferenced).
#[no_mangle]
pub extern "C" fn porto_PostQueuedCompletionStatus(
    port: PORTO_HANDLE,
    bytes: u32,
    key: u64,
    ov: *mut PORTO_OVERLAPPED,
) -> i32 {
    guard(0, || state::post(port.id(), bytes, key, ov as u64).map(|()| 1))
}

/// `CancelIoEx(socket, ov)`: the operation completes `PORTO_WSA_OPERATION_ABORTED`; with a
/// NULL `ov`, every operation of the socket does (each once; the socket stays open).
#[no_mangle]
pub extern "C" fn porto_CancelIoEx(s: PORTO_SOCKET, ov: *mut PORTO_OVERLAPPED) -> i32 {
    guard(0, || state::cancel(s, (!ov.is_null()).then_some(ov as u64)).map(|()| 1))
}

/// `WSASetLastError`: what this thread's next `porto_WSAGetLastError` returns.
#[no_mangle]
pub extern "C" fn porto_WSASetLastError(code: i32) {
    state::set_last_error(code);
}

/// `WSAGetOverlappedResult(s, ov, &bytes, wait, &flags)`: TRUE with the bytes once the
/// operation's successful completion was dequeued (its data copied; its `Internal` no longer
/// `PORTO_STATUS_PENDING`); FALSE with the operation's error as soon as it failed (written
/// when it ends, as Windows does, dequeued or not); FALSE with `PORTO_WSA_IO_INCOMPLETE` if
/// it is still in flight and `wait` is FALSE. With `wait`, a success waits until a thread
/// dequeues it (on a port nobody dequeues from, for ever). `flags` gets 0. `s` is not checked against the operation (Windows does not
/// either).
///
/// # Safety
/// `ov` is valid; `bytes` and `flags` are NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn porto_WSAGetOverlappedResult(
    s: PORTO_SOCKET,
    ov: *mut PORTO_OVERLAPPED,
    bytes: *mut u32,
    wait: i32,
    flags: *mut u32,
) -> i32 {
    let _ = s;
    guard(0, || {
        non_null(ov)?;
        if !flags.is_null() {
            // SAFETY: non-NULL: the caller's.
            unsafe { flags.write(0) };
        }
        // SAFETY: the caller's OVERLAPPED, valid.
        unsafe { overlapped_result(ov, bytes, wait != 0) }
    })
}

/// `GetOverlappedResult(handle, ov, &bytes, wait)`: as `porto_WSAGetOverlappedResult` (the
/// handle is the socket as a `HANDLE`; the error is in `porto_WSAGetLastError`).
///
/// # Safety
/// As for `porto_WSAGetOverlappedResult`.
#[no_mangle]
pub unsafe extern "C" fn porto_GetOverlappedResult(
    handle: PORTO_HANDLE,
    ov: *mut PORTO_OVERLAPPED,
    bytes: *mut u32,
    wait: i32,
) -> i32 {
    let _ = handle;
    guard(0, || {
        non_null(ov)?;
        // SAFETY: the caller's OVERLAPPED, valid.
        unsafe { overlapped_result(ov, bytes, wait != 0) }
    })
}

/// Reads an OVERLAPPED's outcome, waiting (by polling, 50 µs to 1 ms apart) while it is in
/// flight if `wait`.
///
/// # Safety
/// `ov` is valid; `bytes` NULL or valid.
unsafe fn overlapped_result(ov: *mut PORTO_OVERLAPPED, bytes: *mut u32, wait: bool) -> Result<i32, Wsa> {
    // SAFETY: the caller's OVERLAPPED; `Internal` is written atomically by the dequeuing
    // thread (Acquire pairs with its Release store).
    let internal = unsafe { AtomicU64::from_ptr(&raw mut (*ov).Internal) };
    let mut nap = Duration::from_micros(50);
    let status = loop {
        let st = internal.load(Ordering::Acquire);
        if st != PORTO_STATUS_PENDING {
            break st;
        }
        if !wait {
            return Err(Wsa(PORTO_WSA_IO_INCOMPLETE));
        }
        // A thread that blocks lets go of its completion port, as Windows counts it: another
        // thread may then dequeue (the completion this waits for, perhaps).
        porto::CompletionPort::release_current_thread();
        std::thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(1));
    };
    if !bytes.is_null() {
        // SAFETY: the caller's `bytes`; `InternalHigh` was written before the status.
        unsafe { bytes.write((*ov).InternalHigh as u32) };
    }
    if status == 0 {
        Ok(1)
    } else {
        Err(Wsa(status as i32))
    }
}

/// `closesocket`: outstanding operations complete `PORTO_WSA_OPERATION_ABORTED`.
#[no_mangle]
pub extern "C" fn porto_closesocket(s: PORTO_SOCKET) -> i32 {
    guard(PORTO_SOCKET_ERROR, || state::close_socket(s).map(|()| 0))
}

/// `CloseHandle` of a completion port.
#[no_mangle]
pub extern "C" fn porto_CloseHandle(h: PORTO_HANDLE) -> i32 {
    guard(0, || state::close_handle(h.id()).map(|()| 1))
}
