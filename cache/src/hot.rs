//! A segment's hot cache: the exact byte ranges that opening the segment reads (file
//! footers, composite-file offset tables, term-dictionary indexes, the doc store's skip
//! index, the fast-field columns' directory), written by the writer next to the segment as one small object (`<segment>.hot`).
//! A cold searcher fetches it in one GET and opens the segment without any other read,
//! instead of a chain of small reads per file.
//!
//! Delete bitsets (`.del`) change with every commit and are never part of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tantivy::directory::error::OpenReadError;
use tantivy::directory::{FileHandle, OwnedBytes};
use tantivy::{Directory, HasLen, Index, SegmentReader};

use crate::directory::{CommitView, FileSource};
use crate::CacheError;

/// Extension of hot-cache files (`<segment uuid>.hot`).
const HOT_EXTENSION: &str = "hot";

/// The file name of a segment's hot cache: `<segment uuid>.hot`.
pub fn hot_cache_name(segment_uuid: &str) -> String {
    format!("{segment_uuid}.{HOT_EXTENSION}")
}

/// The segment uuid if `file` is a hot cache's name.
pub fn hot_cache_segment(file: &str) -> Option<&str> {
    file.strip_suffix(HOT_EXTENSION)?.strip_suffix('.')
}

const MAGIC: &[u8; 8] = b"FLOEHOT1";

/// Ranges read less than this far apart are stored as one.
const MERGE_GAP: u64 = 256;

/// Known byte ranges of one file, sorted by start and disjoint.
#[derive(Debug, Default)]
pub struct HotRanges {
    ranges: Vec<(u64, Bytes)>,
}

impl HotRanges {
    /// The bytes of `range` if one known range holds all of it.
    pub fn get(&self, range: Range<u64>) -> Option<Bytes> {
        let i = self
            .ranges
            .partition_point(|(start, _)| *start <= range.start);
        let (start, bytes) = self.ranges.get(i.checked_sub(1)?)?;
        let end = start + bytes.len() as u64;
        (range.end <= end)
            .then(|| bytes.slice((range.start - start) as usize..(range.end - start) as usize))
    }
}

/// The hot cache of one segment: known ranges per file name.
#[derive(Debug, Default)]
pub struct HotCache {
    files: HashMap<String, Arc<HotRanges>>,
    bytes: usize,
}

impl HotCache {
    /// The known ranges of file `name` (`<segment uuid>.<ext>`).
    pub fn file(&self, name: &str) -> Option<Arc<HotRanges>> {
        self.files.get(name).cloned()
    }

    /// Bytes held.
    pub fn size(&self) -> usize {
        self.bytes
    }

    /// Reads a hot cache written by [`build`].
    pub fn parse(mut data: Bytes) -> Result<HotCache, CacheError> {
        let bad = |what: &str| CacheError::Corrupt(format!("hot cache: {what}"));
        if data.len() < 12 || &data[..8] != MAGIC {
            return Err(bad("not a hot cache"));
        }
        data.advance(8);
        let mut entries: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
        let files = data.get_u32_le();
        for _ in 0..files {
            if data.remaining() < 2 {
                return Err(bad("truncated header"));
            }
            let name_len = data.get_u16_le() as usize;
            if data.remaining() < name_len + 4 {
                return Err(bad("truncated header"));
            }
            let name = String::from_utf8(data.split_to(name_len).to_vec())
                .map_err(|_| bad("file name"))?;
            let n = data.get_u32_le() as usize;
            if data.remaining() < n * 12 {
                return Err(bad("truncated header"));
            }
            let ranges = (0..n)
                .map(|_| (data.get_u64_le(), data.get_u32_le() as u64))
                .collect();
            entries.push((name, ranges));
        }
        let mut out = HotCache::default();
        for (name, ranges) in entries {
            let mut hot = HotRanges::default();
            for (start, len) in ranges {
                if data.remaining() < len as usize {
                    return Err(bad("truncated data"));
                }
                out.bytes += len as usize;
                hot.ranges.push((start, data.split_to(len as usize)));
            }
            out.files.insert(name, Arc::new(hot));
        }
        Ok(out)
    }
}

/// Builds the hot caches of `segments` (segment uuids as in file names) of the index in
/// `dir` as of `meta_json`, by opening each segment and recording what it reads.
pub fn build(
    dir: Box<dyn Directory>,
    meta_json: &str,
    segments: &HashSet<String>,
) -> tantivy::Result<Vec<(String, Bytes)>> {
    let reads = Reads::default();
    let recording = Recording {
        inner: dir.box_clone(),
        reads: reads.clone(),
    };
    let index = Index::open(CommitView::new(recording, meta_json.to_string()))?;
    let schema = index.schema();
    let mut out = Vec::new();
    for segment in index.searchable_segments()? {
        let uuid = segment.id().uuid_string();
        if !segments.contains(&uuid) {
            continue;
        }
        reads.lock().expect("reads lock").clear();
        let reader = SegmentReader::open(&segment)?;
        for (field, entry) in schema.fields() {
            if entry.is_indexed() {
                reader.inverted_index(field)?;
            }
            // The columnar's directory entries of this field (not the column data).
            if entry.is_fast() {
                let fast = reader.fast_fields();
                match entry.field_type() {
                    tantivy::schema::FieldType::JsonObject(_) => {
                        fast.dynamic_subpath_column_handles(entry.name())?;
                    }
                    _ => {
                        fast.dynamic_column_handles(entry.name())?;
                    }
                }
            }
        }
        reader.get_store_reader(0)?;
        let read = std::mem::take(&mut *reads.lock().expect("reads lock"));
        out.push((uuid, encode(dir.as_ref(), read)?));
    }
    Ok(out)
}

/// The recorded ranges, merged per file, with their bytes.
fn encode(dir: &dyn Directory, reads: Vec<(PathBuf, Range<u64>)>) -> tantivy::Result<Bytes> {
    let mut by_file: BTreeMap<PathBuf, Vec<Range<u64>>> = BTreeMap::new();
    for (path, range) in reads {
        let is_delete = path.extension().is_some_and(|e| e == "del");
        if !is_delete && range.start < range.end {
            by_file.entry(path).or_default().push(range);
        }
    }
    let mut header = BytesMut::new();
    let mut data = BytesMut::new();
    header.put_slice(MAGIC);
    header.put_u32_le(by_file.len() as u32);
    for (path, mut ranges) in by_file {
        ranges.sort_by_key(|r| r.start);
        let mut merged: Vec<Range<u64>> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end + MERGE_GAP => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        let name = path.to_string_lossy();
        header.put_u16_le(name.len() as u16);
        header.put_slice(name.as_bytes());
        header.put_u32_le(merged.len() as u32);
        let handle = dir.get_file_handle(&path)?;
        for r in merged {
            let end = r.end.min(handle.len() as u64);
            header.put_u64_le(r.start);
            header.put_u32_le((end - r.start) as u32);
            data.put_slice(&handle.read_bytes(r.start as usize..end as usize)?);
        }
    }
    header.put_slice(&data);
    Ok(header.freeze())
}

type Reads = Arc<Mutex<Vec<(PathBuf, Range<u64>)>>>;

/// The files of a directory, every range read from them recorded.
#[derive(Debug)]
struct Recording {
    inner: Box<dyn Directory>,
    reads: Reads,
}

impl FileSource for Recording {
    fn handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        Ok(Arc::new(RecordingHandle {
            path: path.to_path_buf(),
            inner: self.inner.get_file_handle(path)?,
            reads: self.reads.clone(),
        }))
    }

    fn contains(&self, path: &Path) -> bool {
        self.inner.exists(path).unwrap_or(false)
    }
}

#[derive(Debug)]
struct RecordingHandle {
    path: PathBuf,
    inner: Arc<dyn FileHandle>,
    reads: Reads,
}

impl HasLen for RecordingHandle {
    fn len(&self) -> usize {
        self.inner.len()
    }
}

#[async_trait::async_trait]
impl FileHandle for RecordingHandle {
    fn read_bytes(&self, range: Range<usize>) -> std::io::Result<OwnedBytes> {
        self.reads
            .lock()
            .expect("reads lock")
            .push((self.path.clone(), range.start as u64..range.end as u64));
        self.inner.read_bytes(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_answer_only_what_they_hold() {
        let hot = HotRanges {
            ranges: vec![
                (10, Bytes::from_static(b"abcdef")),
                (100, Bytes::from_static(b"xyz")),
            ],
        };
        assert_eq!(hot.get(10..12).unwrap().as_ref(), b"ab");
        assert_eq!(hot.get(12..16).unwrap().as_ref(), b"cdef");
        assert_eq!(hot.get(101..103).unwrap().as_ref(), b"yz");
        assert!(hot.get(9..12).is_none());
        assert!(hot.get(14..17).is_none());
        assert!(hot.get(50..51).is_none());
        assert!(hot.get(0..1).is_none());
    }

    #[test]
    fn hot_cache_names_round_trip() {
        assert_eq!(hot_cache_name("abc"), "abc.hot");
        assert_eq!(hot_cache_segment(&hot_cache_name("abc")), Some("abc"));
        assert_eq!(hot_cache_segment("abc.idx"), None);
        assert_eq!(hot_cache_segment("abchot"), None);
    }

    #[test]
    fn corrupt_hot_caches_are_refused() {
        assert!(HotCache::parse(Bytes::from_static(b"nope")).is_err());
        let mut truncated = BytesMut::new();
        truncated.put_slice(MAGIC);
        truncated.put_u32_le(3);
        assert!(HotCache::parse(truncated.freeze()).is_err());
    }
}
