//! An engine publishes its shards' statistics in shared memory only its owner may read
//! (a memfd, found through `/proc`), readable while it runs (`telemetry::read`, what
//! `porto stats` uses), and gone with the engine — or with the process, however it ends.

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
fn an_engine_publishes_its_counters_and_its_segment_goes_when_it_stops() {
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
    for (i, s) in e.shards.iter().enumerate() {
        assert_eq!(s.provider, Some(engine.transport()));
        let mode = engine
            .shard(i)
            .info()
            .and_then(|inf| inf.provider.ring.as_ref().map(|r| r.task_run));
        assert_eq!(s.task_run, mode, "the io_uring set-up mode (None under epoll)");
    }
    assert!(e.shards[1].get("pool_free").is_some_and(|f| f > 0));

    drop(sock);
    drop(engine);
    assert!(!telemetry::list().contains(&path), "the segment goes with the engine");
}

/// A process that ends without stopping its engine — returning from main, `exit()`, a
/// signal, SIGKILL — leaves nothing in /dev/shm or anywhere else: its segment was a memfd.
/// (Every C program that returns from `main` without `WSACleanup` used to leave a file.)
#[test]
fn nothing_is_left_behind_however_the_process_ends() {
    if std::env::var_os("PORTO_TELEMETRY_CHILD").is_some() {
        let engine = Engine::start(&Config {
            pin: false,
            huge_pages: false,
            frames_per_shard: 256,
            recv_frames: 64,
            ..Config::default()
        })
        .unwrap();
        println!("published {}", engine.stats_file().unwrap().display());
        match std::env::var("PORTO_TELEMETRY_CHILD").unwrap().as_str() {
            "exit" => std::process::exit(0),
            _ => loop {
                std::thread::sleep(Duration::from_secs(1));
            },
        }
    }
    let before: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for how in ["exit", "SIGTERM", "SIGKILL"] {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "nothing_is_left_behind_however_the_process_ends",
                "--exact",
                "--nocapture",
            ])
            .env("PORTO_TELEMETRY_CHILD", how)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        while !line.starts_with("published") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "{how}: the child published");
        }
        let listed = |pid: u32| {
            telemetry::list()
                .iter()
                .filter_map(|p| telemetry::read(p).ok())
                .any(|e| e.pid == pid)
        };
        if how != "exit" {
            assert!(listed(pid), "{how}: the live engine is listed");
            let sig = if how == "SIGTERM" { libc::SIGTERM } else { libc::SIGKILL };
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid as i32, sig) };
        }
        child.wait().unwrap();
        assert!(!listed(pid), "{how}: nothing of the engine outlives its process");
    }
    let after: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !before.contains(n))
        .collect();
    assert!(after.is_empty(), "left in /dev/shm: {after:?}");
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

/// Reads the segment until `done` holds for it (or 5 s pass): publications are periodic.
fn read_until(path: &std::path::Path, done: impl Fn(&telemetry::EngineStats) -> bool) -> telemetry::EngineStats {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let e = telemetry::read(path).unwrap();
        if done(&e) || Instant::now() > deadline {
            return e;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Each open socket is a record — kind, transport, addresses, its own receives and sends;
/// its QoS flow and class queue; its fan-out group and each subscriber's delivered count
/// and queue depth — and a closed socket's record goes away.
#[test]
fn sockets_flows_classes_and_subscribers_are_published() {
    use porto_engine::fanout::Policy;
    use porto_engine::qos::TrafficType;
    use porto_engine::rio::RioNotify;
    use porto_engine::socket::{TcpListener, TcpStream};
    use porto_engine::telemetry::SocketKind;
    let cfg = Config {
        pin: false,
        huge_pages: false,
        frames_per_shard: 512,
        recv_frames: 128,
        stats_period_ms: 10,
        ..Config::default()
    };
    let engine = Engine::start(&cfg).unwrap();
    let path = engine.stats_file().unwrap().to_path_buf();
    let h = engine.shard(0);
    let port = CompletionPort::new(1, 1024);
    let delivery = |key| Delivery::Port {
        port: port.clone(),
        key,
    };
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    // A receiver, a sender on a QoS flow, a fan-out group with two subscribers, a listener
    // and a connected stream.
    let rx = UdpSocket::bind(h, any, &SocketOptions::default(), delivery(1)).unwrap();
    rx.recv_from_multishot(1).unwrap();
    let tx = UdpSocket::bind(h, any, &SocketOptions::default(), delivery(2)).unwrap();
    let flow = h.create_flow(TrafficType::AudioVideo, None).unwrap();
    tx.set_flow(&flow).unwrap();
    let fan_sock = UdpSocket::bind(h, any, &SocketOptions::default(), delivery(3)).unwrap();
    let fan = fan_sock.fan_out(1).unwrap();
    let subs: Vec<_> = (0..2)
        .map(|_| fan.subscribe(Policy::Lossy, 64, RioNotify::None).unwrap())
        .collect();
    let listener = TcpListener::bind(h, any, 16, &SocketOptions::default(), delivery(4)).unwrap();
    let std_listener = std::net::TcpListener::bind(any).unwrap();
    let stream = TcpStream::connect_blocking(h, std_listener.local_addr().unwrap(), None, delivery(5)).unwrap();

    const N: u64 = 7;
    const M: u64 = 5;
    const F: u64 = 3;
    let client = StdUdp::bind(any).unwrap();
    for i in 0..N {
        client.send_to(&[i as u8; 10], rx.local_addr().unwrap()).unwrap();
    }
    for i in 0..F {
        client.send_to(&[i as u8; 4], fan_sock.local_addr().unwrap()).unwrap();
    }
    for i in 0..M {
        tx.send_to(h.pool().alloc_from(&[1; 100]).unwrap(), client.local_addr().unwrap(), i)
            .unwrap();
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while (got.len() as u64) < N + M && Instant::now() < deadline {
        port.dequeue(&mut got, 64, Some(Duration::from_millis(10)));
    }
    assert_eq!(got.len() as u64, N + M);
    drop(got);

    let ids = |k: &telemetry::SocketStats| k.local;
    let e = read_until(&path, |e| {
        let s = &e.shards[0];
        s.sockets.len() == 5
            && s.sockets.iter().map(|k| k.receives + k.sends).sum::<u64>() == N + M + F
            && s.subscribers.iter().map(|u| u.delivered).sum::<u64>() == 2 * F
    });
    let s = &e.shards[0];
    let find = |a: std::net::SocketAddr| {
        *s.sockets
            .iter()
            .find(|k| ids(k) == Some(a))
            .unwrap_or_else(|| panic!("{a} in {:#?}", s.sockets))
    };
    let r = find(rx.local_addr().unwrap());
    assert_eq!(
        (r.kind, r.receives, r.recv_bytes, r.sends),
        (SocketKind::Udp, N, 10 * N, 0)
    );
    assert_eq!(r.transport, Some(engine.transport()));
    let t = find(tx.local_addr().unwrap());
    assert_eq!(
        (t.sends, t.send_bytes, t.class),
        (M, 100 * M, Some(TrafficType::AudioVideo))
    );
    let (_, fc) = t.flow.expect("its flow");
    assert_eq!(fc.sent, M);
    let class = s.classes.iter().find(|c| c.class == TrafficType::AudioVideo).unwrap();
    assert_eq!((class.sent, class.queued, class.dropped), (M, 0, 0));
    let f = find(fan_sock.local_addr().unwrap());
    let g = f.fanout.expect("its group");
    assert_eq!((g.received, g.subscribers, f.receives), (F, 2, F));
    assert_eq!(s.subscribers.len(), 2);
    for u in &s.subscribers {
        assert_eq!(
            (u.socket, u.delivered, u.dropped, u.depth),
            (f.id, F, 0, F),
            "not consumed yet"
        );
    }
    let l = find(listener.local_addr().unwrap());
    assert_eq!((l.kind, l.peer), (SocketKind::TcpListener, None));
    let c = find(stream.core().local_addr().unwrap());
    assert_eq!(
        (c.kind, c.peer),
        (SocketKind::TcpStream, Some(std_listener.local_addr().unwrap()))
    );

    // Closing a socket removes its record.
    drop(stream);
    let e = read_until(&path, |e| e.shards[0].sockets.len() == 4);
    assert_eq!(e.shards[0].sockets.len(), 4, "{:#?}", e.shards[0].sockets);
    drop(subs);
}
