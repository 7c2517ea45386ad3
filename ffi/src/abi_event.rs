//! Event objects: `porto_WSACreateEvent`, `porto_WSASetEvent`, `porto_WSAResetEvent`,
//! `porto_WSACloseEvent`, `porto_WSAWaitForMultipleEvents`, `porto_WaitForSingleObject`,
//! and porto's `porto_WSAEventFd` (the eventfd behind an event, for poll/epoll). The work is
//! in `event` (safe); here C's handle array is read.

#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use crate::abi::{guard, non_null};
use crate::codes::*;
use crate::event;
use crate::state::Wsa;

/// `WSACreateEvent`: a manual-reset event, not set; `PORTO_WSA_INVALID_EVENT` on failure.
/// Any thread; before `WSAStartup` too (Windows' is kernel32's `CreateEvent`), and the event
/// outlives `WSACleanup`.
#[no_mangle]
pub extern "C" fn porto_WSACreateEvent() -> PORTO_WSAEVENT {
    guard(PORTO_WSA_INVALID_EVENT, || event::create().map(PORTO_HANDLE::of))
}

/// `WSASetEvent`: TRUE, or FALSE (`PORTO_WSA_INVALID_HANDLE`). Any thread.
#[no_mangle]
pub extern "C" fn porto_WSASetEvent(h: PORTO_WSAEVENT) -> i32 {
    guard(0, || {
        event::event(h.id()).map(|e| {
            e.set();
            1
        })
    })
}

/// `WSAResetEvent`: TRUE, or FALSE (`PORTO_WSA_INVALID_HANDLE`). Any thread.
#[no_mangle]
pub extern "C" fn porto_WSAResetEvent(h: PORTO_WSAEVENT) -> i32 {
    guard(0, || {
        event::event(h.id()).map(|e| {
            e.reset();
            1
        })
    })
}

/// `WSACloseEvent` (`porto_CloseHandle` also closes one). A completion queue notifying it
/// keeps it. Any thread.
#[no_mangle]
pub extern "C" fn porto_WSACloseEvent(h: PORTO_WSAEVENT) -> i32 {
    guard(0, || event::close(h.id()).map(|()| 1))
}

/// `WSAWaitForMultipleEvents(n, events, wait_all, timeout_ms, alertable)`:
/// `PORTO_WSA_WAIT_EVENT_0 + i` (the lowest set one; with `wait_all`, `PORTO_WSA_WAIT_EVENT_0`
/// once all are set), `PORTO_WSA_WAIT_TIMEOUT`, or `PORTO_WSA_WAIT_FAILED` (too many or no
/// events: `PORTO_WSA_INVALID_PARAMETER`; a bad handle: `PORTO_WSA_INVALID_HANDLE`). Events
/// are manual-reset: nothing is reset. `alertable` is accepted; porto queues no APCs, so
/// `WSA_WAIT_IO_COMPLETION` never comes. Any thread.
///
/// # Safety
/// `events` points to `n` handles.
#[no_mangle]
pub unsafe extern "C" fn porto_WSAWaitForMultipleEvents(
    n: u32,
    events: *const PORTO_WSAEVENT,
    wait_all: i32,
    timeout_ms: u32,
    _alertable: i32,
) -> u32 {
    guard(PORTO_WSA_WAIT_FAILED, || {
        if n == 0 || n > PORTO_WSA_MAXIMUM_WAIT_EVENTS {
            return Err(Wsa(PORTO_WSA_INVALID_PARAMETER));
        }
        let events = non_null(events)?;
        // SAFETY: non-NULL, `n` handles (the caller's contract; n is at most 64).
        let handles = unsafe { std::slice::from_raw_parts(events, n as usize) };
        let ids: Vec<u64> = handles.iter().map(|h| h.id()).collect();
        event::wait(&ids, wait_all != 0, timeout_ms)
    })
}

/// `WaitForSingleObject` on an event: `PORTO_WAIT_OBJECT_0`, `PORTO_WAIT_TIMEOUT`
/// (`PORTO_WSA_WAIT_TIMEOUT`'s value), or `PORTO_WAIT_FAILED` (not an event:
/// `PORTO_WSA_INVALID_HANDLE`). Any thread.
#[no_mangle]
pub extern "C" fn porto_WaitForSingleObject(h: PORTO_HANDLE, timeout_ms: u32) -> u32 {
    guard(PORTO_WAIT_FAILED, || event::wait(&[h.id()], false, timeout_ms))
}

/// porto's own: the eventfd behind event `h` (readable while it is set), to wait on with
/// poll/epoll beside other descriptors; -1 if `h` is not an event. Reset it with
/// `porto_WSAResetEvent`, not by reading it; it stays the library's (do not close it).
#[no_mangle]
pub extern "C" fn porto_WSAEventFd(h: PORTO_WSAEVENT) -> i32 {
    guard(-1, || event::event(h.id()).map(|e| e.as_raw_fd()))
}
