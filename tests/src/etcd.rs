//! A real etcd server (Debian's `etcd`, or `$ETCD_BIN`) on free loopback ports in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::net::{free_port, wait_for_port};

/// Path of the etcd server binary the tests use.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("ETCD_BIN").map(PathBuf::from).unwrap_or_else(|| "etcd".into())
}

/// Path of the etcdctl binary the tests use.
pub fn etcdctl_bin() -> PathBuf {
    std::env::var_os("ETCDCTL_BIN").map(PathBuf::from).unwrap_or_else(|| "etcdctl".into())
}

/// One single-member etcd server; killed and its data removed on drop.
pub struct EtcdServer {
    child: Option<Child>,
    /// The server's client URL (`http://127.0.0.1:PORT`).
    pub client_url: String,
    /// The member's name.
    pub name: String,
    data_dir: PathBuf,
    peer_url: String,
    _dir: TempDir,
}

impl EtcdServer {
    /// Starts a new empty single-member cluster.
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        Self::start_on(dir, data_dir, None).await
    }

    /// Starts etcd on an existing data directory (for example one made by `etcdctl snapshot restore`), whose
    /// member was named `name` with peer URL `peer_url`.
    pub async fn start_restored(data_dir: &Path, name: &str, peer_url: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let moved = dir.path().join("data");
        copy_dir(data_dir, &moved)?;
        Self::start_on(dir, moved, Some((name.to_string(), peer_url.to_string()))).await
    }

    async fn start_on(dir: TempDir, data_dir: PathBuf, existing: Option<(String, String)>) -> anyhow::Result<Self> {
        let client_port = free_port();
        let (name, peer_url) = match existing {
            Some(named) => named,
            None => ("m0".to_string(), format!("http://127.0.0.1:{}", free_port())),
        };
        let client_url = format!("http://127.0.0.1:{client_port}");
        let listen_peer = peer_url.clone();
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new(etcd_bin())
            .arg("--name")
            .arg(&name)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&listen_peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", etcd_bin().display()))?;
        let server = Self { child: Some(child), client_url, name, data_dir, peer_url, _dir: dir };
        wait_for_port(format!("127.0.0.1:{client_port}").parse()?, Duration::from_secs(20)).await?;
        server.wait_healthy().await?;
        Ok(server)
    }

    /// The member's peer URL.
    pub fn peer_url(&self) -> &str {
        &self.peer_url
    }

    /// The member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A client connected to this server.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect([&self.client_url], None).await?)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Ok(mut client) = self.client().await
                && client.get("health-probe", None).await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("etcd at {} never became healthy", self.client_url)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Writes `count` keys `{prefix}{i:06}` with values of `value_len` bytes, in batches.
    pub async fn put_keys(&self, prefix: &str, count: usize, value_len: usize) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let value = "v".repeat(value_len);
        for i in 0..count {
            client.put(format!("{prefix}{i:06}"), value.clone(), None).await?;
        }
        Ok(())
    }

    /// Writes `count` keys `{prefix}{i:06}` with values of `value_len` pseudo-random printable bytes, which
    /// compress about as badly as real data does.
    pub async fn put_keys_random(&self, prefix: &str, count: usize, value_len: usize) -> anyhow::Result<()> {
        let mut client = self.client().await?;
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for i in 0..count {
            let value: String = (0..value_len)
                .map(|_| {
                    // xorshift: enough entropy to defeat gzip, no dependency needed.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    char::from(b'!' + (state % 94) as u8)
                })
                .collect();
            client.put(format!("{prefix}{i:06}"), value, None).await?;
        }
        Ok(())
    }

    /// How many keys there are under `prefix`.
    pub async fn count(&self, prefix: &str) -> anyhow::Result<i64> {
        let mut client = self.client().await?;
        let options = etcd_client::GetOptions::new().with_prefix().with_count_only();
        Ok(client.get(prefix, Some(options)).await?.count())
    }

    /// All keys (and values) under `prefix`, sorted by key.
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let mut client = self.client().await?;
        let resp = client.get(prefix, Some(etcd_client::GetOptions::new().with_prefix())).await?;
        Ok(resp.kvs().iter().map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.value().to_vec())).collect())
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Restores `snapshot` into a fresh data directory with `etcdctl snapshot restore` (which checks etcd's SHA-256
/// trailer), then starts etcd on it. Returns the running server.
pub async fn restore_and_start(snapshot: &Path) -> anyhow::Result<EtcdServer> {
    let work = tempfile::tempdir()?;
    let data_dir = work.path().join("restored");
    let peer_url = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg("--name")
        .arg("restored")
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--initial-cluster")
        .arg(format!("restored={peer_url}"))
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .output()?;
    anyhow::ensure!(out.status.success(), "etcdctl snapshot restore failed: {}", String::from_utf8_lossy(&out.stderr));
    EtcdServer::start_restored(&data_dir, "restored", &peer_url).await
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
