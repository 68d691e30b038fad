//! The Helm chart (charts/kube-etcd-controller), the one source of the install: `helm lint`, what it renders with
//! its defaults and with every option, and the plain manifests of example/ rendered from it (stale ones fail).
//! Needs `HELM_BIN` (scripts/install-deps.sh builds Helm from its Go module and prints it).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    root().join("charts/kube-etcd-controller")
}

fn helm() -> String {
    std::env::var("HELM_BIN").expect("HELM_BIN: eval \"$(scripts/install-deps.sh)\" (it builds Helm)")
}

/// `helm template` of the chart in namespace `ns` with `sets`: its output, or its error.
fn template(ns: &str, sets: &[&str]) -> Result<Vec<Value>, String> {
    let mut command = Command::new(helm());
    command.args(["template", "etcd-controller"]).arg(chart()).args(["--namespace", ns]);
    for set in sets {
        command.args(["--set", set]);
    }
    let out = command.output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    Ok(serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|d| !d.is_null())
        .collect())
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found = of_kind(documents, kind);
    assert_eq!(found.len(), 1, "one {kind} in {documents:?}");
    found[0]
}

fn kinds(documents: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = documents.iter().map(|d| d["kind"].as_str().unwrap().to_string()).collect();
    kinds.sort();
    kinds
}

#[test]
fn the_chart_lints_clean() {
    let out = Command::new(helm()).args(["lint", "--strict"]).arg(chart()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm lint --strict:\n{text}");
    assert!(!text.contains("[WARNING]") && !text.contains("[ERROR]"), "{text}");
}

#[test]
fn the_plain_manifests_are_the_charts_rendering() {
    let out = Command::new(root().join("scripts/render-manifests.sh")).arg("--check").output().unwrap();
    assert!(
        out.status.success(),
        "example/ differs from the chart: run scripts/render-manifests.sh\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_is_this_release_and_ships_the_crd_as_the_controller_prints_it() {
    let meta: Value = serde_yaml::from_str(&std::fs::read_to_string(chart().join("Chart.yaml")).unwrap()).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(meta["version"], version, "Chart.yaml version is the workspace's");
    assert_eq!(meta["appVersion"], version, "Chart.yaml appVersion is the workspace's");
    let shipped = std::fs::read_to_string(chart().join("files/etcd-crd.yaml")).unwrap();
    // example/etcd-crd.yaml is held to `etcd-controller crd` by controller/src/crd.rs.
    let example = std::fs::read_to_string(root().join("example/etcd-crd.yaml")).unwrap();
    assert!(
        shipped == example,
        "charts/kube-etcd-controller/files/etcd-crd.yaml is stale: run scripts/render-manifests.sh"
    );
}

#[test]
fn by_default_two_replicas_spread_over_nodes_with_a_budget_the_crd_kept_on_uninstall() {
    let documents = template("etcd-controller", &[]).unwrap();
    let mut expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    .map(String::from)
    .to_vec();
    expected.sort();
    assert_eq!(kinds(&documents), expected, "nothing optional by default");
    let crd = one(&documents, "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "uninstall keeps every cluster");
    assert_eq!(crd["metadata"]["name"], "etcdclusters.kube-etcd-controller.dev");
    let deployment = one(&documents, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["topologySpreadConstraints"][0]["topologyKey"], "kubernetes.io/hostname");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], format!("kube-etcd-controller/etcd-controller:{}", env!("CARGO_PKG_VERSION")));
    let env: Vec<&str> = container["env"].as_sequence().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(!env.contains(&"WATCH_NAMESPACE"), "every namespace: {env:?}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(one(&documents, "PodDisruptionBudget")["spec"]["maxUnavailable"], 1);

    // The budget and the Service select this release's controller pods only (never a member, whose pods are
    // `app.kubernetes.io/name: etcd`), and a release named as the pods the controller makes is refused.
    let budget = &one(&documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"];
    assert_eq!(budget["app.kubernetes.io/part-of"], "kube-etcd-controller");
    assert_eq!(one(&documents, "Service")["spec"]["selector"], *budget);
    for name in ["etcd", "etcd-backup-sidecar"] {
        let refused = template("etcd-controller", &[&format!("fullnameOverride={name}")]).unwrap_err();
        assert!(refused.contains("cannot be named"), "{refused}");
    }

    let single = template("etcd-controller", &["replicas=1", "crds.install=false"]).unwrap();
    assert!(of_kind(&single, "PodDisruptionBudget").is_empty(), "no budget for one replica: it would block drains");
    assert!(of_kind(&single, "CustomResourceDefinition").is_empty());
}

#[test]
fn the_namespaced_scope_watches_its_namespace_and_reads_only_nodes_and_storage_classes_cluster_wide() {
    let documents = template("team-a", &["scope=namespace"]).unwrap();
    let deployment = one(&documents, "Deployment");
    let env = serde_yaml::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["env"]).unwrap();
    assert!(env.contains("WATCH_NAMESPACE"), "{env}");
    let cluster_role = one(&documents, "ClusterRole");
    let resources: Vec<&str> = cluster_role["rules"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|r| r["resources"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()))
        .collect();
    assert_eq!(resources, ["nodes", "storageclasses"]);
    assert_eq!(cluster_role["metadata"]["name"], "etcd-controller-team-a-nodes", "one per namespace installed");
    assert_eq!(one(&documents, "Role")["metadata"]["namespace"], "team-a");

    let refused = template("team-a", &["scope=everything"]).unwrap_err();
    assert!(refused.contains("scope must be \"cluster\" or \"namespace\""), "{refused}");
}

#[test]
fn the_monitoring_options_ship_the_alerts_the_dashboard_and_the_monitors() {
    let sets = [
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.podMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
        "monitoring.dashboard.enabled=true",
        "networkPolicy.enabled=true",
    ];
    let documents = template("etcd-controller", &sets).unwrap();
    let rule = one(&documents, "PrometheusRule");
    let alerts: Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart().join("files/alerts.yaml")).unwrap()).unwrap();
    assert_eq!(rule["spec"]["groups"], alerts["groups"], "the PrometheusRule holds files/alerts.yaml");
    let dashboard = one(&documents, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1", "Grafana's sidecar loads it");
    let json = dashboard["data"]["kube-etcd-controller.json"].as_str().unwrap();
    let shipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("files/dashboard.json")).unwrap()).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(json).unwrap(), shipped);
    let pod_monitor = one(&documents, "PodMonitor");
    assert_eq!(pod_monitor["spec"]["podMetricsEndpoints"][0]["port"], "metrics", "etcd's own metrics listener");
    assert_eq!(pod_monitor["spec"]["namespaceSelector"]["any"], true);
    let service_monitor = one(&documents, "ServiceMonitor");
    assert_eq!(service_monitor["spec"]["endpoints"][0]["port"], "metrics");
    // The series' own namespace label (the cluster's) is kept, not replaced by the controller pod's.
    assert_eq!(service_monitor["spec"]["endpoints"][0]["honorLabels"], true);
    let service = one(&documents, "Service");
    let selected = &service_monitor["spec"]["selector"]["matchLabels"];
    for (key, value) in selected.as_mapping().unwrap() {
        assert_eq!(&service["metadata"]["labels"][key], value, "the ServiceMonitor selects the metrics Service");
    }
    let policy = one(&documents, "NetworkPolicy");
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 8080, "the metrics port only");

    let namespaced = template("team-a", &["scope=namespace", "monitoring.podMonitor.enabled=true"]).unwrap();
    let selector = &one(&namespaced, "PodMonitor")["spec"]["namespaceSelector"];
    assert_eq!(selector["matchNames"][0], "team-a", "a namespaced install scrapes its own namespace");
}
