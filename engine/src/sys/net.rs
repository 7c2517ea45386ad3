//! Sockets through libc: creation, options, bind/listen, and `SocketAddr` <-> `sockaddr`
//! conversion. Every fd comes back as an `OwnedFd`, so it is closed exactly once.

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Socket type for [`socket`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Udp,
    Tcp,
}

/// A non-blocking, close-on-exec socket of the family of `addr`.
pub(crate) fn socket(addr: &SocketAddr, kind: Kind) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let ty = match kind {
        Kind::Udp => libc::SOCK_DGRAM,
        Kind::Tcp => libc::SOCK_STREAM,
    } | libc::SOCK_NONBLOCK
        | libc::SOCK_CLOEXEC;
    // SAFETY: socket(2) takes no pointers.
    let fd = cvt(unsafe { libc::socket(domain, ty, 0) })?;
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// setsockopt with an integer value.
/// setsockopt(2) with the value's bytes as given (an option of any type).
pub(crate) fn set_bytes(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: the kernel reads `value.len()` bytes from the live slice.
    cvt(unsafe { libc::setsockopt(fd, level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) }).map(|_| ())
}

pub(crate) fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        )
    })
    .map(|_| ())
}

/// setsockopt with a struct value.
fn set_struct<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: the option value is a live T of the size passed.
    cvt(unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), size_of::<T>() as u32) }).map(|_| ())
}

fn in_addr(a: Ipv4Addr) -> libc::in_addr {
    libc::in_addr {
        s_addr: u32::from_ne_bytes(a.octets()),
    }
}

/// IP_ADD_MEMBERSHIP / IP_DROP_MEMBERSHIP (any source) on the interface with address
/// `iface` (UNSPECIFIED: the kernel's choice).
pub(crate) fn membership_v4(fd: RawFd, group: Ipv4Addr, iface: Ipv4Addr, join: bool) -> io::Result<()> {
    let m = libc::ip_mreq {
        imr_multiaddr: in_addr(group),
        imr_interface: in_addr(iface),
    };
    let name = if join {
        libc::IP_ADD_MEMBERSHIP
    } else {
        libc::IP_DROP_MEMBERSHIP
    };
    set_struct(fd, libc::IPPROTO_IP, name, &m)
}

/// IP_ADD_SOURCE_MEMBERSHIP / IP_DROP_SOURCE_MEMBERSHIP: `group` from `source` only.
/// What a source-filter call does to a membership (RFC 3678): include mode adds and drops
/// sources (`Join`, `Leave`), exclude mode (an any-source membership) blocks and unblocks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SourceOp {
    Join,
    Leave,
    Block,
    Unblock,
}

impl SourceOp {
    /// The IPv4 `ip_mreq_source` option.
    fn v4_name(self) -> libc::c_int {
        match self {
            SourceOp::Join => libc::IP_ADD_SOURCE_MEMBERSHIP,
            SourceOp::Leave => libc::IP_DROP_SOURCE_MEMBERSHIP,
            SourceOp::Block => libc::IP_BLOCK_SOURCE,
            SourceOp::Unblock => libc::IP_UNBLOCK_SOURCE,
        }
    }

    /// The protocol-independent `group_source_req` option.
    fn mcast_name(self) -> libc::c_int {
        match self {
            SourceOp::Join => libc::MCAST_JOIN_SOURCE_GROUP,
            SourceOp::Leave => libc::MCAST_LEAVE_SOURCE_GROUP,
            SourceOp::Block => libc::MCAST_BLOCK_SOURCE,
            SourceOp::Unblock => libc::MCAST_UNBLOCK_SOURCE,
        }
    }
}

pub(crate) fn source_membership_v4(
    fd: RawFd,
    group: Ipv4Addr,
    source: Ipv4Addr,
    iface: Ipv4Addr,
    op: SourceOp,
) -> io::Result<()> {
    let m = libc::ip_mreq_source {
        imr_multiaddr: in_addr(group),
        imr_interface: in_addr(iface),
        imr_sourceaddr: in_addr(source),
    };
    set_struct(fd, libc::IPPROTO_IP, op.v4_name(), &m)
}

/// A source-filter call by interface index (IPv6, or IPv4 by index).
pub(crate) fn mcast_source(fd: RawFd, group: IpAddr, source: IpAddr, ifindex: u32, op: SourceOp) -> io::Result<()> {
    let level = if group.is_ipv4() {
        libc::IPPROTO_IP
    } else {
        libc::IPPROTO_IPV6
    };
    let storage = |a: IpAddr| to_raw(&SocketAddr::new(a, 0)).0;
    let m = libc::group_source_req {
        gsr_interface: ifindex,
        gsr_group: storage(group),
        gsr_source: storage(source),
    };
    set_struct(fd, level, op.mcast_name(), &m)
}

/// The RFC 3678 protocol-independent calls (IPv4 and IPv6 alike), on interface index
/// `ifindex` (0: the kernel's choice): MCAST_JOIN_GROUP / MCAST_LEAVE_GROUP for any source,
/// MCAST_JOIN_SOURCE_GROUP / MCAST_LEAVE_SOURCE_GROUP for one included source.
pub(crate) fn mcast_membership(
    fd: RawFd,
    group: IpAddr,
    source: Option<IpAddr>,
    ifindex: u32,
    join: bool,
) -> io::Result<()> {
    let level = if group.is_ipv4() {
        libc::IPPROTO_IP
    } else {
        libc::IPPROTO_IPV6
    };
    let storage = |a: IpAddr| to_raw(&SocketAddr::new(a, 0)).0;
    match source {
        Some(src) => {
            let op = if join { SourceOp::Join } else { SourceOp::Leave };
            mcast_source(fd, group, src, ifindex, op)
        }
        None => {
            let m = libc::group_req {
                gr_interface: ifindex,
                gr_group: storage(group),
            };
            let name = if join {
                libc::MCAST_JOIN_GROUP
            } else {
                libc::MCAST_LEAVE_GROUP
            };
            set_struct(fd, level, name, &m)
        }
    }
}

/// Room for the control messages one op sends or reads itself (cmsghdr-aligned): one
/// IP_TOS / IPV6_TCLASS int, or one in_pktinfo / in6_pktinfo.
pub(crate) type ControlRoom = [u64; 8];

/// Writes one control message (`level`, `kind`, `data`) at the start of `buf`; its
/// CMSG_SPACE, the length to send.
fn put_cmsg(buf: &mut ControlRoom, level: i32, kind: i32, data: &[u8]) -> usize {
    // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(data.len() as u32) as usize,
            libc::CMSG_LEN(data.len() as u32) as usize,
        )
    };
    assert!(space <= size_of::<ControlRoom>(), "one small control message fits");
    buf.fill(0);
    let hdr = libc::cmsghdr {
        cmsg_len: len,
        cmsg_level: level,
        cmsg_type: kind,
    };
    // SAFETY: `buf` is 8-byte aligned (cmsghdr's alignment) and holds `space` bytes: the
    // header, then `data` at CMSG_DATA's offset (the header's aligned size).
    unsafe {
        std::ptr::write(buf.as_mut_ptr().cast::<libc::cmsghdr>(), hdr);
        let at = buf.as_mut_ptr().cast::<u8>().add(size_of::<libc::cmsghdr>());
        std::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len());
    }
    space
}

/// Writes an IP_TOS (IPv4) or IPV6_TCLASS (IPv6) control message carrying `tos` into
/// `buf`; returns its length (CMSG_SPACE of an int).
pub(crate) fn tos_cmsg(buf: &mut ControlRoom, v6: bool, tos: u8) -> usize {
    let (level, kind) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_TCLASS)
    } else {
        (libc::IPPROTO_IP, libc::IP_TOS)
    };
    put_cmsg(buf, level, kind, &libc::c_int::from(tos).to_ne_bytes())
}

/// Writes the control message choosing a datagram's source address (RIOSendEx's
/// pLocalAddress): IP_PKTINFO's `ipi_spec_dst` for IPv4, IPV6_PKTINFO's address for IPv6;
/// returns its length.
pub(crate) fn pktinfo_cmsg(buf: &mut ControlRoom, src: IpAddr) -> usize {
    match src {
        IpAddr::V4(a) => {
            // struct in_pktinfo { int ipi_ifindex; in_addr ipi_spec_dst; in_addr ipi_addr; }
            let mut d = [0u8; 12];
            d[4..8].copy_from_slice(&a.octets());
            put_cmsg(buf, libc::IPPROTO_IP, libc::IP_PKTINFO, &d)
        }
        IpAddr::V6(a) => {
            // struct in6_pktinfo { in6_addr ipi6_addr; int ipi6_ifindex; }
            let mut d = [0u8; 20];
            d[..16].copy_from_slice(&a.octets());
            put_cmsg(buf, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &d)
        }
    }
}

/// The index of interface `name`.
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a NUL-terminated string.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// IP_MULTICAST_IF by interface address.
pub(crate) fn multicast_if_v4(fd: RawFd, iface: Ipv4Addr) -> io::Result<()> {
    set_struct(fd, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &in_addr(iface))
}

/// IPV6_ADD_MEMBERSHIP / IPV6_DROP_MEMBERSHIP on interface index `ifindex` (0: any).
pub(crate) fn membership_v6(fd: RawFd, group: Ipv6Addr, ifindex: u32, join: bool) -> io::Result<()> {
    let m = libc::ipv6_mreq {
        ipv6mr_multiaddr: libc::in6_addr {
            s6_addr: group.octets(),
        },
        ipv6mr_interface: ifindex,
    };
    let name = if join {
        libc::IPV6_ADD_MEMBERSHIP
    } else {
        libc::IPV6_DROP_MEMBERSHIP
    };
    set_struct(fd, libc::IPPROTO_IPV6, name, &m)
}

/// getsockopt of an integer value.
pub(crate) fn get_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value/len point to live locals of the declared size.
    cvt(unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut libc::c_int).cast(), &mut len) })?;
    Ok(value)
}

pub(crate) fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = to_raw(addr);
    // SAFETY: storage is a valid sockaddr of `len` bytes.
    cvt(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) }).map(|_| ())
}

pub(crate) fn listen(fd: RawFd, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) takes no pointers.
    cvt(unsafe { libc::listen(fd, backlog) }).map(|_| ())
}

/// Blocking-style connect on a non-blocking socket: waits with poll(2) up to `timeout_ms`.
pub(crate) fn connect_wait(fd: RawFd, addr: &SocketAddr, timeout_ms: i32) -> io::Result<()> {
    let (storage, len) = to_raw(addr);
    // SAFETY: storage is a valid sockaddr of `len` bytes.
    let r = unsafe { libc::connect(fd, (&storage as *const libc::sockaddr_storage).cast(), len) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EINPROGRESS) {
        return Err(err);
    }
    if !poll_one(fd, libc::POLLOUT, timeout_ms)? {
        return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
    }
    match get_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)? {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// poll(2) over `fds` (retried on EINTR): how many have events.
pub(crate) fn poll_many(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    loop {
        // SAFETY: `fds` is a live, writable array of `fds.len()` pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// accept4(2): a non-blocking, close-on-exec connection and its peer.
pub(crate) fn accept(fd: RawFd) -> io::Result<(OwnedFd, Option<SocketAddr>)> {
    let mut storage = zeroed_storage();
    let mut len = storage_len();
    // SAFETY: storage/len describe a live sockaddr_storage.
    let c = cvt(unsafe {
        libc::accept4(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    })?;
    // SAFETY: `c` was just returned by accept4 and is owned by nobody else.
    let owned = unsafe { OwnedFd::from_raw_fd(c) };
    Ok((owned, from_raw(&storage, len)))
}

/// Waits for `events` on `fd`; `Ok(false)` on timeout.
pub(crate) fn poll_one(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> io::Result<bool> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    loop {
        // SAFETY: one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// sendto(2) without blocking.
pub(crate) fn send_to(fd: RawFd, data: &[u8], addr: Option<&SocketAddr>) -> io::Result<usize> {
    let raw = addr.map(to_raw);
    let (ptr, len) = match &raw {
        Some((s, l)) => ((s as *const libc::sockaddr_storage).cast(), *l),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: data is a live slice; ptr/len is either null/0 or a valid sockaddr.
    let n = unsafe { libc::sendto(fd, data.as_ptr().cast(), data.len(), libc::MSG_NOSIGNAL, ptr, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// recvfrom(2) without blocking, with `flags` (MSG_TRUNC on a datagram socket: the result
/// is the datagram's whole length, however much of it `buf` took).
pub(crate) fn recv_from(fd: RawFd, buf: &mut [u8], flags: i32) -> io::Result<(usize, Option<SocketAddr>)> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: buf is a live mutable slice; storage/len describe a live sockaddr_storage.
    let n = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags,
            storage.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: zero-initialised and possibly filled in by the kernel: valid either way.
    let storage = unsafe { storage.assume_init() };
    Ok((n as usize, from_raw(&storage, len)))
}

/// FIONREAD: bytes waiting to be read (a datagram socket: the next datagram's length).
pub(crate) fn readable_bytes(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int we own.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) })?;
    Ok(n.max(0) as usize)
}

/// One recv(2)-like receive (blocking as the socket is) that also reads the control messages:
/// the byte count and what [`parse_cmsgs`] found (the kernel's receive stamp, the TOS).
pub(crate) fn recv_cmsgs(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Cmsgs)> {
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut msg = zeroed_msghdr();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of_val(&control);
    // SAFETY: the msghdr names a live iovec over `buf` and a live control buffer of the
    // length given; no name buffer.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let len = msg.msg_controllen.min(size_of_val(&control));
    // SAFETY: the control buffer is plain bytes we own; `len` is within it.
    let bytes = unsafe { std::slice::from_raw_parts(control.as_ptr().cast::<u8>(), len) };
    Ok((n as usize, parse_cmsgs(bytes)))
}

pub(crate) fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getsockname)
}

pub(crate) fn peer_addr(fd: RawFd) -> io::Result<SocketAddr> {
    name_of(fd, libc::getpeername)
}

type NameFn = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn name_of(fd: RawFd, f: NameFn) -> io::Result<SocketAddr> {
    let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage/len describe a live sockaddr_storage.
    cvt(unsafe { f(fd, storage.as_mut_ptr().cast(), &mut len) })?;
    // SAFETY: zero-initialised, then written by the kernel.
    let storage = unsafe { storage.assume_init() };
    from_raw(&storage, len).ok_or_else(|| io::Error::from_raw_os_error(libc::EAFNOSUPPORT))
}

pub(crate) fn shutdown_raw(fd: RawFd, how: libc::c_int) -> io::Result<()> {
    // SAFETY: shutdown(2) takes no pointers.
    cvt(unsafe { libc::shutdown(fd, how) }).map(|_| ())
}

/// The hardware (MAC) address of interface `name` in the calling thread's namespace.
pub(crate) fn hw_addr(name: &str) -> io::Result<[u8; 6]> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: socket(2) takes no pointers.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid ifreq.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of a live ifreq.
    cvt(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::SIOCGIFHWADDR, &mut req) })?;
    // SAFETY: after SIOCGIFHWADDR the union holds ifru_hwaddr.
    let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (d, s) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *d = *s as u8;
    }
    Ok(mac)
}

/// Sends one raw Ethernet frame out of `ifname` (AF_PACKET), as a test peer injecting
/// arbitrary (also malformed) frames does.
pub(crate) fn send_raw_frame(ifname: &str, frame: &[u8]) -> io::Result<()> {
    let ifindex = ifindex(ifname)?;
    // SAFETY: socket(2) takes no pointers; protocol 0 means send-only.
    let fd = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh fd owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    sll.sll_halen = 6;
    let dst = frame
        .get(..6)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    sll.sll_addr[..6].copy_from_slice(dst);
    // SAFETY: frame is a live slice; sll is a live sockaddr_ll of the size passed.
    let n = unsafe {
        libc::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// recvmmsg(2) into `bufs` (one datagram each, truncated to its buffer), waiting up to
/// `timeout_ms` for the first; returns the lengths received into `lens`.
pub(crate) fn recv_mmsg(fd: RawFd, bufs: &mut [Vec<u8>], lens: &mut [usize], timeout_ms: i32) -> io::Result<usize> {
    const BATCH_MAX: usize = 256;
    let n = bufs.len().min(lens.len()).min(BATCH_MAX);
    if !poll_one(fd, libc::POLLIN, timeout_ms)? {
        return Ok(0);
    }
    // SAFETY: all-zero iovec/mmsghdr arrays are valid; each iovec is pointed at a live buffer
    // below before the call.
    let mut iov: [libc::iovec; BATCH_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        };
        msgs[i].msg_hdr.msg_iov = &mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: msgs[..n] describe live, exclusively borrowed buffers of the given lengths.
    let r = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            n as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    for i in 0..r as usize {
        lens[i] = msgs[i].msg_len as usize;
    }
    Ok(r as usize)
}

/// What porto reads from a received datagram's control messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Cmsgs {
    /// IP_TOS / IPV6_TCLASS.
    pub tos: Option<u8>,
    /// SCM_TIMESTAMPING: the kernel's software receive time (ns since the Unix epoch), or
    /// the NIC's hardware one when the software one is absent.
    pub rx_ns: Option<std::num::NonZeroU64>,
    /// IP_RECVERR / IPV6_RECVERR (an error-queue message): (origin, info, data) of its
    /// `sock_extended_err`. A TX timestamp has origin SO_EE_ORIGIN_TIMESTAMPING, info the
    /// stamp's kind (SCM_TSTAMP_SND, ...) and data the send's OPT_ID key.
    pub ext_err: Option<(u8, u32, u32)>,
    /// IP_PKTINFO / IPV6_PKTINFO: the address a datagram was sent to (its header's
    /// destination: the local address it arrived on, or the group).
    pub local: Option<IpAddr>,
}

/// `sock_extended_err.ee_origin` of a timestamp (linux/errqueue.h).
pub(crate) const SO_EE_ORIGIN_TIMESTAMPING: u8 = 4;
/// `ee_info` of a stamp taken when the packet left for the device (SCM_TSTAMP_SND).
pub(crate) const SCM_TSTAMP_SND: u32 = 0;

impl Cmsgs {
    /// A TX timestamp (error-queue message): (the send's id, software stamp ns).
    pub(crate) fn tx_stamp(&self) -> Option<(u32, std::num::NonZeroU64)> {
        match self.ext_err? {
            (SO_EE_ORIGIN_TIMESTAMPING, SCM_TSTAMP_SND, id) => Some((id, self.rx_ns?)),
            _ => None,
        }
    }
}

/// Walks control messages the kernel wrote (`cmsghdr` chain); lengths are untrusted: a
/// header claiming more than is there ends the walk.
pub(crate) fn parse_cmsgs(mut b: &[u8]) -> Cmsgs {
    const HDR: usize = size_of::<libc::cmsghdr>();
    let align = |n: usize| n.div_ceil(size_of::<usize>()) * size_of::<usize>();
    let mut out = Cmsgs::default();
    while b.len() >= HDR {
        let Ok(len) = b[..size_of::<usize>()].try_into().map(usize::from_ne_bytes) else {
            break;
        };
        let level = i32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
        let ty = i32::from_ne_bytes([b[12], b[13], b[14], b[15]]);
        if len < HDR || len > b.len() {
            break;
        }
        let data = &b[HDR..len];
        match (level, ty) {
            (libc::IPPROTO_IP, libc::IP_TOS) => out.tos = data.first().copied(),
            (libc::IPPROTO_IPV6, libc::IPV6_TCLASS) => {
                out.tos = data
                    .get(..4)
                    .map(|v| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]) as u8)
            }
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                out.local = data
                    .get(8..12)
                    .map(|d| IpAddr::V4(Ipv4Addr::new(d[0], d[1], d[2], d[3])));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                out.local = data
                    .get(..16)
                    .and_then(|d| <[u8; 16]>::try_from(d).ok())
                    .map(|d| IpAddr::V6(Ipv6Addr::from(d)));
            }
            (libc::SOL_SOCKET, libc::SCM_TIMESTAMPING) => {
                // struct scm_timestamping { struct timespec ts[3]; }: [0] software, [2] raw
                // hardware (64-bit timespecs: 16 bytes each).
                let ts = |i: usize| -> Option<std::num::NonZeroU64> {
                    let d = data.get(i * 16..i * 16 + 16)?;
                    let sec = i64::from_ne_bytes(d[..8].try_into().ok()?);
                    let nsec = i64::from_ne_bytes(d[8..].try_into().ok()?);
                    let ns = u64::try_from(sec)
                        .ok()?
                        .checked_mul(1_000_000_000)?
                        .checked_add(u64::try_from(nsec).ok()?)?;
                    std::num::NonZeroU64::new(ns)
                };
                out.rx_ns = ts(0).or_else(|| ts(2));
            }
            (libc::IPPROTO_IP, libc::IP_RECVERR) | (libc::IPPROTO_IPV6, libc::IPV6_RECVERR) => {
                // struct sock_extended_err { u32 errno; u8 origin, type, code, pad; u32 info, data; }
                if let Some(d) = data.get(..16) {
                    let word = |i: usize| u32::from_ne_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
                    out.ext_err = Some((d[4], word(8), word(12)));
                }
            }
            _ => {}
        }
        let Some(rest) = b.get(align(len)..) else { break };
        b = rest;
    }
    out
}

/// The process's effective capabilities (`CapEff` of /proc/self/status; 0 if unreadable).
pub(crate) fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// The soft RLIMIT_MEMLOCK in bytes, `None` if unlimited (or unreadable).
pub(crate) fn memlock_limit() -> Option<u64> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 || r.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(r.rlim_cur)
}

/// A blocking eventfd for waking a shard: io_uring honours O_NONBLOCK (a read would fail
/// with EAGAIN instead of waiting), so the wake-up read needs a blocking one; writes never
/// block in practice (the counter is 2^64).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    // SAFETY: fresh fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A non-blocking eventfd for an event object (WSAEVENT): readable while set, so it can be
/// waited on with poll/epoll; [`eventfd_drain`] resets it without blocking.
pub(crate) fn eventfd_nonblocking() -> io::Result<OwnedFd> {
    // SAFETY: eventfd(2) takes no pointers.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: fresh fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resets a non-blocking eventfd: one read takes the whole counter (EAGAIN: it was not set).
pub(crate) fn eventfd_drain(fd: RawFd) {
    let mut v: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
}

pub(crate) fn eventfd_signal(fd: RawFd) {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64. EAGAIN (counter saturated) still leaves the
    // eventfd readable, which is all a wake-up needs.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
}

/// Encodes `addr` as a `sockaddr_storage` and its length.
pub(crate) fn to_raw(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and as aligned as sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and as aligned as sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Decodes a kernel-written sockaddr; `None` for other families or short lengths.
pub(crate) fn from_raw(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    from_bytes(
        // SAFETY: a sockaddr_storage is plain bytes of its own size.
        unsafe {
            std::slice::from_raw_parts(
                (storage as *const libc::sockaddr_storage).cast::<u8>(),
                size_of::<libc::sockaddr_storage>(),
            )
        },
        len as usize,
    )
}

/// One datagram of a multishot recvmsg, as laid out in its provided buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecvMsgOut {
    pub peer: Option<SocketAddr>,
    pub tos: Option<u8>,
    /// The kernel's receive timestamp (ns since the Unix epoch), if the socket asked for it.
    pub rx_ns: Option<std::num::NonZeroU64>,
    /// Where the payload lies in the buffer.
    pub payload: std::ops::Range<usize>,
    /// The datagram was larger than the buffer's room for it.
    pub truncated: bool,
}

/// The size of a `sockaddr_storage`.
pub(crate) fn storage_len() -> libc::socklen_t {
    size_of::<libc::sockaddr_storage>() as libc::socklen_t
}

/// A msghdr naming `namelen` bytes at `addr` and the one iovec `iov`.
pub(crate) fn msghdr(
    addr: &mut libc::sockaddr_storage,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
) -> libc::msghdr {
    let mut m = zeroed_msghdr();
    m.msg_name = (addr as *mut libc::sockaddr_storage).cast();
    m.msg_namelen = namelen;
    m.msg_iov = iov;
    m.msg_iovlen = 1;
    m
}

pub(crate) fn zeroed_msghdr() -> libc::msghdr {
    // SAFETY: all-zero is a valid msghdr (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

pub(crate) fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage (family AF_UNSPEC).
    unsafe { std::mem::zeroed() }
}

/// Parses a multishot recvmsg buffer, `[io_uring_recvmsg_out | name (namelen) | control
/// (controllen) | payload]`, whose header the kernel wrote: its lengths are untrusted and
/// every range is clamped to the buffer. `None` if the buffer cannot hold the fixed part.
pub(crate) fn parse_recvmsg_out(buf: &[u8], namelen: u32, controllen: usize) -> Option<RecvMsgOut> {
    // SAFETY: all-zero is a valid msghdr; only the two lengths are read by the parser.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = namelen;
    msg.msg_controllen = controllen;
    let out = io_uring::types::RecvMsgOut::parse(buf, &msg).ok()?;
    let cmsgs = parse_cmsgs(out.control_data());
    let start = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
    Some(RecvMsgOut {
        peer: from_bytes(out.name_data(), out.incoming_name_len() as usize),
        tos: cmsgs.tos,
        rx_ns: cmsgs.rx_ns,
        payload: start..start + out.payload_data().len(),
        truncated: out.is_payload_truncated(),
    })
}

/// Decodes a sockaddr laid out in `bytes` (as io_uring's recvmsg-multishot output carries it).
pub(crate) fn from_bytes(bytes: &[u8], len: usize) -> Option<SocketAddr> {
    let len = len.min(bytes.len());
    if len < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as libc::c_int;
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(SocketAddr::V4(SocketAddrV4::new(ip, port(bytes))))
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            let flow = u32::from_be_bytes(bytes[4..8].try_into().ok()?);
            let ip: [u8; 16] = bytes[8..24].try_into().ok()?;
            let scope = u32::from_ne_bytes(bytes[24..28].try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port(bytes),
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips_v4_and_v6() {
        for a in ["127.0.0.1:9000", "[::1]:443", "[fe80::1%3]:7"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (raw, len) = to_raw(&addr);
            assert_eq!(from_raw(&raw, len), Some(addr), "{a}");
        }
    }

    #[test]
    fn tos_is_found_in_control_data_and_garbage_is_not() {
        let mut c = vec![0u8; 24];
        c[..8].copy_from_slice(&17usize.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::IP_TOS.to_ne_bytes());
        c[16] = 0xb8;
        assert_eq!(parse_cmsgs(&c).tos, Some(0xb8));
        c[..8].copy_from_slice(&999usize.to_ne_bytes());
        assert_eq!(parse_cmsgs(&c).tos, None);
        assert_eq!(parse_cmsgs(&[1, 2, 3]).tos, None);
    }

    /// A TOS message then an SCM_TIMESTAMPING one (software stamp zero: the hardware one is
    /// taken), as the kernel chains them; a timestamp message cut short yields no stamp.
    #[test]
    fn a_timestamp_follows_the_tos_and_a_short_one_is_ignored() {
        let mut c = vec![0u8; 24 + 64];
        c[..8].copy_from_slice(&17usize.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::IP_TOS.to_ne_bytes());
        c[16] = 0x28;
        let t = &mut c[24..];
        t[..8].copy_from_slice(&64usize.to_ne_bytes());
        t[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        t[12..16].copy_from_slice(&libc::SCM_TIMESTAMPING.to_ne_bytes());
        // ts[2] (raw hardware) = 1.5 s.
        t[16 + 32..16 + 40].copy_from_slice(&1i64.to_ne_bytes());
        t[16 + 40..16 + 48].copy_from_slice(&500_000_000i64.to_ne_bytes());
        let m = parse_cmsgs(&c);
        assert_eq!((m.tos, m.rx_ns.map(|t| t.get())), (Some(0x28), Some(1_500_000_000)));
        // ts[0] (software) wins when present.
        c[24 + 16..24 + 24].copy_from_slice(&2i64.to_ne_bytes());
        assert_eq!(parse_cmsgs(&c).rx_ns.map(|t| t.get()), Some(2_000_000_000));
        // Cut short: the header claims 64 bytes, 40 are there.
        assert_eq!(parse_cmsgs(&c[..64]).rx_ns, None);
        // A negative time is no time.
        c[24 + 16..24 + 24].copy_from_slice(&(-5i64).to_ne_bytes());
        c[24 + 48..24 + 56].copy_from_slice(&0i64.to_ne_bytes());
        c[24 + 56..24 + 64].copy_from_slice(&0i64.to_ne_bytes());
        assert_eq!(parse_cmsgs(&c).rx_ns, None);
    }

    /// A TX timestamp as the error queue gives it: SCM_TIMESTAMPING then IP_RECVERR with
    /// origin TIMESTAMPING, SCM_TSTAMP_SND and the OPT_ID key; another origin or kind is no
    /// TX stamp, and a truncated extended error is ignored.
    #[test]
    fn a_tx_timestamp_is_its_stamp_and_its_key() {
        let mut c = vec![0u8; 64 + 48];
        c[..8].copy_from_slice(&64usize.to_ne_bytes());
        c[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[12..16].copy_from_slice(&libc::SCM_TIMESTAMPING.to_ne_bytes());
        c[16..24].copy_from_slice(&3i64.to_ne_bytes());
        let e = &mut c[64..];
        e[..8].copy_from_slice(&48usize.to_ne_bytes());
        e[8..12].copy_from_slice(&libc::IPPROTO_IP.to_ne_bytes());
        e[12..16].copy_from_slice(&libc::IP_RECVERR.to_ne_bytes());
        e[16..20].copy_from_slice(&(libc::ENOMSG as u32).to_ne_bytes());
        e[20] = SO_EE_ORIGIN_TIMESTAMPING;
        e[24..28].copy_from_slice(&SCM_TSTAMP_SND.to_ne_bytes());
        e[28..32].copy_from_slice(&41u32.to_ne_bytes());
        let m = parse_cmsgs(&c);
        assert_eq!(m.tx_stamp().map(|(k, t)| (k, t.get())), Some((41, 3_000_000_000)));
        c[64 + 24] = 1; // SCM_TSTAMP_SCHED: not the send stamp
        assert_eq!(parse_cmsgs(&c).tx_stamp(), None);
        c[64 + 24] = 0;
        c[64 + 20] = 2; // SO_EE_ORIGIN_ICMP: an error, not a stamp
        assert_eq!(parse_cmsgs(&c).tx_stamp(), None);
        c[64 + 20] = SO_EE_ORIGIN_TIMESTAMPING;
        c[64..72].copy_from_slice(&24usize.to_ne_bytes()); // 8 bytes of extended error
        assert_eq!(parse_cmsgs(&c).ext_err, None);
    }

    #[test]
    fn short_or_foreign_sockaddr_is_rejected() {
        assert_eq!(from_bytes(&[2, 0, 1], 3), None);
        let mut unix = [0u8; 16];
        unix[0] = libc::AF_UNIX as u8;
        assert_eq!(from_bytes(&unix, 16), None);
    }
}
