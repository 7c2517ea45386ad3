//! IPv4 headers (no options on the fast path: a frame with options is dropped by reason).

use std::net::Ipv4Addr;
use std::ops::Range;

use super::{checksum_add, checksum_fold, DropReason};

const VER_IHL: usize = 0;
const TOS: usize = 1;
const TOTAL_LEN: Range<usize> = 2..4;
const IDENT: Range<usize> = 4..6;
const FLAGS_FRAG: Range<usize> = 6..8;
const TTL: usize = 8;
const PROTOCOL: usize = 9;
const CHECKSUM: Range<usize> = 10..12;
const SRC: Range<usize> = 12..16;
const DST: Range<usize> = 16..20;
pub const HEADER_LEN: usize = 20;
pub const PROTO_UDP: u8 = 17;
const FLAG_MF: u16 = 0x2000;
const FLAG_DF: u16 = 0x4000;
const OFFSET_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet (IHL 5, checksum verified, not a fragment); after `new_checked`
/// no accessor panics and `payload` is exactly the bytes the total length covers.
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
        if b[VER_IHL] >> 4 != 4 {
            return Err(DropReason::BadIpVersion);
        }
        let ihl = usize::from(b[VER_IHL] & 0x0f);
        if ihl < 5 {
            return Err(DropReason::BadIhl);
        }
        if ihl > 5 {
            return Err(DropReason::IpOptions);
        }
        let total = usize::from(u16::from_be_bytes([b[TOTAL_LEN.start], b[TOTAL_LEN.start + 1]]));
        if total < HEADER_LEN || total > b.len() {
            return Err(DropReason::BadIpLength);
        }
        if checksum_fold(checksum_add(0, &b[..HEADER_LEN])) != 0 {
            return Err(DropReason::BadIpChecksum);
        }
        let ff = u16::from_be_bytes([b[FLAGS_FRAG.start], b[FLAGS_FRAG.start + 1]]);
        if ff & FLAG_MF != 0 || ff & OFFSET_MASK != 0 {
            return Err(DropReason::Fragment);
        }
        Ok(Packet { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn tos(&self) -> u8 {
        self.b()[TOS]
    }

    pub fn total_len(&self) -> u16 {
        u16::from_be_bytes([self.b()[TOTAL_LEN.start], self.b()[TOTAL_LEN.start + 1]])
    }

    pub fn ttl(&self) -> u8 {
        self.b()[TTL]
    }

    pub fn protocol(&self) -> u8 {
        self.b()[PROTOCOL]
    }

    pub fn src(&self) -> Ipv4Addr {
        let s: [u8; 4] = self.b()[SRC].try_into().expect("4-byte range");
        Ipv4Addr::from(s)
    }

    pub fn dst(&self) -> Ipv4Addr {
        let d: [u8; 4] = self.b()[DST].try_into().expect("4-byte range");
        Ipv4Addr::from(d)
    }

    /// The bytes the total length covers after the header (trailing padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[HEADER_LEN..usize::from(self.total_len())]
    }
}

impl<'a> Packet<&'a [u8]> {
    /// The payload, borrowed from the frame rather than from this view.
    pub fn into_payload(self) -> &'a [u8] {
        let end = usize::from(self.total_len());
        &self.buf[HEADER_LEN..end]
    }
}

/// A parsed IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub tos: u8,
    /// Header plus payload.
    pub total_len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            total_len: p.total_len(),
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 20-byte header (DF set, no options) with its checksum.
    ///
    /// # Panics
    /// If `buf` is shorter than 20 bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        let h = &mut buf[..HEADER_LEN];
        h[VER_IHL] = 0x45;
        h[TOS] = self.tos;
        h[TOTAL_LEN].copy_from_slice(&self.total_len.to_be_bytes());
        h[IDENT].copy_from_slice(&[0, 0]);
        h[FLAGS_FRAG].copy_from_slice(&FLAG_DF.to_be_bytes());
        h[TTL] = self.ttl;
        h[PROTOCOL] = self.protocol;
        h[CHECKSUM].copy_from_slice(&[0, 0]);
        h[SRC].copy_from_slice(&self.src.octets());
        h[DST].copy_from_slice(&self.dst.octets());
        let c = checksum_fold(checksum_add(0, h));
        h[CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// Rewrites the TOS byte of a valid header in place, fixing the checksum incrementally
/// (RFC 1624), as DSCP marking on the AF_XDP path needs.
pub fn set_tos(header: &mut [u8], tos: u8) {
    let old = u16::from_be_bytes([header[VER_IHL], header[TOS]]);
    let new = u16::from_be_bytes([header[VER_IHL], tos]);
    let c = u16::from_be_bytes([header[CHECKSUM.start], header[CHECKSUM.start + 1]]);
    // HC' = ~(~HC + ~m + m')
    let sum = u32::from(!c) + u32::from(!old) + u32::from(new);
    let c2 = checksum_fold(sum);
    header[TOS] = tos;
    header[CHECKSUM].copy_from_slice(&c2.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_tos_keeps_the_checksum_valid() {
        let mut h = [0u8; 20];
        Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: 17,
            ttl: 64,
            tos: 0,
            total_len: 20,
        }
        .emit(&mut h);
        for tos in [0x00, 0x20, 0xb8, 0xe0, 0xff] {
            set_tos(&mut h, tos);
            let p = Packet::new_checked(&h[..]).expect("still valid");
            assert_eq!(p.tos(), tos);
        }
    }
}
