//! End-to-end on the three-node test bed: clusters with TLS (`spec.tls`), in a namespace that enforces the
//! `restricted` Pod Security Standard, the controller in-process with the permissions the install grants. In order:
//! 1. a cluster whose own peer Secret holds a certificate for another cluster's names: refused in status
//!    (`CertificatesReady` False, saying which name is not covered), and no pod is created; with the Secret's
//!    contents replaced by a good certificate, the cluster starts;
//! 2. a three-member cluster on volumes with generated peer and client certificates, an application certificate
//!    and backups: it forms over https with client-certificate authentication; a client without a certificate (or
//!    over plain HTTP) is refused, one with the application certificate is served; status lists every certificate
//!    with its expiry;
//! 3. a member pod deleted, and the cluster grown to four and shrunk back to three, under a writer using the
//!    application certificate: no acknowledged write lost;
//! 4. the generated certificates issued again (their Secrets deleted, as a renewal rewrites them) under a writer:
//!    the members serve the new certificates without restarting, no acknowledged write lost;
//! 5. a backup taken by the sidecar (which speaks TLS to etcd with its own certificate) and restored into a new TLS
//!    cluster: every key is there.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use support::etcd_cluster as cluster;
use support::{
    Writer, clusters, condition, eventually, host_dir, install_crd, local_volume, recreated, status_of as status,
    tls_client, tls_from_secret,
};

const NS: &str = "e2e-tls";
const CLUSTER: &str = "sec";

/// The name the members' serving certificates are checked against.
fn server_name(cluster: &str) -> String {
    format!("{cluster}-client.{NS}.svc")
}

/// Waits until exactly `size` ready pods of `cluster` form one etcd cluster of `size` voting members, asked over
/// TLS with `secret`'s certificate; returns them (name, pod IP).
async fn converged_tls(
    client: &kube::Client,
    pods: &Api<Pod>,
    cluster: &str,
    secret: &str,
    size: usize,
    limit: Duration,
) -> Vec<(String, String)> {
    let (ready, took) = eventually(&format!("{cluster}: {size} ready voting members over TLS"), limit, || {
        let (client, pods) = (client.clone(), pods.clone());
        async move {
            let ready = support::ready_members(&pods, cluster).await;
            if ready.len() != size {
                return None;
            }
            let tls = tls_from_secret(&client, NS, secret, &server_name(cluster), true).await;
            let mut etcd = tls_client(&format!("https://{}:2379", ready[0].1), tls).await.ok()?;
            let listed = etcd.member_list().await.ok()?;
            let voters: std::collections::BTreeSet<String> = listed
                .members()
                .iter()
                .filter(|m| !m.is_learner() && !m.name().is_empty())
                .map(|m| m.name().to_string())
                .collect();
            let names: std::collections::BTreeSet<String> = ready.iter().map(|(n, _)| n.clone()).collect();
            (voters == names && listed.members().len() == size).then_some(ready)
        }
    })
    .await;
    println!("{cluster}: {size} ready voting members over TLS in {:.1} s", took.as_secs_f64());
    ready
}

/// The acknowledged writes of `written` under `prefix` that etcd at `endpoint` does not hold.
async fn lost(endpoint: &str, tls: etcd_client::TlsOptions, prefix: &str, written: &support::Written) -> Vec<u64> {
    let mut etcd = tls_client(endpoint, tls).await.unwrap();
    let stored = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let stored: std::collections::BTreeSet<String> =
        stored.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    written.acked.iter().copied().filter(|n| !stored.contains(&format!("{prefix}{n:08}"))).collect()
}

/// The serial number of the certificate a member serves at `address` (`ip:port`), as openssl prints it.
fn served_serial(address: &str) -> String {
    let shown = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "timeout 10 openssl s_client -connect {address} </dev/null 2>/dev/null | openssl x509 -noout -serial 2>/dev/null"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&shown.stdout).trim().trim_start_matches("serial=").to_uppercase()
}

/// The serial number of the certificate in `secret`'s `tls.crt`.
async fn secret_serial(secrets: &Api<Secret>, secret: &str) -> String {
    let data = secrets.get(secret).await.unwrap().data.unwrap();
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&data["tls.crt"].0).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("serial=").to_uppercase()
}

/// Each of the pods `members` (name, IP): its UID and its containers' restarts, so that a pod replaced or a
/// container restarted shows.
async fn restarts(pods: &Api<Pod>, members: &[(String, String)]) -> std::collections::BTreeMap<String, (String, i32)> {
    let mut seen = std::collections::BTreeMap::new();
    for (name, _) in members {
        let pod = pods.get(name).await.unwrap();
        let count =
            pod.status.and_then(|s| s.container_statuses).unwrap_or_default().iter().map(|c| c.restart_count).sum();
        seen.insert(name.clone(), (pod.metadata.uid.unwrap_or_default(), count));
    }
    seen
}

fn tls_secret(name: &str, cert: &str, key: &str, ca: &str) -> Secret {
    serde_json::from_value(serde_json::json!({
        "metadata": { "name": name },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": cert, "tls.key": key, "ca.crt": ca },
    }))
    .unwrap()
}

#[tokio::test]
async fn tls_clusters_form_heal_rotate_and_restore_with_client_certificates() {
    let client = support::testbed().await;
    install_crd(&client).await;
    support::fresh_namespace(&client, NS).await;
    let _controller =
        support::start_controller(&client, NS, "e2e-tls", Duration::from_secs(5), Duration::from_secs(2)).await;
    let api = clusters(&client, NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);

    // 1. A user's peer Secret for another cluster's names: refused, nothing created; fixed, the cluster starts.
    let now = std::time::SystemTime::now();
    let day = Duration::from_secs(86_400);
    let ca = controller::tls::new_ca(NS, "mine", now, 30 * day).unwrap();
    let wrong = controller::tls::member_names("other", NS, "other-client", "cluster.local");
    let bad = controller::tls::issue(&ca, "other", &wrong.peer, controller::tls::Usage::Member, now, day).unwrap();
    secrets
        .create(&PostParams::default(), &tls_secret("mine-peer", &bad.cert_pem, &bad.key_pem, &ca.cert_pem))
        .await
        .unwrap();
    let spec = serde_json::json!({ "size": 1, "tls": { "peer": { "secretName": "mine-peer" } } });
    api.create(&PostParams::default(), &cluster("mine", spec)).await.unwrap();
    let (message, _) = eventually("the bad peer certificate refused in status", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let ready = condition(&status(&api, "mine").await, "CertificatesReady");
            (ready["status"] == "False").then(|| ready["message"].as_str().unwrap_or_default().to_string())
        }
    })
    .await;
    println!("refused: {message}");
    assert!(message.contains("does not cover *.mine.e2e-tls.svc"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(support::member_pods(&pods, "mine").await.is_empty(), "no pod while the certificate cannot be used");
    let names = controller::tls::member_names("mine", NS, "mine-client", "cluster.local");
    let good = controller::tls::issue(&ca, "mine", &names.peer, controller::tls::Usage::Member, now, day).unwrap();
    let fixed = tls_secret("mine-peer", &good.cert_pem, &good.key_pem, &ca.cert_pem);
    secrets.replace("mine-peer", &PostParams::default(), &fixed).await.unwrap();
    let (mine, _) = support::converged(&pods, "mine", 1, &[], Duration::from_secs(120)).await;
    let listed = etcd_client::Client::connect([format!("http://{}:2379", mine[0].1)], None)
        .await
        .unwrap()
        .member_list()
        .await
        .unwrap();
    assert!(listed.members()[0].peer_urls()[0].starts_with("https://"), "{:?}", listed.members()[0].peer_urls());
    api.delete("mine", &DeleteParams::default()).await.unwrap();

    // 2. Three members on volumes, generated certificates, backups.
    let backups = host_dir("tls");
    local_volume("kec-e2e-tls", backups.path(), NS, "tls-backups");
    let spec = serde_json::json!({
        "size": 3,
        "storage": { "size": "256Mi" },
        "tls": { "peer": {}, "client": { "applicationSecretName": "sec-app" } },
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "tls-backups" } } },
    });
    api.create(&PostParams::default(), &cluster(CLUSTER, spec)).await.unwrap();
    let members = converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(180)).await;
    let endpoint = format!("https://{}:2379", members[0].1);
    let app_name = server_name(CLUSTER);
    let app = || tls_from_secret(&client, NS, "sec-app", &app_name, true);
    let mut etcd = tls_client(&endpoint, app().await).await.unwrap();
    etcd.put("/tls/hello", "world", None).await.unwrap();
    // Without a client certificate, or over plain HTTP: refused.
    let anonymous = tls_from_secret(&client, NS, "sec-app", &server_name(CLUSTER), false).await;
    let refused = match tls_client(&endpoint, anonymous).await {
        Ok(mut etcd) => etcd.get("/tls/hello", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate is refused");
    let plain = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(3));
    let refused = match etcd_client::Client::connect([format!("http://{}:2379", members[0].1)], Some(plain)).await {
        Ok(mut etcd) => etcd.get("/tls/hello", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "plain HTTP is refused");
    let shown = status(&api, CLUSTER).await;
    let certificates = shown["certificates"].as_array().cloned().unwrap_or_default();
    let purposes: Vec<&str> = certificates.iter().filter_map(|c| c["purpose"].as_str()).collect();
    assert_eq!(purposes, ["peer", "server", "operator", "application", "peer-ca", "client-ca"], "{shown}");
    assert!(certificates.iter().all(|c| c["notAfter"].is_string() && c["problem"].is_null()), "{certificates:?}");
    assert_eq!(condition(&shown, "CertificatesReady")["status"], "True", "{shown}");
    assert!(!shown.to_string().contains("PRIVATE KEY"));

    // 3. A member pod deleted, then grown to four and shrunk to three, under a writer with the application
    // certificate through the client Service.
    let service = support::client_service(&client, NS, CLUSTER).await.replace("http://", "https://");
    let writer = Writer::start_with(vec![service.clone()], "/tls/heal/", None, Some(app().await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let uid = pods.get(&members[1].0).await.unwrap().metadata.uid;
    pods.delete(&members[1].0, &DeleteParams::default()).await.unwrap();
    recreated(&pods, &members[1].0, uid).await;
    converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(120)).await;
    let grow = serde_json::json!({ "spec": { "size": 4 } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&grow)).await.unwrap();
    converged_tls(&client, &pods, CLUSTER, "sec-app", 4, Duration::from_secs(180)).await;
    let shrink = serde_json::json!({ "spec": { "size": 3 } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&shrink)).await.unwrap();
    let members = converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(120)).await;
    let healed = writer.stop();
    let endpoint = format!("https://{}:2379", members[0].1);
    let gone = lost(&endpoint, app().await, "/tls/heal/", &healed).await;
    println!(
        "healed and resized over TLS: {} writes acknowledged, longest gap {:.1} s, {} lost",
        healed.acked.len(),
        healed.longest_gap.as_secs_f64(),
        gone.len()
    );
    assert!(gone.is_empty(), "acknowledged writes lost: {gone:?}");
    assert!(healed.acked.len() > 10, "the writer wrote");

    // 4. The generated certificates issued again under a writer: served without a restart.
    let before = restarts(&pods, &members).await;
    let old_serial = served_serial(&format!("{}:2379", members[0].1));
    assert_eq!(
        old_serial,
        secret_serial(&secrets, "sec-tls-server").await,
        "the member serves its Secret's certificate"
    );
    let writer = Writer::start_with(vec![service.clone()], "/tls/rotate/", None, Some(app().await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rotated = Instant::now();
    for secret in ["sec-tls-peer", "sec-tls-server", "sec-tls-operator"] {
        secrets.delete(secret, &DeleteParams::default()).await.unwrap();
    }
    let (new_serial, _) = eventually("every member to serve the new certificate", Duration::from_secs(240), || {
        let (secrets, members) = (secrets.clone(), members.clone());
        let old = old_serial.clone();
        async move {
            secrets.get_opt("sec-tls-server").await.ok()??;
            let serial = secret_serial(&secrets, "sec-tls-server").await;
            (serial != old && members.iter().all(|(_, ip)| served_serial(&format!("{ip}:2379")) == serial))
                .then_some(serial)
        }
    })
    .await;
    println!("new certificates served {:.1} s after their Secrets were issued again", rotated.elapsed().as_secs_f64());
    // New peer connections, and the controller's own dials, use the new certificates: the cluster still heals.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writer.stop();
    let gone = lost(&endpoint, app().await, "/tls/rotate/", &written).await;
    assert!(gone.is_empty(), "acknowledged writes lost while rotating: {gone:?}");
    assert!(written.acked_since(rotated) > 10, "writes went on through the rotation");
    assert_eq!(restarts(&pods, &members).await, before, "no member restarted or replaced for its new certificate");
    assert_ne!(new_serial, old_serial);
    println!(
        "rotated: {} writes acknowledged, longest gap {:.1} s",
        written.acked.len(),
        written.longest_gap.as_secs_f64()
    );
    // With the new certificates: a member's pod created again joins its peers (new peer connections), and the
    // controller (its new client certificate) sees the cluster whole again.
    let uid = pods.get(&members[2].0).await.unwrap().metadata.uid;
    pods.delete(&members[2].0, &DeleteParams::default()).await.unwrap();
    recreated(&pods, &members[2].0, uid).await;
    converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(120)).await;
    eventually("status to show the cluster whole, certificates usable", Duration::from_secs(60), || {
        let api = api.clone();
        async move {
            let shown = status(&api, CLUSTER).await;
            let whole = shown["readyMembers"] == 3 && condition(&shown, "Available")["status"] == "True";
            (whole && condition(&shown, "CertificatesReady")["status"] == "True").then_some(())
        }
    })
    .await;

    // 5. A backup through the sidecar (TLS to etcd), restored into a new TLS cluster.
    let taken = support::take_backup(&client, NS, CLUSTER).await;
    println!("backup over TLS: {} at revision {}", taken.name, taken.revision);
    let copy = serde_json::json!({
        "size": 1,
        "restore": { "cluster": CLUSTER },
        "tls": { "peer": {}, "client": { "applicationSecretName": "copy-app" } },
    });
    api.create(&PostParams::default(), &cluster("copy", copy)).await.unwrap();
    let copies = converged_tls(&client, &pods, "copy", "copy-app", 1, Duration::from_secs(180)).await;
    let copy_tls = tls_from_secret(&client, NS, "copy-app", &server_name("copy"), true).await;
    let mut etcd = tls_client(&format!("https://{}:2379", copies[0].1), copy_tls).await.unwrap();
    let got = etcd.get("/tls/hello", None).await.unwrap();
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"world"[..]), "the restored copy holds the data");
    let copy_tls = tls_from_secret(&client, NS, "copy-app", &server_name("copy"), true).await;
    let missing = lost(&format!("https://{}:2379", copies[0].1), copy_tls, "/tls/heal/", &healed).await;
    assert!(missing.is_empty(), "the copy lacks acknowledged writes taken before the backup: {missing:?}");
    api.delete("copy", &DeleteParams::default()).await.unwrap();
    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
}
