//! PostQueuedCompletionStatus between two polling-mode shards on two threads (thread per
//! core): a post's round trip A → B → A, with both shards busy-polling and with both asleep
//! in the kernel between posts (`idle_spin_us = 0`). Both paths queue the post in the
//! target's command queue; they differ in how a sleeping target is woken: `Shard::post_to`
//! by an io_uring MSG_RING from the sender's ring (submitted with its next turn), and
//! `ShardHandle::post` by the target's eventfd (a write syscall at once). Under the epoll
//! provider both use the eventfd.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use porto::{Completion, Config, Shard, ShardHandle};

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Ring,
    Queue,
}

fn config(sleeping: bool) -> Config {
    Config {
        pin: false,
        frames_per_shard: 256,
        recv_frames: 64,
        huge_pages: false,
        stats_publish: false,
        idle_spin_us: if sleeping { 0 } else { 50 },
        ..Config::default()
    }
}

/// Sends a post from `from` to `to` by `path`, retrying while the path is full.
fn send(from: &mut Shard, to: &ShardHandle, path: Path, token: u64) {
    loop {
        let r = match path {
            Path::Ring => from.post_to(to, 1, token, 8),
            Path::Queue => to.post(1, token, 8),
        };
        if r.is_ok() {
            return;
        }
        let mut out = Vec::new();
        from.poll(&mut out, 8);
    }
}

/// Takes `from`'s next post: busy-polling, or asleep in the kernel.
fn take(shard: &mut Shard, out: &mut Vec<Completion>, sleeping: bool) -> Completion {
    loop {
        let n = if sleeping {
            shard.wait(out, 1, Duration::from_secs(5))
        } else {
            shard.poll(out, 1)
        };
        if n > 0 {
            return out.pop().expect("one completion");
        }
    }
}

fn round_trips(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross-shard post round trip");
    g.measurement_time(Duration::from_secs(3));
    for sleeping in [false, true] {
        for path in [Path::Ring, Path::Queue] {
            let name = format!(
                "{} {}",
                if path == Path::Ring {
                    "post_to (MSG_RING wake)"
                } else {
                    "ShardHandle::post (eventfd wake)"
                },
                if sleeping { "asleep" } else { "busy-polling" }
            );
            let (to_b, from_main) = mpsc::channel::<ShardHandle>();
            let (to_main, from_b) = mpsc::channel::<ShardHandle>();
            // B echoes each post back to A until a post with token u64::MAX.
            let echo = std::thread::spawn(move || {
                let mut b = Shard::new(&config(sleeping), None).expect("shard B");
                to_main.send(b.handle()).expect("main waits");
                let a = from_main.recv().expect("A's handle");
                let mut out = Vec::new();
                loop {
                    let got = take(&mut b, &mut out, sleeping);
                    if got.token == u64::MAX {
                        return;
                    }
                    send(&mut b, &a, path, got.token);
                    // The MSG_RING goes with B's next turn: take it now.
                    b.poll(&mut out, 0);
                }
            });
            let mut a = Shard::new(&config(sleeping), None).expect("shard A");
            let bh = from_b.recv().expect("B's handle");
            to_b.send(a.handle()).expect("B waits");
            let mut out = Vec::new();
            g.bench_function(&name, |bench| {
                bench.iter_custom(|iters| {
                    let t0 = Instant::now();
                    for i in 0..iters {
                        send(&mut a, &bh, path, i);
                        a.poll(&mut out, 0);
                        let back = take(&mut a, &mut out, sleeping);
                        assert_eq!(back.token, i);
                    }
                    t0.elapsed()
                })
            });
            send(&mut a, &bh, path, u64::MAX);
            a.poll(&mut out, 0);
            echo.join().expect("B ends");
            let s = a.stats().counters.snapshot();
            eprintln!(
                "{name}: A sent {} by post_to, woke B {} times by MSG_RING, {} by eventfd",
                s.posts_sent, s.post_wakes_ring, s.post_wakes_eventfd
            );
        }
    }
    g.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
