//! Rooms: who is in each, in join order, and the ids they were given.

use std::collections::{BTreeMap, BTreeSet};

use slab::Slab;

use super::action::ConnId;
use super::state::{ImportError, Reader, Writer};

/// A room's slot in [`Rooms`]: valid while the room has members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RoomKey(usize);

/// Where a member sits: its room and the id the room gave it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seat {
    pub(crate) room: RoomKey,
    pub(crate) id: u64,
}

impl Seat {
    pub(crate) fn save(self, w: &mut Writer) {
        w.len(self.room.0);
        w.u64(self.id);
    }

    pub(crate) fn load(r: &mut Reader<'_>) -> Result<Self, ImportError> {
        Ok(Self { room: RoomKey(r.index()?), id: r.u64()? })
    }
}

/// A client in a room.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    /// The id the room gave it.
    pub(crate) id: u64,
    /// Its connection.
    pub(crate) conn: ConnId,
    /// Who it is to the game's backend, if admission said.
    pub(crate) subject: Option<Box<str>>,
}

/// One room: members sorted by id, which is also join order.
#[derive(Debug)]
pub(crate) struct Room {
    /// The request target that names it.
    pub(crate) name: Box<[u8]>,
    next_id: u64,
    members: Vec<Member>,
}

impl Room {
    /// The members, in join order.
    pub(crate) fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this id.
    pub(crate) fn find(&self, id: u64) -> Option<&Member> {
        self.members.binary_search_by_key(&id, |m| m.id).ok().map(|i| &self.members[i])
    }
}

/// Every live room, by slot and by name. An ordered map rather than a hash map
/// keeps the core free of randomness.
#[derive(Debug, Default)]
pub(crate) struct Rooms {
    rooms: Slab<Room>,
    by_name: BTreeMap<Box<[u8]>, usize>,
}

impl Rooms {
    /// Adds `conn` to the room named `name`, creating it if it is new.
    pub(crate) fn join(&mut self, name: &[u8], conn: ConnId, subject: Option<Box<str>>) -> Seat {
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
        room.members.push(Member { id, conn, subject });
        Seat { room: RoomKey(key), id }
    }

    /// Removes the member at `seat`; the room goes when it empties, and then
    /// this returns true.
    pub(crate) fn leave(&mut self, seat: Seat) -> bool {
        let room = self.rooms.get_mut(seat.room.0).expect("a seat's room lives while the seat is taken");
        if let Ok(i) = room.members.binary_search_by_key(&seat.id, |m| m.id) {
            room.members.remove(i);
        }
        if !room.members.is_empty() {
            return false;
        }
        let room = self.rooms.remove(seat.room.0);
        self.by_name.remove(&room.name);
        true
    }

    /// The member at `seat` is now `conn`, and `subject` if one is given.
    pub(crate) fn rebind(&mut self, seat: Seat, conn: ConnId, subject: Option<Box<str>>) {
        let Some(room) = self.rooms.get_mut(seat.room.0) else { return };
        if let Ok(i) = room.members.binary_search_by_key(&seat.id, |m| m.id) {
            room.members[i].conn = conn;
            if subject.is_some() {
                room.members[i].subject = subject;
            }
        }
    }

    /// The room at `key`, if it still has members.
    pub(crate) fn get(&self, key: RoomKey) -> Option<&Room> {
        self.rooms.get(key.0)
    }

    /// The room named `name`.
    pub(crate) fn by_name(&self, name: &[u8]) -> Option<&Room> {
        self.by_name.get(name).and_then(|&k| self.rooms.get(k))
    }

    /// Every room with its key, in slot order.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (RoomKey, &Room)> {
        self.rooms.iter().map(|(k, r)| (RoomKey(k), r))
    }

    /// Every room, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Room> {
        self.by_name.values().map(|&k| &self.rooms[k])
    }

    /// Rooms whose names start with `prefix`, in name order.
    pub(crate) fn with_prefix<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a Room> {
        self.by_name
            .range(Box::<[u8]>::from(prefix)..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, &k)| &self.rooms[k])
    }

    /// How many rooms have clients.
    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// Gives back the memory of rooms that are gone.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.rooms.shrink_to_fit();
    }

    /// Every room at its slot, members in join order.
    pub(crate) fn save(&self, w: &mut Writer) {
        w.len(self.rooms.len());
        for (key, room) in &self.rooms {
            w.len(key);
            w.bytes(&room.name);
            w.u64(room.next_id);
            w.len(room.members.len());
            for m in &room.members {
                w.u64(m.id);
                w.conn(m.conn);
                w.opt(m.subject.as_deref(), |w, s| w.bytes(s.as_bytes()));
            }
        }
    }

    /// The rooms [`save`](Self::save) wrote, each at its slot, which must be
    /// below `max_slot` (what the relay's caps allow it to have reached).
    pub(crate) fn load(r: &mut Reader<'_>, max_slot: usize) -> Result<Self, ImportError> {
        let corrupt = ImportError::Corrupt;
        let count = r.len()?;
        let mut rooms = Vec::with_capacity(count);
        let mut by_name = BTreeMap::new();
        let mut slots = BTreeSet::new();
        for _ in 0..count {
            let key = r.index()?;
            let name: Box<[u8]> = r.bytes()?.into();
            let next_id = r.u64()?;
            let n = r.len()?;
            let mut members: Vec<Member> = Vec::with_capacity(n);
            for _ in 0..n {
                let (id, conn) = (r.u64()?, r.conn()?);
                let subject = r.opt(|r| r.string())?.map(String::into_boxed_str);
                if id == 0 || id >= next_id || members.last().is_some_and(|m| m.id >= id) {
                    return Err(corrupt("member ids out of order or past the room's next id"));
                }
                members.push(Member { id, conn, subject });
            }
            if members.is_empty() || key >= max_slot {
                return Err(corrupt("an empty room, or a room slot past the caps"));
            }
            if by_name.insert(name.clone(), key).is_some() || !slots.insert(key) {
                return Err(corrupt("two rooms with one name or one slot"));
            }
            rooms.push((key, Room { name, next_id, members }));
        }
        Ok(Self { rooms: rooms.into_iter().collect(), by_name })
    }

    /// Forgets every room.
    pub(crate) fn clear(&mut self) {
        self.rooms.clear();
        self.by_name.clear();
    }
}
