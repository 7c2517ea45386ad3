//! Provider selection: what was asked for is what is obtained, and where io_uring is refused
//! (a seccomp filter, as Docker's default profile installs) `Auto` runs on epoll and says
//! why, while `IoUring` fails naming the cause and its fix.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use porto_engine::config::Config;
use porto_engine::engine::Transport;
use porto_engine::error::SetupError;
use porto_engine::shard::{Delivery, Shard};
use porto_engine::socket::{SocketOptions, UdpSocket};
use porto_engine::Provider;

#[path = "common/seccomp.rs"]
mod seccomp;

fn small(provider: Provider) -> Config {
    Config {
        frames_per_shard: 256,
        recv_frames: 64,
        ops_max: 64,
        sockets_max: 8,
        pin: false,
        huge_pages: false,
        provider,
        ..Config::default()
    }
}

/// One datagram in through a multishot receive and back out through a send of the same
/// frame, on `shard`.
fn echo_once(shard: &mut Shard) {
    let h = shard.handle();
    let sock = UdpSocket::bind(
        &h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions::default(),
        Delivery::Poll { key: 1 },
    )
    .unwrap();
    assert_eq!(sock.core().transport(), shard.info().provider.transport);
    sock.recv_from_multishot(1).unwrap();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    client.send_to(b"ping", sock.local_addr().unwrap()).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() && Instant::now() < deadline {
        shard.poll_until(&mut out, 1, Duration::from_millis(10));
    }
    let c = out.pop().expect("the datagram");
    assert_eq!(c.result, Ok(4));
    let peer: SocketAddr = c.peer.unwrap();
    sock.send_to(c.buffer.unwrap(), peer, 2).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while out.is_empty() && Instant::now() < deadline {
        shard.poll_until(&mut out, 1, Duration::from_millis(10));
    }
    let sent = out.pop().expect("the send's completion");
    assert_eq!((sent.token, sent.result), (2, Ok(4)));
    let mut back = [0u8; 8];
    let (n, _) = client.recv_from(&mut back).unwrap();
    assert_eq!(&back[..n], b"ping");
}

#[test]
fn the_provider_asked_for_by_name_is_the_one_obtained() {
    for (provider, want) in [
        (Provider::IoUring, Transport::IoUring),
        (Provider::Epoll, Transport::Epoll),
    ] {
        let mut shard = Shard::new(&small(provider), None).unwrap();
        let info = shard.info().clone();
        assert_eq!(info.provider.transport, want, "{provider}");
        assert!(info.provider.fallback.is_none(), "{provider}: {info}");
        assert_eq!(info.provider.ring.is_some(), want == Transport::IoUring);
        assert_eq!(info.registered_buffers, want == Transport::IoUring);
        echo_once(&mut shard);
    }
}

#[test]
fn an_engine_reports_its_shards_provider() {
    for (provider, want) in [
        (Provider::IoUring, Transport::IoUring),
        (Provider::Epoll, Transport::Epoll),
    ] {
        let engine = porto_engine::engine::Engine::start(&Config {
            shards: 2,
            ..small(provider)
        })
        .unwrap();
        assert_eq!(engine.transport(), want);
        for h in engine.shards() {
            assert_eq!(h.info().unwrap().provider.transport, want);
        }
    }
}

#[test]
fn refused_io_uring_falls_back_to_epoll_under_auto_and_fails_by_name() {
    // The filter is installed on a thread of this test's own (it cannot be removed), and is
    // inherited by the shard threads an engine started there spawns.
    std::thread::spawn(|| {
        seccomp::refuse_io_uring_in_this_thread();

        let mut shard = Shard::new(&small(Provider::Auto), None).unwrap();
        let info = shard.info().clone();
        assert_eq!(info.provider.transport, Transport::Epoll);
        let why = info.provider.fallback.clone().expect("the reason it fell back");
        assert!(
            why.contains("io_uring_setup failed") && why.contains("seccomp"),
            "{why}"
        );
        assert!(info.to_string().contains("fell back from io_uring"), "{info}");
        echo_once(&mut shard);
        drop(shard);

        let engine = porto_engine::engine::Engine::start(&Config {
            shards: 2,
            ..small(Provider::Auto)
        })
        .unwrap();
        assert_eq!(engine.transport(), Transport::Epoll);

        match Shard::new(&small(Provider::IoUring), None) {
            Err(e @ SetupError::Ring { .. }) => {
                let text = e.to_string();
                assert!(text.contains("seccomp") && text.contains("io_uring_setup"), "{text}");
            }
            Err(e) => panic!("io_uring refused must be named: {e}"),
            Ok(_) => panic!("io_uring asked for by name under a filter refusing it"),
        }
    })
    .join()
    .unwrap();
}

#[test]
fn an_unknown_provider_name_lists_the_known_ones() {
    let e = "io-urinq".parse::<Provider>().unwrap_err();
    assert!(
        e.contains("auto") && e.contains("io-uring") && e.contains("epoll"),
        "{e}"
    );
    for (s, p) in [
        ("auto", Provider::Auto),
        ("io_uring", Provider::IoUring),
        ("EPOLL", Provider::Epoll),
    ] {
        assert_eq!(s.parse::<Provider>().unwrap(), p);
    }
}
