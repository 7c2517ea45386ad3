//! The AF_XDP transport's control side: the XDP program that steers porto's UDP ports to
//! AF_XDP sockets (`xdp-programs/porto_xdp.bpf.c`, compiled object embedded), loaded and
//! attached with aya.

pub(crate) mod neighbors;
pub(crate) mod port;
pub mod program;
pub mod shared;

pub use program::{AttachMode, ProgramCounters, StampSource, Stamping, XdpError, XdpProgram};
pub use shared::SharedProgram;
