//! What an operation hands back: one [`Completion`] per outcome, carrying the buffer.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

use crate::error::Error;
use crate::pool::{Buf, Gather};

/// Which operation a completion belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpKind {
    /// A stream receive (WSARecv).
    Recv,
    /// A datagram receive (WSARecvFrom).
    RecvFrom,
    /// A stream send (WSASend).
    Send,
    /// A datagram send (WSASendTo).
    SendTo,
    /// AcceptEx.
    Accept,
    /// ConnectEx.
    Connect,
    /// DisconnectEx.
    Disconnect,
    /// PostQueuedCompletionStatus.
    Post,
    /// A RIO completion queue notification posted to a port (RIO_IOCP_COMPLETION).
    RioNotify,
    /// A fan-out subscription's notification: its queue holds datagrams (`result`: how many).
    FanoutNotify,
    /// A send's TX timestamp (`UdpSocket::recv_tx_timestamps`, Windows' SIO_TIMESTAMPING
    /// with TIMESTAMPING_FLAG_TX): `result` is the send's timestamp id — its sequence
    /// number among the socket's successful sends since `SocketOptions::tx_timestamps`, 0
    /// first, as `SIO_GET_TX_TIMESTAMP` numbers them — and `timestamp_ns` when the kernel
    /// handed the datagram to the device.
    TxTimestamp,
}

/// The outcome of one operation (or, for multishot operations, of one of its shots).
///
/// Every operation ends in exactly one completion with `more == false`; multishot receives
/// and accepts deliver earlier completions with `more == true`. A cancelled operation ends
/// with `Err(Error::Aborted)`. The buffer the operation owned comes back in `buffer`.
#[derive(Debug)]
pub struct Completion {
    /// The key given when the socket was associated with its port (CompletionKey).
    pub key: u64,
    /// The token given when the operation was issued (the OVERLAPPED).
    pub token: u64,
    pub op: OpKind,
    /// Bytes transferred, or the error.
    pub result: Result<usize, Error>,
    /// The data buffer: received bytes, or the sent buffer handed back.
    pub buffer: Option<Buf>,
    /// The buffers of a gathered send, handed back.
    pub gather: Option<Gather>,
    /// Source of a datagram (RecvFrom).
    pub peer: Option<SocketAddr>,
    /// The new connection of an Accept; turn it into a stream with the engine.
    pub accepted: Option<OwnedFd>,
    /// More completions of this same operation follow (multishot).
    pub more: bool,
    /// For a zero-copy send: the kernel copied the data after all (e.g. on loopback).
    pub zc_copied: bool,
    /// The received datagram's TOS / traffic-class byte (DSCP << 2 | ECN), when the socket
    /// asked for it (`SocketOptions::recv_tos`) or on the AF_XDP path.
    pub tos: Option<u8>,
    /// ns since the Unix epoch (CLOCK_REALTIME): for a receive, when the kernel (or porto's
    /// XDP program) received the datagram, if the socket asked (`SocketOptions::timestamps`,
    /// `XdpOptions::timestamps`); for a `TxTimestamp`, when the kernel sent it.
    pub timestamp_ns: Option<std::num::NonZeroU64>,
}

impl Completion {
    /// A bare completion, as posted by an application.
    pub fn new(key: u64, token: u64, result: Result<usize, Error>) -> Completion {
        Completion::of(OpKind::Post, key, token, result)
    }

    pub(crate) fn of(op: OpKind, key: u64, token: u64, result: Result<usize, Error>) -> Completion {
        Completion {
            key,
            token,
            op,
            result,
            buffer: None,
            gather: None,
            peer: None,
            accepted: None,
            more: false,
            zc_copied: false,
            tos: None,
            timestamp_ns: None,
        }
    }
}
