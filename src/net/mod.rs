//! The tokio drivers around the sans-IO core: listeners, relay sockets, shards.
//!
//! [`start`] binds every socket up front, on the calling thread, so that a bad
//! address fails before anything runs and port 0 resolves to one port shared by
//! UDP and TCP and by every shard. It then starts one shard thread per core
//! ([`shard`]); each owns its sockets and its core.

pub mod connections;
pub mod mmsg;
pub mod proxy_protocol;
pub mod relay;
pub mod shard;
pub mod sockets;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot, watch};

use crate::ops::cluster::{Registry, RegistryParts};
use crate::ops::credentials::{self, LiveCredentials};
use crate::ops::metrics::{Health, Metrics, ShardSlot};
use crate::ops::store_sync;
use crate::ops::usage::UsageLog;
use crate::turn::auth::NonceKey;
use crate::turn::cluster::ClusterView;
use crate::turn::live::LiveRelayPorts;
use crate::turn::quota::QuotaTracker;
use crate::turn::reservations::Reservations;
use crate::turn::server::NatDiscovery;
use crate::turn::server::{Drain, KillFilter, Session};
use crate::turn::source_limit::{SourceLimiter, SourceRate};
use crate::turn::Transport;
use crate::turn::{ServerConfig, Shared};
use relay::PortBudget;
use shard::{ShardCommand, ShardParams, ShardSockets};

/// Everything the network layer needs to run.
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Addresses to listen on, UDP and TCP on each.
    pub listen: Vec<SocketAddr>,
    /// Shards; 0 = one per CPU core.
    pub threads: usize,
    pub core: ServerConfig,
    pub users: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub max_allocations_per_user: u32,
    /// Allocations per client address (IPv6: per /64); 0 = unlimited.
    pub max_allocations_per_ip: u32,
    pub max_allocations: u32,
    pub max_relay_ports: u32,
    /// The credential store, if any: loaded before the listeners start, then
    /// polled for changes.
    pub store: Option<crate::store::StoreLocation>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None` = nowhere.
    pub metrics: Option<SocketAddr>,
    /// TURN over TLS, if configured.
    pub tls: Option<crate::config::TlsConfig>,
    /// Where usage records go, if anywhere.
    pub usage: Option<crate::config::UsageTarget>,
    /// Limits on TCP/TLS client connections.
    pub connections: crate::config::ConnectionsConfig,
    /// The credentials API, when `api.listen` is set (it needs `store`).
    pub api: Option<crate::config::ApiConfig>,
    /// The node registry (with a PostgreSQL `store`) and redirect by load.
    pub cluster: crate::config::ClusterConfig,
    /// RFC 5780 NAT behaviour discovery (`server.nat-discovery`): the primary
    /// address is `listen[0]`; [`start`] binds the three alternate UDP
    /// listeners and puts the addresses in `core.nat_discovery`.
    pub nat_discovery: Option<crate::config::NatDiscoveryConfig>,
    /// The in-kernel ChannelData fast path (`[offload]`; off by default).
    pub offload: crate::config::OffloadConfig,
}

/// A running server.
pub struct Running {
    /// The UDP, TCP and TLS addresses actually bound (port 0 resolved).
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// The four RFC 5780 listeners as bound, when `server.nat-discovery` is on
    /// (`udp[0]` is the primary one; the other three are not in `udp`).
    pub nat_discovery: Option<NatDiscovery>,
    /// The DTLS (UDP) addresses actually bound.
    pub dtls: Vec<SocketAddr>,
    /// The TLS certificate, reloadable (SIGHUP in `serve`).
    pub tls_certs: Option<Arc<tls::ReloadableCert>>,
    /// The credentials the shards check against (a store poller replaces its
    /// snapshot).
    pub credentials: Arc<LiveCredentials>,
    /// Tells the shards that `credentials` changed (the new generation), so that
    /// they end allocations whose credential is gone.
    pub credentials_changed: watch::Sender<i64>,
    /// The metrics endpoint's bound address (port 0 resolved), if it is on.
    pub metrics: Option<SocketAddr>,
    /// The credentials API, if it is on: its bound address, and where a
    /// reload puts its new settings.
    pub api: Option<crate::api::ApiHandle>,
    /// What `/readyz` reports; set `draining` to make it answer 503.
    pub health: Arc<Health>,
    /// Where finished allocations are recorded (a reload reopens it).
    pub usage: Arc<UsageLog>,
    /// The core configuration the shards started with, own addresses included:
    /// a reload derives the next one from it.
    pub(crate) core: Arc<ServerConfig>,
    pub(crate) quota: Arc<QuotaTracker>,
    pub(crate) budget: Arc<PortBudget>,
    pub(crate) connections: Arc<connections::ConnLimits>,
    /// The other nodes and this node's redirect threshold (`[cluster]`).
    pub(crate) cluster: Arc<ClusterView>,
    commands: Vec<mpsc::UnboundedSender<ShardCommand>>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    poller: Option<JoinHandle<()>>,
    metrics_thread: Option<JoinHandle<()>>,
}

impl Running {
    pub(crate) fn broadcast(&self, cmd: impl Fn() -> ShardCommand) {
        for c in &self.commands {
            let _ = c.send(cmd());
        }
    }

    /// A reload changed `[offload]`: every shard leaves the running program
    /// (their entries' last counts folded into the allocations, which go on
    /// relaying in userspace), the program detaches when the last shard let
    /// go, and then `cfg`'s program, if enabled, is loaded, attached and
    /// handed to the shards, which install their live channels in it. Waits
    /// up to 5 s per shard for the first step: attaching while the old
    /// program is still on an interface would fail.
    pub(crate) fn switch_offload(&self, cfg: &crate::config::OffloadConfig) {
        let mut left = Vec::new();
        for c in &self.commands {
            let (tx, rx) = std::sync::mpsc::channel();
            if c.send(ShardCommand::Offload(None, Some(tx))).is_ok() {
                left.push(rx);
            }
        }
        let all_left = left
            .iter()
            .all(|rx| rx.recv_timeout(std::time::Duration::from_secs(5)).is_ok());
        if crate::offload::active() {
            if all_left {
                tracing::warn!("offload: the previous XDP program is still attached");
            } else {
                tracing::warn!("offload: a shard did not leave the fast path within 5 s");
            }
            return;
        }
        if let Some(o) = start_offload(cfg) {
            self.broadcast(|| ShardCommand::Offload(Some(o.clone()), None));
        } else if !cfg.enabled {
            tracing::info!("offload: XDP fast path off, relaying in userspace only");
        }
    }

    /// Every live allocation, from every shard.
    pub async fn sessions(&self) -> Vec<Session> {
        let mut all = Vec::new();
        for c in &self.commands {
            let (tx, rx) = oneshot::channel();
            if c.send(ShardCommand::Sessions(tx)).is_ok() {
                all.extend(rx.await.unwrap_or_default());
            }
        }
        all.sort_by_key(|s| s.allocation.id);
        all
    }

    /// Ends the allocations `filter` selects, on every shard; returns how many.
    pub async fn kill(&self, filter: KillFilter) -> usize {
        let mut n = 0;
        for c in &self.commands {
            let (tx, rx) = oneshot::channel();
            if c.send(ShardCommand::Kill(filter.clone(), tx)).is_ok() {
                n += rx.await.unwrap_or(0);
            }
        }
        n
    }

    /// Starts or stops draining: new Allocates are refused (403) or
    /// redirected (300), and `/readyz` answers 503 while draining.
    pub fn set_drain(&self, drain: Option<Drain>) {
        self.health
            .draining
            .store(drain.is_some(), std::sync::atomic::Ordering::SeqCst);
        self.broadcast(|| ShardCommand::Drain(drain.clone()));
    }

    /// Allocations held now, over all shards.
    pub fn allocations(&self) -> u32 {
        self.quota.total()
    }

    /// Asks every shard to stop, and waits for them.
    pub fn stop(self) -> io::Result<()> {
        let _ = self.shutdown.send(true);
        self.join()
    }

    /// A handle that can stop the server from elsewhere (a signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> io::Result<()> {
        let mut result = Ok(());
        if let Some(p) = self.poller {
            let _ = p.join();
        }
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a shard thread panicked")),
            }
        }
        // After the shards: their final publication is in the slots by now.
        if let Some(m) = self.metrics_thread {
            let _ = m.join();
        }
        if let Some(api) = self.api {
            api.join();
        }
        result
    }
}

/// Binds UDP and TCP for `addr` on `shards` sockets each. With port 0, one port is
/// chosen for UDP, TCP and every shard (retrying when TCP finds it taken).
///
/// SO_REUSEPORT would also let a second ferroturn (or anything else of the same
/// user) bind the same address and silently take a share of the clients. So the
/// address is first probed with sockets that do not set it: those fail with
/// "address in use" when anything holds the port, and are closed again before the
/// shard sockets are bound.
fn bind_listen(
    addr: SocketAddr,
    shards: usize,
) -> io::Result<(Vec<std::net::UdpSocket>, Vec<std::net::TcpListener>)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let bound = (|| {
            let probe_udp = sockets::exclusive_udp(addr)?;
            let concrete = SocketAddr::new(
                addr.ip(),
                probe_udp.local_addr()?.as_socket().map_or(0, |a| a.port()),
            );
            let probe_tcp = sockets::exclusive_tcp(concrete)?;
            drop((probe_udp, probe_tcp));
            let udp = (0..shards)
                .map(|_| sockets::udp_listener(concrete))
                .collect::<io::Result<Vec<_>>>()?;
            let tcp = (0..shards)
                .map(|_| sockets::tcp_listener(concrete))
                .collect::<io::Result<Vec<_>>>()?;
            Ok((udp, tcp))
        })();
        match bound {
            Ok(b) => return Ok(b),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not bind")))
}

/// Binds `shards` TCP listeners on `addr` (TLS), probing first without
/// SO_REUSEPORT as [`bind_listen`] does; port 0 resolves to one port for all.
fn bind_tcp_only(addr: SocketAddr, shards: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let probe = sockets::exclusive_tcp(addr)?;
    probe.listen(1)?;
    let port = probe.local_addr()?.as_socket().map_or(0, |a| a.port());
    let concrete = SocketAddr::new(addr.ip(), port);
    drop(probe);
    (0..shards)
        .map(|_| sockets::tcp_listener(concrete))
        .collect()
}

/// RFC 5780: binds the three alternate UDP listeners (A1:P2, A2:P1, A2:P2) on
/// `shards` sockets each, beside `primary` (A1:P1, `listen[0]` as bound).
/// P2 is `other-port`, else P1 + 1, else (P1 chosen by the system) a port
/// found free, tried up to 16 times. Each address is probed without
/// SO_REUSEPORT first, as in [`bind_listen`].
fn bind_nat_discovery(
    n: &crate::config::NatDiscoveryConfig,
    primary: SocketAddr,
    shards: usize,
) -> io::Result<(NatDiscovery, Vec<Vec<std::net::UdpSocket>>)> {
    let choose = n.other_port == 0 && n.primary.port() == 0;
    let attempts = if choose { 16 } else { 1 };
    let mut last_err = None;
    for _ in 0..attempts {
        let bound = (|| {
            let p2 = match n.other_port {
                0 if choose => {
                    let probe = sockets::exclusive_udp(SocketAddr::new(primary.ip(), 0))?;
                    probe.local_addr()?.as_socket().map_or(0, |a| a.port())
                }
                0 => primary.port().wrapping_add(1),
                p => p,
            };
            let nat = NatDiscovery {
                ips: [primary.ip(), n.other_ip],
                ports: [primary.port(), p2],
            };
            let probes = nat
                .alternates()
                .iter()
                .map(|a| sockets::exclusive_udp(*a))
                .collect::<io::Result<Vec<_>>>()?;
            drop(probes);
            let sockets = nat
                .alternates()
                .iter()
                .map(|a| {
                    (0..shards)
                        .map(|_| sockets::udp_listener(*a))
                        .collect::<io::Result<Vec<_>>>()
                })
                .collect::<io::Result<Vec<_>>>()?;
            Ok((nat, sockets))
        })();
        match bound {
            Ok(b) => return Ok(b),
            Err(e) => last_err = Some(e),
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::other("could not bind")))
}

/// Binds `shards` UDP sockets on `addr` (DTLS), probing first without
/// SO_REUSEPORT as [`bind_listen`] does; port 0 resolves to one port for all.
fn bind_udp_only(addr: SocketAddr, shards: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let probe = sockets::exclusive_udp(addr)?;
    let port = probe.local_addr()?.as_socket().map_or(0, |a| a.port());
    let concrete = SocketAddr::new(addr.ip(), port);
    drop(probe);
    (0..shards)
        .map(|_| sockets::udp_listener(concrete))
        .collect()
}

/// Binds every listener and starts the shards.
pub fn start(opts: NetOptions) -> io::Result<Running> {
    let shards = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut per_shard: Vec<ShardSockets> = (0..shards)
        .map(|_| ShardSockets {
            udp: Vec::new(),
            tcp: Vec::new(),
            tls: Vec::new(),
            dtls: Vec::new(),
        })
        .collect();
    let (mut udp_addrs, mut tcp_addrs) = (Vec::new(), Vec::new());
    for addr in &opts.listen {
        let (udp, tcp) = bind_listen(*addr, shards)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        udp_addrs.push(udp[0].local_addr()?);
        tcp_addrs.push(tcp[0].local_addr()?);
        for (i, (u, t)) in udp.into_iter().zip(tcp).enumerate() {
            per_shard[i].udp.push(u);
            per_shard[i].tcp.push(t);
        }
    }

    let nat_discovery = match &opts.nat_discovery {
        Some(n) => {
            let (nat, sockets) = bind_nat_discovery(n, udp_addrs[0], shards).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot listen on the RFC 5780 alternate addresses (server.other-address {}, server.other-port {}): {e}",
                        n.other_ip, n.other_port
                    ),
                )
            })?;
            for per_addr in sockets {
                for (i, u) in per_addr.into_iter().enumerate() {
                    per_shard[i].udp.push(u);
                }
            }
            Some(nat)
        }
        None => None,
    };

    let metrics_listener = opts.metrics.map(crate::ops::metrics::bind).transpose()?;
    let metrics_addr = metrics_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;
    let api_listener = match opts.api.as_ref().and_then(|a| a.listen) {
        Some(addr) if opts.store.is_none() => {
            return Err(io::Error::other(format!(
                "the credentials API on {addr} needs a credential store (store.url) for its tokens"
            )))
        }
        Some(addr) => Some(crate::api::bind(addr)?),
        None => None,
    };
    let api_addr = api_listener
        .as_ref()
        .map(std::net::TcpListener::local_addr)
        .transpose()?;

    // TLS: the configuration first (a bad certificate or key fails here), then one
    // TCP listener per shard on each TLS address.
    let tls_certs = match &opts.tls {
        Some(t) => Some(tls::ReloadableCert::load_for(
            &t.cert,
            &t.key,
            !t.dtls_listen.is_empty(),
        )?),
        None => None,
    };
    let tls_params = match (&opts.tls, &tls_certs) {
        (Some(t), Some(certs)) => Some(shard::TlsParams {
            acceptor: tokio_rustls::TlsAcceptor::from(tls::turn_server_config(certs.clone())?),
            handshake_timeout: t.handshake_timeout,
            shared: t.shared,
        }),
        _ => None,
    };
    // DTLS: the same certificate (new sessions take the current one), one UDP
    // socket per shard on each DTLS address.
    let dtls_params = match (&opts.tls, &tls_certs) {
        (Some(t), Some(certs)) if !t.dtls_listen.is_empty() => Some(shard::DtlsParams {
            certs: certs.clone(),
            handshake_timeout: t.handshake_timeout,
        }),
        _ => None,
    };
    let mut dtls_addrs = Vec::new();
    for addr in opts.tls.iter().flat_map(|t| t.dtls_listen.iter()) {
        let sockets = bind_udp_only(*addr, shards).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen (DTLS) on {addr}: {e}"))
        })?;
        dtls_addrs.push(sockets[0].local_addr()?);
        for (i, s) in sockets.into_iter().enumerate() {
            per_shard[i].dtls.push(s);
        }
    }
    let mut tls_addrs = Vec::new();
    for addr in opts.tls.iter().flat_map(|t| t.listen.iter()) {
        let listeners = bind_tcp_only(*addr, shards)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen (TLS) on {addr}: {e}")))?;
        tls_addrs.push(listeners[0].local_addr()?);
        for (i, l) in listeners.into_iter().enumerate() {
            per_shard[i].tls.push(l);
        }
    }

    let mut core = opts.core.clone();
    // The STUN-only listeners, named in the options as configured (port 0
    // included), become the addresses actually bound, UDP and TCP.
    core.stun_only_listeners = opts
        .listen
        .iter()
        .enumerate()
        .filter(|(_, a)| opts.core.stun_only_listeners.iter().any(|(_, s)| s == *a))
        .flat_map(|(i, _)| {
            [
                (Transport::Udp, udp_addrs[i]),
                (Transport::Tcp, tcp_addrs[i]),
            ]
        })
        .collect();
    // The three alternate RFC 5780 listeners answer Binding only.
    core.nat_discovery = nat_discovery;
    if let Some(n) = &nat_discovery {
        core.stun_only_listeners
            .extend(n.alternates().map(|a| (Transport::Udp, a)));
        core.own_services.extend(n.alternates());
    }
    core.own_services.extend(
        udp_addrs
            .iter()
            .chain(&tcp_addrs)
            .chain(&tls_addrs)
            .chain(&dtls_addrs)
            .copied(),
    );
    // The metrics endpoint and the API are our services too: never a relay target.
    core.own_services.extend(metrics_addr);
    core.own_services.extend(api_addr);
    core.local_ips = sockets::local_ips();
    let cfg = Arc::new(core);
    let nonces = NonceKey::generate()
        .map_err(|e| io::Error::other(format!("no OS randomness for the nonce key: {e}")))?;
    let creds = Arc::new(LiveCredentials::new(&cfg.realm, &opts.users, &opts.secrets));
    if let Some(location) = &opts.store {
        store_sync::initial_load(location, &creds)?;
    }
    let usage = UsageLog::open(opts.usage.as_ref())?;
    let quota = Arc::new(
        QuotaTracker::new(opts.max_allocations_per_user, opts.max_allocations)
            .with_per_ip(opts.max_allocations_per_ip),
    );
    quota.set_byte_budget(cfg.max_bytes_per_user, cfg.bytes_period.as_secs());
    let cluster = Arc::new(ClusterView::default());
    cluster.set_max_allocations(opts.cluster.redirect_above_allocations);
    let shared = Shared {
        creds: credentials::shared(&creds),
        nonces: Arc::new(nonces),
        quota: quota.clone(),
        live: Arc::new(LiveRelayPorts::default()),
        reservations: Arc::new(Reservations::default()),
        source_limits: Arc::new(SourceLimiter::new(rand::random())),
        cluster: cluster.clone(),
        tcp: Default::default(),
    };
    let conn_limits = Arc::new(connections::ConnLimits::new(&opts.connections));
    let budget = Arc::new(PortBudget {
        max: std::sync::atomic::AtomicU32::new(opts.max_relay_ports),
        ..Default::default()
    });

    let (tx, rx) = watch::channel(false);
    let (generation_tx, generation_rx) = watch::channel(creds.generation());
    let health = Arc::new(Health::new(shards, creds.clone()));
    let slots: Vec<ShardSlot> = (0..shards).map(|_| ShardSlot::default()).collect();
    let api_counters = Arc::new(crate::api::ApiCounters::default());
    let metrics_thread = match metrics_listener {
        Some(l) => {
            let m = Metrics::new(slots.clone())
                .map_err(|e| io::Error::other(format!("metrics registry: {e}")))?
                .with_health(health.clone())
                .with_tls(tls_certs.clone())
                .with_api(api_counters.clone())
                .with_quota(quota.clone());
            Some(crate::ops::metrics::spawn(
                l,
                Arc::new(m),
                health.clone(),
                rx.clone(),
            )?)
        }
        None => None,
    };
    let offload = start_offload(&opts.offload);
    let mut threads = Vec::new();
    let mut commands = Vec::new();
    for ((index, sockets), slot) in per_shard.into_iter().enumerate().zip(slots.clone()) {
        let (command_tx, command_rx) = mpsc::unbounded_channel();
        commands.push(command_tx);
        let params = ShardParams {
            shards,
            commands: command_rx,
            usage: usage.clone(),
            slot,
            health: health.clone(),
            index,
            cfg: cfg.clone(),
            shared: shared.clone(),
            budget: budget.clone(),
            conn_limits: conn_limits.clone(),
            sockets,
            shutdown: rx.clone(),
            credentials: generation_rx.clone(),
            tls: tls_params.clone(),
            dtls: dtls_params.clone(),
            offload: offload.clone(),
        };
        let t = std::thread::Builder::new()
            .name(format!("ferroturn-shard-{index}"))
            .spawn(move || shard::run(params))?;
        threads.push(t);
    }
    let api = match (api_listener, &opts.api, &opts.store) {
        (Some(l), Some(config), Some(location)) => {
            let tls = match (config.tls, &tls_certs) {
                (true, Some(certs)) => Some(certs.clone()),
                (true, None) => {
                    return Err(io::Error::other(
                        "api.tls needs the [tls] certificate (tls.cert and tls.key)",
                    ))
                }
                (false, _) => None,
            };
            Some(crate::api::spawn(
                l,
                crate::api::ApiParams {
                    config: config.clone(),
                    creds: creds.clone(),
                    store: location.clone(),
                    counters: api_counters,
                    tls,
                },
                rx.clone(),
            )?)
        }
        _ => None,
    };
    let poller = match &opts.store {
        Some(location) => Some(store_sync::spawn(
            location.clone(),
            creds.clone(),
            quota.clone(),
            matches!(location, crate::store::StoreLocation::Postgres(_)).then(|| {
                Registry::new(RegistryParts {
                    node_id: opts.cluster.node_id.clone(),
                    addresses: advertised(&cfg, &udp_addrs, &tcp_addrs, &tls_addrs),
                    timeout: opts.cluster.node_timeout,
                    max_bps: opts.cluster.redirect_above_bps,
                    view: cluster.clone(),
                    health: health.clone(),
                    quota: quota.clone(),
                    slots: slots.clone(),
                })
            }),
            generation_tx.clone(),
            rx.clone(),
        )?),
        None => None,
    };
    Ok(Running {
        nat_discovery,
        usage,
        core: cfg,
        quota,
        budget,
        connections: conn_limits,
        cluster,
        commands,
        tls_certs,
        poller,
        udp: udp_addrs,
        tcp: tcp_addrs,
        tls: tls_addrs,
        dtls: dtls_addrs,
        credentials: creds,
        credentials_changed: generation_tx,
        metrics: metrics_addr,
        api,
        health,
        shutdown: tx,
        threads,
        metrics_thread,
    })
}

impl NetOptions {
    /// The network options for a validated configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        let core = ServerConfig {
            realm: config.realm.clone(),
            software: config.software.clone(),
            default_lifetime: config.relay.default_lifetime,
            max_lifetime: config.relay.max_lifetime,
            permission_lifetime: config.relay.permission_lifetime,
            channel_lifetime: config.relay.channel_lifetime,
            nonce_lifetime: config.auth.nonce_lifetime,
            max_permissions_per_allocation: config.quota.max_permissions_per_allocation,
            max_channels_per_allocation: config.quota.max_channels_per_allocation,
            max_bps_per_allocation: config.quota.max_bps_per_allocation,
            max_bytes_per_user: config.quota.max_bytes_per_user,
            bytes_period: config.quota.bytes_period,
            max_message_size: config.max_message_size,
            unauthenticated_rate: SourceRate {
                per_second: config.rate_limit.unauthenticated_per_second,
                burst: config.rate_limit.unauthenticated_burst,
            },
            relay_ips: config.relay.relay_ips.clone(),
            external_ips: config
                .relay
                .external_ips
                .iter()
                .map(|e| (e.public, e.private))
                .collect(),
            relay_ports: config.relay.port_min..=config.relay.port_max,
            own_services: Vec::new(),
            local_ips: Vec::new(),
            allow_peers: config.peers.allow.clone(),
            deny_peers: config.peers.deny.clone(),
            strict_expiry: config.auth.strict_expiry,
            stun_only: config.stun_only,
            tcp_allocations: config.relay.tcp_allocations,
            tcp_connection_timeout: config.relay.tcp_connection_timeout,
            max_tcp_connections_per_allocation: config.quota.max_tcp_connections_per_allocation,
            // As configured; `start` puts the addresses it bound in their place.
            stun_only_listeners: config
                .stun_only_listen
                .iter()
                .flat_map(|&a| [(Transport::Udp, a), (Transport::Tcp, a)])
                .collect(),
            alternate_servers: config.drain.alternate_servers.clone(),
            // `start` binds the listeners and fills it in.
            nat_discovery: None,
        };
        Self {
            listen: config.listen.clone(),
            threads: config.threads,
            core,
            users: config.auth.users.clone(),
            secrets: config.auth.secrets.clone(),
            max_allocations_per_user: config.quota.max_allocations_per_user,
            max_allocations_per_ip: config.quota.max_allocations_per_ip,
            max_allocations: config.quota.max_allocations,
            max_relay_ports: config.quota.max_relay_ports,
            store: config.store.url.clone(),
            metrics: config.metrics.listen,
            tls: config.tls.clone(),
            usage: config.usage.target.clone(),
            connections: config.connections.clone(),
            api: config.api.listen.map(|_| config.api.clone()),
            cluster: config.cluster.clone(),
            nat_discovery: config.nat_discovery,
            offload: config.offload.clone(),
        }
    }
}

/// The addresses this node serves clients on, as they reach it, for the node
/// registry: each bound listener, with a wildcard or private IP replaced by
/// the public IP of its family from `relay.external-ips` when there is one;
/// a wildcard without one stands for the host's first address of its family
/// (not loopback), and is left out when there is none.
fn advertised(
    cfg: &ServerConfig,
    udp: &[SocketAddr],
    tcp: &[SocketAddr],
    tls: &[SocketAddr],
) -> Vec<(Transport, SocketAddr)> {
    let lists = [
        (Transport::Udp, udp),
        (Transport::Tcp, tcp),
        (Transport::Tls, tls),
    ];
    lists
        .into_iter()
        .flat_map(|(t, addrs)| addrs.iter().map(move |a| (t, *a)))
        .filter_map(|(t, a)| {
            let family = a.is_ipv6();
            let public = cfg
                .external_ips
                .iter()
                .find(|(p, private)| {
                    p.is_ipv6() == family
                        && private.is_none_or(|pr| pr == a.ip() || a.ip().is_unspecified())
                })
                .map(|(p, _)| *p);
            let ip = match public {
                Some(p) => p,
                None if a.ip().is_unspecified() => *cfg
                    .local_ips
                    .iter()
                    .find(|ip| ip.is_ipv6() == family && !ip.is_loopback())?,
                None => a.ip(),
            };
            Some((t, SocketAddr::new(ip, a.port())))
        })
        .collect()
}

/// Loads and attaches the XDP fast path when `[offload]` asks for it. Any
/// failure is one warning and userspace relaying, as without `[offload]`.
fn start_offload(cfg: &crate::config::OffloadConfig) -> Option<Arc<crate::offload::Offload>> {
    if !cfg.enabled {
        return None;
    }
    match crate::offload::Offload::start(cfg) {
        Ok(o) => {
            tracing::info!(
                mode = o.mode,
                interfaces = ?cfg.interfaces,
                "offload: XDP ChannelData fast path attached"
            );
            Some(o)
        }
        Err(e) => {
            tracing::warn!("offload: not available, relaying in userspace only: {e}");
            None
        }
    }
}
