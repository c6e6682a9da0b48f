//! Applying a reloaded configuration to a running server without dropping an
//! allocation.
//!
//! Everything that can fail is prepared first (the TLS pair read and checked,
//! the usage file opened, the log filter parsed); only when all of it succeeded
//! is anything applied, so a bad configuration leaves the old one wholly in
//! force. What cannot change under a running server (its sockets, threads,
//! store) is reported as needing a restart and otherwise ignored.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::usage::UsageLog;
use crate::config::Config;
use crate::net::shard::ShardCommand;
use crate::net::{NetOptions, Running};

/// Keys whose new value takes effect only after a restart, if they changed.
pub fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            keys.push(key);
        }
    };
    check(old.listen != new.listen, "server.listen");
    check(old.threads != new.threads, "server.threads");
    check(
        old.stun_only_listen != new.stun_only_listen,
        "server.stun-only-listen",
    );
    check(
        old.nat_discovery != new.nat_discovery,
        "server.nat-discovery / server.other-address / server.other-port",
    );
    check(old.log.format != new.log.format, "server.log-format");
    check(
        old.relay.relay_ips != new.relay.relay_ips,
        "relay.relay-ips",
    );
    check(
        old.relay.external_ips != new.relay.external_ips,
        "relay.external-ips",
    );
    check(
        (old.relay.port_min, old.relay.port_max) != (new.relay.port_min, new.relay.port_max),
        "relay.port-range",
    );
    check(old.store.url != new.store.url, "store.url");
    check(old.metrics.listen != new.metrics.listen, "metrics.listen");
    check(
        old.tls.as_ref().map(|t| (&t.listen, t.handshake_timeout))
            != new.tls.as_ref().map(|t| (&t.listen, t.handshake_timeout)),
        "tls.listen",
    );
    check(
        old.tls.as_ref().is_some_and(|t| t.shared) != new.tls.as_ref().is_some_and(|t| t.shared),
        "tls.shared",
    );
    check(
        old.tls.as_ref().map(|t| &t.dtls_listen) != new.tls.as_ref().map(|t| &t.dtls_listen),
        "tls.dtls-listen",
    );
    check(old.admin.socket != new.admin.socket, "admin.socket");
    check(old.api.listen != new.api.listen, "api.listen");
    check(old.api.tls != new.api.tls, "api.tls");
    check(
        old.cluster.node_id != new.cluster.node_id,
        "cluster.node-id",
    );
    check(
        old.cluster.node_timeout != new.cluster.node_timeout,
        "cluster.node-timeout",
    );
    check(
        old.cluster.redirect_above_bps != new.cluster.redirect_above_bps,
        "cluster.redirect-above-mbps",
    );
    keys
}

impl Running {
    /// Applies `new` in place of `old`: realm, SOFTWARE, lifetimes, users and
    /// secrets, quotas (byte budgets included), connection limits, peer policy, the per-source rate limit, log level, the TLS certificate, the
    /// usage file, the credentials API's settings (but not its address) and
    /// `[offload]` (the XDP program detached and attached anew). Returns the changed keys that need a restart; on error
    /// nothing was applied.
    pub fn reload(&mut self, old: &Config, new: &Config) -> Result<Vec<&'static str>, String> {
        // 1. Prepare whatever can fail.
        let tls = match (&self.tls_certs, &new.tls) {
            (Some(certs), Some(t)) => Some(
                certs
                    .prepare(&t.cert, &t.key)
                    .map_err(|e| format!("TLS certificate: {e}"))?,
            ),
            _ => None,
        };
        let usage = UsageLog::prepare(new.usage.target.as_ref()).map_err(|e| e.to_string())?;
        crate::logging::env_filter(&new.log.level).map_err(|e| format!("server.log-level: {e}"))?;

        // 2. Apply.
        if let Some(k) = tls {
            if let Some(certs) = &self.tls_certs {
                certs.install(k);
            }
        }
        self.usage.install(usage);
        crate::logging::set_level(&new.log.level)?;
        self.quota.set_limits(
            new.quota.max_allocations_per_user,
            new.quota.max_allocations_per_ip,
            new.quota.max_allocations,
        );
        // The shards set it too when they reconfigure (below); set here first
        // so that new Allocates and the metric follow the new budget at once.
        self.quota.set_byte_budget(
            new.quota.max_bytes_per_user,
            new.quota.bytes_period.as_secs(),
        );
        self.connections.set(&new.connections);
        self.cluster
            .set_max_allocations(new.cluster.redirect_above_allocations);
        if let Some(api) = &self.api {
            // urls, TTL bounds, rate and CORS origins; listen and tls need a restart.
            api.set_config(&new.api);
        }
        self.budget
            .max
            .store(new.quota.max_relay_ports, Ordering::Relaxed);
        self.credentials
            .set_config(&new.realm, &new.auth.users, &new.auth.secrets);
        // The core's settings: the new file's, with the addresses the shards
        // were started on (those need a restart to change).
        let mut core = NetOptions::from_config(new).core;
        core.own_services = self.core.own_services.clone();
        core.local_ips = self.core.local_ips.clone();
        core.relay_ips = self.core.relay_ips.clone();
        core.external_ips = self.core.external_ips.clone();
        core.relay_ports = self.core.relay_ports.clone();
        core.stun_only_listeners = self.core.stun_only_listeners.clone();
        core.nat_discovery = self.core.nat_discovery;
        self.core = Arc::new(core);
        self.broadcast(|| ShardCommand::Reconfigure(self.core.clone()));
        if old.offload != new.offload {
            self.switch_offload(&new.offload);
        }
        Ok(restart_needed(old, new))
    }
}

#[cfg(test)]
mod tests {
    use super::restart_needed;
    use crate::config::Config;

    #[test]
    fn nat_discovery_changes_need_a_restart() {
        let base = "[server]\nlisten = [\"127.0.0.1:3478\"]\nother-address = \"127.0.0.2\"\n";
        let off = Config::from_toml_str(base).unwrap();
        let on = Config::from_toml_str(&format!("{base}nat-discovery = true\n")).unwrap();
        let other_port =
            Config::from_toml_str(&format!("{base}nat-discovery = true\nother-port = 4000\n"))
                .unwrap();
        let key = "server.nat-discovery / server.other-address / server.other-port";
        assert_eq!(restart_needed(&off, &on), vec![key]);
        assert_eq!(restart_needed(&on, &other_port), vec![key]);
        assert!(restart_needed(&on, &on).is_empty());
    }

    #[test]
    fn offload_changes_apply_live() {
        let off = Config::from_toml_str("").unwrap();
        let on =
            Config::from_toml_str("[offload]\nenabled = true\ninterfaces = [\"eth0\"]\n").unwrap();
        assert!(restart_needed(&off, &on).is_empty());
    }
}
