//! Smoke runs of every `porto bench` scenario (CI): seconds long, tiny counts. They assert
//! that every side produced results and that the files a user reads were written — never a
//! speed.

use std::path::PathBuf;
use std::process::Command;

fn strict() -> bool {
    std::env::var("PORTO_REQUIRE_NETNS").is_ok_and(|v| v == "1")
}

/// One smoke run at a time: they pin servers to the same CPU, and a crowded machine is not
/// what they check.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn smoke(scenario: &str) -> (serde_json::Value, String) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir: PathBuf = std::env::temp_dir().join(format!("porto-bench-smoke-{scenario}-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_porto"))
        .args(["bench", scenario, "--smoke", "--out"])
        .arg(&out_dir)
        .output()
        .expect("porto runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench {scenario} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(out_dir.join(format!("{scenario}.json"))).expect("JSON results written");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let plots = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "svg"))
        .count();
    let font = std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists();
    assert!(plots > 0 || (!font && !strict()), "no SVG plot written");
    let _ = std::fs::remove_dir_all(&out_dir);
    (v, format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)))
}

fn servers_with_results(v: &serde_json::Value) -> Vec<String> {
    v["summary"]
        .as_array()
        .expect("summary rows")
        .iter()
        .filter(|r| r["messages_per_s"].as_f64().is_some_and(|x| x > 0.0))
        .map(|r| r["server"].as_str().expect("server name").to_string())
        .collect()
}

fn check(scenario: &str) -> (serde_json::Value, String) {
    let (v, output) = smoke(scenario);
    assert!(output.contains("porto poll") && output.contains("kernel"), "{output}");
    let got = servers_with_results(&v);
    let mut want = vec!["kernel", "porto-port", "porto-poll"];
    let sockperf = Command::new("sockperf").arg("--version").output().is_ok();
    if sockperf || strict() {
        want.push("sockperf");
    }
    if cfg!(feature = "peers") {
        want.extend(["tokio", "monoio"]);
    }
    for w in want {
        assert!(
            got.iter().any(|g| g == w),
            "{scenario}: no results from {w}; got {got:?}\n{output}"
        );
    }
    assert!(
        v["kernel"].as_str().is_some_and(|k| !k.is_empty()),
        "the run records the kernel version"
    );
    (v, output)
}

#[test]
fn latency_smoke() {
    let (v, output) = check("latency");
    // The round trip split at the client's kernel receive stamps: each part within the whole.
    assert!(
        output.contains("round trip split at the reply's kernel receive stamp"),
        "{output}"
    );
    for row in v["summary"].as_array().expect("summary rows") {
        let f = |k: &str| row[k].as_f64();
        let (Some(rtt99), Some(k50), Some(a50)) = (f("p99_us"), f("to_kernel_p50_us"), f("to_app_p50_us")) else {
            panic!("no split for {}: {row}", row["server"]);
        };
        assert!(
            k50 > 0.0 && a50 > 0.0 && k50 <= rtt99 * 1.01 + 1.0 && a50 <= rtt99 * 1.01 + 1.0,
            "{row}"
        );
    }
}

#[test]
fn throughput_smoke() {
    check("throughput");
}

#[test]
fn tcp_smoke() {
    check("tcp");
}

#[test]
fn fanout_smoke() {
    let (v, output) = smoke("fanout");
    for who in ["kernel", "porto"] {
        for r in v["runs"].as_array().unwrap().iter().filter(|r| r["receiver"] == who) {
            let (n, msgs, delivered) = (
                r["subscribers"].as_u64().unwrap(),
                r["messages"].as_u64().unwrap(),
                r["delivered"].as_u64().unwrap(),
            );
            assert!(delivered > 0, "{who} N={n} delivered nothing\n{output}");
            // porto counts the datagrams its group received: each reaches at most N
            // subscribers.
            if who == "porto" {
                assert!(delivered <= n * msgs, "N={n}: {delivered} > {n} x {msgs}\n{output}");
            }
        }
    }
    assert!(output.contains("ratio"), "{output}");
}

#[test]
fn qos_smoke() {
    let (v, output) = smoke("qos");
    let phases = v["phases"].as_array().expect("phases");
    assert_eq!(phases.len(), 3, "{output}");
    for p in phases {
        let p = &p[1];
        assert!(
            p["pings"].as_u64().unwrap() > 0 || p["lost"].as_u64().unwrap() > 0,
            "{output}"
        );
    }
    // The unloaded and the Control phase answer pings; the loaded phases moved bulk.
    assert!(phases[0][1]["pings"].as_u64().unwrap() > 0 && phases[1][1]["pings"].as_u64().unwrap() > 0);
    assert!(phases[1][1]["bulk_sent"].as_u64().unwrap() > 0, "{output}");
}

#[test]
fn xdp_rx_smoke() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        assert!(!strict(), "PORTO_REQUIRE_NETNS=1 but not root");
        eprintln!("skipping: the AF_XDP receive benchmark needs root");
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("porto-bench-smoke-xdp-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_porto"))
        .args(["bench", "xdp-rx", "--smoke", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("xdp-rx.json")).unwrap()).unwrap();
    for who in ["kernel recvmmsg", "porto AF_XDP"] {
        let got: u64 = v["runs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["receiver"] == who)
            .map(|r| r["received"].as_u64().unwrap())
            .sum();
        assert!(got > 0, "{who} received nothing:\n{stdout}");
    }
    // The receive work was counted where it ran: every run's NAPI thread (pinned beside the
    // receiver) and its receiving thread used CPU.
    for r in v["runs"].as_array().unwrap() {
        let (napi, thread) = (r["napi_s"].as_f64().unwrap(), r["thread_s"].as_f64().unwrap());
        assert!(napi > 0.0 && thread > 0.0, "{r}");
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
