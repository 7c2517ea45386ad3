//! Registered I/O for C (`include/porto.h`), and `porto_WSAIoctl`'s extension-function
//! lookup (RIO's table, mswsock's AcceptEx & co.): the `RIO_EXTENSION_FUNCTION_TABLE` that
//! `porto_WSAIoctl(SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, WSAID_MULTIPLE_RIO)` fills,
//! as on Windows, and the functions in it (also exported by name). Like `abi`, this is where
//! C's pointers are read and written, each checked; the caller's registered memory is reached
//! only through `porto::rio::ExternalBuffer`, whose contract is Windows' RIO_BUF rules.
//!
//! Thread safety: as on Windows, one request queue's calls must not run concurrently with
//! each other (porto serialises them anyway), nor one completion queue's
//! `RIODequeueCompletion`/`RIONotify`/`RIOCloseCompletionQueue`; different queues are
//! independent.

// The C boundary: raw pointers from the caller, `#[no_mangle]` exports.
#![allow(unsafe_code)]
// Windows' names, kept so a port is mostly renaming.
#![allow(non_snake_case, non_camel_case_types, non_upper_case_globals)]

use std::ffi::{c_char, c_void};
use std::net::SocketAddr;
use std::ptr::NonNull;

use crate::abi::{guard, non_null, read_sockaddr, write_sockaddr, PORTO_OVERLAPPED};
use crate::abi_tcp::{porto_AcceptEx, porto_ConnectEx, porto_DisconnectEx, porto_GetAcceptExSockaddrs};
use crate::codes::*;
use crate::rio::{self, Issue, Notify};
use crate::state::{self, Wsa};
use porto::rio::ExternalBuffer;

/// Win32's `GUID`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PORTO_GUID {
    pub Data1: u32,
    pub Data2: u16,
    pub Data3: u16,
    pub Data4: [u8; 8],
}

/// `WSAID_MULTIPLE_RIO`: asks `porto_WSAIoctl` for the RIO function table.
#[no_mangle]
pub static PORTO_WSAID_MULTIPLE_RIO: PORTO_GUID = PORTO_GUID {
    Data1: 0x8509_e081,
    Data2: 0x96dd,
    Data3: 0x4005,
    Data4: [0xb1, 0x65, 0x9e, 0x2e, 0xe8, 0xc7, 0x9e, 0x3f],
};

/// `RIO_BUF`: `Length` bytes at `Offset` in registered buffer `BufferId`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_RIO_BUF {
    pub BufferId: PORTO_RIO_BUFFERID,
    pub Offset: u32,
    pub Length: u32,
}

/// `RIORESULT`: `Status` is 0 or the WSA error (e.g. `PORTO_WSA_OPERATION_ABORTED`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_RIORESULT {
    pub Status: i32,
    pub BytesTransferred: u32,
    pub SocketContext: u64,
    pub RequestContext: u64,
}

/// The `Event` member of `RIO_NOTIFICATION_COMPLETION`: after `RIONotify`, `EventHandle`
/// (from `porto_WSACreateEvent`) is set when a result is there; `NotifyReset` non-zero:
/// `RIONotify` resets it first.
/// cbindgen:ignore
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_RIO_NOTIFICATION_EVENT {
    pub EventHandle: PORTO_HANDLE,
    pub NotifyReset: i32,
}

/// The `Iocp` member of `RIO_NOTIFICATION_COMPLETION`: after `RIONotify`, one completion
/// with `CompletionKey` and `Overlapped` is queued to `IocpHandle` when a result is there.
/// cbindgen:ignore
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_RIO_NOTIFICATION_IOCP {
    pub IocpHandle: PORTO_HANDLE,
    pub CompletionKey: *mut c_void,
    pub Overlapped: *mut c_void,
}

/// `Event` or `Iocp`, as `Type` says.
/// cbindgen:ignore
#[repr(C)]
#[derive(Clone, Copy)]
pub union PORTO_RIO_NOTIFICATION {
    pub Event: PORTO_RIO_NOTIFICATION_EVENT,
    pub Iocp: PORTO_RIO_NOTIFICATION_IOCP,
}

/// `RIO_NOTIFICATION_COMPLETION`, laid out as mswsock.h has it: `Type`, then `Event` and
/// `Iocp` in an anonymous union. porto.h declares it by hand (cbindgen writes no anonymous
/// union; `ffi/cbindgen.toml`'s `after_includes`), so `n.Event.EventHandle` and designated
/// initializers naming one member compile as on Windows.
/// cbindgen:ignore
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PORTO_RIO_NOTIFICATION_COMPLETION {
    /// `PORTO_RIO_EVENT_COMPLETION` (reads `Event`) or `PORTO_RIO_IOCP_COMPLETION` (reads
    /// `Iocp`).
    pub Type: i32,
    pub u: PORTO_RIO_NOTIFICATION,
}

impl std::fmt::Debug for PORTO_RIO_NOTIFICATION {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Which member holds is the enclosing `Type`'s to say.
        f.write_str("PORTO_RIO_NOTIFICATION { .. }")
    }
}

impl std::fmt::Debug for PORTO_RIO_NOTIFICATION_COMPLETION {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PORTO_RIO_NOTIFICATION_COMPLETION")
            .field("Type", &self.Type)
            .finish_non_exhaustive()
    }
}

// porto.h's hand-written declaration has this layout (win_rio_udp.cpp asserts the C side).
const _: () = assert!(std::mem::size_of::<PORTO_RIO_NOTIFICATION_COMPLETION>() == 32);
const _: () = assert!(std::mem::offset_of!(PORTO_RIO_NOTIFICATION_COMPLETION, u) == 8);

/// `SOCKADDR_INET`: an IPv4 or IPv6 address, told apart by `si_family`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union PORTO_SOCKADDR_INET {
    pub Ipv4: libc::sockaddr_in,
    pub Ipv6: libc::sockaddr_in6,
    pub si_family: libc::sa_family_t,
}

impl std::fmt::Debug for PORTO_SOCKADDR_INET {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: every member begins with the family; reading it is always defined.
        let family = unsafe { self.si_family };
        f.debug_struct("PORTO_SOCKADDR_INET")
            .field("si_family", &family)
            .finish()
    }
}

/// `RIO_EXTENSION_FUNCTION_TABLE`, filled by `porto_WSAIoctl`; each member is also exported
/// as `porto_RIO…`.
#[repr(C)]
#[derive(Debug)]
pub struct PORTO_RIO_EXTENSION_FUNCTION_TABLE {
    pub cbSize: u32,
    pub RIOReceive: PORTO_LPFN_RIORECEIVE,
    pub RIOReceiveEx: PORTO_LPFN_RIORECEIVEEX,
    pub RIOSend: PORTO_LPFN_RIOSEND,
    pub RIOSendEx: PORTO_LPFN_RIOSENDEX,
    pub RIOCloseCompletionQueue: PORTO_LPFN_RIOCLOSECOMPLETIONQUEUE,
    pub RIOCreateCompletionQueue: PORTO_LPFN_RIOCREATECOMPLETIONQUEUE,
    pub RIOCreateRequestQueue: PORTO_LPFN_RIOCREATEREQUESTQUEUE,
    pub RIODequeueCompletion: PORTO_LPFN_RIODEQUEUECOMPLETION,
    pub RIODeregisterBuffer: PORTO_LPFN_RIODEREGISTERBUFFER,
    pub RIONotify: PORTO_LPFN_RIONOTIFY,
    pub RIORegisterBuffer: PORTO_LPFN_RIOREGISTERBUFFER,
    pub RIOResizeCompletionQueue: PORTO_LPFN_RIORESIZECOMPLETIONQUEUE,
    pub RIOResizeRequestQueue: PORTO_LPFN_RIORESIZEREQUESTQUEUE,
}

/// `LPFN_RIORECEIVE`: (queue, data, count, flags, request context).
pub type PORTO_LPFN_RIORECEIVE =
    Option<unsafe extern "C" fn(PORTO_RIO_RQ, *const PORTO_RIO_BUF, u32, u32, *mut c_void) -> i32>;
/// `LPFN_RIORECEIVEEX`: (queue, data, count, local address, remote address, control, flags
/// buffer, flags, request context).
pub type PORTO_LPFN_RIORECEIVEEX = Option<
    unsafe extern "C" fn(
        PORTO_RIO_RQ,
        *const PORTO_RIO_BUF,
        u32,
        *const PORTO_RIO_BUF,
        *const PORTO_RIO_BUF,
        *const PORTO_RIO_BUF,
        *const PORTO_RIO_BUF,
        u32,
        *mut c_void,
    ) -> i32,
>;
/// `LPFN_RIOSEND`.
pub type PORTO_LPFN_RIOSEND = PORTO_LPFN_RIORECEIVE;
/// `LPFN_RIOSENDEX`.
pub type PORTO_LPFN_RIOSENDEX = PORTO_LPFN_RIORECEIVEEX;
/// `LPFN_RIOCLOSECOMPLETIONQUEUE`.
pub type PORTO_LPFN_RIOCLOSECOMPLETIONQUEUE = Option<extern "C" fn(PORTO_RIO_CQ)>;
/// `LPFN_RIOCREATECOMPLETIONQUEUE`.
pub type PORTO_LPFN_RIOCREATECOMPLETIONQUEUE =
    Option<unsafe extern "C" fn(u32, *const PORTO_RIO_NOTIFICATION_COMPLETION) -> PORTO_RIO_CQ>;
/// `LPFN_RIOCREATEREQUESTQUEUE`.
pub type PORTO_LPFN_RIOCREATEREQUESTQUEUE =
    Option<extern "C" fn(PORTO_SOCKET, u32, u32, u32, u32, PORTO_RIO_CQ, PORTO_RIO_CQ, *mut c_void) -> PORTO_RIO_RQ>;
/// `LPFN_RIODEQUEUECOMPLETION`.
pub type PORTO_LPFN_RIODEQUEUECOMPLETION = Option<unsafe extern "C" fn(PORTO_RIO_CQ, *mut PORTO_RIORESULT, u32) -> u32>;
/// `LPFN_RIODEREGISTERBUFFER`.
pub type PORTO_LPFN_RIODEREGISTERBUFFER = Option<extern "C" fn(PORTO_RIO_BUFFERID)>;
/// `LPFN_RIONOTIFY`.
pub type PORTO_LPFN_RIONOTIFY = Option<extern "C" fn(PORTO_RIO_CQ) -> i32>;
/// `LPFN_RIOREGISTERBUFFER`.
pub type PORTO_LPFN_RIOREGISTERBUFFER = Option<unsafe extern "C" fn(*mut c_char, u32) -> PORTO_RIO_BUFFERID>;
/// `LPFN_RIORESIZECOMPLETIONQUEUE`.
pub type PORTO_LPFN_RIORESIZECOMPLETIONQUEUE = Option<extern "C" fn(PORTO_RIO_CQ, u32) -> i32>;
/// `LPFN_RIORESIZEREQUESTQUEUE`.
pub type PORTO_LPFN_RIORESIZEREQUESTQUEUE = Option<extern "C" fn(PORTO_RIO_RQ, u32, u32) -> i32>;

/// `WSAID_ACCEPTEX`, `WSAID_CONNECTEX`, `WSAID_DISCONNECTEX`, `WSAID_GETACCEPTEXSOCKADDRS`:
/// for `porto_WSAIoctl(PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER)`.
#[no_mangle]
pub static PORTO_WSAID_ACCEPTEX: PORTO_GUID = PORTO_GUID {
    Data1: 0xb536_7df1,
    Data2: 0xcbac,
    Data3: 0x11cf,
    Data4: [0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92],
};
#[no_mangle]
pub static PORTO_WSAID_CONNECTEX: PORTO_GUID = PORTO_GUID {
    Data1: 0x25a2_07b9,
    Data2: 0xddf3,
    Data3: 0x4660,
    Data4: [0x8e, 0xe9, 0x76, 0xe5, 0x8c, 0x74, 0x06, 0x3e],
};
#[no_mangle]
pub static PORTO_WSAID_DISCONNECTEX: PORTO_GUID = PORTO_GUID {
    Data1: 0x7fda_2e11,
    Data2: 0x8630,
    Data3: 0x436f,
    Data4: [0xa0, 0x31, 0xf5, 0x36, 0xa6, 0xee, 0xc1, 0x57],
};
#[no_mangle]
pub static PORTO_WSAID_GETACCEPTEXSOCKADDRS: PORTO_GUID = PORTO_GUID {
    Data1: 0xb536_7df2,
    Data2: 0xcbac,
    Data3: 0x11cf,
    Data4: [0x95, 0xca, 0x00, 0x80, 0x5f, 0x48, 0xa1, 0x92],
};

/// `LPFN_ACCEPTEX`.
pub type PORTO_LPFN_ACCEPTEX = Option<
    unsafe extern "C" fn(
        PORTO_SOCKET,
        PORTO_SOCKET,
        *mut c_void,
        u32,
        u32,
        u32,
        *mut u32,
        *mut PORTO_OVERLAPPED,
    ) -> i32,
>;
/// `LPFN_CONNECTEX`.
pub type PORTO_LPFN_CONNECTEX = Option<
    unsafe extern "C" fn(
        PORTO_SOCKET,
        *const libc::sockaddr,
        i32,
        *const c_void,
        u32,
        *mut u32,
        *mut PORTO_OVERLAPPED,
    ) -> i32,
>;
/// `LPFN_DISCONNECTEX`.
pub type PORTO_LPFN_DISCONNECTEX = Option<unsafe extern "C" fn(PORTO_SOCKET, *mut PORTO_OVERLAPPED, u32, u32) -> i32>;
/// `LPFN_GETACCEPTEXSOCKADDRS`.
pub type PORTO_LPFN_GETACCEPTEXSOCKADDRS = Option<
    unsafe extern "C" fn(
        *mut c_void,
        u32,
        u32,
        u32,
        *mut *mut libc::sockaddr,
        *mut i32,
        *mut *mut libc::sockaddr,
        *mut i32,
    ),
>;

/// `WSAIoctl`: `PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER` with
/// `PORTO_WSAID_MULTIPLE_RIO` in `in_buf` fills the `PORTO_RIO_EXTENSION_FUNCTION_TABLE` at
/// `out_buf`; `PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER` with `PORTO_WSAID_ACCEPTEX` (or
/// `CONNECTEX`, `DISCONNECTEX`, `GETACCEPTEXSOCKADDRS`) writes that function's pointer
/// (`PORTO_LPFN_ACCEPTEX`, …) at `out_buf`. Other codes and GUIDs: `PORTO_WSAEINVAL`.
/// Returns 0 or `PORTO_SOCKET_ERROR`.
///
/// # Safety
/// `in_buf` is readable for `in_len` bytes, `out_buf` writable for `out_len`, `returned`
/// valid (each may be NULL: then `PORTO_WSAEFAULT`).
#[no_mangle]
pub unsafe extern "C" fn porto_WSAIoctl(
    s: PORTO_SOCKET,
    code: u32,
    in_buf: *const c_void,
    in_len: u32,
    out_buf: *mut c_void,
    out_len: u32,
    returned: *mut u32,
    ov: *mut PORTO_OVERLAPPED,
    routine: *const c_void,
) -> i32 {
    guard(PORTO_SOCKET_ERROR, || {
        if !ov.is_null() || !routine.is_null() {
            return Err(Wsa(PORTO_WSAEOPNOTSUPP));
        }
        state::local_addr(s).map(|_| ()).or_else(|Wsa(e)| match e {
            // An open socket, bound or not.
            PORTO_WSAEINVAL => Ok(()),
            e => Err(Wsa(e)),
        })?;
        if code != PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER && code != PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER
        {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        non_null(in_buf)?;
        non_null(out_buf)?;
        non_null(returned)?;
        if (in_len as usize) < std::mem::size_of::<PORTO_GUID>() {
            return Err(Wsa(PORTO_WSAEFAULT));
        }
        // SAFETY: `in_len >= size_of::<GUID>()` readable bytes (the caller's contract);
        // read unaligned.
        let guid = unsafe { in_buf.cast::<PORTO_GUID>().read_unaligned() };
        if code == PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER {
            let f: *const c_void = if guid == PORTO_WSAID_ACCEPTEX {
                porto_AcceptEx as *const c_void
            } else if guid == PORTO_WSAID_CONNECTEX {
                porto_ConnectEx as *const c_void
            } else if guid == PORTO_WSAID_DISCONNECTEX {
                porto_DisconnectEx as *const c_void
            } else if guid == PORTO_WSAID_GETACCEPTEXSOCKADDRS {
                porto_GetAcceptExSockaddrs as *const c_void
            } else {
                return Err(Wsa(PORTO_WSAEINVAL));
            };
            let size = std::mem::size_of::<*const c_void>();
            if (out_len as usize) < size {
                return Err(Wsa(PORTO_WSAEFAULT));
            }
            // SAFETY: `out_len >= size` writable bytes; `returned` valid.
            unsafe {
                out_buf.cast::<*const c_void>().write_unaligned(f);
                returned.write_unaligned(size as u32);
            }
            return Ok(0);
        }
        if guid != PORTO_WSAID_MULTIPLE_RIO {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        let size = std::mem::size_of::<PORTO_RIO_EXTENSION_FUNCTION_TABLE>();
        if (out_len as usize) < size {
            return Err(Wsa(PORTO_WSAEFAULT));
        }
        let table = PORTO_RIO_EXTENSION_FUNCTION_TABLE {
            cbSize: size as u32,
            RIOReceive: Some(porto_RIOReceive),
            RIOReceiveEx: Some(porto_RIOReceiveEx),
            RIOSend: Some(porto_RIOSend),
            RIOSendEx: Some(porto_RIOSendEx),
            RIOCloseCompletionQueue: Some(porto_RIOCloseCompletionQueue),
            RIOCreateCompletionQueue: Some(porto_RIOCreateCompletionQueue),
            RIOCreateRequestQueue: Some(porto_RIOCreateRequestQueue),
            RIODequeueCompletion: Some(porto_RIODequeueCompletion),
            RIODeregisterBuffer: Some(porto_RIODeregisterBuffer),
            RIONotify: Some(porto_RIONotify),
            RIORegisterBuffer: Some(porto_RIORegisterBuffer),
            RIOResizeCompletionQueue: Some(porto_RIOResizeCompletionQueue),
            RIOResizeRequestQueue: Some(porto_RIOResizeRequestQueue),
        };
        // SAFETY: `out_len >= size` writable bytes; written unaligned; `returned` valid.
        unsafe {
            out_buf
                .cast::<PORTO_RIO_EXTENSION_FUNCTION_TABLE>()
                .write_unaligned(table);
            returned.write_unaligned(size as u32);
        }
        Ok(0)
    })
}

/// `RIORegisterBuffer`: registers `len` bytes of the caller's memory at `data`. The memory
/// stays the caller's: it must stay valid until `RIODeregisterBuffer` and every request
/// using it has been dequeued. `PORTO_RIO_INVALID_BUFFERID` on failure.
///
/// # Safety
/// `data` is valid for reads and writes of `len` bytes for that long.
#[no_mangle]
pub unsafe extern "C" fn porto_RIORegisterBuffer(data: *mut c_char, len: u32) -> PORTO_RIO_BUFFERID {
    guard(PORTO_RIO_INVALID_BUFFERID, || {
        let ptr = NonNull::new(data.cast::<u8>()).ok_or(Wsa(PORTO_WSAEFAULT))?;
        let shard = state::first_shard()?;
        // The caller's contract above is what `ExternalBuffer::slice` asks (in `data_buf`).
        let buf = ExternalBuffer::register(&shard, ptr, len as usize).map_err(Wsa::from)?;
        rio::register(buf, data as usize).map(PORTO_HANDLE::of)
    })
}

/// `RIODeregisterBuffer`. Errors (an unknown id) are left in `porto_WSAGetLastError`.
#[no_mangle]
pub extern "C" fn porto_RIODeregisterBuffer(id: PORTO_RIO_BUFFERID) {
    guard((), || rio::deregister(id.id()))
}

/// `RIOCreateCompletionQueue`: `size` entries (at most `PORTO_RIO_MAX_CQ_SIZE`); `n` NULL
/// (poll with `RIODequeueCompletion`), an event or an IOCP notification (an unknown event
/// or port handle: `WSAEINVAL`). `PORTO_RIO_INVALID_CQ` on failure.
///
/// # Safety
/// `n` is NULL or valid.
#[no_mangle]
pub unsafe extern "C" fn porto_RIOCreateCompletionQueue(
    size: u32,
    n: *const PORTO_RIO_NOTIFICATION_COMPLETION,
) -> PORTO_RIO_CQ {
    guard(PORTO_RIO_INVALID_CQ, || {
        let notify = if n.is_null() {
            Notify::None
        } else {
            // SAFETY: non-NULL and valid (the caller's contract).
            let n = unsafe { &*n };
            match n.Type {
                PORTO_RIO_EVENT_COMPLETION => {
                    // SAFETY: `Type` says the caller filled `Event` (every bit pattern of its
                    // fields is a valid value).
                    let e = unsafe { n.u.Event };
                    Notify::Event {
                        event: e.EventHandle.id(),
                        reset: e.NotifyReset != 0,
                    }
                }
                PORTO_RIO_IOCP_COMPLETION => {
                    // SAFETY: as above, `Iocp`.
                    let i = unsafe { n.u.Iocp };
                    Notify::Iocp {
                        port: i.IocpHandle.id(),
                        key: i.CompletionKey as u64,
                        token: i.Overlapped as u64,
                    }
                }
                _ => return Err(Wsa(PORTO_WSAEINVAL)),
            }
        };
        rio::create_cq(size, notify).map(PORTO_HANDLE::of)
    })
}

/// `RIOCloseCompletionQueue`.
#[no_mangle]
pub extern "C" fn porto_RIOCloseCompletionQueue(cq: PORTO_RIO_CQ) {
    guard((), || rio::close_cq(cq.id()))
}

/// `RIOCreateRequestQueue` on socket `s` (bound, or bound now to the unspecified address):
/// up to `max_recv` receives and `max_send` sends outstanding, one buffer each, results in
/// `recv_cq` and `send_cq` (may be the same; each must have room). Overlapped calls on the
/// socket need it associated with a port before this. `PORTO_RIO_INVALID_RQ` on failure
/// (`PORTO_WSAENOBUFS`: a completion queue too small).
#[no_mangle]
pub extern "C" fn porto_RIOCreateRequestQueue(
    s: PORTO_SOCKET,
    max_recv: u32,
    max_recv_bufs: u32,
    max_send: u32,
    max_send_bufs: u32,
    recv_cq: PORTO_RIO_CQ,
    send_cq: PORTO_RIO_CQ,
    ctx: *mut c_void,
) -> PORTO_RIO_RQ {
    guard(PORTO_RIO_INVALID_RQ, || {
        // One data buffer per request (Windows requires 1 too).
        if max_recv_bufs != 1 || max_send_bufs != 1 {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        rio::create_rq(s, (max_recv, recv_cq.id()), (max_send, send_cq.id()), ctx as u64).map(PORTO_HANDLE::of)
    })
}

/// Reads the one data buffer of a request (`count` 0 only with `RIO_MSG_COMMIT_ONLY`, data
/// NULL) and makes its slice.
///
/// # Safety
/// `data` is NULL or points to `count` valid `RIO_BUF`s; the slice's bytes follow Windows'
/// rules for RIO_BUFs in flight (`ExternalBuffer::slice`'s contract).
unsafe fn data_buf(data: *const PORTO_RIO_BUF, count: u32) -> Result<Option<porto::rio::RioBuf>, Wsa> {
    match (data.is_null(), count) {
        (true, 0) => Ok(None),
        (false, 1) => {
            // SAFETY: one valid RIO_BUF (the caller's contract).
            let b = unsafe { data.read_unaligned() };
            let reg = rio::buffer(b.BufferId.id())?;
            // SAFETY: the caller's RIO_BUF rules (forwarded contract).
            let s = unsafe { reg.buf.slice(b.Offset as usize, b.Length as usize) }.map_err(Wsa::from)?;
            Ok(Some(s))
        }
        (true, _) => Err(Wsa(PORTO_WSAEFAULT)),
        _ => Err(Wsa(PORTO_WSAEINVAL)),
    }
}

/// An address `RIO_BUF`'s place in registered memory (address, length), at least a
/// `SOCKADDR_INET` long.
///
/// # Safety
/// `b` is NULL or valid.
unsafe fn addr_buf(b: *const PORTO_RIO_BUF) -> Result<Option<(usize, usize)>, Wsa> {
    if b.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and valid (the caller's contract).
    let b = unsafe { b.read_unaligned() };
    if (b.Length as usize) < std::mem::size_of::<PORTO_SOCKADDR_INET>() {
        return Err(Wsa(PORTO_WSAEFAULT));
    }
    let at = rio::buffer(b.BufferId.id())?.at(b.Offset, b.Length)?;
    Ok(Some((at, b.Length as usize)))
}

/// A control-messages `RIO_BUF`'s slice of registered memory (`pControlContext`).
///
/// # Safety
/// `b` is NULL or valid; its bytes follow Windows' rules for RIO_BUFs in flight.
unsafe fn control_buf(b: *const PORTO_RIO_BUF) -> Result<Option<porto::rio::RioBuf>, Wsa> {
    if b.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract: one valid RIO_BUF.
    unsafe { data_buf(b, 1) }
}

/// A `pFlags` `RIO_BUF`'s place (a `ULONG` in registered memory).
///
/// # Safety
/// `b` is NULL or valid.
unsafe fn flags_place(b: *const PORTO_RIO_BUF) -> Result<Option<usize>, Wsa> {
    if b.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and valid (the caller's contract).
    let b = unsafe { b.read_unaligned() };
    if (b.Length as usize) < std::mem::size_of::<u32>() {
        return Err(Wsa(PORTO_WSAEFAULT));
    }
    Ok(Some(rio::buffer(b.BufferId.id())?.at(b.Offset, b.Length)?))
}

/// `RIOReceive`: receive into `data` (one `RIO_BUF`). TRUE (1) or FALSE (0) with the error
/// in `porto_WSAGetLastError` (`PORTO_WSAENOBUFS`: the queue's receives are all out).
///
/// # Safety
/// `data` as for `RIOReceiveEx`.
#[no_mangle]
pub unsafe extern "C" fn porto_RIOReceive(
    rq: PORTO_RIO_RQ,
    data: *const PORTO_RIO_BUF,
    count: u32,
    flags: u32,
    ctx: *mut c_void,
) -> i32 {
    // SAFETY: forwarded contract; no extra buffers.
    unsafe {
        porto_RIOReceiveEx(
            rq,
            data,
            count,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            flags,
            ctx,
        )
    }
}

/// `RIOReceiveEx`: as `RIOReceive`, on a datagram socket; when the result is dequeued the
/// sender's `SOCKADDR_INET` is in `remote`, the address the datagram was sent to (the local
/// one it arrived on, or its group, with the socket's port) in `local`, and Windows'
/// `MSG_CTRUNC`/`MSG_BCAST`/`MSG_MCAST` bits in the `ULONG` at `flags_buf`; `control` holds
/// the kernel's control messages — Linux's `cmsghdr` layout and numbers (walk them with
/// `CMSG_FIRSTHDR`/`CMSG_NXTHDR`), the rest of the buffer zeroed so a walk over its whole
/// length stops after them. Asking for `local` or flags turns IP_PKTINFO /
/// IPV6_RECVPKTINFO on for the socket. Any of them on a TCP socket: `PORTO_WSAEINVAL`; an
/// address or flags buffer too small: `PORTO_WSAEFAULT`. All four live in registered memory.
///
/// # Safety
/// Each pointer is NULL or a valid `RIO_BUF` (`data`: `count` of them); the bytes they name
/// follow Windows' rules: untouched by the caller until the result is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_RIOReceiveEx(
    rq: PORTO_RIO_RQ,
    data: *const PORTO_RIO_BUF,
    count: u32,
    local: *const PORTO_RIO_BUF,
    remote: *const PORTO_RIO_BUF,
    control: *const PORTO_RIO_BUF,
    flags_buf: *const PORTO_RIO_BUF,
    flags: u32,
    ctx: *mut c_void,
) -> i32 {
    guard(0, || {
        // SAFETY: forwarded contracts.
        let (buf, remote, local, control, flags_out) = unsafe {
            (
                data_buf(data, count)?,
                addr_buf(remote)?,
                addr_buf(local)?,
                control_buf(control)?,
                flags_place(flags_buf)?,
            )
        };
        rio::issue(
            rq.id(),
            Issue {
                receive: true,
                buf,
                to: None,
                remote,
                local,
                source: None,
                control,
                flags_out,
                flags,
                ctx: ctx as u64,
            },
        )?;
        Ok(1)
    })
}

/// `RIOSend`: send `data` on a connected socket (or, with `PORTO_RIO_MSG_COMMIT_ONLY` and
/// `data` NULL, hand over the deferred requests).
///
/// # Safety
/// As for `RIOSendEx`.
#[no_mangle]
pub unsafe extern "C" fn porto_RIOSend(
    rq: PORTO_RIO_RQ,
    data: *const PORTO_RIO_BUF,
    count: u32,
    flags: u32,
    ctx: *mut c_void,
) -> i32 {
    // SAFETY: forwarded contract; no extra buffers.
    unsafe {
        porto_RIOSendEx(
            rq,
            data,
            count,
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            std::ptr::null(),
            flags,
            ctx,
        )
    }
}

/// `RIOSendEx`: as `RIOSend`, to the `SOCKADDR_INET` in `remote`, from the source address
/// in `local` (its port ignored; an IP_PKTINFO / IPV6_PKTINFO message), with the control
/// messages in `control` (Linux's `cmsghdr` layout and numbers; `control`'s `Length` is
/// their length) — `local` and `control` not both (`PORTO_WSAEINVAL`: put the pktinfo
/// message in `control`). Addresses are read now, from registered memory; a send with
/// `local` or `control` copies (no zero-copy). `flags_buf` must be NULL or hold 0.
///
/// # Safety
/// Each pointer is NULL or a valid `RIO_BUF`; the data's bytes are not written until the
/// result is dequeued.
#[no_mangle]
pub unsafe extern "C" fn porto_RIOSendEx(
    rq: PORTO_RIO_RQ,
    data: *const PORTO_RIO_BUF,
    count: u32,
    local: *const PORTO_RIO_BUF,
    remote: *const PORTO_RIO_BUF,
    control: *const PORTO_RIO_BUF,
    flags_buf: *const PORTO_RIO_BUF,
    flags: u32,
    ctx: *mut c_void,
) -> i32 {
    guard(0, || {
        // SAFETY: forwarded contract.
        if let Some(at) = unsafe { flags_place(flags_buf)? } {
            // SAFETY: 4 bytes of registered memory at `at` (checked in range).
            if unsafe { (at as *const u32).read_unaligned() } != 0 {
                return Err(Wsa(PORTO_WSAEOPNOTSUPP));
            }
        }
        // Reads an address RIO_BUF now.
        let addr_of = |b: *const PORTO_RIO_BUF| -> Result<Option<SocketAddr>, Wsa> {
            // SAFETY: forwarded contract.
            match unsafe { addr_buf(b)? } {
                // SAFETY: `len` bytes of registered memory at `at` (checked in range).
                Some((at, len)) => Ok(Some(unsafe { read_sockaddr(at as *const libc::sockaddr, len as i32) }?)),
                None => Ok(None),
            }
        };
        let to = addr_of(remote)?;
        let source = addr_of(local)?.map(|a| a.ip());
        // SAFETY: forwarded contract.
        let (buf, control) = unsafe { (data_buf(data, count)?, control_buf(control)?) };
        rio::issue(
            rq.id(),
            Issue {
                receive: false,
                buf,
                to,
                remote: None,
                local: None,
                source,
                control,
                flags_out: None,
                flags,
                ctx: ctx as u64,
            },
        )?;
        Ok(1)
    })
}

/// `RIODequeueCompletion`: up to `size` results into `results` (never waits); a
/// `RIOReceiveEx`'s sender is written into its address buffer here. Returns the count, or
/// `PORTO_RIO_CORRUPT_CQ` for a handle that is no completion queue.
///
/// # Safety
/// `results` is writable for `size` entries; the address buffers of the receives being
/// dequeued are still registered memory.
#[no_mangle]
pub unsafe extern "C" fn porto_RIODequeueCompletion(cq: PORTO_RIO_CQ, results: *mut PORTO_RIORESULT, size: u32) -> u32 {
    guard(PORTO_RIO_CORRUPT_CQ, || {
        non_null(results).map_err(|_| Wsa(PORTO_WSAEFAULT))?;
        let mut done = Vec::new();
        rio::dequeue(cq.id(), size as usize, &mut done)?;
        // SAFETY: `size` writable entries; `done.len() <= size`.
        let out = unsafe { std::slice::from_raw_parts_mut(results, size as usize) };
        for (o, d) in out.iter_mut().zip(&done) {
            for (at, room, addr) in [d.remote, d.local].into_iter().flatten() {
                let mut len = i32::try_from(room).unwrap_or(i32::MAX);
                // SAFETY: `room` bytes of registered memory at `at`, checked at issue.
                let _ = unsafe { write_sockaddr(addr, at as *mut libc::sockaddr, &mut len) };
            }
            if let Some((at, bits)) = d.flags {
                // SAFETY: 4 bytes of registered memory at `at`, checked at issue.
                unsafe { (at as *mut u32).write_unaligned(bits) };
            }
            *o = PORTO_RIORESULT {
                Status: d.status,
                BytesTransferred: d.bytes,
                SocketContext: d.socket_ctx,
                RequestContext: d.request_ctx,
            };
        }
        Ok(done.len() as u32)
    })
}

/// `RIONotify`: the queue's notification fires once when it holds a result (at once if it
/// already does). 0, or the WSA error (`PORTO_WSAEINVAL`: no notification configured).
#[no_mangle]
pub extern "C" fn porto_RIONotify(cq: PORTO_RIO_CQ) -> i32 {
    match std::panic::catch_unwind(|| rio::notify(cq.id())) {
        Ok(Ok(())) => 0,
        Ok(Err(Wsa(code))) => code,
        Err(_) => PORTO_WSASYSCALLFAILURE,
    }
}

/// `RIOResizeCompletionQueue`: TRUE, the results waiting moved over; FALSE with
/// `PORTO_WSAETOOMANYREFS` below what its request queues may have outstanding or what is in
/// use (nothing changes), `PORTO_WSAEINVAL` for 0, above `PORTO_RIO_MAX_CQ_SIZE` or not a
/// queue. Any thread; completions into the queue wait for the move.
#[no_mangle]
pub extern "C" fn porto_RIOResizeCompletionQueue(cq: PORTO_RIO_CQ, size: u32) -> i32 {
    guard(0, || rio::resize_cq(cq.id(), size).map(|()| 1))
}

/// `RIOResizeRequestQueue`: new maxima; FALSE with `PORTO_WSAETOOMANYREFS` below what is
/// outstanding, `PORTO_WSAENOBUFS` when a completion queue has no room for more.
#[no_mangle]
pub extern "C" fn porto_RIOResizeRequestQueue(rq: PORTO_RIO_RQ, max_recv: u32, max_send: u32) -> i32 {
    guard(0, || rio::resize_rq(rq.id(), max_recv, max_send).map(|()| 1))
}
