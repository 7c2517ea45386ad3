//! The completion port (IOCP): a bounded, lock-free queue of completions that any number of
//! threads dequeue in batches, with a concurrency limit like CreateIoCompletionPort's.
//!
//! Contracts:
//! - Every completion posted is dequeued exactly once (the queue is a linearizable MPMC
//!   queue; a full queue is reported to the poster, who keeps the completion).
//! - `dequeue` returns as soon as at least one completion is available, taking up to the
//!   slice's length in one call; `timeout == Some(ZERO)` polls, `None` waits forever.
//! - Concurrency: at most `concurrency` threads hold completions at once. A thread holds the
//!   port from the `dequeue` that gave it completions until its next `dequeue` on any port
//!   (or its exit) — the rule Windows applies to IOCP threads. Threads beyond the limit wait
//!   even while completions are queued.
//! - [`close`](CompletionPort::close) (CloseHandle) ends every wait on the port at once, as
//!   Windows ends them with ERROR_ABANDONED_WAIT_0; later dequeues return at once.
//! - Wake-ups cost no syscall when nobody sleeps, and a burst posted with `post_batch` wakes
//!   one sleeper, which wakes the next only if work is left: one futex wake per batch, not
//!   per completion.

use std::cell::RefCell;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_queue::ArrayQueue;

use crate::completion::Completion;
use crate::sync::Sleepers;

static NEXT_PORT_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct PortShared {
    id: u64,
    queue: ArrayQueue<Completion>,
    concurrency: usize,
    /// Threads currently holding completions from this port.
    active: AtomicUsize,
    /// Threads asleep (or about to sleep) in `dequeue` (the handshake is `sync::Sleepers`).
    sleepers: Sleepers,
    /// Futex wake-ups issued (for tests and stats).
    wakeups: AtomicU64,
    /// Completions a stopping shard could not queue (the port was full): kept here, behind
    /// the queue, so every accepted operation still ends exactly once. Only shard shutdown
    /// adds to it (it allocates), so the data path never touches the lock.
    overflow: Mutex<std::collections::VecDeque<Completion>>,
    /// Entries in `overflow`.
    overflowed: AtomicUsize,
    /// `close` was called: waits end, dequeues return at once.
    closed: std::sync::atomic::AtomicBool,
    /// Told of each failed completion as it is queued ([`CompletionPort::on_failure`]).
    on_failure: OnceLock<FailureHook>,
}

/// See [`CompletionPort::on_failure`].
type FailureHook = Box<dyn Fn(&Completion) + Send + Sync>;

/// An I/O completion port. Clones share the same port.
#[derive(Clone)]
pub struct CompletionPort {
    shared: Arc<PortShared>,
}

impl fmt::Debug for CompletionPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompletionPort")
            .field("id", &self.shared.id)
            .field("queued", &self.shared.queue.len())
            .field("concurrency", &self.shared.concurrency)
            .finish()
    }
}

/// The port the current thread holds completions from, released at the next dequeue or at
/// thread exit.
struct Held(Option<Weak<PortShared>>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = self.0.take().and_then(|w| w.upgrade()) {
            p.release();
        }
    }
}

thread_local! {
    static HELD: RefCell<Held> = const { RefCell::new(Held(None)) };
}

impl CompletionPort {
    /// A port holding at most `capacity` queued completions, releasing at most
    /// `concurrency` threads at once (0 means the number of CPUs, as in Windows).
    ///
    /// # Panics
    /// If `capacity` is 0 (a programmer error: such a port could never hold a completion).
    pub fn new(concurrency: usize, capacity: usize) -> CompletionPort {
        assert!(capacity > 0, "port capacity must be positive");
        let concurrency = if concurrency == 0 {
            // Windows: "as many concurrently running threads as there are processors in the
            // system" — the machine's, not the calling thread's affinity mask (a program pinned
            // to one core before creating its port still gets one slot per processor).
            crate::sys::cpu::online().map_or_else(
                |_| std::thread::available_parallelism().map_or(1, |n| n.get()),
                |c| c.len().max(1),
            )
        } else {
            concurrency
        };
        CompletionPort {
            shared: Arc::new(PortShared {
                id: NEXT_PORT_ID.fetch_add(1, Ordering::Relaxed),
                queue: ArrayQueue::new(capacity),
                concurrency,
                active: AtomicUsize::new(0),
                sleepers: Sleepers::new(),
                wakeups: AtomicU64::new(0),
                overflow: Mutex::new(std::collections::VecDeque::new()),
                overflowed: AtomicUsize::new(0),
                closed: std::sync::atomic::AtomicBool::new(false),
                on_failure: OnceLock::new(),
            }),
        }
    }

    /// PostQueuedCompletionStatus. A full port hands the completion back.
    pub fn post(&self, c: Completion) -> Result<(), Completion> {
        self.shared.queue.push(c)?;
        self.wake();
        Ok(())
    }

    /// `f` is called with every failed operation's completion as a shard queues it (before it
    /// is queued, on the shard's thread; again if a full port makes the shard queue it
    /// later), from then on; a second hook is refused (`false`). Windows writes an
    /// operation's status into its OVERLAPPED when the operation ends, not when a thread
    /// dequeues it — a program may wait for a cancelled operation with
    /// `HasOverlappedIoCompleted` after its worker threads have gone. Successful completions
    /// are not passed (the C ABI finishes those where their data is copied, at dequeue), and
    /// neither are [`post`](Self::post)ed ones.
    pub fn on_failure(&self, f: impl Fn(&Completion) + Send + Sync + 'static) -> bool {
        self.shared.on_failure.set(Box::new(f)).is_ok()
    }

    fn ending(&self, c: &Completion) {
        if c.result.is_err() {
            if let Some(f) = self.shared.on_failure.get() {
                f(c);
            }
        }
    }

    /// Queues without waking anyone; follow with [`wake`](Self::wake) once per batch.
    pub(crate) fn push(&self, c: Completion) -> Result<(), Completion> {
        self.ending(&c);
        self.shared.queue.push(c)
    }

    /// Queues past the capacity (a stopping shard's last completions, which must not be
    /// lost) and wakes a sleeper. Allocates: never on the data path.
    pub(crate) fn push_overflow(&self, c: Completion) {
        self.ending(&c);
        let s = &*self.shared;
        s.overflow.lock().expect("port lock poisoned").push_back(c);
        s.overflowed.fetch_add(1, Ordering::Release);
        self.wake();
    }

    /// Completions wait in the overflow list: later ones must follow them there to keep the
    /// port's order (the consumer takes the queue first, then the overflow).
    pub(crate) fn has_overflow(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire) > 0
    }

    /// Wakes one sleeper if any is asleep and work is queued.
    pub(crate) fn wake(&self) {
        if self.shared.sleepers.wake_one() {
            self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Completions queued now.
    pub fn len(&self) -> usize {
        self.shared.queue.len() + self.shared.overflowed.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        !self.shared.has_work()
    }

    pub fn capacity(&self) -> usize {
        self.shared.queue.capacity()
    }

    pub fn concurrency(&self) -> usize {
        self.shared.concurrency
    }

    /// Futex wake-ups issued so far.
    pub fn wakeups(&self) -> u64 {
        self.shared.wakeups.load(Ordering::Relaxed)
    }

    /// GetQueuedCompletionStatusEx: appends up to `max` completions to `out`, waiting up to
    /// `timeout` (`None`: forever, `Some(ZERO)`: poll). Returns how many were appended; 0
    /// means the timeout passed (WAIT_TIMEOUT). `out` does not reallocate if it has room.
    pub fn dequeue(&self, out: &mut Vec<Completion>, max: usize, timeout: Option<Duration>) -> usize {
        if max == 0 {
            return 0;
        }
        // Calling dequeue again ends this thread's hold on whatever port it held.
        HELD.with(|h| drop(std::mem::replace(&mut *h.borrow_mut(), Held(None))));
        // A timeout too long to add to now (Duration::MAX) waits forever.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let s = &*self.shared;
        loop {
            if s.closed.load(Ordering::Acquire) {
                return 0;
            }
            if let Some(n) = self.try_take(out, max) {
                return n;
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return 0,
                Some(d) => Some(d - now),
                None => None,
            };
            s.sleepers.sleep_unless(
                || s.closed.load(Ordering::Acquire) || s.has_work() && s.active.load(Ordering::Acquire) < s.concurrency,
                left,
            );
        }
    }

    /// Takes completions if the concurrency limit allows; records the hold.
    fn try_take(&self, out: &mut Vec<Completion>, max: usize) -> Option<usize> {
        let s = &*self.shared;
        // Claim a concurrency slot first, so two threads cannot both pass the limit.
        let mut active = s.active.load(Ordering::Acquire);
        loop {
            if active >= s.concurrency || !s.has_work() {
                return None;
            }
            match s
                .active
                .compare_exchange_weak(active, active + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(a) => active = a,
            }
        }
        let mut n = 0;
        while n < max {
            match s.queue.pop() {
                Some(c) => {
                    out.push(c);
                    n += 1;
                }
                None => break,
            }
        }
        if n < max && s.overflowed.load(Ordering::Acquire) > 0 {
            let mut o = s.overflow.lock().expect("port lock poisoned");
            while n < max {
                let Some(c) = o.pop_front() else { break };
                s.overflowed.fetch_sub(1, Ordering::Release);
                out.push(c);
                n += 1;
            }
        }
        if n == 0 {
            s.release();
            return None;
        }
        HELD.with(|h| h.borrow_mut().0 = Some(Arc::downgrade(&self.shared)));
        // Work left over and room under the limit: pass the wake-up on.
        if s.has_work() && s.active.load(Ordering::Acquire) < s.concurrency {
            self.wake();
        }
        Some(n)
    }

    /// CloseHandle: every thread waiting in [`dequeue`](Self::dequeue) returns 0 at once, and
    /// later dequeues return 0 without waiting ([`is_closed`](Self::is_closed) tells this
    /// from a timeout: Windows' ERROR_ABANDONED_WAIT_0). Completions still queued are left
    /// to be dropped with the port.
    pub fn close(&self) {
        // Release: pairs with the Acquire loads in `dequeue` and its sleep check.
        self.shared.closed.store(true, Ordering::Release);
        self.shared.sleepers.wake_all();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Ends the calling thread's hold on this port now, without dequeuing.
    pub fn release_thread(&self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.0.as_ref().is_some_and(|w| w.ptr_eq(&Arc::downgrade(&self.shared))) {
                drop(std::mem::replace(&mut *h, Held(None)));
            }
        });
    }

    /// Ends the calling thread's hold on whatever port it holds: what Windows does when a
    /// thread that dequeued blocks elsewhere (another wait, blocking I/O), so another thread
    /// may take completions under the concurrency limit. Linux tells no one when a thread
    /// blocks, so porto does it where it knows — its own blocking calls (the C ABI's
    /// blocking socket calls, event waits) call this first — and an application blocking
    /// elsewhere calls it itself. Unlike Windows, the thread is not counted again when it
    /// wakes, only at its next `dequeue`.
    pub fn release_current_thread() {
        HELD.with(|h| drop(std::mem::replace(&mut *h.borrow_mut(), Held(None))));
    }

    pub(crate) fn ptr_eq(&self, other: &CompletionPort) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl PortShared {
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.overflowed.load(Ordering::Acquire) > 0
    }

    fn release(&self) {
        let prev = self.active.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0, "port released more often than held");
        // A slot opened: a sleeper held back by the limit may go now.
        if self.has_work() && self.sleepers.wake_one() {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn post_then_batch_dequeue_in_order() {
        let port = CompletionPort::new(1, 64);
        for t in 0..10 {
            port.post(Completion::new(7, t, Ok(t as usize))).unwrap();
        }
        let mut out = Vec::with_capacity(16);
        assert_eq!(port.dequeue(&mut out, 4, Some(Duration::ZERO)), 4);
        let tokens: Vec<u64> = out.iter().map(|c| c.token).collect();
        assert_eq!(tokens, [0, 1, 2, 3]);
        assert_eq!(out[0].key, 7);
        out.clear();
        assert_eq!(port.dequeue(&mut out, 16, Some(Duration::ZERO)), 6);
        assert_eq!(port.dequeue(&mut out, 16, Some(Duration::ZERO)), 0);
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn zero_timeout_polls_and_finite_timeout_waits() {
        let port = CompletionPort::new(1, 4);
        let mut out = Vec::new();
        assert_eq!(port.dequeue(&mut out, 1, Some(Duration::ZERO)), 0);
        let t0 = Instant::now();
        assert_eq!(port.dequeue(&mut out, 1, Some(Duration::from_millis(50))), 0);
        assert!(t0.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn full_port_hands_the_completion_back() {
        let port = CompletionPort::new(1, 2);
        port.post(Completion::new(0, 1, Ok(0))).unwrap();
        port.post(Completion::new(0, 2, Ok(0))).unwrap();
        let back = port.post(Completion::new(0, 3, Err(Error::Aborted))).unwrap_err();
        assert_eq!(back.token, 3);
    }

    #[test]
    fn blocked_dequeuer_is_woken_by_post() {
        let port = CompletionPort::new(2, 8);
        let p = port.clone();
        let h = std::thread::spawn(move || {
            let mut out = Vec::new();
            let n = p.dequeue(&mut out, 8, None);
            (n, out[0].token)
        });
        std::thread::sleep(Duration::from_millis(30));
        port.post(Completion::new(0, 42, Ok(1))).unwrap();
        assert_eq!(h.join().unwrap(), (1, 42));
    }

    #[test]
    fn concurrency_limit_holds_back_extra_threads() {
        let port = CompletionPort::new(1, 8);
        port.post(Completion::new(0, 1, Ok(0))).unwrap();
        let mut out = Vec::new();
        // This thread now holds the port's only concurrency slot.
        assert_eq!(port.dequeue(&mut out, 1, Some(Duration::ZERO)), 1);
        port.post(Completion::new(0, 2, Ok(0))).unwrap();
        let p = port.clone();
        let other = std::thread::spawn(move || {
            let mut out = Vec::new();
            let t0 = Instant::now();
            let n = p.dequeue(&mut out, 1, Some(Duration::from_secs(5)));
            (n, t0.elapsed())
        });
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(
            port.len(),
            1,
            "the second thread must wait while the first holds the slot"
        );
        port.release_thread();
        let (n, waited) = other.join().unwrap();
        assert_eq!(n, 1);
        assert!(
            waited >= Duration::from_millis(90),
            "released only after the holder let go: {waited:?}"
        );
    }

    #[test]
    fn every_completion_is_delivered_exactly_once_across_threads() {
        const N: u64 = 20_000;
        let port = CompletionPort::new(4, 256);
        let consumers: Vec<_> = (0..4)
            .map(|_| {
                let p = port.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut out = Vec::with_capacity(32);
                    loop {
                        let n = p.dequeue(&mut out, 32, Some(Duration::from_millis(300)));
                        if n == 0 {
                            return seen;
                        }
                        seen.extend(out.drain(..).map(|c| c.token));
                    }
                })
            })
            .collect();
        let producers: Vec<_> = (0..2)
            .map(|k| {
                let p = port.clone();
                std::thread::spawn(move || {
                    for i in 0..N / 2 {
                        let mut c = Completion::new(0, k * N + i, Ok(0));
                        while let Err(back) = p.post(c) {
                            c = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        producers.into_iter().for_each(|h| h.join().unwrap());
        let mut all: Vec<u64> = consumers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_unstable();
        let want: Vec<u64> = (0..N / 2).chain(N..N + N / 2).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn a_burst_costs_few_wakeups() {
        let port = CompletionPort::new(1, 1024);
        let p = port.clone();
        let h = std::thread::spawn(move || {
            let mut out = Vec::with_capacity(1024);
            let mut got = 0;
            while got < 1000 {
                got += p.dequeue(&mut out, 1024, Some(Duration::from_secs(5)));
            }
            got
        });
        std::thread::sleep(Duration::from_millis(50));
        for i in 0..1000 {
            port.push(Completion::new(0, i, Ok(0))).unwrap();
        }
        port.wake();
        assert_eq!(h.join().unwrap(), 1000);
        assert!(port.wakeups() <= 2, "one burst, {} wake-ups", port.wakeups());
    }
}
