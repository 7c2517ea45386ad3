//! The servers a scenario compares, each started as its own process pinned to the server CPU.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Server {
    /// Plain kernel sockets: blocking UDP, one epoll loop for TCP (the baseline).
    Kernel,
    /// `sockperf server`, the industry reference.
    Sockperf,
    /// tokio, current-thread (needs `--features peers`).
    Tokio,
    /// monoio on io_uring (needs `--features peers`).
    Monoio,
    /// porto in completion-port mode.
    PortoPort,
    /// porto in polling mode.
    PortoPoll,
    /// porto in completion-port mode on the epoll provider (what io_uring buys, measured).
    PortoPortEpoll,
    /// porto in polling mode on the epoll provider.
    PortoPollEpoll,
    /// porto in completion-port mode without publishing statistics (`--no-stats`): beside
    /// `porto-port`, what `porto stats` costs.
    PortoPortNoStats,
    /// `examples/c/iocp_udp_echo.c` (TCP: `iocp_tcp_echo.c`) through the C ABI
    /// (`libporto_c`): beside `porto-port`, what the ABI costs. Built by
    /// `examples/c/build.sh` into `target/c/`.
    CIocp,
    /// `examples/c/rio_udp_echo.c`: Registered I/O through the C ABI (the caller's memory,
    /// no copy). Built by `examples/c/build.sh`.
    CRio,
}

impl Server {
    pub fn label(self) -> &'static str {
        match self {
            Server::Kernel => "kernel",
            Server::Sockperf => "sockperf server",
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
            Server::PortoPort => "porto port",
            Server::PortoPoll => "porto poll",
            Server::PortoPortEpoll => "porto port (epoll)",
            Server::PortoPollEpoll => "porto poll (epoll)",
            Server::PortoPortNoStats => "porto port (stats off)",
            Server::CIocp => "C iocp (libporto_c)",
            Server::CRio => "C rio (libporto_c)",
        }
    }

    /// The command that serves `udp`/TCP on `port`, pinned to `core` (porto servers get
    /// `porto_args` too); `Err` says why this server is unavailable here.
    pub(super) fn command(self, udp: bool, port: u16, core: usize, porto_args: &[String]) -> Result<Command, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let proto = if udp { "--udp" } else { "--tcp" };
        let port_s = port.to_string();
        let core_s = core.to_string();
        let mut c;
        match self {
            Server::Kernel | Server::Tokio | Server::Monoio => {
                if matches!(self, Server::Tokio | Server::Monoio) && !cfg!(feature = "peers") {
                    return Err("not built in (build porto-perf with --features peers)".into());
                }
                c = Command::new(exe);
                c.args(["serve", self.serve_name(), proto, "--port", &port_s, "--core", &core_s]);
            }
            Server::Sockperf => {
                if Command::new("sockperf")
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_err()
                {
                    return Err("sockperf is not installed (apt-get install sockperf)".into());
                }
                c = Command::new("taskset");
                c.args(["-c", &core_s, "sockperf", "server", "-i", "127.0.0.1", "-p", &port_s]);
                if !udp {
                    c.arg("--tcp");
                }
            }
            Server::CIocp | Server::CRio => {
                let name = match (self, udp) {
                    (Server::CIocp, true) => "iocp_udp_echo",
                    (Server::CIocp, false) => "iocp_tcp_echo",
                    (_, true) => "rio_udp_echo",
                    (_, false) => return Err("the RIO example serves UDP only".into()),
                };
                // target/<profile>/porto -> target/c/<name>
                let c_exe = exe
                    .parent()
                    .and_then(|p| p.parent())
                    .map(|t| t.join("c").join(name))
                    .filter(|p| p.exists())
                    .ok_or(format!("target/c/{name} is not built (run examples/c/build.sh)"))?;
                c = Command::new("taskset");
                c.arg("-c").arg(&core_s).arg(c_exe).arg(&port_s);
            }
            Server::PortoPort
            | Server::PortoPoll
            | Server::PortoPortEpoll
            | Server::PortoPollEpoll
            | Server::PortoPortNoStats => {
                c = Command::new(exe);
                c.args(["echo", proto, "--port", &port_s, "--cores", &core_s]);
                if matches!(self, Server::PortoPoll | Server::PortoPollEpoll) {
                    c.arg("--poll");
                }
                // The provider is named, never inherited from PORTO_PROVIDER: a row says what
                // it measured.
                let epoll = matches!(self, Server::PortoPortEpoll | Server::PortoPollEpoll);
                c.args(["--provider", if epoll { "epoll" } else { "io-uring" }]);
                if self == Server::PortoPortNoStats {
                    c.arg("--no-stats");
                }
                c.args(porto_args);
            }
        }
        Ok(c)
    }

    pub(super) fn serve_name(self) -> &'static str {
        match self {
            Server::Tokio => "tokio",
            Server::Monoio => "monoio",
            _ => "kernel",
        }
    }
}

/// CPU time of every thread of `pid`, in ns (schedstat's first field).
pub(super) fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
        .sum()
}

pub(super) fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("loopback bind");
        let p = t.local_addr().expect("bound").port();
        if UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

pub(super) struct Running(pub(super) Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SIGTERM lets every server shut down cleanly; then make sure.
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn start(
    server: Server,
    udp: bool,
    port: u16,
    core: usize,
    porto_args: &[String],
) -> Result<Running, String> {
    let mut cmd = server.command(udp, port, core, porto_args)?;
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn failed: {e}"))?;
    let mut r = Running(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bound = if udp {
            UdpSocket::bind(("127.0.0.1", port)).is_err()
        } else {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        };
        if bound {
            return Ok(r);
        }
        if let Ok(Some(st)) = r.0.try_wait() {
            return Err(format!("exited at start ({st})"));
        }
        if Instant::now() > deadline {
            return Err("did not bind its port within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
