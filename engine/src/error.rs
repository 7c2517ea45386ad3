//! Errors. Fast-path outcomes are one small `Copy` enum, [`Error`], with Winsock-like kinds
//! and an errno mapping; start-up and control-plane failures are [`SetupError`], which carries
//! the context (which call, which resource) and the likely fix.

use std::fmt;
use std::io;

/// The outcome of an operation that did not succeed, named after its Winsock counterpart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// WSA_IO_PENDING: the operation was queued and will complete later.
    IoPending,
    /// WSAENOBUFS: no buffer, queue slot or operation slot is free; retry once some return.
    NoBuffers,
    /// WSA_OPERATION_ABORTED: cancelled (CancelIoEx, socket closed, engine stopped).
    Aborted,
    /// WSAEWOULDBLOCK: nothing to do without blocking.
    WouldBlock,
    /// WSAEMSGSIZE: the datagram did not fit the buffer (the rest was discarded), or is too
    /// large to send.
    MessageTooLong,
    /// WSAETIMEDOUT.
    TimedOut,
    /// WSAECONNREFUSED.
    ConnectionRefused,
    /// WSAECONNRESET.
    ConnectionReset,
    /// WSAECONNABORTED.
    ConnectionAborted,
    /// WSAENOTCONN.
    NotConnected,
    /// WSAEADDRINUSE.
    AddrInUse,
    /// WSAEADDRNOTAVAIL.
    AddrNotAvailable,
    /// WSAENETUNREACH.
    NetworkUnreachable,
    /// WSAEHOSTUNREACH.
    HostUnreachable,
    /// WSAEACCES.
    AccessDenied,
    /// WSAEINVAL.
    InvalidArgument,
    /// WSAESHUTDOWN: the engine or socket is shut down.
    Shutdown,
    /// WSAENOTSOCK: the handle's socket is closed (a RIO queue or fan-out outlived it).
    NotSocket,
    /// WSAETOOMANYREFS: a resize below what is in use (RIOResizeRequestQueue).
    TooManyRefs,
    /// Any other errno.
    Os(i32),
}

impl Error {
    /// Maps a positive errno value.
    pub fn from_errno(errno: i32) -> Error {
        match errno {
            libc::ENOBUFS | libc::ENOMEM => Error::NoBuffers,
            libc::ECANCELED | libc::EINTR => Error::Aborted,
            libc::EAGAIN => Error::WouldBlock,
            libc::EMSGSIZE => Error::MessageTooLong,
            libc::ETIME | libc::ETIMEDOUT => Error::TimedOut,
            libc::ECONNREFUSED => Error::ConnectionRefused,
            libc::ECONNRESET | libc::EPIPE => Error::ConnectionReset,
            libc::ECONNABORTED => Error::ConnectionAborted,
            libc::ENOTCONN => Error::NotConnected,
            libc::EADDRINUSE => Error::AddrInUse,
            libc::EADDRNOTAVAIL => Error::AddrNotAvailable,
            libc::ENETUNREACH => Error::NetworkUnreachable,
            libc::EHOSTUNREACH => Error::HostUnreachable,
            libc::EACCES | libc::EPERM => Error::AccessDenied,
            libc::EINVAL => Error::InvalidArgument,
            libc::ESHUTDOWN => Error::Shutdown,
            libc::ENOTSOCK | libc::EBADF => Error::NotSocket,
            libc::ETOOMANYREFS => Error::TooManyRefs,
            e => Error::Os(e),
        }
    }

    /// The closest errno, for logging or for handing back to C.
    pub fn errno(self) -> i32 {
        match self {
            Error::IoPending => libc::EINPROGRESS,
            Error::NoBuffers => libc::ENOBUFS,
            Error::Aborted => libc::ECANCELED,
            Error::WouldBlock => libc::EAGAIN,
            Error::MessageTooLong => libc::EMSGSIZE,
            Error::TimedOut => libc::ETIMEDOUT,
            Error::ConnectionRefused => libc::ECONNREFUSED,
            Error::ConnectionReset => libc::ECONNRESET,
            Error::ConnectionAborted => libc::ECONNABORTED,
            Error::NotConnected => libc::ENOTCONN,
            Error::AddrInUse => libc::EADDRINUSE,
            Error::AddrNotAvailable => libc::EADDRNOTAVAIL,
            Error::NetworkUnreachable => libc::ENETUNREACH,
            Error::HostUnreachable => libc::EHOSTUNREACH,
            Error::AccessDenied => libc::EACCES,
            Error::InvalidArgument => libc::EINVAL,
            Error::Shutdown => libc::ESHUTDOWN,
            Error::NotSocket => libc::ENOTSOCK,
            Error::TooManyRefs => libc::ETOOMANYREFS,
            Error::Os(e) => e,
        }
    }

    /// The Winsock name of this error (`WSAENOBUFS`, ...).
    pub fn wsa_name(self) -> &'static str {
        self.wsa().0
    }

    /// The Winsock error number (`WSAENOBUFS` = 10055, `WSA_IO_PENDING` = 997, ...), what
    /// `WSAGetLastError` returns on Windows for this condition.
    pub fn wsa_code(self) -> i32 {
        self.wsa().1
    }

    fn wsa(self) -> (&'static str, i32) {
        match self {
            Error::IoPending => ("WSA_IO_PENDING", 997),
            Error::NoBuffers => ("WSAENOBUFS", 10055),
            Error::Aborted => ("WSA_OPERATION_ABORTED", 995),
            Error::WouldBlock => ("WSAEWOULDBLOCK", 10035),
            Error::MessageTooLong => ("WSAEMSGSIZE", 10040),
            Error::TimedOut => ("WSAETIMEDOUT", 10060),
            Error::ConnectionRefused => ("WSAECONNREFUSED", 10061),
            Error::ConnectionReset => ("WSAECONNRESET", 10054),
            Error::ConnectionAborted => ("WSAECONNABORTED", 10053),
            Error::NotConnected => ("WSAENOTCONN", 10057),
            Error::AddrInUse => ("WSAEADDRINUSE", 10048),
            Error::AddrNotAvailable => ("WSAEADDRNOTAVAIL", 10049),
            Error::NetworkUnreachable => ("WSAENETUNREACH", 10051),
            Error::HostUnreachable => ("WSAEHOSTUNREACH", 10065),
            Error::AccessDenied => ("WSAEACCES", 10013),
            Error::InvalidArgument => ("WSAEINVAL", 10022),
            Error::Shutdown => ("WSAESHUTDOWN", 10058),
            Error::NotSocket => ("WSAENOTSOCK", 10038),
            Error::TooManyRefs => ("WSAETOOMANYREFS", 10059),
            Error::Os(_) => ("WSASYSCALLFAILURE", 10107),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Os(e) => write!(f, "{} ({})", self.wsa_name(), io::Error::from_raw_os_error(*e)),
            e => write!(f, "{} ({})", e.wsa_name(), io::Error::from_raw_os_error(e.errno())),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::from_errno(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

/// Failures while starting an engine or creating a socket, with the fix where one is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("io_uring_setup failed: {source}; {fix}")]
    Ring { source: io::Error, fix: &'static str },
    #[error("mapping the {bytes}-byte buffer pool failed: {source}; lower the pool size (frames_per_shard)")]
    Map { bytes: usize, source: io::Error },
    /// `hint`: the likely cause for that errno (RLIMIT_MEMLOCK only where it can be).
    #[error("registering the {bytes}-byte buffer pool with io_uring failed: {source}{hint}")]
    Register {
        bytes: usize,
        hint: String,
        source: io::Error,
    },
    #[error("{what} failed: {source}")]
    Syscall { what: &'static str, source: io::Error },
    #[error("binding {addr}: {source}{hint}")]
    Bind {
        addr: std::net::SocketAddr,
        source: io::Error,
        hint: &'static str,
    },
    #[error("the engine is stopped")]
    Stopped,
    #[error(transparent)]
    Xdp(#[from] crate::xdp::XdpError),
    #[error("AF_XDP socket on {iface} queue {queue}: {source}{hint}")]
    Xsk {
        iface: String,
        queue: u32,
        source: io::Error,
        hint: &'static str,
    },
    #[error("no free {0} slot: raise the limit in the engine configuration")]
    Limit(&'static str),
}

impl SetupError {
    pub(crate) fn xsk(iface: &str, queue: u32, source: io::Error) -> SetupError {
        let hint = match source.raw_os_error() {
            Some(libc::EPERM) => ": AF_XDP needs root or CAP_NET_RAW+CAP_BPF",
            Some(libc::ENODEV) => ": no such interface in this network namespace",
            Some(libc::EINVAL) => ": the queue does not exist on this interface (see ethtool -l)",
            Some(libc::EBUSY) => ": another AF_XDP socket holds this queue",
            Some(libc::ENOMEM) | Some(libc::ENOBUFS) => {
                ": the kernel refused to pin the UMEM (XDP_UMEM_REG) or its rings: raise RLIMIT_MEMLOCK, or grant CAP_IPC_LOCK (with it, the kernel itself is out of memory it can pin)"
            }
            Some(libc::EAFNOSUPPORT) => {
                ": this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS) or a seccomp profile refuses them: use kernel sockets (porto echo --fallback)"
            }
            _ => "",
        };
        SetupError::Xsk {
            iface: iface.to_string(),
            queue,
            source,
            hint,
        }
    }

    pub(crate) fn bind(addr: std::net::SocketAddr, source: io::Error) -> SetupError {
        let hint = match source.raw_os_error() {
            Some(libc::EADDRINUSE) => ": the port is in use; stop the other process or choose another --port",
            Some(libc::EACCES) => ": ports below 1024 need root or CAP_NET_BIND_SERVICE",
            Some(libc::EADDRNOTAVAIL) => ": no local interface has that address",
            _ => "",
        };
        SetupError::Bind { addr, source, hint }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping_round_trips_for_named_kinds() {
        for e in [
            libc::ENOBUFS,
            libc::ECANCELED,
            libc::EAGAIN,
            libc::EMSGSIZE,
            libc::ETIMEDOUT,
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::ENOTCONN,
            libc::EADDRINUSE,
            libc::EINVAL,
        ] {
            assert_eq!(Error::from_errno(Error::from_errno(e).errno()), Error::from_errno(e));
        }
        assert_eq!(Error::from_errno(libc::EXDEV), Error::Os(libc::EXDEV));
        assert_eq!(Error::from_errno(libc::ECANCELED).wsa_name(), "WSA_OPERATION_ABORTED");
    }

    #[test]
    fn bind_error_names_the_fix() {
        let e = SetupError::bind(
            "127.0.0.1:1".parse().unwrap(),
            io::Error::from_raw_os_error(libc::EADDRINUSE),
        );
        assert!(e.to_string().contains("port is in use"), "{e}");
    }
}
