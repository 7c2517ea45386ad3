//! `porto bench`: end-to-end scenarios, every server side by side in one run.
//!
//! Each server runs as its own process pinned to the server CPU (so its CPU time can be read
//! from /proc), the load generator runs in this process on the client CPU. Rounds interleave
//! the servers (A B C A B C) and the summary takes the median of the rounds, with ratios to
//! the kernel-socket baseline of the same run, so machine noise cancels as far as it can.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::loadgen::{OpenLoop, PingPong, TcpFleet, OPEN_LOOP_MIN_SIZE};

mod scenarios;
mod servers;
mod summary;

use scenarios::{run_fanout, run_qos, run_xdp_rx};
use servers::{cpu_ns, free_port, start, Server};
use summary::*;

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
            Server::PortoPortEpoll,
            Server::PortoPollEpoll,
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
                // Odd rounds run the servers in reverse: whatever drifts within a round (the
                // machine warming, a neighbour's load) favours no server in the medians.
                let order: Vec<Server> = if round % 2 == 0 {
                    servers.clone()
                } else {
                    servers.iter().rev().copied().collect()
                };
                for &server in &order {
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
