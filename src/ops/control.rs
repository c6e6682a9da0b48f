//! The main thread of `ferroturn serve`: signals, the admin socket's requests,
//! reloads and the drain, all on one small runtime while the shards relay.
//!
//! | signal  | effect |
//! |---------|--------|
//! | SIGHUP  | reload the configuration (and reopen the usage file) |
//! | SIGUSR1 | drain with `drain.deadline` (`ferroturn drain --cancel` ends it) |
//! | SIGTERM, SIGINT | stop: close every allocation, exit within a grace period |

use std::io;
use std::time::Duration;

use serde_json::json;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admin_socket::{self, AdminSocket, Call, Request};
use crate::config::{Config, ConfigError};
use crate::net::Running;
use crate::turn::server::{Drain, KillFilter};

/// How often a drain checks whether allocations are left.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// The signals `serve` reacts to.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    usr1: Signal,
}

impl Signals {
    /// Installs the handlers; call inside the main runtime.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr1: signal(SignalKind::user_defined1())?,
        })
    }
}

/// The running server and what the main thread knows about it.
pub struct Control<F> {
    running: Running,
    config: Config,
    reload: F,
    /// When the drain in progress must end, if one is.
    drain_deadline: Option<Instant>,
}

impl<F> Control<F>
where
    F: Fn() -> Result<Config, ConfigError>,
{
    pub fn new(running: Running, config: Config, reload: F) -> Self {
        Self {
            running,
            config,
            reload,
            drain_deadline: None,
        }
    }

    pub fn into_running(self) -> Running {
        self.running
    }

    /// Serves signals and admin requests until it is time to stop; returns why.
    pub async fn run(&mut self, signals: &mut Signals, admin: Option<AdminSocket>) -> &'static str {
        let (calls_tx, mut calls) = mpsc::channel::<Call>(16);
        let admin_task = admin.map(|socket| {
            tokio::spawn(async move {
                admin_socket::serve(&socket, calls_tx).await;
            })
        });
        let mut tick = tokio::time::interval(DRAIN_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let why = loop {
            tokio::select! {
                _ = signals.term.recv() => break "SIGTERM",
                _ = signals.int.recv() => break "SIGINT",
                _ = signals.hup.recv() => {
                    let _ = self.reload_now("SIGHUP");
                }
                _ = signals.usr1.recv() => self.start_drain(None, "SIGUSR1"),
                Some((request, answer)) = calls.recv() => {
                    let a = self.handle(request).await;
                    let _ = answer.send(a);
                }
                _ = tick.tick(), if self.drain_deadline.is_some() => {
                    let left = self.running.allocations();
                    if left == 0 {
                        tracing::info!("drain: no allocation left");
                        break "drained";
                    }
                    if self.drain_deadline.is_some_and(|d| Instant::now() >= d) {
                        tracing::warn!(allocations = left, "drain: deadline reached, ending the remaining allocations");
                        break "drain deadline";
                    }
                }
            }
        };
        // Dropping the task drops the socket, which removes its file.
        if let Some(t) = admin_task {
            t.abort();
            let _ = t.await;
        }
        why
    }

    /// Re-reads and applies the configuration; logs and returns the outcome.
    fn reload_now(&mut self, trigger: &'static str) -> Result<Vec<&'static str>, String> {
        let result = (self.reload)().map_err(|e| e.to_string()).and_then(|new| {
            let restart = self.running.reload(&self.config, &new)?;
            if self.drain_deadline.is_some() {
                // New alternates apply to the drain in progress.
                self.running.set_drain(Some(drain_of(&new)));
            }
            self.config = new;
            Ok(restart)
        });
        match &result {
            Ok(restart) if restart.is_empty() => {
                tracing::info!(trigger, "configuration reloaded")
            }
            Ok(restart) => tracing::warn!(
                trigger,
                needs_restart = %restart.join(", "),
                "configuration reloaded; these changed keys take effect only after a restart"
            ),
            Err(e) => tracing::error!(
                trigger,
                error = %e,
                "configuration NOT reloaded, the previous one stays in force"
            ),
        }
        result
    }

    fn start_drain(&mut self, deadline: Option<Duration>, trigger: &'static str) {
        let deadline = deadline.unwrap_or(self.config.drain.deadline);
        let drain = drain_of(&self.config);
        tracing::info!(
            trigger,
            deadline_secs = deadline.as_secs(),
            allocations = self.running.allocations(),
            alternates = drain.alternates.len(),
            "draining: new allocations refused, existing ones relay until they end"
        );
        self.running.set_drain(Some(drain));
        self.drain_deadline = Some(Instant::now() + deadline);
    }

    async fn handle(&mut self, request: Request) -> serde_json::Value {
        match request {
            Request::Sessions => {
                let sessions: Vec<serde_json::Value> = self
                    .running
                    .sessions()
                    .await
                    .into_iter()
                    .map(|s| {
                        let a = &s.allocation;
                        json!({
                            "id": a.id,
                            "user": &*a.username,
                            "realm": &*a.realm,
                            "transport": a.tuple.transport.name(),
                            "client": a.tuple.client,
                            "server": a.tuple.server,
                            "relays": a.relays,
                            "start_unix": a.started_unix,
                            "expires_in": s.expires_in,
                            "permissions": s.permissions,
                            "channels": s.channels,
                            "peers": a.peers,
                            "to_peer_bytes": a.traffic.to_peer_bytes,
                            "to_peer_packets": a.traffic.to_peer_packets,
                            "to_client_bytes": a.traffic.to_client_bytes,
                            "to_client_packets": a.traffic.to_client_packets,
                            "budget_used": a.budget.map(|b| b.used),
                            "budget_limit": a.budget.map(|b| b.limit),
                        })
                    })
                    .collect();
                json!({ "ok": true, "sessions": sessions })
            }
            Request::Kill { user, id } => {
                let filter = match (user, id) {
                    (Some(u), None) => KillFilter::User(u),
                    (None, Some(i)) => KillFilter::Id(i),
                    _ => return admin_socket::error_answer("kill needs exactly one of user, id"),
                };
                let n = self.running.kill(filter.clone()).await;
                tracing::info!(?filter, allocations = n, "admin: sessions killed");
                json!({ "ok": true, "killed": n })
            }
            Request::Reload => match self.reload_now("admin socket") {
                Ok(restart) => json!({ "ok": true, "needs_restart": restart }),
                Err(e) => admin_socket::error_answer(&e),
            },
            Request::Drain { deadline_secs } => {
                if deadline_secs == Some(0) {
                    return admin_socket::error_answer("deadline_secs must be at least 1");
                }
                self.start_drain(deadline_secs.map(Duration::from_secs), "admin socket");
                json!({
                    "ok": true,
                    "allocations": self.running.allocations(),
                    "deadline_secs": deadline_secs.unwrap_or(self.config.drain.deadline.as_secs()),
                })
            }
            Request::Resume => {
                if self.drain_deadline.take().is_none() {
                    return admin_socket::error_answer("the server is not draining");
                }
                self.running.set_drain(None);
                tracing::info!(
                    trigger = "admin socket",
                    "drain cancelled: new allocations are accepted again"
                );
                json!({ "ok": true, "allocations": self.running.allocations() })
            }
            Request::Status => json!({
                "ok": true,
                "allocations": self.running.allocations(),
                "draining": self.drain_deadline.is_some(),
            }),
        }
    }
}

fn drain_of(config: &Config) -> Drain {
    Drain {
        alternates: config.drain.alternate_servers.clone(),
    }
}
