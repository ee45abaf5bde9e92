//! Parsing of `_bulk` NDJSON bodies into operations, line by line.

use bytes::Bytes;
use serde_json::{Map, Value};

/// The kind of a bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Index,
    Create,
    Delete,
    /// A partial update (`doc`, `upsert`, `script`): resolved by the shard's owner into an
    /// index, create or delete with a [`Condition`] before it is logged.
    Update,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Index => "index",
            OpKind::Create => "create",
            OpKind::Delete => "delete",
            OpKind::Update => "update",
        }
    }
}

/// A write's precondition on the live version of its `_id` (optimistic concurrency). It is
/// logged with the operation, so a replay decides exactly as the first application did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// `if_seq_no` + `if_primary_term`: the live document's last write must be this one.
    SeqNo { seq_no: u64, primary_term: u64 },
    /// `version` + `version_type=external` (`gte: false`) or `external_gte`: the given
    /// version must be above (or at least) the live one, and becomes the document's.
    External { version: u64, gte: bool },
}

impl Condition {
    /// The condition of already validated parts (as logged, or as forwarded): `if_seq_no`
    /// with `if_primary_term`, else an external `version` (`gte`: `external_gte`).
    pub fn of_parts(
        if_seq_no: Option<u64>,
        if_primary_term: Option<u64>,
        version: Option<u64>,
        gte: bool,
    ) -> Option<Condition> {
        match (if_seq_no, if_primary_term, version) {
            (Some(seq_no), Some(primary_term), _) => Some(Condition::SeqNo {
                seq_no,
                primary_term,
            }),
            (_, _, Some(version)) => Some(Condition::External { version, gte }),
            _ => None,
        }
    }

    /// The condition of `if_seq_no`/`if_primary_term`/`version`/`version_type` (from query
    /// parameters or bulk metadata), validated as OpenSearch does.
    pub fn parse(
        kind: OpKind,
        if_seq_no: Option<&str>,
        if_primary_term: Option<&str>,
        version: Option<&str>,
        version_type: Option<&str>,
    ) -> Result<Option<Condition>, String> {
        let num = |name: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("[{name}] must be a non-negative number, found [{v}]"))
        };
        match (if_seq_no, if_primary_term) {
            (Some(s), Some(t)) => {
                if version.is_some() {
                    return Err("Validation Failed: 1: compare and write operations can not use versioning;".into());
                }
                return Ok(Some(Condition::SeqNo {
                    seq_no: num("if_seq_no", s)?,
                    primary_term: num("if_primary_term", t)?,
                }));
            }
            (Some(_), None) => {
                return Err("Validation Failed: 1: ifSeqNo is set, but primary term is [0];".into())
            }
            (None, Some(_)) => {
                return Err(
                    "Validation Failed: 1: ifSeqNo is unassigned, but primary term is set;".into(),
                )
            }
            (None, None) => {}
        }
        let gte = match version_type {
            None | Some("internal") => {
                if version.is_some() {
                    return Err("Validation Failed: 1: internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead;".into());
                }
                return Ok(None);
            }
            Some("external") => false,
            Some("external_gte") => true,
            Some(other) => return Err(format!("No version type match [{other}]")),
        };
        let Some(v) = version else {
            return Err("Validation Failed: 1: an external version is required;".into());
        };
        if kind == OpKind::Create || kind == OpKind::Update {
            return Err(format!(
                "Validation Failed: 1: {} requests do not support version type [{}];",
                kind.name(),
                version_type.unwrap_or_default()
            ));
        }
        Ok(Some(Condition::External {
            version: num("version", v)?,
            gte,
        }))
    }
}

/// Longest `_id` OpenSearch accepts, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Why an `_id` is refused (`None`: it is fine).
pub fn invalid_id(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("Validation Failed: 1: if _id is specified it must not be empty;".into())
    } else if id.len() > MAX_ID_BYTES {
        Some(format!(
            "Validation Failed: 1: id [{id}] is too long, must be no longer than 512 bytes but was: {};",
            id.len()
        ))
    } else {
        None
    }
}

/// One operation of a bulk request.
#[derive(Debug, Clone)]
pub struct BulkOp {
    pub kind: OpKind,
    pub index: Option<String>,
    pub id: Option<String>,
    /// The id was generated by Floe (not given by the client): it cannot exist yet, so the
    /// shard skips the lookup of an earlier version.
    pub generated_id: bool,
    pub routing: Option<String>,
    /// The document line, verbatim (absent for deletes); for updates, the update request.
    pub source: Option<Bytes>,
    /// Optimistic concurrency control, if asked for.
    pub cond: Option<Condition>,
    /// Updates: how many times to read again and retry when another write came between.
    pub retry_on_conflict: u32,
    /// Why the item is refused before it is applied (its metadata is invalid); it fails
    /// alone with a 400.
    pub invalid: Option<String>,
    /// Why the caller may not perform the item (set by the REST layer's authorization); it
    /// fails alone with a 403.
    pub denied: Option<String>,
}

/// A bulk body that cannot be parsed at all (OpenSearch answers 400 for the whole request).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BulkParseError {
    #[error("Malformed action/metadata line [{line}], {reason}")]
    MalformedAction { line: usize, reason: String },
    #[error("Validation Failed: 1: no requests added;")]
    Empty,
}

fn meta_str(
    meta: &Map<String, Value>,
    key: &str,
    line: usize,
) -> Result<Option<String>, BulkParseError> {
    match meta.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(BulkParseError::MalformedAction {
            line,
            reason: format!("[{key}] must be a string, found {other}"),
        }),
    }
}

/// Splits a bulk body into operations. Action lines must be valid; document lines are kept
/// as bytes and parsed per item later, so one bad document fails only its item.
pub fn parse_bulk(body: &Bytes) -> Result<Vec<BulkOp>, BulkParseError> {
    let mut ops = Vec::new();
    let mut lines = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let base = body.as_ptr() as usize;
    while let Some((line_no, line)) = lines.next() {
        let action: Value =
            serde_json::from_slice(line).map_err(|e| BulkParseError::MalformedAction {
                line: line_no,
                reason: format!("expected a JSON object: {e}"),
            })?;
        let Value::Object(action) = action else {
            return Err(BulkParseError::MalformedAction {
                line: line_no,
                reason: "expected START_OBJECT".into(),
            });
        };
        if action.len() != 1 {
            return Err(BulkParseError::MalformedAction {
                line: line_no,
                reason: "expected one action name".into(),
            });
        }
        let (name, meta) = action.into_iter().next().expect("one entry");
        let kind = match name.as_str() {
            "index" => OpKind::Index,
            "create" => OpKind::Create,
            "delete" => OpKind::Delete,
            "update" => OpKind::Update,
            other => {
                return Err(BulkParseError::MalformedAction {
                    line: line_no,
                    reason: format!(
                        "Action/metadata line [{line_no}] contains an unknown parameter [{other}]"
                    ),
                })
            }
        };
        let Value::Object(meta) = meta else {
            return Err(BulkParseError::MalformedAction {
                line: line_no,
                reason: "action metadata must be an object".into(),
            });
        };
        let index = meta_str(&meta, "_index", line_no)?;
        let id = meta_str(&meta, "_id", line_no)?;
        let routing =
            meta_str(&meta, "routing", line_no)?.or(meta_str(&meta, "_routing", line_no)?);
        let cond = Condition::parse(
            kind,
            meta_str(&meta, "if_seq_no", line_no)?.as_deref(),
            meta_str(&meta, "if_primary_term", line_no)?.as_deref(),
            meta_str(&meta, "version", line_no)?.as_deref(),
            meta_str(&meta, "version_type", line_no)?.as_deref(),
        );
        let retry_on_conflict = meta_str(&meta, "retry_on_conflict", line_no)?
            .map(|r| r.parse::<u32>())
            .transpose()
            .map_err(|_| BulkParseError::MalformedAction {
                line: line_no,
                reason: "[retry_on_conflict] must be a non-negative number".into(),
            })?
            .unwrap_or(0);
        let mut invalid = id.as_deref().and_then(invalid_id);
        if id.is_none() && kind == OpKind::Update {
            invalid = Some("Validation Failed: 1: id is missing;".into());
        }
        let (cond, invalid) = match cond {
            Ok(c) => (c, invalid),
            Err(e) => (None, invalid.or(Some(e))),
        };
        let source = if kind == OpKind::Delete {
            None
        } else {
            let Some((_, doc)) = lines.next() else {
                return Err(BulkParseError::MalformedAction {
                    line: line_no,
                    reason: "the action is not followed by a document line".into(),
                });
            };
            let start = doc.as_ptr() as usize - base;
            Some(body.slice(start..start + doc.len()))
        };
        ops.push(BulkOp {
            generated_id: false,
            kind,
            index,
            id,
            routing,
            source,
            cond,
            retry_on_conflict,
            invalid,
            denied: None,
        });
    }
    if ops.is_empty() {
        return Err(BulkParseError::Empty);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_and_documents() {
        let body = Bytes::from_static(
            b"{\"index\":{\"_index\":\"a\",\"_id\":\"1\"}}\n{\"x\":1}\n{\"delete\":{\"_id\":\"2\"}}\n\n{\"create\":{}}\n{\"y\":2}\n",
        );
        let ops = parse_bulk(&body).unwrap();
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].kind, OpKind::Index);
        assert_eq!(ops[0].index.as_deref(), Some("a"));
        assert_eq!(&ops[0].source.as_ref().unwrap()[..], b"{\"x\":1}");
        assert_eq!(ops[1].kind, OpKind::Delete);
        assert!(ops[1].source.is_none());
        assert_eq!(&ops[2].source.as_ref().unwrap()[..], b"{\"y\":2}");
    }

    #[test]
    fn malformed_action_names_the_line() {
        let body = Bytes::from_static(b"{\"index\":{}}\n{\"x\":1}\nnot json\n");
        match parse_bulk(&body) {
            Err(BulkParseError::MalformedAction { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_bulk(&Bytes::from_static(b"\n")).unwrap_err(),
            BulkParseError::Empty
        );
    }
}
