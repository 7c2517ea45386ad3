//! What the CLI's end-to-end suites share: the `porto` binary, a server that stops with
//! SIGTERM when dropped, free ports, the real `sockperf` client and the checks on its report,
//! namespaces for AF_XDP, and the seccomp filters that make the kernel refuse things.
// Each including test crate uses part of this.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../engine/tests/common/packages.rs"]
pub mod packages;
pub use packages::strict;

#[path = "../../../engine/tests/common/seccomp.rs"]
pub mod seccomp;

pub fn porto() -> Command {
    Command::new(env!("CARGO_BIN_EXE_porto"))
}

pub fn have_sockperf() -> bool {
    packages::require_packages(&["sockperf"], "the external client")
}

/// `porto` failed the way a user's error should: exit status 1 (porto's error) or 2 (clap's
/// usage error), with a message; never a panic (101) or a signal.
pub fn assert_user_error(out: &std::process::Output) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "expected a user error (exit 1 or 2), got {:?}:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// A port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first: a server stopped that way removes its statistics file (SIGKILL
        // would leave one in /dev/shm per test run).
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn start_echo(args: &[&str], port: u16) -> Server {
    let child = porto()
        .args(["echo", "--port", &port.to_string(), "--no-pin", "--seconds", "30"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("porto binary runs");
    // Wait until the port answers: bound means the server printed its banner.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if UdpSocket::bind(("127.0.0.1", port)).is_err() || TcpListener::bind(("127.0.0.1", port)).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child)
}

pub fn sockperf_ping_pong(port: u16, tcp: bool) -> String {
    let mut c = Command::new("sockperf");
    c.args([
        "ping-pong",
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "64",
        "-t",
        "1",
    ]);
    if tcp {
        c.arg("--tcp");
    }
    let out = c.output().expect("sockperf runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sockperf failed:\n{text}");
    text
}

/// One second of 64-byte `sockperf ping-pong` from namespace A of `t` to `ip`:9000: whether
/// it succeeded, and what it printed (stdout then stderr).
pub fn sockperf_ping_pong_from_a(t: &porto::netns::Topology, ip: &str) -> (bool, String) {
    let out = t
        .command(porto::netns::Side::A, "sockperf")
        .args(["ping-pong", "-i", ip, "-p", "9000", "-m", "64", "-t", "1"])
        .output()
        .expect("sockperf runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub fn received_messages(text: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains("[Valid Duration]"))
        .unwrap_or_else(|| panic!("no summary in:\n{text}"));
    let v = line.split("ReceivedMessages=").nth(1).expect("ReceivedMessages field");
    v.trim().parse().expect("a count")
}

/// sockperf's ping-pong was answered: nothing dropped, every request answered (one may be in
/// flight when its timer ends), and a real exchange took place. How many fit in the second is
/// the machine's speed, not porto's property (a busy 2-core CI box once managed 1023 at 2.7 ms
/// each), so only a floor.
pub fn assert_answered(text: &str, what: &str) {
    assert!(text.contains("# dropped messages = 0"), "{what}:\n{text}");
    let (sent, got) = total_run(text);
    assert!(got + 1 >= sent && sent >= 20, "{what}: unanswered requests:\n{text}");
    assert!(received_messages(text) >= 10, "{what}: too few replies:\n{text}");
}

/// `[Total Run]`'s (SentMessages, ReceivedMessages), warm-up included.
pub fn total_run(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.contains("[Total Run]"))
        .unwrap_or_else(|| panic!("no total in:\n{text}"));
    let field = |name: &str| -> u64 {
        line.split(name)
            .nth(1)
            .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    (field("SentMessages="), field("ReceivedMessages="))
}

/// A veth pair between two fresh namespaces (deleted on drop); `None` (skip) without root,
/// a failure under PORTO_REQUIRE_NETNS=1.
pub fn topology(prefix: &str, queues: u32) -> Option<porto::netns::Topology> {
    match porto::netns::Topology::create(prefix, queues) {
        Ok(t) => Some(t),
        Err(e) => {
            assert!(!strict(), "PORTO_REQUIRE_NETNS=1 but: {e}");
            eprintln!("skipping: {e}");
            None
        }
    }
}

/// Reads the server's stdout until it printed `shards` AF_XDP lines; the rest of stdout keeps
/// draining in a thread.
pub fn server_banner(server: &mut Server, shards: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let rx = stdout_lines(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.iter().filter(|l: &&String| l.contains("AF_XDP on")).count() < shards && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    lines
}

/// Reads the server's stdout until a line contains `needle` (or 20 s passed).
pub fn server_banner_until(server: &mut Server, needle: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let rx = stdout_lines(server);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines.iter().any(|l| l.contains(needle)) && Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            lines.push(l);
        }
    }
    lines
}

/// The server's stdout, line by line, from a thread that keeps draining it.
pub fn stdout_lines(server: &mut Server) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let stdout = server.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `echo` (serving `port`), waits for the banner line containing `needle`, asserts
/// some banner line satisfies `says`, then checks sockperf's ping-pong is answered.
pub fn serve_says_and_answers(mut echo: Command, port: u16, tcp: bool, needle: &str, says: impl Fn(&str) -> bool) {
    let mut server = Server(echo.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let banner = server_banner_until(&mut server, needle);
    assert!(banner.iter().any(|l| says(l)), "{banner:?}");
    let text = sockperf_ping_pong(port, tcp);
    assert_answered(&text, &format!("tcp {tcp}"));
}
