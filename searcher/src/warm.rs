//! Warm-up: before tantivy's synchronous search runs on a shard, fetch concurrently what the
//! query will read (term-dictionary blocks and posting lists of its terms, field norms when
//! scoring, the columns it sorts or buckets on). A cold query then costs a few parallel
//! rounds of GETs instead of a chain of sequential ones; what warm-up misses (automaton
//! queries' dictionary walks, say) is still read, only on demand.
//!
//! Runs on a blocking thread: opening a field's term dictionary may read synchronously.
//!
//! A term warmed in a segment a moment ago is not warmed again ([`WarmedTerms`]): on a warm
//! searcher the lookup would only repeat the search's own (a term-dictionary lookup
//! decompresses a block; it was a fifth of a warm term query's CPU, a third of it warm-up's).
//! Should its blocks have been evicted since, the search reads them on demand.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::{try_join_all, BoxFuture};
use tantivy::query::Query;
use tantivy::schema::Field;
use tantivy::{Searcher, Term};

use crate::SearchError;

/// What besides the query's terms a search reads.
#[derive(Clone, Debug, Default)]
pub struct WarmNeeds {
    /// Segments (uuids) pruned from the search: nothing of them is read.
    pub skip: HashSet<String>,
    /// Scored by relevance: field norms of the queried fields are read.
    pub scoring: bool,
    /// Fast-field columns (by name) the search sorts, filters or buckets on.
    pub columns: Vec<String>,
}

/// How long a warmed term counts as warm.
const WARM_FOR: Duration = Duration::from_secs(30);

/// Terms recently warmed, by segment: (segment uuid, term, with positions).
#[derive(Clone)]
pub struct WarmedTerms(moka::sync::Cache<(String, Term, bool), ()>);

impl Default for WarmedTerms {
    fn default() -> Self {
        WarmedTerms(
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(WARM_FOR)
                .build(),
        )
    }
}

/// Fetches what `query` will read from every segment of `searcher`, concurrently.
pub fn warm_up(
    searcher: &Searcher,
    query: &dyn Query,
    needs: &WarmNeeds,
    warmed: &WarmedTerms,
) -> Result<(), SearchError> {
    let mut terms: Vec<(Term, bool)> = Vec::new();
    query.query_terms(&mut |term, positions| terms.push((term.clone(), positions)));
    let fields: HashSet<Field> = terms.iter().map(|(t, _)| t.field()).collect();
    let mut fetches: Vec<BoxFuture<'static, std::io::Result<()>>> = Vec::new();
    for segment in searcher.segment_readers() {
        let uuid = segment.segment_id().uuid_string();
        if needs.skip.contains(&uuid) {
            continue;
        }
        for (term, positions) in &terms {
            let key = (uuid.clone(), term.clone(), *positions);
            if warmed.0.contains_key(&key) {
                continue;
            }
            // Opening the dictionary only reads what the segment's hot cache holds.
            let inverted = segment.inverted_index(term.field())?;
            let (term, positions, warmed) = (term.clone(), *positions, warmed.clone());
            fetches.push(Box::pin(async move {
                inverted.warm_postings(&term, positions).await?;
                warmed.0.insert(key, ());
                Ok(())
            }));
        }
        if needs.scoring {
            let norms = segment.fieldnorms_readers().get_inner_file();
            for field in &fields {
                if let Some(slice) = norms.open_read(*field) {
                    fetches.push(Box::pin(async move {
                        slice.read_bytes_async().await.map(|_| ())
                    }));
                }
            }
        }
        for column in &needs.columns {
            let fast = segment.fast_fields().clone();
            let column = column.clone();
            fetches.push(Box::pin(async move {
                let handles = fast
                    .list_dynamic_column_handles(&column)
                    .await
                    .map_err(std::io::Error::other)?;
                let reads = handles.iter().map(|h| h.file_slice().read_bytes_async());
                try_join_all(reads).await.map(|_| ())
            }));
        }
    }
    if fetches.is_empty() {
        return Ok(());
    }
    tokio::runtime::Handle::current().block_on(try_join_all(fetches))?;
    Ok(())
}
