//! Connecting to etcd: one or more endpoints, optional client TLS, one member per backup.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// How to reach the etcd cluster.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs of the members; a backup streams from the first one that answers.
    pub endpoints: Vec<String>,
    /// CA bundle that signed the members' server certificates.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for clusters that require client authentication.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the members' certificates are checked against, when it is not the endpoint's host (members
    /// dialled at their pod addresses, which their certificates do not name).
    pub server_name: Option<String>,
    /// Limit for establishing a connection and for single requests.
    pub timeout: Duration,
}

/// Errors connecting to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// A TLS file could not be read.
    #[error("reading {path}: {source}")]
    TlsFile {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No endpoint answered.
    #[error("no etcd endpoint answered ({0})")]
    Unreachable(String),
}

/// A client bound to one member, with what that member reported just now.
pub struct Member {
    /// The client, connected to `endpoint` only.
    pub client: Client,
    /// The member's client URL.
    pub endpoint: String,
    /// The revision the member reported.
    pub revision: i64,
    /// The cluster ID the member reported.
    pub cluster_id: u64,
    /// The member's server version.
    pub version: String,
}

impl EtcdConfig {
    fn options(&self) -> Result<ConnectOptions, EtcdError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if self.ca.is_some() || self.identity.is_some() {
            let read = |path: &PathBuf| {
                std::fs::read(path).map_err(|source| EtcdError::TlsFile { path: path.display().to_string(), source })
            };
            let mut tls = TlsOptions::new();
            if let Some(ca) = &self.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            if let Some(name) = &self.server_name {
                tls = tls.domain_name(name.clone());
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// Connects to the first endpoint that answers a status request. Every later call on the returned client goes
    /// to that same member, so the revision it reported and the snapshot it streams come from one view.
    pub async fn connect_member(&self) -> Result<Member, EtcdError> {
        let options = self.options()?;
        let mut failures = Vec::new();
        for endpoint in &self.endpoints {
            let attempt = async {
                let mut client = Client::connect([endpoint.as_str()], Some(options.clone())).await?;
                let status = client.status().await?;
                Ok::<_, etcd_client::Error>((client, status))
            };
            match tokio::time::timeout(self.timeout * 2, attempt).await {
                Ok(Ok((client, status))) => {
                    let header = status.header();
                    return Ok(Member {
                        client,
                        endpoint: endpoint.clone(),
                        revision: header.map(|h| h.revision()).unwrap_or_default(),
                        cluster_id: header.map(|h| h.cluster_id()).unwrap_or_default(),
                        version: status.version().to_string(),
                    });
                }
                Ok(Err(e)) => failures.push(format!("{endpoint}: {e}")),
                Err(_) => failures.push(format!("{endpoint}: timed out")),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }
}
