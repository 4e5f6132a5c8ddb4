//! The caps that hold for a whole process when several cores (shards) serve
//! it: clients, rooms, and clients per address. Each is a counter shared by
//! every shard's [`Relay`](crate::Relay), taken when a client is admitted or
//! a room opens and given back when it closes — never per message. A relay
//! on its own has a budget nobody else shares.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The process-wide counters. Clone it to share it between shards.
#[derive(Clone, Debug, Default)]
pub struct Budget(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    clients: AtomicUsize,
    rooms: AtomicUsize,
    /// Clients by address; an ordered map keeps the core free of randomness.
    per_address: Mutex<BTreeMap<IpAddr, usize>>,
}

impl Budget {
    /// A budget with nothing taken.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients admitted and not yet gone, in every shard sharing this budget.
    pub fn clients(&self) -> usize {
        self.0.clients.load(Ordering::Relaxed)
    }

    /// Rooms open in every shard sharing this budget.
    pub fn rooms(&self) -> usize {
        self.0.rooms.load(Ordering::Relaxed)
    }

    /// Takes one client if fewer than `max` are admitted.
    pub(crate) fn take_client(&self, max: usize) -> bool {
        take(&self.0.clients, max)
    }

    pub(crate) fn give_client(&self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes one room if fewer than `max` are open.
    pub(crate) fn take_room(&self, max: usize) -> bool {
        take(&self.0.rooms, max)
    }

    pub(crate) fn give_room(&self) {
        self.0.rooms.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes one client from `ip` if fewer than `max` are admitted from it.
    pub(crate) fn take_address(&self, ip: IpAddr, max: usize) -> bool {
        let mut map = self.0.per_address.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(ip).or_default();
        if *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn give_address(&self, ip: IpAddr) {
        let mut map = self.0.per_address.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// Increments `counter` unless that would pass `max`; never overshoots, however
/// many shards take at once.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_share_one_cap_and_never_overshoot() {
        let budget = Budget::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = budget.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.take_client(1500)).count())
            })
            .collect();
        let taken: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!((taken, budget.clients()), (1500, 1500));
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        assert!(budget.take_address(ip, 2) && budget.take_address(ip, 2) && !budget.take_address(ip, 2));
        budget.give_address(ip);
        assert!(budget.take_address(ip, 2));
    }
}
