//! Byte budgets per user and period (`quota.max-bytes-per-user`): shared by a
//! user's allocations (and shards), cutting relaying both ways and new
//! Allocates (486) once used up, resuming at UTC midnight or when a reload
//! raises the limit; 0 turns them off.

use super::*;
use crate::turn::server::BudgetUse;

const LIMIT: u64 = 1000;

fn budget_config(limit: u64) -> ServerConfig {
    let mut c = base_config();
    c.max_bytes_per_user = limit;
    c
}

impl H {
    /// A Send indication of `len` bytes from `c` to `PEER_A`: whether it was
    /// relayed.
    fn send_to_peer(&mut self, c: &Client, len: usize) -> bool {
        let msg = send_indication(TransactionId::random(), sa(PEER_A), &vec![7u8; len]);
        matches!(self.send_raw(c.tuple, &msg).0, Output::ToPeer { .. })
    }

    /// `len` bytes from `PEER_A` on relay `rid`: whether they went to the client.
    fn peer_sends(&mut self, rid: RelayId, len: usize) -> bool {
        let (o, _) = self.peer_data(rid, sa(PEER_A), &vec![7u8; len]);
        matches!(o, PeerOutput::ToClient { .. })
    }

    /// A second core ("shard") on the same shared state and clock.
    fn another_shard(&self) -> H {
        let cfg = self.srv.config().clone();
        let binder = FakeBinder::new(60000..=60009);
        H {
            srv: Server::new(
                cfg,
                &self.shared,
                binder,
                self.clock.now,
                self.clock.unix0,
                SEED,
            ),
            clock: self.clock,
            shared: self.shared.clone(),
            out: BytesMut::new(),
        }
    }

    fn budget_of_sessions(&self) -> Vec<Option<BudgetUse>> {
        self.srv
            .sessions(self.clock.now)
            .iter()
            .map(|s| s.allocation.budget)
            .collect()
    }

    fn quota_rejections(&self, k: QuotaKind) -> u64 {
        self.srv.stats().quota_rejections[k as usize]
    }
}

#[test]
fn one_budget_for_all_of_a_users_allocations_both_ways_then_relaying_stops() {
    let mut h = H::with_config(budget_config(LIMIT));
    let (c1, r1) = permitted(&mut h, "192.0.2.10:1000");
    let (c2, r2) = permitted(&mut h, "192.0.2.11:1000");
    // 400 + 400 + 300 = 1100: the third passes (the budget was not used up
    // before it), whichever allocation and direction each took.
    assert!(h.send_to_peer(&c1, 400));
    assert!(h.peer_sends(r2, 400));
    assert_eq!(
        h.budget_of_sessions(),
        vec![
            Some(BudgetUse {
                used: 800,
                limit: LIMIT
            });
            2
        ]
    );
    assert!(h.send_to_peer(&c2, 300));
    assert_eq!(h.shared.quota.exhausted_users(h.unix_now()), 1);
    // Used up: nothing more either way, on either allocation, counted.
    assert!(!h.send_to_peer(&c1, 1));
    assert!(!h.send_to_peer(&c2, 1));
    assert!(!h.peer_sends(r1, 1));
    assert!(!h.peer_sends(r2, 1));
    assert_eq!(h.drops(DropReason::ByteBudget), 4);
    assert_eq!(h.drops(DropReason::RateLimit), 0);
    // Dropped bytes are not charged, nor counted as relayed.
    let used = Some(BudgetUse {
        used: 1100,
        limit: LIMIT,
    });
    assert_eq!(h.budget_of_sessions(), vec![used; 2]);
    assert_eq!(h.srv.stats().to_peer_bytes[0], 700);
    assert_eq!(h.srv.stats().to_client_bytes[0], 400);
    // ChannelData is cut the same way.
    let mut c1 = c1;
    h.channel_bind(&mut c1, 0x4000, sa(PEER_A)).expect_success();
    let (o, _) = h.send_raw(c1.tuple, &channel_data_msg(0x4000, b"hello", false));
    assert_eq!(o, Output::None);
    assert_eq!(h.drops(DropReason::ByteBudget), 5);
    // A new Allocate of the user is refused with 486, counted as `bytes`.
    let mut c3 = Client::alice("192.0.2.12:1000");
    h.allocate(&mut c3).expect_error(486);
    assert_eq!(h.quota_rejections(QuotaKind::Bytes), 1);
    assert_eq!(h.quota_rejections(QuotaKind::User), 0);
    // Requests on the existing allocations are still answered.
    h.refresh(&mut c1, None).expect_success();
    h.create_permission(&mut c1, &[sa(PEER_B)]).expect_success();
}

#[test]
fn other_users_have_budgets_of_their_own() {
    let mut h = H::with_config(budget_config(LIMIT));
    let (c, _) = permitted(&mut h, "192.0.2.10:1000");
    assert!(h.send_to_peer(&c, LIMIT as usize));
    assert!(!h.send_to_peer(&c, 1));
    let mut bob = Client::udp("bob", "bob-pw", "192.0.2.20:1000");
    h.allocate(&mut bob).expect_success();
    h.create_permission(&mut bob, &[sa(PEER_A)])
        .expect_success();
    assert!(h.send_to_peer(&bob, 900));
    assert!(h.send_to_peer(&bob, 99));
    assert_eq!(h.shared.quota.exhausted_users(h.unix_now()), 1);
    assert_eq!(h.drops(DropReason::ByteBudget), 1);
}

#[test]
fn shards_share_a_users_budget() {
    let mut h = H::with_config(budget_config(LIMIT));
    let mut h2 = h.another_shard();
    let (c1, _) = permitted(&mut h, "192.0.2.10:1000");
    let (c2, _) = permitted(&mut h2, "192.0.2.11:1000");
    assert!(h.send_to_peer(&c1, 600));
    assert!(h2.send_to_peer(&c2, 600));
    // Both shards see it used up.
    assert!(!h.send_to_peer(&c1, 1));
    assert!(!h2.send_to_peer(&c2, 1));
    let mut c3 = Client::alice("192.0.2.12:1000");
    h2.allocate(&mut c3).expect_error(486);
}

#[test]
fn ending_every_allocation_does_not_give_a_fresh_budget() {
    let mut h = H::with_config(budget_config(LIMIT));
    let (mut c, _) = permitted(&mut h, "192.0.2.10:1000");
    assert!(h.send_to_peer(&c, LIMIT as usize));
    h.refresh(&mut c, Some(0)).expect_success();
    // The closed allocation's record carries the user's period total.
    let closed = h.events().into_iter().find_map(|e| match e {
        Event::AllocationClosed { allocation, .. } => Some(allocation.budget),
        _ => None,
    });
    assert_eq!(
        closed,
        Some(Some(BudgetUse {
            used: LIMIT,
            limit: LIMIT
        }))
    );
    let mut again = Client::alice("192.0.2.10:1001");
    h.allocate(&mut again).expect_error(486);
    assert_eq!(h.shared.quota.total(), 0);
}

#[test]
fn the_budget_comes_back_at_utc_midnight() {
    // The harness's clock starts 6,400 s before a UTC midnight.
    let midnight = 6400;
    assert_eq!((UNIX0 + midnight) % 86_400, 0);
    let mut h = H::with_config(budget_config(LIMIT));
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    let rid = h.relay_id(h.srv.sessions(h.clock.now)[0].allocation.relays[0]);
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(h.send_to_peer(&c, LIMIT as usize));
    h.at(secs(3000));
    h.refresh(&mut c, Some(3600)).expect_success();
    // A second before midnight: still used up.
    h.at(secs(midnight - 1));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(!h.send_to_peer(&c, 1));
    assert!(!h.peer_sends(rid, 1));
    let mut other = Client::alice("192.0.2.10:1001");
    h.allocate(&mut other).expect_error(486);
    // At midnight: a new period, relaying resumes both ways and the
    // sessions show the new period's count.
    h.at(secs(midnight));
    assert_eq!(h.shared.quota.exhausted_users(h.unix_now()), 0);
    assert!(h.send_to_peer(&c, 300));
    assert!(h.peer_sends(rid, 200));
    assert_eq!(
        h.budget_of_sessions(),
        vec![Some(BudgetUse {
            used: 500,
            limit: LIMIT
        })]
    );
    h.allocate(&mut other).expect_success();
    assert_eq!(h.drops(DropReason::ByteBudget), 2);
}

#[test]
fn an_hourly_budget_comes_back_on_the_hour() {
    let mut cfg = budget_config(LIMIT);
    cfg.bytes_period = secs(3600);
    let mut h = H::with_config(cfg);
    let next_hour = 3600 - UNIX0 % 3600;
    assert!(next_hour < 3600);
    let mut c = allocated_for_an_hour(&mut h, "192.0.2.10:1000");
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(h.send_to_peer(&c, LIMIT as usize));
    h.at(secs(next_hour - 1));
    h.create_permission(&mut c, &[sa(PEER_A)]).expect_success();
    assert!(!h.send_to_peer(&c, 1));
    h.at(secs(next_hour));
    assert!(h.send_to_peer(&c, 1));
}

#[test]
fn a_reload_raising_the_limit_lets_relaying_resume_and_zero_turns_budgets_off() {
    let mut h = H::with_config(budget_config(LIMIT));
    let (c, rid) = permitted(&mut h, "192.0.2.10:1000");
    assert!(h.send_to_peer(&c, LIMIT as usize));
    assert!(!h.send_to_peer(&c, 1));
    // Raised: the bytes already counted stay counted.
    h.srv.reconfigure(Arc::new(budget_config(2 * LIMIT)));
    assert!(h.peer_sends(rid, 900));
    assert_eq!(
        h.budget_of_sessions(),
        vec![Some(BudgetUse {
            used: 1900,
            limit: 2 * LIMIT
        })]
    );
    assert!(h.send_to_peer(&c, 200));
    assert!(!h.send_to_peer(&c, 1));
    let mut c2 = Client::alice("192.0.2.10:1001");
    h.allocate(&mut c2).expect_error(486);
    // Lowered below what was used: cut at once.
    h.srv.reconfigure(Arc::new(budget_config(10)));
    assert!(!h.peer_sends(rid, 1));
    // Off: everything relays, new Allocates pass, nothing is shown or counted.
    h.srv.reconfigure(Arc::new(budget_config(0)));
    assert!(h.send_to_peer(&c, 1000));
    assert!(h.peer_sends(rid, 1000));
    h.allocate(&mut c2).expect_success();
    assert_eq!(h.budget_of_sessions(), vec![None, None]);
    assert_eq!(h.shared.quota.exhausted_users(h.unix_now()), 0);
    assert_eq!(h.drops(DropReason::ByteBudget), 3);
}

#[test]
fn zero_means_no_budget() {
    let mut h = H::new();
    let (c, rid) = permitted(&mut h, "192.0.2.10:1000");
    for _ in 0..100 {
        assert!(h.send_to_peer(&c, 1200));
        assert!(h.peer_sends(rid, 1200));
    }
    assert_eq!(h.drops(DropReason::ByteBudget), 0);
    assert_eq!(h.budget_of_sessions(), vec![None]);
    let mut c2 = Client::alice("192.0.2.10:1001");
    h.allocate(&mut c2).expect_success();
    assert_eq!(h.quota_rejections(QuotaKind::Bytes), 0);
}
