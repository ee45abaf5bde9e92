//! The fixed tantivy schema of every shard. Field types come from the index mapping, not from
//! the tantivy schema, so new fields need no schema change: all values live in two JSON fields.
//!
//! - `t`: `text` fields, tokenized with positions (full text, phrases);
//! - `k`: everything else (`keyword`, `long`, `double`, `boolean`, `date`, and the `.keyword`
//!   sub-field of text fields), untokenized and columnar (fast) for sort, range and aggregations;
//! - `kc` (layout 2 on): the `.keyword` sub-fields of text fields, as columns only (no
//!   inverted index): log messages make nearly every value unique, and indexing them twice
//!   (terms and column) was a third of dynamic-mapping ingest CPU. Term, terms, prefix and
//!   range queries on them run on the column; sort and aggregations read it as before;
//! - `kn` (layout 3 on): fields mapped with `doc_values: false`: indexed, no column;
//! - `tf` (layout 3 on): the tokens of `text` fields mapped with `fielddata: true`, as a
//!   multi-valued column (terms aggregations and sorting by token);
//! - `_routing` (layout 3 on): the custom routing a document was written with, stored;
//! - `_ts`: the `@timestamp` of log documents (when mapped as `date`), in a typed date column
//!   of millisecond precision. Sorting, time ranges and date histograms on it read a dense
//!   typed column instead of a JSON path: measured 2-5x faster on 1M documents.

use tantivy::schema::{
    DateOptions, DateTimePrecision, Field, IndexRecordOption, JsonObjectOptions, Schema,
    TextFieldIndexing, FAST, STORED, STRING,
};

use crate::mapping::{FieldMapping, FieldType, Mappings};

pub const ID_FIELD: &str = "_id";
pub const SOURCE_FIELD: &str = "_source";
pub const VERSION_FIELD: &str = "_version";
/// The operation's sequence number in its shard (`_seq_no`, low 40 bits) and the epoch of
/// the writer that indexed it (`_primary_term`, high 24 bits), packed into one column: one
/// value per document instead of two costs measurably less at ingest.
pub const SEQ_NO_FIELD: &str = "_seq_no";
const SEQ_NO_BITS: u32 = 40;

/// Packs `_seq_no` and `_primary_term` for [`SEQ_NO_FIELD`].
pub fn pack_seq_no(seq_no: u64, primary_term: u64) -> u64 {
    (primary_term << SEQ_NO_BITS) | (seq_no & ((1 << SEQ_NO_BITS) - 1))
}

/// (`_seq_no`, `_primary_term`) from a [`SEQ_NO_FIELD`] value.
pub fn unpack_seq_no(packed: u64) -> (u64, u64) {
    (packed & ((1 << SEQ_NO_BITS) - 1), packed >> SEQ_NO_BITS)
}
pub const TEXT_FIELD: &str = "t";
pub const KEYWORD_FIELD: &str = "k";
pub const TIMESTAMP_FIELD: &str = "_ts";
pub const KEYWORD_COLUMN_FIELD: &str = "kc";
pub const KEYWORD_INDEX_FIELD: &str = "kn";
pub const FIELDDATA_FIELD: &str = "tf";
pub const ROUTING_FIELD: &str = "_routing";
/// The layout new indexes get: 2 adds [`KEYWORD_COLUMN_FIELD`]; 3 adds
/// [`KEYWORD_INDEX_FIELD`], [`FIELDDATA_FIELD`] and [`ROUTING_FIELD`], and honours `index`
/// and `doc_values` in mappings (earlier layouts index and keep columns of every field).
pub const CURRENT_LAYOUT: u32 = 3;
/// The field stored in [`TIMESTAMP_FIELD`] when mapped as `date`.
pub const TIMESTAMP_PATH: &str = "@timestamp";

/// Handles to the fields of a shard's schema.
#[derive(Clone, Debug)]
pub struct ShardLayout {
    pub schema: Schema,
    pub id: Field,
    pub source: Field,
    /// Document version (1 on create, +1 per overwrite), read back when a write replaces it.
    pub version: Field,
    /// `_seq_no` and `_primary_term` ([`pack_seq_no`]).
    pub seq_no: Field,
    pub text: Field,
    pub kw: Field,
    pub ts: Field,
    /// Column-only `.keyword` sub-fields; `None` in layout 1 (they live in `kw` there).
    pub kc: Option<Field>,
    /// Indexed fields without a column (`doc_values: false`); layout 3 on.
    pub kn: Option<Field>,
    /// Token columns of `fielddata: true` text fields; layout 3 on.
    pub tf: Option<Field>,
    /// Stored custom routing; layout 3 on.
    pub routing: Option<Field>,
}

/// Where the values of one field (not the typed `@timestamp`) are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Home {
    /// `t`: tokenized text.
    Text,
    /// `k`: inverted index and column.
    Keyword,
    /// `kc`: column only (`index: false`).
    ColumnOnly,
    /// `kn`: inverted index only (`doc_values: false`).
    IndexOnly,
    /// Kept in `_source` only (`index: false` text, or `index` and `doc_values` both off).
    SourceOnly,
}

/// Where a user-visible field lives in the tantivy layout.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedField {
    /// `t`, `k` or `_ts`.
    pub field: Field,
    /// JSON path inside that field (the user's dotted path); empty for `_ts`.
    pub path: String,
    pub kind: FieldType,
    /// A column without an inverted index (`kc`): exact values are looked up in the column.
    pub column_only: bool,
    /// An inverted index without a column (`kn`): no sort, aggregations or column lookups.
    pub index_only: bool,
    /// Whether queries can match on it (not a [`Home::SourceOnly`] field).
    pub searchable: bool,
}

impl ResolvedField {
    /// Name for tantivy fast-field APIs (sort, aggregations): `k.<path>`, `kc.<path>` or
    /// `_ts`.
    pub fn column_name(&self) -> String {
        if self.path.is_empty() {
            TIMESTAMP_FIELD.to_string()
        } else if self.column_only {
            format!("{KEYWORD_COLUMN_FIELD}.{}", self.path)
        } else if self.index_only {
            format!("{KEYWORD_INDEX_FIELD}.{}", self.path)
        } else {
            format!("{KEYWORD_FIELD}.{}", self.path)
        }
    }

    /// Whether the field is a path inside a JSON field (else a typed field: `_ts`).
    pub fn is_json(&self) -> bool {
        !self.path.is_empty()
    }
}

/// Whether a field lives in the typed `_ts` column.
pub fn is_timestamp(path: &str, kind: FieldType) -> bool {
    path == TIMESTAMP_PATH && kind == FieldType::Date
}

impl Default for ShardLayout {
    fn default() -> Self {
        Self::new()
    }
}

impl ShardLayout {
    /// tantivy index settings of a shard: zstd (level 3) for the document store (mostly
    /// `_source`, the largest part of a log index), in 256 KiB blocks. Measured on 200k
    /// http_logs documents: 64 KiB → 256 KiB blocks shrink the store by 6%; 1 MiB only 4%
    /// more but makes every scattered hit decompress a whole MiB; level 9 saves 10% more at
    /// a quarter less indexing speed.
    pub fn index_settings() -> tantivy::IndexSettings {
        tantivy::IndexSettings {
            docstore_compression: tantivy::store::Compressor::Zstd(Default::default()),
            docstore_blocksize: 256 * 1024,
            ..Default::default()
        }
    }

    /// The layout of the current version ([`CURRENT_LAYOUT`]).
    pub fn new() -> Self {
        Self::build(CURRENT_LAYOUT)
    }

    /// The layout of an index, by the version it was created with (built once per version).
    pub fn of(settings: &crate::IndexSettings) -> &'static ShardLayout {
        static V1: std::sync::OnceLock<ShardLayout> = std::sync::OnceLock::new();
        static V2: std::sync::OnceLock<ShardLayout> = std::sync::OnceLock::new();
        static V3: std::sync::OnceLock<ShardLayout> = std::sync::OnceLock::new();
        match settings.layout_version {
            0 | 1 => V1.get_or_init(|| Self::build(1)),
            2 => V2.get_or_init(|| Self::build(2)),
            _ => V3.get_or_init(|| Self::build(3)),
        }
    }

    /// Where the values of `fm` go (any field but the typed `@timestamp`). Layouts before 3
    /// index every field and keep a column of every non-text one, whatever the mapping says.
    pub fn home(&self, fm: &FieldMapping) -> Home {
        let honoured = self.kn.is_some();
        match (fm.kind, honoured, fm.index, fm.doc_values) {
            (FieldType::Text, false, _, _) | (FieldType::Text, true, true, _) => Home::Text,
            (FieldType::Text, true, false, _) => Home::SourceOnly,
            (_, false, _, _) | (_, true, true, true) => Home::Keyword,
            (_, true, false, true) => Home::ColumnOnly,
            (_, true, true, false) => Home::IndexOnly,
            (_, true, false, false) => Home::SourceOnly,
        }
    }

    /// Where the `.keyword` sub-fields of text fields go: columns only from layout 2 on
    /// (`kc`), indexed and columnar (`k`) before.
    pub fn keyword_subfield_home(&self) -> Home {
        match self.kc {
            Some(_) => Home::ColumnOnly,
            None => Home::Keyword,
        }
    }

    /// The token column of a `fielddata: true` text field (`tf.<path>`), if it has one.
    pub fn fielddata_column(&self, mappings: &Mappings, name: &str) -> Option<String> {
        let fm = mappings.get(name)?;
        (fm.kind == FieldType::Text && fm.fielddata && self.tf.is_some())
            .then(|| format!("{FIELDDATA_FIELD}.{name}"))
    }

    fn build(layout_version: u32) -> Self {
        let mut b = Schema::builder();
        // Indexed (lookups, `ids`) and stored; no column: ids are unique, a column would be
        // as large as the ids themselves and nothing sorts or aggregates on them.
        let id = b.add_text_field(ID_FIELD, STRING | STORED);
        let source = b.add_bytes_field(SOURCE_FIELD, STORED);
        let version = b.add_u64_field(VERSION_FIELD, FAST);
        let seq_no = b.add_u64_field(SEQ_NO_FIELD, FAST);
        let text_opts = JsonObjectOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_expand_dots_enabled();
        let text = b.add_json_field(TEXT_FIELD, text_opts);
        let raw_indexed = || {
            JsonObjectOptions::default()
                .set_indexing_options(
                    TextFieldIndexing::default()
                        .set_tokenizer("raw")
                        .set_index_option(IndexRecordOption::Basic),
                )
                .set_expand_dots_enabled()
        };
        let kw = b.add_json_field(KEYWORD_FIELD, raw_indexed().set_fast("raw"));
        let ts = b.add_date_field(
            TIMESTAMP_FIELD,
            DateOptions::default()
                .set_fast()
                .set_precision(DateTimePrecision::Milliseconds),
        );
        // Added last: fields of layout 1 keep their ids.
        let kc = (layout_version >= 2).then(|| {
            b.add_json_field(
                KEYWORD_COLUMN_FIELD,
                JsonObjectOptions::default()
                    .set_fast("raw")
                    .set_expand_dots_enabled(),
            )
        });
        let (kn, tf, routing) = if layout_version >= 3 {
            (
                Some(b.add_json_field(KEYWORD_INDEX_FIELD, raw_indexed())),
                Some(
                    b.add_json_field(
                        FIELDDATA_FIELD,
                        JsonObjectOptions::default()
                            .set_fast("default")
                            .set_expand_dots_enabled(),
                    ),
                ),
                Some(b.add_text_field(ROUTING_FIELD, STORED)),
            )
        } else {
            (None, None, None)
        };
        let schema = b.build();
        ShardLayout {
            kn,
            tf,
            routing,
            kc,
            schema,
            id,
            source,
            version,
            seq_no,
            text,
            kw,
            ts,
        }
    }

    /// Resolves a field name from a query (`status`, `message`, `message.keyword`) against the
    /// index mapping. `None` for unmapped fields, which match nothing, as in OpenSearch.
    pub fn resolve(&self, mappings: &Mappings, name: &str) -> Option<ResolvedField> {
        if let Some(fm) = mappings.get(name) {
            if is_timestamp(name, fm.kind) {
                return Some(ResolvedField {
                    field: self.ts,
                    path: String::new(),
                    kind: FieldType::Date,
                    column_only: true,
                    index_only: false,
                    searchable: true,
                });
            }
            let home = self.home(fm);
            let field = match home {
                Home::Text => self.text,
                Home::ColumnOnly => self.kc.unwrap_or(self.kw),
                Home::IndexOnly => self.kn.unwrap_or(self.kw),
                Home::Keyword => self.kw,
                Home::SourceOnly if fm.kind == FieldType::Text => self.text,
                Home::SourceOnly => self.kw,
            };
            return Some(ResolvedField {
                field,
                path: name.to_string(),
                kind: fm.kind,
                column_only: home == Home::ColumnOnly,
                index_only: home == Home::IndexOnly,
                searchable: home != Home::SourceOnly,
            });
        }
        let parent = name.strip_suffix(".keyword")?;
        let fm = mappings.get(parent)?;
        let home = self.keyword_subfield_home();
        (fm.kind == FieldType::Text && fm.keyword_subfield.is_some()).then(|| ResolvedField {
            field: self.kc.unwrap_or(self.kw),
            path: name.to_string(),
            kind: FieldType::Keyword,
            column_only: home == Home::ColumnOnly,
            index_only: false,
            searchable: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_fields_and_keyword_subfields() {
        let layout = ShardLayout::new();
        let mut m = Mappings::default();
        m.fields
            .insert("message".into(), FieldMapping::dynamic_text());
        m.fields
            .insert("status".into(), FieldMapping::of(FieldType::Long));
        assert_eq!(layout.resolve(&m, "message").unwrap().field, layout.text);
        let kw = layout.resolve(&m, "message.keyword").unwrap();
        assert_eq!(
            (Some(kw.field), kw.kind, kw.column_only),
            (layout.kc, FieldType::Keyword, true)
        );
        assert_eq!(kw.column_name(), "kc.message.keyword");
        // Indexes created before layout 2 keep their `.keyword` values in `k`, indexed.
        let v1 = ShardLayout::of(&crate::IndexSettings {
            layout_version: 1,
            ..Default::default()
        });
        assert!(v1.kc.is_none());
        let old = v1.resolve(&m, "message.keyword").unwrap();
        assert_eq!((old.field, old.column_only), (v1.kw, false));
        let v2 = ShardLayout::of(&crate::IndexSettings {
            layout_version: 2,
            ..Default::default()
        });
        assert_eq!(v1.schema.num_fields() + 1, v2.schema.num_fields());
        assert_eq!(v2.schema.num_fields() + 3, layout.schema.num_fields());
        assert_eq!(
            layout.resolve(&m, "status").unwrap().column_name(),
            "k.status"
        );
        assert!(layout.resolve(&m, "missing").is_none());
    }

    #[test]
    fn index_and_doc_values_choose_the_home_from_layout_3() {
        let layout = ShardLayout::new();
        let v2 = ShardLayout::of(&crate::IndexSettings {
            layout_version: 2,
            ..Default::default()
        });
        let kw = |index, doc_values| FieldMapping {
            index,
            doc_values,
            ..FieldMapping::of(FieldType::Keyword)
        };
        let text_off = FieldMapping {
            index: false,
            ..FieldMapping::of(FieldType::Text)
        };
        assert_eq!(layout.home(&kw(true, true)), Home::Keyword);
        assert_eq!(layout.home(&kw(false, true)), Home::ColumnOnly);
        assert_eq!(layout.home(&kw(true, false)), Home::IndexOnly);
        assert_eq!(layout.home(&kw(false, false)), Home::SourceOnly);
        assert_eq!(layout.home(&text_off), Home::SourceOnly);
        // Older layouts keep indexing everything, as their segments were written.
        for fm in [kw(false, true), kw(true, false), kw(false, false)] {
            assert_eq!(v2.home(&fm), Home::Keyword);
        }
        assert_eq!(v2.home(&text_off), Home::Text);
        let mut m = Mappings::default();
        m.fields.insert("code".into(), kw(true, false));
        let r = layout.resolve(&m, "code").unwrap();
        assert_eq!(
            (Some(r.field), r.index_only, r.column_name()),
            (layout.kn, true, "kn.code".to_string())
        );
        m.fields.insert(
            "body".into(),
            FieldMapping {
                fielddata: true,
                ..FieldMapping::of(FieldType::Text)
            },
        );
        assert_eq!(
            layout.fielddata_column(&m, "body").as_deref(),
            Some("tf.body")
        );
        assert_eq!(v2.fielddata_column(&m, "body"), None);
    }
}
