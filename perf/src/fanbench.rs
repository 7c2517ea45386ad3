//! `porto bench fanout`: one multicast publisher, N subscribers; porto (one socket, one
//! receive, N shared-frame deliveries) against the kernel (N joined sockets, the kernel
//! clones every datagram N times), on loopback, in one run.
//!
//! The publisher (a porto polling shard sending as fast as it can, at most `IN_FLIGHT_MAX`
//! sends outstanding) runs on the client CPU; the receiver on the server CPU. Both receivers
//! busy-poll; an iteration that finds nothing counts as idle, not busy, time. Reported per N:
//! deliveries per second (datagrams handed to subscribers, summed over them), busy CPU per
//! published message on each side, one-way latency at the first subscriber, and the skew
//! between the first and the last subscriber receiving the same message (sampled: every
//! `SAMPLE_EVERY`-th message, counted only when all N got it).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use porto::fanout::{Policy, Subscription};
use porto::rio::RioNotify;
use porto::{recv_batch, Config, Delivery, Interface, Shard, SocketOptions, UdpSocket};
use serde::Serialize;

use crate::kernel::pin;
use crate::mcast::{latency_of, publisher, seq_of, stamp, HEADER_LEN};
use crate::xdprx::thread_cpu_ns;

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 77, 1);
const IN_FLIGHT_MAX: u64 = 256;
const SAMPLE_EVERY: u64 = 64;
const RING: usize = 1 << 14;

/// One receiver, one N, one round.
#[derive(Clone, Debug, Serialize)]
pub struct FanRun {
    pub receiver: &'static str,
    pub subscribers: usize,
    pub round: usize,
    pub seconds: f64,
    pub sent: u64,
    /// Deliveries to subscribers, summed.
    pub delivered: u64,
    pub delivered_per_s: f64,
    /// Messages received: porto, datagrams its group received; kernel, the most any one
    /// socket received (a lower bound of the distinct messages).
    pub messages: u64,
    pub receiver_busy_s: f64,
    pub sender_cpu_s: f64,
    /// Receiver busy ns per message received.
    pub receiver_ns_per_msg: f64,
    /// Sender ns per message sent (on loopback the kernel's per-socket clones happen here).
    pub sender_ns_per_msg: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub skew_p50_us: f64,
    pub skew_p99_us: f64,
    pub skew_samples: u64,
}

/// First arrival time and count of sampled messages, to measure first-to-last skew.
struct Skew {
    slots: Vec<(u64, Instant, u32)>,
    n: u32,
    hist: Histogram<u64>,
    latency: Histogram<u64>,
}

impl Skew {
    fn new(n: usize) -> Skew {
        let now = Instant::now();
        Skew {
            slots: vec![(u64::MAX, now, 0); RING],
            n: n as u32,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds"),
        }
    }

    fn see(&mut self, msg: &[u8]) {
        let Some(seq) = seq_of(msg) else { return };
        if seq % SAMPLE_EVERY != 0 {
            return;
        }
        let slot = &mut self.slots[(seq / SAMPLE_EVERY) as usize % RING];
        if slot.0 != seq {
            *slot = (seq, Instant::now(), 1);
            let _ = self.latency.record(latency_of(msg).max(1));
        } else {
            slot.2 += 1;
        }
        if slot.2 == self.n {
            let _ = self.hist.record((slot.1.elapsed().as_nanos() as u64).max(1));
        }
    }
}

struct RxResult {
    delivered: u64,
    messages: u64,
    busy_s: f64,
    skew: Skew,
}

fn kernel_receiver(port: u16, n: usize, seconds: f64, ready: &AtomicBool, go: &AtomicBool) -> Result<RxResult, String> {
    let opts = SocketOptions {
        reuse_port: true,
        recv_buffer: Some(1 << 20),
        ..SocketOptions::default()
    };
    let socks: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| {
            let s = opts
                .bind_kernel_udp(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
                .map_err(|e| e.to_string())?;
            s.join_multicast_v4(&GROUP, &Ipv4Addr::LOCALHOST)
                .map_err(|e| e.to_string())?;
            Ok(s)
        })
        .collect::<Result<_, String>>()?;
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut lens = vec![0usize; 64];
    let mut skew = Skew::new(n);
    ready.store(true, Ordering::Release);
    wait_for(go);
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut delivered, mut idle_ns) = (0u64, 0u64);
    let mut per_socket = vec![0u64; n];
    while t0.elapsed().as_secs_f64() < seconds {
        let p0 = Instant::now();
        let mut any = 0;
        for (i, s) in socks.iter().enumerate() {
            let got = recv_batch(s, &mut bufs, &mut lens, Some(Duration::ZERO)).unwrap_or(0);
            for (b, &l) in bufs.iter().zip(&lens).take(got) {
                skew.see(&b[..l]);
            }
            per_socket[i] += got as u64;
            any += got;
        }
        delivered += any as u64;
        if any == 0 {
            idle_ns += p0.elapsed().as_nanos() as u64;
        }
    }
    let busy = (thread_cpu_ns() - c0).saturating_sub(idle_ns);
    Ok(RxResult {
        delivered,
        messages: per_socket.iter().copied().max().unwrap_or(0),
        busy_s: busy as f64 / 1e9,
        skew,
    })
}

fn porto_receiver(
    port: u16,
    n: usize,
    seconds: f64,
    core: Option<usize>,
    ready: &AtomicBool,
    go: &AtomicBool,
) -> Result<RxResult, String> {
    let mut shard = Shard::new(&config(), core).map_err(|e| e.to_string())?;
    let h = shard.handle();
    let sock = UdpSocket::bind(
        &h,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        &SocketOptions {
            recv_buffer: Some(8 << 20),
            ..SocketOptions::default()
        },
        Delivery::Poll { key: 1 },
    )
    .map_err(|e| e.to_string())?;
    sock.join(GROUP.into(), Some(Interface::V4(Ipv4Addr::LOCALHOST)))
        .map_err(|e| e.to_string())?;
    let fan = sock.fan_out(1).map_err(|e| e.to_string())?;
    let mut subs: Vec<Subscription> = (0..n)
        .map(|_| fan.subscribe(Policy::Lossy, 4096, RioNotify::None))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(256);
    shard.poll(&mut out, 64);
    let mut skew = Skew::new(n);
    ready.store(true, Ordering::Release);
    wait_for(go);
    let received0 = fan.counters().received;
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut delivered, mut idle_ns) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        let p0 = Instant::now();
        shard.poll(&mut out, 256);
        out.clear();
        let mut any = 0u64;
        for s in &mut subs {
            while let Some(d) = s.try_recv() {
                skew.see(&d.buf);
                any += 1;
            }
        }
        delivered += any;
        if any == 0 {
            idle_ns += p0.elapsed().as_nanos() as u64;
        }
    }
    let busy = (thread_cpu_ns() - c0).saturating_sub(idle_ns);
    Ok(RxResult {
        delivered,
        messages: fan.counters().received - received0,
        busy_s: busy as f64 / 1e9,
        skew,
    })
}

fn config() -> Config {
    Config {
        pin: false,
        frames_per_shard: 16384,
        recv_frames: 4096,
        huge_pages: false,
        ..Config::default()
    }
}

fn wait_for(go: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !go.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sends `size`-byte sequenced messages to the group until `stop`; returns (sent, CPU s).
fn sender(
    port: u16,
    size: usize,
    core: Option<usize>,
    stop: &AtomicBool,
    go: &AtomicBool,
) -> Result<(u64, f64), String> {
    let mut shard = Shard::new(&config(), core).map_err(|e| e.to_string())?;
    let h = shard.handle();
    let to = SocketAddr::V4(SocketAddrV4::new(GROUP, port));
    let sock = publisher(&h, &to, None, Interface::V4(Ipv4Addr::LOCALHOST), 1).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(256);
    let (mut seq, mut done) = (0u64, 0u64);
    let c0 = thread_cpu_ns();
    go.store(true, Ordering::Release);
    while !stop.load(Ordering::Relaxed) {
        while seq - done < IN_FLIGHT_MAX {
            let Ok(mut b) = h.pool().alloc() else { break };
            b.set_len(size);
            stamp(&mut b, seq);
            if sock.send_to(b, to, 0).is_err() {
                break;
            }
            seq += 1;
        }
        shard.poll(&mut out, 256);
        done += out.drain(..).filter(|c| c.result.is_ok()).count() as u64;
    }
    Ok((done, (thread_cpu_ns() - c0) as f64 / 1e9))
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_or(47000, |a| a.port())
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Runs every N for both receivers, interleaved, `rounds` times.
pub fn run(
    subscribers: &[usize],
    size: usize,
    seconds: f64,
    rounds: usize,
    server_core: Option<usize>,
    client_core: Option<usize>,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<FanRun>, String> {
    let size = size.max(HEADER_LEN);
    let mut runs = Vec::new();
    for round in 0..rounds {
        for &n in subscribers {
            for receiver in ["kernel", "porto"] {
                progress.set_message(format!("round {round}, N={n}, {receiver}"));
                let port = free_port();
                let (ready, go, stop) = (AtomicBool::new(false), AtomicBool::new(false), AtomicBool::new(false));
                let sent = AtomicU64::new(0);
                let (rx, sender_cpu) = std::thread::scope(|s| {
                    let rx = s.spawn(|| {
                        let r = if receiver == "porto" {
                            porto_receiver(port, n, seconds, server_core, &ready, &go)
                        } else {
                            pin(server_core);
                            kernel_receiver(port, n, seconds, &ready, &go)
                        };
                        ready.store(true, Ordering::Release);
                        stop.store(true, Ordering::Relaxed);
                        r
                    });
                    while !ready.load(Ordering::Acquire) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    let tx = s.spawn(|| {
                        let r = sender(port, size, client_core, &stop, &go);
                        go.store(true, Ordering::Release);
                        r
                    });
                    let rx = rx.join().expect("receiver thread");
                    stop.store(true, Ordering::Relaxed);
                    let (n_sent, cpu) = tx.join().expect("sender thread")?;
                    sent.store(n_sent, Ordering::Relaxed);
                    Ok::<_, String>((rx?, cpu))
                })?;
                let sent = sent.load(Ordering::Relaxed);
                runs.push(FanRun {
                    receiver,
                    subscribers: n,
                    round,
                    seconds,
                    sent,
                    delivered: rx.delivered,
                    delivered_per_s: rx.delivered as f64 / seconds,
                    messages: rx.messages,
                    receiver_busy_s: rx.busy_s,
                    sender_cpu_s: sender_cpu,
                    receiver_ns_per_msg: rx.busy_s * 1e9 / rx.messages.max(1) as f64,
                    sender_ns_per_msg: sender_cpu * 1e9 / sent.max(1) as f64,
                    latency_p50_us: us(&rx.skew.latency, 0.5),
                    latency_p99_us: us(&rx.skew.latency, 0.99),
                    skew_p50_us: us(&rx.skew.hist, 0.5),
                    skew_p99_us: us(&rx.skew.hist, 0.99),
                    skew_samples: rx.skew.hist.len(),
                });
                progress.inc(1);
            }
        }
    }
    Ok(runs)
}

/// Least-squares slope of `y` over `x`.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}
