//! Completions a shard holds back for full completion ports: one bounded queue per port,
//! allocated when the first socket delivering to that port opens (the control path), so one
//! port whose consumer stalls delays only its own completions, and the data path never
//! allocates.
//!
//! At the bound, backpressure falls where it does no harm: a datagram of a multishot receive
//! (`more`: not the end of its operation) is dropped and counted, its frame back in the pool,
//! as a full UDP socket buffer would. An operation's terminal completion must be delivered
//! exactly once and after its operation's datagrams: it takes the place of the oldest
//! datagram waiting (dropped, counted); if only terminal completions wait, the whole backlog
//! moves to the port's overflow list, in order, and this one after it (counted: a consumer
//! that stopped dequeuing entirely is the only way there).

use std::collections::VecDeque;

use crate::completion::Completion;
use crate::port::CompletionPort;

struct Entry {
    port: CompletionPort,
    queue: VecDeque<Completion>,
    /// Sockets of this shard delivering to the port.
    sockets: u32,
}

/// What became of a completion handed to [`Backlogs::deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// Into the port's queue (wake the port).
    Pushed,
    /// Into the port's backlog, behind completions already waiting there.
    Queued,
    /// A datagram the full backlog had no room for: dropped.
    Dropped,
    /// A terminal completion queued in the place of the oldest waiting datagram (dropped).
    Evicted,
    /// A terminal completion the full backlog (all terminal) had no room for: it and the
    /// backlog went to the port's overflow, in order.
    Overflowed,
}

pub(crate) struct Backlogs {
    entries: Vec<Entry>,
    /// Entries with a non-empty queue.
    blocked: usize,
    /// Completions one port's backlog holds.
    cap: usize,
}

impl std::fmt::Debug for Backlogs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backlogs")
            .field("ports", &self.entries.len())
            .field("blocked", &self.blocked)
            .finish()
    }
}

impl Backlogs {
    pub(crate) fn new(cap: usize) -> Backlogs {
        Backlogs {
            entries: Vec::new(),
            blocked: 0,
            cap,
        }
    }

    fn find(&self, port: &CompletionPort) -> Option<usize> {
        self.entries.iter().position(|e| e.port.ptr_eq(port))
    }

    /// A socket delivering to `port` opened: its backlog exists from now on (allocated here,
    /// once per port).
    pub(crate) fn attach(&mut self, port: &CompletionPort) {
        match self.find(port) {
            Some(i) => self.entries[i].sockets += 1,
            None => self.entries.push(Entry {
                port: port.clone(),
                queue: VecDeque::with_capacity(self.cap),
                sockets: 1,
            }),
        }
    }

    /// A socket delivering to `port` closed; the backlog goes once no socket uses it and it
    /// is empty.
    pub(crate) fn detach(&mut self, port: &CompletionPort) {
        if let Some(i) = self.find(port) {
            let e = &mut self.entries[i];
            e.sockets = e.sockets.saturating_sub(1);
            if e.sockets == 0 && e.queue.is_empty() {
                self.entries.swap_remove(i);
            }
        }
    }

    /// Some port has completions waiting in its backlog.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked > 0
    }

    /// Delivers `c` to `port` in order: behind the port's backlog if it has one waiting,
    /// else into the port, else into its backlog.
    pub(crate) fn deliver(&mut self, port: &CompletionPort, c: Completion) -> Delivered {
        let at = if self.blocked > 0 {
            self.find(port).filter(|&i| !self.entries[i].queue.is_empty())
        } else {
            None
        };
        let c = match at {
            Some(_) => c,
            // After an overflow, everything follows it there until the consumer drained it.
            None if port.has_overflow() => {
                port.push_overflow(c);
                return Delivered::Overflowed;
            }
            None => match port.push(c) {
                Ok(()) => return Delivered::Pushed,
                Err(c) => c,
            },
        };
        let Some(i) = at.or_else(|| self.find(port)) else {
            // A port no socket of this shard registered (cannot happen: every socket
            // delivery is attached at open). Never lose the completion.
            debug_assert!(false, "completion for an unattached port");
            port.push_overflow(c);
            return Delivered::Overflowed;
        };
        let e = &mut self.entries[i];
        if e.queue.len() < self.cap {
            if e.queue.is_empty() {
                self.blocked += 1;
            }
            e.queue.push_back(c);
            Delivered::Queued
        } else if c.more {
            Delivered::Dropped
        } else if let Some(d) = e.queue.iter().position(|w| w.more) {
            drop(e.queue.remove(d));
            e.queue.push_back(c);
            Delivered::Evicted
        } else {
            for w in e.queue.drain(..) {
                e.port.push_overflow(w);
            }
            e.port.push_overflow(c);
            self.blocked -= 1;
            Delivered::Overflowed
        }
    }

    /// Retries every waiting port in order; each port that took something is added to
    /// `touched` (to be woken once).
    pub(crate) fn flush(&mut self, touched: &mut Vec<CompletionPort>) {
        if self.blocked == 0 {
            return;
        }
        let mut i = 0;
        while i < self.entries.len() {
            let e = &mut self.entries[i];
            let was = !e.queue.is_empty();
            let mut took = false;
            while let Some(c) = e.queue.pop_front() {
                if e.port.has_overflow() {
                    // Order: behind what already overflowed (the consumer takes it last).
                    e.port.push_overflow(c);
                    took = true;
                    continue;
                }
                match e.port.push(c) {
                    Ok(()) => took = true,
                    Err(c) => {
                        e.queue.push_front(c);
                        break;
                    }
                }
            }
            if took && !touched.iter().any(|p| p.ptr_eq(&e.port)) {
                touched.push(e.port.clone());
            }
            if was && e.queue.is_empty() {
                self.blocked -= 1;
                if e.sockets == 0 {
                    self.entries.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    /// Shutdown: every waiting completion goes to its port's overflow (still dequeued).
    pub(crate) fn drain_to_overflow(&mut self) {
        for e in &mut self.entries {
            for c in e.queue.drain(..) {
                e.port.push_overflow(c);
            }
        }
        self.blocked = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(token: u64, more: bool) -> Completion {
        let mut c = Completion::new(0, token, Ok(0));
        c.more = more;
        c
    }

    fn tokens(p: &CompletionPort) -> Vec<u64> {
        let mut out = Vec::new();
        p.dequeue(&mut out, 64, Some(std::time::Duration::ZERO));
        out.iter().map(|c| c.token).collect()
    }

    /// One full port does not hold up another; each keeps its order; at the bound datagrams
    /// drop and a terminal completion takes a datagram's place, or (all terminal) the
    /// backlog moves to the overflow in order: nothing terminal lost, nothing reordered.
    #[test]
    fn a_full_port_delays_only_itself_and_nothing_terminal_is_lost() {
        use Delivered::*;
        let (a, b) = (CompletionPort::new(1, 2), CompletionPort::new(1, 8));
        let mut bl = Backlogs::new(2);
        bl.attach(&a);
        bl.attach(&b);
        let got: Vec<Delivered> = (1..=6).map(|t| bl.deliver(&a, c(t, t != 6))).collect();
        assert_eq!(got, [Pushed, Pushed, Queued, Queued, Dropped, Evicted]);
        assert_eq!(bl.deliver(&b, c(100, false)), Pushed, "port b is not behind port a");
        assert!(bl.is_blocked());
        assert_eq!(tokens(&a), [1, 2]);
        let mut touched = Vec::new();
        bl.flush(&mut touched);
        assert_eq!(touched.len(), 1);
        assert_eq!(tokens(&a), [4, 6], "datagram 3 gave its place to the terminal 6");
        assert!(!bl.is_blocked());
        assert_eq!(tokens(&b), [100]);
        // All terminal: the backlog and the newcomer overflow, in order, before anything
        // queued later.
        let got: Vec<Delivered> = (10..=15).map(|t| bl.deliver(&a, c(t, false))).collect();
        assert_eq!(got, [Pushed, Pushed, Queued, Queued, Overflowed, Overflowed]);
        bl.flush(&mut touched);
        assert_eq!(tokens(&a), [10, 11, 12, 13, 14, 15]);
        // Drained: the port's queue is used again.
        assert_eq!(bl.deliver(&a, c(16, false)), Pushed);
        assert_eq!(tokens(&a), [16]);
    }

    #[test]
    fn shutdown_hands_the_backlog_to_the_ports() {
        let a = CompletionPort::new(1, 1);
        let mut bl = Backlogs::new(4);
        bl.attach(&a);
        for t in 1..=3 {
            bl.deliver(&a, c(t, false));
        }
        bl.detach(&a);
        bl.drain_to_overflow();
        assert_eq!(tokens(&a), [1, 2, 3]);
    }
}
