//! Date bounds in queries: ISO 8601, epoch millis, or date math (`now-1d/d`,
//! `2024-01-01||+1M/M`) with calendar units in UTC, rounded as OpenSearch rounds each kind
//! of range bound.

use floe_proto::mapping::parse_date;
use serde_json::Value;

/// A date bound: ISO 8601, epoch millis, or date math (`now-1d/d`,
/// `2024-01-01||+1M/M`) with calendar units in UTC. Rounding (`/d`) goes down to the start of
/// the unit; see [`date_value_rounding_up`] for `gt` and `lte` bounds.
pub fn date_value(value: &Value) -> Option<i64> {
    date_value_rounding(value, false)
}

/// [`date_value`] with rounding up to the last millisecond of the unit, as OpenSearch rounds
/// `gt` and `lte` bounds (`lte: now/d` takes in all of today).
pub fn date_value_rounding_up(value: &Value) -> Option<i64> {
    date_value_rounding(value, true)
}

/// Whether `value` is date math (`now…` or `<date>||…`), whose rounding depends on the bound.
pub fn is_date_math(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| s.starts_with("now") || s.contains("||"))
}

fn date_value_rounding(value: &Value, up: bool) -> Option<i64> {
    if let Some(s) = value.as_str() {
        if let Some(rest) = s.strip_prefix("now") {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_nanos() as i64;
            return date_math(now, rest, up);
        }
        if let Some((base, math)) = s.split_once("||") {
            return date_math(parse_date(&Value::String(base.to_string()))?, math, up);
        }
    }
    parse_date(value)
}

/// One date math unit as a span of `n` of it.
fn unit_span(unit: char, n: i64) -> Option<jiff::Span> {
    let span = jiff::Span::new();
    Some(match unit {
        'y' => span.try_years(n).ok()?,
        'M' => span.try_months(n).ok()?,
        'w' => span.try_weeks(n).ok()?,
        'd' => span.try_days(n).ok()?,
        'h' | 'H' => span.try_hours(n).ok()?,
        'm' => span.try_minutes(n).ok()?,
        's' => span.try_seconds(n).ok()?,
        _ => return None,
    })
}

/// The start of the `unit` holding `z` (weeks start on Monday).
fn round_down(z: &jiff::ZonedDateTime, unit: char) -> Option<jiff::ZonedDateTime> {
    let with = z.with().subsec_nanosecond(0);
    Some(match unit {
        'y' => z.first_of_year().ok()?.start_of_day().ok()?,
        'M' => z.first_of_month().ok()?.start_of_day().ok()?,
        'w' => {
            let back = z.weekday().to_monday_zero_offset() as i64;
            z.checked_sub(unit_span('d', back)?)
                .ok()?
                .start_of_day()
                .ok()?
        }
        'd' => z.start_of_day().ok()?,
        'h' | 'H' => with.minute(0).second(0).build().ok()?,
        'm' => with.second(0).build().ok()?,
        's' => with.build().ok()?,
        _ => return None,
    })
}

/// Applies date math (`-1d`, `+2M`, `/d`) to `t` (ns). With `up`, a final rounding goes to
/// the last millisecond of its unit instead of the first.
fn date_math(t: i64, mut expr: &str, up: bool) -> Option<i64> {
    let mut z = jiff::Timestamp::from_nanosecond(t as i128)
        .ok()?
        .to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let mut last_rounding = None;
    while !expr.is_empty() {
        let op = expr.chars().next()?;
        expr = &expr[1..];
        match op {
            '+' | '-' => {
                let digits = expr
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(expr.len());
                let n: i64 = if digits == 0 {
                    1
                } else {
                    expr[..digits].parse().ok()?
                };
                let span = unit_span(expr[digits..].chars().next()?, n)?;
                z = if op == '+' {
                    z.checked_add(span).ok()?
                } else {
                    z.checked_sub(span).ok()?
                };
                expr = &expr[digits + 1..];
                last_rounding = None;
            }
            '/' => {
                let unit = expr.chars().next()?;
                z = round_down(&z, unit)?;
                expr = &expr[1..];
                last_rounding = Some(unit);
            }
            _ => return None,
        }
    }
    if let (true, Some(unit)) = (up, last_rounding) {
        z = z
            .checked_add(unit_span(unit, 1)?)
            .ok()?
            .checked_sub(jiff::Span::new().milliseconds(1))
            .ok()?;
    }
    Some(z.timestamp().as_nanosecond() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn date_math_works() {
        let base = parse_date(&json!("2024-01-01T10:30:00Z")).unwrap();
        assert_eq!(
            date_value(&json!("2024-01-01T10:30:00Z||-30m")),
            Some(base - 30 * 60 * 1_000_000_000)
        );
        assert_eq!(
            date_value(&json!("2024-01-01T10:30:00Z||/d")),
            parse_date(&json!("2024-01-01"))
        );
        assert!(date_value(&json!("now-1h")).is_some());
        // Calendar units: months and years are not fixed lengths; weeks start on Monday.
        let at = |s: &str| parse_date(&json!(s)).unwrap();
        for (math, down, up) in [
            (
                "2024-01-31T10:30:00Z||+1M",
                "2024-02-29T10:30:00Z",
                "2024-02-29T10:30:00Z",
            ),
            (
                "2024-03-15T10:30:00Z||/M",
                "2024-03-01T00:00:00Z",
                "2024-03-31T23:59:59.999Z",
            ),
            (
                "2024-03-15T10:30:00Z||/w",
                "2024-03-11T00:00:00Z",
                "2024-03-17T23:59:59.999Z",
            ),
            (
                "2024-03-15T10:30:00Z||-1y/y",
                "2023-01-01T00:00:00Z",
                "2023-12-31T23:59:59.999Z",
            ),
            (
                "2024-03-15T10:30:00Z||/d+1h",
                "2024-03-15T01:00:00Z",
                "2024-03-15T01:00:00Z",
            ),
        ] {
            assert_eq!(date_value(&json!(math)), Some(at(down)), "{math}");
            assert_eq!(
                date_value_rounding_up(&json!(math)),
                Some(at(up)),
                "{math} up"
            );
        }
    }
}
