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
//! Appends do not write postings one by one: each indexed group's postings
//! are merged into an in-memory [`PostingBuffer`] (part of the store's
//! deferred index changes, `index::Deferred`) that searches consult next
//! to the table, and the buffer is written out at checkpoints (and when it
//! grows large), as a run that `posting_runs` merges into the table with
//! the next ones, so a common trigram costs one table write per eight
//! checkpoints, not one per group. After a crash the buffer is rebuilt by
//! the replay from the checkpoint, like every other index change.

use std::collections::hash_map::Entry;

use crate::hashing::FastMap;

/// A (project, trigram) with at most this many buffered sessions is
/// written out by sorting them; more, through a bitmap per chunk.
const SORT_AT_MOST: usize = 64;

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

/// Normalizes text for search: each character lowercased on its own
/// (final sigma `ς` folded to `σ`, as `Σ` lowercases). A function of each
/// character alone, so that a term found verbatim in a text is found in
/// the normalized text too: `str::to_lowercase` lowercases `Σ` by its
/// context (`ς` at a word's end, `σ` inside one), so "ΟΔΟΣ" and the
/// start of "ΟΔΟΣΑ" normalized differently.
pub(crate) fn normalize(text: &str) -> String {
    if text.is_ascii() {
        return text.to_ascii_lowercase();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            'ς' => out.push('σ'),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
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
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding (with the tag byte) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            ChunkSet::Sparse(v) => {
                // The tag (0) and every offset's two bytes written into
                // place, not pushed one by one.
                let at = out.len();
                out.resize(at + 1 + v.len() * 2, 0);
                if let Some(body) = out.get_mut(at + 1..) {
                    for (d, x) in body.chunks_exact_mut(2).zip(v) {
                        d.copy_from_slice(&x.to_le_bytes());
                    }
                }
            }
            ChunkSet::Dense(bits) => {
                out.reserve(1 + BITMAP_BYTES);
                out.push(1);
                out.extend_from_slice(bits.as_slice());
            }
        }
    }

    /// The set a bitmap holds, in the smaller encoding.
    pub fn from_bitmap(bits: Box<[u8; BITMAP_BYTES]>) -> ChunkSet {
        // Bit `i` of byte `j` is offset `8j + i`: read as little-endian
        // words, bit `k` of word `w` is offset `64w + k`.
        let words = || {
            bits.chunks_exact(8).map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
        };
        let members: u32 = words().map(u64::count_ones).sum();
        if (members as usize) * 2 >= BITMAP_BYTES {
            return ChunkSet::Dense(bits);
        }
        let mut offsets = Vec::with_capacity(members as usize);
        for (base, mut w) in (0u16..).step_by(64).zip(words()) {
            while w != 0 {
                #[expect(clippy::cast_possible_truncation, reason = "below 64")]
                offsets.push(base + w.trailing_zeros() as u16);
                w &= w - 1;
            }
        }
        ChunkSet::Sparse(offsets)
    }

    /// A set of sorted, distinct offsets.
    pub fn from_sorted(offsets: Vec<u16>) -> ChunkSet {
        if offsets.len() * 2 < BITMAP_BYTES {
            return ChunkSet::Sparse(offsets);
        }
        let mut bits = Box::new([0u8; BITMAP_BYTES]);
        for &o in &offsets {
            set_bit(&mut bits, o);
        }
        ChunkSet::Dense(bits)
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
            ChunkSet::Sparse(theirs) => {
                let ChunkSet::Sparse(mine) = self else {
                    return self.extend_iter(theirs.iter().copied());
                };
                if theirs.is_empty() {
                    return false;
                }
                // Two sorted lists merged in one pass, not each of theirs
                // searched for and inserted (a move of the rest) in turn.
                let mut merged = Vec::with_capacity(mine.len() + theirs.len());
                let (mut a, mut b) = (mine.iter().peekable(), theirs.iter().peekable());
                while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
                    merged.push(x.min(y));
                    if x <= y {
                        a.next();
                    }
                    if y <= x {
                        b.next();
                    }
                }
                merged.extend(a);
                merged.extend(b);
                let grew = merged.len() > mine.len();
                *self = ChunkSet::from_sorted(merged);
                grew
            }
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
        self.offsets()
            .into_iter()
            .map(|o| base | u64::from(o))
            .collect()
    }

    /// The offsets in the set, ascending.
    pub fn offsets(&self) -> Vec<u16> {
        match self {
            ChunkSet::Sparse(v) => v.clone(),
            ChunkSet::Dense(_) => (0..=u16::MAX)
                .take(CHUNK)
                .filter(|&o| self.contains(o))
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

/// Posting sets encoded for a run of `posting_runs`: each key (ascending)
/// with its set's stored bytes ([`ChunkSet::encode_into`]). The sets are
/// written straight into one buffer as they are found, not built as a
/// [`ChunkSet`] each (a vector or a box per chunk, allocated, encoded and
/// freed) and encoded afterwards.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct EncodedChunks {
    keys: Vec<[u8; 12]>,
    /// Where each key's value ends in `values` (it starts where the
    /// previous one ends).
    ends: Vec<usize>,
    values: Vec<u8>,
}

impl EncodedChunks {
    /// Number of posting sets.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key with its encoded set, in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8; 12], &[u8])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.keys
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(k, (from, &to))| (k, self.values.get(from..to).unwrap_or_default()))
    }

    /// Appends a set, encoded.
    pub fn push_set(&mut self, key: [u8; 12], set: &ChunkSet) {
        set.encode_into(&mut self.values);
        self.close(key);
    }

    /// Ends the value written since the last key as `key`'s.
    fn close(&mut self, key: [u8; 12]) {
        self.keys.push(key);
        self.ends.push(self.values.len());
    }

    /// Appends the set of sorted, distinct `offsets` in the smaller
    /// encoding (what `ChunkSet::from_sorted(offsets).encode()` gives).
    fn push_sorted(&mut self, key: [u8; 12], offsets: &[u16]) {
        if offsets.len() * 2 < BITMAP_BYTES {
            self.push_sparse(key, offsets);
            return;
        }
        let mut bits = [0u8; BITMAP_BYTES];
        for &o in offsets {
            set_bit(&mut bits, o);
        }
        self.values.push(1);
        self.values.extend_from_slice(&bits);
        self.close(key);
    }

    /// Appends a sparse set: the tag (0), then each offset's two bytes,
    /// written into place (the loop of [`ChunkSet::encode_into`]).
    fn push_sparse(&mut self, key: [u8; 12], offsets: &[u16]) {
        let at = self.values.len();
        self.values.resize(at + 1 + offsets.len() * 2, 0);
        if let Some(body) = self.values.get_mut(at + 1..) {
            for (d, x) in body.chunks_exact_mut(2).zip(offsets) {
                d.copy_from_slice(&x.to_le_bytes());
            }
        }
        self.close(key);
    }

    /// Appends a dense set from a chunk's bitmap words (bit `k` of word
    /// `w` is offset `64w + k`): the tag (1), then the words' bytes,
    /// little-endian.
    fn push_dense(&mut self, key: [u8; 12], words: &[u64]) {
        let at = self.values.len();
        self.values.resize(at + 1 + words.len() * 8, 1);
        if let Some(body) = self.values.get_mut(at + 1..) {
            for (d, w) in body.chunks_exact_mut(8).zip(words) {
                d.copy_from_slice(&w.to_le_bytes());
            }
        }
        self.close(key);
    }

    /// The sets, decoded (for tests).
    #[cfg(test)]
    pub fn sets(&self) -> Vec<([u8; 12], ChunkSet)> {
        self.iter()
            .map(|(k, v)| (*k, ChunkSet::decode(v).unwrap_or_default()))
            .collect()
    }
}

/// A (project, trigram) pair: `project << 32 | trigram`.
type Term = u64;

fn term(project_id: u32, tri: Trigram) -> Term {
    (u64::from(project_id) << 32) | u64::from(tri)
}

/// Search postings held in memory: for each (project, trigram), the
/// sessions whose turns contain it, in arrival order (a session repeats
/// only when other sessions came between its turns; [`Postings::chunks`]
/// sorts and deduplicates). One map per indexed group
/// ([`BatchPostings`]), merged into the store's buffer when the group
/// commits ([`PostingBuffer`]).
#[derive(Debug, Default)]
pub(crate) struct Postings {
    map: FastMap<Term, SessionList>,
    len: usize,
}

/// Room for sessions a term's vector of [`SessionList`] starts with.
const SESSIONS_FIRST_ROOM: usize = 15;

/// The sessions held for one term: the first inline, the rest in a vector
/// allocated only for a second. A vector for each term, grown from four
/// entries as sessions came, made allocation and reallocation a third of
/// the instructions queueing postings took; many terms of a group are in
/// one session only, and one in two is usually in many.
#[derive(Debug)]
struct SessionList {
    first: u64,
    /// The session added last (repeats end on it): one compare, not a
    /// look at the vector's end.
    last: u64,
    rest: Vec<u64>,
}

impl SessionList {
    fn new(session: u64) -> Self {
        Self {
            first: session,
            last: session,
            rest: Vec::new(),
        }
    }

    /// Appends a session. A term in two sessions of a group is usually in
    /// many: the vector starts with room for [`SESSIONS_FIRST_ROOM`] rather
    /// than growing from four.
    fn push(&mut self, session: u64) {
        if self.rest.capacity() == 0 {
            self.rest.reserve_exact(SESSIONS_FIRST_ROOM);
        }
        self.rest.push(session);
        self.last = session;
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().copied())
    }

    /// Appends `other`'s sessions after these.
    fn append(&mut self, other: SessionList) {
        self.rest.reserve(1 + other.rest.len());
        self.rest.push(other.first);
        self.rest.extend_from_slice(&other.rest);
        self.last = other.last;
    }
}

/// Postings queued by one indexed group.
pub(crate) type BatchPostings = Postings;

/// Postings of committed groups not yet written to the search table.
pub(crate) type PostingBuffer = Postings;

/// Calls `f` with the trigram code of every trigram of `text` once
/// normalized (may repeat): the codes `trigrams(&normalize(text))` gives,
/// without building the lowercase copy.
pub(crate) fn for_each_trigram(text: &str, mut f: impl FnMut(Trigram)) {
    if !text.is_ascii() {
        // Each character gives at least one, so the codes fit in the
        // text's length unless lowercasing lengthens it.
        let mut tris = Vec::with_capacity(text.len());
        unicode_trigrams(text, &mut tris);
        tris.into_iter().for_each(f);
        return;
    }
    // ASCII lowercases byte by byte; the code of (a, b, c) is the rolling
    // `a << 14 | b << 7 | c`.
    // The first two bytes start the code; every later one ends a trigram.
    let bytes = text.as_bytes();
    let (Some(head), Some(tail)) = (bytes.get(..2), bytes.get(2..)) else {
        return;
    };
    let mut code = head.iter().fold(0u32, |code, b| {
        (code << 7) | u32::from(b.to_ascii_lowercase())
    });
    for b in tail {
        code = ((code << 7) | u32::from(b.to_ascii_lowercase())) & 0x1f_ffff;
        f(code);
    }
}

/// `trigrams(&normalize(text), out)` without the normalized copy: each
/// character normalized as it comes, the last two kept.
fn unicode_trigrams(text: &str, out: &mut Vec<Trigram>) {
    let (mut a, mut b, mut held) = ('\0', '\0', 0u8);
    let mut push = |c: char| {
        if held == 2 {
            out.push(trigram_code(a, b, c));
        } else {
            held += 1;
        }
        (a, b) = (b, c);
    };
    for c in text.chars() {
        match c {
            c if c.is_ascii() => push(c.to_ascii_lowercase()),
            'ς' => push('σ'),
            c => c.to_lowercase().for_each(&mut push),
        }
    }
}

/// Queues the trigrams of a turn's texts for a session.
pub(crate) fn queue(batch: &mut BatchPostings, project_id: u32, session: u64, texts: &[&str]) {
    for t in texts {
        for_each_trigram(t, |tri| {
            // Repeats within a turn (and across consecutive turns of one
            // session) end here.
            match batch.map.entry(term(project_id, tri)) {
                Entry::Vacant(v) => {
                    v.insert(SessionList::new(session));
                    batch.len += 1;
                }
                Entry::Occupied(mut o) => {
                    let sessions = o.get_mut();
                    if sessions.last != session {
                        sessions.push(session);
                        batch.len += 1;
                    }
                }
            }
        });
    }
}

/// Words of a chunk's bitmap.
const CHUNK_WORDS: usize = CHUNK / 64;

/// The sets of a term's sessions (`first` and `rest`, many, in any order,
/// may repeat), appended to `out` by chunk ascending (keyed by `key` of
/// the chunk), each in the smaller encoding: the sessions are set in one
/// bitmap over the chunks from the lowest session's to the highest's
/// (`words`, reused), one shift and or each, in one pass: the bitmap starts at the first session's chunk and
/// widens when a session falls outside it. Returns false, emitting
/// nothing, when that range holds more chunks than there are sessions
/// (sessions far apart), and may when the bitmap, widened downwards
/// ahead of need (see [`widen`]), would (the caller then sorts).
fn bitmap_chunks(
    first: u64,
    rest: &[u64],
    words: &mut Vec<u64>,
    out: &mut EncodedChunks,
    key: impl Fn(u32) -> [u8; 12],
) -> bool {
    let limit = rest.len() + 1;
    let mut from = chunk_of(first).0;
    let mut base = u64::from(from) << CHUNK_BITS;
    words.clear();
    words.resize(CHUNK_WORDS, 0);
    if let Some(w) = words.get_mut(((first - base) >> 6) as usize) {
        *w |= 1 << (first & 63);
    }
    // The bits set through a slice, taken again after each widening: set
    // through the vector, its length and buffer were loaded again for
    // every session (a store to the buffer might have changed them).
    let mut bits: &mut [u64] = words.as_mut_slice();
    for &s in rest {
        // Below `base` the difference wraps to far above the bitmap.
        let bit = s.wrapping_sub(base);
        if let Some(w) = bits.get_mut((bit >> 6) as usize) {
            *w |= 1 << (bit & 63);
            continue;
        }
        if !widen(words, &mut from, s, limit) {
            return false;
        }
        bits = words.as_mut_slice();
        base = u64::from(from) << CHUNK_BITS;
        let bit = s - base;
        if let Some(w) = bits.get_mut((bit >> 6) as usize) {
            *w |= 1 << (bit & 63);
        }
    }
    for (c, chunk) in (from..).zip(words.chunks_exact(CHUNK_WORDS)) {
        push_chunk(chunk, out, || key(c));
    }
    true
}

/// Widens the bitmap `words` (whole chunks from chunk `from`) to hold
/// session `s`, zero-filled; false, leaving it as it was, when it would
/// then span more than `limit` chunks. Downwards it widens by at least its
/// own size again (as far as `limit` and chunk 0 allow), so that sessions
/// coming down chunk by chunk do not move the bitmap once per chunk; the
/// chunks added that no session takes are empty and emit nothing.
fn widen(words: &mut Vec<u64>, from: &mut u32, s: u64, limit: usize) -> bool {
    let chunks = words.len() / CHUNK_WORDS;
    let c = chunk_of(s).0;
    if c < *from {
        let need = chunks + (*from - c) as usize;
        if need > limit {
            return false;
        }
        // At least `from - c`: `need <= limit` and `from - c <= from`.
        let more = (need.max(2 * chunks).min(limit) - chunks).min(*from as usize);
        words.splice(0..0, std::iter::repeat_n(0, more * CHUNK_WORDS));
        #[expect(clippy::cast_possible_truncation, reason = "at most `from`")]
        let more = more as u32;
        *from -= more;
    } else {
        let need = (c - *from) as usize + 1;
        if need > limit {
            return false;
        }
        words.resize(need * CHUNK_WORDS, 0);
    }
    true
}

/// Members of a chunk at which the bitmap is the smaller encoding.
const DENSE_FROM: usize = BITMAP_BYTES / 2;

/// Offsets [`push_chunk`] makes room for: it stops after the word that
/// brings them to [`DENSE_FROM`], so it needs `DENSE_FROM + 64`; a power
/// of two, so that an index taken modulo it is seen to be in bounds (no
/// check for each offset).
const ROOM: usize = 512;
const _: () = assert!(ROOM >= DENSE_FROM + 64 && ROOM.is_power_of_two());

/// Appends the set one chunk's bitmap words hold, in the smaller
/// encoding, keyed `key()`; nothing when empty. Offsets are written as
/// they are found, straight into the sparse encoding's place in `out`,
/// until they reach [`DENSE_FROM`] (so a dense chunk is not counted
/// whole); the bitmap then replaces them.
fn push_chunk(chunk: &[u64], out: &mut EncodedChunks, key: impl FnOnce() -> [u8; 12]) {
    let at = out.values.len();
    // The tag (0, sparse) and room for the offsets.
    out.values.resize(at + 1 + 2 * ROOM, 0);
    let Some(room) = out
        .values
        .get_mut(at + 1..)
        .and_then(|r| <&mut [u8; 2 * ROOM]>::try_from(r).ok())
    else {
        return;
    };
    let mut n = 0usize;
    for (base, &w) in (0u16..).step_by(64).zip(chunk) {
        let mut w = w;
        while w != 0 {
            // Below `DENSE_FROM + 64` (see `ROOM`): the modulo changes
            // nothing.
            #[expect(clippy::cast_possible_truncation, reason = "below 64")]
            let offset = base + w.trailing_zeros() as u16;
            let [lo, hi] = offset.to_le_bytes();
            let i = 2 * (n % ROOM);
            if let Some(d) = room.get_mut(i) {
                *d = lo;
            }
            if let Some(d) = room.get_mut(i + 1) {
                *d = hi;
            }
            n += 1;
            w &= w - 1;
        }
        if n >= DENSE_FROM {
            out.values.truncate(at);
            out.push_dense(key(), chunk);
            return;
        }
    }
    if n == 0 {
        out.values.truncate(at);
        return;
    }
    out.values.truncate(at + 1 + 2 * n);
    out.close(key());
}

impl Postings {
    /// Takes in another map's postings.
    pub fn merge(&mut self, other: Postings) {
        if self.map.is_empty() {
            *self = other;
            return;
        }
        for (t, sessions) in other.map {
            match self.map.entry(t) {
                Entry::Vacant(v) => {
                    v.insert(sessions);
                }
                Entry::Occupied(mut o) => o.get_mut().append(sessions),
            }
        }
        self.len += other.len;
    }

    /// Sessions buffered for one (project, trigram); may repeat.
    pub fn sessions(&self, project_id: u32, tri: Trigram) -> impl Iterator<Item = u64> + '_ {
        self.map
            .get(&term(project_id, tri))
            .into_iter()
            .flat_map(SessionList::iter)
    }

    /// Every buffered posting set with its table key, in key order, encoded
    /// (sorts and deduplicates the buffered sessions in place).
    pub fn chunks(&mut self) -> EncodedChunks {
        let mut terms: Vec<(&Term, &mut SessionList)> = self.map.iter_mut().collect();
        terms.sort_unstable_by_key(|(t, _)| **t);
        let mut out = EncodedChunks::default();
        let mut words = Vec::new();
        // One chunk's offsets on the sorting path, reused.
        let mut offsets: Vec<u16> = Vec::new();
        for (&t, list) in terms {
            #[expect(clippy::cast_possible_truncation, reason = "halves of the term")]
            let (project_id, tri) = ((t >> 32) as u32, t as u32);
            if list.rest.is_empty() {
                let (chunk, offset) = chunk_of(list.first);
                out.push_sparse(posting_key(project_id, tri, chunk), &[offset]);
                continue;
            }
            if list.rest.len() >= SORT_AT_MOST
                && bitmap_chunks(list.first, &list.rest, &mut words, &mut out, |c| {
                    posting_key(project_id, tri, c)
                })
            {
                continue;
            }
            let sessions = &mut list.rest;
            sessions.push(list.first);
            if sessions.len() > SORT_AT_MOST {
                // Many sessions far apart: a bitmap per chunk met, no sort.
                let mut maps: Vec<(u32, Box<[u8; BITMAP_BYTES]>)> = Vec::new();
                // Where each chunk's bitmap is, for sessions out of order
                // (a search of `maps` each would be quadratic).
                let mut places: FastMap<u32, usize> = FastMap::default();
                for &session in sessions.iter() {
                    let (chunk, offset) = chunk_of(session);
                    // Sessions arrive nearly in order: the chunk is
                    // almost always the last one.
                    let i = match maps.last() {
                        Some((c, _)) if *c == chunk => maps.len() - 1,
                        _ => *places.entry(chunk).or_insert_with(|| {
                            maps.push((chunk, Box::new([0u8; BITMAP_BYTES])));
                            maps.len() - 1
                        }),
                    };
                    if let Some((_, bits)) = maps.get_mut(i) {
                        set_bit(bits, offset);
                    }
                }
                maps.sort_unstable_by_key(|(c, _)| *c);
                for (c, bits) in maps {
                    out.push_set(
                        posting_key(project_id, tri, c),
                        &ChunkSet::from_bitmap(bits),
                    );
                }
                continue;
            }
            sessions.sort_unstable();
            sessions.dedup();
            offsets.clear();
            let mut current = None;
            for &session in sessions.iter() {
                let (chunk, offset) = chunk_of(session);
                if current != Some(chunk) {
                    if let Some(c) = current {
                        out.push_sorted(posting_key(project_id, tri, c), &offsets);
                        offsets.clear();
                    }
                    current = Some(chunk);
                }
                offsets.push(offset);
            }
            if let Some(c) = current {
                out.push_sorted(posting_key(project_id, tri, c), &offsets);
            }
        }
        out
    }

    /// Number of postings held (a session listed twice counts twice).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops everything held.
    pub fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeSet;

    use proptest::strategy::{Just, Strategy};

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
    fn ascii_fast_path_gives_the_normalized_trigrams() {
        for text in [
            "",
            "ab",
            "abc",
            "Hello, World! ~\u{7f}\t",
            "MiXeD CaSe 123",
            "Ärger",
            "naïve Café",
            "İstanbul",
            "ΣΑΣ",
            "x\u{0}y",
        ] {
            let mut want = Vec::new();
            trigrams(&normalize(text), &mut want);
            let mut got = Vec::new();
            for_each_trigram(text, |t| got.push(t));
            assert_eq!(got, want, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_fast_path_matches_normalize(
            text in "[ -~]{0,40}|\\PC{0,20}|[aZ ΣσςİẞÅﬃ]{0,12}",
        ) {
            let mut want = Vec::new();
            trigrams(&normalize(&text), &mut want);
            let mut got = Vec::new();
            for_each_trigram(&text, |t| got.push(t));
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn buffer_merges_batches() {
        let mut buf = PostingBuffer::default();
        let mut batch = BatchPostings::default();
        queue(&mut batch, 1, 5, &["Hello"]);
        queue(&mut batch, 1, 4097, &["hello", "hello"]);
        assert_eq!(batch.len(), 3 * 2, "repeats within a turn dropped");
        buf.merge(batch);
        let mut again = BatchPostings::default();
        queue(&mut again, 1, 5, &["help"]);
        queue(&mut again, 2, 9, &["help"]);
        buf.merge(again);
        let code = (u32::from(b'h') << 14) | (u32::from(b'e') << 7) | u32::from(b'l');
        let mut got: Vec<u64> = buf.sessions(1, code).collect();
        got.sort_unstable();
        assert_eq!(got, vec![5, 5, 4097], "each group lists its own postings");
        assert_eq!(buf.sessions(2, code).collect::<Vec<_>>(), vec![9]);
        assert_eq!(buf.sessions(3, code).count(), 0);
        assert_eq!(buf.len(), 6 + 4);
        // Written out: one set per (project, trigram, chunk), in key order,
        // each posting once.
        let chunks = buf.chunks().sets();
        assert!(chunks.windows(2).all(|w| w[0].0 < w[1].0));
        let hel: Vec<_> = chunks
            .iter()
            .filter(|(k, _)| k[4..8] == code.to_be_bytes() && k[..4] == 1u32.to_be_bytes())
            .collect();
        assert_eq!(hel.len(), 2);
        assert_eq!(hel[0].1.sessions(key_chunk(&hel[0].0)), vec![5]);
        assert_eq!(hel[1].1.sessions(key_chunk(&hel[1].0)), vec![4097]);
        let total: usize = chunks
            .iter()
            .map(|(k, s)| s.sessions(key_chunk(k)).len())
            .sum();
        assert_eq!(total, 6 + 4 - 1, "(1, hel, 5) came in both groups");
    }

    /// The buffer answers like a set of (project, trigram, session), however
    /// postings arrive in groups, and writes that set out.
    #[test]
    fn buffer_matches_a_set() {
        use std::collections::BTreeSet;
        let mut buf = PostingBuffer::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 1;
        let words = ["abc", "bcd", "xyz", "Äbç", "zzz"];
        for round in 0..200 {
            let mut batch = BatchPostings::default();
            for _ in 0..(round % 37) {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let p = (x >> 60) as u32 % 3;
                let session = (x >> 8) % 9000;
                let word = words[(x >> 33) as usize % words.len()];
                queue(&mut batch, p, session, &[word]);
                let mut tris = Vec::new();
                trigrams(&normalize(word), &mut tris);
                model.insert((p, tris[0], session));
            }
            buf.merge(batch);
        }
        // One trigram of many sessions in one chunk (a bitmap when written).
        let mut dense = BatchPostings::default();
        for session in (0..900).rev() {
            queue(&mut dense, 1, session, &["zzz"]);
            model.insert((1, trigram_code('z', 'z', 'z'), session));
        }
        buf.merge(dense);
        let mut tris = Vec::new();
        for w in words {
            trigrams(&normalize(w), &mut tris);
        }
        for p in 0..3 {
            for &t in &tris {
                let got: BTreeSet<u64> = buf.sessions(p, t).collect();
                let want: BTreeSet<u64> = model
                    .range((p, t, 0)..=(p, t, u64::MAX))
                    .map(|&(_, _, s)| s)
                    .collect();
                assert_eq!(got, want, "project {p} trigram {t}");
            }
        }
        let written: BTreeSet<(u32, u32, u64)> = buf
            .chunks()
            .sets()
            .iter()
            .flat_map(|(k, set)| {
                let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                let t = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
                set.sessions(key_chunk(k))
                    .into_iter()
                    .map(move |s| (p, t, s))
            })
            .collect();
        assert_eq!(written, model);
        assert!(
            buf.chunks()
                .sets()
                .iter()
                .any(|(_, set)| matches!(set, ChunkSet::Dense(_))),
            "the dense case is covered"
        );
    }

    /// Adds a posting as `queue` does for one trigram.
    fn add(buf: &mut PostingBuffer, p: u32, tri: Trigram, session: u64) {
        match buf.map.entry(term(p, tri)) {
            Entry::Vacant(v) => {
                v.insert(SessionList::new(session));
            }
            Entry::Occupied(mut o) => {
                if o.get().last != session {
                    o.get_mut().push(session);
                }
            }
        }
        buf.len += 1;
    }

    proptest::proptest! {
        /// `chunks` writes exactly the set of postings held, one set per
        /// (project, trigram, chunk) in key order, each in the smaller
        /// encoding: sessions in any order, few or many (a bitmap per
        /// chunk), near (one range of chunks) or far apart.
        #[test]
        fn chunks_match_a_model(
            postings in proptest::collection::vec((0..2u32, 0..3u32, 0..20_000u64), 0..1500),
            far in proptest::collection::vec((0..2u32, 0..3u32, 0..4u64, 0..4096u64), 0..3),
            runs in proptest::collection::vec(
                (0..2u32, 0..3u32, 0..20_000u64, 0..700u64),
                0..4,
            ),
        ) {
            use proptest::{prop_assert, prop_assert_eq};
            let mut buf = PostingBuffer::default();
            let mut model = BTreeSet::new();
            // A few far apart: those terms' chunks span more than their
            // sessions.
            let far = far
                .into_iter()
                .map(|(p, t, c, o)| (p, t, c * 4096 * 1_000_000 + o));
            for (p, t, s) in postings.into_iter().chain(far) {
                add(&mut buf, p, t, s);
                model.insert((p, t, s));
            }
            // Runs of neighbouring sessions, backwards: dense chunks.
            for (p, t, from, n) in runs {
                for s in (from..from + n).rev() {
                    add(&mut buf, p, t, s);
                    model.insert((p, t, s));
                }
            }
            let encoded = buf.chunks();
            let chunks = encoded.sets();
            prop_assert_eq!(chunks.len(), encoded.len());
            prop_assert!(chunks.windows(2).all(|w| w[0].0 < w[1].0), "keys ascend");
            // Each value is the stored encoding of the set the model holds
            // for its key (one encoding per set: the smaller one).
            for (k, v) in encoded.iter() {
                let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                let t = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
                let base = u64::from(key_chunk(k)) << CHUNK_BITS;
                let want: Vec<u16> = model
                    .range((p, t, base)..(p, t, base + CHUNK as u64))
                    .map(|&(_, _, s)| (s - base) as u16)
                    .collect();
                let want = ChunkSet::from_sorted(want).encode();
                prop_assert_eq!(v, want.as_slice());
            }
            let mut written = BTreeSet::new();
            for (k, set) in &chunks {
                let offsets = set.offsets();
                prop_assert!(!offsets.is_empty());
                prop_assert_eq!(
                    matches!(set, ChunkSet::Dense(_)),
                    offsets.len() * 2 >= BITMAP_BYTES,
                    "the smaller encoding"
                );
                prop_assert_eq!(ChunkSet::decode(&set.encode()), Some(set.clone()));
                let p = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
                let t = u32::from_be_bytes([k[4], k[5], k[6], k[7]]);
                written.extend(set.sessions(key_chunk(k)).into_iter().map(|s| (p, t, s)));
            }
            prop_assert_eq!(written, model);
        }
    }

    /// Sessions coming down chunk by chunk (the bitmap widened downwards
    /// ahead of need), then up again: every set emitted, none refused.
    #[test]
    fn bitmap_chunks_widen_down_and_up() {
        let first = 60 * 4096 + 1;
        let rest: Vec<u64> = (0..60u64)
            .rev()
            .map(|c| c * 4096 + 7)
            .chain((61..100u64).map(|c| c * 4096 + 9))
            .collect();
        let mut words = Vec::new();
        let mut out = EncodedChunks::default();
        assert!(bitmap_chunks(first, &rest, &mut words, &mut out, |c| {
            posting_key(0, 0, c)
        }));
        let got: Vec<(u32, ChunkSet)> = out
            .sets()
            .into_iter()
            .map(|(k, set)| (key_chunk(&k), set))
            .collect();
        let mut want: Vec<(u32, ChunkSet)> = (0..100u32)
            .map(|c| (c, ChunkSet::Sparse(vec![if c < 60 { 7 } else { 9 }])))
            .collect();
        want[60].1 = ChunkSet::Sparse(vec![1]);
        assert_eq!(got, want);
    }

    proptest::proptest! {
        /// `bitmap_chunks` in one pass, widening its bitmap either way,
        /// emits what a sorted set of the sessions grouped by chunk holds,
        /// and refuses exactly when the sessions' chunks span more chunks
        /// than there are sessions.
        #[test]
        fn bitmap_chunks_match_a_sorted_set(
            first in 0..40_000u64,
            rest in proptest::collection::vec(0..40_000u64, 0..400),
            near in proptest::collection::vec(0..600u64, 0..1200),
            scale in 0..3u32,
        ) {
            use std::collections::BTreeMap;
            // Near `first` (dense chunks), or spread out by `scale`.
            let rest: Vec<u64> = rest
                .into_iter()
                .map(|s| s << (6 * scale))
                .chain(near.into_iter().map(|d| (first + d).saturating_sub(300)))
                .collect();
            let mut model: BTreeMap<u32, BTreeSet<u16>> = BTreeMap::new();
            for &s in std::iter::once(&first).chain(&rest) {
                let (c, o) = chunk_of(s);
                model.entry(c).or_default().insert(o);
            }
            let (lo, hi) = (
                *model.keys().next().unwrap_or(&0),
                *model.keys().last().unwrap_or(&0),
            );
            let refuses = (hi - lo) as usize + 1 > rest.len() + 1;
            let mut words = vec![7u64; 3];
            let mut out = EncodedChunks::default();
            let done = bitmap_chunks(first, &rest, &mut words, &mut out, |c| {
                posting_key(1, 2, c)
            });
            let got: Vec<(u32, ChunkSet)> = out
                .sets()
                .into_iter()
                .map(|(k, set)| (key_chunk(&k), set))
                .collect();
            proptest::prop_assert!(!(done && refuses), "refuses a range too wide");
            if done {
                let want: Vec<(u32, ChunkSet)> = model
                    .into_iter()
                    .map(|(c, o)| (c, ChunkSet::from_sorted(o.into_iter().collect())))
                    .collect();
                proptest::prop_assert_eq!(got, want);
            } else {
                proptest::prop_assert!(got.is_empty());
            }
        }

        /// A union of two sets (a sparse pair merged in one pass) holds
        /// exactly both sets' offsets, in the form and with the growth
        /// flag that adding the other's offsets one by one gives.
        #[test]
        fn union_is_the_sets_union(
            mine in proptest::collection::btree_set(0..CHUNK as u16, 0..300),
            theirs in proptest::collection::btree_set(0..CHUNK as u16, 0..300),
            shared in proptest::collection::btree_set(0..CHUNK as u16, 0..40),
        ) {
            let mine = ChunkSet::from_sorted(mine.union(&shared).copied().collect());
            let theirs = ChunkSet::from_sorted(theirs.union(&shared).copied().collect());
            let mut got = mine.clone();
            let grew = got.union(&theirs);
            let mut want = mine.clone();
            let want_grew = want.extend_iter(theirs.offsets().into_iter());
            proptest::prop_assert_eq!(grew, want_grew);
            proptest::prop_assert_eq!(&got, &want);
            let all: BTreeSet<u16> = mine.offsets().into_iter().chain(theirs.offsets()).collect();
            proptest::prop_assert_eq!(got.offsets(), all.into_iter().collect::<Vec<u16>>());
        }

        /// `push_chunk` (offsets listed until the bitmap is smaller)
        /// writes the encoding of what `from_bitmap` (members counted
        /// first) gives, and nothing for an empty chunk.
        #[test]
        fn push_chunk_matches_from_bitmap(
            words in proptest::collection::vec(
                proptest::prop_oneof![
                    Just(0u64),
                    proptest::num::u64::ANY,
                    (0..64u32).prop_map(|b| 1u64 << b),
                ],
                CHUNK_WORDS,
            ),
        ) {
            let mut bits = Box::new([0u8; BITMAP_BYTES]);
            for (b, w) in bits.chunks_exact_mut(8).zip(&words) {
                b.copy_from_slice(&w.to_le_bytes());
            }
            let want = ChunkSet::from_bitmap(bits);
            // After a set already there.
            let mut out = EncodedChunks::default();
            out.push_sorted([6; 12], &[3, 9]);
            push_chunk(&words, &mut out, || [7; 12]);
            let before = ChunkSet::from_sorted(vec![3, 9]).encode();
            let mut expected = vec![(&[6; 12], before.as_slice())];
            let want = want.encode();
            if want != [0] {
                expected.push((&[7; 12], want.as_slice()));
            }
            let got: Vec<(&[u8; 12], &[u8])> = out.iter().collect();
            proptest::prop_assert_eq!(got, expected);
            proptest::prop_assert_eq!(out.values.len(), out.ends.last().copied().unwrap_or(0));
        }

        /// The sets pushed whole (sorted offsets, few or many) are
        /// encoded as `ChunkSet::from_sorted` then `encode_into` encode
        /// them, each after the one before, under its key.
        #[test]
        fn pushed_sets_are_encoded_as_chunk_sets(
            sets in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::collection::btree_set(0..CHUNK as u16, 1..4),
                    proptest::collection::btree_set(0..CHUNK as u16, 200..400),
                ],
                0..6,
            ),
        ) {
            let mut out = EncodedChunks::default();
            let mut want: Vec<([u8; 12], Vec<u8>)> = Vec::new();
            for (i, set) in sets.into_iter().enumerate() {
                let offsets: Vec<u16> = set.into_iter().collect();
                let key = posting_key(1, 2, i as u32);
                let chunk_set = ChunkSet::from_sorted(offsets.clone());
                if i % 2 == 0 {
                    out.push_sorted(key, &offsets);
                } else {
                    out.push_set(key, &chunk_set);
                }
                want.push((key, chunk_set.encode()));
            }
            let got: Vec<([u8; 12], Vec<u8>)> =
                out.iter().map(|(k, v)| (*k, v.to_vec())).collect();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(out.len(), out.iter().count());
        }

        /// A sparse set's encoding is the tag 0 and each offset's two
        /// little-endian bytes, in order.
        #[test]
        fn sparse_encoding_is_tag_and_offsets(
            offsets in proptest::collection::btree_set(0..4096u16, 0..300),
        ) {
            let offsets: Vec<u16> = offsets.into_iter().collect();
            let mut want = vec![0u8];
            for o in &offsets {
                want.extend_from_slice(&o.to_le_bytes());
            }
            let set = ChunkSet::Sparse(offsets);
            proptest::prop_assert_eq!(set.encode(), want.clone());
            // Appended after what a buffer holds, and a dense set after it.
            let mut out = vec![5u8; 3];
            set.encode_into(&mut out);
            let dense = ChunkSet::Dense(Box::new([0xa5; BITMAP_BYTES]));
            dense.encode_into(&mut out);
            let mut all = vec![5u8; 3];
            all.extend_from_slice(&want);
            all.extend_from_slice(&dense.encode());
            proptest::prop_assert_eq!(out, all);
        }
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
