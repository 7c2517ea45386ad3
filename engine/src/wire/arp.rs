//! ARP for Ethernet/IPv4 (RFC 826): parse requests and replies, build replies.

use std::net::Ipv4Addr;
use std::ops::Range;

use super::ethernet::MacAddr;

const HTYPE: Range<usize> = 0..2;
const PTYPE: Range<usize> = 2..4;
const HLEN: usize = 4;
const PLEN: usize = 5;
const OPER: Range<usize> = 6..8;
const SHA: Range<usize> = 8..14;
const SPA: Range<usize> = 14..18;
const THA: Range<usize> = 18..24;
const TPA: Range<usize> = 24..28;
pub const PACKET_LEN: usize = 28;

/// ARP operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub operation: Operation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    /// Parses an ARP payload (after the Ethernet header); `None` if it is not Ethernet/IPv4
    /// ARP or is truncated.
    pub fn parse(b: &[u8]) -> Option<Repr> {
        if b.len() < PACKET_LEN || b[HTYPE] != [0, 1] || b[PTYPE] != [0x08, 0x00] || b[HLEN] != 6 || b[PLEN] != 4 {
            return None;
        }
        let operation = match b[OPER] {
            [0, 1] => Operation::Request,
            [0, 2] => Operation::Reply,
            _ => return None,
        };
        let mac = |r: Range<usize>| MacAddr(b[r].try_into().expect("6-byte range"));
        let ip = |r: Range<usize>| Ipv4Addr::from(<[u8; 4]>::try_from(&b[r]).expect("4-byte range"));
        Some(Repr {
            operation,
            sender_mac: mac(SHA),
            sender_ip: ip(SPA),
            target_mac: mac(THA),
            target_ip: ip(TPA),
        })
    }

    /// The reply a host with `mac` owning `self.target_ip` sends to this request.
    pub fn reply(&self, mac: MacAddr) -> Repr {
        Repr {
            operation: Operation::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// # Panics
    /// If `b` is shorter than 28 bytes.
    pub fn emit(&self, b: &mut [u8]) {
        b[HTYPE].copy_from_slice(&[0, 1]);
        b[PTYPE].copy_from_slice(&[0x08, 0x00]);
        b[HLEN] = 6;
        b[PLEN] = 4;
        b[OPER].copy_from_slice(match self.operation {
            Operation::Request => &[0, 1],
            Operation::Reply => &[0, 2],
        });
        b[SHA].copy_from_slice(&self.sender_mac.0);
        b[SPA].copy_from_slice(&self.sender_ip.octets());
        b[THA].copy_from_slice(&self.target_mac.0);
        b[TPA].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_reply_round_trip() {
        let req = Repr {
            operation: Operation::Request,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            sender_ip: Ipv4Addr::new(198, 18, 0, 1),
            target_mac: MacAddr([0; 6]),
            target_ip: Ipv4Addr::new(198, 18, 0, 2),
        };
        let mut b = [0u8; PACKET_LEN];
        req.emit(&mut b);
        assert_eq!(Repr::parse(&b), Some(req));
        let rep = req.reply(MacAddr([2, 0, 0, 0, 0, 2]));
        rep.emit(&mut b);
        let back = Repr::parse(&b).unwrap();
        assert_eq!(
            (back.operation, back.sender_ip, back.target_mac),
            (Operation::Reply, req.target_ip, req.sender_mac)
        );
        assert_eq!(Repr::parse(&b[..27]), None);
    }
}
