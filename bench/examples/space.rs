//! Prints the space a tantivy index uses, per component and per field.
fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).expect("index dir");
    let index = tantivy::Index::open_in_dir(&dir)?;
    let reader = index.reader()?;
    let searcher = reader.searcher();
    let usage = searcher.space_usage()?;
    println!("total {} docs {}", usage.total(), searcher.num_docs());
    let mut comps: std::collections::BTreeMap<String, u64> = Default::default();
    let mut fields: std::collections::BTreeMap<String, u64> = Default::default();
    for seg in usage.segments() {
        let parts = [
            ("termdict", seg.termdict()),
            ("postings", seg.postings()),
            ("positions", seg.positions()),
            ("fast", seg.fast_fields()),
            ("fieldnorm", seg.fieldnorms()),
        ];
        for (name, p) in parts {
            *comps.entry(name.into()).or_default() += p.total().get_bytes();
            for f in p.fields() {
                *fields
                    .entry(format!("{name}:{}", f.field_name()))
                    .or_default() += f.total().get_bytes();
            }
        }
        *comps.entry("store".into()).or_default() += seg.store().total().get_bytes();
        *comps.entry("deletes".into()).or_default() += seg.deletes().get_bytes();
    }
    for (k, v) in comps {
        println!("{k:12} {v:>12}");
    }
    for (k, v) in fields {
        println!("  {k:24} {v:>12}");
    }
    if let Some(out) = std::env::args().nth(2) {
        dump(&searcher, &out)?;
    }
    Ok(())
}

/// Writes every stored `_source` (and `_id`) in doc order, for compression experiments.
#[allow(dead_code)]
fn dump(searcher: &tantivy::Searcher, out: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use tantivy::schema::Value;
    let schema = searcher.schema();
    let source = schema.get_field("_source")?;
    let id = schema.get_field("_id")?;
    let mut s = std::io::BufWriter::new(std::fs::File::create(format!("{out}.source"))?);
    let mut i = std::io::BufWriter::new(std::fs::File::create(format!("{out}.ids"))?);
    for (ord, seg) in searcher.segment_readers().iter().enumerate() {
        for doc in 0..seg.max_doc() {
            let d: tantivy::TantivyDocument =
                searcher.doc(tantivy::DocAddress::new(ord as u32, doc))?;
            if let Some(b) = d.get_first(source).and_then(|v| v.as_bytes()) {
                s.write_all(b)?;
                s.write_all(b"\n")?;
            }
            if let Some(t) = d.get_first(id).and_then(|v| v.as_str()) {
                i.write_all(t.as_bytes())?;
                i.write_all(b"\n")?;
            }
        }
    }
    Ok(())
}
