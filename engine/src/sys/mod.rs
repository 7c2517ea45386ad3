//! Everything that talks to the kernel directly: memory mappings, io_uring, sockets.
//!
//! This is the only place in the engine that holds `unsafe` code. Each module offers a small
//! safe (or narrowly `unsafe`, documented) surface to the layers above:
//!
//! | module      | what it wraps                                   | unsafe surface            |
//! |-------------|-------------------------------------------------|---------------------------|
//! | [`region`]  | one anonymous mmap (huge pages when available)  | raw frame pointers        |
//! | [`bufring`] | an io_uring provided-buffer ring                | `push` of kernel addresses |
//! | [`ring`]    | the io_uring instance, its SQ/CQ, registrations | `push` of an SQE          |
//! | [`net`]     | socket(2), bind, listen, setsockopt, sockaddr   | none                      |

pub(crate) mod bufring;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod region;
pub(crate) mod ring;
pub(crate) mod xsk;
