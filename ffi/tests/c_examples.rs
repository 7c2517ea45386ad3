//! The C examples, built with the system C and C++ compilers against `include/porto.h` and
//! the static library (warnings as errors, AddressSanitizer and UBSan on), then run:
//! `boundary_check.cpp` checks the boundary from C++; `iocp_udp_echo.c` and `rio_udp_echo.c`
//! answer sockperf over IPv4 and IPv6 and, closed, see each posted receive complete once,
//! aborted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>` of this test binary (…/deps/c_examples-<hash>).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds `libporto_c.a` (cargo test builds the crate only as an rlib) and returns its path.
fn static_lib() -> PathBuf {
    let profile = target_dir();
    let release = profile.file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.args(["build", "-q", "-p", "porto-ffi", "--lib"]).current_dir(root());
    if release {
        c.arg("--release");
    }
    let st = c.status().expect("cargo runs");
    assert!(st.success(), "building porto-ffi's static library failed");
    let lib = profile.join("libporto_c.a");
    assert!(lib.exists(), "{} missing", lib.display());
    lib
}

/// Compiles `src` with `compiler` into the test's temp dir; returns the executable.
fn compile(compiler: &str, src: &str, extra: &[&str]) -> PathBuf {
    for pkg in ["gcc", "g++"] {
        let listed = std::fs::read_to_string(root().join("scripts/test-packages.txt"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(pkg));
        assert!(
            listed,
            "{pkg} must be in scripts/test-packages.txt (CI installs from it)"
        );
    }
    let lib = static_lib();
    let out = std::env::temp_dir().join(format!(
        "porto-c-{}-{}",
        Path::new(src).file_stem().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let o = Command::new(compiler)
        .args([
            "-g",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
        ])
        .args(extra)
        .arg("-I")
        .arg(root().join("include"))
        .arg(root().join(src))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(
        o.status.success(),
        "{compiler} {src} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn the_boundary_from_cpp() {
    let exe = compile("c++", "examples/c/boundary_check.cpp", &["-std=c++17"]);
    let o = Command::new(&exe)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .output()
        .unwrap();
    let text = output_text(&o);
    assert!(o.status.success() && text.contains("all checks passed"), "{text}");
    let _ = std::fs::remove_file(exe);
}

/// Windows behaviour real servers rely on (`ffi/tests/c/windows_semantics.cpp`):
/// `HasOverlappedIoCompleted` false while pending, `CloseHandle` ending every
/// `GetQueuedCompletionStatus(INFINITE)` with `ERROR_ABANDONED_WAIT_0` (it used to hang),
/// and the library's thread not inheriting the caller's CPU pin.
#[test]
fn windows_semantics_servers_rely_on() {
    let exe = compile("c++", "ffi/tests/c/windows_semantics.cpp", &["-std=c++17"]);
    let o = Command::new(&exe)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .output()
        .unwrap();
    let text = output_text(&o);
    assert!(o.status.success() && text.contains("all checks passed"), "{text}");
    let _ = std::fs::remove_file(exe);
}

/// A Windows program ported by one include: `ffi/tests/c/win_iocp_echo.cpp` is an IOCP echo
/// server in the shape of Microsoft's iocpserverex sample, written with Windows' names only
/// (WSAStartup, WSASocket, AcceptEx through WSAIoctl, `CreateIoCompletionPort((HANDLE)s, …)`,
/// GetQueuedCompletionStatus, WSARecv/WSASend echoing what arrived as it arrived,
/// `CloseHandle(port)` to stop), compiled against `include/porto_winsock.h` in place of
/// `<winsock2.h>`. It echoes 4000-byte messages at loopback speed — before porto's WSARecv
/// filled its buffer, such a server answered in two sends that met Nagle and delayed ACKs:
/// 47 round trips in 2 s — stops when its port is closed, and, returning from main without
/// WSACleanup as most Windows servers do, leaves nothing in /dev/shm.
#[test]
fn a_windows_iocp_server_ports_by_one_include() {
    use std::io::{BufRead, Read, Write};
    let exe = compile("c++", "ffi/tests/c/win_iocp_echo.cpp", &["-std=c++17"]);
    let shm_before: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let port = free_port();
    let mut server = Command::new(&exe)
        .args([port.to_string().as_str(), "3"])
        // A Windows server frees nothing at exit; LeakSanitizer would call that a failure.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening"), "{line}");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msg: Vec<u8> = (0..4000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut back = vec![0u8; msg.len()];
    let (start, mut rounds) = (Instant::now(), 0u32);
    while start.elapsed() < Duration::from_secs(1) {
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
        rounds += 1;
    }
    drop(c);
    let st = server.wait().unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(st.success(), "{rest}{err}");
    assert!(rest.contains("stopped after 1 connection"), "{rest}{err}");
    eprintln!("4000-byte round trips in 1 s through the ported server: {rounds}");
    assert!(rounds >= 200, "{rounds} round trips in 1 s: the Nagle cliff is back?");
    let left: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !shm_before.contains(n))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    let _ = std::fs::remove_file(exe);
}

/// A Registered I/O program ported by one include: `ffi/tests/c/win_rio_udp.cpp` calls RIO
/// through its function table as Windows programs must (`rio.RIOReceive(...)`; the rename
/// header once defined `RIOReceive` as a macro and broke every such call), with C++20
/// designated initializers for `RIO_BUF` and `RIO_NOTIFICATION_COMPLETION`, event
/// notification with NotifyReset, RIOSendEx with the destination in a registered buffer and a
/// polled send queue; every datagram arrives once and intact. `RIO_NOTIFICATION_COMPLETION`
/// has Windows' anonymous union (it was a struct of both members, and a designated
/// initializer naming one warned about the other).
#[test]
fn a_windows_rio_program_ports_by_one_include() {
    let exe = compile("c++", "ffi/tests/c/win_rio_udp.cpp", &["-std=c++20"]);
    let o = Command::new(&exe)
        .env("ASAN_OPTIONS", "detect_leaks=1")
        .output()
        .unwrap();
    let text = output_text(&o);
    assert!(
        o.status.success() && text.contains("rio-udp ok: 1600 datagrams"),
        "{text}"
    );
    let _ = std::fs::remove_file(exe);
}

/// A finished process's stdout and stderr.
fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn free_port() -> u16 {
    loop {
        let p = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if std::net::UdpSocket::bind(("::1", p)).is_ok() {
            return p;
        }
    }
}

fn have_sockperf() -> bool {
    let ok = Command::new("sockperf").arg("--version").output().is_ok();
    assert!(
        ok || std::env::var_os("PORTO_REQUIRE_NETNS").is_none(),
        "sockperf is required in CI (scripts/test-packages.txt)"
    );
    ok
}

#[test]
fn the_iocp_echo_in_c_answers_sockperf_and_ends_each_receive_once() {
    let exe = compile(
        "cc",
        "examples/c/iocp_udp_echo.c",
        &["-std=c11", "-D_POSIX_C_SOURCE=200809L"],
    );
    for stopped in echo_answers(&exe, false) {
        // The 64 receives it keeps posted end aborted when it closes its socket, each once.
        assert!(stopped.contains("64 receives aborted at close"), "{stopped}");
    }
    let _ = std::fs::remove_file(exe);
}

/// The IOCP TCP echo (listen, AcceptEx with its first receive, GetAcceptExSockaddrs,
/// WSARecv/WSASend, DisconnectEx(TF_REUSE_SOCKET) and the socket accepted into again):
/// answers `sockperf --tcp` over IPv4 and a client of its protocol over IPv6 (two
/// connections, the second on a reused socket); closed, each accept it keeps posted ends
/// aborted once.
#[test]
fn the_tcp_iocp_echo_in_c_answers_sockperf_and_reuses_sockets() {
    let exe = compile(
        "cc",
        "examples/c/iocp_tcp_echo.c",
        &["-std=c11", "-D_POSIX_C_SOURCE=200809L"],
    );
    let (mut connections, mut reused) = (0, 0);
    for stopped in echo_answers(&exe, true) {
        let count = |what: &str| -> u64 {
            stopped
                .split(what)
                .next()
                .and_then(|h| h.rsplit(|c: char| !c.is_ascii_digit()).find(|w| !w.is_empty()))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {what:?} in {stopped}"))
        };
        connections += count(" connections");
        reused += count(" sockets reused");
        // 8 accepts kept posted, one more for each reuse that has not connected again.
        assert!(count(" accepts aborted at close") >= 8, "{stopped}");
        assert_eq!(count(" requests"), count(" replies"), "{stopped}");
    }
    assert!(connections >= 3, "sockperf's, then two over IPv6: {connections}");
    // At least the first IPv6 connection's socket, disconnected while the second waited.
    assert!(reused >= 1, "a DisconnectEx'd socket accepted again");
    let _ = std::fs::remove_file(exe);
}

/// The RIO echo (function table from WSAIoctl, its own memory registered, IOCP-notified
/// completion queue, RIOReceiveEx/RIOSendEx): answers sockperf over IPv4 and a client of
/// sockperf's protocol over IPv6; at close its 64 posted receives end aborted, each once.
#[test]
fn the_rio_echo_in_c_answers_sockperf_and_ends_each_request_once() {
    let exe = compile(
        "cc",
        "examples/c/rio_udp_echo.c",
        &["-std=c11", "-D_POSIX_C_SOURCE=200809L"],
    );
    for stopped in echo_answers(&exe, false) {
        // One request per slot outstanding at close, each ending once: a receive aborted, or
        // a reply sent.
        assert!(stopped.contains(" 64 requests ended at close"), "{stopped}");
    }
    let _ = std::fs::remove_file(exe);
}

/// A client of sockperf's protocol: `n` messages of 64 bytes, each answered (flag cleared).
fn protocol_client(tcp: bool, port: u16, n: u64) {
    let msg = |seq: u64| {
        let mut m = [0u8; 64];
        m[..8].copy_from_slice(&seq.to_be_bytes());
        m[8..10].copy_from_slice(&3u16.to_be_bytes()); // from a client, pong requested
        m[10..14].copy_from_slice(&64u32.to_be_bytes());
        m
    };
    let check = |r: &[u8], seq: u64| {
        assert_eq!(u64::from_be_bytes(r[..8].try_into().unwrap()), seq);
        assert_eq!(u16::from_be_bytes([r[8], r[9]]), 2, "the client flag cleared");
    };
    if tcp {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("::1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.set_nodelay(true).unwrap();
        for seq in 0..n {
            c.write_all(&msg(seq)).unwrap();
            let mut r = [0u8; 64];
            c.read_exact(&mut r).expect("a reply over IPv6");
            check(&r, seq);
        }
        return;
    }
    let c = std::net::UdpSocket::bind("[::1]:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for seq in 0..n {
        c.send_to(&msg(seq), ("::1", port)).unwrap();
        let mut r = [0u8; 128];
        let k = c.recv(&mut r).expect("a reply over IPv6");
        assert_eq!(k, 64);
        check(&r, seq);
    }
}

/// Runs the echo server `exe` over IPv4 (sockperf) and IPv6 (a client of its protocol;
/// over TCP two connections one after the other), stops it with SIGTERM, checks it exited
/// cleanly with nothing failed, and returns its last line of each run.
fn echo_answers(exe: &Path, tcp: bool) -> Vec<String> {
    let mut stops = Vec::new();
    for v6 in [false, true] {
        let port = free_port();
        let mut args = vec![port.to_string(), "30".to_string()];
        if v6 {
            args.push("-6".into());
        }
        let mut server = Command::new(exe)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for the banner (bound and receives posted).
        let stdout = server.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let banner = rx.recv_timeout(Duration::from_secs(20)).expect("the banner");
        assert!(banner.contains("listening"), "{banner}");
        if v6 {
            // sockperf 3.7 takes no IPv6 address: a client of its protocol here.
            protocol_client(tcp, port, 200);
            if tcp {
                // A second connection: the first one's socket, disconnected, accepts again.
                std::thread::sleep(Duration::from_millis(100));
                protocol_client(tcp, port, 50);
            }
        } else if have_sockperf() {
            let ip = "127.0.0.1";
            let mut args = vec!["ping-pong", "-i", ip, "-m", "64", "-t", "1"];
            if tcp {
                args.push("--tcp");
            }
            let port_s = port.to_string();
            args.extend(["-p", &port_s]);
            let o = Command::new("sockperf").args(&args).output().unwrap();
            let text = output_text(&o);
            assert!(o.status.success() && !text.contains("ERROR"), "v6 {v6}: {text}");
            assert!(text.contains("# dropped messages = 0"), "v6 {v6}: {text}");
            let total = text.lines().find(|l| l.contains("[Total Run]")).expect("a total");
            let field = |name: &str| -> u64 {
                total
                    .split(name)
                    .nth(1)
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|v| v.parse().ok())
                    .unwrap()
            };
            let (sent, got) = (field("SentMessages="), field("ReceivedMessages="));
            assert!(
                got + 1 >= sent && sent >= 20,
                "v6 {v6}: every request answered: {total}"
            );
        }
        Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) => lines.push(l),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(_) => {}
            }
        }
        let status = server.wait().unwrap();
        let mut err = String::new();
        use std::io::Read;
        server.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert!(status.success(), "v6 {v6}: {lines:?}\n{err}");
        let stopped = lines
            .iter()
            .find(|l| l.contains("stopped;"))
            .unwrap_or_else(|| panic!("{lines:?}\n{err}"));
        assert!(stopped.contains(" 0 failed"), "{stopped}");
        stops.push(stopped.clone());
    }
    stops
}
