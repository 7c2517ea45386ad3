//! TCP for C, in safe Rust: `listen`, `AcceptEx` (with its first receive and both addresses),
//! `ConnectEx` (with data), `WSARecv`, `WSASend`, `DisconnectEx` (`PORTO_TF_REUSE_SOCKET`), over
//! the engine's `TcpListener` / `TcpStream`. Operations Windows completes in one packet but
//! the engine runs in two steps carry their next step in the port's pending table and are
//! finished by [`finish`] when their completion is dequeued. Listeners and connections go on
//! the engine's shards round robin (a listener's accepted connections spread too); a send's
//! frames come from its connection's own shard's pool.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::codes::*;
use crate::state::{self, lock, sock, AcceptTarget, Assoc, Done, Out, Pending, Port, RecvTarget, SockState, Wsa};
use porto::{Completion, Delivery, Error, Gather, OpKind, ShardHandle, TcpListener, TcpStream};

/// The shard a new listener or connection goes on: the next, round robin (a listener's
/// connections spread over the shards too).
fn shard() -> Result<ShardHandle, Wsa> {
    state::next_shard()
}

pub(crate) fn delivery(a: &Assoc) -> Option<Delivery> {
    a.as_ref().map(|(p, key)| Delivery::Port {
        port: p.port.clone(),
        key: *key,
    })
}

/// Where completions go before the application associates the socket: a port nobody reads
/// (no operation can be issued before then: every overlapped call needs the association).
pub(crate) fn nowhere() -> Delivery {
    Delivery::Port {
        port: porto::CompletionPort::new(1, 1),
        key: 0,
    }
}

/// `listen`: the bound socket listens (open on a shard now, as Windows accepts connections
/// into the backlog from here on).
pub(crate) fn listen(h: u64, backlog: i32) -> Result<(), Wsa> {
    let s = sock(h)?;
    let mut st = lock(&s);
    match std::mem::replace(&mut *st, SockState::Unbound) {
        SockState::TcpIdle { fd: Some(fd), assoc } => {
            let to = delivery(&assoc).unwrap_or_else(nowhere);
            match TcpListener::adopt(&shard()?, fd.into(), backlog.max(1), to) {
                Ok(lst) => {
                    *st = SockState::Listener { lst, assoc };
                    Ok(())
                }
                Err(e) => {
                    // The socket is consumed by the failed listen: it stays made, unbound.
                    *st = SockState::TcpIdle { fd: None, assoc };
                    Err(state::setup(e))
                }
            }
        }
        other => {
            let listening = matches!(other, SockState::Listener { .. });
            *st = other;
            // Listening twice is allowed (Windows changes the backlog); unbound or not TCP
            // is WSAEINVAL.
            if listening {
                Ok(())
            } else if s.stream {
                Err(Wsa(PORTO_WSAEINVAL))
            } else {
                Err(Wsa(PORTO_WSAEOPNOTSUPP))
            }
        }
    }
}

/// `AcceptEx(listener, accept, …)`: the next connection becomes `target.accept`.
pub(crate) fn accept_ex(h: u64, token: u64, target: AcceptTarget) -> Result<(), Wsa> {
    let a = sock(target.accept)?;
    if !a.stream || !matches!(*lock(&a), SockState::TcpIdle { fd: None, .. }) {
        // Windows wants a fresh (or reused) socket, neither bound nor connected.
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    let need = if a.v6 { 28 } else { 16 } + 16;
    if target.laddrlen < need || target.raddrlen < need {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    let s = sock(h)?;
    let st = lock(&s);
    let SockState::Listener {
        lst,
        assoc: Some((port, _)),
    } = &*st
    else {
        return Err(Wsa(PORTO_WSAEINVAL));
    };
    port.expect(token, Pending::Accept(target))?;
    lst.accept(token).map_err(|r| {
        port.forget(token);
        Wsa::from(r.error)
    })
}

/// The stream of an associated connection, or `WSAENOTCONN` / `WSAEINVAL`.
fn with_stream<T>(h: u64, f: impl FnOnce(&TcpStream, &Arc<Port>) -> Result<T, Wsa>) -> Result<T, Wsa> {
    let s = sock(h)?;
    let st = lock(&s);
    match &*st {
        SockState::Stream {
            stream,
            assoc: Some((port, _)),
        } => f(stream, port),
        SockState::Stream { assoc: None, .. } => Err(Wsa(PORTO_WSAEINVAL)),
        _ if s.stream => Err(Wsa(PORTO_WSAENOTCONN)),
        _ => Err(Wsa(PORTO_WSAEOPNOTSUPP)),
    }
}

/// `WSARecv`: reads at most what `target`'s buffers hold; copied into them at dequeue.
pub(crate) fn recv(h: u64, token: u64, mut target: RecvTarget) -> Result<(), Wsa> {
    target.counted = Some(sock(h)?.recvs.count());
    let room: usize = target.bufs.iter().map(|b| b.1).sum();
    let max = u32::try_from(room).unwrap_or(u32::MAX);
    if max == 0 {
        // A zero-byte WSARecv: completes with 0 bytes once data is waiting (or the peer
        // closed), taking none and holding no buffer — servers with many idle connections
        // post these, then receive into a buffer of their own.
        return with_stream(h, |stream, port| {
            port.expect(token, Pending::Recv(target))?;
            stream.wait_readable(token, None).map_err(|r| {
                port.forget(token);
                Wsa::from(r.error)
            })
        });
    }
    with_stream(h, |stream, port| {
        // A buffer larger than a frame is filled as far as the data goes (up to
        // RECV_FRAMES_MAX frames), as Windows fills it: one frame each time used to cut a 4 KB
        // message in two, and an echo server's two replies met Nagle and delayed ACKs (40 ms
        // a round trip).
        let pool = stream.core().pool();
        let frame = pool.frame_size() as usize;
        let frames = if room > frame {
            room.div_ceil(frame).min(RECV_FRAMES_MAX)
        } else {
            1
        };
        let mut g = Gather::with_capacity(frames);
        for _ in 1..frames {
            match pool.alloc() {
                Ok(b) => {
                    let _ = g.push(b);
                }
                Err(_) => break, // backpressure: fewer frames, not a failure
            }
        }
        port.expect(token, Pending::Recv(target))?;
        let r = if g.is_empty() {
            stream.recv_at_most(token, max, None)
        } else {
            if let Ok(b) = pool.alloc() {
                let _ = g.push(b);
            }
            stream.recv_scatter(g, token, None)
        };
        r.map_err(|r| {
            port.forget(token);
            Wsa::from(r.error)
        })
    })
}

/// Most pool frames one `WSARecv` fills (64 KiB of 2 KiB frames).
const RECV_FRAMES_MAX: usize = 32;

/// The caller's pieces copied into pool frames, grouped into gathers of up to `GATHER_MAX`
/// frames (one engine send each). `WSAENOBUFS` when the pool has not enough frames free.
pub(crate) fn gather(pool: &porto::Pool, pieces: &[&[u8]]) -> Result<Vec<Gather>, Wsa> {
    // Room for the frames the bytes need (a gather takes up to GATHER_MAX; more go in more).
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let frames = total.div_ceil(pool.frame_size() as usize).max(1);
    let mut parts = vec![Gather::with_capacity(frames)];
    let mut frame = None::<porto::Buf>;
    let push = |parts: &mut Vec<Gather>, b: porto::Buf| {
        if let Err(b) = parts.last_mut().expect("one at least").push(b) {
            let mut g = Gather::with_capacity(frames);
            // A fresh gather has room for one.
            let _ = g.push(b);
            parts.push(g);
        }
    };
    for p in pieces {
        let mut rest: &[u8] = p;
        while !rest.is_empty() {
            let b = match frame.as_mut() {
                Some(b) if b.len() < b.capacity() => b,
                _ => {
                    if let Some(full) = frame.take() {
                        push(&mut parts, full);
                    }
                    frame.insert(pool.alloc().map_err(Wsa::from)?)
                }
            };
            let at = b.len();
            let n = rest.len().min(b.capacity() - at);
            b.set_len(at + n);
            b[at..at + n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    if let Some(last) = frame {
        push(&mut parts, last);
    }
    Ok(parts)
}

/// Sends `parts` on `stream` with `token`, in order (the stream's write lane keeps them so):
/// one part as it is; more under a `SendParts` record, so one completion reports them all.
fn send_parts(stream: &TcpStream, port: &Port, token: u64, parts: Vec<Gather>) -> Result<(), Wsa> {
    let n = parts.len();
    if n > 1 {
        port.expect(
            token,
            Pending::SendParts {
                left: n,
                sent: 0,
                error: None,
            },
        )?;
    }
    for (i, g) in parts.into_iter().enumerate() {
        if let Err(r) = stream.send_gather(g, token) {
            if i == 0 {
                port.forget(token);
                return Err(Wsa::from(r.error));
            }
            // Some parts are out: they complete; the send reports this failure after them.
            if let Some(Pending::SendParts { left, error, .. }) = port.pending().get_mut(&token) {
                *left -= n - i;
                error.get_or_insert(r.error.wsa_code());
            }
            return Ok(());
        }
    }
    Ok(())
}

/// `WSASend`: the pieces are copied at the call (the caller's buffers are free at once) and
/// sent whole, in order with the connection's other sends; any length the pool can hold.
pub(crate) fn send(h: u64, token: u64, pieces: &[&[u8]]) -> Result<usize, Wsa> {
    let s = sock(h)?;
    if !s.stream {
        // WSASend on a UDP socket: to the peer `connect` set (WSAENOTCONN without one).
        let to = s.peer().ok_or(Wsa(PORTO_WSAENOTCONN))?;
        return state::send_to(h, token, pieces, to);
    }
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    with_stream(h, |stream, port| {
        // Frames of the pool of the connection's own shard.
        let parts = gather(stream.core().pool(), pieces)?;
        send_parts(stream, port, token, parts).map(|()| total)
    })
}

/// `ConnectEx`: the bound, associated socket connects to `to`, then sends `data` (if any);
/// one completion reports the bytes sent.
pub(crate) fn connect_ex(h: u64, token: u64, to: SocketAddr, data: &[&[u8]]) -> Result<(), Wsa> {
    let shard = shard()?;
    let payload = if data.iter().any(|d| !d.is_empty()) {
        Some(gather(shard.pool(), data)?)
    } else {
        None
    };
    let s = sock(h)?;
    let mut st = lock(&s);
    match std::mem::replace(&mut *st, SockState::Unbound) {
        SockState::TcpIdle {
            fd: Some(fd),
            assoc: Some((port, key)),
        } => {
            let to_port = Delivery::Port {
                port: port.port.clone(),
                key,
            };
            let stream = match TcpStream::adopt(&shard, fd.into(), to_port) {
                Ok(s) => s,
                Err(e) => {
                    *st = SockState::TcpIdle {
                        fd: None,
                        assoc: Some((port, key)),
                    };
                    return Err(state::setup(e));
                }
            };
            let r = (|| {
                if let Some(data) = payload {
                    port.expect(token, Pending::ConnectSend { stream: h, data })?;
                }
                stream.connect_to(to, token, None).map_err(|r| {
                    port.forget(token);
                    Wsa::from(r.error)
                })
            })();
            *st = SockState::Stream {
                stream,
                assoc: Some((port, key)),
            };
            r
        }
        other => {
            let unbound = matches!(other, SockState::TcpIdle { fd: None, .. });
            *st = other;
            // Windows: ConnectEx needs a bound socket (WSAEINVAL), associated here.
            Err(Wsa(if unbound || s.stream {
                PORTO_WSAEINVAL
            } else {
                PORTO_WSAEOPNOTSUPP
            }))
        }
    }
}

/// `DisconnectEx`: shuts the connection down; with `PORTO_TF_REUSE_SOCKET` the socket may then
/// go to `AcceptEx` again (its association kept).
pub(crate) fn disconnect_ex(h: u64, token: u64, flags: u32) -> Result<(), Wsa> {
    if flags & !PORTO_TF_REUSE_SOCKET != 0 {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    with_stream(h, |stream, port| {
        if flags & PORTO_TF_REUSE_SOCKET != 0 {
            port.expect(token, Pending::Reuse { sock: h })?;
        }
        stream.disconnect(token).map_err(|r| {
            port.forget(token);
            Wsa::from(r.error)
        })
    })
}

/// Finishes the dequeued completion `c` of port `p` whose pending stage was `stage`: the
/// completion the application sees, or `None` when it only moved the operation on.
pub(crate) fn finish(p: &Arc<Port>, c: Completion, stage: Option<Pending>) -> Option<Done> {
    let done = |result: Result<usize, Error>, out: Out| Done {
        key: c.key,
        token: c.token,
        result: result.map_err(|e| e.wsa_code()),
        ov_written: false,
        out,
    };
    match stage {
        None => Some(done(c.result, Out::None)),
        Some(Pending::Recv(t)) => Some(done(
            c.result,
            match c.gather {
                Some(g) => Out::RecvFrames(t, g),
                None => Out::Recv(t, c.buffer, c.peer),
            },
        )),
        Some(Pending::Accept(target)) => {
            let (Ok(_), Some(fd)) = (c.result, c.accepted) else {
                return Some(done(c.result.and(Err(Error::Aborted)), Out::None));
            };
            match accepted(p, c.key, c.token, target, fd, c.peer) {
                Ok(Some(out)) => Some(done(Ok(0), out)),
                Ok(None) => None,
                Err(Wsa(code)) => Some(Done {
                    key: c.key,
                    token: c.token,
                    result: Err(code),
                    ov_written: false,
                    out: Out::None,
                }),
            }
        }
        Some(Pending::AcceptRecv { target, local, peer }) => {
            let accept = target.accept;
            let d = done(
                c.result,
                Out::Accept {
                    target,
                    data: c.buffer,
                    local,
                    peer,
                },
            );
            // The first data is in: the accepted socket's own association, if it has one,
            // takes over.
            apply_assoc(accept);
            Some(d)
        }
        Some(Pending::ConnectSend { stream, data }) => {
            if c.result.is_err() {
                return Some(done(c.result, Out::None));
            }
            let sent = with_stream(stream, |s, port| send_parts(s, port, c.token, data));
            match sent {
                Ok(()) => None,
                Err(Wsa(code)) => Some(Done {
                    key: c.key,
                    token: c.token,
                    result: Err(code),
                    ov_written: false,
                    out: Out::None,
                }),
            }
        }
        Some(Pending::SendParts { sent, error, .. }) => {
            // The last part: the send's one completion.
            let result = match (error, c.result) {
                (Some(code), _) => Err(code),
                (None, Ok(n)) => Ok(sent + n),
                (None, Err(e)) => Err(e.wsa_code()),
            };
            Some(Done {
                key: c.key,
                token: c.token,
                result,
                ov_written: false,
                out: Out::None,
            })
        }
        Some(Pending::Sent(_counted)) => Some(done(c.result, Out::None)),
        Some(Pending::Reuse { sock: h }) => {
            if c.result.is_ok() && c.op == OpKind::Disconnect {
                if let Ok(s) = sock(h) {
                    let mut st = lock(&s);
                    if let SockState::Stream { assoc, .. } = std::mem::replace(&mut *st, SockState::Unbound) {
                        // The connection closes here; the handle and its association stay.
                        *st = SockState::TcpIdle { fd: None, assoc };
                    }
                }
            }
            Some(done(c.result, Out::None))
        }
    }
}

/// AcceptEx's connection arrived: it becomes the accept socket's stream. With room for first
/// data, that receive is issued (its completion finishes the AcceptEx: `Ok(None)`); else the
/// AcceptEx is done now.
fn accepted(
    p: &Arc<Port>,
    key: u64,
    token: u64,
    target: AcceptTarget,
    fd: std::os::fd::OwnedFd,
    peer: Option<SocketAddr>,
) -> Result<Option<Out>, Wsa> {
    let a = sock(target.accept)?;
    let mut st = lock(&a);
    let SockState::TcpIdle { fd: None, assoc } = std::mem::replace(&mut *st, SockState::Unbound) else {
        return Err(Wsa(PORTO_WSAEINVAL));
    };
    // Until its own association (or its first data), the connection completes where the
    // listener does.
    let first = target.recvlen > 0;
    let to = if first {
        Delivery::Port {
            port: p.port.clone(),
            key,
        }
    } else {
        delivery(&assoc).unwrap_or_else(nowhere)
    };
    // Options set on the accept socket before AcceptEx apply to the connection.
    a.apply_early_opts(std::os::fd::AsRawFd::as_raw_fd(&fd))?;
    let stream = TcpStream::adopt(&shard()?, fd, to).map_err(state::setup)?;
    let local = stream.local_addr().map_err(Wsa::from)?;
    let peer = peer.ok_or(Wsa(PORTO_WSAECONNABORTED))?;
    if !first {
        *st = SockState::Stream { stream, assoc };
        return Ok(Some(Out::Accept {
            target,
            data: None,
            local,
            peer,
        }));
    }
    let max = u32::try_from(target.recvlen).unwrap_or(u32::MAX);
    // Recorded before it is issued: another thread may dequeue its completion at once.
    let issued = p
        .expect(token, Pending::AcceptRecv { target, local, peer })
        .and_then(|()| {
            stream.recv_at_most(token, max, None).map_err(|r| {
                p.forget(token);
                Wsa::from(r.error)
            })
        });
    *st = SockState::Stream { stream, assoc };
    issued.map(|()| None)
}

/// Points a connection's completions at its own association, once it has one.
fn apply_assoc(h: u64) {
    let Ok(s) = sock(h) else { return };
    let st = lock(&s);
    if let SockState::Stream {
        stream,
        assoc: Some((port, key)),
    } = &*st
    {
        let _ = stream.core().set_delivery(Delivery::Port {
            port: port.port.clone(),
            key: *key,
        });
    }
}
