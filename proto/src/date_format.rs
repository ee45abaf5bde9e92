//! OpenSearch date formats: the `format` of a `date` mapping (how values are read when
//! indexed and how range bounds on the field are read), and of `date_histogram` and
//! `fields` (how dates are written back). A format is a `||`-separated list of named
//! formats (`strict_date_optional_time`, `epoch_millis`, `basic_date`, …) and Java-style
//! patterns (`yyyy-MM-dd HH:mm:ss`, `dd/MM/yyyy`); a value is read with the first
//! alternative that accepts it, and written with the first alternative.

use jiff::fmt::strtime::{self, BrokenDownTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde_json::Value;

/// A parsed `format`.
#[derive(Clone, Debug, PartialEq)]
pub struct DateFormat {
    alternatives: Vec<Alternative>,
}

#[derive(Clone, Debug, PartialEq)]
enum Alternative {
    EpochMillis,
    EpochSecond,
    /// ISO 8601 / RFC 3339 as [`crate::mapping::parse_date_str`] reads it.
    Iso,
    /// A Java pattern translated to `strftime` directives.
    Pattern(String),
}

/// Named formats that are patterns, by their OpenSearch names (the `strict_` forms alike).
const NAMED_PATTERNS: &[(&str, &str)] = &[
    ("date", "yyyy-MM-dd"),
    ("year_month_day", "yyyy-MM-dd"),
    ("year_month", "yyyy-MM"),
    ("year", "yyyy"),
    ("basic_date", "yyyyMMdd"),
    ("basic_date_time", "yyyyMMdd'T'HHmmss.SSSZ"),
    ("basic_date_time_no_millis", "yyyyMMdd'T'HHmmssZ"),
    ("date_hour", "yyyy-MM-dd'T'HH"),
    ("date_hour_minute", "yyyy-MM-dd'T'HH:mm"),
    ("date_hour_minute_second", "yyyy-MM-dd'T'HH:mm:ss"),
    (
        "date_hour_minute_second_millis",
        "yyyy-MM-dd'T'HH:mm:ss.SSS",
    ),
    (
        "date_hour_minute_second_fraction",
        "yyyy-MM-dd'T'HH:mm:ss.SSS",
    ),
    ("hour_minute", "HH:mm"),
    ("hour_minute_second", "HH:mm:ss"),
    ("hour_minute_second_millis", "HH:mm:ss.SSS"),
];

/// Named formats read as ISO 8601.
const ISO_NAMES: &[&str] = &[
    "date_optional_time",
    "date_optional_time_nanos",
    "date_time",
    "date_time_no_millis",
    "iso8601",
];

impl DateFormat {
    /// Parses a format (`yyyy-MM-dd||epoch_millis`); an error names what is not a format.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let alternatives = spec
            .split("||")
            .map(|alt| {
                let alt = alt.trim();
                let name = alt.strip_prefix("strict_").unwrap_or(alt);
                if name == "epoch_millis" {
                    return Ok(Alternative::EpochMillis);
                }
                if name == "epoch_second" {
                    return Ok(Alternative::EpochSecond);
                }
                if ISO_NAMES.contains(&name) {
                    return Ok(Alternative::Iso);
                }
                let pattern = NAMED_PATTERNS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(alt, |(_, p)| p);
                java_to_strftime(pattern)
                    .map(Alternative::Pattern)
                    .map_err(|e| format!("Invalid format: [{spec}]: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(DateFormat { alternatives })
    }

    /// Whether the format is the default one (ISO or epoch millis), which
    /// [`crate::mapping::parse_date`] reads without it.
    pub fn is_default(&self) -> bool {
        self.alternatives
            .iter()
            .all(|a| matches!(a, Alternative::Iso | Alternative::EpochMillis))
    }

    /// A JSON value (string or number) as nanoseconds since the epoch, if an alternative
    /// reads it. Numbers are epoch millis or seconds as the format says (epoch millis when
    /// the format has neither: OpenSearch reads a number's digits as text, and a pattern of
    /// digits alone is rare).
    pub fn read(&self, value: &Value) -> Option<i64> {
        match value {
            Value::String(s) => self.read_str(s),
            Value::Number(n) => {
                let seconds = self
                    .alternatives
                    .iter()
                    .find(|a| matches!(a, Alternative::EpochMillis | Alternative::EpochSecond))
                    == Some(&Alternative::EpochSecond);
                let f = n.as_f64()?;
                Some(if seconds { f * 1e9 } else { f * 1e6 } as i64)
            }
            _ => None,
        }
    }

    /// A string as nanoseconds since the epoch, if an alternative reads it.
    pub fn read_str(&self, s: &str) -> Option<i64> {
        self.alternatives.iter().find_map(|a| match a {
            Alternative::EpochMillis => epoch(s, 1_000_000),
            Alternative::EpochSecond => epoch(s, 1_000_000_000),
            Alternative::Iso => crate::mapping::parse_date_str(s),
            Alternative::Pattern(p) => read_pattern(p, s),
        })
    }

    /// Writes a date (ms since the epoch) in the first alternative, in `tz`.
    pub fn write(&self, ms: i64, tz: &TimeZone) -> String {
        match self.alternatives.first() {
            Some(Alternative::EpochMillis) => ms.to_string(),
            Some(Alternative::EpochSecond) => ms.div_euclid(1000).to_string(),
            Some(Alternative::Pattern(p)) => Timestamp::from_millisecond(ms)
                .ok()
                .and_then(|t| strtime::format(p.as_str(), &t.to_zoned_datetime(tz.clone())).ok())
                .unwrap_or_default(),
            Some(Alternative::Iso) | None => match Timestamp::from_millisecond(ms) {
                Ok(t) if tz == &TimeZone::UTC => t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                Ok(t) => t
                    .to_zoned_datetime(tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%.3f%:z")
                    .to_string(),
                Err(_) => String::new(),
            },
        }
    }
}

/// Runs `f` with the parsed `spec`, parsed once per thread (formats are few and values
/// many); `None` if `spec` is not a format.
pub fn with_format<R>(spec: &str, f: impl FnOnce(&DateFormat) -> R) -> Option<R> {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::rc::Rc;
    thread_local! {
        static PARSED: RefCell<HashMap<String, Option<Rc<DateFormat>>>> = RefCell::default();
    }
    let parsed = PARSED.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() > 1024 {
            cache.clear();
        }
        cache
            .entry(spec.to_string())
            .or_insert_with(|| DateFormat::parse(spec).ok().map(Rc::new))
            .clone()
    })?;
    Some(f(&parsed))
}

/// A date value of a field with format `spec` (`None`: the default format) as nanoseconds
/// since the epoch.
pub fn read_date(spec: Option<&str>, value: &Value) -> Option<i64> {
    match spec {
        Some(spec) => with_format(spec, |f| {
            if f.is_default() {
                crate::mapping::parse_date(value)
            } else {
                f.read(value)
            }
        })
        .flatten(),
        None => crate::mapping::parse_date(value),
    }
}

fn epoch(s: &str, unit_ns: i64) -> Option<i64> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let int_digits = int.strip_prefix('-').unwrap_or(int);
    if int_digits.is_empty() || !digits(int_digits) || !digits(frac) {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    Some((f * unit_ns as f64) as i64)
}

/// Reads `s` with a `strftime` pattern; a missing month or day is the first, a missing
/// time midnight, a missing offset UTC.
fn read_pattern(pattern: &str, s: &str) -> Option<i64> {
    let mut parts: BrokenDownTime = strtime::parse(pattern, s).ok()?;
    if parts.offset().is_some() {
        return parts.to_timestamp().ok().map(ns_of);
    }
    if parts.year().is_none() {
        parts.set_year(Some(1970)).ok()?;
    }
    if parts.month().is_none() {
        parts.set_month(Some(1)).ok()?;
    }
    if parts.day().is_none() {
        parts.set_day(Some(1)).ok()?;
    }
    let civil = parts.to_datetime().ok()?;
    TimeZone::UTC.to_timestamp(civil).ok().map(ns_of)
}

fn ns_of(t: Timestamp) -> i64 {
    t.as_nanosecond() as i64
}

/// Translates a Java date pattern (`yyyy-MM-dd'T'HH:mm:ss.SSSZ`) into `strftime`
/// directives; letters it does not know are an error (they would silently mean nothing).
fn java_to_strftime(pattern: &str) -> Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            // Quoted literal; '' is a quote.
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            let end = chars[i + 1..]
                .iter()
                .position(|&q| q == '\'')
                .ok_or("unterminated quote")?;
            for &l in &chars[i + 1..i + 1 + end] {
                push_literal(&mut out, l);
            }
            i += end + 2;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            push_literal(&mut out, c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&x| x == c).count();
        let directive = match (c, run) {
            ('y' | 'u' | 'Y', 2) => "%y".to_string(),
            ('y' | 'u' | 'Y', _) => "%Y".to_string(),
            ('M', 1) => "%-m".to_string(),
            ('M', 2) => "%m".to_string(),
            ('M', 3) => "%b".to_string(),
            ('M', _) => "%B".to_string(),
            ('d', 1) => "%-d".to_string(),
            ('d', _) => "%d".to_string(),
            ('D', _) => "%j".to_string(),
            ('H', 1) => "%-H".to_string(),
            ('H', _) => "%H".to_string(),
            ('h', 1) => "%-I".to_string(),
            ('h', _) => "%I".to_string(),
            ('m', _) => "%M".to_string(),
            ('s', _) => "%S".to_string(),
            ('S', n) => format!("%{}f", n.min(9)),
            ('a', _) => "%p".to_string(),
            ('E', 1..=3) => "%a".to_string(),
            ('E', _) => "%A".to_string(),
            ('Z', 1 | 2) | ('X', 1 | 2) | ('x', 1 | 2) => "%z".to_string(),
            ('Z', _) | ('X', _) | ('x', _) => "%:z".to_string(),
            (other, _) => return Err(format!("unknown pattern letter [{other}]")),
        };
        out.push_str(&directive);
        i += run;
    }
    Ok(out)
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 86_400_000_000_000;

    #[test]
    fn patterns_read_and_write() {
        let f = DateFormat::parse("yyyy-MM-dd HH:mm:ss||epoch_millis").unwrap();
        let ns = f.read(&json!("2024-03-05 10:20:30")).unwrap();
        assert_eq!(ns, 1_709_634_030_000_000_000);
        assert_eq!(f.read(&json!(1_709_634_030_000i64)), Some(ns));
        assert_eq!(f.read(&json!("1709634030000")), Some(ns));
        // ISO is not one of its alternatives.
        assert_eq!(f.read(&json!("2024-03-05T10:20:30Z")), None);
        assert_eq!(
            f.write(ns / 1_000_000, &TimeZone::UTC),
            "2024-03-05 10:20:30"
        );
        let dmy = DateFormat::parse("dd/MM/yyyy").unwrap();
        assert_eq!(dmy.read_str("05/03/2024"), Some(19_787 * DAY));
        assert_eq!(dmy.read_str("2024-03-05"), None);
        let basic = DateFormat::parse("basic_date_time").unwrap();
        assert_eq!(
            basic.read_str("20240305T102030.500+0100"),
            Some(1_709_630_430_500_000_000)
        );
        let year = DateFormat::parse("strict_year").unwrap();
        assert_eq!(year.read_str("2024"), Some(19_723 * DAY));
        let seconds = DateFormat::parse("epoch_second").unwrap();
        assert_eq!(
            seconds.read(&json!(1_700_000_000)),
            Some(1_700_000_000 * 1_000_000_000)
        );
        assert_eq!(
            seconds.write(1_700_000_000_123, &TimeZone::UTC),
            "1700000000"
        );
        assert!(DateFormat::parse("strict_date_optional_time||epoch_millis")
            .unwrap()
            .is_default());
    }

    #[test]
    fn unknown_letters_are_errors() {
        assert!(DateFormat::parse("yyyy-qq").is_err());
        assert!(DateFormat::parse("yyyy 'unterminated").is_err());
        assert_eq!(
            java_to_strftime("yyyy-MM-dd'T'HH:mm:ss.SSSXXX").unwrap(),
            "%Y-%m-%dT%H:%M:%S.%3f%:z"
        );
    }
}
