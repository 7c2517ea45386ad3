//! Completion port post/dequeue: single thread (the pure queue cost) and producer to
//! consumer across threads in batches (the cost a shard and an application thread pay).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use porto::{Completion, CompletionPort};

fn port(c: &mut Criterion) {
    let mut g = c.benchmark_group("port");
    let port = CompletionPort::new(1, 4096);
    let mut out = Vec::with_capacity(64);
    g.throughput(Throughput::Elements(1));
    g.bench_function("post+dequeue 1", |b| {
        b.iter(|| {
            port.post(Completion::new(1, 2, Ok(3))).expect("room");
            out.clear();
            port.dequeue(&mut out, 1, Some(Duration::ZERO))
        })
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("post 64 + dequeue batch of 64", |b| {
        b.iter(|| {
            for t in 0..64 {
                port.post(Completion::new(1, t, Ok(0))).expect("room");
            }
            out.clear();
            port.dequeue(&mut out, 64, Some(Duration::ZERO))
        })
    });
    // This thread holds `port`'s only concurrency slot since its dequeues above (IOCP rules),
    // so the cross-thread case gets a port of its own.
    let port = CompletionPort::new(1, 4096);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("cross-thread 10k in batches", |b| {
        b.iter(|| {
            let p = port.clone();
            let consumer = std::thread::spawn(move || {
                let mut out = Vec::with_capacity(256);
                let mut got = 0;
                while got < 10_000 {
                    out.clear();
                    got += p.dequeue(&mut out, 256, Some(Duration::from_secs(5)));
                }
            });
            for t in 0..10_000u64 {
                let mut c = Completion::new(1, t, Ok(0));
                while let Err(back) = port.post(c) {
                    c = back;
                    std::hint::spin_loop();
                }
            }
            consumer.join().expect("consumer finished");
        })
    });
    g.finish();
}

criterion_group!(benches, port);
criterion_main!(benches);
