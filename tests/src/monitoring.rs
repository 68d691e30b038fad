//! What the shipped monitoring reads: the alert rules and the Grafana dashboard of the chart
//! (charts/kube-etcd-controller/files), and the controller metrics their expressions use.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every alerting rule of files/alerts.yaml.
pub fn alerts() -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(root().join("charts/kube-etcd-controller/files/alerts.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    rules["groups"].as_sequence().unwrap().iter().flat_map(|g| g["rules"].as_sequence().unwrap().clone()).collect()
}

/// Every query of files/dashboard.json: its panels' expressions, and the metric selector of each variable's
/// `label_values(...)`.
pub fn dashboard_queries() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("charts/kube-etcd-controller/files/dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query.trim_start_matches("label_values(").rsplit_once(',').unwrap().0;
            queries.push(inner.to_string());
        }
    }
    queries
}

/// The `etcd_controller_*` metric names in `expr` (a histogram's series as written: `_bucket`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("etcd_controller_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(expr[start..end].to_string());
        at = end;
    }
    names
}

/// Every controller metric the alerts and the dashboard use.
pub fn used_metric_names() -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for alert in alerts() {
        used.extend(metric_names(alert["expr"].as_str().unwrap()));
    }
    for query in dashboard_queries() {
        used.extend(metric_names(&query));
    }
    used
}

/// The metric names of a Prometheus text exposition (every sample's name).
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}
