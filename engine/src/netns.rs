//! A test and demo topology: two network namespaces joined by a multi-queue veth pair, both
//! ends inside namespaces this process made, addresses from the benchmarking range
//! 198.18.0.0/15 and 2001:2::/48 (RFC 5180), with a multicast route (224.0.0.0/4) on each
//! end. Everything is deleted when the [`Topology`] drops — also when a test
//! panics. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), iproute2 and ethtool (TX checksum
//! offload is turned off on both ends so frames carry full checksums, as on a wire).
//!
//! ```text
//!   netns <prefix>-a                       netns <prefix>-b
//!   ┌──────────────────┐   veth, N queues  ┌──────────────────┐
//!   │ va 198.18.0.1/24 ├───────────────────┤ vb 198.18.0.2/24 │
//!   │    2001:2::1/64  │                   │    2001:2::2/64  │
//!   └──────────────────┘                   └──────────────────┘
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::sys;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Which end of the pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// The two namespaces and the veth pair; removed on drop.
#[derive(Debug)]
pub struct Topology {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub ip_a: Ipv4Addr,
    pub ip_b: Ipv4Addr,
    pub ip6_a: Ipv6Addr,
    pub ip6_b: Ipv6Addr,
    pub queues: u32,
}

/// Why a topology could not be made.
#[derive(Debug, thiserror::Error)]
#[error("network namespace set-up failed at `{cmd}`: {why} (needs root, iproute2 and ethtool)")]
pub struct NetnsError {
    pub cmd: String,
    pub why: String,
}

/// TX checksum offload on `ifname` in namespace `ns` (ethtool -K tx on|off).
fn set_tx_offload(ns: &str, ifname: &str, on: bool) -> Result<(), NetnsError> {
    let v = if on { "on" } else { "off" };
    run("ip", &["netns", "exec", ns, "ethtool", "-K", ifname, "tx", v])
}

fn run(program: &str, args: &[&str]) -> Result<(), NetnsError> {
    let cmd = || format!("{program} {}", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| NetnsError {
        cmd: cmd(),
        why: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError {
            cmd: cmd(),
            why: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip(args: &[&str]) -> Result<(), NetnsError> {
    run("ip", args)
}

impl Topology {
    /// Creates `<prefix>-<pid>-<n>-a` and `-b` with a `queues`-queue veth pair between them.
    pub fn create(prefix: &str, queues: u32) -> Result<Topology, NetnsError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{prefix}-{}-{n}", std::process::id());
        let t = Topology {
            ns_a: format!("{base}-a"),
            ns_b: format!("{base}-b"),
            // Interface names are at most 15 bytes and live inside the namespaces.
            if_a: "va".into(),
            if_b: "vb".into(),
            ip_a: Ipv4Addr::new(198, 18, 0, 1),
            ip_b: Ipv4Addr::new(198, 18, 0, 2),
            ip6_a: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 1),
            ip6_b: Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 2),
            queues,
        };
        // From here on, drop cleans up whatever was made.
        ip(&["netns", "add", &t.ns_a])?;
        ip(&["netns", "add", &t.ns_b])?;
        let q = queues.to_string();
        ip(&[
            "-n",
            &t.ns_a,
            "link",
            "add",
            &t.if_a,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            &t.if_b,
            "netns",
            &t.ns_b,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
        ])?;
        for (ns, ifname, addr, addr6) in [(&t.ns_a, &t.if_a, t.ip_a, t.ip6_a), (&t.ns_b, &t.if_b, t.ip_b, t.ip6_b)] {
            // veth offloads the UDP checksum to a "device" that never computes it: frames
            // would reach XDP with a partial checksum, which porto rightly rejects. Real NICs
            // put full checksums on the wire; make the veth do the same.
            set_tx_offload(ns, ifname, false)?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", ifname])?;
            // nodad: usable at once, no duplicate-address probe on a link we alone use.
            ip(&["-n", ns, "addr", "add", &format!("{addr6}/64"), "dev", ifname, "nodad"])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", ifname])?;
        }
        Ok(t)
    }

    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::A => &self.ns_a,
            Side::B => &self.ns_b,
        }
    }

    pub fn iface(&self, side: Side) -> &str {
        match side {
            Side::A => &self.if_a,
            Side::B => &self.if_b,
        }
    }

    pub fn addr(&self, side: Side) -> Ipv4Addr {
        match side {
            Side::A => self.ip_a,
            Side::B => self.ip_b,
        }
    }

    /// Moves the calling thread (and threads it spawns later) into `side`'s namespace.
    pub fn addr6(&self, side: Side) -> Ipv6Addr {
        match side {
            Side::A => self.ip6_a,
            Side::B => self.ip6_b,
        }
    }

    /// The index of `side`'s interface (for IPv6 multicast calls).
    pub fn ifindex(&self, side: Side) -> std::io::Result<u32> {
        let out = self
            .command(side, "cat")
            .arg(format!("/sys/class/net/{}/ifindex", self.iface(side)))
            .output()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| std::io::Error::other(format!("no ifindex for {}", self.iface(side))))
    }

    pub fn enter(&self, side: Side) -> std::io::Result<()> {
        sys::netns::enter(&format!("/var/run/netns/{}", self.ns(side)))
    }

    /// A command that runs inside `side`'s namespace (`ip netns exec`).
    pub fn command(&self, side: Side, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns(side), program]);
        c
    }

    /// Turns TX checksum offload on `side`'s interface on (a veth's default, which a new
    /// topology turns off) or off: with it on, a kernel socket's UDP frames leave with an
    /// unfinished checksum.
    pub fn set_tx_offload(&self, side: Side, on: bool) -> Result<(), NetnsError> {
        set_tx_offload(self.ns(side), self.iface(side), on)
    }

    /// Runs `ip` inside `side`'s namespace (e.g. `["link", "set", "vb", "mtu", "3000"]`).
    pub fn ip(&self, side: Side, args: &[&str]) -> Result<(), NetnsError> {
        let mut all = vec!["-n", self.ns(side)];
        all.extend_from_slice(args);
        ip(&all)
    }
}

/// The MAC address of `iface` in the calling thread's namespace.
pub fn mac_of(iface: &str) -> std::io::Result<crate::wire::MacAddr> {
    sys::net::hw_addr(iface).map(crate::wire::MacAddr)
}

/// Sends one raw Ethernet frame out of `iface` (in the calling thread's namespace): how a
/// test peer injects malformed traffic.
pub fn send_raw_frame(iface: &str, frame: &[u8]) -> std::io::Result<()> {
    sys::net::send_raw_frame(iface, frame)
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and so the pair.
        for ns in [&self.ns_a, &self.ns_b] {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!(ns = %ns, error = %e, "removing a test namespace failed");
            }
        }
    }
}
