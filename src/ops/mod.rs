//! What runs beside the data path: the credentials the shards check against and
//! the poller that keeps them in step with the store (and counts byte budgets
//! there), usage records, flood warnings, the metrics endpoint, and the main
//! thread of `ferroturn serve` (signals, the admin socket, reloads, the drain).
//!
//! The tokio drivers of the data path itself live in [`crate::net`]; nothing
//! here runs per packet.
#![forbid(unsafe_code)]

pub mod admin_socket;
pub mod budget_sync;
pub mod cluster;
pub mod control;
pub mod credentials;
pub mod flood;
pub mod http;
pub mod metrics;
pub mod reload;
pub mod store_sync;
pub mod usage;

use std::io;
use std::time::Duration;

use crate::net::{start, NetOptions};

/// How long SIGTERM/SIGINT may take: shards close every allocation (writing
/// usage records) and stream writers get to flush; a shard that hangs past
/// this does not keep the process alive.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs the server for `config` until SIGINT or SIGTERM (or the end of a
/// drain), then shuts down cleanly: every shard closes its allocations and
/// relay sockets before the call returns. SIGHUP and `ferroturn reload` re-read
/// the configuration through `reload`; SIGUSR1 and `ferroturn drain` drain.
pub fn serve(
    config: crate::config::Config,
    reload: impl Fn() -> Result<crate::config::Config, crate::config::ConfigError>,
) -> io::Result<()> {
    // Signal handlers go in first, on this thread's runtime, which is the only one
    // with a signal driver: shard runtimes have I/O and time only, so none of them
    // can swallow the wake-up.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut signals = rt.block_on(async { control::Signals::new() })?;
    // The admin socket before the listeners: a second server pointed at the
    // same socket fails before it takes any port.
    let admin = rt.block_on(async { admin_socket::bind(config.admin.socket.as_deref()) })?;
    let running = start(NetOptions::from_config(&config))?;
    for a in &running.udp {
        tracing::info!(transport = "udp", address = %a, "listening");
    }
    for a in &running.tcp {
        tracing::info!(transport = "tcp", address = %a, "listening");
    }
    if let Some(n) = &running.nat_discovery {
        for a in n.alternates() {
            tracing::info!(
                transport = "udp",
                address = %a,
                "listening (RFC 5780 alternate address, Binding only)"
            );
        }
    }
    if let Some(a) = running.metrics {
        tracing::info!(address = %a, "metrics on http://{a}/metrics");
    }
    for a in &running.tls {
        tracing::info!(transport = "tls", address = %a, "listening");
    }
    for a in &running.dtls {
        tracing::info!(transport = "dtls", address = %a, "listening");
    }
    if let Some(api) = &running.api {
        let (a, scheme) = (api.addr, if api.tls { "https" } else { "http" });
        tracing::info!(address = %a, "credentials API on {scheme}://{a}/v1/credentials");
    }
    let stop = running.stopper();
    let mut ctl = control::Control::new(running, config, reload);
    let why = rt.block_on(ctl.run(&mut signals, admin));
    tracing::info!(reason = why, "shutting down");
    let _ = stop.send(true);
    // Bounded: past the grace period the process exits without waiting.
    std::thread::Builder::new()
        .name("ferroturn-stop-grace".into())
        .spawn(|| {
            std::thread::sleep(STOP_GRACE);
            tracing::error!(
                seconds = STOP_GRACE.as_secs(),
                "shards did not stop within the grace period: exiting"
            );
            std::process::exit(1);
        })?;
    ctl.into_running().join()
}
