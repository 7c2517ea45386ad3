//! The fuzz targets' bodies, one function per parser or state machine that takes untrusted
//! bytes. `fuzz/fuzz_targets/*.rs` (cargo-fuzz, nightly) call them with generated input;
//! `tests/fuzz_corpus.rs` replays every committed corpus file through them on stable, so a
//! regression a fuzzer once found fails `cargo test`. Each asserts the invariants its parser
//! promises; none may panic otherwise. Not an API: hidden from the docs.

use std::net::IpAddr;

use crate::sys::net;
use crate::wire;

/// `wire::parse_udp` on a whole frame (either family, up to 64 KiB): a frame it accepts has
/// its payload inside the frame, re-emits to the same bytes' headers, and parses again the
/// same.
pub fn parse_udp(data: &[u8]) {
    let Ok(u) = wire::parse_udp(data, 1 << 16) else {
        return;
    };
    let end = u
        .payload_offset
        .checked_add(u.payload_len)
        .expect("payload range overflows");
    assert!(end <= data.len(), "payload beyond the frame");
    assert_eq!(u.src_ip.is_ipv4(), u.dst_ip.is_ipv4(), "mixed families");
    let h = wire::UdpHeaders {
        src_mac: u.src_mac,
        dst_mac: u.dst_mac,
        src_ip: u.src_ip,
        dst_ip: u.dst_ip,
        src_port: u.src_port,
        dst_port: u.dst_port,
        tos: u.tos,
        ttl: 64,
    };
    let mut again = data[..end].to_vec();
    let n = wire::emit_udp(&mut again, &h, u.payload_len).expect("an accepted frame re-emits");
    let back = wire::parse_udp(&again[..n], 1 << 16).expect("a re-emitted frame parses");
    assert_eq!(
        (
            back.src_ip,
            back.dst_ip,
            back.src_port,
            back.dst_port,
            back.tos,
            back.payload_len
        ),
        (u.src_ip, u.dst_ip, u.src_port, u.dst_port, u.tos, u.payload_len)
    );
}

/// A multishot recvmsg buffer whose header (written by the kernel) carries hostile name,
/// control and payload lengths; the first two bytes pick the msghdr's own name (0..=255) and
/// control (0..=255) room. Every range must stay inside the buffer.
pub fn recvmsg_out(data: &[u8]) {
    let [n, c, buf @ ..] = data else { return };
    if let Some(out) = net::parse_recvmsg_out(buf, u32::from(*n), usize::from(*c)) {
        assert!(out.payload.start <= out.payload.end && out.payload.end <= buf.len());
    }
}

/// Control messages (IP_TOS / IPV6_TCLASS, SCM_TIMESTAMPING, IP(V6)_RECVERR of a TX
/// timestamp) with hostile cmsg lengths.
pub fn tos_from_cmsgs(data: &[u8]) {
    let c = net::parse_cmsgs(data);
    if let Some((_, ns)) = c.tx_stamp() {
        assert_eq!(Some(ns), c.rx_ns, "a TX stamp is the message's timestamp");
    }
}

/// A kernel-written sockaddr with a hostile length (the first byte) and family.
pub fn sockaddr(data: &[u8]) {
    let [len, bytes @ ..] = data else { return };
    if let Some(a) = net::from_bytes(bytes, usize::from(*len)) {
        let (raw, raw_len) = net::to_raw(&a);
        assert_eq!(net::from_raw(&raw, raw_len), Some(a), "decode/encode round trip");
        assert!(matches!(a.ip(), IpAddr::V4(_) | IpAddr::V6(_)));
    }
}

/// A hostile RX ring: descriptors (addr u64, len u32, queue u8 from each 13 bytes) claimed
/// against a FILL ownership table of 16 frames of 2 KiB spread over 2 queues. A frame is
/// claimed only from the queue that filled it, at most once per fill, with its bytes inside
/// the frame; the table stays consistent (claimed + still filled == filled).
pub fn xsk_rx_claims(data: &[u8]) {
    use crate::xdp::port::claim_desc;
    const FRAMES: usize = 16;
    const FS: u32 = 2048;
    let mut in_kernel = [0u16; FRAMES];
    for (f, o) in in_kernel.iter_mut().enumerate() {
        *o = (f % 2) as u16 + 1;
    }
    let mut claimed = [false; FRAMES];
    for d in data.chunks_exact(13) {
        let addr = u64::from_le_bytes(d[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes"));
        let owner = u16::from(d[12] % 3);
        if let Some((frame, off)) = claim_desc(&mut in_kernel, owner, addr, len, FS) {
            let f = frame as usize;
            assert!(f < FRAMES && !claimed[f], "frame {f} claimed twice");
            assert_eq!((f % 2) as u16 + 1, owner, "claimed from another queue");
            assert!(u64::from(off) + u64::from(len) <= u64::from(FS));
            claimed[f] = true;
        }
    }
    for f in 0..FRAMES {
        assert_eq!(claimed[f], in_kernel[f] == 0, "ownership table and claims disagree");
    }
}
