//! `[metrics]`: the HTTP endpoint for Prometheus and health checks.

use std::net::SocketAddr;

use serde::Deserialize;

use super::validate::{invalid, Result};

/// `[metrics]` as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawMetrics {
    /// `listen`: IP:PORT of the HTTP endpoint (`/metrics`, `/healthz`,
    /// `/readyz`); empty = off.
    pub listen: String,
}

/// Where the metrics endpoint listens unless told otherwise: loopback only, as
/// the endpoint has no authentication.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9641";

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: DEFAULT_METRICS_LISTEN.into(),
        }
    }
}

/// The HTTP endpoint for Prometheus and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// `None` = no endpoint.
    pub listen: Option<SocketAddr>,
}

pub(super) fn validate_metrics(metrics: &RawMetrics) -> Result<MetricsConfig> {
    let value = metrics.listen.trim();
    if value.is_empty() {
        return Ok(MetricsConfig { listen: None });
    }
    match value.parse::<SocketAddr>() {
        Ok(addr) => Ok(MetricsConfig { listen: Some(addr) }),
        Err(_) => invalid(
            "metrics.listen",
            format!("{value:?} is not IP:PORT (write IPv6 as [ADDR]:PORT), or \"\" for off"),
        ),
    }
}
