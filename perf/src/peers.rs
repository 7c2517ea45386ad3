//! Peer runtimes as baselines (`--features peers`): the same sockperf echo logic on tokio
//! (epoll) and monoio (io_uring), each single-threaded on one pinned core.

use std::net::SocketAddr;

use crate::sockperf;

/// Which peer runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Tokio,
    Monoio,
}

/// Serves until the process is killed.
pub fn serve(rt: Runtime, addr: SocketAddr, udp: bool) -> std::io::Result<()> {
    match rt {
        Runtime::Tokio => tokio_rt::serve(addr, udp),
        Runtime::Monoio => monoio_rt::serve(addr, udp),
    }
}

mod tokio_rt {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn serve(addr: SocketAddr, udp: bool) -> std::io::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        rt.block_on(async move {
            if udp {
                let s = tokio::net::UdpSocket::bind(addr).await?;
                let mut buf = vec![0u8; 65536];
                loop {
                    let (n, peer) = s.recv_from(&mut buf).await?;
                    if sockperf::make_reply(&mut buf[..n]) {
                        s.send_to(&buf[..n], peer).await?;
                    }
                }
            } else {
                let l = tokio::net::TcpListener::bind(addr).await?;
                loop {
                    let (mut s, _) = l.accept().await?;
                    s.set_nodelay(true)?;
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        let mut pending = Vec::with_capacity(sockperf::MESSAGE_LEN_MAX);
                        let mut out = Vec::with_capacity(sockperf::MESSAGE_LEN_MAX);
                        loop {
                            let n = match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            pending.extend_from_slice(&buf[..n]);
                            out.clear();
                            let r = sockperf::answer_stream(&mut pending, |m| {
                                out.extend_from_slice(m);
                                Ok::<(), ()>(())
                            });
                            if r.is_err() || s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        })
    }
}

mod monoio_rt {
    use super::*;
    use monoio::buf::IoBuf;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

    pub fn serve(addr: SocketAddr, udp: bool) -> std::io::Result<()> {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .build()?;
        rt.block_on(async move {
            if udp {
                let s = monoio::net::udp::UdpSocket::bind(addr)?;
                let mut buf = vec![0u8; 65536];
                loop {
                    let (r, mut b) = s.recv_from(buf).await;
                    let (n, peer) = r?;
                    buf = if sockperf::make_reply(&mut b[..n]) {
                        let (r, slice) = s.send_to(b.slice(..n), peer).await;
                        r?;
                        slice.into_inner()
                    } else {
                        b
                    };
                }
            } else {
                let l = monoio::net::TcpListener::bind(addr)?;
                loop {
                    let (mut s, _) = l.accept().await?;
                    s.set_nodelay(true)?;
                    monoio::spawn(async move {
                        let mut buf = vec![0u8; 65536];
                        let mut pending = Vec::with_capacity(sockperf::MESSAGE_LEN_MAX);
                        loop {
                            let (r, b) = s.read(buf).await;
                            let n = match r {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            pending.extend_from_slice(&b[..n]);
                            buf = b;
                            let mut out = Vec::new();
                            let r = sockperf::answer_stream(&mut pending, |m| {
                                out.extend_from_slice(m);
                                Ok::<(), ()>(())
                            });
                            if r.is_err() {
                                return;
                            }
                            if !out.is_empty() {
                                let (r, _) = s.write_all(out).await;
                                if r.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            }
        })
    }
}
