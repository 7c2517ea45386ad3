//! Sockets bound to a shard: overlapped operations (each with a per-operation token and
//! exactly one terminal completion) beside plain blocking calls.
//!
//! A socket's fd is owned by its shard from creation on; the handle keeps the raw number for
//! blocking calls and options. Dropping the handle asks the shard to cancel what is in flight
//! (each such op completes `Aborted`) and close the fd once the kernel is done with it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, SetupError};
use crate::fanout::FanOut;
use crate::op::Request;
use crate::pool::{Buf, Gather};
use crate::port::CompletionPort;
use crate::proto::{Command, Delivery, QosFlow, ShardHandle, ShardShared, SockId, Transport};
use crate::qos::TrafficType;
use crate::sys::net::{self, SourceOp};
use crate::sys::xsk::{Xsk, XskMode, XskStatistics};
use crate::wire::MacAddr;
use crate::xdp::port::{XdpPort, RX_BATCH_MAX};
use crate::xdp::{AttachMode, ProgramCounters, SharedProgram, StampSource, Stamping};

/// An operation the shard could not accept; the buffer it carried comes back.
#[derive(Debug)]
pub struct Rejected {
    pub error: Error,
    pub buffer: Option<Buf>,
    pub gather: Option<Gather>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Rejected {}

pub use crate::wire::unspecified;

/// Socket options applied at creation.
#[derive(Clone, Debug, Default)]
pub struct SocketOptions {
    /// SO_REUSEPORT, to spread one port over several shards.
    pub reuse_port: bool,
    /// SO_RCVBUF / SO_SNDBUF in bytes.
    pub recv_buffer: Option<usize>,
    pub send_buffer: Option<usize>,
    /// IPV6_V6ONLY for IPv6 sockets (default: the system's).
    pub v6_only: Option<bool>,
    /// Deliver each datagram's TOS / traffic-class byte in `Completion::tos`
    /// (IP_RECVTOS / IPV6_RECVTCLASS).
    pub recv_tos: bool,
    /// Stamp each received datagram with the kernel's receive time, in
    /// `Completion::timestamp_ns` (SO_TIMESTAMPING, software receive stamps; the NIC's
    /// hardware stamp where only it is given). Multishot datagram receives, under io_uring and
    /// epoll alike. The kernel switches stamping on asynchronously: the first datagrams after
    /// the socket asked may come unstamped (`None`). (AF_XDP: `XdpOptions::timestamps`.)
    pub timestamps: bool,
    /// Software TX timestamps (SO_TIMESTAMPING TX_SOFTWARE with OPT_ID, OPT_TSONLY): each
    /// successful datagram send gets a timestamp id (0, 1, 2, … in send order, as Windows'
    /// SIO_TIMESTAMPING numbers them), and [`UdpSocket::recv_tx_timestamps`] delivers
    /// (id, time) as `TxTimestamp` completions, read from the error queue without a syscall
    /// per send on io_uring.
    pub tx_timestamps: bool,
}

impl SocketOptions {
    /// A plain kernel UDP socket with these options, bound to `addr`: not on any shard (for
    /// baselines, and for code that wants the kernel's own socket beside porto's). It is
    /// non-blocking, as porto's sockets are: `set_nonblocking(false)` for blocking calls.
    pub fn bind_kernel_udp(&self, addr: SocketAddr) -> Result<std::net::UdpSocket, SetupError> {
        let (fd, _) = new_socket(&addr, net::Kind::Udp, self)?;
        net::bind(fd.as_raw_fd(), &addr).map_err(|e| SetupError::bind(addr, e))?;
        Ok(std::net::UdpSocket::from(fd))
    }

    /// A TCP socket bound to `addr` with these options, not listening yet (Winsock's `bind`
    /// before `listen`, or before `ConnectEx`): hand it to [`TcpListener::adopt`], or to
    /// [`TcpStream::adopt`] and then [`TcpStream::connect_to`].
    pub fn bind_kernel_tcp(&self, addr: SocketAddr) -> Result<OwnedFd, SetupError> {
        let (fd, _) = new_socket(&addr, net::Kind::Tcp, self)?;
        net::bind(fd.as_raw_fd(), &addr).map_err(|e| SetupError::bind(addr, e))?;
        Ok(fd)
    }

    /// Receives one datagram on a kernel socket made by [`bind_kernel_udp`](Self::bind_kernel_udp)
    /// (blocking as the socket is), with the kernel's receive stamp when the options asked
    /// for `timestamps`: (bytes, CLOCK_REALTIME ns). For baselines and load generators that
    /// measure with the kernel's own socket.
    pub fn recv_stamped(
        sock: &std::net::UdpSocket,
        buf: &mut [u8],
    ) -> std::io::Result<(usize, Option<std::num::NonZeroU64>)> {
        let (n, c) = net::recv_cmsgs(sock.as_raw_fd(), buf)?;
        Ok((n, c.rx_ns))
    }

    /// Sets the options on `fd`; returns where its receive stamps will come from.
    fn apply(&self, fd: RawFd, v6: bool) -> Result<Stamping, SetupError> {
        let sys = |what, r: std::io::Result<()>| r.map_err(|source| SetupError::Syscall { what, source });
        sys(
            "setsockopt(SO_REUSEADDR)",
            net::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1),
        )?;
        if self.reuse_port {
            sys(
                "setsockopt(SO_REUSEPORT)",
                net::set_int(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1),
            )?;
        }
        if let Some(n) = self.recv_buffer {
            sys(
                "setsockopt(SO_RCVBUF)",
                net::set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, n as i32),
            )?;
        }
        if let Some(n) = self.send_buffer {
            sys(
                "setsockopt(SO_SNDBUF)",
                net::set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, n as i32),
            )?;
        }
        if self.recv_tos {
            let (level, name) = if v6 {
                (libc::IPPROTO_IPV6, libc::IPV6_RECVTCLASS)
            } else {
                (libc::IPPROTO_IP, libc::IP_RECVTOS)
            };
            sys("setsockopt(IP_RECVTOS)", net::set_int(fd, level, name, 1))?;
        }
        let mut stamping = Stamping::Off;
        if self.timestamps || self.tx_timestamps {
            let mut flags = libc::SOF_TIMESTAMPING_SOFTWARE;
            if self.timestamps {
                flags |= libc::SOF_TIMESTAMPING_RX_SOFTWARE;
            }
            if self.tx_timestamps {
                flags |= libc::SOF_TIMESTAMPING_TX_SOFTWARE
                    | libc::SOF_TIMESTAMPING_OPT_ID
                    | libc::SOF_TIMESTAMPING_OPT_TSONLY;
            }
            match net::set_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING, flags as i32) {
                Ok(()) => stamping = if self.timestamps { Stamping::Kernel } else { Stamping::Off },
                // Receive stamps have a fallback: the shard's clock when it reads the
                // datagram's completion. Send stamps do not.
                Err(e) if !self.tx_timestamps => {
                    tracing::warn!(
                        error = %e,
                        "the kernel refused SO_TIMESTAMPING: receive stamps are taken by the shard when it reads each completion (later than the kernel's, by the completion's wait)"
                    );
                    stamping = Stamping::Reap;
                }
                Err(source) => {
                    return Err(SetupError::Syscall {
                        what: "setsockopt(SO_TIMESTAMPING) for TX timestamps (no fallback: open the socket without SocketOptions::tx_timestamps)",
                        source,
                    })
                }
            }
        }
        if let (true, Some(only)) = (v6, self.v6_only) {
            sys(
                "setsockopt(IPV6_V6ONLY)",
                net::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, i32::from(only)),
            )?;
        }
        Ok(stamping)
    }
}

/// setsockopt(2) on a kernel socket with the option's bytes as given: for options set
/// before porto made the socket (Winsock programs set them between `WSASocket` and `bind`),
/// applied once it exists.
pub fn set_raw_option(fd: RawFd, level: i32, name: i32, value: &[u8]) -> std::io::Result<()> {
    net::set_bytes(fd, level, name, value)
}

/// Where a kernel socket's receive stamps come from, as the kernel says (SO_TIMESTAMPING).
pub(crate) fn kernel_stamping(fd: RawFd) -> Stamping {
    match net::get_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPING) {
        Ok(f) if f as u32 & libc::SOF_TIMESTAMPING_RX_SOFTWARE != 0 => Stamping::Kernel,
        _ => Stamping::Off,
    }
}

/// SO_PRIORITY for `traffic`. Priorities above 6 (Voice, Control: 802.1p 7) need CAP_NET_ADMIN
/// or CAP_NET_RAW; without them the socket gets 6, the highest an unprivileged process may
/// set, and a warning (once per process) names the fix — the DSCP marking is unaffected.
fn set_priority(fd: RawFd, traffic: TrafficType) -> Result<(), Error> {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let want = traffic.so_priority() as i32;
    match net::set_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, want) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && want > 6 => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "SO_PRIORITY {want} for {traffic:?} needs CAP_NET_ADMIN: using 6 (DSCP marking unchanged); \
                     grant it (setcap cap_net_admin+ep <program>, or AmbientCapabilities=CAP_NET_ADMIN) for {want}"
                );
            }
            Ok(net::set_int(fd, libc::SOL_SOCKET, libc::SO_PRIORITY, 6)?)
        }
        r => Ok(r?),
    }
}

/// The shard-side identity of a socket, shared by the typed sockets and RIO request queues.
///
/// The id carries its generation, so a copy that outlives the socket (a RIO queue) can only
/// get `NotSocket` from the shard, never reach the socket that reuses the index; a kernel
/// socket's fd is shared with the shard, so blocking calls and options through any copy act
/// on this socket or fail, never on a file that reused the number after a close.
#[derive(Debug)]
pub struct SocketCore {
    shared: Arc<ShardShared>,
    id: SockId,
    /// The kernel socket (None for AF_XDP, whose sockets the shard's port owns).
    file: Option<Arc<OwnedFd>>,
    /// The fd number, for calls that need one (AF_XDP: the first queue's socket).
    fd: RawFd,
    /// Only the original handle closes the socket; RIO queues hold non-owning copies.
    owner: bool,
    /// An AF_XDP socket (no kernel socket options).
    xdp: bool,
}

impl SocketCore {
    /// The socket's index in its shard's table (the simulated provider's address for it).
    #[cfg(test)]
    pub(crate) fn index(&self) -> u32 {
        self.id.index
    }

    /// Hands a kernel socket to its shard; `reap_stamps`: the kernel refused its receive
    /// stamps, so the shard stamps its completions.
    fn open(shard: &ShardHandle, fd: OwnedFd, delivery: Delivery, reap_stamps: bool) -> Result<SocketCore, SetupError> {
        let shared = shard.shared.clone();
        let id = shared.alloc_socket()?;
        let raw = fd.as_raw_fd();
        let file = Arc::new(fd);
        if let Err(cmd) = shared.send(Command::Open {
            sock: id,
            fd: file.clone(),
            delivery,
            reap_stamps,
        }) {
            drop(cmd);
            shared.free_socket_id(id.index);
            return Err(if shared.is_stopping() {
                SetupError::Stopped
            } else {
                SetupError::Limit("shard command queue")
            });
        }
        Ok(SocketCore {
            shared,
            id,
            file: Some(file),
            fd: raw,
            owner: true,
            xdp: false,
        })
    }

    /// Hands a bound port to its shard. On failure the port is closed here and every frame
    /// its rings hold goes back to the pool (the FILL ring was stocked at bind).
    fn open_xdp(shard: &ShardHandle, port: Box<XdpPort>, delivery: Delivery) -> Result<SocketCore, SetupError> {
        let shared = shard.shared.clone();
        let id = match shared.alloc_socket() {
            Ok(id) => id,
            Err(e) => {
                XdpPort::abandon(port, shard.pool());
                return Err(e);
            }
        };
        let raw = port.fd();
        if let Err(cmd) = shared.send(Command::OpenXdp {
            sock: id,
            port,
            delivery,
        }) {
            if let Command::OpenXdp { port, .. } = cmd {
                XdpPort::abandon(port, shard.pool());
            }
            shared.free_socket_id(id.index);
            return Err(if shared.is_stopping() {
                SetupError::Stopped
            } else {
                SetupError::Limit("shard command queue")
            });
        }
        Ok(SocketCore {
            shared,
            id,
            file: None,
            fd: raw,
            owner: true,
            xdp: true,
        })
    }

    pub(crate) fn clone_handle(&self) -> SocketCore {
        SocketCore {
            shared: self.shared.clone(),
            id: self.id,
            file: self.file.clone(),
            fd: self.fd,
            owner: false,
            xdp: self.xdp,
        }
    }

    /// The pool of the socket's shard: where its send buffers come from (a buffer of
    /// another shard's pool is copied).
    pub fn pool(&self) -> &crate::pool::Pool {
        &self.shared.pool
    }

    pub(crate) fn shard(&self) -> &ShardShared {
        &self.shared
    }

    pub(crate) fn id(&self) -> SockId {
        self.id
    }

    fn submit(&self, token: u64, req: Request) -> Result<(), Rejected> {
        self.shared
            .send(Command::Op {
                sock: self.id,
                token,
                req,
            })
            .map_err(|cmd| {
                let error = if self.shared.is_stopping() {
                    Error::Shutdown
                } else {
                    Error::NoBuffers
                };
                let (buffer, gather) = match cmd {
                    Command::Op { req, .. } => req.into_bufs(),
                    _ => (None, None),
                };
                Rejected { error, buffer, gather }
            })
    }

    /// A datagram receive (single-shot with an optional timeout, or multishot).
    fn recv_from(&self, token: u64, multishot: bool, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.submit(token, Request::RecvFrom { multishot, timeout })
    }

    /// Turns this socket's datagrams into a fan-out group: arms a multishot receive with
    /// `token` whose datagrams go to the group's subscribers (each exactly once, in order,
    /// sharing one frame) instead of completing; its errors and its end still complete to
    /// the socket's delivery.
    fn fan_out(&self, token: u64) -> Result<FanOut, SetupError> {
        let fan = FanOut::new(self.shared.clone(), self.id);
        let group = fan.state(self.shared.fanout_pending_max);
        self.shared
            .send(Command::FanOut { sock: self.id, group })
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        self.recv_from(token, true, None)
            .map_err(|_| SetupError::Limit("shard command queue"))?;
        Ok(fan)
    }

    /// One payload to every address in `dests`, each send its own completion (`peer` = the
    /// destination, no buffer: the frame returns to the pool after the last send).
    fn send_to_many(&self, buf: Buf, dests: &Arc<[SocketAddr]>, token: u64) -> Result<(), Rejected> {
        if dests.is_empty() {
            return Err(Rejected {
                error: Error::InvalidArgument,
                buffer: Some(buf),
                gather: None,
            });
        }
        self.submit(
            token,
            Request::SendToMany {
                buf: buf.freeze(),
                dests: dests.clone(),
            },
        )
    }

    /// A datagram send of `buf` to `addr`.
    fn send_to(&self, buf: Buf, addr: SocketAddr, token: u64, zerocopy: bool) -> Result<(), Rejected> {
        self.submit(
            token,
            Request::SendTo {
                buf,
                addr,
                zerocopy,
                tos: None,
            },
        )
    }

    /// Marks what this socket sends with `traffic`'s DSCP (kernel sockets: IP_TOS or
    /// IPV6_TCLASS, and SO_PRIORITY; AF_XDP: the TOS byte of every frame, checksum fixed),
    /// and gives its receives `traffic`'s inbound priority on the shard.
    pub fn set_traffic(&self, traffic: TrafficType) -> Result<(), Error> {
        self.mark(traffic, traffic.tos())
    }

    /// `traffic`'s class (SO_PRIORITY, inbound priority) with TOS byte `tos` on the wire.
    ///
    /// Where the kernel refuses the socket option (IP_TOS / IPV6_TCLASS), an unconnected
    /// datagram socket marks each datagram with a control message instead (its sends then
    /// go by sendmsg, so not zero-copy); a stream or a connected socket has no such path
    /// and the refusal is the error. A refused SO_PRIORITY costs the local queueing priority
    /// only: the DSCP mark stands, a warning names it, and [`marking`](Self::marking) reads
    /// back what the kernel holds.
    fn mark(&self, traffic: TrafficType, tos: u8) -> Result<(), Error> {
        let mut tos_cmsg = false;
        if !self.xdp {
            let fd = self.fd;
            let set = if self.local_addr()?.is_ipv6() {
                net::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_TCLASS, i32::from(tos))
            } else {
                net::set_int(fd, libc::IPPROTO_IP, libc::IP_TOS, i32::from(tos))
            };
            if let Err(e) = set {
                let datagram = matches!(net::get_int(fd, libc::SOL_SOCKET, libc::SO_TYPE), Ok(libc::SOCK_DGRAM));
                if !datagram || net::peer_addr(fd).is_ok() {
                    return Err(e.into());
                }
                tracing::warn!(error = %e, tos, "the kernel refused IP_TOS/IPV6_TCLASS: each datagram carries its mark as a control message");
                tos_cmsg = true;
            }
            if let Err(e) = set_priority(fd, traffic) {
                tracing::warn!(error = %e, ?traffic, "the kernel refused SO_PRIORITY: the DSCP mark stands, the local queueing priority does not");
            }
        }
        self.shared
            .send(Command::SetClass {
                sock: self.id,
                traffic,
                tos,
                tos_cmsg,
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// Asks the kernel for each datagram's destination address (IP_PKTINFO, and
    /// IPV6_RECVPKTINFO on an IPv6 socket, whose IPv4-mapped traffic reports through the
    /// first): what RIOReceiveEx's pLocalAddress needs. AF_XDP sockets: `InvalidArgument`.
    pub fn recv_local_addresses(&self) -> Result<(), Error> {
        if self.xdp {
            return Err(Error::InvalidArgument);
        }
        if self.local_addr()?.is_ipv6() {
            net::set_int(self.fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
            // A V6ONLY socket gets no IPv4 traffic: nothing to report there.
            let _ = net::set_int(self.fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1);
        } else {
            net::set_int(self.fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)?;
        }
        Ok(())
    }

    /// What the kernel socket marks its packets with now: (the IP_TOS / IPV6_TCLASS byte,
    /// SO_PRIORITY) — read back from the kernel, so a fallback shows (see
    /// [`set_traffic`](Self::set_traffic)). AF_XDP sockets: `InvalidArgument`.
    pub fn marking(&self) -> Result<(u8, u32), Error> {
        if self.xdp {
            return Err(Error::InvalidArgument);
        }
        let tos = if self.local_addr()?.is_ipv6() {
            net::get_int(self.fd, libc::IPPROTO_IPV6, libc::IPV6_TCLASS)?
        } else {
            net::get_int(self.fd, libc::IPPROTO_IP, libc::IP_TOS)?
        };
        let prio = net::get_int(self.fd, libc::SOL_SOCKET, libc::SO_PRIORITY)?;
        Ok((tos as u8, prio as u32))
    }

    /// QOSAddSocketToFlow: this socket's sends go through `flow` (marking, shaping, the
    /// class scheduler). The flow must belong to this socket's shard.
    pub fn set_flow(&self, flow: &QosFlow) -> Result<(), Error> {
        if !Arc::ptr_eq(&flow.shard, &self.shared) {
            return Err(Error::InvalidArgument);
        }
        self.mark(flow.traffic, flow.tos)?;
        self.shared
            .send(Command::SetSocketFlow {
                sock: self.id,
                flow: Some(flow.id),
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// QOSRemoveSocketFromFlow: the socket's sends leave its flow (unshaped, unscheduled from
    /// now on; those already queued in it go out) and lose its marking (TOS 0, priority 0).
    pub fn clear_flow(&self) -> Result<(), Error> {
        self.mark(TrafficType::BestEffort, 0)?;
        self.shared
            .send(Command::SetSocketFlow {
                sock: self.id,
                flow: None,
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// Re-associates the socket: completions of operations that end from now on go to
    /// `delivery` (CreateIoCompletionPort on a socket whose operations already ran, as an
    /// accepted socket after an AcceptEx that read its first data). Completions already
    /// delivered stay where they are.
    pub fn set_delivery(&self, delivery: Delivery) -> Result<(), Error> {
        self.shared
            .send(Command::SetDelivery {
                sock: self.id,
                delivery,
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// CancelIoEx: cancels the operations issued with `token`; each completes `Aborted`
    /// (unless it completed first). Cancelling nothing is not an error.
    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        self.cancel_matching(Some(token))
    }

    /// CancelIo / CancelIoEx with a NULL OVERLAPPED: every operation of this socket ends
    /// `Aborted` (each once), the socket stays open.
    pub fn cancel_all(&self) -> Result<(), Error> {
        self.cancel_matching(None)
    }

    fn cancel_matching(&self, token: Option<u64>) -> Result<(), Error> {
        self.shared
            .send(Command::Cancel { sock: self.id, token })
            .map_err(|_| Error::NoBuffers)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        Ok(net::local_addr(self.fd)?)
    }

    /// The connected peer, as the kernel has it (getpeername): `NotConnected` without one.
    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        Ok(net::peer_addr(self.fd)?)
    }

    /// connect(2) on a datagram socket: `addr` becomes its default destination and the only
    /// source it receives from (Winsock's `connect` on UDP). Immediate: no packet is sent.
    pub fn connect_datagram(&self, addr: SocketAddr) -> Result<(), Error> {
        Ok(net::connect_wait(self.fd, &addr, 0)?)
    }

    /// shutdown(2) on the kernel socket: `Read`, `Write` or `Both`.
    pub fn shutdown(&self, how: std::net::Shutdown) -> Result<(), Error> {
        let how = match how {
            std::net::Shutdown::Read => libc::SHUT_RD,
            std::net::Shutdown::Write => libc::SHUT_WR,
            std::net::Shutdown::Both => libc::SHUT_RDWR,
        };
        net::shutdown_raw(self.fd, how).map_err(Error::from)
    }

    /// The transport this socket's operations go through: its shard's provider (io_uring or
    /// epoll) for a kernel socket.
    pub fn transport(&self) -> Transport {
        self.shared
            .info
            .get()
            .map_or(Transport::IoUring, |i| i.provider.transport)
    }

    /// The shard this socket lives on.
    pub fn shard_index(&self) -> usize {
        self.shared.index
    }

    fn raw(&self) -> RawFd {
        self.fd
    }

    /// A stream (TCP) socket.
    pub(crate) fn is_stream(&self) -> bool {
        !self.xdp && net::get_int(self.fd, libc::SOL_SOCKET, libc::SO_TYPE).is_ok_and(|t| t == libc::SOCK_STREAM)
    }

    /// A handle to the same socket that never closes it: the owner closes it, and the kernel
    /// socket stays open until this handle drops too. For a blocking call made without
    /// holding the owner (a C socket's lock); once the owner has closed the socket, this
    /// handle's overlapped calls fail `NotSocket`.
    pub fn share(&self) -> SocketCore {
        self.clone_handle()
    }

    /// Waits up to `timeout` for `events` on the kernel socket: `TimedOut` if none came.
    fn wait_for(&self, events: libc::c_short, timeout: Option<Duration>) -> Result<(), Error> {
        if timeout != Some(Duration::ZERO) {
            // A blocking wait: the thread's completion-port hold ends, as on Windows.
            CompletionPort::release_current_thread();
        }
        if net::poll_one(self.fd, events, blocking_timeout_ms(timeout))? {
            Ok(())
        } else {
            Err(Error::TimedOut)
        }
    }

    /// Blocking `sendto` (one datagram to `addr`) or `send` (`None`: on a connected socket),
    /// waiting up to `timeout` (`Some(ZERO)`: not at all) for room; the bytes sent. A stream
    /// sends all of `data` — or, the wait for room timing out after part of it went, that
    /// part (the count says; `TimedOut` only if none went), so a caller can go on from there
    /// without sending bytes twice. AF_XDP sockets: `InvalidArgument`. Beside overlapped
    /// sends, as Winsock allows.
    pub fn send_blocking(
        &self,
        data: &[u8],
        addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        if self.xdp {
            return Err(Error::InvalidArgument);
        }
        let stream = addr.is_none() && self.is_stream();
        let mut sent = 0;
        loop {
            match net::send_to(self.fd, &data[sent..], addr.as_ref()) {
                Ok(n) if stream && sent + n < data.len() => sent += n,
                Ok(n) => return Ok(sent + n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match self.wait_for(libc::POLLOUT, timeout) {
                    Err(Error::TimedOut) if sent > 0 => return Ok(sent),
                    r => r?,
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Blocking `recvfrom` / `recv`, waiting up to `timeout` (`Some(ZERO)`: not at all): one
    /// datagram and its sender — one longer than `buf` fills it and ends `MessageTooLong`
    /// (WSAEMSGSIZE; the rest is gone, as on Windows) — or what a stream has (0: the peer
    /// closed). AF_XDP sockets: `InvalidArgument`. Do not mix with overlapped receives on
    /// the same socket: each datagram goes to one of them.
    pub fn recv_blocking(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(usize, Option<SocketAddr>), Error> {
        if self.xdp {
            return Err(Error::InvalidArgument);
        }
        // MSG_TRUNC on a datagram socket reports the datagram's length; on a stream it would
        // discard the bytes.
        let flags = if self.is_stream() { 0 } else { libc::MSG_TRUNC };
        loop {
            match net::recv_from(self.fd, buf, flags) {
                Ok((n, _)) if n > buf.len() => return Err(Error::MessageTooLong),
                Ok(r) => return Ok(r),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait_for(libc::POLLIN, timeout)?,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Blocking `accept` on a listening socket, waiting up to `timeout`: the connection and
    /// its peer (make it a stream with [`TcpStream::adopt`]). Do not mix with overlapped
    /// accepts on the same listener: each connection goes to one of them.
    pub fn accept_blocking(&self, timeout: Option<Duration>) -> Result<(OwnedFd, Option<SocketAddr>), Error> {
        loop {
            match net::accept(self.fd) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait_for(libc::POLLIN, timeout)?,
                r => return Ok(r?),
            }
        }
    }

    /// `ioctlsocket(FIONREAD)`: the bytes waiting (a datagram socket: the next datagram's
    /// length).
    pub fn readable_bytes(&self) -> Result<usize, Error> {
        if self.xdp {
            return Err(Error::InvalidArgument);
        }
        Ok(net::readable_bytes(self.fd)?)
    }
}

/// The kernel socket's descriptor (an AF_XDP socket's: its companion kernel socket), for
/// options porto has no call for. It stays open while this value lives.
impl AsRawFd for SocketCore {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Drop for SocketCore {
    fn drop(&mut self) {
        if self.owner {
            self.shared.send_reliably(Command::Close { sock: self.id });
        }
    }
}

/// A socket with `opts` set, and where its receive stamps come from.
fn new_socket(addr: &SocketAddr, kind: net::Kind, opts: &SocketOptions) -> Result<(OwnedFd, Stamping), SetupError> {
    let fd = net::socket(addr, kind).map_err(|source| SetupError::Syscall { what: "socket", source })?;
    let stamping = opts.apply(fd.as_raw_fd(), addr.is_ipv6())?;
    Ok((fd, stamping))
}

fn blocking_timeout_ms(t: Option<Duration>) -> i32 {
    t.map_or(-1, |d| d.as_millis().min(i32::MAX as u128) as i32)
}

/// Blocking batch receive (recvmmsg) on any datagram socket: up to `bufs.len()` (at most
/// 256) datagrams, lengths into `lens`, waiting up to `timeout` for the first. The
/// kernel-socket way to amortise syscalls, used as the AF_XDP baseline.
pub fn recv_batch(
    sock: &impl AsFd,
    bufs: &mut [Vec<u8>],
    lens: &mut [usize],
    timeout: Option<Duration>,
) -> Result<usize, Error> {
    Ok(net::recv_mmsg(
        sock.as_fd().as_raw_fd(),
        bufs,
        lens,
        blocking_timeout_ms(timeout),
    )?)
}

/// A UDP socket on a shard.
#[derive(Debug)]
pub struct UdpSocket {
    core: SocketCore,
    stamping: Stamping,
}

impl UdpSocket {
    /// Binds `addr` (IPv4 or IPv6) on `shard`; completions go to `delivery`.
    pub fn bind(
        shard: &ShardHandle,
        addr: SocketAddr,
        opts: &SocketOptions,
        delivery: Delivery,
    ) -> Result<UdpSocket, SetupError> {
        let (fd, stamping) = new_socket(&addr, net::Kind::Udp, opts)?;
        net::bind(fd.as_raw_fd(), &addr).map_err(|e| SetupError::bind(addr, e))?;
        Ok(UdpSocket {
            core: SocketCore::open(shard, fd, delivery, stamping == Stamping::Reap)?,
            stamping,
        })
    }

    /// Where this socket's receive stamps come from (`SocketOptions::timestamps`): the
    /// kernel's, or — where the kernel refused SO_TIMESTAMPING — the shard's clock when it
    /// reads each completion; `Off` without the option.
    pub fn stamping(&self) -> Stamping {
        self.stamping
    }

    /// Takes over a bound kernel UDP socket (e.g. from [`SocketOptions::bind_kernel_udp`]:
    /// bound first, associated with its delivery later, as Winsock's `bind` then
    /// `CreateIoCompletionPort`); it is made non-blocking.
    pub fn adopt(shard: &ShardHandle, sock: std::net::UdpSocket, delivery: Delivery) -> Result<UdpSocket, SetupError> {
        sock.set_nonblocking(true).map_err(|source| SetupError::Syscall {
            what: "fcntl(O_NONBLOCK)",
            source,
        })?;
        let stamping = kernel_stamping(sock.as_raw_fd());
        Ok(UdpSocket {
            core: SocketCore::open(shard, sock.into(), delivery, false)?,
            stamping,
        })
    }

    pub fn core(&self) -> &SocketCore {
        &self.core
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.core.local_addr()
    }

    /// WSARecvFrom: one datagram into a pool frame (or `TimedOut` after `timeout`).
    pub fn recv_from(&self, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.recv_from(token, false, timeout)
    }

    /// WSARecvFrom with several WSABUFs: one datagram scattered over `gather`'s buffers (each
    /// a whole pool frame from its start, in order — a datagram larger than a frame), handed
    /// back in the completion's `gather` with each buffer's length what landed in it. One
    /// longer than all of them together: `MessageTooLong` (counted `recv_truncated`).
    pub fn recv_from_scatter(&self, gather: Gather, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::RecvScatter {
                gather,
                from: true,
                timeout,
            },
        )
    }

    /// Multishot WSARecvFrom: every datagram becomes a completion (`more == true`) until
    /// cancelled; an empty buffer ring pauses it (counted) instead of failing it.
    pub fn recv_from_multishot(&self, token: u64) -> Result<(), Rejected> {
        self.core.recv_from(token, true, None)
    }

    /// The sends' TX timestamps (the socket needs `SocketOptions::tx_timestamps`): every
    /// stamp the kernel reports becomes a `TxTimestamp` completion (`more == true`,
    /// `result` = the send's timestamp id, `timestamp_ns`) until cancelled; it then ends
    /// once, `Aborted`. Holds one pool frame for the control messages (`NoBuffers` if none
    /// is free).
    pub fn recv_tx_timestamps(&self, token: u64) -> Result<(), Rejected> {
        let mut buf = self.core.shared.pool.alloc().map_err(|error| Rejected {
            error,
            buffer: None,
            gather: None,
        })?;
        buf.set_len(buf.capacity().min(TX_CONTROL_LEN));
        self.core.submit(token, Request::TxTimestamps { buf })
    }

    /// Receives once and fans each datagram out to subscribers without copying
    /// (see [`FanOut`]); the receive runs under `token`.
    pub fn fan_out(&self, token: u64) -> Result<FanOut, SetupError> {
        self.core.fan_out(token)
    }

    /// Sends `buf` to every address in `dests` (unicast or groups): N sends reading the one
    /// registered frame, no payload copy in user space. Each destination completes once
    /// (`SendTo`, `peer` = that destination); the frame returns to the pool after the last.
    /// Keep `dests` and reuse it: cloning the `Arc` allocates nothing.
    pub fn send_to_many(&self, buf: Buf, dests: &Arc<[SocketAddr]>, token: u64) -> Result<(), Rejected> {
        self.core.send_to_many(buf, dests, token)
    }

    /// WSASendTo: sends `buf` to `addr`; the buffer comes back in the completion.
    pub fn send_to(&self, buf: Buf, addr: SocketAddr, token: u64) -> Result<(), Rejected> {
        self.core.send_to(buf, addr, token, false)
    }

    /// WSASendTo with IORING_OP_SEND_ZC from the registered pool: the completion arrives
    /// after the kernel's notification and reports whether the kernel copied anyway.
    pub fn send_to_zc(&self, buf: Buf, addr: SocketAddr, token: u64) -> Result<(), Rejected> {
        self.core.send_to(buf, addr, token, true)
    }

    /// WSASendTo with several buffers (WSABUF array): one datagram gathered from `gather`.
    pub fn send_to_gather(&self, gather: Gather, addr: SocketAddr, token: u64) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::SendGather {
                gather,
                addr: Some(addr),
                tos: None,
            },
        )
    }

    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        self.core.cancel(token)
    }

    /// IP_ADD_MEMBERSHIP / IPV6_ADD_MEMBERSHIP: receive `group` from any source, on the
    /// interface with IPv4 address `iface` (v4) or index `ifindex` (v6); `None`: the kernel's
    /// choice. The kernel owns IGMP/MLD.
    pub fn join(&self, group: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.membership(group, iface, true)
    }

    /// Leaves a group joined with [`join`](Self::join).
    pub fn leave(&self, group: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.membership(group, iface, false)
    }

    fn membership(&self, group: IpAddr, iface: Option<Interface>, join: bool) -> Result<(), Error> {
        let fd = self.core.raw();
        match (group, iface) {
            (IpAddr::V4(g), None) => net::membership_v4(fd, g, Ipv4Addr::UNSPECIFIED, join)?,
            (IpAddr::V4(g), Some(Interface::V4(a))) => net::membership_v4(fd, g, a, join)?,
            (IpAddr::V6(g), None) => net::membership_v6(fd, g, 0, join)?,
            (IpAddr::V6(g), Some(Interface::Index(i))) => net::membership_v6(fd, g, i, join)?,
            _ => return Err(Error::InvalidArgument),
        }
        Ok(())
    }

    /// Source-specific multicast (include list): receive `group` only from `source`; call
    /// again to add sources. IPv4: IP_ADD_SOURCE_MEMBERSHIP on the interface with address
    /// `iface`; IPv6: MCAST_JOIN_SOURCE_GROUP on interface index `iface`. `None`: the
    /// kernel's choice.
    pub fn join_source(&self, group: IpAddr, source: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.source_filter(group, source, iface, SourceOp::Join)
    }

    /// Drops `source` from a source-specific membership.
    pub fn leave_source(&self, group: IpAddr, source: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.source_filter(group, source, iface, SourceOp::Leave)
    }

    /// Exclude mode (MCAST_BLOCK_SOURCE / IP_BLOCK_SOURCE, Winsock's `SIO_...`-style source
    /// filter): on a group joined from any source ([`join`](Self::join)), stop receiving
    /// `source`'s datagrams.
    pub fn block_source(&self, group: IpAddr, source: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.source_filter(group, source, iface, SourceOp::Block)
    }

    /// Receives a blocked `source` again.
    pub fn unblock_source(&self, group: IpAddr, source: IpAddr, iface: Option<Interface>) -> Result<(), Error> {
        self.source_filter(group, source, iface, SourceOp::Unblock)
    }

    fn source_filter(
        &self,
        group: IpAddr,
        source: IpAddr,
        iface: Option<Interface>,
        op: SourceOp,
    ) -> Result<(), Error> {
        let fd = self.core.raw();
        match (group, source, iface) {
            (IpAddr::V4(g), IpAddr::V4(s), None) => net::source_membership_v4(fd, g, s, Ipv4Addr::UNSPECIFIED, op)?,
            (IpAddr::V4(g), IpAddr::V4(s), Some(Interface::V4(a))) => net::source_membership_v4(fd, g, s, a, op)?,
            (IpAddr::V6(_), IpAddr::V6(_), None) => net::mcast_source(fd, group, source, 0, op)?,
            (IpAddr::V6(_), IpAddr::V6(_), Some(Interface::Index(i))) => net::mcast_source(fd, group, source, i, op)?,
            _ => return Err(Error::InvalidArgument),
        }
        Ok(())
    }

    /// IP_MULTICAST_LOOP / IPV6_MULTICAST_LOOP: whether this host's own members receive what
    /// this socket sends to a group.
    pub fn set_multicast_loop(&self, on: bool) -> Result<(), Error> {
        let (level, name) = if self.local_addr()?.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP)
        } else {
            (libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP)
        };
        Ok(net::set_int(self.core.raw(), level, name, i32::from(on))?)
    }

    /// IP_MULTICAST_IF / IPV6_MULTICAST_IF: the interface group sends leave by.
    pub fn set_multicast_if(&self, iface: Interface) -> Result<(), Error> {
        let fd = self.core.raw();
        match iface {
            Interface::V4(a) => net::multicast_if_v4(fd, a)?,
            Interface::Index(i) => net::set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, i as i32)?,
        }
        Ok(())
    }

    /// IP_MULTICAST_TTL / IPV6_MULTICAST_HOPS for group sends.
    pub fn set_multicast_ttl(&self, ttl: u8) -> Result<(), Error> {
        let (level, name) = if self.local_addr()?.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS)
        } else {
            (libc::IPPROTO_IP, libc::IP_MULTICAST_TTL)
        };
        Ok(net::set_int(self.core.raw(), level, name, i32::from(ttl))?)
    }

    /// QOSAddSocketToFlow: marks this socket's traffic with the flow's DSCP and sends every
    /// datagram through the flow's shaping and its shard's class scheduler.
    pub fn set_flow(&self, flow: &QosFlow) -> Result<(), Error> {
        self.core.set_flow(flow)
    }

    /// Marks everything this socket sends with `traffic`'s DSCP (IP_TOS / IPV6_TCLASS) and
    /// priority (SO_PRIORITY): the marking half of QOSAddSocketToFlow. Its receives get the
    /// class's inbound priority on the shard.
    pub fn set_traffic(&self, traffic: TrafficType) -> Result<(), Error> {
        self.core.set_traffic(traffic)
    }

    /// Blocking sendto ([`SocketCore::send_blocking`]).
    pub fn send_to_blocking(&self, data: &[u8], addr: SocketAddr, timeout: Option<Duration>) -> Result<usize, Error> {
        self.core.send_blocking(data, Some(addr), timeout)
    }

    /// Blocking recvfrom ([`SocketCore::recv_blocking`]). Do not mix with overlapped
    /// receives on the same socket: each datagram goes to exactly one of them.
    pub fn recv_from_blocking(
        &self,
        buf: &mut [u8],
        timeout: Option<Duration>,
    ) -> Result<(usize, Option<SocketAddr>), Error> {
        self.core.recv_blocking(buf, timeout)
    }
}

/// A socket to watch in [`poll`] (WSAPoll): what to wait for, and what was found.
#[derive(Debug)]
pub struct PollFd<'a> {
    pub socket: &'a SocketCore,
    /// Wait for data (or a connection) to read.
    pub read: bool,
    /// Wait for room to write.
    pub write: bool,
    pub found: Readiness,
}

/// What [`poll`] found on a socket: readable, writable, an error pending, the peer hung up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
    pub hangup: bool,
}

impl Readiness {
    /// Anything at all.
    pub fn any(&self) -> bool {
        self.readable || self.writable || self.error || self.hangup
    }
}

impl<'a> PollFd<'a> {
    pub fn new(socket: &'a SocketCore, read: bool, write: bool) -> PollFd<'a> {
        PollFd {
            socket,
            read,
            write,
            found: Readiness::default(),
        }
    }
}

/// WSAPoll / select over porto sockets: waits up to `timeout` (None: for ever) until one of
/// `fds` is ready as asked; returns how many are. Readiness is the kernel socket's: an
/// overlapped receive posted on the same socket may take the data first (as on Windows).
/// AF_XDP sockets are `InvalidArgument` (their rings are the shard's).
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> Result<usize, Error> {
    let mut raw = Vec::with_capacity(fds.len());
    for f in fds.iter() {
        if f.socket.xdp {
            return Err(Error::InvalidArgument);
        }
        let mut events = 0;
        if f.read {
            events |= libc::POLLIN;
        }
        if f.write {
            events |= libc::POLLOUT;
        }
        raw.push(libc::pollfd {
            fd: f.socket.raw(),
            events,
            revents: 0,
        });
    }
    if timeout != Some(Duration::ZERO) {
        CompletionPort::release_current_thread();
    }
    let n = net::poll_many(&mut raw, blocking_timeout_ms(timeout))?;
    for (f, p) in fds.iter_mut().zip(&raw) {
        f.found = Readiness {
            readable: p.revents & libc::POLLIN != 0,
            writable: p.revents & libc::POLLOUT != 0,
            error: p.revents & libc::POLLERR != 0,
            hangup: p.revents & libc::POLLHUP != 0,
        };
    }
    Ok(n)
}

/// A listening TCP socket on a shard.
#[derive(Debug)]
pub struct TcpListener {
    core: SocketCore,
}

impl TcpListener {
    /// Blocking accept (BSD `accept` beside `AcceptEx`; [`SocketCore::accept_blocking`]).
    pub fn accept_blocking(&self, timeout: Option<Duration>) -> Result<(OwnedFd, Option<SocketAddr>), Error> {
        self.core.accept_blocking(timeout)
    }

    pub fn bind(
        shard: &ShardHandle,
        addr: SocketAddr,
        backlog: i32,
        opts: &SocketOptions,
        delivery: Delivery,
    ) -> Result<TcpListener, SetupError> {
        let fd = opts.bind_kernel_tcp(addr)?;
        TcpListener::adopt(shard, fd, backlog, delivery)
    }

    /// Listens on `fd`, a TCP socket already bound (by [`SocketOptions::bind_kernel_tcp`]),
    /// and opens it on `shard` (Winsock's order: `bind`, `listen`, then the association).
    pub fn adopt(
        shard: &ShardHandle,
        fd: OwnedFd,
        backlog: i32,
        delivery: Delivery,
    ) -> Result<TcpListener, SetupError> {
        net::listen(fd.as_raw_fd(), backlog).map_err(|source| SetupError::Syscall { what: "listen", source })?;
        Ok(TcpListener {
            core: SocketCore::open(shard, fd, delivery, false)?,
        })
    }

    pub fn core(&self) -> &SocketCore {
        &self.core
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.core.local_addr()
    }

    /// AcceptEx: one connection, in `Completion::accepted` (peer in `Completion::peer`).
    pub fn accept(&self, token: u64) -> Result<(), Rejected> {
        self.core.submit(token, Request::Accept { multishot: false })
    }

    /// Multishot accept: every connection becomes a completion until cancelled.
    pub fn accept_multishot(&self, token: u64) -> Result<(), Rejected> {
        self.core.submit(token, Request::Accept { multishot: true })
    }

    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        self.core.cancel(token)
    }
}

/// A TCP connection on a shard.
#[derive(Debug)]
pub struct TcpStream {
    core: SocketCore,
}

impl TcpStream {
    /// ConnectEx: creates a socket on `shard` and starts connecting; the `Connect`
    /// completion (token `token`) says how it went, `TimedOut` after `timeout`.
    pub fn connect(
        shard: &ShardHandle,
        addr: SocketAddr,
        token: u64,
        timeout: Option<Duration>,
        opts: &SocketOptions,
        delivery: Delivery,
    ) -> Result<TcpStream, SetupError> {
        let (fd, _) = new_socket(&addr, net::Kind::Tcp, opts)?;
        let s = TcpStream {
            core: SocketCore::open(shard, fd, delivery, false)?,
        };
        s.core
            .submit(token, Request::Connect { addr, timeout })
            .map_err(|r| SetupError::Syscall {
                what: "queueing connect",
                source: std::io::Error::from_raw_os_error(r.error.errno()),
            })?;
        Ok(s)
    }

    /// A plain blocking connect (up to `timeout`), then the stream joins `shard`.
    pub fn connect_blocking(
        shard: &ShardHandle,
        addr: SocketAddr,
        timeout: Option<Duration>,
        delivery: Delivery,
    ) -> Result<TcpStream, SetupError> {
        let (fd, _) = new_socket(&addr, net::Kind::Tcp, &SocketOptions::default())?;
        TcpStream::connect_fd_blocking(shard, fd, addr, timeout, delivery)
    }

    /// A plain blocking connect of `fd`, a TCP socket already bound (by
    /// [`SocketOptions::bind_kernel_tcp`]: Winsock's `bind`, then `connect`), up to
    /// `timeout`; then the stream joins `shard`. The connect's own failure is
    /// `SetupError::Syscall` with its errno (ETIMEDOUT after `timeout`).
    pub fn connect_fd_blocking(
        shard: &ShardHandle,
        fd: OwnedFd,
        addr: SocketAddr,
        timeout: Option<Duration>,
        delivery: Delivery,
    ) -> Result<TcpStream, SetupError> {
        CompletionPort::release_current_thread();
        net::connect_wait(fd.as_raw_fd(), &addr, blocking_timeout_ms(timeout)).map_err(|source| {
            SetupError::Syscall {
                what: "connect",
                source,
            }
        })?;
        TcpStream::adopt(shard, fd, delivery)
    }

    /// Takes over an accepted connection (from `Completion::accepted`).
    pub fn adopt(shard: &ShardHandle, fd: OwnedFd, delivery: Delivery) -> Result<TcpStream, SetupError> {
        Ok(TcpStream {
            core: SocketCore::open(shard, fd, delivery, false)?,
        })
    }

    /// ConnectEx on a socket already open (bound by [`SocketOptions::bind_kernel_tcp`] and
    /// adopted, as Winsock binds before ConnectEx): the `Connect` completion says whether it
    /// connected (`TimedOut` after `timeout`).
    pub fn connect_to(&self, addr: SocketAddr, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.submit(token, Request::Connect { addr, timeout })
    }

    pub fn core(&self) -> &SocketCore {
        &self.core
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.core.local_addr()
    }

    pub fn peer_addr(&self) -> Result<SocketAddr, Error> {
        Ok(net::peer_addr(self.core.raw())?)
    }

    /// TCP_NODELAY.
    /// QOSAddSocketToFlow for a stream: marking, shaping and class scheduling of its sends.
    pub fn set_flow(&self, flow: &QosFlow) -> Result<(), Error> {
        self.core.set_flow(flow)
    }

    /// Marks this stream's segments with `traffic`'s DSCP and SO_PRIORITY.
    pub fn set_traffic(&self, traffic: TrafficType) -> Result<(), Error> {
        self.core.set_traffic(traffic)
    }

    pub fn set_nodelay(&self, on: bool) -> Result<(), Error> {
        Ok(net::set_int(
            self.core.raw(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            i32::from(on),
        )?)
    }

    /// WSASend: the whole buffer is sent (or the op fails); the buffer comes back.
    pub fn send(&self, buf: Buf, token: u64) -> Result<(), Rejected> {
        self.core.submit(token, Request::Send { buf, zerocopy: false })
    }

    /// WSASend with several buffers (WSABUF array), sent whole and in order.
    pub fn send_gather(&self, gather: Gather, token: u64) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::SendGather {
                gather,
                addr: None,
                tos: None,
            },
        )
    }

    /// WSASend with SEND_ZC from the registered pool.
    pub fn send_zc(&self, buf: Buf, token: u64) -> Result<(), Rejected> {
        self.core.submit(token, Request::Send { buf, zerocopy: true })
    }

    /// WSARecv into a pool frame: `Ok(0)` means the peer closed.
    pub fn recv(&self, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.recv_at_most(token, 0, timeout)
    }

    /// WSARecv into buffers of `max` bytes: reads at most `max` (0: a whole frame), so
    /// nothing the caller has no room for leaves the kernel's socket buffer.
    pub fn recv_at_most(&self, token: u64, max: u32, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::Recv {
                multishot: false,
                timeout,
                max,
            },
        )
    }

    /// WSARecv with several WSABUFs: what the stream has, filling `gather`'s buffers (each a
    /// whole pool frame from its start) in order, handed back in the completion's `gather`
    /// with each buffer's length what landed in it; `Ok(0)`: the peer closed.
    pub fn recv_scatter(&self, gather: Gather, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::RecvScatter {
                gather,
                from: false,
                timeout,
            },
        )
    }

    /// Zero-byte WSARecv: completes `Ok(0)` once data is waiting or the peer closed, taking
    /// nothing and holding no frame meanwhile (servers with many idle connections post these
    /// instead of a buffer each, then receive when it completes).
    pub fn wait_readable(&self, token: u64, timeout: Option<Duration>) -> Result<(), Rejected> {
        self.core.submit(token, Request::Readable { timeout })
    }

    /// Multishot WSARecv: chunks as they arrive until EOF (a final `Ok(0)`), error or cancel.
    pub fn recv_multishot(&self, token: u64) -> Result<(), Rejected> {
        self.core.submit(
            token,
            Request::Recv {
                multishot: true,
                timeout: None,
                max: 0,
            },
        )
    }

    /// DisconnectEx: shuts the connection down (both directions).
    pub fn disconnect(&self, token: u64) -> Result<(), Rejected> {
        self.core.submit(token, Request::Disconnect)
    }

    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        self.core.cancel(token)
    }

    /// Blocking send of all of `data` ([`SocketCore::send_blocking`]).
    pub fn send_blocking(&self, data: &[u8], timeout: Option<Duration>) -> Result<(), Error> {
        match self.core.send_blocking(data, None, timeout)? {
            n if n == data.len() => Ok(()),
            // Part went before the time ran out.
            _ => Err(Error::TimedOut),
        }
    }

    /// Blocking receive of whatever is available (0: the peer closed).
    pub fn recv_blocking(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize, Error> {
        self.core.recv_blocking(buf, timeout).map(|(n, _)| n)
    }

    /// Shuts down the sending side now (blocking call).
    pub fn shutdown_write(&self) -> Result<(), Error> {
        net::shutdown_raw(self.core.raw(), libc::SHUT_WR).map_err(Error::from)
    }
}

/// The interface a multicast membership is on: by IPv4 address (v4 groups) or by index
/// (v6 groups).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interface {
    V4(Ipv4Addr),
    Index(u32),
}

/// Most interface queues an AF_XDP port binds.
const QUEUES_MAX: u32 = 64;

/// Which receive queues of the interface an AF_XDP socket takes (one AF_XDP socket per queue,
/// all over its shard's one UMEM; it sends on the first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpQueues {
    /// Every queue of the interface.
    All,
    /// One queue.
    One(u32),
    /// Queue `q` for every `q` with `q % of == index`: shard `index` of `of`, so that `of`
    /// shards together take every queue, each its own (the XDP program is shared).
    Shard { index: u32, of: u32 },
}

impl XdpQueues {
    fn wants(self, q: u32) -> bool {
        match self {
            XdpQueues::All => true,
            XdpQueues::One(one) => q == one,
            XdpQueues::Shard { index, of } => q % of == index,
        }
    }

    fn first(self) -> u32 {
        match self {
            XdpQueues::All => 0,
            XdpQueues::One(q) => q,
            XdpQueues::Shard { index, .. } => index,
        }
    }
}

/// How to open an AF_XDP socket.
#[derive(Clone, Debug)]
pub struct XdpOptions {
    /// The interface (in the calling thread's network namespace).
    pub iface: String,
    /// The receive queues this socket takes (default: all).
    pub queues: XdpQueues,
    /// Skip the zero-copy attempt.
    pub force_copy: bool,
    /// Force driver or generic XDP (default: driver, then generic).
    pub attach: Option<AttachMode>,
    /// Entries in each of the four rings (a power of two).
    pub ring_size: u32,
    /// Receive coalescing (a NIC's rx-frames / rx-usecs): leave frames in the RX rings until
    /// `frames` are waiting or the first has waited `wait`. Each frame read alone costs the
    /// cache lines of the ring indices and descriptors moving between CPUs; batches share
    /// them. `None` (the default): read every frame at once, the latency setting.
    pub rx_coalesce: Option<(u32, Duration)>,
    /// Keep the frames of a copy-mode socket out of the pool after close until the kernel has
    /// released its queues, as is always done for zero-copy sockets (whose driver may still
    /// use them). For testing that path on devices without zero-copy (veth).
    #[doc(hidden)]
    pub hold_frames_on_close: bool,
    /// Inbound priority by DSCP: in each batch read from an RX ring, deliver frames marked
    /// DSCP 46 or above (EF, CS6, CS7; QOS2 Voice and Control) before the others, each group
    /// in arrival order. Off by default: it reorders a socket's datagrams across classes.
    pub dscp_priority: bool,
    /// Each received datagram's completion carries `timestamp_ns`, in CLOCK_REALTIME like
    /// the kernel sockets' stamps: the time porto's XDP program ran for it
    /// (`bpf_ktime_get_ns`, written into the frame's metadata area, read without a syscall)
    /// where the kernel lets XDP programs call `bpf_xdp_adjust_meta`, else the time the shard
    /// read it from the RX ring (one clock read per batch). [`XdpInfo::stamps`] says which.
    /// Off by default.
    pub timestamps: bool,
}

/// Control bytes read per error-queue message: SCM_TIMESTAMPING (64) and IP(V6)_RECVERR
/// (16 + sock_extended_err 16 + an offender address up to 28, aligned): 256 is ample.
const TX_CONTROL_LEN: usize = 256;

/// Largest AF_XDP ring (entries): the kernel takes up to 2^31, but a ring of more frames
/// than a pool can have (65 536) is never useful.
pub const XDP_RING_SIZE_MAX: u32 = 1 << 16;
/// Longest receive-coalescing hold.
pub const RX_COALESCE_WAIT_MAX: Duration = Duration::from_secs(1);

impl XdpOptions {
    /// Checks the sizes before anything is attached or bound; the error names the field.
    pub fn validate(&self) -> Result<(), SetupError> {
        if let XdpQueues::Shard { index, of } = self.queues {
            if of == 0 || index >= of || of > QUEUES_MAX {
                return Err(SetupError::Config(format!(
                    "XdpOptions::queues = Shard {{ index: {index}, of: {of} }}: need index < of <= {QUEUES_MAX}"
                )));
            }
        }
        if !self.ring_size.is_power_of_two() || self.ring_size > XDP_RING_SIZE_MAX {
            return Err(SetupError::Config(format!(
                "XdpOptions::ring_size = {}: must be a power of two up to {XDP_RING_SIZE_MAX}",
                self.ring_size
            )));
        }
        if let Some((frames, wait)) = self.rx_coalesce {
            if frames == 0 || wait > RX_COALESCE_WAIT_MAX {
                return Err(SetupError::Config(format!(
                    "XdpOptions::rx_coalesce = ({frames}, {wait:?}): frames must be positive and the wait at most {RX_COALESCE_WAIT_MAX:?}"
                )));
            }
        }
        Ok(())
    }

    pub fn new(iface: &str) -> XdpOptions {
        XdpOptions {
            iface: iface.to_string(),
            queues: XdpQueues::All,
            force_copy: false,
            attach: None,
            ring_size: 2048,
            rx_coalesce: None,
            hold_frames_on_close: false,
            dscp_priority: false,
            timestamps: false,
        }
    }
}

/// What an AF_XDP socket actually obtained.
#[derive(Clone, Debug)]
pub struct XdpInfo {
    pub iface: String,
    /// The interface's MAC address (the source of every frame sent).
    pub mac: MacAddr,
    /// The queues with a socket.
    pub queues: Vec<u32>,
    pub socket_mode: XskMode,
    /// The sending socket takes multi-buffer packets (XDP_USE_SG): `send_to_many` sends a
    /// header frame plus the shared payload frame per destination instead of a copy.
    pub multi_buffer: bool,
    /// Why zero-copy was not obtained, if it was not.
    pub socket_fallback: Option<String>,
    pub attach_mode: AttachMode,
    /// Why driver XDP was not obtained, if it was not.
    pub attach_fallback: Option<String>,
    /// Where the receive stamps come from (`XdpOptions::timestamps`; `None` without).
    pub stamps: Option<StampSource>,
}

impl std::fmt::Display for XdpInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AF_XDP on {} queue(s) {:?}: {} mode{}, {}",
            self.iface,
            self.queues,
            self.socket_mode,
            if self.multi_buffer { " with multi-buffer" } else { "" },
            self.attach_mode
        )?;
        for why in [&self.socket_fallback, &self.attach_fallback].into_iter().flatten() {
            write!(f, " ({why})")?;
        }
        if let Some(s) = &self.stamps {
            write!(f, "; {s}")?;
        }
        Ok(())
    }
}

/// A UDP socket whose datagrams bypass the kernel stack: the XDP program steers frames for
/// its port to an AF_XDP socket on the shard, whose frames are the shard's pool frames.
/// The same overlapped calls as [`UdpSocket`]: `recv_from_multishot` and `send_to`.
pub struct XdpUdpSocket {
    core: SocketCore,
    local: SocketAddr,
    info: XdpInfo,
    /// The interface's program, shared with every AF_XDP socket on it.
    program: Arc<SharedProgram>,
    /// A kernel socket of the socket's family holding the memberships (IGMP or MLD), made
    /// at the first join.
    membership: Option<OwnedFd>,
    /// Joined (group, source) pairs.
    groups: Vec<(IpAddr, Option<IpAddr>)>,
    /// Sources blocked from any-source memberships: (group, source).
    blocked: Vec<(IpAddr, IpAddr)>,
    /// The AF_XDP sockets' fds (owned by the shard's port, which closes them only after
    /// this handle's Close): for their kernel statistics.
    xsk_fds: Vec<RawFd>,
}

impl Drop for XdpUdpSocket {
    /// Takes this socket's binds and memberships out of the interface's shared program (the
    /// program itself goes with the last socket on the interface); the socket's AF_XDP
    /// sockets leave the XSKMAP when the shard closes them.
    fn drop(&mut self) {
        for (group, source) in std::mem::take(&mut self.blocked) {
            if let Err(e) = self.program.set_block(group, source, false) {
                tracing::warn!(error = %e, %group, %source, "unblocking a source in the XDP program failed");
            }
        }
        for (group, source) in std::mem::take(&mut self.groups) {
            if let Err(e) = self.steer_group(group, source, false) {
                tracing::warn!(error = %e, %group, "removing a membership from the XDP program failed");
            }
        }
        if let Err(e) = self.program.remove_bind(self.local) {
            tracing::warn!(error = %e, "removing the bind from the XDP program failed");
        }
    }
}

impl std::fmt::Debug for XdpUdpSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpUdpSocket")
            .field("local", &self.local)
            .field("info", &self.info)
            .finish()
    }
}

impl XdpUdpSocket {
    /// Attaches the XDP program to `opts.iface` (or joins the one another socket attached
    /// there, on any shard), opens an AF_XDP socket on each of `opts.queues` over `shard`'s
    /// pool, and steers UDP for `local` to them. `local` is IPv4 or IPv6 (the
    /// unspecified address takes any of its family): the socket takes and sends datagrams of
    /// that family.
    pub fn bind(
        shard: &ShardHandle,
        local: impl Into<SocketAddr>,
        opts: &XdpOptions,
        delivery: Delivery,
    ) -> Result<XdpUdpSocket, SetupError> {
        let local = local.into();
        opts.validate()?;
        let ifindex = net::ifindex(&opts.iface).map_err(|e| SetupError::xsk(&opts.iface, 0, e))?;
        let program = SharedProgram::get(&opts.iface, ifindex, opts.attach)?;
        let pool = shard.pool();
        let first_queue = opts.queues.first();
        let (first, socket_fallback) = Xsk::new(
            pool.region(),
            pool.frame_size(),
            &opts.iface,
            first_queue,
            opts.ring_size,
            opts.force_copy,
            None,
        )
        .map_err(|e| SetupError::xsk(&opts.iface, first_queue, e))?;
        let mut xsks = vec![first];
        if !matches!(opts.queues, XdpQueues::One(_)) {
            // The other queues wanted join the first socket's UMEM; binding a queue the
            // interface does not have fails with EINVAL, which ends the probe.
            for q in (first_queue + 1..QUEUES_MAX).filter(|&q| opts.queues.wants(q)) {
                match Xsk::new(
                    pool.region(),
                    pool.frame_size(),
                    &opts.iface,
                    q,
                    opts.ring_size,
                    opts.force_copy,
                    Some(&xsks[0]),
                ) {
                    Ok((x, _)) => xsks.push(x),
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                    Err(e) => return Err(SetupError::xsk(&opts.iface, q, e)),
                }
            }
        }
        for x in &xsks {
            program.set_socket(x.queue, x)?;
        }
        program.add_bind(local)?;
        let mac = net::hw_addr(&opts.iface).map_err(|e| SetupError::xsk(&opts.iface, first_queue, e))?;
        let (attach_mode, attach_fallback) = program.mode();
        let stamps = program.stamps();
        let info = XdpInfo {
            stamps: opts.timestamps.then(|| stamps.clone()),
            iface: opts.iface.clone(),
            mac: MacAddr(mac),
            queues: xsks.iter().map(|x| x.queue).collect(),
            socket_mode: xsks[0].mode,
            multi_buffer: xsks[0].multi_buffer,
            socket_fallback,
            attach_mode,
            attach_fallback,
        };
        tracing::info!("{info}");
        let xsk_fds = xsks.iter().map(|x| x.as_raw_fd()).collect();
        let per_queue = (pool.free_frames() / 2 / xsks.len() as u32).max(1);
        let fill_target = opts.ring_size.min(per_queue);
        let mut port = XdpPort::new(xsks, local, MacAddr(mac), pool.total_frames(), fill_target);
        port.rx_coalesce = opts.rx_coalesce.map(|(n, wait)| (n.clamp(1, RX_BATCH_MAX), wait));
        port.dscp_priority = opts.dscp_priority;
        port.timestamps = match (&stamps, opts.timestamps) {
            (_, false) => Stamping::Off,
            (StampSource::Program, true) => Stamping::Metadata,
            (StampSource::RingReap { .. }, true) => Stamping::Reap,
        };
        port.program = Some(program.clone());
        port.hold_on_close = opts.hold_frames_on_close;
        // Fill the FILL rings now, not at the shard's first turn: a frame that arrives before
        // then would find no buffer and be dropped by the kernel (rx_fill_ring_empty_descs).
        // It waits in the RX ring instead.
        port.refill(pool);
        let core = match SocketCore::open_xdp(shard, Box::new(port), delivery) {
            Ok(c) => c,
            Err(e) => {
                // The program may serve other sockets: take back only this bind.
                if let Err(err) = program.remove_bind(local) {
                    tracing::warn!(error = %err, "removing the bind of a failed AF_XDP socket failed");
                }
                return Err(e);
            }
        };
        Ok(XdpUdpSocket {
            core,
            local,
            info,
            program,
            membership: None,
            groups: Vec::new(),
            blocked: Vec::new(),
            xsk_fds,
        })
    }

    pub fn info(&self) -> &XdpInfo {
        &self.info
    }

    /// The transport this socket really got: AF_XDP zero-copy or copy mode.
    pub fn transport(&self) -> Transport {
        self.info.socket_mode.into()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Every valid datagram for this port becomes a completion (`more == true`) until
    /// cancelled; one such receive per socket.
    pub fn recv_from_multishot(&self, token: u64) -> Result<(), Rejected> {
        self.core.recv_from(token, true, None)
    }

    /// Receives through AF_XDP and fans each datagram out to subscribers without copying
    /// (see [`FanOut`]); the receive runs under `token`.
    pub fn fan_out(&self, token: u64) -> Result<FanOut, SetupError> {
        self.core.fan_out(token)
    }

    /// Sends `buf` to every address in `dests`, each its own completion (`peer` = that
    /// destination, no buffer). Every destination needs its own headers: where the socket
    /// has multi-buffer support (`info().multi_buffer`) each send is a header frame plus the
    /// one shared payload frame (counted in `xdp_send_multi_buffer`); otherwise the payload
    /// is copied into one frame per destination (counted in `xdp_send_copies`).
    pub fn send_to_many(&self, buf: Buf, dests: &Arc<[SocketAddr]>, token: u64) -> Result<(), Rejected> {
        self.core.send_to_many(buf, dests, token)
    }

    /// Sends `buf`'s window to `addr` (of the socket's family). With `offset()` at least the
    /// headers' length (`wire::udp_headers_len`: 42 bytes over IPv4, 62 over IPv6) they go in
    /// front of the payload in place (a received buffer qualifies, as does
    /// `Pool::alloc_with_headroom(62)`); otherwise the payload is moved within its frame.
    /// The destination's MAC must be known (learned from its frames, or `add_neighbor`):
    /// else the send completes `HostUnreachable`.
    pub fn send_to(&self, buf: Buf, addr: SocketAddr, token: u64) -> Result<(), Rejected> {
        self.core.send_to(buf, addr, token, false)
    }

    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        self.core.cancel(token)
    }

    /// Marks every frame this socket sends with `traffic`'s DSCP (the TOS byte is written
    /// with the header checksum).
    pub fn set_traffic(&self, traffic: TrafficType) -> Result<(), Error> {
        self.core.set_traffic(traffic)
    }

    /// QOSAddSocketToFlow: the flow's marking, shaping and class scheduling for every frame
    /// this socket sends.
    pub fn set_flow(&self, flow: &QosFlow) -> Result<(), Error> {
        self.core.set_flow(flow)
    }

    /// Adds a static neighbour (IP -> MAC) for sends to hosts that have not sent to us.
    pub fn add_neighbor(&self, ip: impl Into<IpAddr>, mac: MacAddr) -> Result<(), Error> {
        self.core
            .shared
            .send(Command::Neighbor {
                sock: self.core.id,
                ip: ip.into(),
                mac,
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// Joins multicast `group` (from `source` only, or from any source) on this socket's
    /// interface; group and source are of the socket's family. The kernel keeps the
    /// membership (a kernel socket joins, so IGMP or MLD reports go out and the NIC accepts
    /// the group's MAC); the XDP program then steers the group's datagrams for this port,
    /// from included sources only, to AF_XDP.
    pub fn join(&mut self, group: IpAddr, source: Option<IpAddr>) -> Result<(), Error> {
        let family = |a: &IpAddr| a.is_ipv4() == self.local.is_ipv4();
        if !group.is_multicast() || !family(&group) || !source.as_ref().is_none_or(family) {
            return Err(Error::InvalidArgument);
        }
        if self.groups.contains(&(group, source)) {
            return Ok(());
        }
        if self.groups.len() >= crate::xdp::port::GROUPS_MAX {
            return Err(Error::NoBuffers);
        }
        let ifindex = net::ifindex(&self.info.iface)?;
        if self.membership.is_none() {
            let any = SocketAddr::new(unspecified(self.local.ip()), 0);
            self.membership = Some(net::socket(&any, net::Kind::Udp)?);
        }
        let fd = self.membership.as_ref().expect("made above").as_raw_fd();
        net::mcast_membership(fd, group, source, ifindex, true)?;
        self.groups.push((group, source));
        self.set_group(group, source, true)
    }

    /// Leaves a membership made with [`join`](Self::join) (an any-source one takes its
    /// blocked sources with it, as the kernel's does).
    pub fn leave(&mut self, group: IpAddr, source: Option<IpAddr>) -> Result<(), Error> {
        let Some(i) = self.groups.iter().position(|g| *g == (group, source)) else {
            return Err(Error::InvalidArgument);
        };
        if source.is_none() {
            let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.blocked)
                .into_iter()
                .partition(|b| b.0 == group);
            self.blocked = kept;
            for (g, src) in gone {
                if let Err(e) = self.program.set_block(g, src, false) {
                    tracing::warn!(error = %e, "unblocking a source in the XDP program failed");
                }
            }
        }
        self.groups.swap_remove(i);
        self.set_group(group, source, false)?;
        let fd = self.membership.as_ref().expect("a join made it").as_raw_fd();
        let ifindex = net::ifindex(&self.info.iface)?;
        Ok(net::mcast_membership(fd, group, source, ifindex, false)?)
    }

    /// IP_BLOCK_SOURCE / MCAST_BLOCK_SOURCE (exclude mode): stops taking `source`'s datagrams
    /// to `group`, joined from any source ([`join`](Self::join) with `None`; else
    /// `InvalidArgument`, the kernel's EINVAL for a source-specific membership). The kernel
    /// membership blocks it too (IGMPv3/MLDv2 report it upstream); the XDP program passes the
    /// source's datagrams to the kernel (counted filtered) while every socket on the
    /// interface with an any-source membership of the group blocks it, and this socket's
    /// port drops any that still reach it. More than 64 blocked: `NoBuffers`.
    pub fn block_source(&mut self, group: IpAddr, source: IpAddr) -> Result<(), Error> {
        self.source_filter(group, source, true)
    }

    /// Takes `source`'s datagrams to `group` again.
    pub fn unblock_source(&mut self, group: IpAddr, source: IpAddr) -> Result<(), Error> {
        self.source_filter(group, source, false)
    }

    fn source_filter(&mut self, group: IpAddr, source: IpAddr, block: bool) -> Result<(), Error> {
        if !self.groups.contains(&(group, None)) || source.is_ipv4() != group.is_ipv4() {
            return Err(Error::InvalidArgument);
        }
        let at = self.blocked.iter().position(|b| *b == (group, source));
        match (at, block) {
            (Some(_), true) => return Ok(()),
            (None, false) => return Err(Error::InvalidArgument),
            (None, true) if self.blocked.len() >= crate::xdp::port::GROUPS_MAX => return Err(Error::NoBuffers),
            _ => {}
        }
        let fd = self.membership.as_ref().expect("a join made it").as_raw_fd();
        let ifindex = net::ifindex(&self.info.iface)?;
        let op = if block { SourceOp::Block } else { SourceOp::Unblock };
        net::mcast_source(fd, group, source, ifindex, op)?;
        match at {
            Some(i) => {
                self.blocked.swap_remove(i);
            }
            None => self.blocked.push((group, source)),
        }
        if let Err(e) = self.program.set_block(group, source, block) {
            tracing::error!(error = %e, "updating the XDP blocked table failed");
            return Err(Error::InvalidArgument);
        }
        self.core
            .shared
            .send(Command::XdpBlock {
                sock: self.core.id,
                group,
                source,
                block,
            })
            .map_err(|_| Error::NoBuffers)
    }

    /// The program's tables and the engine's own check, in step. Each membership also binds
    /// the group's (address, port) in the program (counted, so the group is steered for this
    /// port while any membership of any socket on the interface lasts).
    fn set_group(&mut self, group: IpAddr, source: Option<IpAddr>, join: bool) -> Result<(), Error> {
        let steer = self.steer_group(group, source, join);
        if let Err(e) = steer {
            tracing::error!(error = %e, "updating the XDP group table failed");
            return Err(Error::InvalidArgument);
        }
        self.core
            .shared
            .send(Command::XdpGroup {
                sock: self.core.id,
                group,
                source,
                join,
            })
            .map_err(|_| Error::NoBuffers)
    }

    fn steer_group(&self, group: IpAddr, source: Option<IpAddr>, join: bool) -> Result<(), crate::xdp::XdpError> {
        let bind = SocketAddr::new(group, self.local.port());
        if join {
            self.program.add_bind(bind)?;
            self.program.add_group(group, source)
        } else {
            self.program.remove_group(group, source)?;
            self.program.remove_bind(bind)
        }
    }

    /// The kernel's AF_XDP counters (XDP_STATISTICS), summed over this socket's queues:
    /// frames it dropped because the FILL ring was empty or the RX ring full.
    pub fn xsk_statistics(&self) -> Result<XskStatistics, Error> {
        let mut sum = XskStatistics::default();
        for &fd in &self.xsk_fds {
            sum += crate::sys::xsk::statistics(fd)?;
        }
        Ok(sum)
    }

    /// What the XDP program steered to porto, passed to the kernel, and filtered so far.
    pub fn xdp_counters(&self) -> Result<ProgramCounters, SetupError> {
        Ok(self.program.counters()?)
    }
}

/// A UDP socket on whichever transport it could get — AF_XDP (zero-copy or copy) where
/// asked for and available, else a kernel socket through io_uring — as WSASocket picks a
/// provider; [`transport`](Self::transport) says which, and `bind` says why it fell back.
#[derive(Debug)]
pub enum DatagramSocket {
    Kernel(UdpSocket),
    Xdp(Box<XdpUdpSocket>),
}

/// How a [`DatagramSocket`] is opened.
#[derive(Clone, Debug, Default)]
pub struct DatagramOptions {
    /// Kernel socket options (also for the fallback).
    pub socket: SocketOptions,
    /// AF_XDP on this interface, if wanted.
    pub xdp: Option<XdpOptions>,
    /// When AF_XDP cannot be had, fall back to a kernel socket (and say why) instead of
    /// failing.
    pub fallback: bool,
}

impl DatagramSocket {
    /// Binds `addr` on `shard`. With `opts.xdp`, tries AF_XDP (whose own ladder is
    /// zero-copy, then copy); if that fails and `opts.fallback` allows, binds a kernel socket
    /// and returns why AF_XDP could not be had beside it.
    pub fn bind(
        shard: &ShardHandle,
        addr: SocketAddr,
        opts: &DatagramOptions,
        delivery: Delivery,
    ) -> Result<(DatagramSocket, Option<String>), SetupError> {
        let Some(x) = &opts.xdp else {
            return Ok((
                DatagramSocket::Kernel(UdpSocket::bind(shard, addr, &opts.socket, delivery)?),
                None,
            ));
        };
        match XdpUdpSocket::bind(shard, addr, x, delivery.clone()) {
            Ok(s) => Ok((DatagramSocket::Xdp(Box::new(s)), None)),
            Err(e) if opts.fallback => {
                let provider = shard.info().map_or(Transport::IoUring, |i| i.provider.transport);
                let why = format!(
                    "AF_XDP on {} unavailable ({e}); UDP through kernel sockets ({provider}) instead",
                    x.iface
                );
                tracing::warn!("{why}");
                Ok((
                    DatagramSocket::Kernel(UdpSocket::bind(shard, addr, &opts.socket, delivery)?),
                    Some(why),
                ))
            }
            Err(e) => Err(e),
        }
    }

    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        match self {
            DatagramSocket::Kernel(s) => s.local_addr(),
            DatagramSocket::Xdp(s) => Ok(s.local_addr()),
        }
    }

    /// The transport this socket got.
    pub fn transport(&self) -> Transport {
        match self {
            DatagramSocket::Kernel(s) => s.core().transport(),
            DatagramSocket::Xdp(s) => s.transport(),
        }
    }

    /// What the AF_XDP socket obtained, if this is one.
    pub fn xdp_info(&self) -> Option<&XdpInfo> {
        match self {
            DatagramSocket::Kernel(_) => None,
            DatagramSocket::Xdp(s) => Some(s.info()),
        }
    }

    pub fn recv_from_multishot(&self, token: u64) -> Result<(), Rejected> {
        match self {
            DatagramSocket::Kernel(s) => s.recv_from_multishot(token),
            DatagramSocket::Xdp(s) => s.recv_from_multishot(token),
        }
    }

    /// A datagram send; `zerocopy` asks a kernel socket for SEND_ZC (AF_XDP sends from the
    /// frame itself anyway).
    pub fn send_to(&self, buf: Buf, addr: SocketAddr, token: u64, zerocopy: bool) -> Result<(), Rejected> {
        match self {
            DatagramSocket::Kernel(s) if zerocopy => s.send_to_zc(buf, addr, token),
            DatagramSocket::Kernel(s) => s.send_to(buf, addr, token),
            DatagramSocket::Xdp(s) => s.send_to(buf, addr, token),
        }
    }

    pub fn cancel(&self, token: u64) -> Result<(), Error> {
        match self {
            DatagramSocket::Kernel(s) => s.cancel(token),
            DatagramSocket::Xdp(s) => s.cancel(token),
        }
    }
}
