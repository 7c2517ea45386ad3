//! `porto bench`: end-to-end scenarios, every server side by side in one run.
//!
//! Each server runs as its own process pinned to the server CPU (so its CPU time can be read
//! from /proc), the load generator runs in this process on the client CPU. Rounds interleave
//! the servers (A B C A B C) and the summary takes the median of the rounds, with ratios to
//! the kernel-socket baseline of the same run, so machine noise cancels as far as it can.

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::loadgen::{LoadResult, OpenLoop, PingPong, TcpFleet, OPEN_LOOP_MIN_SIZE};
use crate::plot;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// UDP ping-pong, closed loop: latency percentiles.
    Latency,
    /// UDP at a fixed offered rate, open loop: corrected latency and server CPU per message.
    Throughput,
    /// TCP echo over many connections: requests/s and latency.
    Tcp,
    /// 64-byte UDP receive rate, AF_XDP vs kernel recvmmsg, on a veth pair in namespaces
    /// this run creates (root).
    XdpRx,
    /// Multicast fan-out on loopback: one publisher, N subscribers; porto's shared-frame
    /// fan-out vs N joined kernel sockets.
    Fanout,
    /// Control-class ping-pong latency, unloaded and under 150 % BestEffort load at the
    /// shard's egress link rate.
    Qos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Server {
    /// Plain kernel sockets: blocking UDP, one epoll loop for TCP (the baseline).
    Kernel,
    /// `sockperf server`, the industry reference.
    Sockperf,
    /// tokio, current-thread (needs `--features peers`).
    Tokio,
    /// monoio on io_uring (needs `--features peers`).
    Monoio,
    /// porto in completion-port mode.
    PortoPort,
    /// porto in polling mode.
    PortoPoll,
}

impl Server {
    pub fn label(self) -> &'static str {
        match self {
            Server::Kernel => "kernel",
            Server::Sockperf => "sockperf server",
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
            Server::PortoPort => "porto port",
            Server::PortoPoll => "porto poll",
        }
    }

    /// The command that serves `udp`/TCP on `port`, pinned to `core` (porto servers get
    /// `porto_args` too); `Err` says why this server is unavailable here.
    fn command(self, udp: bool, port: u16, core: usize, porto_args: &[String]) -> Result<Command, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let proto = if udp { "--udp" } else { "--tcp" };
        let port_s = port.to_string();
        let core_s = core.to_string();
        let mut c;
        match self {
            Server::Kernel | Server::Tokio | Server::Monoio => {
                if matches!(self, Server::Tokio | Server::Monoio) && !cfg!(feature = "peers") {
                    return Err("not built in (build porto-perf with --features peers)".into());
                }
                c = Command::new(exe);
                c.args(["serve", self.serve_name(), proto, "--port", &port_s, "--core", &core_s]);
            }
            Server::Sockperf => {
                if Command::new("sockperf")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_err()
                {
                    return Err("sockperf is not installed (apt-get install sockperf)".into());
                }
                c = Command::new("taskset");
                c.args(["-c", &core_s, "sockperf", "server", "-i", "127.0.0.1", "-p", &port_s]);
                if !udp {
                    c.arg("--tcp");
                }
            }
            Server::PortoPort | Server::PortoPoll => {
                c = Command::new(exe);
                c.args(["echo", proto, "--port", &port_s, "--cores", &core_s]);
                if self == Server::PortoPoll {
                    c.arg("--poll");
                }
                c.args(porto_args);
            }
        }
        Ok(c)
    }

    fn serve_name(self) -> &'static str {
        match self {
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
            _ => "kernel",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Seconds measured per server and round, after a 0.2 s warm-up (default: latency 1.5,
    /// throughput 2, tcp 1).
    #[arg(long, value_parser = crate::positive_arg)]
    pub seconds: Option<f64>,
    /// Rounds; servers interleave within each round.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Message sizes in bytes (default: latency 64,1024; throughput 64; tcp 128).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// TCP connection counts (tcp scenario).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 50, 300])]
    pub conns: Vec<usize>,
    /// Subscriber counts (fanout scenario).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 4, 16, 64, 256])]
    pub subscribers: Vec<usize>,
    /// Egress link rate in Mbit/s (qos scenario).
    #[arg(long, default_value_t = 400)]
    pub link_mbps: u64,
    /// Offered bulk load as a share of the link (qos scenario).
    #[arg(long, default_value_t = 1.5, value_parser = crate::positive_arg)]
    pub offered: f64,
    /// Offered rate in messages/s (throughput scenario).
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Offered rate in datagrams/s for xdp-rx (0: as fast as the sender goes).
    #[arg(long, default_value_t = 0)]
    pub rx_rate: u64,
    /// Servers to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    pub servers: Vec<Server>,
    /// Put server and client on the same CPU (default: different CPUs).
    #[arg(long)]
    pub same_cpu: bool,
    /// Where JSON results and plots go.
    #[arg(long, default_value = "target/porto-bench")]
    pub out: PathBuf,
    /// Seconds-long smoke run (CI): tiny durations, one round, first size only.
    #[arg(long)]
    pub smoke: bool,
    /// Skip SVG/PNG plots.
    #[arg(long)]
    pub no_plots: bool,
    /// Extra arguments for the porto servers, e.g. "--idle-spin-us 0".
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub porto_args: String,
}

/// What one measurement (or the median of several) says about a server.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub messages_per_s: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub lost: u64,
    pub server_cpu_ns_per_msg: Option<f64>,
}

/// One server, one setting, one round.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    pub server: Server,
    pub label: String,
    pub size: usize,
    pub conns: usize,
    pub round: usize,
    #[serde(flatten)]
    pub figures: Figures,
    /// Latency percentiles for plotting: (percentile, µs).
    pub curve: Vec<(f64, f64)>,
}

/// Median over rounds, with ratios to the kernel baseline of the same setting.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub server: Server,
    pub label: String,
    pub size: usize,
    pub conns: usize,
    #[serde(flatten)]
    pub figures: Figures,
    pub rate_vs_kernel: Option<f64>,
    pub p50_vs_kernel: Option<f64>,
    pub p99_vs_kernel: Option<f64>,
    pub cpu_vs_kernel: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(flatten)]
    env: RunEnv,
    seconds: f64,
    rounds: usize,
    rate: Option<u64>,
    porto_args: &'a str,
    unavailable: &'a [(Server, String)],
    failures: &'a [(Server, String)],
    measurements: &'a [Measurement],
    summary: &'a [Summary],
}

/// What every result file records about the run.
#[derive(Debug, Serialize)]
struct RunEnv {
    scenario: Scenario,
    started_unix_s: u64,
    kernel: String,
    cpu_model: String,
    cpus: usize,
    server_cpu: usize,
    client_cpu: usize,
}

impl RunEnv {
    fn new(scenario: Scenario, cpus: usize, server_cpu: usize, client_cpu: usize) -> RunEnv {
        RunEnv {
            scenario,
            started_unix_s: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            kernel: env_string("uname", &["-r"]),
            cpu_model: cpu_model(),
            cpus,
            server_cpu,
            client_cpu,
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// CPU time of every thread of `pid`, in ns (schedstat's first field).
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let p = t.local_addr().expect("bound").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM lets every server shut down cleanly; then make sure.
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(server: Server, udp: bool, port: u16, core: usize, porto_args: &[String]) -> Result<Running, String> {
    let mut cmd = server.command(udp, port, core, porto_args)?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn failed: {e}"))?;
    let mut r = Running(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bound = if udp {
            UdpSocket::bind(("127.0.0.1", port)).is_err()
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        };
        if bound {
            return Ok(r);
        }
        if let Ok(Some(st)) = r.0.try_wait() {
            return Err(format!("exited at start ({st})"));
        }
        if Instant::now() > deadline {
            return Err("did not bind its port within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999]
        .iter()
        .map(|&p| (p, us(h.value_at_percentile(p))))
        .collect()
}

fn measurement(server: Server, size: usize, conns: usize, round: usize, r: &LoadResult, cpu: u64) -> Measurement {
    let h = &r.latency_ns;
    Measurement {
        server,
        label: server.label().into(),
        size,
        conns,
        round,
        figures: Figures {
            messages_per_s: r.rate(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            lost: r.lost,
            server_cpu_ns_per_msg: (r.all_replies > 0).then(|| cpu as f64 / r.all_replies as f64),
        },
        curve: curve(h),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn summarize(ms: &[Measurement]) -> Vec<Summary> {
    let mut keys: Vec<(usize, usize, Server)> = ms.iter().map(|m| (m.size, m.conns, m.server)).collect();
    keys.sort();
    keys.dedup();
    let mut out: Vec<Summary> = keys
        .iter()
        .map(|&(size, conns, server)| {
            let rs: Vec<&Measurement> = ms
                .iter()
                .filter(|m| (m.size, m.conns, m.server) == (size, conns, server))
                .collect();
            let med = |f: &dyn Fn(&Figures) -> f64| median(rs.iter().map(|m| f(&m.figures)).collect());
            let cpus: Vec<f64> = rs.iter().filter_map(|m| m.figures.server_cpu_ns_per_msg).collect();
            Summary {
                server,
                label: server.label().into(),
                size,
                conns,
                figures: Figures {
                    messages_per_s: med(&|f| f.messages_per_s),
                    p50_us: med(&|f| f.p50_us),
                    p90_us: med(&|f| f.p90_us),
                    p99_us: med(&|f| f.p99_us),
                    p999_us: med(&|f| f.p999_us),
                    max_us: med(&|f| f.max_us),
                    lost: rs.iter().map(|m| m.figures.lost).sum(),
                    server_cpu_ns_per_msg: (!cpus.is_empty()).then(|| median(cpus)),
                },
                rate_vs_kernel: None,
                p50_vs_kernel: None,
                p99_vs_kernel: None,
                cpu_vs_kernel: None,
            }
        })
        .collect();
    let bases: Vec<Summary> = out.iter().filter(|s| s.server == Server::Kernel).cloned().collect();
    for s in &mut out {
        if let Some(b) = bases.iter().find(|b| (b.size, b.conns) == (s.size, s.conns)) {
            let (f, b) = (&s.figures, &b.figures);
            s.rate_vs_kernel = Some(f.messages_per_s / b.messages_per_s);
            s.p50_vs_kernel = Some(f.p50_us / b.p50_us);
            s.p99_vs_kernel = Some(f.p99_us / b.p99_us);
            s.cpu_vs_kernel = f.server_cpu_ns_per_msg.zip(b.server_cpu_ns_per_msg).map(|(a, b)| a / b);
        }
    }
    out
}

fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |v| format!("{v:.2}"))
}

fn print_table(scenario: Scenario, summary: &[Summary]) {
    println!(
        "{:<16} {:>6} {:>5} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9} {:>7} {:>7} {:>7}",
        "server",
        "size",
        "conns",
        "msgs/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "lost",
        "cpu ns/m",
        "rate×",
        "p50×",
        "cpu×"
    );
    for s in summary {
        let f = &s.figures;
        println!(
            "{:<16} {:>6} {:>5} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>6} {:>9} {:>7} {:>7} {:>7}",
            s.label,
            s.size,
            s.conns,
            f.messages_per_s,
            f.p50_us,
            f.p90_us,
            f.p99_us,
            f.p999_us,
            f.max_us,
            f.lost,
            f.server_cpu_ns_per_msg.map_or("-".into(), |c| format!("{c:.0}")),
            ratio(s.rate_vs_kernel),
            ratio(s.p50_vs_kernel),
            ratio(s.cpu_vs_kernel),
        );
    }
    println!("(medians of the rounds; × columns are ratios to the kernel baseline measured in this run; {scenario:?})");
}

fn env_string(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

/// `porto bench xdp-rx`: its own shape (no servers as processes, no latency).
fn run_xdp_rx(
    a: &BenchArgs,
    cpus: usize,
    server_cpu: usize,
    client_cpu: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    if server_cpu == client_cpu {
        // The receive side has the server CPU to itself: the sender there would slow it and
        // turn the /proc/stat cross-check into the sender's figure.
        return Err("xdp-rx needs the sender and the receiver on different CPUs (no --same-cpu, 2+ CPUs)".into());
    }
    let seconds = if a.smoke { 0.3 } else { a.seconds.unwrap_or(2.0) };
    let rounds = if a.smoke { 1 } else { a.rounds.max(1) };
    println!(
        "xdp-rx: {rounds} round(s) of {seconds} s per receiver; receive work (NAPI thread and receiver) on CPU {server_cpu}, sender on CPU {client_cpu}"
    );
    let runs = crate::xdprx::run(seconds, rounds, server_cpu, client_cpu, a.rx_rate)?;
    println!(
        "{:<24} {:>5} {:>10} {:>10} {:>9} {:>7} {:>7} {:>8} {:>11} {:>12} {:>6}",
        "receiver",
        "round",
        "sent",
        "received",
        "pps",
        "cpu s",
        "napi s",
        "thread s",
        "pps/cpu-s",
        "pps/thread-s",
        "batch"
    );
    for r in &runs {
        println!(
            "{:<24} {:>5} {:>10} {:>10} {:>9.0} {:>7.3} {:>7.3} {:>8.3} {:>11.0} {:>12.0} {:>6.1}",
            r.receiver,
            r.round,
            r.sent,
            r.received,
            r.pps,
            r.cpu_busy_s,
            r.napi_s,
            r.thread_s,
            r.pps_per_cpu_s,
            r.pps_per_thread_s,
            r.batch_mean
        );
    }
    let med = |who: &str, f: fn(&crate::xdprx::RxRun) -> f64| {
        median(runs.iter().filter(|r| r.receiver == who).map(f).collect())
    };
    use crate::xdprx::{AF_XDP, AF_XDP_COALESCED, KERNEL};
    let cpu = |r: &crate::xdprx::RxRun| r.pps_per_cpu_s;
    let thread = |r: &crate::xdprx::RxRun| r.pps_per_thread_s;
    let (k, x, xc) = (med(KERNEL, cpu), med(AF_XDP, cpu), med(AF_XDP_COALESCED, cpu));
    let (kt, xt, xct) = (med(KERNEL, thread), med(AF_XDP, thread), med(AF_XDP_COALESCED, thread));
    println!(
        "median pps per CPU-second of receive work (NAPI + receiver): kernel {k:.0}, AF_XDP {x:.0} (ratio {:.2}), AF_XDP with rx coalescing {xc:.0} (ratio {:.2})",
        x / k,
        xc / k
    );
    println!(
        "median pps per receiving-thread CPU second (application side only): kernel {kt:.0}, AF_XDP {xt:.0} (ratio {:.2}), coalesced {xct:.0} (ratio {:.2})",
        xt / kt,
        xct / kt
    );
    std::fs::create_dir_all(&a.out)?;
    #[derive(Serialize)]
    struct XdpReport<'a> {
        #[serde(flatten)]
        env: RunEnv,
        runs: &'a [crate::xdprx::RxRun],
        ratio_pps_per_cpu_s: f64,
        ratio_coalesced_pps_per_cpu_s: f64,
        ratio_pps_per_thread_s: f64,
        ratio_coalesced_pps_per_thread_s: f64,
    }
    let rep = XdpReport {
        env: RunEnv::new(Scenario::XdpRx, cpus, server_cpu, client_cpu),
        runs: &runs,
        ratio_pps_per_cpu_s: x / k,
        ratio_coalesced_pps_per_cpu_s: xc / k,
        ratio_pps_per_thread_s: xt / kt,
        ratio_coalesced_pps_per_thread_s: xct / kt,
    };
    let json = a.out.join("xdp-rx.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rep)?)?;
    println!("results: {}", json.display());
    if !a.no_plots {
        let bars = vec![
            (KERNEL.to_string(), k),
            (AF_XDP.to_string(), x),
            (AF_XDP_COALESCED.to_string(), xc),
        ];
        plot::bars(
            &a.out.join("xdp-rx"),
            "64 B UDP received per CPU-second of receive work",
            &[("".into(), bars)],
        )?;
    }
    if runs.iter().any(|r| r.received == 0) {
        return Err("a receiver got nothing".into());
    }
    Ok(())
}

/// `porto bench fanout`: its own shape too (in-process receivers, per subscriber count).
fn run_fanout(
    a: &BenchArgs,
    cpus: usize,
    server_cpu: usize,
    client_cpu: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use crate::fanbench::{slope, FanRun};
    let seconds = if a.smoke { 0.2 } else { a.seconds.unwrap_or(1.0) };
    let rounds = if a.smoke { 1 } else { a.rounds.max(1) };
    let subs: Vec<usize> = if a.smoke { vec![1, 4] } else { a.subscribers.clone() };
    let size = a.sizes.first().copied().unwrap_or(64);
    println!(
        "fanout: {size} B, N = {subs:?}, {rounds} round(s) of {seconds} s per receiver; receiver on CPU {server_cpu}, publisher on CPU {client_cpu}"
    );
    let bar = ProgressBar::new((rounds * subs.len() * 2) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"));
    let runs = crate::fanbench::run(&subs, size, seconds, rounds, Some(server_cpu), Some(client_cpu), &bar)?;
    bar.finish_and_clear();
    let med = |who: &str, n: usize, f: fn(&FanRun) -> f64| {
        median(
            runs.iter()
                .filter(|r| r.receiver == who && r.subscribers == n)
                .map(f)
                .collect(),
        )
    };
    println!(
        "{:>4} | {:>12} {:>12} {:>7} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9}",
        "N",
        "kernel del/s",
        "porto del/s",
        "ratio",
        "k rx ns/m",
        "p rx ns/m",
        "k tx ns/m",
        "p tx ns/m",
        "k skew99",
        "p skew99",
        "k lat99",
        "p lat99"
    );
    let mut rows = Vec::new();
    for &n in &subs {
        let k = med("kernel", n, |r| r.delivered_per_s);
        let p = med("porto", n, |r| r.delivered_per_s);
        let row = (
            n,
            k,
            p,
            med("kernel", n, |r| r.receiver_ns_per_msg),
            med("porto", n, |r| r.receiver_ns_per_msg),
            med("kernel", n, |r| r.sender_ns_per_msg),
            med("porto", n, |r| r.sender_ns_per_msg),
            med("kernel", n, |r| r.skew_p99_us),
            med("porto", n, |r| r.skew_p99_us),
            med("kernel", n, |r| r.latency_p99_us),
            med("porto", n, |r| r.latency_p99_us),
        );
        println!(
            "{:>4} | {:>12.0} {:>12.0} {:>7.2} | {:>9.0} {:>9.0} | {:>9.0} {:>9.0} | {:>9.1} {:>9.1} | {:>9.1} {:>9.1}",
            row.0,
            row.1,
            row.2,
            row.2 / row.1.max(1.0),
            row.3,
            row.4,
            row.5,
            row.6,
            row.7,
            row.8,
            row.9,
            row.10
        );
        rows.push(row);
    }
    // Cost per added subscriber: slope of (receiver + sender) busy ns per message over N.
    let per_sub = |who: &str| {
        let pts: Vec<(f64, f64)> = subs
            .iter()
            .map(|&n| {
                (
                    n as f64,
                    med(who, n, |r| r.receiver_ns_per_msg) + med(who, n, |r| r.sender_ns_per_msg),
                )
            })
            .collect();
        slope(&pts)
    };
    let (k_slope, p_slope) = (per_sub("kernel"), per_sub("porto"));
    if subs.len() >= 2 {
        println!(
            "cost per added subscriber (slope of receiver + sender busy ns per message over N): kernel {k_slope:.1} ns, porto {p_slope:.1} ns"
        );
    }
    println!("(medians of the rounds; del/s: deliveries to subscribers per second, summed; ns/m: busy CPU ns per message; skew99: p99 µs between the first and the last subscriber getting a message; lat99: p99 one-way µs at the first subscriber)");
    std::fs::create_dir_all(&a.out)?;
    #[derive(Serialize)]
    struct FanReport<'a> {
        #[serde(flatten)]
        env: RunEnv,
        size: usize,
        runs: &'a [FanRun],
        kernel_ns_per_added_subscriber: f64,
        porto_ns_per_added_subscriber: f64,
    }
    let rep = FanReport {
        env: RunEnv::new(Scenario::Fanout, cpus, server_cpu, client_cpu),
        size,
        runs: &runs,
        kernel_ns_per_added_subscriber: k_slope,
        porto_ns_per_added_subscriber: p_slope,
    };
    let json = a.out.join("fanout.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rep)?)?;
    println!("results: {}", json.display());
    if !a.no_plots {
        let groups: Vec<(String, Vec<(String, f64)>)> = rows
            .iter()
            .map(|r| {
                (
                    format!("N={}", r.0),
                    vec![("kernel sockets".to_string(), r.1), ("porto fan-out".to_string(), r.2)],
                )
            })
            .collect();
        plot::bars(&a.out.join("fanout"), "multicast deliveries per second", &groups)?;
    }
    if runs.iter().any(|r| r.delivered == 0) {
        return Err("a receiver got nothing".into());
    }
    Ok(())
}

/// `porto bench qos`: three phases on one shard (see `qosbench`).
fn run_qos(a: &BenchArgs, cpus: usize, server_cpu: usize, client_cpu: usize) -> Result<(), Box<dyn std::error::Error>> {
    let rounds = if a.smoke { 1 } else { a.rounds.max(1) };
    let setup = crate::qosbench::Setup {
        link_bps: a.link_mbps * 1_000_000,
        bulk_len: a.sizes.first().copied().unwrap_or(1000),
        offered: a.offered,
        seconds: if a.smoke { 0.5 } else { a.seconds.unwrap_or(3.0) },
        ping_rate: 2000,
    };
    println!(
        "qos: link {} Mbit/s, bulk {} B at {:.0}% of it, pings {} B at up to {}/s; {rounds} round(s) of {} s per phase; pings+bulk on CPU {client_cpu}, echo on CPU {server_cpu}",
        a.link_mbps,
        setup.bulk_len,
        setup.offered * 100.0,
        64,
        setup.ping_rate,
        setup.seconds
    );
    let bar = ProgressBar::new((rounds * 3) as u64);
    bar.set_style(ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("template"));
    let mut all = Vec::new();
    for round in 0..rounds {
        for p in crate::qosbench::run(&setup, Some(server_cpu), Some(client_cpu), &bar)? {
            all.push((round, p));
        }
    }
    bar.finish_and_clear();
    println!(
        "{:<50} {:>5} {:>7} {:>5} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>10}",
        "phase",
        "round",
        "pings",
        "lost",
        "p50 µs",
        "p99 µs",
        "p99.9",
        "max µs",
        "bulk Mb/s",
        "bulk drops",
        "ctrl drops"
    );
    for (round, p) in &all {
        let ctrl_drops = p.class_drops.iter().find(|d| d.0 == "Control").map_or(0, |d| d.1);
        println!(
            "{:<50} {:>5} {:>7} {:>5} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>10} {:>10}",
            p.name,
            round,
            p.pings,
            p.lost,
            p.p50_us,
            p.p99_us,
            p.p999_us,
            p.max_us,
            p.bulk_bps / 1e6,
            p.bulk_dropped,
            ctrl_drops
        );
    }
    let med = |i: usize, f: fn(&crate::qosbench::Phase) -> f64| {
        median(
            all.iter()
                .filter(|(_, p)| std::ptr::eq(p.name, all[i].1.name))
                .map(|(_, p)| f(p))
                .collect(),
        )
    };
    let (u99, l99, n99) = (med(0, |p| p.p99_us), med(1, |p| p.p99_us), med(2, |p| p.p99_us));
    println!(
        "Control p99: unloaded {u99:.1} µs, under load {l99:.1} µs ({:.2}x), without QoS {n99:.1} µs ({:.2}x) (medians of the rounds)",
        l99 / u99.max(1e-9),
        n99 / u99.max(1e-9)
    );
    std::fs::create_dir_all(&a.out)?;
    #[derive(Serialize)]
    struct QosReport<'a> {
        #[serde(flatten)]
        env: RunEnv,
        setup: crate::qosbench::Setup,
        phases: Vec<(usize, &'a crate::qosbench::Phase)>,
        control_p99_loaded_vs_unloaded: f64,
        control_p99_no_qos_vs_unloaded: f64,
    }
    let rep = QosReport {
        env: RunEnv::new(Scenario::Qos, cpus, server_cpu, client_cpu),
        setup,
        phases: all.iter().map(|(r, p)| (*r, p)).collect(),
        control_p99_loaded_vs_unloaded: l99 / u99.max(1e-9),
        control_p99_no_qos_vs_unloaded: n99 / u99.max(1e-9),
    };
    let json = a.out.join("qos.json");
    std::fs::write(&json, serde_json::to_string_pretty(&rep)?)?;
    println!("results: {}", json.display());
    if !a.no_plots {
        let series: Vec<(String, Vec<(f64, f64)>)> = all
            .iter()
            .filter(|(r, _)| *r == 0)
            .map(|(_, p)| (p.name.to_string(), p.curve.clone()))
            .collect();
        plot::percentile_curves(&a.out.join("qos"), "Control ping RTT by percentile (µs)", &series)?;
    }
    // Without QoS every ping may be lost behind the bulk: that phase may answer none.
    if all.iter().any(|(_, p)| p.pings == 0 && !p.name.contains("no QoS")) {
        return Err("a Control phase got no ping replies".into());
    }
    Ok(())
}

pub fn run(a: &BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cpus = core_affinity::get_core_ids().map_or(1, |c| c.len());
    let server_cpu = 0;
    let client_cpu = if a.same_cpu || cpus < 2 { 0 } else { 1 };
    if a.scenario == Scenario::XdpRx {
        return run_xdp_rx(a, cpus, server_cpu, client_cpu);
    }
    if a.scenario == Scenario::Fanout {
        return run_fanout(a, cpus, server_cpu, client_cpu);
    }
    if a.scenario == Scenario::Qos {
        return run_qos(a, cpus, server_cpu, client_cpu);
    }
    // Defaults keep each scenario under a minute on 2 cores.
    let default_seconds = match a.scenario {
        Scenario::Latency => 1.5,
        Scenario::Throughput | Scenario::XdpRx | Scenario::Fanout | Scenario::Qos => 2.0,
        Scenario::Tcp => 1.0,
    };
    let seconds = if a.smoke {
        0.2
    } else {
        a.seconds.unwrap_or(default_seconds)
    };
    let rounds = if a.smoke { 1 } else { a.rounds.max(1) };
    let mut sizes = if a.sizes.is_empty() {
        match a.scenario {
            Scenario::Latency => vec![64, 1024],
            Scenario::Throughput => vec![64],
            Scenario::Tcp | Scenario::XdpRx | Scenario::Fanout | Scenario::Qos => vec![128],
        }
    } else {
        a.sizes.clone()
    };
    let mut conns = if a.scenario == Scenario::Tcp {
        a.conns.clone()
    } else {
        vec![1]
    };
    if a.smoke {
        sizes.truncate(1);
        conns = conns.into_iter().map(|c| c.min(8)).collect();
        conns.dedup();
    }
    if a.scenario == Scenario::Throughput {
        for s in &mut sizes {
            *s = (*s).max(OPEN_LOOP_MIN_SIZE);
        }
    }
    let mut servers = if a.servers.is_empty() {
        vec![
            Server::Kernel,
            Server::Sockperf,
            Server::Tokio,
            Server::Monoio,
            Server::PortoPort,
            Server::PortoPoll,
        ]
    } else {
        a.servers.clone()
    };
    let udp = a.scenario != Scenario::Tcp;
    // Probe availability once; unavailable servers are reported, not silently dropped.
    let mut unavailable = Vec::new();
    let porto_args: Vec<String> = a.porto_args.split_whitespace().map(String::from).collect();
    servers.retain(|&s| match s.command(udp, 1, 0, &porto_args) {
        Ok(_) => true,
        Err(why) => {
            unavailable.push((s, why));
            false
        }
    });
    for (s, why) in &unavailable {
        println!("{}: unavailable: {why}", s.label());
    }
    let total = (rounds * sizes.len() * conns.len() * servers.len()) as u64;
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let warmup = Duration::from_millis(200);
    let duration = Duration::from_secs_f64(seconds);
    let mut ms = Vec::new();
    let mut failures: Vec<(Server, String)> = Vec::new();
    for round in 0..rounds {
        for &size in &sizes {
            for &c in &conns {
                for &server in &servers {
                    pb.set_message(format!("round {} {} {size} B x{c}", round + 1, server.label()));
                    // A port found free can be taken by someone else before the server binds
                    // it: one more try on a fresh port before giving up.
                    let mut port = free_port();
                    let mut started = start(server, udp, port, server_cpu, &porto_args);
                    if started.is_err() {
                        port = free_port();
                        started = start(server, udp, port, server_cpu, &porto_args);
                    }
                    let running = match started {
                        Ok(r) => r,
                        Err(why) => {
                            pb.suspend(|| eprintln!("{}: failed to start: {why}", server.label()));
                            unavailable.push((server, why));
                            pb.inc(1);
                            continue;
                        }
                    };
                    let target = SocketAddr::from(([127, 0, 0, 1], port));
                    let pid = running.0.id();
                    let cpu0 = cpu_ns(pid);
                    let core = Some(client_cpu);
                    let r = match a.scenario {
                        Scenario::Latency => PingPong {
                            udp: true,
                            target,
                            msg_size: size,
                            warmup,
                            duration,
                            core,
                        }
                        .run(),
                        Scenario::Throughput => OpenLoop {
                            target,
                            msg_size: size,
                            rate: a.rate,
                            warmup,
                            duration,
                            core,
                        }
                        .run(),
                        Scenario::Tcp | Scenario::XdpRx | Scenario::Fanout | Scenario::Qos => TcpFleet {
                            target,
                            connections: c,
                            msg_size: size,
                            warmup,
                            duration,
                            core,
                        }
                        .run(),
                    };
                    let cpu = cpu_ns(pid).saturating_sub(cpu0);
                    drop(running);
                    match r {
                        Ok(r) => ms.push(measurement(server, size, c, round, &r, cpu)),
                        Err(e) => {
                            let why = format!("{size} B x{c}: load failed: {e}");
                            pb.suspend(|| eprintln!("{}: {why}", server.label()));
                            failures.push((server, why));
                        }
                    }
                    pb.inc(1);
                }
            }
        }
    }
    pb.finish_and_clear();
    let summary = summarize(&ms);
    print_table(a.scenario, &summary);
    for (s, why) in &failures {
        println!("{}: {why}", s.label());
    }
    std::fs::create_dir_all(&a.out)?;
    let stem = format!("{:?}", a.scenario).to_lowercase();
    let report = Report {
        env: RunEnv::new(a.scenario, cpus, server_cpu, client_cpu),
        seconds,
        rounds,
        rate: (a.scenario == Scenario::Throughput).then_some(a.rate),
        porto_args: &a.porto_args,
        unavailable: &unavailable,
        failures: &failures,
        measurements: &ms,
        summary: &summary,
    };
    let json = a.out.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)?;
    println!("results: {}", json.display());
    if !a.no_plots {
        write_plots(a.scenario, &a.out, &stem, &summary, &ms)?;
    }
    // Every server that ran must have produced results: an empty side is a failed run.
    let silent: Vec<&str> = servers
        .iter()
        .filter(|&&s| !unavailable.iter().any(|(u, _)| *u == s))
        .filter(|&&s| !summary.iter().any(|m| m.server == s && m.figures.messages_per_s > 0.0))
        .map(|s| s.label())
        .collect();
    if !silent.is_empty() {
        return Err(format!("no results from: {}", silent.join(", ")).into());
    }
    Ok(())
}

fn write_plots(
    scenario: Scenario,
    out: &Path,
    stem: &str,
    summary: &[Summary],
    ms: &[Measurement],
) -> Result<(), Box<dyn std::error::Error>> {
    match scenario {
        Scenario::Latency | Scenario::Throughput => {
            let mut sizes: Vec<usize> = summary.iter().map(|s| s.size).collect();
            sizes.dedup();
            for size in sizes {
                // The curve of the round with the median p99, per server.
                let mut series = Vec::new();
                for s in summary.iter().filter(|s| s.size == size) {
                    let mut rs: Vec<&Measurement> =
                        ms.iter().filter(|m| m.server == s.server && m.size == size).collect();
                    rs.sort_by(|a, b| a.figures.p99_us.total_cmp(&b.figures.p99_us));
                    if let Some(m) = rs.get(rs.len() / 2) {
                        series.push((s.label.clone(), m.curve.clone()));
                    }
                }
                let title = format!("{stem}: UDP {size} B, latency by percentile (µs)");
                plot::percentile_curves(&out.join(format!("{stem}-{size}B")), &title, &series)?;
            }
            if scenario == Scenario::Throughput {
                let bars: Vec<(String, f64)> = summary
                    .iter()
                    .filter_map(|s| s.figures.server_cpu_ns_per_msg.map(|c| (s.label.clone(), c)))
                    .collect();
                plot::bars(
                    &out.join(format!("{stem}-cpu")),
                    "server CPU per message (ns)",
                    &[("".into(), bars)],
                )?;
            }
        }
        Scenario::Tcp | Scenario::XdpRx | Scenario::Fanout | Scenario::Qos => {
            let mut conns: Vec<usize> = summary.iter().map(|s| s.conns).collect();
            conns.sort_unstable();
            conns.dedup();
            let groups: Vec<(String, Vec<(String, f64)>)> = conns
                .iter()
                .map(|&c| {
                    let v = summary
                        .iter()
                        .filter(|s| s.conns == c)
                        .map(|s| (s.label.clone(), s.figures.messages_per_s))
                        .collect();
                    (format!("{c} conns"), v)
                })
                .collect();
            plot::bars(&out.join(format!("{stem}-rate")), "TCP echo requests/s", &groups)?;
        }
    }
    Ok(())
}
