//! qWAVE's QOS2 for C, in safe Rust: a QoS handle's flows (`QOS_FLOWID`), each a traffic
//! type and an optional outgoing rate with its shaping, over the engine's `QosFlow`s — one
//! per shard the flow's sockets live on, made when the first of them joins. Changing a
//! flow's type or shaping mode moves its sockets to new engine flows (the old ones' ids come
//! back to their shard once nothing is left in them); changing only its rate is a command to
//! the existing ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codes::*;
use crate::state::{self, Obj, ObjRef, Wsa};
use porto::qos::{FlowCounters, Shaping, TrafficType};
use porto::QosFlow;

/// A flow of a QoS handle.
#[derive(Debug)]
struct CFlow {
    traffic: TrafficType,
    /// Outgoing rate (bit/s) and how excess is treated.
    shape: Option<(u64, Shaping)>,
    /// The engine's flow on each shard with sockets in it.
    engine: HashMap<usize, QosFlow>,
    /// (socket, its shard).
    sockets: Vec<(u64, usize)>,
    /// `QOSSetOutgoingDSCPValue`: the DSCP its sockets are marked with instead of the class's.
    dscp: Option<u8>,
}

/// A QoS handle (`QOSCreateHandle`).
#[derive(Debug, Default)]
pub(crate) struct Qos {
    flows: Mutex<(u32, HashMap<u32, CFlow>)>,
}

/// The bucket of a shaped flow: 10 ms at its rate, at least two full-size datagrams (QOS2
/// takes no burst; this is porto's choice).
fn burst_of(rate_bps: u64) -> u64 {
    (rate_bps / 8 / 100).clamp(3000, porto::qos::BURST_BYTES_MAX)
}

impl CFlow {
    /// The engine flow for `shard`, made on first use.
    fn on_shard(&mut self, shard: usize) -> Result<&QosFlow, Wsa> {
        if !self.engine.contains_key(&shard) {
            let h = state::shard(shard)?;
            let shape = self.shape.map(|(rate, how)| (rate, burst_of(rate), how));
            let f = h.create_flow(self.traffic, shape).map_err(|e| match e {
                porto::SetupError::Limit(_) => Wsa(PORTO_WSAENOBUFS),
                _ => Wsa(PORTO_WSAEINVAL),
            })?;
            self.engine.insert(shard, f);
        }
        Ok(&self.engine[&shard])
    }

    /// Puts `sock` (on `shard`) into the flow, marked with its DSCP.
    fn join(&mut self, sock: u64, shard: usize) -> Result<(), Wsa> {
        let dscp = self.dscp;
        let ef = self.on_shard(shard)?;
        let ef = match dscp {
            Some(d) => ef.with_dscp(d).map_err(Wsa::from)?,
            None => ef.clone(),
        };
        state::with_core(sock, |core| core.set_flow(&ef).map_err(Wsa::from))
    }

    /// Every socket joins again (new engine flows after `fresh`: a new type or shaping).
    fn rejoin(&mut self, fresh: bool) -> Result<(), Wsa> {
        if fresh {
            self.engine.clear();
        }
        for (s, shard) in self.sockets.clone() {
            self.join(s, shard)?;
        }
        Ok(())
    }

    fn counters(&self) -> FlowCounters {
        let mut all = FlowCounters::default();
        for f in self.engine.values() {
            let c = f.counters();
            all.sent += c.sent;
            all.sent_bytes += c.sent_bytes;
            all.delayed += c.delayed;
            all.non_conformant += c.non_conformant;
            all.dropped += c.dropped;
        }
        all
    }
}

/// `QOSCreateHandle`.
pub(crate) fn create() -> Result<u64, Wsa> {
    state::insert(Obj::Qos(Arc::new(Qos {
        flows: Mutex::new((1, HashMap::new())),
    })))
}

fn qos(h: u64) -> Result<Arc<Qos>, Wsa> {
    match state::get(h)? {
        Some(ObjRef::Qos(q)) => Ok(q),
        _ => Err(Wsa(PORTO_ERROR_INVALID_HANDLE)),
    }
}

fn with_flows<T>(h: u64, f: impl FnOnce(&mut (u32, HashMap<u32, CFlow>)) -> Result<T, Wsa>) -> Result<T, Wsa> {
    let q = qos(h)?;
    let mut g = q.flows.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// The traffic type of QOS2's number (`QOSTrafficTypeBestEffort` 0 … `QOSTrafficTypeControl` 5).
pub(crate) fn traffic_of(n: i32) -> Result<TrafficType, Wsa> {
    Ok(match n {
        0 => TrafficType::BestEffort,
        1 => TrafficType::Background,
        2 => TrafficType::ExcellentEffort,
        3 => TrafficType::AudioVideo,
        4 => TrafficType::Voice,
        5 => TrafficType::Control,
        _ => return Err(Wsa(PORTO_WSAEINVAL)),
    })
}

/// `QOSAddSocketToFlow`: into flow `flow` (0: a new one of `traffic`); its id.
pub(crate) fn add_socket(h: u64, sock: u64, traffic: TrafficType, flow: u32) -> Result<u32, Wsa> {
    let shard = state::with_core(sock, |c| Ok(c.shard_index()))?;
    with_flows(h, |(next, flows)| {
        let id = if flow == 0 {
            let id = *next;
            *next = next.checked_add(1).ok_or(Wsa(PORTO_WSAENOBUFS))?;
            flows.insert(
                id,
                CFlow {
                    traffic,
                    shape: None,
                    engine: HashMap::new(),
                    sockets: Vec::new(),
                    dscp: None,
                },
            );
            id
        } else {
            flow
        };
        let f = flows.get_mut(&id).ok_or(Wsa(PORTO_WSAEINVAL))?;
        if let Err(e) = f.join(sock, shard) {
            if flow == 0 {
                flows.remove(&id);
            }
            return Err(e);
        }
        f.sockets.retain(|&(s, _)| s != sock);
        f.sockets.push((sock, shard));
        Ok(id)
    })
}

/// `QOSRemoveSocketFromFlow` (`flow` 0: whichever flow of this handle holds it).
pub(crate) fn remove_socket(h: u64, sock: u64, flow: u32) -> Result<(), Wsa> {
    with_flows(h, |(_, flows)| {
        let mut found = false;
        for (id, f) in flows.iter_mut() {
            if (flow == 0 || *id == flow) && f.sockets.iter().any(|&(s, _)| s == sock) {
                f.sockets.retain(|&(s, _)| s != sock);
                found = true;
            }
        }
        if !found {
            return Err(Wsa(PORTO_WSAEINVAL));
        }
        // A closed socket has nothing left to clear.
        match state::with_core(sock, |core| core.clear_flow().map_err(Wsa::from)) {
            Ok(()) | Err(Wsa(PORTO_WSAENOTSOCK)) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

/// `QOSSetFlow(QOSSetOutgoingRate)`: shape the flow at `rate` bit/s as `how` (0: no shaping).
pub(crate) fn set_rate(h: u64, flow: u32, rate: u64, how: Shaping) -> Result<(), Wsa> {
    with_flows(h, |(_, flows)| {
        let f = flows.get_mut(&flow).ok_or(Wsa(PORTO_WSAEINVAL))?;
        let want = (rate > 0).then_some((rate, how));
        match (f.shape, want) {
            (Some((_, was)), Some((rate, how))) if was == how => {
                f.shape = want;
                for ef in f.engine.values() {
                    ef.set_rate(rate).map_err(Wsa::from)?;
                }
                Ok(())
            }
            _ => {
                f.shape = want;
                f.rejoin(true)
            }
        }
    })
}

/// `QOSSetFlow(QOSSetTrafficType)`.
pub(crate) fn set_traffic(h: u64, flow: u32, traffic: TrafficType) -> Result<(), Wsa> {
    with_flows(h, |(_, flows)| {
        let f = flows.get_mut(&flow).ok_or(Wsa(PORTO_WSAEINVAL))?;
        f.traffic = traffic;
        f.rejoin(true)
    })
}

/// `QOSSetFlow(QOSSetOutgoingDSCPValue)`: the flow's sockets, and those joining later, are
/// marked with `dscp` (0..=63, else `WSAEINVAL`) instead of the class's.
pub(crate) fn set_dscp(h: u64, flow: u32, dscp: u32) -> Result<(), Wsa> {
    let dscp = u8::try_from(dscp)
        .ok()
        .filter(|&d| d <= 63)
        .ok_or(Wsa(PORTO_WSAEINVAL))?;
    with_flows(h, |(_, flows)| {
        let f = flows.get_mut(&flow).ok_or(Wsa(PORTO_WSAEINVAL))?;
        f.dscp = Some(dscp);
        f.rejoin(false)
    })
}

/// What `QOSQueryFlow` reads of a flow.
#[derive(Debug)]
pub(crate) struct FlowInfo {
    pub traffic: TrafficType,
    pub shape: Option<(u64, Shaping)>,
    pub dscp: Option<u8>,
    pub counters: FlowCounters,
}

/// `QOSQueryFlow`.
pub(crate) fn query(h: u64, flow: u32) -> Result<FlowInfo, Wsa> {
    with_flows(h, |(_, flows)| {
        let f = flows.get(&flow).ok_or(Wsa(PORTO_WSAEINVAL))?;
        Ok(FlowInfo {
            traffic: f.traffic,
            shape: f.shape,
            dscp: f.dscp,
            counters: f.counters(),
        })
    })
}

/// `QOSCloseHandle`: every socket still in its flows leaves them.
pub(crate) fn close(h: u64) -> Result<(), Wsa> {
    let q = qos(h)?;
    state::remove(h, |o| matches!(o, Obj::Qos(_)), PORTO_ERROR_INVALID_HANDLE)?;
    let g = q.flows.lock().unwrap_or_else(|e| e.into_inner());
    for f in g.1.values() {
        for &(s, _) in &f.sockets {
            let _ = state::with_core(s, |core| core.clear_flow().map_err(Wsa::from));
        }
    }
    Ok(())
}
