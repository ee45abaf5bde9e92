//! Index metadata and shard commit points, as persisted by the metastore.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::mapping::Mappings;

/// Settings of one index, with OpenSearch's names and defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexSettings {
    pub number_of_shards: u32,
    /// Kept as the user wrote it (`"1s"`, `"500ms"`, `"-1"`), parsed by [`IndexSettings::refresh`].
    pub refresh_interval: String,
    /// `index.translog.durability`: `request` (acknowledge once durable) or `async`.
    #[serde(default = "default_durability")]
    pub translog_durability: String,
    /// `index.translog.sync_interval` for `async` durability.
    #[serde(default = "default_sync_interval")]
    pub translog_sync_interval: String,
    /// How many searchers serve each shard (at least one always does).
    #[serde(default = "default_replicas")]
    pub number_of_replicas: u32,
    /// The shard layout this index was created with ([`crate::layout::ShardLayout::of`]).
    /// Records written before layouts were versioned read as 1.
    #[serde(default = "first_layout")]
    pub layout_version: u32,
    /// `index.floe.prefetch`: searchers serving a shard fetch the hot parts of each newly
    /// published segment in the background, so fresh data does not pay the cold cost.
    #[serde(default = "yes")]
    pub prefetch: bool,
    /// `plugins.index_state_management.rollover_alias`: the alias an ISM rollover action
    /// rolls over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover_alias: Option<String>,
    /// `index.blocks.write`: writes are refused (ISM's `read_only`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub blocks_write: bool,
    /// `index.max_result_window`: the largest `from + size` of a search (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_result_window: Option<u64>,
    /// `index.hidden`: wildcards skip it unless `expand_wildcards` includes `hidden`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
    /// Closed (`POST /{index}/_close`): searches and writes are refused until it is opened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
    /// `index.priority` (recovery order in OpenSearch; kept and shown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
}

fn yes() -> bool {
    true
}

fn first_layout() -> u32 {
    1
}

fn default_replicas() -> u32 {
    1
}

fn default_durability() -> String {
    "request".into()
}

fn default_sync_interval() -> String {
    "5s".into()
}

impl Default for IndexSettings {
    fn default() -> Self {
        IndexSettings {
            number_of_shards: 1,
            refresh_interval: "1s".to_string(),
            translog_durability: default_durability(),
            translog_sync_interval: default_sync_interval(),
            number_of_replicas: default_replicas(),
            layout_version: crate::layout::CURRENT_LAYOUT,
            prefetch: true,
            rollover_alias: None,
            blocks_write: false,
            closed: false,
            max_result_window: None,
            hidden: false,
            priority: None,
        }
    }
}

impl IndexSettings {
    /// The refresh period; `None` when periodic refresh is disabled (`-1`).
    pub fn refresh(&self) -> Option<Duration> {
        parse_time_value(&self.refresh_interval)
    }
}

/// Parses OpenSearch time values such as `1s`, `500ms`, `2m`; `-1` means "never".
pub fn parse_time_value(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "-1" {
        return None;
    }
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "nanos" => n / 1e9,
        "micros" => n / 1e6,
        "ms" => n / 1e3,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Parses OpenSearch byte values such as `10b`, `512kb`, `5gb` (binary multiples, as
/// OpenSearch reads them).
pub fn parse_byte_value(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let scale: f64 = match unit.trim() {
        "b" | "" => 1.0,
        "kb" | "k" => 1024.0,
        "mb" | "m" => 1024.0 * 1024.0,
        "gb" | "g" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        "pb" | "p" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * scale) as u64)
}

/// One index as the metastore knows it. The persisted index record holds only what changes
/// rarely (uuid, settings, mappings); `shards` is assembled from the per-shard records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexMeta {
    pub uuid: String,
    pub name: String,
    pub settings: IndexSettings,
    pub mappings: Mappings,
    /// Milliseconds since the Unix epoch.
    pub creation_date: i64,
    /// Latest published commit point per shard (absent until the first refresh). Not part of
    /// the index record: each shard's commit lives in its own object ([`ShardRecord`]).
    #[serde(skip)]
    pub shards: BTreeMap<u32, ShardCommit>,
}

/// The incarnation of a node that owns a shard: its stable `--node-id` plus a fresh id per
/// process start, so a restarted process is told apart from a paused older one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardOwner {
    pub node_id: String,
    pub incarnation: String,
}

/// One shard's object in the metastore (`metastore/shards/<uuid>/<shard>.json`): who owns it
/// under which epoch, and its latest published commit. A publish rewrites only this object.
/// The owner's liveness is its node session ([`NodeSessionRecord`]), not a per-shard lease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    pub owner: Option<ShardOwner>,
    /// Grows with every change of owner incarnation; commits from any other epoch are refused.
    pub epoch: u64,
    pub commit: Option<ShardCommit>,
    /// Incarnations whose writer-wide translogs may hold this shard's operations above the
    /// commit's checkpoint (the owner, and earlier owners until a publish covers theirs).
    #[serde(default)]
    pub log_owners: Vec<ShardOwner>,
}

/// A node's session (`metastore/sessions/<node_id>.json`), renewed once per interval for all
/// the shards the node owns: renewal cost grows with nodes, not shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSessionRecord {
    pub node_id: String,
    pub incarnation: String,
    /// Wall-clock expiry, milliseconds since the Unix epoch (the writer's clock).
    pub expires_at_ms: i64,
}

impl IndexMeta {
    /// Object-storage prefix holding this index's data.
    pub fn data_prefix(&self) -> String {
        format!("indexes/{}", self.uuid)
    }

    /// Object-storage prefix of one shard's segment files.
    pub fn segments_prefix(&self, shard: u32) -> String {
        format!("indexes/{}/{}/segments", self.uuid, shard)
    }

    pub fn doc_count(&self) -> u64 {
        self.shards.values().map(|c| c.num_docs).sum()
    }

    pub fn size_bytes(&self) -> u64 {
        self.shards.values().map(|c| c.size_bytes).sum()
    }
}

/// A file of a tantivy segment stored in the bucket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentFile {
    /// File name inside the shard (`<segment-uuid>.idx`, ...).
    pub name: String,
    pub len: u64,
    /// Object key below the shard's `segments/` prefix: `<epoch>/<name>`, unique to the
    /// writing epoch and written create-only. Empty for objects stored under their name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
}

impl SegmentFile {
    /// Key of the object below the shard's `segments/` prefix.
    pub fn object_key(&self) -> &str {
        if self.object.is_empty() {
            &self.name
        } else {
            &self.object
        }
    }
}

/// The state of one shard that searchers read: which files make it up, plus the tantivy
/// `meta.json` that ties them together. Each publish increases `generation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardCommit {
    pub generation: u64,
    /// tantivy's `meta.json` for exactly these files.
    pub tantivy_meta: String,
    pub files: Vec<SegmentFile>,
    pub num_docs: u64,
    pub size_bytes: u64,
    /// Min/max `@timestamp` in milliseconds, when documents carry one.
    pub min_timestamp: Option<i64>,
    pub max_timestamp: Option<i64>,
    /// Lease epoch of the writer that published it.
    #[serde(default)]
    pub epoch: u64,
    /// Every translog operation with a lower sequence number is in these segments.
    #[serde(default)]
    pub translog_checkpoint: u64,
    /// Bounds of `@timestamp` (ms) per segment uuid: a query whose time range misses them
    /// skips the segment without reading it. Segments not listed are always searched.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub segment_times: BTreeMap<String, (i64, i64)>,
    /// Bounds (ms) of every other date field, by field path: a query that requires such a
    /// field in a range skips the shards and segments that cannot hold a match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub date_bounds: BTreeMap<String, DateBounds>,
}

/// Where the values of one date field lie in a commit (ms, inclusive; possibly a little
/// wider than the values). Segments not listed are always searched.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DateBounds {
    pub min: i64,
    pub max: i64,
    /// Bounds per segment uuid.
    #[serde(default)]
    pub segments: BTreeMap<String, (i64, i64)>,
}

impl ShardCommit {
    /// Whether documents of this commit may lie in `[from, to]` (ms, inclusive).
    pub fn may_hold_times(&self, from: i64, to: i64) -> bool {
        may_overlap(self.min_timestamp.zip(self.max_timestamp), from, to)
    }

    /// Whether documents of this commit may have `field` (a date field other than the
    /// `@timestamp` of [`Self::may_hold_times`]) in `[from, to]` (ms, inclusive). A commit
    /// with no bounds for it (an older commit, or no document has it) may.
    pub fn may_hold_dates(&self, field: &str, from: i64, to: i64) -> bool {
        let bounds = self.date_bounds.get(field).map(|b| (b.min, b.max));
        may_overlap(bounds, from, to)
    }
}

/// Whether values within `bounds` (inclusive; unknown: anything) may lie in `[from, to]`.
fn may_overlap(bounds: Option<(i64, i64)>, from: i64, to: i64) -> bool {
    bounds.is_none_or(|(min, max)| min <= to && from <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values() {
        assert_eq!(parse_time_value("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_time_value("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time_value("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_time_value("-1"), None);
        assert_eq!(parse_time_value("abc"), None);
    }
}
