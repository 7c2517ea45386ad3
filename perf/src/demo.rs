//! `porto demo`: echo under a built-in ping-pong load, porto (completion-port and polling
//! mode) beside a plain kernel-socket server, all measured in this one run.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use porto::Config;

use crate::echo::{EchoConfig, EchoServer};
use crate::kernel::KernelEcho;
use crate::loadgen::{LoadResult, PingPong};
use crate::report::{LatencyRow, Table};

#[derive(Clone, Debug)]
pub struct DemoConfig {
    pub seconds: f64,
    pub msg_size: usize,
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
    println!();
    if let Some(Some(info)) = info_line {
        println!("engine: {info}");
    }
    table.print();
    println!("(ratios are p50 and rate against the kernel baseline of the same protocol, measured in this run)");
    Ok(())
}
