//! `/api/v1/tenants`: the tenant maps of `method: home` policies, the tenants answered
//! away from home (paged), one tenant's answer, and changing one tenant: the map's file
//! is rewritten (atomically, every other line kept) and the configuration reloaded, so
//! the file stays the source of truth; a change the reload refuses puts the file back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{AdminState, api_error, authorize};
use crate::health::{Effective, HealthView};
use crate::policy::tenants::{self, Line};
use crate::policy::{HomeRoutes, PolicySet};
use crate::snapshot::Snapshot;

#[derive(Serialize, Clone)]
pub(super) struct MapInfo {
    pub(super) file: String,
    pub(super) policies: Vec<String>,
    pub(super) tenants: usize,
    pub(super) homes: usize,
    pub(super) allowed_sets: usize,
    pub(super) moves_scheduled: usize,
    pub(super) away_from_home: u64,
}

/// Each map's counts, for `/status`.
pub(super) fn summaries(snap: &Snapshot, view: &HealthView) -> Vec<MapInfo> {
    let set = &snap.policies;
    let now = now();
    maps(snap)
        .into_iter()
        .map(|(file, policies, routes)| {
            let map = &routes.map;
            let away_count = map
                .counts_at(now)
                .iter()
                .zip(&routes.lists)
                .filter(|(_, l)| away(set, view, l))
                .map(|(n, _)| u64::from(*n))
                .sum();
            info(file, policies, map, now, away_count)
        })
        .collect()
}

fn info(
    file: PathBuf,
    policies: Vec<String>,
    map: &tenants::TenantMap,
    now: i64,
    away_from_home: u64,
) -> MapInfo {
    MapInfo {
        file: file.display().to_string(),
        policies,
        tenants: map.len(),
        homes: map
            .sets
            .iter()
            .map(|s| s.home)
            .collect::<BTreeSet<_>>()
            .len(),
        allowed_sets: map
            .sets
            .iter()
            .map(|s| &s.allowed)
            .collect::<BTreeSet<_>>()
            .len(),
        moves_scheduled: map.moves.iter().filter(|m| m.at > now).count(),
        away_from_home,
    }
}

#[derive(Serialize)]
struct TenantsPage {
    maps: Vec<MapInfo>,
    /// Tenants answered away from their home now, by name (this page).
    away: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

const PAGE: usize = 100;

fn now() -> i64 {
    crate::health::store::now_unix() as i64
}

/// Each map once: its file, the policies using it and one of their routes.
fn maps(snap: &Snapshot) -> Vec<(PathBuf, Vec<String>, Arc<HomeRoutes>)> {
    let set = &snap.policies;
    let mut out: Vec<(PathBuf, Vec<String>, Arc<HomeRoutes>)> = Vec::new();
    for (p, routes) in set.policies.iter().zip(&set.homes) {
        let (Some(h), Some(r)) = (&p.home, routes) else {
            continue;
        };
        let name = p.display.trim_end_matches('.').to_string();
        match out.iter_mut().find(|m| m.0 == h.file) {
            Some(m) => m.1.push(name),
            None => out.push((h.file.clone(), vec![name], r.clone())),
        }
    }
    out
}

fn down(set: &PolicySet, view: &HealthView, r: u16) -> bool {
    set.regions
        .get(usize::from(r))
        .is_none_or(|x| view.state(x.id) == Effective::Down)
}

/// Whether a set's tenants are answered away from home under `view`.
fn away(set: &PolicySet, view: &HealthView, list: &[(u16, u16)]) -> bool {
    list.first().is_some_and(|&(h, _)| down(set, view, h))
        && list.iter().skip(1).any(|&(r, _)| !down(set, view, r))
}

pub(super) async fn list(State(s): State<Arc<AdminState>>, Query(q): Query<PageQuery>) -> Response {
    let snap = s.reloader.shared.load();
    let view = s.reloader.health.view.load();
    let set = &snap.policies;
    let now = now();
    let mut infos = Vec::new();
    let mut away_names: Vec<String> = Vec::new();
    for (file, policies, routes) in maps(&snap) {
        let map = &routes.map;
        let away_sets: Vec<bool> = routes.lists.iter().map(|l| away(set, &view, l)).collect();
        let counts = map.counts_at(now);
        let away_count = counts
            .iter()
            .zip(&away_sets)
            .filter(|(_, a)| **a)
            .map(|(n, _)| u64::from(*n))
            .sum();
        if away_count > 0 {
            for (label, found) in map.iter() {
                let in_force = match found.planned {
                    Some((_, m)) if now >= m.at => m.to,
                    _ => found.set,
                };
                if away_sets.get(in_force as usize).copied().unwrap_or(false) {
                    let name = String::from_utf8_lossy(label).into_owned();
                    if q.after.as_deref().is_none_or(|a| name.as_str() > a) {
                        away_names.push(name);
                    }
                }
            }
        }
        infos.push(info(file, policies, map, now, away_count));
    }
    away_names.sort();
    away_names.dedup();
    let limit = q.limit.unwrap_or(PAGE).clamp(1, 10_000);
    let next = (away_names.len() > limit)
        .then(|| away_names.get(limit - 1).cloned())
        .flatten();
    away_names.truncate(limit);
    Json(TenantsPage {
        maps: infos,
        away: away_names,
        next,
    })
    .into_response()
}

#[derive(Serialize)]
struct TenantInfo {
    tenant: String,
    file: String,
    policies: Vec<String>,
    home: String,
    allowed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    move_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    move_at: Option<String>,
    /// The region answering now (`null`: every allowed region is out).
    answered_by: Option<String>,
    away_from_home: bool,
}

fn tenant_infos(snap: &Snapshot, view: &HealthView, name: &str) -> Vec<TenantInfo> {
    let set = &snap.policies;
    let now = now();
    let region = |r: u16| {
        set.regions
            .get(usize::from(r))
            .map_or_else(String::new, |x| x.name.clone())
    };
    let mut out = Vec::new();
    for (file, policies, routes) in maps(snap) {
        let Some(found) = routes.map.find(name.as_bytes(), &|| now) else {
            continue;
        };
        let (Some(hs), Some(list)) = (
            routes.map.sets.get(found.set as usize),
            routes.lists.get(found.set as usize),
        ) else {
            continue;
        };
        let answered_by = list
            .iter()
            .find(|&&(r, _)| !down(set, view, r))
            .map(|&(r, _)| region(r));
        let (move_to, move_at) = match found.planned {
            Some((_, m)) if now < m.at => (
                routes.map.sets.get(m.to as usize).map(|s| region(s.home)),
                Some(
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_secs(m.at.max(0) as u64),
                    )
                    .to_string(),
                ),
            ),
            _ => (None, None),
        };
        out.push(TenantInfo {
            tenant: name.to_ascii_lowercase(),
            file: file.display().to_string(),
            policies,
            home: region(hs.home),
            allowed: hs.allowed.iter().map(|&r| region(r)).collect(),
            move_to,
            move_at,
            away_from_home: answered_by.as_deref().is_some_and(|a| a != region(hs.home)),
            answered_by,
        });
    }
    out
}

pub(super) async fn get_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
) -> Response {
    let snap = s.reloader.shared.load();
    let view = s.reloader.health.view.load();
    let infos = tenant_infos(&snap, &view, &name);
    if infos.is_empty() {
        return api_error(
            StatusCode::NOT_FOUND,
            format!("no tenant {name:?} in any tenant map"),
        );
    }
    Json(infos).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantBody {
    /// The home region (from `at` on, when given).
    home: Option<String>,
    /// The regions its data may be served from (absent: kept; empty: any).
    allowed: Option<Vec<String>>,
    /// A planned move: `home` becomes the home from this time (RFC 3339).
    at: Option<String>,
    /// Which map, when the server has several (its file as `/api/v1/tenants` names it).
    map: Option<String>,
}

/// The file a change to `name` goes to.
#[allow(clippy::result_large_err)]
fn target_file(snap: &Snapshot, name: &str, map: Option<&str>) -> Result<PathBuf, Response> {
    let all = maps(snap);
    if let Some(m) = map {
        return all
            .iter()
            .find(|x| x.0.display().to_string() == m)
            .map(|x| x.0.clone())
            .ok_or_else(|| api_error(StatusCode::NOT_FOUND, format!("no tenant map {m:?}")));
    }
    let listing: Vec<&PathBuf> = all
        .iter()
        .filter(|x| x.2.map.find(name.as_bytes(), &|| 0).is_some())
        .map(|x| &x.0)
        .collect();
    match (all.as_slice(), listing.as_slice()) {
        ([], _) => Err(api_error(
            StatusCode::NOT_FOUND,
            "no tenant maps (no method home policy)",
        )),
        ([only], _) => Ok(only.0.clone()),
        (_, [one]) => Ok((*one).clone()),
        _ => Err(api_error(
            StatusCode::BAD_REQUEST,
            "several tenant maps: say which with \"map\"",
        )),
    }
}

pub(super) async fn put_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let req: TenantBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"home\": \"eu-central\", \"allowed\": [\"eu-west\", \"eu-central\"], \"at\": \"2026-12-20T02:00:00Z\"}}: {e}"
                ),
            );
        }
    };
    // Values go into a CSV line: nothing that could end a field, a line or start a comment.
    let plain = |v: &str| {
        v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+'))
    };
    let values = req
        .home
        .iter()
        .chain(req.allowed.iter().flatten())
        .chain(req.at.iter());
    for v in values {
        if !plain(v) {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!("{v:?}: a region name or time has letters, digits and - _ . : + only"),
            );
        }
    }
    let lower = name.to_ascii_lowercase();
    change(&s, &name, req.map.clone(), move |current| {
        let home = req
            .home
            .clone()
            .or_else(|| current.map(|c| c.home.clone()))
            .ok_or("a new tenant needs a home")?;
        let allowed = req
            .allowed
            .clone()
            .or_else(|| current.map(|c| c.allowed.clone()))
            .unwrap_or_default();
        Ok(Some(match &req.at {
            // A planned move: the home stays until then.
            Some(at) => Line {
                tenant: lower.clone(),
                home: current.map_or_else(|| home.clone(), |c| c.home.clone()),
                allowed,
                move_to: Some(home),
                move_at: Some(at.clone()),
            },
            None => Line {
                tenant: lower.clone(),
                home,
                allowed,
                move_to: None,
                move_at: None,
            },
        }))
    })
    .await
}

pub(super) async fn delete_one(
    State(s): State<Arc<AdminState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<MapQuery>,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    change(&s, &name, q.map, |current| match current {
        Some(_) => Ok(None),
        None => Err("no such tenant in the map"),
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct MapQuery {
    map: Option<String>,
}

/// Rewrites the tenant's line as `edit` says (from its current line, if any), reloads,
/// and puts the file back if the reload refuses it.
async fn change(
    s: &Arc<AdminState>,
    name: &str,
    map: Option<String>,
    edit: impl FnOnce(Option<&Line>) -> Result<Option<Line>, &'static str>,
) -> Response {
    if !tenants::valid_label(name) {
        return api_error(
            StatusCode::BAD_REQUEST,
            format!("tenant {name:?} is not a DNS label"),
        );
    }
    // One change at a time: each reads the file the last one wrote.
    let _one = s.tenant_writes.lock().await;
    let snap = s.reloader.shared.load_full();
    let file = match target_file(&snap, name, map.as_deref()) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let before = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}: {e}", file.display()),
            );
        }
    };
    let current = tenants::line_of(&before, name);
    let line = match edit(current.as_ref()) {
        Ok(l) => l,
        Err(why) => return api_error(StatusCode::BAD_REQUEST, why),
    };
    let after = tenants::rewrite(&before, name, line.as_ref());
    if let Err(e) = crate::health::store::write_atomic(&file, after.as_bytes()) {
        return api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}: {e}", file.display()),
        );
    }
    let report = s.reloader.reload().await;
    if !report.ok {
        // The running configuration never took it: the file goes back as it was.
        let _ = crate::health::store::write_atomic(&file, before.as_bytes());
        return (StatusCode::UNPROCESSABLE_ENTITY, Json(report)).into_response();
    }
    tracing::info!(
        tenant = name,
        file = %file.display(),
        change = ?line,
        "tenant changed through the admin API"
    );
    let snap = s.reloader.shared.load();
    let view = s.reloader.health.view.load();
    let infos = tenant_infos(&snap, &view, name);
    (
        StatusCode::OK,
        Json(
            serde_json::json!({ "ok": true, "file": file.display().to_string(), "tenant": infos }),
        ),
    )
        .into_response()
}
