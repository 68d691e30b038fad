//! The backup sidecar against a real etcd and real storage (`file://` and MinIO `s3://`): backup, list, fetch,
//! restore with `etcdctl snapshot restore`, authentication, and the skip and concurrency paths.

use std::io::Read;
use std::time::Duration;

use backup_sidecar::backup::BackupConfig;
use backup_sidecar::restore::{RestoreRequest, restore};
use backup_sidecar::retention::Retention;
use proto::backup::{ApiErrorBody, BackupInfo, BackupList, HEADER_REVISION, HEADER_SHA256, SidecarStatus};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use system_tests::etcd::{EtcdServer, restore_and_start};
use system_tests::net::free_port;
use system_tests::proxy::{GateProxy, TripProxy};
use system_tests::sidecar::{Backend, Sidecar, TestStorage, eventually, metric};

/// A generous limit for waiting on something that happens in well under a second on an idle machine.
const LONG: Duration = Duration::from_secs(60);

async fn post_backup(http: &reqwest::Client, sidecar: &Sidecar) -> (StatusCode, BackupInfo) {
    let response = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let info = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} {body}: {e}"));
    (status, info)
}

async fn scrape(http: &reqwest::Client, sidecar: &Sidecar) -> String {
    http.get(sidecar.url("/metrics")).send().await.unwrap().text().await.unwrap()
}

async fn list(http: &reqwest::Client, sidecar: &Sidecar) -> Vec<BackupInfo> {
    let list: BackupList = http.get(sidecar.url("/v1/backups")).send().await.unwrap().json().await.unwrap();
    list.backups
}

async fn round_trip(backend: Backend) {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/first/", 200, 100).await.unwrap();
    let storage = TestStorage::new(backend).await.unwrap();
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();

    let (status, first) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, again) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::OK, "nothing changed, so no new backup");
    assert_eq!(again.name, first.name);

    etcd.put_keys("/second/", 100, 100).await.unwrap();
    let (status, second) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(second.revision > first.revision);

    let listed = list(&http, &sidecar).await;
    let names: Vec<_> = listed.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, [second.name.as_str(), first.name.as_str()], "newest first");

    // A sidecar started again on the same storage knows its last success once it has listed the storage (as
    // `serve` does at start), not "none yet".
    let again = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let status: SidecarStatus = http.get(again.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert!(status.last_success.is_none(), "nothing listed yet");
    list(&http, &again).await;
    let status: SidecarStatus = http.get(again.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status.last_success.map(|b| b.name), Some(second.name.clone()), "the newest in storage");
    assert_eq!(status.last_success_at, Some(second.finished_at));
    drop(again);

    // HEAD gives the headers alone.
    let head = http.head(sidecar.url("/v1/backups/latest")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[HEADER_REVISION], second.revision.to_string().as_str());
    assert_eq!(head.headers()[HEADER_SHA256], second.sha256.as_str());
    assert_eq!(head.bytes().await.unwrap().len(), 0);

    // GET streams the gzip body; it decompresses to a snapshot with the advertised hash.
    let response = http.get(sidecar.url(&format!("/v1/backups/{}", first.name))).send().await.unwrap();
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let sha = response.headers()[HEADER_SHA256].to_str().unwrap().to_string();
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as u64, first.compressed_size);
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut raw).unwrap();
    assert_eq!(raw.len() as u64, first.raw_size);
    assert_eq!(hex::encode(Sha256::digest(&raw)), sha);

    // Restore the latest through the sidecar's API, start etcd on it, read every key back.
    let out = tempfile::tempdir().unwrap();
    let request = RestoreRequest {
        from: sidecar.base.clone(),
        backup: "latest".into(),
        output: out.path().join("snapshot.db"),
        token: None,
        ca: None,
        s3: storage.s3.clone(),
        seed_version: None,
    };
    let restored = restore(&request).await.unwrap();
    assert_eq!(restored.backup, second.name);
    assert_eq!(restored.revision, second.revision, "the sidecar's X-Etcd-Revision is reported");
    let revived = restore_and_start(&request.output).await.unwrap();
    assert_eq!(revived.keys("/first/").await.unwrap(), etcd.keys("/first/").await.unwrap());
    assert_eq!(revived.keys("/second/").await.unwrap().len(), 100);

    // And the first one straight from storage, without a sidecar.
    let from_storage = RestoreRequest {
        from: storage.url.clone(),
        backup: first.name.clone(),
        output: out.path().join("first.db"),
        ..request
    };
    let restored = restore(&from_storage).await.unwrap();
    assert_eq!((restored.backup.as_str(), restored.revision), (first.name.as_str(), first.revision));
    let older = restore_and_start(&from_storage.output).await.unwrap();
    assert_eq!(older.keys("/first/").await.unwrap().len(), 200);
    assert!(older.keys("/second/").await.unwrap().is_empty(), "the first backup predates /second/");

    // A seed whose etcd cannot run the backup's data (not the recorded minor or the next) is refused from storage,
    // before anything is written; its own minor is taken.
    let recorded = first.etcd_version.clone();
    let minor: u32 = recorded.split('.').nth(1).unwrap().parse().unwrap();
    let too_new = RestoreRequest {
        output: out.path().join("too-new.db"),
        seed_version: Some(format!("3.{}.0", minor + 2)),
        ..from_storage
    };
    let refused = restore(&too_new).await.expect_err("two minors ahead of the backup");
    assert!(
        matches!(&refused, backup_sidecar::restore::RestoreError::Refused { why, .. } if why.contains(&recorded)),
        "{refused}"
    );
    assert!(!too_new.output.exists(), "nothing written for a refused backup");
    let same = RestoreRequest { output: out.path().join("same.db"), seed_version: Some(recorded), ..too_new };
    restore(&same).await.expect("the backup's own minor restores it");
}

#[tokio::test]
async fn file_backup_list_fetch_and_restore_round_trip() {
    round_trip(Backend::File).await;
}

#[tokio::test]
async fn s3_backup_list_fetch_and_restore_round_trip() {
    round_trip(Backend::S3).await;
}

#[tokio::test]
async fn v1_routes_require_the_token_health_and_metrics_do_not() {
    let etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar =
        Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), Some("s3cr3t")).await.unwrap();
    let http = reqwest::Client::new();
    for path in ["/v1/backups", "/v1/status", "/v1/backups/latest"] {
        let none = http.get(sidecar.url(path)).send().await.unwrap();
        assert_eq!(none.status(), StatusCode::UNAUTHORIZED, "{path}");
        let error: ApiErrorBody = none.json().await.unwrap();
        assert_eq!(error.error, "unauthorized");
        let wrong = http.get(sidecar.url(path)).bearer_auth("s3cr3").send().await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let post = http.post(sidecar.url("/v1/backups")).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    assert!(sidecar.engine.list().await.unwrap().is_empty(), "an unauthorized trigger takes no backup");

    let created = http.post(sidecar.url("/v1/backups")).bearer_auth("s3cr3t").send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let listed = http.get(sidecar.url("/v1/backups")).bearer_auth("s3cr3t").send().await.unwrap();
    assert_eq!(listed.json::<BackupList>().await.unwrap().backups.len(), 1);

    // A restore with the token works, one without is refused with the server's reason.
    let out = tempfile::tempdir().unwrap();
    let mut request = RestoreRequest {
        from: sidecar.base.clone(),
        backup: "latest".into(),
        output: out.path().join("s.db"),
        token: None,
        ca: None,
        s3: Default::default(),
        seed_version: None,
    };
    let refused = restore(&request).await.unwrap_err().to_string();
    assert!(refused.contains("401"), "{refused}");
    assert!(!request.output.exists());
    request.token = Some("s3cr3t".into());
    restore(&request).await.unwrap();

    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(sidecar.url(open)).send().await.unwrap().status(), StatusCode::OK, "{open}");
    }
}

#[tokio::test]
async fn unknown_backups_are_404_with_a_json_error() {
    let etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();
    // No backup at all: latest is 404 too.
    for path in ["/v1/backups/latest", "/v1/backups/nope", "/v1/backups/..%2F..%2Fetc%2Fpasswd"] {
        let response = http.get(sidecar.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let error: ApiErrorBody = response.json().await.unwrap();
        assert_eq!(error.error, "not_found");
        assert!(!error.detail.is_empty());
    }
    let head = http.head(sidecar.url("/v1/backups/latest")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn triggers_during_a_backup_wait_for_it_and_get_its_result() {
    const TRIGGERS: usize = 8;
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 200, 100).await.unwrap();
    let storage = TestStorage::new(Backend::S3).await.unwrap();
    // Storage behind a closed gate: the first attempt lists storage before its snapshot, so it cannot end
    // (neither succeed nor fail) until the gate opens; while it runs, the other triggers arrive.
    let minio = storage.server.as_ref().unwrap().endpoint();
    let mut gate = GateProxy::start(minio.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    let gated = storage.via_endpoint(&format!("http://{}", gate.addr));
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &gated, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();

    let triggers = futures::future::join_all((0..TRIGGERS).map(|_| post_backup(&http, &sidecar)));
    let hold = async {
        tokio::time::timeout(LONG, gate.held(1)).await.expect("the attempt reaches storage");
        eventually("every trigger waits for the attempt", LONG, || sidecar.engine.waiting() == TRIGGERS).await;
        let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        assert!(status.running, "the attempt is still running");
        assert!(status.last_success.is_none());
        gate.open();
    };
    let (results, ()) = tokio::join!(triggers, hold);

    let first = &results[0].1;
    for (status, info) in &results {
        assert_eq!(*status, StatusCode::CREATED, "every trigger gets the new backup, none an unchanged one");
        assert_eq!((&info.name, &info.sha256), (&first.name, &first.sha256), "every trigger gets the same backup");
    }
    assert_eq!(gate.held_so_far(), 1, "only one attempt went to storage while the gate was closed");
    let metrics = scrape(&http, &sidecar).await;
    assert_eq!(metric(&metrics, r#"etcd_backup_attempts_total{result="created"}"#), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, r#"etcd_backup_attempts_total{result="unchanged"}"#), None, "{metrics}");
    assert_eq!(metric(&metrics, r#"etcd_backup_attempts_total{result="failed"}"#), None, "{metrics}");
    let listed: Vec<_> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert_eq!(listed, std::slice::from_ref(&first.name), "exactly one backup was taken");
    let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status.backup_count, 1);
    assert!(!status.running);
    assert_eq!(status.last_success.unwrap().name, first.name);
    assert_eq!(sidecar.engine.waiting(), 0);
}

#[tokio::test]
async fn retention_keeps_the_newest_and_runs_only_after_a_published_backup() {
    let etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let http = reqwest::Client::new();
    // Three backups taken without a limit, then a sidecar that keeps two: one more than that is stored, so any
    // retention run would delete the oldest.
    let unlimited = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let mut made = Vec::new();
    for round in 0..3 {
        // About 100 KiB a round: the snapshot below is well past the proxy's 64 KiB.
        etcd.put_keys(&format!("/r{round}/"), 100, 1024).await.unwrap();
        let (status, info) = post_backup(&http, &unlimited).await;
        assert_eq!(status, StatusCode::CREATED);
        made.push(info.name);
    }
    drop(unlimited);
    // A stream held at the proxy must not count as stalled while the test looks at storage.
    let config = BackupConfig {
        cluster_name: "test".into(),
        cluster_uid: None,
        retention: Retention { max_backups: Some(2), max_age: None },
        idle_timeout: LONG,
    };
    let sidecar = Sidecar::start_with(vec![etcd.client_url.clone()], &storage, config, None).await.unwrap();
    let stored = storage.files();
    assert_eq!(stored.len(), 6, "three snapshots and their manifests: {stored:?}");
    let names = |list: Vec<BackupInfo>| list.into_iter().map(|b| b.name).collect::<Vec<_>>();
    let newest_first: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(names(list(&http, &sidecar).await), newest_first, "listing deletes nothing");

    // etcd has not moved: nothing is published, so retention does not run.
    let (status, unchanged) = post_backup(&http, &sidecar).await;
    assert_eq!((status, unchanged.name.as_str()), (StatusCode::OK, made[2].as_str()));
    assert_eq!(storage.files(), stored, "an unchanged run deletes nothing");

    // etcd unreachable (the request names a dead endpoint): the attempt fails at once and deletes nothing.
    let dead = serde_json::json!({ "endpoints": [format!("http://127.0.0.1:{}", free_port())] });
    let response = http.post(sidecar.url("/v1/backups")).json(&dead).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.json::<ApiErrorBody>().await.unwrap().error, "etcd_unreachable");
    assert_eq!(storage.files(), stored, "a failed attempt deletes nothing");

    // The snapshot stream breaks half-way, after the upload started: the attempt fails late, and still deletes
    // nothing (and leaves no partial upload).
    etcd.put_keys("/late/", 10, 10).await.unwrap();
    let mut proxy =
        TripProxy::start(etcd.client_url.trim_start_matches("http://").parse().unwrap(), 64 * 1024).await.unwrap();
    let through_proxy = serde_json::json!({ "endpoints": [format!("http://{}", proxy.addr)] });
    let cut = http.post(sidecar.url("/v1/backups")).json(&through_proxy).send();
    let trip = async {
        tokio::time::timeout(LONG, proxy.tripped()).await.expect("the snapshot stream started");
        let staging: Vec<String> = storage.files().into_iter().filter(|f| !stored.contains(f)).collect();
        assert_eq!(staging.len(), 1, "the upload is under way: {staging:?}");
        proxy.release();
    };
    let (response, ()) = tokio::join!(cut, trip);
    let response = response.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let error: ApiErrorBody = response.json().await.unwrap();
    assert!(matches!(error.error.as_str(), "snapshot" | "snapshot_incomplete"), "{error:?}");
    assert_eq!(storage.files(), stored, "a failed attempt deletes nothing and its partial upload is gone");
    assert_eq!(names(list(&http, &sidecar).await), newest_first);
    let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status.consecutive_failures, 2);
    assert_eq!(status.last_failure.unwrap().reason, error.error);
    let metrics = scrape(&http, &sidecar).await;
    assert_eq!(metric(&metrics, r#"etcd_backup_attempts_total{result="failed"}"#), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, "etcd_backup_retention_deleted_total"), Some(0.0), "{metrics}");

    // A published backup runs retention: the two oldest go (manifest and snapshot), the newest two stay.
    let (status, newest) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(names(list(&http, &sidecar).await), [newest.name.clone(), made[2].clone()]);
    let mut expected: Vec<String> = [&newest.name, &made[2]]
        .into_iter()
        .flat_map(|name| [format!("{name}.db.gz"), format!("{name}.json")])
        .collect();
    expected.sort();
    assert_eq!(storage.files(), expected);
    let metrics = scrape(&http, &sidecar).await;
    assert_eq!(metric(&metrics, "etcd_backup_retention_deleted_total"), Some(2.0), "{metrics}");
    assert_eq!(metric(&metrics, "etcd_backup_stored"), Some(2.0), "{metrics}");
}

#[tokio::test]
async fn a_snapshot_larger_than_one_compression_block_round_trips() {
    let etcd = EtcdServer::start().await.unwrap();
    // About 10 MB: several 2 MiB blocks, compressed in parallel into separate gzip members.
    etcd.put_keys("/big/", 5000, 2048).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();
    let (status, info) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(info.raw_size > 8 * 1024 * 1024, "{} bytes is not several blocks", info.raw_size);

    // Plain gunzip semantics: the whole multi-member body decompresses to the snapshot.
    let body = http.get(sidecar.url("/v1/backups/latest")).send().await.unwrap().bytes().await.unwrap();
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(&body[..]).read_to_end(&mut raw).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&raw)), info.sha256);

    let out = tempfile::tempdir().unwrap();
    let request = RestoreRequest {
        from: storage.url.clone(),
        backup: info.name.clone(),
        output: out.path().join("big.db"),
        token: None,
        ca: None,
        s3: storage.s3.clone(),
        seed_version: None,
    };
    assert_eq!(restore(&request).await.unwrap().size, info.raw_size);
    let revived = restore_and_start(&request.output).await.unwrap();
    assert_eq!(revived.count("/big/").await.unwrap(), 5000);
}

#[tokio::test]
async fn a_backup_can_be_taken_from_endpoints_the_request_names() {
    // The configured endpoint is dead (as the client service is when quorum is lost); the request names a
    // member that still answers.
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/survivor/", 50, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar =
        Sidecar::start(vec!["http://127.0.0.1:9".into()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();

    let failed = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE, "the configured endpoint is down");

    let body = serde_json::json!({ "endpoints": [etcd.client_url] });
    let response = http.post(sidecar.url("/v1/backups")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let info: BackupInfo = response.json().await.unwrap();
    assert_eq!(info.etcd_member, etcd.client_url);
    assert_eq!(list(&http, &sidecar).await.len(), 1);

    let bad = serde_json::json!({ "endpoints": ["unix:///etc/passwd"] });
    let response = http.post(sidecar.url("/v1/backups")).json(&bad).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: ApiErrorBody = response.json().await.unwrap();
    assert!(error.detail.contains("no http(s) URL"), "{}", error.detail);

    // Only this cluster's members: an etcd elsewhere (here: another loopback address, which `localhost`, the
    // fixture's member name, does not resolve to) is refused before anything is read from it.
    let port = reqwest::Url::parse(&etcd.client_url).unwrap().port().unwrap();
    let stranger = serde_json::json!({ "endpoints": [format!("http://127.0.0.2:{port}")] });
    let response = http.post(sidecar.url("/v1/backups")).json(&stranger).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: ApiErrorBody = response.json().await.unwrap();
    assert!(error.detail.contains("not a member of this cluster"), "{}", error.detail);
    let named = serde_json::json!({ "endpoints": [format!("http://etcd-0001.other.ns.svc:{port}")] });
    let response = http.post(sidecar.url("/v1/backups")).json(&named).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a name that resolves to no member");
    // A name that resolves to members only is one (as a member pod's DNS name does).
    let by_name = serde_json::json!({ "endpoints": [format!("http://localhost:{port}")] });
    let response = http.post(sidecar.url("/v1/backups")).json(&by_name).send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.text().await.unwrap());

    // An oversized body gets the API's JSON error shape too, not a bare text reply.
    let huge = serde_json::json!({ "endpoints": vec![etcd.client_url.clone(); 8192] });
    let response = http.post(sidecar.url("/v1/backups")).json(&huge).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let error: ApiErrorBody = response.json().await.expect("a JSON error body");
    assert_eq!(error.error, "payload_too_large", "{}", error.detail);
    assert_eq!(list(&http, &sidecar).await.len(), 1, "nothing was taken");
}

#[tokio::test]
async fn readyz_is_ready_once_storage_has_answered_and_stays_ready() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 10, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();
    let ready = || async { http.get(sidecar.url("/readyz")).send().await.unwrap().status() };
    // A broken volume: the storage directory is replaced by a symlink to itself, so listing it fails.
    let dir = storage.path().unwrap();
    let aside = dir.with_extension("aside");
    let break_volume = || {
        std::fs::rename(&dir, &aside).unwrap();
        std::os::unix::fs::symlink(dir.file_name().unwrap(), &dir).unwrap();
    };
    let repair_volume = || {
        std::fs::remove_file(&dir).unwrap();
        std::fs::rename(&aside, &dir).unwrap();
    };

    assert_eq!(ready().await, StatusCode::SERVICE_UNAVAILABLE, "nothing has reached storage yet");
    break_volume();
    let listed = http.get(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::SERVICE_UNAVAILABLE, "the broken volume cannot be listed");
    let attempt = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(attempt.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempt.json::<ApiErrorBody>().await.unwrap().error, "storage");
    let not_ready = http.get(sidecar.url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE, "failed attempts do not make it ready");
    assert!(not_ready.text().await.unwrap().contains("storage"));

    repair_volume();
    assert!(list(&http, &sidecar).await.is_empty());
    assert_eq!(ready().await, StatusCode::OK, "storage answered");
    break_volume();
    let listed = http.get(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(listed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready().await, StatusCode::OK, "reached once is enough: a storage outage later keeps it ready");
    repair_volume();
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test]
async fn metrics_report_failures_the_last_success_durations_sizes_and_the_stored_count() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/a/", 50, 100).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let retention = Retention { max_backups: Some(1), max_age: None };
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, retention, None).await.unwrap();
    let http = reqwest::Client::new();
    let value = |text: &str, series: &str| metric(text, series).unwrap_or_else(|| panic!("no {series}: {text}"));
    let fresh = scrape(&http, &sidecar).await;
    assert_eq!(value(&fresh, "etcd_backup_last_success_timestamp_seconds"), 0.0);
    assert_eq!(value(&fresh, "etcd_backup_duration_seconds_count"), 0.0);

    // A new backup: its sizes, its duration, when it succeeded, and how many are stored.
    let before = unix_now();
    let (status, first) = post_backup(&http, &sidecar).await;
    let after = unix_now();
    assert_eq!(status, StatusCode::CREATED);
    let taken = scrape(&http, &sidecar).await;
    assert_eq!(value(&taken, "etcd_backup_last_raw_size_bytes"), first.raw_size as f64);
    assert_eq!(value(&taken, "etcd_backup_last_compressed_size_bytes"), first.compressed_size as f64);
    assert_eq!(value(&taken, "etcd_backup_duration_seconds_count"), 1.0);
    let took = value(&taken, "etcd_backup_duration_seconds_sum");
    assert!(took > 0.0 && took <= after - before, "{took} s, not within the request's {} s", after - before);
    let succeeded = value(&taken, "etcd_backup_last_success_timestamp_seconds");
    assert!((before - 0.001..=after).contains(&succeeded), "{succeeded} not in [{before}, {after}]");
    assert_eq!(value(&taken, "etcd_backup_stored"), 1.0);

    // Unchanged: a success (the timestamp moves), but no backup taken (no duration, same sizes).
    let (status, _) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::OK);
    let skipped = scrape(&http, &sidecar).await;
    assert_eq!(value(&skipped, r#"etcd_backup_attempts_total{result="unchanged"}"#), 1.0);
    assert!(value(&skipped, "etcd_backup_last_success_timestamp_seconds") >= succeeded);
    assert_eq!(value(&skipped, "etcd_backup_duration_seconds_count"), 1.0);
    assert_eq!(value(&skipped, "etcd_backup_last_raw_size_bytes"), first.raw_size as f64);

    // A bigger second backup: the sizes follow it; retention keeps one, and the stored count says so.
    etcd.put_keys_random("/b/", 200, 1024).await.unwrap();
    let (status, second) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(second.raw_size > first.raw_size && second.compressed_size > first.compressed_size);
    let grown = scrape(&http, &sidecar).await;
    assert_eq!(value(&grown, "etcd_backup_last_raw_size_bytes"), second.raw_size as f64);
    assert_eq!(value(&grown, "etcd_backup_last_compressed_size_bytes"), second.compressed_size as f64);
    assert_eq!(value(&grown, "etcd_backup_duration_seconds_count"), 2.0);
    assert_eq!(value(&grown, "etcd_backup_retention_deleted_total"), 1.0);
    assert_eq!(value(&grown, "etcd_backup_stored"), 1.0);
    let last_success = value(&grown, "etcd_backup_last_success_timestamp_seconds");

    // Failures, by reason; they leave the last success and the sizes alone.
    let dead = serde_json::json!({ "endpoints": [format!("http://127.0.0.1:{}", free_port())] });
    for _ in 0..2 {
        let response = http.post(sidecar.url("/v1/backups")).json(&dead).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let failed = scrape(&http, &sidecar).await;
    assert_eq!(value(&failed, r#"etcd_backup_failures_total{reason="etcd_unreachable"}"#), 2.0);
    assert_eq!(value(&failed, r#"etcd_backup_attempts_total{result="failed"}"#), 2.0);
    assert_eq!(value(&failed, r#"etcd_backup_attempts_total{result="created"}"#), 2.0);
    assert_eq!(value(&failed, "etcd_backup_last_success_timestamp_seconds"), last_success);
    assert_eq!(value(&failed, "etcd_backup_last_raw_size_bytes"), second.raw_size as f64);
    assert_eq!(value(&failed, "etcd_backup_duration_seconds_count"), 2.0);
}

#[tokio::test]
async fn another_cluster_at_the_same_revision_is_not_unchanged() {
    // Two separate clusters with the same writes: the same revision, different cluster IDs.
    let (a, b) = (EtcdServer::start().await.unwrap(), EtcdServer::start().await.unwrap());
    a.put_keys("/k/", 20, 10).await.unwrap();
    b.put_keys("/k/", 20, 10).await.unwrap();
    let header = |status: etcd_client::StatusResponse| {
        let header = status.header().unwrap();
        (header.revision(), header.cluster_id())
    };
    let (revision_a, id_a) = header(a.client().await.unwrap().status().await.unwrap());
    let (revision_b, id_b) = header(b.client().await.unwrap().status().await.unwrap());
    assert_eq!(revision_a, revision_b, "the clusters must be at the same revision for this test");
    assert_ne!(id_a, id_b);

    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar = Sidecar::start(vec![a.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();
    let (status, from_a) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!((from_a.revision, from_a.etcd_cluster_id.as_str()), (revision_a, format!("{id_a:x}").as_str()));

    let from = |etcd: &EtcdServer| serde_json::json!({ "endpoints": [etcd.client_url] });
    let post_from = |etcd: &EtcdServer| http.post(sidecar.url("/v1/backups")).json(&from(etcd)).send();
    let response = post_from(&b).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "the same revision of another cluster is new");
    let from_b: BackupInfo = response.json().await.unwrap();
    assert_eq!((from_b.revision, from_b.etcd_cluster_id.as_str()), (revision_b, format!("{id_b:x}").as_str()));
    assert_ne!(from_b.name, from_a.name);

    // Now B's is the newest: B again is unchanged, A is not.
    let response = post_from(&b).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.json::<BackupInfo>().await.unwrap().name, from_b.name);
    let (status, a_again) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(a_again.etcd_cluster_id, from_a.etcd_cluster_id);
    assert_eq!(list(&http, &sidecar).await.len(), 3);
}

/// Two clusters share one storage prefix (a cluster re-created under an old name, or restored, which gives it a
/// new cluster ID): retention counts and deletes only the backups of the cluster just backed up, so the other's
/// last backup, perhaps the only copy of its data, stays.
#[tokio::test]
async fn retention_never_deletes_another_clusters_backups() {
    let (a, b) = (EtcdServer::start().await.unwrap(), EtcdServer::start().await.unwrap());
    a.put_keys("/a/", 10, 10).await.unwrap();
    b.put_keys("/b/", 10, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let keep_one = Retention { max_backups: Some(1), max_age: None };
    let sidecar = Sidecar::start(vec![a.client_url.clone()], &storage, keep_one, None).await.unwrap();
    let http = reqwest::Client::new();
    let (status, from_a) = post_backup(&http, &sidecar).await;
    assert_eq!(status, StatusCode::CREATED);

    let body = serde_json::json!({ "endpoints": [b.client_url] });
    let response = http.post(sidecar.url("/v1/backups")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let from_b: BackupInfo = response.json().await.unwrap();
    assert_ne!(from_a.etcd_cluster_id, from_b.etcd_cluster_id);
    let names: Vec<String> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert_eq!(names, [from_b.name.clone(), from_a.name.clone()], "a's only backup is kept beside b's");

    // A second backup of b: b's older one goes, a's stays.
    b.put_keys("/b/more/", 5, 10).await.unwrap();
    let response = http.post(sidecar.url("/v1/backups")).json(&body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let again: BackupInfo = response.json().await.unwrap();
    let names: Vec<String> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert_eq!(names, [again.name, from_a.name]);
}

/// Two clusters whose sidecars share one storage prefix ("alpha" and "alphabet", say, pointed at the same bucket
/// path): each lists only its own backups, `latest` is its own newest, and its retention never deletes the
/// other's. The other's backups are still fetchable by their exact name, as a person restoring on purpose needs.
#[tokio::test]
async fn two_clusters_sharing_a_prefix_never_see_each_others_backups() {
    let (a, b) = (EtcdServer::start().await.unwrap(), EtcdServer::start().await.unwrap());
    a.put_keys("/a/", 10, 10).await.unwrap();
    b.put_keys("/b/", 30, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let config = |name: &str| BackupConfig {
        cluster_name: name.into(),
        cluster_uid: None,
        retention: Retention { max_backups: Some(1), max_age: None },
        idle_timeout: Duration::from_secs(5),
    };
    let alpha = Sidecar::start_with(vec![a.client_url.clone()], &storage, config("alpha"), None).await.unwrap();
    let alphabet = Sidecar::start_with(vec![b.client_url.clone()], &storage, config("alphabet"), None).await.unwrap();
    let http = reqwest::Client::new();
    let (status, of_alpha) = post_backup(&http, &alpha).await;
    assert_eq!(status, StatusCode::CREATED);
    // alphabet's backup is newer, and retention keeps one: alpha's must survive it.
    let (status, first_of_alphabet) = post_backup(&http, &alphabet).await;
    assert_eq!(status, StatusCode::CREATED);
    b.put_keys("/b/more/", 5, 10).await.unwrap();
    let (status, of_alphabet) = post_backup(&http, &alphabet).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(of_alphabet.name, first_of_alphabet.name);

    let names = |list: Vec<BackupInfo>| list.into_iter().map(|b| b.name).collect::<Vec<_>>();
    assert_eq!(names(list(&http, &alpha).await), std::slice::from_ref(&of_alpha.name), "alpha lists only its own");
    assert_eq!(
        names(list(&http, &alphabet).await),
        std::slice::from_ref(&of_alphabet.name),
        "alphabet: its own, retention kept one"
    );
    let latest = |sidecar: &Sidecar| http.head(sidecar.url("/v1/backups/latest")).send();
    let response = latest(&alpha).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-backup-name"].to_str().unwrap(), of_alpha.name, "alpha's latest is alpha's");
    let response = latest(&alphabet).await.unwrap();
    assert_eq!(response.headers()["x-backup-name"].to_str().unwrap(), of_alphabet.name);
    let by_name = http.head(alpha.url(&format!("/v1/backups/{}", of_alphabet.name))).send().await.unwrap();
    assert_eq!(by_name.status(), StatusCode::OK, "another cluster's backup is fetchable by its exact name");
    let everything: BackupList =
        http.get(alpha.url("/v1/backups?all=true")).send().await.unwrap().json().await.unwrap();
    assert_eq!(names(everything.backups), [of_alphabet.name.clone(), of_alpha.name.clone()], "?all=true lists both");

    // A sidecar of a cluster with no backup yet has no `latest`, even with others' backups in its prefix.
    let empty = Sidecar::start_with(vec![a.client_url.clone()], &storage, config("alp"), None).await.unwrap();
    assert!(list(&http, &empty).await.is_empty());
    assert_eq!(latest(&empty).await.unwrap().status(), StatusCode::NOT_FOUND);
}

/// An EtcdCluster deleted and created again under its old name is another object (another UID): its sidecar
/// lists, takes as `latest` and retains only the new object's backups; the old one's stay, listed with `?all=true`
/// and fetchable by name.
#[tokio::test]
async fn a_cluster_created_again_under_its_name_leaves_the_old_ones_backups_alone() {
    let (old, new) = (EtcdServer::start().await.unwrap(), EtcdServer::start().await.unwrap());
    old.put_keys("/old/", 10, 10).await.unwrap();
    new.put_keys("/new/", 10, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let config = |uid: &str| BackupConfig {
        cluster_name: "alpha".into(),
        cluster_uid: Some(uid.into()),
        retention: Retention { max_backups: Some(1), max_age: None },
        idle_timeout: Duration::from_secs(5),
    };
    let http = reqwest::Client::new();
    let first = Sidecar::start_with(vec![old.client_url.clone()], &storage, config("uid-1"), None).await.unwrap();
    let (status, of_old) = post_backup(&http, &first).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(of_old.cluster_uid.as_deref(), Some("uid-1"), "the backup records which object wrote it");
    drop(first);

    let second = Sidecar::start_with(vec![new.client_url.clone()], &storage, config("uid-2"), None).await.unwrap();
    assert!(list(&http, &second).await.is_empty(), "none of the old object's backups is the new one's");
    let latest = http.head(second.url("/v1/backups/latest")).send().await.unwrap();
    assert_eq!(latest.status(), StatusCode::NOT_FOUND, "no `latest` from the old object");
    for _ in 0..2 {
        new.put_keys("/new/more/", 3, 10).await.unwrap();
        let (status, _) = post_backup(&http, &second).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    let names = |list: Vec<BackupInfo>| list.into_iter().map(|b| b.name).collect::<Vec<_>>();
    let all: BackupList = http.get(second.url("/v1/backups?all=true")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        all.backups.len(),
        2,
        "retention kept one of the new object's and the old one's: {:?}",
        names(all.backups)
    );
    let by_name = http.head(second.url(&format!("/v1/backups/{}", of_old.name))).send().await.unwrap();
    assert_eq!(by_name.status(), StatusCode::OK, "the old object's backup is still there, by name");
}

/// The backup an upgrade pins is its rollback point: retention keeps it however many backups follow, until a later
/// pin takes its place; only this cluster's backups can be pinned.
#[tokio::test]
async fn a_pinned_backup_outlives_retention_until_a_later_pin() {
    let etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let http = reqwest::Client::new();
    let sidecar = Sidecar::start(
        vec![etcd.client_url.clone()],
        &storage,
        Retention { max_backups: Some(1), max_age: None },
        None,
    )
    .await
    .unwrap();
    let pin = |name: &str| {
        let body = serde_json::json!({ "reason": "taken before the upgrade to 3.6.16 (from 3.5.35)" });
        http.post(sidecar.url(&format!("/v1/backups/{name}/pin"))).json(&body).send()
    };
    etcd.put_keys("/a/", 10, 100).await.unwrap();
    let (_, first) = post_backup(&http, &sidecar).await;
    let pinned = pin(&first.name).await.unwrap();
    assert_eq!(pinned.status(), StatusCode::OK);
    let pinned: BackupInfo = pinned.json().await.unwrap();
    assert!(pinned.pinned.as_deref().is_some_and(|r| r.contains("3.6.16")), "{pinned:?}");
    for round in 0..2 {
        etcd.put_keys(&format!("/b{round}/"), 10, 100).await.unwrap();
        post_backup(&http, &sidecar).await;
    }
    let names: Vec<String> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert_eq!(names.len(), 2, "the newest and the pinned one: {names:?}");
    assert!(names.contains(&first.name), "the pinned backup is kept: {names:?}");

    // A later pin releases the earlier one, which the next backup's retention deletes.
    let second = list(&http, &sidecar).await[0].clone();
    assert_eq!(pin(&second.name).await.unwrap().status(), StatusCode::OK);
    etcd.put_keys("/c/", 10, 100).await.unwrap();
    post_backup(&http, &sidecar).await;
    let names: Vec<String> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert!(!names.contains(&first.name) && names.contains(&second.name), "{names:?}");

    assert_eq!(pin("no-such-backup").await.unwrap().status(), StatusCode::NOT_FOUND);
    let empty =
        http.post(sidecar.url(&format!("/v1/backups/{}/pin", second.name))).json(&serde_json::json!({ "reason": "" }));
    assert_eq!(empty.send().await.unwrap().status(), StatusCode::BAD_REQUEST);
}
