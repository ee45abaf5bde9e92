//! State shared by the scenarios of one run. Expensive prerequisites — the baseline index,
//! a started Floe, the ingested data set — are built on first use and reused, so any
//! scenario can run alone (`floe-bench query`) or after the others (`floe-bench all`)
//! without doing the work twice.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use tempfile::TempDir;

use crate::baseline::{self, BaselineIndex, IndexStats};
use crate::cli::Opts;
use crate::floe::{find_floe_bin, Floe, LaunchSpec};
use crate::generator::{DataSource, GenSpec, DEFAULT_START_MS};
use crate::scenarios::ingest::{self, IngestStats};
use crate::typed::{self, TypedStats};

/// The index the data set is ingested into.
pub const INDEX: &str = "bench-logs";

/// The explicit mapping of the data set, as OpenSearch Benchmark's http_logs track maps it
/// (plus `message`): what a user would declare for logs. `--dynamic-mapping` drops it.
pub fn http_logs_mapping() -> serde_json::Value {
    serde_json::json!({"properties": {
        "@timestamp": {"type": "date"},
        "clientip": {"type": "keyword"},
        "request": {"type": "text"},
        "status": {"type": "integer"},
        "size": {"type": "integer"},
        "message": {"type": "text"},
    }})
}

/// Body of `PUT /bench-logs`.
pub fn index_body(opts: &Opts) -> serde_json::Value {
    let mut body = serde_json::json!({"settings": {"index": {"number_of_shards": 1, "refresh_interval": "1s"}}});
    if !opts.dynamic_mapping {
        body["mappings"] = http_logs_mapping();
    }
    body
}

/// The mapping the baseline starts from (and extends dynamically, as Floe does).
pub fn initial_mappings(opts: &Opts) -> floe_proto::Mappings {
    if opts.dynamic_mapping {
        floe_proto::Mappings::default()
    } else {
        floe_proto::Mappings::from_opensearch(&http_logs_mapping()).expect("valid mapping")
    }
}

pub struct Ctx {
    pub opts: Opts,
    pub source: DataSource,
    /// Documents in `source`.
    pub docs: u64,
    /// Temporary home of baseline indexes and the started Floe's data and cache.
    pub work: TempDir,
    /// The 2-thread baseline index, which the query scenario runs on.
    pub baseline: Option<BaselineIndex>,
    /// Raw tantivy on a typed schema, 2 threads: the efficiency Floe is measured against.
    pub typed: Option<TypedStats>,
    pub floe: Option<Floe>,
    pub ingest: Option<IngestStats>,
    /// Peak RSS of Floe right after ingest, and after the warm queries (bytes).
    pub rss_after_ingest: Option<u64>,
    pub rss_after_queries: Option<u64>,
    /// Remarks for the report (what was approximated, skipped, or mismatched).
    pub notes: Vec<String>,
}

impl Ctx {
    pub fn new(opts: Opts) -> anyhow::Result<Ctx> {
        let source = match &opts.input {
            Some(path) => DataSource::File {
                path: path.clone(),
                limit: opts.docs,
            },
            None => DataSource::Generated(GenSpec {
                seed: opts.seed,
                docs: opts.docs.unwrap_or(1_000_000),
                start_ms: DEFAULT_START_MS,
                window_ms: (opts.window_hours * 3_600_000.0) as i64,
            }),
        };
        let docs = source.count()?;
        let mut notes = Vec::new();
        if opts.input.is_some() {
            notes.push(
                "queries use http_logs fields (status, message, @timestamp): on other data they \
                 may match nothing, and are then mostly a measure of overhead"
                    .to_string(),
            );
        }
        anyhow::ensure!(docs > 0, "the data set is empty");
        let work = match &opts.work_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                tempfile::Builder::new()
                    .prefix("floe-bench-")
                    .tempdir_in(dir)?
            }
            None => tempfile::Builder::new().prefix("floe-bench-").tempdir()?,
        };
        Ok(Ctx {
            opts,
            source,
            docs,
            work,
            baseline: None,
            typed: None,
            floe: None,
            ingest: None,
            rss_after_ingest: None,
            rss_after_queries: None,
            notes,
        })
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    /// Records that Floe answered differently from the baseline: a note in a full run (the
    /// figures are still worth seeing), an error in a smoke run (CI must notice).
    pub fn mismatch(&mut self, what: &str, msg: &str) -> anyhow::Result<()> {
        anyhow::ensure!(!self.opts.smoke, "{what}: {msg}");
        self.note(format!("{what}: {msg}"));
        Ok(())
    }

    /// A progress bar of `len` steps for a long phase (hidden when stderr is not a terminal).
    pub fn progress(&self, len: u64, what: &str) -> ProgressBar {
        let pb = ProgressBar::new(len);
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix:>22} [{bar:40}] {human_pos}/{human_len} {per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        pb.set_prefix(what.to_string());
        pb
    }

    /// Builds a raw tantivy index of the data set with `threads` indexing threads.
    pub fn build_baseline(&mut self, threads: usize) -> anyhow::Result<BaselineIndex> {
        let dir = self.work.path().join(format!("baseline-{threads}t"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let pb = self.progress(self.docs, &format!("tantivy {threads} thread(s)"));
        let budget = self.opts.memory_budget_mb * 1024 * 1024;
        let source = self.source.clone();
        let mappings = initial_mappings(&self.opts);
        let segments = self.opts.segments();
        let built = tokio::task::block_in_place(|| {
            baseline::build(&source, &dir, threads, budget, mappings, segments, &pb)
        })?;
        pb.finish_and_clear();
        if built.stats.rejected > 0 {
            self.note(format!(
                "baseline: {} documents rejected (not JSON objects or not fitting the mapping)",
                built.stats.rejected
            ));
        }
        Ok(built)
    }

    /// Raw tantivy on a typed schema with 2 threads, built on first use (then deleted: only
    /// its figures are kept).
    pub fn typed_baseline(&mut self) -> anyhow::Result<&TypedStats> {
        if self.typed.is_none() {
            let dir = self.work.path().join("typed-2t");
            let budget = self.opts.memory_budget_mb * 1024 * 1024;
            let source = self.source.clone();
            let mappings =
                floe_proto::Mappings::from_opensearch(&http_logs_mapping()).expect("valid mapping");
            let stats = tokio::task::block_in_place(|| {
                let types = typed::field_types(&source, &mappings)?;
                typed::build(&source, &dir, &types, 2, budget)
            })?;
            std::fs::remove_dir_all(&dir)?;
            self.typed = Some(stats);
        }
        Ok(self.typed.as_ref().expect("just built"))
    }

    /// The 2-thread baseline index, built on first use.
    pub fn baseline(&mut self) -> anyhow::Result<&BaselineIndex> {
        if self.baseline.is_none() {
            self.baseline = Some(self.build_baseline(2)?);
        }
        Ok(self.baseline.as_ref().expect("just built"))
    }

    /// Stats of the 2-thread baseline, if it was built (for ratios).
    pub fn baseline_stats(&self) -> Option<&IndexStats> {
        self.baseline.as_ref().map(|b| &b.stats)
    }

    /// The Floe under test, started on first use (or the `--url` one).
    pub async fn floe(&mut self) -> anyhow::Result<&mut Floe> {
        if self.floe.is_none() {
            let floe = match &self.opts.url {
                Some(url) => {
                    let floe = Floe::external(url)?;
                    floe.client
                        .wait_ready(Duration::from_secs(10))
                        .await
                        .with_context(|| format!("--url {url} does not answer"))?;
                    floe
                }
                None => {
                    let bin = find_floe_bin(self.opts.floe_bin.as_deref())?;
                    if bin.components().any(|c| c.as_os_str() == "debug") && !self.opts.smoke {
                        self.note(format!(
                            "Floe binary {} is a debug build: its figures are not representative",
                            bin.display()
                        ));
                    }
                    let s3 = match (&self.opts.s3_endpoint, &self.opts.s3_bucket) {
                        (Some(e), Some(b)) => {
                            let prefix = self.opts.s3_prefix.clone().unwrap_or_else(|| {
                                let t = SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .map_or(0, |d| d.as_secs());
                                format!("floe-bench-{t}")
                            });
                            Some((e.clone(), b.clone(), Some(prefix)))
                        }
                        (None, None) => None,
                        _ => anyhow::bail!("--s3-endpoint and --s3-bucket go together"),
                    };
                    Floe::launch(LaunchSpec {
                        bin,
                        root: self.work.path().join("floe"),
                        s3,
                    })
                    .await?
                }
            };
            self.floe = Some(floe);
        }
        Ok(self.floe.as_mut().expect("just started"))
    }

    /// The data set ingested into [`INDEX`] (once), with what it took.
    pub async fn ingested(&mut self) -> anyhow::Result<&IngestStats> {
        if self.ingest.is_none() {
            let stats = ingest::ingest(self).await?;
            self.rss_after_ingest = match self.floe.as_ref().and_then(|f| f.process.as_ref()) {
                Some(p) => Some(p.peak_rss()?),
                None => None,
            };
            self.ingest = Some(stats);
        }
        Ok(self.ingest.as_ref().expect("just ingested"))
    }

    /// The data's `(min, max)` `@timestamp` in epoch ms: observed by the baseline, else the
    /// generator's window.
    pub fn time_range(&self) -> (i64, i64) {
        if let Some(r) = self.baseline_stats().and_then(|s| s.time_range) {
            return r;
        }
        match &self.source {
            DataSource::Generated(g) => (g.start_ms, g.start_ms + g.window_ms),
            DataSource::File { .. } => (0, i64::MAX / 2),
        }
    }

    /// Raw JSON bytes of the data set, once something has read it all.
    pub fn raw_bytes(&self) -> Option<u64> {
        self.baseline_stats()
            .map(|s| s.raw_bytes)
            .or(self.ingest.as_ref().map(|i| i.raw_bytes))
    }
}
