//! The storage layer against both backends: large segment files go up as multipart uploads
//! streamed from the local file, create-only like every other segment object.

use floe_storage::{S3Config, Storage, StorageConfig, StorageError};
use floe_tests::*;

/// 12 MiB and a bit of bytes that do not repeat in any part-sized window.
fn content() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..(12 << 20) + 12_345)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Uploads a file in 5 MiB parts (S3's smallest) from a handle whose path was already
/// deleted, as a merge may delete a file while the refresh that snapshot it uploads it.
async fn streamed_upload(storage: Storage) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seg.store");
    let bytes = content();
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let before = storage.stats();
    storage
        .put_file_if_absent(
            "segments/0000000001/seg.store",
            file,
            bytes.len() as u64,
            5 << 20,
        )
        .await
        .expect("streamed upload");
    let after = storage.stats();
    assert_eq!(after.puts - before.puts, 3, "three parts");
    assert_eq!(
        after.bytes_written - before.bytes_written,
        bytes.len() as u64
    );
    let got = storage.get("segments/0000000001/seg.store").await.unwrap();
    assert_eq!(got.len(), bytes.len());
    assert!(got[..] == bytes[..], "the object differs from the file");
    // Create-only: a second upload under the same key is refused, the object unchanged.
    std::fs::write(&path, b"other").unwrap();
    let again = storage
        .put_file_if_absent(
            "segments/0000000001/seg.store",
            std::fs::File::open(&path).unwrap(),
            5,
            5 << 20,
        )
        .await;
    assert!(
        matches!(again, Err(StorageError::AlreadyExists(_))),
        "{again:?}"
    );
    assert_eq!(
        storage.size("segments/0000000001/seg.store").await.unwrap(),
        bytes.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_upload_local() {
    let dir = tempfile::tempdir().unwrap();
    streamed_upload(Storage::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_upload_s3() {
    let moto = MotoServer::start("floe-storage").await;
    let config = StorageConfig {
        s3: Some(S3Config {
            endpoint: Some(moto.endpoint()),
            bucket: moto.bucket.clone(),
            region: Some("us-east-1".into()),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            virtual_hosted_style: false,
        }),
        prefix: "multipart".into(),
        ..StorageConfig::default()
    };
    streamed_upload(Storage::open(&config).unwrap()).await;
}
