//! A real multi-member etcd cluster on loopback: members can be started, joined later and killed one by one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::etcd::{etcd_bin, unique};
use crate::net::{ensure_serving, free_port, wait_for_child_port};

/// One member process.
pub struct LocalMember {
    /// Its name.
    pub name: String,
    /// Its client URL.
    pub client_url: String,
    /// Its peer URL.
    pub peer_url: String,
    child: Option<Child>,
}

impl LocalMember {
    /// Whether the process runs.
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    fn client_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.client_url.trim_start_matches("http://").parse()?)
    }

    /// Waits until this member's own process listens on its client port (failing at once if it exited).
    async fn wait_listening(&mut self) -> anyhow::Result<()> {
        let addr = self.client_addr()?;
        let child = self.child.as_mut().context("the member was killed")?;
        wait_for_child_port(child, addr, Duration::from_secs(20)).await.with_context(|| format!("member {}", self.name))
    }

    /// Fails unless this member's process still runs and holds its client port.
    fn ensure_serving(&mut self) -> anyhow::Result<()> {
        let addr = self.client_addr()?;
        let child = self.child.as_mut().context("the member was killed")?;
        ensure_serving(child, addr).with_context(|| format!("member {}", self.name))
    }
}

/// A cluster of member processes sharing one temporary directory; all killed on drop.
pub struct LocalCluster {
    /// The members, started or killed.
    pub members: Vec<LocalMember>,
    dir: TempDir,
    token: String,
}

impl LocalCluster {
    /// Bootstraps a cluster of `size` members (`m0`, `m1`, ...) and waits until it serves.
    pub async fn start(size: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let token = unique("cluster");
        let mut cluster = Self { members: Vec::new(), dir, token };
        let planned: Vec<(String, String, String)> = (0..size).map(|i| cluster.reserve(&format!("m{i}"))).collect();
        let initial = planned.iter().map(|(n, p, _)| format!("{n}={p}")).collect::<Vec<_>>().join(",");
        for (name, peer, client) in planned {
            cluster.spawn(&name, &peer, &client, &initial, "new")?;
        }
        for member in &mut cluster.members {
            member.wait_listening().await?;
        }
        cluster.wait_serving().await?;
        cluster.check_identity().await?;
        Ok(cluster)
    }

    /// Picks ports for a new member `name`: `(name, peer_url, client_url)`.
    pub fn reserve(&self, name: &str) -> (String, String, String) {
        (name.to_string(), format!("http://127.0.0.1:{}", free_port()), format!("http://127.0.0.1:{}", free_port()))
    }

    /// Starts member `name` joining the existing cluster, which already lists it (`initial_cluster` is every
    /// member's `name=peer_url`, the new one included).
    pub async fn join(
        &mut self,
        name: &str,
        peer_url: &str,
        client_url: &str,
        initial_cluster: &str,
    ) -> anyhow::Result<()> {
        self.spawn(name, peer_url, client_url, initial_cluster, "existing")?;
        self.members.last_mut().expect("just spawned").wait_listening().await
    }

    /// Checks that every running member is our process, and that the cluster they form is this one: its members
    /// are exactly ours by peer URL (ports handed out to this cluster alone; names are published only later).
    async fn check_identity(&mut self) -> anyhow::Result<()> {
        for member in &mut self.members {
            member.ensure_serving()?;
        }
        let mut client = self.client().await?;
        let listed = client.member_list().await?;
        let mut found: Vec<String> = listed.members().iter().flat_map(|m| m.peer_urls().to_vec()).collect();
        found.sort();
        let mut expected: Vec<String> = self.members.iter().map(|m| m.peer_url.clone()).collect();
        expected.sort();
        anyhow::ensure!(found == expected, "the cluster answering is not this one: it lists {found:?}");
        Ok(())
    }

    fn spawn(&mut self, name: &str, peer: &str, client: &str, initial: &str, state: &str) -> anyhow::Result<()> {
        let data: PathBuf = self.dir.path().join(name);
        let log = std::fs::File::create(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(etcd_bin())
            .args(["--name", name, "--data-dir"])
            .arg(&data)
            .args(["--listen-client-urls", client, "--advertise-client-urls", client])
            .args(["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer])
            .args(["--initial-cluster", initial, "--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start etcd member {name}"))?;
        self.members.push(LocalMember {
            name: name.into(),
            client_url: client.into(),
            peer_url: peer.into(),
            child: Some(child),
        });
        Ok(())
    }

    /// Kills member `name` (SIGKILL).
    pub fn kill(&mut self, name: &str) {
        if let Some(member) = self.members.iter_mut().find(|m| m.name == name)
            && let Some(mut child) = member.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Client URLs of the members that run.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.alive()).map(|m| m.client_url.clone()).collect()
    }

    /// A client over every running member.
    pub async fn client(&self) -> anyhow::Result<etcd_client::Client> {
        Ok(etcd_client::Client::connect(self.endpoints(), None).await?)
    }

    /// Waits until a write through the running members succeeds.
    pub async fn wait_serving(&self) -> anyhow::Result<()> {
        for _ in 0..200 {
            if let Ok(mut client) = self.client().await
                && client.put("health-probe", "ok", None).await.is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("the cluster never served a write")
    }

    /// The member name a peer URL belongs to.
    pub fn name_of_peer(&self, peer_url: &str) -> Option<String> {
        self.members.iter().find(|m| m.peer_url == peer_url).map(|m| m.name.clone())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        for name in names {
            self.kill(&name);
        }
    }
}
