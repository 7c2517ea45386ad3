//! One XDP program per interface, shared by every AF_XDP socket on it, whichever shard the
//! socket lives on: attached by the first socket, detached when the last lets go. Each socket
//! puts its own queues' AF_XDP sockets in the program's XSKMAP and its binds and groups in
//! the program's tables; entries two sockets share (one UDP port served by every shard, like
//! an SO_REUSEPORT group) are counted, so one socket closing does not take them from the
//! others.
//!
//! Interfaces are told apart by network namespace and index (two namespaces may each have a
//! `vb`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use super::program::{AttachMode, ProgramCounters, StampSource, XdpError, XdpProgram};

/// (network namespace inode, interface index).
type IfaceKey = (u64, u32);

static ATTACHED: Mutex<Vec<(IfaceKey, Weak<SharedProgram>)>> = Mutex::new(Vec::new());

struct Tables {
    program: XdpProgram,
    binds: HashMap<SocketAddr, u32>,
    groups: HashMap<(IpAddr, Option<IpAddr>), u32>,
    /// Sockets blocking each (group, source) from their any-source membership.
    blocks: HashMap<(IpAddr, IpAddr), u32>,
    /// What the program's blocked tables hold now.
    blocked: std::collections::HashSet<(IpAddr, IpAddr)>,
}

impl Tables {
    /// The program blocks `source` of `group` only while every socket with an any-source
    /// membership of the group blocks it (one that does not still wants its datagrams; the
    /// engine checks each socket's own filter on every frame).
    fn sync_block(&mut self, group: IpAddr, source: IpAddr) -> Result<(), XdpError> {
        let members = self.groups.get(&(group, None)).copied().unwrap_or(0);
        let blocking = self.blocks.get(&(group, source)).copied().unwrap_or(0);
        let want = members > 0 && blocking >= members;
        if want != self.blocked.contains(&(group, source)) {
            self.program.set_blocked(group, source, want)?;
            if want {
                self.blocked.insert((group, source));
            } else {
                self.blocked.remove(&(group, source));
            }
        }
        Ok(())
    }

    /// `sync_block` for every blocked source of `group`.
    fn sync_blocks_of(&mut self, group: IpAddr) -> Result<(), XdpError> {
        let sources: Vec<IpAddr> = self
            .blocks
            .keys()
            .filter(|(g, _)| *g == group)
            .map(|&(_, s)| s)
            .collect();
        sources.into_iter().try_for_each(|s| self.sync_block(group, s))
    }
}

/// The program attached to one interface, and who uses what in its tables.
pub struct SharedProgram {
    iface: String,
    tables: Mutex<Tables>,
}

impl std::fmt::Debug for SharedProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedProgram").field("iface", &self.iface).finish()
    }
}

fn netns_inode() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net").map_or(0, |m| m.ino())
}

impl SharedProgram {
    /// The program on `iface` (`ifindex` in the calling thread's namespace): the one already
    /// attached there by another socket, or a new attachment (`only` forces a mode). A
    /// forced mode that differs from the attached program's is refused, naming both.
    pub fn get(iface: &str, ifindex: u32, only: Option<AttachMode>) -> Result<Arc<SharedProgram>, XdpError> {
        let key = (netns_inode(), ifindex);
        let mut all = ATTACHED.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = all.iter().find(|(k, _)| *k == key).and_then(|(_, w)| w.upgrade()) {
            let (mode, _) = p.mode();
            if only.is_some_and(|m| m != mode) {
                return Err(XdpError::Attach {
                    iface: iface.to_string(),
                    why: format!(
                        "porto's program is already attached there in {mode} mode by another socket; ask for the same mode (or none)"
                    ),
                });
            }
            return Ok(p);
        }
        let p = Arc::new(SharedProgram {
            iface: iface.to_string(),
            tables: Mutex::new(Tables {
                program: XdpProgram::attach(iface, only)?,
                binds: HashMap::new(),
                groups: HashMap::new(),
                blocks: HashMap::new(),
                blocked: Default::default(),
            }),
        });
        all.push((key, Arc::downgrade(&p)));
        Ok(p)
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mode obtained and why a better one was not, if it was not.
    pub fn mode(&self) -> (AttachMode, Option<String>) {
        let t = self.tables();
        let (m, why) = t.program.mode().expect("an attached program has a mode");
        (m, why.map(String::from))
    }

    /// Where receive stamps come from on this interface (the program's, or the RX ring's).
    pub fn stamps(&self) -> StampSource {
        self.tables().program.stamps().clone()
    }

    /// Puts an AF_XDP socket in the XSKMAP slot of receive queue `queue`.
    pub(crate) fn set_socket(&self, queue: u32, socket: &impl AsRawFd) -> Result<(), XdpError> {
        self.tables().program.set_socket(queue, socket)
    }

    /// Steers `local` to AF_XDP (counted: every socket serving it adds it).
    pub(crate) fn add_bind(&self, local: SocketAddr) -> Result<(), XdpError> {
        let mut t = self.tables();
        if !t.binds.contains_key(&local) {
            t.program.add_bind(local)?;
        }
        *t.binds.entry(local).or_insert(0) += 1;
        Ok(())
    }

    /// One socket stops serving `local`; the program stops steering it with the last.
    pub(crate) fn remove_bind(&self, local: SocketAddr) -> Result<(), XdpError> {
        let mut t = self.tables();
        let Some(n) = t.binds.get_mut(&local) else {
            return Ok(());
        };
        *n -= 1;
        if *n == 0 {
            t.binds.remove(&local);
            t.program.remove_bind(local)?;
        }
        Ok(())
    }

    /// A membership (`source` None: any source) steered for one more socket.
    pub(crate) fn add_group(&self, group: IpAddr, source: Option<IpAddr>) -> Result<(), XdpError> {
        let mut t = self.tables();
        if !t.groups.contains_key(&(group, source)) {
            t.program.add_group(group, source)?;
        }
        *t.groups.entry((group, source)).or_insert(0) += 1;
        if source.is_none() {
            // One more any-source member that blocks nothing yet.
            t.sync_blocks_of(group)?;
        }
        Ok(())
    }

    /// One socket leaves a membership; the program stops steering it with the last.
    pub(crate) fn remove_group(&self, group: IpAddr, source: Option<IpAddr>) -> Result<(), XdpError> {
        let mut t = self.tables();
        let Some(n) = t.groups.get_mut(&(group, source)) else {
            return Ok(());
        };
        *n -= 1;
        if *n == 0 {
            t.groups.remove(&(group, source));
            t.program.remove_group(group, source)?;
        }
        if source.is_none() {
            t.sync_blocks_of(group)?;
        }
        Ok(())
    }

    /// One socket blocks (`on`) or unblocks `source` of its any-source membership of `group`.
    pub(crate) fn set_block(&self, group: IpAddr, source: IpAddr, on: bool) -> Result<(), XdpError> {
        let mut t = self.tables();
        let n = t.blocks.entry((group, source)).or_insert(0);
        if on {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
        }
        let r = t.sync_block(group, source);
        if t.blocks.get(&(group, source)) == Some(&0) {
            t.blocks.remove(&(group, source));
        }
        r
    }

    /// The program's counters (every socket on the interface together).
    pub fn counters(&self) -> Result<ProgramCounters, XdpError> {
        self.tables().program.counters()
    }
}
