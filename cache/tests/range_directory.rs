//! A segment read by range from the bucket (with or without its hot cache) answers exactly
//! as the same segment read whole from local disk, and its hot cache makes opening it free
//! of reads.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use bytes::Bytes;
use floe_cache::{hot, CacheConfig, HotCache, RangeDirectory, RemoteFile, SegmentCache};
use floe_storage::Storage;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{IndexRecordOption, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT};
use tantivy::{doc, DocAddress, Index, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

/// Three commits (three segments), with deletes in the first.
fn build_index(dir: &Path) -> (Index, Schema) {
    let mut schema = Schema::builder();
    let id = schema.add_text_field("id", STRING | STORED);
    let body = schema.add_text_field("body", TEXT | STORED);
    let n = schema.add_u64_field("n", INDEXED | FAST | STORED);
    let schema = schema.build();
    let index = Index::create_in_dir(dir, schema.clone()).unwrap();
    let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
    writer.set_merge_policy(Box::new(tantivy::indexer::NoMergePolicy));
    let words = ["alpha", "beta", "gamma", "delta", "omega"];
    for round in 0..3u64 {
        for i in 0..4_000u64 {
            let k = round * 4_000 + i;
            writer
                .add_document(doc!(
                    id => format!("doc-{k}"),
                    body => format!("{} {} number {k}", words[(k % 5) as usize], words[(k % 3) as usize]),
                    n => k,
                ))
                .unwrap();
        }
        if round == 1 {
            writer.delete_term(Term::from_field_text(id, "doc-17"));
            writer.delete_term(Term::from_field_text(id, "doc-4001"));
        }
        writer.commit().unwrap();
    }
    (index, schema)
}

/// Top hits and count of a few queries, with stored documents.
fn answers(
    searcher: &Searcher,
    index: &Index,
    schema: &Schema,
) -> Vec<(usize, Vec<(String, String)>)> {
    let body = schema.get_field("body").unwrap();
    let id = schema.get_field("id").unwrap();
    let n = schema.get_field("n").unwrap();
    let parser = QueryParser::for_index(index, vec![body]);
    let queries: Vec<Box<dyn tantivy::query::Query>> = vec![
        parser.parse_query("gamma").unwrap(),
        parser.parse_query("\"alpha beta\"").unwrap(),
        Box::new(TermQuery::new(
            Term::from_field_text(id, "doc-9999"),
            IndexRecordOption::Basic,
        )),
        Box::new(RangeQuery::new(
            std::ops::Bound::Included(Term::from_field_u64(n, 100)),
            std::ops::Bound::Excluded(Term::from_field_u64(n, 130)),
        )),
    ];
    queries
        .iter()
        .map(|q| {
            let (top, count) = searcher
                .search(
                    q.as_ref(),
                    &(TopDocs::with_limit(20).order_by_score(), Count),
                )
                .unwrap();
            let docs = top
                .into_iter()
                .map(|(score, addr): (f32, DocAddress)| {
                    let d: TantivyDocument = searcher.doc(addr).unwrap();
                    let idv = d
                        .get_first(id)
                        .and_then(|v| v.as_str())
                        .unwrap()
                        .to_string();
                    (format!("{score:.5}"), idv)
                })
                .collect();
            (count, docs)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_read_by_range_equals_it_read_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("index");
    std::fs::create_dir_all(&local).unwrap();
    let (index, schema) = build_index(&local);
    let whole = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .unwrap();
    let whole: tantivy::IndexReader = whole;
    let expected = answers(&whole.searcher(), &index, &schema);
    assert_eq!(expected[2].0, 1, "doc-9999 is found");

    // Upload every file, and each segment's hot cache.
    let storage = Storage::local(tmp.path().join("bucket")).unwrap();
    let meta_json = std::fs::read_to_string(local.join("meta.json")).unwrap();
    let metas = index.load_metas().unwrap();
    let segments: HashSet<String> = metas
        .segments
        .iter()
        .map(|s| s.id().uuid_string())
        .collect();
    assert_eq!(segments.len(), 3);
    let raw = tantivy::directory::MmapDirectory::open(&local).unwrap();
    let hot_caches = hot::build(Box::new(raw), &meta_json, &segments).unwrap();
    assert_eq!(hot_caches.len(), 3);
    let mut files: Vec<(String, u64)> = Vec::new();
    for entry in std::fs::read_dir(&local).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") || name.ends_with(".lock") {
            continue;
        }
        let bytes = std::fs::read(entry.path()).unwrap();
        files.push((name.clone(), bytes.len() as u64));
        storage
            .put(&format!("s/{name}"), Bytes::from(bytes))
            .await
            .unwrap();
    }
    let mut hots: HashMap<String, HotCache> = HashMap::new();
    for (uuid, bytes) in hot_caches {
        hots.insert(uuid, HotCache::parse(bytes).unwrap());
    }

    for with_hot in [true, false] {
        let cache = SegmentCache::open(
            storage.clone(),
            &CacheConfig {
                memory_bytes: 8 << 20,
                disk_bytes: 0,
                dir: tmp.path().join(format!("cache-{with_hot}")),
            },
        )
        .await
        .unwrap();
        let remote: HashMap<String, RemoteFile> = files
            .iter()
            .map(|(name, len)| {
                let segment = name.split('.').next().unwrap();
                let hot = with_hot
                    .then(|| hots.get(segment).and_then(|h| h.file(name)))
                    .flatten();
                let file = RemoteFile {
                    key: format!("s/{name}"),
                    len: *len,
                    hot,
                };
                (name.clone(), file)
            })
            .collect();
        let dir = RangeDirectory::remote(remote, meta_json.clone(), cache.blocks().clone());
        let deletes: Vec<&(String, u64)> =
            files.iter().filter(|(n, _)| n.ends_with(".del")).collect();
        let (schema, blocks) = (schema.clone(), cache.blocks().clone());
        let got = tokio::task::spawn_blocking(move || {
            let index = Index::open(dir).unwrap();
            let reader: tantivy::IndexReader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .unwrap();
            let opened_with = blocks.stats().block_fetches;
            (answers(&reader.searcher(), &index, &schema), opened_with)
        })
        .await
        .unwrap();
        assert_eq!(
            got.0, expected,
            "answers through ranges (hot cache: {with_hot})"
        );
        if with_hot {
            // Opening read nothing but the delete bitsets (never in a hot cache).
            assert!(
                got.1 <= deletes.len() as u64,
                "opening fetched {} blocks",
                got.1
            );
        } else {
            assert!(
                got.1 > 3,
                "opening without hot caches fetched only {} blocks",
                got.1
            );
        }
    }
}
