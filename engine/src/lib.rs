//! porto-engine: per-core shards over a kernel provider (io_uring, or epoll where io_uring is
//! refused) and registered buffer pools, with a Winsock-style completion model on top. Applications normally use the `porto` crate, which
//! re-exports this one under Winsock names.
//!
//! # A tour, top down
//!
//! ```text
//!  application threads ─┬─ CompletionPort::dequeue (IOCP mode)        port
//!                       ├─ Shard::poll (polling mode, on the shard thread)
//!                       └─ rio::CompletionQueue::dequeue (RIO)        rio
//!            ▲ completions (token, result, buffer)      │ operations (token, buffer)
//!            │                                          ▼
//!  ┌──────────────────────── shard (one per core, shares nothing) ─────────────────────┐
//!  │ socket: UdpSocket / TcpListener / TcpStream      socket                            │
//!  │ op table (stable slots, generation-checked user_data)   op                         │
//!  │ registered buffer pool (frames, typed ownership)        pool                       │
//!  │ loop: commands -> Submit -> enter -> Events -> sinks    shard (Core<D>), engine    │
//!  └──────────────────────────────────────────┬──────────────────────────────────────────┘
//!                                             ▼
//!  driver: the service provider interface (trait Driver): io_uring, epoll, simulated
//!  sys: kernel-facing code: region (mmap), bufring (provided buffers), ring (io_uring
//!       set-up, push, reap), xsk (AF_XDP rings), net (sockets), netns
//!  (unsafe is in sys/, driver/ and the named places docs/architecture.md lists)
//! ```
//!
//! - [`config`]: every limit, validated before start.
//! - [`pool`]: frames and [`pool::Buf`], the owned view that makes reuse-while-in-flight
//!   impossible.
//! - [`port`]: the completion port; [`completion`]: what it carries.
//! - [`shard`]: the loop (a transport-agnostic core over a provider; [`Provider`],
//!   [`ProviderInfo`]); [`engine`]: shard threads for port mode.
//! - [`socket`]: overlapped and blocking socket calls; [`rio`]: Registered I/O.
//! - [`stats`]: counters and latency histograms; [`telemetry`]: the same, published in
//!   shared memory for `porto stats`; [`error`]: Winsock-like error kinds.
//! - [`wire`]: Ethernet/IPv4/UDP/ARP for the AF_XDP path; [`xdp`]: the XDP program and the
//!   shard side of AF_XDP sockets; [`netns`]: test/demo topologies; [`qos`]: QOS2 types,
//!   shaping and the send scheduler; [`fanout`]: one received multicast datagram to N
//!   subscribers through shared frames ([`pool::SharedBuf`]).
//!
//! Guarantees: every operation ends in exactly one terminal completion (success, error,
//! or `Aborted` after a cancel); every completion is delivered once; pool exhaustion and full
//! queues are backpressure, counted, never a crash; the data path allocates nothing after a
//! shard starts.

#![deny(unsafe_op_in_unsafe_fn)]
// Safe code above the kernel: `unsafe` only in the modules that allow it (sys/, driver/, pool,
// rio/buf, shard's hand-over to its driver, xdp/program's map keys), each block with a SAFETY
// comment; tests/layers.rs checks the list.
#![deny(unsafe_code)]

mod backlog;
pub mod completion;
pub mod config;
pub mod doctor;
mod driver;
pub mod engine;
pub mod error;
pub mod fanout;
#[doc(hidden)]
pub mod fuzz;
#[cfg(all(test, loom))]
mod loom_models;
pub mod netns;
mod op;
pub mod pool;
pub mod port;
mod proto;
pub mod qos;
pub mod rio;
pub mod shard;
pub mod socket;
pub mod stats;
mod sync;
mod sys;
pub mod telemetry;
pub mod wire;
pub mod xdp;

pub use config::Provider;
pub use driver::{Degraded, ProviderInfo, Transport, DEGRADABLE};
pub use sys::region::PageKind;
pub use sys::ring::{RingInfo, TaskRunMode};
pub use sys::xsk::{XskMode, XskStatistics};
