//! End-to-end on the three-node test bed: clusters with TLS (`spec.tls`), in a namespace that enforces the
//! `restricted` Pod Security Standard, the controller in-process with the permissions the install grants. In order:
//! 1. a cluster whose own peer Secret holds a certificate for another cluster's names: refused in status
//!    (`CertificatesReady` False, saying which name is not covered), and no pod is created; with the Secret's
//!    contents replaced by a good certificate, the cluster starts; grown to three members, its CA (the user's
//!    Secrets) is changed in three steps under writers (both CAs in `ca.crt`: the members restarted to trust both;
//!    certificates of the new CA: served without a restart; the old CA out: every member pod's trust annotation
//!    names the new CA alone), no acknowledged write lost, one immutable pinned CA bundle left, the one every pod
//!    reads; then a CA and its certificates switched at once: refused in status, nothing restarted;
//! 2. a three-member cluster on volumes with generated peer and client certificates, an application certificate
//!    and backups: it forms over https with client-certificate authentication; a client without a certificate (or
//!    over plain HTTP) is refused, one with the application certificate is served; status lists every certificate
//!    with its expiry;
//! 3. a member pod deleted, and the cluster grown to four and shrunk back to three, under a writer using the
//!    application certificate: no acknowledged write lost;
//! 4. the members' and the controller's generated Secrets deleted (issued again, as a renewal rewrites them) under
//!    a writer: the members serve the new certificates without restarting, no acknowledged write lost, and a member
//!    pod created again joins; then the generated CAs rotated on request under writers: every member restarted and
//!    trusting only the new CAs, no acknowledged write lost, one pinned CA bundle left;
//!    then upgraded one minor (3.5 -> 3.6) under a writer: its backup taken and its completion read over TLS, no
//!    acknowledged write lost;
//! 5. a backup taken by the sidecar (which speaks TLS to etcd with its own certificate) and restored into a new TLS
//!    cluster: every key is there;
//! 6. (a test of its own) a plain three-member cluster on volumes with backups has peer TLS turned on under a plain
//!    writer (each pod rolled to listen on both schemes, each member's peer URL switched, each pod rolled to TLS
//!    alone), then client TLS: no acknowledged write lost, every member registered at an https URL, plain clients
//!    refused, the backup sidecar moved to TLS to etcd once every member served it (a backup taken); then all of TLS
//!    turned off at once under a writer with the application certificate and a plain one: no acknowledged write
//!    lost, every member registered at a plain URL, serving plain, holding no certificate, `status.tls` and
//!    `status.certificates` empty, no pinned CA bundle left, the sidecar back on plain HTTP (a backup taken).

mod support;

use std::time::{Duration, Instant};

use controller::tls::Usage;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
async fn lost(
    endpoint: &str,
    tls: Option<etcd_client::TlsOptions>,
    prefix: &str,
    written: &support::Written,
) -> Vec<u64> {
    let mut etcd = match tls {
        Some(tls) => tls_client(endpoint, tls).await.unwrap(),
        None => etcd_client::Client::connect([endpoint], None).await.unwrap(),
    };
    let stored = etcd.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap();
    let stored: std::collections::BTreeSet<String> =
        stored.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect();
    written.acked.iter().copied().filter(|n| !stored.contains(&format!("{prefix}{n:08}"))).collect()
}

/// Waits until `cluster`'s status says `CertificatesReady` False (`what` it waits for); returns its message.
async fn refused(api: &Api<kube::api::DynamicObject>, cluster: &str, what: &str) -> String {
    let (message, _) = eventually(what, Duration::from_secs(60), || async move {
        let ready = condition(&status(api, cluster).await, "CertificatesReady");
        (ready["status"] == "False").then(|| ready["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    println!("refused: {message}");
    message
}

/// Checks that etcd at `endpoint` (asked over `tls`) holds every write each writer (its prefix, what it wrote)
/// had acknowledged during `what`, and that each wrote.
async fn none_lost(
    what: &str,
    endpoint: &str,
    tls: Option<etcd_client::TlsOptions>,
    writers: &[(&str, &support::Written)],
) {
    for (prefix, written) in writers {
        let gone = lost(endpoint, tls.clone(), prefix, written).await;
        println!(
            "{what}, {prefix}: {} writes acknowledged, longest gap {:.1} s, {} lost",
            written.acked.len(),
            written.longest_gap.as_secs_f64(),
            gone.len()
        );
        assert!(gone.is_empty(), "acknowledged writes lost in the {what}: {gone:?}");
        assert!(written.acked.len() > 10, "the writer wrote");
    }
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

/// A certificate for `names` signed by `ca`, valid for a day.
fn issue(ca: &controller::tls::Issued, subject: &str, names: &[String], usage: Usage) -> controller::tls::Issued {
    let day = Duration::from_secs(86_400);
    controller::tls::issue(ca, subject, names, usage, std::time::SystemTime::now(), day).unwrap()
}

/// Waits until every one of the pods `members` names (a rollout replaces them under the same names) trusts the CAs
/// `trusted` says (`peer=<keys>;client=<keys>`, as the annotation the controller renders begins).
async fn every_member_trusts(pods: &Api<Pod>, cluster: &str, members: &[(String, String)], trusted: &str) {
    let what = format!("every member pod of {cluster} to trust {trusted}");
    eventually(&what, Duration::from_secs(300), || async move {
        for (name, _) in members {
            let pod = pods.get_opt(name).await.ok()??;
            let ready = support::ready_members(pods, cluster).await.iter().any(|(n, _)| n == name);
            // The CA keys by side; a digest of the certificates follows.
            let says = pod.annotations().get("kube-etcd-controller.dev/trusted-cas").cloned().unwrap_or_default();
            if !ready || !says.starts_with(&format!("{trusted};")) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Waits until `cluster` keeps one ConfigMap of pinned CA bundles, the one every member pod of `members` reads
/// (those of earlier bundles deleted), and checks that it holds the CAs the pods' annotation names.
async fn pinned_once(client: &kube::Client, pods: &Api<Pod>, cluster: &str, members: &[(String, String)]) {
    use k8s_openapi::api::core::v1::ConfigMap;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let selector = format!("kube-etcd-controller.dev/cluster={cluster},kube-etcd-controller.dev/trust");
    let (kept, _) = eventually(&format!("{cluster}: one pinned CA bundle"), Duration::from_secs(60), || {
        let (maps, selector) = (maps.clone(), selector.clone());
        async move {
            let listed = maps.list(&ListParams::default().labels(&selector)).await.ok()?.items;
            (listed.len() == 1).then(|| listed.into_iter().next().unwrap())
        }
    })
    .await;
    for (name, _) in members {
        let pod = pods.get(name).await.unwrap();
        let read = pod.spec.unwrap().volumes.unwrap_or_default().into_iter().find(|v| v.name == "trust");
        assert_eq!(read.and_then(|v| v.config_map).map(|m| m.name), Some(kept.name_any()), "{name}");
        let says = pod.metadata.annotations.unwrap_or_default()["kube-etcd-controller.dev/trusted-cas"].clone();
        let data = kept.data.clone().unwrap_or_default();
        let peer = controller::tls::ca_keys(data["peer-ca.crt"].as_bytes()).into_iter().collect::<Vec<_>>().join(",");
        assert!(says.starts_with(&format!("peer={peer};")), "{name} says {says}, the bundle holds {peer}");
    }
    assert_eq!(kept.immutable, Some(true));
}

/// How many CAs the PEM bundle under `key` of `secret` holds.
async fn key_count(secrets: &Api<Secret>, secret: &str, key: &str) -> usize {
    let data = secrets.get(secret).await.unwrap().data.unwrap_or_default();
    data.get(key).map_or(0, |pem| controller::tls::ca_keys(&pem.0).len())
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
    let bad = issue(&ca, "other", &wrong.peer, Usage::Member);
    let names = controller::tls::member_names("mine", NS, "mine-client", "cluster.local");
    let (server, operator) = (issue(&ca, "mine", &names.server, Usage::Member), issue(&ca, "op", &[], Usage::Client));
    for (name, leaf) in [("mine-peer", &bad), ("mine-server", &server), ("mine-operator", &operator)] {
        let secret = tls_secret(name, &leaf.cert_pem, &leaf.key_pem, &ca.cert_pem);
        secrets.create(&PostParams::default(), &secret).await.unwrap();
    }
    let spec = serde_json::json!({
        "size": 1,
        "storage": { "size": "64Mi" },
        "tls": {
            "peer": { "secretName": "mine-peer" },
            "client": { "secretName": "mine-server", "operatorSecretName": "mine-operator" },
        },
    });
    api.create(&PostParams::default(), &cluster("mine", spec)).await.unwrap();
    let message = refused(&api, "mine", "the bad peer certificate refused in status").await;
    assert!(message.contains("does not cover *.mine.e2e-tls.svc"), "{message}");
    assert!(!message.contains("PRIVATE KEY"), "{message}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(support::member_pods(&pods, "mine").await.is_empty(), "no pod while the certificate cannot be used");
    let good = issue(&ca, "mine", &names.peer, Usage::Member);
    let fixed = tls_secret("mine-peer", &good.cert_pem, &good.key_pem, &ca.cert_pem);
    secrets.replace("mine-peer", &PostParams::default(), &fixed).await.unwrap();
    let mine = converged_tls(&client, &pods, "mine", "mine-operator", 1, Duration::from_secs(120)).await;
    let tls = tls_from_secret(&client, NS, "mine-operator", &server_name("mine"), true).await;
    let listed = tls_client(&format!("https://{}:2379", mine[0].1), tls).await.unwrap().member_list().await.unwrap();
    assert!(listed.members()[0].peer_urls()[0].starts_with("https://"), "{:?}", listed.members()[0].peer_urls());

    // 1b. The users' CA changed in three steps under writers, on three members: both CAs in every ca.crt (the
    // members are restarted one at a time to trust both), then certificates of the new CA (served without a
    // restart), then the old CA out (restarted again). No acknowledged write lost.
    let grow = serde_json::json!({ "spec": { "size": 3 } });
    api.patch("mine", &PatchParams::default(), &Patch::Merge(&grow)).await.unwrap();
    let mine = converged_tls(&client, &pods, "mine", "mine-operator", 3, Duration::from_secs(180)).await;
    let service = support::client_service(&client, NS, "mine").await.replace("http://", "https://");
    let new_ca = controller::tls::new_ca(NS, "mine-next", now, 30 * day).unwrap();
    let both = format!("{}{}", ca.cert_pem, new_ca.cert_pem);
    let trusting = |pem: &str| {
        let keys: Vec<String> = controller::tls::ca_keys(pem.as_bytes()).into_iter().collect();
        format!("peer={keys};client={keys}", keys = keys.join(","))
    };
    let writer_tls = |leaf: &controller::tls::Issued| {
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(both.clone()))
            .domain_name(server_name("mine"))
            .identity(etcd_client::Identity::from_pem(leaf.cert_pem.clone(), leaf.key_pem.clone()))
    };
    let started = Instant::now();
    let before_rotation = restarts(&pods, &mine).await;
    let old_writer = Writer::start_with(vec![service.clone()], "/rotate/old/", None, Some(writer_tls(&operator)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, leaf) in [("mine-peer", &good), ("mine-server", &server), ("mine-operator", &operator)] {
        let secret = tls_secret(name, &leaf.cert_pem, &leaf.key_pem, &both);
        secrets.replace(name, &PostParams::default(), &secret).await.unwrap();
    }
    every_member_trusts(&pods, "mine", &mine, &trusting(&both)).await;
    let mine = converged_tls(&client, &pods, "mine", "mine-operator", 3, Duration::from_secs(180)).await;
    let after_trust = restarts(&pods, &mine).await;
    let restarted = after_trust.iter().filter(|(m, (uid, _))| before_rotation[*m].0 != *uid).count();
    assert_eq!(restarted, 3, "every member restarted to read the new ca.crt: {before_rotation:?} {after_trust:?}");
    println!("both CAs trusted by every member {:.1} s after ca.crt changed", started.elapsed().as_secs_f64());
    let switched = Instant::now();
    let (peer, server, operator) = (
        issue(&new_ca, "mine", &names.peer, Usage::Member),
        issue(&new_ca, "mine", &names.server, Usage::Member),
        issue(&new_ca, "op", &[], Usage::Client),
    );
    for (name, leaf) in [("mine-peer", &peer), ("mine-server", &server), ("mine-operator", &operator)] {
        let secret = tls_secret(name, &leaf.cert_pem, &leaf.key_pem, &both);
        secrets.replace(name, &PostParams::default(), &secret).await.unwrap();
    }
    let serial = secret_serial(&secrets, "mine-server").await;
    eventually("every member to serve the new CA's certificate", Duration::from_secs(240), || {
        let (mine, serial) = (mine.clone(), serial.clone());
        async move { mine.iter().all(|(_, ip)| served_serial(&format!("{ip}:2379")) == serial).then_some(()) }
    })
    .await;
    assert_eq!(restarts(&pods, &mine).await, after_trust, "new certificates of a trusted CA restart nothing");
    println!("the new CA's certificates served {:.1} s after they were written", switched.elapsed().as_secs_f64());
    // The old writer's certificate is the old CA's: it stops before the members stop trusting it.
    let new_writer = Writer::start_with(vec![service.clone()], "/rotate/new/", None, Some(writer_tls(&operator)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let old_written = old_writer.stop();
    let dropped = Instant::now();
    for (name, leaf) in [("mine-peer", &peer), ("mine-server", &server), ("mine-operator", &operator)] {
        let secret = tls_secret(name, &leaf.cert_pem, &leaf.key_pem, &new_ca.cert_pem);
        secrets.replace(name, &PostParams::default(), &secret).await.unwrap();
    }
    every_member_trusts(&pods, "mine", &mine, &trusting(&new_ca.cert_pem)).await;
    let mine = converged_tls(&client, &pods, "mine", "mine-operator", 3, Duration::from_secs(180)).await;
    println!("the old CA dropped by every member {:.1} s after ca.crt changed", dropped.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let new_written = new_writer.stop();
    let endpoint = format!("https://{}:2379", mine[0].1);
    let new_tls = tls_from_secret(&client, NS, "mine-operator", &server_name("mine"), true).await;
    none_lost(
        "CA rotation",
        &endpoint,
        Some(new_tls),
        &[("/rotate/old/", &old_written), ("/rotate/new/", &new_written)],
    )
    .await;
    let shown = status(&api, "mine").await;
    assert_eq!(condition(&shown, "CertificatesReady")["status"], "True", "{shown}");
    pinned_once(&client, &pods, "mine", &mine).await;

    // 1c. A CA and its certificates switched at once: the members would refuse each other once restarted, so
    // status says so and nothing is restarted.
    let third = controller::tls::new_ca(NS, "mine-third", now, 30 * day).unwrap();
    let at_once = issue(&third, "mine", &names.peer, Usage::Member);
    let before = restarts(&pods, &mine).await;
    let switched = tls_secret("mine-peer", &at_once.cert_pem, &at_once.key_pem, &third.cert_pem);
    secrets.replace("mine-peer", &PostParams::default(), &switched).await.unwrap();
    let message = refused(&api, "mine", "a CA switched at once refused in status").await;
    assert!(message.contains("did not trust when they started") && message.contains("three steps"), "{message}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(restarts(&pods, &mine).await, before, "nothing restarted for a CA switched at once");
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
    assert_eq!(purposes, ["peer", "server", "operator", "application", "backup", "peer-ca", "client-ca"], "{shown}");
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
    let gone = lost(&endpoint, Some(app().await), "/tls/heal/", &healed).await;
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
    let gone = lost(&endpoint, Some(app().await), "/tls/rotate/", &written).await;
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

    // 4b. The generated CAs rotated (asked for with the annotation) under writers with the application
    // certificate: both CAs trusted (the members restarted one at a time), certificates of the new CAs (no
    // restart), the old CAs dropped once those reached the pods (restarted again). No acknowledged write lost.
    let before = restarts(&pods, &members).await;
    let rotate = serde_json::json!({ "metadata": { "annotations": { "kube-etcd-controller.dev/rotate": "e2e" } } });
    let started = Instant::now();
    for ca in ["sec-tls-peer-ca", "sec-tls-client-ca"] {
        secrets.patch(ca, &PatchParams::default(), &Patch::Merge(&rotate)).await.unwrap();
    }
    let app_serial = secret_serial(&secrets, "sec-app").await;
    eventually("the application's ca.crt to hold both client CAs", Duration::from_secs(60), || {
        let secrets = secrets.clone();
        async move { (key_count(&secrets, "sec-app", "ca.crt").await == 2).then_some(()) }
    })
    .await;
    let first = Writer::start_with(vec![service.clone()], "/tls/ca/first/", None, Some(app().await));
    // Certificates of the new CAs come once every member trusts both; then a writer with the new one.
    eventually("the application certificate issued by the new CA", Duration::from_secs(300), || {
        let (secrets, old) = (secrets.clone(), app_serial.clone());
        async move { (secret_serial(&secrets, "sec-app").await != old).then_some(()) }
    })
    .await;
    println!(
        "certificates of the new CAs issued {:.1} s after the rotation was asked for",
        started.elapsed().as_secs_f64()
    );
    let second = Writer::start_with(vec![service.clone()], "/tls/ca/second/", None, Some(app().await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first_written = first.stop();
    let (new_cas, _) = eventually("the new CAs to be the CAs, alone", Duration::from_secs(300), || {
        let secrets = secrets.clone();
        async move {
            let mut keys = Vec::new();
            for ca in ["sec-tls-peer-ca", "sec-tls-client-ca"] {
                let data = secrets.get(ca).await.ok()?.data?;
                if data.contains_key("next.crt") {
                    return None;
                }
                keys.push(controller::tls::ca_keys(&data.get("ca.crt")?.0).into_iter().collect::<Vec<_>>().join(","));
            }
            Some(keys)
        }
    })
    .await;
    let trusted = format!("peer={};client={}", new_cas[0], new_cas[1]);
    every_member_trusts(&pods, CLUSTER, &members, &trusted).await;
    let members = converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(120)).await;
    println!(
        "the old CAs dropped by every member {:.1} s after the rotation was asked for",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_written = second.stop();
    let endpoint = format!("https://{}:2379", members[0].1);
    let written = [("/tls/ca/first/", &first_written), ("/tls/ca/second/", &second_written)];
    none_lost("generated CA rotation", &endpoint, Some(app().await), &written).await;
    let after = restarts(&pods, &members).await;
    assert!(after.iter().all(|(m, (uid, _))| before[m].0 != *uid), "every member restarted: {before:?} {after:?}");
    pinned_once(&client, &pods, CLUSTER, &members).await;
    let shown = status(&api, CLUSTER).await;
    assert_eq!(condition(&shown, "CertificatesReady")["status"], "True", "{shown}");
    let purposes: Vec<&str> =
        shown["certificates"].as_array().into_iter().flatten().filter_map(|c| c["purpose"].as_str()).collect();
    assert_eq!(purposes, ["peer", "server", "operator", "application", "backup", "peer-ca", "client-ca"], "{shown}");

    // 4c. Upgraded one minor (3.5 -> 3.6) under a writer with the application certificate, in the restricted
    // namespace: the upgrade's backup taken over TLS, each member's container restarted on the new image, and the
    // completion read over TLS (every member's version, the cluster version).
    let writer = Writer::start_with(vec![service.clone()], "/tls/upgrade/", None, Some(app().await));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let upgrade = serde_json::json!({ "spec": { "version": "3.6.16" } });
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(&upgrade)).await.unwrap();
    eventually("every member on 3.6.16, the cluster version moved", Duration::from_secs(300), || {
        let api = api.clone();
        async move {
            let shown = status(&api, CLUSTER).await;
            let versions = shown["serverVersions"].as_object()?;
            let all = versions.len() == 3 && versions.values().all(|v| v == "3.6.16");
            (all && shown["currentVersion"] == "3.6.16"
                && shown["clusterVersion"] == "3.6.0"
                && shown.get("upgrade").is_none_or(|u| u.is_null()))
            .then_some(())
        }
    })
    .await;
    println!("upgraded over TLS to 3.6.16 in {:.1} s", started.elapsed().as_secs_f64());
    let members = converged_tls(&client, &pods, CLUSTER, "sec-app", 3, Duration::from_secs(120)).await;
    let upgraded = writer.stop();
    let shown = status(&api, CLUSTER).await;
    assert_eq!(shown["lastUpgrade"]["toVersion"], "3.6.16", "{shown}");
    assert!(shown["lastUpgrade"]["backup"].is_string(), "the upgrade's backup, taken over TLS: {shown}");
    let endpoint = format!("https://{}:2379", members[0].1);
    none_lost("upgrade", &endpoint, Some(app().await), &[("/tls/upgrade/", &upgraded)]).await;

    // 5. A backup through the sidecar (TLS to etcd, its own API over HTTPS), restored into a new TLS cluster (the
    // seed's fetch checks the sidecar against the CA of its serving Secret).
    let taken = support::take_backup(&client, NS, CLUSTER).await;
    println!("backup over TLS: {} at revision {}", taken.name, taken.revision);
    assert!(support::sidecar_refuses_plain_http(&client, NS, CLUSTER).await, "the sidecar's API is HTTPS only");
    // The kubectl plugin over a port-forward: the sidecar over HTTPS checked against its serving CA, and every
    // member's health from its plain metrics listener (no client certificate needed).
    let (ok, listed, _) = support::kubectl_etcd(&["backups", CLUSTER, "-n", NS]);
    assert!(ok && listed.contains(&taken.name), "the plugin lists backups over HTTPS: {listed}");
    let (ok, shown, _) = support::kubectl_etcd(&["status", CLUSTER, "-n", NS]);
    let rows: Vec<&str> = shown.lines().filter(|l| l.starts_with(&format!("{CLUSTER}-"))).collect();
    assert!(ok && !rows.is_empty() && rows.iter().all(|r| r.contains("healthy")), "{shown}");
    let copy = serde_json::json!({
        "size": 1,
        "version": "3.6.16",
        "restore": { "cluster": CLUSTER },
        "tls": { "peer": {}, "client": { "applicationSecretName": "copy-app" } },
    });
    api.create(&PostParams::default(), &cluster("copy", copy)).await.unwrap();
    let copies = converged_tls(&client, &pods, "copy", "copy-app", 1, Duration::from_secs(180)).await;
    let seed = pods.get(&copies[0].0).await.unwrap().spec.unwrap();
    let fetch = seed.init_containers.unwrap_or_default().into_iter().find(|c| c.name == "fetch-backup");
    let fetched_with = fetch.and_then(|c| c.command).unwrap_or_default();
    assert!(
        fetched_with.iter().any(|a| a.starts_with("--from=https://"))
            && fetched_with.iter().any(|a| a.starts_with("--ca-file=")),
        "the seed fetched over HTTPS, checking the sidecar: {fetched_with:?}"
    );
    let copy_tls = tls_from_secret(&client, NS, "copy-app", &server_name("copy"), true).await;
    let mut etcd = tls_client(&format!("https://{}:2379", copies[0].1), copy_tls).await.unwrap();
    let got = etcd.get("/tls/hello", None).await.unwrap();
    assert_eq!(got.kvs().first().map(|kv| kv.value()), Some(&b"world"[..]), "the restored copy holds the data");
    let copy_tls = tls_from_secret(&client, NS, "copy-app", &server_name("copy"), true).await;
    let missing = lost(&format!("https://{}:2379", copies[0].1), Some(copy_tls), "/tls/heal/", &healed).await;
    assert!(missing.is_empty(), "the copy lacks acknowledged writes taken before the backup: {missing:?}");
    api.delete("copy", &DeleteParams::default()).await.unwrap();
    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
}

/// Where each member pod of `cluster` listens for peers and clients (its `--listen-peer-urls` and
/// `--listen-client-urls`), by name.
async fn listening(pods: &Api<Pod>, cluster: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut found = std::collections::BTreeMap::new();
    for name in support::member_pods(pods, cluster).await {
        let Ok(pod) = pods.get(&name).await else { continue };
        let command = pod.spec.map(|s| s.containers[0].command.clone().unwrap_or_default()).unwrap_or_default();
        let flag = |name: &str| {
            command.iter().find_map(|a| a.strip_prefix(&format!("--{name}="))).unwrap_or_default().to_string()
        };
        found.insert(name, (flag("listen-peer-urls"), flag("listen-client-urls")));
    }
    found
}

/// Waits until the backup sidecar of `cluster` speaks to etcd with TLS (`tls`) or plain, serves its API the same
/// way, and its Deployment has rolled out (one replica, updated and available).
async fn sidecar_speaks(client: &kube::Client, namespace: &str, cluster: &str, tls: bool) {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), namespace);
    let name = controller::backup::sidecar_name(cluster);
    let what = format!("the backup sidecar speaking {} to etcd", if tls { "TLS" } else { "plain HTTP" });
    let (_, took) = eventually(&what, Duration::from_secs(180), || {
        let (deployments, name) = (deployments.clone(), name.clone());
        async move {
            let found = deployments.get(&name).await.ok()?;
            let status = found.status.clone()?;
            let rolled = status.observed_generation == found.metadata.generation
                && status.updated_replicas == Some(1)
                && status.available_replicas == Some(1)
                && status.replicas == Some(1);
            let speaks = controller::backup::etcd_tls_of(&found) == Some(tls)
                && controller::backup::serving_secret(&found).is_some() == tls;
            (rolled && speaks).then_some(())
        }
    })
    .await;
    println!("{what} ({:.1} s)", took.as_secs_f64());
}

/// 6. A plain three-member cluster on volumes has peer TLS turned on under a writer (every pod rolled to listen on
/// both schemes, each member's peer URL switched, each pod rolled to listen on TLS alone), then client TLS: no
/// acknowledged write lost, every member registered at an https peer URL and served over TLS alone; then TLS
/// turned off again, all at once.
#[tokio::test]
async fn a_plain_cluster_turns_tls_on_and_off_member_by_member_under_writers() {
    // The namespace of the other scenarios (its helpers name it), made afresh.
    const ON: &str = NS;
    let client = support::testbed().await;
    install_crd(&client).await;
    support::fresh_namespace(&client, ON).await;
    let _controller =
        support::start_controller(&client, ON, "e2e-tls-on", Duration::from_secs(5), Duration::from_secs(2)).await;
    let api = clusters(&client, ON);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ON);
    // With backups: the sidecar speaks to etcd with the scheme every member serves.
    let backups = host_dir("tls-on");
    local_volume("kec-e2e-tls-on", backups.path(), ON, "on-backups");
    let spec = serde_json::json!({
        "size": 3,
        "storage": { "size": "64Mi" },
        "backup": { "every": "1h", "storage": { "pvc": { "claimName": "on-backups" } } },
    });
    api.create(&PostParams::default(), &cluster("plain", spec)).await.unwrap();
    let (members, took) = support::converged(&pods, "plain", 3, &[], Duration::from_secs(240)).await;
    println!("plain: three members in {:.1} s", took.as_secs_f64());
    let service = support::client_service(&client, ON, "plain").await;
    let writer = Writer::start_with(vec![service.clone()], "/on/peer/", None, None);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Peer TLS on: the members keep serving plain clients throughout.
    let started = Instant::now();
    let on = serde_json::json!({ "spec": { "tls": { "peer": {} } } });
    api.patch("plain", &PatchParams::default(), &Patch::Merge(&on)).await.unwrap();
    let every_member = |want: &'static str| {
        let (pods, members) = (pods.clone(), members.clone());
        async move {
            let ready = support::ready_members(&pods, "plain").await;
            if ready.len() != 3 {
                return None;
            }
            let mut etcd = etcd_client::Client::connect([format!("http://{}:2379", ready[0].1)], None).await.ok()?;
            let listed = etcd.member_list().await.ok()?;
            let urls: Vec<String> = listed.members().iter().flat_map(|m| m.peer_urls().to_vec()).collect();
            let listens = listening(&pods, "plain").await;
            let settled = listed.members().len() == 3
                && urls.iter().all(|u| u.starts_with(want))
                && listens.values().all(|(peer, _)| !peer.contains(',') && peer.starts_with(want));
            drop(members);
            settled.then_some((urls, listens))
        }
    };
    let ((urls, listens), _) =
        eventually("every member registered and listening at https peer URLs", Duration::from_secs(600), || {
            every_member("https://")
        })
        .await;
    println!("peer TLS on in {:.1} s: {urls:?} {listens:?}", started.elapsed().as_secs_f64());
    let written = writer.stop();
    let members = support::converged(&pods, "plain", 3, &[], Duration::from_secs(60)).await.0;
    let plain_endpoint = format!("http://{}:2379", members[0].1);
    none_lost("peer TLS turned on", &plain_endpoint, None, &[("/on/peer/", &written)]).await;
    // The way there: each member's URL switched once, by the controller (a PeerUrlSwitched event per member).
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ON);
    let (switched, _) = eventually("a PeerUrlSwitched event per member", Duration::from_secs(30), || {
        let events = events.clone();
        async move {
            let listed = events.list(&Default::default()).await.ok()?.items;
            let messages: Vec<String> = listed
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("PeerUrlSwitched"))
                .filter_map(|e| e.message)
                .collect();
            (messages.len() >= 3).then_some(messages)
        }
    })
    .await;
    for (member, _) in &members {
        assert_eq!(
            switched.iter().filter(|m| m.starts_with(&format!("registered {member} "))).count(),
            1,
            "{switched:?}"
        );
    }
    // Every member answers with a leader: none is cut off from its peers.
    for (name, ip) in &members {
        let mut etcd = etcd_client::Client::connect([format!("http://{ip}:2379")], None).await.unwrap();
        let status = etcd.status().await.unwrap();
        assert_ne!(status.leader(), 0, "{name} knows a leader");
    }

    // Client TLS on, with an application certificate: a plain writer is served until its member turns TLS on.
    let writer = Writer::start_with(vec![service.clone()], "/on/client/", None, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on = serde_json::json!({ "spec": { "tls": { "client": { "applicationSecretName": "plain-app" } } } });
    api.patch("plain", &PatchParams::default(), &Patch::Merge(&on)).await.unwrap();
    let (_, took) = eventually("every member serving clients over TLS alone", Duration::from_secs(600), || {
        let pods = pods.clone();
        async move {
            let listens = listening(&pods, "plain").await;
            (listens.len() == 3
                && listens.values().all(|(_, client)| client.starts_with("https://") && !client.contains(',')))
            .then_some(())
        }
    })
    .await;
    println!("client TLS on in {:.1} s", took.as_secs_f64());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ON);
    let (_, took) = eventually("the application certificate written", Duration::from_secs(120), || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("plain-app").await.ok().flatten().map(|_| ()) }
    })
    .await;
    println!("application certificate {:.1} s later", took.as_secs_f64());
    let members = converged_tls(&client, &pods, "plain", "plain-app", 3, Duration::from_secs(300)).await;
    let plain_written = writer.stop();
    let app = tls_from_secret(&client, ON, "plain-app", &format!("plain-client.{ON}.svc"), true).await;
    let endpoint = format!("https://{}:2379", members[0].1);
    none_lost("TLS turned on", &endpoint, Some(app), &[("/on/peer/", &written), ("/on/client/", &plain_written)]).await;
    let plain = etcd_client::Client::connect([format!("http://{}:2379", members[0].1)], None).await;
    let refused = match plain {
        Ok(mut etcd) => etcd.get("/on/peer/", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "plain HTTP is refused once client TLS is on");
    // The backup sidecar moved to TLS once every member served it (not before: its backups worked meanwhile).
    sidecar_speaks(&client, ON, "plain", true).await;
    let taken = support::take_backup(&client, ON, "plain").await;
    println!("backup over TLS after client TLS turned on: {} at revision {}", taken.name, taken.revision);

    // TLS off again, peer and client at once, under a writer with the application certificate and a plain one: each
    // pod rolled to serve clients plain and listen for peers on both schemes (its peer certificate kept), each URL
    // switched back, each pod rolled to listen plain alone and then without certificates.
    let app = tls_from_secret(&client, ON, "plain-app", &format!("plain-client.{ON}.svc"), true).await;
    let tls_writer = Writer::start_with(vec![service.replace("http://", "https://")], "/off/tls/", None, Some(app));
    let plain_writer = Writer::start_with(vec![service.clone()], "/off/plain/", None, None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let off = serde_json::json!({ "spec": { "tls": null } });
    api.patch("plain", &PatchParams::default(), &Patch::Merge(&off)).await.unwrap();
    let every_plain = || {
        let (pods, api) = (pods.clone(), api.clone());
        async move {
            let listens = listening(&pods, "plain").await;
            let plain = listens.len() == 3
                && listens.values().all(|(peer, client)| {
                    peer.starts_with("http://") && !peer.contains(',') && client.starts_with("http://")
                });
            let selector = format!("{}=plain", controller::labels::CLUSTER_LABEL);
            let listed = pods.list(&ListParams::default().labels(&selector)).await;
            let certified = listed.ok()?.items.iter().any(|p| {
                let etcd = &p.spec.as_ref().unwrap().containers[0];
                etcd.command.iter().flatten().any(|a| a.starts_with("--peer-cert-file"))
            });
            let status = api.get("plain").await.ok()?.data["status"].clone();
            let kept = !status["tls"].is_null() || status["certificates"].as_array().is_some_and(|c| !c.is_empty());
            (plain && !certified && !kept).then_some(listens)
        }
    };
    let (listens, _) = eventually(
        "every member plain, with no certificate, and none in status",
        Duration::from_secs(600),
        every_plain,
    )
    .await;
    println!("TLS off in {:.1} s: {listens:?}", started.elapsed().as_secs_f64());
    let ((urls, _), _) =
        eventually("every member registered at a plain peer URL", Duration::from_secs(60), || every_member("http://"))
            .await;
    println!("registered at {urls:?}");
    let members = support::converged(&pods, "plain", 3, &[], Duration::from_secs(120)).await.0;
    let (tls_written, plain_written) = (tls_writer.stop(), plain_writer.stop());
    let endpoint = format!("http://{}:2379", members[0].1);
    none_lost("TLS turned off", &endpoint, None, &[("/off/tls/", &tls_written), ("/off/plain/", &plain_written)]).await;
    for (name, ip) in &members {
        let mut etcd = etcd_client::Client::connect([format!("http://{ip}:2379")], None).await.unwrap();
        assert_ne!(etcd.status().await.unwrap().leader(), 0, "{name} knows a leader");
    }
    sidecar_speaks(&client, ON, "plain", false).await;
    let taken = support::take_backup(&client, ON, "plain").await;
    println!("backup over plain HTTP after TLS turned off: {} at revision {}", taken.name, taken.revision);
    // The pinned CA bundles no pod reads any more are gone.
    let maps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), ON);
    let selector = format!("{}=plain,{}", controller::labels::CLUSTER_LABEL, controller::certificates::TRUST_LABEL);
    eventually("no pinned CA bundle left", Duration::from_secs(60), || {
        let (maps, selector) = (maps.clone(), selector.clone());
        async move { maps.list(&ListParams::default().labels(&selector)).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
    api.delete("plain", &DeleteParams::default()).await.unwrap();
}
