//! OpenSearch's rules for index names.

use crate::MetastoreError;

/// Rejects names OpenSearch rejects (uppercase, reserved characters, leading `_ - +`, ...).
pub fn validate_index_name(name: &str) -> Result<(), MetastoreError> {
    let bad = |why: &str| {
        Err(MetastoreError::InvalidIndexName {
            name: name.to_string(),
            reason: why.to_string(),
        })
    };
    if name.is_empty() {
        return bad("must not be empty");
    }
    if name.len() > 255 {
        return bad("index name is too long, (> 255)");
    }
    if name == "." || name == ".." {
        return bad("must not be '.' or '..'");
    }
    if name.starts_with(['_', '-', '+']) {
        return bad("must not start with '_', '-', or '+'");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return bad("must be lowercase");
    }
    if name.contains(['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':']) {
        return bad(
            "must not contain the following characters [ , \", *, \\, <, |, ,, >, /, ?, #, :]",
        );
    }
    Ok(())
}

/// The shard a document belongs to: murmur3 of its routing key (`routing` or `_id`).
/// Writers route with it, searchers limit a routed search's shards with it.
pub fn shard_for(key: &str, num_shards: u32) -> u32 {
    let hash = murmur3::murmur3_32(&mut std::io::Cursor::new(key.as_bytes()), 0).unwrap_or(0);
    hash % num_shards.max(1)
}

/// Nested JSON objects as flat dotted keys (`{"a": {"b": 1}}` → `{"a.b": 1}`): settings
/// may be written either way and must compare and merge alike.
pub fn flatten_keys(v: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    fn walk(
        prefix: &str,
        v: &serde_json::Value,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            leaf => {
                out.insert(prefix.to_string(), leaf.clone());
            }
        }
    }
    let mut out = serde_json::Map::new();
    walk("", v, &mut out);
    out
}

/// Whether `name` matches `pattern`, where `*` stands for any run of characters.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_index_name("logs-2024.01").is_ok());
        for bad in ["", "Logs", "_x", "a b", "a*", "a/b", ".."] {
            assert!(validate_index_name(bad).is_err(), "{bad}");
        }
    }
}
