//! `porto demo`: echo under a built-in ping-pong load, porto (completion-port and polling
//! mode) beside a plain kernel-socket server, all measured in this one run.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use porto::netns::{Side, Topology};
use porto::{Config, XdpOptions};

use crate::echo::{EchoConfig, EchoServer};
use crate::kernel::KernelEcho;
use crate::loadgen::{LoadResult, PingPong};
use crate::report::{LatencyRow, Table};

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub seconds: f64,
    pub msg_size: usize,
    /// Add AF_XDP rows: a veth pair between two namespaces this run creates (root).
    pub xdp: bool,
}

/// The AF_XDP rows: kernel sockets, then porto AF_XDP in both modes, serving in namespace B
/// of a fresh veth pair while the load generator runs in namespace A. Returns the line that
/// says what AF_XDP obtained.
fn xdp_rows(
    cfg: &DemoConfig,
    engine: &Config,
    server_core: Option<usize>,
    client_core: Option<usize>,
    table: &mut Table,
) -> Result<String, Box<dyn std::error::Error>> {
    let t = Topology::create("porto-demo", 1)?;
    let server_addr = SocketAddr::from((t.addr(Side::B), 9000));
    let duration = Duration::from_secs_f64(cfg.seconds);
    let load = |target: SocketAddr| -> Result<LoadResult, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                t.enter(Side::A).map_err(|e| e.to_string())?;
                PingPong {
                    udp: true,
                    target,
                    msg_size: cfg.msg_size,
                    warmup: Duration::from_millis(200),
                    duration,
                    core: client_core,
                }
                .run()
                .map_err(|e| e.to_string())
            })
            .join()
            .expect("load thread")
        })
    };
    // Servers start from a thread inside namespace B, so their threads live there too.
    let in_b = |f: &(dyn Fn() -> Result<Server, String> + Sync)| -> Result<Server, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                t.enter(Side::B).map_err(|e| e.to_string())?;
                f()
            })
            .join()
            .expect("server start thread")
        })
    };
    let base_server = in_b(&|| {
        KernelEcho::udp(server_addr, server_core, Arc::new(AtomicBool::new(false)))
            .map(Server::Kernel)
            .map_err(|e| e.to_string())
    })?;
    let base = load(server_addr)?;
    if let Server::Kernel(k) = base_server {
        // Stops its thread and closes its socket before porto takes the port.
        drop(k);
    }
    println!("  measured UDP over veth, kernel baseline");
    table.push(LatencyRow::new("veth", "kernel sockets", &base, None));
    let mut line = String::new();
    for poll in [false, true] {
        let ec = EchoConfig {
            addr: server_addr,
            udp: true,
            tcp: false,
            poll,
            zerocopy: false,
            xdp: Some(XdpOptions::new(t.iface(Side::B))),
            xdp_fallback: false,
            timestamps: false,
            engine: Config {
                frames_per_shard: 8192,
                ..engine.clone()
            },
        };
        let server = in_b(&|| {
            EchoServer::start(&ec, Arc::new(AtomicBool::new(false)))
                .map(Server::Porto)
                .map_err(|e| e.to_string())
        })?;
        let Server::Porto(server) = server else {
            unreachable!("started porto")
        };
        if let Some(x) = server.xdp.first() {
            line = x.to_string();
        }
        let r = load(server_addr)?;
        let counters = server.stop();
        let mode = if poll {
            "porto AF_XDP polling"
        } else {
            "porto AF_XDP completion port"
        };
        println!(
            "  measured UDP over veth, {mode} ({} requests answered)",
            counters.replies
        );
        table.push(LatencyRow::new("veth", mode, &r, Some(&base)));
    }
    Ok(line)
}

/// A server started inside a namespace.
enum Server {
    Kernel(KernelEcho),
    Porto(EchoServer),
}

/// Server on CPU 0 and client on CPU 1 when there are two CPUs; unpinned otherwise.
pub fn cores() -> (Option<usize>, Option<usize>) {
    let n = core_affinity::get_core_ids().map_or(1, |c| c.len());
    if n >= 2 {
        (Some(0), Some(1))
    } else {
        (None, None)
    }
}

pub fn run(cfg: &DemoConfig) -> Result<(), Box<dyn std::error::Error>> {
    let (server_core, client_core) = cores();
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let duration = Duration::from_secs_f64(cfg.seconds);
    let load = |udp: bool, target: SocketAddr| -> std::io::Result<LoadResult> {
        PingPong {
            udp,
            target,
            msg_size: cfg.msg_size,
            warmup: Duration::from_millis(200),
            duration,
            core: client_core,
        }
        .run()
    };
    let engine = Config {
        shards: 1,
        pin: server_core.is_some(),
        cores: server_core.into_iter().collect(),
        ..Config::default()
    };
    println!(
        "porto demo: {}-byte sockperf-style ping-pong on loopback, {:.1} s per row, server on CPU {}, client on CPU {}",
        cfg.msg_size,
        cfg.seconds,
        server_core.map_or("any".into(), |c| c.to_string()),
        client_core.map_or("any".into(), |c| c.to_string()),
    );
    let mut table = Table::new("round-trip time (µs)");
    let mut info_line = None;
    for udp in [true, false] {
        let proto = if udp { "UDP" } else { "TCP" };
        let baseline = if udp {
            KernelEcho::udp(loopback, server_core, Arc::new(AtomicBool::new(false)))?
        } else {
            KernelEcho::tcp(loopback, server_core, Arc::new(AtomicBool::new(false)))?
        };
        let base = load(udp, baseline.addr)?;
        drop(baseline);
        println!("  measured {proto} kernel baseline");
        table.push(LatencyRow::new(proto, "kernel sockets", &base, None));
        for poll in [false, true] {
            let ec = EchoConfig {
                addr: loopback,
                udp,
                tcp: !udp,
                poll,
                zerocopy: false,
                xdp: None,
                xdp_fallback: false,
                timestamps: false,
                engine: engine.clone(),
            };
            let server = EchoServer::start(&ec, Arc::new(AtomicBool::new(false)))?;
            info_line.get_or_insert_with(|| server.info.first().map(|i| i.to_string()));
            let r = load(udp, server.addr)?;
            let counters = server.stop();
            let mode = if poll {
                "porto polling mode"
            } else {
                "porto completion port"
            };
            println!("  measured {proto} {mode} ({} requests answered)", counters.replies);
            table.push(LatencyRow::new(proto, mode, &r, Some(&base)));
        }
    }
    let xdp_line = if cfg.xdp {
        Some(xdp_rows(cfg, &engine, server_core, client_core, &mut table)?)
    } else {
        None
    };
    println!();
    if let Some(Some(info)) = info_line {
        println!("engine: {info}");
    }
    if let Some(x) = xdp_line {
        println!("{x}");
    }
    table.print();
    println!("(ratios are p50 and rate against the kernel baseline of the same protocol, measured in this run)");
    Ok(())
}
