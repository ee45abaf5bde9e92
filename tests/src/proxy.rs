//! A TCP proxy on 127.0.0.1 that adds latency to every request passing through it: stands
//! in for the round trip to a remote object store, so tests can count how many sequential
//! round trips an operation costs. Latency can be changed at any time (zero while loading).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards connections from its port to `target`, delaying each request by the latency.
pub struct LatencyProxy {
    port: u16,
    latency_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl LatencyProxy {
    /// Listens on a free port of 127.0.0.1, forwarding to `target_port` on 127.0.0.1.
    pub async fn start(target_port: u16) -> LatencyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let latency_ms = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (lat, reqs) = (latency_ms.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (lat, reqs) = (lat.clone(), reqs.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = pump(client, server, lat, reqs).await;
                    }
                });
            }
        });
        LatencyProxy {
            port,
            latency_ms,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Latency added before each request reaches the server.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms
            .store(latency.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests forwarded so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways. Client bytes that follow a response (or open the connection) start a
/// new request: they wait for the latency first. Body chunks of the same request do not.
async fn pump(
    client: TcpStream,
    server: TcpStream,
    latency_ms: Arc<AtomicU64>,
    requests: Arc<AtomicU64>,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Bumped by every response chunk; a request starts when client bytes see a new value.
    let responses = Arc::new(AtomicU64::new(1));
    let seen = responses.clone();
    let upstream = async move {
        let mut last = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = cr.read(&mut buf).await?;
            if n == 0 {
                return sw.shutdown().await;
            }
            let now = seen.load(Ordering::Acquire);
            if now != last {
                last = now;
                requests.fetch_add(1, Ordering::Relaxed);
                let ms = latency_ms.load(Ordering::Relaxed);
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            sw.write_all(&buf[..n]).await?;
        }
    };
    let downstream = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sr.read(&mut buf).await?;
            if n == 0 {
                return cw.shutdown().await;
            }
            responses.fetch_add(1, Ordering::Release);
            cw.write_all(&buf[..n]).await?;
        }
    };
    let _ = tokio::try_join!(upstream, downstream);
    Ok(())
}
