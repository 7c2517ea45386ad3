//! porto: a Windows Sockets 2 style completion API over per-core io_uring shards.
//!
//! | Winsock 2 / RIO                          | porto                                         |
//! |------------------------------------------|-----------------------------------------------|
//! | CreateIoCompletionPort                   | [`CompletionPort::new`], [`Delivery::Port`]   |
//! | GetQueuedCompletionStatusEx              | [`CompletionPort::dequeue`]                   |
//! | PostQueuedCompletionStatus               | [`CompletionPort::post`]                      |
//! | WSARecvFrom / WSASendTo (overlapped)     | [`UdpSocket::recv_from`], [`UdpSocket::send_to`] |
//! | WSARecv / WSASend                        | [`TcpStream::recv`], [`TcpStream::send`]      |
//! | AcceptEx / ConnectEx / DisconnectEx      | [`TcpListener::accept`], [`TcpStream::connect`], [`TcpStream::disconnect`] |
//! | CancelIoEx                               | `cancel(token)` on each socket                |
//! | RIO*                                     | [`rio`]                                       |
//! | IP_ADD_MEMBERSHIP / MCAST_JOIN_SOURCE_GROUP | [`UdpSocket::join`], [`UdpSocket::join_source`] |
//! | (no Winsock equivalent) fan-out, send to many | [`fanout`], [`UdpSocket::send_to_many`]   |
//! | WSAGetLastError                          | [`Error`]                                     |
//!
//! Two ways to run:
//! - **Completion-port mode**: [`Engine::start`] runs one pinned shard thread per core;
//!   sockets associated with a [`CompletionPort`] complete into it, and any number of
//!   application threads dequeue in batches.
//! - **Polling mode**: the application owns a [`Shard`] on its own (pinned) thread and
//!   calls [`Shard::poll`]: no thread hop, no sleep — the low-latency mode.
//!
//! ```no_run
//! use porto::{CompletionPort, Config, Delivery, Engine, SocketOptions, UdpSocket};
//! use std::time::Duration;
//!
//! let engine = Engine::start(&Config::default())?;
//! let port = CompletionPort::new(0, 4096);
//! let sock = UdpSocket::bind(engine.shard(0), "127.0.0.1:9000".parse()?, &SocketOptions::default(),
//!                            Delivery::Port { port: port.clone(), key: 1 })?;
//! sock.recv_from_multishot(1)?;                       // every datagram completes with token 1
//! let mut done = Vec::with_capacity(64);
//! loop {
//!     port.dequeue(&mut done, 64, Some(Duration::from_millis(100)));
//!     for c in done.drain(..) {
//!         if let (Ok(_), Some(buf), Some(peer)) = (c.result, c.buffer, c.peer) {
//!             sock.send_to(buf, peer, 2)?;            // echo the received frame, no copy
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub use porto_engine::completion::{Completion, OpKind};
pub use porto_engine::config::Config;
pub use porto_engine::engine::{Engine, Transport};
pub use porto_engine::error::{Error, SetupError};
pub use porto_engine::pool::{Buf, Gather, Pool, SharedBuf, Shares, GATHER_MAX};
pub use porto_engine::port::CompletionPort;
pub use porto_engine::shard::{Delivery, QosFlow, Shard, ShardHandle, ShardInfo};
pub use porto_engine::socket::{
    poll, recv_batch, set_raw_option, unspecified, DatagramOptions, DatagramSocket, Interface, PollFd, Readiness,
    Rejected, SocketCore, SocketOptions, TcpListener, TcpStream, UdpSocket, XdpInfo, XdpOptions, XdpQueues,
    XdpUdpSocket,
};
pub use porto_engine::stats::{Snapshot as StatsSnapshot, Stats};
pub use porto_engine::telemetry;
pub use porto_engine::wire::DropReason;
pub use porto_engine::xdp::AttachMode;
pub use porto_engine::{Degraded, DEGRADABLE};
pub use porto_engine::{PageKind, Provider, ProviderInfo, RingInfo, TaskRunMode, XskMode, XskStatistics};

/// The preflight checks behind `porto doctor`.
pub mod doctor {
    pub use porto_engine::doctor::{check, kernel, Finding, Level};
}

/// The XDP program and where AF_XDP receive stamps come from on this kernel.
pub mod xdp {
    pub use porto_engine::xdp::{StampSource, Stamping, XdpProgram};
}

/// Test and demo network topologies (two namespaces joined by a veth pair).
pub mod netns {
    pub use porto_engine::netns::{mac_of, send_raw_frame, NetnsError, Side, Topology};
}

/// QOS2 traffic types, flows with shaping, and the send scheduler.
pub mod qos {
    pub use porto_engine::qos::{
        Admission, Flow, FlowCounters, Scheduler, Shaping, TokenBucket, TrafficType, BURST_BYTES_MAX,
    };
}

/// Multicast fan-out: one received datagram to N subscribers through shared frames.
pub mod fanout {
    pub use porto_engine::fanout::{
        Datagram, FanOut, GroupCounters, Policy, SubscriberCounters, Subscription, SUBSCRIBERS_MAX,
        SUBSCRIPTION_DEPTH_MAX,
    };
}

/// Wire formats of the AF_XDP path.
pub mod wire {
    pub use porto_engine::wire::*;
}

/// Registered I/O: registered buffers, request queues, completion queues.
pub mod rio {
    pub use porto_engine::rio::{
        CompletionQueue, ExternalBuffer, RegisteredBuffer, RequestQueue, RioBuf, RioEvent, RioEx, RioFlags, RioNotify,
        RioResult,
    };
}
