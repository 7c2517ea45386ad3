//! The scenarios that drive their own harness (xdp-rx, fanout, qos); latency, throughput and
//! tcp run through `run`'s common loop.

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::summary::*;
use super::{BenchArgs, Scenario};
use crate::plot;

/// `porto bench xdp-rx`: its own shape (no servers as processes, no latency).
pub(super) fn run_xdp_rx(
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
pub(super) fn run_fanout(
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
pub(super) fn run_qos(
    a: &BenchArgs,
    cpus: usize,
    server_cpu: usize,
    client_cpu: usize,
) -> Result<(), Box<dyn std::error::Error>> {
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
