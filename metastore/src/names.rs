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
