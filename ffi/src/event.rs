//! Event objects (`WSAEVENT`) for C, in safe Rust: `WSACreateEvent`, `WSASetEvent`,
//! `WSAResetEvent`, `WSACloseEvent` and `WSAWaitForMultipleEvents`, over
//! `porto::rio::RioEvent` (a manual-reset event on an eventfd) — what a RIO completion queue
//! created with `RIO_EVENT_COMPLETION` sets.

use std::time::Duration;

use crate::codes::*;
use crate::state::{self, Obj, ObjRef, Wsa};
use porto::rio::RioEvent;

/// `WSACreateEvent`: manual-reset, not set.
pub(crate) fn create() -> Result<u64, Wsa> {
    state::insert(Obj::Event(RioEvent::new().map_err(Wsa::from)?))
}

/// The event behind `h` (`WSA_INVALID_HANDLE` if there is none).
pub(crate) fn event(h: u64) -> Result<RioEvent, Wsa> {
    match state::get(h)? {
        Some(ObjRef::Event(e)) => Ok(e),
        _ => Err(Wsa(PORTO_WSA_INVALID_HANDLE)),
    }
}

/// `WSACloseEvent` (also `CloseHandle`): waiters and completion queues holding it keep it
/// until they are done.
pub(crate) fn close(h: u64) -> Result<(), Wsa> {
    state::remove(h, |o| matches!(o, Obj::Event(_)), PORTO_WSA_INVALID_HANDLE)
}

/// `WSAWaitForMultipleEvents`: `WSA_WAIT_EVENT_0 + i` for the lowest set event (`all`: when
/// every one is set, `WSA_WAIT_EVENT_0`), `WSA_WAIT_TIMEOUT` after `timeout_ms`
/// (`INFINITE`: never).
pub(crate) fn wait(handles: &[u64], all: bool, timeout_ms: u32) -> Result<u32, Wsa> {
    if handles.is_empty() || handles.len() > PORTO_WSA_MAXIMUM_WAIT_EVENTS as usize {
        return Err(Wsa(PORTO_WSA_INVALID_PARAMETER));
    }
    let events = handles.iter().map(|&h| event(h)).collect::<Result<Vec<_>, _>>()?;
    let refs: Vec<&RioEvent> = events.iter().collect();
    let timeout = (timeout_ms != PORTO_INFINITE).then(|| Duration::from_millis(u64::from(timeout_ms)));
    match RioEvent::wait_many(&refs, all, timeout).map_err(Wsa::from)? {
        // At most WSA_MAXIMUM_WAIT_EVENTS: the index fits.
        Some(i) => Ok(PORTO_WSA_WAIT_EVENT_0 + i as u32),
        None => Ok(PORTO_WSA_WAIT_TIMEOUT),
    }
}
