//! `ip` fields in queries. Addresses are kept as keywords in their canonical text form (the
//! writer normalizes them), so exact values are terms; a CIDR block (`10.0.0.0/8`) or a
//! range of IPv4 addresses becomes a regular expression over the dotted text: the range
//! is split into CIDR blocks, and each block fixes its whole octets and spans the values of
//! its partial octet.

use std::net::{IpAddr, Ipv4Addr};

use crate::SearchError;

fn bad(reason: String) -> SearchError {
    SearchError::QueryShard(reason)
}

/// An address in canonical text (`::ffff:1.2.3.4` → `1.2.3.4`), or why it is none.
pub fn canonical(s: &str) -> Result<String, SearchError> {
    s.trim()
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical().to_string())
        .map_err(|_| bad(format!("'{s}' is not an IP string literal.")))
}

/// What a term on an `ip` field asks for: one address, or a CIDR block of IPv4 addresses as
/// a regular expression.
pub enum IpTerm {
    Exact(String),
    Pattern(String),
}

/// A term value (`10.1.2.3`, `10.0.0.0/8`).
pub fn term(s: &str) -> Result<IpTerm, SearchError> {
    let Some((addr, len)) = s.split_once('/') else {
        return canonical(s).map(IpTerm::Exact);
    };
    let len: u32 = len
        .parse()
        .map_err(|_| bad(format!("invalid CIDR prefix length in [{s}]")))?;
    match addr.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(ip)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            let lo = u32::from(ip) & mask;
            Ok(IpTerm::Pattern(range_pattern(lo, lo | !mask)))
        }
        Ok(IpAddr::V6(_)) => Err(SearchError::IllegalArgument(format!(
            "CIDR blocks of IPv6 addresses ([{s}]) are not supported by Floe"
        ))),
        _ => Err(bad(format!("'{s}' is not a valid CIDR block"))),
    }
}

/// An IPv4 address as a number (ranges are over IPv4 only).
pub fn v4(s: &str) -> Result<u32, SearchError> {
    match s.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(ip)) => Ok(u32::from(ip)),
        Ok(IpAddr::V6(_)) => Err(SearchError::IllegalArgument(format!(
            "ranges of IPv6 addresses ([{s}]) are not supported by Floe"
        ))),
        Err(_) => Err(bad(format!("'{s}' is not an IP string literal."))),
    }
}

/// The IPv4 addresses in `[lo, hi]` as a regular expression; `None` when there are none.
pub fn range(lo: u32, hi: u32) -> Option<String> {
    (lo <= hi).then(|| range_pattern(lo, hi))
}

/// `[lo, hi]` as the union of its CIDR blocks, each as a pattern.
fn range_pattern(lo: u32, hi: u32) -> String {
    let mut blocks = Vec::new();
    let mut at = lo as u64;
    while at <= hi as u64 {
        // The largest block starting at `at` that stays within `hi`.
        let mut size: u64 = if at == 0 {
            1 << 32
        } else {
            1 << at.trailing_zeros()
        };
        while at + size - 1 > hi as u64 {
            size >>= 1;
        }
        blocks.push(block_pattern(at as u32, size.trailing_zeros()));
        at += size;
    }
    format!("(?:{})", blocks.join("|"))
}

/// The addresses of a block of `2^free_bits` starting at `base`: whole octets fixed, the
/// partial octet as the list of its values, the free octets as any number.
fn block_pattern(base: u32, free_bits: u32) -> String {
    let octets = Ipv4Addr::from(base).octets();
    let fixed = (32 - free_bits) / 8;
    let mut parts: Vec<String> = octets[..fixed as usize]
        .iter()
        .map(|o| o.to_string())
        .collect();
    if fixed < 4 {
        let partial_free = free_bits - 8 * (3 - fixed);
        let first = octets[fixed as usize] as u32;
        let last = first + (1 << partial_free) - 1;
        parts.push(if partial_free == 8 {
            "[0-9]{1,3}".to_string()
        } else {
            let values: Vec<String> = (first..=last).map(|v| v.to_string()).collect();
            format!("(?:{})", values.join("|"))
        });
        for _ in fixed + 1..4 {
            parts.push("[0-9]{1,3}".to_string());
        }
    }
    parts.join("\\.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, ip: &str) -> bool {
        let re = tantivy_fst::Regex::new(pattern).unwrap();
        let mut state = re.start();
        use tantivy_fst::Automaton;
        for b in ip.bytes() {
            state = re.accept(&state, b);
        }
        re.is_match(&state)
    }

    #[test]
    fn cidr_blocks_and_ranges_match_exactly_their_addresses() {
        let IpTerm::Pattern(p) = term("192.168.16.0/20").unwrap() else {
            panic!("a block is a pattern")
        };
        for (ip, inside) in [
            ("192.168.16.0", true),
            ("192.168.31.255", true),
            ("192.168.15.255", false),
            ("192.168.32.0", false),
            ("192.168.1.16", false),
        ] {
            assert_eq!(matches(&p, ip), inside, "{ip} in /20");
        }
        let p = range(v4("10.0.0.250").unwrap(), v4("10.0.1.3").unwrap()).unwrap();
        for (ip, inside) in [
            ("10.0.0.249", false),
            ("10.0.0.250", true),
            ("10.0.0.255", true),
            ("10.0.1.0", true),
            ("10.0.1.3", true),
            ("10.0.1.4", false),
        ] {
            assert_eq!(matches(&p, ip), inside, "{ip} in range");
        }
        let IpTerm::Pattern(all) = term("0.0.0.0/0").unwrap() else {
            panic!()
        };
        assert!(matches(&all, "255.255.255.255") && matches(&all, "0.0.0.0"));
        assert!(matches(&range(0, u32::MAX).unwrap(), "8.8.8.8"));
        assert!(range(2, 1).is_none());
        assert!(v4("::1").is_err() && v4("x").is_err());
        assert!(matches!(term("::ffff:10.1.2.3").unwrap(), IpTerm::Exact(s) if s == "10.1.2.3"));
        assert!(term("10.1.2/8").is_err() && term("nope").is_err() && term("::1/64").is_err());
    }
}
