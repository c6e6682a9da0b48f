//! Allocate and Refresh (RFC 8656 §7–8): lifetimes, relay addresses (with the
//! 1:1 NAT mapping of `external-ip`), EVEN-PORT and RESERVATION-TOKEN (§7.2),
//! the address families of RFC 6156 / RFC 8656 §7.2 (REQUESTED-ADDRESS-FAMILY,
//! ADDITIONAL-ADDRESS-FAMILY, ADDRESS-ERROR-CODE), quotas, the drain's 403 and
//! the signed 300 (targets in `redirect`), retransmitted Allocates (§7.2), and
//! the end of an allocation (Refresh 0, expiry, a closed stream: §3.1).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::Rng;

use super::allocation::{Allocation, Bandwidth, Relay, Traffic};
use super::config::RESERVATION_LIFETIME;
use super::output::{CloseReason, Event, Output};
use super::quota::QuotaError;
use super::responses::{reason_phrase, Request};
use super::server::Server;
use super::stats::QuotaKind;
use super::table::AllocId;
use super::{BindError, FiveTuple, PortRequest, RelayBinder, RelayId};
use crate::stun::attr::{self, *};
use crate::stun::Class;

impl<B: RelayBinder> Server<B> {
    pub(super) fn allocate(&mut self, tuple: FiveTuple, req: Request<'_>) -> Output {
        let Request { now, msg, auth, .. } = req;
        let tcp = match msg.get::<RequestedTransport>() {
            Some(Ok(RequestedTransport(PROTOCOL_UDP))) => false,
            // RFC 6062 §5.1: TCP over a TCP or TLS client connection only.
            Some(Ok(RequestedTransport(PROTOCOL_TCP))) if self.cfg.tcp_allocations => {
                if !tuple.transport.is_stream() {
                    return self.reject(req, 400);
                }
                true
            }
            Some(Ok(_)) => return self.reject(req, 442),
            None | Some(Err(_)) => return self.reject(req, 400),
        };
        // RFC 6062 §5.1: a TCP allocation has no DONT-FRAGMENT, no EVEN-PORT
        // and no reserved ports, and one address family.
        if tcp
            && (msg.has(attr::DONT_FRAGMENT)
                || msg.has(attr::EVEN_PORT)
                || msg.has(attr::RESERVATION_TOKEN)
                || msg.has(attr::ADDITIONAL_ADDRESS_FAMILY))
        {
            return self.reject(req, 400);
        }
        let dont_fragment = msg.has(attr::DONT_FRAGMENT);
        let token = match msg.get::<ReservationToken>() {
            None => None,
            Some(Ok(ReservationToken(t))) => Some(*t),
            Some(Err(_)) => return self.reject(req, 400),
        };
        let even_port = match msg.get::<EvenPort>() {
            None => None,
            Some(Ok(e)) => Some(e),
            Some(Err(_)) => return self.reject(req, 400),
        };
        let requested_family = match msg.get::<RequestedAddressFamily>() {
            None => None,
            Some(Ok(RequestedAddressFamily(f))) => Some(f),
            Some(Err(AttrError::BadFamily)) => return self.reject(req, 440),
            Some(Err(_)) => return self.reject(req, 400),
        };
        let additional = match msg.get::<AdditionalAddressFamily>() {
            None => false,
            Some(Ok(AdditionalAddressFamily(Family::V6))) => true,
            Some(_) => return self.reject(req, 400),
        };
        if token.is_some() && (even_port.is_some() || requested_family.is_some() || additional) {
            return self.reject(req, 400);
        }
        if additional && requested_family.is_some() {
            return self.reject(req, 400);
        }
        // RFC 8656 §7.2 rule 8: a reserved port pair is one address, so it cannot
        // come with a second family.
        if additional && matches!(even_port, Some(EvenPort { reserve: true })) {
            return self.reject(req, 400);
        }
        // A client that came with credentials already (it held a nonce) is
        // redirected here, authenticated, so the 300 carries MESSAGE-INTEGRITY
        // (RFC 8489 §10); see `redirect_unauthenticated` for the others.
        if let Some(alt) = self.redirect_target(tuple) {
            let mut r = self.answer(req, Class::Error);
            r.b.add(&ErrorCode::new(300, reason_phrase(300)));
            r.b.add(&AlternateServer(alt));
            return r.finish();
        }
        if self.drain.is_some() {
            return self.reject(req, 403);
        }
        if !self.creds.accepts_new_allocations() {
            tracing::warn!("credential store unavailable: refusing a new allocation");
            return self.reject(req, 500);
        }
        let budget = match self
            .quota
            .acquire(&auth.username, tuple.client.ip(), self.unix(now))
        {
            Ok(b) => b,
            Err(QuotaError::User) => {
                self.stats.quota_rejections[QuotaKind::User as usize] += 1;
                return self.reject(req, 486);
            }
            Err(QuotaError::Ip) => {
                self.stats.quota_rejections[QuotaKind::ClientIp as usize] += 1;
                return self.reject(req, 486);
            }
            // RFC 8656 §7.2 names 486 for "the user's quota"; a used-up byte
            // budget is one.
            Err(QuotaError::Bytes) => {
                self.stats.quota_rejections[QuotaKind::Bytes as usize] += 1;
                return self.reject(req, 486);
            }
            Err(QuotaError::Total) => {
                self.stats.quota_rejections[QuotaKind::Total as usize] += 1;
                return self.reject(req, 508);
            }
        };

        let mut relays: [Option<Relay>; 2] = [None, None];
        let mut new_token = None;
        let mut family_error = None;
        if let Some(t) = token {
            let adopted = match self.reservations.take(&t) {
                Some((addr, expires)) if expires > now => self.binder.adopt(addr).ok(),
                Some((addr, _)) => {
                    self.discard_reserved(addr);
                    None
                }
                None => None,
            };
            let Some(bound) = adopted else {
                self.quota.release(&auth.username, tuple.client.ip());
                return self.reject(req, 508);
            };
            relays[0] = Some(Relay {
                id: bound.id,
                local: bound.addr,
                advertised: self.advertise(bound.addr),
            });
        } else {
            let port = match even_port {
                None => PortRequest::Any,
                Some(EvenPort { reserve: false }) => PortRequest::Even,
                Some(EvenPort { reserve: true }) => PortRequest::EvenPair,
            };
            let primary = requested_family.unwrap_or(Family::V4);
            let bound = if tcp {
                self.bind_tcp_relay(primary, tuple.server)
            } else {
                self.bind_relay(primary, tuple.server, port, dont_fragment)
            };
            match bound {
                Ok((relay, reserved)) => {
                    self.live.set(relay.local, true);
                    relays[0] = Some(relay);
                    if let Some(raddr) = reserved {
                        let t: [u8; 8] = self.rng.gen();
                        let expires = now + RESERVATION_LIFETIME;
                        self.live.set(raddr, true);
                        self.reservations.insert(t, raddr, expires);
                        self.issued_tokens.push((t, expires));
                        new_token = Some(t);
                    }
                }
                Err(e) => {
                    self.quota.release(&auth.username, tuple.client.ip());
                    let code = match e {
                        BindError::Exhausted => {
                            self.stats.quota_rejections[QuotaKind::RelayPorts as usize] += 1;
                            508
                        }
                        BindError::FamilyUnavailable => 440,
                    };
                    return self.reject(req, code);
                }
            }
            if additional {
                match self.bind_relay(Family::V6, tuple.server, PortRequest::Any, dont_fragment) {
                    Ok((relay, _)) => {
                        self.live.set(relay.local, true);
                        relays[1] = Some(relay);
                    }
                    Err(BindError::Exhausted) => {
                        self.stats.quota_rejections[QuotaKind::RelayPorts as usize] += 1;
                        family_error = Some((Family::V6, 508));
                    }
                    Err(BindError::FamilyUnavailable) => family_error = Some((Family::V6, 440)),
                }
            }
        }

        let requested = match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(l))) => Some(l),
            _ => None,
        };
        let lifetime = self.grant_lifetime(now, requested, auth.expiry);
        let id = self.next_id;
        self.next_id += self.id_step;
        let alloc = Allocation {
            id,
            tuple,
            username: (*auth.username).into(),
            realm: self.realm.clone(),
            started_unix: self.unix(now),
            relays,
            expires: now + Duration::from_secs(u64::from(lifetime)),
            credential_expiry: auth.expiry,
            allocate_tid: msg.transaction_id(),
            granted_lifetime: lifetime,
            reservation_token: new_token,
            address_error: family_error,
            permissions: Vec::new(),
            channels: Vec::new(),
            dont_fragment,
            created: now,
            traffic: Traffic::default(),
            peers_seen: 0,
            to_peer_bandwidth: Bandwidth::default(),
            to_client_bandwidth: Bandwidth::default(),
            budget,
            tcp: tcp.then(Default::default),
        };
        self.table.insert(alloc);
        self.stats.allocations_created += 1;
        self.emit(Event::AllocationCreated { tuple });
        self.allocate_success(
            req,
            &relays,
            lifetime,
            new_token,
            family_error,
            tuple.client,
        )
    }

    /// An Allocate on a 5-tuple that has an allocation: a retransmission of the
    /// request that created it gets the same success response; anything else 437.
    pub(super) fn allocate_again(&mut self, id: AllocId, req: Request<'_>) -> Output {
        let Some(a) = self.table.get(id) else {
            return self.reject(req, 437);
        };
        if a.allocate_tid != req.msg.transaction_id() {
            return self.reject(req, 437);
        }
        let (relays, lifetime, client) = (a.relays, a.granted_lifetime, a.tuple.client);
        let (token, family_error) = (a.reservation_token, a.address_error);
        self.allocate_success(req, &relays, lifetime, token, family_error, client)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn allocate_success(
        &self,
        req: Request<'_>,
        relays: &[Option<Relay>; 2],
        lifetime: u32,
        token: Option<[u8; 8]>,
        family_error: Option<(Family, u16)>,
        client: SocketAddr,
    ) -> Output {
        let mut r = self.answer(req, Class::Success);
        for relay in relays.iter().flatten() {
            r.b.add(&XorRelayedAddress(relay.advertised));
        }
        r.b.add(&Lifetime(lifetime));
        if let Some(t) = &token {
            r.b.add(&ReservationToken(t));
        }
        if let Some((family, code)) = family_error {
            r.b.add(&AddressErrorCode {
                family,
                code,
                reason: reason_phrase(code),
            });
        }
        r.b.add(&XorMappedAddress(client));
        r.finish()
    }

    /// The lifetime to grant for a requested one (RFC 8656 §7.2: the smaller of the
    /// request and the maximum, but never below the default), with
    /// `strict_expiry` clamped so that the allocation does not outlive a REST
    /// credential (so a Refresh never extends it past the expiry either).
    pub(super) fn grant_lifetime(
        &self,
        now: Instant,
        requested: Option<u32>,
        expiry: Option<u64>,
    ) -> u32 {
        let max = self.cfg.max_lifetime.as_secs();
        let default = self.cfg.default_lifetime.as_secs();
        let mut secs = requested.map_or(default, |r| u64::from(r).min(max).max(default));
        if let Some(exp) = expiry.filter(|_| self.cfg.strict_expiry) {
            secs = secs.min(exp.saturating_sub(self.unix(now)));
        }
        secs.min(u64::from(u32::MAX)) as u32
    }

    /// The IP a relay of `family` binds to for a client that reached `server`.
    pub(super) fn relay_ip(&self, family: Family, server: SocketAddr) -> Option<IpAddr> {
        self.cfg
            .relay_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
            .or_else(|| {
                (Family::of(server.ip()) == family && !server.ip().is_unspecified())
                    .then_some(server.ip())
            })
    }

    /// The address to advertise for a relay bound to `local` (external-ip mapping).
    pub(super) fn advertise(&self, local: SocketAddr) -> SocketAddr {
        for &(public, private) in &self.cfg.external_ips {
            let matches = match private {
                Some(p) => p == local.ip(),
                None => public.is_ipv4() == local.is_ipv4(),
            };
            if matches {
                return SocketAddr::new(public, local.port());
            }
        }
        local
    }

    pub(super) fn bind_relay(
        &mut self,
        family: Family,
        server: SocketAddr,
        port: PortRequest,
        df: bool,
    ) -> Result<(Relay, Option<SocketAddr>), BindError> {
        let ip = self
            .relay_ip(family, server)
            .ok_or(BindError::FamilyUnavailable)?;
        let bound = self.binder.bind(ip, port, df)?;
        Ok((
            Relay {
                id: bound.id,
                local: bound.addr,
                advertised: self.advertise(bound.addr),
            },
            bound.reserved,
        ))
    }

    /// The listening relay socket of a TCP allocation (RFC 6062).
    pub(super) fn bind_tcp_relay(
        &mut self,
        family: Family,
        server: SocketAddr,
    ) -> Result<(Relay, Option<SocketAddr>), BindError> {
        let ip = self
            .relay_ip(family, server)
            .ok_or(BindError::FamilyUnavailable)?;
        let bound = self.binder.bind_tcp(ip)?;
        Ok((
            Relay {
                id: bound.id,
                local: bound.addr,
                advertised: self.advertise(bound.addr),
            },
            None,
        ))
    }

    pub(super) fn discard_reserved(&mut self, addr: SocketAddr) {
        self.live.set(addr, false);
        self.binder.discard(addr);
    }

    pub(super) fn release_relay(&mut self, id: RelayId, addr: SocketAddr) {
        self.live.set(addr, false);
        self.binder.release(id);
    }

    pub(super) fn refresh(&mut self, id: AllocId, req: Request<'_>) -> Output {
        let Request { now, msg, auth, .. } = req;
        let requested = match msg.get::<Lifetime>() {
            None => None,
            Some(Ok(Lifetime(l))) => Some(l),
            Some(Err(_)) => return self.reject(req, 400),
        };
        if let Some(f) = msg.get::<RequestedAddressFamily>() {
            let Ok(RequestedAddressFamily(f)) = f else {
                return self.reject(req, 400);
            };
            let has = self.table.get(id).is_some_and(|a| {
                a.relays
                    .iter()
                    .flatten()
                    .any(|r| Family::of(r.local.ip()) == f)
            });
            if !has {
                return self.reject(req, 443);
            }
        }
        let lifetime = if requested == Some(0) {
            self.close(now, id, CloseReason::Deleted);
            0
        } else {
            let lifetime = self.grant_lifetime(now, requested, auth.expiry);
            let expires = now + Duration::from_secs(u64::from(lifetime));
            if let Some(a) = self.table.get_mut(id) {
                a.expires = expires;
                a.credential_expiry = auth.expiry;
            }
            // A shorter lifetime moves the deadline earlier than the queued one.
            self.table.schedule(id, expires);
            lifetime
        };
        let mut r = self.answer(req, Class::Success);
        r.b.add(&Lifetime(lifetime));
        r.finish()
    }

    pub(super) fn close(&mut self, now: Instant, id: AllocId, reason: CloseReason) {
        let Some(a) = self.table.remove(id) else {
            return;
        };
        self.offload_forget(&a);
        for r in a.relays.iter().flatten() {
            self.release_relay(r.id, r.local);
        }
        self.quota.release(&a.username, a.tuple.client.ip());
        if a.tcp.is_some() {
            self.tcp_allocation_closed(a.id);
        }
        let budget = self.budget_now(now);
        self.emit(Event::AllocationClosed {
            allocation: a.summary(now, budget),
            reason,
        });
    }

    /// The client's stream closed: its allocation goes with it (RFC 8656 §3.1).
    pub fn connection_closed(&mut self, now: Instant, tuple: FiveTuple) {
        if let Some(id) = self.table.by_tuple(&tuple) {
            self.close(now, id, CloseReason::ConnectionClosed);
        }
    }
}
