//! The XDP program on packet fixtures with BPF_PROG_TEST_RUN: no NIC, no socket. Loading BPF
//! needs root (CAP_BPF); without it these tests skip, unless PORTO_REQUIRE_NETNS=1 (CI).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use porto_engine::wire::{arp, emit_udp, ethernet, EtherType, MacAddr, UdpHeaders, UDP6_HEADERS_LEN, UDP_HEADERS_LEN};
use porto_engine::xdp::{StampSource, XdpProgram};

const XDP_PASS: u32 = 2;
const PORT: u16 = 7000;
const ME4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const ME6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2);

/// Adds wildcard binds (0.0.0.0:PORT, [::]:PORT), as a multicast receiver has.
fn wildcard(p: &mut XdpProgram) {
    p.add_bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT))).unwrap();
    p.add_bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, PORT))).unwrap();
}

/// The program with porto bound to 198.18.0.2:PORT and [2001:2::2]:PORT.
fn load() -> Option<XdpProgram> {
    match XdpProgram::load() {
        Ok(mut p) => {
            p.add_bind(SocketAddr::from((ME4, PORT))).unwrap();
            p.add_bind(SocketAddr::from((ME6, PORT))).unwrap();
            Some(p)
        }
        Err(e) => {
            assert!(
                std::env::var("PORTO_REQUIRE_NETNS").as_deref() != Ok("1"),
                "cannot load XDP: {e}"
            );
            eprintln!("skipping: {e}");
            None
        }
    }
}

fn udp(dst_port: u16, payload: usize) -> Vec<u8> {
    udp_between(
        Ipv4Addr::new(198, 18, 0, 1).into(),
        Ipv4Addr::new(198, 18, 0, 2).into(),
        dst_port,
        payload,
    )
}

fn udp6(dst: Ipv6Addr, dst_port: u16, payload: usize) -> Vec<u8> {
    udp_between(
        "2001:2::1".parse::<Ipv6Addr>().unwrap().into(),
        dst.into(),
        dst_port,
        payload,
    )
}

fn udp_between(src_ip: IpAddr, dst_ip: IpAddr, dst_port: u16, payload: usize) -> Vec<u8> {
    let mut f = vec![
        0u8;
        if src_ip.is_ipv4() {
            UDP_HEADERS_LEN
        } else {
            UDP6_HEADERS_LEN
        } + payload
    ];
    let h = UdpHeaders {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
        src_ip,
        dst_ip,
        src_port: 9999,
        dst_port,
        tos: 0,
        ttl: 64,
    };
    emit_udp(&mut f, &h, payload).unwrap();
    f
}

/// Runs `frame` and returns (action, steered delta, passed delta).
fn run(p: &mut XdpProgram, frame: &[u8]) -> (u32, u64, u64) {
    let c0 = p.counters().unwrap();
    let action = p.test_run(frame).unwrap();
    let c1 = p.counters().unwrap();
    (action, c1.steered - c0.steered, c1.passed - c0.passed)
}

/// Runs `frame` and returns `run`'s figures and the filtered-counter delta.
fn filtered(p: &mut XdpProgram, frame: &[u8]) -> ((u32, u64, u64), u64) {
    let before = p.counters().unwrap().filtered;
    let r = run(p, frame);
    (r, p.counters().unwrap().filtered - before)
}

/// The receive stamp is gated on what this kernel allows: the loader's probe picks the
/// source and says why; forcing the stamp where the kernel refuses `bpf_xdp_adjust_meta`
/// fails with the verifier's own words (no privilege hint: privileges are not the cause);
/// the program without its stamp loads on every kernel.
#[test]
fn the_receive_stamp_is_gated_on_what_the_kernel_allows() {
    let Some(p) = load() else {
        return;
    };
    let off = XdpProgram::load_with(StampSource::RingReap { why: "forced".into() }).unwrap();
    assert_eq!(off.stamps(), &StampSource::RingReap { why: "forced".into() });
    match p.stamps() {
        StampSource::Program => {
            XdpProgram::load_with(StampSource::Program).unwrap();
        }
        StampSource::RingReap { why } => {
            assert!(why.contains("bpf_xdp_adjust_meta"), "the probe names the helper: {why}");
            let e = XdpProgram::load_with(StampSource::Program).unwrap_err().to_string();
            assert!(
                e.contains("cannot use helper bpf_xdp_adjust_meta") && e.contains("Invalid argument"),
                "the verifier's own words: {e}"
            );
            assert!(!e.contains("CAP_BPF"), "no privilege hint for a verifier refusal: {e}");
            assert!(p.stamps().to_string().contains("taken when the RX ring is read"));
        }
    }
}

#[test]
fn porto_port_is_steered_everything_else_passes() {
    let Some(mut p) = load() else { return };
    // To a porto port: steered (and, with no socket on the queue, the kernel still gets it).
    assert_eq!(run(&mut p, &udp(PORT, 64)), (XDP_PASS, 1, 0));
    // Another port, ARP, TCP, IPv6, truncated: straight to the kernel.
    assert_eq!(run(&mut p, &udp(PORT + 1, 64)), (XDP_PASS, 0, 1));
    let mut a = vec![0u8; ethernet::HEADER_LEN + arp::PACKET_LEN];
    ethernet::Repr {
        dst: MacAddr::BROADCAST,
        src: MacAddr([2, 0, 0, 0, 0, 1]),
        ethertype: EtherType::Arp,
    }
    .emit(&mut a);
    let req = arp::Repr {
        operation: arp::Operation::Request,
        sender_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        sender_ip: Ipv4Addr::new(198, 18, 0, 1),
        target_mac: MacAddr([0; 6]),
        target_ip: Ipv4Addr::new(198, 18, 0, 2),
    };
    req.emit(&mut a[ethernet::HEADER_LEN..]);
    assert_eq!(run(&mut p, &a), (XDP_PASS, 0, 1));
    let mut tcp = udp(PORT, 64);
    tcp[23] = 6;
    assert_eq!(run(&mut p, &tcp), (XDP_PASS, 0, 1));
    let mut lldp = udp(PORT, 64);
    lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
    assert_eq!(run(&mut p, &lldp), (XDP_PASS, 0, 1));
    assert_eq!(run(&mut p, &udp(PORT, 64)[..30]), (XDP_PASS, 0, 1));
}

#[test]
fn ipv6_udp_for_porto_ports_is_steered_the_rest_passes() {
    let Some(mut p) = load() else { return };
    let me: Ipv6Addr = "2001:2::2".parse().unwrap();
    assert_eq!(run(&mut p, &udp6(me, PORT, 64)), (XDP_PASS, 1, 0));
    assert_eq!(run(&mut p, &udp6(me, PORT + 1, 64)), (XDP_PASS, 0, 1));
    // ICMPv6 (neighbour discovery among it) is the kernel's.
    let mut icmp = udp6(me, PORT, 64);
    icmp[20] = 58;
    assert_eq!(run(&mut p, &icmp), (XDP_PASS, 0, 1));
    // Extension headers before UDP: the UDP header is not located; the kernel gets it.
    let mut ext = udp6(me, PORT, 64);
    ext[20] = 60;
    assert_eq!(run(&mut p, &ext), (XDP_PASS, 0, 1));
    // Truncated inside the fixed header or the UDP header.
    assert_eq!(run(&mut p, &udp6(me, PORT, 64)[..50]), (XDP_PASS, 0, 1));
    assert_eq!(run(&mut p, &udp6(me, PORT, 64)[..60]), (XDP_PASS, 0, 1));
    // A bad UDP checksum is porto's to count: steered.
    let mut bad = udp6(me, PORT, 64);
    bad[60] ^= 0xff;
    assert_eq!(run(&mut p, &bad), (XDP_PASS, 1, 0));
    // IPv6 multicast for the port (received through a wildcard bind): filtered to the
    // kernel until joined; then steered for the group from an included source (SSM) or
    // from any (ASM).
    wildcard(&mut p);
    let (ssm, asm): (Ipv6Addr, Ipv6Addr) = ("ff3e::8000:1".parse().unwrap(), "ff1e::1".parse().unwrap());
    let other: IpAddr = "2001:2::9".parse::<Ipv6Addr>().unwrap().into();
    assert_eq!(filtered(&mut p, &udp6(ssm, PORT, 16)), ((XDP_PASS, 0, 0), 1));
    p.add_group(ssm.into(), Some("2001:2::1".parse::<Ipv6Addr>().unwrap().into()))
        .unwrap();
    p.add_group(asm.into(), None).unwrap();
    assert_eq!(filtered(&mut p, &udp6(ssm, PORT, 16)), ((XDP_PASS, 1, 0), 0));
    assert_eq!(
        filtered(&mut p, &udp_between(other, ssm.into(), PORT, 16)),
        ((XDP_PASS, 0, 0), 1),
        "a source the SSM join excludes"
    );
    assert_eq!(
        filtered(&mut p, &udp_between(other, asm.into(), PORT, 16)),
        ((XDP_PASS, 1, 0), 0)
    );
    p.remove_group(asm.into(), None).unwrap();
    assert_eq!(filtered(&mut p, &udp6(asm, PORT, 16)), ((XDP_PASS, 0, 0), 1));
}

#[test]
fn malformed_frames_for_porto_ports_are_steered_for_counting() {
    let Some(mut p) = load() else { return };
    // IP options (IHL 6): the UDP header moves 4 bytes; still located and steered.
    let mut opt = udp(PORT, 64);
    opt.splice(34..34, [1u8, 1, 1, 1]);
    opt[14] = 0x46;
    opt[36..38].copy_from_slice(&PORT.to_be_bytes());
    assert_eq!(run(&mut p, &opt), (XDP_PASS, 1, 0));
    // Bad UDP checksum: the program does not check it; porto does.
    let mut bad = udp(PORT, 64);
    bad[40] ^= 0xff;
    assert_eq!(run(&mut p, &bad), (XDP_PASS, 1, 0));
    // IHL 4: cannot locate UDP; the kernel gets it.
    let mut ihl = udp(PORT, 64);
    ihl[14] = 0x44;
    assert_eq!(run(&mut p, &ihl), (XDP_PASS, 0, 1));
}

#[test]
fn removed_bind_is_no_longer_steered() {
    let Some(mut p) = load() else { return };
    p.remove_bind(SocketAddr::from((ME4, PORT))).unwrap();
    assert_eq!(run(&mut p, &udp(PORT, 64)), (XDP_PASS, 0, 1));
    assert_eq!(
        run(&mut p, &udp6(ME6, PORT, 64)),
        (XDP_PASS, 1, 0),
        "the other bind stays"
    );
}

/// Only the bound (address, port) is taken from the kernel: the same port on another
/// address of either family, limited broadcast, and IPv4 fragments after the first (whose
/// payload may happen to read as the port) stay the kernel's, so services beside porto keep
/// their traffic. A wildcard bind takes every address of its family only.
#[test]
fn only_bound_addresses_first_fragments_and_no_broadcast_are_steered() {
    let Some(mut p) = load() else { return };
    let src4: IpAddr = Ipv4Addr::new(198, 18, 0, 1).into();
    let other4: IpAddr = Ipv4Addr::new(198, 18, 0, 9).into();
    let other6: Ipv6Addr = "2001:2::9".parse().unwrap();
    assert_eq!(run(&mut p, &udp_between(src4, other4, PORT, 64)), (XDP_PASS, 0, 1));
    assert_eq!(run(&mut p, &udp6(other6, PORT, 64)), (XDP_PASS, 0, 1));
    let bcast = udp_between(src4, Ipv4Addr::BROADCAST.into(), PORT, 64);
    assert_eq!(run(&mut p, &bcast), (XDP_PASS, 0, 1));
    // A first fragment (MF, offset 0) has the UDP header: steered, the engine counts it.
    let mut first = udp(PORT, 64);
    first[20] = 0x20;
    assert_eq!(run(&mut p, &first), (XDP_PASS, 1, 0));
    // A later fragment: bytes where a UDP header would be are payload, even if they read
    // as porto's port.
    let mut later = udp(PORT, 64);
    later[20..22].copy_from_slice(&0x00b9u16.to_be_bytes());
    assert_eq!(later[36..38], PORT.to_be_bytes(), "payload bytes read as the port");
    assert_eq!(run(&mut p, &later), (XDP_PASS, 0, 1));
    // Wildcard binds: any unicast address of the family; broadcast still passes.
    wildcard(&mut p);
    assert_eq!(run(&mut p, &udp_between(src4, other4, PORT, 64)), (XDP_PASS, 1, 0));
    assert_eq!(run(&mut p, &udp6(other6, PORT, 64)), (XDP_PASS, 1, 0));
    assert_eq!(run(&mut p, &bcast), (XDP_PASS, 0, 1));
    assert_eq!(run(&mut p, &udp_between(src4, other4, PORT + 1, 64)), (XDP_PASS, 0, 1));
}

/// A datagram to `group` from `src` for the porto port.
fn mcast(group: Ipv4Addr, src: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; UDP_HEADERS_LEN + 16];
    let o = group.octets();
    let h = UdpHeaders {
        src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
        dst_mac: MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]),
        src_ip: src.into(),
        dst_ip: group.into(),
        src_port: 9999,
        dst_port: PORT,
        tos: 0,
        ttl: 1,
    };
    emit_udp(&mut f, &h, 16).unwrap();
    f
}

#[test]
fn multicast_is_steered_only_for_joined_groups_and_included_sources() {
    let Some(mut p) = load() else { return };
    wildcard(&mut p);
    let (asm, ssm) = (Ipv4Addr::new(239, 1, 1, 1), Ipv4Addr::new(232, 1, 1, 1));
    let (good, other) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 9));
    // Nothing joined: multicast for the port is filtered to the kernel, not steered.
    assert_eq!(filtered(&mut p, &mcast(asm, good)), ((XDP_PASS, 0, 0), 1));
    p.add_group(asm.into(), None).unwrap();
    p.add_group(ssm.into(), Some(good.into())).unwrap();
    assert_eq!(filtered(&mut p, &mcast(asm, good)), ((XDP_PASS, 1, 0), 0));
    assert_eq!(filtered(&mut p, &mcast(asm, other)), ((XDP_PASS, 1, 0), 0));
    assert_eq!(filtered(&mut p, &mcast(ssm, good)), ((XDP_PASS, 1, 0), 0));
    assert_eq!(filtered(&mut p, &mcast(ssm, other)), ((XDP_PASS, 0, 0), 1));
    // Leave: filtered again. Unicast is unaffected by the group table.
    p.remove_group(asm.into(), None).unwrap();
    assert_eq!(filtered(&mut p, &mcast(asm, good)), ((XDP_PASS, 0, 0), 1));
    assert_eq!(filtered(&mut p, &udp(PORT, 64)), ((XDP_PASS, 1, 0), 0));
}
