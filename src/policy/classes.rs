//! What the ranking sees of each GeoIP client class, computed once per load and shared by
//! every policy: the class's point as a unit vector (for `Nearest` routes, which rank per
//! query) and its *area*, the part of its location that methods other than distance
//! read (country, continent, subdivision when some geo rule names one, innermost overlay
//! CIDR). A city-level database has ~100 000 classes but only a few hundred areas, so a
//! route that depends on the area alone keeps one entry per area (`route::Kind::Area`).

use std::collections::HashMap;

use super::{Method, PolicySet};
use crate::geo::{Class, GeoTable, Unit, unit};

/// A class without a point: ranked in policy order, as `compile::rank` does.
pub const NO_POINT: Unit = [f64::NAN; 3];

#[derive(Debug, Default)]
pub struct ClassView {
    /// By class id: the unit vector of the class's effective point, or `NO_POINT`.
    pub units: Box<[Unit]>,
    /// By class id: its area.
    pub areas: Box<[u32]>,
    /// By area: one class of that area, for ranking it.
    pub representatives: Box<[u32]>,
    /// By region index: the region's unit vector.
    pub regions: Box<[Unit]>,
}

type AreaKey = (
    Option<[u8; 2]>,
    Option<[u8; 2]>,
    Option<Box<str>>,
    Option<u32>,
);

impl ClassView {
    pub fn build(set: &PolicySet, geo: &GeoTable) -> ClassView {
        // Subdivisions multiply the areas tenfold: part of the area only when a rule asks.
        let by_subdivision = set.policies.iter().any(|p| match &p.method {
            Method::Geo { rules, .. } => rules.iter().any(|r| !r.subdivisions.is_empty()),
            _ => false,
        });
        let mut ids: HashMap<AreaKey, u32> = HashMap::new();
        let mut representatives = Vec::new();
        let mut units = Vec::with_capacity(geo.classes.len());
        let mut areas = Vec::with_capacity(geo.classes.len());
        for (i, class) in geo.classes.iter().enumerate() {
            let loc = geo.class_location(class);
            units.push(loc.and_then(|l| l.point).map_or(NO_POINT, unit));
            let key = (
                loc.and_then(|l| l.country),
                loc.and_then(|l| l.continent),
                loc.and_then(|l| l.subdivision.clone())
                    .filter(|_| by_subdivision),
                class.overlay,
            );
            let area = *ids.entry(key).or_insert_with(|| {
                representatives.push(i as u32);
                (representatives.len() - 1) as u32
            });
            areas.push(area);
        }
        ClassView {
            units: units.into(),
            areas: areas.into(),
            representatives: representatives.into(),
            regions: set.regions.iter().map(|r| r.unit).collect(),
        }
    }

    #[inline]
    pub fn unit(&self, class: u32) -> &Unit {
        self.units.get(class as usize).unwrap_or(&NO_POINT)
    }

    #[inline]
    pub fn area(&self, class: u32) -> Option<u32> {
        self.areas.get(class as usize).copied()
    }

    #[inline]
    pub fn region(&self, region: u16) -> &Unit {
        self.regions.get(usize::from(region)).unwrap_or(&NO_POINT)
    }

    pub fn representative<'g>(&self, geo: &'g GeoTable, area: u32) -> Option<&'g Class> {
        geo.class(*self.representatives.get(area as usize)?)
    }

    pub fn bytes(&self) -> usize {
        self.units.len() * std::mem::size_of::<Unit>()
            + (self.areas.len() + self.representatives.len()) * 4
            + self.regions.len() * std::mem::size_of::<Unit>()
    }
}

/// Orders `candidates` (indexes into a route's candidates, with their regions) nearest
/// first for a client at `client`: stable, so ties and a client without a point keep the
/// operator's order. The one ordering function of `Nearest`: `compile::rank` and the
/// query path both call it.
pub fn nearest(view: &ClassView, client: &Unit, items: &mut [(u16, u16)]) {
    if client[0].is_nan() {
        return;
    }
    // Insertion sort: at most `NEAREST_MAX` items, and stable.
    let key = |(r, _): (u16, u16)| crate::geo::closeness(client, view.region(r));
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 {
            let (Some(&a), Some(&b)) = (items.get(j - 1), items.get(j)) else {
                break;
            };
            if key(b) > key(a) {
                items.swap(j - 1, j);
                j -= 1;
            } else {
                break;
            }
        }
    }
}

/// Whether `items` (in order) is also the `nearest` order for a client at `client`: each
/// neighbour pair is strictly closer first, or tied in the operator's order.
pub fn is_nearest_order(view: &ClassView, client: &Unit, items: &[(u16, u16)]) -> bool {
    if client[0].is_nan() {
        return items.windows(2).all(|w| matches!(w, [a, b] if a.1 < b.1));
    }
    let key = |r: u16| crate::geo::closeness(client, view.region(r));
    items.windows(2).all(|w| match w {
        [a, b] => {
            let (ka, kb) = (key(a.0), key(b.0));
            ka > kb || (ka == kb && a.1 < b.1)
        }
        _ => true,
    })
}
