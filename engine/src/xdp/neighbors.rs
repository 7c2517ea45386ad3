//! The AF_XDP path's neighbour table: the MAC to put in front of a datagram for an IP.
//!
//! Two kinds of entry. **Static** entries come from the application
//! (`XdpUdpSocket::add_neighbor`) and are never overwritten by traffic. **Learned** entries
//! come from the source MAC of valid frames received: at most [`LEARNED_MAX`] of them, the
//! oldest replaced first. A frame claiming a static entry's IP from another MAC changes
//! nothing and is counted (a spoofed source, or a stale static entry): a peer cannot redirect
//! porto's traffic for an address the application pinned.

use std::net::{IpAddr, Ipv4Addr};

use crate::wire::MacAddr;

/// Entries in all (static and learned).
pub const NEIGHBORS_MAX: usize = 64;
/// Learned entries at most; the rest of the table is kept for static ones.
pub const LEARNED_MAX: usize = 48;

/// What learning from one frame did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Learned {
    /// The entry was there already with this MAC.
    Known,
    /// A new learned entry (possibly replacing the oldest learned one).
    Added,
    /// A learned entry's MAC changed.
    Moved,
    /// The IP has a static entry with another MAC: nothing changed.
    StaticConflict,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    ip: IpAddr,
    mac: MacAddr,
    fixed: bool,
    /// Learned entries only: when it was learned (a counter), for eviction.
    age: u64,
}

#[derive(Debug)]
pub(crate) struct Neighbors {
    entries: [Entry; NEIGHBORS_MAX],
    len: usize,
    learned: usize,
    clock: u64,
}

impl Neighbors {
    pub(crate) fn new() -> Neighbors {
        Neighbors {
            entries: [Entry {
                ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                mac: MacAddr::default(),
                fixed: false,
                age: 0,
            }; NEIGHBORS_MAX],
            len: 0,
            learned: 0,
            clock: 0,
        }
    }

    pub(crate) fn get(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries[..self.len].iter().find(|e| e.ip == ip).map(|e| e.mac)
    }

    /// A static entry (replacing a learned or static one for `ip`). False if the table has
    /// no room: every slot is static.
    pub(crate) fn add_static(&mut self, ip: IpAddr, mac: MacAddr) -> bool {
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.ip == ip) {
            if !e.fixed {
                self.learned -= 1;
            }
            *e = Entry {
                ip,
                mac,
                fixed: true,
                age: 0,
            };
            return true;
        }
        if self.len < NEIGHBORS_MAX {
            self.entries[self.len] = Entry {
                ip,
                mac,
                fixed: true,
                age: 0,
            };
            self.len += 1;
            return true;
        }
        // Full: a learned entry gives way.
        match self.oldest_learned() {
            Some(i) => {
                self.entries[i] = Entry {
                    ip,
                    mac,
                    fixed: true,
                    age: 0,
                };
                self.learned -= 1;
                true
            }
            None => false,
        }
    }

    /// Learns `ip` at `mac` from a received frame.
    pub(crate) fn learn(&mut self, ip: IpAddr, mac: MacAddr) -> Learned {
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self.entries[..self.len].iter_mut().find(|e| e.ip == ip) {
            return match (e.fixed, e.mac == mac) {
                (_, true) => Learned::Known,
                (true, false) => Learned::StaticConflict,
                (false, false) => {
                    e.mac = mac;
                    e.age = clock;
                    Learned::Moved
                }
            };
        }
        let entry = Entry {
            ip,
            mac,
            fixed: false,
            age: clock,
        };
        if self.learned < LEARNED_MAX && self.len < NEIGHBORS_MAX {
            self.entries[self.len] = entry;
            self.len += 1;
            self.learned += 1;
        } else if let Some(i) = self.oldest_learned() {
            self.entries[i] = entry;
        }
        // (No learned entry to replace and no room: every slot is static; nothing learned.)
        Learned::Added
    }

    fn oldest_learned(&self) -> Option<usize> {
        self.entries[..self.len]
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.fixed)
            .min_by_key(|(_, e)| e.age)
            .map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i))
    }

    fn mac(i: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, i])
    }

    #[test]
    fn static_entries_win_over_traffic() {
        let mut n = Neighbors::new();
        assert!(n.add_static(ip(1), mac(1)));
        assert_eq!(n.learn(ip(1), mac(66)), Learned::StaticConflict);
        assert_eq!(n.get(ip(1)), Some(mac(1)), "a frame overwrote a static entry");
        assert_eq!(n.learn(ip(1), mac(1)), Learned::Known);
        assert_eq!(n.learn(ip(2), mac(2)), Learned::Added);
        assert_eq!(n.learn(ip(2), mac(3)), Learned::Moved);
        assert_eq!(n.get(ip(2)), Some(mac(3)));
        // A static entry replaces a learned one.
        assert!(n.add_static(ip(2), mac(4)));
        assert_eq!(n.learn(ip(2), mac(5)), Learned::StaticConflict);
        assert_eq!(n.get(ip(2)), Some(mac(4)));
    }

    #[test]
    fn learning_is_bounded_and_never_evicts_static_entries() {
        let mut n = Neighbors::new();
        for i in 0..8 {
            assert!(n.add_static(ip(1000 + i), mac(i as u8)));
        }
        // A flood of spoofed sources: the table keeps at most LEARNED_MAX of them, the
        // newest, and every static entry.
        for i in 0..10_000u32 {
            n.learn(ip(i), mac((i % 200) as u8));
        }
        assert_eq!(n.learned, LEARNED_MAX);
        for i in 0..8 {
            assert_eq!(n.get(ip(1000 + i)), Some(mac(i as u8)));
        }
        assert_eq!(n.get(ip(9_999)), Some(mac((9_999 % 200) as u8)));
        assert_eq!(n.get(ip(0)), None, "the oldest learned entry was replaced");
        // Statics may still fill the table, taking learned slots.
        for i in 0..(NEIGHBORS_MAX as u32 - 8) {
            assert!(n.add_static(ip(5000 + i), mac(7)));
        }
        assert_eq!(n.learned, 0);
        for i in 0..8 {
            assert_eq!(n.get(ip(1000 + i)), Some(mac(i as u8)), "the first statics stay");
        }
        assert!(!n.add_static(ip(9000), mac(7)), "every slot static: full");
        assert_eq!(n.learn(ip(9001), mac(7)), Learned::Added);
        assert_eq!(n.get(ip(9001)), None, "no slot to learn into");
    }
}
