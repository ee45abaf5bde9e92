//! The truthful baseline: raw tantivy on a typed schema, one tantivy field per mapped field,
//! as a hand-built engine for these logs would index them. Unlike [`crate::baseline`], its
//! indexing path shares none of Floe's code (no JSON-field layout, no `DocBuilder`, no
//! dynamic mapping per document; Floe's type inference only picks the schema's types up
//! front), so Floe's own costs show up in the ratio instead of hiding on both sides of it.
//!
//! Its figure of merit is documents per CPU-second (user + system time of this process,
//! parsing, indexing, the final commit and the merges it triggers included): on a small,
//! shared machine that is the fair comparison, while throughput depends on what else runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use floe_proto::{FieldType, Mappings};
use serde_json::Value;
use tantivy::directory::MmapDirectory;
use tantivy::schema::{
    DateOptions, Field, NumericOptions, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED,
    STORED, STRING,
};
use tantivy::{DateTime, Index, IndexWriter, TantivyDocument};

use crate::generator::DataSource;

/// What indexing the data set on the typed schema took.
#[derive(Clone, Debug)]
pub struct TypedStats {
    pub docs: u64,
    pub raw_bytes: u64,
    /// From the first document to the end of the merges the final commit started.
    pub elapsed: Duration,
    /// CPU time (user + system) of this process over the same span.
    pub cpu: Duration,
    /// Live segment files once merges finished.
    pub size_on_disk: u64,
    /// The field types used, as `name: type` (for the report).
    pub schema: String,
}

impl TypedStats {
    /// Documents per CPU-second: the efficiency Floe's ingest is compared with.
    pub fn docs_per_cpu_second(&self) -> f64 {
        self.docs as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

/// The field types of the typed schema: `mappings` (the explicit mapping) for the fields it
/// names, and for any other field of the first documents the type OpenSearch's dynamic
/// mapping would give it, strings as `text` only (a hand-built engine adds no `.keyword`).
pub fn field_types(
    source: &DataSource,
    mappings: &Mappings,
) -> anyhow::Result<BTreeMap<String, FieldType>> {
    let mut discovered = Mappings::default();
    source.first(1_000).for_each(|raw| {
        if let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(raw) {
            let found = discovered.discover(&doc)?;
            discovered.merge(&found);
        }
        Ok(())
    })?;
    let mut types: BTreeMap<String, FieldType> = discovered
        .fields
        .iter()
        .map(|(name, m)| (name.clone(), m.kind))
        .collect();
    for (name, m) in &mappings.fields {
        types.insert(name.clone(), m.kind);
    }
    // `@timestamp` holding epoch milliseconds is a date, as any log engine treats it.
    if types.contains_key("@timestamp") {
        types.insert("@timestamp".into(), FieldType::Date);
    }
    Ok(types)
}

/// The schema: per field, what a search on that type needs (text: positions; keyword: an
/// exact term and a column; numbers and dates: indexed and a column), plus the stored
/// `_source`.
struct Typed {
    schema: Schema,
    fields: Vec<(String, FieldType, Field)>,
    source: Field,
}

impl Typed {
    fn new(types: &BTreeMap<String, FieldType>) -> Typed {
        let mut b = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(tantivy::schema::IndexRecordOption::WithFreqsAndPositions),
        );
        let number = NumericOptions::default() | INDEXED | FAST;
        let fields = types
            .iter()
            .map(|(name, kind)| {
                let field = match kind {
                    FieldType::Text => b.add_text_field(name, text.clone()),
                    FieldType::Keyword => b.add_text_field(name, STRING | FAST),
                    FieldType::Long => b.add_i64_field(name, number.clone()),
                    FieldType::Double => b.add_f64_field(name, number.clone()),
                    FieldType::Boolean => b.add_bool_field(name, number.clone()),
                    FieldType::Date => {
                        b.add_date_field(name, DateOptions::default() | INDEXED | FAST)
                    }
                };
                (name.clone(), *kind, field)
            })
            .collect();
        let source = b.add_bytes_field("_source", STORED);
        Typed {
            schema: b.build(),
            fields,
            source,
        }
    }

    /// One document: each mapped top-level field converted to its type (values that do not
    /// fit are skipped), and the raw line as `_source`.
    fn doc(&self, raw: &str, parsed: &serde_json::Map<String, Value>) -> TantivyDocument {
        let mut doc = TantivyDocument::new();
        for (name, kind, field) in &self.fields {
            let Some(v) = parsed.get(name) else { continue };
            match (kind, v) {
                (FieldType::Text | FieldType::Keyword, Value::String(s)) => doc.add_text(*field, s),
                (FieldType::Long, v) => {
                    if let Some(n) = v.as_i64() {
                        doc.add_i64(*field, n)
                    }
                }
                (FieldType::Double, v) => {
                    if let Some(n) = v.as_f64() {
                        doc.add_f64(*field, n)
                    }
                }
                (FieldType::Boolean, Value::Bool(x)) => doc.add_bool(*field, *x),
                (FieldType::Date, v) => {
                    if let Some(ms) = date_millis(v) {
                        doc.add_date(*field, DateTime::from_timestamp_millis(ms))
                    }
                }
                _ => {}
            }
        }
        doc.add_bytes(self.source, raw.as_bytes());
        doc
    }
}

/// Epoch milliseconds of a date given as a number or an RFC 3339 string.
fn date_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        }
        _ => None,
    }
}

/// Indexes `source` into a new index under `dir` on the typed schema with `threads`
/// indexing threads and as many parsing threads, one commit at the end, and waits for the
/// merges. `memory_budget` is tantivy's, for all threads.
pub fn build(
    source: &DataSource,
    dir: &Path,
    types: &BTreeMap<String, FieldType>,
    threads: usize,
    memory_budget: usize,
) -> anyhow::Result<TypedStats> {
    std::fs::create_dir_all(dir)?;
    let typed = Typed::new(types);
    let index = Index::create(
        MmapDirectory::open(dir)?,
        typed.schema.clone(),
        tantivy::IndexSettings::default(),
    )?;
    let mut writer: IndexWriter = index.writer_with_num_threads(threads, memory_budget)?;
    let cpu0 = process_cpu(std::process::id())?;
    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Vec<String>>(threads * 4);
    let rx = Arc::new(Mutex::new(rx));
    let (raw_bytes, docs) = std::thread::scope(|scope| -> anyhow::Result<(u64, u64)> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (rx, writer, typed) = (rx.clone(), &writer, &typed);
                scope.spawn(move || -> anyhow::Result<u64> {
                    let mut docs = 0;
                    loop {
                        let next = rx.lock().expect("feed lock").recv();
                        let Ok(batch) = next else { return Ok(docs) };
                        for raw in &batch {
                            if let Ok(Value::Object(parsed)) = serde_json::from_str::<Value>(raw) {
                                writer.add_document(typed.doc(raw, &parsed))?;
                                docs += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        drop(rx);
        let mut raw_bytes = 0u64;
        let mut batch = Vec::with_capacity(1_000);
        source.for_each(|doc| {
            raw_bytes += doc.len() as u64;
            batch.push(doc.to_string());
            if batch.len() == 1_000 {
                tx.send(std::mem::take(&mut batch))
                    .context("typed baseline parsers stopped")?;
            }
            Ok(())
        })?;
        tx.send(batch)?;
        drop(tx);
        let mut docs = 0;
        for w in workers {
            docs += w.join().expect("parser thread panicked")?;
        }
        Ok((raw_bytes, docs))
    })?;
    writer.commit()?;
    writer.wait_merging_threads()?;
    let elapsed = started.elapsed();
    let cpu = process_cpu(std::process::id())?.saturating_sub(cpu0);
    let schema = types
        .iter()
        .map(|(n, t)| format!("{n}: {t:?}"))
        .collect::<Vec<_>>()
        .join(", ")
        .to_lowercase();
    Ok(TypedStats {
        docs,
        raw_bytes,
        elapsed,
        cpu,
        size_on_disk: crate::baseline::live_size(&index, dir)?,
        schema,
    })
}

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (Linux).
pub fn process_cpu(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (USER_HZ, 100
    // on Linux).
    let ticks: u64 = fields
        .get(11..13)
        .context("short /proc stat")?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    Ok(Duration::from_millis(ticks * 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_this_process_grows() {
        let a = process_cpu(std::process::id()).unwrap();
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let b = process_cpu(std::process::id()).unwrap();
        assert!(b > a, "{a:?} -> {b:?}");
    }

    #[test]
    fn typed_documents_hold_each_field_in_its_type() {
        let mut types = BTreeMap::new();
        types.insert("@timestamp".to_string(), FieldType::Date);
        types.insert("status".to_string(), FieldType::Long);
        types.insert("message".to_string(), FieldType::Text);
        let typed = Typed::new(&types);
        let raw = r#"{"@timestamp":"2024-01-01T00:00:01Z","status":200,"message":"GET /"}"#;
        let Value::Object(parsed) = serde_json::from_str(raw).unwrap() else {
            unreachable!()
        };
        let doc = typed.doc(raw, &parsed);
        let json = tantivy::Document::to_json(&doc, &typed.schema);
        assert!(json.contains("\"status\":[200]"), "{json}");
        assert!(json.contains("2024-01-01T00:00:01Z"), "{json}");
        assert_eq!(
            date_millis(&serde_json::json!(1_700_000_000_000i64)),
            Some(1_700_000_000_000)
        );
    }
}
