//! Request and byte counters, so tests and the bench can see what reached the bucket.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub gets: AtomicU64,
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub lists: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// Failed requests (after retries) per operation, expected answers such as "not
    /// found" excluded.
    pub get_errors: AtomicU64,
    pub put_errors: AtomicU64,
    pub delete_errors: AtomicU64,
    pub list_errors: AtomicU64,
}

/// A kind of request, for error counts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Op {
    Get,
    Put,
    Delete,
    List,
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StorageStats {
    pub gets: u64,
    pub puts: u64,
    pub deletes: u64,
    pub lists: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub get_errors: u64,
    pub put_errors: u64,
    pub delete_errors: u64,
    pub list_errors: u64,
}

impl Counters {
    pub fn snapshot(&self) -> StorageStats {
        StorageStats {
            gets: self.gets.load(Ordering::Relaxed),
            puts: self.puts.load(Ordering::Relaxed),
            deletes: self.deletes.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
            get_errors: self.get_errors.load(Ordering::Relaxed),
            put_errors: self.put_errors.load(Ordering::Relaxed),
            delete_errors: self.delete_errors.load(Ordering::Relaxed),
            list_errors: self.list_errors.load(Ordering::Relaxed),
        }
    }

    pub fn failed(&self, op: Op) {
        let counter = match op {
            Op::Get => &self.get_errors,
            Op::Put => &self.put_errors,
            Op::Delete => &self.delete_errors,
            Op::List => &self.list_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self, bytes: usize) {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn wrote(&self, bytes: usize) {
        self.puts.fetch_add(1, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
