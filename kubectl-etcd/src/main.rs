//! `kubectl etcd`: what people do by hand with the etcd clusters of kube-etcd-controller, as a kubectl plugin
//! (a binary named `kubectl-etcd` on the PATH).
//!
//! - `status NAME`: the cluster, its members (health, leader, version, database size, read from each member's own
//!   metrics listener), its last backup, and what the controller is doing and why;
//! - `backups NAME`: the backups its sidecar lists, newest first, with age, revision and size;
//! - `backup NAME`: a backup taken now, waited for, and printed;
//! - `restore NAME --backup B --to NEW`: a new EtcdCluster seeded from backup B of NAME (`--dry-run` prints it).
//!
//! It talks to the API server with the kubeconfig's credentials, and to member pods and the backup sidecar
//! through port-forwards (so it works from outside the cluster network): the sidecar with the token it reads from
//! the sidecar's Secret, over HTTPS checked against the CA of the sidecar's serving Secret when it serves HTTPS.

mod forward;
mod members;
mod sidecar;

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use kube::Api;
use kube::api::PostParams;
use proto::cluster::{EtcdCluster, EtcdClusterSpec, RestoreSource};

#[derive(Parser)]
#[command(name = "kubectl-etcd", version, about = "Operate the etcd clusters of kube-etcd-controller")]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The cluster: members with health, leader, version and database size; the last backup; what the controller
    /// is doing and why.
    Status {
        /// The EtcdCluster.
        name: String,
    },
    /// The cluster's backups, newest first: age, revision, size.
    Backups {
        /// The EtcdCluster.
        name: String,
    },
    /// Takes a backup now, waits until it is stored and verified, and prints it.
    Backup {
        /// The EtcdCluster.
        name: String,
    },
    /// Creates a new EtcdCluster seeded from a backup of NAME, with NAME's spec (or prints it with --dry-run).
    Restore {
        /// The EtcdCluster whose backup is restored (its sidecar serves the backup to the new cluster).
        name: String,
        /// The backup (a name `kubectl etcd backups NAME` lists, or `latest`: the newest when the new cluster is
        /// seeded).
        #[arg(long)]
        backup: String,
        /// The new EtcdCluster's name.
        #[arg(long)]
        to: String,
        /// Print the new EtcdCluster as YAML and create nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = kube::Config::infer().await.context("reading the kubeconfig (KUBECONFIG, ~/.kube/config)")?;
    let namespace = cli.namespace.unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("a client of the API server")?;
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let cluster_of = |name: String| {
        let (clusters, namespace) = (clusters.clone(), namespace.clone());
        async move {
            clusters
                .get_opt(&name)
                .await
                .with_context(|| format!("reading EtcdCluster {namespace}/{name}"))?
                .with_context(|| {
                    format!(
                        "no EtcdCluster {name} in namespace {namespace} (`kubectl get etcd -n {namespace}` lists them)"
                    )
                })
        }
    };
    match cli.command {
        Command::Status { name } => {
            let cluster = cluster_of(name).await?;
            members::status(&client, &cluster).await
        }
        Command::Backups { name } => {
            let cluster = cluster_of(name).await?;
            let sidecar = sidecar::Sidecar::reach(&client, &cluster).await?;
            let list = sidecar.list().await?;
            print!("{}", sidecar::table(&list.backups, chrono::Utc::now()));
            Ok(())
        }
        Command::Backup { name } => {
            let cluster = cluster_of(name).await?;
            let sidecar = sidecar::Sidecar::reach(&client, &cluster).await?;
            eprintln!(
                "taking a backup of {namespace}/{} (waits until it is stored and verified)",
                cluster_name(&cluster)
            );
            let (taken, created) = sidecar.take().await?;
            if !created {
                eprintln!("nothing was written since {}: that backup holds the cluster as it is", taken.name);
            }
            print!("{}", sidecar::table(std::slice::from_ref(&taken), chrono::Utc::now()));
            Ok(())
        }
        Command::Restore { name, backup, to, dry_run } => {
            let cluster = cluster_of(name.clone()).await?;
            let sidecar = sidecar::Sidecar::reach(&client, &cluster).await?;
            let list = sidecar.list().await?;
            // `latest` is what spec.restore takes for the newest; any other name must be listed.
            let known = if backup == "latest" {
                !list.backups.is_empty()
            } else {
                list.backups.iter().any(|b| b.name == backup)
            };
            if !known {
                bail!(
                    "{namespace}/{name} has no backup {backup:?} (`kubectl etcd backups {name} -n {namespace}` lists its {})",
                    list.backups.len()
                );
            }
            if clusters.get_opt(&to).await.with_context(|| format!("reading EtcdCluster {namespace}/{to}"))?.is_some() {
                bail!(
                    "EtcdCluster {namespace}/{to} exists already: a restore creates a new cluster; choose another --to"
                );
            }
            let (restored, notes) = restored(&cluster, &to, &backup);
            for note in notes {
                eprintln!("note: {note}");
            }
            if dry_run {
                print!("{}", serde_yaml::to_string(&restored)?);
                return Ok(());
            }
            clusters.create(&PostParams::default(), &restored).await.with_context(|| format!("creating {to}"))?;
            println!(
                "etcdcluster {namespace}/{to} created, to be seeded from backup {backup} of {name}; \
                 `kubectl etcd status {to} -n {namespace}` shows its progress"
            );
            Ok(())
        }
    }
}

fn cluster_name(cluster: &EtcdCluster) -> String {
    cluster.metadata.name.clone().unwrap_or_default()
}

/// The new EtcdCluster `to`, seeded from backup `backup` of `source` through its sidecar, with `source`'s spec
/// otherwise; and what was changed from that spec, to say. Certificates of a Secret of the user cover the source
/// cluster's names, not the new one's: the new cluster's are generated instead (its own CA).
fn restored(source: &EtcdCluster, to: &str, backup: &str) -> (EtcdCluster, Vec<String>) {
    let mut spec: EtcdClusterSpec = source.spec.clone();
    let mut notes = Vec::new();
    spec.restore = Some(RestoreSource {
        cluster: Some(cluster_name(source)),
        url: None,
        token_secret: None,
        storage: None,
        backup: backup.to_string(),
    });
    if spec.paused {
        spec.paused = false;
        notes.push(format!("{} is paused; the new cluster is not", cluster_name(source)));
    }
    // A claim of the source's backups may not mount on a second node (ReadWriteOnce): the copy gets no backups
    // there; S3 is shared safely (each cluster writes under its own name).
    if let Some(claim) = spec.backup.as_ref().and_then(|b| b.storage.pvc.as_ref()).map(|p| p.claim_name.clone()) {
        spec.backup = None;
        notes.push(format!(
            "{} backs up to claim {claim}, which a second sidecar may not mount: {to} has no spec.backup; set one \
             (another claim, or S3) to back it up",
            cluster_name(source)
        ));
    }
    if let Some(tls) = spec.tls.as_mut() {
        let mut named = Vec::new();
        if let Some(peer) = tls.peer.as_mut() {
            named.extend(peer.secret_name.take());
        }
        if let Some(client) = tls.client.as_mut() {
            named.extend(client.secret_name.take());
            named.extend(client.operator_secret_name.take());
            named.extend(client.application_secret_name.take());
            named.extend(client.backup_secret_name.take());
        }
        if !named.is_empty() {
            notes.push(format!(
                "the source's certificate Secrets ({}) cover its own names: the new cluster's certificates are \
                 generated (its own CA); use --dry-run and name Secrets of yours for {to} to choose otherwise",
                named.join(", ")
            ));
        }
    }
    let mut cluster = EtcdCluster::new(to, spec);
    cluster.metadata.namespace = source.metadata.namespace.clone();
    (cluster, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(spec: serde_json::Value) -> EtcdCluster {
        let mut cluster = EtcdCluster::new("prod", serde_json::from_value(spec).unwrap());
        cluster.metadata.namespace = Some("team".into());
        cluster
    }

    #[test]
    fn a_restore_is_a_new_cluster_with_the_sources_spec_seeded_from_its_sidecar() {
        let prod = source(serde_json::json!({
            "size": 5, "version": "3.5.35", "paused": true,
            "storage": { "size": "2Gi" },
            "backup": { "every": "1h", "storage": { "pvc": { "claimName": "backups" } } },
        }));
        let (new, notes) = restored(&prod, "prod-copy", "prod-20261204-1200");
        assert_eq!(new.metadata.name.as_deref(), Some("prod-copy"));
        assert_eq!(new.metadata.namespace.as_deref(), Some("team"));
        let restore = new.spec.restore.clone().unwrap();
        assert_eq!((restore.cluster.as_deref(), restore.backup.as_str()), (Some("prod"), "prod-20261204-1200"));
        assert_eq!(new.spec.size, 5);
        assert_eq!(new.spec.storage, prod.spec.storage);
        assert_eq!(new.spec.backup, None, "the source's backup claim is not shared");
        assert!(!new.spec.paused, "a paused copy would never be seeded");
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[1].contains("claim backups"), "{notes:?}");
        let on_s3 = source(serde_json::json!({
            "size": 3, "version": "3.5.35",
            "backup": { "every": "1h", "storage": { "s3": { "bucket": "b", "credentialsSecret": "s3" } } },
        }));
        let (new, notes) = restored(&on_s3, "copy", "b");
        assert_eq!(new.spec.backup, on_s3.spec.backup, "S3 backups carry on, under the copy's own name");
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn a_restore_of_a_cluster_with_its_own_certificates_generates_the_new_ones_and_says_so() {
        let prod = source(serde_json::json!({
            "size": 3, "version": "3.5.35",
            "tls": { "peer": { "secretName": "prod-peer" }, "client": { "secretName": "prod-server", "operatorSecretName": "prod-op" } },
        }));
        let (new, notes) = restored(&prod, "copy", "b");
        let tls = new.spec.tls.unwrap();
        assert_eq!(tls.peer.unwrap().secret_name, None);
        let client = tls.client.unwrap();
        assert_eq!((client.secret_name, client.operator_secret_name), (None, None));
        assert!(notes[0].contains("prod-peer, prod-server, prod-op"), "{notes:?}");
        let (_, plain_notes) = restored(&source(serde_json::json!({ "size": 3, "version": "3.5.35" })), "c", "b");
        assert!(plain_notes.is_empty());
    }
}
