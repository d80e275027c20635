//! Byte layouts of the segment header and of a frame: pure functions, no I/O.
//!
//! Kept free of I/O so the checks that decide between "torn tail" and
//! "corruption" can be tested (and later fuzzed) on plain byte slices. The
//! layouts are documented byte by byte in `docs/FORMAT.md`.

/// Size of the header at the start of every segment file.
pub(super) const SEGMENT_HEADER_LEN: u64 = 32;
/// Size of a frame header: `len u32 | crc u32 | tag u8`.
pub(super) const FRAME_HEADER_LEN: u64 = 9;
/// First four bytes of every segment file.
pub(super) const MAGIC: [u8; 4] = *b"SPLG";
/// The only segment format this code reads and writes.
pub(super) const FORMAT_VERSION: u16 = 1;

/// Upper bound on the CRC work spent looking for a valid frame after a
/// suspect one during recovery (see [`damage_evidence`]), so that a crafted
/// payload cannot make recovery quadratic.
const RESYNC_BUDGET_BYTES: u64 = 256 << 20;

/// Builds the 32-byte header of a segment whose first byte has LSN `base`.
pub(super) fn encode_segment_header(base: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    // 6..8 flags and 16..28 reserved stay zero.
    h[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[0..28]);
    h[28..32].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Why a segment header was refused; mapped to `Error::Corruption` or
/// `Error::Incompatible` by the caller, which knows the path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HeaderProblem {
    /// Damaged bytes, or a header that does not belong to this file.
    Corrupt(String),
    /// A well-formed header of a format version or flag set we do not know.
    Incompatible(String),
}

/// Checks a segment header against the base LSN encoded in the file name.
///
/// The version is looked at before the checksum: a future version may lay
/// the header out differently, and should be reported as incompatible rather
/// than as damaged. Reserved bytes are ignored (they are covered by the CRC).
pub(super) fn check_segment_header(bytes: &[u8], expected_base: u64) -> Result<(), HeaderProblem> {
    let Some(h) = bytes.get(..32).and_then(|s| <&[u8; 32]>::try_from(s).ok()) else {
        return Err(HeaderProblem::Corrupt(format!(
            "segment is {} bytes, shorter than its 32-byte header",
            bytes.len()
        )));
    };
    if h[0..4] != MAGIC {
        return Err(HeaderProblem::Corrupt(format!(
            "bad segment magic {:02x?} (expected \"SPLG\")",
            &h[0..4]
        )));
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    let stored_crc = u32::from_le_bytes([h[28], h[29], h[30], h[31]]);
    let crc_ok = crc32fast::hash(&h[0..28]) == stored_crc;
    if version != FORMAT_VERSION {
        let note = if crc_ok {
            ""
        } else {
            " (or a damaged header: its checksum does not match)"
        };
        return Err(HeaderProblem::Incompatible(format!(
            "segment format version {version}, this build reads version {FORMAT_VERSION}{note}"
        )));
    }
    if !crc_ok {
        return Err(HeaderProblem::Corrupt(
            "segment header checksum mismatch".to_string(),
        ));
    }
    let flags = u16::from_le_bytes([h[6], h[7]]);
    if flags != 0 {
        return Err(HeaderProblem::Incompatible(format!(
            "unknown segment flags {flags:#06x}"
        )));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[8..16]);
    let base = u64::from_le_bytes(b);
    if base != expected_base {
        return Err(HeaderProblem::Corrupt(format!(
            "header base LSN {base} does not match the file name ({expected_base})"
        )));
    }
    Ok(())
}

/// The fixed part of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    /// Payload length in bytes (not counting the 9-byte header).
    pub(super) len: u32,
    /// Stored checksum over the len bytes, the tag and the payload.
    pub(super) crc: u32,
    /// Caller-defined record type.
    pub(super) tag: u8,
}

impl FrameHeader {
    /// Parses the first 9 bytes of `b`; `None` if `b` is shorter.
    pub(super) fn parse(b: &[u8]) -> Option<FrameHeader> {
        let h = <&[u8; 9]>::try_from(b.get(..9)?).ok()?;
        Some(FrameHeader {
            len: u32::from_le_bytes([h[0], h[1], h[2], h[3]]),
            crc: u32::from_le_bytes([h[4], h[5], h[6], h[7]]),
            tag: h[8],
        })
    }

    /// Header plus payload, in bytes.
    pub(super) fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN + u64::from(self.len)
    }
}

/// The frame checksum. It covers the length field too, so a damaged length
/// can never make a different byte range pass as a frame.
pub(super) fn frame_crc(len: u32, tag: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&[tag]);
    h.update(payload);
    h.finalize()
}

/// The header of the frame of `payload` (`len` is its length, which the
/// caller has checked fits in `u32`: it is at most `max_frame_bytes`):
/// length, checksum, tag. The payload follows it.
pub(super) fn frame_header(len: u32, tag: u8, payload: &[u8]) -> [u8; 9] {
    let crc = frame_crc(len, tag, payload).to_le_bytes();
    let len = len.to_le_bytes();
    [
        len[0], len[1], len[2], len[3], crc[0], crc[1], crc[2], crc[3], tag,
    ]
}

/// Checks the frame at the start of `b`, which must hold the whole frame.
/// Returns the header and the payload if the checksum matches.
pub(super) fn check_frame(b: &[u8]) -> Option<(FrameHeader, &[u8])> {
    let h = FrameHeader::parse(b)?;
    let end = usize::try_from(h.frame_len()).ok()?;
    let payload = b.get(9..end)?;
    (frame_crc(h.len, h.tag, payload) == h.crc).then_some((h, payload))
}

/// True if every byte is zero (a file system may extend a file with zeros
/// after a crash, before the data itself reached the disk).
pub(super) fn is_all_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Decides whether an incomplete-looking frame at the start of `region` is a
/// damaged frame rather than a torn write. `region` runs from the suspect
/// frame's header to the end of the file (or to as far as a damaged frame's
/// successor could lie).
///
/// A torn write leaves a prefix of what was written, so the bytes after a torn
/// frame's header are only a prefix of its payload. Two things contradict that:
/// the length field is one bit away from a length under which the frame checks
/// (a flipped bit in the last frame), or a complete frame with a valid checksum
/// starts somewhere after the header (a damaged length in an earlier frame,
/// followed by intact ones). Returns a description of the evidence, or `None`
/// when the region looks like a torn tail. The search for a following frame is
/// bounded by [`RESYNC_BUDGET_BYTES`] of checksumming; past it we give up and
/// treat the region as torn. A payload that itself contains a valid encoded
/// frame can make a genuine torn tail look damaged; that errs on the side of
/// reporting instead of dropping data.
pub(super) fn damage_evidence(region: &[u8], max_frame_bytes: u32) -> Option<String> {
    let h = FrameHeader::parse(region)?;
    let body = region.get(9..).unwrap_or_default();
    for bit in 0..32 {
        let cand = h.len ^ (1u32 << bit);
        if cand > max_frame_bytes {
            continue;
        }
        let Ok(n) = usize::try_from(cand) else {
            continue;
        };
        if let Some(payload) = body.get(..n)
            && frame_crc(cand, h.tag, payload) == h.crc
        {
            return Some(format!(
                "length field {} is one bit off from {cand}, under which the frame checks",
                h.len
            ));
        }
    }
    let mut budget = RESYNC_BUDGET_BYTES;
    let mut pos = 9usize;
    while let Some(rest) = region.get(pos..) {
        let Some(c) = FrameHeader::parse(rest) else {
            break;
        };
        if c.len <= max_frame_bytes && c.frame_len() <= rest.len() as u64 {
            let cost = c.frame_len();
            if cost > budget {
                break;
            }
            budget -= cost;
            if check_frame(rest).is_some() {
                return Some(format!(
                    "length field {} runs past the end of the file, but a valid frame \
                     starts {pos} bytes after this one",
                    h.len
                ));
            }
        }
        pos += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = frame_header(payload.len() as u32, tag, payload).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_round_trip_and_checks() {
        let h = encode_segment_header(12345);
        assert_eq!(check_segment_header(&h, 12345), Ok(()));
        assert!(matches!(
            check_segment_header(&h, 1),
            Err(HeaderProblem::Corrupt(_))
        ));
        assert!(matches!(
            check_segment_header(&h[..31], 12345),
            Err(HeaderProblem::Corrupt(_))
        ));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(matches!(
            check_segment_header(&bad, 12345),
            Err(HeaderProblem::Corrupt(_))
        ));
        // A valid header of another version is incompatible, not corrupt.
        let mut v2 = h;
        v2[4] = 2;
        let crc = crc32fast::hash(&v2[0..28]);
        v2[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_segment_header(&v2, 12345),
            Err(HeaderProblem::Incompatible(_))
        ));
        let mut fl = h;
        fl[6] = 1;
        let crc = crc32fast::hash(&fl[0..28]);
        fl[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            check_segment_header(&fl, 12345),
            Err(HeaderProblem::Incompatible(_))
        ));
    }

    /// Golden bytes (checksums computed independently with Python's
    /// `zlib.crc32`): a format change must be deliberate.
    #[test]
    fn layouts_are_stable() {
        let mut h = vec![0x53, 0x50, 0x4C, 0x47, 1, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1];
        h.extend([0u8; 12]);
        h.extend(0x93e5_0e0f_u32.to_le_bytes());
        assert_eq!(encode_segment_header(0x0102_0304_0506_0708).to_vec(), h);
        let f = vec![3, 0, 0, 0, 0xe3, 0x78, 0x1f, 0xbc, 7, b'a', b'b', b'c'];
        assert_eq!(frame(7, b"abc"), f);
    }

    #[test]
    fn all_zero_frame_never_checks() {
        // Zero-filled space must never read back as a valid (empty) frame.
        assert!(check_frame(&[0u8; 9]).is_none());
        assert!(check_frame(&frame(0, b"")).is_some());
    }

    #[test]
    fn frame_round_trip() {
        let f = frame(7, b"hello");
        let got = check_frame(&f).map(|(h, p)| (h.len, h.tag, p.to_vec()));
        assert_eq!(got, Some((5, 7, b"hello".to_vec())));
        assert!(check_frame(&f[..f.len() - 1]).is_none());
    }

    #[test]
    fn evidence_single_bit_length_flip() {
        let mut f = frame(1, &[0xAB; 100]);
        f[1] ^= 0x10; // len 100 -> 4196: now runs past the end.
        assert!(damage_evidence(&f, 1 << 20).is_some());
    }

    #[test]
    fn evidence_following_frame() {
        let mut f = frame(1, &[0xCD; 50]);
        f[0] = 0xFF;
        f[1] = 0xFF; // two bits or more: no single-bit repair
        f.extend_from_slice(&frame(2, b"next"));
        assert!(damage_evidence(&f, 1 << 20).is_some());
    }

    #[test]
    fn no_evidence_in_torn_prefix() {
        let f = frame(1, &[0x5A; 300]);
        for cut in 9..f.len() {
            assert_eq!(damage_evidence(&f[..cut], 1 << 20), None, "cut {cut}");
        }
    }
}
