//! The lock-free handshakes between application threads and a shard, each in one place so
//! that a loom model checks the very code the engine runs (`RUSTFLAGS="--cfg loom" cargo
//! test -p porto-engine --lib loom`; under `cfg(loom)` the atomics below are loom's).
//!
//! Both are the store-buffering (Dekker) pattern: each side writes its own variable, then
//! reads the other's. Release/acquire does not forbid both reads from missing both writes
//! (a store may be reordered after a later load to another location); a SeqCst fence between
//! the write and the read on *both* sides does. The data side's writes (a queue push) may be
//! as weak as Release: the fence orders them too.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize};

use std::sync::atomic::Ordering;

/// A sleeper's "wake me" flag (a RIO notification armed, a shard about to sleep).
///
/// Consumer: [`arm`](Self::arm) with a check of the data. Producer: publish the data, then
/// [`take`](Self::take). Contract: if the producer's data is published after the consumer's
/// check missed it, the producer's `take` returns true — exactly one side acts on each arming.
#[derive(Debug)]
pub(crate) struct WakeFlag {
    armed: AtomicBool,
}

impl WakeFlag {
    pub(crate) fn new() -> WakeFlag {
        WakeFlag {
            armed: AtomicBool::new(false),
        }
    }

    /// Arms, then checks `ready`. True if data was already there and this call disarmed
    /// again (the caller acts itself: fires the notification, or does not sleep); false if
    /// armed (a producer's `take` will see it, or the caller later disarms with `disarm`).
    pub(crate) fn arm(&self, ready: impl FnOnce() -> bool) -> bool {
        self.armed.store(true, Ordering::Relaxed);
        // SeqCst fence: pairs with the one in `take`. Either the producer's take sees our
        // store, or our `ready` sees its data.
        fence(Ordering::SeqCst);
        // AcqRel swap: only one of us and a racing producer claims the arming.
        ready() && self.armed.swap(false, Ordering::AcqRel)
    }

    /// Producer, after publishing data: true if a consumer was armed and this call claimed
    /// the wake-up (the caller must wake it).
    pub(crate) fn take(&self) -> bool {
        // SeqCst fence: pairs with `arm` (see there).
        fence(Ordering::SeqCst);
        self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel)
    }

    /// Consumer: withdraws an arming (after waking for another reason).
    pub(crate) fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }
}

/// The gate in front of a shard's command queue: producers pass it to push; a stopping shard
/// closes it and then waits until nobody is inside, so its last drain sees every command
/// that was accepted, and no command can be accepted after it.
#[derive(Debug)]
pub(crate) struct StopGate {
    stop: AtomicBool,
    inside: AtomicUsize,
}

impl StopGate {
    pub(crate) fn new() -> StopGate {
        StopGate {
            stop: AtomicBool::new(false),
            inside: AtomicUsize::new(0),
        }
    }

    /// Runs `push` unless the gate is closed; `Err(closed)` hands the argument back.
    pub(crate) fn pass<T>(&self, item: T, push: impl FnOnce(T) -> Result<(), T>) -> Result<(), T> {
        self.inside.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: pairs with `close`. Either we see `stop`, or `close` sees us inside
        // (and waits for our push).
        fence(Ordering::SeqCst);
        let r = if self.stop.load(Ordering::Relaxed) {
            Err(item)
        } else {
            push(item)
        };
        // Release: our push happens before `close`'s Acquire load that sees us gone.
        self.inside.fetch_sub(1, Ordering::Release);
        r
    }

    /// Closes the gate and waits until no producer is inside it.
    pub(crate) fn close(&self) {
        self.stop.store(true, Ordering::Relaxed);
        // SeqCst fence: pairs with `pass`.
        fence(Ordering::SeqCst);
        while self.inside.load(Ordering::Acquire) > 0 {
            #[cfg(loom)]
            loom::thread::yield_now();
            #[cfg(not(loom))]
            std::thread::yield_now();
        }
    }

    /// Sets the stop flag without waiting (a stop requested from another thread; the
    /// shard itself closes the gate before its last drain).
    pub(crate) fn request(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}
