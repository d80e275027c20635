//! The search index: which sessions may contain a text, by trigram.
//!
//! Root inputs and outputs are lowercased (full Unicode lowercase) and cut
//! into overlapping 3-character trigrams, each named by a 32-bit code: the
//! three 7-bit characters packed exactly when all are ASCII, else a hash
//! with the top bit set. For each (project, trigram code) the index keeps
//! the set of session numbers whose turns contain it, in chunks of 4,096
//! sessions: key `project (4 B BE) ‖ trigram code (4 B BE) ‖ chunk (4 B
//! BE)`, value either a sorted array of 16-bit offsets (tag 0) or a
//! 4,096-bit bitmap (tag 1), whichever is smaller. Sets only grow: when a
//! turn's text changes or a trace leaves a session, stale members stay, and
//! hashed codes may collide, so the index gives a superset; every candidate
//! is verified against the session's turns before it is shown.
//!
//! Appends do not write postings one by one: each batch's postings are
//! merged into an in-memory [`PostingBuffer`] that searches consult next to
//! the table, and the buffer is written out at checkpoints (and when it
//! grows large), so a common trigram costs one table write per checkpoint,
//! not one per batch. After a crash the buffer is rebuilt by the replay
//! from the checkpoint, like every other index change.

use std::collections::{BTreeMap, HashMap};

/// Sessions per chunk of a posting set.
pub(crate) const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const BITMAP_BYTES: usize = CHUNK / 8;

/// A trigram code (see the module docs).
pub(crate) type Trigram = u32;

/// Key of a posting chunk.
pub(crate) fn posting_key(project_id: u32, tri: Trigram, chunk: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&project_id.to_be_bytes());
    k[4..8].copy_from_slice(&tri.to_be_bytes());
    k[8..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The chunk number stored in a posting key.
pub(crate) fn key_chunk(k: &[u8; 12]) -> u32 {
    let mut c = [0u8; 4];
    c.copy_from_slice(&k[8..]);
    u32::from_be_bytes(c)
}

fn trigram_code(a: char, b: char, c: char) -> Trigram {
    let (a, b, c) = (u32::from(a), u32::from(b), u32::from(c));
    if a < 128 && b < 128 && c < 128 {
        return (a << 14) | (b << 7) | c;
    }
    let mut h = a.wrapping_mul(0x9E37_79B1);
    h = (h ^ b).wrapping_mul(0x85EB_CA77).rotate_left(13);
    h = (h ^ c).wrapping_mul(0xC2B2_AE3D);
    h ^= h >> 16;
    h | 0x8000_0000
}

/// Normalizes text for search: full Unicode lowercase.
pub(crate) fn normalize(text: &str) -> String {
    text.to_lowercase()
}

/// Trigram codes of already-normalized text (may repeat).
pub(crate) fn trigrams(normalized: &str, out: &mut Vec<Trigram>) {
    let mut it = normalized.chars();
    let (Some(mut a), Some(mut b)) = (it.next(), it.next()) else {
        return;
    };
    for c in it {
        out.push(trigram_code(a, b, c));
        (a, b) = (b, c);
    }
}

/// A set of session offsets within one chunk: a sorted array while
/// small, a bitmap once the array would be larger than the bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChunkSet {
    /// Sorted, distinct offsets.
    Sparse(Vec<u16>),
    /// Bit `i` set when offset `i` is present.
    Dense(Box<[u8; BITMAP_BYTES]>),
}

impl Default for ChunkSet {
    fn default() -> Self {
        ChunkSet::Sparse(Vec::new())
    }
}

impl ChunkSet {
    /// Decodes a stored value; unknown or damaged encodings decode to `None`.
    pub fn decode(bytes: &[u8]) -> Option<ChunkSet> {
        let (&tag, body) = bytes.split_first()?;
        match tag {
            0 => {
                if !body.len().is_multiple_of(2) {
                    return None;
                }
                let v: Vec<u16> = body
                    .chunks_exact(2)
                    .map(|p| u16::from_le_bytes([p[0], p[1]]))
                    .collect();
                // Must be strictly increasing and inside the chunk.
                let ordered = v.windows(2).all(|w| w[0] < w[1]);
                let in_range = v.last().is_none_or(|&x| usize::from(x) < CHUNK);
                (ordered && in_range).then_some(ChunkSet::Sparse(v))
            }
            1 => {
                let bits: [u8; BITMAP_BYTES] = body.try_into().ok()?;
                Some(ChunkSet::Dense(Box::new(bits)))
            }
            _ => None,
        }
    }

    /// Encodes with the tag byte.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            ChunkSet::Sparse(v) => {
                let mut out = Vec::with_capacity(1 + v.len() * 2);
                out.push(0);
                for x in v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }
            ChunkSet::Dense(bits) => {
                let mut out = Vec::with_capacity(1 + BITMAP_BYTES);
                out.push(1);
                out.extend_from_slice(bits.as_slice());
                out
            }
        }
    }

    /// Adds offsets; returns true when the set grew.
    pub fn extend_iter(&mut self, offsets: impl Iterator<Item = u16> + Clone) -> bool {
        let mut grew = false;
        if let ChunkSet::Sparse(v) = self {
            for o in offsets.clone() {
                if let Err(at) = v.binary_search(&o) {
                    v.insert(at, o);
                    grew = true;
                }
            }
            if v.len() * 2 < BITMAP_BYTES {
                return grew;
            }
            let mut bits = Box::new([0u8; BITMAP_BYTES]);
            for &o in v.iter() {
                set_bit(&mut bits, o);
            }
            *self = ChunkSet::Dense(bits);
            return grew;
        }
        if let ChunkSet::Dense(bits) = self {
            for o in offsets {
                grew |= set_bit(bits, o);
            }
        }
        grew
    }

    /// Adds every member of `other`; returns true when the set grew.
    pub fn union(&mut self, other: &ChunkSet) -> bool {
        match other {
            ChunkSet::Sparse(v) => self.extend_iter(v.iter().copied()),
            ChunkSet::Dense(theirs) => {
                if let ChunkSet::Sparse(v) = self {
                    let mut bits = Box::new([0u8; BITMAP_BYTES]);
                    for &o in v.iter() {
                        set_bit(&mut bits, o);
                    }
                    *self = ChunkSet::Dense(bits);
                }
                let mut grew = false;
                if let ChunkSet::Dense(mine) = self {
                    for (m, t) in mine.iter_mut().zip(theirs.iter()) {
                        grew |= (*t & !*m) != 0;
                        *m |= *t;
                    }
                }
                grew
            }
        }
    }

    /// True when the offset is in the set.
    pub fn contains(&self, offset: u16) -> bool {
        match self {
            ChunkSet::Sparse(v) => v.binary_search(&offset).is_ok(),
            ChunkSet::Dense(bits) => bits
                .get(usize::from(offset / 8))
                .is_some_and(|b| b & (1 << (offset % 8)) != 0),
        }
    }

    /// Session numbers in this chunk.
    pub fn sessions(&self, chunk: u32) -> Vec<u64> {
        let base = u64::from(chunk) << CHUNK_BITS;
        match self {
            ChunkSet::Sparse(v) => v.iter().map(|o| base | u64::from(*o)).collect(),
            ChunkSet::Dense(bits) => (0..CHUNK as u64)
                .filter(|i| {
                    bits.get((i / 8) as usize)
                        .is_some_and(|b| b & (1 << (i % 8)) != 0)
                })
                .map(|i| base | i)
                .collect(),
        }
    }
}

/// Sets a bit; returns true when it was clear.
fn set_bit(bits: &mut [u8; BITMAP_BYTES], offset: u16) -> bool {
    match bits.get_mut(usize::from(offset / 8)) {
        Some(b) => {
            let mask = 1 << (offset % 8);
            let was_clear = *b & mask == 0;
            *b |= mask;
            was_clear
        }
        None => false,
    }
}

/// Splits a session number into (chunk, offset).
pub(crate) fn chunk_of(session: u64) -> (u32, u16) {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "session numbers stay below 2^44; the offset is masked to 12 bits"
    )]
    let parts = (
        (session >> CHUNK_BITS) as u32,
        (session & (CHUNK as u64 - 1)) as u16,
    );
    parts
}

/// Postings queued by one batch: (project, trigram, session); unsorted,
/// may repeat.
pub(crate) type BatchPostings = Vec<(u32, Trigram, u64)>;

/// Queues the trigrams of a turn's texts for a session.
pub(crate) fn queue(batch: &mut BatchPostings, project_id: u32, session: u64, texts: &[&str]) {
    let mut tris = Vec::new();
    for t in texts {
        trigrams(&normalize(t), &mut tris);
    }
    tris.sort_unstable();
    tris.dedup();
    batch.extend(tris.into_iter().map(|t| (project_id, t, session)));
}

/// A multiply-rotate hasher for small internal integer keys (the default
/// SipHash dominated the profile of postings merges). `finish` mixes the
/// high bits into the low ones (the splitmix64 finalizer): the multiply
/// alone leaves the low bits of the hash a function of the low bits of the
/// key, so keys that differ only in their high bytes (big-endian counters,
/// for example) would all land in one bucket and make a hash map
/// quadratic. Not for keys an attacker chooses (span and trace ids use the
/// standard library's randomly keyed hasher).
#[derive(Default, Clone, Copy)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for b in chunks.remainder() {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A `HashMap` with [`IntHasher`].
pub(crate) type IntMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

/// Postings not yet written to the search table.
#[derive(Debug, Default)]
pub(crate) struct PostingBuffer {
    map: IntMap<(u32, Trigram), BTreeMap<u32, ChunkSet>>,
    chunks: usize,
}

impl PostingBuffer {
    /// Merges one batch's postings.
    pub fn merge(&mut self, batch: BatchPostings) {
        for (p, t, session) in batch {
            let (chunk, offset) = chunk_of(session);
            let set = self
                .map
                .entry((p, t))
                .or_default()
                .entry(chunk)
                .or_insert_with(|| {
                    self.chunks += 1;
                    ChunkSet::default()
                });
            set.extend_iter(std::iter::once(offset));
        }
    }

    /// The buffered chunks of one (project, trigram).
    pub fn get(&self, project_id: u32, tri: Trigram) -> Option<&BTreeMap<u32, ChunkSet>> {
        self.map.get(&(project_id, tri))
    }

    /// Every buffered chunk with its table key.
    pub fn iter(&self) -> impl Iterator<Item = ([u8; 12], &ChunkSet)> {
        self.map.iter().flat_map(|(&(p, t), chunks)| {
            chunks
                .iter()
                .map(move |(&c, set)| (posting_key(p, t, c), set))
        })
    }

    /// Number of buffered chunks.
    pub fn len(&self) -> usize {
        self.chunks
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    /// Drops everything buffered.
    pub fn clear(&mut self) {
        self.map.clear();
        self.chunks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: keys that differ only in their high bytes (here the
    /// little-endian reading of big-endian counters) must still spread over
    /// the low bits that pick a hash map's bucket.
    #[test]
    fn int_hasher_spreads_keys_that_differ_only_in_high_bytes() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<IntHasher>::default();
        let mut buckets = std::collections::HashSet::new();
        for i in 0..4096u64 {
            let key: [u8; 8] = i.to_be_bytes();
            buckets.insert(build.hash_one(key) & 0xfff);
        }
        // 4,096 keys into 4,096 buckets: a uniform hash fills about 63%.
        assert!(buckets.len() > 2_300, "only {} buckets used", buckets.len());
    }
    use std::collections::BTreeSet;

    #[test]
    fn trigrams_are_unicode_and_lowercase() {
        let mut a = Vec::new();
        trigrams(&normalize("ÄbÇd"), &mut a);
        let mut b = Vec::new();
        trigrams("äbçd", &mut b);
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        assert!(
            a.iter().all(|t| t & 0x8000_0000 != 0),
            "non-ASCII codes are hashed"
        );
        let mut c = Vec::new();
        trigrams("abcd", &mut c);
        assert_eq!(
            c,
            vec![(97 << 14) | (98 << 7) | 99, (98 << 14) | (99 << 7) | 100]
        );
        let mut d = Vec::new();
        trigrams("ab", &mut d);
        assert!(d.is_empty());
    }

    #[test]
    fn buffer_merges_batches() {
        let mut buf = PostingBuffer::default();
        let mut batch = BatchPostings::new();
        queue(&mut batch, 1, 5, &["Hello"]);
        queue(&mut batch, 1, 4097, &["hello"]);
        buf.merge(batch);
        let code = (u32::from(b'h') << 14) | (u32::from(b'e') << 7) | u32::from(b'l');
        let chunks = buf.get(1, code).cloned().unwrap_or_default();
        assert_eq!(chunks.len(), 2);
        assert!(chunks.get(&0).is_some_and(|s| s.contains(5)));
        assert!(chunks.get(&1).is_some_and(|s| s.contains(1)));
        assert_eq!(buf.len(), 3 * 2);
        assert!(buf.get(2, code).is_none());
    }

    #[test]
    fn chunk_sets_round_trip_and_switch_to_bitmaps() {
        for n in [0usize, 1, 10, 255, 256, 300, 4096] {
            let offsets: BTreeSet<u16> = (0..n).map(|i| (i * 4096 / n.max(1)) as u16).collect();
            let mut set = ChunkSet::default();
            assert_eq!(set.extend_iter(offsets.iter().copied()), n > 0);
            assert!(
                !set.extend_iter(offsets.iter().copied()),
                "n={n}: nothing new the second time"
            );
            assert_eq!(matches!(set, ChunkSet::Dense(_)), n >= 256, "n={n}");
            assert_eq!(ChunkSet::decode(&set.encode()), Some(set.clone()), "n={n}");
            let listed: BTreeSet<u16> = set.sessions(0).into_iter().map(|s| s as u16).collect();
            assert_eq!(listed, offsets);
            assert!(offsets.iter().all(|&o| set.contains(o)));
            // Union with itself adds nothing; into an empty set, everything.
            let mut copy = set.clone();
            assert!(!copy.union(&set));
            let mut empty = ChunkSet::default();
            assert_eq!(empty.union(&set), n > 0);
            let got: BTreeSet<u16> = empty.sessions(0).into_iter().map(|s| s as u16).collect();
            assert_eq!(got, offsets);
        }
        assert_eq!(ChunkSet::decode(&[7, 1, 2]), None);
        assert_eq!(ChunkSet::decode(&[0, 1]), None);
        assert_eq!(ChunkSet::decode(&[0, 2, 0, 1, 0]), None, "unsorted");
        assert_eq!(ChunkSet::decode(&[1, 0, 0]), None);
    }

    #[test]
    fn session_numbers_split_and_join() {
        let (c, o) = chunk_of(4096 * 3 + 17);
        assert_eq!((c, o), (3, 17));
        let mut set = ChunkSet::default();
        set.extend_iter(std::iter::once(o));
        assert_eq!(set.sessions(c), vec![4096 * 3 + 17]);
    }
}
