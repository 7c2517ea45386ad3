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

use crate::abi::{guard, non_null, read_sockaddr, PORTO_OVERLAPPED, PORTO_WSABUF};
use crate::codes::*;
use crate::state::{AcceptTarget, RecvTarget, Wsa};
use crate::tcp;

/// `listen`: the bound TCP socket listens. Associate it with a port, then `AcceptEx`.
#[no_mangle]
pub extern "C" fn porto_listen(s: PORTO_SOCKET, backlog: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || tcp::listen(s, backlog).map(|()| 0))
}

/// Reads `count` WSABUFs as (address, length) pairs, each non-NULL.
///
/// # Safety
/// `bufs` points to `count` valid `PORTO_WSABUF`s.
unsafe fn wsabufs(bufs: *const PORTO_WSABUF, count: u32) -> Result<Vec<(usize, usize)>, Wsa> {
    non_null(bufs)?;
    if count == 0 {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    // SAFETY: `count` valid WSABUFs (the caller's contract).
    let list = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    list.iter()
        .map(|b| non_null(b.buf).map(|p| (p as usize, b.len as usize)))
        .collect()
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
    let _ = (received, flags);
    guard(PORTO_SOCKET_ERROR, || {
        if !routine.is_null() {
            return Err(Wsa(PORTO_WSAEOPNOTSUPP));
        }
        non_null(ov)?;
        // SAFETY: forwarded contract.
        let bufs = unsafe { wsabufs(bufs, count) }?;
        let target = RecvTarget {
            bufs,
            from: 0,
            fromlen: 0,
        };
        tcp::recv(s, ov as u64, target)?;
        Err(Wsa(PORTO_WSA_IO_PENDING))
    })
}

/// Reads `count` WSABUFs as byte slices (empty ones skipped).
///
/// # Safety
/// `bufs` points to `count` `PORTO_WSABUF`s each readable for `len` bytes, for `'a`.
unsafe fn pieces<'a>(bufs: *const PORTO_WSABUF, count: u32) -> Result<Vec<&'a [u8]>, Wsa> {
    non_null(bufs)?;
    // SAFETY: `count` valid WSABUFs.
    let list = unsafe { std::slice::from_raw_parts(bufs, count as usize) };
    let mut out = Vec::with_capacity(list.len());
    for b in list {
        if b.len > 0 {
            non_null(b.buf)?;
            // SAFETY: `len` readable bytes at `buf` (the caller's contract).
            out.push(unsafe { std::slice::from_raw_parts(b.buf.cast_const(), b.len as usize) });
        }
    }
    Ok(out)
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
    let _ = (sent, flags);
    guard(PORTO_SOCKET_ERROR, || {
        if !routine.is_null() {
            return Err(Wsa(PORTO_WSAEOPNOTSUPP));
        }
        non_null(ov)?;
        // SAFETY: forwarded contract.
        let p = unsafe { pieces(bufs, count) }?;
        tcp::send(s, ov as u64, &p)?;
        Err(Wsa(PORTO_WSA_IO_PENDING))
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
        tcp::accept_ex(listen_s, ov as u64, target)?;
        Err(Wsa(PORTO_WSA_IO_PENDING))
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
        tcp::connect_ex(s, ov as u64, to, &[data])?;
        Err(Wsa(PORTO_WSA_IO_PENDING))
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
        tcp::disconnect_ex(s, ov as u64, flags)?;
        Err(Wsa(PORTO_WSA_IO_PENDING))
    })
}

/// `setsockopt`: `SOL_SOCKET` with `PORTO_SO_UPDATE_ACCEPT_CONTEXT` or
/// `PORTO_SO_UPDATE_CONNECT_CONTEXT` succeeds (the accepted or connected socket already has
/// its context here); other options are `PORTO_WSAENOPROTOOPT` (set them through the Rust
/// API's `SocketOptions`).
#[no_mangle]
pub extern "C" fn porto_setsockopt(s: PORTO_SOCKET, level: i32, name: i32, value: *const c_void, len: i32) -> i32 {
    let _ = (value, len);
    guard(PORTO_SOCKET_ERROR, || {
        crate::state::local_addr(s).map(|_| ()).or_else(|Wsa(e)| match e {
            PORTO_WSAEINVAL => Ok(()),
            e => Err(Wsa(e)),
        })?;
        if level == libc::SOL_SOCKET && matches!(name, PORTO_SO_UPDATE_ACCEPT_CONTEXT | PORTO_SO_UPDATE_CONNECT_CONTEXT)
        {
            Ok(0)
        } else {
            Err(Wsa(PORTO_WSAENOPROTOOPT))
        }
    })
}
