//! `porto mcast pub|sub`: a sequenced multicast feed and N zero-copy subscribers, the way a
//! market-data consumer would run them; and the pieces `porto bench fanout` shares.
//!
//! Message layout: `[seq u64 BE][sent at, ns since the Unix epoch, u64 BE][padding]`. The
//! publisher and subscribers share this machine's clock, so latency is one-way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::drops::Drops;
use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use porto::fanout::{Policy, Subscription};
use porto::rio::RioNotify;
use porto::{Config, Delivery, Interface, Shard, SocketOptions, UdpSocket, XdpOptions, XdpUdpSocket};

/// Sequence number and timestamp.
pub const HEADER_LEN: usize = 16;

#[derive(Subcommand, Debug)]
pub enum McastCmd {
    /// Publish sequenced messages to a group at a fixed rate.
    Pub(PubArgs),
    /// Receive a group once and fan it out to N subscribers; report each one.
    Sub(SubArgs),
}

#[derive(Args, Debug)]
pub struct PubArgs {
    /// Group and port, e.g. `239.1.1.1:5000` or `[ff3e::1]:5000`.
    #[arg(long)]
    group: SocketAddr,
    /// Messages per second (open loop: sent on schedule, however the receivers keep up).
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Message size in bytes (at least 16: sequence and timestamp).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(16..=1472))]
    size: u32,
    #[arg(long, default_value_t = 5.0, value_parser = crate::positive_arg)]
    seconds: f64,
    /// Outgoing interface: an IPv4 address (default 127.0.0.1), or an IPv6 interface index.
    #[arg(long)]
    iface: Option<String>,
    /// Multicast TTL / hop limit.
    #[arg(long, default_value_t = 1)]
    ttl: u8,
    /// Source address to send from (default: any).
    #[arg(long)]
    source: Option<IpAddr>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PolicyArg {
    Lossy,
    Reliable,
}

#[derive(Args, Debug)]
pub struct SubArgs {
    /// Group and port, e.g. 239.1.1.1:5000.
    #[arg(long)]
    group: SocketAddr,
    /// Subscriptions sharing each received datagram.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Source-specific: accept the group only from this source.
    #[arg(long)]
    source: Option<IpAddr>,
    /// Interface to join on: an IPv4 address (default 127.0.0.1), or an IPv6 interface index.
    #[arg(long)]
    iface: Option<String>,
    #[arg(long, value_enum, default_value_t = PolicyArg::Lossy)]
    policy: PolicyArg,
    /// Queue depth per subscription.
    #[arg(long, default_value_t = 4096)]
    depth: usize,
    /// Consumer threads the subscriptions are spread over (0: consume on the shard's own
    /// thread, polling mode).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = crate::positive_arg)]
    seconds: Option<f64>,
    /// Receive through AF_XDP on this interface (root; --addr is its address).
    #[arg(long, value_name = "IFACE")]
    xdp: Option<String>,
    /// The interface's address of the group's family, with --xdp.
    #[arg(long)]
    addr: Option<IpAddr>,
}

pub fn run(cmd: McastCmd) -> Result<(), Box<dyn std::error::Error>> {
    match cmd {
        McastCmd::Pub(a) => publish(&a),
        McastCmd::Sub(a) => subscribe(&a),
    }
}

/// Now, in ns since the Unix epoch (the clock of message stamps and kernel timestamps).
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Writes the header of message `seq` into `b` (at least HEADER_LEN bytes).
pub fn stamp(b: &mut [u8], seq: u64) {
    b[..8].copy_from_slice(&seq.to_be_bytes());
    b[8..16].copy_from_slice(&unix_ns().to_be_bytes());
}

/// The sequence number of a message, if it is one.
pub fn seq_of(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(..8)?.try_into().ok()?))
}

/// When the publisher stamped a message, ns since the epoch (0 if it is too short).
fn sent_at(b: &[u8]) -> u64 {
    b.get(8..16)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// One-way latency of a message (its stamp to now), in ns; reads the clock.
pub fn latency_of(b: &[u8]) -> u64 {
    unix_ns().saturating_sub(sent_at(b))
}

fn iface(spec: Option<&str>, group: &SocketAddr) -> Result<Interface, String> {
    match (group, spec) {
        (SocketAddr::V4(_), None) => Ok(Interface::V4(Ipv4Addr::LOCALHOST)),
        (SocketAddr::V4(_), Some(s)) => s
            .parse()
            .map(Interface::V4)
            .map_err(|_| format!("--iface {s}: an IPv4 address for an IPv4 group")),
        (SocketAddr::V6(_), Some(s)) => s
            .parse()
            .map(Interface::Index)
            .map_err(|_| format!("--iface {s}: an interface index for an IPv6 group")),
        (SocketAddr::V6(_), None) => Err("an IPv6 group needs --iface INDEX".into()),
    }
}

fn stop_flag() -> Result<Arc<AtomicBool>, std::io::Error> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn shard_config() -> Config {
    Config {
        pin: false,
        frames_per_shard: 16384,
        recv_frames: 4096,
        ..Config::default()
    }
}

/// A publisher socket: multicast out of `iface`, looped back to local members.
pub fn publisher(
    h: &porto::ShardHandle,
    group: &SocketAddr,
    source: Option<IpAddr>,
    iface: Interface,
    ttl: u8,
) -> Result<UdpSocket, Box<dyn std::error::Error>> {
    let any = porto::unspecified(group.ip());
    let s = UdpSocket::bind(
        h,
        SocketAddr::new(source.unwrap_or(any), 0),
        &SocketOptions {
            send_buffer: Some(4 << 20),
            ..SocketOptions::default()
        },
        Delivery::Poll { key: 0 },
    )?;
    s.set_multicast_if(iface)?;
    s.set_multicast_loop(true)?;
    s.set_multicast_ttl(ttl)?;
    Ok(s)
}

fn publish(a: &PubArgs) -> Result<(), Box<dyn std::error::Error>> {
    let stop = stop_flag()?;
    let mut shard = Shard::new(&shard_config(), None)?;
    let h = shard.handle();
    let sock = publisher(&h, &a.group, a.source, iface(a.iface.as_deref(), &a.group)?, a.ttl)?;
    println!(
        "porto mcast pub: {} B to {} at {} msg/s for {} s",
        a.size, a.group, a.rate, a.seconds
    );
    let (mut sent, mut failed, mut nobufs) = (0u64, 0u64, 0u64);
    let mut out = Vec::with_capacity(256);
    let t0 = Instant::now();
    let end = Duration::from_secs_f64(a.seconds);
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) && t0.elapsed() < end {
        // Open loop: every message due by now goes now.
        let due = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
        while seq < due {
            let Ok(mut b) = h.pool().alloc() else {
                nobufs += 1;
                break;
            };
            b.set_len(a.size as usize);
            stamp(&mut b, seq);
            if sock.send_to(b, a.group, seq).is_err() {
                nobufs += 1;
                break;
            }
            seq += 1;
        }
        shard.poll(&mut out, 256);
        for c in out.drain(..) {
            match c.result {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while sent + failed < seq && Instant::now() < deadline {
        shard.poll(&mut out, 256);
        for c in out.drain(..) {
            match c.result {
                Ok(_) => sent += 1,
                Err(_) => failed += 1,
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "porto mcast pub: {sent} sent ({:.0} msg/s), {failed} failed, {nobufs} times out of buffers",
        sent as f64 / secs
    );
    Ok(())
}

/// What one subscriber saw.
#[derive(Clone, Debug)]
pub struct Tracker {
    pub delivered: u64,
    /// Messages skipped (a later sequence arrived first).
    pub gaps: u64,
    /// Messages at or below one already seen (duplicates or reordering).
    pub late: u64,
    next: Option<u64>,
    pub latency_ns: Histogram<u64>,
    /// The same latency split at the kernel's (or XDP program's) receive stamp: publisher →
    /// receive, and receive → the subscriber's dequeue. Stamped messages only.
    pub to_kernel_ns: Histogram<u64>,
    pub to_app_ns: Histogram<u64>,
    /// First and last delivery.
    span: Option<(Instant, Instant)>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

impl Default for Tracker {
    fn default() -> Tracker {
        Tracker {
            delivered: 0,
            gaps: 0,
            late: 0,
            next: None,
            latency_ns: histogram(),
            to_kernel_ns: histogram(),
            to_app_ns: histogram(),
            span: None,
        }
    }
}

impl Tracker {
    /// Deliveries per second between the first and the last.
    pub fn rate(&self) -> f64 {
        match self.span {
            Some((a, b)) if b > a => (self.delivered - 1) as f64 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// Counts message `msg`, received at `rx_ns` (the kernel's stamp, ns since the epoch) if
    /// stamped.
    pub fn see(&mut self, msg: &[u8], rx_ns: Option<u64>) {
        let Some(seq) = seq_of(msg) else { return };
        self.delivered += 1;
        let now = unix_ns();
        let sent = sent_at(msg);
        let _ = self.latency_ns.record(now.saturating_sub(sent).max(1));
        if let Some(rx) = rx_ns {
            let _ = self.to_kernel_ns.record(rx.saturating_sub(sent).max(1));
            let _ = self.to_app_ns.record(now.saturating_sub(rx).max(1));
        }
        let now = Instant::now();
        self.span = Some(self.span.map_or((now, now), |(first, _)| (first, now)));
        match self.next {
            Some(n) if seq < n => self.late += 1,
            Some(n) => {
                self.gaps += seq - n;
                self.next = Some(seq + 1);
            }
            None => self.next = Some(seq + 1),
        }
    }
}

fn subscribe(a: &SubArgs) -> Result<(), Box<dyn std::error::Error>> {
    let stop = stop_flag()?;
    let mut shard = Shard::new(&shard_config(), None)?;
    let h = shard.handle();
    let policy = match a.policy {
        PolicyArg::Lossy => Policy::Lossy,
        PolicyArg::Reliable => Policy::Reliable,
    };
    // Keep the receiving socket alive for the whole run.
    let (fan, _kernel_sock, _xdp_sock, how) = if let Some(ifname) = &a.xdp {
        let Some(addr) = a.addr.filter(|ip| ip.is_ipv4() == a.group.is_ipv4()) else {
            return Err("--xdp needs --addr, the interface's address of the group's family".into());
        };
        if a.source.is_some_and(|s| s.is_ipv4() != a.group.is_ipv4()) {
            return Err("--source must be of the group's family".into());
        }
        let mut s = XdpUdpSocket::bind(
            &h,
            SocketAddr::new(addr, a.group.port()),
            &XdpOptions {
                timestamps: true,
                ..XdpOptions::new(ifname)
            },
            Delivery::Poll { key: 1 },
        )?;
        s.join(a.group.ip(), a.source)?;
        let fan = s.fan_out(1)?;
        let how = format!("{}", s.info());
        (fan, None, Some(s), how)
    } else {
        let any = porto::unspecified(a.group.ip());
        let s = UdpSocket::bind(
            &h,
            SocketAddr::new(any, a.group.port()),
            &SocketOptions {
                recv_buffer: Some(8 << 20),
                timestamps: true,
                ..SocketOptions::default()
            },
            Delivery::Poll { key: 1 },
        )?;
        let ifc = iface(a.iface.as_deref(), &a.group)?;
        match a.source {
            Some(src) => s.join_source(a.group.ip(), src, Some(ifc))?,
            None => s.join(a.group.ip(), Some(ifc))?,
        }
        let fan = s.fan_out(1)?;
        let how = format!("{} multishot receive", s.core().transport());
        (fan, Some(s), None, how)
    };
    let mut subs: Vec<Subscription> = (0..a.subscribers.max(1))
        .map(|_| fan.subscribe(policy, a.depth, RioNotify::None))
        .collect::<Result<_, _>>()?;
    println!(
        "porto mcast sub: {} on {}, {} {:?} subscriber(s), depth {}, {}",
        a.group,
        how,
        subs.len(),
        policy,
        a.depth,
        if a.threads == 0 {
            "consumed on the shard thread".to_string()
        } else {
            format!("consumed by {} thread(s)", a.threads)
        }
    );
    let t0 = Instant::now();
    let end = a.seconds.map(Duration::from_secs_f64);
    let running = || !stop.load(Ordering::Relaxed) && end.is_none_or(|e| t0.elapsed() < e);
    let mut out = Vec::new();
    let trackers: Vec<Tracker> = if a.threads == 0 {
        let mut tr = vec![Tracker::default(); subs.len()];
        while running() {
            shard.poll(&mut out, 256);
            out.clear();
            for (s, t) in subs.iter_mut().zip(&mut tr) {
                while let Some(d) = s.try_recv() {
                    t.see(&d.buf, d.rx_timestamp_ns().map(NonZeroU64::get));
                }
            }
        }
        tr
    } else {
        // Each consumer thread owns its share of the subscriptions (single consumer each).
        let mut shares: Vec<Vec<(usize, Subscription, Tracker)>> = (0..a.threads).map(|_| Vec::new()).collect();
        for (i, s) in subs.drain(..).enumerate() {
            shares[i % a.threads].push((i, s, Tracker::default()));
        }
        let done = AtomicBool::new(false);
        let mut all: Vec<(usize, Subscription, Tracker)> = std::thread::scope(|sc| {
            let workers: Vec<_> = shares
                .into_iter()
                .map(|mut mine| {
                    let done = &done;
                    sc.spawn(move || {
                        while !done.load(Ordering::Relaxed) {
                            let mut any = false;
                            for (_, s, t) in &mut mine {
                                while let Some(d) = s.try_recv() {
                                    t.see(&d.buf, d.rx_timestamp_ns().map(NonZeroU64::get));
                                    any = true;
                                }
                            }
                            if !any {
                                std::thread::yield_now();
                            }
                        }
                        mine
                    })
                })
                .collect();
            while running() {
                shard.poll(&mut out, 256);
                out.clear();
            }
            done.store(true, Ordering::Relaxed);
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("consumer thread"))
                .collect()
        });
        all.sort_by_key(|(i, _, _)| *i);
        all.into_iter()
            .map(|(_, s, t)| {
                subs.push(s);
                t
            })
            .collect()
    };
    let secs = t0.elapsed().as_secs_f64();
    print_subscribers(&subs, &trackers, secs, fan.counters().received);
    // What the engine itself lost, by reason (the subscribers' drops are in the table).
    let mut drops = Drops::default();
    drops.add(shard.stats());
    drops.print();
    Ok(())
}

fn print_subscribers(subs: &[Subscription], tr: &[Tracker], secs: f64, received: u64) {
    println!(
        "(msg/s: between each subscriber's first and last delivery; latency: one-way, publisher stamp to dequeue)"
    );
    println!(
        "{:>5} {:>11} {:>10} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "sub", "delivered", "msg/s", "dropped", "gaps", "late", "p50 µs", "p99 µs", "max µs"
    );
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let shown = 16.min(tr.len());
    for (i, (s, t)) in subs.iter().zip(tr).enumerate().take(shown) {
        println!(
            "{:>5} {:>11} {:>10.0} {:>9} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1}",
            i,
            t.delivered,
            t.rate(),
            s.counters().dropped,
            t.gaps,
            t.late,
            us(&t.latency_ns, 0.5),
            us(&t.latency_ns, 0.99),
            t.latency_ns.max() as f64 / 1000.0
        );
    }
    if tr.len() > shown {
        println!("  ... {} more", tr.len() - shown);
    }
    let mut all = Tracker::default();
    for t in tr {
        all.latency_ns.add(&t.latency_ns).expect("same bounds");
        all.to_kernel_ns.add(&t.to_kernel_ns).expect("same bounds");
        all.to_app_ns.add(&t.to_app_ns).expect("same bounds");
        all.delivered += t.delivered;
        all.gaps += t.gaps;
        all.late += t.late;
    }
    let dropped: u64 = subs.iter().map(|s| s.counters().dropped).sum();
    println!(
        "{:>5} {:>11} {:>10.0} {:>9} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1}",
        "all",
        all.delivered,
        tr.iter().map(Tracker::rate).sum::<f64>(),
        dropped,
        all.gaps,
        all.late,
        us(&all.latency_ns, 0.5),
        us(&all.latency_ns, 0.99),
        all.latency_ns.max() as f64 / 1000.0
    );
    println!("received once by the shard: {received} datagrams in {secs:.1} s");
    print_split(&all);
}

/// Where the one-way latency went, from the receive stamps: the publisher's stamp to the
/// kernel's (or XDP program's) receive, and that receive to the subscriber's dequeue.
fn print_split(all: &Tracker) {
    let stamped = all.to_app_ns.len();
    if stamped == 0 {
        println!(
            "latency split: no receive stamps (the kernel stamps asynchronously after a socket asks; none arrived)"
        );
        return;
    }
    println!(
        "latency split ({stamped} of {} deliveries stamped at receive), µs:",
        all.delivered
    );
    println!(
        "  {:<28} {:>9} {:>9} {:>9} {:>9}",
        "segment", "p50", "p99", "p99.9", "max"
    );
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, h) in [
        ("publisher -> kernel receive", &all.to_kernel_ns),
        ("kernel receive -> dequeue", &all.to_app_ns),
        ("publisher -> dequeue", &all.latency_ns),
    ] {
        println!(
            "  {name:<28} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999),
            h.max() as f64 / 1000.0
        );
    }
}
