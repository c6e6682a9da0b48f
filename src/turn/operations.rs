//! Operations on a running core: reloading the configuration, draining, the
//! admin socket's session list and kill, re-checking credentials after the
//! store changed, and shutdown.

use std::sync::Arc;
use std::time::Instant;

use super::auth::Lookup;
use super::config::ServerConfig;
use super::output::{CloseReason, Drain, KillFilter, Session};
use super::policy::PeerPolicy;
use super::server::Server;
use super::table::AllocId;
use super::RelayBinder;

impl<B: RelayBinder> Server<B> {
    /// Applies a reloaded configuration: realm, lifetimes, per-allocation
    /// quotas, the byte budget per user (a raised or removed one lets relaying
    /// resume at once), peer policy, SOFTWARE and the per-source limit on unauthenticated
    /// errors take effect for the next request (the limit's buckets are shared
    /// and keep what they hold: only rate and burst change).
    /// Allocations stay as they are (a realm change makes their next Refresh
    /// authenticate anew, with the new realm's 401).
    pub fn reconfigure(&mut self, cfg: Arc<ServerConfig>) {
        self.policy = PeerPolicy::new(&cfg.allow_peers, &cfg.deny_peers);
        self.quota
            .set_byte_budget(cfg.max_bytes_per_user, cfg.bytes_period.as_secs());
        if *self.realm != *cfg.realm {
            self.realm = cfg.realm.as_str().into();
        }
        self.cfg = cfg;
        // A bandwidth limit or byte budget set by the reload takes channels
        // off the fast path (and lifting it puts them back).
        self.offload_sync_all();
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.cfg
    }

    /// Starts (`Some`) or stops (`None`) draining: new Allocates are refused
    /// with 403, or redirected with 300 when alternates are given.
    pub fn set_drain(&mut self, drain: Option<Drain>) {
        self.drain = drain;
    }

    pub fn draining(&self) -> bool {
        self.drain.is_some()
    }

    /// The live allocations, for the admin socket.
    pub fn sessions(&self, now: Instant) -> Vec<Session> {
        let budget = self.budget_now(now);
        self.table
            .iter()
            .map(|(_, a)| Session {
                allocation: a.summary(now, budget),
                expires_in: a.expires.saturating_duration_since(now).as_secs(),
                permissions: a.permissions.iter().filter(|p| p.expires > now).count() as u32,
                channels: a.channels.iter().filter(|c| c.expires > now).count() as u32,
            })
            .collect()
    }

    /// Ends the allocations `filter` selects (close reason `Killed`); returns
    /// how many.
    pub fn kill(&mut self, now: Instant, filter: &KillFilter) -> usize {
        let ids: Vec<AllocId> = self
            .table
            .iter()
            .filter(|(_, a)| match filter {
                KillFilter::User(u) => *a.username == **u,
                KillFilter::Id(id) => a.id == *id,
            })
            .map(|(id, _)| id)
            .collect();
        for &id in &ids {
            self.close(now, id, CloseReason::Killed);
        }
        ids.len()
    }

    /// Ends every allocation whose credential no longer resolves: the user was
    /// removed or the REST credential revoked. Call it when the credentials
    /// change; a changed password does not end anything (the next request must
    /// simply use the new one). Returns how many allocations ended.
    pub fn recheck_credentials(&mut self, now: Instant) -> usize {
        let unix = self.unix(now);
        let gone: Vec<AllocId> = self
            .table
            .iter()
            .filter(|(_, a)| {
                // The user may be known in the allocation's realm or, after a
                // realm change by reload, in the new one: either keeps it.
                let found = |realm: &str| {
                    matches!(
                        self.creds.lookup(&a.username, realm, unix),
                        Lookup::Found(..)
                    )
                };
                !(found(&a.realm) || (*a.realm != *self.cfg.realm && found(&self.cfg.realm)))
            })
            .map(|(id, _)| id)
            .collect();
        for &id in &gone {
            self.close(now, id, CloseReason::Revoked);
        }
        gone.len()
    }

    /// Ends every allocation (shutdown).
    pub fn close_all(&mut self, now: Instant) {
        let ids: Vec<AllocId> = self.table.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.close(now, id, CloseReason::Shutdown);
        }
        for (t, _) in std::mem::take(&mut self.issued_tokens) {
            if let Some((addr, _)) = self.reservations.take(&t) {
                self.discard_reserved(addr);
            }
        }
    }
}
