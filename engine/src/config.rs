//! Engine configuration. Every queue, table and pool has a limit here, validated before any
//! shard starts; the data path allocates nothing after start-up.

use std::fmt;

use crate::error::SetupError;
use crate::pool::FRAMES_MAX;

/// Which provider a shard should use (`Config::provider`, `porto --provider`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Provider {
    /// io_uring if the kernel allows it, else epoll; the reason is reported.
    #[default]
    Auto,
    /// io_uring or fail (the error names why it was refused and the fix).
    IoUring,
    /// epoll readiness: for containers whose seccomp profile refuses io_uring, and to compare.
    Epoll,
}

impl Provider {
    /// `PORTO_PROVIDER` (`auto`, `io-uring`, `epoll`), else `Auto`: the default of
    /// `Config::provider`, so a deployment (or the test suite) can pick the provider without
    /// rebuilding. An explicit `Config::provider` wins.
    pub fn from_env() -> Result<Provider, String> {
        match std::env::var("PORTO_PROVIDER") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Provider::Auto),
        }
    }
}

impl std::str::FromStr for Provider {
    type Err = String;
    fn from_str(s: &str) -> Result<Provider, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Provider::Auto),
            "io-uring" | "io_uring" | "iouring" | "uring" => Ok(Provider::IoUring),
            "epoll" => Ok(Provider::Epoll),
            other => Err(format!("unknown provider {other:?}: use auto, io-uring or epoll")),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Auto => "auto",
            Provider::IoUring => "io-uring",
            Provider::Epoll => "epoll",
        })
    }
}

/// Sizes and switches for an engine (and each of its shards).
#[derive(Clone, Debug)]
pub struct Config {
    /// Shard threads to start (port mode). Polling-mode shards are made one at a time.
    pub shards: usize,
    /// Pin shard `i` to `cores[i % cores.len()]`; empty means cores 0, 1, ... in order.
    pub cores: Vec<usize>,
    /// Pin shard threads at all.
    pub pin: bool,
    /// Frames in each shard's registered pool (at most 65536).
    pub frames_per_shard: u32,
    /// Bytes per frame (a power of two, at least 512).
    pub frame_size: u32,
    /// Frames kept in the provided-buffer ring for receives (a power of two, < frames).
    pub recv_frames: u32,
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Completion queue entries (at least `sq_entries`).
    pub cq_entries: u32,
    /// In-flight operations per shard.
    pub ops_max: u32,
    /// Open sockets per shard.
    pub sockets_max: u32,
    /// Commands queued from application threads to a shard.
    pub commands_max: u32,
    /// Fixed-buffer slots for Registered I/O buffers per shard.
    pub rio_buffers_max: u32,
    /// RIO sends from a registered buffer of at least this many bytes go zero-copy
    /// (io_uring SEND_ZC from the fixed buffer); smaller ones are copied by the kernel, which
    /// costs less than the zero-copy notification for small payloads (the kernel's
    /// MSG_ZEROCOPY guidance puts the break-even around 10 KB). 0: every one zero-copy.
    pub rio_zc_min_bytes: u32,
    /// Use a kernel SQ polling thread (idle time in ms) instead of io_uring_enter.
    pub sqpoll_idle_ms: Option<u32>,
    /// Try explicit 2 MiB huge pages for the pool.
    pub huge_pages: bool,
    /// Port mode: microseconds a shard yields, watching for new operations, before it
    /// sleeps in the kernel (0: sleep at once). Trades idle CPU for fewer wake-ups.
    pub idle_spin_us: u32,
    /// Datagrams a fan-out group may hold in the shard behind a stalled reliable subscriber
    /// (each holds a frame); past it the group drops and counts. At least 1, below
    /// `frames_per_shard`; `None`: a quarter of `frames_per_shard`.
    pub fanout_pending_max: Option<u32>,
    /// Completions a shard holds for one full completion port (per port, preallocated when
    /// the port's first socket opens). Past it, datagrams of multishot receives are dropped
    /// and counted; terminal completions go to the port's overflow.
    pub port_backlog: u32,
    /// Register each socket in the ring's file table (IOSQE_FIXED_FILE): the kernel skips the
    /// file-table lookup and its reference count on every operation. Off only to compare.
    pub registered_files: bool,
    /// The kernel interface under the shards (Winsock's service provider): io_uring, epoll,
    /// or `Auto` (io_uring, else epoll, the reason reported in `ShardInfo`). Defaults to
    /// `PORTO_PROVIDER` if set.
    pub provider: Provider,
    /// Publish the shards' statistics in shared memory for `porto stats`
    /// (a memfd `porto.<pid>.<n>`, see `telemetry`). Off: nothing is published.
    pub stats_publish: bool,
    /// How often a shard merges its latency samples and, with `stats_publish`, rewrites its
    /// published block (1..=60000 ms).
    pub stats_period_ms: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            shards: 1,
            cores: Vec::new(),
            pin: true,
            frames_per_shard: 2048,
            frame_size: 2048,
            recv_frames: 1024,
            sq_entries: 256,
            cq_entries: 4096,
            ops_max: 4096,
            sockets_max: 1024,
            commands_max: 4096,
            rio_buffers_max: 64,
            rio_zc_min_bytes: 10240,
            sqpoll_idle_ms: None,
            huge_pages: true,
            idle_spin_us: 50,
            fanout_pending_max: None,
            port_backlog: 1024,
            registered_files: true,
            provider: Provider::from_env().unwrap_or_default(),
            stats_publish: true,
            stats_period_ms: 100,
        }
    }
}

impl Config {
    /// Checks every limit; the error says which value is wrong and why.
    pub fn validate(&self) -> Result<(), SetupError> {
        let bad = |m: String| Err(SetupError::Config(m));
        if let Err(e) = Provider::from_env() {
            return bad(format!("PORTO_PROVIDER: {e}"));
        }
        if self.shards == 0 || self.shards > 256 {
            return bad(format!("shards = {}: must be 1..=256", self.shards));
        }
        if self.frames_per_shard == 0 || self.frames_per_shard > FRAMES_MAX {
            return bad(format!(
                "frames_per_shard = {}: must be 1..={FRAMES_MAX}",
                self.frames_per_shard
            ));
        }
        if !self.frame_size.is_power_of_two() || !(512..=65536).contains(&self.frame_size) {
            return bad(format!(
                "frame_size = {}: must be a power of two in 512..=65536",
                self.frame_size
            ));
        }
        if !self.recv_frames.is_power_of_two() || self.recv_frames > 32768 || self.recv_frames >= self.frames_per_shard
        {
            return bad(format!(
                "recv_frames = {}: must be a power of two <= 32768 and below frames_per_shard ({})",
                self.recv_frames, self.frames_per_shard
            ));
        }
        // An operation with a timeout is a chain of two SQEs pushed together.
        if self.sq_entries < 2
            || self.sq_entries > 32768
            || self.cq_entries < self.sq_entries
            || self.cq_entries > 1 << 20
        {
            return bad(format!(
                "sq_entries = {}, cq_entries = {}: need 2 <= sq <= 32768 (a timed operation is two linked SQEs) and sq <= cq <= 1048576",
                self.sq_entries, self.cq_entries
            ));
        }
        if self.ops_max == 0 || self.ops_max > 1 << 24 {
            return bad(format!("ops_max = {}: must be 1..=16777216", self.ops_max));
        }
        // A socket's index travels in the 24-bit index field of io_uring user_data.
        if self.sockets_max == 0 || self.sockets_max > 1 << 24 || self.commands_max == 0 {
            return bad(format!(
                "sockets_max = {}, commands_max = {}: sockets_max must be 1..=16777216, commands_max positive",
                self.sockets_max, self.commands_max
            ));
        }
        if let Some(n) = self
            .fanout_pending_max
            .filter(|&n| n == 0 || n >= self.frames_per_shard)
        {
            return bad(format!(
                "fanout_pending_max = {n}: must be 1..frames_per_shard ({})",
                self.frames_per_shard
            ));
        }
        if self.port_backlog == 0 || self.port_backlog > 1 << 20 {
            return bad(format!("port_backlog = {}: must be 1..=1048576", self.port_backlog));
        }
        if !(1..=60_000).contains(&self.stats_period_ms) {
            return bad(format!("stats_period_ms = {}: must be 1..=60000", self.stats_period_ms));
        }
        if self.idle_spin_us > 1_000_000 {
            return bad(format!("idle_spin_us = {}: at most 1000000", self.idle_spin_us));
        }
        // The fixed-buffer table holds the pool (slot 0) and the RIO slots: the kernel's
        // limit is 16384 entries in all (IORING_MAX_REG_BUFFERS).
        if self.rio_buffers_max > (1 << 14) - 1 {
            return bad(format!(
                "rio_buffers_max = {}: at most 16383 (the kernel's 16384 fixed buffers, one of them the pool)",
                self.rio_buffers_max
            ));
        }
        Ok(())
    }

    /// The bound on a fan-out group's waiting datagrams (see `fanout_pending_max`).
    pub fn fanout_pending_limit(&self) -> u32 {
        self.fanout_pending_max.unwrap_or((self.frames_per_shard / 4).max(1))
    }

    /// Bytes of registered memory per shard.
    pub fn pool_bytes(&self) -> usize {
        self.frames_per_shard as usize * self.frame_size as usize
    }

    /// The core shard `shard` is pinned to.
    pub fn core_of(&self, shard: usize) -> usize {
        if self.cores.is_empty() {
            shard
        } else {
            self.cores[shard % self.cores.len()]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let c = Config {
            recv_frames: 3000,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("recv_frames"));
        let c = Config {
            cq_entries: 8,
            sq_entries: 16,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("cq_entries"));
        let c = Config {
            frame_size: 1000,
            ..Config::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("frame_size"));
        for c in [
            Config {
                rio_buffers_max: 1 << 14,
                ..Config::default()
            },
            Config {
                sockets_max: (1 << 24) + 1,
                ..Config::default()
            },
        ] {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("rio_buffers_max") || e.contains("sockets_max"), "{e}");
        }
        Config {
            rio_buffers_max: (1 << 14) - 1,
            sockets_max: 1 << 24,
            ..Config::default()
        }
        .validate()
        .unwrap();
    }
}
