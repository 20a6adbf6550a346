//! Tenant maps for `method: home`: which region owns each tenant's data, where it may
//! fail over, and planned moves. Read from a CSV file (`tenant,home,allowed,move_to,
//! move_at`), validated with every mistake at FILE:LINE, and compiled into what the
//! query path reads with one hash lookup: a tenant's label → the index of its
//! (home, allowed) set, whose ranked list the policy compiles once per set, not per
//! tenant.

use std::collections::HashMap;
use std::path::Path;

use crate::diag::Diagnostic;

/// A file larger than this is refused (a million tenants take about 40 MB).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Tenants per map.
pub const MAX_TENANTS: usize = 5_000_000;

const HEADER: [&str; 5] = ["tenant", "home", "allowed", "move_to", "move_at"];

/// A (home, allowed) combination: `allowed` empty means any of the policy's regions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HomeSet {
    pub home: u16,
    /// Sorted; empty: any region of the policy.
    pub allowed: Vec<u16>,
}

/// A planned move: from `at` (Unix seconds) the tenant answers with set `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub from: u32,
    pub to: u32,
    pub at: i64,
}

/// One tenant: its set, and its move if one is planned (an index into `moves`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    set: u32,
    mv: u32,
}

const NO_MOVE: u32 = u32::MAX;

/// A tenant map as loaded: the query path's table.
#[derive(Debug, Default)]
pub struct TenantMap {
    /// Lowercase label → entry. Keys come from the operator's file, never from the
    /// network (queries only look up), so a fast non-keyed hash is safe.
    index: HashMap<Box<[u8]>, Entry, foldhash::fast::FixedState>,
    pub sets: Vec<HomeSet>,
    pub moves: Vec<Move>,
    /// Tenants per set as listed (before any move).
    listed: Vec<u32>,
}

/// What a tenant's answer follows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// The set in force at the time asked.
    pub set: u32,
    /// The set before its move and the move, if one is planned.
    pub planned: Option<(u32, Move)>,
}

impl TenantMap {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The tenant `label` (any case) at `now()` (Unix seconds; read only when the tenant
    /// has a planned move).
    #[inline]
    pub fn find(&self, label: &[u8], now: &dyn Fn() -> i64) -> Option<Found> {
        let mut lower = [0u8; 63];
        let key = lower.get_mut(..label.len())?;
        key.copy_from_slice(label);
        key.make_ascii_lowercase();
        let e = self.index.get(&*key)?;
        let planned = self.moves.get(e.mv as usize).map(|m| (e.set, *m));
        let set = match planned {
            Some((_, m)) if now() >= m.at => m.to,
            _ => e.set,
        };
        Some(Found { set, planned })
    }

    /// Tenants per set at `now`: as listed, with the moves due by then applied.
    pub fn counts_at(&self, now: i64) -> Vec<u32> {
        let mut counts = self.listed.clone();
        counts.resize(self.sets.len(), 0);
        for m in self.moves.iter().filter(|m| now >= m.at) {
            if let Some(c) = counts.get_mut(m.from as usize) {
                *c = c.saturating_sub(1);
            }
            if let Some(c) = counts.get_mut(m.to as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// Tenants, with their label, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Found)> + '_ {
        self.index.iter().map(|(k, e)| {
            let planned = self.moves.get(e.mv as usize).map(|m| (e.set, *m));
            (
                &**k,
                Found {
                    set: e.set,
                    planned,
                },
            )
        })
    }
}

/// A tenant's line as written: for `meridian admin tenant` to rewrite the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub tenant: String,
    pub home: String,
    pub allowed: Vec<String>,
    pub move_to: Option<String>,
    pub move_at: Option<String>,
}

impl Line {
    fn render(&self) -> String {
        format!(
            "{},{},{},{},{}",
            self.tenant,
            self.home,
            self.allowed.join(" "),
            self.move_to.as_deref().unwrap_or(""),
            self.move_at.as_deref().unwrap_or("")
        )
    }
}

/// The line of `tenant` (any case) in a tenant file's text, as written.
pub fn line_of(text: &str, tenant: &str) -> Option<Line> {
    text.lines()
        .skip_while(|l| l.split('#').next().unwrap_or("").trim().is_empty())
        .skip(1)
        .find_map(|raw| {
            let content = raw.split('#').next().unwrap_or("").trim();
            let f: Vec<&str> = content.split(',').map(str::trim).collect();
            let [t, home, allowed, move_to, move_at] = f[..] else {
                return None;
            };
            t.eq_ignore_ascii_case(tenant).then(|| Line {
                tenant: t.to_string(),
                home: home.to_string(),
                allowed: allowed.split_whitespace().map(str::to_string).collect(),
                move_to: (!move_to.is_empty()).then(|| move_to.to_string()),
                move_at: (!move_at.is_empty()).then(|| move_at.to_string()),
            })
        })
}

/// A tenant file's text with `tenant`'s line replaced by `line` (appended when it had
/// none), or removed (`None`); every other line, comment and blank kept as it was.
pub fn rewrite(text: &str, tenant: &str, line: Option<&Line>) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    let mut header = false;
    let mut done = false;
    for raw in text.lines() {
        let content = raw.split('#').next().unwrap_or("").trim();
        let first = content.split(',').next().unwrap_or("").trim();
        if header && !content.is_empty() && first.eq_ignore_ascii_case(tenant) {
            if let (Some(l), false) = (line, done) {
                out.push_str(&l.render());
                out.push('\n');
            }
            done = true;
            continue;
        }
        header |= !content.is_empty();
        out.push_str(raw);
        out.push('\n');
    }
    if let (Some(l), false) = (line, done) {
        if !header {
            out.push_str(&HEADER.join(","));
            out.push('\n');
        }
        out.push_str(&l.render());
        out.push('\n');
    }
    out
}

/// Parses a tenant file's text. `region` maps a region name to its index; errors name
/// `path` and the line.
pub fn parse(
    path: &Path,
    text: &str,
    region: &dyn Fn(&str) -> Option<u16>,
) -> Result<TenantMap, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    // Sized once from the line count: growing a million-entry table by doubling would
    // hold two of them at once.
    let lines = text
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        .min(MAX_TENANTS);
    let mut map = TenantMap {
        index: HashMap::with_capacity_and_hasher(lines, Default::default()),
        ..TenantMap::default()
    };
    let mut sets: HashMap<HomeSet, u32> = HashMap::new();
    let mut header = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split(',').map(str::trim).collect();
        if !header {
            if fields
                .iter()
                .map(|f| f.to_ascii_lowercase())
                .ne(HEADER.iter().map(|h| h.to_string()))
            {
                errors.push(Diagnostic::new(
                    path,
                    line,
                    format!("the first line must be the header {:?}", HEADER.join(",")),
                ));
                return Err(errors);
            }
            header = true;
            continue;
        }
        if errors.len() >= 100 {
            errors.push(Diagnostic::new(path, line, "too many errors; stopped"));
            break;
        }
        let [tenant, home, allowed, move_to, move_at] = fields[..] else {
            errors.push(Diagnostic::new(
                path,
                line,
                format!(
                    "expected 5 fields ({}), found {}",
                    HEADER.join(","),
                    fields.len()
                ),
            ));
            continue;
        };
        let n = errors.len();
        if !valid_label(tenant) {
            errors.push(Diagnostic::new(
                path,
                line,
                format!("tenant {tenant:?} is not a DNS label (letters, digits, hyphens; 1-63, no hyphen at either end)"),
            ));
        }
        let known = |name: &str, what: &str, errors: &mut Vec<Diagnostic>| {
            let r = region(name);
            if r.is_none() {
                errors.push(Diagnostic::new(
                    path,
                    line,
                    format!("{what}: unknown region {name:?}"),
                ));
            }
            r
        };
        let home_r = known(home, "home", &mut errors);
        let mut allowed_r: Vec<u16> = allowed
            .split_whitespace()
            .filter_map(|a| known(a, "allowed", &mut errors))
            .collect();
        allowed_r.sort_unstable();
        allowed_r.dedup();
        if let Some(h) = home_r
            && !allowed_r.is_empty()
            && !allowed_r.contains(&h)
        {
            errors.push(Diagnostic::new(
                path,
                line,
                format!("home {home:?} is not among the allowed regions"),
            ));
        }
        let mv = match (move_to.is_empty(), move_at.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let to = known(move_to, "move_to", &mut errors);
                if let Some(t) = to
                    && !allowed_r.is_empty()
                    && !allowed_r.contains(&t)
                {
                    errors.push(Diagnostic::new(
                        path,
                        line,
                        format!("move_to {move_to:?} is not among the allowed regions"),
                    ));
                }
                let at = match humantime::parse_rfc3339_weak(move_at) {
                    Ok(t) => t
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .and_then(|d| i64::try_from(d.as_secs()).ok()),
                    Err(e) => {
                        errors.push(Diagnostic::new(
                            path,
                            line,
                            format!("move_at {move_at:?} is not a time (RFC 3339, e.g. 2026-12-20T02:00:00Z): {e}"),
                        ));
                        None
                    }
                };
                to.zip(at)
            }
            _ => {
                errors.push(Diagnostic::new(
                    path,
                    line,
                    "move_to and move_at go together: give both or neither",
                ));
                None
            }
        };
        let key: Box<[u8]> = tenant.to_ascii_lowercase().into_bytes().into();
        if map.index.contains_key(&key) {
            // Rare: the first line is looked for again rather than kept for every tenant.
            let first = first_listed(text, tenant).unwrap_or(0);
            errors.push(Diagnostic::new(
                path,
                line,
                format!("tenant {tenant:?} is already listed at line {first}"),
            ));
            continue;
        }
        if errors.len() != n {
            continue;
        }
        let Some(home_r) = home_r else { continue };
        if map.index.len() >= MAX_TENANTS {
            errors.push(Diagnostic::new(
                path,
                line,
                format!("more than {MAX_TENANTS} tenants"),
            ));
            break;
        }
        let mut intern = |set: HomeSet| -> u32 {
            let next = sets.len() as u32;
            *sets.entry(set).or_insert(next)
        };
        let set = intern(HomeSet {
            home: home_r,
            allowed: allowed_r.clone(),
        });
        let mv = match mv {
            Some((to, at)) => {
                let to = intern(HomeSet {
                    home: to,
                    allowed: allowed_r,
                });
                map.moves.push(Move { from: set, to, at });
                (map.moves.len() - 1) as u32
            }
            None => NO_MOVE,
        };
        map.index.insert(key, Entry { set, mv });
    }
    if !header && errors.is_empty() {
        errors.push(Diagnostic::new(
            path,
            1,
            format!(
                "empty tenant file: the first line must be the header {:?}",
                HEADER.join(",")
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut ordered: Vec<(HomeSet, u32)> = sets.into_iter().collect();
    ordered.sort_by_key(|(_, i)| *i);
    map.sets = ordered.into_iter().map(|(s, _)| s).collect();
    map.listed = vec![0; map.sets.len()];
    for e in map.index.values() {
        if let Some(c) = map.listed.get_mut(e.set as usize) {
            *c += 1;
        }
    }
    Ok(map)
}

/// The line where `tenant` (any case) is first listed.
fn first_listed(text: &str, tenant: &str) -> Option<usize> {
    text.lines().enumerate().skip(1).find_map(|(i, raw)| {
        let first = raw.split('#').next()?.split(',').next()?.trim();
        first.eq_ignore_ascii_case(tenant).then_some(i + 1)
    })
}

/// Reads and parses a tenant file, refusing one over [`MAX_FILE_BYTES`].
pub fn load(
    path: &Path,
    region: &dyn Fn(&str) -> Option<u16>,
) -> Result<TenantMap, Vec<Diagnostic>> {
    let size = std::fs::metadata(path)
        .map_err(|e| {
            vec![Diagnostic::new(
                path,
                0,
                format!("cannot read tenant file: {e}"),
            )]
        })?
        .len();
    if size > MAX_FILE_BYTES {
        return Err(vec![Diagnostic::new(
            path,
            0,
            format!("tenant file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit"),
        )]);
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic::new(
            path,
            0,
            format!("cannot read tenant file: {e}"),
        )]
    })?;
    parse(path, &text, region)
}

/// Letters, digits and hyphens, 1 to 63, no hyphen first or last (RFC 1123 host label).
pub fn valid_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first() != Some(&b'-')
        && b.last() != Some(&b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(name: &str) -> Option<u16> {
        ["us-east", "eu-west", "eu-central", "ap-south"]
            .iter()
            .position(|r| *r == name)
            .map(|i| i as u16)
    }

    fn parse_text(text: &str) -> Result<TenantMap, Vec<String>> {
        parse(Path::new("tenants.csv"), text, &region)
            .map_err(|e| e.iter().map(ToString::to_string).collect())
    }

    const FILE: &str = "tenant,home,allowed,move_to,move_at
# comment
acme,eu-west,eu-west eu-central,,
globex,us-east,,,                     # allowed empty: any region
initech,eu-west,eu-west eu-central,eu-central,2026-12-20T02:00:00Z
Hooli,eu-west,eu-central eu-west,,
";

    #[test]
    fn a_map_interns_sets_and_finds_tenants_in_any_case() {
        let m = parse_text(FILE).unwrap();
        assert_eq!(m.len(), 4);
        // acme and hooli share a set (allowed sorted); initech's move adds eu-central's.
        assert_eq!(m.sets.len(), 3, "{:?}", m.sets);
        let acme = m.find(b"ACME", &|| 0).unwrap();
        assert_eq!(acme, m.find(b"hooli", &|| 0).unwrap());
        assert_eq!(m.sets[acme.set as usize].home, 1);
        assert_eq!(m.sets[acme.set as usize].allowed, vec![1, 2]);
        assert!(
            m.sets[m.find(b"globex", &|| 0).unwrap().set as usize]
                .allowed
                .is_empty()
        );
        assert_eq!(m.find(b"nobody", &|| 0), None);
        assert_eq!(m.find(&[b'a'; 64], &|| 0), None, "longer than a label");
    }

    #[test]
    fn a_move_takes_effect_at_its_time() {
        let m = parse_text(FILE).unwrap();
        let at = 1_797_732_000; // 2026-12-20T02:00:00Z
        let before = m.find(b"initech", &|| at - 1).unwrap();
        let after = m.find(b"initech", &|| at).unwrap();
        assert_eq!(m.sets[before.set as usize].home, 1);
        assert_eq!(m.sets[after.set as usize].home, 2);
        assert_eq!(before.planned, after.planned);
        assert_eq!(before.planned.unwrap().1.at, at);
        let sum = |v: Vec<u32>| v.iter().sum::<u32>();
        assert_eq!(sum(m.counts_at(at - 1)), 4);
        assert_eq!(
            m.counts_at(at)[before.set as usize] + 1,
            m.counts_at(at - 1)[before.set as usize]
        );
        assert_eq!(m.counts_at(at)[after.set as usize], 1);
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.csv");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap(); // sparse: nothing is written
        let e = load(&path, &region).unwrap_err();
        assert!(
            e[0].to_string().contains("over the 268435456-byte limit"),
            "{e:?}"
        );
    }

    #[test]
    fn rewriting_changes_one_line_and_keeps_the_rest() {
        let line = Line {
            tenant: "acme".into(),
            home: "eu-central".into(),
            allowed: vec!["eu-west".into(), "eu-central".into()],
            move_to: None,
            move_at: None,
        };
        let changed = rewrite(FILE, "ACME", Some(&line));
        assert!(
            changed.contains("\nacme,eu-central,eu-west eu-central,,\n"),
            "{changed}"
        );
        assert!(changed.contains("# comment\n") && changed.contains("# allowed empty"));
        assert_eq!(changed.lines().count(), FILE.lines().count());
        assert_eq!(line_of(&changed, "acme"), Some(line.clone()));
        let m = parse_text(&changed).unwrap();
        assert_eq!(m.sets[m.find(b"acme", &|| 0).unwrap().set as usize].home, 2);
        // Added at the end, removed without a trace.
        let added = rewrite(
            FILE,
            "newco",
            Some(&Line {
                tenant: "newco".into(),
                ..line
            }),
        );
        assert!(added.ends_with("newco,eu-central,eu-west eu-central,,\n"));
        assert_eq!(parse_text(&added).unwrap().len(), 5);
        let removed = rewrite(&added, "newco", None);
        assert_eq!(removed, FILE);
        assert_eq!(line_of(FILE, "tenant"), None, "the header is not a tenant");
    }

    #[test]
    fn every_mistake_is_reported_at_its_line() {
        let bad = "tenant,home,allowed,move_to,move_at
acme,eu-west,,,
acme,us-east,,,
-bad-,eu-west,,,
x,mars,,,
y,eu-west,us-east,,
z,eu-west,,eu-central,
w,eu-west,,eu-central,next tuesday
v,eu-west,eu-west,eu-central,2026-12-20T02:00:00Z
u,eu-west
";
        let errors = parse_text(bad).unwrap_err();
        let expect = [
            "tenants.csv:3: tenant \"acme\" is already listed at line 2",
            "tenants.csv:4: tenant \"-bad-\" is not a DNS label",
            "tenants.csv:5: home: unknown region \"mars\"",
            "tenants.csv:6: home \"eu-west\" is not among the allowed regions",
            "tenants.csv:7: move_to and move_at go together",
            "tenants.csv:8: move_at \"next tuesday\" is not a time",
            "tenants.csv:9: move_to \"eu-central\" is not among the allowed regions",
            "tenants.csv:10: expected 5 fields",
        ];
        assert_eq!(errors.len(), expect.len(), "{errors:#?}");
        for (e, want) in errors.iter().zip(expect) {
            assert!(e.starts_with(want), "{e} vs {want}");
        }
        let missing = parse_text("acme,eu-west,,,\n").unwrap_err();
        assert!(
            missing[0].starts_with("tenants.csv:1: the first line must be the header"),
            "{missing:?}"
        );
        let empty = parse_text("# nothing\n").unwrap_err();
        assert!(empty[0].contains("empty tenant file"), "{empty:?}");
    }
}
