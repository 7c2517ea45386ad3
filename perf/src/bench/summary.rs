//! Measurements, medians over rounds, ratios to the baseline of the same run, tables, JSON
//! with the run's environment, and plots.

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use serde::Serialize;

use super::servers::Server;
use super::Scenario;
use crate::loadgen::LoadResult;
use crate::plot;

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
    /// UDP ping-pong, split at the reply's kernel receive stamp on the client: request sent
    /// → reply in the client's kernel (network + server), and kernel → client read.
    pub to_kernel_p50_us: Option<f64>,
    pub to_kernel_p99_us: Option<f64>,
    pub to_app_p50_us: Option<f64>,
    pub to_app_p99_us: Option<f64>,
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
pub(super) struct Report<'a> {
    #[serde(flatten)]
    pub(super) env: RunEnv,
    pub(super) seconds: f64,
    pub(super) rounds: usize,
    pub(super) rate: Option<u64>,
    pub(super) porto_args: &'a str,
    pub(super) unavailable: &'a [(Server, String)],
    pub(super) failures: &'a [(Server, String)],
    pub(super) measurements: &'a [Measurement],
    pub(super) summary: &'a [Summary],
}

/// What every result file records about the run.
#[derive(Debug, Serialize)]
pub(super) struct RunEnv {
    scenario: Scenario,
    started_unix_s: u64,
    kernel: String,
    cpu_model: String,
    cpus: usize,
    server_cpu: usize,
    client_cpu: usize,
}

impl RunEnv {
    pub(super) fn new(scenario: Scenario, cpus: usize, server_cpu: usize, client_cpu: usize) -> RunEnv {
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

pub(super) fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub(super) fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, f64)> {
    [50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999]
        .iter()
        .map(|&p| (p, us(h.value_at_percentile(p))))
        .collect()
}

pub(super) fn measurement(
    server: Server,
    size: usize,
    conns: usize,
    round: usize,
    r: &LoadResult,
    cpu: u64,
) -> Measurement {
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
            to_kernel_p50_us: quantile_us(&r.to_kernel_ns, 0.5),
            to_kernel_p99_us: quantile_us(&r.to_kernel_ns, 0.99),
            to_app_p50_us: quantile_us(&r.to_app_ns, 0.5),
            to_app_p99_us: quantile_us(&r.to_app_ns, 0.99),
        },
        curve: curve(h),
    }
}

/// A quantile in µs, if the histogram holds anything.
fn quantile_us(h: &hdrhistogram::Histogram<u64>, q: f64) -> Option<f64> {
    (!h.is_empty()).then(|| us(h.value_at_quantile(q)))
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
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

pub(super) fn summarize(ms: &[Measurement]) -> Vec<Summary> {
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
            let med_opt = |f: &dyn Fn(&Figures) -> Option<f64>| {
                let v: Vec<f64> = rs.iter().filter_map(|m| f(&m.figures)).collect();
                (!v.is_empty()).then(|| median(v))
            };
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
                    to_kernel_p50_us: med_opt(&|f| f.to_kernel_p50_us),
                    to_kernel_p99_us: med_opt(&|f| f.to_kernel_p99_us),
                    to_app_p50_us: med_opt(&|f| f.to_app_p50_us),
                    to_app_p99_us: med_opt(&|f| f.to_app_p99_us),
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

pub(super) fn ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |v| format!("{v:.2}"))
}

pub(super) fn print_table(scenario: Scenario, summary: &[Summary]) {
    println!(
        "{:<18} {:>6} {:>5} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>9} {:>7} {:>7} {:>7}",
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
            "{:<18} {:>6} {:>5} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>6} {:>9} {:>7} {:>7} {:>7}",
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
    if summary.iter().any(|s| s.figures.to_app_p50_us.is_some()) {
        println!();
        println!("round trip split at the reply's kernel receive stamp on the client (µs; medians of the rounds):");
        println!(
            "{:<22} {:>6} {:>16} {:>16} {:>16} {:>16}",
            "server", "size", "→ kernel p50", "→ kernel p99", "kernel → app p50", "kernel → app p99"
        );
        let v = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.1}"));
        for s in summary {
            let f = &s.figures;
            println!(
                "{:<22} {:>6} {:>16} {:>16} {:>16} {:>16}",
                s.label,
                s.size,
                v(f.to_kernel_p50_us),
                v(f.to_kernel_p99_us),
                v(f.to_app_p50_us),
                v(f.to_app_p99_us)
            );
        }
    }
}

pub(super) fn env_string(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

pub(super) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}

pub(super) fn write_plots(
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
