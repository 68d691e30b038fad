//! The sidecar against an etcd that serves TLS and requires client certificates (certificates made with openssl):
//! through the library, and through the binary's `--etcd-ca`, `--etcd-cert` and `--etcd-key` flags.

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
