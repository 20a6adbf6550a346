//! A policy's query-time data: its own settings (`Head`, inline) and one shared
//! allocation with its client class → list mapping, the few ordered lists that mapping
//! uses, and its candidate regions. Policies with the same method, regions and rules rank
//! every client class the same way, so they share the allocation (`policy::compile`
//! builds it once per distinct shape).
//!
//! With ten thousand policies a query's policy is cold in the cache. Kept as separate
//! boxes (mapping, class array, list table, list) a query paid five dependent cache
//! misses before it knew which regions to try. Here a class entry is the position of its
//! list, and a list carries its regions with their counter slots, so a query reads the
//! header, one class entry and one list. The layout is written by hand for that reason;
//! `Route::try_new` and the accessors are the only code that knows it.

use std::sync::Arc;

/// `words` layout (`u16`; a "pair" is a `u32` in two words, low first):
/// ```text
/// [0,1] C classes (pair)  [2] words per class entry (1 or 2)  [3] K candidates
/// [4,5] the no-client list (pair)  [6,7] where the class entries start (pair)
/// then K candidate region indexes (the operator's order; counter slots index them),
/// then each list: its length n, its global id (pair), n × (region, slot),
/// then C class entries: the position of the class's list.
/// ```
/// Lists come before the classes so that the few a policy uses sit next to the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    head: Head,
    words: Arc<[u16]>,
}

const HEADER: usize = 8;
/// Where a list's (region, slot) pairs start, from its position.
const LIST_HEAD: usize = 3;

impl Default for Route {
    /// No classes, no candidates, an empty no-client list: nothing to try.
    fn default() -> Self {
        Route {
            head: Head::default(),
            words: Arc::from([0u16; HEADER]),
        }
    }
}

/// The policy's own settings a query needs, kept in the route's header so that a query
/// reads nothing else of the policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Head {
    pub answers: u16,
    pub weighted: bool,
    pub ttl: u32,
    /// Seeds the weighted order together with the client subnet.
    pub seed: u64,
}

fn pair(x: u32) -> [u16; 2] {
    [(x & 0xFFFF) as u16, (x >> 16) as u16]
}

/// One ordered list of a route: (region, counter slot) in order, and its global id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct List<'r> {
    pairs: &'r [u16],
    pub id: u32,
}

impl<'r> List<'r> {
    /// (region, counter slot), best first.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u16)> + Clone + 'r {
        self.pairs.chunks_exact(2).filter_map(|p| match *p {
            [r, s] => Some((r, s)),
            _ => None,
        })
    }
}

impl Route {
    /// `by_class[c]` and `no_client` are indexes into `lists`, whose entries are region
    /// indexes and whose global (interned) ids are `ids`. Regions a list uses that are
    /// not among `candidates` are appended after them (they get no counter).
    /// `None` when a count does not fit its field (more than 65 535 candidates, or more
    /// than 2^32 words).
    pub fn try_new(
        head: Head,
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
        let lists_at = HEADER + cands.len();
        let mut list_at = Vec::with_capacity(lists.len());
        let mut at = lists_at;
        for l in lists {
            list_at.push(big(at)?);
            at += LIST_HEAD + 2 * l.len();
        }
        let classes_at = at;
        // Every list starts before the class entries: one word each while that fits.
        let width = if classes_at <= usize::from(u16::MAX) {
            1
        } else {
            2
        };
        let total = classes_at + width * by_class.len();
        big(total)?;
        let position = |local: u32| list_at.get(local as usize).copied();
        let mut w: Vec<u16> = Vec::with_capacity(total);
        w.extend(pair(big(by_class.len())?));
        w.extend([width as u16, small(cands.len())?]);
        w.extend(pair(position(no_client)?));
        w.extend(pair(big(classes_at)?));
        w.extend_from_slice(&cands);
        for (l, &id) in lists.iter().zip(ids) {
            w.push(small(l.len())?);
            w.extend(pair(id));
            for &r in l.iter() {
                w.extend([r, slot_of.get(usize::from(r)).copied().flatten()?]);
            }
        }
        for &c in by_class {
            let at = position(c)?;
            match width {
                1 => w.push(small(at as usize)?),
                _ => w.extend(pair(at)),
            }
        }
        Some(Route {
            head,
            words: w.into(),
        })
    }

    /// The same shared data with another policy's settings.
    pub fn with_head(&self, head: Head) -> Route {
        Route {
            head,
            words: self.words.clone(),
        }
    }

    /// Whether two routes share their class mapping and lists (one allocation).
    pub fn shares_data_with(&self, other: &Route) -> bool {
        Arc::ptr_eq(&self.words, &other.words)
    }

    #[inline]
    fn word(&self, i: usize) -> usize {
        usize::from(self.words.get(i).copied().unwrap_or(0))
    }

    #[inline]
    fn pair(&self, i: usize) -> usize {
        self.word(i) | (self.word(i + 1) << 16)
    }

    /// Candidate regions, in the operator's order (then any extra list members).
    #[inline]
    pub fn candidates(&self) -> &[u16] {
        self.words
            .get(HEADER..HEADER + self.word(3))
            .unwrap_or_default()
    }

    /// The first word of the header, read to bring the route's first line into the cache.
    pub fn touch(&self) -> u16 {
        self.words.first().copied().unwrap_or(0)
    }

    /// The position of a client class's list (`None` for a class the route does not
    /// know). Equal positions are the same list.
    #[inline]
    pub fn class_list(&self, class: u32) -> Option<u32> {
        let class = class as usize;
        if class >= self.pair(0) {
            return None;
        }
        let at = self.pair(6);
        let position = match self.word(2) {
            1 => self.word(at + class),
            _ => self.pair(at + 2 * class),
        };
        Some(position as u32)
    }

    /// The position of the list for a query without client information.
    #[inline]
    pub fn no_client(&self) -> u32 {
        self.pair(4) as u32
    }

    /// The list at a position `class_list` or `no_client` gave.
    #[inline]
    pub fn list(&self, position: u32) -> List<'_> {
        let at = position as usize;
        let n = self.word(at);
        List {
            pairs: self
                .words
                .get(at + LIST_HEAD..at + LIST_HEAD + 2 * n)
                .unwrap_or_default(),
            id: self.pair(at + 1) as u32,
        }
    }

    #[inline]
    pub fn answers(&self) -> usize {
        usize::from(self.head.answers)
    }

    #[inline]
    pub fn weighted(&self) -> bool {
        self.head.weighted
    }

    #[inline]
    pub fn ttl(&self) -> u32 {
        self.head.ttl
    }

    #[inline]
    pub fn seed(&self) -> u64 {
        self.head.seed
    }

    /// Bytes used by the packed data.
    pub fn size(&self) -> usize {
        self.words.len() * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regions(r: &Route, class: u32) -> Vec<u16> {
        let at = r.class_list(class).unwrap();
        r.list(at).iter().map(|(region, _)| region).collect()
    }

    #[test]
    fn packs_lists_classes_and_candidates() {
        let lists: [&[u16]; 3] = [&[4, 2], &[2, 4, 9], &[9]];
        let r = Route::try_new(
            Head::default(),
            &[2, 4, 9],
            &[1, 0, 2, 1, 1],
            2,
            &lists,
            &[70, 71, 0x1_0005],
        )
        .unwrap();
        assert_eq!(r.candidates(), [2, 4, 9]);
        assert_eq!(regions(&r, 0), [2, 4, 9]);
        assert_eq!(regions(&r, 1), [4, 2]);
        assert_eq!(regions(&r, 2), [9]);
        assert_eq!(r.class_list(0), r.class_list(3), "one list, one position");
        assert_ne!(r.class_list(0), r.class_list(1));
        assert_eq!(r.class_list(5), None, "an unknown class");
        let l = r.list(r.class_list(0).unwrap());
        assert_eq!(l.iter().collect::<Vec<_>>(), [(2, 0), (4, 1), (9, 2)]);
        assert_eq!(l.id, 71);
        assert_eq!(r.list(r.class_list(2).unwrap()).id, 0x1_0005);
        assert_eq!(r.list(r.no_client()).id, 0x1_0005);
    }

    #[test]
    fn the_header_keeps_the_policy_settings() {
        let head = Head {
            answers: 3,
            weighted: true,
            ttl: 0x7FFF_FFFF,
            seed: 0x0123_4567_89AB_CDEF,
        };
        let r = Route::try_new(head, &[1], &[0], 0, &[&[1]], &[0]).unwrap();
        assert_eq!(
            (r.answers(), r.weighted(), r.ttl(), r.seed()),
            (3, true, 0x7FFF_FFFF, 0x0123_4567_89AB_CDEF)
        );
        assert!(!Route::default().weighted());
    }

    #[test]
    fn a_list_member_outside_the_candidates_is_appended_without_a_counter_slot() {
        let lists: [&[u16]; 1] = [&[7, 3]];
        let r = Route::try_new(Head::default(), &[3], &[0], 0, &lists, &[1]).unwrap();
        assert_eq!(r.candidates(), [3, 7]);
        assert_eq!(
            r.list(r.no_client()).iter().collect::<Vec<_>>(),
            [(7, 1), (3, 0)]
        );
    }

    #[test]
    fn class_entries_take_two_words_in_a_route_past_65535_words() {
        let owned: Vec<Vec<u16>> = (0..400u16)
            .map(|i| (0..100).map(|r| (r + i) % 100).collect())
            .collect();
        let lists: Vec<&[u16]> = owned.iter().map(|l| &l[..]).collect();
        let cands: Vec<u16> = (0..100).collect();
        let by_class: Vec<u32> = (0..400).rev().collect();
        let ids: Vec<u32> = (0..400).collect();
        let r = Route::try_new(Head::default(), &cands, &by_class, 0, &lists, &ids).unwrap();
        assert!(r.size() > 2 * 65_536);
        for c in [0u32, 1, 150, 399] {
            let l = r.list(r.class_list(c).unwrap());
            assert_eq!(l.id, 399 - c);
            assert_eq!(
                l.iter().next(),
                Some((((399 - c) % 100) as u16, ((399 - c) % 100) as u16))
            );
        }
    }

    #[test]
    fn more_candidates_than_a_word_holds_are_refused() {
        let big: Vec<u16> = (0..u16::MAX).collect();
        let lists: [&[u16]; 1] = [&[1]];
        assert!(Route::try_new(Head::default(), &big, &[0], 0, &lists, &[0]).is_some());
        let mut more = big.clone();
        more.push(u16::MAX);
        assert!(Route::try_new(Head::default(), &more, &[0], 0, &lists, &[0]).is_none());
    }
}
