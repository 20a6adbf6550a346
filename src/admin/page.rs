//! `/status`: one server-rendered HTML page, no JavaScript. Regions and endpoints with
//! measured and effective state, the recent transitions as an inline SVG timeline, and
//! each region's share of answers over the last minutes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::health::Effective;
use crate::health::status::Status;
use crate::health::store::now_unix;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn color(state: &str) -> &'static str {
    match state {
        "up" => "#2e9d4b",
        "degraded" => "#e0a100",
        "down" => "#d2352b",
        _ => "#888",
    }
}

fn badge(s: &str) -> String {
    format!(
        r##"<span class="st" style="background:{}">{}</span>"##,
        color(s),
        esc(s)
    )
}

fn eff(e: Effective) -> &'static str {
    match e {
        Effective::Up => "up",
        Effective::Degraded => "degraded",
        Effective::Down => "down",
    }
}

fn override_cell(o: Option<&crate::health::Override>) -> String {
    o.map(|o| {
        let share = o
            .fraction
            .map(|f| format!(" {:.0} %", f * 100.0))
            .unwrap_or_default();
        let left = o
            .until
            .map(|u| {
                format!(
                    ", {} left",
                    ago(u.saturating_sub(crate::health::store::now_unix()))
                )
            })
            .unwrap_or_default();
        format!(
            "{}{share} ({}{left})",
            o.kind.name(),
            esc(o.reason.as_deref().unwrap_or(""))
        )
    })
    .unwrap_or_else(|| "&ndash;".into())
}

fn ago(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// The timeline: one row per key, coloured by state over the last 30 minutes.
fn timeline(st: &Status) -> String {
    const WINDOW: u64 = 1800;
    const W: f64 = 900.0;
    const LABEL: f64 = 170.0;
    let now = now_unix();
    let start = now.saturating_sub(WINDOW);
    let mut keys: Vec<String> = st.regions.iter().map(|r| r.region.clone()).collect();
    keys.extend(
        st.endpoints
            .iter()
            .map(|e| format!("{}/{}", e.region, e.endpoint)),
    );
    let current: BTreeMap<String, String> = st
        .regions
        .iter()
        .map(|r| (r.region.clone(), eff(r.effective).to_string()))
        .chain(
            st.endpoints
                .iter()
                .map(|e| (format!("{}/{}", e.region, e.endpoint), e.measured.clone())),
        )
        .collect();
    let row_h = 18.0;
    let height = 30.0 + row_h * keys.len() as f64;
    let x = |t: u64| LABEL + (t.saturating_sub(start) as f64 / WINDOW as f64) * (W - LABEL);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" role="img" aria-label="state timeline, last 30 minutes">"##
    );
    for (i, key) in keys.iter().enumerate() {
        let y = 20.0 + row_h * i as f64;
        let _ = write!(
            svg,
            r##"<text x="0" y="{}" font-size="11" font-family="monospace">{}</text>"##,
            y + 12.0,
            esc(key)
        );
        // Walk this key's transitions backwards from its current state.
        let mut changes: Vec<(u64, &str, &str)> = st
            .transitions
            .iter()
            .filter(|t| &t.key == key && t.from != t.to)
            .map(|t| (t.at, t.from.as_str(), t.to.as_str()))
            .collect();
        changes.sort_by_key(|c| c.0);
        let mut segs: Vec<(u64, u64, String)> = Vec::new();
        let mut seg_end = now;
        let mut state = current.get(key).cloned().unwrap_or_else(|| "up".into());
        for (at, from, to) in changes.iter().rev() {
            let at = (*at).max(start);
            segs.push((at, seg_end, to.to_string()));
            seg_end = at;
            state = from.to_string();
        }
        segs.push((start, seg_end, state));
        for (a, b, s) in segs {
            if b <= a {
                continue;
            }
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{y}" width="{:.1}" height="{}" fill="{}"><title>{} {}</title></rect>"##,
                x(a),
                (x(b) - x(a)).max(1.0),
                row_h - 4.0,
                color(&s),
                esc(key),
                s
            );
        }
    }
    let _ = write!(
        svg,
        r##"<text x="{LABEL}" y="12" font-size="10" font-family="sans-serif">-30 min</text><text x="{}" y="12" font-size="10" font-family="sans-serif" text-anchor="end">now</text></svg>"##,
        W
    );
    svg
}

/// Peers, and each endpoint's votes next to this instance's own verdict.
fn cluster(h: &mut String, st: &Status, c: &crate::health::status::ClusterStatus) {
    let _ = write!(
        h,
        "<h2>Cluster</h2><p>This instance: <b>{}</b>, quorum {}, {}</p>",
        esc(&c.instance),
        esc(&c.quorum),
        if c.isolated {
            format!(
                "{} no peer heard for {} s: deciding from its own probes",
                badge("down"),
                c.isolation_timeout_seconds
            )
        } else {
            "deciding with its peers".into()
        }
    );
    h.push_str("<table><tr><th>peer</th><th>address</th><th>gossip</th><th>last heard</th><th>verdicts</th></tr>");
    for p in &c.peers {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.address),
            badge(if p.live { "up" } else { "down" }),
            p.last_heard_seconds
                .map_or_else(|| "not since start".into(), |s| format!("{s:.1} s ago")),
            p.verdicts
        );
    }
    if c.peers.is_empty() {
        h.push_str(r#"<tr><td colspan="5" class="muted">no peer heard yet</td></tr>"#);
    }
    h.push_str("</table><table><tr><th>endpoint</th><th>own verdict</th><th>peers' verdicts</th><th>quorum result</th></tr>");
    for e in &st.endpoints {
        let Some(q) = &e.quorum else { continue };
        let votes: Vec<String> = q
            .votes
            .iter()
            .map(|v| {
                format!(
                    "{} {}{}",
                    esc(&v.instance),
                    badge(eff(v.verdict.state)),
                    if v.counted { "" } else { " (not counted)" }
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td>{}/{}</td><td>{}</td><td>{}</td><td>{} {} up, {} degraded, {} down; {} needed{}</td></tr>",
            esc(&e.region),
            esc(&e.endpoint),
            badge(&e.measured),
            votes.join(" "),
            badge(eff(q.state)),
            q.up,
            q.degraded,
            q.down,
            q.needed,
            if q.cooldown_held { " (cooldown)" } else { "" }
        );
    }
    h.push_str("</table>");
}

/// What the page says about the rest: the counts, and where the policy list goes on.
pub struct Paging {
    pub summary: String,
    pub policies_shown: usize,
    pub policies_total: usize,
    pub next: Option<String>,
}

pub fn render(
    st: &Status,
    shares: &BTreeMap<String, BTreeMap<String, f64>>,
    zones: &[String],
    anycast: Option<&crate::anycast::run::AnycastStatus>,
    tenants: &[super::tenants::MapInfo],
    version: &str,
    paging: &Paging,
) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        r##"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Meridian status</title>
<meta http-equiv="refresh" content="10">
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}} h1{{font-size:1.4em}} h2{{font-size:1.1em;margin-top:1.6em}}
table{{border-collapse:collapse;font-size:.9em}} td,th{{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left}}
.st{{display:inline-block;padding:0 .5em;border-radius:.6em;color:#fff;font-weight:600}}
.bar{{display:inline-block;height:.8em;background:#3b6fd4;vertical-align:middle}} .muted{{color:#777}}
</style></head><body>
<h1>Meridian {version}</h1>
<p>{} &middot; {} &middot; page refreshes every 10 s</p>
<p class="muted">zones: {} &middot; filter with <code>?region=</code> or <code>?policy=</code></p>"##,
        if st.ready {
            "ready"
        } else {
            "<b>waiting for the first probe round</b>"
        },
        esc(&paging.summary),
        esc(&zones
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join(", "))
    );
    if let Some(a) = anycast {
        anycast_section(&mut h, a);
    }
    if !tenants.is_empty() {
        h.push_str("<h2>Tenants</h2><p class=\"muted\">method home; the tenants away from home are listed in <a href=\"/api/v1/tenants\">/api/v1/tenants</a> (paged)</p><table><tr><th>map</th><th>policies</th><th>tenants</th><th>homes</th><th>allowed sets</th><th>moves scheduled</th><th>away from home</th></tr>");
        for m in tenants {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}{}</td></tr>",
                esc(&m.file),
                esc(&m.policies.join(", ")),
                m.tenants,
                m.homes,
                m.allowed_sets,
                m.moves_scheduled,
                if m.away_from_home > 0 { "<b>" } else { "" },
                m.away_from_home,
                if m.away_from_home > 0 { "</b>" } else { "" },
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Regions</h2><table><tr><th>region</th><th>effective</th><th>measured</th><th>endpoints serving</th><th>override</th><th>load / capacity (req/s)</th><th>keeps</th><th>admits moved</th><th>failback</th></tr>");
    for r in &st.regions {
        let o = override_cell(r.r#override.as_ref());
        let serving = if r.endpoints == 0 {
            "no endpoints (always up)".to_string()
        } else {
            format!("{} of {} (needs {})", r.endpoints_up, r.endpoints, r.needed)
        };
        // Health per address: the addresses left out while their servers are down.
        let withheld: Vec<&str> = r
            .addresses
            .iter()
            .filter(|a| !a.answered)
            .map(|a| a.address.as_str())
            .collect();
        let serving = if withheld.is_empty() {
            serving
        } else {
            format!("{serving}; not answered: {}", esc(&withheld.join(", ")))
        };
        let load = match (r.load, r.capacity) {
            (Some(l), Some(c)) => format!("{l:.0} / {c:.0}"),
            (Some(l), None) => format!("{l:.0}"),
            (None, Some(c)) => format!("– / {c:.0}"),
            (None, None) => "–".into(),
        };
        let source = r.load_source.map(|s| format!(" ({s})")).unwrap_or_default();
        let pct = |f: f64| format!("{:.0} %", f * 100.0);
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{serving}</td><td>{o}</td><td>{load}{source}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.region),
            badge(eff(r.effective)),
            badge(eff(r.measured)),
            pct(r.keep),
            pct(r.admit),
            pct(r.failback_progress)
        );
    }
    h.push_str("</table>");
    h.push_str("<h2>Endpoints</h2><table><tr><th>endpoint</th><th>probe</th><th>measured</th><th>effective</th><th>error rate</th><th>p50 / p90 / p99 ms</th><th>in state</th><th>cooldown left</th><th>override</th></tr>");
    let ms = |v: Option<f64>| {
        v.map(|x| format!("{x:.1}"))
            .unwrap_or_else(|| "&ndash;".into())
    };
    for e in &st.endpoints {
        let o = override_cell(e.r#override.as_ref());
        let _ = write!(
            h,
            "<tr><td>{}/{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{:.0}% of {}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{o}</td></tr>",
            esc(&e.region),
            esc(&e.endpoint),
            esc(&e.probe),
            esc(&e.address),
            badge(&e.measured),
            badge(eff(e.effective)),
            e.error_rate * 100.0,
            e.samples,
            ms(e.latency_p50_ms),
            ms(e.latency_p90_ms),
            ms(e.latency_p99_ms),
            ago(e.in_state_seconds),
            if e.cooldown_remaining_seconds > 0 {
                ago(e.cooldown_remaining_seconds)
            } else {
                "&ndash;".into()
            }
        );
    }
    if st.endpoints.is_empty() {
        h.push_str(
            r#"<tr><td colspan="9" class="muted">no health-checked endpoints configured</td></tr>"#,
        );
    }
    h.push_str("</table>");
    if let Some(c) = &st.cluster {
        cluster(&mut h, st, c);
    }
    h.push_str("<h2>Timeline (last 30 minutes)</h2>");
    h.push_str(&timeline(st));
    // Policies collapsed: with thousands of them the list is for those who ask.
    let _ = write!(
        h,
        "<details><summary><h2 style=\"display:inline\">Answer shares (last 2.5 to 5 minutes): {} of {} policies</h2></summary>",
        paging.policies_shown, paging.policies_total
    );
    h.push_str("<table><tr><th>policy</th><th>region</th><th>share</th></tr>");
    let answered: Vec<_> = shares
        .iter()
        .filter(|(_, m)| m.values().any(|v| *v > 0.0))
        .collect();
    for (p, regions) in &answered {
        for (r, share) in regions.iter() {
            let _ = write!(
                h,
                r#"<tr><td>{}</td><td>{}</td><td><span class="bar" style="width:{:.0}px"></span> {:.1}%</td></tr>"#,
                esc(p),
                esc(r),
                share * 200.0,
                share * 100.0
            );
        }
    }
    if answered.is_empty() {
        h.push_str(
            r#"<tr><td colspan="3" class="muted">no policy answers in the last minutes</td></tr>"#,
        );
    }
    h.push_str("</table>");
    if let Some(next) = &paging.next {
        let _ = write!(
            h,
            r#"<p><a href="?after={}">next policies &rarr;</a></p>"#,
            esc(next)
        );
    }
    h.push_str("</details>");
    if !st.failovers.is_empty() {
        h.push_str("<h2>Failovers</h2><p class=\"muted\">seconds from the first sample that led to it</p><table><tr><th>when</th><th>region</th><th>direction</th><th>cause</th><th>detect</th><th>publish</th><th>answer</th><th>cache bound</th><th>traffic</th><th>target</th></tr>");
        for e in st.failovers.iter().take(20) {
            let when = ago(crate::health::store::now_unix().saturating_sub(e.at));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1}</td><td>{}</td><td>{}{:.1}{}</td><td>{}</td><td>{:.0}</td></tr>",
                format_args!("{when} ago"),
                esc(&e.region),
                match e.direction {
                    crate::health::status::Direction::Leave => "leave",
                    crate::health::status::Direction::Return => "return",
                },
                esc(&e.cause),
                e.phases.detect,
                e.phases.publish,
                e.phases
                    .answer
                    .map_or_else(|| "–".to_string(), |a| format!("{a:.1}")),
                if e.over_target { "<b>" } else { "" },
                e.phases.cache_bound,
                if e.over_target {
                    " (over target)</b>"
                } else {
                    ""
                },
                e.phases
                    .traffic
                    .map_or_else(|| "–".to_string(), |t| format!("{t:.1}")),
                e.target
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Recent transitions</h2><table><tr><th>when</th><th>what</th><th>change</th><th>why</th></tr>");
    let now = now_unix();
    for t in st.transitions.iter().rev().take(30) {
        let _ = write!(
            h,
            "<tr><td>{} ago</td><td>{}</td><td>{} &rarr; {}{}</td><td>{}</td></tr>",
            ago(now.saturating_sub(t.at)),
            esc(&t.key),
            esc(&t.from),
            esc(&t.to),
            if t.cooldown_held { " (cooldown)" } else { "" },
            esc(&t.reason)
        );
    }
    if st.transitions.is_empty() {
        h.push_str(r#"<tr><td colspan="4" class="muted">none since start</td></tr>"#);
    }
    h.push_str("</table></body></html>\n");
    h
}

fn anycast_section(h: &mut String, a: &crate::anycast::run::AnycastStatus) {
    let _ = write!(h, "<h2>Anycast</h2><p>driver {}", esc(a.driver));
    if let Some(e) = &a.driver_error {
        let _ = write!(h, " &middot; <b>error: {}</b>", esc(e));
    }
    h.push_str("</p><table><tr><th>prefix</th><th>follows</th><th>route</th><th>reason</th><th>for</th><th>operator</th><th>others announcing</th></tr>");
    for p in &a.prefixes {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s</td><td>{}</td><td>{}</td></tr>",
            esc(&p.prefix),
            esc(&p.when),
            p.route.name(),
            p.reason.label(),
            p.for_seconds,
            p.operator.as_ref().map_or(String::new(), |o| esc(o
                .reason
                .as_deref()
                .unwrap_or("withdrawn"))),
            p.others_announcing.map_or("-".into(), |n| n.to_string()),
        );
    }
    h.push_str("</table>");
    if !a.session.is_empty() {
        h.push_str("<table><tr><th>BIRD protocol</th><th>kind</th><th>state</th><th>since</th><th>info</th></tr>");
        for p in &a.session {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.name),
                esc(&p.proto),
                esc(&p.state),
                esc(&p.since),
                esc(&p.info)
            );
        }
        h.push_str("</table>");
    }
}
