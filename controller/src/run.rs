//! Running the controller: watch EtcdClusters (and the pods and services they own), reconcile each, serve
//! health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use proto::cluster::EtcdCluster;

use crate::metrics::Metrics;
use crate::reconcile::{Context, error_policy, reconcile};

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
    /// This replica's name in events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "etcd-controller")]
    pub instance: String,
}

/// Runs until the process is stopped.
pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await?;
    let (clusters, pods, services): (Api<EtcdCluster>, Api<Pod>, Api<Service>) = match &args.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone()), Api::all(client.clone())),
    };
    let reporter = Reporter { controller: "kube-etcd-controller".into(), instance: Some(args.instance.clone()) };
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics: Metrics::default(),
        etcd_timeout: args.etcd_timeout,
        resync: args.resync,
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
    tracing::info!(namespace = ?args.namespace, metrics = %args.metrics_listen, "controller starting");

    let labelled = watcher::Config::default().labels(crate::labels::CLUSTER_LABEL);
    Controller::new(clusters, watcher::Config::default())
        .owns(pods, labelled.clone())
        .owns(services, labelled)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile ended with an error");
            }
        })
        .await;
    Ok(())
}
