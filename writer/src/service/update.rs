//! Updates on the bulk path: read the live document on its shard, resolve the update
//! ([`crate::update`]), write the result on the condition that the document is still the
//! one read, and read again when another write came between (`retry_on_conflict`).
//!
//! Only the resolved write is logged, with its condition, so a replay decides exactly as
//! the first application did; the update request itself never reaches the translog.

use std::collections::HashSet;

use super::apply::fail_all;
use super::*;
use crate::bulk::Condition;
use crate::update::{Resolution, UpdateRequest};

/// An update resolved against the live document.
enum Resolved {
    /// Write this (index, create or delete, conditioned on the version read); with the new
    /// source when the request asked for it back.
    Write(BulkOp, Option<Bytes>),
    /// Already decided: a noop, a missing document, a bad request.
    Done(ItemOutcome),
}

impl Writer {
    /// The items of one index when some are updates. They go in waves: an `_id` seen twice
    /// starts a new wave, so a later item builds on an earlier one's result.
    pub(super) async fn update_pipeline(
        &self,
        name: &str,
        ops: &Arc<Vec<BulkOp>>,
        positions: &[usize],
    ) -> Vec<ItemOutcome> {
        let meta = match self.index_or_create(name).await {
            Ok(meta) => meta,
            Err(e) => return fail_all(name, ops, positions, e),
        };
        let mut outcomes = Vec::with_capacity(positions.len());
        for wave in waves(ops, positions) {
            outcomes.extend(self.update_wave(name, &meta, ops, &wave).await);
        }
        outcomes
    }

    /// One wave: resolve the updates, write everything, retry updates that conflicted.
    async fn update_wave(
        &self,
        name: &str,
        meta: &IndexMeta,
        ops: &Arc<Vec<BulkOp>>,
        wave: &[usize],
    ) -> Vec<ItemOutcome> {
        let mut out: Vec<Option<ItemOutcome>> = (0..wave.len()).map(|_| None).collect();
        let mut pending: Vec<usize> = (0..wave.len()).collect();
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let mut writes = Vec::new();
            let mut slots = Vec::new();
            for &k in &pending {
                let op = &ops[wave[k]];
                if op.kind != OpKind::Update {
                    writes.push(op.clone());
                    slots.push((k, None));
                    continue;
                }
                match self.resolve_update(name, meta, op).await {
                    Resolved::Write(write, source) => {
                        writes.push(write);
                        slots.push((k, source));
                    }
                    Resolved::Done(outcome) => out[k] = Some(outcome),
                }
            }
            let positions: Vec<usize> = (0..writes.len()).collect();
            let written = self
                .index_pipeline(name, &Arc::new(writes), &positions)
                .await
                .unwrap_or_else(|failed| failed);
            pending.clear();
            for ((k, source), mut outcome) in slots.into_iter().zip(written) {
                let op = &ops[wave[k]];
                if op.kind == OpKind::Update {
                    let conflicted = matches!(outcome.result, Err((409, _, _)));
                    if conflicted && attempt < op.retry_on_conflict {
                        pending.push(k);
                        continue;
                    }
                    outcome.kind = OpKind::Update;
                    if outcome.result.is_ok() {
                        outcome.get = source;
                    }
                }
                out[k] = Some(outcome);
            }
            attempt += 1;
        }
        out.into_iter()
            .map(|o| o.expect("every item decided"))
            .collect()
    }

    /// Reads the live document of an update and decides what to write.
    async fn resolve_update(&self, name: &str, meta: &IndexMeta, op: &BulkOp) -> Resolved {
        let id = op.id.clone().unwrap_or_default();
        let fail = |(status, typ, reason): (u16, &'static str, String)| {
            Resolved::Done(ItemOutcome::failed(
                OpKind::Update,
                name,
                &id,
                status,
                typ,
                reason,
            ))
        };
        let req = match UpdateRequest::parse(op.source.as_deref().unwrap_or(b"")) {
            Ok(req) => req,
            Err(e) => return fail(e),
        };
        let shard = shard_for(
            op.routing.as_deref().unwrap_or(&id),
            meta.settings.number_of_shards,
        );
        let writer = match self.shard(meta, shard).await {
            Ok(w) => w,
            Err(e) => {
                let (status, typ) = e.item_status();
                return fail((status, typ, e.to_string()));
            }
        };
        let primary_term = writer.epoch();
        let read = {
            let id = id.clone();
            tokio::task::spawn_blocking(move || writer.current(&id)).await
        };
        let live = match read {
            Ok(Ok(live)) => live,
            Ok(Err(e)) => return fail((500, "exception", e.to_string())),
            Err(e) => return fail((500, "exception", e.to_string())),
        };
        if let (
            Some(Condition::SeqNo {
                seq_no,
                primary_term,
            }),
            Some(l),
        ) = (op.cond, &live)
        {
            if (l.seq_no, l.primary_term) != (seq_no, primary_term) {
                return fail((
                    409,
                    "version_conflict_engine_exception",
                    format!(
                        "[{id}]: version conflict, required seqNo [{seq_no}], primary term [{primary_term}]. current document has seqNo [{}] and primary term [{}]",
                        l.seq_no, l.primary_term
                    ),
                ));
            }
        }
        let live_source = match live.as_ref().and_then(|l| l.source.as_ref()) {
            None => None,
            Some(src) => match serde_json::from_slice::<Map<String, Value>>(src) {
                Ok(m) => Some(m),
                Err(e) => return fail((500, "exception", format!("stored source: {e}"))),
            },
        };
        let resolution = match req.resolve(&id, live_source) {
            Ok(r) => r,
            Err(e) => return fail(e),
        };
        // The write holds only if the document is still the one read.
        let read_cond = live.as_ref().map(|l| Condition::SeqNo {
            seq_no: l.seq_no,
            primary_term: l.primary_term,
        });
        let write = |kind: OpKind, source: Option<Bytes>| BulkOp {
            kind,
            index: Some(name.to_string()),
            id: Some(id.clone()),
            generated_id: false,
            routing: op.routing.clone(),
            source,
            cond: read_cond,
            retry_on_conflict: 0,
            invalid: None,
            denied: None,
        };
        match resolution {
            Resolution::Noop => {
                let l = live.expect("a noop has a live document");
                Resolved::Done(ItemOutcome {
                    kind: OpKind::Update,
                    index: name.to_string(),
                    id: id.clone(),
                    primary_term: if l.primary_term == 0 {
                        primary_term
                    } else {
                        l.primary_term
                    },
                    result: Ok(("noop", l.version, l.seq_no, 200)),
                    get: req.return_source.then(|| l.source.clone()).flatten(),
                })
            }
            Resolution::Delete => Resolved::Write(write(OpKind::Delete, None), None),
            Resolution::Write { source, created } => {
                let bytes = Bytes::from(serde_json::to_vec(&source).unwrap_or_default());
                // An upsert creates: it fails (and is retried) if the document appeared.
                let kind = if created {
                    OpKind::Create
                } else {
                    OpKind::Index
                };
                let returned = req.return_source.then(|| bytes.clone());
                Resolved::Write(write(kind, Some(bytes)), returned)
            }
        }
    }
}

/// Splits positions into runs in which no `_id` repeats.
fn waves(ops: &[BulkOp], positions: &[usize]) -> Vec<Vec<usize>> {
    let mut waves = Vec::new();
    let mut current = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for &i in positions {
        if let Some(id) = ops[i].id.as_deref() {
            if !seen.insert(id) {
                waves.push(std::mem::take(&mut current));
                seen.clear();
                seen.insert(id);
            }
        }
        current.push(i);
    }
    if !current.is_empty() {
        waves.push(current);
    }
    waves
}
