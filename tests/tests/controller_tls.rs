//! The controller's side of client TLS against a real etcd that serves TLS and requires client certificates, with
//! the certificates the controller itself generates (`controller::tls`) and judges (`controller::certificates`):
//! its membership client and its HTTP client reach the member by address with the certificate checked against the
//! client Service's name; without its certificate, or with one of another CA, it is refused; and a serving
//! certificate replaced on disk is served on the next connection without a restart (what a renewal relies on).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use controller::dial::{ClientIdentity, Dial};
use controller::membership::{Membership, pod_name};
use controller::tls::{self, Issued, Usage};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use system_tests::etcd::{etcd_bin, unique};
use system_tests::net::{free_port, wait_for_child_port};

const DAY: Duration = Duration::from_secs(86_400);

/// The EtcdCluster `demo` in namespace `ns` with generated client TLS, as the API server would hand it over.
fn cluster() -> proto::cluster::EtcdCluster {
    let spec = serde_json::json!({ "size": 1, "tls": { "client": {} } });
    let mut cluster = proto::cluster::EtcdCluster::new("demo", serde_json::from_value(spec).unwrap());
    cluster.metadata.namespace = Some("ns".into());
    cluster.metadata.uid = Some("uid-demo".into());
    cluster
}

/// A Secret with a certificate, its key and a CA bundle, owned by `cluster`.
fn secret(cluster: &proto::cluster::EtcdCluster, name: &str, leaf: &Issued, ca: &Issued) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(name.into());
    secret.metadata.owner_references = Some(vec![controller::labels::owner(cluster)]);
    let data = [("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem), ("ca.crt", &ca.cert_pem)];
    secret.data = Some(data.into_iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
    secret
}

fn write(dir: &Path, leaf: &Issued, ca: &Issued) {
    // Written next to the files and renamed over them, as the kubelet swaps a Secret volume's contents.
    for (name, text) in [("tls.crt", &leaf.cert_pem), ("tls.key", &leaf.key_pem), ("ca.crt", &ca.cert_pem)] {
        std::fs::write(dir.join(format!(".{name}.new")), text).unwrap();
        std::fs::rename(dir.join(format!(".{name}.new")), dir.join(name)).unwrap();
    }
}

struct TlsEtcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One etcd member with the flags the controller renders for client TLS (`controller::pod::tls_flags`), its
/// serving certificate in `certs`.
async fn start(certs: &Path) -> TlsEtcd {
    let dir = tempfile::tempdir().unwrap();
    let (client_port, peer_port, metrics_port) = (free_port(), free_port(), free_port());
    let url = format!("https://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let name = unique("ctl-tls");
    let flags: Vec<String> = controller::pod::tls_flags(false, true)
        .into_iter()
        // The pinned CA bundle a pod would read: the same CA file here.
        .map(|f| {
            let pinned = format!("{}/{}", controller::pod::TRUST_DIR, controller::certificates::CLIENT_CA_FILE);
            f.replace(&pinned, &format!("{}/ca.crt", controller::pod::SERVER_TLS_DIR))
        })
        .map(|f| f.replace(controller::pod::SERVER_TLS_DIR, &certs.display().to_string()))
        .map(|f| f.replace(":2381", &format!(":{metrics_port}")).replace("0.0.0.0", "127.0.0.1"))
        .collect();
    let mut child = Command::new(etcd_bin())
        .args([format!("--name={name}"), format!("--data-dir={}", dir.path().join("data").display())])
        .args([format!("--listen-client-urls={url}"), format!("--advertise-client-urls={url}")])
        .args([format!("--listen-peer-urls={peer}"), format!("--initial-advertise-peer-urls={peer}")])
        .arg(format!("--initial-cluster={name}={peer}"))
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{client_port}").parse().unwrap();
    wait_for_child_port(&mut child, addr, Duration::from_secs(20)).await.unwrap();
    TlsEtcd { child, url, _dir: dir }
}

/// The serial number of the certificate etcd serves at `url`.
async fn served_serial(url: &str) -> String {
    let address = url.trim_start_matches("https://").to_string();
    let out = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect {address} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn serial_of(pem: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pem.as_bytes()).unwrap();
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).trim().to_string()
}

#[tokio::test]
async fn the_controller_reaches_a_tls_member_with_its_own_certificate_and_a_renewed_one_is_served_without_a_restart() {
    let cluster = cluster();
    let now = SystemTime::now();
    let ca = tls::new_ca("ns", "demo", now, 30 * DAY).unwrap();
    let names = tls::member_names("demo", "ns", "demo-client", "cluster.local");
    let server = tls::issue(&ca, "demo member", &names.server, Usage::Member, now, DAY).unwrap();
    let operator = tls::issue(&ca, "kube-etcd-controller", &[], Usage::Client, now, DAY).unwrap();
    let certs = tempfile::tempdir().unwrap();
    write(certs.path(), &server, &ca);
    let etcd = start(certs.path()).await;

    // What the controller's observation makes of the Secrets: no problem, and its identity.
    let mut ca_secret = secret(&cluster, "demo-tls-client-ca", &ca, &ca);
    ca_secret.data = Some(BTreeMap::from([
        ("ca.crt".to_string(), ByteString(ca.cert_pem.clone().into_bytes())),
        ("ca.key".to_string(), ByteString(ca.key_pem.clone().into_bytes())),
    ]));
    let read = BTreeMap::from([
        ("demo-tls-server".to_string(), Some(secret(&cluster, "demo-tls-server", &server, &ca))),
        ("demo-tls-operator".to_string(), Some(secret(&cluster, "demo-tls-operator", &operator, &ca))),
        ("demo-tls-client-ca".to_string(), Some(ca_secret)),
    ]);
    let seen = controller::certificates::judge(&cluster, &read, &[], now);
    assert!(seen.certificates.iter().all(|c| c.problem.is_none()), "{:?}", seen.certificates);
    let identity = seen.identity.clone().expect("an identity");
    assert_eq!(identity.server_name, "demo-client.ns.svc");
    let dial = Dial { timeout: Duration::from_secs(3), tls: Some(Arc::new(identity.clone())) };

    // The port opens before etcd serves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut membership = loop {
        match Membership::connect(std::slice::from_ref(&etcd.url), &dial).await {
            Ok(membership) => break membership,
            Err(error) => {
                assert!(tokio::time::Instant::now() < deadline, "etcd over TLS never answered: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let url = etcd.url.clone();
    let members = membership.observe(pod_name, |_, _| Some(url.clone())).await.unwrap();
    assert_eq!(members.len(), 1);
    assert!(members[0].healthy && members[0].leader, "healthy and leading, asked over TLS: {members:?}");
    // The HTTP client (the cluster version), by address, the certificate checked against the Service's name.
    let (http, base) = dial.http(&etcd.url).expect("an HTTPS client");
    assert!(base.starts_with("https://demo-client.ns.svc:"), "{base}");
    let version: serde_json::Value = http.get(format!("{base}/version")).send().await.unwrap().json().await.unwrap();
    assert!(version["etcdserver"].is_string(), "{version}");

    // Refused: without a TLS client, without a client certificate, with a certificate of another CA.
    let plain = Dial::plain(Duration::from_secs(2));
    assert!(Membership::connect(&[etcd.url.replace("https", "http")], &plain).await.is_err());
    let anonymous = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(ca.cert_pem.clone()))
        .domain_name("demo-client.ns.svc");
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2))
        .with_tls(anonymous);
    let attempt = async { etcd_client::Client::connect([etcd.url.as_str()], Some(options)).await?.member_list().await };
    let answered = tokio::time::timeout(Duration::from_secs(5), attempt).await;
    assert!(!matches!(answered, Ok(Ok(_))), "a client without a certificate is served nothing");
    let other_ca = tls::new_ca("ns", "other", now, 30 * DAY).unwrap();
    let stranger = tls::issue(&other_ca, "x", &[], Usage::Client, now, DAY).unwrap();
    let foreign = ClientIdentity {
        cert_pem: stranger.cert_pem.clone().into_bytes(),
        key_pem: stranger.key_pem.clone().into_bytes(),
        ..identity.clone()
    };
    let foreign = Dial { timeout: Duration::from_secs(2), tls: Some(Arc::new(foreign)) };
    assert!(Membership::connect(std::slice::from_ref(&etcd.url), &foreign).await.is_err(), "another CA's client");
    let judged = controller::certificates::judge(
        &cluster,
        &BTreeMap::from([
            ("demo-tls-server".to_string(), Some(secret(&cluster, "demo-tls-server", &server, &ca))),
            ("demo-tls-operator".to_string(), Some(secret(&cluster, "demo-tls-operator", &stranger, &other_ca))),
        ]),
        &[],
        now,
    );
    assert!(judged.identity.is_none(), "the controller does not dial with a certificate the members refuse");
    // A wrong server name: the member's certificate does not cover it.
    let misnamed = ClientIdentity { server_name: "demo-client.elsewhere.svc".into(), ..identity.clone() };
    let misnamed = Dial { timeout: Duration::from_secs(2), tls: Some(Arc::new(misnamed)) };
    assert!(Membership::connect(std::slice::from_ref(&etcd.url), &misnamed).await.is_err(), "a name not covered");

    // A renewal: new files in the directory, the same process serves them on the next connection.
    let before = served_serial(&etcd.url).await;
    assert_eq!(before, serial_of(&server.cert_pem));
    let renewed = tls::issue(&ca, "demo member", &names.server, Usage::Member, SystemTime::now(), DAY).unwrap();
    write(certs.path(), &renewed, &ca);
    let after = served_serial(&etcd.url).await;
    assert_eq!(after, serial_of(&renewed.cert_pem), "the renewed certificate is served");
    assert_ne!(after, before);
    let mut membership = Membership::connect(std::slice::from_ref(&etcd.url), &dial).await.unwrap();
    assert_eq!(membership.list().await.unwrap().len(), 1, "and the controller still reaches it");
}
