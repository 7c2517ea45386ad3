//! The kernel-refusal matrix as a user meets it: `porto` started under a seccomp filter that
//! refuses one syscall or one of its arguments (installed in the child before exec, as
//! Docker's profile is), serving the real `sockperf` client, and saying what it lost — in
//! its banner, in `porto info`, in `porto stats` and in `porto doctor` (text and JSON).
//! Where nothing can work it exits 1 naming the cause. `engine/tests/refusals.rs` holds the
//! in-process cases; `docs/refusals.md` the table of both.

use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::seccomp::{self, nr, reg, Rule};
use common::*;

fn register(op: u32, errno: i32) -> Rule {
    Rule::syscall(nr::IO_URING_REGISTER, errno).arg(1, op)
}

/// `porto echo ARGS` on a free port under `rules`: its banner must say `says`, sockperf's
/// ping-pong (UDP, or TCP with `--tcp` in ARGS) must be answered, and `porto stats PID`
/// must name the lost `feature`.
fn echo_under(rules: &[Rule], args: &[&str], says: &str, feature: &str) {
    if !have_sockperf() {
        return;
    }
    let tcp = args.contains(&"--tcp");
    let port = free_port();
    let mut cmd = porto();
    // The refusals are io_uring's: ask for it by name (the suites also run with
    // PORTO_PROVIDER=epoll, where they would not apply).
    cmd.args(["echo", "--port", &port.to_string(), "--no-pin", "--seconds", "30"])
        .args(["--provider", "io-uring"])
        .args(args);
    seccomp::refuse(&mut cmd, rules);
    let mut server = Server(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let banner = server_banner_until(&mut server, "statistics:");
    assert!(banner.iter().any(|l| l.contains(says)), "{says}: {banner:#?}");
    let text = sockperf_ping_pong(port, tcp);
    assert_answered(&text, says);
    // porto stats, from another process, names what this engine lost.
    let pid = u64::from(server.0.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = porto().args(["stats", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        let lost = v
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["pid"].as_u64() == Some(pid))
            .and_then(|e| e["shards"][0]["degraded"].as_array().cloned());
        if lost.as_ref().is_some_and(|l| l.iter().any(|f| f == feature)) {
            break;
        }
        assert!(Instant::now() < deadline, "porto stats names {feature}: {lost:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Some distribution kernels (Ubuntu 6.8.0-136…139) fail provided-buffer-ring registration
/// with EINVAL: porto stays on io_uring and serves UDP and TCP.
#[test]
fn a_refused_buffer_ring_still_serves_sockperf() {
    let rules = [register(reg::PBUF_RING, libc::EINVAL)];
    for proto in ["--udp", "--tcp"] {
        echo_under(
            &rules,
            &[proto],
            "without provided-buffer ring (IORING_REGISTER_PBUF_RING: Invalid argument",
            "provided-buffer ring",
        );
    }
}

/// Fixed buffers refused (ENOMEM, as a low memlock limit answers): zero-copy replies still go.
#[test]
fn refused_fixed_buffers_still_serve_zero_copy_replies() {
    echo_under(
        &[register(reg::BUFFERS_UPDATE, libc::ENOMEM)],
        &["--udp", "--zerocopy"],
        "without fixed buffers",
        "fixed buffers",
    );
}

#[test]
fn a_refused_file_table_still_serves_tcp() {
    echo_under(
        &[register(reg::FILES2, libc::EINVAL)],
        &["--tcp"],
        "without registered files",
        "registered files",
    );
}

/// `porto doctor` names each refusal in its kernel table — text and JSON — and still exits
/// 0: every one of them has a fallback.
#[test]
fn doctor_names_refused_kernel_features() {
    let rules = [
        register(reg::BUFFERS2, libc::ENOMEM),
        register(reg::PROBE, libc::EPERM),
        Rule::syscall(nr::SETSOCKOPT, libc::EPERM)
            .arg(1, libc::SOL_SOCKET as u32)
            .arg(2, libc::SO_TIMESTAMPING as u32),
    ];
    let mut cmd = porto();
    cmd.args(["doctor", "--no-pin"]);
    let out = seccomp::refuse(&mut cmd, &rules).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    for row in [
        "fixed buffers (IORING_REGISTER_BUFFERS2)",
        "IORING_REGISTER_PROBE",
        "SO_TIMESTAMPING",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("{row}:\n{text}"));
        assert!(line.contains("REFUSED"), "{line}");
    }
    let mut cmd = porto();
    cmd.args(["doctor", "--no-pin", "--json"]);
    let out = seccomp::refuse(&mut cmd, &rules).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let row = v["kernel"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["feature"] == "SO_TIMESTAMPING")
        .unwrap();
    assert_eq!(row["state"], "refused");
    assert!(
        row["detail"].as_str().unwrap().contains("Operation not permitted"),
        "{row}"
    );
    assert!(row["without"].as_str().unwrap().contains("shard"), "{row}");
    // Unfiltered, on this machine, those three are present.
    let out = porto().args(["doctor", "--no-pin", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    for name in [
        "fixed buffers (IORING_REGISTER_BUFFERS2)",
        "IORING_REGISTER_PROBE",
        "SO_TIMESTAMPING",
    ] {
        let row = v["kernel"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["feature"] == name)
            .unwrap();
        assert_eq!(row["state"], "present", "{row}");
    }
}

/// BPF refused (EPERM: no CAP_BPF, or a profile): `porto echo --xdp` exits 1 with the errno
/// and the privilege hint; with `--fallback` it serves sockperf through kernel sockets and
/// says why.
#[test]
fn refused_bpf_falls_back_to_kernel_sockets_and_says_why() {
    if !have_sockperf() {
        return;
    }
    let Some(t) = topology("porto-rf", 1) else {
        return;
    };
    use porto::netns::Side;
    const BPF_PROG_LOAD: u32 = 5;
    let rules = [Rule::syscall(nr::BPF, libc::EPERM).arg(0, BPF_PROG_LOAD)];
    let ip_b = t.addr(Side::B).to_string();
    let args = [
        "echo",
        "--udp",
        "--xdp",
        t.iface(Side::B),
        "--addr",
        &ip_b,
        "--port",
        "9000",
        "--no-pin",
        "--seconds",
        "30",
    ];
    let mut cmd = t.command(Side::B, env!("CARGO_BIN_EXE_porto"));
    cmd.args(args);
    let out = seccomp::refuse(&mut cmd, &rules).output().unwrap();
    assert_user_error(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Operation not permitted") && err.contains("CAP_BPF"),
        "{err}"
    );

    let mut cmd = t.command(Side::B, env!("CARGO_BIN_EXE_porto"));
    cmd.args(args).arg("--fallback");
    seccomp::refuse(&mut cmd, &rules);
    let mut server = Server(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let banner = server_banner_until(&mut server, "unavailable");
    assert!(
        banner
            .iter()
            .any(|l| l.contains("unavailable") && l.contains("Operation not permitted")),
        "{banner:#?}"
    );
    let (ok, text) = sockperf_ping_pong_from_a(&t, &ip_b);
    drop(server);
    assert!(ok, "{text}");
    assert_answered(&text, "through kernel sockets after BPF was refused");
}
