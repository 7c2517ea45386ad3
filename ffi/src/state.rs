//! The library's side of the C handles, in safe Rust: the process-wide engine that
//! `WSAStartup` starts, and a table of sockets and completion ports behind integer handles
//! (Winsock's `SOCKET` is an integer too). Every call looks its handle up: a closed, stale or
//! invented handle is an error, never memory.
//!
//! Raw pointers from C appear here only as addresses (`usize`) recorded with an operation; they
//! are dereferenced in `abi` alone.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::Duration;

use crate::codes::*;
use porto::{
    Buf, CompletionPort, Config, Delivery, Engine, Error, Gather, Provider, ShardHandle, SocketOptions, TcpListener,
    TcpStream, UdpSocket,
};

thread_local! {
    static LAST_ERROR: Cell<i32> = const { Cell::new(0) };
}

/// Records the calling thread's last error (`WSAGetLastError`).
pub(crate) fn set_last_error(code: i32) {
    LAST_ERROR.with(|e| e.set(code));
}

pub(crate) fn last_error() -> i32 {
    LAST_ERROR.with(Cell::get)
}

/// A call's failure: the WSA number to report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wsa(pub i32);

impl From<Error> for Wsa {
    fn from(e: Error) -> Wsa {
        Wsa(e.wsa_code())
    }
}

/// How `WSAStartup` configures the engine (`PORTO_STARTUP` in C).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Startup {
    pub shards: usize,
    pub pin: bool,
    pub frames_per_shard: u32,
    /// 0 auto, 1 io_uring, 2 epoll.
    pub provider: u32,
    /// The engine's limits; 0 keeps `Config`'s default.
    pub frame_size: u32,
    pub ops_max: u32,
    pub sockets_max: u32,
    pub commands_max: u32,
}

/// A receive's destination in the caller's memory, kept until its completion is dequeued.
#[derive(Debug)]
pub(crate) struct RecvTarget {
    /// (address, length) of each `WSABUF`.
    pub bufs: Vec<(usize, usize)>,
    /// `lpFrom` / `lpFromlen` (0 if NULL).
    pub from: usize,
    pub fromlen: usize,
    /// Counts the receive among its socket's receives in flight until the record drops.
    pub counted: Option<Counted>,
}

/// A socket's operations of one kind in flight (posted, completion not yet dequeued): an
/// operation completes inline under `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` only when none of
/// its kind is ahead of it.
#[derive(Debug, Default)]
pub(crate) struct InFlight(Arc<AtomicU32>);

impl InFlight {
    pub(crate) fn count(&self) -> Counted {
        self.0.fetch_add(1, Ordering::AcqRel);
        Counted(self.0.clone())
    }

    pub(crate) fn now(&self) -> u32 {
        self.0.load(Ordering::Acquire)
    }
}

/// One operation counted in an [`InFlight`]; dropping it (with its pending record) uncounts.
#[derive(Debug)]
pub(crate) struct Counted(Arc<AtomicU32>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where `AcceptEx` writes: its buffer (`recvlen` bytes of first data, then the local and
/// the remote address areas) and the socket that becomes the connection.
#[derive(Debug)]
pub(crate) struct AcceptTarget {
    pub buf: usize,
    pub recvlen: usize,
    pub laddrlen: usize,
    pub raddrlen: usize,
    pub accept: u64,
}

/// An operation in flight that the library finishes when its completion is dequeued (or
/// carries into a next stage), by its OVERLAPPED.
#[derive(Debug)]
pub(crate) enum Pending {
    /// `WSARecvFrom` / `WSARecv`: copy into the caller's buffers.
    Recv(RecvTarget),
    /// `AcceptEx`, accepting.
    Accept(AcceptTarget),
    /// `AcceptEx`, its first receive in flight on the new connection.
    AcceptRecv {
        target: AcceptTarget,
        local: SocketAddr,
        peer: SocketAddr,
    },
    /// `ConnectEx` with data: sent once connected.
    ConnectSend { stream: u64, data: Vec<Gather> },
    /// A send in `left` parts (`WSASend` beyond one gather, `ConnectEx`'s data): one
    /// completion when the last has ended, with the bytes of all or the first error.
    SendParts {
        left: usize,
        sent: usize,
        error: Option<i32>,
    },
    /// `DisconnectEx(TF_REUSE_SOCKET)`: the socket becomes reusable when it ends.
    Reuse { sock: u64 },
    /// A send of a socket in `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` mode, counted in flight.
    Sent(Counted),
}

/// A completion port: the engine's, plus the operations the library finishes at dequeue.
#[derive(Debug)]
pub(crate) struct Port {
    pub port: CompletionPort,
    pub(crate) pending: Mutex<HashMap<u64, Pending>>,
    /// Operations whose OVERLAPPED [`failed`](Self::failed) wrote, not yet dequeued.
    written: Mutex<HashSet<u64>>,
}

impl Port {
    /// A failed operation's completion is being queued (the engine's
    /// [`CompletionPort::on_failure`], on its shard's thread): its OVERLAPPED gets its status
    /// now, as Windows writes it when the operation ends — a program waiting for a cancelled
    /// operation with `HasOverlappedIoCompleted` while nobody dequeues (Microsoft's
    /// iocpserverex at shutdown, its worker threads gone) sees it end. A successful one is
    /// written where its data is copied, at dequeue.
    fn failed(&self, c: &porto::Completion) {
        let Err(e) = &c.result else { return };
        let code = match self.pending().get(&c.token) {
            // A part of a send that is not its last ends nothing; the last one ends the send
            // with the first part's error.
            Some(Pending::SendParts { left, .. }) if *left > 1 => return,
            Some(Pending::SendParts { error: Some(first), .. }) => *first,
            _ => e.wsa_code(),
        };
        if c.token != 0 && self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(c.token) {
            crate::abi::overlapped_ended(c.token, code);
        }
    }

    /// The dequeue of `token`: whether [`failed`](Self::failed) wrote its OVERLAPPED.
    fn was_written(&self, token: u64) -> bool {
        self.written.lock().unwrap_or_else(|e| e.into_inner()).remove(&token)
    }

    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `p` for `token`; the same OVERLAPPED twice in flight is refused (Windows'
    /// undefined behaviour).
    pub(crate) fn expect(&self, token: u64, p: Pending) -> Result<(), Wsa> {
        let mut pending = self.pending();
        if pending.contains_key(&token) {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        pending.insert(token, p);
        Ok(())
    }

    pub(crate) fn forget(&self, token: u64) {
        self.pending().remove(&token);
    }
}

/// A socket's association: its port and completion key.
pub(crate) type Assoc = Option<(Arc<Port>, u64)>;

#[derive(Debug)]
pub(crate) enum SockState {
    Unbound,
    /// Bound by `bind`, not yet associated with a port (Winsock's order).
    Bound(std::net::UdpSocket),
    /// UDP associated with a port before `bind` (Windows allows either order): the kernel
    /// socket is made at `bind`, or bound to the unspecified address at the first use.
    UdpWaiting {
        port: Arc<Port>,
        key: u64,
    },
    Associated {
        sock: UdpSocket,
        port: Arc<Port>,
        shard: ShardHandle,
    },
    /// Opened without a port (by `RIOCreateRequestQueue` or a blocking call): RIO requests
    /// and blocking calls (overlapped calls need a port: associate first).
    Rio {
        sock: UdpSocket,
    },
    /// TCP, neither listening nor connected: made, or bound (`fd`: a std `TcpStream` only as
    /// a holder of the bound socket, for `getsockname`), perhaps associated already, or reused
    /// after `DisconnectEx(TF_REUSE_SOCKET)`.
    TcpIdle {
        fd: Option<std::net::TcpStream>,
        assoc: Assoc,
    },
    /// TCP after `listen` (open on a shard; its completions go nowhere until associated).
    Listener {
        lst: TcpListener,
        assoc: Assoc,
    },
    /// A TCP connection: accepted by `AcceptEx` or connecting by `ConnectEx`.
    Stream {
        stream: TcpStream,
        assoc: Assoc,
    },
}

impl SockState {
    /// The engine side of the socket, once it has one (associated, opened for RIO, listening,
    /// or connected).
    fn core(&self) -> Option<&porto::SocketCore> {
        match self {
            SockState::Associated { sock, .. } | SockState::Rio { sock } => Some(sock.core()),
            SockState::Listener { lst, .. } => Some(lst.core()),
            SockState::Stream { stream, .. } => Some(stream.core()),
            SockState::Unbound | SockState::Bound(_) | SockState::UdpWaiting { .. } | SockState::TcpIdle { .. } => None,
        }
    }
}

/// A UDP socket bound to the unspecified address of its family (Windows binds an unbound
/// socket implicitly when it is first used).
/// The options set before it existed are applied to it.
fn bind_any_udp(s: &Sock) -> Result<std::net::UdpSocket, Wsa> {
    use std::os::fd::AsRawFd;
    let any: SocketAddr = if s.v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().expect("literal");
    let k = SocketOptions::default().bind_kernel_udp(any).map_err(setup)?;
    s.apply_early_opts(k.as_raw_fd())?;
    Ok(k)
}

#[derive(Debug)]
pub(crate) struct Sock {
    pub(crate) v6: bool,
    pub(crate) stream: bool,
    pub(crate) state: Mutex<SockState>,
    /// `SetFileCompletionNotificationModes(FILE_SKIP_COMPLETION_PORT_ON_SUCCESS)`.
    pub(crate) skip: AtomicBool,
    pub(crate) recvs: InFlight,
    pub(crate) sends: InFlight,
    /// Timeouts and non-blocking mode of its blocking calls.
    pub(crate) bsd: crate::bsd::Blocking,
    /// A UDP socket's peer after `connect` (its sends without an address go there).
    pub(crate) peer: Mutex<Option<SocketAddr>>,
    /// Options set before the kernel socket existed (Winsock programs set them between
    /// `WSASocket` and `bind`): (level, name, value), applied when it is made.
    pub(crate) early_opts: Mutex<Vec<(i32, i32, Vec<u8>)>>,
}

impl Sock {
    pub(crate) fn new(v6: bool, stream: bool, state: SockState) -> Sock {
        Sock {
            v6,
            stream,
            state: Mutex::new(state),
            skip: AtomicBool::new(false),
            recvs: InFlight::default(),
            sends: InFlight::default(),
            bsd: crate::bsd::Blocking::default(),
            peer: Mutex::new(None),
            early_opts: Mutex::new(Vec::new()),
        }
    }

    /// Records option (level, name) = value for when the kernel socket is made (a later
    /// setting of the same option replaces it).
    pub(crate) fn defer_opt(&self, level: i32, name: i32, value: &[u8]) {
        let mut o = self.early_opts.lock().unwrap_or_else(|e| e.into_inner());
        o.retain(|&(l, n, _)| (l, n) != (level, name));
        o.push((level, name, value.to_vec()));
    }

    /// The value an option was given before the kernel socket existed.
    pub(crate) fn early_opt(&self, level: i32, name: i32) -> Option<Vec<u8>> {
        let o = self.early_opts.lock().unwrap_or_else(|e| e.into_inner());
        o.iter()
            .find(|&&(l, n, _)| (l, n) == (level, name))
            .map(|(_, _, v)| v.clone())
    }

    /// Applies the recorded options to the kernel socket just made (`fd`); the first the
    /// kernel refuses is the error (the socket stays, as a failed `setsockopt` leaves it).
    pub(crate) fn apply_early_opts(&self, fd: std::os::fd::RawFd) -> Result<(), Wsa> {
        let opts = std::mem::take(&mut *self.early_opts.lock().unwrap_or_else(|e| e.into_inner()));
        for (level, name, value) in &opts {
            porto::set_raw_option(fd, *level, *name, value).map_err(|e| Wsa::from(Error::from(e)))?;
        }
        Ok(())
    }

    /// The UDP peer `connect` set, if any.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        *self.peer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
pub(crate) enum Obj {
    Port(Arc<Port>),
    Sock(Arc<Sock>),
    Buffer(Arc<crate::rio::Registered>),
    Cq(Arc<crate::rio::Cq>),
    Rq(Arc<crate::rio::Rq>),
    Qos(Arc<crate::qos::Qos>),
    /// `WSACreateEvent`.
    Event(porto::rio::RioEvent),
}

#[derive(Debug, Default)]
struct Global {
    engine: Option<Engine>,
    /// WSAStartup calls not yet matched by WSACleanup.
    users: u32,
    next: u64,
    objs: HashMap<u64, Obj>,
}

static GLOBAL: LazyLock<RwLock<Global>> = LazyLock::new(|| {
    RwLock::new(Global {
        next: 1,
        ..Global::default()
    })
});

fn read() -> std::sync::RwLockReadGuard<'static, Global> {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Global> {
    GLOBAL.write().unwrap_or_else(|e| e.into_inner())
}

/// `WSAStartup`: the first call starts the engine, later ones count.
pub(crate) fn startup(s: Option<Startup>) -> Result<(), Wsa> {
    let mut g = write();
    if g.engine.is_none() {
        let s = s.unwrap_or(Startup {
            shards: 1,
            pin: false,
            frames_per_shard: 4096,
            provider: 0,
            frame_size: 0,
            ops_max: 0,
            sockets_max: 0,
            commands_max: 0,
        });
        let provider = match s.provider {
            0 => Provider::Auto,
            1 => Provider::IoUring,
            2 => Provider::Epoll,
            _ => return Err(Wsa(PORTO_WSAEINVAL)),
        };
        let d = Config::default();
        let or = |v: u32, default: u32| if v == 0 { default } else { v };
        let cfg = Config {
            shards: s.shards.max(1),
            pin: s.pin,
            frames_per_shard: s.frames_per_shard,
            provider,
            frame_size: or(s.frame_size, d.frame_size),
            ops_max: or(s.ops_max, d.ops_max),
            sockets_max: or(s.sockets_max, d.sockets_max),
            commands_max: or(s.commands_max, d.commands_max),
            ..d
        };
        // A limit Config refuses (a frame size that is no power of two, …) is the caller's
        // argument: WSAEINVAL, not a system failure.
        cfg.validate().map_err(|_| Wsa(PORTO_WSAEINVAL))?;
        g.engine = Some(Engine::start(&cfg).map_err(|_| Wsa(PORTO_WSASYSCALLFAILURE))?);
    }
    g.users += 1;
    Ok(())
}

/// `WSACleanup`: the last call closes every socket and port and stops the engine.
pub(crate) fn cleanup() -> Result<(), Wsa> {
    let mut g = write();
    if g.users == 0 {
        return Err(Wsa(PORTO_WSANOTINITIALISED));
    }
    g.users -= 1;
    if g.users == 0 {
        // Completion ports and events are kernel32's on Windows (WSACreateEvent is
        // CreateEvent), not Winsock's: they outlive WSACleanup.
        g.objs.retain(|_, o| matches!(o, Obj::Port(_) | Obj::Event(_)));
        g.engine = None;
    }
    Ok(())
}

/// A new handle for `obj`; Winsock's objects need `WSAStartup` first (`WSANOTINITIALISED`),
/// a completion port or an event does not (kernel32's on Windows: `CreateIoCompletionPort`,
/// `CreateEvent` behind `WSACreateEvent`).
pub(crate) fn insert(obj: Obj) -> Result<u64, Wsa> {
    let mut g = write();
    if g.engine.is_none() && !matches!(obj, Obj::Port(_) | Obj::Event(_)) {
        return Err(Wsa(PORTO_WSANOTINITIALISED));
    }
    let h = g.next;
    g.next = g.next.checked_add(1).ok_or(Wsa(PORTO_WSASYSCALLFAILURE))?;
    g.objs.insert(h, obj);
    Ok(h)
}

/// The object behind handle `h`, if any (the engine running).
pub(crate) fn get(h: u64) -> Result<Option<ObjRef>, Wsa> {
    let g = read();
    // Without Winsock only kernel32's objects (ports, events) answer.
    if g.engine.is_none() && !matches!(g.objs.get(&h), Some(Obj::Event(_))) {
        return Err(Wsa(PORTO_WSANOTINITIALISED));
    }
    Ok(g.objs.get(&h).map(|o| match o {
        Obj::Port(_) | Obj::Sock(_) => ObjRef::Other,
        Obj::Qos(q) => ObjRef::Qos(q.clone()),
        Obj::Buffer(b) => ObjRef::Buffer(b.clone()),
        Obj::Cq(c) => ObjRef::Cq(c.clone()),
        Obj::Rq(r) => ObjRef::Rq(r.clone()),
        Obj::Event(e) => ObjRef::Event(e.clone()),
    }))
}

/// A RIO handle's object, shared out of the table (sockets and ports have their own
/// lookups).
pub(crate) enum ObjRef {
    Other,
    Qos(Arc<crate::qos::Qos>),
    Buffer(Arc<crate::rio::Registered>),
    Cq(Arc<crate::rio::Cq>),
    Rq(Arc<crate::rio::Rq>),
    Event(porto::rio::RioEvent),
}

/// Removes handle `h` if `is` accepts its object; `bad` otherwise.
pub(crate) fn remove(h: u64, is: impl Fn(&Obj) -> bool, bad: i32) -> Result<(), Wsa> {
    let obj = {
        let mut g = write();
        match g.objs.get(&h) {
            // Without Winsock only ports and events live (kernel32's on Windows): any other
            // handle is Winsock's, and Winsock is not started.
            None if g.engine.is_none() => return Err(Wsa(PORTO_WSANOTINITIALISED)),
            Some(o) if is(o) => g.objs.remove(&h),
            _ => return Err(Wsa(bad)),
        }
    };
    // Dropped outside the lock (a socket's close talks to its shard).
    drop(obj);
    Ok(())
}

/// The engine's shard for a new RIO registration: the first (its fixed-buffer table serves
/// the zero-copy sends of the sockets on it; sockets on other shards copy).
pub(crate) fn first_shard() -> Result<ShardHandle, Wsa> {
    let g = read();
    Ok(g.engine.as_ref().ok_or(Wsa(PORTO_WSANOTINITIALISED))?.shard(0).clone())
}

/// The engine's next shard, round robin: where a new association, listener or TCP
/// connection goes, so a server's sockets spread over every core.
pub(crate) fn next_shard() -> Result<ShardHandle, Wsa> {
    let g = read();
    Ok(g.engine
        .as_ref()
        .ok_or(Wsa(PORTO_WSANOTINITIALISED))?
        .next_shard()
        .clone())
}

pub(crate) fn sock(h: u64) -> Result<Arc<Sock>, Wsa> {
    let g = read();
    if g.engine.is_none() {
        return Err(Wsa(PORTO_WSANOTINITIALISED));
    }
    match g.objs.get(&h) {
        Some(Obj::Sock(s)) => Ok(s.clone()),
        _ => Err(Wsa(PORTO_WSAENOTSOCK)),
    }
}

pub(crate) fn port(h: u64) -> Result<Arc<Port>, Wsa> {
    match read().objs.get(&h) {
        Some(Obj::Port(p)) => Ok(p.clone()),
        _ => Err(Wsa(PORTO_ERROR_INVALID_HANDLE)),
    }
}

/// `WSASocket`: UDP or TCP over IPv4 or IPv6.
pub(crate) fn socket(af: i32, ty: i32, protocol: i32) -> Result<u64, Wsa> {
    let v6 = match af {
        libc::AF_INET => false,
        libc::AF_INET6 => true,
        _ => return Err(Wsa(PORTO_WSAEAFNOSUPPORT)),
    };
    let (stream, state) = match (ty, protocol) {
        (libc::SOCK_DGRAM, 0 | libc::IPPROTO_UDP) => (false, SockState::Unbound),
        (libc::SOCK_STREAM, 0 | libc::IPPROTO_TCP) => (true, SockState::TcpIdle { fd: None, assoc: None }),
        _ => return Err(Wsa(PORTO_WSAESOCKTNOSUPPORT)),
    };
    insert(Obj::Sock(Arc::new(Sock::new(v6, stream, state))))
}

pub(crate) fn lock(s: &Sock) -> std::sync::MutexGuard<'_, SockState> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// `bind`: binds the kernel socket now (so `WSAEADDRINUSE` is reported here, as on Windows).
pub(crate) fn bind(h: u64, addr: SocketAddr) -> Result<(), Wsa> {
    let s = sock(h)?;
    if addr.is_ipv6() != s.v6 {
        return Err(Wsa(PORTO_WSAEAFNOSUPPORT));
    }
    use std::os::fd::AsRawFd;
    let mut st = lock(&s);
    match &mut *st {
        SockState::Unbound => {
            let k = SocketOptions::default().bind_kernel_udp(addr).map_err(setup)?;
            s.apply_early_opts(k.as_raw_fd())?;
            *st = SockState::Bound(k);
            Ok(())
        }
        SockState::UdpWaiting { port, key } => {
            let k = SocketOptions::default().bind_kernel_udp(addr).map_err(setup)?;
            s.apply_early_opts(k.as_raw_fd())?;
            *st = associated(k, port.clone(), *key)?;
            Ok(())
        }
        SockState::TcpIdle { fd: fd @ None, .. } => {
            let bound = SocketOptions::default().bind_kernel_tcp(addr).map_err(setup)?;
            s.apply_early_opts(bound.as_raw_fd())?;
            *fd = Some(std::net::TcpStream::from(bound));
            Ok(())
        }
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// A set-up failure's WSA number (the OS error's where there is one).
pub(crate) fn setup(e: porto::SetupError) -> Wsa {
    match e {
        porto::SetupError::Bind { source, .. } | porto::SetupError::Syscall { source, .. } => {
            Wsa::from(Error::from(source))
        }
        // A shard's socket table is full: Windows' "too many open sockets".
        porto::SetupError::Limit("socket") => Wsa(PORTO_WSAEMFILE),
        // Any other bound (a shard's command queue, QoS flows): backpressure.
        porto::SetupError::Limit(_) => Wsa(PORTO_WSAENOBUFS),
        _ => Wsa(PORTO_WSASYSCALLFAILURE),
    }
}

/// `getsockname`.
pub(crate) fn local_addr(h: u64) -> Result<SocketAddr, Wsa> {
    let s = sock(h)?;
    let st = lock(&s);
    if let Some(core) = st.core() {
        return core.local_addr().map_err(Wsa::from);
    }
    match &*st {
        SockState::Bound(k) => k.local_addr().map_err(|e| Wsa::from(Error::from(e))),
        SockState::TcpIdle { fd: Some(fd), .. } => fd.local_addr().map_err(|e| Wsa::from(Error::from(e))),
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// Runs `f` with the socket's engine side, opening it now if it has none — a bound UDP socket
/// (and an unbound one if `bind_unbound`, bound to the unspecified address first, as Windows
/// binds implicitly) is opened without a port, for RIO request queues and blocking calls;
/// associate it first to use overlapped calls too. A listener or a TCP socket not yet
/// connected: `WSAEINVAL` (unless `listener`, for a listener).
pub(crate) fn open_core<T>(
    h: u64,
    bind_unbound: bool,
    listener: bool,
    f: impl FnOnce(&porto::SocketCore) -> Result<T, Wsa>,
) -> Result<T, Wsa> {
    let s = sock(h)?;
    let mut st = lock(&s);
    if bind_unbound {
        // Associated before bind: bound implicitly now, completing into its port.
        bind_waiting(&s, &mut st)?;
    }
    let k = match std::mem::replace(&mut *st, SockState::Unbound) {
        SockState::Bound(k) => k,
        SockState::Unbound if bind_unbound => bind_any_udp(&s)?,
        other => {
            *st = other;
            return match (&*st, st.core()) {
                (SockState::Listener { .. }, Some(core)) if listener => f(core),
                // A listener carries no data; a TCP socket not yet a connection neither (bind,
                // then ConnectEx or AcceptEx first).
                (SockState::Listener { .. }, _) | (_, None) => Err(Wsa(PORTO_WSAEINVAL)),
                // Associated, opened already, or a connection (RIO over TCP).
                (_, Some(core)) => f(core),
            };
        }
    };
    // Its own completions (none are issued on a socket opened this way) go to a port nobody
    // reads.
    let delivery = Delivery::Port {
        port: CompletionPort::new(1, 1),
        key: 0,
    };
    let shard = first_shard()?;
    let sock = UdpSocket::adopt(&shard, k, delivery).map_err(setup)?;
    let r = f(sock.core());
    *st = SockState::Rio { sock };
    r
}

/// Runs `f` with socket `h`'s kernel descriptor, the socket locked meanwhile (so it cannot
/// close and its number be reused under `f`). `WSAEINVAL` for a socket with no kernel
/// socket yet (made, not bound).
pub(crate) fn with_fd<T>(h: u64, f: impl FnOnce(std::os::fd::RawFd) -> Result<T, Wsa>) -> Result<T, Wsa> {
    use std::os::fd::AsRawFd;
    let s = sock(h)?;
    let st = lock(&s);
    let fd = match (&*st, st.core()) {
        (_, Some(core)) => core.as_raw_fd(),
        (SockState::Bound(k), None) => k.as_raw_fd(),
        (SockState::TcpIdle { fd: Some(k), .. }, None) => k.as_raw_fd(),
        _ => return Err(Wsa(PORTO_WSAEINVAL)),
    };
    f(fd)
}

/// Whether socket `h` has its kernel socket yet (porto makes it at `bind`, at the implicit
/// bind of a first use, at `connect`, or takes it from `AcceptEx`).
pub(crate) fn has_fd(h: u64) -> Result<bool, Wsa> {
    match with_fd(h, |_| Ok(())) {
        Ok(()) => Ok(true),
        Err(Wsa(PORTO_WSAEINVAL)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs `f` with socket `h`'s engine side (associated, listening, connected, or opened for
/// RIO); `WSAEINVAL` before that.
pub(crate) fn with_core<T>(h: u64, f: impl FnOnce(&porto::SocketCore) -> Result<T, Wsa>) -> Result<T, Wsa> {
    let s = sock(h)?;
    let st = lock(&s);
    st.core().map_or(Err(Wsa(PORTO_WSAEINVAL)), f)
}

/// The engine's shard `i`.
pub(crate) fn shard(i: usize) -> Result<ShardHandle, Wsa> {
    let g = read();
    let e = g.engine.as_ref().ok_or(Wsa(PORTO_WSANOTINITIALISED))?;
    e.shards().get(i).cloned().ok_or(Wsa(PORTO_WSAEINVAL))
}

/// `CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, concurrency)`: a new port.
pub(crate) fn create_port(concurrency: u32) -> Result<u64, Wsa> {
    const CAPACITY: usize = 65536;
    let p = Arc::new(Port {
        port: CompletionPort::new(concurrency as usize, CAPACITY),
        pending: Mutex::new(HashMap::new()),
        written: Mutex::new(HashSet::new()),
    });
    let weak = Arc::downgrade(&p);
    p.port.on_failure(move |c| {
        if let Some(p) = weak.upgrade() {
            p.failed(c);
        }
    });
    insert(Obj::Port(p))
}

/// `CreateIoCompletionPort(socket, port, key, 0)`: associates once, on the engine's next
/// shard. An unbound UDP socket waits for its `bind` (Windows allows either order; it used
/// to be bound to the unspecified address here, and the program's `bind` then failed), or is
/// bound implicitly at its first use, as Windows binds.
pub(crate) fn associate(h: u64, port_h: u64, key: u64) -> Result<u64, Wsa> {
    let s = sock(h)?;
    let p = port(port_h)?;
    let mut st = lock(&s);
    if s.stream {
        // TCP: remembered, and applied to whatever the socket is or becomes.
        return match &mut *st {
            SockState::TcpIdle { assoc: a @ None, .. } => {
                *a = Some((p, key));
                Ok(port_h)
            }
            SockState::Listener { lst, assoc: a @ None } => {
                lst.core()
                    .set_delivery(Delivery::Port {
                        port: p.port.clone(),
                        key,
                    })
                    .map_err(Wsa::from)?;
                *a = Some((p, key));
                Ok(port_h)
            }
            SockState::Stream {
                stream,
                assoc: a @ None,
            } => {
                stream
                    .core()
                    .set_delivery(Delivery::Port {
                        port: p.port.clone(),
                        key,
                    })
                    .map_err(Wsa::from)?;
                *a = Some((p, key));
                Ok(port_h)
            }
            // Associated once.
            _ => Err(Wsa(PORTO_WSAEINVAL)),
        };
    }
    let k = match std::mem::replace(&mut *st, SockState::Unbound) {
        SockState::Bound(k) => k,
        SockState::Unbound => {
            // Not bound yet: the kernel socket waits for `bind` or the first use.
            *st = SockState::UdpWaiting { port: p, key };
            return Ok(port_h);
        }
        other => {
            // Associated once; a RIO-only socket's completions already have their place.
            *st = other;
            return Err(Wsa(PORTO_WSAEINVAL));
        }
    };
    *st = associated(k, p, key)?;
    Ok(port_h)
}

/// A UDP socket associated before `bind` (`UdpWaiting`) is bound to the unspecified address
/// and opened, completing into its port; any other state is left as it is. On failure the
/// socket still waits.
fn bind_waiting(s: &Sock, st: &mut SockState) -> Result<(), Wsa> {
    if let SockState::UdpWaiting { port, key } = &*st {
        let (port, key) = (port.clone(), *key);
        let k = bind_any_udp(s)?;
        *st = associated(k, port, key)?;
    }
    Ok(())
}

/// A bound UDP socket opened on the engine's next shard, completing into `port` with `key`.
fn associated(k: std::net::UdpSocket, port: Arc<Port>, key: u64) -> Result<SockState, Wsa> {
    let shard = next_shard()?;
    let delivery = Delivery::Port {
        port: port.port.clone(),
        key,
    };
    let sock = UdpSocket::adopt(&shard, k, delivery).map_err(setup)?;
    Ok(SockState::Associated { sock, port, shard })
}

/// The associated socket's parts, or `WSAEINVAL`: porto completes overlapped operations
/// only into a port (no event objects, no completion routines).
fn with_assoc<T>(h: u64, f: impl FnOnce(&UdpSocket, &Arc<Port>, &ShardHandle) -> Result<T, Wsa>) -> Result<T, Wsa> {
    let s = sock(h)?;
    let mut st = lock(&s);
    // The first overlapped call binds implicitly, as Windows does.
    bind_waiting(&s, &mut st)?;
    match &*st {
        SockState::Associated { sock, port, shard } => f(sock, port, shard),
        // Not associated with a port (a RIO-only socket included): nowhere to complete.
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// `WSARecvFrom` (overlapped): the datagram completes into the socket's port; its bytes
/// are copied to `target` when dequeued.
pub(crate) fn recv_from(h: u64, token: u64, mut target: RecvTarget) -> Result<(), Wsa> {
    target.counted = Some(sock(h)?.recvs.count());
    with_assoc(h, |sock, port, _| {
        port.expect(token, Pending::Recv(target))?;
        sock.recv_from(token, None).map_err(|r| {
            port.forget(token);
            Wsa::from(r.error)
        })
    })
}

/// `WSASendTo` (overlapped): the pieces are gathered into one pool frame (the caller's
/// buffers are free at once; Windows lets go of them at completion) and sent as one
/// datagram.
pub(crate) fn send_to(h: u64, token: u64, pieces: &[&[u8]], to: SocketAddr) -> Result<usize, Wsa> {
    let s = sock(h)?;
    let counted = s.skip.load(Ordering::Acquire).then(|| s.sends.count());
    with_assoc(h, |sock, port, shard| {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        let mut buf: Buf = shard.pool().alloc().map_err(Wsa::from)?;
        if total > buf.capacity() {
            return Err(Wsa(PORTO_WSAEMSGSIZE));
        }
        buf.set_len(total);
        let mut at = 0;
        for p in pieces {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        if let Some(c) = counted {
            port.expect(token, Pending::Sent(c))?;
        }
        sock.send_to(buf, to, token).map_err(|r| {
            port.forget(token);
            Wsa::from(r.error)
        })?;
        Ok(total)
    })
}

/// `SetFileCompletionNotificationModes`: `skip` is `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`.
pub(crate) fn set_skip(h: u64, skip: bool) -> Result<(), Wsa> {
    sock(h)?.skip.store(skip, Ordering::Release);
    Ok(())
}

/// Whether a receive (or a datagram send) on `h` may complete inline now: the socket is in
/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` mode and nothing of that kind is in flight ahead
/// of it (it would be overtaken). Sends inline only on datagram sockets.
pub(crate) fn may_complete_inline(h: u64, receive: bool) -> Result<bool, Wsa> {
    let s = sock(h)?;
    Ok(s.skip.load(Ordering::Acquire)
        && if receive {
            s.recvs.now() == 0
        } else {
            !s.stream && s.sends.now() == 0
        })
}

/// `CancelIoEx(socket, overlapped)`; `None`: every operation of the socket (NULL
/// OVERLAPPED).
pub(crate) fn cancel(h: u64, token: Option<u64>) -> Result<(), Wsa> {
    let s = sock(h)?;
    let st = lock(&s);
    // Without an engine side nothing can be in flight.
    let Some(core) = st.core() else { return Ok(()) };
    match token {
        Some(t) => core.cancel(t),
        None => core.cancel_all(),
    }
    .map_err(Wsa::from)
}

/// `closesocket`: outstanding operations complete `WSA_OPERATION_ABORTED` into the port.
/// A RIO socket's request queues are closed with it: their outstanding requests end
/// aborted in their completion queues, each once.
pub(crate) fn close_socket(h: u64) -> Result<(), Wsa> {
    remove(h, |o| matches!(o, Obj::Sock(_)), PORTO_WSAENOTSOCK)?;
    let queues: Vec<Obj> = {
        let mut g = write();
        let ids: Vec<u64> = g
            .objs
            .iter()
            .filter(|(_, o)| matches!(o, Obj::Rq(r) if r.sock == h))
            .map(|(&id, _)| id)
            .collect();
        ids.iter().filter_map(|id| g.objs.remove(id)).collect()
    };
    drop(queues);
    Ok(())
}

/// `CloseHandle(port)`: sockets associated with it keep it alive until they close.
pub(crate) fn close_handle(h: u64) -> Result<(), Wsa> {
    // A port's waiters return at once with ERROR_ABANDONED_WAIT_0 (they hold the port, not
    // the handle, so removing the handle alone would leave them waiting for ever).
    if let Ok(p) = port(h) {
        p.port.close();
    }
    remove(
        h,
        |o| matches!(o, Obj::Port(_) | Obj::Event(_)),
        PORTO_ERROR_INVALID_HANDLE,
    )
}

/// `PostQueuedCompletionStatus`.
pub(crate) fn post(port_h: u64, bytes: u32, key: u64, token: u64) -> Result<(), Wsa> {
    let p = port(port_h)?;
    p.port
        .post(porto::Completion::new(key, token, Ok(bytes as usize)))
        .map_err(|_| Wsa::from(Error::NoBuffers))
}

/// What a dequeued completion must write into the caller's memory.
#[derive(Debug)]
pub(crate) enum Out {
    None,
    /// A receive's data (and datagram source) into its buffers.
    Recv(RecvTarget, Option<Buf>, Option<SocketAddr>),
    /// A stream receive over several frames (a buffer larger than one): its frames in order.
    RecvFrames(RecvTarget, porto::Gather),
    /// `AcceptEx`: the first data (if any) and both addresses into its buffer.
    Accept {
        target: AcceptTarget,
        data: Option<Buf>,
        local: SocketAddr,
        peer: SocketAddr,
    },
}

/// One dequeued completion, with what it must copy out.
#[derive(Debug)]
pub(crate) struct Done {
    pub key: u64,
    pub token: u64,
    /// Bytes, or the WSA error of a failed operation.
    pub result: Result<usize, i32>,
    /// Its OVERLAPPED was written when it failed ([`Port::failed`]): the dequeue must not
    /// touch it again (the program may have freed it, as on Windows).
    pub ov_written: bool,
    pub out: Out,
}

/// `GetQueuedCompletionStatusEx`: up to `max` completions, waiting up to `timeout` (None:
/// INFINITE) for the first. Completions that only move an operation to its next stage
/// (AcceptEx's accept before its first receive, ConnectEx's connect before its data) are
/// consumed here, and the wait goes on for what is left of `timeout`.
pub(crate) fn dequeue(port_h: u64, max: usize, timeout: Option<Duration>) -> Result<Vec<Done>, Wsa> {
    let p = port(port_h)?;
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    let mut got = Vec::with_capacity(max);
    let mut done = Vec::with_capacity(max);
    loop {
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        p.port.dequeue(&mut got, max, left);
        for c in got.drain(..) {
            // Taken out and finished without the lock (stages lock sockets, and sockets'
            // calls lock `pending` inside theirs). A part of a send that is not its last only
            // counts, in place (another thread may be dequeuing the next part).
            let stage = {
                let mut pending = p.pending();
                match pending.get_mut(&c.token) {
                    Some(Pending::SendParts { left, sent, error }) if *left > 1 => {
                        *left -= 1;
                        match c.result {
                            Ok(n) => *sent += n,
                            Err(e) => {
                                error.get_or_insert(e.wsa_code());
                            }
                        }
                        continue;
                    }
                    _ => pending.remove(&c.token),
                }
            };
            let written = p.was_written(c.token);
            if let Some(mut d) = crate::tcp::finish(&p, c, stage) {
                d.ov_written = written;
                done.push(d);
            }
        }
        if !done.is_empty() {
            return Ok(done);
        }
        if p.port.is_closed() {
            return Err(Wsa(PORTO_ERROR_ABANDONED_WAIT_0));
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Err(Wsa(PORTO_WAIT_TIMEOUT));
        }
    }
}
