//! Usage records: one JSON line per finished allocation, for billing and abuse
//! review.
//!
//! Shards write a record when the core reports an allocation closed, which is
//! never per packet, so one mutex around the sink is cheap. Each line is written
//! whole and flushed, so a reader (or `logrotate` with `copytruncate`) never
//! sees half a record. SIGHUP (a reload) reopens the file: rotate by renaming
//! it and sending SIGHUP, and new records go to a new file of the old name.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::config::UsageTarget;
use crate::turn::server::{AllocationSummary, CloseReason};

/// One finished allocation, as written: an [`AllocationSummary`] with the
/// start time in RFC 3339 as well, the duration in seconds, and the reason.
#[derive(Debug, Serialize)]
pub struct UsageRecord<'a> {
    /// The allocation's ID (as `ferroturn sessions list` showed it).
    pub id: u64,
    pub user: &'a str,
    pub realm: &'a str,
    /// `udp`, `tcp` or `tls`.
    pub transport: &'static str,
    pub client: SocketAddr,
    /// The listener address the client reached.
    pub server: SocketAddr,
    /// Relayed transport addresses (advertised).
    pub relays: &'a [SocketAddr],
    /// Distinct peer IPs the allocation was ever permitted to reach.
    pub peers: u32,
    pub to_peer_bytes: u64,
    pub to_peer_packets: u64,
    pub to_client_bytes: u64,
    pub to_client_packets: u64,
    /// RFC 3339 UTC and unix seconds of the allocation's creation.
    pub start: String,
    pub start_unix: u64,
    /// Seconds, with millisecond precision.
    pub duration: f64,
    /// expired, deleted, connection_closed, revoked, killed, shutdown or
    /// credential_expired.
    pub reason: &'static str,
    /// With `quota.max-bytes-per-user` only: the user's relayed bytes in the
    /// current period when the allocation closed (all of the user's
    /// allocations), and the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_period_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_byte_budget: Option<u64>,
}

impl<'a> UsageRecord<'a> {
    /// The record of allocation `a`, closed for `reason`.
    pub fn new(a: &'a AllocationSummary, reason: CloseReason) -> Self {
        let start = UNIX_EPOCH + Duration::from_secs(a.started_unix);
        Self {
            id: a.id,
            user: &a.username,
            realm: &a.realm,
            transport: a.tuple.transport.name(),
            client: a.tuple.client,
            server: a.tuple.server,
            relays: &a.relays,
            peers: a.peers,
            to_peer_bytes: a.traffic.to_peer_bytes,
            to_peer_packets: a.traffic.to_peer_packets,
            to_client_bytes: a.traffic.to_client_bytes,
            to_client_packets: a.traffic.to_client_packets,
            start: humantime::format_rfc3339_seconds(start).to_string(),
            start_unix: a.started_unix,
            duration: (a.duration.as_millis() as f64) / 1000.0,
            reason: reason.name(),
            user_period_bytes: a.budget.map(|b| b.used),
            user_byte_budget: a.budget.map(|b| b.limit),
        }
    }
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

/// Where usage records go; `None` inside = nowhere. Shared by every shard.
#[derive(Default)]
pub struct UsageLog {
    sink: Mutex<Option<Sink>>,
    /// Failed writes: when the last warning was logged and how many failures
    /// since, so that a full disk costs one log line a minute, not one a record.
    failures: Mutex<(Option<std::time::Instant>, u64)>,
}

/// At most one "usage record not written" warning per this interval.
const FAILURE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl std::fmt::Debug for UsageLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageLog").finish_non_exhaustive()
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("usage.file {}: {e}", path.display())))
}

/// A sink opened ahead of use, so a reload can fail before it changes anything.
pub struct PreparedSink(Option<Sink>);

impl UsageLog {
    /// Opens `target` (appending to a file): an error names `usage.file`.
    pub fn open(target: Option<&UsageTarget>) -> io::Result<Arc<Self>> {
        let log = Self::default();
        log.install(Self::prepare(target)?);
        Ok(Arc::new(log))
    }

    /// Opens `target` without using it yet.
    pub fn prepare(target: Option<&UsageTarget>) -> io::Result<PreparedSink> {
        Ok(PreparedSink(match target {
            None => None,
            Some(UsageTarget::Stdout) => Some(Sink::Stdout),
            Some(UsageTarget::File(path)) => Some(Sink::File {
                file: open_append(path)?,
                path: path.clone(),
            }),
        }))
    }

    /// From now on records go to `sink`.
    pub fn install(&self, sink: PreparedSink) {
        *self.sink.lock().unwrap_or_else(|p| p.into_inner()) = sink.0;
    }

    /// Whether records go anywhere (else the caller skips building them).
    pub fn enabled(&self) -> bool {
        self.sink
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Writes one record as one line. A failed write is logged and the record
    /// lost; the server goes on.
    pub fn write(&self, record: &UsageRecord<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "usage record not serialised");
                return;
            }
        };
        line.push(b'\n');
        let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        let result = match sink.as_mut() {
            None => return,
            Some(Sink::Stdout) => {
                let mut out = io::stdout().lock();
                out.write_all(&line).and_then(|()| out.flush())
            }
            Some(Sink::File { file, .. }) => file.write_all(&line),
        };
        if let Err(e) = result {
            let path = match sink.as_ref() {
                Some(Sink::File { path, .. }) => path.display().to_string(),
                _ => "stdout".into(),
            };
            drop(sink);
            let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            f.1 += 1;
            let due = f.0.is_none_or(|t| t.elapsed() >= FAILURE_WARNING_INTERVAL);
            if due {
                tracing::warn!(error = %e, path, records_lost = f.1, "usage records not written");
                *f = (Some(std::time::Instant::now()), 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn::allocation::Traffic;
    use crate::turn::server::BudgetUse;
    use crate::turn::{FiveTuple, Transport};

    fn record_line(log: &UsageLog, id: u64) {
        record_with_budget(log, id, None);
    }

    fn record_with_budget(log: &UsageLog, id: u64, budget: Option<BudgetUse>) {
        let allocation = AllocationSummary {
            id,
            username: "alice".into(),
            realm: "example.org".into(),
            tuple: FiveTuple {
                transport: Transport::Tcp,
                client: "192.0.2.1:5000".parse().unwrap(),
                server: "192.0.2.2:3478".parse().unwrap(),
            },
            relays: vec!["192.0.2.2:50000".parse().unwrap()],
            peers: 1,
            traffic: Traffic {
                to_peer_packets: 3,
                to_peer_bytes: 300,
                to_client_packets: 2,
                to_client_bytes: 200,
            },
            started_unix: 1_700_000_000,
            duration: Duration::from_millis(61_500),
            budget,
        };
        log.write(&UsageRecord::new(&allocation, CloseReason::Killed));
    }

    #[test]
    fn one_json_line_per_record_and_reopen_after_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.jsonl");
        let target = UsageTarget::File(path.clone());
        let log = UsageLog::open(Some(&target)).unwrap();
        record_line(&log, 7);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["realm"], "example.org");
        assert_eq!(v["transport"], "tcp");
        assert_eq!(v["client"], "192.0.2.1:5000");
        assert_eq!(v["relays"][0], "192.0.2.2:50000");
        assert_eq!(v["to_peer_bytes"], 300);
        assert_eq!(v["to_client_packets"], 2);
        assert_eq!(v["start"], "2023-11-14T22:13:20Z");
        assert_eq!(v["duration"], 61.5);
        assert_eq!(v["reason"], "killed");
        // Without byte budgets, no budget fields.
        assert!(v.get("user_period_bytes").is_none(), "{v}");
        assert!(v.get("user_byte_budget").is_none(), "{v}");

        // Rotation: rename, reopen, and the next record starts the new file.
        let rotated = dir.path().join("usage.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.install(UsageLog::prepare(Some(&target)).unwrap());
        record_line(&log, 8);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("\"id\":8"));
    }

    #[test]
    fn records_carry_the_users_byte_budget_when_budgets_are_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.jsonl");
        let log = UsageLog::open(Some(&UsageTarget::File(path.clone()))).unwrap();
        let budget = BudgetUse {
            used: 12_345,
            limit: 10_000,
        };
        record_with_budget(&log, 9, Some(budget));
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["user_period_bytes"], 12_345);
        assert_eq!(v["user_byte_budget"], 10_000);
    }

    #[test]
    fn failed_writes_are_counted_and_warned_about_once_a_minute() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let Ok(log) = UsageLog::open(Some(&UsageTarget::File("/dev/full".into()))) else {
            return;
        };
        for id in 0..5 {
            record_line(&log, id);
        }
        let f = log.failures.lock().unwrap();
        assert!(f.0.is_some(), "the first failure warns");
        assert_eq!(f.1, 4, "the next four are only counted");
    }

    #[test]
    fn an_unopenable_file_names_the_key() {
        let e = UsageLog::open(Some(&UsageTarget::File("/nonexistent/dir/u.jsonl".into())))
            .unwrap_err();
        assert!(e.to_string().contains("usage.file"), "{e}");
    }
}
