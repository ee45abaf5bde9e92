//! A hand-written SVG chart of a run: warm p50 latency per query, Floe next to the baseline
//! (log scale, since the two can be orders of magnitude apart), and indexing throughput.
//! No plotting dependency: the chart is a few dozen rectangles.

use std::fmt::Write as _;

use crate::report::{fmt_num, Report};

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 190.0;
const PLOT_W: f64 = WIDTH - LABEL_W - 110.0;
const BAR_H: f64 = 14.0;
const FLOE: &str = "#e4572e";
const BASE: &str = "#2e86ab";

/// One group of bars: a label and (series name, value) pairs.
struct Group {
    label: String,
    bars: Vec<(&'static str, f64)>,
}

pub fn render(report: &Report) -> String {
    let latency: Vec<Group> = report
        .scenarios
        .iter()
        .filter(|s| s.scenario == "query")
        .flat_map(|s| &s.figures)
        .filter_map(|f| {
            let q = f.name.strip_suffix(" warm p50")?;
            let mut bars = vec![("Floe", f.value)];
            bars.extend(f.baseline.map(|b| ("baseline", b)));
            Some(Group {
                label: q.to_string(),
                bars,
            })
        })
        .collect();
    let mut throughput = Vec::new();
    for (scenario, name, label, series) in [
        (
            "baseline",
            "index 1 thread",
            "raw tantivy, 1 thread",
            "baseline",
        ),
        (
            "baseline",
            "index 2 threads",
            "raw tantivy, 2 threads",
            "baseline",
        ),
        ("ingest", "ingest throughput", "Floe _bulk", "Floe"),
    ] {
        if let Some(f) = report.figure(scenario, name) {
            throughput.push(Group {
                label: label.to_string(),
                bars: vec![(series, f.value)],
            });
        }
    }

    let mut body = String::new();
    let mut y = 30.0;
    title(
        &mut body,
        &mut y,
        "Warm p50 latency per query, ms (log scale)",
    );
    if latency.is_empty() {
        text(&mut body, LABEL_W, y + 10.0, "no query figures in this run");
        y += 30.0;
    } else {
        bars(&mut body, &mut y, &latency, true);
    }
    y += 20.0;
    title(&mut body, &mut y, "Indexing throughput, docs/s");
    if throughput.is_empty() {
        text(
            &mut body,
            LABEL_W,
            y + 10.0,
            "no throughput figures in this run",
        );
        y += 30.0;
    } else {
        bars(&mut body, &mut y, &throughput, false);
    }
    // Legend.
    y += 10.0;
    for (i, (name, color)) in [("Floe", FLOE), ("baseline (raw tantivy)", BASE)]
        .iter()
        .enumerate()
    {
        let x = LABEL_W + i as f64 * 200.0;
        let _ = writeln!(
            body,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{color}"/>"#
        );
        text(&mut body, x + 18.0, y + 10.0, name);
    }
    y += 30.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}

fn title(out: &mut String, y: &mut f64, t: &str) {
    let _ = writeln!(
        out,
        r#"<text x="10" y="{y}" font-size="15" font-weight="bold">{t}</text>"#
    );
    *y += 20.0;
}

fn text(out: &mut String, x: f64, y: f64, t: &str) {
    let t = t.replace('&', "&amp;").replace('<', "&lt;");
    let _ = writeln!(out, r#"<text x="{x}" y="{y}">{t}</text>"#);
}

/// Draws the groups as horizontal bars over a grid, on a log or linear axis.
fn bars(out: &mut String, y: &mut f64, groups: &[Group], log: bool) {
    let values = groups.iter().flat_map(|g| g.bars.iter().map(|b| b.1));
    let max = values.clone().fold(f64::MIN, f64::max).max(1e-9);
    let min = values.fold(f64::MAX, f64::min).max(1e-9);
    // Ticks: decades on a log axis, round steps (1, 2 or 5 x 10^k) on a linear one.
    let ticks: Vec<f64> = if log {
        let (a, b) = (min.log10().floor() as i32, max.log10().ceil() as i32);
        (a..=b.max(a + 1)).map(|e| 10f64.powi(e)).collect()
    } else {
        let step = nice_step(max / 5.0);
        let n = (max / step).ceil() as usize;
        (0..=n).map(|i| step * i as f64).collect()
    };
    let (lo, hi) = (ticks[0], ticks[ticks.len() - 1]);
    let scale = |v: f64| -> f64 {
        if log {
            PLOT_W * (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
        } else {
            PLOT_W * v / hi
        }
    };
    let height: f64 = groups
        .iter()
        .map(|g| BAR_H * g.bars.len() as f64 + 8.0)
        .sum();
    for &t in &ticks {
        let x = LABEL_W + scale(t);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#ddd"/>"##,
            *y,
            *y + height
        );
        text(out, x - 10.0, *y + height + 14.0, &fmt_num(t));
    }
    for g in groups {
        let mid = *y + BAR_H * g.bars.len() as f64 / 2.0 + 4.0;
        text(out, 10.0, mid, &g.label);
        for (series, v) in &g.bars {
            let color = if *series == "Floe" { FLOE } else { BASE };
            let w = scale(*v).max(1.0);
            let _ = writeln!(
                out,
                r#"<rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" fill="{color}"/>"#,
                *y,
                BAR_H - 2.0
            );
            text(out, LABEL_W + w + 4.0, *y + BAR_H - 4.0, &fmt_num(*v));
            *y += BAR_H;
        }
        *y += 8.0;
    }
    *y += 24.0;
}

/// The smallest of 1, 2 or 5 x 10^k that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1e-9).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Figure, ScenarioResult};

    #[test]
    fn renders_bars_for_queries_and_throughput() {
        let mut r = Report::default();
        r.scenarios.push(ScenarioResult {
            scenario: "query".into(),
            seconds: 1.0,
            figures: vec![Figure::new("term_status warm p50", 2.0, "ms").vs(Some(0.05))],
            error: None,
        });
        r.scenarios.push(ScenarioResult {
            scenario: "ingest".into(),
            seconds: 1.0,
            figures: vec![Figure::new("ingest throughput", 50_000.0, "docs/s")],
            error: None,
        });
        let svg = render(&r);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<rect").count(), 1 + 3 + 2, "{svg}");
        assert!(svg.contains("term_status"));
        assert_eq!(nice_step(10_500.0), 20_000.0);
        assert_eq!(nice_step(0.3), 0.5);
    }
}
