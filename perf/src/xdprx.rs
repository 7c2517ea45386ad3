//! `porto bench xdp-rx`: 64-byte UDP receive rate through AF_XDP vs a kernel UDP socket
//! reading with recvmmsg, on the same veth pair between two namespaces this run creates.
//!
//! The sender (namespace A, porto's AF_XDP TX path in copy mode) runs on the client CPU and
//! sends as fast as it can, the same way for both receivers; the receiver
//! (namespace B) runs on the server CPU. The figure that matters is datagrams delivered per
//! busy CPU-second of the receiving thread (its own CPU time, from
//! /proc/thread-self/schedstat). The kernel baseline always runs with no XDP program on the
//! veth (attaching one slows the kernel path): each round runs the kernel first, then
//! attaches XDP for the AF_XDP run, which detaches it again when it ends.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use porto::netns::{Side, Topology};
use porto::wire::MacAddr;
use porto::{recv_batch, Config, Delivery, OpKind, Shard, XdpOptions, XdpUdpSocket};
use serde::Serialize;

use crate::kernel::pin;

const PORT: u16 = 7100;
pub const KERNEL: &str = "kernel recvmmsg";
pub const AF_XDP: &str = "porto AF_XDP";
pub const AF_XDP_COALESCED: &str = "porto AF_XDP rx-coalesce";
/// The throughput setting: read the RX ring in batches of 64, or after 200 µs.
const COALESCE: (u32, Duration) = (64, Duration::from_micros(200));
const PAYLOAD: usize = 64 - 42;

/// One receiver's run.
#[derive(Clone, Debug, Serialize)]
pub struct RxRun {
    pub receiver: &'static str,
    pub round: usize,
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
    pub receiver_cpu_s: f64,
    pub pps: f64,
    pub pps_per_cpu_s: f64,
    /// Datagrams per productive receive call (recvmmsg, or shard poll).
    pub batch_mean: f64,
}

/// CPU time of the calling thread, in ns (schedstat's first field).
pub(crate) fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Sends from namespace A through porto's own AF_XDP TX path until `stop` (a kernel UDP
/// socket tops out near 0.3 Mpps here, too slow to load an AF_XDP receiver); returns
/// datagrams the kernel confirmed sent.
fn sender(
    t: &Topology,
    core: Option<usize>,
    stop: &AtomicBool,
    go: &AtomicBool,
    dst_mac: MacAddr,
) -> Result<u64, String> {
    t.enter(Side::A).map_err(|e| e.to_string())?;
    let mut shard = polling_shard(core)?;
    let h = shard.handle();
    let local = SocketAddrV4::new(t.addr(Side::A), PORT + 1);
    let sock = XdpUdpSocket::bind(&h, local, &XdpOptions::new(t.iface(Side::A)), Delivery::Poll { key: 0 })
        .map_err(|e| e.to_string())?;
    let to = SocketAddr::from((t.addr(Side::B), PORT));
    sock.add_neighbor(t.addr(Side::B), dst_mac).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(256);
    let mut sent = 0;
    // The receiver's clock starts now, not while this side was still setting up.
    go.store(true, Ordering::Release);
    while !stop.load(Ordering::Relaxed) {
        for _ in 0..64 {
            let Ok(mut b) = h.pool().alloc_with_headroom(porto::wire::UDP_HEADERS_LEN) else {
                break;
            };
            b.set_len(PAYLOAD);
            b.fill(0x5a);
            if sock.send_to(b, to, 1).is_err() {
                break;
            }
        }
        shard.poll(&mut out, 256);
        sent += out
            .drain(..)
            .filter(|c| c.op == OpKind::SendTo && c.result.is_ok())
            .count() as u64;
    }
    Ok(sent)
}

/// A polling-mode shard with room for an AF_XDP FILL ring beside the io_uring buffer ring.
fn polling_shard(core: Option<usize>) -> Result<Shard, String> {
    let cfg = Config {
        pin: false,
        frames_per_shard: 8192,
        recv_frames: 1024,
        huge_pages: false,
        ..Config::default()
    };
    Shard::new(&cfg, core).map_err(|e| e.to_string())
}

/// Waits (bounded) until the sender is sending.
fn wait_for(go: &AtomicBool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !go.load(Ordering::Acquire) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// (received, busy CPU s, productive calls).
type RxOutcome = (u64, f64, u64);

fn kernel_receiver(t: &Topology, core: Option<usize>, seconds: f64, ready: &AtomicBool, go: &AtomicBool) -> RxOutcome {
    t.enter(Side::B).expect("enter namespace B");
    pin(core);
    let s = UdpSocket::bind(SocketAddr::from((t.addr(Side::B), PORT))).expect("bind in B");
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut lens = vec![0usize; 64];
    ready.store(true, Ordering::Release);
    wait_for(go);
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut got, mut calls) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        let n = recv_batch(&s, &mut bufs, &mut lens, Some(Duration::from_millis(20))).unwrap_or(0) as u64;
        got += n;
        calls += u64::from(n > 0);
    }
    (got, (thread_cpu_ns() - c0) as f64 / 1e9, calls)
}

fn xdp_receiver(
    t: &Topology,
    core: Option<usize>,
    seconds: f64,
    coalesce: Option<(u32, Duration)>,
    ready: &AtomicBool,
    go: &AtomicBool,
) -> Result<RxOutcome, String> {
    t.enter(Side::B).map_err(|e| e.to_string())?;
    let mut shard = polling_shard(core)?;
    let local = SocketAddrV4::new(t.addr(Side::B), PORT);
    let sock = XdpUdpSocket::bind(
        &shard.handle(),
        local,
        &XdpOptions {
            rx_coalesce: coalesce,
            ..XdpOptions::new(t.iface(Side::B))
        },
        Delivery::Poll { key: 0 },
    )
    .map_err(|e| e.to_string())?;
    sock.recv_from_multishot(1).map_err(|e| e.to_string())?;
    ready.store(true, Ordering::Release);
    wait_for(go);
    let mut out = Vec::with_capacity(256);
    let (t0, c0) = (Instant::now(), thread_cpu_ns());
    let (mut got, mut empty_ns, mut calls) = (0u64, 0u64, 0u64);
    while t0.elapsed().as_secs_f64() < seconds {
        let p0 = Instant::now();
        shard.poll(&mut out, 256);
        let n = out
            .drain(..)
            .filter(|c| c.op == OpKind::RecvFrom && c.result.is_ok())
            .count() as u64;
        if n == 0 {
            // A poll that found nothing is the poller's way of sleeping: not busy time.
            empty_ns += p0.elapsed().as_nanos() as u64;
        } else {
            calls += 1;
        }
        got += n;
    }
    let cpu = thread_cpu_ns() - c0;
    Ok((got, cpu.saturating_sub(empty_ns) as f64 / 1e9, calls))
}

/// Runs `rounds` interleaved rounds (kernel, then AF_XDP) of `seconds` each.
pub fn run(
    seconds: f64,
    rounds: usize,
    server_core: Option<usize>,
    client_core: Option<usize>,
) -> Result<Vec<RxRun>, String> {
    let t = Topology::create("porto-b", 1).map_err(|e| e.to_string())?;
    let vb_mac = std::thread::scope(|s| {
        s.spawn(|| {
            t.enter(Side::B).map_err(|e| e.to_string())?;
            porto::netns::mac_of(t.iface(Side::B)).map_err(|e| e.to_string())
        })
        .join()
        .expect("mac lookup thread")
    })?;
    let mut runs = Vec::new();
    for round in 0..rounds {
        for receiver in [KERNEL, AF_XDP, AF_XDP_COALESCED] {
            let stop = AtomicBool::new(false);
            let ready = AtomicBool::new(false);
            let go = AtomicBool::new(false);
            let sent = AtomicU64::new(0);
            let r = std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    let r = if receiver != KERNEL {
                        let coalesce = (receiver == AF_XDP_COALESCED).then_some(COALESCE);
                        xdp_receiver(&t, server_core, seconds, coalesce, &ready, &go)
                    } else {
                        Ok(kernel_receiver(&t, server_core, seconds, &ready, &go))
                    };
                    ready.store(true, Ordering::Release);
                    stop.store(true, Ordering::Relaxed);
                    r
                });
                while !ready.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let tx = s.spawn(|| {
                    let r = sender(&t, client_core, &stop, &go, vb_mac);
                    // A sender that failed must not leave the receiver waiting.
                    go.store(true, Ordering::Release);
                    r
                });
                let r = rx.join().expect("receiver thread");
                stop.store(true, Ordering::Relaxed);
                sent.store(tx.join().expect("sender thread")?, Ordering::Relaxed);
                r
            })?;
            let (received, cpu, calls) = r;
            runs.push(RxRun {
                receiver,
                round,
                sent: sent.load(Ordering::Relaxed),
                received,
                seconds,
                receiver_cpu_s: cpu,
                pps: received as f64 / seconds,
                pps_per_cpu_s: if cpu > 0.0 { received as f64 / cpu } else { 0.0 },
                batch_mean: received as f64 / calls.max(1) as f64,
            });
        }
    }
    Ok(runs)
}
