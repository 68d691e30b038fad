//! A backup sidecar served in-process (its library, on a port-0 listener) beside a real etcd and a real storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backup_sidecar::api::{AppState, serve};
use backup_sidecar::backup::{BackupConfig, Engine};
use backup_sidecar::etcd::EtcdConfig;
use backup_sidecar::retention::Retention;
use backup_sidecar::storage::{S3Options, Storage};
use tempfile::TempDir;

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
        let etcd = EtcdConfig { endpoints, ca: None, identity: None, timeout: Duration::from_secs(5) };
        let config = BackupConfig { cluster_name: "test".into(), retention, idle_timeout: Duration::from_secs(5) };
        let engine = Engine::new(etcd, storage.open()?, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = AppState { engine: engine.clone(), token: token.map(Arc::from) };
        let task = tokio::spawn(async move {
            let _ = serve(listener, state, std::future::pending()).await;
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
