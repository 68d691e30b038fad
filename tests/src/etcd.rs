//! A real etcd server (Debian's `etcd`, or `$ETCD_BIN`) on free loopback ports in a temporary directory. Start-up
//! checks that the server answering is the one started: our process holds the port, and the cluster it reports
//! is this one member, by its name and URL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::net::{ensure_serving, free_port, wait_for_child_port};

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
    /// The member's name, unique in this process for a new cluster (a restored one keeps the name it was given).
    pub name: String,
    client_addr: SocketAddr,
    data_dir: PathBuf,
    peer_url: String,
    _dir: Option<TempDir>,
}

/// A name no other fixture of this process uses: `{prefix}-{pid}-{n}`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
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
        let log_path = dir.path().join("etcd.log");
        let mut failures = Vec::new();
        // A port can still be taken by another process between being picked and being bound: then etcd exits,
        // and it is started again on other ports (a restored member keeps the peer URL its data names).
        for _ in 0..3 {
            let client_port = free_port();
            let (name, peer_url, token) = match &existing {
                Some((name, peer)) => (name.clone(), peer.clone(), None),
                None => (unique("etcd"), format!("http://127.0.0.1:{}", free_port()), Some(unique("cluster"))),
            };
            let client_url = format!("http://127.0.0.1:{client_port}");
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
            let mut command = Command::new(etcd_bin());
            command
                .arg("--name")
                .arg(&name)
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--listen-client-urls")
                .arg(&client_url)
                .arg("--advertise-client-urls")
                .arg(&client_url)
                .arg("--listen-peer-urls")
                .arg(&peer_url)
                .arg("--initial-advertise-peer-urls")
                .arg(&peer_url)
                .arg("--initial-cluster")
                .arg(format!("{name}={peer_url}"));
            if let Some(token) = &token {
                command.arg("--initial-cluster-token").arg(token);
            }
            let child = command
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("start {}", etcd_bin().display()))?;
            let client_addr: SocketAddr = format!("127.0.0.1:{client_port}").parse()?;
            let mut server = Self {
                child: Some(child),
                client_url,
                client_addr,
                name,
                data_dir: data_dir.clone(),
                peer_url,
                _dir: None,
            };
            match server.wait_serving().await {
                Ok(()) => {
                    server._dir = Some(dir);
                    return Ok(server);
                }
                Err(error) => {
                    let exited = server.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
                    failures.push(format!("{error:#}"));
                    drop(server);
                    if !exited {
                        break;
                    }
                    if existing.is_none() {
                        // A new member that failed to bind wrote nothing yet; start it from nothing again anyway.
                        let _ = std::fs::remove_dir_all(&data_dir);
                    }
                }
            }
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        anyhow::bail!("etcd did not start: {}; log tail: {}", failures.join("; "), tail.join(" | "))
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

    /// Waits until our etcd process listens on the client port and answers, then checks that what answered is
    /// this member: the process still runs and holds the port, and the cluster it reports is exactly this member,
    /// under this name and client URL.
    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().expect("started");
        wait_for_child_port(child, self.client_addr, Duration::from_secs(20)).await?;
        let mut healthy = false;
        for _ in 0..200 {
            if let Ok(mut client) = self.client().await
                && client.get("health-probe", None).await.is_ok()
            {
                healthy = true;
                break;
            }
            ensure_serving(self.child.as_mut().expect("started"), self.client_addr)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::ensure!(healthy, "etcd at {} never became healthy", self.client_url);
        let mut client = self.client().await?;
        let members = client.member_list().await?;
        let status = client.status().await?;
        let found: Vec<(&str, &[String])> = members.members().iter().map(|m| (m.name(), m.client_urls())).collect();
        anyhow::ensure!(
            found == [(self.name.as_str(), std::slice::from_ref(&self.client_url))],
            "the etcd at {} is not the member {} this fixture started: its cluster lists {found:?}",
            self.client_url,
            self.name
        );
        let this_member = members.members()[0].id();
        anyhow::ensure!(
            status.header().map(|h| h.member_id()) == Some(this_member),
            "the etcd at {} answers as another member",
            self.client_url
        );
        ensure_serving(self.child.as_mut().expect("started"), self.client_addr)
    }

    /// Whether the server process still runs (it was not killed and has not exited).
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
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
    let name = unique("restored");
    let out = Command::new(etcdctl_bin())
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg("--name")
        .arg(&name)
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--initial-cluster")
        .arg(format!("{name}={peer_url}"))
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .output()?;
    anyhow::ensure!(out.status.success(), "etcdctl snapshot restore failed: {}", String::from_utf8_lossy(&out.stderr));
    EtcdServer::start_restored(&data_dir, &name, &peer_url).await
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
