//! Multicast across a veth pair between two namespaces this test makes (and deletes, also on
//! failure): fan-out through AF_XDP with the XDP program's group and source filter, and
//! IPv6 source-specific multicast through io_uring. Needs root; skips without it unless
//! PORTO_REQUIRE_NETNS=1 (CI).

mod common;

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use porto_engine::fanout::{Policy, Subscription};
use porto_engine::netns::Side;
use porto_engine::rio::RioNotify;
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{Interface, SocketOptions, UdpSocket, XdpOptions, XdpUdpSocket};

const PORT: u16 = 7200;
const N: u32 = 30;

/// Tag layout: [stream, seq u32 BE].
fn tag(stream: u8, seq: u32) -> [u8; 5] {
    let s = seq.to_be_bytes();
    [stream, s[0], s[1], s[2], s[3]]
}

fn untag(b: &[u8]) -> (u8, u32) {
    (b[0], u32::from_be_bytes(b[1..5].try_into().unwrap()))
}

/// Polls `shard` until `done` or 5 s; then a short settle so stray datagrams would show.
fn run_until(shard: &mut Shard, mut done: impl FnMut() -> bool) {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        out.clear();
    }
    let settle = Instant::now() + Duration::from_millis(100);
    while Instant::now() < settle {
        shard.poll(&mut out, 64);
        out.clear();
    }
}

fn drain(sub: &mut Subscription) -> Vec<(u8, u32)> {
    std::iter::from_fn(|| sub.try_recv()).map(|d| untag(&d.buf)).collect()
}

#[test]
fn af_xdp_fan_out_steers_only_joined_groups_and_included_sources() {
    af_xdp_fan_out(false);
}

/// The same over IPv6: MLD memberships held by a kernel IPv6 socket, the program's IPv6 group
/// table, an SSM group (ff3e::/32) from one of two sources.
#[test]
fn af_xdp_ipv6_fan_out_steers_only_joined_groups_and_included_sources() {
    af_xdp_fan_out(true);
}

fn af_xdp_fan_out(v6: bool) {
    let Some(t) = common::topology(if v6 { "porto-n" } else { "porto-m" }, 1) else {
        return;
    };
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (asm, ssm, other, a2, a2_cidr) = if v6 {
        (
            ip("ff1e::2:2"),
            ip("ff3e::2:2"),
            ip("ff1e::3:3"),
            ip("2001:2::3"),
            "2001:2::3/64",
        )
    } else {
        (
            ip("239.2.2.2"),
            ip("232.2.2.2"),
            ip("239.3.3.3"),
            ip("198.18.0.3"),
            "198.18.0.3/24",
        )
    };
    let (ip_a, ip_b): (IpAddr, IpAddr) = if v6 {
        (t.addr6(Side::A).into(), t.addr6(Side::B).into())
    } else {
        (t.addr(Side::A).into(), t.addr(Side::B).into())
    };
    let mut add = vec!["addr", "add", a2_cidr, "dev", t.iface(Side::A)];
    if v6 {
        add.push("nodad");
    }
    t.ip(Side::A, &add).unwrap();
    let (go_tx, go_rx) = mpsc::channel::<u8>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let t = &t;
        s.spawn(move || {
            // The publisher in A: two sources, three groups. Each phase on request.
            t.enter(Side::A).unwrap();
            let from_a = StdUdp::bind((ip_a, 0)).unwrap();
            let from_a2 = StdUdp::bind((a2, 0)).unwrap();
            for phase in go_rx {
                let to = |g: IpAddr| SocketAddr::from((g, PORT));
                for i in 0..N {
                    match phase {
                        0 => {
                            from_a.send_to(&tag(1, i), to(asm)).unwrap();
                            from_a2.send_to(&tag(2, i), to(asm)).unwrap();
                            from_a.send_to(&tag(3, i), to(ssm)).unwrap();
                            from_a2.send_to(&tag(4, i), to(ssm)).unwrap(); // source not included
                            from_a.send_to(&tag(5, i), to(other)).unwrap(); // group not joined
                        }
                        2 => {
                            from_a.send_to(&tag(7, i), to(asm)).unwrap();
                            from_a2.send_to(&tag(8, i), to(asm)).unwrap(); // blocked
                        }
                        3 => {
                            from_a.send_to(&tag(9, i), to(asm)).unwrap();
                            from_a2.send_to(&tag(10, i), to(asm)).unwrap(); // unblocked
                        }
                        _ => {
                            from_a.send_to(&tag(6, i), to(asm)).unwrap(); // after leave
                        }
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                ack_tx.send(()).unwrap();
            }
        });
        t.enter(Side::B).unwrap();
        let mut shard = Shard::new(&common::xdp_config(), None).unwrap();
        let h = shard.handle();
        let mut sock = XdpUdpSocket::bind(
            &h,
            SocketAddr::new(ip_b, PORT),
            &XdpOptions::new(t.iface(Side::B)),
            Delivery::Poll { key: 1 },
        )
        .unwrap();
        sock.join(asm, None).unwrap();
        sock.join(ssm, Some(ip_a)).unwrap();
        let fan = sock.fan_out(1).unwrap();
        let mut subs: Vec<Subscription> = (0..3)
            .map(|_| fan.subscribe(Policy::Reliable, 1024, RioNotify::None).unwrap())
            .collect();
        // One turn first: the shard takes the join and fan-out commands.
        shard.poll(&mut Vec::new(), 16);
        let c0 = sock.xdp_counters().unwrap();
        go_tx.send(0).unwrap();
        run_until(&mut shard, || {
            ack_rx.try_recv().is_ok() && fan.counters().received >= 3 * u64::from(N)
        });
        let want: Vec<(u8, u32)> = (0..N).flat_map(|i| [(1, i), (2, i), (3, i)]).collect();
        for sub in &mut subs {
            assert_eq!(drain(sub), want, "every subscriber, every datagram, once, in order");
        }
        assert_eq!(fan.counters().received, 3 * u64::from(N));
        // Both stay in the kernel: the excluded source of a joined group is filtered by
        // the group table; the unjoined group is not even bound (passed).
        let c1 = sock.xdp_counters().unwrap();
        assert_eq!(c1.filtered - c0.filtered, u64::from(N), "the excluded source");
        assert!(c1.passed - c0.passed >= u64::from(N), "the unjoined group");
        // Exclude mode: a2 blocked from the any-source membership — filtered by the program
        // (the kernel membership blocks it too); a2 only from an SSM join cannot be blocked.
        assert_eq!(
            sock.block_source(ssm, a2).unwrap_err(),
            porto_engine::error::Error::InvalidArgument
        );
        sock.block_source(asm, a2).unwrap();
        let received = fan.counters().received;
        go_tx.send(2).unwrap();
        run_until(&mut shard, || {
            ack_rx.try_recv().is_ok() && fan.counters().received >= received + u64::from(N)
        });
        for sub in &mut subs {
            assert_eq!(drain(sub), (0..N).map(|i| (7, i)).collect::<Vec<_>>(), "a only");
        }
        let c2 = sock.xdp_counters().unwrap();
        assert_eq!(
            c2.filtered - c1.filtered,
            u64::from(N),
            "the blocked source, in the program"
        );
        // Unblocked: both again.
        sock.unblock_source(asm, a2).unwrap();
        assert_eq!(
            sock.unblock_source(asm, a2).unwrap_err(),
            porto_engine::error::Error::InvalidArgument
        );
        let received = fan.counters().received;
        go_tx.send(3).unwrap();
        run_until(&mut shard, || {
            ack_rx.try_recv().is_ok() && fan.counters().received >= received + 2 * u64::from(N)
        });
        let want: Vec<(u8, u32)> = (0..N).flat_map(|i| [(9, i), (10, i)]).collect();
        for sub in &mut subs {
            assert_eq!(drain(sub), want, "both sources again");
        }
        assert_eq!(sock.xdp_counters().unwrap().filtered, c2.filtered);
        let received = fan.counters().received;
        // Leave: the program stops steering the group.
        sock.leave(asm, None).unwrap();
        go_tx.send(1).unwrap();
        run_until(&mut shard, || ack_rx.try_recv().is_ok());
        for sub in &mut subs {
            assert_eq!(drain(sub), Vec::new(), "nothing after leave");
        }
        assert_eq!(fan.counters().received, received);
        drop(go_tx);
        // Frames come home once the subscribers and the socket let go.
        drop(subs);
        drop(sock);
        common::assert_conserved(&mut shard);
    });
}

#[test]
fn ipv6_source_specific_fan_out_over_io_uring() {
    let Some(t) = common::topology("porto-m", 1) else {
        return;
    };
    let group: Ipv6Addr = "ff3e::4:1".parse().unwrap();
    let (ip6_a, a3): (Ipv6Addr, Ipv6Addr) = (t.addr6(Side::A), "2001:2::3".parse().unwrap());
    t.ip(
        Side::A,
        &["addr", "add", "2001:2::3/64", "dev", t.iface(Side::A), "nodad"],
    )
    .unwrap();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (ack_tx, ack_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let t = &t;
        s.spawn(move || {
            t.enter(Side::A).unwrap();
            let from_a = StdUdp::bind((ip6_a, 0)).unwrap();
            let from_a3 = StdUdp::bind((a3, 0)).unwrap();
            go_rx.recv().unwrap();
            let to = SocketAddr::from((group, PORT));
            for i in 0..N {
                from_a.send_to(&tag(1, i), to).unwrap();
                from_a3.send_to(&tag(2, i), to).unwrap(); // not included
                std::thread::sleep(Duration::from_micros(200));
            }
            ack_tx.send(()).unwrap();
        });
        t.enter(Side::B).unwrap();
        let mut shard = Shard::new(&common::xdp_config(), None).unwrap();
        let h = shard.handle();
        let rx = UdpSocket::bind(
            &h,
            SocketAddr::from((Ipv6Addr::UNSPECIFIED, PORT)),
            &SocketOptions::default(),
            Delivery::Poll { key: 1 },
        )
        .unwrap();
        let ifindex = t.ifindex(Side::B).unwrap();
        rx.join_source(group.into(), ip6_a.into(), Some(Interface::Index(ifindex)))
            .unwrap();
        let fan = rx.fan_out(1).unwrap();
        let mut subs: Vec<Subscription> = (0..2)
            .map(|_| fan.subscribe(Policy::Lossy, 256, RioNotify::None).unwrap())
            .collect();
        let mut out = Vec::new();
        shard.poll(&mut out, 16);
        go_tx.send(()).unwrap();
        run_until(&mut shard, || {
            ack_rx.try_recv().is_ok() && fan.counters().received >= u64::from(N)
        });
        for sub in &mut subs {
            let got: Vec<_> = std::iter::from_fn(|| sub.try_recv())
                .map(|d| {
                    assert_eq!(d.peer().map(|p| p.ip()), Some(IpAddr::V6(ip6_a)));
                    untag(&d.buf)
                })
                .collect();
            assert_eq!(got, (0..N).map(|i| (1, i)).collect::<Vec<_>>());
        }
        // Frames come home once the subscribers and the socket let go.
        drop(subs);
        drop(rx);
        common::assert_conserved(&mut shard);
    });
}

/// `send_to_many` through AF_XDP: one payload to three destinations across the veth, each
/// sent once, with the right bytes; a multi-buffer socket sends header frames plus the one
/// payload frame (no copy), and says so.
#[test]
fn af_xdp_send_to_many_reaches_every_destination() {
    use std::sync::Arc;
    let Some(t) = common::topology("porto-s", 1) else {
        return;
    };
    let (addrs_tx, addrs_rx) = mpsc::channel::<(Vec<SocketAddr>, porto_engine::wire::MacAddr)>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let t = &t;
        let receivers = s.spawn(move || {
            t.enter(Side::A).unwrap();
            let socks: Vec<StdUdp> = (0..3).map(|_| StdUdp::bind((t.addr(Side::A), 0)).unwrap()).collect();
            let mac = porto_engine::netns::mac_of(t.iface(Side::A)).unwrap();
            addrs_tx
                .send((socks.iter().map(|s| s.local_addr().unwrap()).collect(), mac))
                .unwrap();
            let got: Vec<(Vec<u8>, SocketAddr)> = socks
                .iter()
                .map(|s| {
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut b = [0u8; 64];
                    let (n, from) = s.recv_from(&mut b).unwrap();
                    (b[..n].to_vec(), from)
                })
                .collect();
            done_rx.recv().unwrap();
            got
        });
        let (addrs, mac_a) = addrs_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        t.enter(Side::B).unwrap();
        let mut shard = Shard::new(&common::xdp_config(), None).unwrap();
        let h = shard.handle();
        let sock = XdpUdpSocket::bind(
            &h,
            SocketAddrV4::new(t.addr(Side::B), PORT),
            &XdpOptions::new(t.iface(Side::B)),
            Delivery::Poll { key: 1 },
        )
        .unwrap();
        sock.add_neighbor(t.addr(Side::A), mac_a).unwrap();
        let dests: Arc<[SocketAddr]> = addrs.into();
        sock.send_to_many(h.pool().alloc_from(b"quote").unwrap(), &dests, 9)
            .unwrap();
        let mut peers = Vec::new();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while peers.len() < dests.len() && Instant::now() < deadline {
            shard.poll(&mut out, 64);
            for c in out.drain(..) {
                assert_eq!((c.token, c.result), (9, Ok(5)), "{c:?}");
                peers.push(c.peer.unwrap());
            }
        }
        peers.sort();
        let mut want = dests.to_vec();
        want.sort();
        assert_eq!(peers, want, "one completion per destination");
        let _ = done_tx.send(());
        for (bytes, from) in receivers.join().unwrap() {
            assert_eq!(
                (bytes.as_slice(), from),
                (&b"quote"[..], SocketAddr::from((t.addr(Side::B), PORT)))
            );
        }
        let st = shard.stats().counters.snapshot();
        let how = if sock.info().multi_buffer {
            (st.xdp_send_multi_buffer, st.xdp_send_copies)
        } else {
            (st.xdp_send_copies, st.xdp_send_multi_buffer)
        };
        assert_eq!(how, (3, 0), "{}", sock.info());
        eprintln!("{}", sock.info());
        drop(sock);
        common::assert_conserved(&mut shard);
    });
}
