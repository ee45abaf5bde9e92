//! Parsing of `_bulk` NDJSON bodies into operations, line by line.

use bytes::Bytes;
use serde_json::{Map, Value};

/// The kind of a bulk action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Index,
    Create,
    Delete,
}

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Index => "index",
            OpKind::Create => "create",
            OpKind::Delete => "delete",
        }
    }
}

/// One operation of a bulk request.
#[derive(Debug)]
pub struct BulkOp {
    pub kind: OpKind,
    pub index: Option<String>,
    pub id: Option<String>,
    pub routing: Option<String>,
    /// The document line, verbatim (absent for deletes).
    pub source: Option<Bytes>,
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
            kind,
            index,
            id,
            routing,
            source,
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
