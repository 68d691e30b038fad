//! The sidecar against an etcd that serves TLS and requires client certificates (certificates made with openssl):
//! through the library, and through the binary's `--etcd-ca`, `--etcd-cert` and `--etcd-key` flags. And the sidecar's own API over
//! HTTPS (`--tls-cert-file`, `--tls-key-file`), its certificate read again when it changes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backup_sidecar::backup::{BackupConfig, Engine, Outcome};
use backup_sidecar::etcd::EtcdConfig;
use backup_sidecar::retention::Retention;
use backup_sidecar::storage::{S3Options, Storage};
use system_tests::etcd::{etcd_bin, unique};
use system_tests::net::{free_port, wait_for_child_port};

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl").args(args).current_dir(dir).stderr(Stdio::null()).status().expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=test-ca",
            "-days",
            "2",
        ],
    );
    for (name, ext) in [
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
    }
}

/// An etcd that serves TLS only and requires client certificates, with the certificates in its directory;
/// killed on drop.
struct TlsEtcd {
    child: Child,
    client_url: String,
    dir: tempfile::TempDir,
}

impl TlsEtcd {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path();
        certificates(pki);
        let (client_port, peer_port) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let name = unique("tls");
        let mut child = Command::new(etcd_bin())
            .args(["--name", &name, "--data-dir"])
            .arg(pki.join("data"))
            .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("{name}={peer_url}")])
            .args([
                "--client-cert-auth",
                "--trusted-ca-file",
                "ca.crt",
                "--cert-file",
                "server.crt",
                "--key-file",
                "server.key",
            ])
            .current_dir(pki)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{client_port}").parse().unwrap();
        wait_for_child_port(&mut child, addr, Duration::from_secs(20)).await.unwrap();
        let etcd = Self { child, client_url, dir };
        // The port opens before etcd serves: wait until it answers a client with the certificate.
        let config = etcd.config(true);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Err(error) = config.connect_member().await {
            assert!(tokio::time::Instant::now() < deadline, "etcd over TLS never answered: {error}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        etcd
    }

    /// How the sidecar reaches it: always checking the server against the CA, with the client certificate or not.
    fn config(&self, with_certificate: bool) -> EtcdConfig {
        let pki = self.pki();
        EtcdConfig {
            endpoints: vec![self.client_url.clone()],
            ca: Some(pki.join("ca.crt")),
            identity: with_certificate.then(|| (pki.join("client.crt"), pki.join("client.key"))),
            server_name: None,
            timeout: Duration::from_secs(3),
        }
    }

    fn pki(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn backs_up_an_etcd_that_requires_client_certificates() {
    let etcd = TlsEtcd::start().await;
    let storage =
        Storage::open(&format!("file://{}", etcd.pki().join("backups").display()), &S3Options::default()).unwrap();
    let config = BackupConfig {
        cluster_name: "tls".into(),
        cluster_uid: None,
        retention: Retention::default(),
        idle_timeout: Duration::from_secs(5),
    };
    let engine = Engine::new(etcd.config(true), storage.clone(), config.clone());
    let Outcome::Created(info) = engine.backup().await.unwrap() else { panic!("a first backup is new") };
    assert!(info.etcd_member.starts_with("https://"));
    assert!(info.raw_size > 0);
    assert_eq!(engine.list().await.unwrap().len(), 1);
    // Without a client certificate the same (running) server refuses, and the failure says so.
    let refused = Engine::new(etcd.config(false), storage, config).backup().await.unwrap_err();
    assert_eq!(refused.reason(), "etcd_unreachable", "{refused}");
}

#[tokio::test]
async fn backup_once_reaches_it_with_the_certificate_flags() {
    let etcd = TlsEtcd::start().await;
    let pki = etcd.pki();
    let storage = format!("file://{}", pki.join("backups").display());
    let path = |name: &str| pki.join(name).display().to_string();
    let base = ["backup-once", "--etcd-endpoints", &etcd.client_url, "--storage", &storage, "--cluster-name", "tls"];
    let run = |extra: Vec<String>| {
        let bin = system_tests::sidecar::sidecar_bin();
        let args: Vec<String> = base.iter().map(|a| a.to_string()).chain(extra).collect();
        async move { tokio::process::Command::new(bin).args(args).output().await.unwrap() }
    };
    let flags = |names: &[&str]| -> Vec<String> {
        names
            .iter()
            .flat_map(|flag| {
                let file = match *flag {
                    "--etcd-ca" => "ca.crt",
                    "--etcd-cert" => "client.crt",
                    _ => "client.key",
                };
                [flag.to_string(), path(file)]
            })
            .chain(["--etcd-timeout".to_string(), "3s".to_string()])
            .collect()
    };

    let output = run(flags(&["--etcd-ca", "--etcd-cert", "--etcd-key"])).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let info: proto::backup::BackupInfo = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(info.etcd_member, etcd.client_url);
    let listed = Storage::open(&storage, &S3Options::default()).unwrap().list().await.unwrap();
    assert_eq!(listed.into_iter().map(|m| m.info).collect::<Vec<_>>(), [info]);

    // The same server, without the client certificate: refused.
    let refused = run(flags(&["--etcd-ca"])).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no etcd endpoint answered"));
    // A certificate without its key is a usage error.
    let half = run(flags(&["--etcd-ca", "--etcd-cert"])).await;
    assert_eq!(half.status.code(), Some(2), "{}", String::from_utf8_lossy(&half.stderr));
}

/// `serve`'s arguments for a sidecar of `cluster` beside the etcd at `etcd` into `storage`, its API over HTTPS with
/// `tls.crt` and `tls.key` of `dir`.
fn https_args(etcd: &str, storage: &str, cluster: &str, dir: &Path) -> Vec<String> {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let args = ["--etcd-endpoints", etcd, "--storage", storage, "--cluster-name", cluster];
    let mut args: Vec<String> = args.into_iter().map(String::from).collect();
    args.extend(["--tls-cert-file".into(), path("tls.crt"), "--tls-key-file".into(), path("tls.key")]);
    args
}

/// A client that trusts only the CA bundle at `ca` (never the system's roots).
fn trusting(ca: &Path) -> reqwest::Client {
    let roots = reqwest::Certificate::from_pem_bundle(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder().tls_certs_only(roots).timeout(Duration::from_secs(10)).build().unwrap()
}

/// Puts the server certificate and key of `from` (made by [`certificates`]) where the sidecar reads them, each
/// written whole and renamed into place.
fn install_pair(from: &Path, to: &Path) {
    for (source, target) in [("server.crt", "tls.crt"), ("server.key", "tls.key")] {
        let staged = to.join(format!(".{target}.new"));
        std::fs::copy(from.join(source), &staged).unwrap();
        std::fs::rename(&staged, to.join(target)).unwrap();
    }
}

#[tokio::test]
async fn the_api_serves_https_from_files_it_reads_again_when_they_change() {
    use system_tests::etcd::EtcdServer;
    use system_tests::sidecar::{Backend, SidecarProcess, TestStorage};
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 20, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let (first, second, serving) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certificates(first.path());
    certificates(second.path());
    install_pair(first.path(), serving.path());
    let token_file = serving.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let mut args = https_args(&etcd.client_url, &storage.url, "https", serving.path());
    args.extend(["--auth-token-file".into(), token_file.to_str().unwrap().to_string()]);
    let sidecar = SidecarProcess::serve(&args).await.unwrap();
    let https = sidecar.base.replacen("http://", "https://", 1);
    let url = |p: &str| format!("{https}{p}");

    // Over HTTPS, checked against its CA; the token is still required.
    let client = trusting(&first.path().join("ca.crt"));
    let anonymous = client.get(url("/v1/backups")).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let taken = client.post(url("/v1/backups")).bearer_auth("t0ken").json(&serde_json::json!({})).send().await.unwrap();
    assert!(taken.status().is_success(), "{}", taken.text().await.unwrap());
    let info: proto::backup::BackupInfo = taken.json().await.unwrap();
    assert!(client.get(url("/healthz")).send().await.unwrap().status().is_success());
    // Plain HTTP is not served, and a client that does not trust its CA refuses it.
    // (The connection is taken, and closed on the plain request: no answer, not a refused connection.)
    let plain = reqwest::get(sidecar.url("/healthz")).await;
    assert!(plain.as_ref().is_err_and(|e| !e.is_connect() && !e.is_timeout()), "plain HTTP is not served: {plain:?}");
    let stranger = trusting(&second.path().join("ca.crt")).get(url("/healthz")).send().await;
    assert!(stranger.is_err(), "a certificate of another CA is refused: {stranger:?}");

    // A restore fetches over HTTPS with the CA bundle, and refuses the sidecar without it.
    let out = tempfile::tempdir().unwrap();
    let request = backup_sidecar::restore::RestoreRequest {
        from: https.clone(),
        backup: info.name.clone(),
        output: out.path().join("restored.db"),
        token: Some("t0ken".into()),
        ca: Some(std::fs::read(first.path().join("ca.crt")).unwrap()),
        s3: S3Options::default(),
        seed_version: None,
    };
    let restored = backup_sidecar::restore::restore(&request).await.unwrap();
    assert_eq!(restored.revision, info.revision);
    let unchecked = backup_sidecar::restore::RestoreRequest {
        output: out.path().join("unchecked.db"),
        ca: None,
        ..request.clone()
    };
    let refused = backup_sidecar::restore::restore(&unchecked).await.expect_err("its CA is not a system root");
    assert!(refused.to_string().contains("certificate"), "refused for its certificate: {refused}");
    assert!(!unchecked.output.exists(), "nothing written: {refused}");
    let plain = backup_sidecar::restore::RestoreRequest {
        from: sidecar.base.clone(),
        output: out.path().join("plain.db"),
        ..request.clone()
    };
    let refused = backup_sidecar::restore::restore(&plain).await.expect_err("a CA bundle means HTTPS");
    assert!(refused.to_string().contains("use https://"), "{refused}");

    // A new certificate (of another CA) is served from the next connection on, without a restart.
    install_pair(second.path(), serving.path());
    // (The files are looked at again at most once a second.)
    let renewed = trusting(&second.path().join("ca.crt"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let served = renewed.get(url("/healthz")).send().await;
        if served.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate is served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(trusting(&first.path().join("ca.crt")).get(url("/healthz")).send().await.is_err(), "the old one is not");
    // Files that cannot be used (a key that does not match): the last good pair is served meanwhile.
    std::fs::copy(first.path().join("server.key"), serving.path().join("tls.key")).unwrap();
    let kept = trusting(&second.path().join("ca.crt")).get(url("/healthz")).send().await;
    assert!(kept.is_ok_and(|r| r.status().is_success()), "the last good certificate is served");
}

#[tokio::test]
async fn the_sidecar_does_not_start_on_a_certificate_it_cannot_use() {
    use system_tests::etcd::EtcdServer;
    use system_tests::sidecar::{Backend, SidecarProcess, TestStorage};
    let etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let (first, second, serving) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    certificates(first.path());
    certificates(second.path());
    // The certificate of one pair with the key of the other.
    std::fs::copy(first.path().join("server.crt"), serving.path().join("tls.crt")).unwrap();
    std::fs::copy(second.path().join("server.key"), serving.path().join("tls.key")).unwrap();
    let args = https_args(&etcd.client_url, &storage.url, "mismatch", serving.path());
    let error = SidecarProcess::serve(&args).await.err().expect("a key that does not match is refused at start");
    assert!(error.to_string().contains("do not make a usable pair"), "{error:#}");
}
