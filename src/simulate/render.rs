//! A replay's report as a text table and as an SVG chart of region load over time.

use std::fmt::Write as _;

use super::replay::Report;
use crate::health::Effective;

fn clock(s: u64) -> String {
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// The report for the terminal: a line per step.
pub fn render_text(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} clients, {:.0} req/s of demand, {}",
        r.clients,
        r.demand,
        if r.spill {
            "spill by spare capacity"
        } else {
            "plain failover (capacities ignored)"
        }
    );
    let names: Vec<&str> = r
        .steps
        .first()
        .map(|st| st.regions.iter().map(|x| x.region.as_str()).collect())
        .unwrap_or_default();
    let _ = write!(s, "{:>7}", "time");
    for n in &names {
        let _ = write!(s, "  {n:<24}");
    }
    let _ = writeln!(s, "  events");
    for st in &r.steps {
        let _ = write!(s, "{:>7}", clock(st.at_s));
        for x in &st.regions {
            let cell = match x.capacity {
                Some(c) => format!(
                    "{} {:.0}/{:.0}{}",
                    x.state.name(),
                    x.load,
                    c,
                    if x.load > c * 1.000_001 { " OVER" } else { "" }
                ),
                None => format!("{} {:.0}", x.state.name(), x.load),
            };
            let cell = if x.keep < 1.0 && x.state != Effective::Down {
                format!("{cell} keep {:.0}%", x.keep * 100.0)
            } else if x.shed < 1.0 && x.state != Effective::Down {
                format!("{cell} shed {:.0}%", (1.0 - x.shed) * 100.0)
            } else {
                cell
            };
            let _ = write!(s, "  {cell:<24}");
        }
        let mut events = st.events.clone();
        if st.overflow > 0.5 {
            // Demand no region could take within its capacity (served past it with
            // `overflow: spill`, unserved with `all_down`).
            events.push(format!("{:.0} req/s beyond every capacity", st.overflow));
        }
        let _ = writeln!(s, "  {}", events.join("; "));
    }
    let _ = writeln!(
        s,
        "overloaded at {} of {} steps; most load beyond every capacity: {:.0} req/s",
        r.overloaded_steps,
        r.steps.len(),
        r.max_overflow
    );
    s
}

/// Region load over time as an SVG line chart, with capacity lines and event markers.
pub fn render_svg(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 420.0, 70.0, 160.0, 30.0, 40.0);
    let end = r.steps.last().map_or(1, |s| s.at_s.max(1)) as f64;
    let peak = r
        .steps
        .iter()
        .flat_map(|s| {
            s.regions
                .iter()
                .map(|x| x.load.max(x.capacity.unwrap_or(0.0)))
        })
        .fold(1.0, f64::max)
        * 1.1;
    let x = |t: f64| left + (w - left - right) * t / end;
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / peak);
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18">region load (req/s) over time, {}</text>"#,
        if r.spill {
            "spill by spare capacity"
        } else {
            "plain failover"
        }
    );
    for i in 0..=4 {
        let v = peak / 1.1 * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{v:.0}</text>"##,
            w - right,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    let names: Vec<&str> = r
        .steps
        .first()
        .map(|st| st.regions.iter().map(|x| x.region.as_str()).collect())
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let color = colors.get(i % colors.len()).copied().unwrap_or("black");
        let points: Vec<String> = r
            .steps
            .iter()
            .filter_map(|st| {
                st.regions
                    .get(i)
                    .map(|row| format!("{:.1},{:.1}", x(st.at_s as f64), y(row.load)))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let caps: Vec<String> = r
            .steps
            .iter()
            .filter_map(|st| {
                let c = st.regions.get(i)?.capacity?;
                Some(format!("{:.1},{:.1}", x(st.at_s as f64), y(c)))
            })
            .collect();
        if !caps.is_empty() {
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-dasharray="6 4" points="{}"/>"#,
                caps.join(" ")
            );
        }
        let ly = top + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name} (dashed: capacity)</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0
        );
    }
    for st in r.steps.iter().filter(|st| !st.events.is_empty()) {
        let ex = x(st.at_s as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{ex:.1}" x2="{ex:.1}" y1="{top}" y2="{}" stroke="#999" stroke-dasharray="2 3"/><text x="{:.1}" y="{}" font-size="10" transform="rotate(-90 {:.1} {})">{}</text>"##,
            h - bottom,
            ex - 3.0,
            h - bottom - 4.0,
            ex - 3.0,
            h - bottom - 4.0,
            xml(&st.events.join("; "))
        );
    }
    for i in 0..=4 {
        let t = end * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            h - bottom + 18.0,
            clock(t as u64)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
