//! A backup sidecar served in-process (its library, on a port-0 listener) beside a real etcd and a real storage.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backup_sidecar::api::{AppState, serve};
use backup_sidecar::backup::{BackupConfig, Engine};
use backup_sidecar::etcd::EtcdConfig;
use backup_sidecar::retention::Retention;
use backup_sidecar::storage::{S3Options, Storage};
use tempfile::TempDir;

use crate::net::{free_port, wait_for_child_port};
use crate::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

/// Which kind of storage a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// `file://` in a temporary directory (a mounted PVC in production).
    File,
    /// `s3://` on a MinIO server.
    S3,
}

/// A storage for one test: a temporary directory or a MinIO server, with its URL and options.
pub struct TestStorage {
    /// The storage URL.
    pub url: String,
    /// S3 options (empty for `file://`).
    pub s3: S3Options,
    /// The MinIO server, for S3.
    pub server: Option<S3Server>,
    /// The directory, for `file://`.
    pub dir: Option<TempDir>,
}

impl TestStorage {
    /// A fresh, empty storage of kind `backend`.
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::File => {
                let dir = tempfile::tempdir()?;
                let url = format!("file://{}", dir.path().join("backups").display());
                Self { url, s3: S3Options::default(), server: None, dir: Some(dir) }
            }
            Backend::S3 => {
                let server = S3Server::start().await?;
                let s3 = S3Options {
                    endpoint: Some(server.endpoint()),
                    region: Some("us-east-1".into()),
                    access_key_id: Some(ACCESS_KEY.into()),
                    secret_access_key: Some(SECRET_KEY.into()),
                    allow_http: true,
                };
                Self { url: server.url("clusters/test"), s3, server: Some(server), dir: None }
            }
        })
    }

    /// Opens the storage, as the sidecar does.
    pub fn open(&self) -> anyhow::Result<Storage> {
        Ok(Storage::open(&self.url, &self.s3)?)
    }

    /// The same S3 storage reached at another endpoint (a proxy in front of its server). The view owns nothing:
    /// `self` keeps the server.
    pub fn via_endpoint(&self, endpoint: &str) -> Self {
        let s3 = S3Options { endpoint: Some(endpoint.to_string()), ..self.s3.clone() };
        Self { url: self.url.clone(), s3, server: None, dir: None }
    }

    /// The storage's directory, for `file://`.
    pub fn path(&self) -> Option<PathBuf> {
        reqwest::Url::parse(&self.url).ok().filter(|u| u.scheme() == "file")?.to_file_path().ok()
    }

    /// Names of the files in a `file://` storage's directory, sorted: published backups, orphans, and the
    /// staging files of uploads in progress, which listings through the storage never show.
    pub fn files(&self) -> Vec<String> {
        let dir = self.path().expect("a file:// storage");
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// A running sidecar API.
pub struct Sidecar {
    /// The engine behind it.
    pub engine: Arc<Engine>,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    /// Serves a sidecar for the etcd at `endpoints` into `storage`.
    pub async fn start(
        endpoints: Vec<String>,
        storage: &TestStorage,
        retention: Retention,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let config = BackupConfig {
            cluster_name: "test".into(),
            cluster_uid: None,
            retention,
            idle_timeout: Duration::from_secs(5),
        };
        Self::start_with(endpoints, storage, config, token).await
    }

    /// Like [`Sidecar::start`], with every backup setting given.
    pub async fn start_with(
        endpoints: Vec<String>,
        storage: &TestStorage,
        config: BackupConfig,
        token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let etcd =
            EtcdConfig { endpoints, ca: None, identity: None, server_name: None, timeout: Duration::from_secs(5) };
        let engine = Engine::new(etcd, storage.open()?, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        // Its members are the test's etcd servers, all on this machine.
        let state =
            AppState { engine: engine.clone(), token: token.map(Arc::from), members: Some(Arc::from("localhost")) };
        let task = tokio::spawn(async move {
            let _ = serve(listener, state, None, std::future::pending()).await;
        });
        Ok(Self { engine, base: format!("http://{addr}"), addr, task })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits until `condition` holds, checking every 20 ms, and fails (panics) after `limit`: for tests that wait for
/// an event, never for a fixed time.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series in a Prometheus text exposition, e.g. `etcd_backup_attempts_total{result="created"}`
/// (the name with its labels, exactly as exposed); `None` when the series is not there.
pub fn metric(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The `etcd-backup-sidecar` binary of this workspace. It is built by `cargo build` (once per test process, a
/// no-op when up to date) into the target directory the tests run from, so the binary run is never a stale one.
pub fn sidecar_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable");
        // <target>/<profile>/deps/<test>-<hash>
        let profile_dir = exe.parent().and_then(Path::parent).expect("the test runs from <target>/<profile>/deps");
        let profile = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_string();
        // With the features `cargo test --workspace` resolved (every member's, dev-dependencies' included): a
        // `--package backup-sidecar` build would compile its whole dependency tree once more with other features.
        let unified = ["--workspace", "--tests", "--bin", "etcd-backup-sidecar"];
        let alone = ["--package", "backup-sidecar", "--bin", "etcd-backup-sidecar"];
        workspace_build(if profile == "debug" { &unified } else { &alone }, &profile);
        let bin = profile_dir.join("etcd-backup-sidecar");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// The release build of the controller binary (`target/release/etcd-controller`), the one the controller image
/// packs. Built with the very command `tests/e2e/app-images.sh` runs (so after it this is a no-op), once per test
/// process: a suite run alone after a change to the controller never runs an older build.
pub fn controller_release_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target_dir = workspace_build(&["--package", "controller", "--package", "backup-sidecar"], "release");
        let bin = target_dir.join("release").join("etcd-controller");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// Runs `cargo build --quiet ARGS` for `profile` into the target directory the tests run from; returns that
/// directory.
fn workspace_build(args: &[&str], profile: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable");
    // <target>/<profile>/deps/<test>-<hash>
    let target_dir = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .to_path_buf();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("Cargo.toml");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet"])
        .args(args)
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    // What cargo set for this test process describes this package, not the build: left in, build scripts
    // that watch such variables (ring's watches CARGO_MANIFEST_DIR) would rebuild half the tree each time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        let per_package = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_"];
        if per_package.iter().any(|prefix| name.starts_with(prefix))
            || name == "CARGO_TARGET_TMPDIR"
            || name == "OUT_DIR"
        {
            build.env_remove(name);
        }
    }
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build {} failed: {status}", args.join(" "));
    target_dir
}

/// The sidecar binary's `serve`, run as a process on a free loopback port; killed on drop.
pub struct SidecarProcess {
    child: Child,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub base: String,
    _log: TempDir,
}

impl SidecarProcess {
    /// Runs `etcd-backup-sidecar serve --listen 127.0.0.1:PORT` with `args` and waits until the process listens.
    pub async fn serve(args: &[String]) -> anyhow::Result<Self> {
        let log = tempfile::tempdir()?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let mut child = Command::new(sidecar_bin())
            .arg("serve")
            .arg("--listen")
            .arg(addr.to_string())
            .args(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path().join("sidecar.log"))?)
            .spawn()?;
        if let Err(error) = wait_for_child_port(&mut child, addr, Duration::from_secs(60)).await {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log.path().join("sidecar.log")).unwrap_or_default();
            anyhow::bail!("{error:#}; log: {log}");
        }
        Ok(Self { child, base: format!("http://{addr}"), _log: log })
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
