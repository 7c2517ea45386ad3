//! Pool get/put: the cost of taking a frame for a send and returning it (same thread, and
//! returned from another thread as an application would).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use porto::{Config, Shard};

fn pool(c: &mut Criterion) {
    let cfg = Config {
        pin: false,
        huge_pages: false,
        ..Config::default()
    };
    let shard = Shard::new(&cfg, None).expect("a shard starts (io_uring available)");
    let pool = shard.pool().clone();
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("alloc+drop", |b| {
        b.iter(|| drop(std::hint::black_box(pool.alloc().expect("free frames"))))
    });
    g.bench_function("alloc_from 64B", |b| {
        let msg = [7u8; 64];
        b.iter(|| drop(std::hint::black_box(pool.alloc_from(&msg).expect("free frames"))))
    });
    g.throughput(Throughput::Elements(256));
    g.bench_function("alloc 256 then drop 256", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(256),
            |v| {
                for _ in 0..256 {
                    v.push(pool.alloc().expect("free frames"));
                }
                v.clear();
            },
            BatchSize::SmallInput,
        )
    });
    // Fan-out's per-subscriber frame cost: N handles for one atomic add, each released by
    // its own drop (one atomic subtract each), as N subscribers would.
    for n in [1u64, 64] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("freeze + {n} shares + drops"), |b| {
            let mut handles = Vec::with_capacity(n as usize);
            b.iter(|| {
                let frozen = pool.alloc().expect("free frames").freeze();
                handles.extend(frozen.shares(n as u32));
                drop(frozen);
                handles.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pool);
criterion_main!(benches);
