//! The credentials API for apps (`[api]`, off by default): an HTTP(S)
//! listener that mints TURN REST credentials on request, as Twilio's and
//! Cloudflare's TURN services do, so an app's backend (or, with CORS, its
//! browser code) gets an `iceServers` entry without holding the REST secret.
//!
//! * `POST /v1/credentials` `{"name": "...", "ttl": 3600}` → 201 with
//!   `{"iceServers": [...], "ttl": N, "expires": UNIX}`;
//! * `DELETE /v1/credentials/{EXPIRY:NAME}` → 204: the username is revoked in
//!   the store (as `ferroturn credential revoke` does), so running servers
//!   refuse it and end its allocations once they see the store's new generation;
//! * `OPTIONS` on either: the CORS preflight.
//!
//! Requests carry `Authorization: Bearer TOKEN`; tokens live hashed in the
//! credential store ([`tokens`], `ferroturn api-token`) and are read from it on
//! every request, so adding or removing one needs no reload. Each token has a
//! rate limit of its own.
//!
//! Like the metrics endpoint, the API runs on a thread of its own with a
//! current-thread runtime: nothing here touches the shards. It mints with the
//! running server's credentials ([`LiveCredentials::minting_secret`]): the
//! store's newest REST secret, else the first of `auth.secrets`.
//!
//! A reload applies new `urls`, TTL bounds, rate and CORS origins to the next
//! request; `listen` and `tls` need a restart (the socket and the acceptor are
//! made at start).

pub mod handlers;
pub mod tokens;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, OnceCell};

use crate::config::ApiConfig;
use crate::net::tls::ReloadableCert;
use crate::ops::credentials::LiveCredentials;
use crate::store::{Store, StoreError, StoreLocation};

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must finish the TLS handshake within this time.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The status codes the API answers with, in the order of
/// [`ApiCounters`]' slots (a last slot counts any other code). The metrics
/// label `code` takes its values from here.
pub const API_CODES: [u16; 10] = [201, 204, 400, 401, 403, 404, 405, 413, 429, 503];

/// Answers by status code, for `ferroturn_api_requests_total{code}`.
#[derive(Debug, Default)]
pub struct ApiCounters {
    codes: [AtomicU64; API_CODES.len() + 1],
}

impl ApiCounters {
    fn count(&self, code: u16) {
        let i = API_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(API_CODES.len());
        self.codes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(code label, answers)` for every slot: `"other"` for the last.
    pub fn totals(&self) -> Vec<(String, u64)> {
        API_CODES
            .iter()
            .map(u16::to_string)
            .chain(["other".to_owned()])
            .zip(self.codes.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// What the handlers share: the settings a reload replaces, the credentials
/// to mint with, the store, the rate limiter and the counters.
pub struct ApiState {
    config: RwLock<Arc<ApiConfig>>,
    creds: Arc<LiveCredentials>,
    location: StoreLocation,
    /// Opened on the API's own runtime at the first request that needs it (a
    /// failed open is retried by the next one).
    store: OnceCell<Store>,
    limiter: Mutex<tokens::RateLimiter>,
    counters: Arc<ApiCounters>,
}

impl ApiState {
    fn config(&self) -> Arc<ApiConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn store(&self) -> Result<&Store, StoreError> {
        self.store
            .get_or_try_init(|| Store::open_location(self.location.clone()))
            .await
    }
}

/// The running API: its bound address and what a reload changes.
pub struct ApiHandle {
    /// The bound address (port 0 resolved).
    pub addr: SocketAddr,
    /// Whether it serves HTTPS.
    pub tls: bool,
    state: Arc<ApiState>,
    thread: JoinHandle<()>,
}

impl ApiHandle {
    /// Applies a reloaded `[api]`: from the next request on. `listen` and `tls`
    /// are not changed here (see [`crate::ops::reload::restart_needed`]).
    pub fn set_config(&self, config: &ApiConfig) {
        *self.state.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config.clone());
    }

    /// Waits for the API thread, once the shutdown signal was sent.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Binds the API listener on the calling thread, so a bad or taken address
/// fails start-up before anything runs.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for the credentials API (api.listen) on {addr}: {e}"),
        )
    })?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Everything [`spawn`] needs besides the listener.
pub struct ApiParams {
    pub config: ApiConfig,
    pub creds: Arc<LiveCredentials>,
    pub store: StoreLocation,
    pub counters: Arc<ApiCounters>,
    /// The `[tls]` certificate, when `api.tls` is on.
    pub tls: Option<Arc<ReloadableCert>>,
}

/// Serves the API on `listener` (bound, non-blocking) on a thread of its own
/// until `shutdown` flips to true.
pub fn spawn(
    listener: std::net::TcpListener,
    params: ApiParams,
    shutdown: watch::Receiver<bool>,
) -> io::Result<ApiHandle> {
    let addr = listener.local_addr()?;
    let acceptor = match &params.tls {
        Some(certs) => Some(tokio_rustls::TlsAcceptor::from(
            crate::net::tls::server_config(certs.clone())?,
        )),
        None => None,
    };
    let tls = acceptor.is_some();
    let state = Arc::new(ApiState {
        config: RwLock::new(Arc::new(params.config)),
        creds: params.creds,
        location: params.store,
        store: OnceCell::new(),
        limiter: Mutex::new(tokens::RateLimiter::default()),
        counters: params.counters,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let shared = state.clone();
    let thread = std::thread::Builder::new()
        .name("ferroturn-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    tracing::error!("API listener could not be registered");
                    return;
                };
                crate::ops::http::accept_loop(listener, shutdown, MAX_CONNECTIONS, |stream| {
                    let (state, acceptor) = (shared.clone(), acceptor.clone());
                    async move {
                        match acceptor {
                            Some(acceptor) => {
                                let handshake = tokio::time::timeout(
                                    TLS_HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                )
                                .await;
                                if let Ok(Ok(stream)) = handshake {
                                    serve_connection(stream, state).await;
                                }
                            }
                            None => serve_connection(stream, state).await,
                        }
                    }
                })
                .await;
                if let Some(store) = shared.store.get() {
                    store.close().await;
                }
            });
        })?;
    Ok(ApiHandle {
        addr,
        tls,
        state,
        thread,
    })
}

/// Serves HTTP/1 requests on one connection (plain or TLS).
async fn serve_connection<S>(stream: S, state: Arc<ApiState>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move {
            let response = handlers::handle(&state, req).await;
            state.counters.count(response.status().as_u16());
            Ok::<_, Infallible>(response)
        }
    });
    // Malformed requests get hyper's 400 or a closed connection; nothing
    // here can panic on input.
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
