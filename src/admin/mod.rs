//! The HTTP surface: `/metrics`, `/live`, `/ready`, `/status` (HTML), and the JSON API
//! under `/api/v1`. Reads are open (bind it to loopback or a management network);
//! writes need `Authorization: Bearer TOKEN` and are disabled when no token is set.
//! Nothing here is on the DNS query path.

mod page;
mod tenants;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::health::OverrideKind;
use crate::health::checker::MAX_OVERRIDE_DURATION;
use crate::health::status::{OverrideError, Status, Target};
use crate::reload::Reloader;

/// Answer shares cover the last 2.5 to 5 minutes: the policy counters are marked this
/// often and shares counted from the older mark (see `metrics::PolicyCounterStore`).
const SHARE_MARK: Duration = Duration::from_secs(150);

pub struct AdminState {
    pub reloader: Arc<Reloader>,
    pub token: Option<String>,
    /// `Some` with `anycast:` configured.
    pub anycast: Option<crate::anycast::run::AnycastHandle>,
    /// When an ExaBGP process (`meridian anycast exabgp`) last read the routes: the
    /// exabgp driver's session state as the server can see it.
    pub exabgp_polled: std::sync::Mutex<Option<std::time::Instant>>,
    /// Tenant changes one at a time (each rewrites the file the last one wrote).
    pub tenant_writes: tokio::sync::Mutex<()>,
}

#[derive(Serialize)]
struct FullStatus {
    version: &'static str,
    summary: Summary,
    #[serde(flatten)]
    health: Status,
    /// Of the policies on this page only.
    answer_shares: BTreeMap<String, BTreeMap<String, f64>>,
    zones: Vec<String>,
    /// This page of the policies, by name (`?limit=`, `?after=`, `?policy=`).
    policies: Vec<String>,
    /// The `after=` of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
    /// With `anycast:`: each prefix's route, why, since when, and the driver's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    anycast: Option<Arc<crate::anycast::run::AnycastStatus>>,
    /// `method: home` tenant maps: counts and tenants away from home (the names are in
    /// `/api/v1/tenants`, paged).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tenants: Vec<tenants::MapInfo>,
}

/// Counts first: what a page with 10 000 policies must still say at a glance.
#[derive(Serialize)]
struct Summary {
    zones: usize,
    policies: usize,
    regions: usize,
    regions_down: usize,
    regions_degraded: usize,
    endpoints: usize,
    endpoints_down: usize,
    overrides: usize,
}

/// `?region=`, `?policy=`, `?limit=`, `?after=` of `/status` and `/api/v1/status`.
#[derive(Deserialize, Default)]
struct StatusQuery {
    region: Option<String>,
    policy: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Policies on a page when `limit` is not given.
const DEFAULT_PAGE: usize = 100;

/// Largest request body the admin API reads.
pub const MAX_BODY: usize = 16 * 1024;

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/live", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/status", get(status_page))
        .route("/", get(status_page))
        .route("/api/v1/status", get(status_json))
        .route("/api/v1/explain", get(explain))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/failovers", get(failovers))
        .route("/api/v1/tenants", get(tenants::list))
        .route(
            "/api/v1/tenants/{name}",
            get(tenants::get_one)
                .put(tenants::put_one)
                .delete(tenants::delete_one),
        )
        .route("/api/v1/anycast", get(anycast_status))
        .route("/api/v1/anycast/{action}", post(anycast_action))
        .route("/api/v1/regions/{region}/{action}", post(region_action))
        .route(
            "/api/v1/regions/{region}/endpoints/{endpoint}/{action}",
            post(endpoint_action),
        )
        // Write bodies are a reason and a duration: 16 KiB is plenty, and a bound on
        // what an unauthenticated request can make the server buffer.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serves the HTTP surface and samples answer shares until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let sampler_state = state.clone();
    let sampler = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SHARE_MARK);
        loop {
            tick.tick().await;
            sampler_state.reloader.metrics.policies.mark();
        }
    });
    let app = router(state);
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|s| *s).await;
        })
        .await;
    sampler.abort();
}

async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let snap = s.reloader.shared.load();
            let view = s.reloader.health.view.load();
            let now = crate::health::store::now_unix() as i64;
            let away = snap.policies.tenants_away(&view, now);
            s.reloader
                .metrics
                .tenant_away
                .set(i64::try_from(away).unwrap_or(i64::MAX));
            s.reloader.metrics.render()
        },
    )
        .into_response()
}

async fn ready(State(s): State<Arc<AdminState>>) -> Response {
    if s.reloader.health.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first probe round\n",
        )
            .into_response()
    }
}

async fn full_status(s: &AdminState, q: &StatusQuery) -> Option<FullStatus> {
    use crate::health::Effective;
    let mut health = s.reloader.health.status().await?;
    let snap = s.reloader.shared.load();
    let mut zones: Vec<String> = snap.zones.iter().map(|z| z.display.to_string()).collect();
    zones.sort();
    let summary = Summary {
        zones: zones.len(),
        policies: snap.policies.policies.len(),
        regions: health.regions.len(),
        regions_down: health
            .regions
            .iter()
            .filter(|r| r.effective == Effective::Down)
            .count(),
        regions_degraded: health
            .regions
            .iter()
            .filter(|r| r.effective == Effective::Degraded)
            .count(),
        endpoints: health.endpoints.len(),
        endpoints_down: health
            .endpoints
            .iter()
            .filter(|e| e.effective == Effective::Down)
            .count(),
        overrides: health
            .regions
            .iter()
            .filter(|r| r.r#override.is_some())
            .count()
            + health
                .endpoints
                .iter()
                .filter(|e| e.r#override.is_some())
                .count(),
    };
    if let Some(region) = &q.region {
        health.regions.retain(|r| &r.region == region);
        health.endpoints.retain(|e| &e.region == region);
        health
            .transitions
            .retain(|t| t.key == *region || t.key.starts_with(&format!("{region}/")));
    }
    // Policies by name (as written, without the final dot), paged.
    let wanted = q.policy.as_deref().map(|p| p.trim_end_matches('.'));
    let mut names: Vec<String> = snap
        .policies
        .policies
        .iter()
        .map(|p| p.display.trim_end_matches('.').to_string())
        .filter(|n| wanted.is_none_or(|w| w.eq_ignore_ascii_case(n)))
        .filter(|n| q.after.as_deref().is_none_or(|a| n.as_str() > a))
        .collect();
    names.sort();
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).max(1);
    let next = (names.len() > limit)
        .then(|| names.get(limit - 1).cloned())
        .flatten();
    names.truncate(limit);
    let mut shares = s.reloader.metrics.policies.shares();
    shares.retain(|p, _| {
        names
            .binary_search_by(|n| n.as_str().cmp(p.trim_end_matches('.')))
            .is_ok()
    });
    if let Some(region) = &q.region {
        for by_region in shares.values_mut() {
            by_region.retain(|r, _| r == region);
        }
        shares.retain(|_, by_region| !by_region.is_empty());
    }
    Some(FullStatus {
        version: env!("CARGO_PKG_VERSION"),
        summary,
        health,
        answer_shares: shares,
        zones,
        policies: names,
        next,
        anycast: s.anycast.as_ref().map(|a| a.status.borrow().clone()),
        tenants: tenants::summaries(&snap, &s.reloader.health.view.load()),
    })
}

async fn status_json(State(s): State<Arc<AdminState>>, Query(q): Query<StatusQuery>) -> Response {
    match full_status(&s, &q).await {
        Some(st) => Json(st).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "health checker unavailable\n",
        )
            .into_response(),
    }
}

async fn status_page(State(s): State<Arc<AdminState>>, Query(q): Query<StatusQuery>) -> Response {
    match full_status(&s, &q).await {
        Some(st) => Html(page::render(
            &st.health,
            &st.answer_shares,
            &st.zones,
            st.anycast.as_deref(),
            &st.tenants,
            st.version,
            &page::Paging {
                summary: format!(
                    "{} zones · {} policies · {} regions ({} down, {} degraded) · {} endpoints ({} down) · {} overrides",
                    st.summary.zones,
                    st.summary.policies,
                    st.summary.regions,
                    st.summary.regions_down,
                    st.summary.regions_degraded,
                    st.summary.endpoints,
                    st.summary.endpoints_down,
                    st.summary.overrides
                ),
                policies_shown: st.policies.len(),
                policies_total: st.summary.policies,
                next: st.next.clone(),
            },
        ))
        .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "health checker unavailable\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct ExplainQuery {
    name: String,
    #[serde(default)]
    r#type: Option<String>,
    client: Option<String>,
}

async fn explain(State(s): State<Arc<AdminState>>, Query(q): Query<ExplainQuery>) -> Response {
    let qtype = match crate::explain::qtype_from_str(q.r#type.as_deref().unwrap_or("A")) {
        Some(t) => t,
        None => return (StatusCode::BAD_REQUEST, "unknown type\n").into_response(),
    };
    let client = match q.client.as_deref().map(|c| {
        c.parse::<ipnet::IpNet>()
            .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
    }) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return (StatusCode::BAD_REQUEST, "client must be IP or IP/LEN\n").into_response();
        }
    };
    let snap = s.reloader.shared.load();
    let view = s.reloader.health.view.load();
    match crate::explain::explain(&snap, &view, &q.name, qtype, client, &[]) {
        Ok(e) => Json(e).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

#[derive(Serialize)]
struct ApiError {
    error: String,
}

fn api_error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(ApiError { error: msg.into() })).into_response()
}

/// Writes need the configured token, compared in constant time.
#[allow(clippy::result_large_err)] // the error is the HTTP response itself
fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    let Some(token) = &s.token else {
        return Err(api_error(
            StatusCode::FORBIDDEN,
            "writes are disabled: no admin token configured (MERIDIAN_ADMIN_TOKEN or http.admin_token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token",
        ))
    }
}

async fn reload(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let report = s.reloader.reload().await;
    let code = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (code, Json(report)).into_response()
}

#[derive(Deserialize, Default)]
struct ActionBody {
    reason: Option<String>,
    /// Drain only this share of the region's clients (0 < f <= 1).
    fraction: Option<f64>,
    /// The override ends by itself after this long, e.g. "30m".
    #[serde(rename = "for")]
    lasts: Option<String>,
}

/// What an action's request asks for, checked.
#[derive(Debug)]
pub struct ActionRequest {
    pub reason: Option<String>,
    pub fraction: Option<f64>,
    pub lasts: Option<Duration>,
}

/// An action's request from its declared content type and body, every field bounded:
/// `for` a duration above 0 and at most `MAX_OVERRIDE_DURATION`, only when setting an
/// override; `fraction` in (0, 1], only when draining a region. The body is JSON
/// whether the client said so (`-H 'Content-Type: application/json'`), said nothing,
/// or sent curl's default for `-d` (form-encoded); any other declared type is refused
/// naming the one expected. An empty body asks for nothing. Pure: the fuzzer runs it.
pub fn action_request(
    kind: Option<OverrideKind>,
    target: &Target,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<ActionRequest, (StatusCode, String)> {
    let bad = |m: String| Err((StatusCode::BAD_REQUEST, m));
    let parsed: ActionBody = if body.iter().all(u8::is_ascii_whitespace) {
        ActionBody::default()
    } else {
        let declared = content_type.map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match declared.as_deref() {
            None
            | Some("application/json" | "application/x-www-form-urlencoded" | "text/plain") => {
                match serde_json::from_slice(body) {
                    Ok(b) => b,
                    Err(e) => {
                        return bad(format!(
                            "the body must be JSON like {{\"reason\": \"...\", \"fraction\": 0.3, \"for\": \"30m\"}}: {e}"
                        ));
                    }
                }
            }
            Some(other) => {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("content type {other}: send application/json"),
                ));
            }
        }
    };
    let lasts = match parsed.lasts {
        None => None,
        Some(l) => match humantime::parse_duration(&l) {
            Err(e) => return bad(format!("\"for\": {l:?}: {e}")),
            Ok(d) if d > MAX_OVERRIDE_DURATION => {
                return bad(format!(
                    "\"for\": {l:?} is longer than the limit of {}d",
                    MAX_OVERRIDE_DURATION.as_secs() / 86_400
                ));
            }
            Ok(d) if d.is_zero() || kind.is_none() => {
                return bad("\"for\" goes with setting an override, and must be above 0".into());
            }
            Ok(d) => Some(d),
        },
    };
    if let Some(f) = parsed.fraction {
        if !(f > 0.0 && f <= 1.0) {
            return bad(format!("fraction {f} must be in (0, 1]"));
        }
        if kind != Some(OverrideKind::Drain) || !matches!(target, Target::Region(_)) {
            return bad("a fraction applies to draining a region".into());
        }
    }
    Ok(ActionRequest {
        reason: parsed.reason,
        fraction: parsed.fraction,
        lasts,
    })
}

#[allow(clippy::result_large_err)] // the error is the HTTP response itself
pub fn action_kind(action: &str) -> Result<Option<OverrideKind>, Response> {
    match action {
        "drain" => Ok(Some(OverrideKind::Drain)),
        "force-up" => Ok(Some(OverrideKind::ForceUp)),
        "force-down" => Ok(Some(OverrideKind::ForceDown)),
        "undrain" | "clear" => Ok(None),
        other => Err(api_error(
            StatusCode::NOT_FOUND,
            format!("unknown action {other:?} (drain, undrain, force-up, force-down, clear)"),
        )),
    }
}

async fn apply(
    s: &AdminState,
    headers: &HeaderMap,
    target: Target,
    action: &str,
    body: &[u8],
) -> Response {
    if let Err(r) = authorize(s, headers) {
        return r;
    }
    let kind = match action_kind(action) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let ActionRequest {
        reason,
        fraction,
        lasts,
    } = match action_request(kind, &target, content_type, body) {
        Ok(r) => r,
        Err((code, message)) => return api_error(code, message),
    };
    match s
        .reloader
        .health
        .set_override(target.clone(), kind, reason.clone(), fraction, lasts)
        .await
    {
        Ok(()) => {
            let mut reply = serde_json::Map::new();
            reply.insert("ok".into(), true.into());
            let target = match &target {
                Target::Region(r) => r.clone(),
                Target::Endpoint { region, endpoint } => format!("{region}/{endpoint}"),
            };
            reply.insert("target".into(), target.into());
            reply.insert("override".into(), kind.map(|k| k.name()).into());
            reply.insert("reason".into(), reason.into());
            // Only what was asked for: a plain drain's answer stays as it was.
            if let Some(f) = fraction {
                reply.insert("fraction".into(), f.into());
            }
            if let Some(d) = lasts {
                reply.insert("for_seconds".into(), d.as_secs().into());
            }
            Json(serde_json::Value::Object(reply)).into_response()
        }
        Err(e @ OverrideError::UnknownTarget(_)) => api_error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ OverrideError::Invalid(_)) => api_error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ OverrideError::Unavailable) => {
            api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
    }
}

async fn region_action(
    State(s): State<Arc<AdminState>>,
    Path((region, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    apply(&s, &headers, Target::Region(region), &action, &body).await
}

async fn endpoint_action(
    State(s): State<Arc<AdminState>>,
    Path((region, endpoint, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    apply(
        &s,
        &headers,
        Target::Endpoint { region, endpoint },
        &action,
        &body,
    )
    .await
}

async fn anycast_status(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    let Some(a) = &s.anycast else {
        return api_error(StatusCode::NOT_FOUND, "anycast is not configured");
    };
    let mut polled = s.exabgp_polled.lock().unwrap_or_else(|e| e.into_inner());
    let from_exabgp = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(crate::anycast::exabgp::USER_AGENT));
    let last = *polled;
    if from_exabgp {
        *polled = Some(std::time::Instant::now());
    }
    drop(polled);
    let mut body = serde_json::to_value(&*a.status.borrow().clone()).unwrap_or_default();
    if let (Some(obj), Some(t)) = (body.as_object_mut(), last) {
        obj.insert(
            "exabgp_polled_seconds_ago".into(),
            ((t.elapsed().as_secs_f64() * 10.0).round() / 10.0).into(),
        );
    }
    Json(body).into_response()
}

/// `POST /api/v1/anycast/withdraw` `{"prefix": P, "for": "30m", "reason": "..."}` and
/// `POST /api/v1/anycast/announce` `{"prefix": P}` (back to following its health).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnycastBody {
    prefix: String,
    #[serde(rename = "for")]
    lasts: Option<String>,
    reason: Option<String>,
}

async fn anycast_action(
    State(s): State<Arc<AdminState>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let Some(anycast) = &s.anycast else {
        return api_error(StatusCode::NOT_FOUND, "anycast is not configured");
    };
    let withdraw = match action.as_str() {
        "withdraw" => true,
        "announce" => false,
        other => {
            return api_error(
                StatusCode::NOT_FOUND,
                format!("unknown anycast action {other:?}: withdraw or announce"),
            );
        }
    };
    let req: AnycastBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be JSON like {{\"prefix\": \"198.51.100.53/32\", \"for\": \"30m\", \"reason\": \"...\"}}: {e}"
                ),
            );
        }
    };
    if req.reason.as_ref().is_some_and(|r| r.len() > 512) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "\"reason\" is longer than 512 bytes",
        );
    }
    let until = match req.lasts.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Err(e)) => return api_error(StatusCode::BAD_REQUEST, format!("\"for\": {e}")),
        Some(Ok(d)) if d.is_zero() || d > MAX_OVERRIDE_DURATION || !withdraw => {
            return api_error(
                StatusCode::BAD_REQUEST,
                format!(
                    "\"for\" goes with withdraw, above 0 and at most {}d",
                    MAX_OVERRIDE_DURATION.as_secs() / 86_400
                ),
            );
        }
        Some(Ok(d)) => Some(crate::health::store::now_unix().saturating_add(d.as_secs())),
    };
    let withdrawal = withdraw.then(|| crate::anycast::run::Withdrawal {
        until,
        reason: req.reason.clone(),
    });
    match anycast.set(&req.prefix, withdrawal).await {
        Ok(()) => Json(serde_json::json!({
            "ok": true,
            "prefix": req.prefix,
            "operator": if withdraw { "withdrawn" } else { "cleared" },
            "until": until,
        }))
        .into_response(),
        Err(e @ crate::anycast::run::AnycastError::UnknownPrefix(_)) => {
            api_error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => api_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[derive(Deserialize, Default)]
struct FailoverQuery {
    region: Option<String>,
    limit: Option<usize>,
    /// Only events before this unix time (the `before` of the next page).
    before: Option<u64>,
}

/// `GET /api/v1/failovers[?region=R&limit=N&before=T]`: failover events, newest first,
/// with their phases against the target.
async fn failovers(State(s): State<Arc<AdminState>>, Query(q): Query<FailoverQuery>) -> Response {
    let Some(status) = s.reloader.health.status().await else {
        return api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "health checker unavailable",
        );
    };
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, 1000);
    let mut events: Vec<_> = status
        .failovers
        .into_iter()
        .filter(|e| q.region.as_ref().is_none_or(|r| *r == e.region))
        .filter(|e| q.before.is_none_or(|b| e.at < b))
        .collect();
    let next = (events.len() > limit)
        .then(|| events.get(limit - 1).map(|e| e.at))
        .flatten();
    events.truncate(limit);
    Json(serde_json::json!({ "failovers": events, "next_before": next })).into_response()
}
