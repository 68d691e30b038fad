//! The backup sidecar's I/O: [`ensure`] writes its Deployment, Service and token Secret when missing or changed,
//! and [`SidecarClient`] speaks its HTTP API (take, list, pin, status) with its token.

use super::*;

/// Errors of [`ensure`].
#[derive(Debug, thiserror::Error)]
#[error("{op}: {source}")]
pub struct SidecarError {
    /// What was being done.
    pub op: String,
    /// The underlying error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Writes the sidecar's Secret, Service and Deployment where missing or changed, or deletes them when the spec no
/// longer asks for backups; then reads the sidecar's health. Returns `None` when the cluster has no backups.
/// With client TLS the sidecar serves its API over HTTPS once its serving certificate can be used
/// (`certificate_ready`; status.certificates says what is wrong otherwise), and never goes back to plain HTTP:
/// until then none is created, one serving plain HTTP is changed in everything else, and one serving HTTPS is
/// left as it runs (never rolled onto a certificate it cannot use). The controller never sends the sidecar's token
/// in clear to a cluster whose spec asks for TLS.
///
/// The sidecar reaches etcd through the client Service, with the scheme the members serve (`members_serve_tls`:
/// every member pod TLS, every one plain, or `None` while they differ or none runs): while client TLS is turned on
/// or off member by member it keeps the scheme it has, so that a backup (an upgrade's too) works until the members
/// move, and again once they all have.
pub async fn ensure(
    client: &kube::Client,
    cluster: &EtcdCluster,
    default_image: &str,
    certificate_ready: bool,
    members_serve_tls: Option<bool>,
    timeout: Duration,
) -> Result<Option<BackupHealth>, SidecarError> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let err = |op: String| move |source: kube::Error| SidecarError { op, source: source.into() };

    let Some(policy) = &cluster.spec.backup else {
        // Backups were switched off (or never on): the sidecar goes, the backups in storage stay.
        remove(&deployments, &sidecar_name(&name)).await.map_err(err(format!("deleting deployment {name}")))?;
        remove(&services, &sidecar_name(&name)).await.map_err(err(format!("deleting service {name}")))?;
        remove(&secrets, &token_secret_name(&name)).await.map_err(err(format!("deleting secret {name}")))?;
        return Ok(None);
    };

    let secret_name = token_secret_name(&name);
    let token = match secrets.get_opt(&secret_name).await.map_err(err(format!("reading secret {secret_name}")))? {
        Some(secret) => secret_token(&secret),
        None => {
            let token = new_token()
                .map_err(|e| SidecarError { op: "generating the sidecar's token".into(), source: e.into() })?;
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() };
            match secrets.create(&params, &token_secret(cluster, &token)).await {
                Ok(_) => Some(token),
                // Another replica or an earlier attempt made it: use what is stored.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    let stored =
                        secrets.get(&secret_name).await.map_err(err(format!("reading secret {secret_name}")))?;
                    secret_token(&stored)
                }
                Err(source) => return Err(err(format!("creating secret {secret_name}"))(source)),
            }
        }
    };

    let service = match services.get_opt(&sidecar_name(&name)).await.map_err(err("reading service".into()))? {
        Some(service) => service,
        None => services
            .patch(
                &sidecar_name(&name),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(sidecar_service(cluster)),
            )
            .await
            .map_err(err(format!("applying service {}", sidecar_name(&name))))?,
    };

    let current = deployments.get_opt(&sidecar_name(&name)).await.map_err(err("reading deployment".into()))?;
    let asked = crate::certificates::backup_secret(cluster).is_some();
    let serves_https = current.as_ref().and_then(serving_secret).is_some();
    let etcd_tls = members_serve_tls
        .or_else(|| current.as_ref().and_then(etcd_tls_of))
        .unwrap_or_else(|| cluster.spec.client_tls());
    let mut desired = sidecar_deployment_serving(cluster, policy, default_image, asked && certificate_ready, etcd_tls);
    let hash = spec_hash(&desired);
    let current = match current {
        Some(current) if current.annotations().get(SPEC_HASH) == Some(&hash) => current,
        Some(current) if asked && !certificate_ready && serves_https => current,
        None if asked && !certificate_ready => {
            return Ok(Some(BackupHealth::Starting {
                why: "the backup sidecar waits for its serving certificate (status.certificates says what is wrong \
                      with it)"
                    .into(),
            }));
        }
        _ => {
            desired.annotations_mut().insert(SPEC_HASH.into(), hash);
            tracing::info!(deployment = %sidecar_name(&name), "applying the backup sidecar");
            deployments
                .patch(&sidecar_name(&name), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired))
                .await
                .map_err(err(format!("applying deployment {}", sidecar_name(&name))))?
        }
    };

    let available = current.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    if available < 1 {
        return Ok(Some(BackupHealth::Starting {
            why: format!("the backup sidecar (deployment {}) has no available replica yet", sidecar_name(&name)),
        }));
    }
    let Some(ip) = service.spec.and_then(|s| s.cluster_ip).filter(|ip| ip != "None") else {
        return Ok(Some(BackupHealth::Unreachable { error: "its service has no cluster IP".into() }));
    };
    let token = match token {
        Some(token) => Some(token),
        None => secrets.get(&secret_name).await.ok().as_ref().and_then(secret_token),
    };
    let status = match SidecarClient::at(
        &secrets,
        &name,
        &namespace,
        &ip,
        asked,
        serving_secret(&current),
        token,
        timeout,
    )
    .await
    {
        Ok(client) => client.status().await,
        Err(error) => Err(error),
    };
    Ok(Some(match status {
        Ok(status) => BackupHealth::Reported(Box::new(status)),
        Err(error) => BackupHealth::Unreachable { error: error.to_string() },
    }))
}

/// How pods reach a cluster's sidecar: its URL through cluster DNS, and when it serves HTTPS, the Secret whose
/// `ca.crt` its certificate is checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// `http(s)://<cluster>-backup.<namespace>.svc:19999`.
    pub url: String,
    /// The sidecar's serving Secret (only its `ca.crt` is read); `None` for plain HTTP.
    pub ca_secret: Option<String>,
}

impl Reach {
    /// The sidecar of `cluster` in `namespace` serving with `secret` (HTTPS) or plain HTTP.
    pub fn of(cluster: &str, namespace: &str, secret: Option<String>) -> Self {
        let scheme = if secret.is_some() { "https" } else { "http" };
        Self { url: format!("{scheme}://{}:{PORT}", sidecar_host(cluster, namespace)), ca_secret: secret }
    }
}

/// The sidecar's Service name as its certificate covers it and pods resolve it.
fn sidecar_host(cluster: &str, namespace: &str) -> String {
    format!("{}.{namespace}.svc", sidecar_name(cluster))
}

/// How pods reach the sidecar of `cluster` in `namespace` as its Deployment runs it now: HTTPS, with a Secret
/// that holds the `ca.crt` to check it against; or plain HTTP, refused when that cluster's spec asks for TLS (its
/// token is never sent in clear: the sidecar serves HTTPS once its certificate can be used).
pub async fn sidecar_reach(client: &kube::Client, namespace: &str, cluster: &str) -> Result<Reach, SidecarError> {
    let failed = |op: String| move |source: kube::Error| SidecarError { op, source: source.into() };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let name = sidecar_name(cluster);
    let deployment = deployments.get_opt(&name).await.map_err(failed(format!("reading deployment {name}")))?;
    let serving = deployment.as_ref().and_then(serving_secret);
    // Through the status subresource, which returns the whole object: what the controller's RBAC grants.
    let asked = match clusters.get_status(cluster).await {
        Ok(found) => crate::certificates::backup_secret(&found).is_some(),
        Err(kube::Error::Api(status)) if status.code == 404 => false,
        Err(error) => return Err(failed(format!("reading EtcdCluster {cluster}"))(error)),
    };
    let refused =
        |why: String| SidecarError { op: format!("reaching the backup sidecar of {cluster}"), source: why.into() };
    match &serving {
        None if asked => {
            return Err(refused(
                "it does not serve HTTPS yet (its certificate cannot be used: see that cluster's \
                 status.certificates), and its token is not sent in clear"
                    .into(),
            ));
        }
        // A seed mounts the Secret's ca.crt alone: a Secret without it would never let the pod start.
        Some(secret) => {
            let stored = secrets.get_opt(secret).await.map_err(failed(format!("reading Secret {secret}")))?;
            if !stored.and_then(|s| s.data).is_some_and(|d| d.contains_key(crate::tls::CA_KEY)) {
                return Err(refused(format!("its serving Secret {secret} has no {}", crate::tls::CA_KEY)));
            }
        }
        None => {}
    }
    Ok(Reach::of(cluster, namespace, serving))
}

/// A client of a backup sidecar's HTTP API, as the controller reaches it.
pub struct SidecarClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl SidecarClient {
    /// A client of the sidecar at `base` (e.g. `http://10.215.0.9:19999`).
    pub fn new(base: String, token: Option<String>, timeout: Duration) -> Result<Self, SidecarError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| SidecarError { op: "building an HTTP client".into(), source: e.into() })?;
        Ok(Self { base, token, http })
    }

    /// A client of the sidecar of `cluster` at `ip` (its Service's): over HTTPS when it serves with Secret
    /// `serving` (its certificate checked against that Secret's `ca.crt` for the Service's `.svc` name, dialled
    /// at `ip`), else plain HTTP, unless HTTPS is `required` (the cluster asks for TLS: the token is never sent in
    /// clear).
    #[allow(clippy::too_many_arguments)]
    async fn at(
        secrets: &Api<Secret>,
        cluster: &str,
        namespace: &str,
        ip: &str,
        required: bool,
        serving: Option<String>,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Self, SidecarError> {
        let Some(secret) = serving else {
            if required {
                return Err(SidecarError {
                    op: format!("reaching the backup sidecar of {cluster}"),
                    source: "it does not serve HTTPS yet (status.certificates says whether its certificate can be \
                             used), and its token is not sent in clear"
                        .into(),
                });
            }
            return Self::new(format!("http://{ip}:{PORT}"), token, timeout);
        };
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| SidecarError {
            op: format!("reaching the backup sidecar of {cluster} over HTTPS (Secret {secret})"),
            source,
        };
        let stored = secrets.get_opt(&secret).await.map_err(|e| failed(e.into()))?;
        let ca = stored
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(crate::tls::CA_KEY))
            .ok_or_else(|| failed(format!("Secret {secret} has no {}", crate::tls::CA_KEY).into()))?;
        let roots = reqwest::Certificate::from_pem_bundle(&ca.0).map_err(|e| failed(e.into()))?;
        let address: std::net::IpAddr = ip.parse().map_err(|e: std::net::AddrParseError| failed(e.into()))?;
        let host = sidecar_host(cluster, namespace);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .tls_certs_only(roots)
            .resolve(&host, std::net::SocketAddr::new(address, proto::backup::DEFAULT_PORT))
            .build()
            .map_err(|e| failed(e.into()))?;
        Ok(Self { base: format!("https://{host}:{PORT}"), token, http })
    }

    /// The sidecar of cluster `cluster` in `namespace`, at its service's cluster IP, with its token.
    pub async fn for_cluster(
        client: &kube::Client,
        namespace: &str,
        cluster: &str,
        timeout: Duration,
    ) -> Result<Self, SidecarError> {
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        let err = |op: String| move |source: kube::Error| SidecarError { op, source: source.into() };
        let service_name = sidecar_name(cluster);
        let service = services.get(&service_name).await.map_err(err(format!("reading service {service_name}")))?;
        let ip = service.spec.and_then(|s| s.cluster_ip).filter(|ip| ip != "None").ok_or_else(|| SidecarError {
            op: format!("reaching the backup sidecar of {cluster}"),
            source: format!("service {service_name} has no cluster IP").into(),
        })?;
        let secret_name = token_secret_name(cluster);
        let token = secrets.get_opt(&secret_name).await.map_err(err(format!("reading secret {secret_name}")))?;
        let serving = sidecar_reach(client, namespace, cluster).await?.ca_secret;
        let required = serving.is_some();
        Self::at(&secrets, cluster, namespace, &ip, required, serving, token.as_ref().and_then(secret_token), timeout)
            .await
    }

    /// The backup named `name` (any cluster's in the sidecar's storage: a restore may name one on purpose), or for
    /// `latest` the newest of the sidecar's own cluster; `None` when there is no such backup.
    pub async fn find(&self, name: &str) -> Result<Option<BackupInfo>, SidecarError> {
        if name == "latest" {
            let list: BackupList =
                self.send(self.http.get(format!("{}/v1/backups", self.base)), "listing backups").await?;
            return Ok(list.backups.into_iter().next());
        }
        let list: BackupList =
            self.send(self.http.get(format!("{}/v1/backups?all=true", self.base)), "listing backups").await?;
        Ok(list.backups.into_iter().find(|b| b.name == name))
    }

    /// The newest backup the EtcdCluster `cluster` (UID `uid`, created at `since`) wrote (see [`newest_of`]).
    pub async fn newest_of(
        &self,
        cluster: &str,
        uid: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Option<BackupInfo>, SidecarError> {
        Ok(self.own(cluster, uid, since).await?.into_iter().next())
    }

    /// Every backup the EtcdCluster `cluster` (UID `uid`, created at `since`) wrote, newest first (see
    /// [`newest_of`]).
    pub async fn own(
        &self,
        cluster: &str,
        uid: Option<&str>,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Vec<BackupInfo>, SidecarError> {
        let list: BackupList = self.send(self.http.get(format!("{}/v1/backups", self.base)), "listing backups").await?;
        Ok(list.backups.into_iter().filter(|b| owned_by(b, cluster, uid, since)).collect())
    }

    /// The sidecar's own status (`GET /v1/status`).
    pub async fn status(&self) -> Result<SidecarStatus, SidecarError> {
        self.send(self.http.get(format!("{}/v1/status", self.base)), "reading the status").await
    }

    /// Pins backup `name` (the sidecar's retention keeps it until a later pin) and returns it.
    pub async fn pin(&self, name: &str, reason: &str) -> Result<BackupInfo, SidecarError> {
        let body = proto::backup::PinRequest { reason: reason.into() };
        self.send(self.http.post(format!("{}/v1/backups/{name}/pin", self.base)).json(&body), "pinning a backup").await
    }

    /// Takes a backup now from `endpoints` (or the sidecar's own when empty) and returns it.
    pub async fn trigger(&self, endpoints: &[String]) -> Result<BackupInfo, SidecarError> {
        let body = BackupRequest { endpoints: endpoints.to_vec() };
        self.send(self.http.post(format!("{}/v1/backups", self.base)).json(&body), "taking a backup").await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        mut request: reqwest::RequestBuilder,
        op: &str,
    ) -> Result<T, SidecarError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| SidecarError {
            op: format!("{op} at the backup sidecar {}", self.base),
            source,
        };
        let response = request.send().await.map_err(|e| failed(chain(&e).into()))?;
        if !response.status().is_success() {
            let status = response.status();
            let detail = response.json::<ApiErrorBody>().await.map(|b| b.detail).unwrap_or_default();
            return Err(failed(format!("{status} {detail}").into()));
        }
        response.json::<T>().await.map_err(|e| failed(e.into()))
    }
}

/// An error with its causes (a TLS failure is in a cause of reqwest's error, not in its message).
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn secret_token(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(TOKEN_KEY)?;
    String::from_utf8(bytes.0.clone()).ok().map(|t| t.trim().to_string())
}

/// Whether cluster `cluster` in `namespace` has a backup sidecar (its Service).
pub async fn sidecar_exists(client: &kube::Client, namespace: &str, cluster: &str) -> Result<bool, SidecarError> {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let name = sidecar_name(cluster);
    let found = services
        .get_opt(&name)
        .await
        .map_err(|source| SidecarError { op: format!("reading service {name}"), source: source.into() })?;
    Ok(found.is_some())
}

async fn remove<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error),
    }
}

/// The newest of `newest_first` that an automatic recovery of the EtcdCluster named `cluster` (UID `uid`, created
/// at `since`) may restore: one that this very object wrote. Its name must match (never another cluster's sharing
/// the storage prefix), and so must its UID when the backup records one; a backup from a sidecar that recorded no
/// UID must have started after the object was created. An EtcdCluster deleted and created again under the same
/// name is a new cluster: the old one's backups stay in storage, restorable by name through `spec.restore`, but
/// are never restored into the new one without a person asking.
pub fn newest_of(
    newest_first: Vec<BackupInfo>,
    cluster: &str,
    uid: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Option<BackupInfo> {
    newest_first.into_iter().find(|b| owned_by(b, cluster, uid, since))
}

/// Whether the EtcdCluster `cluster` (UID `uid`, created at `since`) wrote `backup` (see [`newest_of`]).
fn owned_by(
    backup: &BackupInfo,
    cluster: &str,
    uid: Option<&str>,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> bool {
    let ours = match (backup.cluster_uid.as_deref(), uid) {
        (Some(recorded), Some(uid)) => recorded == uid,
        _ => since.is_none_or(|since| backup.started_at >= since),
    };
    backup.cluster_name == cluster && ours
}
