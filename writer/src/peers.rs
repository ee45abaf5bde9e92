//! What a writer needs from the rest of a cluster: which writer owns a shard, and a way to
//! hand items to it. `floe standalone` has no peers (every shard is local).
//!
//! Forwarded items travel as [`rpc::ForwardOp`] with their id already chosen (a generated
//! id is chosen once, by the first writer), and come back as [`rpc::ItemResult`], so the
//! client's per-item answer is the one the owner gave.

use async_trait::async_trait;
use bytes::Bytes;
use floe_proto::rpc;

use crate::bulk::{BulkOp, Condition, OpKind};
use crate::response::ItemOutcome;

/// How many writers an item may pass through: the receiving one, and the owner in its
/// view; an owner whose view differs handles it rather than passing it on again.
pub const MAX_HOPS: u32 = 1;

#[async_trait]
pub trait Peers: Send + Sync {
    /// The node id of the writer that owns `shard` of index `uuid`, or `None` when it is
    /// this writer.
    fn remote_owner(&self, uuid: &str, shard: u32) -> Option<String>;

    /// Sends items to writer `node`; the results come back in order.
    async fn forward(
        &self,
        node: &str,
        ops: Vec<rpc::ForwardOp>,
        refresh: bool,
    ) -> Result<Vec<rpc::ItemResult>, String>;

    /// Publishes these indexes on every other writer (their shards of it).
    async fn refresh_others(&self, indexes: &[String]) -> Result<(), String>;

    /// Tells every searcher that these shards have new commits, and waits until they loaded
    /// them (bounded), so a refresh that returns is visible on every searcher.
    async fn commits_published(&self, shards: &[(String, u32)]);
}

impl BulkOp {
    pub fn to_rpc(&self, index: &str) -> rpc::ForwardOp {
        let mut op = rpc::ForwardOp {
            kind: self.kind.name().to_string(),
            index: index.to_string(),
            id: self.id.clone().unwrap_or_default(),
            generated_id: self.generated_id,
            routing: self.routing.clone(),
            source: self.source.as_ref().map(|b| b.to_vec()),
            retry_on_conflict: self.retry_on_conflict,
            ..Default::default()
        };
        match self.cond {
            Some(Condition::SeqNo {
                seq_no,
                primary_term,
            }) => {
                op.if_seq_no = Some(seq_no);
                op.if_primary_term = Some(primary_term);
            }
            Some(Condition::External { version, gte }) => {
                op.version = Some(version);
                op.version_gte = gte;
            }
            None => {}
        }
        op
    }

    pub fn from_rpc(op: rpc::ForwardOp) -> Result<BulkOp, String> {
        let kind = match op.kind.as_str() {
            "index" => OpKind::Index,
            "create" => OpKind::Create,
            "delete" => OpKind::Delete,
            "update" => OpKind::Update,
            other => return Err(format!("unknown bulk action [{other}]")),
        };
        let cond =
            Condition::of_parts(op.if_seq_no, op.if_primary_term, op.version, op.version_gte);
        Ok(BulkOp {
            kind,
            index: Some(op.index),
            id: Some(op.id),
            generated_id: op.generated_id,
            routing: op.routing,
            source: op.source.map(Bytes::from),
            cond,
            retry_on_conflict: op.retry_on_conflict,
            invalid: None,
            denied: None,
        })
    }
}

impl ItemOutcome {
    pub fn to_rpc(&self) -> rpc::ItemResult {
        let mut r = rpc::ItemResult {
            kind: self.kind.name().to_string(),
            index: self.index.clone(),
            id: self.id.clone(),
            primary_term: self.primary_term,
            get_source: self.get.as_ref().map(|b| b.to_vec()),
            ..Default::default()
        };
        match &self.result {
            Ok((result, version, seq_no, status)) => {
                r.status = *status as u32;
                r.result = result.to_string();
                r.version = *version;
                r.seq_no = *seq_no;
            }
            Err((status, typ, reason)) => {
                r.status = *status as u32;
                r.error_type = typ.to_string();
                r.reason = reason.clone();
            }
        }
        r
    }

    pub fn from_rpc(kind: OpKind, r: rpc::ItemResult) -> ItemOutcome {
        let result = if r.error_type.is_empty() {
            Ok((known(&r.result), r.version, r.seq_no, r.status as u16))
        } else {
            Err((r.status as u16, known(&r.error_type), r.reason))
        };
        ItemOutcome {
            kind,
            index: r.index,
            id: r.id,
            primary_term: r.primary_term,
            result,
            get: r.get_source.map(Bytes::from),
        }
    }
}

/// The `'static` spelling of a result or error type an owner answered with.
fn known(s: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "created",
        "updated",
        "deleted",
        "not_found",
        "noop",
        "action_request_validation_exception",
        "illegal_argument_exception",
        "invalid_index_name_exception",
        "mapper_parsing_exception",
        "strict_dynamic_mapping_exception",
        "unavailable_shards_exception",
        "version_conflict_engine_exception",
        "index_not_found_exception",
        "es_rejected_execution_exception",
        "document_missing_exception",
        "parse_exception",
        "cluster_block_exception",
    ];
    KNOWN
        .iter()
        .find(|k| **k == s)
        .copied()
        .unwrap_or("exception")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_survive_the_wire() {
        let ok = ItemOutcome {
            kind: OpKind::Index,
            index: "logs".into(),
            id: "a".into(),
            primary_term: 3,
            result: Ok(("created", 1, 7, 201)),
            get: Some(Bytes::from_static(b"{\"a\":1}")),
        };
        let back = ItemOutcome::from_rpc(OpKind::Index, ok.to_rpc());
        assert_eq!(back.result, ok.result);
        assert_eq!((back.primary_term, back.id.as_str()), (3, "a"));
        assert_eq!(back.get, ok.get);
        let failed = ItemOutcome::failed(
            OpKind::Create,
            "logs",
            "b",
            409,
            "version_conflict_engine_exception",
            "exists".into(),
        );
        let back = ItemOutcome::from_rpc(OpKind::Create, failed.to_rpc());
        assert_eq!(back.result, failed.result);
    }
}
