//! The command line: `serve`, `backup-once`, `restore` and `guard`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::backup::{BackupConfig, Engine, Outcome};
use crate::etcd::EtcdConfig;
use crate::restore::{RestoreRequest, restore};
use crate::retention::Retention;
use crate::schedule::{self, Schedule};
use crate::storage::{S3Options, Storage};

/// Scheduled, verified, streaming etcd v3 snapshots to a PVC or S3, with an HTTP API.
#[derive(Parser, Debug)]
#[command(name = "etcd-backup-sidecar", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the HTTP API and take scheduled backups.
    Serve(ServeArgs),
    /// Take one backup, print its info as JSON and exit.
    BackupOnce(BackupArgs),
    /// Download, verify and write a snapshot file (for a restore init container).
    Restore(RestoreArgs),
    /// Check that a member's volume is this member's before etcd starts on it (an init container); claim it when
    /// empty. Exit code 4 and the reason on the termination log when it is refused.
    Guard(GuardArgs),
}

/// Arguments of `guard`.
#[derive(Args, Debug)]
pub struct GuardArgs {
    /// The volume's mount point.
    #[arg(long)]
    pub volume: PathBuf,
    /// etcd's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The EtcdCluster's UID.
    #[arg(long)]
    pub cluster_uid: String,
    /// `namespace/name` of the EtcdCluster.
    #[arg(long)]
    pub cluster: String,
    /// The member's name.
    #[arg(long)]
    pub member: String,
    /// The member's etcd ID (hex), when known.
    #[arg(long)]
    pub member_id: Option<String>,
    /// The member ran on this volume before: refuse it when it holds no guard or no data.
    #[arg(long)]
    pub expect_data: bool,
    /// Where the verdict is also written (`/dev/termination-log`).
    #[arg(long)]
    pub result_file: Option<PathBuf>,
}

/// How to reach etcd.
#[derive(Args, Debug, Clone)]
pub struct EtcdArgs {
    /// Client URLs of the etcd members, comma separated.
    #[arg(long, env = "ETCD_ENDPOINTS", value_delimiter = ',', required = true)]
    pub etcd_endpoints: Vec<String>,
    /// CA certificate (PEM) of the etcd members.
    #[arg(long, env = "ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, env = "ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, env = "ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// The name the members' certificates are checked against, when endpoints name members by address (as the
    /// controller's backup requests do): a name every member's certificate covers.
    #[arg(long, env = "ETCD_SERVER_NAME")]
    pub etcd_server_name: Option<String>,
    /// Timeout for connecting and for single etcd requests; also how long the snapshot stream may stall.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub etcd_timeout: Duration,
}

/// Where backups go.
#[derive(Args, Debug, Clone)]
pub struct StorageArgs {
    /// `file:///path` (a mounted volume) or `s3://bucket/prefix`.
    #[arg(long, env = "BACKUP_STORAGE")]
    pub storage: String,
    #[command(flatten)]
    pub s3: S3Args,
}

/// S3 settings; unset ones fall back to the usual AWS_* environment variables.
#[derive(Args, Debug, Clone, Default)]
pub struct S3Args {
    /// S3 endpoint URL for S3-compatible servers (else `AWS_ENDPOINT_URL`).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 region (else `AWS_REGION`, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
    /// Access key ID (else `AWS_ACCESS_KEY_ID`).
    #[arg(long)]
    pub s3_access_key_id: Option<String>,
    /// Secret access key (else `AWS_SECRET_ACCESS_KEY`).
    #[arg(long)]
    pub s3_secret_access_key: Option<String>,
    /// Allow a plain-http S3 endpoint (else `AWS_ALLOW_HTTP`).
    #[arg(long)]
    pub s3_allow_http: bool,
}

impl S3Args {
    fn options(&self) -> S3Options {
        S3Options {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            allow_http: self.s3_allow_http,
        }
    }
}

/// Arguments of `backup-once` (and the backup part of `serve`).
#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Name of the etcd cluster; the first part of every backup name.
    #[arg(long, env = "CLUSTER_NAME")]
    pub cluster_name: String,
    /// UID of the EtcdCluster object, recorded in every backup (the controller sets it).
    #[arg(long, env = "CLUSTER_UID")]
    pub cluster_uid: Option<String>,
    /// Keep at most this many backups.
    #[arg(long)]
    pub max_backups: Option<usize>,
    /// Keep only backups younger than this (`7d`, `12h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,
}

/// Arguments of `serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub backup: BackupArgs,
    /// Address of the HTTP API.
    #[arg(long, default_value = "0.0.0.0:19999")]
    pub listen: SocketAddr,
    /// Take a backup at this interval (`30m`); the first at start-up.
    #[arg(long, conflicts_with = "cron")]
    pub every: Option<String>,
    /// Take a backup at the times this cron expression names (five fields, UTC).
    #[arg(long)]
    pub cron: Option<String>,
    /// File holding the bearer token every /v1/ request must carry.
    #[arg(long, env = "AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// DNS name whose addresses are the cluster's members (its headless Service): a backup request may name
    /// only endpoints at those addresses (or names resolving only to them). Unset, any endpoint is taken.
    #[arg(long, env = "MEMBER_HOSTS_FROM")]
    pub member_hosts_from: Option<String>,
    /// Serve the API over HTTPS with this PEM certificate (chain) file; read again when it changes.
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `--tls-cert-file` (PEM).
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
}

/// Arguments of `restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A sidecar's base URL (`http://host:19999`) or a storage URL (`file:///…`, `s3://…`).
    #[arg(long)]
    pub from: String,
    /// The backup's name, or `latest`.
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Where to write the verified snapshot.
    #[arg(long)]
    pub output: PathBuf,
    /// File holding the bearer token of the sidecar.
    #[arg(long, env = "AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// PEM CA bundle an `https://` sidecar's certificate must chain to (instead of the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Also write the result (JSON: backup, revision, sha256, size) to this file once the snapshot is in place,
    /// e.g. `/dev/termination-log`, where the controller reads which backup a seed restored.
    #[arg(long)]
    pub result_file: Option<PathBuf>,
    /// The etcd version the restored member will run (`3.6.16`): a backup taken from a version it cannot move
    /// from (not its minor or the one before) is refused (exit code 3) before anything is written.
    #[arg(long)]
    pub seed_version: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

impl BackupArgs {
    fn engine(&self) -> anyhow::Result<Arc<Engine>> {
        let etcd = EtcdConfig {
            endpoints: self.etcd.etcd_endpoints.clone(),
            ca: self.etcd.etcd_ca.clone(),
            identity: self.etcd.etcd_cert.clone().zip(self.etcd.etcd_key.clone()),
            server_name: self.etcd.etcd_server_name.clone(),
            timeout: self.etcd.etcd_timeout,
        };
        let storage = Storage::open(&self.storage.storage, &self.storage.s3.options())?;
        let config = BackupConfig {
            cluster_name: self.cluster_name.clone(),
            cluster_uid: self.cluster_uid.clone(),
            retention: Retention { max_backups: self.max_backups, max_age: self.max_age },
            idle_timeout: self.etcd.etcd_timeout,
        };
        Ok(Engine::new(etcd, storage, config))
    }
}

fn read_token(path: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    let Some(path) = path else { return Ok(None) };
    let token = std::fs::read_to_string(path).with_context(|| format!("reading the token file {}", path.display()))?;
    let token = token.trim().to_string();
    anyhow::ensure!(!token.is_empty(), "the token file {} is empty", path.display());
    Ok(Some(token))
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::BackupOnce(args) => {
            let engine = args.engine()?;
            let outcome = engine.backup().await.map_err(|e| anyhow::anyhow!("{e}"))?;
            let info = match &outcome {
                Outcome::Created(info) | Outcome::Unchanged(info) => info,
            };
            println!("{}", serde_json::to_string_pretty(info)?);
            Ok(())
        }
        Command::Restore(args) => {
            let request = RestoreRequest {
                from: args.from,
                backup: args.backup,
                output: args.output,
                token: read_token(&args.auth_token_file)?,
                ca: match &args.ca_file {
                    Some(path) => {
                        Some(std::fs::read(path).with_context(|| format!("reading the CA file {}", path.display()))?)
                    }
                    None => None,
                },
                s3: args.s3.options(),
                seed_version: args.seed_version,
            };
            let restored = restore(&request).await?;
            if let Some(path) = &args.result_file {
                std::fs::write(path, serde_json::to_vec(&restored)?)
                    .with_context(|| format!("writing the result to {}", path.display()))?;
            }
            println!("{}", serde_json::to_string_pretty(&restored)?);
            Ok(())
        }
        Command::Guard(args) => {
            let expected = crate::guard::Expected {
                volume: args.volume,
                data_dir: args.data_dir,
                cluster_uid: args.cluster_uid,
                cluster: args.cluster,
                member: args.member,
                member_id: args.member_id,
                expect_data: args.expect_data,
            };
            let verdict = crate::guard::check(&expected);
            let said = match &verdict {
                Ok(crate::guard::Verdict::Claimed) => format!("claimed the empty volume for {}", expected.member),
                Ok(crate::guard::Verdict::Matches) => format!("the volume is {}'s", expected.member),
                Err(error) => error.to_string(),
            };
            if let Some(path) = &args.result_file {
                // Best effort: the verdict is also on stderr.
                let _ = std::fs::write(path, &said);
            }
            eprintln!("guard: {said}");
            verdict.map(|_| ()).map_err(anyhow::Error::from)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let schedule = match (&args.every, &args.cron) {
        (Some(every), None) => Some(Schedule::every(every)?),
        (None, Some(cron)) => Some(Schedule::cron(cron)?),
        _ => None,
    };
    let token = read_token(&args.auth_token_file)?;
    if token.is_none() {
        tracing::warn!("no --auth-token-file: anyone who can reach the API can download the whole database");
    }
    let engine = args.backup.engine()?;
    engine.set_schedule(schedule.as_ref().map(Schedule::describe), None);
    tracing::info!(storage = %engine.storage().display_url(), schedule = ?schedule.as_ref().map(Schedule::describe), "starting");
    if let Err(error) = engine.list().await {
        tracing::warn!(%error, "storage not reachable yet");
    }
    let shutdown = CancellationToken::new();
    let scheduler = schedule.map(|schedule| {
        let engine = engine.clone();
        let describe = schedule.describe();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            let job = || {
                let engine = engine.clone();
                async move { engine.backup().await.map(|_| ()) }
            };
            let on_next = |at| engine.set_schedule(Some(describe.clone()), Some(at));
            schedule::run(schedule, job, on_next, cancel).await;
        })
    });
    // The certificate is checked before anything is served: a pair that cannot be used stops the sidecar at once.
    let tls = match args.tls_cert_file.clone().zip(args.tls_key_file.clone()) {
        Some((cert, key)) => Some(crate::https::server_config(&crate::https::TlsFiles { cert, key })?),
        None => None,
    };
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %listener.local_addr()?, https = tls.is_some(), "serving the backup API");
    let members = args.member_hosts_from.as_deref().map(|name| Arc::from(name.trim_end_matches('.')));
    let state = AppState { engine, token: token.map(Arc::from), members };
    let cancel = shutdown.clone();
    api::serve(listener, state, tls, async move {
        shutdown_signal().await;
        cancel.cancel();
    })
    .await?;
    if let Some(task) = scheduler {
        task.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down");
}
