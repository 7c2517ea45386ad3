//! Winsock's error numbers and special values, as C sees them (`include/porto.h`): Windows'
//! numbers, so code that compares `WSAGetLastError()` against them ports by renaming.

// Winsock's names.
#![allow(non_camel_case_types, non_upper_case_globals)]

/// A socket handle (Winsock's `SOCKET`).
pub type PORTO_SOCKET = u64;
/// Win32's `HANDLE` (a completion port, an event, a QoS handle; NULL is none), and the type
/// of every other handle here: a pointer type as Windows declares it, so `h == NULL`,
/// `(HANDLE)sock` and `h == INVALID_HANDLE_VALUE` compile in C and C++ as on Windows. The
/// library numbers its handles and checks every one it is given.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PORTO_HANDLE(pub *mut core::ffi::c_void);

impl PORTO_HANDLE {
    /// The library's number for it.
    pub(crate) fn id(self) -> u64 {
        self.0 as usize as u64
    }

    /// The handle of number `id`.
    pub(crate) fn of(id: u64) -> PORTO_HANDLE {
        PORTO_HANDLE(id as usize as *mut core::ffi::c_void)
    }
}

pub const PORTO_INVALID_SOCKET: PORTO_SOCKET = 0xFFFF_FFFF_FFFF_FFFF;
/// `INVALID_HANDLE_VALUE` (`(HANDLE)-1`; a macro in porto.h).
/// cbindgen:ignore
pub const PORTO_INVALID_HANDLE_VALUE: PORTO_HANDLE = PORTO_HANDLE(usize::MAX as *mut core::ffi::c_void);
pub const PORTO_SOCKET_ERROR: i32 = -1;
/// `dwMilliseconds` that waits for ever.
pub const PORTO_INFINITE: u32 = 0xFFFF_FFFF;
/// `WSA_INFINITE`: `WSAWaitForMultipleEvents`' wait for ever (winsock2.h's name for `INFINITE`).
pub const PORTO_WSA_INFINITE: u32 = PORTO_INFINITE;

pub const PORTO_ERROR_INVALID_HANDLE: i32 = 6;
/// `ERROR_INVALID_PARAMETER`: kernel32's answer to a bad argument (`CreateIoCompletionPort`
/// associating a handle a second time).
pub const PORTO_ERROR_INVALID_PARAMETER: i32 = PORTO_WSA_INVALID_PARAMETER;
pub const PORTO_WAIT_TIMEOUT: i32 = 258;
/// `STATUS_PENDING`: an `OVERLAPPED`'s `Internal` while its operation is in flight
/// (`PORTO_HasOverlappedIoCompleted` tests it).
pub const PORTO_STATUS_PENDING: u64 = 0x103;
/// `WSA_IO_INCOMPLETE`: `WSAGetOverlappedResult` without waiting, on an operation still in
/// flight.
pub const PORTO_WSA_IO_INCOMPLETE: i32 = 996;
/// `WSATRY_AGAIN`: `WSAAccept`'s condition deferred the connection (`CF_DEFER`).
pub const PORTO_WSATRY_AGAIN: i32 = 11002;
/// `WSAAccept` condition results.
pub const PORTO_CF_ACCEPT: i32 = 0;
pub const PORTO_CF_REJECT: i32 = 1;
pub const PORTO_CF_DEFER: i32 = 2;
/// `shutdown`'s `how` (Linux's SHUT_RD/WR/RDWR have the same values).
pub const PORTO_SD_RECEIVE: i32 = 0;
pub const PORTO_SD_SEND: i32 = 1;
pub const PORTO_SD_BOTH: i32 = 2;
/// `ERROR_ABANDONED_WAIT_0`: the completion port was closed while the call waited on it.
pub const PORTO_ERROR_ABANDONED_WAIT_0: i32 = 735;
/// `ERROR_INVALID_PARAMETER` (`WSA_INVALID_PARAMETER`).
pub const PORTO_WSA_INVALID_PARAMETER: i32 = 87;
/// `WSA_INVALID_HANDLE`: not an event handle.
pub const PORTO_WSA_INVALID_HANDLE: i32 = 6;

/// `WSAEVENT`: a handle from `porto_WSACreateEvent` (Windows' `HANDLE`).
pub type PORTO_WSAEVENT = PORTO_HANDLE;
/// `WSA_INVALID_EVENT` (NULL): what `porto_WSACreateEvent` returns on failure (a macro in
/// porto.h).
/// cbindgen:ignore
pub const PORTO_WSA_INVALID_EVENT: PORTO_WSAEVENT = PORTO_HANDLE(std::ptr::null_mut());
/// `WSAWaitForMultipleEvents`' results: `WSA_WAIT_EVENT_0 + i`, `WSA_WAIT_TIMEOUT`,
/// `WSA_WAIT_FAILED` (the reason in `porto_WSAGetLastError`).
pub const PORTO_WSA_WAIT_EVENT_0: u32 = 0;
pub const PORTO_WSA_WAIT_TIMEOUT: u32 = 258;
pub const PORTO_WSA_WAIT_FAILED: u32 = 0xFFFF_FFFF;
/// Most events one `WSAWaitForMultipleEvents` takes.
pub const PORTO_WSA_MAXIMUM_WAIT_EVENTS: u32 = 64;
/// `WaitForSingleObject`'s results.
pub const PORTO_WAIT_OBJECT_0: u32 = 0;
pub const PORTO_WAIT_FAILED: u32 = 0xFFFF_FFFF;
pub const PORTO_WSA_OPERATION_ABORTED: i32 = 995;
pub const PORTO_WSA_IO_PENDING: i32 = 997;
pub const PORTO_WSAEINTR: i32 = 10004;
pub const PORTO_WSAEACCES: i32 = 10013;
pub const PORTO_WSAEFAULT: i32 = 10014;
pub const PORTO_WSAEINVAL: i32 = 10022;
pub const PORTO_WSAEWOULDBLOCK: i32 = 10035;
pub const PORTO_WSAENOTSOCK: i32 = 10038;
pub const PORTO_WSAEMSGSIZE: i32 = 10040;
pub const PORTO_WSAENOPROTOOPT: i32 = 10042;
pub const PORTO_WSAESOCKTNOSUPPORT: i32 = 10044;
pub const PORTO_WSAEOPNOTSUPP: i32 = 10045;
pub const PORTO_WSAEAFNOSUPPORT: i32 = 10047;
pub const PORTO_WSAEADDRINUSE: i32 = 10048;
pub const PORTO_WSAEADDRNOTAVAIL: i32 = 10049;
pub const PORTO_WSAENETUNREACH: i32 = 10051;
pub const PORTO_WSAECONNABORTED: i32 = 10053;
pub const PORTO_WSAECONNRESET: i32 = 10054;
pub const PORTO_WSAENOBUFS: i32 = 10055;
/// `WSAEMFILE`: too many open sockets (a shard's socket table, `PORTO_STARTUP::sockets_max`).
pub const PORTO_WSAEMFILE: i32 = 10024;
pub const PORTO_WSAEISCONN: i32 = 10056;
pub const PORTO_WSAENOTCONN: i32 = 10057;
pub const PORTO_WSAESHUTDOWN: i32 = 10058;
pub const PORTO_WSAETIMEDOUT: i32 = 10060;
pub const PORTO_WSAETOOMANYREFS: i32 = 10059;
pub const PORTO_WSAECONNREFUSED: i32 = 10061;
pub const PORTO_WSAEHOSTUNREACH: i32 = 10065;
pub const PORTO_WSANOTINITIALISED: i32 = 10093;
pub const PORTO_WSASYSCALLFAILURE: i32 = 10107;

/// `WSASocket` flags (accepted; every porto socket is overlapped and can do RIO).
pub const PORTO_WSA_FLAG_OVERLAPPED: u32 = 0x01;
pub const PORTO_WSA_FLAG_REGISTERED_IO: u32 = 0x100;

/// `WSAIoctl` codes: fetch extension function pointers (`WSAID_MULTIPLE_RIO` for RIO).
pub const PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER: u32 = 0xC800_0006;
pub const PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER: u32 = 0xC800_0024;

/// A registered buffer (`RIO_BUFFERID`), completion queue (`RIO_CQ`), request queue
/// (`RIO_RQ`): opaque pointers on Windows, handles the library checks on every call here.
pub type PORTO_RIO_BUFFERID = PORTO_HANDLE;
pub type PORTO_RIO_CQ = PORTO_HANDLE;
pub type PORTO_RIO_RQ = PORTO_HANDLE;
/// `RIO_INVALID_BUFFERID` (`(RIO_BUFFERID)0xFFFFFFFF`; macros in porto.h for these three).
/// cbindgen:ignore
pub const PORTO_RIO_INVALID_BUFFERID: PORTO_RIO_BUFFERID = PORTO_HANDLE(0xFFFF_FFFF_usize as *mut core::ffi::c_void);
/// `RIO_INVALID_CQ` (NULL).
/// cbindgen:ignore
pub const PORTO_RIO_INVALID_CQ: PORTO_RIO_CQ = PORTO_HANDLE(std::ptr::null_mut());
/// `RIO_INVALID_RQ` (NULL).
/// cbindgen:ignore
pub const PORTO_RIO_INVALID_RQ: PORTO_RIO_RQ = PORTO_HANDLE(std::ptr::null_mut());
/// `RIODequeueCompletion`'s answer for a handle that is no completion queue.
pub const PORTO_RIO_CORRUPT_CQ: u32 = 0xFFFF_FFFF;
/// Largest `RIOCreateCompletionQueue` size (each entry is preallocated).
pub const PORTO_RIO_MAX_CQ_SIZE: u32 = 1 << 20;

/// RIO request flags (a bit set, Windows' values).
pub const PORTO_RIO_MSG_DONT_NOTIFY: u32 = 0x1;
pub const PORTO_RIO_MSG_DEFER: u32 = 0x2;
/// A receive on a TCP connection completes only with its buffer full (or at EOF); on a
/// datagram socket or a send: `PORTO_WSAEINVAL`.
pub const PORTO_RIO_MSG_WAITALL: u32 = 0x4;
pub const PORTO_RIO_MSG_COMMIT_ONLY: u32 = 0x8;

/// `RIOReceiveEx`'s `pFlags` bits (Windows' values).
pub const PORTO_MSG_CTRUNC: u32 = 0x0200;
pub const PORTO_MSG_BCAST: u32 = 0x0400;
pub const PORTO_MSG_MCAST: u32 = 0x0800;

/// `RIO_NOTIFICATION_COMPLETION_TYPE`.
pub const PORTO_RIO_EVENT_COMPLETION: i32 = 1;
pub const PORTO_RIO_IOCP_COMPLETION: i32 = 2;

/// `setsockopt(SOL_SOCKET, …)` options a Winsock TCP server sets after `AcceptEx` /
/// `ConnectEx` (accepted as no-ops: the socket already has its context).
pub const PORTO_SO_UPDATE_ACCEPT_CONTEXT: i32 = 0x700B;
pub const PORTO_SO_UPDATE_CONNECT_CONTEXT: i32 = 0x7010;

/// `DisconnectEx` flag: the socket may go to `AcceptEx` again.
pub const PORTO_TF_REUSE_SOCKET: u32 = 0x02;

/// `SetFileCompletionNotificationModes` flags.
pub const PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: u8 = 0x1;
pub const PORTO_FILE_SKIP_SET_EVENT_ON_HANDLE: u8 = 0x2;

/// QOS2 (qos2.h): `QOS_TRAFFIC_TYPE`.
pub const PORTO_QOSTrafficTypeBestEffort: i32 = 0;
pub const PORTO_QOSTrafficTypeBackground: i32 = 1;
pub const PORTO_QOSTrafficTypeExcellentEffort: i32 = 2;
pub const PORTO_QOSTrafficTypeAudioVideo: i32 = 3;
pub const PORTO_QOSTrafficTypeVoice: i32 = 4;
pub const PORTO_QOSTrafficTypeControl: i32 = 5;
/// `QOSAddSocketToFlow` flag (accepted: porto's flows never adapt on their own).
pub const PORTO_QOS_NON_ADAPTIVE_FLOW: u32 = 0x2;
/// `QOS_SET_FLOW`.
pub const PORTO_QOSSetTrafficType: i32 = 0;
pub const PORTO_QOSSetOutgoingRate: i32 = 1;
pub const PORTO_QOSSetOutgoingDSCPValue: i32 = 2;
/// `QOS_QUERY_FLOW`, and porto's flow counters.
pub const PORTO_QOSQueryFlowFundamentals: i32 = 0;
pub const PORTO_QOSQueryPacketPriority: i32 = 1;
pub const PORTO_QOSQueryOutgoingRate: i32 = 2;
pub const PORTO_QOSQueryFlowCounters: i32 = 100;
/// `QOS_SHAPING`.
pub const PORTO_QOSShapeOnly: i32 = 0;
pub const PORTO_QOSShapeAndMark: i32 = 1;
pub const PORTO_QOSUseNonConformantMarkings: i32 = 2;
/// `QOS_FLOWRATE_REASON`: what porto reports.
pub const PORTO_QOSFlowRateNotApplicable: i32 = 0;

/// `ioctlsocket` commands (Windows' values).
pub const PORTO_FIONBIO: u32 = 0x8004_667E;
pub const PORTO_FIONREAD: u32 = 0x4004_667F;

/// `WSAPoll` events (Windows' values; Linux's `POLLIN` and friends differ).
pub const PORTO_POLLERR: i16 = 0x0001;
pub const PORTO_POLLHUP: i16 = 0x0002;
pub const PORTO_POLLNVAL: i16 = 0x0004;
pub const PORTO_POLLWRNORM: i16 = 0x0010;
pub const PORTO_POLLWRBAND: i16 = 0x0020;
pub const PORTO_POLLRDNORM: i16 = 0x0100;
pub const PORTO_POLLRDBAND: i16 = 0x0200;
pub const PORTO_POLLIN: i16 = PORTO_POLLRDNORM | PORTO_POLLRDBAND;
pub const PORTO_POLLOUT: i16 = PORTO_POLLWRNORM;

/// Sockets one `PORTO_FD_SET` holds (Windows' `FD_SETSIZE`).
pub const PORTO_FD_SETSIZE: u32 = 64;
