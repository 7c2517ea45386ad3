//! `porto stats`: what running engines publish, read from another process — a list of
//! engines, one engine's shards as tables, refreshed with rates (`--watch`), as JSON, or
//! served in the OpenMetrics text format (`--prometheus ADDR`) by this process (the engine
//! itself opens no socket for it).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use porto::telemetry::{self, ClassStats, EngineStats, QueueStats, SocketStats};

/// Counters that are levels, not running totals: no rate, OpenMetrics type gauge.
const GAUGES: [&str; 2] = ["bufring_frames", "pool_free"];

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// A process id (every engine of it) or a statistics file; none: list the engines.
    target: Option<String>,
    /// Refresh every INTERVAL seconds (default 1) with per-second rates, until Ctrl-C.
    #[arg(long, num_args = 0..=1, default_missing_value = "1", value_parser = crate::positive_arg)]
    watch: Option<f64>,
    /// With --watch: stop after this many refreshes.
    #[arg(long)]
    count: Option<u64>,
    /// One snapshot as JSON.
    #[arg(long)]
    json: bool,
    /// Serve every live engine's statistics in the OpenMetrics text format at ADDR (e.g.
    /// 127.0.0.1:9464), until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<SocketAddr>,
    /// Print every counter, zeros included.
    #[arg(long)]
    all: bool,
    /// Remove the files of engines whose process is gone.
    #[arg(long)]
    clean: bool,
}

pub fn run(a: StatsArgs) -> Result<(), Box<dyn std::error::Error>> {
    if a.clean {
        return clean();
    }
    if let Some(addr) = a.prometheus {
        return serve(addr);
    }
    let Some(target) = &a.target else {
        return list(a.json);
    };
    let paths = select(target)?;
    if a.json {
        let engines: Vec<EngineStats> = read_all(&paths)?;
        println!("{}", serde_json::to_string_pretty(&json(&engines))?);
        return Ok(());
    }
    match a.watch {
        None => {
            for e in read_all(&paths)? {
                print_engine(&e, None, a.all);
            }
        }
        Some(interval) => {
            let interval = Duration::from_secs_f64(interval);
            let mut prev: Option<(Instant, Vec<EngineStats>)> = None;
            let mut n = 0;
            loop {
                let now = Instant::now();
                let engines = read_all(&paths)?;
                print!("\x1b[2J\x1b[H");
                for (i, e) in engines.iter().enumerate() {
                    let before = prev
                        .as_ref()
                        .and_then(|(t, p)| p.get(i).map(|p| (now.duration_since(*t), p)));
                    print_engine(e, before, a.all);
                }
                std::io::stdout().flush()?;
                n += 1;
                if a.count.is_some_and(|c| n >= c) || engines.iter().all(|e| e.stale) {
                    return Ok(());
                }
                prev = Some((now, engines));
                std::thread::sleep(interval);
            }
        }
    }
    Ok(())
}

/// The files of `target`: a path, or every file of a pid.
fn select(target: &str) -> Result<Vec<PathBuf>, Box<dyn std::error::Error>> {
    if let Ok(pid) = target.parse::<u32>() {
        let v: Vec<PathBuf> = telemetry::list()
            .into_iter()
            .filter(|p| telemetry::pid_of(p) == Some(pid))
            .collect();
        if v.is_empty() {
            return Err(format!(
                "no engine of process {pid} publishes statistics (is it running, with Config::stats_publish on, and yours or are you root? `porto stats` lists them)"
            )
            .into());
        }
        return Ok(v);
    }
    let p = PathBuf::from(target);
    if !p.exists() {
        return Err(format!("{target}: neither a process id nor a statistics file (`porto stats` lists them)").into());
    }
    Ok(vec![p])
}

fn read_all(paths: &[PathBuf]) -> Result<Vec<EngineStats>, Box<dyn std::error::Error>> {
    paths
        .iter()
        .map(|p| telemetry::read(p).map_err(|e| format!("{}: {e}", p.display()).into()))
        .collect()
}

fn provider(e: &telemetry::ShardStats) -> String {
    let mode = e.task_run.map_or(String::new(), |m| format!(" {m}"));
    let lost = if e.degraded.is_empty() {
        String::new()
    } else {
        format!("; without {}", e.degraded.join(", "))
    };
    match e.provider {
        None => "starting".into(),
        Some(t) if e.fell_back => format!("{t}{mode} (fell back){lost}"),
        Some(t) => format!("{t}{mode}{lost}"),
    }
}

fn list(json_out: bool) -> Result<(), Box<dyn std::error::Error>> {
    let paths = telemetry::list();
    let mut engines = Vec::new();
    let mut orphans = 0;
    for p in &paths {
        match telemetry::read(p) {
            Ok(e) => engines.push(e),
            // Another build's file whose process is gone: counted, not listed.
            Err(_) if telemetry::orphaned(p) => orphans += 1,
            Err(e) => eprintln!("porto stats: {e}"),
        }
    }
    if orphans > 0 && !json_out {
        println!("{orphans} stale file(s) of another porto build (their processes are gone); `porto stats --clean` removes them");
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&json(&engines))?);
        return Ok(());
    }
    if engines.is_empty() {
        println!(
            "no porto engine publishes statistics here (live engines are found through /proc; files of earlier builds in {})",
            telemetry::dir().display()
        );
        return Ok(());
    }
    println!(
        "{:>8}  {:<16} {:>6}  {:<38} {:>9}  {:<6} file",
        "pid", "process", "shards", "provider", "ops done", "state"
    );
    let mut stale = 0;
    for e in &engines {
        let done: u64 = e.shards.iter().filter_map(|s| s.get("ops_completed")).sum();
        let prov = e.shards.first().map_or("-".into(), provider);
        stale += usize::from(e.stale);
        println!(
            "{:>8}  {:<16} {:>6}  {:<38} {:>9}  {:<6} {}",
            e.pid,
            e.process,
            e.shards.len(),
            prov,
            done,
            if e.stale { "STALE" } else { "live" },
            e.path.display()
        );
    }
    if stale > 0 {
        println!(
            "{stale} stale: their process is gone (an earlier build left the file); `porto stats --clean` removes them"
        );
    }
    Ok(())
}

fn clean() -> Result<(), Box<dyn std::error::Error>> {
    let mut n = 0;
    for p in telemetry::list() {
        let why = match telemetry::read(&p) {
            Ok(e) if e.stale => format!("process {} is gone", e.pid),
            Ok(_) => continue,
            Err(_) if telemetry::orphaned(&p) => "another build's format; its process is gone".to_string(),
            Err(_) => continue,
        };
        std::fs::remove_file(&p)?;
        println!("removed {} ({why})", p.display());
        n += 1;
    }
    println!("{n} stale file(s) removed");
    Ok(())
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// One engine as tables; with `before` (elapsed, previous read), a rate column per shard.
fn print_engine(e: &EngineStats, before: Option<(Duration, &EngineStats)>, all: bool) {
    println!(
        "porto engine: pid {} ({}){}, {} shard(s), published every {} ms — {}",
        e.pid,
        e.process,
        if e.stale { ", STALE (process gone)" } else { "" },
        e.shards.len(),
        e.period_ms,
        e.path.display()
    );
    println!();
    println!(
        "{:<6} {:<40} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "shard", "provider", "core", "latency n", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
    );
    for s in &e.shards {
        let l = s.latency;
        println!(
            "{:<6} {:<40} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9}",
            s.index,
            provider(s),
            s.core.map_or("-".into(), |c| c.to_string()),
            l.count,
            us(l.p50_ns),
            us(l.p99_ns),
            us(l.p999_ns),
            us(l.max_ns)
        );
    }
    println!();
    let names: Vec<&String> = e
        .shards
        .first()
        .map(|s| s.counters.iter().map(|c| &c.0).collect())
        .unwrap_or_default();
    let mut header = format!("{:<34}", "counter");
    for s in &e.shards {
        header += &format!(" {:>14}", format!("shard {}", s.index));
        if before.is_some() {
            header += &format!(" {:>12}", "/s");
        }
    }
    println!("{header}");
    for (k, name) in names.iter().enumerate() {
        let vals: Vec<u64> = e.shards.iter().map(|s| s.counters[k].1).collect();
        if !all && vals.iter().all(|&v| v == 0) {
            continue;
        }
        let mut line = format!("{name:<34}");
        for (i, v) in vals.iter().enumerate() {
            line += &format!(" {v:>14}");
            if let Some((dt, prev)) = before {
                let rate = if GAUGES.contains(&name.as_str()) {
                    "-".to_string()
                } else {
                    let p = prev.shards.get(i).and_then(|s| s.counters.get(k)).map_or(*v, |c| c.1);
                    format!("{:.0}", v.saturating_sub(p) as f64 / dt.as_secs_f64().max(1e-9))
                };
                line += &format!(" {rate:>12}");
            }
        }
        println!("{line}");
    }
    println!();
    print_sections(e, before, all);
}

fn addr(a: Option<SocketAddr>) -> String {
    a.map_or("-".into(), |a| a.to_string())
}

/// Per second since `before`'s read, or "" without one.
fn per_sec(now: u64, prev: Option<u64>, dt: Option<Duration>) -> String {
    match (prev, dt) {
        (Some(p), Some(dt)) => format!("{:.0}", now.saturating_sub(p) as f64 / dt.as_secs_f64().max(1e-9)),
        _ => String::new(),
    }
}

/// The sockets, QoS classes and flows, fan-out groups and subscribers, and AF_XDP queues.
fn print_sections(e: &EngineStats, before: Option<(Duration, &EngineStats)>, all: bool) {
    let dt = before.map(|b| b.0);
    let prev_sock = |shard: usize, id: u32| {
        before.and_then(|(_, p)| p.shards.get(shard)?.sockets.iter().find(|s| s.id == id).copied())
    };
    let sockets: Vec<(usize, &SocketStats)> = e
        .shards
        .iter()
        .flat_map(|s| s.sockets.iter().map(move |k| (s.index, k)))
        .collect();
    if !sockets.is_empty() {
        println!(
            "{:<5} {:>4} {:<12} {:<16} {:<12} {:<24} {:<24} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>9} {:>9}",
            "shard",
            "sock",
            "kind",
            "transport",
            "rx stamps",
            "local",
            "peer",
            "receives",
            "recv bytes",
            "sends",
            "send bytes",
            "errors",
            "drops",
            "rx/s",
            "tx/s"
        );
        for (shard, k) in &sockets {
            let p = prev_sock(*shard, k.id);
            println!(
                "{:<5} {:>4} {:<12} {:<16} {:<12} {:<24} {:<24} {:>10} {:>12} {:>10} {:>12} {:>7} {:>6} {:>9} {:>9}",
                shard,
                k.id,
                k.kind.name(),
                k.transport.map_or("-".into(), |t| t.to_string()),
                k.stamping.name(),
                addr(k.local),
                addr(k.peer),
                k.receives,
                k.recv_bytes,
                k.sends,
                k.send_bytes,
                k.errors,
                k.drops,
                per_sec(k.receives, p.map(|p| p.receives), dt),
                per_sec(k.sends, p.map(|p| p.sends), dt),
            );
        }
        for s in e.shards.iter().filter(|s| s.sockets_unlisted > 0) {
            println!(
                "shard {}: {} more socket(s) not listed (no slot)",
                s.index, s.sockets_unlisted
            );
        }
        println!();
    }
    // QoS: the class queues, then each flow.
    let classes: Vec<(usize, &ClassStats)> = e
        .shards
        .iter()
        .flat_map(|s| s.classes.iter().map(move |c| (s.index, c)))
        .filter(|(_, c)| all || c.queued + c.sent + c.dropped > 0)
        .collect();
    if !classes.is_empty() {
        println!(
            "{:<5} {:<18} {:>8} {:>12} {:>10}",
            "shard", "QoS class", "queued", "sent", "dropped"
        );
        for (shard, c) in classes {
            println!(
                "{:<5} {:<18} {:>8} {:>12} {:>10}",
                shard,
                format!("{:?}", c.class),
                c.queued,
                c.sent,
                c.dropped
            );
        }
        println!();
    }
    let flows: Vec<_> = sockets.iter().filter_map(|(sh, k)| Some((sh, k, k.flow?))).collect();
    if !flows.is_empty() {
        println!(
            "{:<5} {:>4} {:>5} {:<16} {:>10} {:>12} {:>9} {:>14} {:>9}",
            "shard", "sock", "flow", "class", "sent", "sent bytes", "delayed", "non-conformant", "dropped"
        );
        for (shard, k, (id, f)) in flows {
            println!(
                "{:<5} {:>4} {:>5} {:<16} {:>10} {:>12} {:>9} {:>14} {:>9}",
                shard,
                k.id,
                id,
                k.class.map_or("-".into(), |c| format!("{c:?}")),
                f.sent,
                f.sent_bytes,
                f.delayed,
                f.non_conformant,
                f.dropped
            );
        }
        println!();
    }
    let groups: Vec<_> = sockets.iter().filter_map(|(sh, k)| Some((sh, k, k.fanout?))).collect();
    if !groups.is_empty() {
        println!(
            "{:<5} {:>4} {:>11} {:>12} {:>8} {:>9}",
            "shard", "sock", "subscribers", "received", "stalls", "overflow"
        );
        for (shard, k, g) in groups {
            println!(
                "{:<5} {:>4} {:>11} {:>12} {:>8} {:>9}",
                shard, k.id, g.subscribers, g.received, g.stalls, g.overflow
            );
        }
        println!();
        println!(
            "{:<5} {:>4} {:>4} {:>12} {:>10} {:>7}",
            "shard", "sock", "sub", "delivered", "dropped", "depth"
        );
        for s in &e.shards {
            for u in &s.subscribers {
                println!(
                    "{:<5} {:>4} {:>4} {:>12} {:>10} {:>7}",
                    s.index, u.socket, u.index, u.delivered, u.dropped, u.depth
                );
            }
            if s.subscribers_unlisted > 0 {
                println!(
                    "shard {}: {} more subscriber(s) not listed",
                    s.index, s.subscribers_unlisted
                );
            }
        }
        println!();
    }
    let queues: Vec<(usize, &QueueStats)> = e
        .shards
        .iter()
        .flat_map(|s| s.queues.iter().map(move |q| (s.index, q)))
        .collect();
    if !queues.is_empty() {
        println!("AF_XDP queues (rings: entries now; kernel: XDP_STATISTICS; program: the interface's XDP program)");
        println!(
            "{:<5} {:>4} {:>5} {:<9} {:>5} {:>5} {:>5} {:>5} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "shard",
            "sock",
            "queue",
            "mode",
            "fill",
            "rx",
            "tx",
            "comp",
            "rx_dropped",
            "ring_full",
            "fill_empty",
            "bad_descs",
            "steered",
            "passed",
            "filtered"
        );
        for (shard, q) in queues {
            let k = q.kernel;
            println!(
                "{:<5} {:>4} {:>5} {:<9} {:>5} {:>5} {:>5} {:>5} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}",
                shard,
                q.socket,
                q.queue,
                if q.zero_copy { "zero-copy" } else { "copy" },
                q.fill,
                q.rx,
                q.tx,
                q.completion,
                k.rx_dropped,
                k.rx_ring_full,
                k.rx_fill_ring_empty_descs,
                k.rx_invalid_descs + k.tx_invalid_descs,
                q.program.steered,
                q.program.passed,
                q.program.filtered
            );
        }
        println!();
    }
}

fn json(engines: &[EngineStats]) -> serde_json::Value {
    serde_json::Value::Array(
        engines
            .iter()
            .map(|e| {
                serde_json::json!({
                    "pid": e.pid,
                    "process": e.process,
                    "file": e.path.display().to_string(),
                    "stale": e.stale,
                    "period_ms": e.period_ms,
                    "created_unix_ms": e.created_unix_ms,
                    "shards": e.shards.iter().map(|s| serde_json::json!({
                        "index": s.index,
                        "provider": s.provider.map(|p| p.to_string()),
                        "task_run": s.task_run.map(|m| m.to_string()),
                        "fell_back": s.fell_back,
                        "degraded": s.degraded,
                        "core": s.core,
                        "updated_unix_ms": s.updated_unix_ms,
                        "latency_ns": {
                            "count": s.latency.count,
                            "p50": s.latency.p50_ns,
                            "p99": s.latency.p99_ns,
                            "p999": s.latency.p999_ns,
                            "max": s.latency.max_ns,
                        },
                        "counters": s.counters.iter().cloned().collect::<BTreeMap<String, u64>>(),
                        "classes": s.classes.iter().map(|c| serde_json::json!({
                            "class": format!("{:?}", c.class),
                            "queued": c.queued,
                            "sent": c.sent,
                            "dropped": c.dropped,
                        })).collect::<Vec<_>>(),
                        "sockets": s.sockets.iter().map(socket_json).collect::<Vec<_>>(),
                        "sockets_unlisted": s.sockets_unlisted,
                        "queues": s.queues.iter().map(|q| serde_json::json!({
                            "socket": q.socket,
                            "queue": q.queue,
                            "zero_copy": q.zero_copy,
                            "rings": { "fill": q.fill, "rx": q.rx, "tx": q.tx, "completion": q.completion },
                            "kernel": {
                                "rx_dropped": q.kernel.rx_dropped,
                                "rx_invalid_descs": q.kernel.rx_invalid_descs,
                                "tx_invalid_descs": q.kernel.tx_invalid_descs,
                                "rx_ring_full": q.kernel.rx_ring_full,
                                "rx_fill_ring_empty_descs": q.kernel.rx_fill_ring_empty_descs,
                                "tx_ring_empty_descs": q.kernel.tx_ring_empty_descs,
                            },
                            "program": {
                                "steered": q.program.steered,
                                "passed": q.program.passed,
                                "filtered": q.program.filtered,
                            },
                        })).collect::<Vec<_>>(),
                        "subscribers": s.subscribers.iter().map(|u| serde_json::json!({
                            "socket": u.socket,
                            "index": u.index,
                            "delivered": u.delivered,
                            "dropped": u.dropped,
                            "depth": u.depth,
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

fn socket_json(k: &SocketStats) -> serde_json::Value {
    serde_json::json!({
        "id": k.id,
        "kind": k.kind.name(),
        "transport": k.transport.map(|t| t.to_string()),
        "rx_stamps": k.stamping.name(),
        "local": k.local.map(|a| a.to_string()),
        "peer": k.peer.map(|a| a.to_string()),
        "receives": k.receives,
        "recv_bytes": k.recv_bytes,
        "sends": k.sends,
        "send_bytes": k.send_bytes,
        "errors": k.errors,
        "drops": k.drops,
        "class": k.class.map(|c| format!("{c:?}")),
        "flow": k.flow.map(|(id, f)| serde_json::json!({
            "id": id,
            "sent": f.sent,
            "sent_bytes": f.sent_bytes,
            "delayed": f.delayed,
            "non_conformant": f.non_conformant,
            "dropped": f.dropped,
        })),
        "fanout": k.fanout.map(|g| serde_json::json!({
            "subscribers": g.subscribers,
            "received": g.received,
            "stalls": g.stalls,
            "overflow": g.overflow,
        })),
    })
}

/// The OpenMetrics text of every live engine.
pub fn openmetrics(engines: &[EngineStats]) -> String {
    // name -> (OpenMetrics type, samples)
    let mut by_name: BTreeMap<String, (&str, Vec<String>)> = BTreeMap::new();
    for e in engines.iter().filter(|e| !e.stale) {
        for s in &e.shards {
            let labels = format!(
                "pid=\"{}\",process=\"{}\",shard=\"{}\"",
                e.pid,
                e.process.replace('"', ""),
                s.index
            );
            for (name, v) in &s.counters {
                let gauge = GAUGES.contains(&name.as_str());
                let (kind, suffix) = if gauge { ("gauge", "") } else { ("counter", "_total") };
                by_name
                    .entry(name.clone())
                    .or_insert((kind, Vec::new()))
                    .1
                    .push(format!("porto_{name}{suffix}{{{labels}}} {v}"));
            }
            let mut sample = |name: &str, extra: String, v: u64, gauge: bool| {
                let (kind, suffix) = if gauge { ("gauge", "") } else { ("counter", "_total") };
                by_name
                    .entry(name.to_string())
                    .or_insert((kind, Vec::new()))
                    .1
                    .push(format!("porto_{name}{suffix}{{{labels}{extra}}} {v}"));
            };
            for c in &s.classes {
                let l = format!(",class=\"{:?}\"", c.class);
                sample("qos_class_queued", l.clone(), c.queued, true);
                sample("qos_class_sent", l.clone(), c.sent, false);
                sample("qos_class_dropped", l, c.dropped, false);
            }
            for k in &s.sockets {
                let l = format!(
                    ",socket=\"{}\",kind=\"{}\",local=\"{}\"",
                    k.id,
                    k.kind.name(),
                    addr(k.local)
                );
                for (name, v) in [
                    ("socket_receives", k.receives),
                    ("socket_recv_bytes", k.recv_bytes),
                    ("socket_sends", k.sends),
                    ("socket_send_bytes", k.send_bytes),
                    ("socket_errors", k.errors),
                    ("socket_drops", k.drops),
                ] {
                    sample(name, l.clone(), v, false);
                }
            }
            for q in &s.queues {
                let l = format!(",socket=\"{}\",queue=\"{}\"", q.socket, q.queue);
                for (name, v) in [
                    ("xdp_ring_fill", u64::from(q.fill)),
                    ("xdp_ring_rx", u64::from(q.rx)),
                    ("xdp_ring_tx", u64::from(q.tx)),
                    ("xdp_ring_completion", u64::from(q.completion)),
                ] {
                    sample(name, l.clone(), v, true);
                }
                for (name, v) in [
                    ("xdp_kernel_rx_dropped", q.kernel.rx_dropped),
                    ("xdp_kernel_rx_ring_full", q.kernel.rx_ring_full),
                    ("xdp_kernel_rx_fill_ring_empty", q.kernel.rx_fill_ring_empty_descs),
                    (
                        "xdp_kernel_invalid_descs",
                        q.kernel.rx_invalid_descs + q.kernel.tx_invalid_descs,
                    ),
                    ("xdp_program_steered", q.program.steered),
                    ("xdp_program_passed", q.program.passed),
                    ("xdp_program_filtered", q.program.filtered),
                ] {
                    sample(name, l.clone(), v, false);
                }
            }
            for u in &s.subscribers {
                let l = format!(",socket=\"{}\",subscriber=\"{}\"", u.socket, u.index);
                sample("fanout_delivered", l.clone(), u.delivered, false);
                sample("fanout_dropped", l.clone(), u.dropped, false);
                sample("fanout_depth", l, u.depth, true);
            }
            let l = s.latency;
            for (q, v) in [
                ("0.5", l.p50_ns),
                ("0.99", l.p99_ns),
                ("0.999", l.p999_ns),
                ("1", l.max_ns),
            ] {
                by_name
                    .entry("op_latency_seconds".into())
                    .or_insert(("summary", Vec::new()))
                    .1
                    .push(format!(
                        "porto_op_latency_seconds{{{labels},quantile=\"{q}\"}} {}",
                        v as f64 / 1e9
                    ));
            }
        }
    }
    let mut out = String::new();
    for (name, (kind, samples)) in by_name {
        out += &format!("# TYPE porto_{name} {kind}\n");
        for s in samples {
            out += &s;
            out.push('\n');
        }
    }
    out += "# EOF\n";
    out
}

fn serve(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error>> {
    let l = TcpListener::bind(addr).map_err(|e| format!("binding {addr} for --prometheus: {e}"))?;
    println!(
        "porto stats: OpenMetrics at http://{}/metrics (Ctrl-C stops)",
        l.local_addr()?
    );
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = [0u8; 1024];
        let _ = c.read(&mut req);
        let engines: Vec<EngineStats> = telemetry::list()
            .iter()
            .filter_map(|p| telemetry::read(p).ok())
            .collect();
        let body = openmetrics(&engines);
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
