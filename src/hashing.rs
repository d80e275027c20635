//! The hasher of the engine's in-memory maps: trace and span ids, session
//! numbers, search terms.
//!
//! The standard library's SipHash-1-3 cost about 200 instructions for each
//! 16-byte trace id; on the write path, where every span is looked up in
//! two or three maps, it was a seventh of the appending thread's
//! instructions and a twentieth of the indexing thread's. The keys here are
//! short and fixed-size, so each 8-byte word is folded into the state with
//! one 64 x 64 -> 128-bit multiply whose halves are xored (every input bit
//! reaches the high half, which the xor brings down to the bucket bits).
//!
//! Ids come from clients, so the state starts from a key drawn at random
//! for each map (from the standard library's `RandomState`): ids chosen to
//! collide in one process do not predict buckets in another or in another
//! map. This is the resistance of common fast hashers (folded multiply with
//! a random seed), not SipHash's: enough here, where no reply shows a
//! client a map's order (what a search reads from a set is sorted).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};

/// A `HashMap` hashed by [`Keyed`].
pub(crate) type FastMap<K, V> = HashMap<K, V, Keyed>;

/// A `HashSet` hashed by [`Keyed`].
pub(crate) type FastSet<K> = HashSet<K, Keyed>;

/// Multiplier of each word (the 64-bit golden ratio, odd).
const WORD: u64 = 0x9e37_79b9_7f4a_7c15;
/// Multiplier of the finish (an odd constant of splitmix64).
const FINISH: u64 = 0xbf58_476d_1ce4_e5b9;

/// Builds [`KeyedHasher`]s from one random key (see the module docs).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Keyed(u64);

thread_local! {
    /// The next map key of this thread: drawn once from the standard
    /// library's `RandomState`, stepped for each map (a set of span ids is
    /// made for every trace, so a SipHash per map would show).
    static NEXT_KEY: std::cell::Cell<u64> = std::cell::Cell::new(
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64),
    );
}

impl Default for Keyed {
    fn default() -> Self {
        let key = NEXT_KEY.with(|next| {
            let k = next.get();
            next.set(k.wrapping_add(WORD));
            k
        });
        Keyed(fold(key, FINISH))
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;
    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher(self.0)
    }
}

/// 128-bit product of `a` and `b`, its two halves xored.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The hasher of [`Keyed`]: its state, started from the map's key.
#[derive(Debug)]
pub(crate) struct KeyedHasher(u64);

impl KeyedHasher {
    #[inline]
    fn word(&mut self, w: u64) {
        self.0 = fold(self.0 ^ w, WORD);
    }
}

impl Hasher for KeyedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        fold(self.0, FINISH)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut le = [0u8; 8];
            le.copy_from_slice(w);
            self.word(u64::from_le_bytes(le));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut le = [0u8; 8];
            le[..rest.len()].copy_from_slice(rest);
            // The tail's length in the top byte keeps "ab" and "ab\0"
            // apart (a tail has at most 7 bytes, so the top byte is free).
            le[7] = rest.len() as u8;
            self.word(u64::from_le_bytes(le));
        }
    }

    #[inline]
    fn write_u8(&mut self, n: u8) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u16(&mut self, n: u16) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.word(u64::from(n));
    }

    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.word(n);
    }

    #[inline]
    fn write_usize(&mut self, n: usize) {
        self.word(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_with(key: u64, v: &impl std::hash::Hash) -> u64 {
        Keyed(key).hash_one(v)
    }

    #[test]
    fn equal_keys_hash_equal_and_maps_work() {
        let k = Keyed::default();
        assert_eq!(k.hash_one([7u8; 16]), k.hash_one([7u8; 16]));
        let mut m: FastMap<[u8; 16], u64> = FastMap::default();
        for i in 0..10_000u64 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            m.insert(id, i);
        }
        assert_eq!(m.len(), 10_000);
        for i in 0..10_000u64 {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_le_bytes());
            assert_eq!(m.get(&id), Some(&i));
        }
        let mut s: FastSet<Vec<u8>> = FastSet::default();
        assert!(s.insert(b"ab".to_vec()));
        assert!(s.insert(b"ab\0".to_vec()));
        assert!(!s.insert(b"ab".to_vec()));
    }

    #[test]
    fn the_key_changes_every_hash_and_a_tail_is_not_its_padding() {
        let ids: Vec<[u8; 16]> = (0..64u8).map(|i| [i; 16]).collect();
        for id in &ids {
            assert_ne!(hash_with(1, id), hash_with(2, id));
        }
        let mut a = KeyedHasher(3);
        a.write(b"abc");
        let mut b = KeyedHasher(3);
        b.write(b"abc\0");
        assert_ne!(a.finish(), b.finish());
        // Two fresh builders draw different keys.
        assert_ne!(Keyed::default().0, Keyed::default().0);
    }

    #[test]
    fn sequential_ids_spread_over_the_bucket_and_tag_bits() {
        // hashbrown takes the bucket from the low bits and a tag from the
        // top seven: ids differing in one byte must spread over both.
        let k = Keyed(0x1234_5678);
        let mut low = std::collections::BTreeSet::new();
        let mut top = std::collections::BTreeSet::new();
        for i in 0..1024u64 {
            let h = k.hash_one(i);
            low.insert(h & 1023);
            top.insert(h >> 57);
        }
        assert!(low.len() > 550, "{} of 1024 low-bit buckets", low.len());
        assert_eq!(top.len(), 128);
    }
}
