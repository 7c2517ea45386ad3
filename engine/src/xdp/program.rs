//! Loading, attaching and feeding the XDP program.
//!
//! Attach ladder, never silent: native (driver) mode first, then generic (skb) mode; the
//! mode obtained and the reason for any fallback are reported. The program is detached and
//! unloaded when the [`XdpProgram`] drops (aya owns the link).
//!
//! Helpers, probed and gated: before loading, the loader asks the kernel whether XDP
//! programs may call `bpf_xdp_adjust_meta` (a four-instruction test load). Where they may,
//! the program stamps every steered frame's receive time into the metadata area; where the
//! kernel refuses it (some kernels refuse it to every XDP program), the loader sets the
//! program's `porto_stamp_meta` global to 0 so the verifier prunes the call, and AF_XDP
//! sockets that want timestamps take them when the shard reads the RX ring —
//! [`XdpProgram::stamps`] says which, and why.

// aya::Pod for the BPF map key types (plain integers, no padding).
#![allow(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use aya::maps::{HashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::sys::bpf;

/// The compiled program (`make -C xdp-programs`), embedded so `cargo build` needs no clang.
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("CARGO_MANIFEST_DIR"), "/../xdp-programs/porto_xdp.bpf.o"));
const PROGRAM: &str = "porto_xdp";
const STAT_STEERED: u32 = 0;
const STAT_PASSED: u32 = 1;
const STAT_FILTERED: u32 = 2;

/// The program's counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramCounters {
    /// Frames for a porto port (redirected to the AF_XDP socket if one is bound).
    pub steered: u64,
    /// Frames handed to the kernel: not porto's.
    pub passed: u64,
    /// Multicast for a porto port but a group or source porto has not joined (passed).
    pub filtered: u64,
}

/// Key of the `groups` map (both fields in network byte order, as the program reads them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct GroupKey {
    group: u32,
    source: u32,
}

// SAFETY: GroupKey is two u32s with no padding; every bit pattern is valid.
unsafe impl aya::Pod for GroupKey {}

/// Key of the `binds` map: a bound address (IPv4 in the first 4 bytes) and port, both as
/// the packet carries them (network byte order), and the family (4 or 6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct BindKey {
    addr: [u8; 16],
    port: u16,
    family: u16,
}

// SAFETY: 16 + 2 + 2 bytes, no padding; every bit pattern is valid.
unsafe impl aya::Pod for BindKey {}
const _: () = assert!(std::mem::size_of::<BindKey>() == 20);

impl BindKey {
    fn of(local: SocketAddr) -> BindKey {
        let (addr, family) = match local.ip() {
            IpAddr::V4(a) => {
                let mut b = [0; 16];
                b[..4].copy_from_slice(&a.octets());
                (b, 4)
            }
            IpAddr::V6(a) => (a.octets(), 6),
        };
        BindKey {
            addr,
            port: local.port().to_be(),
            family,
        }
    }
}

/// Key of the `groups6` map: the group and source addresses as the packet carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Group6Key {
    group: [u8; 16],
    source: [u8; 16],
}

// SAFETY: Group6Key is 32 bytes with no padding; every bit pattern is valid.
unsafe impl aya::Pod for Group6Key {}

/// How the program runs on the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (native XDP).
    Driver,
    /// In the kernel's generic receive path (skb mode), for drivers without native XDP.
    Generic,
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver (native) XDP",
            AttachMode::Generic => "generic (skb) XDP",
        })
    }
}

/// Where an AF_XDP socket's receive timestamps come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StampSource {
    /// porto's XDP program, as it steers the frame (`bpf_ktime_get_ns` into the frame's
    /// metadata area): the time the driver handed the frame to XDP.
    Program,
    /// The shard, when it reads the frame from the RX ring (one clock read per batch): later
    /// than `Program` by the frame's wait in the ring. Used where the kernel refuses the
    /// program's stamp; `why` is the kernel's refusal.
    RingReap { why: String },
}

impl StampSource {
    /// A short name for tables (`porto stats`, `porto info`).
    pub fn name(&self) -> &'static str {
        match self {
            StampSource::Program => "xdp-program",
            StampSource::RingReap { .. } => "rx-ring-reap",
        }
    }
}

impl std::fmt::Display for StampSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StampSource::Program => f.write_str("receive stamps from the XDP program (bpf_xdp_adjust_meta)"),
            StampSource::RingReap { why } => write!(
                f,
                "receive stamps taken when the RX ring is read, not by the XDP program: the kernel refuses bpf_xdp_adjust_meta to XDP programs ({why})"
            ),
        }
    }
}

/// Where a socket's receive stamps come from (as `porto stats` shows it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamping {
    /// No stamps (the socket did not ask for them).
    Off,
    /// AF_XDP: from the XDP program's metadata in front of each frame.
    Metadata,
    /// The shard, when it reads the datagram (AF_XDP: the RX ring; a kernel socket: its
    /// completion): where the kernel refused its own stamp (`bpf_xdp_adjust_meta`,
    /// `SO_TIMESTAMPING`).
    Reap,
    /// A kernel socket: the kernel's software receive stamp (SO_TIMESTAMPING).
    Kernel,
}

impl Stamping {
    pub const ALL: [Stamping; 4] = [Stamping::Off, Stamping::Metadata, Stamping::Reap, Stamping::Kernel];

    /// A short name for tables: "-", "xdp-program", "reap", "kernel".
    pub fn name(self) -> &'static str {
        match self {
            Stamping::Off => "-",
            Stamping::Metadata => "xdp-program",
            Stamping::Reap => "reap",
            Stamping::Kernel => "kernel",
        }
    }
}

/// Errors of the XDP control path, with the likely fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdpError {
    /// The object or its program did not load: `why` holds the errno and the verifier's own
    /// last lines; `fix` the likely remedy for that errno.
    #[error("loading the XDP object failed: {why}{fix}")]
    Load { why: String, fix: &'static str },
    #[error("attaching XDP to {iface} failed in every mode: {why}")]
    Attach { iface: String, why: String },
    #[error("XDP map {map}: {why}")]
    Map { map: &'static str, why: String },
    #[error("BPF_PROG_TEST_RUN failed: {0}")]
    TestRun(String),
}

fn map_error(map: &'static str, why: impl std::fmt::Display) -> XdpError {
    XdpError::Map {
        map,
        why: why.to_string(),
    }
}

/// The loaded (and possibly attached) program and its maps.
pub struct XdpProgram {
    ebpf: Ebpf,
    iface: Option<String>,
    mode: Option<AttachMode>,
    fallback: Option<String>,
    stamps: StampSource,
}

/// A load error with the real cause: the errno of the failing syscall (found along the
/// error's sources), the verifier's last lines when it was the verifier, and the privilege
/// hint only when the kernel said EPERM/EACCES.
fn load_error(e: &(dyn std::error::Error + 'static)) -> XdpError {
    let mut errno = None;
    let mut verifier = None;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(aya::programs::ProgramError::LoadError { io_error, verifier_log }) = err.downcast_ref() {
            errno = io_error.raw_os_error();
            verifier = Some(bpf::last_lines(&verifier_log.to_string(), 3));
            break;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            errno = errno.or(io.raw_os_error());
        }
        cur = err.source();
    }
    let why = match (errno, verifier) {
        (Some(n), Some(v)) if !v.is_empty() => format!("{} (verifier: {v})", std::io::Error::from_raw_os_error(n)),
        (Some(n), _) => format!("{e}: {}", std::io::Error::from_raw_os_error(n)),
        (None, _) => e.to_string(),
    };
    let fix = match errno {
        Some(libc::EPERM | libc::EACCES) => "; loading BPF needs root or CAP_BPF+CAP_NET_ADMIN (and kernel.unprivileged_bpf_disabled does not help here)",
        Some(libc::ENOSYS) => "; this kernel has no bpf(2): AF_XDP is unavailable, use kernel sockets",
        Some(libc::EINVAL) => "; the kernel's verifier refused the program: `porto doctor` lists what this kernel allows XDP programs",
        _ => "",
    };
    XdpError::Load { why, fix }
}

impl std::fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpProgram")
            .field("iface", &self.iface)
            .field("mode", &self.mode)
            .finish()
    }
}

impl XdpProgram {
    /// Loads the program into the kernel without attaching it (for `test_run`), stamping
    /// frames if the kernel lets XDP programs call `bpf_xdp_adjust_meta` (probed first).
    pub fn load() -> Result<XdpProgram, XdpError> {
        XdpProgram::load_with(XdpProgram::stamp_source()?)
    }

    /// Where AF_XDP receive stamps come from on this kernel: the program, if XDP programs
    /// may call `bpf_xdp_adjust_meta` (asked with a four-instruction test load), else the RX
    /// ring's reading. `Err` where the kernel refuses to load BPF at all (no CAP_BPF, a
    /// seccomp profile): aya's own feature probes would fail the same way and end in an
    /// error that has lost the errno ("error relocating function"), so it is said here.
    pub fn stamp_source() -> Result<StampSource, XdpError> {
        match bpf::probe_xdp_helper(bpf::HELPER_XDP_ADJUST_META) {
            Ok(()) => Ok(StampSource::Program),
            Err(r) if matches!(r.errno, libc::EPERM | libc::EACCES) => Err(XdpError::Load {
                why: format!("the kernel refuses to load XDP programs: {r}"),
                fix: "; loading BPF needs root or CAP_BPF+CAP_NET_ADMIN (and no seccomp profile refusing bpf(BPF_PROG_LOAD))",
            }),
            Err(r) => Ok(StampSource::RingReap { why: r.to_string() }),
        }
    }

    /// Loads the program with its stamp on (`StampSource::Program`) or pruned (any other),
    /// without probing: [`load`](Self::load) is what the engine uses.
    pub fn load_with(stamps: StampSource) -> Result<XdpProgram, XdpError> {
        let on = u32::from(stamps == StampSource::Program);
        let mut ebpf = EbpfLoader::new()
            .override_global("porto_stamp_meta", &on, true)
            .load(OBJECT)
            .map_err(|e| load_error(&e))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| XdpError::Load {
                why: format!("no program {PROGRAM} in the object"),
                fix: "",
            })?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| load_error(&e))?;
        prog.load().map_err(|e| load_error(&e))?;
        if let StampSource::RingReap { why } = &stamps {
            tracing::warn!(why = %why, "XDP program loaded without its receive stamp; AF_XDP stamps are taken at RX ring reap");
        }
        Ok(XdpProgram {
            ebpf,
            iface: None,
            mode: None,
            fallback: None,
            stamps,
        })
    }

    /// Where the receive stamps of AF_XDP sockets on this program come from.
    pub fn stamps(&self) -> &StampSource {
        &self.stamps
    }

    /// Loads and attaches to `iface`: driver mode, else generic mode (the reason is kept).
    /// `only` forces one mode.
    pub fn attach(iface: &str, only: Option<AttachMode>) -> Result<XdpProgram, XdpError> {
        let mut p = XdpProgram::load()?;
        let ladder: &[AttachMode] = match only {
            Some(AttachMode::Driver) => &[AttachMode::Driver],
            Some(AttachMode::Generic) => &[AttachMode::Generic],
            None => &[AttachMode::Driver, AttachMode::Generic],
        };
        let mut why = Vec::new();
        for &mode in ladder {
            let xdp_mode = match mode {
                AttachMode::Driver => XdpMode::Driver,
                AttachMode::Generic => XdpMode::Skb,
            };
            match p.prog().attach(iface, xdp_mode) {
                Ok(link) => {
                    // aya attaches through bpf_link_create and, where the kernel answers
                    // EINVAL (before 5.9, or a filter), through netlink instead, without
                    // saying so; its link id's Debug form is the only place that tells.
                    if format!("{link:?}").contains("NlLinkId") {
                        why.push(
                            "bpf_link_create refused (EINVAL): attached through netlink instead (the program is not detached automatically if porto is killed)"
                                .to_string(),
                        );
                    }
                    p.iface = Some(iface.to_string());
                    p.mode = Some(mode);
                    p.fallback = (!why.is_empty()).then(|| why.join("; "));
                    if let Some(w) = &p.fallback {
                        tracing::warn!(iface, mode = %mode, why = %w, "XDP fell back");
                    }
                    return Ok(p);
                }
                Err(e) => why.push(format!("{mode}: {e}")),
            }
        }
        Err(XdpError::Attach {
            iface: iface.to_string(),
            why: why.join("; "),
        })
    }

    fn prog(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(PROGRAM)
            .expect("checked at load")
            .try_into()
            .expect("checked at load")
    }

    /// The mode obtained, and why a better one was not (if it was not).
    pub fn mode(&self) -> Option<(AttachMode, Option<&str>)> {
        self.mode.map(|m| (m, self.fallback.as_deref()))
    }

    pub fn iface(&self) -> Option<&str> {
        self.iface.as_deref()
    }

    /// Steers UDP datagrams for `local` (an address and port; the unspecified address takes
    /// every address of its family, as a wildcard bind does) to the AF_XDP sockets. Only
    /// those: traffic to the same port for another address stays the kernel's.
    pub fn add_bind(&mut self, local: SocketAddr) -> Result<(), XdpError> {
        self.group_map::<BindKey>("binds")?
            .insert(BindKey::of(local), 1, 0)
            .map_err(|e| map_error("binds", e))
    }

    /// Stops steering `local`.
    pub fn remove_bind(&mut self, local: SocketAddr) -> Result<(), XdpError> {
        self.group_map::<BindKey>("binds")?
            .remove(&BindKey::of(local))
            .map_err(|e| map_error("binds", e))
    }

    /// One of the program's hash maps with `u8` values (`binds`, `groups`, `groups6`,
    /// `blocked`, `blocked6`).
    fn group_map<K: aya::Pod>(&mut self, name: &'static str) -> Result<HashMap<&mut MapData, K, u8>, XdpError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or_else(|| map_error(name, "missing from the object"))?;
        HashMap::try_from(map).map_err(|e| map_error(name, e))
    }

    /// Sets (`on`) or clears `group`'s entry for `source` (None: any source, the zero key)
    /// in the table of its family: `groups`/`groups6` (steered memberships) or
    /// `blocked`/`blocked6` (sources blocked from an any-source one). `source` must be of the
    /// group's family.
    fn set_entry(
        &mut self,
        tables: [&'static str; 2],
        group: IpAddr,
        source: Option<IpAddr>,
        on: bool,
    ) -> Result<(), XdpError> {
        match (group, source) {
            (IpAddr::V4(g), None | Some(IpAddr::V4(_))) => {
                let k = GroupKey {
                    group: u32::from_ne_bytes(g.octets()),
                    source: match source {
                        Some(IpAddr::V4(s)) => u32::from_ne_bytes(s.octets()),
                        _ => 0,
                    },
                };
                let mut m = self.group_map::<GroupKey>(tables[0])?;
                if on { m.insert(k, 1, 0) } else { m.remove(&k) }.map_err(|e| map_error(tables[0], e))
            }
            (IpAddr::V6(g), None | Some(IpAddr::V6(_))) => {
                let k = Group6Key {
                    group: g.octets(),
                    source: match source {
                        Some(IpAddr::V6(s)) => s.octets(),
                        _ => [0; 16],
                    },
                };
                let mut m = self.group_map::<Group6Key>(tables[1])?;
                if on { m.insert(k, 1, 0) } else { m.remove(&k) }.map_err(|e| map_error(tables[1], e))
            }
            _ => Err(map_error(tables[0], "the source is not of the group's family")),
        }
    }

    /// Steers multicast `group` (IPv4 or IPv6; from `source` only, or from any source) to
    /// AF_XDP.
    pub fn add_group(&mut self, group: IpAddr, source: Option<IpAddr>) -> Result<(), XdpError> {
        self.set_entry(["groups", "groups6"], group, source, true)
    }

    /// Stops steering a group (or one source of it).
    pub fn remove_group(&mut self, group: IpAddr, source: Option<IpAddr>) -> Result<(), XdpError> {
        self.set_entry(["groups", "groups6"], group, source, false)
    }

    /// Blocks (`on`) or unblocks `source` of a group steered from any source (exclude mode):
    /// its datagrams go to the kernel, counted filtered.
    pub fn set_blocked(&mut self, group: IpAddr, source: IpAddr, on: bool) -> Result<(), XdpError> {
        self.set_entry(["blocked", "blocked6"], group, Some(source), on)
    }

    /// Puts an AF_XDP socket in the slot of receive queue `queue`.
    pub fn set_socket(&mut self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut("xsks")
            .ok_or_else(|| map_error("xsks", "missing from the object"))?;
        let mut xsks: XskMap<&mut MapData> = XskMap::try_from(map).map_err(|e| map_error("xsks", e))?;
        xsks.set(queue, socket.as_raw_fd(), 0).map_err(|e| map_error("xsks", e))
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<ProgramCounters, XdpError> {
        let map = self
            .ebpf
            .map("stats")
            .ok_or_else(|| map_error("stats", "missing from the object"))?;
        let stats: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(|e| map_error("stats", e))?;
        let sum =
            |i: u32| -> Result<u64, XdpError> { Ok(stats.get(&i, 0).map_err(|e| map_error("stats", e))?.iter().sum()) };
        Ok(ProgramCounters {
            steered: sum(STAT_STEERED)?,
            passed: sum(STAT_PASSED)?,
            filtered: sum(STAT_FILTERED)?,
        })
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN; returns the XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, XdpError> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        };
        let r = self
            .prog()
            .test_run(opts)
            .map_err(|e| XdpError::TestRun(e.to_string()))?;
        Ok(r.return_value)
    }
}
