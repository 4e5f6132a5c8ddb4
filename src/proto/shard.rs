//! Shards: one relay core per thread, each serving whole rooms. Which shard
//! serves a room is a function of its name alone, so every connection of a
//! room, whichever thread accepts it, ends up on the same core, and an
//! embedder running its own threads can place rooms the same way.

/// Which of a process's relay cores this one is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This core's number, from 0.
    pub index: usize,
    /// How many cores share the rooms.
    pub count: usize,
}

impl Shard {
    /// The only core of a process.
    pub const ALONE: Shard = Shard { index: 0, count: 1 };
}

/// The shard, of `shards`, that serves the room named `room` (the request
/// target, byte for byte): 64-bit FNV-1a of the name, then a final mix, modulo
/// the count. The function is fixed, so every process and version agrees.
pub fn shard_of(room: &[u8], shards: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in room {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly; fold the high ones in before the modulo.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h % shards.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_spread_evenly_and_the_function_never_changes() {
        // Fixed values: a change here would move rooms between shards of
        // processes built from different versions.
        assert_eq!(shard_of(b"/ws-relay/spacewar", 4), shard_of(b"/ws-relay/spacewar", 4));
        assert_eq!(
            [shard_of(b"", 7), shard_of(b"/ws-relay/spacewar", 7), shard_of(b"/ws-relay/spacewar?game=1", 7)],
            [0, 2, 3]
        );
        for shards in [2usize, 3, 4, 16] {
            let mut counts = vec![0usize; shards];
            for i in 0..10_000 {
                counts[shard_of(format!("/ws-relay/load-{i}").as_bytes(), shards)] += 1;
            }
            let even = 10_000 / shards;
            assert!(counts.iter().all(|&c| c.abs_diff(even) < even / 10), "{shards}: {counts:?}");
        }
        assert_eq!(shard_of(b"/anything", 1), 0);
    }
}
