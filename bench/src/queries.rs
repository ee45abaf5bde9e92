//! The benchmark's queries: OpenSearch request bodies sent to Floe as they are, and run on
//! the raw-tantivy baseline through Floe's own DSL parser and translator, so both sides
//! answer exactly the same question.

use serde_json::{json, Value};

use crate::generator::MATCH_QUERY_TEXT;

/// One benchmark query.
#[derive(Clone, Debug)]
pub struct BenchQuery {
    /// Short stable name, used in figure names and the chart.
    pub name: &'static str,
    /// The `_search` body.
    pub body: Value,
}

/// The queries of the `query` scenario. `time_range` is the data's `(min, max)` timestamp in
/// epoch milliseconds: the range query selects the middle 20% of it.
pub fn bench_queries(time_range: (i64, i64)) -> Vec<BenchQuery> {
    let (min, max) = time_range;
    let span = (max - min).max(1);
    let (from, to) = (min + span * 2 / 5, min + span * 3 / 5);
    vec![
        BenchQuery {
            name: "term_status",
            body: json!({"query": {"term": {"status": 404}}}),
        },
        BenchQuery {
            name: "match_message",
            body: json!({"query": {"match": {"message": MATCH_QUERY_TEXT}}}),
        },
        BenchQuery {
            name: "range_ts_and_term",
            body: json!({"query": {"bool": {"filter": [
                {"range": {"@timestamp": {"gte": from, "lt": to, "format": "epoch_millis"}}},
                {"term": {"status": 200}}
            ]}}}),
        },
        BenchQuery {
            name: "sort_ts_desc_top10",
            body: json!({"size": 10, "sort": [{"@timestamp": {"order": "desc"}}],
                         "query": {"match_all": {}}}),
        },
        BenchQuery {
            name: "date_histogram_1m",
            body: json!({"size": 0, "aggs": {"per_minute": {"date_histogram":
                         {"field": "@timestamp", "fixed_interval": "1m"}}}}),
        },
        BenchQuery {
            name: "terms_status",
            body: json!({"size": 0, "aggs": {"statuses": {"terms": {"field": "status"}}}}),
        },
    ]
}

/// What a query returned, reduced to numbers both sides can be compared on: a benchmark that
/// is fast because it answers something else is worth nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub total_hits: u64,
    pub hits: usize,
    /// Number of buckets and the sum of their doc counts, of the first aggregation.
    pub buckets: Option<(usize, u64)>,
}

impl Outcome {
    /// Reads an OpenSearch-shaped response (`hits.total.value`, `hits.hits`, `aggregations`).
    pub fn from_response(resp: &Value) -> Outcome {
        let buckets = resp["aggregations"]
            .as_object()
            .and_then(|aggs| aggs.values().next())
            .and_then(|agg| agg["buckets"].as_array())
            .map(|b| {
                let sum = b.iter().filter_map(|x| x["doc_count"].as_u64()).sum();
                (b.len(), sum)
            });
        Outcome {
            total_hits: resp["hits"]["total"]["value"].as_u64().unwrap_or(0),
            hits: resp["hits"]["hits"].as_array().map_or(0, Vec::len),
            buckets,
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} hits ({} returned)", self.total_hits, self.hits)?;
        if let Some((n, sum)) = self.buckets {
            write!(f, ", {n} buckets holding {sum} docs")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_parse_with_floes_dsl() {
        for q in bench_queries((0, 1_000_000)) {
            if let Some(query) = q.body.get("query") {
                floe_searcher::dsl::parse_query(query)
                    .unwrap_or_else(|e| panic!("{}: {e}", q.name));
            }
        }
    }

    #[test]
    fn outcome_reads_hits_and_buckets() {
        let r = json!({"hits": {"total": {"value": 5}, "hits": [{}, {}]},
                       "aggregations": {"a": {"buckets": [{"doc_count": 2}, {"doc_count": 3}]}}});
        let o = Outcome::from_response(&r);
        assert_eq!(o.total_hits, 5);
        assert_eq!(o.hits, 2);
        assert_eq!(o.buckets, Some((2, 5)));
    }
}
