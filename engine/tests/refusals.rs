//! The kernel-refusal matrix, in process: each test runs porto on a thread whose syscalls a
//! seccomp filter refuses — one syscall, or only some of its arguments (an
//! `io_uring_register` opcode, a `bpf` command, a `setsockopt` level and name, `mmap` with
//! `MAP_HUGETLB`) — so the kernel itself says no, as Docker's profile, a distribution
//! kernel or a hardened sysctl would. Each refusal must cost only what it refuses: porto
//! starts, moves traffic, and reports exactly what it lost (`ShardInfo::degraded`, the
//! socket's own report, `porto doctor`'s rows); where nothing can work the error names the
//! cause. `docs/refusals.md` is the table of these cases; `perf/tests/refusals.rs` runs the
//! CLI under the same filters against the real sockperf client.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use porto_engine::completion::{Completion, OpKind};
use porto_engine::config::Config;
use porto_engine::doctor::kernel::{self, State};
use porto_engine::error::Error;
use porto_engine::qos::TrafficType;
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, TcpListener, TcpStream, UdpSocket};
use porto_engine::xdp::{Stamping, XdpProgram};
use porto_engine::Provider;

mod common;
#[path = "common/seccomp.rs"]
mod seccomp;

use seccomp::{nr, reg, Rule};

/// Runs `f` on a thread of its own whose syscalls `rules` refuse (and every thread it starts).
fn refused(rules: Vec<Rule>, f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        s.spawn(move || {
            seccomp::refuse_in_this_thread(&rules);
            f();
        });
    });
}

/// `io_uring_register` refused for one opcode.
fn register(op: u32, errno: i32) -> Rule {
    Rule::syscall(nr::IO_URING_REGISTER, errno).arg(1, op)
}

/// `setsockopt(level, name)` refused.
fn setsockopt(level: i32, name: i32, errno: i32) -> Rule {
    Rule::syscall(nr::SETSOCKOPT, errno)
        .arg(1, level as u32)
        .arg(2, name as u32)
}

/// An io_uring shard on this thread; few provided frames, so receives recycle them.
fn uring() -> Config {
    Config {
        provider: Provider::IoUring,
        frames_per_shard: 256,
        recv_frames: 32,
        ..common::small_config()
    }
}

/// The shard reports `feature` lost, naming `why` and saying what it does instead.
fn assert_degraded(shard: &Shard, feature: &str, why: &str) {
    let info = shard.info();
    let d = info
        .degraded
        .iter()
        .find(|d| d.feature == feature)
        .unwrap_or_else(|| panic!("{feature} is reported lost: {info}"));
    assert!(d.why.contains(why), "{d}");
    assert!(!d.instead.is_empty());
    assert!(info.to_string().contains(&format!("without {feature}")), "{info}");
}

fn poll_one(shard: &mut Shard, what: &str) -> Completion {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() {
        assert!(Instant::now() < deadline, "{what}");
        shard.poll_until(&mut out, 1, Duration::from_millis(10));
    }
    out.remove(0)
}

/// `n` datagrams echoed one at a time through a multishot receive and sends of the received
/// frames, then a burst of `burst` more than the shard has provided frames for; then the
/// receive is cancelled and ends exactly once, and every frame is accounted for.
fn udp_echo(shard: &mut Shard, opts: &SocketOptions, n: u32, burst: u32) -> UdpSocket {
    let h = shard.handle();
    let sock = UdpSocket::bind(&h, "127.0.0.1:0".parse().unwrap(), opts, Delivery::Poll { key: 1 }).unwrap();
    sock.recv_from_multishot(1).unwrap();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let to = sock.local_addr().unwrap();
    let mut back = [0u8; 16];
    for i in 0..n {
        client.send_to(&i.to_be_bytes(), to).unwrap();
        let c = poll_one(shard, "the datagram");
        assert_eq!((c.op, c.result, c.more), (OpKind::RecvFrom, Ok(4), true), "{c:?}");
        sock.send_to(c.buffer.unwrap(), c.peer.unwrap(), 2).unwrap();
        let s = poll_one(shard, "the echo's send");
        assert_eq!((s.token, s.result), (2, Ok(4)));
        let (len, _) = client.recv_from(&mut back).unwrap();
        assert_eq!(&back[..len], &i.to_be_bytes());
    }
    for i in 0..burst {
        client.send_to(&i.to_be_bytes(), to).unwrap();
    }
    let mut got = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < burst as usize && Instant::now() < deadline {
        shard.poll(&mut out, 64);
        for c in out.drain(..) {
            assert_eq!((c.op, c.result), (OpKind::RecvFrom, Ok(4)), "{c:?}");
            got.push(u32::from_be_bytes(c.buffer.unwrap()[..4].try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..burst).collect::<Vec<_>>(), "the whole burst, in order");
    sock.cancel(1).unwrap();
    let end = poll_one(shard, "the receive's end");
    assert_eq!(
        (end.token, end.result, end.more),
        (1, Err(Error::Aborted), false),
        "{end:?}"
    );
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        shard.poll(&mut out, 64);
        assert!(out.is_empty(), "nothing after the terminal completion: {out:?}");
    }
    common::assert_conserved(shard);
    sock
}

/// 100 KB through a TCP multishot receive, then EOF ends it with one terminal completion.
fn tcp_receive(shard: &mut Shard) {
    let (_lst, mut client, server) = common::accepted_pair(shard);
    server.recv_multishot(3).unwrap();
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        client.write_all(&payload).unwrap();
        drop(client);
        payload
    });
    let mut got = Vec::new();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let end = loop {
        assert!(Instant::now() < deadline, "EOF after {} bytes", got.len());
        shard.poll(&mut out, 64);
        if let Some(end) = out.iter().position(|c| !c.more) {
            for c in out.drain(..end) {
                got.extend_from_slice(&c.buffer.unwrap());
            }
            break out.remove(0);
        }
        for c in out.drain(..) {
            got.extend_from_slice(&c.buffer.unwrap());
        }
    };
    assert_eq!((end.op, end.result, end.more), (OpKind::Recv, Ok(0), false), "{end:?}");
    assert_eq!(got, writer.join().unwrap());
    drop(server);
    common::assert_conserved(shard);
}

/// Some distribution kernels fail provided-buffer-ring registration with EINVAL: io_uring
/// stays, receives are lent frames by the driver (multishot re-armed per datagram, its
/// ENOBUFS end and cancel as the kernel's), and the loss is named.
#[test]
fn a_refused_buffer_ring_costs_only_the_buffer_ring() {
    refused(vec![register(reg::PBUF_RING, libc::EINVAL)], || {
        let mut shard = Shard::new(&uring(), None).unwrap();
        assert_eq!(shard.info().provider.transport, porto_engine::Transport::IoUring);
        assert_degraded(
            &shard,
            "provided-buffer ring",
            "IORING_REGISTER_PBUF_RING: Invalid argument",
        );
        udp_echo(&mut shard, &SocketOptions::default(), 100, 80);
        tcp_receive(&mut shard);
    });
}

/// No fixed buffers (a memlock limit, a filter): sends name plain memory, zero-copy sends
/// still go (SEND_ZC without a buffer index), RIO buffers are not registered.
#[test]
fn refused_fixed_buffers_send_from_plain_memory() {
    for op in [reg::BUFFERS2, reg::BUFFERS_UPDATE] {
        refused(vec![register(op, libc::ENOMEM)], || {
            let mut shard = Shard::new(&uring(), None).unwrap();
            assert!(!shard.info().registered_buffers);
            assert_degraded(&shard, "fixed buffers", "Cannot allocate memory");
            let sock = udp_echo(&mut shard, &SocketOptions::default(), 20, 10);
            let peer = StdUdp::bind("127.0.0.1:0").unwrap();
            peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let buf = shard.pool().alloc_from(b"zero-copy").unwrap();
            sock.send_to_zc(buf, peer.local_addr().unwrap(), 9).unwrap();
            let c = poll_one(&mut shard, "the zero-copy send");
            assert_eq!((c.token, c.result), (9, Ok(9)), "{c:?}");
            let mut b = [0u8; 16];
            assert_eq!(peer.recv(&mut b).unwrap(), 9);
        });
    }
}

#[test]
fn a_refused_file_table_goes_by_fd() {
    refused(vec![register(reg::FILES2, libc::EINVAL)], || {
        let mut shard = Shard::new(&uring(), None).unwrap();
        assert!(!shard.info().registered_files);
        assert_degraded(&shard, "registered files", "IORING_REGISTER_FILES2");
        udp_echo(&mut shard, &SocketOptions::default(), 10, 10);
        tcp_receive(&mut shard);
    });
}

/// One socket's file slot refused (IORING_REGISTER_FILES_UPDATE): that socket goes by fd,
/// counted (`sockets_by_fd`, in `porto stats`); the table stays for the others.
#[test]
fn a_refused_file_slot_sends_that_socket_by_fd() {
    refused(vec![register(reg::FILES_UPDATE, libc::EBADF)], || {
        let mut shard = Shard::new(&uring(), None).unwrap();
        assert!(shard.info().registered_files, "the table itself was given");
        udp_echo(&mut shard, &SocketOptions::default(), 10, 10);
        assert!(shard.stats().counters.snapshot().sockets_by_fd >= 1);
    });
}

/// porto registers no opcode probe at run time: refusing it changes nothing there, and
/// `porto doctor` says it was refused.
#[test]
fn a_refused_opcode_probe_is_named_by_the_doctor() {
    refused(vec![register(reg::PROBE, libc::EINVAL)], || {
        let rows = kernel::features();
        let row = rows.iter().find(|r| r.name == "IORING_REGISTER_PROBE").unwrap();
        assert_eq!(row.state, State::Refused, "{row:?}");
        assert!(row.detail.contains("Invalid argument"), "{row:?}");
        assert!(
            !rows.iter().any(|r| r.name.starts_with("op: ")),
            "no opcode rows without the probe"
        );
        let mut shard = Shard::new(&uring(), None).unwrap();
        assert!(shard.info().degraded.iter().all(|d| d.feature == "huge pages"));
        udp_echo(&mut shard, &SocketOptions::default(), 10, 10);
    });
}

/// A cpuset or a filter refuses the pin: the shard runs unpinned and says so (it used to
/// report the core it asked for).
#[test]
fn a_refused_pin_runs_unpinned_and_says_so() {
    refused(vec![Rule::syscall(nr::SCHED_SETAFFINITY, libc::EINVAL)], || {
        let shard = Shard::new(&uring(), Some(0)).unwrap();
        assert_eq!(shard.info().core, None);
        assert_degraded(&shard, "cpu pinning", "sched_setaffinity(core 0): Invalid argument");
        let row = kernel::features()
            .into_iter()
            .find(|r| r.name == "sched_setaffinity")
            .unwrap();
        assert_eq!(row.state, State::Refused);
    });
}

/// The statistics' memory refused (memfd_create: a profile, or no memory): the engine runs
/// without publishing for `porto stats`, and says so.
#[test]
fn refused_statistics_memory_costs_only_porto_stats() {
    refused(vec![Rule::syscall(nr::MEMFD_CREATE, libc::EPERM)], || {
        let mut shard = Shard::new(&uring(), None).unwrap();
        assert!(shard.stats_file().is_none());
        assert_degraded(&shard, "stats publishing", "memfd_create: Operation not permitted");
        udp_echo(&mut shard, &SocketOptions::default(), 10, 10);
    });
}

/// /dev/shm not writable (a read-only container root, a profile refusing file creation):
/// nothing is lost — the statistics are a memfd, which needs no directory.
#[test]
fn an_unwritable_dev_shm_costs_nothing() {
    refused(
        vec![Rule::syscall(nr::OPENAT, libc::EACCES).arg_bits(2, libc::O_CREAT as u32)],
        || {
            let mut shard = Shard::new(&uring(), None).unwrap();
            let path = shard.stats_file().expect("published without any file").to_path_buf();
            assert!(shard.info().degraded.is_empty(), "{}", shard.info());
            udp_echo(&mut shard, &SocketOptions::default(), 5, 0);
            assert!(porto_engine::telemetry::read(&path).is_ok());
        },
    );
}

/// Huge pages asked for and refused: the pool is on small pages, said. (This machine has
/// none reserved, so its kernel refuses them too: the filter makes the refusal certain.)
#[test]
fn refused_huge_pages_are_named() {
    refused(
        vec![Rule::syscall(nr::MMAP, libc::ENOMEM).arg_bits(3, libc::MAP_HUGETLB as u32)],
        || {
            let shard = Shard::new(
                &Config {
                    huge_pages: true,
                    ..uring()
                },
                None,
            )
            .unwrap();
            assert_degraded(&shard, "huge pages", "mmap(MAP_HUGETLB): Cannot allocate memory");
            let row = kernel::features()
                .into_iter()
                .find(|r| r.name.starts_with("huge pages"))
                .unwrap();
            assert_ne!(row.state, State::Present);
        },
    );
}

/// SO_TIMESTAMPING refused: receive stamps come from the shard's clock as it reads each
/// completion (after the send, before the application sees it), reported by the socket and
/// in `porto stats`; TX timestamps have no fallback and the error says so.
#[test]
fn refused_kernel_timestamps_are_taken_by_the_shard() {
    refused(
        vec![setsockopt(libc::SOL_SOCKET, libc::SO_TIMESTAMPING, libc::EPERM)],
        || {
            let mut shard = Shard::new(&uring(), None).unwrap();
            let h = shard.handle();
            let opts = SocketOptions {
                timestamps: true,
                ..SocketOptions::default()
            };
            let sock = UdpSocket::bind(&h, "127.0.0.1:0".parse().unwrap(), &opts, Delivery::Poll { key: 1 }).unwrap();
            assert_eq!(sock.stamping(), Stamping::Reap);
            sock.recv_from_multishot(1).unwrap();
            let client = StdUdp::bind("127.0.0.1:0").unwrap();
            let mut prev = 0;
            for _ in 0..20 {
                let sent = common::unix_ns();
                client.send_to(b"t", sock.local_addr().unwrap()).unwrap();
                let c = poll_one(&mut shard, "a stamped datagram");
                let after = common::unix_ns();
                let ts = c.timestamp_ns.expect("stamped by the shard").get();
                assert!(sent <= ts && ts <= after && ts >= prev, "{sent} <= {ts} <= {after}");
                prev = ts;
            }
            let path = shard.stats_file().expect("published").to_path_buf();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut out = Vec::new();
            let stamping = loop {
                shard.poll(&mut out, 8);
                let e = porto_engine::telemetry::read(&path).unwrap();
                if let Some(k) = e.shards[0].sockets.first() {
                    if k.receives >= 20 || Instant::now() > deadline {
                        break k.stamping;
                    }
                }
                assert!(Instant::now() < deadline, "published");
                std::thread::sleep(Duration::from_millis(20));
            };
            assert_eq!(stamping, Stamping::Reap, "porto stats names the source");
            let tx = SocketOptions {
                tx_timestamps: true,
                ..SocketOptions::default()
            };
            let e = UdpSocket::bind(&h, "127.0.0.1:0".parse().unwrap(), &tx, Delivery::Poll { key: 2 }).unwrap_err();
            assert!(
                e.to_string().contains("SO_TIMESTAMPING") && e.to_string().contains("Operation not permitted"),
                "{e}"
            );
        },
    );
    // Without the filter the kernel stamps, and says so.
    let mut shard = Shard::new(&uring(), None).unwrap();
    let opts = SocketOptions {
        timestamps: true,
        ..SocketOptions::default()
    };
    let sock = udp_echo(&mut shard, &opts, 3, 0);
    assert_eq!(sock.stamping(), Stamping::Kernel);
}

/// IP_TOS refused on an unconnected UDP socket: every datagram carries its mark as a control
/// message (the receiver sees the class's TOS); on a TCP stream there is no such path and
/// the refusal is the error. SO_PRIORITY refused: the mark stands, warned.
#[test]
fn a_refused_tos_option_marks_each_datagram() {
    let voice = TrafficType::Voice;
    refused(
        vec![
            setsockopt(libc::IPPROTO_IP, libc::IP_TOS, libc::EPERM),
            setsockopt(libc::SOL_SOCKET, libc::SO_PRIORITY, libc::EPERM),
        ],
        || {
            let mut shard = Shard::new(&uring(), None).unwrap();
            let h = shard.handle();
            let rx = UdpSocket::bind(
                &h,
                "127.0.0.1:0".parse().unwrap(),
                &SocketOptions {
                    recv_tos: true,
                    ..SocketOptions::default()
                },
                Delivery::Poll { key: 1 },
            )
            .unwrap();
            rx.recv_from_multishot(1).unwrap();
            let tx = UdpSocket::bind(
                &h,
                "127.0.0.1:0".parse().unwrap(),
                &SocketOptions::default(),
                Delivery::Poll { key: 2 },
            )
            .unwrap();
            tx.set_traffic(voice).unwrap();
            assert_eq!(tx.core().marking().unwrap(), (0, 0), "the kernel holds neither option");
            let to: SocketAddr = rx.local_addr().unwrap();
            let mut seen = 0;
            for i in 0..10u8 {
                tx.send_to(shard.pool().alloc_from(&[i]).unwrap(), to, 3).unwrap();
                let mut out = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(5);
                while seen <= usize::from(i) {
                    assert!(Instant::now() < deadline, "datagram {i}");
                    shard.poll(&mut out, 8);
                    for c in out.drain(..) {
                        if c.op == OpKind::RecvFrom {
                            assert_eq!(c.tos, Some(voice.tos()), "the mark travels by cmsg: {c:?}");
                            seen += 1;
                        } else {
                            assert_eq!(c.result, Ok(1), "{c:?}");
                        }
                    }
                }
            }
            let lst = TcpListener::bind(
                &h,
                "127.0.0.1:0".parse().unwrap(),
                8,
                &SocketOptions::default(),
                Delivery::Poll { key: 4 },
            )
            .unwrap();
            let stream = TcpStream::connect_blocking(
                &h,
                lst.local_addr().unwrap(),
                Some(Duration::from_secs(5)),
                Delivery::Poll { key: 5 },
            )
            .unwrap();
            assert!(stream.set_traffic(voice).is_err(), "no per-segment mark on a stream");
        },
    );
}

/// porto sets neither SO_ZEROCOPY (io_uring's SEND_ZC needs none) nor the busy-poll options:
/// refusing them changes nothing, and the doctor shows them refused.
#[test]
fn options_porto_does_not_set_can_be_refused() {
    refused(
        vec![
            setsockopt(libc::SOL_SOCKET, libc::SO_ZEROCOPY, libc::EPERM),
            setsockopt(libc::SOL_SOCKET, libc::SO_BUSY_POLL, libc::EPERM),
            setsockopt(libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, libc::EPERM),
        ],
        || {
            let rows = kernel::features();
            for name in ["SO_ZEROCOPY", "SO_BUSY_POLL", "SO_PREFER_BUSY_POLL"] {
                let row = rows.iter().find(|r| r.name == name).unwrap();
                assert_eq!(row.state, State::Refused, "{row:?}");
            }
            let mut shard = Shard::new(&uring(), None).unwrap();
            let sock = udp_echo(&mut shard, &SocketOptions::default(), 5, 0);
            let peer = StdUdp::bind("127.0.0.1:0").unwrap();
            let buf = shard.pool().alloc_from(b"zc").unwrap();
            sock.send_to_zc(buf, peer.local_addr().unwrap(), 9).unwrap();
            let c = poll_one(&mut shard, "the zero-copy send");
            assert_eq!((c.token, c.result), (9, Ok(2)), "{c:?}");
        },
    );
}

/// BPF refused (no CAP_BPF, a filter, unprivileged_bpf_disabled): the program does not load
/// and the error says why, with the privilege hint (which belongs to EPERM only).
#[test]
fn refused_bpf_names_the_privilege() {
    refused(vec![Rule::syscall(nr::BPF, libc::EPERM).arg(0, 5)], || {
        let e = XdpProgram::load().unwrap_err().to_string();
        assert!(e.contains("Operation not permitted") && e.contains("CAP_BPF"), "{e}");
        let row = kernel::features()
            .into_iter()
            .find(|r| r.name == "porto's XDP program (test load)")
            .unwrap();
        assert_eq!(row.state, State::Refused, "{row:?}");
    });
}

/// An AF_XDP socket on namespace B of a fresh veth pair, under `rules`; the datagram a peer
/// in A sends arrives through it when the bind succeeds. Returns the bind's outcome.
fn xdp_under(prefix: &str, rules: Vec<Rule>) -> Option<Result<String, String>> {
    use porto_engine::netns::Side;
    use porto_engine::socket::{XdpOptions, XdpUdpSocket};
    let t = common::topology(prefix, 1)?;
    let mut outcome = None;
    std::thread::scope(|s| {
        let t = &t;
        let outcome = &mut outcome;
        s.spawn(move || {
            t.enter(Side::B).unwrap();
            seccomp::refuse_in_this_thread(&rules);
            let mut shard = Shard::new(&common::xdp_config(), None).unwrap();
            let to = SocketAddr::from((t.addr(Side::B), 9000));
            let sock = match XdpUdpSocket::bind(
                &shard.handle(),
                to,
                &XdpOptions::new(t.iface(Side::B)),
                Delivery::Poll { key: 1 },
            ) {
                Ok(s) => s,
                Err(e) => {
                    *outcome = Some(Err(e.to_string()));
                    return;
                }
            };
            sock.recv_from_multishot(1).unwrap();
            let info = sock.info().to_string();
            std::thread::scope(|p| {
                p.spawn(|| {
                    t.enter(Side::A).unwrap();
                    let c = StdUdp::bind(SocketAddr::from((t.addr(Side::A), 0))).unwrap();
                    for _ in 0..50 {
                        c.send_to(b"xdp", to).unwrap();
                        std::thread::sleep(Duration::from_millis(20));
                    }
                });
                let c = poll_one(&mut shard, "a datagram through AF_XDP");
                assert_eq!((c.op, c.result), (OpKind::RecvFrom, Ok(3)), "{c:?}");
            });
            *outcome = Some(Ok(info));
        });
    });
    outcome
}

/// No AF_XDP in this kernel (or a profile refusing its sockets): the bind fails naming the
/// cause and the way out; the doctor says absent.
#[test]
fn refused_af_xdp_sockets_name_the_way_out() {
    let Some(r) = xdp_under(
        "porto-rx1",
        vec![Rule::syscall(nr::SOCKET, libc::EAFNOSUPPORT).arg(0, libc::AF_XDP as u32)],
    ) else {
        return;
    };
    let e = r.unwrap_err();
    assert!(
        e.contains("Address family not supported") && e.contains("kernel sockets"),
        "{e}"
    );
    refused(
        vec![Rule::syscall(nr::SOCKET, libc::EAFNOSUPPORT).arg(0, libc::AF_XDP as u32)],
        || {
            let row = kernel::features()
                .into_iter()
                .find(|r| r.name == "AF_XDP socket")
                .unwrap();
            assert_eq!(row.state, State::Absent, "{row:?}");
        },
    );
}

/// The UMEM refused (memlock, a filter): the bind fails naming what to raise.
#[test]
fn a_refused_umem_names_memlock() {
    const SOL_XDP: i32 = 283;
    let Some(r) = xdp_under("porto-rx2", vec![setsockopt(SOL_XDP, libc::XDP_UMEM_REG, libc::ENOMEM)]) else {
        return;
    };
    let e = r.unwrap_err();
    assert!(
        e.contains("Cannot allocate memory") && e.contains("XDP_UMEM_REG"),
        "{e}"
    );
}

/// bpf_link_create refused with EINVAL (kernels before 5.9): the program attaches through
/// netlink, the datagrams arrive through AF_XDP, and the socket's info says how it attached
/// — a netlink attachment outlives a killed process, which the report names. Unfiltered, it
/// attaches through a bpf_link and says nothing of netlink.
#[test]
fn a_refused_bpf_link_attaches_through_netlink_and_says_so() {
    const BPF_LINK_CREATE: u32 = 28;
    let Some(r) = xdp_under(
        "porto-rx3",
        vec![Rule::syscall(nr::BPF, libc::EINVAL).arg(0, BPF_LINK_CREATE)],
    ) else {
        return;
    };
    let info = r.unwrap();
    assert!(info.contains("attached through netlink"), "{info}");
    let info = xdp_under("porto-rx4", Vec::new()).unwrap().unwrap();
    assert!(!info.contains("netlink"), "{info}");
}
