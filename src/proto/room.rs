//! Rooms: who is in each, in join order, and the ids they were given.

use std::collections::BTreeMap;

use slab::Slab;

use super::action::ConnId;

/// A client in a room.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    /// The id the room gave it.
    pub id: u64,
    /// Its connection.
    pub conn: ConnId,
}

/// One room: members sorted by id, which is also join order.
#[derive(Debug)]
pub struct Room {
    /// The request target that names it.
    pub name: Box<[u8]>,
    next_id: u64,
    members: Vec<Member>,
}

impl Room {
    /// The members, in join order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id.
    pub fn find(&self, id: u64) -> Option<Member> {
        self.members.binary_search_by_key(&id, |m| m.id).ok().map(|i| self.members[i])
    }
}

/// Every live room, by slot and by name. An ordered map rather than a hash map
/// keeps the core free of randomness.
#[derive(Debug, Default)]
pub struct Rooms {
    rooms: Slab<Room>,
    by_name: BTreeMap<Box<[u8]>, usize>,
}

impl Rooms {
    /// Adds `conn` to the room named `name`, creating it if it is new; returns
    /// the room's slot and the new member's id.
    pub fn join(&mut self, name: &[u8], conn: ConnId) -> (usize, u64) {
        let key = match self.by_name.get(name) {
            Some(&key) => key,
            None => {
                let key = self.rooms.insert(Room { name: name.into(), next_id: 1, members: Vec::new() });
                self.by_name.insert(name.into(), key);
                key
            }
        };
        let room = &mut self.rooms[key];
        let id = room.next_id;
        room.next_id += 1;
        room.members.push(Member { id, conn });
        (key, id)
    }

    /// Removes member `id` from room `key`; the room goes when it empties.
    pub fn leave(&mut self, key: usize, id: u64) {
        let Some(room) = self.rooms.get_mut(key) else { return };
        if let Ok(i) = room.members.binary_search_by_key(&id, |m| m.id) {
            room.members.remove(i);
        }
        if room.members.is_empty() {
            let room = self.rooms.remove(key);
            self.by_name.remove(&room.name);
        }
    }

    /// The room in slot `key`.
    pub fn get(&self, key: usize) -> Option<&Room> {
        self.rooms.get(key)
    }

    /// The room named `name`.
    pub fn by_name(&self, name: &[u8]) -> Option<&Room> {
        self.by_name.get(name).and_then(|&k| self.rooms.get(k))
    }

    /// How many rooms have clients.
    pub fn len(&self) -> usize {
        self.rooms.len()
    }

    /// True when no room has clients.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
    }

    /// Forgets every room.
    pub fn clear(&mut self) {
        self.rooms.clear();
        self.by_name.clear();
    }
}
