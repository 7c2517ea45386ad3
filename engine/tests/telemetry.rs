//! An engine publishes its shards' statistics in a shared-memory file only its owner may
//! read, readable while it runs (`telemetry::read`, what `porto stats` uses), and removes it
//! when it stops.

use std::net::UdpSocket as StdUdp;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use porto_engine::config::Config;
use porto_engine::engine::Engine;
use porto_engine::port::CompletionPort;
use porto_engine::shard::Delivery;
use porto_engine::socket::{SocketOptions, UdpSocket};
use porto_engine::telemetry;

#[test]
fn an_engine_publishes_its_counters_and_removes_the_file_when_it_stops() {
    let cfg = Config {
        shards: 2,
        pin: false,
        huge_pages: false,
        frames_per_shard: 256,
        recv_frames: 64,
        stats_period_ms: 10,
        ..Config::default()
    };
    let engine = Engine::start(&cfg).unwrap();
    let path = engine.stats_file().expect("published by default").to_path_buf();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "owner only");
    assert!(telemetry::list().contains(&path));

    let port = CompletionPort::new(1, 256);
    let h = engine.shard(1);
    let sock = UdpSocket::bind(
        h,
        "127.0.0.1:0".parse().unwrap(),
        &SocketOptions::default(),
        Delivery::Port {
            port: port.clone(),
            key: 1,
        },
    )
    .unwrap();
    sock.recv_from_multishot(1).unwrap();
    let client = StdUdp::bind("127.0.0.1:0").unwrap();
    const N: u64 = 20;
    let mut got = Vec::new();
    for i in 0..N {
        client.send_to(&i.to_be_bytes(), sock.local_addr().unwrap()).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while (got.len() as u64) < N && Instant::now() < deadline {
        port.dequeue(&mut got, 64, Some(Duration::from_millis(10)));
    }
    assert_eq!(got.len() as u64, N);
    drop(got);

    // Within a few periods the reader sees shard 1's receives and both shards' provider.
    let deadline = Instant::now() + Duration::from_secs(5);
    let e = loop {
        let e = telemetry::read(&path).unwrap();
        if e.shards[1].get("receives") == Some(N) || Instant::now() > deadline {
            break e;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!((e.pid, e.stale, e.shards.len()), (std::process::id(), false, 2));
    assert_eq!(e.shards[1].get("receives"), Some(N), "{:?}", e.shards[1]);
    assert_eq!(e.shards[0].get("receives"), Some(0));
    for s in &e.shards {
        assert_eq!(s.provider, Some(engine.transport()));
    }
    assert!(e.shards[1].get("pool_free").is_some_and(|f| f > 0));

    drop(sock);
    drop(engine);
    assert!(!path.exists(), "the engine removes its file when it stops");
}

#[test]
fn publishing_can_be_turned_off() {
    let cfg = Config {
        pin: false,
        huge_pages: false,
        frames_per_shard: 256,
        recv_frames: 64,
        stats_publish: false,
        ..Config::default()
    };
    let engine = Engine::start(&cfg).unwrap();
    assert!(engine.stats_file().is_none());
}
