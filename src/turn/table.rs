//! The allocation table: allocations in a slab, indexed by 5-tuple and by relay
//! socket, with one expiry queue for all of them.
//!
//! Each allocation has at most one live queue entry: the earliest deadline it is
//! queued for, remembered in its slot. Scheduling a later deadline than the queued
//! one is a no-op (the earlier entry fires first and the caller re-queues the next
//! deadline then); scheduling an earlier one pushes a new entry and makes the old one
//! stale. A stale entry (its deadline no longer the slot's, or the slot freed and
//! reused, which bumps the generation) is skipped when it comes up. That keeps every
//! timer in one `BinaryHeap` instead of a task per timer, and the heap's size bounded
//! by the number of deadline moves rather than growing with every request.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use super::allocation::Allocation;
use super::{FastMap, FiveTuple, RelayId};

/// Index of an allocation in the slab, with the generation of the slot so that a
/// stale index (or queue entry) never reaches a newer allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct AllocId {
    pub index: u32,
    pub generation: u32,
}

struct Slot {
    generation: u32,
    alloc: Option<Allocation>,
    /// The deadline of this allocation's live queue entry, if it has one.
    queued: Option<Instant>,
}

/// All allocations of one shard.
#[derive(Default)]
pub struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Looked up for every client packet: a fast seeded hash (see `FastMap`).
    by_tuple: FastMap<FiveTuple, AllocId>,
    /// Indexed by `RelayId`, which relay binders hand out densely from 0: a
    /// peer packet finds its allocation with one bounds-checked load.
    by_relay: Vec<Option<(RelayId, AllocId)>>,
    queue: BinaryHeap<Reverse<(Instant, AllocId)>>,
    len: usize,
}

impl Table {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Inserts an allocation, indexes it and queues its first deadline.
    pub fn insert(&mut self, alloc: Allocation) -> AllocId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    alloc: None,
                    queued: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        let id = AllocId {
            index,
            generation: slot.generation,
        };
        self.by_tuple.insert(alloc.tuple, id);
        for r in alloc.relays.iter().flatten() {
            let i = r.id.index as usize;
            if self.by_relay.len() <= i {
                self.by_relay.resize(i + 1, None);
            }
            self.by_relay[i] = Some((r.id, id));
        }
        let deadline = alloc.next_deadline();
        self.queue.push(Reverse((deadline, id)));
        slot.queued = Some(deadline);
        slot.alloc = Some(alloc);
        self.len += 1;
        id
    }

    pub fn get(&self, id: AllocId) -> Option<&Allocation> {
        let slot = self.slots.get(id.index as usize)?;
        (slot.generation == id.generation).then_some(slot.alloc.as_ref()?)
    }

    pub fn get_mut(&mut self, id: AllocId) -> Option<&mut Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        slot.alloc.as_mut()
    }

    pub fn by_tuple(&self, tuple: &FiveTuple) -> Option<AllocId> {
        self.by_tuple.get(tuple).copied()
    }

    pub fn by_relay(&self, relay: RelayId) -> Option<AllocId> {
        match self.by_relay.get(relay.index as usize) {
            Some(Some((r, id))) if *r == relay => Some(*id),
            _ => None,
        }
    }

    /// Queues `deadline` for `id`: call after anything that may have moved the
    /// allocation's next deadline earlier. A no-op when an entry at or before
    /// `deadline` is queued already.
    pub fn schedule(&mut self, id: AllocId, deadline: Instant) {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return;
        };
        if slot.generation != id.generation || slot.alloc.is_none() {
            return;
        }
        if slot.queued.is_some_and(|q| q <= deadline) {
            return;
        }
        slot.queued = Some(deadline);
        self.queue.push(Reverse((deadline, id)));
    }

    /// Removes an allocation and its indexes; returns it.
    pub fn remove(&mut self, id: AllocId) -> Option<Allocation> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.generation != id.generation {
            return None;
        }
        let alloc = slot.alloc.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.queued = None;
        self.free.push(id.index);
        self.by_tuple.remove(&alloc.tuple);
        for r in alloc.relays.iter().flatten() {
            if let Some(e) = self.by_relay.get_mut(r.id.index as usize) {
                *e = None;
            }
        }
        self.len -= 1;
        Some(alloc)
    }

    /// The earliest queued deadline (possibly stale, which only means an early
    /// wake-up that finds nothing to do).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, _))| *t)
    }

    /// Pops the next allocation whose queued deadline is due at `now`, skipping
    /// stale entries. The allocation is then no longer queued: the caller sweeps it
    /// and re-queues or removes it.
    pub fn pop_due(&mut self, now: Instant) -> Option<AllocId> {
        while let Some(Reverse((t, id))) = self.queue.peek().copied() {
            if t > now {
                return None;
            }
            self.queue.pop();
            let Some(slot) = self.slots.get_mut(id.index as usize) else {
                continue;
            };
            if slot.generation == id.generation && slot.alloc.is_some() && slot.queued == Some(t) {
                slot.queued = None;
                return Some(id);
            }
        }
        None
    }

    /// Iterates over all live allocations.
    pub fn iter(&self) -> impl Iterator<Item = (AllocId, &Allocation)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.alloc.as_ref().map(|a| {
                (
                    AllocId {
                        index: i as u32,
                        generation: s.generation,
                    },
                    a,
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::stun::TransactionId;
    use crate::turn::allocation::Traffic;
    use crate::turn::Transport;

    fn alloc(now: Instant, port: u16) -> Allocation {
        let a: SocketAddr = ([192, 0, 2, 1], port).into();
        Allocation {
            id: u64::from(port),
            realm: "r".into(),
            started_unix: 0,
            tuple: FiveTuple {
                transport: Transport::Udp,
                client: a,
                server: ([192, 0, 2, 2], 3478).into(),
            },
            username: "u".into(),
            relays: [None, None],
            expires: now + Duration::from_secs(600),
            credential_expiry: None,
            allocate_tid: TransactionId([0; 12]),
            granted_lifetime: 600,
            reservation_token: None,
            address_error: None,
            permissions: Vec::new(),
            channels: Vec::new(),
            dont_fragment: false,
            created: now,
            traffic: Traffic::default(),
            peers_seen: 0,
            to_peer_bandwidth: Default::default(),
            to_client_bandwidth: Default::default(),
            budget: Default::default(),
            tcp: None,
        }
    }

    #[test]
    fn one_live_queue_entry_per_allocation() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let id = t.insert(alloc(t0, 1));
        let d = t0 + Duration::from_secs(300);
        // Scheduling the same or a later deadline again adds nothing.
        for _ in 0..100 {
            t.schedule(id, d);
            t.schedule(id, t0 + Duration::from_secs(900));
        }
        assert_eq!(t.queue.len(), 2);
        assert_eq!(t.next_deadline(), Some(d));
        assert_eq!(t.pop_due(d), Some(id));
        // The stale 600 s entry is skipped once the allocation is unqueued.
        assert_eq!(t.pop_due(t0 + Duration::from_secs(600)), None);
        assert!(t.queue.is_empty());
        // Re-queued, then moved earlier: only the earlier entry is live.
        t.schedule(id, t0 + Duration::from_secs(800));
        t.schedule(id, t0 + Duration::from_secs(700));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(800)), Some(id));
        assert_eq!(t.pop_due(t0 + Duration::from_secs(800)), None);
    }

    #[test]
    fn entries_of_a_freed_slot_never_reach_its_new_tenant() {
        let t0 = Instant::now();
        let mut t = Table::default();
        let old = t.insert(alloc(t0, 1));
        t.remove(old);
        t.schedule(old, t0);
        let new = t.insert(alloc(t0, 2));
        assert_eq!(new.index, old.index);
        assert_ne!(new.generation, old.generation);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(599)), None);
        assert_eq!(t.pop_due(t0 + Duration::from_secs(600)), Some(new));
        assert_eq!(t.by_tuple(&alloc(t0, 1).tuple), None);
    }
}
