//! `porto bench qos`: Control-class ping-pong latency with no load, then while BestEffort
//! traffic offers 150 % of what the path carries, on loopback.
//!
//! The path's capacity is the shard's egress link rate (`ShardHandle::set_link_rate`): on
//! loopback nothing else is a bottleneck, and the kernel's qdiscs (prio, mqprio, fq) are
//! not available on this machine, so the bottleneck the scheduler orders traffic for is
//! porto's own, as a NIC's line rate would be. One polling-mode shard on the client CPU
//! runs both sockets: bulk (1000-byte datagrams to a sink nobody reads, open loop at 150 %
//! of the link) and pings (64-byte sockperf requests to a kernel echo thread on the server
//! CPU, one outstanding, paced). Three phases: unloaded; loaded with the ping socket on a
//! Control flow; loaded with the ping socket on BestEffort like the bulk (what QoS buys).

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use porto::qos::TrafficType;
use porto::{Config, Delivery, OpKind, Shard, SocketOptions, UdpSocket};
use serde::Serialize;

use crate::kernel::KernelEcho;
use crate::sockperf;

const PING_LEN: usize = 64;
/// A ping with no reply after this long counts as lost.
const PING_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, Serialize)]
pub struct Setup {
    pub link_bps: u64,
    pub bulk_len: usize,
    /// Offered bulk load as a share of the link (1.5 = 150 %).
    pub offered: f64,
    pub seconds: f64,
    /// Pings per second (one outstanding at a time).
    pub ping_rate: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub pings: u64,
    pub lost: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Bulk datagrams offered, sent, refused by the full BestEffort queue.
    pub bulk_offered: u64,
    pub bulk_sent: u64,
    pub bulk_dropped: u64,
    /// Bulk bits per second that left (≈ the link rate when loaded).
    pub bulk_bps: f64,
    /// Scheduler drops per class during the phase (Control, Voice, AudioVideo,
    /// ExcellentEffort, BestEffort, Background).
    pub class_drops: Vec<(String, u64)>,
    /// Latency percentiles for plotting: (percentile, µs).
    pub curve: Vec<(f64, f64)>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn run(
    setup: &Setup,
    server_core: Option<usize>,
    client_core: Option<usize>,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<Phase>, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let echo = KernelEcho::udp("127.0.0.1:0".parse().expect("address"), server_core, stop.clone())
        .map_err(|e| e.to_string())?;
    let sink = StdUdp::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let cfg = Config {
        pin: false,
        frames_per_shard: 8192,
        recv_frames: 1024,
        huge_pages: false,
        ..Config::default()
    };
    let mut shard = Shard::new(&cfg, client_core).map_err(|e| e.to_string())?;
    let h = shard.handle();
    h.set_link_rate(Some(setup.link_bps), (2 * setup.bulk_len) as u64)
        .map_err(|e| e.to_string())?;
    let lo: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let opts = SocketOptions {
        send_buffer: Some(4 << 20),
        ..SocketOptions::default()
    };
    let bulk = UdpSocket::bind(&h, lo, &opts, Delivery::Poll { key: 1 }).map_err(|e| e.to_string())?;
    let ping = UdpSocket::bind(&h, lo, &opts, Delivery::Poll { key: 2 }).map_err(|e| e.to_string())?;
    let flow = |t| h.create_flow(t, None).map_err(|e| e.to_string());
    bulk.set_flow(&flow(TrafficType::BestEffort)?)
        .map_err(|e| e.to_string())?;
    let control = flow(TrafficType::Control)?;
    let best_effort = flow(TrafficType::BestEffort)?;
    ping.recv_from_multishot(1).map_err(|e| e.to_string())?;
    let phases = [
        ("unloaded (Control)", 0.0, &control),
        ("150% BestEffort load, ping on Control", setup.offered, &control),
        (
            "150% BestEffort load, ping on BestEffort (no QoS)",
            setup.offered,
            &best_effort,
        ),
    ];
    let mut out = Vec::new();
    for (name, offered, ping_flow) in phases {
        progress.set_message(name);
        ping.set_flow(ping_flow).map_err(|e| e.to_string())?;
        let p = phase(
            &mut shard,
            &bulk,
            &ping,
            echo.addr,
            sink.local_addr().map_err(|e| e.to_string())?,
            setup,
            name,
            offered,
        )?;
        out.push(p);
        progress.inc(1);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    echo.join();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn phase(
    shard: &mut Shard,
    bulk: &UdpSocket,
    ping: &UdpSocket,
    echo: SocketAddr,
    sink: SocketAddr,
    setup: &Setup,
    name: &'static str,
    offered: f64,
) -> Result<Phase, String> {
    let h = shard.handle();
    let drops0 = h.class_drops();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let bulk_pps = offered * setup.link_bps as f64 / (setup.bulk_len * 8) as f64;
    let ping_gap = Duration::from_secs_f64(1.0 / setup.ping_rate as f64);
    let (mut offered_n, mut sent, mut refused, mut pings, mut lost) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut seq = 0u64;
    let mut outstanding: Option<(u64, Instant)> = None;
    let mut next_ping = Instant::now();
    let mut out = Vec::with_capacity(256);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(setup.seconds);
    // Warm-up: the first 10 % is not measured.
    let warm = end / 10;
    let (mut sent_at_warm, mut warm_at) = (None, None);
    while t0.elapsed() < end {
        let now = Instant::now();
        let since = now - t0;
        if warm_at.is_none() && since >= warm {
            warm_at = Some(now);
            sent_at_warm = Some(sent);
        }
        // Bulk, open loop: everything due by now is offered now.
        let due = (since.as_secs_f64() * bulk_pps) as u64;
        while offered_n < due {
            let Ok(mut b) = h.pool().alloc() else { break };
            b.set_len(setup.bulk_len);
            b.fill(0xbb);
            if bulk.send_to(b, sink, 0).is_err() {
                break;
            }
            offered_n += 1;
        }
        // One ping outstanding; a late one is lost.
        match outstanding {
            Some((_, at)) if now - at > PING_TIMEOUT => {
                outstanding = None;
                lost += 1;
            }
            None if now >= next_ping => {
                if let Ok(mut b) = h.pool().alloc() {
                    b.set_len(PING_LEN);
                    sockperf::write_request(&mut b, seq);
                    if ping.send_to(b, echo, 2).is_ok() {
                        outstanding = Some((seq, Instant::now()));
                        seq += 1;
                        next_ping = now + ping_gap;
                    }
                }
            }
            _ => {}
        }
        shard.poll(&mut out, 256);
        for c in out.drain(..) {
            match (c.key, c.op) {
                (1, OpKind::SendTo) => match c.result {
                    Ok(_) => sent += 1,
                    Err(_) => refused += 1,
                },
                (2, OpKind::RecvFrom) => {
                    let (Some(buf), Some((want, at))) = (c.buffer, outstanding) else {
                        continue;
                    };
                    if sockperf::is_reply(&buf) && sockperf::seq(&buf) == Some(want) {
                        if since >= warm {
                            let _ = hist.record((at.elapsed().as_nanos() as u64).max(1));
                            pings += 1;
                        }
                        outstanding = None;
                    }
                }
                _ => {}
            }
        }
    }
    let measured = warm_at.map_or(Duration::ZERO, |w| w.elapsed());
    let bulk_bps =
        (sent - sent_at_warm.unwrap_or(sent)) as f64 * (setup.bulk_len * 8) as f64 / measured.as_secs_f64().max(1e-9);
    // Let queued bulk drain before the next phase.
    let drain_until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < drain_until {
        shard.poll(&mut out, 256);
        out.clear();
    }
    let drops = h.class_drops();
    let class_drops = TrafficType::BY_PRIORITY
        .iter()
        .map(|&t| (format!("{t:?}"), drops[t as usize] - drops0[t as usize]))
        .collect();
    let curve = [50.0, 90.0, 99.0, 99.9, 99.99]
        .iter()
        .map(|&p| (p, us(hist.value_at_percentile(p))))
        .collect();
    Ok(Phase {
        name,
        pings,
        lost,
        p50_us: us(hist.value_at_quantile(0.5)),
        p99_us: us(hist.value_at_quantile(0.99)),
        p999_us: us(hist.value_at_quantile(0.999)),
        max_us: us(hist.max()),
        bulk_offered: offered_n,
        bulk_sent: sent,
        bulk_dropped: refused,
        bulk_bps,
        class_drops,
        curve,
    })
}
