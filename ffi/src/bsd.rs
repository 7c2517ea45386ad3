//! BSD-style blocking calls beside the overlapped ones, as Winsock keeps them, in safe Rust:
//! `sendto`/`send`, `recvfrom`/`recv`, `connect`, `accept`, `ioctlsocket` (`FIONBIO`,
//! `FIONREAD`), `WSAPoll` and `select`, with `SO_RCVTIMEO`/`SO_SNDTIMEO` and non-blocking
//! mode per socket.
//!
//! A blocking call never holds its socket's lock while it waits: it waits on a shared handle
//! of the engine socket (`SocketCore::share`, which keeps the kernel socket open), in slices,
//! and between slices checks that the handle is still open — so `closesocket` from another
//! thread ends it with `WSAEINTR`, as on Windows, instead of waiting for it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codes::*;
use crate::state::{self, Obj, Sock, SockState, Wsa};
use porto::{Error, PollFd, Readiness, SocketCore, TcpStream};

/// How long a blocking call waits before looking whether its socket was closed.
const SLICE: Duration = Duration::from_millis(50);

/// A socket's settings for blocking calls.
#[derive(Debug, Default)]
pub(crate) struct Blocking {
    /// `ioctlsocket(FIONBIO, 1)`: calls that would wait fail `WSAEWOULDBLOCK` instead.
    nonblocking: AtomicBool,
    /// `SO_RCVTIMEO` / `SO_SNDTIMEO` in ms (0: wait for ever, Windows' default).
    recv_ms: AtomicU32,
    send_ms: AtomicU32,
}

/// Which way a call waits (its timeout).
#[derive(Clone, Copy, Debug)]
enum Dir {
    Recv,
    Send,
}

/// `SO_RCVTIMEO` (`recv`) or `SO_SNDTIMEO` set to `ms` (0: no limit).
pub(crate) fn set_timeout(h: u64, recv: bool, ms: u32) -> Result<(), Wsa> {
    let s = state::sock(h)?;
    let t = if recv { &s.bsd.recv_ms } else { &s.bsd.send_ms };
    t.store(ms, Ordering::Relaxed);
    Ok(())
}

/// `SO_RCVTIMEO` / `SO_SNDTIMEO` in ms.
pub(crate) fn timeout(h: u64, recv: bool) -> Result<u32, Wsa> {
    let s = state::sock(h)?;
    let t = if recv { &s.bsd.recv_ms } else { &s.bsd.send_ms };
    Ok(t.load(Ordering::Relaxed))
}

/// Runs blocking call `f` on `core` (socket `h`, `s`) until it ends: in slices, each ending
/// `TimedOut`, until the socket's timeout (`WSAETIMEDOUT`) or its close (`WSAEINTR`); at once
/// in non-blocking mode (`WSAEWOULDBLOCK`).
fn wait<T>(
    h: u64,
    s: &Arc<Sock>,
    dir: Dir,
    core: &SocketCore,
    mut f: impl FnMut(&SocketCore, Option<Duration>) -> Result<T, Error>,
) -> Result<T, Wsa> {
    if s.bsd.nonblocking.load(Ordering::Relaxed) {
        return f(core, Some(Duration::ZERO)).map_err(|e| match e {
            Error::TimedOut => Wsa(PORTO_WSAEWOULDBLOCK),
            e => Wsa::from(e),
        });
    }
    let ms = match dir {
        Dir::Recv => s.bsd.recv_ms.load(Ordering::Relaxed),
        Dir::Send => s.bsd.send_ms.load(Ordering::Relaxed),
    };
    let deadline = (ms > 0).then(|| Instant::now() + Duration::from_millis(u64::from(ms)));
    loop {
        let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        match f(core, Some(slice)) {
            Err(Error::TimedOut) => {
                if !state::sock(h).is_ok_and(|now| Arc::ptr_eq(&now, s)) {
                    return Err(Wsa(PORTO_WSAEINTR));
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(Wsa(PORTO_WSAETIMEDOUT));
                }
            }
            r => return r.map_err(Wsa::from),
        }
    }
}

/// `sendto` (`to`: a datagram's destination; ignored on a connected TCP socket, as on
/// Windows) / `send`: the bytes sent (a stream: all of them). An unbound UDP socket is bound
/// to the unspecified address first; an unconnected TCP one is `WSAENOTCONN`.
pub(crate) fn send_to(h: u64, data: &[u8], to: Option<SocketAddr>) -> Result<usize, Wsa> {
    let s = state::sock(h)?;
    let core = state::open_core(h, true, false, |c| Ok(c.share())).map_err(not_conn(&s))?;
    let to = if s.stream { None } else { to };
    // A stream send goes on from where the last slice left it (never a byte twice); in
    // non-blocking mode what went at once is the result, as on Windows.
    let mut sent = 0;
    wait(h, &s, Dir::Send, &core, |c, t| {
        sent += c.send_blocking(&data[sent..], to, t)?;
        if s.stream && sent < data.len() && t != Some(Duration::ZERO) {
            Err(Error::TimedOut)
        } else {
            Ok(sent)
        }
    })
}

/// `recvfrom` / `recv`: one datagram and its sender (one longer than `buf`: `WSAEMSGSIZE`,
/// `buf` filled), or what a TCP connection has (0: the peer closed). An unbound UDP socket
/// is `WSAEINVAL` (as on Windows); an unconnected TCP one `WSAENOTCONN`.
pub(crate) fn recv_from(h: u64, buf: &mut [u8]) -> Result<(usize, Option<SocketAddr>), Wsa> {
    let s = state::sock(h)?;
    let core = state::open_core(h, false, false, |c| Ok(c.share())).map_err(not_conn(&s))?;
    wait(h, &s, Dir::Recv, &core, |c, t| c.recv_blocking(buf, t))
}

/// A TCP socket with no connection: `WSAENOTCONN` instead of `WSAEINVAL`.
fn not_conn(s: &Sock) -> impl Fn(Wsa) -> Wsa + '_ {
    move |e| match e {
        Wsa(PORTO_WSAEINVAL) if s.stream => Wsa(PORTO_WSAENOTCONN),
        e => e,
    }
}

/// `connect` (TCP): connects the socket (bound or not) within its send timeout (none: the
/// kernel's own SYN retries), holding the socket meanwhile. Non-blocking mode is
/// `WSAEOPNOTSUPP` (`ConnectEx` is the asynchronous connect); UDP `WSAEOPNOTSUPP`.
pub(crate) fn connect(h: u64, to: SocketAddr) -> Result<(), Wsa> {
    let s = state::sock(h)?;
    if !s.stream {
        return connect_datagram(h, &s, to);
    }
    if s.bsd.nonblocking.load(Ordering::Relaxed) {
        return Err(Wsa(PORTO_WSAEOPNOTSUPP));
    }
    if to.is_ipv6() != s.v6 {
        return Err(Wsa(PORTO_WSAEAFNOSUPPORT));
    }
    let ms = s.bsd.send_ms.load(Ordering::Relaxed);
    let timeout = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
    let shard = state::next_shard()?;
    let mut st = state::lock(&s);
    match std::mem::replace(&mut *st, SockState::Unbound) {
        SockState::TcpIdle { fd, assoc } => {
            let to_port = crate::tcp::delivery(&assoc).unwrap_or_else(crate::tcp::nowhere);
            let made = match fd {
                Some(bound) => TcpStream::connect_fd_blocking(&shard, bound.into(), to, timeout, to_port),
                None => TcpStream::connect_blocking(&shard, to, timeout, to_port),
            };
            match made {
                Ok(stream) => {
                    s.apply_early_opts(std::os::fd::AsRawFd::as_raw_fd(stream.core()))?;
                    *st = SockState::Stream { stream, assoc };
                    Ok(())
                }
                Err(e) => {
                    // The kernel socket is spent (as on Windows, close it and make another).
                    *st = SockState::TcpIdle { fd: None, assoc };
                    Err(state::setup(e))
                }
            }
        }
        other => {
            let connected = matches!(other, SockState::Stream { .. });
            *st = other;
            Err(Wsa(if connected { PORTO_WSAEISCONN } else { PORTO_WSAEINVAL }))
        }
    }
}

/// `connect` on UDP: a default peer — sends without an address (`send`, `WSASend`,
/// `RIOSend`) go there and only its datagrams are received. An unbound socket is bound to
/// the unspecified address first, as Windows binds implicitly.
fn connect_datagram(h: u64, s: &Sock, to: SocketAddr) -> Result<(), Wsa> {
    if to.is_ipv6() != s.v6 {
        return Err(Wsa(PORTO_WSAEAFNOSUPPORT));
    }
    state::open_core(h, true, false, |c| c.connect_datagram(to).map_err(Wsa::from))?;
    *s.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(to);
    Ok(())
}

/// `accept`: the next connection as a new socket (not associated) and its peer.
pub(crate) fn accept(h: u64) -> Result<(u64, Option<SocketAddr>), Wsa> {
    let s = state::sock(h)?;
    let core = state::open_core(h, false, true, |c| Ok(c.share()))?;
    let (fd, peer) = wait(h, &s, Dir::Recv, &core, |c, t| c.accept_blocking(t))?;
    let stream = TcpStream::adopt(&state::next_shard()?, fd, crate::tcp::nowhere()).map_err(state::setup)?;
    let new = state::insert(Obj::Sock(Arc::new(Sock::new(
        s.v6,
        true,
        SockState::Stream { stream, assoc: None },
    ))))?;
    Ok((new, peer))
}

/// Connections a `WSAAccept` condition deferred, per listening socket, offered again first.
static DEFERRED: std::sync::Mutex<Vec<(u64, u64, Option<SocketAddr>)>> = std::sync::Mutex::new(Vec::new());

/// `WSAAccept`'s next connection: one its condition deferred on `h`, else a new one.
pub(crate) fn accept_next(h: u64) -> Result<(u64, Option<SocketAddr>), Wsa> {
    {
        let mut d = DEFERRED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = d.iter().position(|&(l, _, _)| l == h) {
            let (_, new, peer) = d.remove(i);
            return Ok((new, peer));
        }
    }
    accept(h)
}

/// Keeps connection `new` (of listener `h`) for its next `WSAAccept` (CF_DEFER).
pub(crate) fn defer(h: u64, new: u64, peer: Option<SocketAddr>) {
    DEFERRED.lock().unwrap_or_else(|e| e.into_inner()).push((h, new, peer));
}

/// `getpeername`: the connected peer, as the kernel has it.
pub(crate) fn peer(h: u64) -> Result<SocketAddr, Wsa> {
    state::with_core(h, |c| c.peer_addr().map_err(Wsa::from)).map_err(|e| {
        if e.0 == PORTO_WSAEINVAL {
            Wsa(PORTO_WSAENOTCONN)
        } else {
            e
        }
    })
}

/// `shutdown(how)`.
pub(crate) fn shutdown(h: u64, how: i32) -> Result<(), Wsa> {
    if !matches!(how, PORTO_SD_RECEIVE | PORTO_SD_SEND | PORTO_SD_BOTH) {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    let how = match how {
        PORTO_SD_RECEIVE => std::net::Shutdown::Read,
        PORTO_SD_SEND => std::net::Shutdown::Write,
        _ => std::net::Shutdown::Both,
    };
    state::with_core(h, |c| c.shutdown(how).map_err(Wsa::from)).map_err(|e| {
        if e.0 == PORTO_WSAEINVAL {
            Wsa(PORTO_WSAENOTCONN)
        } else {
            e
        }
    })
}

/// `ioctlsocket(FIONBIO)`.
pub(crate) fn set_nonblocking(h: u64, on: bool) -> Result<(), Wsa> {
    state::sock(h)?.bsd.nonblocking.store(on, Ordering::Relaxed);
    Ok(())
}

/// `ioctlsocket(FIONREAD)`: bytes waiting (UDP: the next datagram's length); 0 for a socket
/// with nothing to read from yet.
pub(crate) fn readable(h: u64) -> Result<u32, Wsa> {
    match state::open_core(h, false, false, |c| c.readable_bytes().map_err(Wsa::from)) {
        Ok(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        Err(Wsa(PORTO_WSAEINVAL)) => Ok(0),
        Err(e) => Err(e),
    }
}

/// One socket of a `WSAPoll` / `select`: what is asked, and what came — readiness, or
/// no such socket (`POLLNVAL`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Ask {
    pub h: u64,
    pub read: bool,
    pub write: bool,
    pub found: Readiness,
    pub invalid: bool,
}

/// `WSAPoll` / `select` over porto sockets: waits up to `timeout` (None: for ever) until one
/// is ready as asked; how many have something to report. A handle that is no socket (or is
/// closed, also while waiting: the wait goes in slices) reports `invalid` at once; a socket
/// with nothing to wait on yet (UDP not bound, TCP neither listening nor connected) is never
/// ready.
pub(crate) fn poll(asks: &mut [Ask], timeout: Option<Duration>) -> Result<usize, Wsa> {
    let mut cores = Vec::with_capacity(asks.len());
    for a in asks.iter_mut() {
        *a = Ask {
            h: a.h,
            read: a.read,
            write: a.write,
            ..Ask::default()
        };
        match state::open_core(a.h, false, true, |c| Ok(c.share())) {
            Ok(c) => cores.push(Some(c)),
            Err(Wsa(PORTO_WSAEINVAL)) => cores.push(None),
            Err(Wsa(PORTO_WSAENOTSOCK)) => {
                a.invalid = true;
                cores.push(None);
            }
            Err(e) => return Err(e),
        }
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let invalid = asks.iter().filter(|a| a.invalid).count();
        let slice = deadline.map_or(SLICE, |d| d.saturating_duration_since(Instant::now()).min(SLICE));
        let wait = if invalid > 0 { Duration::ZERO } else { slice };
        let live: Vec<(usize, &SocketCore)> = cores
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
            .collect();
        let mut fds: Vec<PollFd<'_>> = live
            .iter()
            .map(|&(i, c)| PollFd::new(c, asks[i].read, asks[i].write))
            .collect();
        let ready = if fds.is_empty() {
            std::thread::sleep(wait);
            0
        } else {
            porto::poll(&mut fds, Some(wait)).map_err(Wsa::from)?
        };
        for (f, &(i, _)) in fds.iter().zip(&live) {
            asks[i].found = f.found;
        }
        if ready + invalid > 0 {
            return Ok(asks.iter().filter(|a| a.found.any() || a.invalid).count());
        }
        // A socket closed while we waited.
        for (a, c) in asks.iter_mut().zip(cores.iter_mut()) {
            if state::sock(a.h).is_err() {
                a.invalid = true;
                *c = None;
            }
        }
        if asks.iter().all(|a| !a.invalid) && deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(0);
        }
    }
}
