//! The controller as it ships: the RBAC of `example/etcd-controller.yaml`, installed from that file, and clients
//! and kubeconfigs that act as its ServiceAccount, so that every controller the suites run has exactly the
//! permissions a user's install grants, never the test bed's admin credentials.

use std::io::Write;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_yaml::Value;

use super::{TESTBED_API, eventually, example, kubectl_with_input};

/// The controller's own namespace in the shipped manifest: its ServiceAccount, and the only place the shipped
/// RBAC lets it hold a Lease.
pub const NAMESPACE: &str = "etcd-controller";
/// The shipped ServiceAccount.
pub const SERVICE_ACCOUNT: &str = "etcd-controller";

/// The user name a pod running as the shipped ServiceAccount authenticates as.
pub fn user() -> String {
    user_in(NAMESPACE)
}

/// The groups the API server gives every token of that ServiceAccount.
pub fn groups() -> Vec<String> {
    groups_in(NAMESPACE)
}

/// The user name of the controller's ServiceAccount installed in `namespace`.
fn user_in(namespace: &str) -> String {
    format!("system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}")
}

fn groups_in(namespace: &str) -> Vec<String> {
    vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}"), "system:authenticated".into()]
}

/// The kinds of a manifest that make the controller's identity and permissions.
const RBAC_KINDS: [&str; 5] = ["ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"];

/// Applies the RBAC of `example/etcd-controller-namespaced.yaml` (every document but its Deployment, read from
/// the file, its namespace `etcd` replaced by `namespace`, which must exist), waits until the API server grants
/// it, and returns a client that acts as that install's ServiceAccount.
pub async fn install_namespaced_rbac(namespace: &str) -> kube::Client {
    let path = example("etcd-controller-namespaced.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let documents: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|document| RBAC_KINDS.iter().any(|kind| document["kind"] == *kind))
        .map(|mut document| {
            if document["metadata"]["namespace"] == "etcd" {
                document["metadata"]["namespace"] = namespace.into();
            }
            if document["kind"] == "ClusterRoleBinding" {
                document["metadata"]["name"] = format!("etcd-controller-nodes-{namespace}").into();
            }
            for subject in document["subjects"].as_sequence_mut().into_iter().flatten() {
                subject["namespace"] = namespace.into();
            }
            document
        })
        .collect();
    apply_and_wait(&documents, namespace).await;
    as_account(namespace).await
}

/// The Lease (in `NAMESPACE`) that the suites' controllers watching `namespace` elect their leader with: one per
/// test namespace, so that no suite waits on another's leader.
pub fn lease_name(namespace: &str) -> String {
    format!("kec-{namespace}")
}

/// Every document of `example/etcd-controller.yaml`, read from the file itself.
fn shipped_documents() -> Vec<Value> {
    let path = example("etcd-controller.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|document| !document.is_null())
        .collect()
}

/// Applies (`kubectl apply`, idempotent) the namespace, the ServiceAccount, and every role and binding of
/// `example/etcd-controller.yaml` (not its Deployment, budget or Service). Waits first until a namespace left terminating
/// (e2e_deployed deletes the whole manifest when it ends) is gone, and after until the API server grants every
/// bound rule to the ServiceAccount, so a controller started next is never refused for a binding not yet seen.
pub async fn install_rbac(client: &kube::Client) {
    let documents: Vec<Value> = shipped_documents()
        .into_iter()
        .filter(|d| d["kind"] == "Namespace" || RBAC_KINDS.iter().any(|kind| d["kind"] == *kind))
        .collect();
    let account = documents.iter().find(|d| d["kind"] == "ServiceAccount").expect("the manifest's ServiceAccount");
    let named = (account["metadata"]["namespace"].as_str(), account["metadata"]["name"].as_str());
    assert_eq!(named, (Some(NAMESPACE), Some(SERVICE_ACCOUNT)), "the shipped ServiceAccount the suites act as");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the controller's namespace to finish terminating", Duration::from_secs(180), || {
        let namespaces = namespaces.clone();
        async move {
            let found = namespaces.get_opt(NAMESPACE).await.unwrap();
            found.is_none_or(|ns| ns.metadata.deletion_timestamp.is_none()).then_some(())
        }
    })
    .await;
    apply_and_wait(&documents, NAMESPACE).await;
}

/// Applies `documents` (`kubectl apply`, idempotent) and waits until what they bind to the controller's
/// ServiceAccount in `account_namespace` is granted.
async fn apply_and_wait(documents: &[Value], account_namespace: &str) {
    let mut manifest = String::new();
    for document in documents {
        manifest.push_str("---\n");
        manifest.push_str(&serde_yaml::to_string(document).unwrap());
    }
    kubectl_with_input(&["apply", "-f", "-"], &manifest);
    granted_to(documents, account_namespace).await;
}

/// Waits until the API server allows the ServiceAccount every verb on every resource of every role the manifest
/// binds to it, where it binds it (a RoleBinding in its namespace, a ClusterRoleBinding everywhere).
async fn granted_to(documents: &[Value], account_namespace: &str) {
    let mut pending = Vec::new();
    for binding in documents.iter().filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding") {
        let binds_account = binding["subjects"].as_sequence().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount" && s["name"] == SERVICE_ACCOUNT && s["namespace"] == account_namespace
        });
        if !binds_account {
            continue;
        }
        let namespace = binding["metadata"]["namespace"].as_str();
        let role = documents
            .iter()
            .find(|d| {
                d["kind"] == binding["roleRef"]["kind"]
                    && d["metadata"]["name"] == binding["roleRef"]["name"]
                    && (d["kind"] == "ClusterRole" || d["metadata"]["namespace"].as_str() == namespace)
            })
            .unwrap_or_else(|| panic!("the manifest holds the role that {:?} binds", binding["metadata"]["name"]));
        for rule in role["rules"].as_sequence().into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        let (resource, subresource) = match resource.split_once('/') {
                            Some((resource, sub)) => (resource.to_string(), Some(sub.to_string())),
                            None => (resource.to_string(), None),
                        };
                        pending.push(ResourceAttributes {
                            group: Some(group.to_string()),
                            resource: Some(resource),
                            subresource,
                            verb: Some(verb.to_string()),
                            namespace: namespace.map(String::from),
                            ..Default::default()
                        });
                    }
                }
            }
        }
    }
    assert!(!pending.is_empty(), "example/etcd-controller.yaml grants its ServiceAccount nothing");

    // Asked as the ServiceAccount itself: this also proves the impersonation works.
    let reviews: Api<SelfSubjectAccessReview> = Api::all(as_account(account_namespace).await);
    let limit = Duration::from_secs(60);
    let start = Instant::now();
    loop {
        let mut refused = Vec::new();
        for attributes in pending {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(attributes.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = reviews.create(&PostParams::default(), &review).await.unwrap();
            if !answer.status.is_some_and(|s| s.allowed) {
                refused.push(attributes);
            }
        }
        if refused.is_empty() {
            return;
        }
        assert!(start.elapsed() < limit, "the shipped RBAC not in effect within {limit:?}; refused: {refused:?}");
        pending = refused;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn strings(list: &Value) -> impl Iterator<Item = &str> {
    list.as_sequence().into_iter().flatten().filter_map(Value::as_str)
}

/// A client of the test bed that acts as the shipped ServiceAccount (impersonation by the test bed's admin): what
/// the in-process controllers run with.
pub async fn as_controller() -> kube::Client {
    as_account(NAMESPACE).await
}

/// A client that acts as the controller's ServiceAccount installed in `namespace`.
pub async fn as_account(namespace: &str) -> kube::Client {
    let mut config = kube::Config::infer().await.expect("reading KUBECONFIG");
    let url = config.cluster_url.to_string();
    assert_eq!(url.trim_end_matches('/'), TESTBED_API, "KUBECONFIG is not the test bed's API server");
    config.auth_info.impersonate = Some(user_in(namespace));
    config.auth_info.impersonate_groups = Some(groups_in(namespace));
    kube::Client::try_from(config).unwrap()
}

/// A copy of `$KUBECONFIG` in which every user acts as the shipped ServiceAccount (`as`, `as-groups`): what the
/// release binary runs with. Removed when dropped. The test bed's kubeconfig embeds its certificates
/// (tests/e2e/up.sh), so the copy works from any directory.
pub fn controller_kubeconfig() -> tempfile::NamedTempFile {
    let path = std::env::var("KUBECONFIG").expect("KUBECONFIG must point at the test bed");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut config: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let users = config["users"].as_sequence_mut().unwrap_or_else(|| panic!("{path} has no users"));
    for entry in users {
        entry["user"]["as"] = user().into();
        entry["user"]["as-groups"] = groups().into_iter().map(Value::from).collect::<Vec<_>>().into();
    }
    let mut file = tempfile::Builder::new().prefix("kec-e2e-controller-").suffix(".kubeconfig").tempfile().unwrap();
    file.write_all(serde_yaml::to_string(&config).unwrap().as_bytes()).unwrap();
    file.flush().unwrap();
    file
}
