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
#[cfg(loom)]
use loom::sync::{Condvar, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicUsize};
#[cfg(not(loom))]
use std::sync::{Condvar, Mutex};

use std::sync::atomic::Ordering;
use std::time::Duration;

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

/// Threads asleep waiting for work (a completion port's dequeuers) and the wake-up of one.
///
/// A sleeper registers (count in, SeqCst fence) and then checks for work under the lock; a
/// producer publishes work, then (SeqCst fence) reads the count and, if anyone sleeps,
/// notifies under the lock. Either the producer sees the sleeper, or the sleeper sees the
/// work; and a notify cannot fall between a sleeper's check and its wait, since both happen
/// under the lock. Posting costs no syscall when nobody sleeps.
#[derive(Debug)]
pub(crate) struct Sleepers {
    count: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Sleepers {
    pub(crate) fn new() -> Sleepers {
        Sleepers {
            count: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Sleeps until woken or `timeout` passes (`None`: no limit), unless `ready()` says
    /// there is work once this thread is registered. Wakes may be spurious: the caller loops.
    pub(crate) fn sleep_unless(&self, ready: impl FnOnce() -> bool, timeout: Option<Duration>) {
        let g = self.lock.lock().expect("sleepers lock poisoned");
        self.count.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: pairs with `wake_one`'s (see the type's doc).
        fence(Ordering::SeqCst);
        if !ready() {
            match timeout {
                Some(t) => drop(self.cv.wait_timeout(g, t).expect("sleepers lock poisoned")),
                None => drop(self.cv.wait(g).expect("sleepers lock poisoned")),
            }
        } else {
            drop(g);
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// After a change every sleeper must see (a port closing): wakes them all.
    pub(crate) fn wake_all(&self) {
        // SeqCst fence: pairs with `sleep_unless`'s, as in `wake_one`.
        fence(Ordering::SeqCst);
        let _g = self.lock.lock().expect("sleepers lock poisoned");
        self.cv.notify_all();
    }

    /// After publishing work: wakes one sleeper if any. True if a notify was issued.
    pub(crate) fn wake_one(&self) -> bool {
        // SeqCst fence: pairs with `sleep_unless`'s.
        fence(Ordering::SeqCst);
        if self.count.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let _g = self.lock.lock().expect("sleepers lock poisoned");
        self.cv.notify_one();
        true
    }
}

/// How other threads wake a shard that may be asleep in `io_uring_enter`: its sleep flag
/// (`WakeFlag`) and the eventfd it keeps a read armed on. Shared by everything that may need
/// to wake a shard (the command queue's producers, RIO slot releases, fan-out consumers).
#[derive(Debug)]
pub(crate) struct ShardWaker {
    sleeping: WakeFlag,
    fd: std::os::fd::OwnedFd,
}

impl ShardWaker {
    pub(crate) fn new(fd: std::os::fd::OwnedFd) -> ShardWaker {
        ShardWaker {
            sleeping: WakeFlag::new(),
            fd,
        }
    }

    /// After publishing work for the shard: wakes it if it sleeps (or is about to).
    pub(crate) fn wake(&self) {
        if self.sleeping.take() {
            self.signal();
        }
    }

    /// Claims the wake-up of a shard that sleeps (or is about to): true if it does, and the
    /// caller must then wake it — [`signal`](Self::signal), or a MSG_RING into its ring.
    pub(crate) fn take(&self) -> bool {
        self.sleeping.take()
    }

    /// Writes the eventfd whatever the flag says (a stop request).
    pub(crate) fn signal(&self) {
        crate::sys::net::eventfd_signal(std::os::fd::AsRawFd::as_raw_fd(&self.fd));
    }

    /// The shard, about to sleep: see `WakeFlag::arm`.
    pub(crate) fn arm(&self, ready: impl FnOnce() -> bool) -> bool {
        self.sleeping.arm(ready)
    }

    /// The shard, awake again (or a stop request).
    pub(crate) fn disarm(&self) {
        self.sleeping.disarm();
    }

    /// The eventfd the shard reads.
    pub(crate) fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
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
