//! Ethernet, IPv4, UDP and ARP for the AF_XDP path: parse and build in place, no allocation.
//!
//! Each protocol has a zero-copy view (`Frame`/`Packet<T: AsRef<[u8]>>`) whose
//! `new_checked` validates lengths once, after which no accessor can panic, and a `Repr`: the
//! parsed, validated form with `parse`, `emit` and `buffer_len` (smoltcp's split). Field
//! offsets are named ranges. [`parse_udp`] runs the whole receive check and names the reason
//! a frame is dropped; [`emit_udp`] builds a complete frame with checksums.

pub mod arp;
pub mod ethernet;
pub mod ipv4;
pub mod udp;

use std::net::Ipv4Addr;

pub use ethernet::{EtherType, MacAddr};

/// Why a frame was not delivered: each one is counted, none panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the Ethernet header.
    TruncatedEthernet,
    /// 802.1Q/802.1ad tagged (not handled on this path).
    VlanTagged,
    /// Neither IPv4 nor ARP.
    NotIp,
    /// Shorter than an IPv4 header, or than its IHL says.
    TruncatedIp,
    /// Version field is not 4.
    BadIpVersion,
    /// IHL below 5.
    BadIhl,
    /// IPv4 options present (IHL above 5): not on the fast path.
    IpOptions,
    /// Total length beyond the frame or below the header.
    BadIpLength,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// A fragment (MF set or a non-zero offset).
    Fragment,
    /// Not UDP.
    NotUdp,
    /// Shorter than a UDP header.
    TruncatedUdp,
    /// UDP length disagrees with the IP payload length.
    BadUdpLength,
    /// UDP checksum wrong.
    BadUdpChecksum,
    /// Larger than a frame buffer.
    Oversize,
}

impl DropReason {
    pub const ALL: [DropReason; 15] = [
        DropReason::TruncatedEthernet,
        DropReason::VlanTagged,
        DropReason::NotIp,
        DropReason::TruncatedIp,
        DropReason::BadIpVersion,
        DropReason::BadIhl,
        DropReason::IpOptions,
        DropReason::BadIpLength,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::NotUdp,
        DropReason::TruncatedUdp,
        DropReason::BadUdpLength,
        DropReason::BadUdpChecksum,
        DropReason::Oversize,
    ];

    /// Index into a per-reason counter array.
    pub fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .expect("ALL lists every reason")
    }
}

/// A received UDP datagram, validated: addresses and where the payload is in the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The TOS byte (DSCP and ECN).
    pub tos: u8,
    /// `payload_offset..payload_offset + payload_len` in the frame.
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// Header bytes in front of a UDP payload: Ethernet + IPv4 (no options) + UDP.
pub const UDP_HEADERS_LEN: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;

/// Validates an Ethernet/IPv4/UDP frame (checksums included) or says why it is dropped.
pub fn parse_udp(frame: &[u8], frame_max: usize) -> Result<UdpFrame, DropReason> {
    if frame.len() > frame_max {
        return Err(DropReason::Oversize);
    }
    let eth = ethernet::Frame::new_checked(frame)?;
    match eth.ethertype() {
        EtherType::Ipv4 => {}
        EtherType::Vlan => return Err(DropReason::VlanTagged),
        _ => return Err(DropReason::NotIp),
    }
    let ip = ipv4::Packet::new_checked(eth.payload())?;
    if ip.protocol() != ipv4::PROTO_UDP {
        return Err(DropReason::NotUdp);
    }
    let dgram = udp::Packet::new_checked(ip.payload())?;
    if !dgram.verify_checksum(ip.src(), ip.dst()) {
        return Err(DropReason::BadUdpChecksum);
    }
    Ok(UdpFrame {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        src_ip: ip.src(),
        dst_ip: ip.dst(),
        src_port: dgram.src_port(),
        dst_port: dgram.dst_port(),
        tos: ip.tos(),
        payload_offset: UDP_HEADERS_LEN,
        payload_len: dgram.payload().len(),
    })
}

/// What to put in front of a UDP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeaders {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub tos: u8,
    pub ttl: u8,
}

/// Writes the headers for a `payload_len`-byte payload already placed at
/// `frame[UDP_HEADERS_LEN..]`, with both checksums. Returns the frame length, or `None` if
/// the buffer is too small.
pub fn emit_udp(frame: &mut [u8], h: &UdpHeaders, payload_len: usize) -> Option<usize> {
    let total = UDP_HEADERS_LEN.checked_add(payload_len)?;
    if frame.len() < total {
        return None;
    }
    let (hdr, rest) = frame.split_at_mut(UDP_HEADERS_LEN);
    emit_udp_headers(hdr, h, &rest[..payload_len])?;
    Some(total)
}

/// Writes Ethernet, IPv4 and UDP headers for `payload` into `hdr` (at least
/// `UDP_HEADERS_LEN` bytes), the payload staying where it is (a multi-buffer frame: headers in
/// one buffer, payload in another). Returns the header length, or `None` if it does not fit.
pub fn emit_udp_headers(hdr: &mut [u8], h: &UdpHeaders, payload: &[u8]) -> Option<usize> {
    if hdr.len() < UDP_HEADERS_LEN || payload.len() > usize::from(u16::MAX) - ipv4::HEADER_LEN - udp::HEADER_LEN {
        return None;
    }
    ethernet::Repr {
        dst: h.dst_mac,
        src: h.src_mac,
        ethertype: EtherType::Ipv4,
    }
    .emit(hdr);
    ipv4::Repr {
        src: h.src_ip,
        dst: h.dst_ip,
        protocol: ipv4::PROTO_UDP,
        ttl: h.ttl,
        tos: h.tos,
        total_len: (ipv4::HEADER_LEN + udp::HEADER_LEN + payload.len()) as u16,
    }
    .emit(&mut hdr[ethernet::HEADER_LEN..]);
    udp::Repr {
        src_port: h.src_port,
        dst_port: h.dst_port,
        len: (udp::HEADER_LEN + payload.len()) as u16,
    }
    .emit_header(
        &mut hdr[ethernet::HEADER_LEN + ipv4::HEADER_LEN..],
        payload,
        h.src_ip,
        h.dst_ip,
    );
    Some(UDP_HEADERS_LEN)
}

/// The Internet checksum's one's-complement sum of `data`, folded, starting from `sum`.
pub(crate) fn checksum_add(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

pub(crate) fn checksum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> UdpHeaders {
        UdpHeaders {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(198, 18, 0, 1),
            dst_ip: Ipv4Addr::new(198, 18, 0, 2),
            src_port: 4000,
            dst_port: 5000,
            tos: 0xb8,
            ttl: 64,
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; UDP_HEADERS_LEN + payload.len()];
        f[UDP_HEADERS_LEN..].copy_from_slice(payload);
        let n = emit_udp(&mut f, &headers(), payload.len()).unwrap();
        assert_eq!(n, f.len());
        f
    }

    #[test]
    fn build_then_parse_round_trips() {
        let f = frame(b"hello");
        let p = parse_udp(&f, 2048).unwrap();
        let h = headers();
        assert_eq!(
            (p.src_ip, p.dst_ip, p.src_port, p.dst_port, p.tos),
            (h.src_ip, h.dst_ip, 4000, 5000, 0xb8)
        );
        assert_eq!(&f[p.payload_offset..p.payload_offset + p.payload_len], b"hello");
        assert_eq!((p.src_mac, p.dst_mac), (h.src_mac, h.dst_mac));
    }

    #[test]
    fn each_malformation_is_named() {
        let good = frame(b"payload!");
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            parse_udp(&v, 2048)
        };
        assert_eq!(with(&|v| v.truncate(10)), Err(DropReason::TruncatedEthernet));
        assert_eq!(
            with(&|v| v[12..14].copy_from_slice(&[0x81, 0x00])),
            Err(DropReason::VlanTagged)
        );
        assert_eq!(
            with(&|v| v[12..14].copy_from_slice(&[0x86, 0xdd])),
            Err(DropReason::NotIp)
        );
        assert_eq!(with(&|v| v.truncate(14 + 10)), Err(DropReason::TruncatedIp));
        assert_eq!(with(&|v| v[14] = 0x65), Err(DropReason::BadIpVersion));
        assert_eq!(with(&|v| v[14] = 0x44), Err(DropReason::BadIhl));
        assert_eq!(with(&|v| v[14] = 0x46), Err(DropReason::IpOptions));
        assert_eq!(
            with(&|v| v[16..18].copy_from_slice(&9999u16.to_be_bytes())),
            Err(DropReason::BadIpLength)
        );
        assert_eq!(
            with(&|v| v[16..18].copy_from_slice(&10u16.to_be_bytes())),
            Err(DropReason::BadIpLength)
        );
        assert_eq!(
            with(&|v| v[22] ^= 1),
            Err(DropReason::BadIpChecksum),
            "TTL changed, checksum not"
        );
        let refix = |v: &mut Vec<u8>| {
            v[24..26].copy_from_slice(&[0, 0]);
            let c = checksum_fold(checksum_add(0, &v[14..34]));
            v[24..26].copy_from_slice(&c.to_be_bytes());
        };
        assert_eq!(
            with(&|v| {
                v[20] |= 0x20; // more fragments
                refix(v);
            }),
            Err(DropReason::Fragment)
        );
        assert_eq!(
            with(&|v| {
                v[21] = 8; // fragment offset 64
                refix(v);
            }),
            Err(DropReason::Fragment)
        );
        assert_eq!(
            with(&|v| {
                v[23] = 6; // TCP
                refix(v);
            }),
            Err(DropReason::NotUdp)
        );
        assert_eq!(with(&|v| v[42] ^= 0xff), Err(DropReason::BadUdpChecksum));
        assert_eq!(parse_udp(&good, 40), Err(DropReason::Oversize));
    }

    #[test]
    fn udp_length_must_match_ip_length() {
        let mut v = frame(b"abcdef");
        // UDP length 10 instead of 14, IP length unchanged.
        v[38..40].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(parse_udp(&v, 2048), Err(DropReason::BadUdpLength));
    }

    #[test]
    fn zero_udp_checksum_means_none() {
        let mut v = frame(b"abc");
        v[40..42].copy_from_slice(&[0, 0]);
        assert!(parse_udp(&v, 2048).is_ok());
    }

    #[test]
    fn emit_refuses_a_short_buffer() {
        let mut small = [0u8; 40];
        assert_eq!(emit_udp(&mut small, &headers(), 10), None);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_udp(&bytes, 2048);
            let _ = arp::Repr::parse(&bytes);
        }

        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..1400)) {
            let f = frame(&payload);
            let p = parse_udp(&f, 2048).unwrap();
            proptest::prop_assert_eq!(&f[p.payload_offset..p.payload_offset + p.payload_len], &payload[..]);
        }

        #[test]
        fn any_single_byte_flip_in_headers_is_caught_or_harmless(at in 0usize..42, bit in 0u8..8) {
            let good = frame(b"0123456789");
            let mut v = good.clone();
            v[at] ^= 1 << bit;
            // MAC bytes are not checksummed; everything else must be rejected or, for a flip
            // that keeps the frame valid (impossible with both checksums), identical.
            if let Ok(p) = parse_udp(&v, 2048) {
                proptest::prop_assert!(at < 12, "a header flip at {} passed", at);
                proptest::prop_assert_eq!(p.payload_len, 10);
            }
        }
    }
}
