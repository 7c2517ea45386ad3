//! loom models of the engine's lock-free handshakes, run with
//! `RUSTFLAGS="--cfg loom" cargo test -p porto-engine --release --lib loom` (CI runs them).
//! Each explores every interleaving and every weak-memory outcome loom knows of for a small
//! scenario; the data side uses Release stores and Acquire loads, the weakest a queue offers.

// loom's UnsafeCell stands in for frame bytes in the models.
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize};
use loom::thread;

use crate::pool::Pool;
use crate::sync::{Sleepers, StopGate, WakeFlag};

/// A consumer arms (checking for data), a producer publishes and takes: whenever the data
/// was published, someone acts on it — the consumer's check saw it, or the producer's take
/// claimed the wake-up. Never both (one wake-up per arming).
#[test]
fn loom_wake_flag_never_loses_a_wake_up() {
    loom::model(|| {
        let flag = Arc::new(WakeFlag::new());
        let data = Arc::new(AtomicBool::new(false));
        let producer = {
            let (flag, data) = (flag.clone(), data.clone());
            thread::spawn(move || {
                data.store(true, Ordering::Release);
                flag.take()
            })
        };
        let saw = flag.arm(|| data.load(Ordering::Acquire));
        let woken = producer.join().unwrap();
        assert!(saw || woken, "both sides missed: the sleeper sleeps with data waiting");
        assert!(!(saw && woken), "both sides acted on one arming");
    });
}

/// A shard closes its gate while a producer pushes: the command is either refused, or
/// visible to the drain that follows `close`. Never accepted and then missed.
#[test]
fn loom_stop_gate_drain_sees_every_accepted_command() {
    loom::model(|| {
        let gate = Arc::new(StopGate::new());
        let queued = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (gate, queued) = (gate.clone(), queued.clone());
            thread::spawn(move || {
                gate.pass((), |()| {
                    queued.fetch_add(1, Ordering::Release);
                    Ok(())
                })
                .is_ok()
            })
        };
        gate.close();
        let drained = queued.load(Ordering::Acquire);
        let accepted = producer.join().unwrap();
        assert_eq!(drained, usize::from(accepted), "accepted {accepted}, drained {drained}");
    });
}

/// Two threads share a frame through clones and `shares`; one reads the frame and lets go,
/// the other waits to thaw it and writes. The thaw must happen after the other's read (the
/// Release decrement in drop, the Acquire in try_thaw): loom flags the write as a data race
/// otherwise. The frame's bytes are raw memory loom cannot see, so a loom cell stands in for
/// them; the orderings that protect it are the real code's. The frame returns exactly once.
#[test]
fn loom_shared_buf_thaw_happens_after_every_other_holder() {
    loom::model(|| {
        let pool = Pool::new(1, 512, false).unwrap();
        let bytes = Arc::new(UnsafeCell::new(0u8));
        let mut a = pool.alloc_from(b"x").unwrap().freeze();
        let mut extra = a.shares(1);
        let b = extra.next().unwrap();
        drop(extra);
        let t = {
            let bytes = bytes.clone();
            thread::spawn(move || {
                let c = b.clone();
                drop(b);
                // SAFETY (model): a read while this thread holds a handle.
                let seen = bytes.with(|p| unsafe { *p });
                drop(c);
                seen
            })
        };
        let mut buf = loop {
            match a.try_thaw() {
                Ok(buf) => break buf,
                Err(back) => {
                    a = back;
                    thread::yield_now();
                }
            }
        };
        // SAFETY (model): the thawed Buf is the only owner now.
        bytes.with_mut(|p| unsafe { *p = 1 });
        buf[0] = b'y';
        drop(buf);
        assert_eq!(t.join().unwrap(), 0, "the reader saw the writer's byte");
        assert_eq!(pool.free_frames(), 1, "the frame came back exactly once");
    });
}

/// A completion port's sleeper and a poster: the sleeper checks for work and sleeps, the
/// poster publishes and wakes one. The sleeper always gets the work: loom reports a thread
/// left asleep forever (its condvar wait has no timeout under loom) as a deadlock.
#[test]
fn loom_port_sleeper_is_always_woken_for_posted_work() {
    loom::model(|| {
        let s = Arc::new(Sleepers::new());
        let work = Arc::new(AtomicBool::new(false));
        let poster = {
            let (s, work) = (s.clone(), work.clone());
            thread::spawn(move || {
                work.store(true, Ordering::Release);
                s.wake_one();
            })
        };
        while !work.load(Ordering::Acquire) {
            s.sleep_unless(|| work.load(Ordering::Acquire), None);
        }
        poster.join().unwrap();
    });
}
