//! Strict credential expiry (`auth.strict-expiry`, as eturnal's
//! `strict_expiry`): with it, an allocation made with a TURN REST credential
//! ends when the credential expires, whatever lifetime was asked for, and a
//! Refresh cannot extend it; without it, the lifetime is granted as asked.

use super::auth::{rest_client, rest_store};
use super::*;

fn rest_server(strict: bool) -> H {
    let mut cfg = base_config();
    cfg.strict_expiry = strict;
    H::with(cfg, rest_store(&["s3cret"]), QuotaTracker::new(0, 0))
}

/// The reason of the one `AllocationClosed` among `events`.
fn close_reason(events: &[Event]) -> CloseReason {
    let reasons: Vec<CloseReason> = events
        .iter()
        .filter_map(|e| match e {
            Event::AllocationClosed { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{events:?}");
    reasons[0]
}

#[test]
fn strict_allocation_ends_at_the_credential_expiry() {
    let mut h = rest_server(true);
    let mut c = rest_client("s3cret", UNIX0 + 100, "192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    r.expect_success();
    assert_eq!(r.lifetime(), 100);
    assert_eq!(h.srv.poll_timeout(), Some(h.clock.t0 + secs(100)));
    h.events();
    h.at(secs(99));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(100));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(h.shared.quota.total(), 0);
    let reason = close_reason(&h.events());
    assert_eq!(reason, CloseReason::CredentialExpired);
    assert_eq!(reason.name(), "credential_expired");
}

#[test]
fn without_strict_expiry_the_allocation_lives_its_lifetime() {
    let mut h = rest_server(false);
    let mut c = rest_client("s3cret", UNIX0 + 100, "192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    r.expect_success();
    assert_eq!(r.lifetime(), 3600);
    h.events();
    h.at(secs(100));
    h.at(secs(3599));
    assert_eq!(h.srv.allocations(), 1, "outlives its credential");
    // Its Refresh, with the expired credential, is refused.
    h.refresh(&mut c, Some(600)).expect_error(401);
    h.at(secs(3600));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(close_reason(&h.events()), CloseReason::Expired);
}

#[test]
fn strict_refresh_does_not_extend_past_the_credential_expiry() {
    let mut h = rest_server(true);
    let mut c = rest_client("s3cret", UNIX0 + 100, "192.0.2.10:1000");
    let r = h.allocate(&mut c);
    r.expect_success();
    assert_eq!(r.lifetime(), 100);
    h.at(secs(40));
    let r = h.refresh(&mut c, Some(3600));
    r.expect_success();
    assert_eq!(r.lifetime(), 60, "cut to the 60 s the credential has left");
    h.events();
    h.at(secs(99));
    assert_eq!(h.srv.allocations(), 1);
    h.at(secs(100));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(close_reason(&h.events()), CloseReason::CredentialExpired);
}

#[test]
fn strict_allocation_due_before_its_credential_just_expires() {
    // A credential valid for a day and the default 600 s lifetime: the
    // lifetime is what ends it, and the record says so.
    let mut h = rest_server(true);
    let mut c = rest_client("s3cret", UNIX0 + 86400, "192.0.2.10:1000");
    let r = h.allocate(&mut c);
    assert_eq!(r.lifetime(), 600);
    h.events();
    h.at(secs(600));
    assert_eq!(h.srv.allocations(), 0);
    assert_eq!(close_reason(&h.events()), CloseReason::Expired);
}

#[test]
fn strict_expiry_leaves_static_users_alone() {
    let mut cfg = base_config();
    cfg.strict_expiry = true;
    let mut h = H::with_config(cfg);
    let mut c = Client::alice("192.0.2.10:1000");
    let r = h.allocate_with(&mut c, |b| {
        b.add(&Lifetime(3600));
    });
    assert_eq!(r.lifetime(), 3600);
}
