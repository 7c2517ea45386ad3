//! TCP for C (`include/porto.h`): `listen`, `WSARecv`, `WSASend`, and mswsock's extension
//! functions `AcceptEx`, `GetAcceptExSockaddrs`, `ConnectEx`, `DisconnectEx` (also fetched
//! through `porto_WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER, WSAID_…)` as on Windows), and
//! `setsockopt` for the accept/connect context options. As in `abi`, C's pointers are read
//! and written here only, each checked.

// The C boundary: raw pointers from the caller, `#[no_mangle]` exports.
#![allow(unsafe_code)]
// Windows' names, kept so a port is mostly renaming.
#![allow(non_snake_case)]

use std::ffi::c_void;

use crate::abi::{
    guard, non_null, overlapped_only, pend, pieces, read_sockaddr, recv_blocking, report, send_blocking, wsabufs,
    PORTO_OVERLAPPED, PORTO_WSABUF,
};
use crate::codes::*;
use crate::state::{AcceptTarget, RecvTarget, Wsa};
use crate::tcp;

/// `listen`: the bound TCP socket listens. Associate it with a port, then `AcceptEx`.
#[no_mangle]
pub extern "C" fn porto_listen(s: PORTO_SOCKET, backlog: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || tcp::listen(s, backlog).map(|()| 0))
}

/// `WSARecv` (overlapped only: `ov` required, `routine` NULL): `PORTO_SOCKET_ERROR` with
/// `PORTO_WSA_IO_PENDING`; reads at most what `bufs` hold (the rest stays in the kernel) and
/// copies it into them when dequeued. 0 bytes: the peer closed.
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each writable for `len` bytes, valid with `ov`
/// until the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_WSARecv(
    s: PORTO_SOCKET,
    bufs: *mut PORTO_WSABUF,
    count: u32,
    received: *mut u32,
    flags: *mut u32,
    ov: *mut PORTO_OVERLAPPED,
    routine: *const c_void,
) -> i32 {
    let _ = flags;
    guard(PORTO_SOCKET_ERROR, || {
        if ov.is_null() && routine.is_null() {
            // SAFETY: forwarded contract.
            let targets = unsafe { wsabufs(bufs, count) }?;
            // SAFETY: forwarded contract; no source address on a stream.
            return unsafe { recv_blocking(s, &targets, received, std::ptr::null_mut(), std::ptr::null_mut()) };
        }
        overlapped_only(ov, routine)?;
        // SAFETY: forwarded contract.
        let bufs = unsafe { wsabufs(bufs, count) }?;
        let nowhere = std::ptr::null_mut();
        // SAFETY: the caller's writable WSABUFs; no source address on a stream.
        let inline = unsafe { crate::abi::recv_inline(s, &bufs, nowhere, std::ptr::null_mut(), false) }?;
        if let Some(n) = inline {
            // SAFETY: the caller's `received` and OVERLAPPED.
            return unsafe { report(received, ov, n) };
        }
        let target = RecvTarget {
            bufs,
            from: 0,
            fromlen: 0,
            counted: None,
        };
        // SAFETY: the caller's OVERLAPPED, valid until the completion is dequeued.
        unsafe { pend(ov, || tcp::recv(s, ov as u64, target)) }
    })
}

/// `WSASend` (overlapped only): the buffers are copied into registered frames at the call
/// (reusable at once) and sent whole, in order, in one completion whatever the length;
/// `PORTO_SOCKET_ERROR` with `PORTO_WSA_IO_PENDING` (`PORTO_WSAENOBUFS` when the pool has
/// too few frames free: backpressure).
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each readable for `len` bytes; `ov` stays valid
/// until the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_WSASend(
    s: PORTO_SOCKET,
    bufs: *const PORTO_WSABUF,
    count: u32,
    sent: *mut u32,
    flags: u32,
    ov: *mut PORTO_OVERLAPPED,
    routine: *const c_void,
) -> i32 {
    let _ = flags;
    guard(PORTO_SOCKET_ERROR, || {
        if ov.is_null() && routine.is_null() {
            // SAFETY: forwarded contract.
            let p = unsafe { pieces(bufs, count) }?;
            // SAFETY: the caller's `sent`.
            return unsafe { send_blocking(s, &p, None, sent) };
        }
        overlapped_only(ov, routine)?;
        // SAFETY: forwarded contract.
        let p = unsafe { pieces(bufs, count) }?;
        // SAFETY: the caller's OVERLAPPED, valid until the completion is dequeued.
        unsafe { pend(ov, || tcp::send(s, ov as u64, &p).map(drop)) }
    })
}

/// `AcceptEx`: the next connection on `listen_s` becomes `accept_s` (made by `WSASocket`,
/// not bound). `buf` receives `recvlen` bytes of first data (0: complete at once), then the
/// local and remote addresses in areas of `laddrlen` and `raddrlen` bytes (each at least 16
/// more than the address: 32 for IPv4, 44 for IPv6); read them with
/// `porto_GetAcceptExSockaddrs`. FALSE with `PORTO_WSA_IO_PENDING`; the completion's bytes
/// are the first data's. Then associate `accept_s` with a port for its own operations.
///
/// # Safety
/// `buf` is writable for `recvlen + laddrlen + raddrlen` bytes and `ov` valid, both until
/// the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_AcceptEx(
    listen_s: PORTO_SOCKET,
    accept_s: PORTO_SOCKET,
    buf: *mut c_void,
    recvlen: u32,
    laddrlen: u32,
    raddrlen: u32,
    received: *mut u32,
    ov: *mut PORTO_OVERLAPPED,
) -> i32 {
    let _ = received;
    guard(0, || {
        non_null(ov)?;
        non_null(buf)?;
        let target = AcceptTarget {
            buf: buf as usize,
            recvlen: recvlen as usize,
            laddrlen: laddrlen as usize,
            raddrlen: raddrlen as usize,
            accept: accept_s,
        };
        // SAFETY: the caller's OVERLAPPED (non-NULL), valid until the completion is dequeued.
        unsafe { pend(ov, || tcp::accept_ex(listen_s, ov as u64, target)) }
    })
}

/// `GetAcceptExSockaddrs`: pointers to the local and remote addresses an `AcceptEx`
/// completion wrote into `buf` (same lengths as given to it), and their lengths.
///
/// # Safety
/// `buf` is an `AcceptEx` buffer of those lengths whose completion was dequeued; the four
/// out-pointers are valid.
#[no_mangle]
pub unsafe extern "C" fn porto_GetAcceptExSockaddrs(
    buf: *mut c_void,
    recvlen: u32,
    laddrlen: u32,
    raddrlen: u32,
    local: *mut *mut libc::sockaddr,
    local_len: *mut i32,
    remote: *mut *mut libc::sockaddr,
    remote_len: *mut i32,
) {
    guard((), || {
        non_null(buf)?;
        let base = buf.cast::<u8>();
        let areas = [
            (recvlen as usize, laddrlen as usize, local, local_len),
            (
                (recvlen as usize).saturating_add(laddrlen as usize),
                raddrlen as usize,
                remote,
                remote_len,
            ),
        ];
        for (at, room, out, out_len) in areas {
            if out.is_null() || out_len.is_null() || room < std::mem::size_of::<libc::sa_family_t>() {
                continue;
            }
            // SAFETY: the area lies in the AcceptEx buffer (the caller's contract); its first
            // bytes are the family `AcceptEx`'s completion wrote.
            let family = unsafe { base.add(at).cast::<libc::sa_family_t>().read_unaligned() };
            let len = match i32::from(family) {
                libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
                libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
                _ => 0,
            };
            // SAFETY: valid out-pointers (checked non-NULL).
            unsafe {
                out.write(base.add(at).cast::<libc::sockaddr>());
                out_len.write(len.min(room) as i32);
            }
        }
        Ok(())
    })
}

/// `ConnectEx`: the socket (bound first, as Windows requires, and associated with a port)
/// connects to `name`, then sends `sendlen` bytes of `sendbuf` (copied at the call). FALSE
/// with `PORTO_WSA_IO_PENDING`; the completion's bytes are the data sent.
///
/// # Safety
/// `name` is readable for `namelen` bytes, `sendbuf` for `sendlen` (or NULL with 0), `ov`
/// valid until the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_ConnectEx(
    s: PORTO_SOCKET,
    name: *const libc::sockaddr,
    namelen: i32,
    sendbuf: *const c_void,
    sendlen: u32,
    sent: *mut u32,
    ov: *mut PORTO_OVERLAPPED,
) -> i32 {
    let _ = sent;
    guard(0, || {
        non_null(ov)?;
        // SAFETY: forwarded contract.
        let to = unsafe { read_sockaddr(name, namelen) }?;
        let data: &[u8] = if sendlen == 0 {
            &[]
        } else {
            non_null(sendbuf)?;
            // SAFETY: `sendlen` readable bytes (the caller's contract).
            unsafe { std::slice::from_raw_parts(sendbuf.cast::<u8>(), sendlen as usize) }
        };
        // SAFETY: the caller's OVERLAPPED (non-NULL), valid until the completion is dequeued.
        unsafe { pend(ov, || tcp::connect_ex(s, ov as u64, to, &[data])) }
    })
}

/// `DisconnectEx`: shuts the connection down; `PORTO_TF_REUSE_SOCKET` in `flags` lets the
/// socket go to `AcceptEx` again once it completes (its association kept). FALSE with
/// `PORTO_WSA_IO_PENDING`.
///
/// # Safety
/// `ov` is valid until the completion is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_DisconnectEx(
    s: PORTO_SOCKET,
    ov: *mut PORTO_OVERLAPPED,
    flags: u32,
    reserved: u32,
) -> i32 {
    guard(0, || {
        non_null(ov)?;
        if reserved != 0 {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        // SAFETY: the caller's OVERLAPPED (non-NULL), valid until the completion is dequeued.
        unsafe { pend(ov, || tcp::disconnect_ex(s, ov as u64, flags)) }
    })
}

/// Options `porto_setsockopt` / `porto_getsockopt` pass to the kernel socket (Linux's
/// numbers, from the system headers): buffer sizes, keep-alive, linger, broadcast, priority,
/// TOS / traffic class, TTL / hops, TCP_NODELAY and keep-alive timing, and multicast —
/// membership (any-source and source-specific, RFC 3678's `MCAST_*` too), exclude mode
/// (block / unblock a source), interface, TTL, loopback. Others would change what the engine
/// relies on (receive control data, error queues, blocking) and are `PORTO_WSAENOPROTOOPT`.
fn passed_through(level: i32, name: i32) -> bool {
    use libc::*;
    match level {
        SOL_SOCKET => matches!(
            name,
            SO_RCVBUF | SO_SNDBUF | SO_KEEPALIVE | SO_LINGER | SO_BROADCAST | SO_PRIORITY | SO_REUSEADDR
        ),
        IPPROTO_IP => matches!(
            name,
            IP_TOS
                | IP_TTL
                | IP_MULTICAST_IF
                | IP_MULTICAST_TTL
                | IP_MULTICAST_LOOP
                | IP_ADD_MEMBERSHIP
                | IP_DROP_MEMBERSHIP
                | IP_ADD_SOURCE_MEMBERSHIP
                | IP_DROP_SOURCE_MEMBERSHIP
                | IP_BLOCK_SOURCE
                | IP_UNBLOCK_SOURCE
                | MCAST_JOIN_GROUP
                | MCAST_LEAVE_GROUP
                | MCAST_JOIN_SOURCE_GROUP
                | MCAST_LEAVE_SOURCE_GROUP
                | MCAST_BLOCK_SOURCE
                | MCAST_UNBLOCK_SOURCE
        ),
        IPPROTO_IPV6 => matches!(
            name,
            IPV6_TCLASS
                | IPV6_UNICAST_HOPS
                | IPV6_MULTICAST_IF
                | IPV6_MULTICAST_HOPS
                | IPV6_MULTICAST_LOOP
                | IPV6_ADD_MEMBERSHIP
                | IPV6_DROP_MEMBERSHIP
                | MCAST_JOIN_GROUP
                | MCAST_LEAVE_GROUP
                | MCAST_JOIN_SOURCE_GROUP
                | MCAST_LEAVE_SOURCE_GROUP
                | MCAST_BLOCK_SOURCE
                | MCAST_UNBLOCK_SOURCE
        ),
        IPPROTO_TCP => matches!(name, TCP_NODELAY | TCP_KEEPIDLE | TCP_KEEPINTVL | TCP_KEEPCNT),
        _ => false,
    }
}

/// The WSA number of the calling thread's errno (after a failed libc call).
fn last_os_error() -> Wsa {
    Wsa::from(porto::Error::from(std::io::Error::last_os_error()))
}

/// `setsockopt`: `SOL_SOCKET` with `PORTO_SO_UPDATE_ACCEPT_CONTEXT` or
/// `PORTO_SO_UPDATE_CONNECT_CONTEXT` succeeds (the accepted or connected socket already has
/// its context here). `SO_RCVTIMEO` / `SO_SNDTIMEO` (Linux's numbers) take Windows' DWORD of
/// milliseconds (or a `struct timeval`) and bound the blocking calls (`porto_recv`,
/// `porto_accept` / `porto_send`, `porto_connect`; 0: no limit); any socket. These go to the kernel socket as given (Linux's numbers, from the
/// system headers): `SO_RCVBUF`, `SO_SNDBUF`, `SO_KEEPALIVE`, `SO_LINGER`, `SO_BROADCAST`,
/// `SO_PRIORITY`, `SO_REUSEADDR`; `IP_TOS`, `IP_TTL`, `IPV6_TCLASS`, `IPV6_UNICAST_HOPS`;
/// multicast: `IP_ADD/DROP_MEMBERSHIP`, `IP_ADD/DROP_SOURCE_MEMBERSHIP`,
/// `IP_BLOCK/UNBLOCK_SOURCE` (exclude mode), `IPV6_ADD/DROP_MEMBERSHIP`, RFC 3678's
/// `MCAST_JOIN/LEAVE_GROUP`, `MCAST_JOIN/LEAVE_SOURCE_GROUP`, `MCAST_BLOCK/UNBLOCK_SOURCE`,
/// `IP(V6)_MULTICAST_IF/TTL/HOPS/LOOP`; `TCP_NODELAY`, `TCP_KEEPIDLE/KEEPINTVL/KEEPCNT`.
/// Others would change what the engine relies on and are `PORTO_WSAENOPROTOOPT`. The socket
/// needs its kernel socket (bound, listening or connected): `PORTO_WSAEINVAL` before.
///
/// # Safety
/// `value` is readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_setsockopt(
    s: PORTO_SOCKET,
    level: i32,
    name: i32,
    value: *const c_void,
    len: i32,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        if level == libc::SOL_SOCKET && matches!(name, PORTO_SO_UPDATE_ACCEPT_CONTEXT | PORTO_SO_UPDATE_CONNECT_CONTEXT)
        {
            return crate::state::local_addr(s).map(|_| 0).or_else(|Wsa(e)| match e {
                PORTO_WSAEINVAL => Ok(0),
                e => Err(Wsa(e)),
            });
        }
        if level == libc::SOL_SOCKET && matches!(name, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) {
            // Windows' DWORD of milliseconds (0: no limit), or Linux's struct timeval: the
            // blocking calls' own timeouts, kept by the library.
            let ms = match len {
                4 => {
                    // SAFETY: 4 readable bytes (the caller's contract).
                    unsafe { non_null(value)?.cast::<u32>().read_unaligned() }
                }
                16 => {
                    // SAFETY: a timeval's 16 readable bytes (the caller's contract).
                    let tv = unsafe { non_null(value)?.cast::<libc::timeval>().read_unaligned() };
                    let ms = tv.tv_sec.saturating_mul(1000).saturating_add(tv.tv_usec / 1000);
                    u32::try_from(ms).map_err(|_| Wsa(PORTO_WSAEINVAL))?
                }
                _ => return Err(Wsa(PORTO_WSAEFAULT)),
            };
            return crate::bsd::set_timeout(s, name == libc::SO_RCVTIMEO, ms).map(|()| 0);
        }
        if !passed_through(level, name) {
            return Err(Wsa(PORTO_WSAENOPROTOOPT));
        }
        non_null(value)?;
        let len = libc::socklen_t::try_from(len).map_err(|_| Wsa(PORTO_WSAEFAULT))?;
        if !crate::state::has_fd(s)? {
            // Before the kernel socket exists (between WSASocket and bind, as Windows
            // programs set SO_REUSEADDR or SO_SNDBUF): kept, and applied when it is made.
            // SAFETY: `len` readable bytes at `value` (the caller's contract).
            let bytes = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len as usize) };
            crate::state::sock(s)?.defer_opt(level, name, bytes);
            return Ok(0);
        }
        crate::state::with_fd(s, |fd| {
            // SAFETY: `len` readable bytes at `value` (the caller's contract); `fd` is the
            // socket's, held open by the lock `with_fd` keeps.
            if unsafe { libc::setsockopt(fd, level, name, value, len) } == 0 {
                Ok(0)
            } else {
                Err(last_os_error())
            }
        })
    })
}

/// `getsockopt`: `SO_RCVTIMEO` / `SO_SNDTIMEO` (a DWORD of ms), the options
/// `porto_setsockopt` passes through, and `SO_ERROR` and
/// `SO_TYPE`, read from the kernel socket; `*len` is the room at `value` in, the length out.
///
/// # Safety
/// `value` is writable for `*len` bytes; `len` is valid.
#[no_mangle]
pub unsafe extern "C" fn porto_getsockopt(
    s: PORTO_SOCKET,
    level: i32,
    name: i32,
    value: *mut c_void,
    len: *mut i32,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        if level == libc::SOL_SOCKET && matches!(name, libc::SO_RCVTIMEO | libc::SO_SNDTIMEO) {
            let ms = crate::bsd::timeout(s, name == libc::SO_RCVTIMEO)?;
            let len = non_null(len)?.cast_mut();
            // SAFETY: `len` valid (the caller's contract).
            if unsafe { len.read_unaligned() } < 4 {
                return Err(Wsa(PORTO_WSAEFAULT));
            }
            // SAFETY: `*len >= 4` writable bytes at `value` (the caller's contract).
            unsafe {
                non_null(value)?.cast_mut().cast::<u32>().write_unaligned(ms);
                len.write_unaligned(4);
            }
            return Ok(0);
        }
        let known = passed_through(level, name)
            || (level == libc::SOL_SOCKET && matches!(name, libc::SO_ERROR | libc::SO_TYPE));
        if !known {
            return Err(Wsa(PORTO_WSAENOPROTOOPT));
        }
        non_null(value)?;
        non_null(len)?;
        // SAFETY: `len` is valid (the caller's contract).
        let room = unsafe { len.read() };
        let mut n = libc::socklen_t::try_from(room).map_err(|_| Wsa(PORTO_WSAEFAULT))?;
        if !crate::state::has_fd(s)? {
            // Before the kernel socket exists: what was set meanwhile (else WSAEINVAL, the
            // kernel's default not being known until the socket is made).
            let v = crate::state::sock(s)?
                .early_opt(level, name)
                .ok_or(Wsa(PORTO_WSAEINVAL))?;
            let k = v.len().min(n as usize);
            // SAFETY: `n >= k` writable bytes at `value`; `len` valid (the caller's contract).
            unsafe {
                std::ptr::copy_nonoverlapping(v.as_ptr(), value.cast::<u8>(), k);
                len.write(k as i32);
            }
            return Ok(0);
        }
        crate::state::with_fd(s, |fd| {
            // SAFETY: `n` writable bytes at `value`; the lock keeps `fd` the socket's.
            if unsafe { libc::getsockopt(fd, level, name, value, &mut n) } != 0 {
                return Err(last_os_error());
            }
            // SAFETY: `len` is valid; `n <= room` fits an i32.
            unsafe { len.write(n as i32) };
            Ok(0)
        })
    })
}
