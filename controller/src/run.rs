//! Running the controller: watch EtcdClusters (and the pods and services they own), reconcile each, serve
//! health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use proto::cluster::EtcdCluster;
use tokio_util::sync::CancellationToken;

use crate::build::BuildInfo;
use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Hooks, error_policy, reconcile};

/// The sidecar image of this release.
pub const DEFAULT_SIDECAR_IMAGE: &str = concat!("kube-etcd-controller/etcd-backup-sidecar:", env!("CARGO_PKG_VERSION"));

/// How to run.
#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_listen: SocketAddr,
    /// Timeout of each etcd request.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub etcd_timeout: Duration,
    /// How often a steady cluster is looked at again (etcd's health changes without Kubernetes events).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync: Duration,
    /// How long the kubelets take to put a Secret's new contents into the pods that mount it (their sync period and
    /// cache; 2m covers the default 1m sync): a generated CA's rotation drops the old CA only this long after the
    /// last certificate of the new one was written.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub secret_propagation: Duration,
    /// Image of the backup sidecar for clusters whose `spec.backup.sidecarImage` is unset.
    #[arg(long, env = "SIDECAR_IMAGE", default_value = DEFAULT_SIDECAR_IMAGE)]
    pub sidecar_image: String,
    /// Take part in leader election (a Lease), so that only one of several replicas reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the Lease (default: the pod's namespace, else the watched one, else `default`). The shipped
    /// RBAC grants Leases only in the controller's own namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// The namespace the controller's pods run in (the pod's own, from the downward API): the NetworkPolicies it
    /// writes admit it from there. Unset (a controller run outside the cluster): they name no controller.
    #[arg(long, env = "POD_NAMESPACE")]
    pub controller_namespace: Option<String>,
    /// Name of the Lease: controllers that share one elect one leader among them.
    #[arg(long, env = "LEASE_NAME", default_value = LEASE_NAME)]
    pub lease_name: String,
    /// This replica's name in events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "etcd-controller")]
    pub instance: String,
}

/// Runs until the process is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    run_with(args, Hooks::default()).await
}

/// As [`run`], with `hooks` (tests stop the controller at chosen points with them).
pub async fn run_with(args: RunArgs, hooks: Hooks) -> anyhow::Result<()> {
    run_with_client(kube::Client::try_default().await?, args, hooks).await
}

/// As [`run_with`], with the API server client given (tests give one that impersonates the shipped
/// ServiceAccount, so that every call is made with the permissions the install grants).
pub async fn run_with_client(client: kube::Client, args: RunArgs, hooks: Hooks) -> anyhow::Result<()> {
    let (clusters, pods, services, deployments): (Api<EtcdCluster>, Api<Pod>, Api<Service>, Api<Deployment>) =
        match &args.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => {
                (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone()))
            }
        };
    let build = BuildInfo::current();
    let reporter = Reporter { controller: "kube-etcd-controller".into(), instance: Some(args.instance.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Metrics::new(&build),
        etcd_timeout: args.etcd_timeout,
        resync: args.resync,
        secret_propagation: args.secret_propagation,
        sidecar_image: args.sidecar_image.clone(),
        controller_namespace: args.controller_namespace.clone(),
        hooks,
        refusals: crate::backoff::Refusals::default(),
    });

    let listener = tokio::net::TcpListener::bind(args.metrics_listen).await?;
    let served = ctx.clone();
    let app = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/readyz", axum::routing::get(|| async { "ok" }))
        .route(
            "/metrics",
            axum::routing::get(move || {
                let ctx = served.clone();
                async move { ctx.metrics.encode() }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    tracing::info!(
        version = build.version,
        commit = build.commit,
        binary_sha256 = %build.binary_sha256,
        namespace = ?args.namespace,
        metrics = %args.metrics_listen,
        "controller starting"
    );

    // Only the holder of the lease reconciles; a standby waits here, serving its health endpoints.
    let lease = args.leader_elect.then(|| {
        let namespace =
            args.lease_namespace.clone().or_else(|| args.namespace.clone()).unwrap_or_else(|| "default".into());
        let mut suffix = [0u8; 4];
        let _ = getrandom::fill(&mut suffix);
        // Unique per process, so two replicas with the same pod name can never both believe they lead.
        let identity = format!("{}_{}", args.instance, hex::encode(suffix));
        LeaseConfig::new(&args.lease_name, &namespace, &identity)
    });
    let leadership = match lease {
        Some(config) => Some(leader::lead(client.clone(), config).await),
        None => None,
    };
    ctx.metrics.leads();
    let lost = leadership.as_ref().map_or_else(CancellationToken::new, leader::Leadership::lost);
    let stop = {
        let lost = lost.clone();
        async move {
            tokio::select! {
                () = shutdown_signal() => tracing::info!("shutting down"),
                () = lost.cancelled() => tracing::error!("lost leadership; stopping"),
            }
        }
    };

    let labelled = watcher::Config::default().labels(crate::labels::CLUSTER_LABEL);
    let controller = Controller::new(clusters, watcher::Config::default());
    // A deleted cluster is never reconciled again: its metrics are forgotten once the watch no longer has it. (The
    // store's own readiness is not awaited: it is not signalled for the controller's store here; the watch lists
    // long before the first sweep, and a cluster forgotten too early is recorded again at its next reconcile.)
    let store = controller.store();
    let forget = ctx.clone();
    let sweeper = tokio::spawn(async move {
        loop {
            tokio::time::sleep(METRICS_SWEEP).await;
            forget.metrics.retain_clusters(|namespace, name| {
                let kept = store.get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace)).is_some();
                if !kept {
                    tracing::debug!(namespace, cluster = name, "forgot the metrics of a deleted cluster");
                }
                kept
            });
        }
    });
    controller
        .owns(pods, labelled.clone())
        .owns(services, labelled.clone())
        .owns(deployments, labelled)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
        })
        .await;
    sweeper.abort();
    if lost.is_cancelled() {
        // Exit non-zero: the pod restarts and becomes a candidate again.
        anyhow::bail!("lost the lease {}; another replica leads now", args.lease_name);
    }
    if let Some(leadership) = leadership {
        leadership.release().await;
    }
    Ok(())
}

/// How often the metrics of deleted clusters are looked for.
const METRICS_SWEEP: std::time::Duration = std::time::Duration::from_secs(15);

/// The name of the controller's Lease.
pub const LEASE_NAME: &str = "kube-etcd-controller";

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
