//! Result tables with ratios against a baseline measured in the same run.

use crate::loadgen::LoadResult;

#[derive(Clone, Debug)]
pub struct LatencyRow {
    pub proto: String,
    pub what: String,
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub timeouts: u64,
    /// (p50 ratio, rate ratio) against the baseline.
    pub vs_base: Option<(f64, f64)>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl LatencyRow {
    pub fn new(proto: &str, what: &str, r: &LoadResult, base: Option<&LoadResult>) -> LatencyRow {
        let h = &r.latency_ns;
        let p50 = h.value_at_quantile(0.5);
        LatencyRow {
            proto: proto.into(),
            what: what.into(),
            rate: r.rate(),
            p50_us: us(p50),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            timeouts: r.lost,
            vs_base: base.map(|b| {
                (
                    p50 as f64 / b.latency_ns.value_at_quantile(0.5).max(1) as f64,
                    r.rate() / b.rate().max(1e-9),
                )
            }),
        }
    }
}

#[derive(Debug)]
pub struct Table {
    title: String,
    rows: Vec<LatencyRow>,
}

impl Table {
    pub fn new(title: &str) -> Table {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, r: LatencyRow) {
        self.rows.push(r);
    }

    pub fn print(&self) {
        println!("{}", self.title);
        println!(
            "{:<5} {:<28} {:>11} {:>8} {:>8} {:>8} {:>9} {:>8} {:>9} {:>8}",
            "proto", "server", "msgs/s", "p50", "p99", "p99.9", "max", "lost", "p50 ×", "rate ×"
        );
        for r in &self.rows {
            let (p, q) = r.vs_base.map_or(("1.00 (base)".to_string(), "".to_string()), |(p, q)| {
                (format!("{p:.2}"), format!("{q:.2}"))
            });
            println!(
                "{:<5} {:<28} {:>11.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>8} {:>9} {:>8}",
                r.proto, r.what, r.rate, r.p50_us, r.p99_us, r.p999_us, r.max_us, r.timeouts, p, q
            );
        }
    }
}
