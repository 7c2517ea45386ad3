//! Winsock's error numbers and special values, as C sees them (`include/porto.h`): Windows'
//! numbers, so code that compares `WSAGetLastError()` against them ports by renaming.

// Winsock's names.
#![allow(non_camel_case_types)]

/// A socket handle (Winsock's `SOCKET`).
pub type PORTO_SOCKET = u64;
/// A completion port handle (Win32's `HANDLE`); 0 is NULL.
pub type PORTO_HANDLE = u64;

pub const PORTO_INVALID_SOCKET: PORTO_SOCKET = 0xFFFF_FFFF_FFFF_FFFF;
pub const PORTO_INVALID_HANDLE_VALUE: PORTO_HANDLE = 0xFFFF_FFFF_FFFF_FFFF;
pub const PORTO_SOCKET_ERROR: i32 = -1;
/// `dwMilliseconds` that waits for ever.
pub const PORTO_INFINITE: u32 = 0xFFFF_FFFF;

pub const PORTO_ERROR_INVALID_HANDLE: i32 = 6;
pub const PORTO_WAIT_TIMEOUT: i32 = 258;
pub const PORTO_WSA_OPERATION_ABORTED: i32 = 995;
pub const PORTO_WSA_IO_PENDING: i32 = 997;
pub const PORTO_WSAEACCES: i32 = 10013;
pub const PORTO_WSAEFAULT: i32 = 10014;
pub const PORTO_WSAEINVAL: i32 = 10022;
pub const PORTO_WSAEWOULDBLOCK: i32 = 10035;
pub const PORTO_WSAENOTSOCK: i32 = 10038;
pub const PORTO_WSAEMSGSIZE: i32 = 10040;
pub const PORTO_WSAESOCKTNOSUPPORT: i32 = 10044;
pub const PORTO_WSAEOPNOTSUPP: i32 = 10045;
pub const PORTO_WSAEAFNOSUPPORT: i32 = 10047;
pub const PORTO_WSAEADDRINUSE: i32 = 10048;
pub const PORTO_WSAEADDRNOTAVAIL: i32 = 10049;
pub const PORTO_WSAENETUNREACH: i32 = 10051;
pub const PORTO_WSAECONNABORTED: i32 = 10053;
pub const PORTO_WSAECONNRESET: i32 = 10054;
pub const PORTO_WSAENOBUFS: i32 = 10055;
pub const PORTO_WSAENOTCONN: i32 = 10057;
pub const PORTO_WSAESHUTDOWN: i32 = 10058;
pub const PORTO_WSAETIMEDOUT: i32 = 10060;
pub const PORTO_WSAECONNREFUSED: i32 = 10061;
pub const PORTO_WSAEHOSTUNREACH: i32 = 10065;
pub const PORTO_WSANOTINITIALISED: i32 = 10093;
pub const PORTO_WSASYSCALLFAILURE: i32 = 10107;
