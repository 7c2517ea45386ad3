//! `porto echo`: a sockperf-compatible responder on porto, in completion-port or polling mode.
//!
//! One application loop per shard. In port mode each shard has its own completion port and
//! one application thread dequeuing from it; in polling mode the application loop *is* the
//! shard thread (`Shard::poll`), busy-polling. UDP replies reuse the received frame (no copy);
//! TCP messages are reassembled per connection and answered whole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use porto::{
    Buf, Completion, CompletionPort, Config, DatagramOptions, DatagramSocket, Delivery, Engine, Error, OpKind,
    SetupError, Shard, ShardHandle, ShardInfo, SocketOptions, TcpListener, TcpStream, XdpInfo, XdpOptions, XdpQueues,
};

use crate::drops::Drops;
use crate::sockperf;

const KEY_UDP: u64 = 0;
const KEY_LISTENER: u64 = 1;
const KEY_CONN0: u64 = 2;
const TOKEN_RECV: u64 = 1;
const TOKEN_SEND: u64 = 2;
const TOKEN_ACCEPT: u64 = 3;
const BATCH: usize = 64;

/// What to serve and how.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    pub addr: SocketAddr,
    pub udp: bool,
    pub tcp: bool,
    /// Polling mode (application on the shard thread) instead of completion-port mode.
    pub poll: bool,
    pub zerocopy: bool,
    /// Serve UDP through AF_XDP instead of the kernel stack.
    pub xdp: Option<XdpOptions>,
    /// If AF_XDP cannot be had (no such interface, no privilege, no XDP), serve UDP through
    /// kernel sockets instead and say why; without it that failure is the server's error.
    pub xdp_fallback: bool,
    /// Stamp every received datagram (kernel sockets: SO_TIMESTAMPING; AF_XDP: the XDP
    /// program, or the RX ring where the kernel refuses the program's stamp): the banner
    /// says which source this kernel gave.
    pub timestamps: bool,
    pub engine: Config,
}

/// Per-shard application counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct EchoCounters {
    pub requests: u64,
    pub replies: u64,
    /// Messages that were not sockperf requests (too short, or not asking for a reply).
    pub ignored: u64,
    /// Replies that could not be sent (pool or queue exhausted): dropped and counted.
    pub reply_drops: u64,
    /// Connections closed for a malformed stream.
    pub bad_streams: u64,
    pub connections: u64,
    /// The engine's drops by reason, summed over shards (filled when the server stops).
    pub drops: Drops,
}

impl EchoCounters {
    fn add(&mut self, o: &EchoCounters) {
        self.requests += o.requests;
        self.replies += o.replies;
        self.ignored += o.ignored;
        self.reply_drops += o.reply_drops;
        self.bad_streams += o.bad_streams;
        self.connections += o.connections;
    }
}

struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// The echo logic of one shard, independent of how completions arrive.
struct EchoApp {
    shard: ShardHandle,
    udp: Option<DatagramSocket>,
    listener: Option<TcpListener>,
    conns: Vec<Option<Conn>>,
    delivery: Delivery,
    zerocopy: bool,
    counters: EchoCounters,
    /// Why UDP goes through kernel sockets although AF_XDP was asked for (`xdp_fallback`).
    xdp_fallback: Option<String>,
}

impl EchoApp {
    /// The echo application of shard `index` (of `cfg.engine.shards`).
    fn new(
        shard: ShardHandle,
        index: usize,
        cfg: &EchoConfig,
        addr: SocketAddr,
        delivery: Delivery,
    ) -> Result<EchoApp, SetupError> {
        let opts = SocketOptions {
            reuse_port: true,
            recv_buffer: Some(4 << 20),
            send_buffer: Some(4 << 20),
            ..SocketOptions::default()
        };
        let with_key = |key| match &delivery {
            Delivery::Port { port, .. } => Delivery::Port {
                port: port.clone(),
                key,
            },
            Delivery::Poll { .. } => Delivery::Poll { key },
        };
        let mut fallback = None;
        let udp = if cfg.udp {
            // Several shards share the interface: each takes its own queues (q mod N),
            // serving the same address like an SO_REUSEPORT group.
            let xdp = cfg.xdp.clone().map(|mut x| {
                x.timestamps = cfg.timestamps;
                if x.queues == XdpQueues::All && cfg.engine.shards > 1 {
                    x.queues = XdpQueues::Shard {
                        index: index as u32,
                        of: cfg.engine.shards as u32,
                    };
                }
                x
            });
            let d = DatagramOptions {
                socket: SocketOptions {
                    timestamps: cfg.timestamps,
                    ..opts.clone()
                },
                xdp,
                fallback: cfg.xdp_fallback,
            };
            let (sock, why) = DatagramSocket::bind(&shard, addr, &d, with_key(KEY_UDP))?;
            fallback = why;
            Some(sock)
        } else {
            None
        };
        let listener = cfg
            .tcp
            .then(|| TcpListener::bind(&shard, addr, 1024, &opts, with_key(KEY_LISTENER)))
            .transpose()?;
        let app = EchoApp {
            shard,
            udp,
            listener,
            conns: Vec::new(),
            delivery,
            zerocopy: cfg.zerocopy,
            counters: EchoCounters::default(),
            xdp_fallback: fallback,
        };
        app.arm();
        Ok(app)
    }

    fn xdp_info(&self) -> Option<XdpInfo> {
        self.udp.as_ref()?.xdp_info().cloned()
    }

    fn local_addr(&self) -> SocketAddr {
        let a = self
            .udp
            .as_ref()
            .map(|s| s.local_addr())
            .or_else(|| self.listener.as_ref().map(|l| l.local_addr()));
        a.expect("echo serves UDP or TCP").expect("bound socket has an address")
    }

    fn arm(&self) {
        if let Some(u) = &self.udp {
            u.recv_from_multishot(TOKEN_RECV)
                .expect("fresh shard accepts the first receive");
        }
        if let Some(l) = &self.listener {
            l.accept_multishot(TOKEN_ACCEPT)
                .expect("fresh shard accepts the first accept");
        }
    }

    fn delivery_for(&self, key: u64) -> Delivery {
        match &self.delivery {
            Delivery::Port { port, .. } => Delivery::Port {
                port: port.clone(),
                key,
            },
            Delivery::Poll { .. } => Delivery::Poll { key },
        }
    }

    fn handle(&mut self, c: Completion, stopping: bool) {
        match (c.key, c.op) {
            (KEY_UDP, OpKind::RecvFrom) => self.on_datagram(c, stopping),
            (KEY_LISTENER, OpKind::Accept) => self.on_accept(c, stopping),
            (k, OpKind::Recv) if k >= KEY_CONN0 => self.on_stream(c),
            (_, OpKind::Send | OpKind::SendTo) if c.result.is_err() => self.counters.reply_drops += 1,
            _ => {}
        }
    }

    fn on_datagram(&mut self, c: Completion, stopping: bool) {
        let sock = self.udp.as_ref().expect("UDP completion implies a UDP socket");
        if !c.more && !stopping && c.result != Err(Error::Aborted) {
            // The multishot receive ended (an error): arm a new one.
            let _ = sock.recv_from_multishot(TOKEN_RECV);
        }
        let (Ok(_), Some(mut buf), Some(peer)) = (c.result, c.buffer, c.peer) else {
            return;
        };
        self.counters.requests += 1;
        if !sockperf::make_reply(&mut buf) {
            self.counters.ignored += 1;
            return;
        }
        match sock.send_to(buf, peer, TOKEN_SEND, self.zerocopy) {
            Ok(()) => self.counters.replies += 1,
            Err(_) => self.counters.reply_drops += 1,
        }
    }

    fn on_accept(&mut self, c: Completion, stopping: bool) {
        if !c.more && !stopping && c.result != Err(Error::Aborted) {
            if let Some(l) = &self.listener {
                let _ = l.accept_multishot(TOKEN_ACCEPT);
            }
        }
        let Some(fd) = c.accepted else { return };
        let slot = self.conns.iter().position(Option::is_none).unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        let key = KEY_CONN0 + slot as u64;
        let Ok(stream) = TcpStream::adopt(&self.shard, fd, self.delivery_for(key)) else {
            return;
        };
        let _ = stream.set_nodelay(true);
        if stream.recv_multishot(TOKEN_RECV).is_err() {
            return;
        }
        self.counters.connections += 1;
        self.conns[slot] = Some(Conn {
            stream,
            pending: Vec::with_capacity(sockperf::MESSAGE_LEN_MAX),
        });
    }

    fn on_stream(&mut self, c: Completion) {
        let slot = (c.key - KEY_CONN0) as usize;
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let data = match (c.result, c.buffer) {
            (Ok(n), Some(b)) if n > 0 => b,
            _ => {
                // EOF, error or cancel: the connection is done.
                if !c.more {
                    self.conns[slot] = None;
                }
                return;
            }
        };
        match serve_stream(conn, data, self.zerocopy, self.shard.pool(), &mut self.counters) {
            Ok(()) => {}
            Err(()) => {
                self.counters.bad_streams += 1;
                self.conns[slot] = None;
            }
        }
    }
}

/// Answers every complete sockperf message in the stream; a message that arrives whole in
/// one chunk is answered in place (its frame becomes the reply).
fn serve_stream(
    conn: &mut Conn,
    mut data: Buf,
    zerocopy: bool,
    pool: &porto::Pool,
    n: &mut EchoCounters,
) -> Result<(), ()> {
    if conn.pending.is_empty() && sockperf::stream_message_len(&data)? == Some(data.len()) {
        n.requests += 1;
        if !sockperf::make_reply(&mut data) {
            n.ignored += 1;
            return Ok(());
        }
        let r = if zerocopy {
            conn.stream.send_zc(data, TOKEN_SEND)
        } else {
            conn.stream.send(data, TOKEN_SEND)
        };
        return r.map(|()| n.replies += 1).map_err(|_| n.reply_drops += 1);
    }
    conn.pending.extend_from_slice(&data);
    drop(data);
    // A stream cannot skip a reply: running out of frames closes the connection.
    let stream = &conn.stream;
    let r = sockperf::answer_stream(&mut conn.pending, |msg| {
        let buf = pool.alloc_from(msg).map_err(|_| ())?;
        stream.send(buf, TOKEN_SEND).map_err(|_| ())
    });
    match r {
        Ok(a) => {
            n.requests += a.requests;
            n.replies += a.replies;
            n.ignored += a.requests - a.replies;
            Ok(())
        }
        Err(sockperf::StreamError::Reply(())) => {
            n.reply_drops += 1;
            Err(())
        }
        Err(sockperf::StreamError::Malformed) => Err(()),
    }
}

/// A running echo server.
pub struct EchoServer {
    pub addr: SocketAddr,
    pub info: Vec<ShardInfo>,
    /// What the AF_XDP sockets obtained (one per shard), when serving through AF_XDP.
    pub xdp: Vec<XdpInfo>,
    /// Shards serving UDP through kernel sockets although AF_XDP was asked for, and why.
    pub xdp_fallbacks: Vec<String>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<EchoCounters>>,
    /// Every shard, for its counters after the stop.
    shards: Vec<ShardHandle>,
    /// Port mode keeps the engine (its shard threads) alive until the app threads are done.
    engine: Option<Engine>,
}

impl std::fmt::Debug for EchoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoServer").field("addr", &self.addr).finish()
    }
}

impl EchoServer {
    /// Starts serving; `stop` ends it (the caller may share it with a signal handler).
    pub fn start(cfg: &EchoConfig, stop: Arc<AtomicBool>) -> Result<EchoServer, SetupError> {
        if cfg.poll {
            Self::start_polling(cfg, stop)
        } else {
            Self::start_port(cfg, stop)
        }
    }

    fn start_port(cfg: &EchoConfig, stop: Arc<AtomicBool>) -> Result<EchoServer, SetupError> {
        let engine = Engine::start(&cfg.engine)?;
        let mut addr = cfg.addr;
        let mut threads = Vec::new();
        let mut info = Vec::new();
        let mut xdp = Vec::new();
        let mut xdp_fallbacks = Vec::new();
        let mut apps = Vec::new();
        let mut shards = Vec::new();
        for (i, h) in engine.shards().iter().enumerate() {
            let port = CompletionPort::new(1, cfg.engine.cq_entries as usize * 4);
            let app = EchoApp::new(
                h.clone(),
                i,
                cfg,
                addr,
                Delivery::Port {
                    port: port.clone(),
                    key: 0,
                },
            )?;
            addr = app.local_addr();
            info.push(h.info().expect("started shard has info").clone());
            shards.push(h.clone());
            xdp.extend(app.xdp_info());
            xdp_fallbacks.extend(app.xdp_fallback.clone());
            apps.push((app, port));
        }
        for (i, (mut app, port)) in apps.into_iter().enumerate() {
            let stop = stop.clone();
            let core = cfg.engine.pin.then(|| cfg.engine.core_of(i));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("porto-echo-{i}"))
                    .spawn(move || {
                        if let Some(c) = core {
                            core_affinity::set_for_current(core_affinity::CoreId { id: c });
                        }
                        let mut out = Vec::with_capacity(BATCH);
                        while !stop.load(Ordering::Relaxed) {
                            port.dequeue(&mut out, BATCH, Some(Duration::from_millis(50)));
                            for c in out.drain(..) {
                                app.handle(c, false);
                            }
                        }
                        app.counters
                    })
                    .map_err(|source| SetupError::Syscall {
                        what: "spawning an echo thread",
                        source,
                    })?,
            );
        }
        Ok(EchoServer {
            addr,
            info,
            xdp,
            xdp_fallbacks,
            stop,
            threads,
            shards,
            engine: Some(engine),
        })
    }

    fn start_polling(cfg: &EchoConfig, stop: Arc<AtomicBool>) -> Result<EchoServer, SetupError> {
        let mut addr = cfg.addr;
        let mut threads = Vec::new();
        let mut info = Vec::new();
        let mut xdp = Vec::new();
        let mut xdp_fallbacks = Vec::new();
        let mut shards = Vec::new();
        for i in 0..cfg.engine.shards {
            let (tx, rx) = mpsc::sync_channel(1);
            let c = cfg.clone();
            let stop_flag = stop.clone();
            let core = cfg.engine.pin.then(|| cfg.engine.core_of(i));
            let t = std::thread::Builder::new()
                .name(format!("porto-poll-{i}"))
                .spawn(move || {
                    let stop = stop_flag;
                    let started = Shard::new(&c.engine, core).and_then(|shard| {
                        let app = EchoApp::new(shard.handle(), i, &c, addr, Delivery::Poll { key: 0 })?;
                        Ok((shard, app))
                    });
                    let (mut shard, mut app) = match started {
                        Ok((s, a)) => {
                            let _ = tx.send(Ok((a.local_addr(), s.handle(), a.xdp_info(), a.xdp_fallback.clone())));
                            (s, a)
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return EchoCounters::default();
                        }
                    };
                    let mut out = Vec::with_capacity(BATCH);
                    while !stop.load(Ordering::Relaxed) {
                        shard.poll(&mut out, BATCH);
                        for c in out.drain(..) {
                            app.handle(c, false);
                        }
                    }
                    let counters = app.counters;
                    // Sockets first (their ops end Aborted), then the shard.
                    drop(app);
                    drop(shard);
                    counters
                })
                .map_err(|source| SetupError::Syscall {
                    what: "spawning a polling shard",
                    source,
                })?;
            threads.push(t);
            match rx.recv() {
                Ok(Ok((a, h, x, f))) => {
                    addr = a;
                    info.extend(h.info().cloned());
                    shards.push(h);
                    xdp.extend(x);
                    xdp_fallbacks.extend(f);
                }
                Ok(Err(e)) => {
                    stop.store(true, Ordering::Relaxed);
                    threads.into_iter().for_each(|t| drop(t.join()));
                    return Err(e);
                }
                Err(_) => return Err(SetupError::Stopped),
            }
        }
        Ok(EchoServer {
            addr,
            info,
            xdp,
            xdp_fallbacks,
            stop,
            threads,
            shards,
            engine: None,
        })
    }

    /// Stops, joins every thread, and returns the summed counters.
    pub fn stop(mut self) -> EchoCounters {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = EchoCounters::default();
        for t in self.threads.drain(..) {
            if let Ok(c) = t.join() {
                total.add(&c);
            }
        }
        drop(self.engine.take());
        for h in &self.shards {
            total.drops.add(h.stats());
        }
        total
    }
}
