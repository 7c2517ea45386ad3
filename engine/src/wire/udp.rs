//! UDP headers with the IPv4 or IPv6 pseudo-header checksum.

use std::net::IpAddr;
use std::ops::Range;

use super::{checksum_add, checksum_fold, DropReason};

const SRC_PORT: Range<usize> = 0..2;
const DST_PORT: Range<usize> = 2..4;
const LENGTH: Range<usize> = 4..6;
const CHECKSUM: Range<usize> = 6..8;
pub const HEADER_LEN: usize = 8;

fn be16(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

fn addr_sum(sum: u32, a: IpAddr) -> u32 {
    match a {
        IpAddr::V4(a) => checksum_add(sum, &a.octets()),
        IpAddr::V6(a) => checksum_add(sum, &a.octets()),
    }
}

/// The pseudo-header's sum. IPv4's (addresses, zero, protocol, 16-bit length) and IPv6's
/// (addresses, 32-bit length, zeros, next header) sum to the same words for a UDP length
/// below 64 KiB.
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: u16) -> u32 {
    addr_sum(addr_sum(0, src), dst) + u32::from(super::ipv4::PROTO_UDP) + u32::from(len)
}

/// A view of a UDP datagram whose length field equals the IP payload length (the buffer
/// given is exactly the IP payload); after `new_checked` no accessor panics.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_checked(buf: T) -> Result<Packet<T>, DropReason> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(DropReason::TruncatedUdp);
        }
        if usize::from(be16(b, LENGTH)) != b.len() {
            return Err(DropReason::BadUdpLength);
        }
        Ok(Packet { buf })
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), DST_PORT)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }

    /// True if the checksum is right, or absent (0) over IPv4; IPv6 requires one (RFC 8200
    /// §8.1).
    pub fn verify_checksum(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.buf.as_ref();
        if be16(b, CHECKSUM) == 0 {
            return src.is_ipv4();
        }
        checksum_fold(checksum_add(pseudo_sum(src, dst, b.len() as u16), b)) == 0
    }

    /// The checksum field holds the folded pseudo-header sum, not complemented: what a
    /// sender's checksum offload leaves for the NIC to finish (CHECKSUM_PARTIAL), arriving
    /// unfinished on a virtual device that never finishes it.
    pub fn checksum_is_partial(&self, src: IpAddr, dst: IpAddr) -> bool {
        let b = self.buf.as_ref();
        be16(b, CHECKSUM) == !checksum_fold(pseudo_sum(src, dst, b.len() as u16))
    }
}

/// A parsed UDP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Header plus payload.
    pub len: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            len: p.buf.as_ref().len() as u16,
        }
    }

    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 8-byte header into `hdr` for a payload held elsewhere (`payload`, whose
    /// length is `len - 8`): the checksum covers the pseudo-header, the header and `payload`.
    ///
    /// # Panics
    /// If `hdr` is shorter than 8 bytes.
    pub fn emit_header(&self, hdr: &mut [u8], payload: &[u8], src: IpAddr, dst: IpAddr) {
        debug_assert_eq!(usize::from(self.len), HEADER_LEN + payload.len());
        let d = &mut hdr[..HEADER_LEN];
        d[SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        d[DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        d[LENGTH].copy_from_slice(&self.len.to_be_bytes());
        d[CHECKSUM].copy_from_slice(&[0, 0]);
        // The header is 8 bytes: summing it and then the payload is summing their concatenation.
        let c = checksum_fold(checksum_add(checksum_add(pseudo_sum(src, dst, self.len), d), payload));
        let c = if c == 0 { 0xffff } else { c };
        d[CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Writes the header in front of the payload already at `buf[8..len]` and computes the
    /// checksum over both.
    ///
    /// # Panics
    /// If `buf` is shorter than `len`.
    pub fn emit(&self, buf: &mut [u8], src: IpAddr, dst: IpAddr) {
        let d = &mut buf[..usize::from(self.len)];
        d[SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        d[DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        d[LENGTH].copy_from_slice(&self.len.to_be_bytes());
        d[CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum_fold(checksum_add(pseudo_sum(src, dst, self.len), d));
        // 0 means "no checksum" in UDP: send its one's-complement twin.
        let c = if c == 0 { 0xffff } else { c };
        d[CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}
