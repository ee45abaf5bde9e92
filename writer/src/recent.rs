//! Acknowledged writes that no published commit holds yet, by `_id`: what a realtime `GET`
//! answers and the live version an overwrite builds on, until a publish covers them.
//!
//! Documents with generated ids are the bulk of log ingest and are almost never read back
//! before the next refresh, so they go to an append-only list (in sequence order, cheap to
//! add and to trim) plus a set of id hashes; a lookup scans the list only when the hash is
//! present. Explicit ids go to a map.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::shard::RecentWrite;

/// FNV-1a: hashes of generated ids (already random), computed once per document.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

fn hash(id: &str) -> u64 {
    let mut h = Fnv::default();
    h.write(id.as_bytes());
    h.finish()
}

/// Identity hashing for keys that are hashes already.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n
    }
}

#[derive(Default)]
pub struct RecentWrites {
    by_id: HashMap<String, RecentWrite>,
    generated: VecDeque<(String, RecentWrite)>,
    generated_hashes: HashSet<u64, BuildHasherDefault<Identity>>,
}

impl RecentWrites {
    /// Records a write of an explicit id (replacing an earlier one; for a generated id, the
    /// map entry takes precedence over the list's).
    pub fn put(&mut self, id: String, write: RecentWrite) {
        self.by_id.insert(id, write);
    }

    /// Records the first write of a generated id.
    pub fn put_generated(&mut self, id: String, write: RecentWrite) {
        self.generated_hashes.insert(hash(&id));
        self.generated.push_back((id, write));
    }

    pub fn get(&self, id: &str) -> Option<&RecentWrite> {
        if let Some(w) = self.by_id.get(id) {
            return Some(w);
        }
        if !self.generated_hashes.contains(&hash(id)) {
            return None;
        }
        self.generated
            .iter()
            .rev()
            .find(|(g, _)| g == id)
            .map(|(_, w)| w)
    }

    /// Forgets writes below `checkpoint` (a published commit holds them).
    pub fn covered(&mut self, checkpoint: u64) {
        self.by_id.retain(|_, w| w.seq_no >= checkpoint);
        while self
            .generated
            .front()
            .is_some_and(|(_, w)| w.seq_no < checkpoint)
        {
            if let Some((id, _)) = self.generated.pop_front() {
                self.generated_hashes.remove(&hash(&id));
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty() && self.generated.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(seq: u64) -> RecentWrite {
        RecentWrite {
            version: 1,
            seq_no: seq,
            primary_term: 1,
            source: Some(bytes::Bytes::from_static(b"{}")),
            routing: None,
        }
    }

    #[test]
    fn generated_and_explicit_ids_are_found_until_covered() {
        let mut r = RecentWrites::default();
        r.put_generated("g1".into(), w(0));
        r.put("e1".into(), w(1));
        r.put_generated("g2".into(), w(2));
        let mut over = w(3);
        over.version = 2;
        r.put("g1".into(), over); // explicit overwrite of a generated id
        assert_eq!(r.get("g1").unwrap().version, 2);
        assert_eq!(r.get("g2").unwrap().seq_no, 2);
        assert!(r.get("nope").is_none());
        r.covered(3);
        assert!(r.get("g2").is_none() && r.get("e1").is_none());
        assert_eq!(r.get("g1").unwrap().seq_no, 3);
        r.covered(4);
        assert!(r.is_empty());
    }
}
