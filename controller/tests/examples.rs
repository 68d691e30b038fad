//! The manifests in `example/`: the valid ones pass the CRD's schema and CEL rules, every invalid one is refused
//! with the message a person needs. (The end-to-end suite sends the same files to a real API server.)

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use proto::cluster::{BackupPolicy, BackupStorage, ClientTls, EtcdCluster, RestoreSource, TlsPolicy};
use serde_json::Value;

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../example")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Why the API server would refuse `doc`, or `None` when it would take it: the CRD's structural schema
/// (types, ranges, patterns, required fields) and its CEL rules.
fn refusal(doc: &Value) -> Option<String> {
    let crd = serde_json::to_value(EtcdCluster::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    if !errors.is_empty() {
        return Some(errors.join("; "));
    }
    if let Err(e) = proto::cluster::EtcdClusterSpec::validate_cel(&doc["spec"], None) {
        return Some(format!("{e:?}"));
    }
    if let Some(backup) = doc["spec"].get("backup") {
        if let Err(e) = BackupPolicy::validate_cel(backup, None) {
            return Some(format!("{e:?}"));
        }
        if let Err(e) = BackupStorage::validate_cel(&backup["storage"], None) {
            return Some(format!("{e:?}"));
        }
    }
    if let Some(restore) = doc["spec"].get("restore") {
        if let Err(e) = RestoreSource::validate_cel(restore, None) {
            return Some(format!("{e:?}"));
        }
        if let Some(storage) = restore.get("storage")
            && let Err(e) = BackupStorage::validate_cel(storage, None)
        {
            return Some(format!("{e:?}"));
        }
    }
    if let Some(tls) = doc["spec"].get("tls") {
        if let Err(e) = TlsPolicy::validate_cel(tls, None) {
            return Some(format!("{e:?}"));
        }
        if let Some(client) = tls.get("client")
            && let Err(e) = ClientTls::validate_cel(client, None)
        {
            return Some(format!("{e:?}"));
        }
    }
    if let Err(e) = serde_json::from_value::<EtcdCluster>(doc.clone()) {
        return Some(e.to_string());
    }
    None
}

#[test]
fn the_examples_are_valid() {
    for name in [
        "example-etcd-cluster.yaml",
        "example-etcd-cluster-backup.yaml",
        "example-etcd-cluster-s3.yaml",
        "example-etcd-cluster-restore.yaml",
        "example-etcd-cluster-restore-s3.yaml",
        "example-etcd-cluster-tls.yaml",
    ] {
        let doc = load(&example_dir().join(name));
        assert_eq!(refusal(&doc), None, "{name}");
    }
}

#[test]
fn every_invalid_example_is_refused_with_a_useful_message() {
    let expected = [
        ("size-zero.yaml", "less than the minimum"),
        ("size-ten.yaml", "greater than the maximum"),
        ("bad-version.yaml", "does not match"),
        ("backup-two-schedules.yaml", "at most one of backup.every and backup.cron"),
        ("backup-two-storages.yaml", "exactly one of pvc and s3"),
        ("backup-no-storage.yaml", "exactly one of pvc and s3"),
        ("missing-size.yaml", "\"size\" is a required property"),
        ("restore-two-sources.yaml", "restore needs exactly one of cluster, url and storage"),
        ("recovery-bad-policy.yaml", "is not one of"),
        ("quota-too-large.yaml", "greater than the maximum"),
        ("recovery-bad-max-backup-age.yaml", "does not match"),
        ("backup-cron-minute-61.yaml", "does not match"),
        ("backup-every-zero.yaml", "does not match"),
        ("bad-repository.yaml", "does not match"),
        ("bad-quantity.yaml", "does not match"),
        ("tls-short-duration.yaml", "certificateDuration must be at least 10m"),
        ("tls-server-without-operator.yaml", "set secretName and operatorSecretName together"),
        ("tls-own-secrets-backup-without-its-certificate.yaml", "name the backup sidecar's serving certificate too"),
    ];
    let dir = example_dir().join("invalid");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(on_disk, expected.len(), "every file in example/invalid has an expectation here");
    for (file, message) in expected {
        let doc = load(&dir.join(file));
        let why = refusal(&doc).unwrap_or_else(|| panic!("{file} was accepted"));
        assert!(why.contains(message), "{file}: {why}");
    }
}
