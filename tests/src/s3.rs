//! A real S3-compatible server (MinIO, built by `scripts/install-deps.sh`) on a free loopback port.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::net::{ensure_serving, free_port, free_port_on, wait_for_child_port};

/// Access key of the test server.
pub const ACCESS_KEY: &str = "kec-test-access";
/// Secret key of the test server.
pub const SECRET_KEY: &str = "kec-test-secret-key";
/// The bucket every test server starts with.
pub const BUCKET: &str = "backups";

/// Path of the MinIO binary: `$MINIO_BIN`, else where `scripts/install-deps.sh` builds it.
pub fn minio_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MINIO_BIN") {
        return bin.into();
    }
    let cache = std::env::var_os("KEC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kec"));
    let dir = cache.join("minio");
    // The newest build in the cache.
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| entries.filter_map(Result::ok).map(|e| e.path().join("minio")).filter(|p| p.exists()).max())
        .unwrap_or_else(|| "minio".into())
}

/// A MinIO server with one bucket; stopped on drop. It can be stopped and started again on the same port and data.
pub struct S3Server {
    child: Option<Child>,
    host: String,
    ip: IpAddr,
    port: u16,
    dir: TempDir,
}

impl S3Server {
    /// Starts a server on loopback with an empty bucket [`BUCKET`].
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on("127.0.0.1").await
    }

    /// Starts a server listening on `host` (an address of this machine, e.g. the test bed's node address, which
    /// pods reach) with an empty bucket [`BUCKET`].
    pub async fn start_on(host: &str) -> anyhow::Result<Self> {
        let ip = host_ip(host)?;
        let dir = tempfile::tempdir()?;
        // In single-drive mode a top-level directory of the drive is a bucket.
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET))?;
        let mut server = Self { child: None, host: host.to_string(), ip, port: free_port_on(ip), dir };
        let mut failures = Vec::new();
        // The port is checked free on `host`, but another process may still take it before MinIO binds it: then
        // MinIO exits, and it is started again on another port.
        for _ in 0..3 {
            match server.resume().await {
                Ok(()) => return Ok(server),
                Err(error) if server.exited() => {
                    failures.push(format!("{error:#}"));
                    server.stop();
                    server.port = free_port_on(ip);
                }
                Err(error) => return Err(error),
            }
        }
        anyhow::bail!("MinIO did not start: {}", failures.join("; "))
    }

    /// The endpoint URL (`http://HOST:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// A storage URL in the bucket under `prefix`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// Kills the server (its data stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data. It is running once our MinIO process holds the port
    /// on its host, answers its readiness probe, and still runs afterwards.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        if self.exited() {
            self.stop();
        }
        anyhow::ensure!(self.child.is_none(), "MinIO at {} is already running", self.endpoint());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("minio.log"))?;
        let child = Command::new(minio_bin())
            .arg("server")
            .arg(self.dir.path().join("data"))
            .arg("--address")
            .arg(format!("{}:{}", self.host, self.port))
            .arg("--console-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--quiet")
            .env("MINIO_ROOT_USER", ACCESS_KEY)
            .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
            .env("MINIO_BROWSER", "off")
            .env("MINIO_UPDATE", "off")
            .env("MINIO_CALLHOME_ENABLE", "off")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {} (run scripts/install-deps.sh)", minio_bin().display()))?;
        let child = self.child.insert(child);
        let addr = SocketAddr::new(self.ip, self.port);
        wait_for_child_port(child, addr, Duration::from_secs(30)).await.context("MinIO")?;
        // The port opens before the server answers S3 requests.
        let probe = format!("{}/minio/health/ready", self.endpoint());
        for _ in 0..100 {
            if reqwest_probe(&probe).await {
                return ensure_serving(self.child.as_mut().expect("started"), addr).context("MinIO");
            }
            ensure_serving(self.child.as_mut().expect("started"), addr).context("MinIO")?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("MinIO at {} never became ready", self.endpoint())
    }

    /// Whether the server was started and has exited since.
    fn exited(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }
}

/// The address `host` names: an IP address, or a name resolved once.
fn host_ip(host: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = host.parse() {
        return Ok(ip);
    }
    (host, 0).to_socket_addrs()?.next().map(|a| a.ip()).with_context(|| format!("{host} resolves to no address"))
}

async fn reqwest_probe(url: &str) -> bool {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(url_host(url))).await
    else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let path = url.splitn(4, '/').nth(3).unwrap_or("");
    let request = format!("GET /{path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = vec![0u8; 64];
    matches!(tokio::time::timeout(Duration::from_secs(1), stream.read(&mut response)).await, Ok(Ok(n)) if n > 12 && response[9..12] == *b"200")
}

fn url_host(url: &str) -> String {
    url.trim_start_matches("http://").split('/').next().unwrap_or_default().to_string()
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
