//! Generated document ids, shaped like OpenSearch's time-based ids: 20 URL-safe base64
//! characters of (milliseconds, sequence, process-random bytes). Ids generated close in time
//! share long prefixes, so tantivy's term dictionary stores them compactly, and two
//! processes never generate the same id.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

fn node_bytes() -> &'static [u8; 6] {
    static NODE: OnceLock<[u8; 6]> = OnceLock::new();
    NODE.get_or_init(|| {
        let random = uuid::Uuid::new_v4();
        let mut b = [0u8; 6];
        b.copy_from_slice(&random.as_bytes()[..6]);
        b
    })
}

/// A new, unique `_id`.
pub fn generate_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let mut raw = [0u8; 15];
    raw[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    raw[6..9].copy_from_slice(&seq.to_be_bytes()[5..]);
    raw[9..].copy_from_slice(node_bytes());
    URL_SAFE_NO_PAD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_short_and_share_prefixes() {
        let ids: Vec<String> = (0..10_000).map(|_| generate_id()).collect();
        let unique: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        assert!(ids.iter().all(|id| id.len() == 20));
        assert_eq!(
            ids[0][..5],
            ids[1][..5],
            "same millisecond range, same prefix"
        );
    }
}
