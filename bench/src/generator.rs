//! Benchmark documents: a deterministic generator of web-access-log documents shaped like
//! OpenSearch Benchmark's `http_logs` track, or the lines of a user's NDJSON file.
//!
//! Everything is streamed: a [`DataSource`] can be opened any number of times and yields the
//! same documents in the same order each time (the baseline and Floe must see identical
//! input), without ever holding more than one document in memory.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use anyhow::Context;
use time::macros::format_description;
use time::OffsetDateTime;

/// 2024-05-01T00:00:00Z, the start of the generated time window.
pub const DEFAULT_START_MS: i64 = 1_714_521_600_000;

/// A small, fast, seedable PRNG (xorshift64* seeded through splitmix64). Good enough for
/// synthetic data and, unlike `rand`'s `StdRng`, guaranteed stable across versions, so a
/// seed reproduces the same data set forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so small seeds (0, 1, 2) still give well-mixed states.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s` (Zipf), by binary
/// search in a precomputed cumulative table: web paths and words are that skewed.
#[derive(Clone, Debug)]
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut sum = 0.0;
        for rank in 1..=n {
            sum += 1.0 / (rank as f64).powf(s);
            cdf.push(sum);
        }
        for c in &mut cdf {
            *c /= sum;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.f64();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// Words of the free-text `message`, most frequent first (Zipf-distributed). The benchmark's
/// full-text query looks for two of the mid-frequency ones.
pub const WORDS: &[&str] = &[
    "request",
    "served",
    "from",
    "cache",
    "upstream",
    "client",
    "the",
    "response",
    "in",
    "ms",
    "user",
    "session",
    "connection",
    "to",
    "backend",
    "ok",
    "completed",
    "with",
    "keepalive",
    "timeout",
    "gzip",
    "retry",
    "slow",
    "origin",
    "edge",
    "worker",
    "pool",
    "queue",
    "tls",
    "handshake",
    "redirect",
    "cookie",
    "referer",
    "mobile",
    "desktop",
    "bot",
    "crawler",
    "static",
    "dynamic",
    "image",
    "script",
    "stylesheet",
    "font",
    "video",
    "download",
    "upload",
    "partial",
    "content",
    "range",
    "etag",
    "modified",
    "expired",
    "stale",
    "revalidated",
    "compressed",
    "chunked",
    "stream",
    "closed",
    "reset",
    "refused",
    "dns",
    "lookup",
    "resolved",
    "proxy",
    "forwarded",
    "header",
    "missing",
    "invalid",
    "token",
    "auth",
    "login",
    "logout",
    "checkout",
    "cart",
    "search",
    "results",
    "page",
    "home",
    "banner",
    "ads",
    "tracking",
    "pixel",
    "api",
    "v1",
    "v2",
    "json",
    "html",
    "xml",
    "error",
    "warning",
    "notice",
    "debug",
    "trace",
    "latency",
    "spike",
    "throttled",
    "rejected",
    "accepted",
    "queued",
    "dropped",
];

/// The full-text query of the `query` scenario (two words of middling frequency).
pub const MATCH_QUERY_TEXT: &str = "timeout retry";

const DIRS: &[&str] = &[
    "images", "english", "french", "spanish", "german", "news", "history", "tickets", "venues",
    "teams", "playing", "members", "results", "scripts", "styles", "video",
];
const STEMS: &[&str] = &[
    "hm_bg", "index", "logo", "nav_bar", "splash", "team", "photo", "schedule", "home", "cal",
    "list", "detail", "brazil", "france", "arena", "hero", "btn", "footer", "map",
];
const EXTS: &[&str] = &["jpg", "gif", "html", "js", "css", "htm", "png"];

/// Parameters of the synthetic data set. The same parameters always give the same bytes.
#[derive(Clone, Debug)]
pub struct GenSpec {
    pub seed: u64,
    pub docs: u64,
    /// Epoch milliseconds of the first document.
    pub start_ms: i64,
    /// Length of the time window the documents span.
    pub window_ms: i64,
}

/// Generates the documents of a [`GenSpec`], one JSON object per call, ~230 bytes each.
pub struct LogGenerator {
    spec: GenSpec,
    rng: Rng,
    next: u64,
    paths: Vec<String>,
    path_zipf: Zipf,
    word_zipf: Zipf,
    client_zipf: Zipf,
    buf: String,
}

impl LogGenerator {
    pub fn new(spec: GenSpec) -> Self {
        let mut rng = Rng::new(spec.seed);
        let paths: Vec<String> = (0..2_000)
            .map(|_| {
                let dir = DIRS[rng.below(DIRS.len() as u64) as usize];
                let stem = STEMS[rng.below(STEMS.len() as u64) as usize];
                let ext = EXTS[rng.below(EXTS.len() as u64) as usize];
                match rng.below(3) {
                    0 => format!("/{dir}/{stem}.{ext}"),
                    n => format!("/{dir}/{stem}_{}.{ext}", n * 7 + rng.below(90)),
                }
            })
            .collect();
        LogGenerator {
            rng,
            next: 0,
            path_zipf: Zipf::new(paths.len(), 1.1),
            paths,
            word_zipf: Zipf::new(WORDS.len(), 1.0),
            client_zipf: Zipf::new(50_000, 0.9),
            buf: String::with_capacity(512),
            spec,
        }
    }

    /// The next document as one line of JSON (no trailing newline), or `None` at the end.
    pub fn next_doc(&mut self) -> Option<&str> {
        if self.next >= self.spec.docs {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let rng = &mut self.rng;
        let step = self.spec.window_ms as f64 / self.spec.docs.max(1) as f64;
        // Increasing, with a little jitter (log lines arrive slightly out of order).
        let jitter = (rng.f64() - 0.5) * step.min(2_000.0);
        let ts_ms = self.spec.start_ms + (i as f64 * step + jitter).max(0.0) as i64;
        let client = self.client_zipf.sample(rng) as u64;
        let ip = client.wrapping_mul(2_654_435_761) ^ 0x5bd1_e995;
        let method = match rng.below(100) {
            0..=89 => "GET",
            90..=96 => "POST",
            _ => "HEAD",
        };
        let path = &self.paths[self.path_zipf.sample(rng)];
        let proto = if rng.below(10) < 8 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        };
        let status = match rng.below(1000) {
            0..=879 => 200,
            880..=959 => 304,
            960..=989 => 404,
            _ => 500,
        };
        let size = match status {
            304 => 0,
            404 | 500 => 200 + rng.below(400),
            _ => (1_000.0 * (-(1.0 - rng.f64()).ln()) * 6.0) as u64 + rng.below(500),
        };
        let b = &mut self.buf;
        b.clear();
        b.push_str("{\"@timestamp\":\"");
        write_rfc3339_ms(b, ts_ms);
        let _ = write!(
            b,
            "\",\"clientip\":\"{}.{}.{}.{}\",\"request\":\"{method} {path} {proto}\",\"status\":{status},\"size\":{size},\"message\":\"",
            (ip >> 24) as u8 % 223 + 1,
            (ip >> 16) as u8,
            (ip >> 8) as u8,
            ip as u8,
        );
        let target = 50 + rng.below(50) as usize;
        let start = b.len();
        while b.len() - start < target {
            if b.len() > start {
                b.push(' ');
            }
            b.push_str(WORDS[self.word_zipf.sample(rng)]);
        }
        b.push_str("\"}");
        Some(&self.buf)
    }
}

/// Appends `ms` (epoch milliseconds) as RFC 3339 UTC with milliseconds.
fn write_rfc3339_ms(out: &mut String, ms: i64) {
    let dt = OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    out.push_str(&dt.format(fmt).unwrap_or_default());
}

/// Where the benchmark's documents come from.
#[derive(Clone, Debug)]
pub enum DataSource {
    Generated(GenSpec),
    /// One JSON document per line; blank lines are skipped. `limit` caps the count.
    File {
        path: PathBuf,
        limit: Option<u64>,
    },
}

impl DataSource {
    /// Number of documents the source yields (reads the file once to count its lines).
    pub fn count(&self) -> anyhow::Result<u64> {
        match self {
            DataSource::Generated(g) => Ok(g.docs),
            DataSource::File { .. } => {
                let mut n = 0;
                self.for_each(|_| {
                    n += 1;
                    Ok(())
                })?;
                Ok(n)
            }
        }
    }

    /// The same source cut to its first `n` documents.
    pub fn first(&self, n: u64) -> DataSource {
        match self {
            DataSource::Generated(spec) => DataSource::Generated(GenSpec {
                docs: spec.docs.min(n),
                ..spec.clone()
            }),
            DataSource::File { path, limit } => DataSource::File {
                path: path.clone(),
                limit: Some(limit.map_or(n, |l| l.min(n))),
            },
        }
    }

    /// Calls `f` with each document (one JSON line, without newline), in order.
    pub fn for_each(&self, mut f: impl FnMut(&str) -> anyhow::Result<()>) -> anyhow::Result<()> {
        match self {
            DataSource::Generated(spec) => {
                let mut gen = LogGenerator::new(spec.clone());
                while let Some(doc) = gen.next_doc() {
                    f(doc)?;
                }
            }
            DataSource::File { path, limit } => {
                let file =
                    File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let mut reader = BufReader::with_capacity(1 << 20, file);
                let mut line = String::new();
                let mut n = 0u64;
                while limit.is_none_or(|l| n < l) {
                    line.clear();
                    if reader.read_line(&mut line)? == 0 {
                        break;
                    }
                    let doc = line.trim();
                    if !doc.is_empty() {
                        f(doc)?;
                        n += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match self {
            DataSource::Generated(g) => format!(
                "generated http_logs-like documents: {} docs, seed {}, {} h window",
                g.docs,
                g.seed,
                g.window_ms as f64 / 3_600_000.0
            ),
            DataSource::File { path, limit } => match limit {
                Some(l) => format!("{} (first {l} docs)", path.display()),
                None => path.display().to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(docs: u64) -> GenSpec {
        GenSpec {
            seed: 7,
            docs,
            start_ms: DEFAULT_START_MS,
            window_ms: 3_600_000,
        }
    }

    fn collect(source: &DataSource) -> Vec<String> {
        let mut out = Vec::new();
        source
            .for_each(|d| {
                out.push(d.to_string());
                Ok(())
            })
            .unwrap();
        out
    }

    #[test]
    fn deterministic_valid_and_about_230_bytes() {
        let source = DataSource::Generated(spec(2_000));
        let a = collect(&source);
        assert_eq!(a, collect(&source), "same seed, same documents");
        assert_eq!(a.len(), 2_000);
        let total: usize = a.iter().map(String::len).sum();
        let avg = total / a.len();
        assert!((190..=270).contains(&avg), "average size {avg}");
        for line in &a {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            for key in [
                "@timestamp",
                "clientip",
                "request",
                "status",
                "size",
                "message",
            ] {
                assert!(v.get(key).is_some(), "{key} missing in {line}");
            }
        }
        let other = collect(&DataSource::Generated(GenSpec {
            seed: 8,
            ..spec(2_000)
        }));
        assert_ne!(a, other, "another seed, other documents");
    }

    #[test]
    fn status_mostly_200_and_words_skewed() {
        let docs = collect(&DataSource::Generated(spec(5_000)));
        let ok = docs.iter().filter(|d| d.contains("\"status\":200")).count();
        assert!(ok > 4_000 && ok < 4_900, "{ok} of 5000 are 200");
        let with_match_word = docs.iter().filter(|d| d.contains("timeout")).count();
        assert!(with_match_word > 50 && with_match_word < 2_500);
    }

    #[test]
    fn file_source_skips_blank_lines_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.ndjson");
        std::fs::write(&path, "{\"a\":1}\n\n{\"a\":2}\n{\"a\":3}\n").unwrap();
        let all = DataSource::File {
            path: path.clone(),
            limit: None,
        };
        assert_eq!(all.count().unwrap(), 3);
        let two = DataSource::File {
            path,
            limit: Some(2),
        };
        assert_eq!(collect(&two), vec!["{\"a\":1}", "{\"a\":2}"]);
        assert_eq!(collect(&all.first(1)), vec!["{\"a\":1}"]);
        assert_eq!(
            two.first(5).count().unwrap(),
            2,
            "first never extends a limit"
        );
    }
}
