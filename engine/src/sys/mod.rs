//! Everything that talks to the kernel directly: memory mappings, io_uring, sockets.
//!
//! The crate denies `unsafe_code`; this module allows it, and outside it only the providers
//! (`driver/`: the trait's contracts, io_uring's SQEs, epoll's syscalls, the simulated
//! kernel), the typed memory views (`pool`, `rio/buf`), the core's hand-over of an op to its
//! driver (`shard`) and the BPF map key types (`xdp/program`) do — `tests/layers.rs` checks
//! that list.
//! Each module here offers a small safe (or narrowly `unsafe`, documented) surface to the
//! layers above:
//!
//! | module      | what it wraps                                   | unsafe surface            |
//! |-------------|-------------------------------------------------|---------------------------|
//! | [`region`]  | one anonymous mmap (huge pages when available)  | raw frame pointers        |
//! | [`bpf`]     | bpf(2) probes of what XDP programs may call     | none                      |
//! | [`bufring`] | an io_uring provided-buffer ring                | `push` of kernel addresses |
//! | [`ring`]    | the io_uring instance, its SQ/CQ, registrations | `push` of an SQE          |
//! | [`net`]     | socket(2), bind, listen, setsockopt, sockaddr   | none                      |
//! | [`cpu`]     | the calling thread's CPU affinity               | none                      |

// Kernel-facing: syscalls, mmaps and the rings shared with the kernel (every block with a SAFETY comment).
#![allow(unsafe_code)]

pub(crate) mod bpf;
pub(crate) mod bufring;
pub(crate) mod clock;
pub(crate) mod cpu;
pub(crate) mod genl;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod region;
pub(crate) mod ring;
pub(crate) mod shm;
pub(crate) mod xsk;
