//! Prometheus metrics and health endpoints, kept off the data path.
//!
//! Shards never touch a metric. Each counts in plain integers it owns (the core's
//! [`Stats`], and a few driver counters) and, every [`PUBLISH_INTERVAL`] and once
//! at shutdown, copies them into its own [`ShardSlot`]: one uncontended lock per
//! publish, none per packet. A scrape sums the slots and sets the Prometheus
//! series from the sums. Each shard's counters only grow and a slot keeps its last
//! copy after its shard stops, so the sums, and hence the counters, never go
//! backwards.
//!
//! The HTTP side is hyper's HTTP/1 server on a current-thread runtime of its own
//! thread, so a slow or hostile scraper can cost the shards nothing but the copy
//! they already make. Paths: `/metrics`, `/healthz`, `/readyz`; anything else 404.
//! Labels are bounded by construction: method, code, reason, kind, direction and
//! transport each come from a fixed list ([`label_values`]), never from a user
//! name or an address.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::sync::watch;

use super::credentials::LiveCredentials;
use crate::api::{ApiCounters, API_CODES};
use crate::net::connections::ConnClose;
use crate::net::tls::ReloadableCert;
use crate::turn::quota::QuotaTracker;
use crate::turn::server::{
    AuthFailure, DropReason, QuotaKind, RedirectReason, Stats, REQUEST_METHODS, RESPONSE_CODES,
};
use crate::turn::Transport;

/// How often a shard publishes its counters: the staleness a scrape may see.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);
/// Scrapers served at once; more connections are closed at accept.
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What one shard last published.
#[derive(Clone, Debug, Default)]
pub struct ShardSnapshot {
    /// The core's counters.
    pub stats: Stats,
    pub allocations: u64,
    pub permissions: u64,
    pub channels: u64,
    /// Stream client connections open now, and accepted in all, indexed
    /// 0 = TCP, 1 = TLS (counted once its handshake is done).
    pub tcp_active: [u64; 2],
    pub tcp_total: [u64; 2],
    /// Datagrams handed from one allocation's relay to another's of the same
    /// shard without a socket in between.
    pub in_process: u64,
    /// UDP GSO sends, and the datagrams they carried.
    pub gso_sends: u64,
    pub gso_segments: u64,
    /// Datagrams received coalesced in UDP GRO trains.
    pub gro_segments: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: u64,
    /// Stream connections the server closed or refused, by [`ConnClose`].
    pub conn_closed: [u64; ConnClose::COUNT],
}

/// One shard's published counters: written by the shard a few times a second,
/// read by scrapes.
pub type ShardSlot = Arc<Mutex<ShardSnapshot>>;

/// What `/readyz` looks at.
#[derive(Debug)]
pub struct Health {
    /// Set when the server stops taking new work (drain): `/readyz` answers 503
    /// "draining" so that a load balancer moves new clients elsewhere.
    pub draining: AtomicBool,
    shards: usize,
    shards_running: AtomicUsize,
    creds: Arc<LiveCredentials>,
}

impl Health {
    pub fn new(shards: usize, creds: Arc<LiveCredentials>) -> Self {
        Self {
            draining: AtomicBool::new(false),
            shards,
            shards_running: AtomicUsize::new(0),
            creds,
        }
    }

    /// A shard has its listeners registered and runs; the guard says when it
    /// stops, however it stops.
    pub fn shard_running(self: &Arc<Self>) -> ShardRunning {
        self.shards_running.fetch_add(1, Ordering::SeqCst);
        ShardRunning(self.clone())
    }

    /// `Ok` when every shard serves its listeners, the credential store is
    /// reachable and the server is not draining; otherwise why not, in one line.
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::SeqCst) {
            return Err("draining".into());
        }
        let running = self.shards_running.load(Ordering::SeqCst);
        if running < self.shards {
            return Err(format!(
                "listeners not ready: {running} of {} shards running",
                self.shards
            ));
        }
        if !self.creds.is_healthy() {
            return Err("credential store unreachable".into());
        }
        Ok(())
    }
}

/// Held by a running shard; dropping it counts the shard out.
pub struct ShardRunning(Arc<Health>);

impl Drop for ShardRunning {
    fn drop(&mut self) {
        self.0.shards_running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every label value a series can carry, by label name. A test checks that none
/// of them could be a user name or an address; the series below take their
/// labels only from these lists.
pub fn label_values() -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "method",
            REQUEST_METHODS.iter().map(|m| m.to_string()).collect(),
        ),
        (
            "code",
            RESPONSE_CODES
                .iter()
                .chain(API_CODES.iter().filter(|c| !RESPONSE_CODES.contains(c)))
                .map(u16::to_string)
                .chain(["other".to_string()])
                .collect(),
        ),
        (
            "reason",
            DropReason::ALL
                .iter()
                .map(|r| r.name())
                .chain(AuthFailure::ALL.iter().map(|r| r.name()))
                .chain(ConnClose::ALL.iter().map(|r| r.name()))
                .chain(RedirectReason::ALL.iter().map(|r| r.name()))
                .map(String::from)
                .collect(),
        ),
        (
            "kind",
            QuotaKind::ALL.iter().map(|k| k.name().into()).collect(),
        ),
        (
            "direction",
            vec!["client_to_peer".into(), "peer_to_client".into()],
        ),
        (
            "transport",
            Transport::ALL.iter().map(|t| t.name().into()).collect(),
        ),
        ("trigger", vec!["poll".into(), "notify".into()]),
    ]
}

/// The Prometheus series, filled from the shards' slots at each scrape.
pub struct Metrics {
    registry: Registry,
    slots: Vec<ShardSlot>,
    /// Serialises scrapes: each sets counters to the sums by adding the
    /// difference, which two concurrent scrapes would add twice.
    scrape: Mutex<()>,
    requests: IntCounterVec,
    auth_failures: IntCounterVec,
    allocations_active: IntGauge,
    allocations_created: IntCounter,
    permissions_active: IntGauge,
    channels_active: IntGauge,
    relayed_bytes: IntCounterVec,
    relayed_packets: IntCounterVec,
    dropped: IntCounterVec,
    quota: IntCounterVec,
    redirects: IntCounterVec,
    tcp_active: prometheus::IntGaugeVec,
    tcp_total: IntCounterVec,
    in_process: IntCounter,
    gso_sends: IntCounter,
    gso_segments: IntCounter,
    gro_segments: IntCounter,
    tls_handshake_failures: IntCounter,
    offload_active: IntGauge,
    offload_packets: IntCounterVec,
    offload_bytes: IntCounterVec,
    conn_closed: IntCounterVec,
    /// Read at each scrape, when set: what `/readyz` answers, and the served
    /// certificate's expiry.
    health: Option<Arc<Health>>,
    tls_certs: Option<Arc<ReloadableCert>>,
    /// Read at each scrape, when set: users whose byte budget is used up.
    quota_tracker: Option<Arc<QuotaTracker>>,
    budget_exhausted: IntGauge,
    ready: IntGauge,
    draining: IntGauge,
    credential_reloads: IntCounterVec,
    tls_expiry: IntGauge,
    /// The credentials API's answers, when it runs.
    api: Option<Arc<ApiCounters>>,
    api_requests: IntCounterVec,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

/// Moves a counter up to `total`. Never down: the sums only grow.
fn advance(c: &IntCounter, total: u64) {
    let current = c.get();
    if total > current {
        c.inc_by(total - current);
    }
}

fn set_gauge(g: &IntGauge, v: u64) {
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
}

impl Metrics {
    pub fn new(slots: Vec<ShardSlot>) -> prometheus::Result<Self> {
        let r = Registry::new();
        let allocations_created = IntCounter::new(
            "ferroturn_allocations_created_total",
            "Allocations created.",
        )?;
        r.register(Box::new(allocations_created.clone()))?;
        let tcp_active = prometheus::IntGaugeVec::new(
            Opts::new(
                "ferroturn_tcp_connections_active",
                "Client stream connections open now.",
            ),
            &["transport"],
        )?;
        r.register(Box::new(tcp_active.clone()))?;
        let in_process = IntCounter::new(
            "ferroturn_relayed_in_process_packets_total",
            "Packets relayed from one allocation to another of the same shard in-process (client-to-client through this server), also counted in ferroturn_relayed_packets_total both ways.",
        )?;
        r.register(Box::new(in_process.clone()))?;
        let gso_sends = IntCounter::new(
            "ferroturn_udp_gso_sends_total",
            "UDP GSO sends: runs of equal-sized datagrams from one socket to one destination sent as one UDP_SEGMENT message.",
        )?;
        r.register(Box::new(gso_sends.clone()))?;
        let gso_segments = IntCounter::new(
            "ferroturn_udp_gso_segments_total",
            "Datagrams sent inside UDP GSO sends (each still leaves as its own datagram).",
        )?;
        r.register(Box::new(gso_segments.clone()))?;
        let gro_segments = IntCounter::new(
            "ferroturn_udp_gro_segments_total",
            "Datagrams received coalesced in UDP GRO trains, split and handled one by one.",
        )?;
        r.register(Box::new(gro_segments.clone()))?;
        let tls_handshake_failures = IntCounter::new(
            "ferroturn_tls_handshake_failures_total",
            "TLS connections closed because their handshake failed or did not finish within tls.handshake-timeout.",
        )?;
        r.register(Box::new(tls_handshake_failures.clone()))?;
        Ok(Self {
            api: None,
            api_requests: counter_vec(
                &r,
                "ferroturn_api_requests_total",
                "Answers of the credentials API ([api]), by HTTP status code.",
                &["code"],
            )?,
            in_process,
            gso_sends,
            gso_segments,
            gro_segments,
            tls_handshake_failures,
            offload_active: gauge(
                &r,
                "ferroturn_offload_active",
                "1 when the XDP ChannelData fast path ([offload]) is attached, else 0 (off, or it could not start: see the log).",
            )?,
            offload_packets: counter_vec(
                &r,
                "ferroturn_offload_relayed_packets_total",
                "Packets the kernel's fast path relayed ([offload]), by direction; also counted in ferroturn_relayed_packets_total (transport udp).",
                &["direction"],
            )?,
            offload_bytes: counter_vec(
                &r,
                "ferroturn_offload_relayed_bytes_total",
                "Payload bytes the kernel's fast path relayed ([offload]), by direction; also counted in ferroturn_relayed_bytes_total (transport udp).",
                &["direction"],
            )?,
            health: None,
            tls_certs: None,
            quota_tracker: None,
            budget_exhausted: gauge(
                &r,
                "ferroturn_byte_budget_exhausted_users",
                "Users who relayed quota.max-bytes-per-user in the current period (their relaying stops, their Allocates get 486 until the period ends); 0 without byte budgets.",
            )?,
            credential_reloads: counter_vec(
                &r,
                "ferroturn_credential_reloads_total",
                "Credential store snapshots reloaded after a change, by what noticed it: trigger=\"notify\" (a PostgreSQL notification, at once) or \"poll\" (the 500 ms poll: SQLite, or while notifications are down).",
                &["trigger"],
            )?,
            ready: gauge(
                &r,
                "ferroturn_ready",
                "1 when /readyz answers 200 (every shard serving, credential store reachable, not draining), else 0.",
            )?,
            draining: gauge(
                &r,
                "ferroturn_draining",
                "1 while the server drains (stops taking new allocations), else 0.",
            )?,
            tls_expiry: gauge(
                &r,
                "ferroturn_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the served TLS certificate, in unix seconds; 0 without TLS.",
            )?,
            requests: counter_vec(
                &r,
                "ferroturn_requests_total",
                "Responses to STUN/TURN requests, by method and code (200 = success).",
                &["method", "code"],
            )?,
            auth_failures: counter_vec(
                &r,
                "ferroturn_auth_failures_total",
                "Failed long-term credential checks, by reason (all answered alike on the wire).",
                &["reason"],
            )?,
            allocations_active: gauge(&r, "ferroturn_allocations_active", "Allocations now.")?,
            allocations_created,
            permissions_active: gauge(
                &r,
                "ferroturn_permissions_active",
                "Unexpired permissions over all allocations.",
            )?,
            channels_active: gauge(
                &r,
                "ferroturn_channels_active",
                "Unexpired channel bindings over all allocations.",
            )?,
            relayed_bytes: counter_vec(
                &r,
                "ferroturn_relayed_bytes_total",
                "Application payload bytes relayed, by direction and client transport.",
                &["direction", "transport"],
            )?,
            relayed_packets: counter_vec(
                &r,
                "ferroturn_relayed_packets_total",
                "Packets relayed, by direction and client transport.",
                &["direction", "transport"],
            )?,
            dropped: counter_vec(
                &r,
                "ferroturn_dropped_packets_total",
                "Packets dropped without an answer, by reason.",
                &["reason"],
            )?,
            quota: counter_vec(
                &r,
                "ferroturn_quota_rejections_total",
                "Requests refused by a limit, by which limit.",
                &["kind"],
            )?,
            redirects: counter_vec(
                &r,
                "ferroturn_redirects_total",
                "New Allocates answered 300 (Try Alternate) with another server's address, by why: reason=\"drain\" (this server drains) or \"load\" (above a cluster.redirect-above-* threshold).",
                &["reason"],
            )?,
            tcp_active,
            conn_closed: counter_vec(
                &r,
                "ferroturn_connections_closed_total",
                "TCP/TLS client connections the server closed or refused, by reason (connection caps, allocate timeout, idle after the allocation ended, first-message timeout, not STUN).",
                &["reason"],
            )?,
            tcp_total: counter_vec(
                &r,
                "ferroturn_tcp_connections_total",
                "Client stream connections accepted.",
                &["transport"],
            )?,
            registry: r,
            slots,
            scrape: Mutex::new(()),
        })
    }

    /// Sets `ferroturn_ready` and `ferroturn_draining` from `health` at each scrape.
    pub fn with_health(mut self, health: Arc<Health>) -> Self {
        self.health = Some(health);
        self
    }

    /// Sets the certificate expiry gauge from `certs` at each scrape (kept current
    /// across reloads); without TLS it stays 0.
    pub fn with_tls(mut self, certs: Option<Arc<ReloadableCert>>) -> Self {
        self.tls_certs = certs;
        self
    }

    /// Sets `ferroturn_api_requests_total` from `counters` at each scrape.
    pub fn with_api(mut self, counters: Arc<ApiCounters>) -> Self {
        self.api = Some(counters);
        self
    }

    /// Sets the exhausted byte budgets gauge from `quota` at each scrape.
    pub fn with_quota(mut self, quota: Arc<QuotaTracker>) -> Self {
        self.quota_tracker = Some(quota);
        self
    }

    /// Sums the shards' last publications into the series.
    fn update(&self) {
        if let Some(api) = &self.api {
            for (code, n) in api.totals() {
                // Only codes that were answered, as for ferroturn_requests_total.
                if n > 0 {
                    advance(&self.api_requests.with_label_values(&[&code]), n);
                }
            }
        }
        if let Some(q) = &self.quota_tracker {
            let unix = u64::try_from(crate::time::unix_now()).unwrap_or(0);
            set_gauge(&self.budget_exhausted, q.exhausted_users(unix));
        }
        if let Some(h) = &self.health {
            self.ready.set(i64::from(h.readiness().is_ok()));
            self.draining
                .set(i64::from(h.draining.load(Ordering::SeqCst)));
            for (trigger, n) in h.creds.reloads() {
                advance(
                    &self.credential_reloads.with_label_values(&[trigger.name()]),
                    n,
                );
            }
        }
        if let Some(c) = &self.tls_certs {
            self.tls_expiry.set(c.not_after());
        }
        let mut sum = ShardSnapshot::default();
        for slot in &self.slots {
            let s = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
            sum.stats.add(&s.stats);
            sum.allocations += s.allocations;
            sum.permissions += s.permissions;
            sum.channels += s.channels;
            sum.in_process += s.in_process;
            sum.gso_sends += s.gso_sends;
            sum.gso_segments += s.gso_segments;
            sum.gro_segments += s.gro_segments;
            sum.tls_handshake_failures += s.tls_handshake_failures;
            for (sum, n) in sum.conn_closed.iter_mut().zip(s.conn_closed) {
                *sum += n;
            }
            for i in 0..2 {
                sum.tcp_active[i] += s.tcp_active[i];
                sum.tcp_total[i] += s.tcp_total[i];
            }
        }
        let st = &sum.stats;
        for (m, method) in REQUEST_METHODS.iter().enumerate() {
            for (c, &n) in st.requests[m].iter().enumerate() {
                // Only the combinations that happened: 96 always-zero series
                // would drown the ones that matter.
                if n == 0 {
                    continue;
                }
                let code = RESPONSE_CODES
                    .get(c)
                    .map_or_else(|| "other".to_string(), u16::to_string);
                advance(&self.requests.with_label_values(&[*method, &code]), n);
            }
        }
        for r in AuthFailure::ALL {
            advance(
                &self.auth_failures.with_label_values(&[r.name()]),
                st.auth_failures[r as usize],
            );
        }
        for r in DropReason::ALL {
            advance(
                &self.dropped.with_label_values(&[r.name()]),
                st.drops[r as usize],
            );
        }
        for k in QuotaKind::ALL {
            advance(
                &self.quota.with_label_values(&[k.name()]),
                st.quota_rejections[k as usize],
            );
        }
        for r in RedirectReason::ALL {
            advance(
                &self.redirects.with_label_values(&[r.name()]),
                st.redirects[r as usize],
            );
        }
        for t in Transport::ALL {
            let i = t.index();
            // TLS and DTLS may not be served: their series appear once they
            // carry traffic (bytes alone for RFC 6062 streams).
            if matches!(t, Transport::Tls | Transport::Dtls)
                && st.to_peer_packets[i] + st.to_client_packets[i] == 0
                && st.to_peer_bytes[i] + st.to_client_bytes[i] == 0
            {
                continue;
            }
            let name = t.name();
            for (dir, bytes, packets) in [
                ("client_to_peer", st.to_peer_bytes[i], st.to_peer_packets[i]),
                (
                    "peer_to_client",
                    st.to_client_bytes[i],
                    st.to_client_packets[i],
                ),
            ] {
                advance(&self.relayed_bytes.with_label_values(&[dir, name]), bytes);
                advance(
                    &self.relayed_packets.with_label_values(&[dir, name]),
                    packets,
                );
            }
        }
        advance(&self.allocations_created, st.allocations_created);
        set_gauge(&self.allocations_active, sum.allocations);
        set_gauge(&self.permissions_active, sum.permissions);
        set_gauge(&self.channels_active, sum.channels);
        advance(&self.in_process, sum.in_process);
        advance(&self.gso_sends, sum.gso_sends);
        advance(&self.gso_segments, sum.gso_segments);
        advance(&self.gro_segments, sum.gro_segments);
        self.offload_active.set(i64::from(crate::offload::active()));
        for (i, dir) in ["client_to_peer", "peer_to_client"].into_iter().enumerate() {
            advance(
                &self.offload_packets.with_label_values(&[dir]),
                st.offload_packets[i],
            );
            advance(
                &self.offload_bytes.with_label_values(&[dir]),
                st.offload_bytes[i],
            );
        }
        advance(&self.tls_handshake_failures, sum.tls_handshake_failures);
        for r in ConnClose::ALL {
            advance(
                &self.conn_closed.with_label_values(&[r.name()]),
                sum.conn_closed[r as usize],
            );
        }
        for (i, t) in ["tcp", "tls"].into_iter().enumerate() {
            set_gauge(&self.tcp_active.with_label_values(&[t]), sum.tcp_active[i]);
            advance(&self.tcp_total.with_label_values(&[t]), sum.tcp_total[i]);
        }
    }

    /// The current values in the Prometheus text format.
    pub fn render(&self) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.update();
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Answers one request. Only the path matters: the endpoints are read-only.
fn respond(path: &str, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match health.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Serves the endpoints on `listener` (already bound, non-blocking) on a thread
/// of its own until `shutdown` flips to true.
pub fn spawn(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("ferroturn-metrics".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!("metrics listener could not be registered");
                    return;
                };
                super::http::accept_loop(listener, shutdown, MAX_CONNECTIONS, |stream| {
                    let (metrics, health) = (metrics.clone(), health.clone());
                    async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let r = respond(req.uri().path(), &metrics, &health);
                            async move { Ok::<_, Infallible>(r) }
                        });
                        // Malformed requests get hyper's 400 or a closed
                        // connection; nothing here can panic on input.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                })
                .await;
            });
        })
}

/// Binds the metrics listener on the calling thread, so a bad or taken address
/// fails `start` before anything runs.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}"),
        )
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No label value could be a user name or an address: each is one of a fixed
    /// list of lowercase words or a three-digit code, with no ':' '.' or '@'.
    #[test]
    fn label_values_are_bounded_and_never_user_or_address() {
        for (label, values) in label_values() {
            assert!(values.len() <= 32, "{label}: {} values", values.len());
            for v in values {
                assert!(!v.is_empty(), "{label}");
                assert!(
                    v.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        || (v.len() == 3 && v.chars().all(|c| c.is_ascii_digit())),
                    "{label}={v:?} is not a fixed word or code"
                );
                assert!(v.parse::<std::net::IpAddr>().is_err(), "{label}={v:?}");
            }
        }
    }

    /// Every series the collector sets uses label names from `label_values`.
    #[test]
    fn rendered_series_use_only_listed_labels() {
        let mut snap = ShardSnapshot::default();
        snap.stats.requests[1][0] = 2;
        snap.stats.requests[5][crate::turn::server::RESPONSE_CODES.len()] = 1;
        snap.stats.to_peer_bytes[2] = 5;
        let m = Metrics::new(vec![Arc::new(Mutex::new(snap))]).unwrap();
        let out = m.render();
        let allowed: Vec<(&str, Vec<String>)> = label_values();
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let Some((_, rest)) = line.split_once('{') else {
                continue;
            };
            let labels = rest.split_once('}').unwrap().0;
            for pair in labels.split(',') {
                let (k, v) = pair.split_once('=').unwrap();
                let v = v.trim_matches('"');
                let (_, vals) = allowed.iter().find(|(n, _)| *n == k).expect(k);
                assert!(vals.iter().any(|x| x == v), "{k}={v}");
            }
        }
        assert!(out.contains("ferroturn_requests_total{code=\"200\",method=\"allocate\"} 2"));
        assert!(out.contains("ferroturn_requests_total{code=\"other\",method=\"other\"} 1"));
    }
}
