//! BSD-style blocking calls beside the overlapped ones: `porto_sendto`, `porto_send`,
//! `porto_recvfrom`, `porto_recv`, `porto_connect`, `porto_accept`, `porto_ioctlsocket`,
//! `porto_WSAPoll`, `porto_select` (with `PORTO_FD_SET` and friends). The work is in `bsd`
//! (safe); here C's buffers, addresses and sets are read and written.

#![allow(unsafe_code)]

use std::ffi::c_char;
use std::time::Duration;

use crate::abi::{guard, non_null, read_sockaddr, write_sockaddr};
use crate::bsd::{self, Ask};
use crate::codes::*;
use crate::state::Wsa;

/// `WSAPOLLFD`: a socket, the events asked (`PORTO_POLLRDNORM`, `PORTO_POLLWRNORM`, …) and
/// those that came.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_WSAPOLLFD {
    pub fd: PORTO_SOCKET,
    pub events: i16,
    pub revents: i16,
}

/// `fd_set` as Windows has it: a count and an array of sockets (not a bit mask). Use
/// `PORTO_FD_ZERO`, `PORTO_FD_SET`, `PORTO_FD_CLR`, `PORTO_FD_ISSET`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_FD_SET {
    pub fd_count: u32,
    pub fd_array: [PORTO_SOCKET; PORTO_FD_SETSIZE as usize],
}

/// `timeval` as Windows has it (32-bit fields).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_TIMEVAL {
    pub tv_sec: i32,
    pub tv_usec: i32,
}

/// The bytes at `buf` (`len` of them; `WSAEFAULT` for NULL with a length, `WSAEINVAL` for a
/// negative length).
///
/// # Safety
/// `buf` is valid for `len` bytes, or NULL with `len` 0.
unsafe fn bytes<'a>(buf: *const c_char, len: i32) -> Result<&'a [u8], Wsa> {
    let len = usize::try_from(len).map_err(|_| Wsa(PORTO_WSAEINVAL))?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-NULL, `len` readable bytes (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts(non_null(buf)?.cast::<u8>(), len) })
}

/// As [`bytes`], writable.
///
/// # Safety
/// `buf` is writable for `len` bytes, or NULL with `len` 0.
unsafe fn bytes_mut<'a>(buf: *mut c_char, len: i32) -> Result<&'a mut [u8], Wsa> {
    let len = usize::try_from(len).map_err(|_| Wsa(PORTO_WSAEINVAL))?;
    if len == 0 {
        return Ok(&mut []);
    }
    non_null(buf)?;
    // SAFETY: non-NULL, `len` writable bytes (the caller's contract).
    Ok(unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), len) })
}

/// Flags other than 0 (`MSG_PEEK`, `MSG_OOB`, …) are not supported.
fn no_flags(flags: i32) -> Result<(), Wsa> {
    if flags == 0 {
        Ok(())
    } else {
        Err(Wsa(PORTO_WSAEOPNOTSUPP))
    }
}

/// `sendto`, blocking (within `SO_SNDTIMEO`; in non-blocking mode `PORTO_WSAEWOULDBLOCK`
/// instead of waiting): the bytes sent, or `PORTO_SOCKET_ERROR`. UDP: one datagram to `to`
/// (an unbound socket is bound first, as Windows does); TCP: all of `buf` on the connection
/// (`to` ignored). `flags` must be 0. A `closesocket` from another thread ends the wait with
/// `PORTO_WSAEINTR`. Any thread.
///
/// # Safety
/// `buf` readable for `len` bytes; `to` NULL or readable for `tolen`.
#[no_mangle]
pub unsafe extern "C" fn porto_sendto(
    s: PORTO_SOCKET,
    buf: *const c_char,
    len: i32,
    flags: i32,
    to: *const libc::sockaddr,
    tolen: i32,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        no_flags(flags)?;
        // SAFETY: the caller's contract.
        let data = unsafe { bytes(buf, len)? };
        let to = if to.is_null() {
            None
        } else {
            // SAFETY: the caller's contract.
            Some(unsafe { read_sockaddr(to, tolen)? })
        };
        bsd::send_to(s, data, to).map(|n| i32::try_from(n).unwrap_or(i32::MAX))
    })
}

/// `send`: `porto_sendto` without a destination (a connected TCP socket). Any thread.
///
/// # Safety
/// `buf` readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_send(s: PORTO_SOCKET, buf: *const c_char, len: i32, flags: i32) -> i32 {
    // SAFETY: forwarded contract; no destination.
    unsafe { porto_sendto(s, buf, len, flags, std::ptr::null(), 0) }
}

/// `recvfrom`, blocking (within `SO_RCVTIMEO`; non-blocking: `PORTO_WSAEWOULDBLOCK`): the
/// bytes received (0 on TCP: the peer closed), the sender into `from`/`fromlen` if given.
/// A datagram longer than `len` fills `buf` and fails `PORTO_WSAEMSGSIZE` (the rest is
/// discarded, as on Windows); an unbound UDP socket `PORTO_WSAEINVAL`; an unconnected TCP
/// one `PORTO_WSAENOTCONN`. `flags` must be 0. Do not mix with overlapped receives on the
/// same socket (each datagram goes to one of them). Any thread.
///
/// # Safety
/// `buf` writable for `len` bytes; `from`/`fromlen` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn porto_recvfrom(
    s: PORTO_SOCKET,
    buf: *mut c_char,
    len: i32,
    flags: i32,
    from: *mut libc::sockaddr,
    fromlen: *mut i32,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        no_flags(flags)?;
        // SAFETY: the caller's contract.
        let b = unsafe { bytes_mut(buf, len)? };
        let (n, peer) = bsd::recv_from(s, b)?;
        if let (Some(peer), false) = (peer, from.is_null()) {
            // SAFETY: the caller's contract.
            unsafe { write_sockaddr(peer, from, fromlen)? };
        }
        Ok(i32::try_from(n).unwrap_or(i32::MAX))
    })
}

/// `recv`: `porto_recvfrom` without the sender. Any thread.
///
/// # Safety
/// `buf` writable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_recv(s: PORTO_SOCKET, buf: *mut c_char, len: i32, flags: i32) -> i32 {
    // SAFETY: forwarded contract; no address out.
    unsafe { porto_recvfrom(s, buf, len, flags, std::ptr::null_mut(), std::ptr::null_mut()) }
}

/// `connect` on a TCP socket (bound or not), blocking (within `SO_SNDTIMEO` if set, else
/// the kernel's own retries): 0 or `PORTO_SOCKET_ERROR` (`PORTO_WSAECONNREFUSED`,
/// `PORTO_WSAETIMEDOUT`, `PORTO_WSAEISCONN`, …; after a failure close the socket, as on
/// Windows). In non-blocking mode, and on UDP, `PORTO_WSAEOPNOTSUPP`: `ConnectEx` is the
/// asynchronous connect. Holds the socket while it connects. Any thread.
///
/// # Safety
/// `name` readable for `namelen` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_connect(s: PORTO_SOCKET, name: *const libc::sockaddr, namelen: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        // SAFETY: the caller's contract.
        let to = unsafe { read_sockaddr(name, namelen)? };
        bsd::connect(s, to).map(|()| 0)
    })
}

/// `accept` on a listening socket, blocking (within `SO_RCVTIMEO`; non-blocking:
/// `PORTO_WSAEWOULDBLOCK`): a new connected socket (associate it with a port to use
/// overlapped calls on it) and the peer into `addr`/`addrlen` if given;
/// `PORTO_INVALID_SOCKET` on failure. Any thread.
///
/// # Safety
/// `addr`/`addrlen` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn porto_accept(s: PORTO_SOCKET, addr: *mut libc::sockaddr, addrlen: *mut i32) -> PORTO_SOCKET {
    guard(PORTO_INVALID_SOCKET, || {
        let (new, peer) = bsd::accept(s)?;
        if let (Some(peer), false) = (peer, addr.is_null()) {
            // SAFETY: the caller's contract.
            unsafe { write_sockaddr(peer, addr, addrlen)? };
        }
        Ok(new)
    })
}

/// `ioctlsocket`: `PORTO_FIONBIO` (`*argp` non-zero: non-blocking mode for the blocking
/// calls, which then fail `PORTO_WSAEWOULDBLOCK` instead of waiting; overlapped calls are
/// unaffected) or `PORTO_FIONREAD` (`*argp` = bytes waiting; UDP: the next datagram's
/// length). Other commands `PORTO_WSAEINVAL`. 0 or `PORTO_SOCKET_ERROR`. Any thread.
///
/// # Safety
/// `argp` valid.
#[no_mangle]
pub unsafe extern "C" fn porto_ioctlsocket(s: PORTO_SOCKET, cmd: u32, argp: *mut u32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        let argp = non_null(argp)?.cast_mut();
        match cmd {
            // SAFETY: `argp` valid (the caller's contract).
            PORTO_FIONBIO => bsd::set_nonblocking(s, unsafe { argp.read_unaligned() } != 0)?,
            PORTO_FIONREAD => {
                let n = bsd::readable(s)?;
                // SAFETY: as above.
                unsafe { argp.write_unaligned(n) };
            }
            _ => return Err(Wsa(PORTO_WSAEINVAL)),
        }
        Ok(0)
    })
}

/// `WSAPoll`: waits up to `timeout_ms` (negative: for ever; 0: not at all) until one of the
/// `n` sockets is ready as asked (`PORTO_POLLRDNORM`/`PORTO_POLLIN`, `PORTO_POLLWRNORM`/
/// `PORTO_POLLOUT`); `revents` gets `PORTO_POLLRDNORM`, `PORTO_POLLWRNORM`, `PORTO_POLLERR`,
/// `PORTO_POLLHUP`, or `PORTO_POLLNVAL` (no such socket, or closed meanwhile); a socket with
/// nothing to wait on yet (UDP unbound, TCP neither listening nor connected) is never ready.
/// Returns how many have `revents`, 0 on
/// timeout, `PORTO_SOCKET_ERROR`. Readiness is the kernel socket's: an overlapped receive may
/// take the data first. Any thread.
///
/// # Safety
/// `fds` points to `n` writable entries.
#[no_mangle]
pub unsafe extern "C" fn porto_WSAPoll(fds: *mut PORTO_WSAPOLLFD, n: u32, timeout_ms: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        let fds = non_null(fds)?.cast_mut();
        // SAFETY: `n` writable entries (the caller's contract).
        let fds = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
        let mut asks: Vec<Ask> = fds
            .iter()
            .map(|f| Ask {
                h: f.fd,
                read: f.events & (PORTO_POLLRDNORM | PORTO_POLLRDBAND) != 0,
                write: f.events & (PORTO_POLLWRNORM | PORTO_POLLWRBAND) != 0,
                ..Ask::default()
            })
            .collect();
        let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
        let ready = bsd::poll(&mut asks, timeout)?;
        for (f, a) in fds.iter_mut().zip(&asks) {
            let mut r = 0;
            for (on, bit) in [
                (a.found.readable && a.read, PORTO_POLLRDNORM),
                (a.found.writable && a.write, PORTO_POLLWRNORM),
                (a.found.error, PORTO_POLLERR),
                (a.found.hangup, PORTO_POLLHUP),
                (a.invalid, PORTO_POLLNVAL),
            ] {
                if on {
                    r |= bit;
                }
            }
            f.revents = r;
        }
        Ok(i32::try_from(ready).unwrap_or(i32::MAX))
    })
}

/// `select` over Windows-style sets (`nfds` ignored, as on Windows): waits up to `timeout`
/// (NULL: for ever) until a socket of `read` is readable (or, listening, has a connection),
/// of `write` writable, or of `except` in error; each set is left holding its ready sockets.
/// Returns their total, 0 on timeout, `PORTO_SOCKET_ERROR` (`PORTO_WSAEINVAL`: all sets empty
/// or a count above `PORTO_FD_SETSIZE`; `PORTO_WSAENOTSOCK`: a handle that is no socket, or
/// was closed meanwhile). Any thread.
///
/// # Safety
/// Each set NULL or valid; `timeout` NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn porto_select(
    _nfds: i32,
    read: *mut PORTO_FD_SET,
    write: *mut PORTO_FD_SET,
    except: *mut PORTO_FD_SET,
    timeout: *const PORTO_TIMEVAL,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        // Each set is read into a copy and written back at the end: C may pass one set twice,
        // which two live references could not be.
        let ptrs = [read, write, except];
        let mut sets: [Option<PORTO_FD_SET>; 3] = ptrs.map(|p| {
            // SAFETY: each set NULL or valid (the caller's contract).
            (!p.is_null()).then(|| unsafe { p.read_unaligned() })
        });
        let mut asks: Vec<(usize, Ask)> = Vec::new();
        for (k, set) in sets.iter().enumerate() {
            let Some(set) = set else { continue };
            let n = set.fd_count as usize;
            let fds = set.fd_array.get(..n).ok_or(Wsa(PORTO_WSAEINVAL))?;
            asks.extend(fds.iter().map(|&h| {
                (
                    k,
                    Ask {
                        h,
                        read: k == 0,
                        write: k == 1,
                        ..Ask::default()
                    },
                )
            }));
        }
        if asks.is_empty() {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        let timeout = if timeout.is_null() {
            None
        } else {
            // SAFETY: non-NULL and valid (the caller's contract).
            let t = unsafe { timeout.read_unaligned() };
            let us = i64::from(t.tv_sec) * 1_000_000 + i64::from(t.tv_usec);
            Some(Duration::from_micros(
                u64::try_from(us).map_err(|_| Wsa(PORTO_WSAEINVAL))?,
            ))
        };
        let mut plain: Vec<Ask> = asks.iter().map(|(_, a)| *a).collect();
        bsd::poll(&mut plain, timeout)?;
        if plain.iter().any(|a| a.invalid) {
            return Err(Wsa(PORTO_WSAENOTSOCK));
        }
        let mut total = 0;
        for set in sets.iter_mut().flatten() {
            set.fd_count = 0;
        }
        for ((k, _), a) in asks.iter().zip(&plain) {
            let ready = match k {
                0 => a.found.readable || a.found.hangup || a.found.error,
                1 => a.found.writable,
                _ => a.found.error,
            };
            if let (true, Some(set)) = (ready, sets[*k].as_mut()) {
                let i = set.fd_count as usize;
                set.fd_array[i] = a.h;
                set.fd_count += 1;
                total += 1;
            }
        }
        for (p, set) in ptrs.iter().zip(&sets) {
            if let Some(set) = set {
                // SAFETY: non-NULL and valid (read above; the caller's contract).
                unsafe { p.write_unaligned(*set) };
            }
        }
        Ok(total)
    })
}

/// `__WSAFDIsSet` (what `PORTO_FD_ISSET` calls): non-zero if `s` is in `set`.
///
/// # Safety
/// `set` valid.
#[no_mangle]
pub unsafe extern "C" fn porto___WSAFDIsSet(s: PORTO_SOCKET, set: *const PORTO_FD_SET) -> i32 {
    // SAFETY: the caller's contract (NULL: not set).
    let Some(set) = (unsafe { set.as_ref() }) else { return 0 };
    let n = (set.fd_count as usize).min(set.fd_array.len());
    i32::from(set.fd_array[..n].contains(&s))
}

/// `FD_SET` (what `PORTO_FD_SET` calls): adds `s` if absent and there is room.
///
/// # Safety
/// `set` valid.
#[no_mangle]
pub unsafe extern "C" fn porto_FD_SET(s: PORTO_SOCKET, set: *mut PORTO_FD_SET) {
    // SAFETY: the caller's contract (NULL: nothing).
    let Some(set) = (unsafe { set.as_mut() }) else { return };
    let n = (set.fd_count as usize).min(set.fd_array.len());
    if !set.fd_array[..n].contains(&s) && n < set.fd_array.len() {
        set.fd_array[n] = s;
        set.fd_count = n as u32 + 1;
    }
}

/// `FD_CLR` (what `PORTO_FD_CLR` calls): removes `s`, keeping the others in order.
///
/// # Safety
/// `set` valid.
#[no_mangle]
pub unsafe extern "C" fn porto_FD_CLR(s: PORTO_SOCKET, set: *mut PORTO_FD_SET) {
    // SAFETY: the caller's contract (NULL: nothing).
    let Some(set) = (unsafe { set.as_mut() }) else { return };
    let n = (set.fd_count as usize).min(set.fd_array.len());
    if let Some(i) = set.fd_array[..n].iter().position(|&x| x == s) {
        set.fd_array.copy_within(i + 1..n, i);
        set.fd_count = n as u32 - 1;
    }
}

/// `socket`: as `porto_WSASocket(af, type, protocol, NULL, 0, WSA_FLAG_OVERLAPPED)` — on
/// Windows `socket()` makes an overlapped-capable socket too. (A program renamed to porto
/// that kept libc's `socket()` got a kernel fd porto then refused.)
#[no_mangle]
pub extern "C" fn porto_socket(af: i32, ty: i32, protocol: i32) -> PORTO_SOCKET {
    guard(PORTO_INVALID_SOCKET, || crate::state::socket(af, ty, protocol))
}

/// `getpeername`: the connected peer; `PORTO_WSAENOTCONN` on a socket with none.
///
/// # Safety
/// `name` is writable for `*namelen` bytes; `namelen` valid.
#[no_mangle]
pub unsafe extern "C" fn porto_getpeername(s: PORTO_SOCKET, name: *mut libc::sockaddr, namelen: *mut i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        let peer = bsd::peer(s)?;
        // SAFETY: the caller's contract.
        unsafe { write_sockaddr(peer, name, namelen) }.map(|()| 0)
    })
}

/// `shutdown(s, how)`: `PORTO_SD_RECEIVE`, `PORTO_SD_SEND` or `PORTO_SD_BOTH`;
/// `PORTO_WSAENOTCONN` on a socket not connected, `PORTO_WSAEINVAL` for another `how`.
#[no_mangle]
pub extern "C" fn porto_shutdown(s: PORTO_SOCKET, how: i32) -> i32 {
    guard(PORTO_SOCKET_ERROR, || bsd::shutdown(s, how).map(|()| 0))
}

/// `WSAAccept`'s condition function (`LPCONDITIONPROC`): caller id and data, the QOS
/// pointers (NULL here), callee id and data, the group (0), and the callback data; returns
/// `PORTO_CF_ACCEPT`, `PORTO_CF_REJECT` or `PORTO_CF_DEFER`.
#[allow(non_camel_case_types)]
pub type PORTO_LPCONDITIONPROC = Option<
    unsafe extern "C" fn(
        *mut crate::abi::PORTO_WSABUF,
        *mut crate::abi::PORTO_WSABUF,
        *mut core::ffi::c_void,
        *mut core::ffi::c_void,
        *mut crate::abi::PORTO_WSABUF,
        *mut crate::abi::PORTO_WSABUF,
        *mut u32,
        usize,
    ) -> i32,
>;

/// `WSAAccept`: `porto_accept`, with an optional condition function that sees the caller's
/// address (`lpCallerId`: its sockaddr) and this socket's (`lpCalleeId`) and decides:
/// `PORTO_CF_ACCEPT` returns the connection; `PORTO_CF_REJECT` closes it and fails with
/// `PORTO_WSAECONNREFUSED`; `PORTO_CF_DEFER` fails with `PORTO_WSATRY_AGAIN` and keeps the
/// connection for the next `WSAAccept` on this socket, which offers it to the condition
/// again first (Linux accepts before the condition runs, so a refused peer sees its
/// connection accepted and closed rather than refused).
///
/// # Safety
/// `addr`/`addrlen` are NULL or valid; `condition` is NULL or a valid function.
#[no_mangle]
pub unsafe extern "C" fn porto_WSAAccept(
    s: PORTO_SOCKET,
    addr: *mut libc::sockaddr,
    addrlen: *mut i32,
    condition: PORTO_LPCONDITIONPROC,
    callback_data: usize,
) -> PORTO_SOCKET {
    guard(PORTO_INVALID_SOCKET, || {
        let (new, peer) = bsd::accept_next(s)?;
        if let Some(cond) = condition {
            let local = crate::state::local_addr(new).ok();
            let verdict = {
                let mut caller = SockaddrBuf::of(peer);
                let mut callee = SockaddrBuf::of(local);
                let mut group = 0u32;
                // SAFETY: the condition is the caller's function (its contract); every
                // pointer it is given lives across the call.
                unsafe {
                    cond(
                        caller.wsabuf(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                        callee.wsabuf(),
                        std::ptr::null_mut(),
                        &mut group,
                        callback_data,
                    )
                }
            };
            match verdict {
                PORTO_CF_ACCEPT => {}
                PORTO_CF_DEFER => {
                    bsd::defer(s, new, peer);
                    return Err(Wsa(PORTO_WSATRY_AGAIN));
                }
                _ => {
                    let _ = crate::state::close_socket(new);
                    return Err(Wsa(PORTO_WSAECONNREFUSED));
                }
            }
        }
        if let (Some(peer), false) = (peer, addr.is_null()) {
            // SAFETY: the caller's contract.
            unsafe { write_sockaddr(peer, addr, addrlen)? };
        }
        Ok(new)
    })
}

/// An address as `WSAAccept`'s condition sees it: a `WSABUF` over a sockaddr.
struct SockaddrBuf {
    storage: libc::sockaddr_storage,
    buf: crate::abi::PORTO_WSABUF,
}

impl SockaddrBuf {
    fn of(addr: Option<std::net::SocketAddr>) -> Box<SockaddrBuf> {
        let mut b = Box::new(SockaddrBuf {
            // SAFETY: all-zero is a valid sockaddr_storage.
            storage: unsafe { std::mem::zeroed() },
            buf: crate::abi::PORTO_WSABUF {
                len: 0,
                buf: std::ptr::null_mut(),
            },
        });
        if let Some(a) = addr {
            let mut len = std::mem::size_of::<libc::sockaddr_storage>() as i32;
            let p = (&mut b.storage as *mut libc::sockaddr_storage).cast::<libc::sockaddr>();
            // SAFETY: `storage` is writable for `len` bytes.
            if unsafe { write_sockaddr(a, p, &mut len) }.is_ok() {
                b.buf = crate::abi::PORTO_WSABUF {
                    len: len as u32,
                    buf: p.cast(),
                };
            }
        }
        b
    }

    fn wsabuf(&mut self) -> *mut crate::abi::PORTO_WSABUF {
        if self.buf.buf.is_null() {
            std::ptr::null_mut()
        } else {
            &mut self.buf
        }
    }
}
