//! The `_bulk` response, serialized straight from the outcomes: a 5,000-item response is
//! about a megabyte, and building it as a `serde_json::Value` first cost more CPU than
//! parsing the request.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::bulk::OpKind;
use crate::shard::OpResult;

/// One item of a `_bulk` response.
pub struct ItemOutcome {
    pub kind: OpKind,
    pub index: String,
    pub id: String,
    /// The epoch of the shard's lease when the operation was applied.
    pub primary_term: u64,
    pub result: OpResult,
    /// Updates that asked for it (`_source`): the document as written.
    pub get: Option<bytes::Bytes>,
}

/// The body of an item (what a single-document write returns, plus `status`).
#[derive(Serialize)]
pub struct ItemBody<'a> {
    _index: &'a str,
    _id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    _version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    _shards: Option<Shards>,
    #[serde(skip_serializing_if = "Option::is_none")]
    _seq_no: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    _primary_term: Option<u64>,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    get: Option<GetBody<'a>>,
}

/// `get` of an update's answer: the document as written.
#[derive(Serialize)]
struct GetBody<'a> {
    _seq_no: u64,
    _primary_term: u64,
    found: bool,
    _source: &'a serde_json::value::RawValue,
}

#[derive(Serialize)]
struct Shards {
    total: u32,
    successful: u32,
    failed: u32,
}

#[derive(Serialize)]
struct ItemErrorBody<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    reason: &'a str,
    index: &'a str,
}

impl ItemOutcome {
    pub fn failed(
        kind: OpKind,
        index: &str,
        id: &str,
        status: u16,
        typ: &'static str,
        reason: String,
    ) -> Self {
        ItemOutcome {
            kind,
            index: index.to_string(),
            id: id.to_string(),
            primary_term: 0,
            result: Err((status, typ, reason)),
            get: None,
        }
    }

    pub fn body(&self) -> ItemBody<'_> {
        let base = ItemBody {
            _index: &self.index,
            _id: &self.id,
            _version: None,
            result: None,
            _shards: None,
            _seq_no: None,
            _primary_term: None,
            status: 0,
            error: None,
            get: None,
        };
        match &self.result {
            Ok((result, version, seq_no, status)) => ItemBody {
                _version: Some(*version),
                result: Some(result),
                // A noop wrote nothing, so no shard copy took part.
                _shards: Some(if *result == "noop" {
                    Shards {
                        total: 0,
                        successful: 0,
                        failed: 0,
                    }
                } else {
                    Shards {
                        total: 1,
                        successful: 1,
                        failed: 0,
                    }
                }),
                get: self.get.as_ref().and_then(|src| {
                    let raw: &serde_json::value::RawValue = serde_json::from_slice(src).ok()?;
                    Some(GetBody {
                        _seq_no: *seq_no,
                        _primary_term: self.primary_term,
                        found: true,
                        _source: raw,
                    })
                }),
                _seq_no: Some(*seq_no),
                _primary_term: Some(self.primary_term),
                status: *status,
                ..base
            },
            Err((status, typ, reason)) => ItemBody {
                status: *status,
                error: Some(ItemErrorBody {
                    kind: typ,
                    reason,
                    index: &self.index,
                }),
                ..base
            },
        }
    }
}

impl Serialize for ItemOutcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.kind.name(), &self.body())?;
        map.end()
    }
}

/// `{"took": .., "errors": .., "items": [..]}`.
#[derive(Serialize)]
pub struct BulkResponse {
    pub took: u64,
    pub errors: bool,
    pub items: Vec<ItemOutcome>,
}

impl BulkResponse {
    /// As a JSON value (tests and tools; the HTTP path serializes directly).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("serializable")
    }
}
