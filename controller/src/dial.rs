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

    /// The client URL of a member at `ip` whose client port speaks TLS when `tls` (each member's pod says whether
    /// its does: while client TLS is turned on, member by member, some do and some do not yet).
    pub fn member_url(ip: &str, tls: bool) -> String {
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
        format!("{}://{host}:2379", if tls { "https" } else { "http" })
    }

    /// etcd client options for `endpoint`: connect within [`Dial::timeout`], each request within `request_timeout`,
    /// with the cluster's TLS when the endpoint is `https`.
    pub fn options(&self, endpoint: &str, request_timeout: Duration) -> ConnectOptions {
        let options = ConnectOptions::new().with_connect_timeout(self.timeout).with_timeout(request_timeout);
        match &self.tls {
            Some(tls) if endpoint.starts_with("https://") => options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                    .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                    .domain_name(tls.server_name.clone()),
            ),
            _ => options,
        }
    }

    /// An HTTP client for a member's client port at `client_url`, and the URL to use with it: with TLS, the URL
    /// names the server name (resolved to the member's address), so that its certificate can be checked.
    pub fn http(&self, client_url: &str) -> Option<(reqwest::Client, String)> {
        let builder = reqwest::Client::builder().timeout(self.timeout);
        let (Some(tls), Some(authority)) = (&self.tls, client_url.strip_prefix("https://")) else {
            return Some((builder.build().ok()?, client_url.to_string()));
        };
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
    fn a_member_is_dialled_by_address_with_the_scheme_of_its_pod() {
        assert_eq!(Dial::member_url("10.0.0.7", false), "http://10.0.0.7:2379");
        assert_eq!(Dial::member_url("fd00::7", false), "http://[fd00::7]:2379");
        assert_eq!(Dial::member_url("10.0.0.7", true), "https://10.0.0.7:2379");
        let plain = Dial::plain(Duration::from_secs(1));
        let tls = Dial {
            tls: Some(Arc::new(ClientIdentity {
                ca_pem: Vec::new(),
                cert_pem: Vec::new(),
                key_pem: b"-----BEGIN PRIVATE KEY-----secret".to_vec(),
                server_name: "demo-client.ns.svc".into(),
            })),
            ..plain
        };
        // A member not yet on client TLS is dialled plain (an HTTPS one: controller_tls).
        let (_, url) = tls.http("http://10.0.0.7:2379").expect("a plain client");
        assert_eq!(url, "http://10.0.0.7:2379");
        assert!(!format!("{tls:?}").contains("secret"), "no key in a Debug print");
    }
}
