//! The sidecar against an etcd that serves TLS and requires client certificates (certificates made with openssl).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use backup_sidecar::backup::{BackupConfig, Engine, Outcome};
use backup_sidecar::etcd::EtcdConfig;
use backup_sidecar::retention::Retention;
use backup_sidecar::storage::{S3Options, Storage};
use system_tests::etcd::etcd_bin;
use system_tests::net::{free_port, wait_for_port};

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

#[tokio::test]
async fn backs_up_an_etcd_that_requires_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    certificates(pki);
    let (client_port, peer_port) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = Command::new(etcd_bin())
        .args(["--name", "tls", "--data-dir"])
        .arg(pki.join("data"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
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
    wait_for_port(format!("127.0.0.1:{client_port}").parse().unwrap(), Duration::from_secs(20)).await.unwrap();

    let storage = Storage::open(&format!("file://{}", pki.join("backups").display()), &S3Options::default()).unwrap();
    let config = BackupConfig {
        cluster_name: "tls".into(),
        retention: Retention::default(),
        idle_timeout: Duration::from_secs(5),
    };
    let etcd_config = |identity: Option<(std::path::PathBuf, std::path::PathBuf)>| EtcdConfig {
        endpoints: vec![client_url.clone()],
        ca: Some(pki.join("ca.crt")),
        identity,
        timeout: Duration::from_secs(3),
    };

    let storage_again = storage.clone();
    let engine =
        Engine::new(etcd_config(Some((pki.join("client.crt"), pki.join("client.key")))), storage, config.clone());
    let mut outcome = None;
    // etcd may still be starting: its port opens before it serves.
    for _ in 0..50 {
        match engine.backup().await {
            Ok(done) => {
                outcome = Some(done);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let Some(Outcome::Created(info)) = outcome else {
        panic!("no backup over TLS: {:?}", engine.status().last_failure)
    };
    assert!(info.etcd_member.starts_with("https://"));
    assert!(info.raw_size > 0);
    assert_eq!(engine.list().await.unwrap().len(), 1);
    // Without a client certificate the same (running) server refuses, and the failure says so.
    let refused = Engine::new(etcd_config(None), storage_again, config).backup().await.unwrap_err();
    assert_eq!(refused.reason(), "etcd_unreachable", "{refused}");

    let _ = etcd.kill();
    let _ = etcd.wait();
}
