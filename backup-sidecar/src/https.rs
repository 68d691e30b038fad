//! The API over HTTPS: a certificate and key read from files (a Secret mounted as a directory), read again when
//! they change, so that a renewed certificate is served from the next connection on without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;

/// How long a client may take over its TLS handshake before its connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections are given to finish at shutdown (under the pod's default grace period of 30 s).
const DRAIN: Duration = Duration::from_secs(25);
/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the files are looked at again, at most (handshakes in between use what was read).
const RECHECK: Duration = Duration::from_secs(1);

/// The certificate (`tls.crt`, with its chain) and key (`tls.key`) the API serves with.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Why the certificate could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

/// Reads the certificate and key as they are now, checked to belong together.
fn load(files: &TlsFiles, provider: &rustls::crypto::CryptoProvider) -> Result<(Vec<u8>, Arc<CertifiedKey>), TlsError> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| TlsError(format!("reading {}: {e}", path.display())));
    let (cert_pem, key_pem) = (read(&files.cert)?, read(&files.key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{}: not a PEM certificate: {e}", files.cert.display())))?;
    if chain.is_empty() {
        return Err(TlsError(format!("{} holds no certificate", files.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError(format!("{}: not a PEM private key: {e}", files.key.display())))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        TlsError(format!("{} and {} do not make a usable pair: {e}", files.cert.display(), files.key.display()))
    })?;
    let mut both = cert_pem;
    both.extend_from_slice(&key_pem);
    Ok((both, Arc::new(certified)))
}

/// Serves the certificate the files hold: read again at a handshake at most every [`RECHECK`] (two small files),
/// parsed again only when they changed, and the last good pair kept while they cannot be used (a Secret being
/// written).
#[derive(Debug)]
struct Reloading {
    files: TlsFiles,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<Current>,
}

/// What [`Reloading`] serves: the files' bytes it was read from, the pair, and when the files were last looked at.
#[derive(Debug)]
struct Current {
    read: Vec<u8>,
    pair: Arc<CertifiedKey>,
    checked: std::time::Instant,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if current.checked.elapsed() < RECHECK {
            return Some(current.pair.clone());
        }
        current.checked = std::time::Instant::now();
        let read = |path: &Path| std::fs::read(path).ok();
        let unchanged = match (read(&self.files.cert), read(&self.files.key)) {
            (Some(mut cert), Some(key)) => {
                cert.extend_from_slice(&key);
                cert == current.read
            }
            _ => true,
        };
        if !unchanged {
            match load(&self.files, &self.provider) {
                Ok((read, pair)) => {
                    tracing::info!(cert = %self.files.cert.display(), "serving a new certificate");
                    (current.read, current.pair) = (read, pair);
                }
                Err(error) => {
                    tracing::warn!(%error, "the certificate files changed and cannot be used yet: serving the last good ones")
                }
            }
        }
        Some(current.pair.clone())
    }
}

/// The TLS settings of the API: `files` served, read again when they change. Fails when they cannot be used now.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let (read, pair) = load(files, &provider)?;
    let current = Current { read, pair, checked: std::time::Instant::now() };
    let resolver = Reloading { files: files.clone(), provider: provider.clone(), current: Mutex::new(current) };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `app` over TLS with `config` on `listener` until `shutdown` completes, then gives open connections
/// [`DRAIN`] to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(%error, "accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (acceptor, service, watcher) =
            (acceptor.clone(), TowerToHyperService::new(app.clone()), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => return tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown()).await.is_err() {
        // Their tasks end with the process.
        tracing::warn!("connections still open after {DRAIN:?}: stopping without them");
    }
    Ok(())
}
