//! RESERVATION-TOKENs, shared by all shards.
//!
//! EVEN-PORT with R = 1 reserves the port after the allocated one, and the client
//! redeems it with a second Allocate (RFC 8656 §7.2), usually from another source
//! port or TCP connection. SO_REUSEPORT may hand that request to another shard, so
//! the token table is process-wide. It is touched only by those two Allocates and by
//! expiry, never per packet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Outstanding reservations: token → (reserved relay address, expiry).
#[derive(Debug, Default)]
pub struct Reservations {
    inner: Mutex<HashMap<[u8; 8], (SocketAddr, Instant)>>,
}

impl Reservations {
    pub fn insert(&self, token: [u8; 8], addr: SocketAddr, expires: Instant) {
        self.lock().insert(token, (addr, expires));
    }

    /// Removes and returns a reservation (whether or not it has expired).
    pub fn take(&self, token: &[u8; 8]) -> Option<(SocketAddr, Instant)> {
        self.lock().remove(token)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 8], (SocketAddr, Instant)>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}
