//! The writer's local scratch directory for a shard: tantivy's `MmapDirectory` without
//! `fsync`. The local copy is disposable — every acknowledged write is in the translog in
//! the bucket and every commit that matters is uploaded — so syncing it to disk buys no
//! durability and costs a dozen `fsync`s per tantivy commit (per refresh, per shard).
//!
//! A shard taken over from the bucket starts with its committed files *remote*: tantivy
//! reads them by range through the block cache, so the shard opens (and takes writes) at
//! once, whatever its size. Hydration copies them to local disk in the background; each
//! file read locally from then on.

use std::collections::HashMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use floe_cache::{BlockCache, RemoteFile};

use tantivy::directory::error::{DeleteError, OpenDirectoryError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    AntiCallToken, Directory, FileHandle, MmapDirectory, TerminatingWrite, WatchCallback,
    WatchHandle, WritePtr,
};

/// Committed files not on local disk (yet), by name.
type RemoteFiles = Arc<RwLock<HashMap<PathBuf, RemoteFile>>>;

#[derive(Clone, Debug)]
pub struct ScratchDirectory {
    root: PathBuf,
    inner: MmapDirectory,
    remote: RemoteFiles,
    /// The block cache and the runtime its fetches run on (with remote files only).
    blocks: Option<(BlockCache, tokio::runtime::Handle)>,
    /// False once the shard closed: hydration stops and writes nothing more here.
    open: Arc<std::sync::Mutex<bool>>,
}

impl ScratchDirectory {
    /// A directory of local files only.
    pub fn open(root: &Path) -> Result<ScratchDirectory, OpenDirectoryError> {
        Ok(ScratchDirectory {
            root: root.to_path_buf(),
            inner: MmapDirectory::open(root)?,
            remote: Arc::default(),
            blocks: None,
            open: Arc::new(std::sync::Mutex::new(true)),
        })
    }

    /// Local files plus `remote` ones read from the bucket through `blocks` until
    /// [`ScratchDirectory::hydrate`] has copied them here. Inside the tokio runtime.
    pub fn with_remote(
        root: &Path,
        remote: HashMap<PathBuf, RemoteFile>,
        blocks: BlockCache,
    ) -> Result<ScratchDirectory, OpenDirectoryError> {
        Ok(ScratchDirectory {
            remote: Arc::new(RwLock::new(remote)),
            blocks: Some((blocks, tokio::runtime::Handle::current())),
            ..ScratchDirectory::open(root)?
        })
    }

    /// The shard closed: a hydration still running stops without writing anything more.
    pub fn close(&self) {
        *self.open.lock().expect("open lock") = false;
    }

    /// Files still read from the bucket.
    pub fn remote_files(&self) -> Vec<(PathBuf, RemoteFile)> {
        let remote = self.remote.read().expect("remote lock");
        remote.iter().map(|(p, f)| (p.clone(), f.clone())).collect()
    }

    /// Copies the remote files to local disk, a few at a time; each is read locally once
    /// it is whole. A file tantivy deleted meanwhile (merged away) is not kept. Returns
    /// how many were copied.
    pub async fn hydrate(&self, parallel: usize) -> Result<usize, floe_cache::CacheError> {
        use futures::{StreamExt, TryStreamExt};
        let Some((blocks, _)) = self.blocks.clone() else {
            return Ok(0);
        };
        let copied = futures::stream::iter(self.remote_files())
            .map(|(path, file)| {
                let blocks = blocks.clone();
                async move {
                    let bytes = blocks.fetch_whole(&file.key, file.len).await?;
                    let local = self.root.join(&path);
                    // `<name>.hydrating`: unique per file (all of a segment share a stem).
                    let mut tmp_name = path.as_os_str().to_os_string();
                    tmp_name.push(".hydrating");
                    let tmp = self.root.join(tmp_name);
                    tokio::fs::write(&tmp, &bytes).await?;
                    // Under the open flag: after the shard closed (and maybe reopened with a
                    // fresh scratch directory) nothing of this hydration lands.
                    let open = self.open.lock().expect("open lock");
                    let wanted = *open && self.remote_file(&path).is_some();
                    if !wanted {
                        let _ = std::fs::remove_file(&tmp);
                        return Ok(0);
                    }
                    // Whole locally before the remote entry goes: every open finds a file.
                    std::fs::rename(&tmp, &local)?;
                    let still_wanted = self
                        .remote
                        .write()
                        .expect("remote lock")
                        .remove(&path)
                        .is_some();
                    if !still_wanted {
                        // tantivy deleted it meanwhile (merged away).
                        let _ = std::fs::remove_file(&local);
                    }
                    drop(open);
                    Ok::<_, floe_cache::CacheError>(usize::from(still_wanted))
                }
            })
            .buffer_unordered(parallel.max(1))
            .try_collect::<Vec<usize>>()
            .await?;
        Ok(copied.into_iter().sum())
    }

    fn remote_file(&self, path: &Path) -> Option<RemoteFile> {
        self.remote.read().expect("remote lock").get(path).cloned()
    }
}

struct UnsyncedFile(std::fs::File);

impl Write for UnsyncedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl TerminatingWrite for UnsyncedFile {
    fn terminate_ref(&mut self, _: AntiCallToken) -> io::Result<()> {
        self.0.flush()
    }
}

impl Directory for ScratchDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        match (self.remote_file(path), &self.blocks) {
            (Some(file), Some((blocks, runtime))) => Ok(floe_cache::remote_handle(
                file,
                blocks.clone(),
                runtime.clone(),
            )),
            _ => self.inner.get_file_handle(path),
        }
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        // A remote file is forgotten here; its object stays until the shard retires it.
        if self
            .remote
            .write()
            .expect("remote lock")
            .remove(path)
            .is_some()
        {
            return Ok(());
        }
        self.inner.delete(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        if self.remote_file(path).is_some() {
            return Ok(true);
        }
        self.inner.exists(path)
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        let full = self.root.join(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&full)
            .map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => OpenWriteError::FileAlreadyExists(path.into()),
                _ => OpenWriteError::wrap_io_error(e, path.into()),
            })?;
        Ok(BufWriter::new(Box::new(UnsyncedFile(file))))
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.inner.atomic_read(path)
    }

    fn atomic_write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let full = self.root.join(path);
        let tmp = full.with_extension("atomic-tmp");
        std::fs::write(&tmp, data)?;
        std::fs::rename(&tmp, &full)
    }

    fn sync_directory(&self) -> io::Result<()> {
        Ok(())
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.inner.watch(watch_callback)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floe_cache::CacheConfig;
    use floe_storage::Storage;
    use tantivy::collector::Count;
    use tantivy::query::AllQuery;
    use tantivy::schema::{Schema, STORED, STRING};
    use tantivy::{doc, Index, IndexWriter, ReloadPolicy};

    /// A shard opened over files that are all in the bucket reads them by range, takes
    /// writes and merges at once, and ends with every file local after hydration.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn remote_files_serve_until_hydrated() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let mut schema = Schema::builder();
        let id = schema.add_text_field("id", STRING | STORED);
        let schema = schema.build();
        let index = Index::create_in_dir(&src, schema).unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for commit in 0..3 {
            for i in 0..1000 {
                writer
                    .add_document(doc!(id => format!("{commit}-{i}")))
                    .unwrap();
            }
            writer.commit().unwrap();
        }
        drop(writer);
        let storage = Storage::local(tmp.path().join("bucket")).unwrap();
        let mut remote = HashMap::new();
        for entry in std::fs::read_dir(&src).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".json") || name.ends_with(".lock") {
                continue;
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            let file = RemoteFile {
                key: format!("seg/{name}"),
                len: bytes.len() as u64,
                hot: None,
            };
            storage.put(&file.key, bytes.into()).await.unwrap();
            remote.insert(PathBuf::from(name), file);
        }
        std::fs::copy(src.join("meta.json"), dst.join("meta.json")).unwrap();
        let blocks = BlockCache::open(
            storage.clone(),
            &CacheConfig {
                memory_bytes: 8 << 20,
                disk_bytes: 0,
                dir: tmp.path().join("blocks"),
            },
        )
        .await
        .unwrap();
        let files = remote.len();
        let scratch = ScratchDirectory::with_remote(&dst, remote, blocks).unwrap();
        let local_files = || std::fs::read_dir(&dst).unwrap().count();
        assert_eq!(local_files(), 1, "only meta.json is local before hydration");

        let count = {
            let scratch = scratch.clone();
            tokio::task::spawn_blocking(move || {
                let index = Index::open(scratch).unwrap();
                let reader: tantivy::IndexReader = index
                    .reader_builder()
                    .reload_policy(ReloadPolicy::Manual)
                    .try_into()
                    .unwrap();
                let before = reader.searcher().search(&AllQuery, &Count).unwrap();
                // Writes and a merge of every segment, still reading the remote files.
                let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
                writer.add_document(doc!(id => "new")).unwrap();
                writer.commit().unwrap();
                let ids = index.searchable_segment_ids().unwrap();
                futures::executor::block_on(writer.merge(&ids)).unwrap();
                writer.wait_merging_threads().unwrap();
                reader.reload().unwrap();
                (before, reader.searcher().search(&AllQuery, &Count).unwrap())
            })
            .await
            .unwrap()
        };
        assert_eq!(count, (3000, 3001));
        // Merged-away files were forgotten; the rest (if any) is copied here.
        let copied = scratch.hydrate(4).await.unwrap();
        assert!(copied <= files);
        assert!(scratch.remote_files().is_empty());
        let index = Index::open(scratch).unwrap();
        let reader: tantivy::IndexReader = index.reader().unwrap();
        assert_eq!(reader.searcher().search(&AllQuery, &Count).unwrap(), 3001);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hydration_copies_every_file_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let storage = Storage::local(tmp.path().join("bucket")).unwrap();
        let mut remote = HashMap::new();
        // Names sharing a stem (as a segment's files do), each with its own bytes.
        for (i, ext) in ["idx", "pos", "term", "store", "fast", "fieldnorm"]
            .iter()
            .enumerate()
        {
            let bytes = vec![i as u8; 1000 + i * 70_000];
            let file = RemoteFile {
                key: format!("o/seg.{ext}"),
                len: bytes.len() as u64,
                hot: None,
            };
            storage.put(&file.key, bytes.into()).await.unwrap();
            remote.insert(PathBuf::from(format!("seg.{ext}")), file);
        }
        let blocks = BlockCache::open(
            storage,
            &CacheConfig {
                memory_bytes: 1 << 20,
                disk_bytes: 0,
                dir: tmp.path().join("blocks"),
            },
        )
        .await
        .unwrap();
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        let scratch = ScratchDirectory::with_remote(&dst, remote, blocks).unwrap();
        assert_eq!(scratch.hydrate(6).await.unwrap(), 6);
        for (i, ext) in ["idx", "pos", "term", "store", "fast", "fieldnorm"]
            .iter()
            .enumerate()
        {
            let got = std::fs::read(dst.join(format!("seg.{ext}"))).unwrap();
            assert_eq!(got, vec![i as u8; 1000 + i * 70_000], "seg.{ext}");
        }
        assert_eq!(
            std::fs::read_dir(&dst).unwrap().count(),
            6,
            "no temporary files left"
        );
    }
}
