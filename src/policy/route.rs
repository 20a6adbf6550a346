//! A policy's query-time data in one allocation: its candidate regions, its client
//! class → list mapping and the few ordered lists that mapping uses.
//!
//! With ten thousand policies a query's policy is cold in the cache. Kept as separate
//! boxes (mapping, class array, list table, list) a query paid five dependent cache
//! misses before it knew which regions to try; packed here it pays one for the header
//! and one for its class's entry, the lists usually sharing a line with the header.
//! The layout is written by hand for that reason; `Route::new` and the accessors are the
//! only code that knows it.
//!
//! Lists hold candidate positions (slots), not region indices, so the answer's counter
//! slot needs no search.

use std::sync::Arc;

/// `words` layout (`u16`; a "pair" is a `u32` in two words, low first):
/// ```text
/// [0,1] L lists (pair)  [2,3] C classes (pair)  [4] class entry width in words (0: a
/// byte)  [5] K candidates  [6,7] the no-client list (local index, pair)  [8,9] where the
/// class entries start (pair)
/// [HEADER + 5i ..] per local list i: start word (pair), length, global id (pair)
/// then K candidate region indexes, then the lists' slots, then C class entries (local
/// list indexes: two per word, low byte first, when L ≤ 256; a word when L ≤ 65 536;
/// else a pair). The lists come before the classes so that the few a policy uses share
/// the header's lines.
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    words: Arc<[u16]>,
}

const HEADER: usize = 10;
const DIR: usize = 5;

impl Default for Route {
    fn default() -> Self {
        // One empty list, no classes, no candidates: every lookup gets nothing to try.
        Route::new(&[], &[], 0, &[&[]], &[0])
    }
}

fn pair(x: u32) -> [u16; 2] {
    [(x & 0xFFFF) as u16, (x >> 16) as u16]
}

impl Route {
    /// `by_class[c]` and `no_client` are local list indexes into `lists`, whose entries
    /// are region indexes and whose global (interned) ids are `ids`. Regions a list uses
    /// that are not among `candidates` are appended after them (they get no counter).
    /// `None` when a count does not fit its field (more than 65 535 candidates, a list
    /// longer than that, or more than 2^32 words).
    pub fn try_new(
        candidates: &[u16],
        by_class: &[u32],
        no_client: u32,
        lists: &[&[u16]],
        ids: &[u32],
    ) -> Option<Route> {
        let big = |x: usize| u32::try_from(x).ok();
        let small = |x: usize| u16::try_from(x).ok();
        // Region → slot, sized by the largest region used: a policy over a hundred
        // regions ranks a hundred of them for each of hundreds of classes.
        let top = candidates
            .iter()
            .chain(lists.iter().flat_map(|l| l.iter()))
            .max()
            .map_or(0, |&r| usize::from(r) + 1);
        let mut slot_of: Vec<Option<u16>> = vec![None; top];
        let mut cands: Vec<u16> = Vec::with_capacity(candidates.len());
        for &r in candidates.iter().chain(lists.iter().flat_map(|l| l.iter())) {
            let s = slot_of.get_mut(usize::from(r))?;
            if s.is_none() {
                *s = Some(small(cands.len())?);
                cands.push(r);
            }
        }
        let n_lists = lists.len();
        let width = match n_lists {
            0..=256 => 0usize,
            257..=65_536 => 1,
            _ => 2,
        };
        let class_words = match width {
            0 => by_class.len().div_ceil(2),
            w => by_class.len() * w,
        };
        let lists_at = HEADER + DIR * n_lists + cands.len();
        let classes_at = lists_at + lists.iter().map(|l| l.len()).sum::<usize>();
        let total = classes_at + class_words;
        big(total)?;
        let mut w: Vec<u16> = Vec::with_capacity(total);
        w.extend(pair(big(n_lists)?));
        w.extend(pair(big(by_class.len())?));
        w.extend([width as u16, small(cands.len())?]);
        w.extend(pair(no_client));
        w.extend(pair(big(classes_at)?));
        let mut at = lists_at;
        for (l, &id) in lists.iter().zip(ids) {
            w.extend(pair(big(at)?));
            w.push(small(l.len())?);
            w.extend(pair(id));
            at += l.len();
        }
        w.extend_from_slice(&cands);
        for l in lists {
            for r in l.iter() {
                w.push(slot_of.get(usize::from(*r)).copied().flatten()?);
            }
        }
        match width {
            0 => {
                for two in by_class.chunks(2) {
                    let lo = u8::try_from(*two.first()?).ok()?;
                    let hi = match two.get(1) {
                        Some(&h) => u8::try_from(h).ok()?,
                        None => 0,
                    };
                    w.push(u16::from(lo) | (u16::from(hi) << 8));
                }
            }
            1 => {
                for &c in by_class {
                    w.push(small(c as usize)?);
                }
            }
            _ => by_class.iter().for_each(|&c| w.extend(pair(c))),
        }
        Some(Route { words: w.into() })
    }

    /// As `try_new`; a route that cannot be packed answers nothing (the compiler checks
    /// with `try_new` first).
    pub fn new(
        candidates: &[u16],
        by_class: &[u32],
        no_client: u32,
        lists: &[&[u16]],
        ids: &[u32],
    ) -> Route {
        Route::try_new(candidates, by_class, no_client, lists, ids).unwrap_or(Route {
            words: Arc::from([0u16; HEADER]),
        })
    }

    #[inline]
    fn word(&self, i: usize) -> usize {
        usize::from(self.words.get(i).copied().unwrap_or(0))
    }

    #[inline]
    fn pair(&self, i: usize) -> usize {
        self.word(i) | (self.word(i + 1) << 16)
    }

    #[inline]
    fn n_lists(&self) -> usize {
        self.pair(0)
    }

    #[inline]
    fn candidates_at(&self) -> usize {
        HEADER + DIR * self.n_lists()
    }

    /// Candidate regions, in the operator's order (then any extra list members).
    #[inline]
    pub fn candidates(&self) -> &[u16] {
        let at = self.candidates_at();
        self.words.get(at..at + self.word(5)).unwrap_or_default()
    }

    /// The local list index for a client class (`None` for a class the route does not
    /// know).
    #[inline]
    pub fn local(&self, class: u32) -> Option<u32> {
        let class = class as usize;
        if class >= self.pair(2) {
            return None;
        }
        let at = self.pair(8);
        let local = match self.word(4) {
            0 => {
                let w = self.word(at + class / 2);
                (w >> ((class & 1) * 8)) & 0xFF
            }
            1 => self.word(at + class),
            _ => self.pair(at + 2 * class),
        };
        Some(local as u32)
    }

    /// The list for a query without client information.
    #[inline]
    pub fn no_client(&self) -> u32 {
        self.pair(6) as u32
    }

    /// A local list: its slots (positions in `candidates`) and its global id.
    #[inline]
    pub fn list(&self, local: u32) -> (&[u16], u32) {
        if local as usize >= self.n_lists() {
            return (&[], 0);
        }
        let d = HEADER + DIR * local as usize;
        let (start, len) = (self.pair(d), self.word(d + 2));
        let slots = self.words.get(start..start + len).unwrap_or_default();
        (slots, self.pair(d + 3) as u32)
    }

    /// Bytes used by the packed data.
    pub fn size(&self) -> usize {
        self.words.len() * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(r: &Route, local: u32) -> Vec<u16> {
        let c = r.candidates();
        r.list(local).0.iter().map(|&s| c[usize::from(s)]).collect()
    }

    #[test]
    fn packs_lists_classes_and_candidates() {
        let lists: [&[u16]; 3] = [&[4, 2], &[2, 4, 9], &[9]];
        let r = Route::new(&[2, 4, 9], &[1, 0, 2, 1, 1], 2, &lists, &[70, 71, 0x1_0005]);
        assert_eq!(r.candidates(), [2, 4, 9]);
        assert_eq!(
            (0..6).map(|c| r.local(c)).collect::<Vec<_>>(),
            [Some(1), Some(0), Some(2), Some(1), Some(1), None]
        );
        assert_eq!(regions(&r, 0), [4, 2]);
        assert_eq!(regions(&r, 1), [2, 4, 9]);
        assert_eq!(r.list(1).0, [0, 1, 2], "slots are candidate positions");
        assert_eq!(r.list(2).1, 0x1_0005, "global ids keep all 32 bits");
        assert_eq!(r.no_client(), 2);
        assert_eq!(r.list(3), (&[][..], 0), "an unknown list is empty");
    }

    #[test]
    fn a_list_member_outside_the_candidates_is_appended_without_a_counter_slot() {
        let lists: [&[u16]; 1] = [&[7, 3]];
        let r = Route::new(&[3], &[0], 0, &lists, &[1]);
        assert_eq!(r.candidates(), [3, 7]);
        assert_eq!(r.list(0).0, [1, 0]);
    }

    #[test]
    fn class_entries_widen_to_words_past_256_lists() {
        let owned: Vec<Vec<u16>> = (0..300u16).map(|i| vec![i]).collect();
        let lists: Vec<&[u16]> = owned.iter().map(|l| &l[..]).collect();
        let cands: Vec<u16> = (0..300).collect();
        let by_class: Vec<u32> = (0..300).rev().collect();
        let ids: Vec<u32> = (0..300).collect();
        let r = Route::new(&cands, &by_class, 0, &lists, &ids);
        assert!((0..300).all(|c| r.local(c) == Some(299 - c)));
        assert_eq!(regions(&r, 280), [280]);
    }

    #[test]
    fn class_entries_take_two_words_past_65536_lists() {
        let n = 70_000u32;
        let lists: Vec<&[u16]> = vec![&[]; n as usize];
        let by_class: Vec<u32> = (0..n).rev().collect();
        let ids: Vec<u32> = (0..n).map(|i| i * 3).collect();
        let r = Route::new(&[], &by_class, n - 1, &lists, &ids);
        assert!(
            [0, 1, 65_535, 65_536, n - 1]
                .iter()
                .all(|&c| r.local(c) == Some(n - 1 - c))
        );
        assert_eq!(r.list(n - 1).1, (n - 1) * 3);
        assert_eq!(r.no_client(), n - 1);
    }

    #[test]
    fn more_candidates_than_a_word_holds_are_refused() {
        let big: Vec<u16> = (0..u16::MAX).collect();
        let lists: [&[u16]; 1] = [&[1]];
        assert!(Route::try_new(&big, &[0], 0, &lists, &[0]).is_some());
        let mut more = big.clone();
        more.push(u16::MAX);
        assert!(Route::try_new(&more, &[0], 0, &lists, &[0]).is_none());
    }
}
