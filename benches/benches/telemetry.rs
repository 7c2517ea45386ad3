//! What publishing statistics for `porto stats` costs a shard: one block written per
//! `Config::stats_period_ms` (default 100 ms). Divide by the period for the share of a core.

use criterion::{criterion_group, criterion_main, Criterion};
use porto::telemetry::PublishBench;

fn telemetry(c: &mut Criterion) {
    let mut b = PublishBench::new().expect("a statistics segment in /dev/shm (or PORTO_STATS_DIR)");
    c.bench_function("telemetry publish one shard block", |x| x.iter(|| b.publish()));
}

criterion_group!(benches, telemetry);
criterion_main!(benches);
