//! A preflight: what porto needs from this machine, checked before anything fails, each
//! finding with its fix (`porto doctor`). A `Fail` blocks the configuration asked for; a
//! `Warn` works but costs something or needs care.

use std::fmt;

pub mod kernel;

use crate::config::{Config, Provider};
use crate::sys::ring::{refused_fix, Ring, RingConfig};
use crate::sys::{genl, net};

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
        memlock(cfg, xdp.is_some()),
        huge_pages(cfg),
        cpu_placement(cfg),
        busy_poll(xdp),
    ];
    if let Some(iface) = xdp {
        out.push(xdp_capabilities());
        out.extend(xdp_iface(iface, cfg.shards));
        if net::ifindex(iface).is_ok() {
            out.push(xdp_features(iface));
            out.extend(rx_offloads(iface));
            out.push(irq_affinity(iface, cfg));
        }
    }
    out
}

fn cpu_file(leaf: &str) -> Option<Vec<usize>> {
    crate::sys::cpu::list(&std::fs::read_to_string(format!("/sys/devices/system/cpu/{leaf}")).ok()?)
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

fn has(caps: u64, cap: u32) -> bool {
    caps & (1 << cap) != 0
}

/// AF_XDP needs to load and attach BPF (CAP_BPF or CAP_SYS_ADMIN, and CAP_NET_ADMIN) and
/// open AF_XDP sockets (CAP_NET_RAW).
fn xdp_capabilities() -> Finding {
    let caps = net::effective_caps();
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

/// Pinned memory for the pools: io_uring's fixed buffers (without them it sends from plain
/// memory: a warning) and AF_XDP's UMEM (without it no AF_XDP: a failure when asked for).
fn memlock(cfg: &Config, xdp: bool) -> Finding {
    let need = cfg.pool_bytes() as u64 * cfg.shards as u64;
    // With CAP_IPC_LOCK registered memory is not charged to the limit.
    let ipc_lock = has(net::effective_caps(), CAP_IPC_LOCK);
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
            if xdp { Level::Fail } else { Level::Warn },
            format!(
                "RLIMIT_MEMLOCK is {} KiB; the pools need {} KiB ({} shard(s) x {} frames x {} B): {}",
                limit / 1024,
                need / 1024,
                cfg.shards,
                cfg.frames_per_shard,
                cfg.frame_size,
                if xdp {
                    "the AF_XDP UMEM cannot be registered"
                } else {
                    "io_uring runs without fixed buffers (sends from plain memory, RIO copies)"
                }
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

/// What the driver's XDP supports, from the kernel's `netdev` netlink family.
fn xdp_features(iface: &str) -> Finding {
    const CHECK: &str = "xdp support";
    let ifindex = match net::ifindex(iface) {
        Ok(i) => i,
        Err(e) => return finding(CHECK, Level::Fail, format!("{iface}: {e}"), None),
    };
    let driver = std::fs::read_link(format!("/sys/class/net/{iface}/device/driver"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| {
            let out = std::process::Command::new("ethtool")
                .args(["-i", iface])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("driver: ").map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".into());
    let f = match genl::xdp_features(ifindex) {
        Ok(f) => f,
        Err(e) => {
            return finding(
                CHECK,
                Level::Warn,
                format!("{iface} (driver {driver}): the kernel did not say what its XDP supports ({e}; the netdev netlink family came in 6.3)"),
                Some("porto will try native zero-copy, then copy mode, then generic XDP, and report the rung it gets"),
            )
        }
    };
    let yes = |b: bool| if b { "yes" } else { "no" };
    let detail = format!(
        "{iface} (driver {driver}): native XDP {}, redirect {}, AF_XDP zero-copy {}, multi-buffer {}, NIC receive timestamps {}",
        yes(f.basic),
        yes(f.redirect),
        yes(f.zero_copy),
        yes(f.rx_sg),
        yes(f.rx_timestamp)
    );
    if !f.basic || !f.redirect {
        finding(
            CHECK,
            Level::Warn,
            format!("{detail}: porto runs in generic (skb) XDP mode here, after the kernel allocated an skb: slower than native"),
            Some("use a NIC whose driver has native XDP (ice, i40e, mlx5, ixgbe, igc, virtio_net, ...)"),
        )
    } else if !f.zero_copy {
        finding(
            CHECK,
            Level::Warn,
            format!("{detail}: AF_XDP runs in copy mode (one copy per frame into the UMEM)"),
            Some("zero-copy needs a driver with XSK zero-copy (ice, i40e, mlx5, ixgbe, igc, ...)"),
        )
    } else {
        finding(CHECK, Level::Ok, detail, None)
    }
}

/// Receive offloads that break XDP: LRO and hardware GRO merge frames before the program
/// sees them, so drivers refuse native XDP while they are on.
fn rx_offloads(iface: &str) -> Vec<Finding> {
    let Ok(out) = std::process::Command::new("ethtool").args(["-k", iface]).output() else {
        return vec![finding(
            "rx offloads",
            Level::Warn,
            "ethtool is not installed: LRO and hardware GRO not checked",
            Some("apt-get install ethtool"),
        )];
    };
    offload_findings(iface, &String::from_utf8_lossy(&out.stdout))
}

/// The findings of `ethtool -k` output `text`.
fn offload_findings(iface: &str, text: &str) -> Vec<Finding> {
    let on = |name: &str| {
        text.lines().any(|l| {
            l.trim_start()
                .strip_prefix(name)
                .is_some_and(|v| v.trim_start().starts_with("on"))
        })
    };
    let mut v = Vec::new();
    for (feature, flag) in [("large-receive-offload:", "lro"), ("rx-gro-hw:", "rx-gro-hw")] {
        if on(feature) {
            v.push(finding(
                "rx offloads",
                Level::Warn,
                format!("{iface}: {flag} is on: merged frames reach XDP as one (drivers refuse native XDP with it on)"),
                Some(&format!("ethtool -K {iface} {flag} off")),
            ));
        }
    }
    if v.is_empty() {
        v.push(finding(
            "rx offloads",
            Level::Ok,
            format!("{iface}: LRO and hardware GRO off"),
            None,
        ));
    }
    v
}

/// The interrupts of `iface` (from /proc/interrupts), each with the queue its name ends in,
/// if it does: `(irq, queue)`.
pub(crate) fn iface_irqs(interrupts: &str, iface: &str) -> Vec<(u32, Option<usize>)> {
    interrupts
        .lines()
        .filter_map(|l| {
            let (irq, rest) = l.trim_start().split_once(':')?;
            let irq = irq.parse::<u32>().ok()?;
            // `eth0`, `eth0-TxRx-3`, `i40e-eth0-TxRx-3`: the interface is one dash-separated
            // part of the name; a queue's number is the last part.
            let name = rest.split_whitespace().last()?;
            let parts: Vec<&str> = name.split('-').collect();
            if !parts.contains(&iface) {
                return None;
            }
            let queue = (parts.last() != Some(&iface))
                .then(|| parts.last()?.parse().ok())
                .flatten();
            Some((irq, queue))
        })
        .collect()
}

/// Each receive queue's interrupt should land on the core of the shard that reads that
/// queue (queue q on shard q mod N): else the packet's cache lines cross cores.
fn irq_affinity(iface: &str, cfg: &Config) -> Finding {
    const CHECK: &str = "irq affinity";
    let irqs = iface_irqs(&std::fs::read_to_string("/proc/interrupts").unwrap_or_default(), iface);
    if irqs.is_empty() {
        return finding(
            CHECK,
            Level::Ok,
            format!("no interrupt in /proc/interrupts is named after {iface}: a virtual device (its receive work runs where its sender runs), or a driver that names its IRQs otherwise (mlx5: check /proc/interrupts by hand)"),
            None,
        );
    }
    let mut wrong = Vec::new();
    for (irq, queue) in &irqs {
        let Some(q) = queue else { continue };
        let shard = q % cfg.shards.max(1);
        let core = cfg.core_of(shard);
        let affinity = std::fs::read_to_string(format!("/proc/irq/{irq}/smp_affinity_list"))
            .ok()
            .and_then(|s| crate::sys::cpu::list(s.trim()))
            .unwrap_or_default();
        if !affinity.contains(&core) {
            wrong.push(format!(
                "irq {irq} (queue {q}) on cores {affinity:?}, its shard {shard} on core {core}"
            ));
        }
    }
    if wrong.is_empty() {
        finding(
            CHECK,
            Level::Ok,
            format!("{iface}: {} interrupt(s), each on its queue's shard core", irqs.len()),
            None,
        )
    } else {
        finding(
            CHECK,
            Level::Warn,
            format!("{iface}: {}", wrong.join("; ")),
            Some("echo <core> > /proc/irq/<irq>/smp_affinity_list for each (and stop irqbalance, or ban those IRQs from it)"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lro_and_hardware_gro_are_named_with_their_fix() {
        let text = "Features for eth0:
rx-checksumming: on
generic-receive-offload: on
large-receive-offload: on
rx-gro-hw: off [fixed]
";
        let f = offload_findings("eth0", text);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].level, Level::Warn);
        assert_eq!(f[0].fix.as_deref(), Some("ethtool -K eth0 lro off"));
        let f = offload_findings(
            "eth0",
            &text.replace("large-receive-offload: on", "large-receive-offload: off"),
        );
        assert_eq!((f.len(), f[0].level), (1, Level::Ok), "{f:?}");
    }

    #[test]
    fn interface_interrupts_are_found_with_their_queues() {
        let text = "           CPU0       CPU1
  24:          0          0   PCI-MSI 1048576-edge      eth0
  25:       1234          0   PCI-MSI 1048577-edge      eth0-TxRx-0
  26:          0       5678   PCI-MSI 1048578-edge      eth0-TxRx-1
  27:          1          0   PCI-MSI 1048579-edge      eth10-TxRx-0
  28:          1          0   PCI-MSI 1048580-edge      eth01-TxRx-0
  29:          1          0   PCI-MSI 1048581-edge      i40e-eth0-TxRx-2
 NMI:          0          0   Non-maskable interrupts
";
        assert_eq!(
            iface_irqs(text, "eth0"),
            vec![(24, None), (25, Some(0)), (26, Some(1)), (29, Some(2))]
        );
        assert_eq!(iface_irqs(text, "veth0"), vec![]);
    }
}
