//! Keeps a running server's credentials in step with the credential store.
//!
//! A poller thread reads the store's generation counter every
//! [`POLL_INTERVAL`] (one cheap query; it is bumped by every write, on SQLite and
//! PostgreSQL alike, so every node sharing a PostgreSQL store sees every change),
//! and when it moved loads one consistent snapshot and swaps it into
//! [`LiveCredentials`]. The shards are then told the new generation and end the
//! allocations whose credential vanished. Lookups never wait on the database.
//!
//! When the store cannot be read, the last snapshot stays in force for requests on
//! existing allocations (so relaying never stops), new allocations are refused with
//! a logged reason, and one warning is logged per outage, not per poll.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::budget_sync::BudgetSync;
use super::credentials::{KeyedUser, LiveCredentials, StoreContents};
use crate::store::{Snapshot, Store, StoreLocation};
use crate::turn::quota::QuotaTracker;

/// How often the generation counter is read: changes take effect within about
/// this long (the issue asks for 2 s).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

fn contents(s: Snapshot) -> StoreContents {
    StoreContents {
        generation: s.generation,
        users: s
            .users
            .into_iter()
            .map(|u| KeyedUser {
                realm: u.realm,
                name: u.name,
                keys: u.keys,
                userhash: u.userhash,
            })
            .collect(),
        secrets: s.secrets,
        revocations: s.revocations,
    }
}

/// Opens the store and loads its first snapshot, before any listener runs: a
/// server that cannot read its store at start-up says so and does not start.
///
/// It runs on a thread of its own so that `net::start` may be called from inside an
/// async context (tests do) as well as from plain `main`.
pub fn initial_load(location: &StoreLocation, creds: &LiveCredentials) -> io::Result<()> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| load_blocking(location, creds))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("credential store loader panicked")))
    })
}

fn load_blocking(location: &StoreLocation, creds: &LiveCredentials) -> io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let store = Store::open_location(location.clone()).await.map_err(|e| {
            io::Error::other(format!("credential store {}: {e}", location.redacted()))
        })?;
        let snap = store.snapshot().await.map_err(|e| {
            io::Error::other(format!("credential store {}: {e}", location.redacted()))
        })?;
        tracing::info!(
            store = %location.redacted(),
            users = snap.users.len(),
            secrets = snap.secrets.len(),
            revocations = snap.revocations.len(),
            "credential store loaded"
        );
        creds.replace(contents(snap));
        store.close().await;
        io::Result::Ok(())
    })
}

/// Starts the poller thread. It stops when `shutdown` flips to true. Each
/// visit also counts the byte budgets of `quota` in the store (see
/// [`BudgetSync`]).
pub fn spawn(
    location: StoreLocation,
    creds: Arc<LiveCredentials>,
    quota: Arc<QuotaTracker>,
    changed: watch::Sender<i64>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ferroturn-store".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "credential store poller could not start");
                    return;
                }
            };
            rt.block_on(async move {
                let mut store: Option<Store> = None;
                let mut budgets = BudgetSync::new(quota);
                let mut budgets_healthy = true;
                loop {
                    let result = poll_once(&location, &mut store, &creds, &changed).await;
                    if let (Ok(()), Some(s)) = (&result, &store) {
                        // A failed visit keeps the bytes counted here for the next one;
                        // relaying and credentials go on either way.
                        match (budgets.run(s).await, budgets_healthy) {
                            (Ok(()), false) => {
                                tracing::info!("byte budgets counted in the store again");
                                budgets_healthy = true;
                            }
                            (Err(e), true) => {
                                tracing::warn!(
                                    error = %e,
                                    "byte budgets could not be counted in the store: each server counts its own until it can"
                                );
                                budgets_healthy = false;
                            }
                            _ => {}
                        }
                    }
                    match (result, creds.is_healthy()) {
                        (Ok(()), false) => {
                            tracing::info!(store = %location.redacted(), "credential store reachable again");
                            creds.set_healthy(true);
                        }
                        (Err(e), true) => {
                            tracing::warn!(
                                store = %location.redacted(),
                                error = %e,
                                "credential store unreachable: new allocations are refused, existing ones go on"
                            );
                            creds.set_healthy(false);
                        }
                        _ => {}
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                        r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { break },
                    }
                }
                if let Some(s) = store {
                    s.close().await;
                }
            });
        })
}

/// One poll: (re)open the store if needed, read the generation, reload on change.
async fn poll_once(
    location: &StoreLocation,
    store: &mut Option<Store>,
    creds: &LiveCredentials,
    changed: &watch::Sender<i64>,
) -> Result<(), crate::store::StoreError> {
    if store.is_none() {
        *store = Some(Store::open_location(location.clone()).await?);
    }
    let Some(s) = store.as_ref() else {
        return Ok(());
    };
    let generation = match s.generation().await {
        Ok(g) => g,
        Err(e) => {
            // Reopen next time: the pool may hold dead connections.
            *store = None;
            return Err(e);
        }
    };
    if generation != creds.generation() {
        let snap = s.snapshot().await?;
        let g = snap.generation;
        creds.replace(contents(snap));
        let _ = changed.send(g);
        tracing::info!(
            generation = g,
            "credential store changed: snapshot reloaded"
        );
    }
    Ok(())
}
