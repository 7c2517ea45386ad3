//! The `porto` command: `demo` (the main job), `echo` (a sockperf-compatible server), `info`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use porto::{Config, Shard};

mod bench;
mod demo;
mod drops;
mod echo;
mod fanbench;
mod kernel;
mod loadgen;
mod mcast;
#[cfg(feature = "peers")]
mod peers;
mod plot;
mod qosbench;
mod report;
mod sockperf;
mod stats;
mod xdprx;

#[derive(Parser, Debug)]
#[command(
    name = "porto",
    version,
    about = "porto: kernel-bypass network I/O with a Winsock-style completion API"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo under built-in load on loopback: porto (port and polling mode) vs kernel sockets.
    Demo {
        /// Seconds measured per row.
        #[arg(long, default_value_t = 1.5, value_parser = positive_arg)]
        seconds: f64,
        /// Message size in bytes (at least 14, the sockperf header).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(14..=65000))]
        size: u32,
        /// Add AF_XDP rows over a veth pair between two namespaces the demo creates (root).
        #[arg(long)]
        xdp: bool,
    },
    /// A sockperf-compatible echo server (`sockperf ping-pong` / `throughput` work against it).
    Echo(EchoArgs),
    /// A baseline server for benchmarks: kernel sockets, or a peer runtime (tokio, monoio;
    /// built with `--features peers`). Same sockperf protocol as `porto echo`.
    Serve(ServeArgs),
    /// Benchmark scenarios: porto vs kernel sockets, sockperf server and peer runtimes.
    Bench(bench::BenchArgs),
    /// Multicast: a sequenced publisher, and N zero-copy subscribers of one received feed.
    #[command(subcommand)]
    Mcast(mcast::McastCmd),
    /// What running engines publish (any process using porto): list them, or show one
    /// engine's shards (`PID`), refreshed with rates (`--watch`), as JSON, or as OpenMetrics.
    Stats(stats::StatsArgs),
    /// Starts one shard and prints what the kernel gave it.
    Info {
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Check what porto needs on this machine before anything fails: each finding with its
    /// fix; exits non-zero when something blocks the configuration asked for.
    Doctor {
        /// Also check AF_XDP on this interface (queues against --shards, an XDP program
        /// already attached, veth checksum offload).
        #[arg(long, value_name = "IFACE")]
        xdp: Option<String>,
        /// Print the findings as JSON (for scripts).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

/// Where a server listens.
#[derive(Args, Debug)]
struct Listen {
    /// Serve UDP.
    #[arg(long, required_unless_present = "tcp")]
    udp: bool,
    /// Serve TCP.
    #[arg(long)]
    tcp: bool,
    /// Address to bind (IPv4 or IPv6).
    #[arg(long, default_value = "127.0.0.1")]
    addr: IpAddr,
    #[arg(long, short)]
    port: u16,
}

impl Listen {
    fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

#[derive(Args, Debug)]
struct EchoArgs {
    #[command(flatten)]
    listen: Listen,
    /// Polling mode: the application runs on the shard thread, which busy-polls.
    #[arg(long)]
    poll: bool,
    /// Serve UDP through AF_XDP on this interface (root; --addr must be its IPv4 or IPv6
    /// address, which picks the family AF_XDP serves).
    #[arg(long, value_name = "IFACE", requires = "udp")]
    xdp: Option<String>,
    /// If AF_XDP cannot be had, serve UDP through kernel sockets and say why (the ladder:
    /// AF_XDP zero-copy, copy, then kernel sockets); without it that is an error.
    #[arg(long, requires = "xdp")]
    fallback: bool,
    /// AF_XDP on this receive queue only (default: every queue of the interface).
    #[arg(long)]
    queue: Option<u32>,
    /// AF_XDP: skip the zero-copy attempt.
    #[arg(long)]
    force_copy: bool,
    /// AF_XDP: force the XDP attach mode (default: driver, then generic).
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpModeArg>,
    /// AF_XDP receive coalescing: read the RX ring once FRAMES wait or the first has waited
    /// USECS (throughput over latency), e.g. 64,200.
    #[arg(long, value_name = "FRAMES,USECS", value_delimiter = ',', requires = "xdp")]
    rx_coalesce: Vec<u32>,
    /// AF_XDP: deliver frames marked DSCP 46 or above first in each receive batch.
    #[arg(long, requires = "xdp")]
    dscp_priority: bool,
    /// Reply with IORING_OP_SEND_ZC from the registered pool.
    #[arg(long)]
    zerocopy: bool,
    /// Stamp every received datagram; the banner says where the stamps come from (AF_XDP:
    /// the XDP program, or the RX ring where this kernel refuses the program's stamp).
    #[arg(long)]
    timestamps: bool,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = positive_arg)]
    seconds: Option<f64>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum XdpModeArg {
    Driver,
    Generic,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Baseline {
    /// Blocking recvfrom/sendto (UDP) or one epoll loop (TCP).
    Kernel,
    /// tokio, current-thread runtime.
    Tokio,
    /// monoio on io_uring.
    Monoio,
}

#[derive(Args, Debug)]
struct ServeArgs {
    #[arg(value_enum)]
    server: Baseline,
    /// One protocol per baseline process.
    #[command(flatten)]
    listen: Listen,
    /// Core to pin the server thread to.
    #[arg(long)]
    core: Option<usize>,
}

#[derive(Args, Debug)]
struct EngineArgs {
    /// Shards (threads, one per core).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Cores to pin shards to, e.g. 0,1 (default: 0, 1, ...).
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Do not pin threads.
    #[arg(long)]
    no_pin: bool,
    /// Frames in each shard's registered pool.
    #[arg(long, default_value_t = 2048)]
    frames: u32,
    /// Bytes per frame.
    #[arg(long, default_value_t = 2048)]
    frame_size: u32,
    /// Use a kernel SQ polling thread (idle ms).
    #[arg(long)]
    sqpoll: Option<u32>,
    /// Completion-port mode: µs a shard yields, watching for work, before it sleeps
    /// (lower: less idle CPU; higher: fewer wake-ups).
    #[arg(long, default_value_t = Config::default().idle_spin_us)]
    idle_spin_us: u32,
    /// Name sockets by fd in every operation instead of by their registered-file slot (to
    /// measure what registered files save).
    #[arg(long)]
    no_registered_files: bool,
    /// The kernel interface: auto (io_uring, else epoll, saying why), io-uring, or epoll.
    /// Default: $PORTO_PROVIDER, else auto.
    #[arg(long)]
    provider: Option<porto::Provider>,
    /// Do not publish statistics for `porto stats` (to measure what publishing costs).
    #[arg(long)]
    no_stats: bool,
}

impl EngineArgs {
    fn config(&self) -> Config {
        let recv_frames = (self.frames / 2).max(1).next_power_of_two().min(32768);
        Config {
            shards: self.shards,
            cores: self.cores.clone(),
            pin: !self.no_pin,
            frames_per_shard: self.frames,
            frame_size: self.frame_size,
            recv_frames: if recv_frames >= self.frames {
                recv_frames / 2
            } else {
                recv_frames
            },
            sqpoll_idle_ms: self.sqpoll,
            idle_spin_us: self.idle_spin_us,
            registered_files: !self.no_registered_files,
            provider: self.provider.unwrap_or(Config::default().provider),
            stats_publish: !self.no_stats,
            ..Config::default()
        }
    }
}

/// Most seconds a duration argument may take (about 11 days): beyond it a run is a mistake,
/// and `Duration::from_secs_f64` would overflow long before `f64` does.
const SECONDS_ARG_MAX: f64 = 1e6;

/// A duration (or ratio) argument: a finite positive number of at most [`SECONDS_ARG_MAX`].
/// `-1`, `0`, `nan` and `inf` are refused by clap with this message instead of panicking.
pub(crate) fn positive_arg(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if !(v.is_finite() && v > 0.0 && v <= SECONDS_ARG_MAX) {
        return Err(format!(
            "'{s}' must be a positive number no larger than {SECONDS_ARG_MAX}"
        ));
    }
    Ok(v)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Demo { seconds, size, xdp } => demo::run(&demo::DemoConfig {
            seconds,
            xdp,
            msg_size: size as usize,
        }),
        Cmd::Echo(a) => run_echo(a),
        Cmd::Serve(a) => serve(a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Mcast(c) => mcast::run(c),
        Cmd::Info { engine } => info(&engine),
        Cmd::Doctor { xdp, json, engine } => doctor(&engine, xdp.as_deref(), json),
        Cmd::Stats(a) => stats::run(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("porto: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn doctor(a: &EngineArgs, xdp: Option<&str>, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let findings = porto::doctor::check(&a.config(), xdp);
    let kernel = porto::doctor::kernel::features();
    if json {
        let list: Vec<serde_json::Value> = findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "check": f.check,
                    "level": f.level.to_string().to_lowercase(),
                    "detail": f.detail,
                    "fix": f.fix,
                })
            })
            .collect();
        let features: Vec<serde_json::Value> = kernel
            .iter()
            .map(|k| {
                serde_json::json!({
                    "feature": k.name,
                    "state": k.state.to_string().to_lowercase(),
                    "detail": k.detail,
                    "without": k.without,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "findings": list, "kernel": features }))?
        );
    } else {
        println!("{:<16} {:<5} finding", "check", "");
        for f in &findings {
            println!("{:<16} {:<5} {}", f.check, f.level.to_string(), f.detail);
            if let Some(fix) = &f.fix {
                println!("{:<16} {:<5}   fix: {fix}", "", "");
            }
        }
        println!();
        println!("{:<54} {:<8} without it, porto ...", "kernel feature", "state");
        for k in &kernel {
            println!("{:<54} {:<8} {}", k.name, k.state.to_string(), k.without);
            if !k.detail.is_empty() {
                println!("{:<54} {:<8}   ({})", "", "", k.detail);
            }
        }
    }
    let failed = findings
        .iter()
        .filter(|f| f.level == porto::doctor::Level::Fail)
        .count();
    if failed > 0 {
        return Err(format!("{failed} check(s) failed: porto cannot run as configured (fixes above)").into());
    }
    Ok(())
}

fn info(a: &EngineArgs) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = a.config();
    let shard = Shard::new(&cfg, cfg.pin.then(|| cfg.core_of(0)))?;
    let i = shard.info();
    println!("provider asked: {}", cfg.provider);
    println!("provider: {}", i.provider.transport);
    if let Some(why) = &i.provider.fallback {
        println!("fell back: {why}");
    }
    for d in &i.degraded {
        println!("degraded: {d}");
    }
    match porto::xdp::XdpProgram::stamp_source() {
        Ok(s) => println!("AF_XDP: {s}"),
        Err(e) => println!("AF_XDP: unavailable: {e}"),
    }
    println!("{i}");
    Ok(())
}

fn serve(a: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.listen.udp == a.listen.tcp {
        return Err("a baseline serves one protocol: --udp or --tcp".into());
    }
    let (addr, udp) = (a.listen.socket_addr(), a.listen.udp);
    match a.server {
        Baseline::Kernel => {
            let stop = Arc::new(AtomicBool::new(false));
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(sig, stop.clone())?;
            }
            let server = if udp {
                kernel::KernelEcho::udp(addr, a.core, stop)?
            } else {
                kernel::KernelEcho::tcp(addr, a.core, stop)?
            };
            println!(
                "porto serve kernel: {} on {}",
                if udp { "udp" } else { "tcp" },
                server.addr
            );
            let c = server.join();
            println!(
                "porto serve kernel: stopped; {} requests, {} replies, {} ignored, {} failed replies, {} connections",
                c.requests, c.replies, c.ignored, c.send_errors, c.connections
            );
            match c.kernel_drops {
                Some(0) | None => {}
                Some(n) => println!(
                    "  the kernel dropped {n} datagram(s) for this socket: its receive buffer was full (the server fell behind; raise net.core.rmem_default / SO_RCVBUF)"
                ),
            }
            Ok(())
        }
        #[cfg(feature = "peers")]
        Baseline::Tokio | Baseline::Monoio => {
            kernel::pin(a.core);
            let rt = if a.server == Baseline::Tokio {
                peers::Runtime::Tokio
            } else {
                peers::Runtime::Monoio
            };
            println!(
                "porto serve {:?}: {} on {addr}",
                a.server,
                if udp { "udp" } else { "tcp" }
            );
            Ok(peers::serve(rt, addr, udp)?)
        }
        #[cfg(not(feature = "peers"))]
        Baseline::Tokio | Baseline::Monoio => Err(
            "peer runtimes are not built in: rebuild with `cargo build --release -p porto-perf --features peers`"
                .into(),
        ),
    }
}

fn run_echo(a: EchoArgs) -> Result<(), Box<dyn std::error::Error>> {
    if !matches!(a.rx_coalesce.len(), 0 | 2) {
        return Err("--rx-coalesce takes FRAMES,USECS, e.g. 64,200".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    let cfg = echo::EchoConfig {
        addr: a.listen.socket_addr(),
        udp: a.listen.udp,
        tcp: a.listen.tcp,
        poll: a.poll,
        zerocopy: a.zerocopy,
        xdp_fallback: a.fallback,
        timestamps: a.timestamps,
        xdp: a.xdp.as_ref().map(|iface| porto::XdpOptions {
            queues: a.queue.map_or(porto::XdpQueues::All, porto::XdpQueues::One),
            force_copy: a.force_copy,
            attach: a.xdp_mode.map(|m| match m {
                XdpModeArg::Driver => porto::AttachMode::Driver,
                XdpModeArg::Generic => porto::AttachMode::Generic,
            }),
            rx_coalesce: match a.rx_coalesce[..] {
                [frames, usecs] => Some((frames, Duration::from_micros(u64::from(usecs)))),
                _ => None,
            },
            dscp_priority: a.dscp_priority,
            ..porto::XdpOptions::new(iface)
        }),
        engine: porto::Config {
            // AF_XDP's FILL ring and the io_uring buffer ring both draw on the pool.
            frames_per_shard: if a.xdp.is_some() {
                a.engine.frames.max(8192)
            } else {
                a.engine.frames
            },
            ..a.engine.config()
        },
    };
    let server = echo::EchoServer::start(&cfg, stop.clone())?;
    let protos = [(a.listen.udp, "udp"), (a.listen.tcp, "tcp")]
        .iter()
        .filter(|p| p.0)
        .map(|p| p.1)
        .collect::<Vec<_>>()
        .join("+");
    println!(
        "porto echo: {protos} on {} in {} mode, {} shard(s)",
        server.addr,
        if a.poll { "polling" } else { "completion-port" },
        cfg.engine.shards
    );
    for i in &server.info {
        println!("  {i}");
    }
    for x in &server.xdp {
        println!("  {x}");
    }
    for f in &server.xdp_fallbacks {
        println!("  {f}");
    }
    if cfg.engine.stats_publish {
        println!("  statistics: porto stats {} (--watch for rates)", std::process::id());
    }
    let deadline = a.seconds.map(|s| Instant::now() + Duration::from_secs_f64(s));
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = server.stop();
    println!(
        "porto echo: stopped; {} requests, {} replies, {} ignored, {} reply drops, {} connections, {} bad streams",
        c.requests, c.replies, c.ignored, c.reply_drops, c.connections, c.bad_streams
    );
    // Drops by reason: a server that answered nothing (or less than it was sent) says why.
    c.drops.print();
    Ok(())
}
