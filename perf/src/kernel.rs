//! The kernel-socket baseline: the servers everyone writes first, speaking the same
//! sockperf protocol as `porto echo` — blocking `recvfrom`/`sendto` for UDP, a
//! single-threaded epoll loop (mio) for TCP. Measured in the same run as porto.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::sockperf;

/// A kernel-socket echo server on its own (optionally pinned) thread.
pub struct KernelEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ServeCounters>>,
}

/// What a kernel-socket server did, for its report when it stops.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServeCounters {
    pub requests: u64,
    pub replies: u64,
    /// Messages that were not sockperf requests asking for a reply.
    pub ignored: u64,
    /// Replies the kernel refused (sendto failed).
    pub send_errors: u64,
    pub connections: u64,
    /// UDP: datagrams the kernel dropped for this socket (its receive buffer was full), from
    /// /proc/net/udp(6); `None` where it could not be read.
    pub kernel_drops: Option<u64>,
}

/// The kernel's drop count of UDP socket `fd` (the last column of its /proc/net/udp(6) line,
/// found by the socket's inode).
fn udp_drops(fd: std::os::fd::RawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string();
    ["/proc/net/udp", "/proc/net/udp6"].iter().find_map(|f| {
        std::fs::read_to_string(f).ok()?.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(9) == Some(&inode.as_str())).then(|| cols.last()?.parse().ok())?
        })
    })
}

impl std::fmt::Debug for KernelEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEcho").field("addr", &self.addr).finish()
    }
}

pub fn pin(core: Option<usize>) {
    if let Some(c) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
}

impl KernelEcho {
    /// Blocking UDP: one thread in recvfrom/sendto.
    pub fn udp(addr: SocketAddr, core: Option<usize>, stop: Arc<AtomicBool>) -> std::io::Result<KernelEcho> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            pin(core);
            let mut buf = vec![0u8; 65536];
            let mut c = ServeCounters::default();
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                c.requests += 1;
                if sockperf::make_reply(&mut buf[..n]) {
                    match sock.send_to(&buf[..n], peer) {
                        Ok(_) => c.replies += 1,
                        Err(_) => c.send_errors += 1,
                    }
                } else {
                    c.ignored += 1;
                }
            }
            c.kernel_drops = udp_drops(std::os::fd::AsRawFd::as_raw_fd(&sock));
            c
        });
        Ok(KernelEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// TCP on one epoll loop (edge-triggered, via mio).
    pub fn tcp(addr: SocketAddr, core: Option<usize>, stop: Arc<AtomicBool>) -> std::io::Result<KernelEcho> {
        let mut lst = TcpListener::bind(addr)?;
        let addr = lst.local_addr()?;
        let mut poll = Poll::new()?;
        poll.registry().register(&mut lst, Token(0), Interest::READABLE)?;
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            pin(core);
            let mut events = Events::with_capacity(1024);
            let mut conns: HashMap<usize, (TcpStream, Vec<u8>)> = HashMap::new();
            let mut next = 1;
            let mut buf = vec![0u8; 65536];
            let mut c = ServeCounters::default();
            while !st.load(Ordering::Relaxed) {
                if poll.poll(&mut events, Some(Duration::from_millis(50))).is_err() {
                    continue;
                }
                for ev in events.iter() {
                    if ev.token() == Token(0) {
                        while let Ok((mut s, _)) = lst.accept() {
                            let _ = s.set_nodelay(true);
                            if poll
                                .registry()
                                .register(&mut s, Token(next), Interest::READABLE)
                                .is_ok()
                            {
                                conns.insert(next, (s, Vec::with_capacity(sockperf::MESSAGE_LEN_MAX)));
                                next += 1;
                                c.connections += 1;
                            }
                        }
                        continue;
                    }
                    let key = ev.token().0;
                    let Some((s, pending)) = conns.get_mut(&key) else {
                        continue;
                    };
                    if !serve_readable(s, pending, &mut buf) {
                        conns.remove(&key);
                    }
                }
            }
            c
        });
        Ok(KernelEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until the server thread ends (after `stop` is set); what it did.
    pub fn join(mut self) -> ServeCounters {
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default()
    }
}

/// Reads until EAGAIN, answering whole messages; false when the connection is done.
fn serve_readable(s: &mut TcpStream, pending: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    loop {
        match s.read(buf) {
            Ok(0) => return false,
            Ok(n) => {
                pending.extend_from_slice(&buf[..n]);
                if sockperf::answer_stream(pending, |m| write_all_blocking(s, m)).is_err() {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Replies are small and the peer reads them; spin through a full send buffer.
fn write_all_blocking(s: &mut TcpStream, mut m: &[u8]) -> std::io::Result<()> {
    while !m.is_empty() {
        match s.write(m) {
            Ok(n) => m = &m[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Drop for KernelEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
