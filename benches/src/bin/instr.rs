//! Instruction counts per operation, for callgrind (`benches/callgrind.sh`): each case runs
//! its operation `n` times inside one `#[inline(never)]` function that callgrind's
//! `--toggle-collect` isolates. Counts are repeatable on a noisy machine; times are not.

use std::hint::black_box;
use std::time::Duration;

use porto::{Completion, CompletionPort, Pool};

#[inline(never)]
fn case_pool_alloc_drop(pool: &Pool, n: u64) {
    for _ in 0..n {
        drop(black_box(pool.alloc().expect("free frames")));
    }
}

#[inline(never)]
fn case_pool_alloc_from_64(pool: &Pool, n: u64) {
    let msg = [7u8; 64];
    for _ in 0..n {
        drop(black_box(pool.alloc_from(&msg).expect("free frames")));
    }
}

#[inline(never)]
fn case_port_post_dequeue(port: &CompletionPort, out: &mut Vec<Completion>, n: u64) {
    for t in 0..n {
        port.post(Completion::new(1, t, Ok(0))).expect("room");
        out.clear();
        black_box(port.dequeue(out, 1, Some(Duration::ZERO)));
    }
}

#[inline(never)]
fn case_port_batch64(port: &CompletionPort, out: &mut Vec<Completion>, n: u64) {
    for _ in 0..n / 64 {
        for t in 0..64 {
            port.post(Completion::new(1, t, Ok(0))).expect("room");
        }
        out.clear();
        black_box(port.dequeue(out, 64, Some(Duration::ZERO)));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let pool = Pool::new(1024, 2048, false).expect("mmap of a small pool");
    let port = CompletionPort::new(1, 4096);
    let mut out = Vec::with_capacity(64);
    match case.as_str() {
        "pool_alloc_drop" => case_pool_alloc_drop(&pool, n),
        "pool_alloc_from_64" => case_pool_alloc_from_64(&pool, n),
        "port_post_dequeue" => case_port_post_dequeue(&port, &mut out, n),
        "port_batch64" => case_port_batch64(&port, &mut out, n),
        _ => {
            eprintln!("usage: instr <pool_alloc_drop|pool_alloc_from_64|port_post_dequeue|port_batch64> [n]");
            std::process::exit(2);
        }
    }
}
