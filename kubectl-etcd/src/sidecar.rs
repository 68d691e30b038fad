//! The cluster's backup sidecar, reached through a port-forward to one of its Ready pods, with the token of its
//! Secret, over HTTPS checked against its serving Secret's CA when its Deployment serves HTTPS.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::ListParams;
use proto::backup::{BackupInfo, BackupList};
use proto::cluster::EtcdCluster;

use crate::forward::Forward;

/// A way to the sidecar's API.
pub struct Sidecar {
    http: reqwest::Client,
    base: String,
    token: String,
    _forward: Forward,
}

impl Sidecar {
    /// Reaches the sidecar of `cluster`, or says why it cannot.
    pub async fn reach(client: &kube::Client, cluster: &EtcdCluster) -> anyhow::Result<Self> {
        let name = cluster.metadata.name.clone().unwrap_or_default();
        let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
        if cluster.spec.backup.is_none() {
            bail!("{namespace}/{name} has no backups: its spec.backup is not set");
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let sidecar = controller::backup::sidecar_name(&name);
        let deployment = deployments
            .get_opt(&sidecar)
            .await
            .with_context(|| format!("reading Deployment {namespace}/{sidecar}"))?
            .with_context(|| {
                format!("{namespace}/{name}'s backup sidecar (Deployment {sidecar}) is not there yet: see `kubectl etcd status {name} -n {namespace}`")
            })?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
        let token_secret = controller::backup::token_secret_name(&name);
        let token = secrets
            .get(&token_secret)
            .await
            .with_context(|| format!("reading the sidecar's token (Secret {namespace}/{token_secret})"))?
            .data
            .and_then(|d| d.get(controller::backup::TOKEN_KEY).cloned())
            .with_context(|| format!("Secret {namespace}/{token_secret} has no `token`"))?;
        let token = String::from_utf8(token.0).context("the sidecar's token is not text")?;

        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let selector = controller::backup::sidecar_selector(&name)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let listed = pods.list(&ListParams::default().labels(&selector)).await.context("listing the sidecar's pods")?;
        let pod = listed
            .items
            .iter()
            .find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|conditions| {
                        conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
            })
            .and_then(|p| p.metadata.name.clone())
            .with_context(|| format!("no Ready pod of the sidecar {namespace}/{sidecar}: `kubectl -n {namespace} describe deployment {sidecar}`"))?;
        let port = u16::try_from(controller::backup::PORT).expect("a port");
        let forward = Forward::start(pods, &pod, port).await?;

        // Never through a proxy of the environment: the port-forward is on loopback, and the token must not travel
        // to a proxy (in clear, for a plain sidecar).
        let mut http = reqwest::Client::builder().no_proxy().connect_timeout(Duration::from_secs(15));
        let base = match controller::backup::serving_secret(&deployment) {
            None => format!("http://{}", forward.local),
            Some(serving) => {
                let ca = secrets
                    .get(&serving)
                    .await
                    .with_context(|| format!("reading the sidecar's serving Secret {namespace}/{serving}"))?
                    .data
                    .and_then(|d| d.get("ca.crt").cloned())
                    .with_context(|| format!("Secret {namespace}/{serving} has no ca.crt to check the sidecar with"))?;
                let ca = reqwest::Certificate::from_pem(&ca.0).context("the sidecar's CA (ca.crt)")?;
                // The name its certificate covers, dialled at the forwarded port.
                let host = format!("{sidecar}.{namespace}.svc");
                http = http.tls_certs_only([ca]).resolve(&host, forward.local);
                format!("https://{host}:{}", forward.local.port())
            }
        };
        Ok(Self { http: http.build()?, base, token, _forward: forward })
    }

    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<reqwest::Response> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{what}: {}", controller::backup::chain(&e)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("{what}: the sidecar answered {status}: {}", body.trim());
        }
        Ok(response)
    }

    /// Its backups, newest first.
    pub async fn list(&self) -> anyhow::Result<BackupList> {
        let request = self.http.get(format!("{}/v1/backups", self.base)).timeout(Duration::from_secs(60));
        Ok(self.call(request, "listing backups").await?.json().await?)
    }

    /// A backup taken now (the sidecar answers once it is stored and verified), and whether it is new: at a
    /// revision no newer than its last backup's the sidecar answers with that one instead.
    pub async fn take(&self) -> anyhow::Result<(BackupInfo, bool)> {
        let request = self.http.post(format!("{}/v1/backups", self.base)).timeout(Duration::from_secs(1800));
        let response = self.call(request, "taking a backup").await?;
        let created = response.status() == reqwest::StatusCode::CREATED;
        Ok((response.json().await?, created))
    }
}

/// Backups as a table: name, age (from `now`), revision, size (compressed), etcd version.
pub fn table(backups: &[BackupInfo], now: DateTime<Utc>) -> String {
    let mut rows = vec![["NAME", "AGE", "REVISION", "SIZE", "ETCD", "PINNED"].map(String::from).to_vec()];
    for b in backups {
        rows.push(vec![
            b.name.clone(),
            age(now - b.finished_at),
            b.revision.to_string(),
            bytes(b.compressed_size),
            b.etcd_version.clone(),
            b.pinned.clone().unwrap_or_default(),
        ]);
    }
    if backups.is_empty() {
        return "no backups yet\n".into();
    }
    crate::members::columns(&rows)
}

/// A duration as kubectl shows ages: `45s`, `12m`, `3h`, `2d`.
pub fn age(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A size in bytes, in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_as_kubectl_shows_them() {
        assert_eq!(age(chrono::TimeDelta::seconds(45)), "45s");
        assert_eq!(age(chrono::TimeDelta::seconds(600)), "10m");
        assert_eq!(age(chrono::TimeDelta::seconds(3 * 3600)), "3h");
        assert_eq!(age(chrono::TimeDelta::seconds(3 * 86_400)), "3d");
        assert_eq!(age(chrono::TimeDelta::seconds(-5)), "0s", "a clock a little ahead");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(20 * 1024 * 1024 + 512 * 1024), "20.5 MiB");
    }
}
