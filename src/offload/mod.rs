//! The in-kernel fast path for ChannelData (`[offload]`, docs/offload.md):
//! loads the committed XDP program `bpf/channel_offload.o` with aya, attaches
//! it to the configured interfaces, and applies the core's bind/unbind changes
//! (`turn::offload`) to its maps. Each shard keeps the entries it installed
//! and reads their counters now and then, telling its core what the kernel
//! relayed.
//!
//! Anything that goes wrong at start (no BPF, no privileges, an unknown
//! interface, a driver without native XDP) is one log line and a clean
//! fallback: the program is not attached and every packet goes through
//! userspace as without `[offload]`.

mod driver;
mod maps;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aya::maps::{Array, HashMap, MapData};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use crate::config::{OffloadConfig, OffloadMode};
use crate::turn::allocation::Traffic;
use crate::turn::offload::{OffloadChange, OffloadChannel};
use crate::turn::{FastMap, FiveTuple, RelayBinder, Server};

/// The BPF object, built from `bpf/channel_offload.c` by `bpf/build.sh`.
/// Aligned: aya parses the ELF in place.
static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/channel_offload.o");

/// The program's name in the object (its C function).
const PROGRAM: &str = "ferroturn_channel_offload";

/// Whether the fast path is attached now (for `ferroturn_offload_active`).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Whether the XDP program is attached (the metrics gauge).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The maps the shards write, behind one lock: a bind or unbind per
/// ChannelBind or expiry and a counter read per entry a second, never per
/// packet.
struct Maps {
    c2p: HashMap<MapData, maps::C2pKey, maps::Value>,
    p2c: HashMap<MapData, maps::P2cKey, maps::Value>,
    c2p6: HashMap<MapData, maps::C2pKey6, maps::Value6>,
    p2c6: HashMap<MapData, maps::P2cKey6, maps::Value6>,
}

impl Maps {
    /// Installs both directions of `ch` in the maps of its family; on an
    /// error (a full map) neither stays.
    fn insert(&mut self, ch: &OffloadChannel) -> Result<(), aya::maps::MapError> {
        let r = if ch.client.is_ipv4() {
            self.c2p
                .insert(maps::c2p_key(ch), maps::c2p_value(ch), 0)
                .and_then(|()| self.p2c.insert(maps::p2c_key(ch), maps::p2c_value(ch), 0))
        } else {
            self.c2p6
                .insert(maps::c2p_key6(ch), maps::c2p_value6(ch), 0)
                .and_then(|()| {
                    self.p2c6
                        .insert(maps::p2c_key6(ch), maps::p2c_value6(ch), 0)
                })
        };
        if r.is_err() {
            self.remove(ch);
        }
        r
    }

    fn remove(&mut self, ch: &OffloadChannel) {
        if ch.client.is_ipv4() {
            let _ = self.c2p.remove(&maps::c2p_key(ch));
            let _ = self.p2c.remove(&maps::p2c_key(ch));
        } else {
            let _ = self.c2p6.remove(&maps::c2p_key6(ch));
            let _ = self.p2c6.remove(&maps::p2c_key6(ch));
        }
    }

    /// The kernel's counts for `ch` now (cumulative since installed).
    fn read(&self, ch: &OffloadChannel) -> Traffic {
        let ((to_peer_packets, to_peer_bytes), (to_client_packets, to_client_bytes)) =
            if ch.client.is_ipv4() {
                let up = self.c2p.get(&maps::c2p_key(ch), 0).ok();
                let down = self.p2c.get(&maps::p2c_key(ch), 0).ok();
                (
                    up.map_or((0, 0), |v| maps::counts(&v)),
                    down.map_or((0, 0), |v| maps::counts(&v)),
                )
            } else {
                let up = self.c2p6.get(&maps::c2p_key6(ch), 0).ok();
                let down = self.p2c6.get(&maps::p2c_key6(ch), 0).ok();
                (
                    up.map_or((0, 0), |v| maps::counts6(&v)),
                    down.map_or((0, 0), |v| maps::counts6(&v)),
                )
            };
        Traffic {
            to_peer_packets,
            to_peer_bytes,
            to_client_packets,
            to_client_bytes,
        }
    }
}

/// The loaded, attached program: shared by the shards, detached when the
/// last holder drops it (at exit).
pub struct Offload {
    maps: Mutex<Maps>,
    /// Holds the program and its XDP links: dropping it detaches them.
    _ebpf: Mutex<Ebpf>,
    /// How it was attached, for the log.
    pub mode: &'static str,
}

/// Why the fast path could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

fn err(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError(format!("{what}: {e}"))
}

/// The largest IP packet the program may produce: the smallest MTU of the
/// interfaces (read from sysfs; 1500 if unreadable).
fn mtu_of(interfaces: &[String]) -> u32 {
    interfaces
        .iter()
        .map(|i| {
            std::fs::read_to_string(format!("/sys/class/net/{i}/mtu"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .unwrap_or(1500)
        })
        .min()
        .unwrap_or(1500)
}

/// Whether `name` is an interface of this host (network namespace): for
/// `ferroturn check` and a clear error at start.
pub fn interface_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether this kernel and these privileges let the program load at all
/// (loaded and verified, attached nowhere): for tests and `ferroturn check`.
pub fn probe() -> Result<(), StartError> {
    let mut ebpf = Ebpf::load(OBJECT).map_err(|e| err("loading the BPF object", e))?;
    let program: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .ok_or_else(|| StartError(format!("the BPF object has no program {PROGRAM}")))?
        .try_into()
        .map_err(|e| err("the XDP program", e))?;
    program
        .load()
        .map_err(|e| err("loading the XDP program", e))
}

impl Offload {
    /// Loads the program and attaches it to every configured interface.
    pub fn start(cfg: &OffloadConfig) -> Result<Arc<Offload>, StartError> {
        for i in &cfg.interfaces {
            if !interface_exists(i) {
                return Err(StartError(format!(
                    "offload.interfaces: no network interface '{i}' on this host"
                )));
            }
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(|e| err("loading the BPF object", e))?;
        let mut settings: Array<MapData, u32> = Array::try_from(
            ebpf.take_map("FERRO_SETTINGS")
                .ok_or_else(|| StartError("the BPF object has no FERRO_SETTINGS map".into()))?,
        )
        .map_err(|e| err("FERRO_SETTINGS", e))?;
        settings
            .set(0, mtu_of(&cfg.interfaces), 0)
            .map_err(|e| err("writing the MTU setting", e))?;
        let c2p = HashMap::try_from(
            ebpf.take_map("FERRO_C2P")
                .ok_or_else(|| StartError("the BPF object has no FERRO_C2P map".into()))?,
        )
        .map_err(|e| err("FERRO_C2P", e))?;
        let p2c = HashMap::try_from(
            ebpf.take_map("FERRO_P2C")
                .ok_or_else(|| StartError("the BPF object has no FERRO_P2C map".into()))?,
        )
        .map_err(|e| err("FERRO_P2C", e))?;
        let c2p6 = HashMap::try_from(
            ebpf.take_map("FERRO_C2P6")
                .ok_or_else(|| StartError("the BPF object has no FERRO_C2P6 map".into()))?,
        )
        .map_err(|e| err("FERRO_C2P6", e))?;
        let p2c6 = HashMap::try_from(
            ebpf.take_map("FERRO_P2C6")
                .ok_or_else(|| StartError("the BPF object has no FERRO_P2C6 map".into()))?,
        )
        .map_err(|e| err("FERRO_P2C6", e))?;
        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| StartError(format!("the BPF object has no program {PROGRAM}")))?
            .try_into()
            .map_err(|e| err("the XDP program", e))?;
        program.load().map_err(|e| {
            err(
                "loading the XDP program (root, or CAP_BPF + CAP_NET_ADMIN?)",
                e,
            )
        })?;
        let mut used = "generic";
        for i in &cfg.interfaces {
            // Native mode attaches to a veth but drops what XDP_TX sends
            // unless the pair's other end runs XDP too (see `driver`):
            // refused when asked for, skipped by `auto`, unless the operator
            // says the other end is ready (`native-on-veth`).
            let veth = !cfg.native_on_veth && driver::driver_of(i).as_deref() == Some("veth");
            let attached = match cfg.mode {
                OffloadMode::Generic => program.attach(i, XdpMode::Skb).map(|_| "generic"),
                OffloadMode::Native if veth => {
                    return Err(StartError(format!(
                        "offload.mode = \"native\": {i} is a veth, whose native XDP_TX reaches \
                         the other end of the pair only when that end runs an XDP program too; use \
                         mode = \"generic\" or \"auto\", or set native-on-veth = true once it does"
                    )))
                }
                OffloadMode::Native => program.attach(i, XdpMode::Driver).map(|_| "native"),
                OffloadMode::Auto if veth => program.attach(i, XdpMode::Skb).map(|_| "generic"),
                OffloadMode::Auto => program
                    .attach(i, XdpMode::Driver)
                    .map(|_| "native")
                    .or_else(|_| program.attach(i, XdpMode::Skb).map(|_| "generic")),
            };
            used = attached.map_err(|e| err(&format!("attaching XDP to {i}"), e))?;
        }
        // The settings map stays referenced by the program; the handle may go.
        drop(settings);
        ACTIVE.store(true, Ordering::Relaxed);
        Ok(Arc::new(Offload {
            maps: Mutex::new(Maps {
                c2p,
                p2c,
                c2p6,
                p2c6,
            }),
            _ebpf: Mutex::new(ebpf),
            mode: used,
        }))
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload").field("mode", &self.mode).finish()
    }
}

impl Drop for Offload {
    /// The last holder let go: the program's links go with `_ebpf`.
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Relaxed);
    }
}

/// One entry a shard installed, with the counts it last reported.
struct Installed {
    allocation: u64,
    tuple: FiveTuple,
    reported: Traffic,
}

/// A shard's view of the fast path: what it installed, what it reported.
pub struct ShardOffload {
    offload: Arc<Offload>,
    installed: FastMap<OffloadChannel, Installed>,
    /// Map writes that failed (a full map, say): logged once, not per channel.
    warned: bool,
}

fn minus(now: Traffic, before: Traffic) -> Traffic {
    Traffic {
        to_peer_packets: now.to_peer_packets.saturating_sub(before.to_peer_packets),
        to_peer_bytes: now.to_peer_bytes.saturating_sub(before.to_peer_bytes),
        to_client_packets: now
            .to_client_packets
            .saturating_sub(before.to_client_packets),
        to_client_bytes: now.to_client_bytes.saturating_sub(before.to_client_bytes),
    }
}

impl ShardOffload {
    pub fn new(offload: Arc<Offload>) -> Self {
        Self {
            offload,
            installed: FastMap::default(),
            warned: false,
        }
    }

    /// Applies the core's queued changes to the maps. Removed entries' last
    /// counts go back to the core at once: call before draining its events,
    /// so that a closed allocation's usage record includes them.
    pub fn apply<B: RelayBinder>(&mut self, server: &mut Server<B>) {
        let changes: Vec<OffloadChange> = server.drain_offload_changes().collect();
        if changes.is_empty() {
            return;
        }
        let offload = self.offload.clone();
        let mut m = offload.maps();
        for change in changes {
            match change {
                OffloadChange::Bind {
                    allocation,
                    tuple,
                    channel,
                } => {
                    if let Err(e) = m.insert(&channel) {
                        if !std::mem::replace(&mut self.warned, true) {
                            tracing::warn!(error = %e, "offload: a channel could not be installed (map full?); it stays in userspace");
                        }
                        continue;
                    }
                    self.installed.insert(
                        channel,
                        Installed {
                            allocation,
                            tuple,
                            reported: Traffic::default(),
                        },
                    );
                }
                OffloadChange::Unbind { channel, .. } => {
                    let Some(inst) = self.installed.remove(&channel) else {
                        continue;
                    };
                    // Read, then remove: a packet the kernel relays on another
                    // CPU between the two is relayed but not counted.
                    let last = m.read(&channel);
                    m.remove(&channel);
                    server.offload_traffic(inst.tuple, inst.allocation, minus(last, inst.reported));
                }
            }
        }
    }

    /// Reads every installed entry's counters and reports what is new.
    pub fn poll<B: RelayBinder>(&mut self, server: &mut Server<B>) {
        if self.installed.is_empty() {
            return;
        }
        let offload = self.offload.clone();
        let m = offload.maps();
        for (channel, inst) in &mut self.installed {
            let now = m.read(channel);
            let delta = minus(now, inst.reported);
            if delta != Traffic::default() {
                inst.reported = now;
                server.offload_traffic(inst.tuple, inst.allocation, delta);
            }
        }
    }

    /// Leaves the fast path while allocations live on (a reload turned
    /// `[offload]` off or changed it): every entry's last counts are read
    /// and reported, then the entry is removed, and the core forgets what it
    /// had installed. Packets relayed from here on take the userspace path.
    pub fn detach<B: RelayBinder>(mut self, server: &mut Server<B>) {
        self.apply(server);
        let offload = self.offload.clone();
        let mut m = offload.maps();
        for (channel, inst) in self.installed.drain() {
            let last = m.read(&channel);
            m.remove(&channel);
            server.offload_traffic(inst.tuple, inst.allocation, minus(last, inst.reported));
        }
        server.set_offload(false);
    }

    /// Removes every entry this shard installed (the shard stops): the last
    /// counts were folded in by `apply` after `close_all`.
    pub fn clear(&mut self) {
        let offload = self.offload.clone();
        let mut m = offload.maps();
        for (channel, _) in self.installed.drain() {
            m.remove(&channel);
        }
    }
}
