//! Load generators speaking sockperf's protocol, recording latency in HdrHistograms:
//! - [`PingPong`]: closed loop, one request outstanding (UDP or TCP);
//! - [`OpenLoop`]: UDP at a fixed offered rate, latency measured from each request's
//!   *intended* send time, so a stalled server is charged for every request it delayed
//!   (coordinated omission corrected, as wrk2 does);
//! - [`TcpFleet`]: many TCP connections, each closed-loop, driven by one epoll thread.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use porto::SocketOptions;

use crate::kernel::pin;
use crate::mcast::unix_ns;
use crate::sockperf;

pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// What a load generator measured.
#[derive(Debug)]
pub struct LoadResult {
    /// Replies inside the measured window.
    pub exchanges: u64,
    /// Replies over the whole run, warm-up included (the denominator for server CPU).
    pub all_replies: u64,
    pub elapsed: Duration,
    /// Latency in nanoseconds (round trip, or from intended send time for open loop).
    pub latency_ns: Histogram<u64>,
    /// Requests that got no reply (timed out, or still missing at the end).
    pub lost: u64,
    /// Round trips split at the reply's kernel receive stamp (UDP ping-pong): request sent →
    /// reply received by the client's kernel, and that → the client read it. Empty where
    /// the client had no stamps.
    pub to_kernel_ns: Histogram<u64>,
    pub to_app_ns: Histogram<u64>,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.exchanges as f64 / self.elapsed.as_secs_f64()
    }
}

fn udp_client(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: SocketAddr = if target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .expect("literal");
    // Kernel receive stamps on: the ping-pong splits each round trip at them.
    let s = SocketOptions {
        timestamps: true,
        ..SocketOptions::default()
    }
    .bind_kernel_udp(local)
    .map_err(std::io::Error::other)?;
    s.set_nonblocking(false)?;
    s.connect(target)?;
    Ok(s)
}

#[derive(Clone, Debug)]
pub struct PingPong {
    pub udp: bool,
    pub target: SocketAddr,
    pub msg_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub core: Option<usize>,
}

/// Sends one request and waits for its reply: `Ok(None)` when none came in time, else the
/// reply's kernel receive stamp if it had one.
type Exchange = dyn FnMut(&mut [u8], &mut [u8], u64) -> std::io::Result<Option<Option<u64>>>;

const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

impl PingPong {
    pub fn run(&self) -> std::io::Result<LoadResult> {
        pin(self.core);
        let size = self.msg_size.max(sockperf::HEADER_LEN);
        let mut req = vec![0u8; size];
        let mut rsp = vec![0u8; size.max(65536)];
        let mut hist = histogram();
        let (mut to_kernel, mut to_app) = (histogram(), histogram());
        let mut exchange: Box<Exchange> = if self.udp {
            let s = udp_client(self.target)?;
            s.set_read_timeout(Some(REPLY_TIMEOUT))?;
            Box::new(move |req, rsp, seq| {
                s.send(req)?;
                loop {
                    match SocketOptions::recv_stamped(&s, rsp) {
                        Ok((n, at)) if sockperf::is_reply(&rsp[..n]) && sockperf::seq(&rsp[..n]) == Some(seq) => {
                            return Ok(Some(at.map(|t| t.get())))
                        }
                        Ok(_) => continue,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
            })
        } else {
            let mut s = TcpStream::connect_timeout(&self.target, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Box::new(move |req, rsp, seq| {
                s.write_all(req)?;
                let n = req.len();
                s.read_exact(&mut rsp[..n])?;
                if sockperf::seq(&rsp[..n]) != Some(seq) {
                    return Err(std::io::Error::other("out-of-sequence TCP reply"));
                }
                Ok(Some(None))
            })
        };
        let measure_from = Instant::now() + self.warmup;
        let end = measure_from + self.duration;
        let (mut seq, mut exchanges, mut all, mut lost) = (0u64, 0, 0, 0);
        while Instant::now() < end {
            seq += 1;
            sockperf::write_request(&mut req, seq);
            let (t0, sent_ns) = (Instant::now(), unix_ns());
            let reply = exchange(&mut req, &mut rsp, seq)?;
            let (rtt, read_ns) = (t0.elapsed(), unix_ns());
            all += u64::from(reply.is_some());
            if t0 < measure_from {
                continue;
            }
            match reply {
                Some(stamp) => {
                    exchanges += 1;
                    hist.record(rtt.as_nanos().max(1) as u64)
                        .expect("rtt within histogram bounds");
                    if let Some(at) = stamp {
                        let _ = to_kernel.record(at.saturating_sub(sent_ns).max(1));
                        let _ = to_app.record(read_ns.saturating_sub(at).max(1));
                    }
                }
                None => lost += 1,
            }
        }
        Ok(LoadResult {
            exchanges,
            all_replies: all,
            elapsed: self.duration,
            latency_ns: hist,
            lost,
            to_kernel_ns: to_kernel,
            to_app_ns: to_app,
        })
    }
}

/// Bytes 14..22 of an open-loop request carry its intended send time (ns since start).
const STAMP: std::ops::Range<usize> = 14..22;
/// Smallest open-loop message: header plus the stamp.
pub const OPEN_LOOP_MIN_SIZE: usize = STAMP.end;

#[derive(Clone, Debug)]
pub struct OpenLoop {
    pub target: SocketAddr,
    pub msg_size: usize,
    /// Offered requests per second.
    pub rate: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub core: Option<usize>,
}

impl OpenLoop {
    pub fn run(&self) -> std::io::Result<LoadResult> {
        pin(self.core);
        let s = udp_client(self.target)?;
        s.set_nonblocking(true)?;
        let mut req = vec![0u8; self.msg_size.max(OPEN_LOOP_MIN_SIZE)];
        let mut rsp = vec![0u8; 65536];
        let mut hist = histogram();
        let interval_ns = 1_000_000_000 / self.rate.max(1);
        let start = Instant::now();
        let warmup_ns = self.warmup.as_nanos() as u64;
        let end_ns = warmup_ns + self.duration.as_nanos() as u64;
        // Replies may trail the last request by a little.
        let drain_until = Duration::from_nanos(end_ns) + Duration::from_millis(200);
        let (mut seq, mut next_ns, mut sent_measured, mut exchanges, mut all) = (0u64, 0u64, 0u64, 0u64, 0u64);
        loop {
            let now = start.elapsed();
            if now >= drain_until || (now.as_nanos() as u64 >= end_ns && exchanges >= sent_measured) {
                break;
            }
            let now_ns = now.as_nanos() as u64;
            while next_ns <= now_ns && next_ns < end_ns {
                seq += 1;
                sockperf::write_request(&mut req, seq);
                req[STAMP].copy_from_slice(&next_ns.to_be_bytes());
                // A full socket buffer is the client's limit, not the server's: retry.
                while let Err(e) = s.send(&req) {
                    if e.kind() != ErrorKind::WouldBlock {
                        return Err(e);
                    }
                }
                if next_ns >= warmup_ns {
                    sent_measured += 1;
                }
                next_ns += interval_ns;
            }
            loop {
                match s.recv(&mut rsp) {
                    Ok(n) if n >= OPEN_LOOP_MIN_SIZE && sockperf::is_reply(&rsp[..n]) => {
                        let intended = u64::from_be_bytes(rsp[STAMP].try_into().expect("8 bytes"));
                        all += 1;
                        if intended >= warmup_ns {
                            let lat = (start.elapsed().as_nanos() as u64).saturating_sub(intended).max(1);
                            hist.record(lat).expect("latency within histogram bounds");
                            exchanges += 1;
                        }
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(LoadResult {
            exchanges,
            all_replies: all,
            elapsed: self.duration,
            latency_ns: hist,
            lost: sent_measured.saturating_sub(exchanges),
            to_kernel_ns: histogram(),
            to_app_ns: histogram(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct TcpFleet {
    pub target: SocketAddr,
    pub connections: usize,
    pub msg_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub core: Option<usize>,
}

struct FleetConn {
    stream: mio::net::TcpStream,
    sent_at: Instant,
    seq: u64,
    got: usize,
}

impl TcpFleet {
    pub fn run(&self) -> std::io::Result<LoadResult> {
        pin(self.core);
        let size = self.msg_size.max(sockperf::HEADER_LEN);
        let mut poll = Poll::new()?;
        let mut conns = HashMap::with_capacity(self.connections);
        let mut req = vec![0u8; size];
        for i in 0..self.connections {
            let s = TcpStream::connect_timeout(&self.target, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_nonblocking(true)?;
            let mut stream = mio::net::TcpStream::from_std(s);
            poll.registry().register(&mut stream, Token(i), Interest::READABLE)?;
            conns.insert(
                i,
                FleetConn {
                    stream,
                    sent_at: Instant::now(),
                    seq: 0,
                    got: 0,
                },
            );
        }
        let send = |c: &mut FleetConn, req: &mut [u8]| -> std::io::Result<()> {
            c.seq += 1;
            c.got = 0;
            sockperf::write_request(req, c.seq);
            c.sent_at = Instant::now();
            let mut at = 0;
            while at < req.len() {
                match c.stream.write(&req[at..]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        for c in conns.values_mut() {
            send(c, &mut req)?;
        }
        let mut hist = histogram();
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 65536];
        let measure_from = Instant::now() + self.warmup;
        let end = measure_from + self.duration;
        let (mut exchanges, mut all) = (0u64, 0u64);
        while Instant::now() < end {
            poll.poll(&mut events, Some(Duration::from_millis(10)))?;
            for ev in events.iter() {
                let c = conns.get_mut(&ev.token().0).expect("registered token");
                loop {
                    match c.stream.read(&mut buf[..size - c.got]) {
                        Ok(0) => return Err(std::io::Error::other("server closed a connection")),
                        Ok(n) => {
                            c.got += n;
                            if c.got < size {
                                continue;
                            }
                            let now = Instant::now();
                            all += 1;
                            if c.sent_at >= measure_from {
                                exchanges += 1;
                                hist.record((now - c.sent_at).as_nanos().max(1) as u64).expect("bounds");
                            }
                            if now < end {
                                send(c, &mut req)?;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(LoadResult {
            exchanges,
            all_replies: all,
            elapsed: self.duration,
            latency_ns: hist,
            lost: 0,
            to_kernel_ns: histogram(),
            to_app_ns: histogram(),
        })
    }
}
