//! qWAVE's QOS2 for C (`include/porto.h`): `QOSCreateHandle`, `QOSAddSocketToFlow`,
//! `QOSSetFlow`, `QOSQueryFlow`, `QOSRemoveSocketFromFlow`, `QOSCloseHandle` with Windows'
//! numbers, over porto's flows (marking, shaping, the shard's class scheduler). As in `abi`,
//! C's pointers are read and written here only, each checked; calls are synchronous (an
//! `OVERLAPPED` is refused).

// The C boundary: raw pointers from the caller, `#[no_mangle]` exports.
#![allow(unsafe_code)]
// Windows' names, kept so a port is mostly renaming.
#![allow(non_snake_case, non_camel_case_types, non_upper_case_globals)]

use std::ffi::c_void;

use crate::abi::{guard, non_null, PORTO_OVERLAPPED};
use crate::codes::*;
use crate::qos;
use crate::state::Wsa;
use porto::qos::Shaping;

/// `QOS_VERSION`: 1.0.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_QOS_VERSION {
    pub MajorVersion: u16,
    pub MinorVersion: u16,
}

/// `QOS_FLOWID`.
pub type PORTO_QOS_FLOWID = u32;

/// `QOS_FLOWRATE_OUTGOING`: bits per second and a `PORTO_QOSShape…` behaviour (`Reason` is
/// ignored when set, `PORTO_QOSFlowRateNotApplicable` when queried).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_QOS_FLOWRATE_OUTGOING {
    pub Bandwidth: u64,
    pub ShapingBehavior: i32,
    pub Reason: i32,
}

/// `QOS_PACKET_PRIORITY`: the DSCP and 802.1p values the flow's packets carry within and
/// beyond its rate.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_QOS_PACKET_PRIORITY {
    pub ConformantDSCPValue: u32,
    pub NonConformantDSCPValue: u32,
    pub ConformantL2Value: u32,
    pub NonConformantL2Value: u32,
}

/// porto's `QOSQueryFlow(PORTO_QOSQueryFlowCounters)`: what the flow's shaping and the
/// class scheduler did with its sends.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PORTO_QOS_FLOW_COUNTERS {
    pub Sent: u64,
    pub SentBytes: u64,
    pub Delayed: u64,
    pub NonConformant: u64,
    pub Dropped: u64,
}

fn shaping_of(n: i32) -> Result<Shaping, Wsa> {
    Ok(match n {
        PORTO_QOSShapeOnly => Shaping::ShapeOnly,
        PORTO_QOSShapeAndMark => Shaping::ShapeAndMark,
        PORTO_QOSUseNonConformantMarkings => Shaping::UseNonConformantMarkings,
        _ => return Err(Wsa(PORTO_WSAEINVAL)),
    })
}

fn shaping_number(s: Shaping) -> i32 {
    match s {
        Shaping::ShapeOnly => PORTO_QOSShapeOnly,
        Shaping::ShapeAndMark => PORTO_QOSShapeAndMark,
        Shaping::UseNonConformantMarkings => PORTO_QOSUseNonConformantMarkings,
    }
}

/// `QOSCreateHandle`: version 1.0 only. TRUE (1), or FALSE with the error in
/// `porto_WSAGetLastError`.
///
/// # Safety
/// `version` and `handle` are valid (NULL: `PORTO_WSAEFAULT`).
#[no_mangle]
pub unsafe extern "C" fn porto_QOSCreateHandle(version: *const PORTO_QOS_VERSION, handle: *mut PORTO_HANDLE) -> i32 {
    guard(0, || {
        non_null(version)?;
        non_null(handle)?;
        // SAFETY: non-NULL and valid (the caller's contract).
        let v = unsafe { version.read_unaligned() };
        if (v.MajorVersion, v.MinorVersion) != (1, 0) {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        let h = qos::create()?;
        // SAFETY: non-NULL and valid.
        unsafe { handle.write(PORTO_HANDLE::of(h)) };
        Ok(1)
    })
}

/// `QOSCloseHandle`: its flows' sockets leave them (unmarked, unshaped).
#[no_mangle]
pub extern "C" fn porto_QOSCloseHandle(handle: PORTO_HANDLE) -> i32 {
    guard(0, || qos::close(handle.id()).map(|()| 1))
}

/// `QOSAddSocketToFlow`: with `*flow == 0` a new flow of `traffic` (`PORTO_QOSTrafficType…`),
/// its id written back; else the socket joins that flow. The socket must be associated (or
/// listening, or connected): its sends are marked with the class's DSCP and SO_PRIORITY and
/// go through the flow's shaping and its shard's class scheduler. `dest` may be NULL: a
/// porto flow covers every send of the socket, whatever its destination.
///
/// # Safety
/// `flow` is valid; `dest` is not read.
#[no_mangle]
pub unsafe extern "C" fn porto_QOSAddSocketToFlow(
    handle: PORTO_HANDLE,
    s: PORTO_SOCKET,
    dest: *const libc::sockaddr,
    traffic: i32,
    flags: u32,
    flow: *mut PORTO_QOS_FLOWID,
) -> i32 {
    let _ = dest;
    guard(0, || {
        non_null(flow)?;
        if flags & !PORTO_QOS_NON_ADAPTIVE_FLOW != 0 {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        let t = qos::traffic_of(traffic)?;
        // SAFETY: non-NULL and valid (the caller's contract).
        let id = unsafe { flow.read() };
        let id = qos::add_socket(handle.id(), s, t, id)?;
        // SAFETY: as above.
        unsafe { flow.write(id) };
        Ok(1)
    })
}

/// `QOSRemoveSocketFromFlow` (`flow` 0: whichever of this handle's flows holds it): the
/// socket's sends leave the flow and lose its marking.
#[no_mangle]
pub extern "C" fn porto_QOSRemoveSocketFromFlow(
    handle: PORTO_HANDLE,
    s: PORTO_SOCKET,
    flow: PORTO_QOS_FLOWID,
    flags: u32,
) -> i32 {
    let _ = flags;
    guard(0, || qos::remove_socket(handle.id(), s, flow).map(|()| 1))
}

/// `QOSSetFlow`: `PORTO_QOSSetTrafficType` (a `u32`/`i32` traffic type in `buffer`) or
/// `PORTO_QOSSetOutgoingRate` (a `PORTO_QOS_FLOWRATE_OUTGOING`; bandwidth 0 stops shaping)
/// or `PORTO_QOSSetOutgoingDSCPValue` (a `u32` DSCP, 0..=63, marking the flow's sockets
/// instead of the class's DSCP; their class and scheduling stay; Windows asks for
/// administrator rights here, Linux needs none to set IP_TOS).
/// Synchronous: `ov` must be NULL.
///
/// # Safety
/// `buffer` is readable for `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_QOSSetFlow(
    handle: PORTO_HANDLE,
    flow: PORTO_QOS_FLOWID,
    op: i32,
    size: u32,
    buffer: *const c_void,
    flags: u32,
    ov: *mut PORTO_OVERLAPPED,
) -> i32 {
    let _ = flags;
    guard(0, || {
        if !ov.is_null() {
            return Err(Wsa(PORTO_WSAEOPNOTSUPP));
        }
        non_null(buffer)?;
        match op {
            PORTO_QOSSetTrafficType => {
                if (size as usize) < std::mem::size_of::<i32>() {
                    return Err(Wsa(PORTO_WSAEFAULT));
                }
                // SAFETY: `size >= 4` readable bytes (the caller's contract).
                let t = qos::traffic_of(unsafe { buffer.cast::<i32>().read_unaligned() })?;
                qos::set_traffic(handle.id(), flow, t)?;
            }
            PORTO_QOSSetOutgoingRate => {
                if (size as usize) < std::mem::size_of::<PORTO_QOS_FLOWRATE_OUTGOING>() {
                    return Err(Wsa(PORTO_WSAEFAULT));
                }
                // SAFETY: `size` readable bytes hold one (the caller's contract).
                let r = unsafe { buffer.cast::<PORTO_QOS_FLOWRATE_OUTGOING>().read_unaligned() };
                qos::set_rate(handle.id(), flow, r.Bandwidth, shaping_of(r.ShapingBehavior)?)?;
            }
            PORTO_QOSSetOutgoingDSCPValue => {
                if (size as usize) < std::mem::size_of::<u32>() {
                    return Err(Wsa(PORTO_WSAEFAULT));
                }
                // SAFETY: `size >= 4` readable bytes (the caller's contract).
                qos::set_dscp(handle.id(), flow, unsafe { buffer.cast::<u32>().read_unaligned() })?;
            }
            _ => return Err(Wsa(PORTO_WSAEINVAL)),
        }
        Ok(1)
    })
}

/// `QOSQueryFlow`: `PORTO_QOSQueryPacketPriority` (`PORTO_QOS_PACKET_PRIORITY`),
/// `PORTO_QOSQueryOutgoingRate` (`PORTO_QOS_FLOWRATE_OUTGOING`), or porto's
/// `PORTO_QOSQueryFlowCounters` (`PORTO_QOS_FLOW_COUNTERS`); `*size` is the room in, the
/// length out (too little room: `PORTO_WSAEFAULT`, `*size` the length needed).
/// `PORTO_QOSQueryFlowFundamentals` (the network's bandwidth and RTT estimates) is
/// `PORTO_WSAEOPNOTSUPP`: porto does not probe the path.
///
/// # Safety
/// `size` is valid; `buffer` writable for `*size` bytes.
#[no_mangle]
pub unsafe extern "C" fn porto_QOSQueryFlow(
    handle: PORTO_HANDLE,
    flow: PORTO_QOS_FLOWID,
    op: i32,
    size: *mut u32,
    buffer: *mut c_void,
    flags: u32,
    ov: *mut PORTO_OVERLAPPED,
) -> i32 {
    let _ = flags;
    guard(0, || {
        if !ov.is_null() {
            return Err(Wsa(PORTO_WSAEOPNOTSUPP));
        }
        non_null(size)?;
        let info = qos::query(handle.id(), flow)?;
        let non_conformant_unmarked = matches!(info.shape, Some((_, Shaping::UseNonConformantMarkings)));
        let marks = !matches!(info.shape, Some((_, Shaping::ShapeOnly)));
        let dscp = match info.dscp {
            Some(d) => u32::from(d),
            None if marks => u32::from(info.traffic.dscp()),
            None => 0,
        };
        let l2 = if marks {
            u32::from(info.traffic.ieee_8021p().unwrap_or(0))
        } else {
            0
        };
        // Writes `v` at `buffer` if `*size` has room; the length into `*size` either way.
        let put = |bytes: &[u8]| -> Result<i32, Wsa> {
            // SAFETY: `size` is valid (checked non-NULL; the caller's contract).
            let room = unsafe { size.read() } as usize;
            // SAFETY: as above.
            unsafe { size.write(bytes.len() as u32) };
            if room < bytes.len() {
                return Err(Wsa(PORTO_WSAEFAULT));
            }
            non_null(buffer)?;
            // SAFETY: `room >= len` writable bytes at `buffer` (the caller's contract).
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len()) };
            Ok(1)
        };
        fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
            // SAFETY: a `repr(C)` plain-integer struct: every byte is initialised.
            unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
        }
        match op {
            PORTO_QOSQueryPacketPriority => put(&bytes_of(&PORTO_QOS_PACKET_PRIORITY {
                ConformantDSCPValue: dscp,
                NonConformantDSCPValue: if non_conformant_unmarked { 0 } else { dscp },
                ConformantL2Value: l2,
                NonConformantL2Value: if non_conformant_unmarked { 0 } else { l2 },
            })),
            PORTO_QOSQueryOutgoingRate => put(&bytes_of(&PORTO_QOS_FLOWRATE_OUTGOING {
                Bandwidth: info.shape.map_or(0, |s| s.0),
                ShapingBehavior: info.shape.map_or(PORTO_QOSShapeAndMark, |s| shaping_number(s.1)),
                Reason: PORTO_QOSFlowRateNotApplicable,
            })),
            PORTO_QOSQueryFlowCounters => {
                let c = info.counters;
                put(&bytes_of(&PORTO_QOS_FLOW_COUNTERS {
                    Sent: c.sent,
                    SentBytes: c.sent_bytes,
                    Delayed: c.delayed,
                    NonConformant: c.non_conformant,
                    Dropped: c.dropped,
                }))
            }
            PORTO_QOSQueryFlowFundamentals => Err(Wsa(PORTO_WSAEOPNOTSUPP)),
            _ => Err(Wsa(PORTO_WSAEINVAL)),
        }
    })
}
