//! Sorting a group's writes by a `u64` that leads their keys, a byte at a
//! time, rather than by comparisons.
//!
//! A group's keys mostly begin with a number from a narrow range (session
//! numbers, LSNs): only two or three of its eight bytes differ within the
//! group, so a pass over each of those bytes places every write in fewer
//! instructions than a comparison sort's dozen rounds of compares and
//! moves over a few thousand writes.

/// Below this many entries a comparison sort costs less than the passes.
const RADIX_MIN: usize = 64;

/// Sorts `v` by `full`, given `lead`, a number whose order agrees with
/// `full`'s (`lead(a) < lead(b)` implies `full(a) < full(b)`).
///
/// The entries are placed by `lead` a byte at a time, lowest first,
/// skipping the bytes every entry shares (a stable order by `lead`); each
/// run with one `lead` is then sorted by `full`. Where the `full` keys are
/// distinct the result is the one order they define, the same as
/// `sort_unstable_by_key(full)`'s.
pub(crate) fn sort_by_lead<T: Copy, K: Ord>(
    v: &mut Vec<T>,
    lead: impl Fn(&T) -> u64,
    full: impl Fn(&T) -> K,
) {
    let Some(&first) = v.first() else {
        return;
    };
    if v.len() < RADIX_MIN {
        v.sort_unstable_by_key(full);
        return;
    }
    let first_lead = lead(&first);
    let mut varying = 0u64;
    for e in v.iter() {
        varying |= lead(e) ^ first_lead;
    }
    if varying != 0 {
        let mut from = std::mem::take(v);
        let mut to = vec![first; from.len()];
        for shift in (0..64).step_by(8) {
            if (varying >> shift) & 0xff == 0 {
                continue;
            }
            let digit = |e: &T| usize::from((lead(e) >> shift) as u8);
            let mut next = [0usize; 256];
            for e in &from {
                next[digit(e)] += 1;
            }
            let mut sum = 0;
            for n in &mut next {
                let count = *n;
                *n = sum;
                sum += count;
            }
            for e in &from {
                let at = &mut next[digit(e)];
                if let Some(slot) = to.get_mut(*at) {
                    *slot = *e;
                }
                *at += 1;
            }
            std::mem::swap(&mut from, &mut to);
        }
        *v = from;
    }
    for run in v.chunk_by_mut(|a, b| lead(a) == lead(b)) {
        if run.len() > 1 {
            run.sort_unstable_by_key(&full);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Leads from a few bytes' worth of values, placed at any byte, so
    /// that runs of one lead are common and most bytes are shared.
    fn leads() -> impl Strategy<Value = u64> {
        prop_oneof![
            (0u64..8, 0u32..57).prop_map(|(x, s)| x << s),
            (0u64..4096, 0u32..53).prop_map(|(x, s)| (x << s) | 0x0101),
            any::<u64>(),
        ]
    }

    proptest! {
        /// Entries end in the order of a comparison sort by their full
        /// keys (distinct: a lead, then a tie-breaker, then the place).
        #[test]
        fn sorts_as_a_comparison_sort(
            entries in prop::collection::vec((leads(), 0u8..4), 0..700),
            same_lead in any::<bool>(),
        ) {
            let mut v: Vec<(u64, u8, usize)> = entries
                .iter()
                .enumerate()
                .map(|(at, &(lead, tie))| (if same_lead { 7 } else { lead }, tie, at))
                .collect();
            // Places reversed within each lead, so the tie-break is needed.
            v.reverse();
            let mut want = v.clone();
            want.sort_by_key(|&e| e);
            sort_by_lead(&mut v, |e| e.0, |&e| e);
            prop_assert_eq!(v, want);
        }

        /// Keys of two words led by the first (as turn keys and trace
        /// ids are sorted) end in the words' order.
        #[test]
        fn words_led_by_the_first_sort_as_the_words(
            keys in prop::collection::btree_set((leads(), any::<u64>()), 0..700),
        ) {
            let mut want: Vec<u128> = keys
                .iter()
                .map(|&(hi, lo)| u128::from(hi) << 64 | u128::from(lo))
                .collect();
            // Descending within each lead, and leads interleaved.
            let mut v = want.clone();
            v.reverse();
            let third = v.len() / 3;
            v.rotate_left(third);
            want.sort_unstable();
            sort_by_lead(&mut v, |&k| (k >> 64) as u64, |&k| k);
            prop_assert_eq!(v, want);
        }
    }
}
