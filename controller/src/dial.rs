//! How the controller reaches a cluster's members: its etcd timeout and, for a cluster with client TLS, the CA that
//! signed the members' serving certificates, the name those certificates are checked against, and the client
//! certificate the controller presents. The TLS material is read from its Secret at every reconcile
//! ([`crate::certificates::observe`]), so a renewed or replaced certificate is used from the next dial on.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// The client side of a cluster's client TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// PEM of the CA bundle that signed the members' serving certificates.
    pub ca_pem: Vec<u8>,
    /// PEM of the controller's client certificate.
    pub cert_pem: Vec<u8>,
    /// PEM of its private key. Never printed: `Debug` leaves it out.
    pub key_pem: Vec<u8>,
    /// The name the members' certificates are checked against (the client Service's `.svc` name, which every
    /// member's serving certificate covers): the controller dials members at their pod addresses, which no
    /// certificate names.
    pub server_name: String,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

/// How to dial a cluster's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dial {
    /// Limit for establishing a connection and for a health read.
    pub timeout: Duration,
    /// Client TLS, when the cluster's client port speaks it.
    pub tls: Option<Arc<ClientIdentity>>,
}

impl Dial {
    /// Plain HTTP with `timeout`.
    pub fn plain(timeout: Duration) -> Self {
        Self { timeout, tls: None }
    }

    /// The scheme of the members' client URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// The client URL of a member at `ip`.
    pub fn member_url(&self, ip: &str) -> String {
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        format!("{}://{host}:2379", self.scheme())
    }

    /// etcd client options: connect within [`Dial::timeout`], each request within `request_timeout`, with the
    /// cluster's TLS.
    pub fn options(&self, request_timeout: Duration) -> ConnectOptions {
        let options = ConnectOptions::new().with_connect_timeout(self.timeout).with_timeout(request_timeout);
        match &self.tls {
            None => options,
            Some(tls) => options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                    .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                    .domain_name(tls.server_name.clone()),
            ),
        }
    }

    /// An HTTP client for a member's client port at `client_url`, and the URL to use with it: with TLS, the URL
    /// names the server name (resolved to the member's address), so that its certificate can be checked.
    pub fn http(&self, client_url: &str) -> Option<(reqwest::Client, String)> {
        let builder = reqwest::Client::builder().timeout(self.timeout);
        let Some(tls) = &self.tls else {
            return Some((builder.build().ok()?, client_url.to_string()));
        };
        let authority = client_url.strip_prefix("https://")?;
        let address: std::net::SocketAddr = authority.parse().ok()?;
        let ca = reqwest::Certificate::from_pem_bundle(&tls.ca_pem).ok()?;
        let mut pem = tls.cert_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&tls.key_pem);
        let identity = reqwest::Identity::from_pem(&pem).ok()?;
        // Only the cluster's CA is trusted, no public root.
        let builder = builder.tls_certs_only(ca).identity(identity).resolve(&tls.server_name, address);
        Some((builder.build().ok()?, format!("https://{}:{}", tls.server_name, address.port())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_is_dialled_by_address_with_the_scheme_of_its_cluster() {
        let plain = Dial::plain(Duration::from_secs(1));
        assert_eq!(plain.member_url("10.0.0.7"), "http://10.0.0.7:2379");
        assert_eq!(plain.member_url("fd00::7"), "http://[fd00::7]:2379");
        let tls = Dial {
            tls: Some(Arc::new(ClientIdentity {
                ca_pem: Vec::new(),
                cert_pem: Vec::new(),
                key_pem: b"-----BEGIN PRIVATE KEY-----secret".to_vec(),
                server_name: "demo-client.ns.svc".into(),
            })),
            ..plain
        };
        assert_eq!(tls.member_url("10.0.0.7"), "https://10.0.0.7:2379");
        assert!(!format!("{tls:?}").contains("secret"), "no key in a Debug print");
    }
}
