//! `--plot FILE.svg`: port occupancy over the night, one panel per policy.
//!
//! Rows are the ports of the control range (one more row, "outside", for the amanda-2.4
//! dumpers whose port is outside it); time runs left to right on a common scale. Under
//! each panel, the number of requests waiting (portpool) or rescanning (amanda-3.5).
//! Hand-written SVG 1.1, no scripts, no external resources.

use std::fmt::Write as _;

use crate::sim::{Outcome, SimParams, SpanKind};
use portpool_alloc::core::fmt_duration;
use std::time::Duration;

const WIDTH: f64 = 1100.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 11.0;
const WAIT_H: f64 = 50.0;

fn color(kind: SpanKind) -> (&'static str, &'static str) {
    match kind {
        SpanKind::Planner => ("#7b5ea7", "planner"),
        SpanKind::Dumper => ("#2f6fca", "dump"),
        SpanKind::Idle => ("#b9cbe8", "kept by an idle dumper"),
        SpanKind::TimeWait => ("#f0a030", "TIME_WAIT (held from that client)"),
        SpanKind::Outside => ("#d0453a", "dumper outside the firewall range"),
    }
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The whole picture.
pub fn render(params: &SimParams, outcomes: &[Outcome]) -> String {
    let end_ms = outcomes
        .iter()
        .map(|o| o.makespan.as_millis() as u64)
        .max()
        .unwrap_or(1)
        .max(1);
    let plot_w = WIDTH - LEFT - RIGHT;
    let x = |t: u64| LEFT + plot_w * (t.min(end_ms) as f64 / end_ms as f64);
    let mut body = String::new();
    let mut y = 40.0;
    for o in outcomes {
        let Some(trace) = &o.trace else { continue };
        let has_outside = trace.spans.iter().any(|s| s.kind == SpanKind::Outside);
        let rows = trace.rows.len() + usize::from(has_outside);
        let panel_h = rows as f64 * ROW;
        let _ = writeln!(
            body,
            r#"<text x="{LEFT}" y="{:.1}" font-weight="bold">{} — {} done, {} failed, makespan {}</text>"#,
            y - 6.0,
            o.policy.name(),
            o.done,
            o.failed,
            fmt_duration(o.makespan)
        );
        let _ = writeln!(
            body,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{panel_h:.1}" fill="#f7f7f7" stroke="#999"/>"##
        );
        for (i, (proto, port)) in trace.rows.iter().enumerate() {
            let ry = y + i as f64 * ROW;
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">{proto} {port}</text>"#,
                LEFT - 4.0,
                ry + ROW - 2.0
            );
        }
        if has_outside {
            let ry = y + trace.rows.len() as f64 * ROW;
            let _ = writeln!(
                body,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">outside</text>"#,
                LEFT - 4.0,
                ry + ROW - 2.0
            );
        }
        for s in &trace.spans {
            let row = match s.port {
                Some(port) => trace
                    .rows
                    .iter()
                    .position(|&(p, q)| p == s.proto && q == port),
                None => Some(trace.rows.len()),
            };
            let Some(row) = row else { continue };
            let (fill, _) = color(s.kind);
            let (x0, x1) = (x(s.start_ms), x(s.end_ms.max(s.start_ms)));
            let opacity = if s.kind == SpanKind::TimeWait {
                0.55
            } else {
                1.0
            };
            let _ = writeln!(
                body,
                r#"<rect x="{x0:.2}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{fill}" fill-opacity="{opacity}"/>"#,
                y + row as f64 * ROW + 1.0,
                (x1 - x0).max(0.6),
                ROW - 2.0
            );
        }
        y += panel_h + 8.0;
        // Waiting requests.
        let max_wait = trace
            .waiting
            .iter()
            .map(|&(_, w)| w)
            .max()
            .unwrap_or(0)
            .max(1);
        let _ = writeln!(
            body,
            r##"<rect x="{LEFT}" y="{y:.1}" width="{plot_w:.1}" height="{WAIT_H}" fill="#fff" stroke="#ccc"/>"##
        );
        let _ = writeln!(
            body,
            r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">waiting (max {max_wait})</text>"#,
            LEFT - 4.0,
            y + 12.0
        );
        let mut points = format!("{LEFT:.1},{:.1}", y + WAIT_H);
        let mut last = 0u32;
        for &(t, w) in &trace.waiting {
            let px = x(t);
            let h = |w: u32| y + WAIT_H - WAIT_H * f64::from(w) / f64::from(max_wait);
            let _ = write!(points, " {px:.2},{:.2} {px:.2},{:.2}", h(last), h(w));
            last = w;
        }
        let _ = write!(
            points,
            " {:.1},{:.1} {:.1},{:.1}",
            x(end_ms),
            y + WAIT_H - WAIT_H * f64::from(last) / f64::from(max_wait),
            x(end_ms),
            y + WAIT_H
        );
        let _ = writeln!(
            body,
            r##"<polygon points="{points}" fill="#e8743b" fill-opacity="0.5" stroke="#e8743b"/>"##
        );
        y += WAIT_H + 40.0;
    }
    // Time axis ticks (hours or minutes).
    let step_ms: u64 = if end_ms > 4 * 3_600_000 {
        3_600_000
    } else if end_ms > 3_600_000 {
        1_800_000
    } else if end_ms > 600_000 {
        600_000
    } else {
        60_000
    };
    let mut ticks = String::new();
    let mut t = 0;
    while t <= end_ms {
        let _ = writeln!(
            ticks,
            r##"<line x1="{0:.1}" y1="30" x2="{0:.1}" y2="{1:.1}" stroke="#ddd"/><text x="{0:.1}" y="{2:.1}" font-size="9" text-anchor="middle">{3}</text>"##,
            x(t),
            y - 30.0,
            y - 18.0,
            fmt_duration(Duration::from_millis(t))
        );
        t += step_ms;
    }
    let mut legend = String::new();
    for (i, kind) in [
        SpanKind::Planner,
        SpanKind::Dumper,
        SpanKind::Idle,
        SpanKind::TimeWait,
        SpanKind::Outside,
    ]
    .into_iter()
    .enumerate()
    {
        let (fill, label) = color(kind);
        let lx = LEFT + i as f64 * 200.0;
        let _ = writeln!(
            legend,
            r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="9" fill="{fill}"/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
            y - 5.0,
            lx + 16.0,
            y + 3.0,
            esc(label)
        );
    }
    let height = y + 20.0;
    let title = format!(
        "Port occupancy over the night: seed {}, {} DLEs, inparallel {}",
        params.seed,
        params.dles.len(),
        params.inparallel
    );
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0}" viewBox="0 0 {WIDTH} {height:.0}" font-family="sans-serif" font-size="11">
<title>{}</title>
<text x="{LEFT}" y="18" font-size="13" font-weight="bold">{}</text>
{ticks}{body}{legend}</svg>
"#,
        esc(&title),
        esc(&title)
    )
}
