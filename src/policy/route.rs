//! A policy's query-time data: its own settings (`Head`, inline) and one shared
//! allocation with how a client's list is found, the few ordered lists it uses, and its
//! candidate regions. Policies with the same method, regions and rules rank every client
//! the same way, so they share the allocation (`policy::compile` builds it once per
//! distinct shape).
//!
//! How a client's list is found is the route's [`Kind`], chosen at compile time by what
//! the ranking depends on, so that memory grows with what differs between clients and
//! never as policies × client classes (a city-level database has 100 000 classes):
//! - `Nearest`: the order is a function of the client's point alone; the query ranks the
//!   few candidates by a dot product per region (`geo::closeness`), with an optional
//!   residency mask per area. No per-class data at all.
//! - `Area`: the list depends only on the client's area (country, continent, subdivision,
//!   overlay CIDR; see `policy::classes`): one entry per area, a few hundred.
//! - `One`: every client gets the same list.
//! - `Class`: one entry per client class (latency tables with measured values, or nearest
//!   over more regions than a query ranks cheaply).
//!
//! With ten thousand policies a query's policy is cold in the cache. Kept as separate
//! boxes (mapping, class array, list table, list) a query paid five dependent cache
//! misses before it knew which regions to try. Here an entry is the position of its list,
//! and a list carries its regions with their counter slots, so a query reads the header,
//! one entry and one list. The layout is written by hand for that reason; `Route::try_new`
//! and the accessors are the only code that knows it.

use std::sync::Arc;

/// `words` layout (`u16`; a "pair" is a `u32` in two words, low first):
/// ```text
/// [0,1] C entries (pair)  [2] words per entry (1 or 2)  [3] K candidates
/// [4,5] the no-client list (pair)  [6,7] where the entries start, or for `One` the
/// list every client gets (pair)  [8] the kind  [9] unused
/// then K candidate region indexes (the operator's order; counter slots index them),
/// then each list: its length n, n × (region, slot),
/// then C entries: the position of a list (`Class`, `Area`) or a residency mask over the
/// candidates (`Nearest`).
/// ```
/// Lists come before the entries so that the few a policy uses sit next to the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    head: Head,
    words: Arc<[u16]>,
}

const HEADER: usize = 10;
/// Where a list's (region, slot) pairs start, from its position.
const LIST_HEAD: usize = 1;

/// The most candidates a `Nearest` route ranks per query (and the width of its
/// residency masks).
pub const NEAREST_MAX: usize = 16;

/// How a route finds a client's list (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Class,
    Area,
    One,
    Nearest,
}

impl Kind {
    fn word(self) -> u16 {
        match self {
            Kind::Class => 0,
            Kind::Area => 1,
            Kind::One => 2,
            Kind::Nearest => 3,
        }
    }

    fn from_word(w: usize) -> Kind {
        match w {
            0 => Kind::Class,
            1 => Kind::Area,
            3 => Kind::Nearest,
            _ => Kind::One,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Class => "per client class",
            Kind::Area => "per area",
            Kind::One => "one list",
            Kind::Nearest => "ranked per query",
        }
    }
}

/// What `Route::try_new` packs after the lists: indexes into its `lists`.
#[derive(Debug, Clone, Copy)]
pub enum Entries<'a> {
    ByClass(&'a [u32]),
    ByArea(&'a [u32]),
    One(u32),
    /// Residency masks per area over the first `NEAREST_MAX` candidates; empty: none.
    Nearest(&'a [u16]),
}

impl Default for Route {
    /// No candidates, an empty list for everyone: nothing to try.
    fn default() -> Self {
        let mut words = [0u16; HEADER + LIST_HEAD];
        words[4] = HEADER as u16;
        words[6] = HEADER as u16;
        words[8] = Kind::One.word();
        Route {
            head: Head::default(),
            words: Arc::from(words),
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
    /// `overflow: spill` (the default): clients no region has room for still go to the
    /// first region that serves; else they get the all-down behaviour.
    pub spill: bool,
}

fn pair(x: u32) -> [u16; 2] {
    [(x & 0xFFFF) as u16, (x >> 16) as u16]
}

/// One ordered list: (region, counter slot) in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct List<'r> {
    pairs: &'r [u16],
}

impl<'r> List<'r> {
    /// A list over interleaved (region, slot) words, for orders computed per query.
    pub fn from_pairs(pairs: &'r [u16]) -> List<'r> {
        List { pairs }
    }

    /// (region, counter slot), best first.
    pub fn iter(&self) -> impl Iterator<Item = (u16, u16)> + Clone + 'r {
        self.pairs.chunks_exact(2).filter_map(|p| match *p {
            [r, s] => Some((r, s)),
            _ => None,
        })
    }

    pub fn regions(&self) -> Vec<u16> {
        self.iter().map(|(r, _)| r).collect()
    }
}

impl Route {
    /// `lists` hold region indexes; `no_client` and the list entries of `entries` index
    /// them. Regions a list uses that are not among `candidates` are appended after them
    /// (they get no counter). `None` when a count does not fit its field (more than
    /// 65 535 candidates, or more than 2^32 words).
    pub fn try_new(
        head: Head,
        candidates: &[u16],
        entries: Entries<'_>,
        no_client: u32,
        lists: &[&[u16]],
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
        let entries_at = at;
        let position = |local: u32| list_at.get(local as usize).copied();
        let (kind, values): (Kind, Vec<u32>) = match entries {
            Entries::ByClass(e) => (
                Kind::Class,
                e.iter().map(|&l| position(l)).collect::<Option<_>>()?,
            ),
            Entries::ByArea(e) => (
                Kind::Area,
                e.iter().map(|&l| position(l)).collect::<Option<_>>()?,
            ),
            Entries::One(_) => (Kind::One, Vec::new()),
            Entries::Nearest(masks) => {
                (Kind::Nearest, masks.iter().map(|&m| u32::from(m)).collect())
            }
        };
        // One word per entry while every value fits in one.
        let width = if values.iter().all(|&v| v <= u32::from(u16::MAX)) {
            1
        } else {
            2
        };
        let total = entries_at + width * values.len();
        big(total)?;
        let mut w: Vec<u16> = Vec::with_capacity(total);
        w.extend(pair(big(values.len())?));
        w.extend([width as u16, small(cands.len())?]);
        w.extend(pair(position(no_client)?));
        let sixth = match entries {
            Entries::One(l) => position(l)?,
            _ => big(entries_at)?,
        };
        w.extend(pair(sixth));
        w.extend([kind.word(), 0]);
        w.extend_from_slice(&cands);
        for l in lists {
            w.push(small(l.len())?);
            for &r in l.iter() {
                w.extend([r, slot_of.get(usize::from(r)).copied().flatten()?]);
            }
        }
        for v in values {
            match width {
                1 => w.push(small(v as usize)?),
                _ => w.extend(pair(v)),
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

    #[inline]
    pub fn kind(&self) -> Kind {
        Kind::from_word(self.word(8))
    }

    /// Entry `i` (a class for `Class`, an area for `Area` and `Nearest`): a list
    /// position, or a residency mask. `None` past the entries (`Nearest` without
    /// residency has none).
    #[inline]
    pub fn entry(&self, i: u32) -> Option<u32> {
        let i = i as usize;
        if i >= self.pair(0) {
            return None;
        }
        let at = self.pair(6);
        let value = match self.word(2) {
            1 => self.word(at + i),
            _ => self.pair(at + 2 * i),
        };
        Some(value as u32)
    }

    /// For `One`: the position of the list every client with an address gets.
    #[inline]
    pub fn one(&self) -> u32 {
        self.pair(6) as u32
    }

    /// The position of the list for a query without client information.
    #[inline]
    pub fn no_client(&self) -> u32 {
        self.pair(4) as u32
    }

    /// The list at a position `entry`, `one` or `no_client` gave.
    #[inline]
    pub fn list(&self, position: u32) -> List<'_> {
        let at = position as usize;
        let n = self.word(at);
        List {
            pairs: self
                .words
                .get(at + LIST_HEAD..at + LIST_HEAD + 2 * n)
                .unwrap_or_default(),
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
    pub fn spill(&self) -> bool {
        self.head.spill
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
        r.list(r.entry(class).unwrap()).regions()
    }

    #[test]
    fn packs_lists_entries_and_candidates() {
        let lists: [&[u16]; 3] = [&[4, 2], &[2, 4, 9], &[9]];
        let r = Route::try_new(
            Head::default(),
            &[2, 4, 9],
            Entries::ByClass(&[1, 0, 2, 1, 1]),
            2,
            &lists,
        )
        .unwrap();
        assert_eq!(r.kind(), Kind::Class);
        assert_eq!(r.candidates(), [2, 4, 9]);
        assert_eq!(regions(&r, 0), [2, 4, 9]);
        assert_eq!(regions(&r, 1), [4, 2]);
        assert_eq!(regions(&r, 2), [9]);
        assert_eq!(r.entry(0), r.entry(3), "one list, one position");
        assert_ne!(r.entry(0), r.entry(1));
        assert_eq!(r.entry(5), None, "an unknown class");
        let l = r.list(r.entry(0).unwrap());
        assert_eq!(l.iter().collect::<Vec<_>>(), [(2, 0), (4, 1), (9, 2)]);
        assert_eq!(r.list(r.no_client()).regions(), [9]);
    }

    #[test]
    fn each_kind_keeps_only_what_it_reads() {
        let lists: [&[u16]; 2] = [&[1, 2], &[2, 1]];
        let one = Route::try_new(Head::default(), &[1, 2], Entries::One(1), 0, &lists).unwrap();
        assert_eq!(one.kind(), Kind::One);
        assert_eq!(one.entry(0), None);
        assert_eq!(one.list(one.one()).regions(), [2, 1]);
        assert_eq!(one.list(one.no_client()).regions(), [1, 2]);
        let area = Route::try_new(
            Head::default(),
            &[1, 2],
            Entries::ByArea(&[1, 1, 0]),
            0,
            &lists,
        )
        .unwrap();
        assert_eq!((area.kind(), regions(&area, 2)), (Kind::Area, vec![1, 2]));
        let near = Route::try_new(
            Head::default(),
            &[1, 2],
            Entries::Nearest(&[0b11, 0b10]),
            0,
            &lists[..1],
        )
        .unwrap();
        assert_eq!(near.kind(), Kind::Nearest);
        assert_eq!(
            (near.entry(0), near.entry(1), near.entry(2)),
            (Some(3), Some(2), None)
        );
        let plain = Route::try_new(
            Head::default(),
            &[1, 2],
            Entries::Nearest(&[]),
            0,
            &lists[..1],
        )
        .unwrap();
        assert_eq!(plain.entry(0), None, "no residency: no entries");
        assert!(plain.size() < 64);
        assert!(
            Route::default()
                .list(Route::default().no_client())
                .regions()
                .is_empty()
        );
    }

    #[test]
    fn the_header_keeps_the_policy_settings() {
        let head = Head {
            answers: 3,
            weighted: true,
            ttl: 0x7FFF_FFFF,
            seed: 0x0123_4567_89AB_CDEF,
            spill: true,
        };
        let r = Route::try_new(head, &[1], Entries::One(0), 0, &[&[1]]).unwrap();
        assert_eq!(
            (r.answers(), r.weighted(), r.ttl(), r.seed()),
            (3, true, 0x7FFF_FFFF, 0x0123_4567_89AB_CDEF)
        );
        assert!(!Route::default().weighted());
    }

    #[test]
    fn a_list_member_outside_the_candidates_is_appended_without_a_counter_slot() {
        let lists: [&[u16]; 1] = [&[7, 3]];
        let r = Route::try_new(Head::default(), &[3], Entries::ByClass(&[0]), 0, &lists).unwrap();
        assert_eq!(r.candidates(), [3, 7]);
        assert_eq!(
            r.list(r.no_client()).iter().collect::<Vec<_>>(),
            [(7, 1), (3, 0)]
        );
    }

    #[test]
    fn entries_take_two_words_in_a_route_past_65535_words() {
        let owned: Vec<Vec<u16>> = (0..400u16)
            .map(|i| (0..100).map(|r| (r + i) % 100).collect())
            .collect();
        let lists: Vec<&[u16]> = owned.iter().map(|l| &l[..]).collect();
        let cands: Vec<u16> = (0..100).collect();
        let by_class: Vec<u32> = (0..400).rev().collect();
        let r = Route::try_new(
            Head::default(),
            &cands,
            Entries::ByClass(&by_class),
            0,
            &lists,
        )
        .unwrap();
        assert!(r.size() > 2 * 65_536);
        for c in [0u32, 1, 150, 399] {
            let l = r.list(r.entry(c).unwrap());
            let first = ((399 - c) % 100) as u16;
            assert_eq!(l.iter().next(), Some((first, first)));
        }
    }

    #[test]
    fn more_candidates_than_a_word_holds_are_refused() {
        let big: Vec<u16> = (0..u16::MAX).collect();
        let lists: [&[u16]; 1] = [&[1]];
        assert!(Route::try_new(Head::default(), &big, Entries::One(0), 0, &lists).is_some());
        let mut more = big.clone();
        more.push(u16::MAX);
        assert!(Route::try_new(Head::default(), &more, Entries::One(0), 0, &lists).is_none());
    }
}
