//! End-to-end against the real API server of the test bed (`tests/e2e/up.sh`): the CRD installs as a user would
//! install it, the examples are accepted, and every bad spec in `example/invalid/` is refused with a message a
//! person can act on. Run with `--features e2e` and `KUBECONFIG` pointing at the test bed.

mod support;

use kube::ResourceExt;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use support::{clusters, example, fresh_namespace, install_crd, load, no_other_controller, testbed};

const NS: &str = "e2e-api";

#[tokio::test]
async fn the_api_server_takes_the_examples_and_refuses_every_bad_spec() {
    let client = testbed().await;
    // Nothing else may write this test's status.
    no_other_controller(&client).await;
    let took = install_crd(&client).await;
    println!("CRD established in {:.1} s", took.as_secs_f64());
    fresh_namespace(&client, NS).await;
    let api = clusters(&client, NS);
    // Dry runs: the server validates and admits the object, and nothing is stored.
    let dry = PostParams { dry_run: true, ..Default::default() };

    for name in [
        "example-etcd-cluster.yaml",
        "example-etcd-cluster-backup.yaml",
        "example-etcd-cluster-s3.yaml",
        "example-etcd-cluster-restore.yaml",
        "example-etcd-cluster-restore-s3.yaml",
        "example-etcd-cluster-tls.yaml",
    ] {
        let object: DynamicObject = load(&example(name));
        let created = api.create(&dry, &object).await.unwrap_or_else(|e| panic!("{name} was refused: {e}"));
        // Defaults from the schema are applied by the server.
        assert!(created.data["spec"]["version"].is_string(), "{name}: {:?}", created.data);
    }
    // Every form of quantity Kubernetes takes passes the schema's pattern (integers, decimals, suffixes, exponents).
    let mut object: DynamicObject = load(&example("example-etcd-cluster.yaml"));
    object.data["spec"]["pod"] = serde_json::json!({ "resources": {
        "requests": { "cpu": "500m", "memory": "1Gi", "ephemeral-storage": "0.5" },
        "limits": { "cpu": 2, "memory": "1e9" },
    } });
    let created = api.create(&dry, &object).await.unwrap_or_else(|e| panic!("quantities were refused: {e}"));
    assert_eq!(created.data["spec"]["pod"]["resources"]["limits"]["cpu"], 2, "{:?}", created.data);

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
        ("quota-too-large.yaml", "spec.etcd.quotaBackendBytes in body should be less than or equal to"),
        ("recovery-bad-max-backup-age.yaml", "spec.recovery.maxBackupAge in body should match"),
        ("backup-cron-minute-61.yaml", "spec.backup.cron in body should match"),
        ("backup-every-zero.yaml", "spec.backup.every in body should match"),
        ("bad-repository.yaml", "spec.repository in body should match"),
        ("bad-quantity.yaml", "spec.pod.resources.requests.cpu in body should match"),
        ("tls-short-duration.yaml", "spec.tls.certificateDuration must be at least 10m"),
        ("tls-server-without-operator.yaml", "set secretName and operatorSecretName together"),
        ("tls-own-secrets-backup-without-its-certificate.yaml", "name the backup sidecar's serving certificate too"),
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

    // And a real one round-trips through the server with its status subresource: status is written only through
    // /status (a status in the object itself is dropped), and writing it leaves spec and generation alone.
    let mut object: DynamicObject = load(&example("example-etcd-cluster.yaml"));
    object.data["status"] = serde_json::json!({ "phase": "Running" });
    let stored = api.create(&PostParams::default(), &object).await.unwrap();
    let name = stored.name_any();
    assert_eq!(stored.data["spec"]["size"], 3);
    assert!(stored.data.get("status").is_none_or(|s| s.get("phase").is_none()), "status ignored on create: {stored:?}");
    let generation = stored.metadata.generation;
    let status = serde_json::json!({ "status": { "phase": "Creating", "readyMembers": 0, "size": 0 } });
    let patched = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(patched.data["status"]["phase"], "Creating", "{patched:?}");
    assert_eq!(patched.metadata.generation, generation, "a status write is no spec change");
    let spec = serde_json::json!({ "spec": { "size": 5 }, "status": { "phase": "Running" } });
    let resized = api.patch(&name, &PatchParams::default(), &Patch::Merge(&spec)).await.unwrap();
    assert_eq!(resized.data["spec"]["size"], 5);
    assert_eq!(resized.data["status"]["phase"], "Creating", "status is not written through the main resource");
    assert!(resized.metadata.generation > generation, "a spec change moves the generation");
    // The scale subresource reads spec.size and status.size.
    let scale = api.get_scale(&name).await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(5));
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    // spec.tls can be turned on and off for a running cluster, but its Secrets never changed for others.
    let tls: DynamicObject = load(&example("example-etcd-cluster-tls.yaml"));
    let stored = api.create(&PostParams::default(), &tls).await.unwrap();
    let name = stored.name_any();
    for (change, refusal) in [
        (serde_json::json!({ "spec": { "tls": { "peer": { "secretName": "other" } } } }), "spec.tls.peer cannot move"),
        (serde_json::json!({ "spec": { "tls": { "clusterDomain": "example.org" } } }), "clusterDomain cannot change"),
        (
            serde_json::json!({ "spec": { "tls": { "client": { "applicationSecretName": "other" } } } }),
            "spec.tls.client's secretName, operatorSecretName and applicationSecretName cannot change",
        ),
        (
            serde_json::json!({ "spec": { "tls": { "client": { "applicationSecretName": null } } } }),
            "applicationSecretName cannot change",
        ),
    ] {
        let error = api.patch(&name, &PatchParams::default(), &Patch::Merge(&change)).await.expect_err("refused");
        let kube::Error::Api(status) = error else { panic!("{change}: {error}") };
        assert!(status.message.contains(refusal), "{change}: {}", status.message);
    }
    let grow = serde_json::json!({ "spec": { "size": 5 } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&grow)).await.expect("other changes go through");
    let backup_secret = serde_json::json!({ "spec": { "tls": { "client": { "backupSecretName": "my-backup-tls" } } } });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&backup_secret))
        .await
        .expect("the backup sidecar's serving Secret may change");
    // Turned off: client TLS, then peer TLS, then spec.tls itself.
    for off in [
        serde_json::json!({ "spec": { "tls": { "client": null } } }),
        serde_json::json!({ "spec": { "tls": { "peer": null } } }),
        serde_json::json!({ "spec": { "tls": null } }),
    ] {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&off)).await.expect("TLS turned off");
    }
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let plain: DynamicObject = load(&example("example-etcd-cluster.yaml"));
    let stored = api.create(&PostParams::default(), &plain).await.unwrap();
    // Not on one member on an emptyDir (it would be replaced, with no one to keep the data).
    let small = serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1", "kind": "EtcdCluster",
        "metadata": { "name": "small" }, "spec": { "size": 1 },
    });
    api.create(&PostParams::default(), &serde_json::from_value(small).unwrap()).await.unwrap();
    let add = serde_json::json!({ "spec": { "tls": { "peer": {} } } });
    let error = api.patch("small", &PatchParams::default(), &Patch::Merge(&add)).await.expect_err("refused");
    assert!(error.to_string().contains("which needs three members"), "{error}");
    api.delete("small", &DeleteParams::default()).await.unwrap();
    // Nor off.
    let small_tls = serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1", "kind": "EtcdCluster",
        "metadata": { "name": "small-tls" }, "spec": { "size": 1, "tls": { "peer": {} } },
    });
    api.create(&PostParams::default(), &serde_json::from_value(small_tls).unwrap()).await.unwrap();
    let off = serde_json::json!({ "spec": { "tls": null } });
    let error = api.patch("small-tls", &PatchParams::default(), &Patch::Merge(&off)).await.expect_err("refused");
    assert!(error.to_string().contains("turning TLS on or off"), "{error}");
    api.delete("small-tls", &DeleteParams::default()).await.unwrap();
    // Turned on in two steps: peer TLS, then client TLS.
    for add in [
        serde_json::json!({ "spec": { "tls": { "peer": {} } } }),
        serde_json::json!({ "spec": { "tls": { "client": {} } } }),
    ] {
        api.patch(&stored.name_any(), &PatchParams::default(), &Patch::Merge(&add)).await.expect("TLS turned on");
    }
    api.delete(&stored.name_any(), &DeleteParams::default()).await.unwrap();
}
