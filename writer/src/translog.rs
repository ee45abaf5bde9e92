//! One shard's view of the remote translog: every acknowledged operation is first written
//! to an object in the bucket. A shard's operations live in sections of writer-wide objects
//! ([`crate::grouplog`]) and, from earlier versions, in per-shard objects named by epoch and
//! sequence range (`<epoch>-<first>-<last>`); its prefix also holds takeover markers
//! (`<epoch>-<first>-fence`). Each piece is a [`Segment`] (epoch, first, last), so recovery
//! replays only what lies above the published checkpoint, and a batch a fenced writer wrote
//! after losing its lease is recognised and skipped ([`Translog::replayable`]).
//!
//! Format: one JSON line per operation, `{"seq":N,"op":"index","id":"..","source":{..}}`;
//! the source is embedded verbatim (it was valid JSON when accepted). A conditional write
//! also carries its [`Condition`] (`"if_seq_no"` + `"if_primary_term"`, or `"version"` +
//! `"version_type"`), so replay decides it exactly as it was decided first.

use bytes::Bytes;
use floe_storage::Storage;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::bulk::{Condition, OpKind};
use crate::WriterError;

/// An operation as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedOp {
    pub seq: u64,
    pub kind: OpKind,
    pub id: String,
    pub source: Option<Bytes>,
    pub cond: Option<Condition>,
    /// Custom routing (stored with the document, so replay stores it again).
    pub routing: Option<String>,
}

#[derive(Deserialize)]
struct Line<'a> {
    seq: u64,
    op: &'a str,
    id: String,
    #[serde(borrow)]
    source: Option<&'a RawValue>,
    if_seq_no: Option<u64>,
    if_primary_term: Option<u64>,
    version: Option<u64>,
    version_type: Option<&'a str>,
    #[serde(default)]
    routing: Option<String>,
}

/// A translog object: its key and the sequence numbers it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub key: String,
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
    /// A takeover marker (`<epoch>-<first>-fence`, no operations): a new owner's sequence
    /// numbers start at `first`, and older epochs' objects at or after it are not replayed.
    pub fence: bool,
    /// Set when the operations are one shard's section (`<uuid>/<shard>`) of a writer-wide
    /// object ([`crate::grouplog`]); such objects are deleted by the group log, not per shard.
    pub section: Option<String>,
}

/// One shard's translog in the bucket.
#[derive(Clone, Debug)]
pub struct Translog {
    storage: Storage,
    prefix: String,
    /// Lease epoch of the writer appending through this handle.
    epoch: u64,
}

pub fn encode(ops: &[LoggedOp]) -> Bytes {
    let mut out = Vec::with_capacity(
        ops.iter()
            .map(|o| o.source.as_ref().map_or(0, |s| s.len()) + 64)
            .sum(),
    );
    for op in ops {
        out.extend_from_slice(
            format!("{{\"seq\":{},\"op\":\"{}\",\"id\":", op.seq, op.kind.name()).as_bytes(),
        );
        out.extend_from_slice(
            serde_json::to_string(&op.id)
                .expect("string serializes")
                .as_bytes(),
        );
        match op.cond {
            Some(Condition::SeqNo {
                seq_no,
                primary_term,
            }) => out.extend_from_slice(
                format!(",\"if_seq_no\":{seq_no},\"if_primary_term\":{primary_term}").as_bytes(),
            ),
            Some(Condition::External { version, gte }) => out.extend_from_slice(
                format!(
                    ",\"version\":{version},\"version_type\":\"{}\"",
                    if gte { "external_gte" } else { "external" }
                )
                .as_bytes(),
            ),
            None => {}
        }
        if let Some(routing) = &op.routing {
            out.extend_from_slice(b",\"routing\":");
            out.extend_from_slice(
                serde_json::to_string(routing)
                    .expect("string serializes")
                    .as_bytes(),
            );
        }
        if let Some(src) = &op.source {
            out.extend_from_slice(b",\"source\":");
            out.extend_from_slice(src);
        }
        out.extend_from_slice(b"}\n");
    }
    Bytes::from(out)
}

pub fn decode(bytes: &[u8]) -> Result<Vec<LoggedOp>, WriterError> {
    let mut ops = Vec::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let l: Line = serde_json::from_slice(line)
            .map_err(|e| WriterError::Internal(format!("corrupt translog line: {e}")))?;
        let kind = match l.op {
            "index" => OpKind::Index,
            "create" => OpKind::Create,
            "delete" => OpKind::Delete,
            other => {
                return Err(WriterError::Internal(format!(
                    "unknown translog op {other}"
                )))
            }
        };
        let cond = Condition::of_parts(
            l.if_seq_no,
            l.if_primary_term,
            l.version,
            l.version_type == Some("external_gte"),
        );
        ops.push(LoggedOp {
            seq: l.seq,
            kind,
            id: l.id,
            source: l.source.map(|r| Bytes::copy_from_slice(r.get().as_bytes())),
            cond,
            routing: l.routing,
        });
    }
    Ok(ops)
}

impl Translog {
    pub fn new(storage: Storage, prefix: String, epoch: u64) -> Self {
        Translog {
            storage,
            prefix,
            epoch,
        }
    }

    /// Writes one batch as a per-shard object (sequence numbers ascending), as earlier
    /// versions did: the writer now logs through the writer-wide translog
    /// ([`crate::grouplog`]); per-shard objects stay readable, and tests build them here.
    #[cfg(test)]
    pub(crate) async fn append(&self, ops: &[LoggedOp]) -> Result<Segment, WriterError> {
        let (first, last) = match (ops.first(), ops.last()) {
            (Some(f), Some(l)) => (f.seq, l.seq),
            _ => return Err(WriterError::Internal("empty translog batch".into())),
        };
        let epoch = self.epoch;
        let key = format!("{}/{epoch:010}-{first:020}-{last:020}", self.prefix);
        self.put_once(&key, encode(ops)).await?;
        Ok(Segment {
            key,
            epoch,
            first,
            last,
            fence: false,
            section: None,
        })
    }

    /// Create-only: an object is never overwritten, even by a confused second writer. Keys
    /// are unique to this epoch, which only this owner writes: "already exists" means an
    /// earlier attempt of this same write landed (a retry after a lost answer).
    async fn put_once(&self, key: &str, bytes: Bytes) -> Result<(), WriterError> {
        match self.storage.put_if_absent(key, bytes).await {
            Ok(_) | Err(floe_storage::StorageError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the takeover marker of this epoch at `first` (see [`Segment::fence`]): after
    /// it, a batch the previous owner writes late can never be replayed, so whether such a
    /// batch counts is decided once, the same way for everyone.
    pub async fn fence(&self, first: u64) -> Result<Segment, WriterError> {
        let epoch = self.epoch;
        let key = format!("{}/{epoch:010}-{first:020}-fence", self.prefix);
        self.put_once(&key, Bytes::new()).await?;
        Ok(Segment {
            key,
            epoch,
            first,
            last: first,
            fence: true,
            section: None,
        })
    }

    /// Every translog object of the shard, ordered by first sequence number.
    pub async fn list(&self) -> Result<Vec<Segment>, WriterError> {
        let mut out = Vec::new();
        for (key, _) in self.storage.list(&self.prefix).await? {
            let name = key.rsplit('/').next().unwrap_or_default();
            let parts: Vec<&str> = name.split('-').collect();
            if let [e, a, b] = parts[..] {
                let fence = b == "fence";
                let last = if fence { a.parse() } else { b.parse() };
                if let (Ok(epoch), Ok(first), Ok(last)) = (e.parse(), a.parse(), last) {
                    out.push(Segment {
                        key,
                        epoch,
                        first,
                        last,
                        fence,
                        section: None,
                    });
                }
            }
        }
        out.sort_by_key(|s| (s.first, s.epoch));
        Ok(out)
    }

    /// The objects to replay, in order (takeover markers included; they hold no
    /// operations). A writer that took over a shard (higher epoch) started its sequence
    /// numbers after everything it found, and marked that point; an object of an older epoch
    /// starting at or after such a takeover point was written by a fenced writer after it
    /// lost the lease — never acknowledged — and is skipped.
    pub fn replayable(segments: Vec<Segment>) -> Vec<Segment> {
        let superseded = |s: &Segment| {
            segments
                .iter()
                .any(|o| o.epoch > s.epoch && o.first <= s.first)
        };
        let keep: Vec<bool> = segments.iter().map(|s| !superseded(s)).collect();
        segments
            .into_iter()
            .zip(keep)
            .filter_map(|(s, k)| k.then_some(s))
            .collect()
    }

    pub async fn read(&self, segment: &Segment) -> Result<Vec<LoggedOp>, WriterError> {
        if segment.fence {
            return Ok(Vec::new());
        }
        let bytes = self.storage.get(&segment.key).await?;
        match &segment.section {
            None => decode(&bytes),
            Some(section) => Ok(crate::grouplog::decode(&bytes)?
                .into_iter()
                .find(|(h, _)| h.section == *section && h.epoch == segment.epoch)
                .map(|(_, ops)| ops)
                .unwrap_or_default()),
        }
    }

    /// Deletes a per-shard object (sections of writer-wide objects are left to the group log).
    pub async fn delete(&self, segment: &Segment) -> Result<(), WriterError> {
        if segment.section.is_some() {
            return Ok(());
        }
        Ok(self.storage.delete(&segment.key).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_source_bytes() {
        let ops = vec![
            LoggedOp {
                seq: 7,
                kind: OpKind::Index,
                id: "a\"b".into(),
                source: Some(Bytes::from_static(b"{\"z\":1,\"a\":[1, 2]}")),
                cond: Some(Condition::SeqNo {
                    seq_no: 3,
                    primary_term: 2,
                }),
                routing: Some("user\"1".into()),
            },
            LoggedOp {
                seq: 8,
                kind: OpKind::Delete,
                id: "x".into(),
                source: None,
                cond: Some(Condition::External {
                    version: 9,
                    gte: true,
                }),
                routing: None,
            },
        ];
        assert_eq!(decode(&encode(&ops)).unwrap(), ops);
    }

    #[tokio::test]
    async fn append_list_read() {
        let dir = tempfile::tempdir().unwrap();
        let t = Translog::new(
            Storage::local(dir.path()).unwrap(),
            "i/0/translog".into(),
            3,
        );
        let op = |seq| LoggedOp {
            seq,
            kind: OpKind::Delete,
            id: seq.to_string(),
            source: None,
            cond: None,
            routing: None,
        };
        t.append(&[op(5), op(6)]).await.unwrap();
        t.append(&[op(0), op(1)]).await.unwrap();
        let segs = t.list().await.unwrap();
        assert_eq!(
            segs.iter().map(|s| (s.first, s.last)).collect::<Vec<_>>(),
            vec![(0, 1), (5, 6)]
        );
        assert_eq!(t.read(&segs[1]).await.unwrap()[1].seq, 6);
        // A retried append of the same batch (same key) is the same write: success, and
        // the object is not replaced.
        t.append(&[op(5), op(6)]).await.unwrap();
        assert_eq!(segs[0].epoch, 3);
        // A takeover at epoch 4 from seq 7: epoch 3's later batch is not replayed.
        let next = Translog::new(
            Storage::local(dir.path()).unwrap(),
            "i/0/translog".into(),
            4,
        );
        next.fence(7).await.unwrap();
        t.append(&[op(7), op(8)]).await.unwrap();
        let kept: Vec<(u64, u64, bool)> = Translog::replayable(t.list().await.unwrap())
            .iter()
            .map(|s| (s.epoch, s.first, s.fence))
            .collect();
        assert_eq!(kept, vec![(3, 0, false), (3, 5, false), (4, 7, true)]);
    }

    #[test]
    fn fenced_writers_late_batches_are_skipped() {
        let seg = |epoch, first, last| Segment {
            key: format!("{epoch}-{first}-{last}"),
            epoch,
            first,
            last,
            fence: false,
            section: None,
        };
        // Epoch 1 wrote 0-9 and 10-19; epoch 2 took over at 20; epoch 1 then wrote 20-29 late.
        let all = vec![
            seg(1, 0, 9),
            seg(1, 10, 19),
            seg(2, 20, 25),
            seg(1, 20, 29),
            seg(2, 26, 30),
        ];
        let kept: Vec<String> = Translog::replayable(all)
            .into_iter()
            .map(|s| s.key)
            .collect();
        assert_eq!(kept, vec!["1-0-9", "1-10-19", "2-20-25", "2-26-30"]);
    }
}
