//! Results: every scenario produces [`Figure`]s; a run's figures, errors and notes are written
//! as JSON (for machines and history), Markdown (for people and pull requests) and an SVG
//! chart, under `bench/results/` by default.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::chart;

/// One measured number, with the raw-tantivy limit it is compared against when there is one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// `value / baseline`: above 1 Floe is slower for latencies and faster for throughputs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    pub fn new(name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit: unit.to_string(),
            baseline: None,
            ratio: None,
            note: None,
        }
    }

    /// Attaches the baseline value (and so the ratio), when there is one.
    pub fn vs(mut self, baseline: Option<f64>) -> Figure {
        self.baseline = baseline;
        self.ratio = baseline.filter(|b| *b > 0.0).map(|b| self.value / b);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }
}

/// What one scenario produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub scenario: String,
    pub seconds: f64,
    pub figures: Vec<Figure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScenarioResult {
    /// A scenario failed if it says so or if it produced nothing measurable.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self.figures.is_empty()
            || self.figures.iter().any(|f| !f.value.is_finite())
    }
}

/// What the run was: enough to reproduce it and to know what the numbers mean.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunMeta {
    pub started_at: String,
    pub command: String,
    pub data: String,
    pub docs: u64,
    pub raw_json_bytes: u64,
    pub floe: String,
    pub bench_build: String,
    pub machine: String,
    pub git_commit: String,
    pub smoke: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub meta: RunMeta,
    pub scenarios: Vec<ScenarioResult>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> Vec<&ScenarioResult> {
        self.scenarios.iter().filter(|s| s.failed()).collect()
    }

    /// The figure `name` of `scenario`, if measured.
    pub fn figure(&self, scenario: &str, name: &str) -> Option<&Figure> {
        self.scenarios
            .iter()
            .filter(|s| s.scenario == scenario)
            .flat_map(|s| &s.figures)
            .find(|f| f.name == name)
    }

    /// Writes `<stem>.json`, `<stem>.md` and `<stem>.svg` under `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let json = dir.join(format!("{stem}.json"));
        let md = dir.join(format!("{stem}.md"));
        let svg = dir.join(format!("{stem}.svg"));
        std::fs::write(&json, serde_json::to_string_pretty(self)? + "\n")?;
        std::fs::write(&svg, chart::render(self))?;
        std::fs::write(&md, self.markdown(&format!("{stem}.svg")))?;
        Ok(vec![md, json, svg])
    }

    pub fn markdown(&self, chart_file: &str) -> String {
        let m = &self.meta;
        let mut out = String::new();
        let _ = writeln!(out, "# Floe benchmark\n");
        let _ = writeln!(out, "- started: {}", m.started_at);
        let _ = writeln!(out, "- command: `{}`", m.command);
        let _ = writeln!(out, "- data: {}", m.data);
        let _ = writeln!(
            out,
            "- raw JSON: {} docs, {} bytes ({:.1} bytes/doc)",
            m.docs,
            m.raw_json_bytes,
            m.raw_json_bytes as f64 / m.docs.max(1) as f64
        );
        let _ = writeln!(out, "- floe: {}", m.floe);
        let _ = writeln!(out, "- bench build: {}", m.bench_build);
        let _ = writeln!(out, "- machine: {}", m.machine);
        let _ = writeln!(out, "- git commit: {}", m.git_commit);
        if m.smoke {
            let _ = writeln!(
                out,
                "- **smoke run**: few repetitions, numbers are not meaningful"
            );
        }
        let _ = writeln!(
            out,
            "\nratio = Floe / baseline (raw tantivy in-process, same schema, documents and \
             queries). For latencies lower is better; for throughputs higher is better.\n"
        );
        let _ = writeln!(out, "![chart]({chart_file})\n");
        for s in &self.scenarios {
            let _ = writeln!(out, "## {} ({:.1} s)\n", s.scenario, s.seconds);
            if let Some(e) = &s.error {
                let _ = writeln!(out, "**FAILED**: {}\n", e.replace('\n', " "));
            }
            if s.figures.is_empty() {
                continue;
            }
            let _ = writeln!(out, "| figure | value | unit | baseline | ratio | note |");
            let _ = writeln!(out, "|---|---:|---|---:|---:|---|");
            for f in &s.figures {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} |",
                    f.name,
                    fmt_num(f.value),
                    f.unit,
                    f.baseline.map(fmt_num).unwrap_or_default(),
                    f.ratio.map(|r| format!("{r:.2}")).unwrap_or_default(),
                    f.note.as_deref().unwrap_or("")
                );
            }
            let _ = writeln!(out);
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }
}

/// Human-friendly number: thousands grouped for large values, 3 significant digits for
/// small ones.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 10_000.0 {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        // Three significant digits, trailing zeros dropped: 0.0123, 0.5, 0.01.
        let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_and_formatting() {
        let f = Figure::new("x", 10.0, "ms").vs(Some(4.0));
        assert_eq!(f.ratio, Some(2.5));
        assert_eq!(Figure::new("x", 1.0, "ms").vs(Some(0.0)).ratio, None);
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_num(0.01234), "0.0123");
        assert_eq!(fmt_num(0.01), "0.01");
        assert_eq!(fmt_num(200.0), "200");
    }

    #[test]
    fn empty_scenario_fails_and_report_renders() {
        let mut r = Report::default();
        r.scenarios.push(ScenarioResult {
            scenario: "ingest".into(),
            seconds: 1.0,
            figures: vec![Figure::new("docs/s", 5.0, "docs/s")],
            error: None,
        });
        r.scenarios.push(ScenarioResult {
            scenario: "query".into(),
            seconds: 1.0,
            figures: vec![],
            error: None,
        });
        assert_eq!(r.failed().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let files = r.write(dir.path(), "t").unwrap();
        assert_eq!(files.len(), 3);
        let md = std::fs::read_to_string(&files[0]).unwrap();
        assert!(md.contains("| docs/s | 5 | docs/s |"), "{md}");
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
        assert_eq!(back.scenarios.len(), 2);
    }
}
