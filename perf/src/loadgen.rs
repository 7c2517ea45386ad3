//! A closed-loop ping-pong client (UDP or TCP) speaking sockperf's protocol, recording the
//! round-trip time of every exchange in an HdrHistogram.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::sockperf;

#[derive(Clone, Debug)]
pub struct PingPong {
    pub udp: bool,
    pub target: SocketAddr,
    pub msg_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub core: Option<usize>,
}

#[derive(Debug)]
pub struct PingPongResult {
    /// Round trips completed in the measured window.
    pub exchanges: u64,
    pub elapsed: Duration,
    /// Round-trip times in nanoseconds.
    pub rtt_ns: Histogram<u64>,
    /// Requests that got no reply within the timeout (UDP), re-sent with a new sequence.
    pub timeouts: u64,
}

impl PingPongResult {
    pub fn rate(&self) -> f64 {
        self.exchanges as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends one request and waits for its reply: `Ok(false)` when none came in time.
type Exchange = dyn FnMut(&mut [u8], &mut [u8], u64) -> std::io::Result<bool>;

const REPLY_TIMEOUT: Duration = Duration::from_millis(200);

impl PingPong {
    pub fn run(&self) -> std::io::Result<PingPongResult> {
        if let Some(c) = self.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: c });
        }
        let size = self.msg_size.max(sockperf::HEADER_LEN);
        let mut req = vec![0u8; size];
        let mut rsp = vec![0u8; size.max(65536)];
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds");
        let mut timeouts = 0;
        let mut exchange: Box<Exchange> = if self.udp {
            let local: SocketAddr = if self.target.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
                .parse()
                .expect("literal");
            let s = UdpSocket::bind(local)?;
            s.connect(self.target)?;
            s.set_read_timeout(Some(REPLY_TIMEOUT))?;
            Box::new(move |req, rsp, seq| {
                s.send(req)?;
                loop {
                    match s.recv(rsp) {
                        Ok(n) if sockperf::is_reply(&rsp[..n]) && sockperf::seq(&rsp[..n]) == Some(seq) => {
                            return Ok(true)
                        }
                        Ok(_) => continue,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                            return Ok(false)
                        }
                        Err(e) => return Err(e),
                    }
                }
            })
        } else {
            let mut s = TcpStream::connect_timeout(&self.target, Duration::from_secs(5))?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            Box::new(move |req, rsp, seq| {
                s.write_all(req)?;
                let n = req.len();
                s.read_exact(&mut rsp[..n])?;
                if sockperf::seq(&rsp[..n]) != Some(seq) {
                    return Err(std::io::Error::other("out-of-sequence TCP reply"));
                }
                Ok(true)
            })
        };
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;
        let mut seq = 0u64;
        let mut exchanges = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            seq += 1;
            sockperf::write_request(&mut req, seq);
            let t0 = Instant::now();
            let ok = exchange(&mut req, &mut rsp, seq)?;
            let rtt = t0.elapsed();
            if t0 < measure_from {
                continue;
            }
            if ok {
                exchanges += 1;
                hist.record(rtt.as_nanos().max(1) as u64)
                    .expect("rtt within histogram bounds");
            } else {
                timeouts += 1;
            }
        }
        Ok(PingPongResult {
            exchanges,
            elapsed: self.duration,
            rtt_ns: hist,
            timeouts,
        })
    }
}
