//! End-to-end: the `porto` binary as a user runs it, driven by the real `sockperf` client.
//!
//! sockperf comes from Debian's `sockperf` package (`scripts/test.sh` installs it). Without it
//! these tests say so and pass, unless `PORTO_REQUIRE_NETNS=1` (set by CI) demands every
//! environment-dependent test run.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

fn check_sockperf(args: &[&str], tcp: bool) {
    if !have_sockperf() {
        return;
    }
    let port = free_port();
    let server = start_echo(args, port);
    let text = sockperf_ping_pong(port, tcp);
    drop(server);
    assert!(!text.contains("ERROR"), "sockperf reported an error:\n{text}");
    assert_answered(&text, "");
}

#[test]
fn sockperf_udp_against_completion_port_mode() {
    check_sockperf(&["--udp"], false);
}

#[test]
fn sockperf_udp_against_polling_mode() {
    check_sockperf(&["--udp", "--poll"], false);
}

#[test]
fn sockperf_tcp_against_completion_port_mode() {
    check_sockperf(&["--tcp"], true);
}

#[test]
fn sockperf_tcp_against_polling_mode() {
    check_sockperf(&["--tcp", "--poll"], true);
}

#[test]
fn echo_on_a_port_in_use_fails_with_the_fix() {
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = porto()
        .args(["echo", "--udp", "--port", &port.to_string(), "--no-pin"])
        .output()
        .unwrap();
    assert_user_error(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port is in use"), "{err}");
}

#[test]
fn bad_arguments_fail_cleanly() {
    let out = porto().args(["echo", "--port", "70000"]).output().unwrap();
    assert_user_error(&out);
    let out = porto().args(["demo", "--size", "3"]).output().unwrap();
    assert_user_error(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("size"));
    // Durations that Duration::from_secs_f64 would panic on are refused by the parser.
    for bad in ["-1", "nan", "inf", "0", "1e300"] {
        for cmd in [
            &["echo", "--udp"][..],
            &["demo"],
            &["mcast", "sub", "--group", "239.1.1.1:5000"],
        ] {
            let out = porto().args(cmd).arg(format!("--seconds={bad}")).output().unwrap();
            assert_user_error(&out);
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("positive number"), "{cmd:?} {bad}: {err}");
        }
    }
}

#[test]
fn sigterm_stops_echo_cleanly() {
    let port = free_port();
    let mut server = porto()
        .args(["echo", "--udp", "--port", &port.to_string(), "--no-pin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "echo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let out = server.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("porto echo: stopped"));
}

/// `porto mcast sub` with 3 subscribers receives everything `porto mcast pub` sends, each
/// subscriber once, with no gaps (loopback multicast, 2000 msg/s for 1 s).
#[test]
fn mcast_pub_reaches_every_subscriber() {
    let group = format!("239.77.1.1:{}", free_port());
    let sub = porto()
        .args([
            "mcast",
            "sub",
            "--group",
            &group,
            "--subscribers",
            "3",
            "--seconds",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let publ = porto()
        .args(["mcast", "pub", "--group", &group, "--rate", "2000", "--seconds", "1"])
        .output()
        .unwrap();
    let pub_out = String::from_utf8_lossy(&publ.stdout);
    assert!(
        publ.status.success(),
        "{pub_out}{}",
        String::from_utf8_lossy(&publ.stderr)
    );
    let sent: u64 = pub_out
        .lines()
        .filter(|l| l.contains(" sent ("))
        .find_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse().ok())
        .expect("the publisher reports what it sent");
    let sub = sub.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&sub.stdout);
    assert!(sub.status.success(), "{out}{}", String::from_utf8_lossy(&sub.stderr));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|f| f.parse::<u32>().is_ok()) && w.len() == 9)
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    for r in rows {
        // delivered, dropped, gaps, late
        assert_eq!(
            (r[1].parse::<u64>().unwrap(), r[3], r[4], r[5]),
            (sent, "0", "0", "0"),
            "{out}"
        );
    }
    assert!(sent >= 1900, "{pub_out}");
    // The latency split from the kernel's receive stamps: the subscriber asked for them
    // 500 ms before the feed started, so (nearly) every delivery is stamped, and each
    // segment is a part of the whole.
    let stamped: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("latency split (")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("a latency split:\n{out}"));
    assert!(
        stamped >= 3 * sent * 9 / 10 && stamped <= 3 * sent,
        "{stamped} stamped:\n{out}"
    );
    let segment = |name: &str| -> Vec<f64> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name}:\n{out}"));
        line[line.find(name).unwrap() + name.len()..]
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect()
    };
    let (wire, app, total) = (
        segment("publisher -> kernel receive"),
        segment("kernel receive -> dequeue"),
        segment("publisher -> dequeue"),
    );
    for part in [&wire, &app] {
        assert_eq!(part.len(), 4, "{out}");
        assert!(part[0] > 0.0 && part[0] <= part[3], "{out}");
        assert!(part[0] <= total[3], "a part's median within the whole's max:\n{out}");
    }
}

#[test]
fn demo_prints_its_table() {
    let out = porto().args(["demo", "--seconds", "0.3"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("UDP ") || l.starts_with("TCP "))
        .collect();
    assert_eq!(rows.len(), 6, "three servers per protocol:\n{text}");
    for label in ["kernel sockets", "porto completion port", "porto polling mode"] {
        let row = rows.iter().filter(|r| r.contains(label)).count();
        assert_eq!(row, 2, "{label} once per protocol:\n{text}");
    }
    for r in &rows {
        let rate: f64 = r
            .split_whitespace()
            .find_map(|w| w.parse().ok())
            .expect("a message rate");
        assert!(rate > 0.0, "every server answered: {r}");
    }
    assert!(text.contains("p99.9"));
}

/// Runs `porto` as an unprivileged user (uid 65534) with a small RLIMIT_MEMLOCK, inside a
/// network namespace of its own where ports below 1024 are privileged (so the result does
/// not depend on this machine's `ip_unprivileged_port_start`). Needs root to drop privileges
/// (CI runs as root). The binary is copied to a directory that user can reach: the checkout
/// may sit under a 0700 directory (root's home, a `mktemp -d` folder).
fn porto_unprivileged(memlock_kib: u32, args: &str) -> Option<std::process::Output> {
    use std::os::unix::fs::PermissionsExt;
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        assert!(
            !strict(),
            "PORTO_REQUIRE_NETNS=1 but not root: cannot test unprivileged limits"
        );
        eprintln!("skipping: dropping privileges needs root");
        return None;
    }
    if !packages::require_packages(&["util-linux", "iproute2"], "setpriv, unshare and ip") {
        return None;
    }
    let dir = std::path::PathBuf::from(format!("/tmp/porto-unpriv-{}-{memlock_kib}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("porto");
    std::fs::copy(env!("CARGO_BIN_EXE_porto"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = format!(
        "ip link set lo up && echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
         sh -c 'ulimit -l {memlock_kib}; exec {} {args}'",
        bin.display()
    );
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .current_dir(&dir)
        .output()
        .expect("unshare (util-linux) runs");
    let _ = std::fs::remove_dir_all(&dir);
    Some(out)
}

/// io_uring pins the pool (registered buffers); too little memlock refuses that one feature:
/// the shard stays on io_uring without fixed buffers (sends name plain memory) and the loss
/// names the limit and its fix — under `io-uring` asked by name and under `auto` alike.
#[test]
fn memlock_too_low_costs_fixed_buffers_and_names_the_fix() {
    for provider in ["io-uring", "auto"] {
        let Some(out) = porto_unprivileged(1024, &format!("info --no-pin --provider {provider}")) else {
            return;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("provider: io_uring"), "{text}");
        let line = text
            .lines()
            .find(|l| l.starts_with("degraded: without fixed buffers"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            line.contains("RLIMIT_MEMLOCK is 1024 KiB") && line.contains("ulimit -l"),
            "{line}"
        );
    }
}

#[test]
fn privileged_port_names_the_fix() {
    // Enough memlock for a 256-frame pool: the failure must be the port, not the pool.
    let Some(out) = porto_unprivileged(8192, "echo --udp --port 80 --frames 256 --no-pin") else {
        return;
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_user_error(&out);
    assert!(err.contains("CAP_NET_BIND_SERVICE"), "{err}");
}

/// `porto echo --udp --xdp` inside namespace B of a fresh veth pair, answering
/// `sockperf ping-pong` run in namespace A.
fn xdp_echo_answers_sockperf(poll: bool, shards: u32) {
    if !have_sockperf() {
        return;
    }
    // Two queues a shard: each shard of `porto echo` takes its own.
    let Some(t) = topology(&format!("porto-c{shards}"), 2 * shards) else {
        return;
    };
    let ip_b = t.addr(porto::netns::Side::B).to_string();
    let mut echo = t.command(porto::netns::Side::B, env!("CARGO_BIN_EXE_porto"));
    echo.args([
        "echo",
        "--udp",
        "--xdp",
        t.iface(porto::netns::Side::B),
        "--addr",
        &ip_b,
        "--port",
        "9000",
    ]);
    echo.args([
        "--no-pin",
        "--seconds",
        "30",
        "--shards",
        &shards.to_string(),
        "--timestamps",
    ]);
    if poll {
        echo.arg("--poll");
    }
    let mut server = Server(echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let banner = server_banner(&mut server, shards as usize);
    // One AF_XDP socket per shard, each on its own queues of the interface.
    let xdp_lines: Vec<&String> = banner.iter().filter(|l| l.contains("AF_XDP on")).collect();
    assert_eq!(xdp_lines.len(), shards as usize, "{banner:?}");
    // Each says where its receive stamps come from: the source `porto doctor` finds this
    // kernel allows (the program's stamp needs bpf_xdp_adjust_meta).
    let doctor = porto().args(["doctor", "--no-pin", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&doctor.stdout).expect("JSON");
    let meta = v["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["feature"] == "XDP helper bpf_xdp_adjust_meta")
        .expect("the helper's row")["state"]
        .clone();
    let source = if meta == "present" {
        "receive stamps from the XDP program"
    } else {
        "receive stamps taken when the RX ring is read"
    };
    assert!(xdp_lines.iter().all(|l| l.contains(source)), "{source}: {xdp_lines:?}");
    let (ok, text) = sockperf_ping_pong_from_a(&t, &ip_b);
    drop(server);
    assert!(ok && !text.contains("ERROR"), "{text}");
    assert_answered(&text, "through AF_XDP");
}

#[test]
fn sockperf_udp_through_af_xdp_completion_port_mode() {
    xdp_echo_answers_sockperf(false, 1);
}

/// `porto echo --xdp IFACE --shards 2`: two shards share the interface's XDP program, each
/// with its own queues (it failed: the second shard could not attach its own program).
#[test]
fn sockperf_udp_through_af_xdp_on_two_shards() {
    xdp_echo_answers_sockperf(false, 2);
}

#[test]
fn sockperf_udp_through_af_xdp_polling_mode() {
    xdp_echo_answers_sockperf(true, 1);
}

#[test]
fn xdp_echo_answers_over_ipv6() {
    use porto::netns::Side;
    let Some(t) = topology("porto-e", 1) else {
        return;
    };
    let ip_b = t.addr6(Side::B);
    let mut echo = t.command(Side::B, env!("CARGO_BIN_EXE_porto"));
    echo.args(["echo", "--udp", "--xdp", t.iface(Side::B), "--addr", &ip_b.to_string()]);
    echo.args(["--port", "9000", "--no-pin", "--seconds", "30"]);
    let server = Server(echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let replies = std::thread::scope(|s| {
        s.spawn(|| {
            t.enter(Side::A).unwrap();
            let c = UdpSocket::bind((t.addr6(Side::A), 0)).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let mut replies = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut seq = 0u64;
            while replies.len() < 20 && Instant::now() < deadline {
                // seq, flags = client | pong requested, length = the whole 64-byte message.
                let mut m = [0u8; 64];
                m[..8].copy_from_slice(&seq.to_be_bytes());
                m[8..10].copy_from_slice(&3u16.to_be_bytes());
                m[10..14].copy_from_slice(&64u32.to_be_bytes());
                c.send_to(&m, (ip_b, 9000)).unwrap();
                let mut r = [0u8; 128];
                // The server may still be starting: an unanswered request is sent again.
                if let Ok((n, from)) = c.recv_from(&mut r) {
                    assert_eq!(from, std::net::SocketAddr::from((ip_b, 9000)));
                    replies.push((
                        n,
                        u64::from_be_bytes(r[..8].try_into().unwrap()),
                        u16::from_be_bytes([r[8], r[9]]),
                    ));
                    seq += 1;
                }
            }
            replies
        })
        .join()
        .unwrap()
    });
    drop(server);
    let want: Vec<(usize, u64, u16)> = (0..20).map(|i| (64, i, 2)).collect();
    assert_eq!(
        replies, want,
        "each request answered once, in order, client flag cleared"
    );
}

/// A user's veth keeps TX checksum offload on: `porto echo --xdp` then answers nothing, and
/// must say why when it stops — the drops by reason, with the fix.
#[test]
fn xdp_echo_names_the_checksum_offload_fix_when_it_stops() {
    use porto::netns::Side;
    let Some(t) = topology("porto-o", 1) else {
        return;
    };
    t.set_tx_offload(Side::A, true).unwrap();
    let ip_b = t.addr(Side::B);
    let mut echo = t.command(Side::B, env!("CARGO_BIN_EXE_porto"));
    echo.args(["echo", "--udp", "--xdp", t.iface(Side::B), "--addr", &ip_b.to_string()]);
    echo.args(["--port", "9000", "--no-pin", "--seconds", "4"]);
    let mut server = echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Send once the server says its AF_XDP socket is bound (a loaded machine can take a
    // while to attach the program), reading its stdout as it goes.
    let stdout = server.stdout.take().unwrap();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("AF_XDP on") {
                let _ = bound_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    bound_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server bound its AF_XDP socket");
    std::thread::scope(|s| {
        s.spawn(|| {
            t.enter(Side::A).unwrap();
            let c = UdpSocket::bind((t.addr(Side::A), 0)).unwrap();
            for i in 0..10u8 {
                c.send_to(&[i; 64], (ip_b, 9000)).unwrap();
            }
        });
    });
    let out = server.wait_with_output().unwrap();
    let text = reader.join().unwrap();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("0 requests"), "{text}");
    assert!(
        text.contains("AF_XDP dropped 10 frame(s): PartialUdpChecksum") && text.contains("ethtool -K"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ethtool -K"),
        "the warning names the fix at once, too"
    );
}

/// Where a seccomp filter refuses io_uring (Docker's default profile) and io_uring is asked
/// for by name, porto says so and how to fix it, and exits with an error: it does not crash,
/// hang or blame something else.
#[test]
fn io_uring_refused_by_seccomp_names_the_cause() {
    for args in [
        &["info", "--no-pin", "--provider", "io-uring"][..],
        &[
            "echo",
            "--udp",
            "--port",
            "0",
            "--no-pin",
            "--seconds",
            "1",
            "--provider",
            "io-uring",
        ],
    ] {
        let mut cmd = porto();
        cmd.args(args);
        let out = seccomp::refuse_io_uring(&mut cmd).output().unwrap();
        assert_user_error(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        eprintln!("porto {}: {}", args[0], err.trim());
        assert!(
            err.contains("io_uring_setup failed") && err.contains("seccomp") && err.contains("io_uring_enter"),
            "{args:?}: {err}"
        );
    }
}

/// The fallback as a container user meets it: with io_uring refused by a seccomp filter,
/// `porto info` (provider auto) reports epoll and why, `--provider epoll` asks for it by
/// name, and `porto echo` serves sockperf over epoll (UDP and TCP), printing the fallback.
#[test]
fn io_uring_refused_falls_back_to_epoll_and_says_why() {
    for provider in ["auto", "epoll"] {
        let mut cmd = porto();
        cmd.args(["info", "--no-pin", "--provider", provider]);
        let out = seccomp::refuse_io_uring(&mut cmd).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("provider: epoll"), "{provider}: {text}");
        if provider == "auto" {
            assert!(
                text.contains("fell back: io_uring_setup failed") && text.contains("seccomp"),
                "{text}"
            );
        } else {
            assert!(
                !text.contains("fell back"),
                "asked for by name, epoll is no fallback: {text}"
            );
        }
    }
    if !have_sockperf() {
        return;
    }
    for tcp in [false, true] {
        let port = free_port();
        let mut echo = porto();
        echo.args(["echo", if tcp { "--tcp" } else { "--udp" }, "--addr", "127.0.0.1"])
            .args([
                "--port",
                &port.to_string(),
                "--no-pin",
                "--seconds",
                "30",
                "--provider",
                "auto",
            ]);
        seccomp::refuse_io_uring(&mut echo);
        serve_says_and_answers(echo, port, tcp, "shard 0", |l| {
            l.contains("epoll (fell back from io_uring: io_uring_setup failed") && l.contains("seccomp")
        });
    }
}

/// `porto echo --xdp IFACE --fallback`: where AF_XDP cannot be had (here: no such interface)
/// it serves through kernel sockets and prints that rung and why; without `--fallback` the
/// same failure is an error naming the cause.
#[test]
fn xdp_fallback_serves_through_kernel_sockets_and_says_why() {
    let out = porto()
        .args([
            "echo",
            "--udp",
            "--xdp",
            "nosuch0",
            "--addr",
            "127.0.0.1",
            "--port",
            "0",
            "--no-pin",
        ])
        .args(["--seconds", "1"])
        .output()
        .unwrap();
    assert_user_error(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such interface"));
    if !have_sockperf() {
        return;
    }
    let port = free_port();
    let mut echo = porto();
    echo.args(["echo", "--udp", "--xdp", "nosuch0", "--fallback", "--addr", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--no-pin", "--seconds", "30"]);
    serve_says_and_answers(echo, port, false, "unavailable", |l| {
        l.contains("AF_XDP on nosuch0 unavailable") && l.contains("kernel sockets")
    });
}

/// `porto doctor` on this machine passes; each blocking condition it can be shown is forced
/// and named with its fix: io_uring refused by a seccomp filter, a memlock limit below the
/// pools (unprivileged), an interface that does not exist, fewer queues than shards, and a
/// veth (the checksum-offload trap).
#[test]
fn doctor_names_each_problem_and_its_fix() {
    let out = porto().args(["doctor", "--no-pin"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("io_uring") && text.contains("ok"), "{text}");
    assert!(
        text.contains("cpu placement    WARN  shard threads are not pinned"),
        "{text}"
    );
    assert!(text.contains("busy poll        ok    net.core.busy_poll"), "{text}");

    // A shard core that does not exist blocks; a pinned core that is not isolated is named
    // with the boot parameters that isolate it (no CI machine isolates its CPUs).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = porto()
        .args(["doctor", "--cores", &(cpus + 64).to_string()])
        .output()
        .unwrap();
    assert_user_error(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("cpu placement    FAIL") && text.contains("is not online"),
        "{text}"
    );
    let out = porto().args(["doctor", "--cores", "0"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    if isolated.trim().is_empty() {
        assert!(
            text.contains("cpu placement    WARN") && text.contains("isolcpus=") && text.contains("nohz_full="),
            "{text}"
        );
    }

    let mut cmd = porto();
    cmd.args(["doctor", "--no-pin", "--provider", "auto"]);
    let out = seccomp::refuse_io_uring(&mut cmd).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "auto runs on epoll: not blocking. {text}");
    assert!(
        text.contains("io_uring         WARN") && text.contains("seccomp") && text.contains("runs on epoll"),
        "{text}"
    );
    let mut cmd = porto();
    cmd.args(["doctor", "--no-pin", "--provider", "io-uring"]);
    let out = seccomp::refuse_io_uring(&mut cmd).output().unwrap();
    assert_user_error(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("io_uring         FAIL") && text.contains("seccomp"),
        "{text}"
    );

    // Too little memlock costs io_uring its fixed buffers (a warning), and AF_XDP its UMEM
    // (a failure when AF_XDP is asked for).
    if let Some(out) = porto_unprivileged(1024, "doctor --no-pin") {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("memlock          WARN")
                && text.contains("without fixed buffers")
                && text.contains("ulimit -l"),
            "{text}"
        );
    }
    if let Some(out) = porto_unprivileged(1024, "doctor --no-pin --xdp lo") {
        assert_user_error(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("memlock          FAIL") && text.contains("UMEM"),
            "{text}"
        );
    }
    if let Some(out) = porto_unprivileged(65536, "doctor --no-pin --xdp lo") {
        assert_user_error(&out);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("memlock          ok"), "{text}");
        assert!(
            text.contains("capabilities     FAIL") && text.contains("CAP_NET_ADMIN") && text.contains("setcap"),
            "{text}"
        );
    }

    let out = porto()
        .args(["doctor", "--no-pin", "--xdp", "nosuch0"])
        .output()
        .unwrap();
    assert_user_error(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no such interface"));
    // The same findings for scripts.
    let out = porto()
        .args(["doctor", "--no-pin", "--json", "--xdp", "nosuch0"])
        .output()
        .unwrap();
    assert_user_error(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON findings");
    let fail = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["level"] == "fail")
        .expect("a failed check");
    assert_eq!(fail["check"], "xdp interface");
    assert!(fail["fix"].as_str().is_some_and(|x| x.contains("ip link")));

    use porto::netns::Side;
    let Some(t) = topology("porto-d", 2) else {
        return;
    };
    let out = t
        .command(Side::B, env!("CARGO_BIN_EXE_porto"))
        .args(["doctor", "--no-pin", "--xdp", t.iface(Side::B), "--shards", "4"])
        .output()
        .unwrap();
    assert_user_error(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("xdp queues       FAIL") && text.contains("2 receive queue(s) for 4 shard(s)"),
        "{text}"
    );
    assert!(
        text.contains("veth checksums   WARN") && text.contains("ethtool -K"),
        "{text}"
    );
    // What the kernel's netdev family says of veth: native XDP, no zero-copy (copy mode).
    assert!(
        text.contains("xdp support      WARN")
            && text.contains("(driver veth): native XDP yes, redirect yes, AF_XDP zero-copy no"),
        "{text}"
    );
    assert!(text.contains("rx offloads      ok"), "{text}");
    assert!(text.contains("irq affinity     ok"), "{text}");
}

/// `porto stats` from another process: a running `porto echo` is listed live, its shard's
/// counters show the traffic sockperf sent (table, JSON, OpenMetrics); killed with SIGKILL it
/// leaves nothing (its statistics were a memfd). Files of earlier builds are looked for in a
/// directory of this test's own (`PORTO_STATS_DIR`), and `--clean` removes them.
#[test]
fn stats_reads_a_running_engine_from_another_process() {
    use std::io::{BufRead, Read, Write};
    let dir = std::env::temp_dir().join(format!("porto-stats-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let stats = |args: &[&str]| {
        let out = porto()
            .env("PORTO_STATS_DIR", &dir)
            .arg("stats")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let port = free_port();
    let mut echo = porto();
    echo.env("PORTO_STATS_DIR", &dir).args([
        "echo",
        "--udp",
        "--addr",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--no-pin",
        "--seconds",
        "60",
    ]);
    let mut server = Server(echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let pid = server.0.id().to_string();
    let banner = server_banner_until(&mut server, "statistics:");
    assert!(
        banner.iter().any(|l| l.contains(&format!("porto stats {pid}"))),
        "the banner says where to look: {banner:?}"
    );
    let sent = if have_sockperf() {
        received_messages(&sockperf_ping_pong(port, false))
    } else {
        let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for _ in 0..100 {
            c.send_to(&[0u8; 16], ("127.0.0.1", port)).unwrap();
            let _ = c.recv(&mut [0u8; 64]);
        }
        100
    };
    assert!(sent > 0);
    // At most one publication period later (100 ms; waited for up to 10 s on a loaded
    // machine), the counters are there.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, json, _) = stats(&[&pid, "--json"]);
        let published = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v[0]["shards"][0]["counters"]["receives"].as_u64())
            .unwrap_or(0);
        if published >= sent.min(100) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, list, err) = stats(&[]);
    assert!(ok, "{err}");
    assert!(list.lines().any(|l| l.contains(&pid) && l.contains("live")), "{list}");

    let (ok, text, err) = stats(&[&pid]);
    assert!(ok, "{err}");
    assert!(
        text.contains("shard 0") && text.contains("receives") && text.contains("p99 µs"),
        "{text}"
    );

    let (ok, json, err) = stats(&[&pid, "--json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let shard = &v[0]["shards"][0];
    let receives = shard["counters"]["receives"].as_u64().unwrap();
    assert!(
        receives >= sent.min(100),
        "{receives} receives published for {sent} requests: {json}"
    );
    assert!(
        shard["provider"]
            .as_str()
            .is_some_and(|p| p == "io_uring" || p == "epoll"),
        "{json}"
    );
    assert!(shard["latency_ns"]["count"].as_u64().unwrap() > 0, "{json}");

    let (ok, watch, err) = stats(&[&pid, "--watch", "0.2", "--count", "2"]);
    assert!(ok, "{err}");
    assert!(watch.contains("/s"), "rates in watch mode: {watch}");

    // OpenMetrics, served by `porto stats` itself on a loopback port it picks.
    let mut prom = porto();
    prom.env("PORTO_STATS_DIR", &dir)
        .args(["stats", "--prometheus", "127.0.0.1:0"]);
    let mut prom = Server(prom.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let first = std::io::BufReader::new(prom.0.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let addr = first
        .split("http://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let mut c = std::net::TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    assert!(
        body.starts_with("HTTP/1.1 200") && body.contains("openmetrics-text"),
        "{body}"
    );
    assert!(body.contains("# TYPE porto_receives counter"), "{body}");
    assert!(body.contains(&format!("porto_receives_total{{pid=\"{pid}\"")), "{body}");
    assert!(
        body.contains("porto_op_latency_seconds{") && body.trim_end().ends_with("# EOF"),
        "{body}"
    );
    drop(prom);

    // SIGKILL leaves nothing: the engine's statistics were a memfd, gone with the process.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let (ok, list, _) = stats(&[]);
    assert!(ok && !list.lines().any(|l| l.contains(&pid)), "{list}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing in the stats directory"
    );
    // A file an earlier build left (a format this one cannot read) whose process is gone:
    // named, and removed by --clean.
    std::fs::write(dir.join("porto.4194000.0"), [0u8; 512]).unwrap();
    let (ok, list, _) = stats(&[]);
    assert!(ok && list.contains("1 stale file(s) of another porto build"), "{list}");
    assert!(list.contains("--clean"), "the fix is named: {list}");
    let (ok, cleaned, _) = stats(&["--clean"]);
    assert!(ok && cleaned.contains("1 stale file(s) removed"), "{cleaned}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that answered less than it was sent says why when it stops: a datagram larger
/// than a frame is reported as `recv_truncated` with the fix.
#[test]
fn echo_reports_its_drops_by_reason_when_it_stops() {
    let port = free_port();
    let mut echo = porto();
    echo.args([
        "echo",
        "--udp",
        "--addr",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--no-pin",
    ])
    .args(["--seconds", "2", "--frame-size", "512"]);
    let mut server = Server(echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let rx = stdout_lines(&mut server);
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the banner");
    assert!(first.contains("porto echo"), "{first}");
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.send_to(&[7u8; 1000], ("127.0.0.1", port)).unwrap();
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(l);
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("recv_truncated: 1") && l.contains("--frame-size")),
        "{lines:?}"
    );
}

/// `porto serve kernel` reports at stop what it did and what the kernel dropped for its
/// socket: stopped (SIGSTOP) while a burst arrives, its receive buffer overflows, and the
/// report names the kernel's drop count (from /proc/net/udp) with the fix; datagrams that are
/// not sockperf requests are counted as ignored.
#[test]
fn serve_kernel_reports_what_it_did_and_the_kernels_drops() {
    let port = free_port();
    let mut serve = porto();
    serve.args([
        "serve",
        "kernel",
        "--udp",
        "--addr",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    let mut server = Server(serve.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let rx = stdout_lines(&mut server);
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the banner");
    assert!(first.contains("porto serve kernel"), "{first}");
    let pid = server.0.id().to_string();
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        c.send_to(b"not sockperf", ("127.0.0.1", port)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    // Far more than a default receive buffer holds (each small datagram costs ~1 KiB of it).
    for _ in 0..5000 {
        let _ = c.send_to(&[0u8; 64], ("127.0.0.1", port));
    }
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let mut lines = Vec::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(10)) {
        lines.push(l);
    }
    let stopped = lines
        .iter()
        .find(|l| l.contains("porto serve kernel: stopped;"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    let requests: u64 = stopped
        .split("stopped; ")
        .nth(1)
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{stopped}"));
    assert!(
        stopped.contains(&format!("{requests} ignored")),
        "none was a request: {stopped}"
    );
    let drops: u64 = lines
        .iter()
        .find_map(|l| l.split("the kernel dropped ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the kernel's drops are reported: {lines:?}"));
    assert_eq!(
        requests + drops,
        5003,
        "every datagram was read or counted as dropped: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("SO_RCVBUF")),
        "the fix is named: {lines:?}"
    );
}
