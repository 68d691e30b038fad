//! End-to-end against the real API server of the test bed (`tests/e2e/up.sh`): the CRD installs as a user would
//! install it, the examples are accepted, and every bad spec in `example/invalid/` is refused with a message a
//! person can act on. Run with `--features e2e` and `KUBECONFIG` pointing at the test bed.

mod support;

use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Client, ResourceExt};
use support::{clusters, example, install_crd, load};

#[tokio::test]
async fn the_api_server_takes_the_examples_and_refuses_every_bad_spec() {
    let client = Client::try_default().await.expect("KUBECONFIG must point at the test bed (tests/e2e/up.sh)");
    let took = install_crd(&client).await;
    println!("CRD established in {:.1} s", took.as_secs_f64());
    let api = clusters(&client, "default");
    // Dry runs: the server validates and admits the object, and nothing is stored.
    let dry = PostParams { dry_run: true, ..Default::default() };

    for name in [
        "example-etcd-cluster.yaml",
        "example-etcd-cluster-backup.yaml",
        "example-etcd-cluster-s3.yaml",
        "example-etcd-cluster-restore.yaml",
        "example-etcd-cluster-restore-s3.yaml",
    ] {
        let object: DynamicObject = load(&example(name));
        let created = api.create(&dry, &object).await.unwrap_or_else(|e| panic!("{name} was refused: {e}"));
        // Defaults from the schema are applied by the server.
        assert!(created.data["spec"]["version"].is_string(), "{name}: {:?}", created.data);
    }

    let expected = [
        ("size-zero.yaml", "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"),
        ("size-ten.yaml", "spec.size in body should be less than or equal to 9"),
        ("bad-version.yaml", "spec.version in body should match"),
        ("backup-two-schedules.yaml", "set at most one of backup.every and backup.cron"),
        (
            "backup-two-storages.yaml",
            "spec.backup.storage: Invalid value: \"object\": storage needs exactly one of pvc and s3",
        ),
        (
            "backup-no-storage.yaml",
            "spec.backup.storage: Invalid value: \"object\": storage needs exactly one of pvc and s3",
        ),
        ("missing-size.yaml", "spec.size: Required value"),
        ("restore-two-sources.yaml", "restore needs exactly one of cluster, url and storage"),
        ("recovery-bad-policy.yaml", "spec.recovery.policy: Unsupported value: \"Automatic\""),
    ];
    let files = std::fs::read_dir(example("invalid")).unwrap().count();
    assert_eq!(files, expected.len(), "every invalid example has an expectation");
    for (file, message) in expected {
        let object: DynamicObject = load(&example("invalid").join(file));
        let error = api.create(&dry, &object).await.expect_err(file);
        let kube::Error::Api(status) = &error else { panic!("{file}: {error}") };
        assert_eq!(status.code, 422, "{file}: {status:?}");
        assert!(status.message.contains(message), "{file}: {}", status.message);
        println!("refused {file}: {}", status.message);
    }

    // And a real one round-trips through the server with its status subresource.
    let object: DynamicObject = load(&example("example-etcd-cluster.yaml"));
    let stored = api.create(&PostParams::default(), &object).await.unwrap();
    assert_eq!(stored.data["spec"]["size"], 3);
    api.delete(&stored.name_any(), &DeleteParams::default()).await.unwrap();
}
