//! Ethernet, IPv4, IPv6, UDP and ARP for the AF_XDP path: parse and build in place, no
//! allocation.
//!
//! Each protocol has a zero-copy view (`Frame`/`Packet<T: AsRef<[u8]>>`) whose
//! `new_checked` validates lengths once, after which no accessor can panic, and a `Repr`: the
//! parsed, validated form with `parse`, `emit` and `buffer_len` (smoltcp's split). Field
//! offsets are named ranges. [`parse_udp`] runs the whole receive check and names the reason
//! a frame is dropped; [`emit_udp`] builds a complete frame with checksums.

pub mod arp;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

use std::net::IpAddr;

pub use ethernet::{EtherType, MacAddr};

/// Why a frame was not delivered: each one is counted, none panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the Ethernet header.
    TruncatedEthernet,
    /// 802.1Q/802.1ad tagged (not handled on this path).
    VlanTagged,
    /// Neither IPv4, IPv6 nor ARP.
    NotIp,
    /// Shorter than an IPv4 header, or than its IHL says; shorter than an IPv6 header.
    TruncatedIp,
    /// Version field is not the ethertype's (4 or 6).
    BadIpVersion,
    /// IHL below 5.
    BadIhl,
    /// IPv4 options present (IHL above 5): not on the fast path.
    IpOptions,
    /// Total (IPv6: payload) length beyond the frame, or below the header.
    BadIpLength,
    /// IPv4 header checksum wrong.
    BadIpChecksum,
    /// A fragment (MF set or a non-zero offset; an IPv6 fragment header).
    Fragment,
    /// IPv6 extension headers before the UDP header: not on the fast path.
    Ipv6Extension,
    /// Not UDP.
    NotUdp,
    /// Shorter than a UDP header.
    TruncatedUdp,
    /// UDP length disagrees with the IP payload length.
    BadUdpLength,
    /// UDP checksum wrong (or, over IPv6, absent).
    BadUdpChecksum,
    /// UDP checksum left unfinished: the field holds only the pseudo-header sum, as a
    /// sender's checksum offload writes it before the NIC completes it. A veth with TX
    /// checksum offload on (its default) delivers such frames from kernel sockets; the fix
    /// is `ethtool -K <sending device> tx off`.
    PartialUdpChecksum,
    /// Larger than a frame buffer.
    Oversize,
}

impl DropReason {
    pub const ALL: [DropReason; 17] = [
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
        DropReason::Ipv6Extension,
        DropReason::NotUdp,
        DropReason::TruncatedUdp,
        DropReason::BadUdpLength,
        DropReason::BadUdpChecksum,
        DropReason::PartialUdpChecksum,
        DropReason::Oversize,
    ];

    /// What the operator can do about drops of this kind, where it is a set-up matter
    /// rather than bad traffic.
    pub fn fix(self) -> Option<&'static str> {
        match self {
            DropReason::PartialUdpChecksum => Some(
                "the sender's TX checksum offload left the UDP checksum unfinished (a veth peer's default): \
                 turn it off on the sending device with `ethtool -K <device> tx off`",
            ),
            _ => None,
        }
    }

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
    /// Both of one family: the frame's.
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The TOS byte (IPv6: the traffic class): DSCP and ECN.
    pub tos: u8,
    /// `payload_offset..payload_offset + payload_len` in the frame.
    pub payload_offset: usize,
    pub payload_len: usize,
}

/// Header bytes in front of a UDP payload over IPv4: Ethernet + IPv4 (no options) + UDP.
pub const UDP_HEADERS_LEN: usize = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp::HEADER_LEN;
/// Header bytes in front of a UDP payload over IPv6: Ethernet + IPv6 (no extensions) + UDP.
pub const UDP6_HEADERS_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + udp::HEADER_LEN;

/// Header bytes in front of a UDP payload to or from `ip`.
pub const fn udp_headers_len(ip: &IpAddr) -> usize {
    match ip {
        IpAddr::V4(_) => UDP_HEADERS_LEN,
        IpAddr::V6(_) => UDP6_HEADERS_LEN,
    }
}

/// The unspecified address of `of`'s family (0.0.0.0 or ::): "any address" to bind, or
/// "any source" in a membership.
pub fn unspecified(of: IpAddr) -> IpAddr {
    match of {
        IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// Validates an Ethernet/IPv4/UDP or Ethernet/IPv6/UDP frame (checksums included) or says
/// why it is dropped.
pub fn parse_udp(frame: &[u8], frame_max: usize) -> Result<UdpFrame, DropReason> {
    if frame.len() > frame_max {
        return Err(DropReason::Oversize);
    }
    let eth = ethernet::Frame::new_checked(frame)?;
    let (src, dst, tos, udp_bytes) = match eth.ethertype() {
        EtherType::Ipv4 => {
            let ip = ipv4::Packet::new_checked(eth.payload())?;
            if ip.protocol() != ipv4::PROTO_UDP {
                return Err(DropReason::NotUdp);
            }
            (IpAddr::V4(ip.src()), IpAddr::V4(ip.dst()), ip.tos(), ip.into_payload())
        }
        EtherType::Ipv6 => {
            let ip = ipv6::Packet::new_checked(eth.payload())?;
            match ip.next_header() {
                ipv4::PROTO_UDP => {}
                ipv6::NEXT_FRAGMENT => return Err(DropReason::Fragment),
                _ if ip.has_extension() => return Err(DropReason::Ipv6Extension),
                _ => return Err(DropReason::NotUdp),
            }
            (
                IpAddr::V6(ip.src()),
                IpAddr::V6(ip.dst()),
                ip.traffic_class(),
                ip.into_payload(),
            )
        }
        EtherType::Vlan => return Err(DropReason::VlanTagged),
        _ => return Err(DropReason::NotIp),
    };
    let dgram = udp::Packet::new_checked(udp_bytes)?;
    if !dgram.verify_checksum(src, dst) {
        return Err(if dgram.checksum_is_partial(src, dst) {
            DropReason::PartialUdpChecksum
        } else {
            DropReason::BadUdpChecksum
        });
    }
    Ok(UdpFrame {
        src_mac: eth.src(),
        dst_mac: eth.dst(),
        src_ip: src,
        dst_ip: dst,
        src_port: dgram.src_port(),
        dst_port: dgram.dst_port(),
        tos,
        payload_offset: udp_headers_len(&src),
        payload_len: dgram.payload().len(),
    })
}

/// What to put in front of a UDP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHeaders {
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
    /// Both of one family, which picks IPv4 or IPv6.
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// TOS byte, or IPv6 traffic class.
    pub tos: u8,
    /// TTL, or IPv6 hop limit.
    pub ttl: u8,
}

impl UdpHeaders {
    /// Header bytes these headers take in front of the payload.
    pub const fn headers_len(&self) -> usize {
        udp_headers_len(&self.src_ip)
    }
}

/// Writes the headers for a `payload_len`-byte payload already placed at
/// `frame[h.headers_len()..]`, with the checksums. Returns the frame length, or `None` if
/// the buffer is too small or the addresses' families differ.
pub fn emit_udp(frame: &mut [u8], h: &UdpHeaders, payload_len: usize) -> Option<usize> {
    let total = h.headers_len().checked_add(payload_len)?;
    if frame.len() < total {
        return None;
    }
    let (hdr, rest) = frame.split_at_mut(h.headers_len());
    emit_udp_headers(hdr, h, &rest[..payload_len])?;
    Some(total)
}

/// Writes Ethernet, IP and UDP headers for `payload` into `hdr` (at least `h.headers_len()`
/// bytes), the payload staying where it is (a multi-buffer frame: headers in one buffer,
/// payload in another). Returns the header length, or `None` if it does not fit or the addresses'
/// families differ.
pub fn emit_udp_headers(hdr: &mut [u8], h: &UdpHeaders, payload: &[u8]) -> Option<usize> {
    let ip_len = h.headers_len() - ethernet::HEADER_LEN - udp::HEADER_LEN;
    if hdr.len() < h.headers_len() || payload.len() > usize::from(u16::MAX) - ip_len - udp::HEADER_LEN {
        return None;
    }
    let udp_len = (udp::HEADER_LEN + payload.len()) as u16;
    let ethertype = match (h.src_ip, h.dst_ip) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            ipv4::Repr {
                src,
                dst,
                protocol: ipv4::PROTO_UDP,
                ttl: h.ttl,
                tos: h.tos,
                total_len: ipv4::HEADER_LEN as u16 + udp_len,
            }
            .emit(&mut hdr[ethernet::HEADER_LEN..]);
            EtherType::Ipv4
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            ipv6::Repr {
                src,
                dst,
                next_header: ipv4::PROTO_UDP,
                hop_limit: h.ttl,
                traffic_class: h.tos,
                payload_len: udp_len,
            }
            .emit(&mut hdr[ethernet::HEADER_LEN..]);
            EtherType::Ipv6
        }
        _ => return None,
    };
    ethernet::Repr {
        dst: h.dst_mac,
        src: h.src_mac,
        ethertype,
    }
    .emit(hdr);
    udp::Repr {
        src_port: h.src_port,
        dst_port: h.dst_port,
        len: udp_len,
    }
    .emit_header(&mut hdr[ethernet::HEADER_LEN + ip_len..], payload, h.src_ip, h.dst_ip);
    Some(h.headers_len())
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

    use std::net::{Ipv4Addr, Ipv6Addr};

    fn headers() -> UdpHeaders {
        UdpHeaders {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            src_ip: Ipv4Addr::new(198, 18, 0, 1).into(),
            dst_ip: Ipv4Addr::new(198, 18, 0, 2).into(),
            src_port: 4000,
            dst_port: 5000,
            tos: 0xb8,
            ttl: 64,
        }
    }

    fn headers6() -> UdpHeaders {
        UdpHeaders {
            src_ip: "2001:2::1".parse::<Ipv6Addr>().unwrap().into(),
            dst_ip: "2001:2::2".parse::<Ipv6Addr>().unwrap().into(),
            ..headers()
        }
    }

    fn frame_with(h: &UdpHeaders, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; h.headers_len() + payload.len()];
        f[h.headers_len()..].copy_from_slice(payload);
        let n = emit_udp(&mut f, h, payload.len()).unwrap();
        assert_eq!(n, f.len());
        f
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        frame_with(&headers(), payload)
    }

    fn frame6(payload: &[u8]) -> Vec<u8> {
        frame_with(&headers6(), payload)
    }

    /// A UDP checksum holding only the pseudo-header sum (what a veth with TX checksum
    /// offload delivers from a kernel socket) is dropped under its own reason.
    #[test]
    fn a_partial_checksum_from_checksum_offload_is_named() {
        for (h, at) in [(headers(), UDP_HEADERS_LEN - 2), (headers6(), UDP6_HEADERS_LEN - 2)] {
            let mut f = frame_with(&h, b"offloaded");
            let udp_len = (udp::HEADER_LEN + 9) as u32;
            let addr = |a: IpAddr| match a {
                IpAddr::V4(a) => a.octets().to_vec(),
                IpAddr::V6(a) => a.octets().to_vec(),
            };
            let sum = checksum_add(checksum_add(0, &addr(h.src_ip)), &addr(h.dst_ip)) + 17 + udp_len;
            let partial = !checksum_fold(sum);
            f[at..at + 2].copy_from_slice(&partial.to_be_bytes());
            assert_eq!(parse_udp(&f, 2048), Err(DropReason::PartialUdpChecksum), "{h:?}");
            // Any other wrong value is just a bad checksum.
            f[at] ^= 0x40;
            assert_eq!(parse_udp(&f, 2048), Err(DropReason::BadUdpChecksum));
        }
    }

    #[test]
    fn ipv6_build_then_parse_round_trips() {
        let f = frame6(b"hello six");
        assert_eq!(f.len(), UDP6_HEADERS_LEN + 9);
        let p = parse_udp(&f, 2048).unwrap();
        let h = headers6();
        assert_eq!(
            (p.src_ip, p.dst_ip, p.src_port, p.dst_port, p.tos),
            (h.src_ip, h.dst_ip, 4000, 5000, 0xb8)
        );
        assert_eq!(p.payload_offset, UDP6_HEADERS_LEN);
        assert_eq!(&f[p.payload_offset..p.payload_offset + p.payload_len], b"hello six");
    }

    #[test]
    fn ipv6_malformations_are_named() {
        let good = frame6(b"payload!");
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            parse_udp(&v, 2048)
        };
        assert_eq!(with(&|v| v.truncate(14 + 39)), Err(DropReason::TruncatedIp));
        assert_eq!(with(&|v| v[14] = 0x45), Err(DropReason::BadIpVersion));
        assert_eq!(
            with(&|v| v[18..20].copy_from_slice(&999u16.to_be_bytes())),
            Err(DropReason::BadIpLength)
        );
        assert_eq!(with(&|v| v[20] = 44), Err(DropReason::Fragment));
        assert_eq!(with(&|v| v[20] = 0), Err(DropReason::Ipv6Extension), "hop-by-hop");
        assert_eq!(
            with(&|v| v[20] = 60),
            Err(DropReason::Ipv6Extension),
            "destination options"
        );
        assert_eq!(with(&|v| v[20] = 58), Err(DropReason::NotUdp), "ICMPv6");
        assert_eq!(with(&|v| v[62 - 8 + 4] ^= 0xff), Err(DropReason::BadUdpLength));
        assert_eq!(with(&|v| v[69] ^= 0xff), Err(DropReason::BadUdpChecksum));
        // IPv6 requires the checksum: zero is not "none" (RFC 8200 §8.1).
        assert_eq!(
            with(&|v| v[60..62].copy_from_slice(&[0, 0])),
            Err(DropReason::BadUdpChecksum)
        );
        // A payload length shorter than the frame: the padding is not the datagram's.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(parse_udp(&padded, 2048).map(|p| p.payload_len), Ok(8));
    }

    #[test]
    fn mixed_families_are_refused() {
        let h = UdpHeaders {
            dst_ip: headers6().dst_ip,
            ..headers()
        };
        let mut f = [0u8; 128];
        assert_eq!(emit_udp(&mut f, &h, 8), None);
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
            with(&|v| v[12..14].copy_from_slice(&[0x88, 0xcc])),
            Err(DropReason::NotIp),
            "LLDP"
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
            for f in [frame(&payload), frame6(&payload)] {
                let p = parse_udp(&f, 2048).unwrap();
                proptest::prop_assert_eq!(&f[p.payload_offset..p.payload_offset + p.payload_len], &payload[..]);
            }
        }

        #[test]
        fn any_single_byte_flip_in_ipv6_headers_is_caught_or_harmless(at in 0usize..62, bit in 0u8..8) {
            let mut v = frame6(b"0123456789");
            v[at] ^= 1 << bit;
            // Not covered by a checksum: the MACs, and the traffic class, flow label and hop
            // limit (IPv6 has no header checksum; the UDP pseudo-header leaves them out).
            if let Ok(p) = parse_udp(&v, 2048) {
                proptest::prop_assert!(at < 12 || (14..18).contains(&at) || at == 21, "a header flip at {} passed", at);
                proptest::prop_assert_eq!(p.payload_len, 10);
            }
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
