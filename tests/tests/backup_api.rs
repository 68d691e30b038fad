//! The backup sidecar against a real etcd and real storage (`file://` and MinIO `s3://`): backup, list, fetch,
//! restore with `etcdctl snapshot restore`, authentication, and the skip and concurrency paths.

use std::io::Read;

use backup_sidecar::restore::{RestoreRequest, restore};
use backup_sidecar::retention::Retention;
use proto::backup::{ApiErrorBody, BackupInfo, BackupList, HEADER_REVISION, HEADER_SHA256, SidecarStatus};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use system_tests::etcd::{EtcdServer, restore_and_start};
use system_tests::sidecar::{Backend, Sidecar, TestStorage};

async fn post_backup(http: &reqwest::Client, sidecar: &Sidecar) -> (StatusCode, BackupInfo) {
    let response = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let info = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{status} {body}: {e}"));
    (status, info)
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
        s3: storage.s3.clone(),
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
        s3: Default::default(),
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
async fn concurrent_triggers_share_one_backup() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 2000, 512).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, Retention::default(), None).await.unwrap();
    let http = reqwest::Client::new();
    let triggers = (0..8).map(|_| post_backup(&http, &sidecar));
    let results = futures::future::join_all(triggers).await;
    let first = &results[0].1.name;
    for (status, info) in &results {
        assert_eq!(&info.name, first, "every trigger gets the same backup");
        assert!(*status == StatusCode::CREATED || *status == StatusCode::OK);
    }
    assert!(results.iter().any(|(status, _)| *status == StatusCode::CREATED));
    assert_eq!(list(&http, &sidecar).await.len(), 1, "exactly one backup was taken");
    let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status.backup_count, 1);
    assert!(!status.running);
    assert_eq!(status.last_success.unwrap().name, *first);
}

#[tokio::test]
async fn retention_keeps_the_newest_and_runs_only_after_a_published_backup() {
    let mut etcd = EtcdServer::start().await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let retention = Retention { max_backups: Some(2), max_age: None };
    let sidecar = Sidecar::start(vec![etcd.client_url.clone()], &storage, retention, None).await.unwrap();
    let http = reqwest::Client::new();
    let mut made = Vec::new();
    for round in 0..4 {
        etcd.put_keys(&format!("/r{round}/"), 10, 10).await.unwrap();
        let (status, info) = post_backup(&http, &sidecar).await;
        assert_eq!(status, StatusCode::CREATED);
        made.push(info.name);
    }
    let kept: Vec<_> = list(&http, &sidecar).await.into_iter().map(|b| b.name).collect();
    assert_eq!(kept, [made[3].clone(), made[2].clone()]);

    // etcd gone: the attempt fails, and nothing is deleted.
    etcd.kill();
    let response = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let error: ApiErrorBody = response.json().await.unwrap();
    assert_eq!(error.error, "etcd_unreachable");
    assert_eq!(list(&http, &sidecar).await.len(), 2);
    let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!(status.consecutive_failures, 1);
    assert_eq!(status.last_failure.unwrap().reason, "etcd_unreachable");
    let metrics = http.get(sidecar.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("etcd_backup_attempts_total{result=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("etcd_backup_attempts_total{result=\"created\"} 4"), "{metrics}");
    assert!(metrics.contains("etcd_backup_retention_deleted_total 2"), "{metrics}");
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
        s3: storage.s3.clone(),
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
}
