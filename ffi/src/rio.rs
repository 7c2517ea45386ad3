//! Registered I/O for C, in safe Rust: registered buffers, completion queues and request
//! queues behind the same checked integer handles as sockets and ports. The caller's memory
//! is reached only through `porto::rio::ExternalBuffer` slices made in `abi_rio`; here are
//! the tables and the bookkeeping Windows' RIO keeps per request — its `RequestContext`, and
//! where `RIOReceiveEx` wants the sender's address written.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::codes::*;
use crate::state::{self, Obj, ObjRef, Wsa};
use porto::rio::{
    CompletionQueue, ExternalBuffer, RequestQueue, RioBuf, RioEvent, RioEx, RioFlags, RioNotify, RioResult,
};

/// Entries a completion queue may hold (Windows allows more; each entry is preallocated).
pub(crate) const CQ_MAX: u32 = 1 << 20;

/// A registered buffer (`RIO_BUFFERID`): the engine's view and where the caller's memory is.
#[derive(Debug)]
pub(crate) struct Registered {
    pub buf: ExternalBuffer,
    pub addr: usize,
}

impl Registered {
    /// The address of `len` bytes at `off`, if they lie inside the buffer.
    pub(crate) fn at(&self, off: u32, len: u32) -> Result<usize, Wsa> {
        let end = (off as usize).checked_add(len as usize).ok_or(Wsa(PORTO_WSAEINVAL))?;
        if end > self.buf.len() {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        Ok(self.addr + off as usize)
    }
}

/// What a request needs at its dequeue: its `RequestContext`, and for `RIOReceiveEx` where
/// to write the sender's and the local `SOCKADDR_INET` (address, room) and the flags (a
/// `ULONG`'s address).
#[derive(Clone, Copy, Debug)]
struct Pending {
    ctx: u64,
    remote: Option<(usize, usize)>,
    /// (address, room, the socket's port).
    local: Option<(usize, usize, u16)>,
    flags: Option<usize>,
}

/// Per-request records, as many as the queue has entries (a request holds an entry from
/// issue to dequeue, so they never run out before the queue does).
#[derive(Debug)]
struct Slab {
    entries: Vec<Option<Pending>>,
    free: Vec<u32>,
}

/// A completion queue (`RIO_CQ`).
#[derive(Debug)]
pub(crate) struct Cq {
    cq: CompletionQueue,
    slab: Mutex<Slab>,
    /// Created with a notification (else `RIONotify` is `WSAEINVAL`, as on Windows).
    notifies: bool,
    /// `RIO_EVENT_COMPLETION` with `NotifyReset`: `RIONotify` resets this event first.
    reset_on_notify: Option<RioEvent>,
}

impl Cq {
    fn slab(&self) -> std::sync::MutexGuard<'_, Slab> {
        self.slab.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request queue (`RIO_RQ`): calls on one are serialised here (Windows asks the
/// application to do it).
#[derive(Debug)]
pub(crate) struct Rq {
    /// The socket it was made on: `closesocket` frees it, as on Windows.
    pub sock: u64,
    rq: Mutex<RequestQueue>,
    recv: Arc<Cq>,
    send: Arc<Cq>,
    /// Its socket's port: `RIOReceiveEx`'s local address carries it.
    port: u16,
}

/// `RIORegisterBuffer`: `buf` over the caller's memory at `addr`.
pub(crate) fn register(buf: ExternalBuffer, addr: usize) -> Result<u64, Wsa> {
    state::insert(Obj::Buffer(Arc::new(Registered { buf, addr })))
}

/// The registered buffer `id` (`WSAEINVAL` if there is none).
pub(crate) fn buffer(id: u64) -> Result<Arc<Registered>, Wsa> {
    match state::get(id)? {
        Some(ObjRef::Buffer(b)) => Ok(b),
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// `RIODeregisterBuffer`. Requests still holding slices of it keep using the memory until
/// their results are dequeued (Windows leaves that undefined; the memory must stay valid).
pub(crate) fn deregister(id: u64) -> Result<(), Wsa> {
    state::remove(id, |o| matches!(o, Obj::Buffer(_)), PORTO_WSAEINVAL)
}

/// How a completion queue signals after `RIONotify`.
#[derive(Debug)]
pub(crate) enum Notify {
    None,
    /// `RIO_IOCP_COMPLETION`: a completion with `key` and `token` (the OVERLAPPED) to `port`.
    Iocp {
        port: u64,
        key: u64,
        token: u64,
    },
    /// `RIO_EVENT_COMPLETION`: sets event `event`; `reset`: `RIONotify` resets it first.
    Event {
        event: u64,
        reset: bool,
    },
}

/// `RIOCreateCompletionQueue`.
pub(crate) fn create_cq(size: u32, notify: Notify) -> Result<u64, Wsa> {
    if size == 0 {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    if size > CQ_MAX {
        return Err(Wsa(PORTO_WSAENOBUFS));
    }
    let notifies = !matches!(notify, Notify::None);
    let mut reset_on_notify = None;
    let notify = match notify {
        Notify::None => RioNotify::None,
        Notify::Event { event, reset } => {
            let e = crate::event::event(event).map_err(|_| Wsa(PORTO_WSAEINVAL))?;
            reset_on_notify = reset.then(|| e.clone());
            RioNotify::Event(e)
        }
        Notify::Iocp { port, key, token } => RioNotify::Port {
            port: state::port(port).map_err(|_| Wsa(PORTO_WSAEINVAL))?.port.clone(),
            key,
            token,
        },
    };
    state::insert(Obj::Cq(Arc::new(Cq {
        cq: CompletionQueue::new(size as usize, notify),
        slab: Mutex::new(Slab {
            entries: vec![None; size as usize],
            free: (0..size).rev().collect(),
        }),
        notifies,
        reset_on_notify,
    })))
}

fn cq(h: u64) -> Result<Arc<Cq>, Wsa> {
    match state::get(h)? {
        Some(ObjRef::Cq(c)) => Ok(c),
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

fn rq(h: u64) -> Result<Arc<Rq>, Wsa> {
    match state::get(h)? {
        Some(ObjRef::Rq(r)) => Ok(r),
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// `RIOCloseCompletionQueue`: request queues using it keep it until they close.
pub(crate) fn close_cq(h: u64) -> Result<(), Wsa> {
    state::remove(h, |o| matches!(o, Obj::Cq(_)), PORTO_WSAEINVAL)
}

/// `RIOCreateRequestQueue` on socket `sock`: (maximum outstanding, completion queue) for
/// receives and for sends.
pub(crate) fn create_rq(sock: u64, recv: (u32, u64), send: (u32, u64), ctx: u64) -> Result<u64, Wsa> {
    let ((max_recv, recv_cq), (max_send, send_cq)) = (recv, send);
    let (recv, send) = (cq(recv_cq)?, cq(send_cq)?);
    let made = state::open_core(sock, true, false, |core| {
        let q = RequestQueue::with_queues(core, &recv.cq, &send.cq, max_recv, max_send, ctx).map_err(Wsa::from)?;
        Ok(Rq {
            sock,
            rq: Mutex::new(q),
            recv: recv.clone(),
            send: send.clone(),
            port: core.local_addr().map_err(Wsa::from)?.port(),
        })
    })?;
    state::insert(Obj::Rq(Arc::new(made)))
}

/// `RIOResizeCompletionQueue`: above `PORTO_RIO_MAX_CQ_SIZE` or 0 `WSAEINVAL`, below what
/// its request queues may have outstanding or what is in use `WSAETOOMANYREFS`.
pub(crate) fn resize_cq(h: u64, size: u32) -> Result<(), Wsa> {
    let c = cq(h)?;
    if size == 0 || size > CQ_MAX {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    {
        // The per-request records grow first (a request may claim the new room at once);
        // they never shrink (those in use may sit anywhere in the slab).
        let mut slab = c.slab();
        let had = slab.entries.len();
        if (size as usize) > had {
            slab.entries.resize(size as usize, None);
            // `had` < size <= CQ_MAX: both fit a u32.
            slab.free.extend((had as u32..size).rev());
        }
    }
    c.cq.resize(size as usize).map_err(Wsa::from)
}

/// `RIOResizeRequestQueue`.
pub(crate) fn resize_rq(h: u64, max_recv: u32, max_send: u32) -> Result<(), Wsa> {
    let r = rq(h)?;
    let mut q = r.rq.lock().unwrap_or_else(|e| e.into_inner());
    q.resize(max_recv, max_send).map_err(Wsa::from)
}

/// One RIO request as the ABI read it.
#[derive(Debug)]
pub(crate) struct Issue {
    pub receive: bool,
    /// The data buffer; `None` only with `RIO_MSG_COMMIT_ONLY`.
    pub buf: Option<RioBuf>,
    /// `RIOSendEx`'s destination.
    pub to: Option<SocketAddr>,
    /// `RIOReceiveEx`'s sender address buffer (address, room).
    pub remote: Option<(usize, usize)>,
    /// `RIOReceiveEx`'s local address buffer (address, room).
    pub local: Option<(usize, usize)>,
    /// `RIOSendEx`'s source address.
    pub source: Option<IpAddr>,
    /// `pControlContext`: the control messages' segment.
    pub control: Option<RioBuf>,
    /// `RIOReceiveEx`'s `pFlags`: where the result's `MSG_*` flags go.
    pub flags_out: Option<usize>,
    pub flags: u32,
    pub ctx: u64,
}

/// `RIOReceive(Ex)` / `RIOSend(Ex)`.
pub(crate) fn issue(h: u64, req: Issue) -> Result<(), Wsa> {
    let flags = RioFlags::from_bits(req.flags).ok_or(Wsa(PORTO_WSAEINVAL))?;
    let r = rq(h)?;
    // A send without an address on a datagram socket goes to the peer `connect` set; with
    // none it is WSAENOTCONN here, at the call (it used to fail later, in the CQ). Looked up
    // before the queue's lock (the handle table's lock is never taken under it).
    let to = match (req.receive, req.to, req.buf.is_some()) {
        (false, None, true) => match state::sock(r.sock) {
            Ok(s) if !s.stream => Some(s.peer().ok_or(Wsa(PORTO_WSAENOTCONN))?),
            _ => None,
        },
        (_, to, _) => to,
    };
    let mut q = r.rq.lock().unwrap_or_else(|e| e.into_inner());
    let Some(buf) = req.buf else {
        if !flags.contains(RioFlags::COMMIT_ONLY) {
            return Err(Wsa(PORTO_WSAEFAULT));
        }
        return q.commit().map_err(Wsa::from);
    };
    if flags.contains(RioFlags::COMMIT_ONLY) {
        // Windows: COMMIT_ONLY takes no buffer.
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    let cq = if req.receive { &r.recv } else { &r.send };
    let token = {
        let mut slab = cq.slab();
        let t = slab.free.pop().ok_or(Wsa(PORTO_WSAENOBUFS))?;
        slab.entries[t as usize] = Some(Pending {
            ctx: req.ctx,
            remote: req.remote,
            local: req.local.map(|(a, n)| (a, n, r.port)),
            flags: req.flags_out,
        });
        t
    };
    // The flags tell broadcast and multicast apart by the address the datagram was sent to.
    let want_local = req.local.is_some() || req.flags_out.is_some();
    let ex = (want_local || req.control.is_some() || req.source.is_some()).then_some(RioEx {
        control: req.control,
        want_local,
        source: req.source,
    });
    let t = u64::from(token);
    let issued = match (req.receive, ex) {
        (true, None) => q.receive(buf, t, flags),
        (true, Some(ex)) => q.receive_ex(buf, ex, t, flags).map_err(|(e, b, _)| (e, b)),
        (false, None) => match to {
            None => q.send(buf, t, flags),
            Some(to) => q.send_to(buf, to, t, flags),
        },
        (false, Some(ex)) => q.send_ex(buf, to, ex, t, flags).map_err(|(e, b, _)| (e, b)),
    };
    issued.map_err(|(e, _buf)| {
        let mut slab = cq.slab();
        slab.entries[token as usize] = None;
        slab.free.push(token);
        Wsa::from(e)
    })
}

/// One dequeued RIO result, as `RIORESULT` carries it, and the sender to write for
/// `RIOReceiveEx`.
#[derive(Debug)]
pub(crate) struct Done {
    pub status: i32,
    pub bytes: u32,
    pub socket_ctx: u64,
    pub request_ctx: u64,
    pub remote: Option<(usize, usize, SocketAddr)>,
    pub local: Option<(usize, usize, SocketAddr)>,
    /// Where to write `RIOReceiveEx`'s flags, and Windows' `MSG_*` bits.
    pub flags: Option<(usize, u32)>,
}

/// `RIODequeueCompletion`: up to `max` results (never waits). A receive's bytes are already
/// in the caller's memory.
pub(crate) fn dequeue(h: u64, max: usize, out: &mut Vec<Done>) -> Result<(), Wsa> {
    let c = cq(h)?;
    let mut got: Vec<RioResult> = Vec::with_capacity(max.min(c.cq.len().max(1)));
    c.cq.dequeue(&mut got, max);
    let mut slab = c.slab();
    for r in got {
        let t = u32::try_from(r.token).map_err(|_| Wsa(PORTO_WSASYSCALLFAILURE))?;
        let p = slab
            .entries
            .get_mut(t as usize)
            .and_then(Option::take)
            .ok_or(Wsa(PORTO_WSASYSCALLFAILURE))?;
        slab.free.push(t);
        let (status, bytes) = match r.result {
            Ok(n) => (0, u32::try_from(n).unwrap_or(u32::MAX)),
            Err(e) => (e.wsa_code(), 0),
        };
        out.push(Done {
            status,
            bytes,
            socket_ctx: r.key,
            request_ctx: p.ctx,
            remote: p.remote.zip(r.peer).map(|((a, n), peer)| (a, n, peer)),
            local: p
                .local
                .zip(r.local)
                .map(|((a, n, port), ip)| (a, n, SocketAddr::new(ip, port))),
            flags: p.flags.map(|a| (a, msg_flags(&r))),
        });
    }
    Ok(())
}

/// `RIOReceiveEx`'s `pFlags`: Windows' `MSG_CTRUNC` (control messages cut short), `MSG_BCAST`
/// (sent to 255.255.255.255) or `MSG_MCAST` (sent to a group). (A datagram cut short fails
/// `WSAEMSGSIZE` instead of setting `MSG_TRUNC`.)
fn msg_flags(r: &RioResult) -> u32 {
    let mut f = 0;
    if r.control_truncated {
        f |= PORTO_MSG_CTRUNC;
    }
    match r.local {
        Some(IpAddr::V4(a)) if a.is_broadcast() => f |= PORTO_MSG_BCAST,
        Some(ip) if ip.is_multicast() => f |= PORTO_MSG_MCAST,
        _ => {}
    }
    f
}

/// `RIONotify`.
pub(crate) fn notify(h: u64) -> Result<(), Wsa> {
    let c = cq(h)?;
    if !c.notifies {
        return Err(Wsa(PORTO_WSAEINVAL));
    }
    if let Some(e) = &c.reset_on_notify {
        e.reset();
    }
    c.cq.notify();
    Ok(())
}
