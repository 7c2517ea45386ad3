//! The engine in completion-port mode: one pinned thread per shard, each turning its shard
//! and sleeping in io_uring_enter when idle.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::error::SetupError;
pub use crate::proto::Transport;
use crate::shard::{self, Shard, ShardHandle};
use crate::telemetry::Publisher;

/// Running shards. Dropping the engine stops them: in-flight operations complete `Aborted`,
/// sockets are closed, threads joined, rings torn down.
pub struct Engine {
    shards: Vec<ShardHandle>,
    threads: Vec<JoinHandle<()>>,
    next: AtomicUsize,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("shards", &self.shards.len()).finish()
    }
}

impl Engine {
    /// Starts `cfg.shards` shard threads. Fails as a whole, leaving no thread behind.
    pub fn start(cfg: &Config) -> Result<Engine, SetupError> {
        cfg.validate()?;
        let mut engine = Engine {
            shards: Vec::new(),
            threads: Vec::new(),
            next: AtomicUsize::new(0),
        };
        let (telemetry, stats_lost) = Publisher::for_config(cfg, cfg.shards);
        for i in 0..cfg.shards {
            let shared = shard::new_shared(cfg, i, telemetry.clone())?;
            let core = cfg.pin.then(|| cfg.core_of(i));
            let (tx, rx) = mpsc::sync_channel(1);
            let c = cfg.clone();
            let sh = shared.clone();
            let mut lost: Vec<crate::driver::Degraded> = stats_lost.iter().cloned().collect();
            let t = std::thread::Builder::new()
                .name(format!("porto-shard-{i}"))
                .spawn(move || {
                    let core = core.and_then(|core| shard::pin(core).map(|()| core).map_err(|d| lost.push(d)).ok());
                    if core.is_none() {
                        shard::unpin();
                    }
                    let mut shard = match Shard::start(&c, sh.clone(), core, lost) {
                        Ok(s) => {
                            let _ = tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    shard.run(i);
                })
                .map_err(|source| SetupError::Syscall {
                    what: "spawning a shard thread",
                    source,
                })?;
            engine.threads.push(t);
            engine.shards.push(ShardHandle { shared });
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(SetupError::Stopped),
            }
        }
        Ok(engine)
    }

    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    pub fn shard(&self, i: usize) -> &ShardHandle {
        &self.shards[i]
    }

    /// The file this engine's statistics are published in for `porto stats`, if any.
    pub fn stats_file(&self) -> Option<&std::path::Path> {
        self.shards[0].shared.telemetry.as_deref().map(Publisher::path)
    }

    /// Shards in turn, for spreading sockets.
    pub fn next_shard(&self) -> &ShardHandle {
        &self.shards[self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len()]
    }

    /// The provider the shards really got (`Transport::IoUring` or `Transport::Epoll`); each
    /// shard's [`ShardInfo`](crate::shard::ShardInfo) says why, if it is not the one asked for.
    pub fn transport(&self) -> Transport {
        self.shards[0]
            .info()
            .map_or(Transport::IoUring, |i| i.provider.transport)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for s in &self.shards {
            s.shared.request_stop();
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a shard thread panicked");
            }
        }
    }
}
