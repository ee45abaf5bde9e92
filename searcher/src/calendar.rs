//! `date_histogram` buckets that are not a fixed length in UTC: calendar intervals (`week`,
//! `month`, `quarter`, `year`) and any `time_zone` (local midnights, DST days of 23 or 25
//! hours). tantivy's histogram only knows fixed lengths in UTC, so the node that receives
//! the search rewrites such a histogram into a `range` aggregation over the exact bucket
//! boundaries — computed with the time zone database between the bounds of the data (the
//! shards' `@timestamp` range, narrowed by the query's) — and renders the ranges back as
//! `date_histogram` buckets (`key`, `key_as_string` in the zone, `doc_count`, sub-aggregations).
//! Leaves only ever see the `range`, so every leaf buckets alike.

use jiff::tz::{Offset, TimeZone};
use jiff::{Span, Timestamp, ZonedDateTime};
use serde_json::{json, Map, Value};

use crate::agg_path::{for_each_at, visit};
use crate::SearchError;

/// Most buckets one histogram may have (OpenSearch's `search.max_buckets` is 65,535).
const MAX_BUCKETS: usize = 65_535;

/// A bucket length.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Week,
    Month,
    Quarter,
    Year,
    /// A calendar day (midnight to midnight in the zone).
    Day,
    /// A fixed number of milliseconds, rounded in local time.
    Fixed(i64),
}

/// One rewritten histogram: where it is in the request and how to render it back.
#[derive(Clone, Debug)]
struct Rewritten {
    /// Names from the root (`outer`, `inner`) of the aggregation.
    path: Vec<String>,
    tz: TimeZone,
    min_doc_count: u64,
    /// `extended_bounds` given: empty buckets at the ends are kept.
    extended: bool,
    /// A `date_range` (not a histogram): its ranges (ms bounds, custom key) and `keyed`.
    ranges: Option<(Vec<DateRange>, bool)>,
}

/// One range of a `date_range`.
#[derive(Clone, Debug)]
struct DateRange {
    from: Option<i64>,
    to: Option<i64>,
    key: Option<String>,
}

/// The histograms a request's aggregations had rewritten.
#[derive(Clone, Debug, Default)]
pub struct Rewrites(Vec<Rewritten>);

fn bad(reason: impl Into<String>) -> SearchError {
    SearchError::IllegalArgument(reason.into())
}

fn unit_of(interval: &str) -> Option<Unit> {
    Some(match interval {
        "week" | "1w" => Unit::Week,
        "month" | "1M" => Unit::Month,
        "quarter" | "1q" => Unit::Quarter,
        "year" | "1y" => Unit::Year,
        "day" | "1d" => Unit::Day,
        "hour" | "1h" => Unit::Fixed(3_600_000),
        "minute" | "1m" => Unit::Fixed(60_000),
        "second" | "1s" => Unit::Fixed(1_000),
        other => Unit::Fixed(floe_proto::model::parse_time_value(other)?.as_millis() as i64),
    })
}

/// `time_zone`: a name from the time zone database or an offset (`+02:00`, `-5`).
pub(crate) fn zone_of(s: &str) -> Result<TimeZone, SearchError> {
    if matches!(s, "UTC" | "Z" | "utc" | "GMT") {
        return Ok(TimeZone::UTC);
    }
    let offset = s.strip_prefix(['+', '-']).map(|rest| {
        let sign = if s.starts_with('-') { -1 } else { 1 };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        match (h.parse::<i32>(), m.parse::<i32>()) {
            (Ok(h), Ok(m)) => Offset::from_seconds(sign * (h * 3600 + m * 60)).ok(),
            _ => None,
        }
    });
    match offset {
        Some(Some(o)) => Ok(TimeZone::fixed(o)),
        Some(None) => Err(bad(format!("Cannot parse time_zone [{s}]"))),
        None => TimeZone::get(s).map_err(|_| bad(format!("Unknown time zone id [{s}]"))),
    }
}

/// Whether the histogram needs exact boundaries (anything but a fixed length in UTC).
fn needs_rewrite(dh: &Map<String, Value>) -> bool {
    let tz = dh.get("time_zone").and_then(Value::as_str);
    let utc = tz.is_none_or(|z| matches!(z, "UTC" | "Z" | "utc" | "GMT" | "+00:00"));
    let interval = dh
        .get("calendar_interval")
        .or(dh.get("interval"))
        .and_then(Value::as_str);
    let calendar = interval.is_some_and(|i| {
        matches!(
            unit_of(i),
            Some(Unit::Week | Unit::Month | Unit::Quarter | Unit::Year)
        )
    });
    calendar || !utc
}

fn zoned(ms: i64, tz: &TimeZone) -> Result<ZonedDateTime, SearchError> {
    Timestamp::from_millisecond(ms)
        .map(|t| t.to_zoned_datetime(tz.clone()))
        .map_err(|e| bad(format!("date out of range: {e}")))
}

fn millis(z: &ZonedDateTime) -> i64 {
    z.timestamp().as_millisecond()
}

/// The start of the bucket holding `ms`.
fn round_down(ms: i64, unit: Unit, tz: &TimeZone) -> Result<i64, SearchError> {
    let z = zoned(ms, tz)?;
    let e = |e: jiff::Error| bad(e.to_string());
    Ok(match unit {
        Unit::Day => millis(&z.start_of_day().map_err(e)?),
        Unit::Week => {
            let back = i64::from(z.weekday().to_monday_zero_offset());
            let day = z.start_of_day().map_err(e)?;
            millis(&day.checked_sub(Span::new().days(back)).map_err(e)?)
        }
        Unit::Month => millis(&z.first_of_month().map_err(e)?.start_of_day().map_err(e)?),
        Unit::Quarter => {
            let first = z.first_of_month().map_err(e)?.start_of_day().map_err(e)?;
            let back = i64::from((z.month() - 1) % 3);
            millis(&first.checked_sub(Span::new().months(back)).map_err(e)?)
        }
        Unit::Year => millis(&z.first_of_year().map_err(e)?.start_of_day().map_err(e)?),
        Unit::Fixed(len) => {
            // Rounded in local time: the offset at `ms` moves the grid.
            let offset = i64::from(z.offset().seconds()) * 1000;
            (ms + offset).div_euclid(len) * len - offset
        }
    })
}

/// The start of the bucket after the one starting at `start`.
fn next_start(start: i64, unit: Unit, tz: &TimeZone) -> Result<i64, SearchError> {
    let z = zoned(start, tz)?;
    let span = match unit {
        Unit::Day => Span::new().days(1),
        Unit::Week => Span::new().weeks(1),
        Unit::Month => Span::new().months(1),
        Unit::Quarter => Span::new().months(3),
        Unit::Year => Span::new().years(1),
        Unit::Fixed(len) => {
            let next = round_down(start + len, unit, tz)?;
            // Across a DST change the local grid may repeat a start: step past it.
            return Ok(if next > start {
                next
            } else {
                round_down(start + 2 * len, unit, tz)?
            });
        }
    };
    Ok(millis(
        &z.checked_add(span).map_err(|e| bad(e.to_string()))?,
    ))
}

/// Bucket starts from the one holding `min` through the one holding `max`, plus the end
/// of the last.
fn boundaries(min: i64, max: i64, unit: Unit, tz: &TimeZone) -> Result<Vec<i64>, SearchError> {
    let mut out = vec![round_down(min, unit, tz)?];
    loop {
        let last = *out.last().expect("non-empty");
        if last > max {
            return Ok(out);
        }
        if out.len() > MAX_BUCKETS {
            return Err(SearchError::TooManyBuckets(MAX_BUCKETS));
        }
        out.push(next_start(last, unit, tz)?);
    }
}

/// Rewrites, in place, every histogram of `aggs` (at any depth) that needs exact
/// boundaries, when `bounds(field)` knows the data's time range for its field; the
/// others are left to tantivy.
pub fn rewrite(
    aggs: &mut Value,
    bounds: &impl Fn(&str) -> Option<(i64, i64)>,
) -> Result<Rewrites, SearchError> {
    let mut out = Rewrites::default();
    visit::<SearchError>(aggs, &mut |path, agg| {
        out.0.extend(rewrite_one(agg, path, bounds)?);
        out.0.extend(rewrite_date_range(agg, path)?);
        Ok(())
    })?;
    Ok(out)
}

fn rewrite_one(
    agg: &mut Value,
    path: &[String],
    bounds: &impl Fn(&str) -> Option<(i64, i64)>,
) -> Result<Option<Rewritten>, SearchError> {
    let Some(dh) = agg.get("date_histogram").and_then(Value::as_object) else {
        return Ok(None);
    };
    if !needs_rewrite(dh) {
        return Ok(None);
    }
    let field = dh
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("[date_histogram] requires a [field]"))?
        .to_string();
    let interval = ["calendar_interval", "fixed_interval", "interval"]
        .iter()
        .find_map(|k| dh.get(*k).and_then(Value::as_str))
        .ok_or_else(|| bad("[date_histogram] requires [calendar_interval] or [fixed_interval]"))?;
    let unit = unit_of(interval).ok_or_else(|| {
        bad(format!(
            "The supplied interval [{interval}] could not be parsed as a calendar interval."
        ))
    })?;
    if matches!(unit, Unit::Fixed(len) if len <= 0) {
        return Err(bad(format!("[{interval}] is not a positive interval")));
    }
    let tz = zone_of(dh.get("time_zone").and_then(Value::as_str).unwrap_or("UTC"))?;
    let ms = |v: Option<&Value>| -> Option<i64> {
        v.and_then(crate::translate::date_value)
            .map(|ns| ns.div_euclid(1_000_000))
    };
    let ext = dh.get("extended_bounds");
    let (ext_min, ext_max) = (
        ms(ext.and_then(|e| e.get("min"))),
        ms(ext.and_then(|e| e.get("max"))),
    );
    let Some((mut min, mut max)) = bounds(&field).or(ext_min.zip(ext_max)) else {
        return Ok(None);
    };
    if let Some(m) = ext_min {
        min = min.min(m);
    }
    if let Some(m) = ext_max {
        max = max.max(m);
    }
    if min > max {
        (min, max) = (max, min);
    }
    // `offset` (`+6h`, `-1d`) moves every bucket start by that much.
    let offset = match dh.get("offset") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            let (sign, len) = match s.strip_prefix('-') {
                Some(rest) => (-1, rest),
                None => (1, s.strip_prefix('+').unwrap_or(s)),
            };
            let len = floe_proto::model::parse_time_value(len)
                .ok_or_else(|| bad(format!("failed to parse [offset] of [{s}]")))?;
            sign * len.as_millis() as i64
        }
        Some(other) => return Err(bad(format!("failed to parse [offset] of [{other}]"))),
    };
    let starts: Vec<i64> = boundaries(min - offset, max - offset, unit, &tz)?
        .into_iter()
        .map(|start| start + offset)
        .collect();
    let ranges: Vec<Value> = starts
        .windows(2)
        .map(|w| json!({"from": to_bound(w[0]), "to": to_bound(w[1])}))
        .collect();
    let min_doc_count = dh.get("min_doc_count").and_then(Value::as_u64).unwrap_or(0);
    let rewritten = Rewritten {
        path: path.to_vec(),
        tz,
        min_doc_count,
        extended: ext.is_some(),
        ranges: None,
    };
    agg["range"] = json!({"field": field, "ranges": ranges});
    if let Some(o) = agg.as_object_mut() {
        o.remove("date_histogram");
    }
    Ok(Some(rewritten))
}

/// `date_range` → `range` over nanosecond bounds (dates and date math resolved here, once).
fn rewrite_date_range(agg: &mut Value, path: &[String]) -> Result<Option<Rewritten>, SearchError> {
    let Some(dr) = agg.get("date_range").and_then(Value::as_object) else {
        return Ok(None);
    };
    let field = dr
        .get("field")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("[date_range] requires a [field]"))?
        .to_string();
    let tz = zone_of(dr.get("time_zone").and_then(Value::as_str).unwrap_or("UTC"))?;
    let date = |v: Option<&Value>| -> Result<Option<i64>, SearchError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::translate::date_value(v)
                .map(|ns| Some(ns.div_euclid(1_000_000)))
                .ok_or_else(|| bad(format!("[date_range] cannot parse date [{v}]"))),
        }
    };
    let mut ranges = Vec::new();
    for r in dr
        .get("ranges")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("[date_range] requires [ranges]"))?
    {
        ranges.push(DateRange {
            from: date(r.get("from"))?,
            to: date(r.get("to"))?,
            key: r.get("key").and_then(Value::as_str).map(str::to_string),
        });
    }
    let keyed = dr.get("keyed").and_then(Value::as_bool).unwrap_or(false);
    let tantivy_ranges: Vec<Value> = ranges
        .iter()
        .map(|r| {
            let mut v = json!({});
            if let Some(f) = r.from {
                v["from"] = json!(to_bound(f));
            }
            if let Some(t) = r.to {
                v["to"] = json!(to_bound(t));
            }
            v
        })
        .collect();
    agg["range"] = json!({"field": field, "ranges": tantivy_ranges});
    if let Some(o) = agg.as_object_mut() {
        o.remove("date_range");
    }
    Ok(Some(Rewritten {
        path: path.to_vec(),
        tz,
        min_doc_count: 0,
        extended: false,
        ranges: Some((ranges, keyed)),
    }))
}

/// Renders a rewritten `date_range` back: the requested ranges in order of `from`, with
/// `from`/`to` in milliseconds and as strings, and OpenSearch's keys.
fn render_ranges(agg: &mut Value, ranges: &[DateRange], keyed: bool, tz: &TimeZone) {
    let buckets: Vec<Value> = match agg.get("buckets") {
        Some(Value::Array(b)) => b.clone(),
        Some(Value::Object(b)) => b.values().cloned().collect(),
        _ => return,
    };
    let bound = |b: &Value, k: &str| b.get(k).and_then(Value::as_f64).map(from_bound);
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| (r.from.unwrap_or(i64::MIN), r.to.unwrap_or(i64::MAX)));
    for r in &sorted {
        let Some(b) = buckets
            .iter()
            .find(|b| bound(b, "from") == r.from && bound(b, "to") == r.to)
        else {
            continue;
        };
        let text = |ms: Option<i64>| ms.map_or("*".to_string(), |ms| format_key(ms, tz));
        let key = r
            .key
            .clone()
            .unwrap_or_else(|| format!("{}-{}", text(r.from), text(r.to)));
        let mut bucket = Map::new();
        bucket.insert("key".into(), json!(key));
        if let Some(f) = r.from {
            bucket.insert("from".into(), json!(f as f64));
            bucket.insert("from_as_string".into(), json!(text(Some(f))));
        }
        if let Some(t) = r.to {
            bucket.insert("to".into(), json!(t as f64));
            bucket.insert("to_as_string".into(), json!(text(Some(t))));
        }
        copy_count_and_subs(b, &mut bucket);
        out.push((key, Value::Object(bucket)));
    }
    *agg = if keyed {
        json!({"buckets": out.into_iter().collect::<Map<String, Value>>()})
    } else {
        json!({"buckets": out.into_iter().map(|(_, b)| b).collect::<Vec<_>>()})
    };
}

/// A `range` bucket's `doc_count` and sub-aggregations, onto the bucket rendered from it.
fn copy_count_and_subs(from: &Value, to: &mut Map<String, Value>) {
    to.insert(
        "doc_count".into(),
        from.get("doc_count").cloned().unwrap_or(json!(0)),
    );
    if let Some(o) = from.as_object() {
        for (k, v) in o {
            if !matches!(
                k.as_str(),
                "key" | "from" | "to" | "doc_count" | "from_as_string" | "to_as_string"
            ) {
                to.insert(k.clone(), v.clone());
            }
        }
    }
}

/// A bucket start as a `range` bound on a date column: tantivy compares nanoseconds, and
/// the bound travels as an f64 (exact only to ~256 ns at today's dates), so it sits half a
/// millisecond before the start: dates are stored in milliseconds, none falls near it.
fn to_bound(ms: i64) -> f64 {
    (ms as f64) * 1e6 - 500_000.0
}

/// The bucket start of a [`to_bound`] bound.
fn from_bound(bound: f64) -> i64 {
    ((bound + 500_000.0) / 1e6).round() as i64
}

/// Renders the rewritten histograms of a final aggregation result back into
/// `date_histogram` buckets.
pub fn restore(result: &mut Value, rewrites: &Rewrites) {
    for r in &rewrites.0 {
        for_each_at(result, &r.path, &mut |agg| render(agg, r));
    }
}

fn render(agg: &mut Value, r: &Rewritten) {
    if let Some((ranges, keyed)) = &r.ranges {
        render_ranges(agg, ranges, *keyed, &r.tz);
        return;
    }
    let buckets: Vec<Value> = match agg.get("buckets") {
        Some(Value::Array(b)) => b.clone(),
        Some(Value::Object(b)) => b.values().cloned().collect(),
        _ => return,
    };
    let mut out: Vec<(i64, Value)> = buckets
        .into_iter()
        .filter_map(|b| {
            let from = from_bound(b.get("from")?.as_f64()?);
            b.get("to")?.as_f64()?;
            let mut bucket = Map::new();
            bucket.insert("key_as_string".into(), json!(format_key(from, &r.tz)));
            bucket.insert("key".into(), json!(from));
            copy_count_and_subs(&b, &mut bucket);
            Some((from, Value::Object(bucket)))
        })
        .collect();
    out.sort_by_key(|(k, _)| *k);
    let count = |b: &Value| b["doc_count"].as_u64().unwrap_or(0);
    if r.min_doc_count > 0 {
        out.retain(|(_, b)| count(b) >= r.min_doc_count);
    } else if !r.extended {
        // Empty buckets only between the first and the last that hold documents.
        let first = out.iter().position(|(_, b)| count(b) > 0);
        let last = out.iter().rposition(|(_, b)| count(b) > 0);
        out = match (first, last) {
            (Some(f), Some(l)) => out[f..=l].to_vec(),
            _ => Vec::new(),
        };
    }
    *agg = json!({"buckets": out.into_iter().map(|(_, b)| b).collect::<Vec<_>>()});
}

/// `key_as_string` as OpenSearch renders dates: milliseconds and the zone's offset.
fn format_key(ms: i64, tz: &TimeZone) -> String {
    match zoned(ms, tz) {
        Ok(z) if z.offset().seconds() == 0 => z.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        Ok(z) => z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn months_quarters_weeks_and_years_have_their_calendar_lengths() {
        let utc = TimeZone::UTC;
        let b = boundaries(
            ms("2024-01-15T10:00:00Z"),
            ms("2024-03-02T00:00:00Z"),
            Unit::Month,
            &utc,
        )
        .unwrap();
        assert_eq!(
            b,
            vec![
                ms("2024-01-01T00:00:00Z"),
                ms("2024-02-01T00:00:00Z"),
                ms("2024-03-01T00:00:00Z"),
                ms("2024-04-01T00:00:00Z")
            ]
        );
        let q = round_down(ms("2024-05-20T00:00:00Z"), Unit::Quarter, &utc).unwrap();
        assert_eq!(q, ms("2024-04-01T00:00:00Z"));
        // 2024-05-01 is a Wednesday: its week starts on Monday 2024-04-29.
        let w = round_down(ms("2024-05-01T12:00:00Z"), Unit::Week, &utc).unwrap();
        assert_eq!(w, ms("2024-04-29T00:00:00Z"));
        assert_eq!(
            next_start(ms("2024-01-01T00:00:00Z"), Unit::Year, &utc).unwrap(),
            ms("2025-01-01T00:00:00Z")
        );
    }

    #[test]
    fn days_follow_the_zone_across_dst() {
        let paris = zone_of("Europe/Paris").unwrap();
        // 2024-03-31 has 23 hours in Paris (clocks go forward at 02:00).
        let start = round_down(ms("2024-03-31T12:00:00Z"), Unit::Day, &paris).unwrap();
        assert_eq!(start, ms("2024-03-30T23:00:00Z"));
        let next = next_start(start, Unit::Day, &paris).unwrap();
        assert_eq!(next - start, 23 * 3_600_000);
        assert_eq!(format_key(start, &paris), "2024-03-31T00:00:00.000+01:00");
        assert_eq!(format_key(next, &paris), "2024-04-01T00:00:00.000+02:00");
        // A fixed offset moves hourly buckets by its minutes.
        let india = zone_of("+05:30").unwrap();
        let h = round_down(ms("2024-01-01T10:10:00Z"), Unit::Fixed(3_600_000), &india).unwrap();
        assert_eq!(h, ms("2024-01-01T09:30:00Z"));
        assert!(zone_of("Mars/Olympus").is_err());
    }

    #[test]
    fn rewrite_and_restore_round_trip() {
        let mut aggs = json!({"by": {"terms": {"field": "k"}, "aggs": {
            "per_month": {"date_histogram": {"field": "@timestamp", "calendar_interval": "month"},
                "aggs": {"m": {"max": {"field": "n"}}}}}}});
        let bounds = |_: &str| Some((ms("2024-01-10T00:00:00Z"), ms("2024-03-10T00:00:00Z")));
        let rw = rewrite(&mut aggs, &bounds).unwrap();
        let inner = &aggs["by"]["aggs"]["per_month"];
        assert_eq!(inner["range"]["ranges"].as_array().unwrap().len(), 3);
        assert!(inner.get("date_histogram").is_none());
        let (jan, feb, mar, apr) = (
            ms("2024-01-01T00:00:00Z"),
            ms("2024-02-01T00:00:00Z"),
            ms("2024-03-01T00:00:00Z"),
            ms("2024-04-01T00:00:00Z"),
        );
        let b = to_bound;
        let mut result = json!({"by": {"buckets": [{"key": "x", "doc_count": 3, "per_month": {"buckets": [
            {"key": "a", "from": b(jan), "to": b(feb), "doc_count": 2, "m": {"value": 5.0}},
            {"key": "b", "from": b(feb), "to": b(mar), "doc_count": 0, "m": {"value": null}},
            {"key": "c", "from": b(mar), "to": b(apr), "doc_count": 1, "m": {"value": 7.0}}
        ]}}]}});
        restore(&mut result, &rw);
        assert_eq!(
            result["by"]["buckets"][0]["per_month"],
            json!({"buckets": [
                {"key_as_string": "2024-01-01T00:00:00.000Z", "key": jan, "doc_count": 2, "m": {"value": 5.0}},
                {"key_as_string": "2024-02-01T00:00:00.000Z", "key": feb, "doc_count": 0, "m": {"value": null}},
                {"key_as_string": "2024-03-01T00:00:00.000Z", "key": mar, "doc_count": 1, "m": {"value": 7.0}}
            ]})
        );
        // Fixed intervals in UTC stay with tantivy.
        let mut plain =
            json!({"h": {"date_histogram": {"field": "@timestamp", "fixed_interval": "1h"}}});
        assert!(rewrite(&mut plain, &bounds).unwrap().0.is_empty());
    }
}
