//! Every kernel feature porto uses, each probed on this machine — present, absent (this
//! kernel does not have it) or refused (it has it and said no: a seccomp profile, a sysctl,
//! missing privileges) — with what porto does without it (`porto doctor`'s second table).
//! The same refusals at run time are the [`Degraded`](crate::Degraded) entries a
//! shard reports; `docs/refusals.md` lists them with their tests.

use std::fmt;
use std::io;

use crate::sys::{bpf, net, ring, xsk};
use crate::xdp::{StampSource, XdpProgram};

/// What a probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Present,
    /// This kernel does not have it.
    Absent,
    /// The kernel has it and refused this process (the detail names the errno).
    Refused,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Present => "present",
            State::Absent => "absent",
            State::Refused => "REFUSED",
        })
    }
}

/// One kernel feature.
#[derive(Clone, Debug)]
pub struct Feature {
    pub name: &'static str,
    pub state: State,
    /// The kernel's answer when not present (an errno, the verifier's words).
    pub detail: String,
    /// What porto does without it.
    pub without: &'static str,
}

fn feature(name: &'static str, got: io::Result<bool>, without: &'static str) -> Feature {
    let (state, detail) = match got {
        Ok(true) => (State::Present, String::new()),
        Ok(false) => (State::Absent, String::new()),
        Err(e) => (State::Refused, e.to_string()),
    };
    Feature {
        name,
        state,
        detail,
        without,
    }
}

/// What porto does without an io_uring feature the probe names.
fn uring_without(name: &str) -> &'static str {
    match name {
        "io_uring_setup" => "the epoll provider (readiness, a syscall per operation), reported as a fallback",
        "setup: single-issuer + defer-taskrun" => "coop-taskrun, else plain task work (more interruptions)",
        "setup: coop-taskrun" => "plain task work (the kernel interrupts the shard for completions)",
        "setup: sqpoll" => "--sqpoll is refused; the shard submits itself",
        "feature: nodrop (no lost completions)" => {
            "none: porto needs it (Linux 5.5+), or a full CQ would lose completions"
        }
        "feature: ext_arg (timed waits)" => "none: timed waits need it (Linux 5.11+)",
        "feature: recvsend_bundle" | "feature: min_timeout" => "not used by porto yet",
        "IORING_REGISTER_PROBE" => "opcodes are assumed present; one the kernel lacks fails its operation with EINVAL",
        "op: send_zc" => "zero-copy sends (--zerocopy, RIO) fail with EINVAL: leave zero-copy off",
        "op: msg_ring" => "cross-shard wake-ups go through the target's eventfd",
        "fixed buffers (IORING_REGISTER_BUFFERS2)" | "fixed buffer update (IORING_REGISTER_BUFFERS_UPDATE)" => {
            "sends name the pool's memory directly (SEND_ZC pins its pages per send); RIO sends copy"
        }
        "registered files (IORING_REGISTER_FILES2)" => "every operation names its socket's fd",
        "provided-buffer ring (IORING_REGISTER_PBUF_RING)" => {
            "each receive is lent a pool frame by the driver; multishot receives are re-armed per datagram"
        }
        _ => "the operations that need it fail with the kernel's error; io_uring is otherwise used",
    }
}

/// A socket option set on a fresh UDP socket: present, or refused with its errno.
fn sockopt(level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<bool> {
    let fd = net::socket(&"127.0.0.1:0".parse().expect("an address"), net::Kind::Udp)?;
    use std::os::fd::AsRawFd;
    match net::set_int(fd.as_raw_fd(), level, name, value) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Probes every feature (a few hundred microseconds; loads and unloads porto's XDP program,
/// which needs CAP_BPF — without it that row says refused).
pub fn features() -> Vec<Feature> {
    let mut out: Vec<Feature> = ring::probe()
        .into_iter()
        .map(|p| feature(p.name, p.got, uring_without(p.name)))
        .collect();

    let (sock, umem) = xsk::probe();
    let no_xdp =
        "AF_XDP is unavailable: `porto echo --xdp IFACE --fallback` serves through kernel sockets and says why";
    out.push(feature("AF_XDP socket", absent_if(sock, libc::EAFNOSUPPORT), no_xdp));
    if let Some(u) = umem {
        out.push(feature(
            "AF_XDP UMEM registration (XDP_UMEM_REG)",
            u.map(|()| true),
            no_xdp,
        ));
    }
    let helper = |id| match bpf::probe_xdp_helper(id) {
        Ok(()) => Ok(true),
        Err(r) if r.errno == libc::EINVAL => Ok(false),
        Err(r) => Err(io::Error::from_raw_os_error(r.errno)),
    };
    out.push(feature(
        "XDP helper bpf_ktime_get_ns",
        helper(5),
        "AF_XDP receive stamps are taken when the RX ring is read",
    ));
    let mut meta = feature(
        "XDP helper bpf_xdp_adjust_meta",
        helper(bpf::HELPER_XDP_ADJUST_META),
        "AF_XDP receive stamps are taken when the RX ring is read (the program's stamp is pruned at load)",
    );
    if let Err(r) = bpf::probe_xdp_helper(bpf::HELPER_XDP_ADJUST_META) {
        meta.detail = r.to_string();
    }
    out.push(meta);
    out.push(match XdpProgram::load() {
        Ok(p) => Feature {
            name: "porto's XDP program (test load)",
            state: State::Present,
            detail: match p.stamps() {
                StampSource::Program => "with its receive stamp".into(),
                StampSource::RingReap { .. } => "without its receive stamp (helper refused)".into(),
            },
            without: no_xdp,
        },
        Err(e) => Feature {
            name: "porto's XDP program (test load)",
            state: State::Refused,
            detail: e.to_string(),
            without: no_xdp,
        },
    });

    for (name, level, opt, value, without) in [
        (
            "SO_TIMESTAMPING",
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPING,
            (libc::SOF_TIMESTAMPING_SOFTWARE | libc::SOF_TIMESTAMPING_RX_SOFTWARE) as i32,
            "receive stamps are taken by the shard when it reads each completion; TX timestamps are refused",
        ),
        (
            "SO_PRIORITY",
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            6,
            "the DSCP mark stands; the local queueing priority of QoS classes is lost (warned)",
        ),
        (
            "IP_TOS",
            libc::IPPROTO_IP,
            libc::IP_TOS,
            0xb8,
            "unconnected UDP sockets mark each datagram with a control message; TCP marking fails",
        ),
        (
            "SO_ZEROCOPY",
            libc::SOL_SOCKET,
            libc::SO_ZEROCOPY,
            1,
            "nothing: io_uring's SEND_ZC needs no SO_ZEROCOPY, and porto does not set it",
        ),
        (
            "SO_BUSY_POLL",
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            0,
            "nothing today: porto does not set it (its shards poll their rings themselves)",
        ),
        (
            "SO_PREFER_BUSY_POLL",
            libc::SOL_SOCKET,
            libc::SO_PREFER_BUSY_POLL,
            0,
            "nothing today: porto does not set it",
        ),
    ] {
        out.push(feature(name, sockopt(level, opt, value), without));
    }
    out.push(feature(
        "huge pages (mmap MAP_HUGETLB)",
        crate::sys::region::Region::new(2 << 20, true).map(|r| r.huge_refused().is_none()),
        "the pool is on 4 KiB pages with transparent huge pages advised (reserve some: sysctl vm.nr_hugepages)",
    ));
    out.push(feature(
        "sched_setaffinity",
        crate::sys::cpu::probe(),
        "shard threads run unpinned (the scheduler may move them)",
    ));
    out
}

/// `errno` reads as absent (the kernel does not have the thing), any other error as refused.
fn absent_if(r: io::Result<()>, errno: i32) -> io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(errno) => Ok(false),
        Err(e) => Err(e),
    }
}
