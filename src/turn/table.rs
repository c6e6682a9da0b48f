//! The allocation table: allocations in a slab, indexed by 5-tuple and by relay
//! socket, with one expiry queue for all of them.
//!
//! The queue holds one entry per allocation and deadline; an entry whose deadline no
//! longer matches the allocation's (because it was refreshed, or the allocation was
//! freed and its slot reused, which bumps the generation) is skipped when it comes
//! up. That keeps every timer in one `BinaryHeap` instead of a task per timer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::allocation::Allocation;
use super::{FiveTuple, RelayId};

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
}

/// All allocations of one shard.
#[derive(Default)]
pub struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_tuple: HashMap<FiveTuple, AllocId>,
    by_relay: HashMap<RelayId, AllocId>,
    queue: BinaryHeap<Reverse<(Instant, AllocId)>>,
    /// The deadline each live allocation is queued for.
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
            self.by_relay.insert(r.id, id);
        }
        self.queue.push(Reverse((alloc.next_deadline(), id)));
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
        self.by_relay.get(&relay).copied()
    }

    /// Queues `deadline` for `id`: call after anything that may have moved the
    /// allocation's next deadline earlier.
    pub fn schedule(&mut self, id: AllocId, deadline: Instant) {
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
        self.free.push(id.index);
        self.by_tuple.remove(&alloc.tuple);
        for r in alloc.relays.iter().flatten() {
            self.by_relay.remove(&r.id);
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
    /// entries for freed slots. The caller sweeps it and re-queues or removes it.
    pub fn pop_due(&mut self, now: Instant) -> Option<AllocId> {
        while let Some(Reverse((t, id))) = self.queue.peek().copied() {
            if t > now {
                return None;
            }
            self.queue.pop();
            if self.get(id).is_some() {
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
