//! IPv6 headers. The fast path takes UDP directly after the fixed header; a packet with
//! extension headers is dropped by reason (a fragment header as a fragment).

use std::net::Ipv6Addr;
use std::ops::Range;

use super::DropReason;

const VER_TC_FLOW: Range<usize> = 0..4;
const PAYLOAD_LEN: Range<usize> = 4..6;
const NEXT_HEADER: usize = 6;
const HOP_LIMIT: usize = 7;
const SRC: Range<usize> = 8..24;
const DST: Range<usize> = 24..40;
pub const HEADER_LEN: usize = 40;
/// Next-header values that are extension headers (RFC 8200 §4, and the IANA list): hop-by-hop,
/// routing, fragment, ESP, AH, destination options, mobility, HIP, shim6.
const EXTENSION_HEADERS: [u8; 9] = [0, 43, 44, 50, 51, 60, 135, 139, 140];
pub const NEXT_FRAGMENT: u8 = 44;

/// A view of an IPv6 packet (version 6, payload length within the buffer); after
/// `new_checked` no accessor panics and `payload` is exactly the bytes the payload length
/// covers.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Packet<T>, DropReason> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::TruncatedIp);
        }
        if b[0] >> 4 != 6 {
            return Err(DropReason::BadIpVersion);
        }
        let payload = usize::from(u16::from_be_bytes([b[PAYLOAD_LEN.start], b[PAYLOAD_LEN.start + 1]]));
        // Payload length 0 with a hop-by-hop header is a jumbogram: not on this path either.
        if HEADER_LEN + payload > b.len() {
            return Err(DropReason::BadIpLength);
        }
        Ok(Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The traffic class (DSCP and ECN, IPv4's TOS byte).
    pub fn traffic_class(&self) -> u8 {
        let b = self.b();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[PAYLOAD_LEN.start], self.b()[PAYLOAD_LEN.start + 1]])
    }

    pub fn next_header(&self) -> u8 {
        self.b()[NEXT_HEADER]
    }

    /// True if the next header is an extension header rather than an upper layer.
    pub fn has_extension(&self) -> bool {
        EXTENSION_HEADERS.contains(&self.next_header())
    }

    pub fn hop_limit(&self) -> u8 {
        self.b()[HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        let s: [u8; 16] = self.b()[SRC].try_into().expect("16-byte range");
        Ipv6Addr::from(s)
    }

    pub fn dst(&self) -> Ipv6Addr {
        let d: [u8; 16] = self.b()[DST].try_into().expect("16-byte range");
        Ipv6Addr::from(d)
    }

    /// The bytes the payload length covers (trailing padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The payload, borrowed from the frame rather than from this view.
    pub fn into_payload(self) -> &'a [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        &self.buf[HEADER_LEN..end]
    }
}

/// A parsed IPv6 fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
    /// Payload only (the fixed header excluded).
    pub payload_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            payload_len: p.payload_len(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header (flow label 0).
    ///
    /// # Panics
    /// If `buf` is shorter than 40 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        let first = (6u32 << 28) | (u32::from(self.traffic_class) << 20);
        h[VER_TC_FLOW].copy_from_slice(&first.to_be_bytes());
        h[PAYLOAD_LEN].copy_from_slice(&self.payload_len.to_be_bytes());
        h[NEXT_HEADER] = self.next_header;
        h[HOP_LIMIT] = self.hop_limit;
        h[SRC].copy_from_slice(&self.src.octets());
        h[DST].copy_from_slice(&self.dst.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr() -> Repr {
        Repr {
            src: "2001:2::1".parse().unwrap(),
            dst: "2001:2::2".parse().unwrap(),
            next_header: 17,
            hop_limit: 64,
            traffic_class: 0xb8,
            payload_len: 8,
        }
    }

    #[test]
    fn emit_then_parse_round_trips() {
        let mut h = [0u8; 48];
        repr().emit(&mut h);
        let p = Packet::new_checked(&h[..]).unwrap();
        assert_eq!(Repr::parse(&p), repr());
        assert_eq!(p.payload().len(), 8);
        assert!(!p.has_extension());
    }

    #[test]
    fn bad_headers_are_named() {
        let mut h = [0u8; 48];
        repr().emit(&mut h);
        assert_eq!(Packet::new_checked(&h[..39]).err(), Some(DropReason::TruncatedIp));
        assert_eq!(Packet::new_checked(&h[..47]).err(), Some(DropReason::BadIpLength));
        let mut v4 = h;
        v4[0] = 0x45;
        assert_eq!(Packet::new_checked(&v4[..]).err(), Some(DropReason::BadIpVersion));
        let mut frag = h;
        frag[NEXT_HEADER] = NEXT_FRAGMENT;
        assert!(Packet::new_checked(&frag[..]).unwrap().has_extension());
    }
}
