//! The Floe under test: either a `floe standalone` process the harness starts (fresh data and
//! cache directories, a free port on 127.0.0.1, killed at the end) or an existing endpoint
//! given with `--url`, which only allows the HTTP scenarios.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use floe_storage::{S3Config, StorageConfig};

use crate::client::Client;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start Floe.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    pub bin: PathBuf,
    /// Parent of the data, cache dirs and log.
    pub root: PathBuf,
    /// `--s3-endpoint`, `--s3-bucket`, `--s3-prefix`: S3 instead of a local data dir.
    pub s3: Option<(String, String, Option<String>)>,
}

/// A running (or stopped) `floe standalone` this harness owns.
pub struct FloeProcess {
    spec: LaunchSpec,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

/// The Floe the scenarios talk to.
pub struct Floe {
    pub client: Client,
    /// `None` for `--url`: no restarts, no data dir, no process to measure.
    pub process: Option<FloeProcess>,
}

impl Floe {
    pub fn external(url: &str) -> anyhow::Result<Floe> {
        Ok(Floe {
            client: Client::new(url)?,
            process: None,
        })
    }

    pub async fn launch(spec: LaunchSpec) -> anyhow::Result<Floe> {
        let port = free_port()?;
        let client = Client::new(&format!("http://127.0.0.1:{port}"))?;
        let mut process = FloeProcess {
            spec,
            port,
            child: None,
            starts: 0,
        };
        process.start(&client).await?;
        Ok(Floe {
            client,
            process: Some(process),
        })
    }

    /// The process, or an error saying that this measurement needs one.
    pub fn owned(&mut self, what: &str) -> anyhow::Result<&mut FloeProcess> {
        self.process
            .as_mut()
            .with_context(|| format!("{what} needs a Floe started by the harness (not --url)"))
    }
}

impl FloeProcess {
    /// The bucket this Floe writes to, as Floe's own storage layer opens it (credentials and
    /// region from the same environment variables Floe reads).
    pub fn storage_config(&self) -> StorageConfig {
        let mut config = StorageConfig {
            data_dir: self.spec.root.join("data"),
            ..StorageConfig::default()
        };
        if let Some((endpoint, bucket, prefix)) = &self.spec.s3 {
            let env = |k: &str| std::env::var(k).ok();
            config.s3 = Some(S3Config {
                endpoint: Some(endpoint.clone()),
                bucket: bucket.clone(),
                region: env("FLOE_S3_REGION").or(env("AWS_REGION")),
                access_key_id: env("AWS_ACCESS_KEY_ID"),
                secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
                ..S3Config::default()
            });
            config.prefix = prefix.clone().unwrap_or_default();
        }
        config
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.spec.root.join("cache")
    }

    pub fn log_path(&self) -> PathBuf {
        self.spec.root.join("floe.log")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size of the process so far (`VmHWM`), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("floe is not running")?;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading /proc/PID/status (Linux only)")?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .context("no VmHWM in /proc/PID/status")?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .context("malformed VmHWM line")?;
        Ok(kb * 1024)
    }

    /// Kills the process (SIGKILL: Floe must survive it) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops, deletes the cache directory (searcher cache and writer scratch), starts again:
    /// the next query reads everything from object storage.
    pub async fn restart_cold(&mut self, client: &Client) -> anyhow::Result<()> {
        self.stop();
        let cache = self.cache_dir();
        if cache.exists() {
            fs::remove_dir_all(&cache).context("wiping the cache dir")?;
        }
        self.start(client).await
    }

    async fn start(&mut self, client: &Client) -> anyhow::Result<()> {
        let root = &self.spec.root;
        fs::create_dir_all(self.cache_dir())?;
        let mut args: Vec<String> = vec![
            "standalone".into(),
            "--http-addr".into(),
            format!("127.0.0.1:{}", self.port),
            "--cache-dir".into(),
            self.cache_dir().display().to_string(),
        ];
        match &self.spec.s3 {
            None => {
                let data = root.join("data");
                fs::create_dir_all(&data)?;
                args.extend(["--data-dir".into(), data.display().to_string()]);
            }
            Some((endpoint, bucket, prefix)) => {
                args.extend(["--s3-endpoint".into(), endpoint.clone()]);
                args.extend(["--s3-bucket".into(), bucket.clone()]);
                if let Some(p) = prefix {
                    args.extend(["--s3-prefix".into(), p.clone()]);
                }
            }
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        writeln!(
            log,
            "===== start #{}: {} {}",
            self.starts,
            self.spec.bin.display(),
            args.join(" ")
        )?;
        let child = Command::new(&self.spec.bin)
            .args(&args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env("FLOE_INITIAL_ADMIN_PASSWORD", crate::client::ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.spec.bin.display()))?;
        self.child = Some(child);
        // Ready when `GET /` answers; give up early if the process exits.
        let started = std::time::Instant::now();
        loop {
            let last = match client.wait_ready(Duration::from_millis(200)).await {
                Ok(()) => break,
                Err(e) => e,
            };
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || started.elapsed() > STARTUP_TIMEOUT {
                self.stop();
                bail!(
                    "floe did not become ready ({last:#}; exit status {exited:?}); log tail:\n{}",
                    tail(&self.log_path(), 40)
                );
            }
        }
        Ok(())
    }
}

impl Drop for FloeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `floe` binary to start: `explicit`, else the one next to this executable (same
/// profile: `cargo run --release -p floe-bench` finds `target/release/floe`), else the
/// workspace's release then debug build.
pub fn find_floe_bin(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        anyhow::ensure!(p.is_file(), "--floe-bin {} not found", p.display());
        return Ok(p.to_path_buf());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("floe")));
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let candidates = beside
        .into_iter()
        .chain([target.join("release/floe"), target.join("debug/floe")]);
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
    }
    bail!("no floe binary found: build it (cargo build --release --bin floe) or pass --floe-bin")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last `n` lines of a text file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
