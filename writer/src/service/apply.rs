//! The bulk path per index, as a pipeline of named steps: resolve the index → parse the
//! documents and merge new fields into the mapping → route each item to its shard → open
//! those shards → build tantivy documents → hand each shard its operations (durable in the
//! translog when it answers) → one outcome per item.

use super::*;

/// Parsed document bodies (per position in the request's items of this index).
type Parsed = Vec<Option<Result<Map<String, Value>, String>>>;

/// Items of one index that failed as a whole (every item gets the same error).
type Failed = Vec<ItemOutcome>;

impl Writer {
    /// Applies operations, grouped by index; per-item failures are outcomes, not errors.
    /// `hops`: how many writers passed the items on already (items of shards another
    /// writer owns are forwarded to it while below [`MAX_HOPS`]). `refresh`: forwarded
    /// items are published by their writer before it answers.
    pub(super) async fn apply(
        &self,
        default_index: Option<&str>,
        mut ops: Vec<BulkOp>,
        hops: u32,
        refresh: bool,
    ) -> Result<Vec<ItemOutcome>, WriterError> {
        // Ids are chosen once, by the first writer: a forwarded item keeps its id and shard.
        for op in ops.iter_mut() {
            if op.index.is_none() {
                op.index = default_index.map(str::to_string);
            }
            if op.id.is_none() {
                op.id = Some(crate::ids::generate_id());
                op.generated_id = true;
            }
        }
        let mut outcomes: Vec<Option<ItemOutcome>> = (0..ops.len()).map(|_| None).collect();
        // Items whose metadata is invalid fail alone.
        for (i, op) in ops.iter().enumerate() {
            if let Some(reason) = &op.denied {
                outcomes[i] = Some(ItemOutcome::failed(
                    op.kind,
                    op.index.as_deref().unwrap_or_default(),
                    op.id.as_deref().unwrap_or_default(),
                    403,
                    "security_exception",
                    reason.clone(),
                ));
            } else if let Some(reason) = &op.invalid {
                outcomes[i] = Some(ItemOutcome::failed(
                    op.kind,
                    op.index.as_deref().unwrap_or_default(),
                    op.id.as_deref().unwrap_or_default(),
                    400,
                    "action_request_validation_exception",
                    reason.clone(),
                ));
            }
        }
        // Writes to an alias go to its write index (with its index routing).
        for (i, op) in ops.iter_mut().enumerate() {
            let Some(name) = op.index.clone().filter(|_| outcomes[i].is_none()) else {
                continue;
            };
            match self.metastore.write_target(&name) {
                Ok(None) => {}
                Ok(Some(target)) => {
                    op.index = Some(target.index);
                    if op.routing.is_none() {
                        op.routing = target.routing;
                    }
                }
                Err(e) => {
                    outcomes[i] = Some(ItemOutcome::failed(
                        op.kind,
                        &name,
                        op.id.as_deref().unwrap_or(""),
                        400,
                        "illegal_argument_exception",
                        e.to_string(),
                    ))
                }
            }
        }
        // Group op positions by index name.
        let mut by_index: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            if outcomes[i].is_some() {
                continue;
            }
            match op.index.as_deref().or(default_index) {
                Some(name) => by_index.entry(name.to_string()).or_default().push(i),
                None => {
                    outcomes[i] = Some(ItemOutcome::failed(
                        op.kind,
                        "",
                        op.id.as_deref().unwrap_or(""),
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: index is missing;".into(),
                    ))
                }
            }
        }
        let remote = match self.peers() {
            Some(peers) if hops < MAX_HOPS => self.split_remote(peers, &ops, &mut by_index).await,
            _ => BTreeMap::new(),
        };
        let ops = Arc::new(ops);
        let forwarded = futures::future::join_all(
            remote
                .into_iter()
                .map(|(node, positions)| self.forward(node, ops.clone(), positions, refresh)),
        );
        // Indexes are independent: a batch spanning many of them handles several at once.
        let local = futures::stream::iter(by_index.into_iter().map(|(name, positions)| {
            let ops = ops.clone();
            async move {
                let results = self.apply_to_index(&name, ops, positions.clone()).await;
                (positions, results)
            }
        }))
        .buffer_unordered(8)
        .collect::<Vec<(Vec<usize>, Vec<ItemOutcome>)>>();
        let (per_index, per_node) = futures::join!(local, forwarded);
        for (positions, results) in per_index.into_iter().chain(per_node) {
            for (pos, outcome) in positions.into_iter().zip(results) {
                outcomes[pos] = Some(outcome);
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every op has an outcome"))
            .collect())
    }

    /// The items of one index (`positions` in `ops`), through the pipeline above.
    async fn apply_to_index(
        &self,
        name: &str,
        ops: Arc<Vec<BulkOp>>,
        positions: Vec<usize>,
    ) -> Vec<ItemOutcome> {
        if positions.iter().any(|&i| ops[i].kind == OpKind::Update) {
            return self.update_pipeline(name, &ops, &positions).await;
        }
        match self.index_pipeline(name, &ops, &positions).await {
            Ok(outcomes) => outcomes,
            Err(failed) => failed,
        }
    }

    pub(super) async fn index_pipeline(
        &self,
        name: &str,
        ops: &Arc<Vec<BulkOp>>,
        positions: &[usize],
    ) -> Result<Vec<ItemOutcome>, Failed> {
        let fail = |e: WriterError| fail_all(name, ops, positions, e);
        let meta = self.index_or_create(name).await.map_err(&fail)?;
        if meta.settings.closed {
            return Err(fail_items(
                ops,
                positions,
                400,
                "index_closed_exception",
                "closed".into(),
            ));
        }
        if meta.settings.blocks_write {
            return Err(fail_items(
                ops,
                positions,
                403,
                "cluster_block_exception",
                format!("index [{name}] blocked by: [FORBIDDEN/8/index write (api)];"),
            ));
        }
        let (meta, parsed, strict_errors) = self.parse_and_map(name, meta, ops, positions).await?;
        let routes = route(ops, positions, &meta);
        let shard_writers = self.open_routed(&meta, &routes).await.map_err(fail)?;
        let built = build_documents(ops, positions, meta, parsed, strict_errors, &routes)
            .await
            .map_err(fail)?;
        let results = write_to_shards(built, &routes, &shard_writers).await;
        Ok(positions
            .iter()
            .zip(results)
            .enumerate()
            .map(|(j, (&i, r))| ItemOutcome {
                kind: ops[i].kind,
                index: name.to_string(),
                id: routes[j].0.clone(),
                primary_term: shard_writers[&routes[j].1].epoch(),
                result: r.unwrap_or(Err((500, "exception", "no result".into()))),
                get: None,
            })
            .collect())
    }

    /// Parses the documents and discovers new fields (CPU work, off the async threads),
    /// then merges new fields into the mapping with one compare-and-swap. The first
    /// document to show a field decides its dynamic type; a later document that does not
    /// fit fails alone when it is built.
    async fn parse_and_map(
        &self,
        name: &str,
        mut meta: IndexMeta,
        ops: &Arc<Vec<BulkOp>>,
        positions: &[usize],
    ) -> Result<(IndexMeta, Parsed, HashMap<usize, String>), Failed> {
        let discovered = {
            let ops = ops.clone();
            let positions = positions.to_vec();
            let mappings = meta.mappings.clone();
            tokio::task::spawn_blocking(move || {
                let parsed: Parsed = positions
                    .iter()
                    .map(|&i| {
                        ops[i].source.as_ref().map(|src| {
                            match serde_json::from_slice::<Value>(src) {
                                Ok(Value::Object(m)) => Ok(m),
                                Ok(_) => Err("failed to parse, document is empty or not an object"
                                    .to_string()),
                                Err(e) => Err(format!("failed to parse: {e}")),
                            }
                        })
                    })
                    .collect();
                let mut new_fields: BTreeMap<String, FieldMapping> = BTreeMap::new();
                let mut strict_errors: HashMap<usize, String> = HashMap::new();
                for (j, doc) in parsed.iter().enumerate() {
                    if let Some(Ok(doc)) = doc {
                        match mappings.discover(doc) {
                            Ok(found) => {
                                for (path, fm) in found {
                                    new_fields.entry(path).or_insert(fm);
                                }
                            }
                            Err(e) => {
                                strict_errors.insert(j, e.to_string());
                            }
                        }
                    }
                }
                (parsed, new_fields, strict_errors)
            })
            .await
        };
        let Ok((parsed, new_fields, strict_errors)) = discovered else {
            return Err(fail_all(
                name,
                ops,
                positions,
                WriterError::Internal("document parsing panicked".into()),
            ));
        };
        if !new_fields.is_empty() {
            meta = self
                .metastore
                .merge_mappings(name, &new_fields)
                .await
                .map_err(|e| fail_all(name, ops, positions, e.into()))?;
        }
        Ok((meta, parsed, strict_errors))
    }

    /// Opens the shards the routed items need (in parallel: a batch may touch thousands).
    async fn open_routed(
        &self,
        meta: &IndexMeta,
        routes: &[(String, u32)],
    ) -> Result<HashMap<u32, Arc<ShardWriter>>, WriterError> {
        let mut needed: Vec<u32> = routes.iter().map(|(_, s)| *s).collect();
        needed.sort_unstable();
        needed.dedup();
        let opened: Vec<Result<(u32, Arc<ShardWriter>), WriterError>> = futures::stream::iter(
            needed
                .into_iter()
                .map(|shard| async move { self.shard(meta, shard).await.map(|w| (shard, w)) }),
        )
        .buffer_unordered(32)
        .collect()
        .await;
        opened.into_iter().collect()
    }
}

/// Every item of the index failed with `e`.
pub(super) fn fail_all(name: &str, ops: &[BulkOp], positions: &[usize], e: WriterError) -> Failed {
    let (status, typ) = e.item_status();
    debug_assert!(positions
        .iter()
        .all(|&i| ops[i].index.as_deref() == Some(name)));
    fail_items(ops, positions, status, typ, e.to_string())
}

/// The items at `positions` all failed the same way (each under its own index and id).
pub(super) fn fail_items(
    ops: &[BulkOp],
    positions: &[usize],
    status: u16,
    typ: &'static str,
    reason: String,
) -> Vec<ItemOutcome> {
    positions
        .iter()
        .map(|&i| {
            ItemOutcome::failed(
                ops[i].kind,
                ops[i].index.as_deref().unwrap_or_default(),
                ops[i].id.as_deref().unwrap_or_default(),
                status,
                typ,
                reason.clone(),
            )
        })
        .collect()
}

/// Each item's (id, shard): murmur3 of its routing key or id.
fn route(ops: &[BulkOp], positions: &[usize], meta: &IndexMeta) -> Vec<(String, u32)> {
    positions
        .iter()
        .map(|&i| {
            let op = &ops[i];
            let id = op.id.clone().unwrap_or_else(crate::ids::generate_id);
            let shard = shard_for(
                op.routing.as_deref().unwrap_or(&id),
                meta.settings.number_of_shards,
            );
            (id, shard)
        })
        .collect()
}

/// Builds each item's tantivy document (CPU work, off the async threads); an item that
/// does not fit its mapping fails alone.
async fn build_documents(
    ops: &Arc<Vec<BulkOp>>,
    positions: &[usize],
    meta: IndexMeta,
    parsed: Parsed,
    strict_errors: HashMap<usize, String>,
    routes: &[(String, u32)],
) -> Result<Vec<Result<PreparedOp, ItemError>>, WriterError> {
    let ops = ops.clone();
    let positions = positions.to_vec();
    let ids: Vec<String> = routes.iter().map(|(id, _)| id.clone()).collect();
    tokio::task::spawn_blocking(move || {
        let layout = ShardLayout::of(&meta.settings);
        let builder = DocBuilder::new(layout, &meta.mappings);
        positions
            .iter()
            .enumerate()
            .map(|(j, &i)| {
                let op = &ops[i];
                let id = ids[j].clone();
                match (op.kind, &parsed[j]) {
                    (OpKind::Delete, _) => Ok(PreparedOp {
                        kind: op.kind,
                        id,
                        source: None,
                        doc: None,
                        check_existing: true,
                        cond: op.cond,
                        routing: None,
                    }),
                    (_, Some(Err(reason))) => {
                        Err((400, "mapper_parsing_exception", reason.clone()))
                    }
                    (_, Some(Ok(_))) if strict_errors.contains_key(&j) => Err((
                        400,
                        "strict_dynamic_mapping_exception",
                        strict_errors[&j].clone(),
                    )),
                    (kind, Some(Ok(doc))) => {
                        let raw = op.source.clone().unwrap_or_default();
                        match builder.build(&id, &raw, doc) {
                            Err(e) => Err((400, "mapper_parsing_exception", e.0)),
                            Ok(built) => Ok(PreparedOp {
                                kind,
                                id,
                                source: Some(raw),
                                doc: Some(built),
                                check_existing: !op.generated_id || op.cond.is_some(),
                                cond: op.cond,
                                routing: op.routing.clone(),
                            }),
                        }
                    }
                    (_, None) => Err((
                        400,
                        "action_request_validation_exception",
                        "Validation Failed: 1: source is missing;".into(),
                    )),
                }
            })
            .collect()
    })
    .await
    .map_err(|_| WriterError::Internal("document building panicked".into()))
}

/// Hands each shard its operations, all shards at once; they are durable (translog) when
/// the shard answers. One result per item, in order.
async fn write_to_shards(
    built: Vec<Result<PreparedOp, ItemError>>,
    routes: &[(String, u32)],
    shard_writers: &HashMap<u32, Arc<ShardWriter>>,
) -> Vec<Option<OpResult>> {
    let mut results: Vec<Option<OpResult>> = (0..built.len()).map(|_| None).collect();
    let mut per_shard: BTreeMap<u32, (Vec<usize>, Vec<PreparedOp>)> = BTreeMap::new();
    for (j, prepared) in built.into_iter().enumerate() {
        match prepared {
            Ok(op) => {
                let entry = per_shard.entry(routes[j].1).or_default();
                entry.0.push(j);
                entry.1.push(op);
            }
            Err(e) => results[j] = Some(Err(e)),
        }
    }
    let writes = per_shard.into_iter().map(|(shard, (slots, ops))| {
        let writer = shard_writers[&shard].clone();
        async move { (slots, writer.write(ops).await) }
    });
    for (slots, outcome) in futures::future::join_all(writes).await {
        match outcome {
            Ok(res) => {
                for (slot, r) in slots.into_iter().zip(res) {
                    results[slot] = Some(r);
                }
            }
            Err(e) => {
                let (status, typ) = e.item_status();
                for slot in slots {
                    results[slot] = Some(Err((status, typ, e.to_string())));
                }
            }
        }
    }
    results
}
