//! A preflight: what porto needs from this machine, checked before anything fails, each
//! finding with its fix (`porto doctor`). A `Fail` blocks the configuration asked for; a
//! `Warn` works but costs something or needs care.

use std::fmt;

use crate::config::{Config, Provider};
use crate::sys::net;
use crate::sys::ring::{refused_fix, Ring, RingConfig};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct Finding {
    /// What was checked (`io_uring`, `memlock`, ...).
    pub check: &'static str,
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do about it (for a `Warn` or `Fail`).
    pub fix: Option<String>,
}

fn finding(check: &'static str, level: Level, detail: impl Into<String>, fix: Option<&str>) -> Finding {
    Finding {
        check,
        level,
        detail: detail.into(),
        fix: fix.map(String::from),
    }
}

/// Runs every check for `cfg` (and AF_XDP on `xdp`, if given).
pub fn check(cfg: &Config, xdp: Option<&str>) -> Vec<Finding> {
    let mut out = vec![
        kernel(),
        io_uring(cfg.provider),
        memlock(cfg),
        huge_pages(cfg),
        cpu_placement(cfg),
        busy_poll(xdp),
    ];
    if let Some(iface) = xdp {
        out.push(xdp_capabilities());
        out.extend(xdp_iface(iface, cfg.shards));
    }
    out
}

/// A kernel CPU list (`0-3,8,10-11`); `None` if malformed.
pub(crate) fn cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 4096 {
                    return None;
                }
                v.extend(a..=b);
            }
            None => v.push(part.parse().ok()?),
        }
    }
    Some(v)
}

fn cpu_file(leaf: &str) -> Option<Vec<usize>> {
    cpu_list(&std::fs::read_to_string(format!("/sys/devices/system/cpu/{leaf}")).ok()?)
}

/// Shard cores against the CPUs online, isolated from the scheduler (`isolcpus`) and from the
/// tick (`nohz_full`), and their frequency governor.
fn cpu_placement(cfg: &Config) -> Finding {
    const CHECK: &str = "cpu placement";
    if !cfg.pin {
        return finding(
            CHECK,
            Level::Warn,
            "shard threads are not pinned: the scheduler moves them, and their caches with them",
            Some("pin them (drop --no-pin; choose cores with --cores)"),
        );
    }
    let cores: Vec<usize> = (0..cfg.shards).map(|i| cfg.core_of(i)).collect();
    let online = cpu_file("online").unwrap_or_default();
    if let Some(c) = cores.iter().find(|c| !online.is_empty() && !online.contains(c)) {
        return finding(
            CHECK,
            Level::Fail,
            format!("core {c} is not online (online: {online:?})"),
            Some("choose online cores with --cores"),
        );
    }
    let isolated = cpu_file("isolated").unwrap_or_default();
    let nohz = cpu_file("nohz_full").unwrap_or_default();
    let governors: Vec<String> = cores
        .iter()
        .map(|c| {
            std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{c}/cpufreq/scaling_governor"))
                .map_or_else(|_| "no cpufreq".to_string(), |g| g.trim().to_string())
        })
        .collect();
    let detail = format!("shard cores {cores:?}; isolated {isolated:?}, nohz_full {nohz:?}; governor {governors:?}");
    let shared = cores.iter().any(|c| !isolated.contains(c) || !nohz.contains(c));
    let slow_clock = governors
        .iter()
        .any(|g| matches!(g.as_str(), "powersave" | "ondemand" | "conservative" | "schedutil"));
    match (shared, slow_clock) {
        (false, false) => finding(CHECK, Level::Ok, detail, None),
        (true, _) => finding(
            CHECK,
            Level::Warn,
            format!("{detail}: the shard cores run other work and take the scheduler tick (latency spikes)"),
            Some("boot with isolcpus=<cores> nohz_full=<cores> rcu_nocbs=<cores> and keep other threads (and IRQs) off them; `cpupower frequency-set -g performance` too"),
        ),
        (false, true) => finding(
            CHECK,
            Level::Warn,
            format!("{detail}: a frequency governor that slows idle cores adds wake-up latency"),
            Some("cpupower frequency-set -g performance"),
        ),
    }
}

/// The kernel's busy-poll settings: kernel sockets (and AF_XDP with SO_PREFER_BUSY_POLL)
/// spin in the kernel only when these allow it. porto's polling mode spins in user space
/// either way, so these are reported, never blocking.
fn busy_poll(xdp: Option<&str>) -> Finding {
    let read = |p: &str| std::fs::read_to_string(p).map_or_else(|_| "?".to_string(), |v| v.trim().to_string());
    let mut detail = format!(
        "net.core.busy_poll {} µs, busy_read {} µs",
        read("/proc/sys/net/core/busy_poll"),
        read("/proc/sys/net/core/busy_read")
    );
    if let Some(iface) = xdp {
        detail += &format!(
            "; {iface}: napi_defer_hard_irqs {}, gro_flush_timeout {} ns",
            sysfs(iface, "napi_defer_hard_irqs").unwrap_or_else(|| "?".into()),
            sysfs(iface, "gro_flush_timeout").unwrap_or_else(|| "?".into())
        );
    }
    finding("busy poll", Level::Ok, detail, None)
}

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// The process's effective capabilities (`CapEff` of /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// AF_XDP needs to load and attach BPF (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN) and
/// open AF_XDP sockets (CAP_NET_RAW).
fn xdp_capabilities() -> Finding {
    let caps = effective_caps();
    let mut missing = Vec::new();
    if !has(caps, CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(caps, CAP_NET_RAW) {
        missing.push("CAP_NET_RAW");
    }
    if !has(caps, CAP_BPF) && !has(caps, CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if missing.is_empty() {
        finding(
            "capabilities",
            Level::Ok,
            "CAP_NET_ADMIN, CAP_NET_RAW and CAP_BPF for AF_XDP",
            None,
        )
    } else {
        finding(
            "capabilities",
            Level::Fail,
            format!("AF_XDP needs {} (effective: {caps:#x})", missing.join(", ")),
            Some("run as root, or grant them: setcap cap_net_admin,cap_net_raw,cap_bpf+ep <porto binary>"),
        )
    }
}

fn kernel() -> Finding {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if (major, minor) >= (6, 1) {
        finding("kernel", Level::Ok, format!("Linux {release}"), None)
    } else {
        finding(
            "kernel",
            Level::Fail,
            format!("Linux {release}"),
            Some("porto needs Linux 6.1 or newer (multishot receive, provided-buffer rings, SEND_ZC)"),
        )
    }
}

/// io_uring as the provider asked for sees it: refused is a failure for `IoUring`, a
/// warning for `Auto` (which then runs on epoll), and not needed for `Epoll`.
fn io_uring(provider: Provider) -> Finding {
    if provider == Provider::Epoll {
        return finding("io_uring", Level::Ok, "not used (provider epoll)", None);
    }
    let rc = RingConfig {
        sq_entries: 2,
        cq_entries: 4,
        sqpoll_idle_ms: None,
        sqpoll_cpu: None,
    };
    match Ring::new(&rc) {
        Ok(ring) => {
            let info = ring.info();
            match &info.fallback {
                None => finding("io_uring", Level::Ok, format!("available ({})", info.task_run), None),
                Some(why) => finding(
                    "io_uring",
                    Level::Warn,
                    format!("available in {} mode only ({why})", info.task_run),
                    Some("a newer kernel gives single-issuer + deferred task running (fewer context switches)"),
                ),
            }
        }
        Err(e) => {
            let fix = match e.raw_os_error() {
                Some(libc::EPERM) => refused_fix(),
                Some(libc::ENOSYS) => "this kernel was built without io_uring (CONFIG_IO_URING)",
                _ => "check the kernel's io_uring support",
            };
            if provider == Provider::Auto {
                finding(
                    "io_uring",
                    Level::Warn,
                    format!(
                        "io_uring_setup failed: {e}; provider auto runs on epoll (readiness, a syscall per operation)"
                    ),
                    Some(fix),
                )
            } else {
                finding(
                    "io_uring",
                    Level::Fail,
                    format!("io_uring_setup failed: {e}"),
                    Some(fix),
                )
            }
        }
    }
}

fn memlock(cfg: &Config) -> Finding {
    let need = cfg.pool_bytes() as u64 * cfg.shards as u64;
    // With CAP_IPC_LOCK registered memory is not charged to the limit.
    let ipc_lock = has(effective_caps(), CAP_IPC_LOCK);
    match net::memlock_limit() {
        None => finding("memlock", Level::Ok, "RLIMIT_MEMLOCK unlimited", None),
        Some(_) if ipc_lock => finding("memlock", Level::Ok, "CAP_IPC_LOCK: not limited", None),
        Some(limit) if limit >= need => finding(
            "memlock",
            Level::Ok,
            format!("RLIMIT_MEMLOCK {} KiB covers the pools ({} KiB)", limit / 1024, need / 1024),
            None,
        ),
        Some(limit) => finding(
            "memlock",
            Level::Fail,
            format!(
                "RLIMIT_MEMLOCK is {} KiB; the pools need {} KiB ({} shard(s) x {} frames x {} B)",
                limit / 1024,
                need / 1024,
                cfg.shards,
                cfg.frames_per_shard,
                cfg.frame_size
            ),
            Some("raise it (`ulimit -l unlimited`, LimitMEMLOCK= in a systemd unit), run with CAP_IPC_LOCK, or lower --frames"),
        ),
    }
}

fn huge_pages(cfg: &Config) -> Finding {
    let reserved: u64 = std::fs::read_to_string("/proc/sys/vm/nr_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let need = (cfg.pool_bytes() as u64 * cfg.shards as u64).div_ceil(2 << 20);
    if !cfg.huge_pages {
        finding("huge pages", Level::Ok, "not asked for", None)
    } else if reserved >= need {
        finding(
            "huge pages",
            Level::Ok,
            format!("{reserved} x 2 MiB reserved ({need} needed)"),
            None,
        )
    } else {
        finding(
            "huge pages",
            Level::Warn,
            format!("{reserved} x 2 MiB reserved, {need} needed: the pools use 4 KiB pages (THP advised)"),
            Some(&format!(
                "sysctl vm.nr_hugepages={need} (more TLB reach for the frames)"
            )),
        )
    }
}

fn sysfs(iface: &str, leaf: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/{leaf}"))
        .ok()
        .map(|s| s.trim().to_string())
}

fn xdp_iface(iface: &str, shards: usize) -> Vec<Finding> {
    if net::ifindex(iface).is_err() {
        return vec![finding(
            "xdp interface",
            Level::Fail,
            format!("{iface}: no such interface in this network namespace"),
            Some("name an interface `ip link` lists here (or run in its namespace: ip netns exec)"),
        )];
    }
    let mut out = Vec::new();
    // Queues: the kernel's count as `ip -d link` reports it (numrxqueues).
    let link = std::process::Command::new("ip")
        .args(["-d", "link", "show", "dev", iface])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let word_after = |w: &str| {
        link.split_whitespace()
            .skip_while(|x| *x != w)
            .nth(1)
            .and_then(|v| v.parse::<usize>().ok())
    };
    match word_after("numrxqueues") {
        Some(q) if q < shards => out.push(finding(
            "xdp queues",
            Level::Fail,
            format!("{iface} has {q} receive queue(s) for {shards} shard(s)"),
            Some("use at most as many shards as queues, or add queues (ethtool -L <iface> combined N)"),
        )),
        Some(q) => out.push(finding(
            "xdp queues",
            Level::Ok,
            format!("{iface}: {q} receive queue(s)"),
            None,
        )),
        None => {}
    }
    if link.contains("prog/xdp") || link.contains(" xdp ") || link.contains("xdpgeneric") {
        out.push(finding(
            "xdp program",
            Level::Warn,
            format!("{iface} already has an XDP program attached"),
            Some("porto attaches its own: detach the other (ip link set dev <iface> xdp off) unless it is porto's"),
        ));
    }
    let veth = link.contains("veth");
    let offload = std::process::Command::new("ethtool")
        .args(["-k", iface])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("tx-checksumming: on"))
        .unwrap_or(false);
    if veth {
        let mtu = sysfs(iface, "mtu").unwrap_or_default();
        out.push(finding(
            "veth checksums",
            Level::Warn,
            format!(
                "{iface} is a veth (mtu {mtu}){}: a kernel socket on its peer sends UDP with an unfinished checksum while the peer keeps TX checksum offload on (the default); porto drops those as PartialUdpChecksum",
                if offload { ", TX checksum offload on here too" } else { "" }
            ),
            Some("ethtool -K <peer> tx off on the sending side (and on this side for replies to kernel sockets)"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_and_garbage_is_refused() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list(""), Some(vec![]));
        for bad in ["3-1", "a", "1-", "0-99999999"] {
            assert_eq!(cpu_list(bad), None, "{bad}");
        }
    }
}
