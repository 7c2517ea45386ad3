//! The kernel-socket baseline: the plain blocking server everyone writes first, speaking the
//! same sockperf protocol as `porto echo`. Measured in the same run as porto.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sockperf;

/// A blocking UDP or TCP echo server on its own (optionally pinned) thread.
pub struct KernelEcho {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KernelEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelEcho").field("addr", &self.addr).finish()
    }
}

fn pin(core: Option<usize>) {
    if let Some(c) = core {
        core_affinity::set_for_current(core_affinity::CoreId { id: c });
    }
}

impl KernelEcho {
    pub fn udp(addr: SocketAddr, core: Option<usize>) -> std::io::Result<KernelEcho> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            pin(core);
            let mut buf = vec![0u8; 65536];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if sockperf::make_reply(&mut buf[..n]) {
                    let _ = sock.send_to(&buf[..n], peer);
                }
            }
        });
        Ok(KernelEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Thread-per-connection blocking TCP server.
    pub fn tcp(addr: SocketAddr, core: Option<usize>) -> std::io::Result<KernelEcho> {
        let lst = TcpListener::bind(addr)?;
        lst.set_nonblocking(true)?;
        let addr = lst.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            pin(core);
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match lst.accept() {
                    Ok((mut s, _)) => {
                        let st = st.clone();
                        conns.push(std::thread::spawn(move || {
                            pin(core);
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_nodelay(true);
                            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
                            let mut pending = Vec::with_capacity(sockperf::MESSAGE_LEN_MAX);
                            let mut buf = vec![0u8; 65536];
                            while !st.load(Ordering::Relaxed) {
                                let n = match s.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => n,
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                        ) =>
                                    {
                                        continue
                                    }
                                    Err(_) => return,
                                };
                                pending.extend_from_slice(&buf[..n]);
                                let mut at = 0;
                                while let Ok(Some(len)) = sockperf::stream_message_len(&pending[at..]) {
                                    if pending.len() - at < len {
                                        break;
                                    }
                                    let msg = &mut pending[at..at + len];
                                    at += len;
                                    if sockperf::make_reply(msg) && s.write_all(msg).is_err() {
                                        return;
                                    }
                                }
                                pending.drain(..at);
                            }
                        }));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            conns.into_iter().for_each(|c| drop(c.join()));
        });
        Ok(KernelEcho {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for KernelEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
