//! The `etcd-backup-sidecar` binary run as a process, as the controller and users run it: `backup-once`, `serve`
//! and `restore` with their flags, against a real etcd and real storage. The binary is built from this workspace
//! by the first test that needs it.

use std::process::Output;
use std::time::Duration;

use backup_sidecar::restore::{RestoreRequest, restore};
use backup_sidecar::storage::Storage;
use proto::backup::{BackupInfo, BackupList, EXIT_CORRUPT_BACKUP, RestoreResult, SidecarStatus};
use reqwest::StatusCode;
use system_tests::etcd::{EtcdServer, restore_and_start};
use system_tests::net::free_port;
use system_tests::s3::{ACCESS_KEY, BUCKET, SECRET_KEY};
use system_tests::sidecar::{Backend, SidecarProcess, TestStorage, metric, sidecar_bin};

/// A generous limit for waiting on something that happens in well under a second on an idle machine.
const LONG: Duration = Duration::from_secs(60);

/// Runs the binary with `args` (and none of the `AWS_*` variables: only flags configure it) to its end.
async fn run(args: &[&str]) -> Output {
    let bin = tokio::task::spawn_blocking(sidecar_bin).await.unwrap();
    let mut command = tokio::process::Command::new(bin);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    tokio::time::timeout(LONG, command.args(args).kill_on_drop(true).output())
        .await
        .expect("the sidecar binary finishes")
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The backup `backup-once` printed; fails unless it exited with success.
fn printed(output: &Output) -> BackupInfo {
    assert!(output.status.success(), "{}: {}", output.status, stderr(output));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

async fn stored(storage: &Storage) -> Vec<BackupInfo> {
    storage.list().await.unwrap().into_iter().map(|m| m.info).collect()
}

#[tokio::test]
async fn backup_once_prints_its_backup_skips_an_unchanged_cluster_and_applies_retention() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 100, 100).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let base =
        ["backup-once", "--etcd-endpoints", &etcd.client_url, "--storage", &storage.url, "--cluster-name", "cli"];

    let first = printed(&run(&base).await);
    assert!(first.name.starts_with("cli-"), "{}", first.name);
    assert_eq!((first.cluster_name.as_str(), first.etcd_member.as_str()), ("cli", etcd.client_url.as_str()));
    let store = storage.open().unwrap();
    assert_eq!(stored(&store).await, std::slice::from_ref(&first), "what it printed is what it published");
    // The backup is a real snapshot of this etcd.
    let out = tempfile::tempdir().unwrap();
    let request = RestoreRequest {
        from: storage.url.clone(),
        backup: first.name.clone(),
        output: out.path().join("snapshot.db"),
        token: None,
        ca: None,
        s3: Default::default(),
        seed_version: None,
    };
    assert_eq!(restore(&request).await.unwrap().sha256, first.sha256);
    let revived = restore_and_start(&request.output).await.unwrap();
    assert_eq!(revived.keys("/k/").await.unwrap(), etcd.keys("/k/").await.unwrap());

    // Nothing changed: it prints the existing backup and takes none.
    let again = printed(&run(&base).await);
    assert_eq!(again, first);
    assert_eq!(stored(&store).await.len(), 1);

    // After a change, with --max-backups 1: a new backup, and the older one is gone.
    etcd.put_keys("/more/", 10, 10).await.unwrap();
    let second = printed(&run(&[&base[..], &["--max-backups", "1"][..]].concat()).await);
    assert!(second.revision > first.revision);
    assert_eq!(stored(&store).await, [second]);
}

#[tokio::test]
async fn backup_once_fails_with_its_reason_and_writes_nothing() {
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let output = run(&[
        "backup-once",
        "--etcd-endpoints",
        &dead,
        "--etcd-timeout",
        "2s",
        "--storage",
        &storage.url,
        "--cluster-name",
        "cli",
    ])
    .await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("no etcd endpoint answered"), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "nothing is printed for a failed backup");
    assert!(storage.files().is_empty(), "nothing is written: {:?}", storage.files());

    let unsupported =
        run(&["backup-once", "--etcd-endpoints", &dead, "--storage", "ftp://x/y", "--cluster-name", "c"]).await;
    assert_eq!(unsupported.status.code(), Some(1));
    assert!(stderr(&unsupported).contains("unsupported scheme"), "{}", stderr(&unsupported));
    let incomplete = run(&["backup-once", "--storage", &storage.url, "--cluster-name", "c"]).await;
    assert_eq!(incomplete.status.code(), Some(2), "a usage error: {}", stderr(&incomplete));
    assert!(stderr(&incomplete).contains("--etcd-endpoints"), "{}", stderr(&incomplete));
}

#[tokio::test]
async fn backup_once_to_s3_is_configured_by_the_s3_flags() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 20, 10).await.unwrap();
    let storage = TestStorage::new(Backend::S3).await.unwrap();
    let endpoint = storage.server.as_ref().unwrap().endpoint();
    let url = format!("s3://{BUCKET}/by-flags");
    let with_secret = |secret: &'static str| {
        [
            "backup-once",
            "--etcd-endpoints",
            &etcd.client_url,
            "--cluster-name",
            "s3cli",
            "--storage",
            &url,
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            "us-east-1",
            "--s3-access-key-id",
            ACCESS_KEY,
            "--s3-secret-access-key",
            secret,
            "--s3-allow-http",
        ]
        .map(str::to_string)
    };
    let args = with_secret(SECRET_KEY);
    let info = printed(&run(&args.each_ref().map(String::as_str)).await);
    let store = Storage::open(&url, &storage.s3).unwrap();
    assert_eq!(stored(&store).await, [info]);

    // The flags are what it uses: a wrong secret is refused by the server.
    etcd.put_keys("/more/", 1, 10).await.unwrap();
    let args = with_secret("not-the-secret");
    let refused = run(&args.each_ref().map(String::as_str)).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("storage"), "{}", stderr(&refused));
    assert_eq!(stored(&store).await.len(), 1);
}

#[tokio::test]
async fn serve_lists_storage_before_it_listens_so_it_is_ready_and_it_requires_its_token() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 20, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let args = [
        "--etcd-endpoints",
        &etcd.client_url,
        "--storage",
        &storage.url,
        "--cluster-name",
        "served",
        "--auth-token-file",
        token_file.to_str().unwrap(),
    ]
    .map(str::to_string);
    let mut sidecar = SidecarProcess::serve(&args).await.unwrap();
    let http = reqwest::Client::new();
    // Start-up listed the storage before the API listens: ready from the first request on.
    let ready = http.get(sidecar.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);

    let refused = http.post(sidecar.url("/v1/backups")).send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let created = http.post(sidecar.url("/v1/backups")).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED, "the token file's newline is not part of the token");
    let info: BackupInfo = created.json().await.unwrap();
    assert_eq!(info.cluster_name, "served");
    let listed: BackupList =
        http.get(sidecar.url("/v1/backups")).bearer_auth("t0ken").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.backups, std::slice::from_ref(&info));
    let status: SidecarStatus =
        http.get(sidecar.url("/v1/status")).bearer_auth("t0ken").send().await.unwrap().json().await.unwrap();
    assert_eq!((status.schedule, status.backup_count), (None, 1));
    let metrics = http.get(sidecar.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&metrics, r#"etcd_backup_attempts_total{result="created"}"#), Some(1.0), "{metrics}");
    assert!(sidecar.running());
}

#[tokio::test]
async fn serve_with_every_takes_the_first_backup_at_start_up() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 20, 10).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let args = ["--etcd-endpoints", &etcd.client_url, "--storage", &storage.url, "--cluster-name", "sched"]
        .into_iter()
        .chain(["--every", "1h"])
        .map(str::to_string)
        .collect::<Vec<_>>();
    let sidecar = SidecarProcess::serve(&args).await.unwrap();
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + LONG;
    let status = loop {
        let status: SidecarStatus = http.get(sidecar.url("/v1/status")).send().await.unwrap().json().await.unwrap();
        // Done once the backup is in and the next run was set after it.
        if let (Some(at), Some(next)) = (status.last_success_at, status.next_run)
            && next > at
        {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "no backup at start-up: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.schedule.as_deref(), Some("every 1h"));
    let until_next = (status.next_run.unwrap() - status.last_success_at.unwrap()).num_seconds();
    assert!((3600..3660).contains(&until_next), "the next run is {until_next} s after the first");
    let store = storage.open().unwrap();
    assert_eq!(stored(&store).await, [status.last_success.unwrap()]);
}

#[tokio::test]
async fn restore_writes_a_verified_snapshot_or_exits_with_the_corrupt_backup_code() {
    let etcd = EtcdServer::start().await.unwrap();
    etcd.put_keys("/k/", 300, 200).await.unwrap();
    let storage = TestStorage::new(Backend::File).await.unwrap();
    let base = ["backup-once", "--etcd-endpoints", &etcd.client_url, "--storage", &storage.url, "--cluster-name", "r"];
    let info = printed(&run(&base).await);
    let out = tempfile::tempdir().unwrap();
    let output = out.path().join("member").join("snapshot.db");
    let result_file = out.path().join("result.json");
    let restore_args = |backup: &str, output: &std::path::Path| {
        ["restore", "--from", &storage.url, "--backup", backup, "--output", output.to_str().unwrap()]
            .map(str::to_string)
    };

    let args =
        [&restore_args("latest", &output)[..], &["--result-file".into(), result_file.display().to_string()]].concat();
    let done = run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert!(done.status.success(), "{}", stderr(&done));
    let result: RestoreResult = serde_json::from_slice(&std::fs::read(&result_file).unwrap()).unwrap();
    assert_eq!((result.backup.as_str(), result.revision), (info.name.as_str(), info.revision));
    assert_eq!((result.sha256.as_str(), result.size), (info.sha256.as_str(), info.raw_size));
    assert_eq!(serde_json::from_slice::<RestoreResult>(&done.stdout).unwrap(), result);
    let revived = restore_and_start(&output).await.unwrap();
    assert_eq!(revived.count("/k/").await.unwrap(), 300);

    // The stored object corrupted in its middle (same size, so still listed): refused with its own exit code.
    let object = storage.path().unwrap().join(format!("{}.db.gz", info.name));
    let mut body = std::fs::read(&object).unwrap();
    let middle = body.len() / 2;
    // Sixteen bytes, not one bit: a bit deflate ignores (the padding before a stored block) changes nothing that
    // is restored, and such a backup is rightly not refused (a test that failed now and then).
    for byte in &mut body[middle..middle + 16] {
        *byte ^= 0xff;
    }
    std::fs::write(&object, body).unwrap();
    let corrupt_output = out.path().join("again").join("snapshot.db");
    let corrupt = run(&restore_args(&info.name, &corrupt_output).each_ref().map(String::as_str)).await;
    assert_eq!(corrupt.status.code(), Some(i32::from(EXIT_CORRUPT_BACKUP)), "{}", stderr(&corrupt));
    assert!(stderr(&corrupt).contains(&info.name) && stderr(&corrupt).contains("corrupt"), "{}", stderr(&corrupt));
    assert!(!corrupt_output.exists(), "nothing is left at the output path");

    // A source that cannot be reached is not a corrupt backup: the plain failure code, worth retrying.
    let unreachable_output = out.path().join("unreachable.db");
    let mut args = restore_args("latest", &unreachable_output);
    args[2] = format!("http://127.0.0.1:{}", free_port());
    let unreachable = run(&args.each_ref().map(String::as_str)).await;
    assert_eq!(unreachable.status.code(), Some(1), "{}", stderr(&unreachable));
    assert!(!unreachable_output.exists());
}

/// The guard run as the unprivileged user member pods run as (uid 65532; this test drops to it when run as root,
/// else it takes the access away from its own user): a volume whose etcd data that user cannot write (a member that
/// ran as root wrote it, and the volume's driver did not apply fsGroup) is refused with its own code (the data is
/// intact: not a wrong volume) and a reason naming the path, its owner and the way out, and is left as it is; the
/// same volume given to the user passes.
#[tokio::test]
async fn guard_refuses_a_volume_whose_data_its_user_cannot_write_with_its_own_code_and_leaves_it_as_it_is() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const USER: u32 = 65532;
    let bin = tokio::task::spawn_blocking(sidecar_bin).await.unwrap();
    let volume = tempfile::tempdir().unwrap();
    std::fs::set_permissions(volume.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = volume.path().join("data");
    let root = nix::unistd::geteuid().is_root();
    let guard = |expect_data: bool| {
        let mut command = std::process::Command::new(&bin);
        command.args(["guard", "--volume", volume.path().to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
        command.args(["--cluster-uid", "uid-1", "--cluster", "ns/c", "--member", "c-0000"]);
        if expect_data {
            command.arg("--expect-data");
        }
        if root {
            command.uid(USER).gid(USER);
        }
        command.output().unwrap()
    };
    // The empty volume is claimed (the guard written by the unprivileged user), then etcd data appears that the
    // user cannot write: owned by root with etcd's 0700, or (not root) with every permission taken away.
    let claimed = guard(false);
    assert!(claimed.status.success(), "{}", stderr(&claimed));
    std::fs::create_dir_all(data.join("member/wal")).unwrap();
    std::fs::write(data.join("member/wal/0000000000000000-0000000000000000.wal"), b"wal").unwrap();
    let locked = if root { 0o700 } else { 0o000 };
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(locked)).unwrap();

    let refused = guard(true);
    assert_eq!(refused.status.code(), Some(i32::from(proto::backup::EXIT_VOLUME_UNUSABLE)), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(proto::backup::UNUSABLE_PREFIX), "{}", stderr(&refused));
    let why = stderr(&refused);
    assert!(why.contains(data.to_str().unwrap()) && why.contains("cannot be used by uid"), "{why}");
    assert!(why.contains("spec.pod.securityContext") && why.contains("chown"), "the way out is named: {why}");
    // Whose volume it is comes first: another cluster's is refused as such (code 4), whatever its files' owner.
    let guard_file = volume.path().join(proto::backup::GUARD_FILE);
    let ours = std::fs::read(&guard_file).unwrap();
    let mut other: proto::backup::VolumeGuard = serde_json::from_slice(&ours).unwrap();
    other.cluster_uid = "uid-2".into();
    std::fs::write(&guard_file, serde_json::to_vec(&other).unwrap()).unwrap();
    let foreign = guard(true);
    assert_eq!(foreign.status.code(), Some(i32::from(proto::backup::EXIT_WRONG_VOLUME)), "{}", stderr(&foreign));
    assert!(stderr(&foreign).contains("uid-2"), "{}", stderr(&foreign));
    std::fs::write(&guard_file, &ours).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert!(data.join("member/wal/0000000000000000-0000000000000000.wal").exists(), "nothing was removed");

    // Given to the user (what fsGroup or a `chown -R` does), the same volume passes.
    if root {
        for entry in [data.clone(), data.join("member"), data.join("member/wal")] {
            std::os::unix::fs::chown(&entry, Some(USER), Some(USER)).unwrap();
        }
        std::os::unix::fs::chown(data.join("member/wal/0000000000000000-0000000000000000.wal"), Some(USER), Some(USER))
            .unwrap();
    }
    let passed = guard(true);
    assert!(passed.status.success(), "{}", stderr(&passed));
}
