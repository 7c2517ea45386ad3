//! `porto bench xdp-rx`: 64-byte UDP receive rate through AF_XDP vs a kernel UDP socket
//! reading with recvmmsg, on the same veth pair between two namespaces this run creates.
//!
//! The sender (namespace A, porto's AF_XDP TX path in copy mode) runs on the client CPU and
//! sends as fast as it can, the same way for every receiver. Everything the receive side
//! does runs on the server CPU, as on a NIC whose queue interrupt is on the application's
//! core: the receiving veth runs threaded NAPI (GRO on, so the kernel path uses NAPI too)
//! with its NAPI thread pinned to the server CPU. That thread does the kernel's share — the
//! whole IP/UDP stack and socket enqueue for the kernel receiver; the XDP program and the
//! copy into the UMEM for AF_XDP — and the receiving thread does the rest. Both receivers
//! sleep when there is nothing to read (recvmmsg with a timeout; [`Shard::wait`]), so the
//! CPU's idle time is real idle time.
//!
//! The figure: datagrams delivered per CPU-second of receive work, the NAPI thread's and
//! the receiving thread's CPU time (schedstat, to the nanosecond). The server CPU's busy
//! time from /proc/stat (user, nice, system, irq, softirq) is reported beside it as a
//! cross-check that nothing else worked there; it is sampled at the tick, and a receiver
//! whose sleeps are timers can dodge the samples. The kernel baseline runs with no XDP
//! program on the veth (attaching one slows the kernel path): each round runs the kernel
//! first, then attaches XDP for the AF_XDP runs, which detach it again when they end.

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
/// How long a receiver sleeps at most when there is nothing to read.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// One receiver's run.
#[derive(Clone, Debug, Serialize)]
pub struct RxRun {
    pub receiver: &'static str,
    pub round: usize,
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
    /// Busy seconds of the server CPU (/proc/stat, tick-sampled), everything on it.
    pub cpu_busy_s: f64,
    /// CPU seconds of the receive NAPI thread (the kernel's receive work).
    pub napi_s: f64,
    /// CPU seconds of the receiving thread.
    pub thread_s: f64,
    pub pps: f64,
    /// Datagrams delivered per CPU-second of receive work (NAPI + receiving thread): the
    /// figure.
    pub pps_per_cpu_s: f64,
    /// Datagrams per receiving-thread CPU second (the application side alone).
    pub pps_per_thread_s: f64,
    /// Datagrams per productive receive call (recvmmsg, or shard wait).
    pub batch_mean: f64,
}

/// CPU time of the calling thread, in ns (schedstat's first field).
pub(crate) fn thread_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
}

fn schedstat_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Busy time of `cpu` so far, in ns: /proc/stat's user, nice, system, irq and softirq
/// (idle, iowait and steal are not busy).
fn cpu_busy_ns(cpu: usize) -> Result<u64, String> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&format!("cpu{cpu}")))
        .ok_or_else(|| format!("no cpu{cpu} in /proc/stat"))?;
    let f: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    if f.len() < 7 {
        return Err(format!("short /proc/stat line: {line}"));
    }
    // The fields are in USER_HZ ticks: 100 a second (x86 and every architecture but alpha).
    Ok((f[0] + f[1] + f[2] + f[5] + f[6]) * 10_000_000)
}

/// The receive-side CPU accounting of one run: the server CPU, its NAPI threads and the
/// receiving thread.
struct CpuMeter {
    cpu: usize,
    napi: Vec<u32>,
    at: (u64, u64, u64),
}

impl CpuMeter {
    fn start(cpu: usize, napi: Vec<u32>) -> Result<CpuMeter, String> {
        let mut m = CpuMeter {
            cpu,
            napi,
            at: (0, 0, 0),
        };
        m.at = m.read()?;
        Ok(m)
    }

    fn read(&self) -> Result<(u64, u64, u64), String> {
        let napi = self
            .napi
            .iter()
            .map(|p| schedstat_ns(&format!("/proc/{p}/schedstat")))
            .sum();
        Ok((cpu_busy_ns(self.cpu)?, napi, thread_cpu_ns()))
    }

    /// (server CPU busy, NAPI threads, this thread) seconds since `start`.
    fn stop(&self) -> Result<(f64, f64, f64), String> {
        let now = self.read()?;
        let s = |a: u64, b: u64| a.saturating_sub(b) as f64 / 1e9;
        Ok((s(now.0, self.at.0), s(now.1, self.at.1), s(now.2, self.at.2)))
    }
}

/// Turns on threaded NAPI for the receiving veth (GRO on, so that the kernel path uses NAPI
/// as well as XDP does).
fn threaded_napi(t: &Topology) -> Result<(), String> {
    let iface = t.iface(Side::B);
    let script = format!("ethtool -K {iface} gro on >/dev/null && echo 1 > /sys/class/net/{iface}/threaded");
    let out = t
        .command(Side::B, "sh")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "threaded NAPI on {iface} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The NAPI threads of `iface` (`napi/<iface>-<id>`), pinned to `cpu`. Attaching XDP may
/// make new ones, so this runs before every receiver's run.
fn pin_napi_threads(iface: &str, cpu: usize) -> Result<Vec<u32>, String> {
    let prefix = format!("napi/{iface}-");
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with(&prefix)))
        .collect();
    if pids.is_empty() {
        return Err(format!("no NAPI thread for {iface} (threaded NAPI not on?)"));
    }
    for p in &pids {
        let st = std::process::Command::new("taskset")
            .args(["-pc", &cpu.to_string(), &p.to_string()])
            .output()
            .map_err(|e| format!("taskset: {e}"))?;
        if !st.status.success() {
            return Err(format!(
                "pinning NAPI thread {p}: {}",
                String::from_utf8_lossy(&st.stderr).trim()
            ));
        }
    }
    Ok(pids)
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
    rate: u64,
) -> Result<u64, String> {
    t.enter(Side::A).map_err(|e| e.to_string())?;
    let mut shard = shard(core)?;
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
    let t0 = Instant::now();
    let mut queued = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // Paced: as many as are due by now (at most a burst of 64); else a burst each turn.
        let burst = match rate {
            0 => 64,
            r => ((t0.elapsed().as_secs_f64() * r as f64) as u64)
                .saturating_sub(queued)
                .min(64),
        };
        for _ in 0..burst {
            let Ok(mut b) = h.pool().alloc_with_headroom(porto::wire::UDP_HEADERS_LEN) else {
                break;
            };
            b.set_len(PAYLOAD);
            b.fill(0x5a);
            if sock.send_to(b, to, 1).is_err() {
                break;
            }
            queued += 1;
        }
        shard.poll(&mut out, 256);
        sent += out
            .drain(..)
            .filter(|c| c.op == OpKind::SendTo && c.result.is_ok())
            .count() as u64;
    }
    Ok(sent)
}

/// A shard on the calling thread with room for an AF_XDP FILL ring beside the io_uring
/// buffer ring. It sleeps as soon as it is idle (no idle spin): what it does not use of the
/// CPU is idle, as for the kernel receiver blocked in recvmmsg.
fn shard(core: Option<usize>) -> Result<Shard, String> {
    let cfg = Config {
        pin: false,
        frames_per_shard: 8192,
        recv_frames: 1024,
        huge_pages: false,
        idle_spin_us: 0,
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

/// What a receiver reports: datagrams, the meter's three figures, productive calls.
struct RxOutcome {
    received: u64,
    cpu: (f64, f64, f64),
    calls: u64,
}

/// What a receiver needs to run: the topology, its CPU, the run's length and the
/// hand-over with the sender (ready → NAPI threads pinned → go).
struct RxSide<'a> {
    t: &'a Topology,
    core: usize,
    seconds: f64,
    ready: &'a AtomicBool,
    napi: &'a std::sync::Mutex<Vec<u32>>,
    go: &'a AtomicBool,
}

impl RxSide<'_> {
    /// Announces readiness, waits for the sender, and starts the meter.
    fn start(&self) -> Result<CpuMeter, String> {
        self.ready.store(true, Ordering::Release);
        wait_for(self.go);
        let napi = self.napi.lock().map_err(|e| e.to_string())?.clone();
        CpuMeter::start(self.core, napi)
    }
}

fn kernel_receiver(rx: &RxSide<'_>) -> Result<RxOutcome, String> {
    rx.t.enter(Side::B).map_err(|e| e.to_string())?;
    pin(Some(rx.core));
    let s = UdpSocket::bind(SocketAddr::from((rx.t.addr(Side::B), PORT))).map_err(|e| e.to_string())?;
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut lens = vec![0usize; 64];
    let meter = rx.start()?;
    let t0 = Instant::now();
    let (mut received, mut calls) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < rx.seconds {
        let n = recv_batch(&s, &mut bufs, &mut lens, Some(IDLE_WAIT)).unwrap_or(0) as u64;
        received += n;
        calls += u64::from(n > 0);
    }
    let cpu = meter.stop()?;
    Ok(RxOutcome { received, cpu, calls })
}

fn xdp_receiver(rx: &RxSide<'_>, coalesce: Option<(u32, Duration)>) -> Result<RxOutcome, String> {
    rx.t.enter(Side::B).map_err(|e| e.to_string())?;
    let mut shard = shard(Some(rx.core))?;
    let local = SocketAddrV4::new(rx.t.addr(Side::B), PORT);
    let opts = XdpOptions {
        rx_coalesce: coalesce,
        ..XdpOptions::new(rx.t.iface(Side::B))
    };
    let sock =
        XdpUdpSocket::bind(&shard.handle(), local, &opts, Delivery::Poll { key: 0 }).map_err(|e| e.to_string())?;
    sock.recv_from_multishot(1).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(256);
    let meter = rx.start()?;
    let t0 = Instant::now();
    let (mut received, mut calls) = (0u64, 0u64);
    while t0.elapsed().as_secs_f64() < rx.seconds {
        shard.wait(&mut out, 256, IDLE_WAIT);
        let n = out
            .drain(..)
            .filter(|c| c.op == OpKind::RecvFrom && c.result.is_ok())
            .count() as u64;
        received += n;
        calls += u64::from(n > 0);
    }
    let cpu = meter.stop()?;
    Ok(RxOutcome { received, cpu, calls })
}

/// Runs `rounds` interleaved rounds (kernel, then AF_XDP) of `seconds` each.
pub fn run(
    seconds: f64,
    rounds: usize,
    server_core: usize,
    client_core: usize,
    rate: u64,
) -> Result<Vec<RxRun>, String> {
    let t = Topology::create("porto-b", 1).map_err(|e| e.to_string())?;
    threaded_napi(&t)?;
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
            let napi = std::sync::Mutex::new(Vec::new());
            let sent = AtomicU64::new(0);
            let side = RxSide {
                t: &t,
                core: server_core,
                seconds,
                ready: &ready,
                napi: &napi,
                go: &go,
            };
            let r = std::thread::scope(|s| {
                let rx = s.spawn(|| {
                    let r = match receiver {
                        KERNEL => kernel_receiver(&side),
                        _ => xdp_receiver(&side, (receiver == AF_XDP_COALESCED).then_some(COALESCE)),
                    };
                    ready.store(true, Ordering::Release);
                    stop.store(true, Ordering::Relaxed);
                    r
                });
                while !ready.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                // Now that XDP is attached (or not), the NAPI threads this run uses exist.
                let pinned = pin_napi_threads(t.iface(Side::B), server_core);
                if let Ok(p) = &pinned {
                    *napi.lock().expect("napi list") = p.clone();
                }
                let (t, stop, go) = (&t, &stop, &go);
                let tx = s.spawn(move || {
                    let r = match &pinned {
                        Ok(_) => sender(t, Some(client_core), stop, go, vb_mac, rate),
                        Err(e) => Err(e.clone()),
                    };
                    // A sender that failed must not leave the receiver waiting.
                    go.store(true, Ordering::Release);
                    r
                });
                let r = rx.join().expect("receiver thread");
                stop.store(true, Ordering::Relaxed);
                sent.store(tx.join().expect("sender thread")?, Ordering::Relaxed);
                r
            })?;
            let (busy, napi_s, thread_s) = r.cpu;
            let per = |s: f64| if s > 0.0 { r.received as f64 / s } else { 0.0 };
            runs.push(RxRun {
                receiver,
                round,
                sent: sent.load(Ordering::Relaxed),
                received: r.received,
                seconds,
                cpu_busy_s: busy,
                napi_s,
                thread_s,
                pps: r.received as f64 / seconds,
                pps_per_cpu_s: per(napi_s + thread_s),
                pps_per_thread_s: per(thread_s),
                batch_mean: r.received as f64 / r.calls.max(1) as f64,
            });
        }
    }
    Ok(runs)
}
