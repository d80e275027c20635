//! The search index: which sessions may contain a text, by trigram.
//!
//! Root inputs and outputs are lowercased (full Unicode lowercase) and cut
//! into overlapping 3-character trigrams. For each (project, trigram) the
//! index keeps the set of session numbers whose turns contain it, in
//! chunks of 4,096 sessions: key `project (4 B BE) ‖ trigram (UTF-8, zero
//! padded to 12 B) ‖ chunk (4 B BE)`, value either a sorted array of
//! 16-bit offsets (tag 0) or a 4,096-bit bitmap (tag 1), whichever is
//! smaller. Sets only grow: when a turn's text changes or a trace leaves a
//! session, stale members stay, so the index gives a superset; every
//! candidate is verified against the session's turns before it is shown.

use std::collections::{BTreeMap, BTreeSet};

/// Sessions per chunk of a posting set.
pub(crate) const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const BITMAP_BYTES: usize = CHUNK / 8;

/// A trigram as fixed-width bytes (three chars of up to 4 UTF-8 bytes each).
pub(crate) type Trigram = [u8; 12];

/// Key of a posting chunk.
pub(crate) fn posting_key(project_id: u32, tri: &Trigram, chunk: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..4].copy_from_slice(&project_id.to_be_bytes());
    k[4..16].copy_from_slice(tri);
    k[16..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// The chunk number stored in a posting key.
pub(crate) fn key_chunk(k: &[u8; 20]) -> u32 {
    let mut c = [0u8; 4];
    c.copy_from_slice(&k[16..]);
    u32::from_be_bytes(c)
}

/// Normalizes text for search: full Unicode lowercase.
pub(crate) fn normalize(text: &str) -> String {
    text.to_lowercase()
}

/// Distinct trigrams of already-normalized text.
pub(crate) fn trigrams(normalized: &str, out: &mut BTreeSet<Trigram>) {
    let chars: Vec<char> = normalized.chars().collect();
    for w in chars.windows(3) {
        let mut t = [0u8; 12];
        let mut at = 0;
        for c in w {
            let n = c.len_utf8();
            if let Some(slot) = t.get_mut(at..at + n) {
                c.encode_utf8(slot);
            }
            at += n;
        }
        out.insert(t);
    }
}

/// A set of session offsets within one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ChunkSet(BTreeSet<u16>);

impl ChunkSet {
    /// Decodes a stored value; unknown or damaged encodings decode to `None`.
    pub fn decode(bytes: &[u8]) -> Option<ChunkSet> {
        let (&tag, body) = bytes.split_first()?;
        let mut set = BTreeSet::new();
        match tag {
            0 => {
                if body.len() % 2 != 0 {
                    return None;
                }
                for pair in body.chunks_exact(2) {
                    set.insert(u16::from_le_bytes([pair[0], pair[1]]));
                }
            }
            1 => {
                if body.len() != BITMAP_BYTES {
                    return None;
                }
                for (i, byte) in body.iter().enumerate() {
                    for bit in 0..8 {
                        if byte & (1 << bit) != 0 {
                            #[expect(
                                clippy::cast_possible_truncation,
                                reason = "i < 512, so i * 8 + bit < 4096"
                            )]
                            set.insert((i * 8 + bit) as u16);
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(ChunkSet(set))
    }

    /// Encodes as the smaller of an offset array and a bitmap.
    pub fn encode(&self) -> Vec<u8> {
        if self.0.len() * 2 < BITMAP_BYTES {
            let mut out = Vec::with_capacity(1 + self.0.len() * 2);
            out.push(0);
            for v in &self.0 {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out
        } else {
            let mut out = vec![0u8; 1 + BITMAP_BYTES];
            out[0] = 1;
            for v in &self.0 {
                let v = usize::from(*v);
                if let Some(b) = out.get_mut(1 + v / 8) {
                    *b |= 1 << (v % 8);
                }
            }
            out
        }
    }

    /// Adds offsets; returns true when the set grew.
    pub fn extend(&mut self, offsets: &BTreeSet<u16>) -> bool {
        let before = self.0.len();
        self.0.extend(offsets.iter().copied());
        self.0.len() != before
    }

    /// True when the offset is in the set.
    pub fn contains(&self, offset: u16) -> bool {
        self.0.contains(&offset)
    }

    /// Session numbers in this chunk.
    pub fn sessions(&self, chunk: u32) -> impl Iterator<Item = u64> + '_ {
        self.0
            .iter()
            .map(move |o| (u64::from(chunk) << CHUNK_BITS) | u64::from(*o))
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

/// Postings to add in one batch: key -> offsets.
pub(crate) type PendingPostings = BTreeMap<[u8; 20], BTreeSet<u16>>;

/// Queues the trigrams of a turn's texts for a session.
pub(crate) fn queue(pending: &mut PendingPostings, project_id: u32, session: u64, texts: &[&str]) {
    let mut tris = BTreeSet::new();
    for t in texts {
        trigrams(&normalize(t), &mut tris);
    }
    let (chunk, offset) = chunk_of(session);
    for tri in &tris {
        pending
            .entry(posting_key(project_id, tri, chunk))
            .or_default()
            .insert(offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigrams_are_unicode_and_lowercase() {
        let mut s = BTreeSet::new();
        trigrams(&normalize("ÄbÇ"), &mut s);
        assert_eq!(s.len(), 1);
        let t = s.iter().next().copied().unwrap_or_default();
        assert_eq!(&t[..6], "äbç".as_bytes());
        let mut s = BTreeSet::new();
        trigrams("ab", &mut s);
        assert!(s.is_empty());
    }

    #[test]
    fn chunk_sets_round_trip_in_both_encodings() {
        for n in [0usize, 1, 10, 255, 256, 300, 4096] {
            let set = ChunkSet((0..n).map(|i| (i * 4096 / n.max(1)) as u16).collect());
            assert_eq!(ChunkSet::decode(&set.encode()), Some(set.clone()), "n={n}");
        }
        assert_eq!(ChunkSet::decode(&[7, 1, 2]), None);
        assert_eq!(ChunkSet::decode(&[0, 1]), None);
        assert_eq!(ChunkSet::decode(&[1, 0, 0]), None);
    }

    #[test]
    fn session_numbers_split_and_join() {
        let (c, o) = chunk_of(4096 * 3 + 17);
        assert_eq!((c, o), (3, 17));
        let set = ChunkSet([o].into_iter().collect());
        assert_eq!(set.sessions(c).collect::<Vec<_>>(), vec![4096 * 3 + 17]);
    }
}
