//! The alerts (charts/kube-etcd-controller/files/alerts.yaml) and the dashboard (files/dashboard.json): promtool
//! (built from the Prometheus Go module: `PROMTOOL_BIN`, from scripts/install-deps.sh) checks the rules and runs
//! their unit tests (tests/alerts/alerts-test.yaml); every alert has a unit test and a runbook section; every
//! dashboard query parses; and every controller metric the alerts and the dashboard use is one the controller
//! exports (checked against its exposition with every kind of series present; e2e_deployed checks the same names
//! against a real scrape).

use std::collections::BTreeSet;
use std::process::Command;

use serde_yaml::Value;
use system_tests::monitoring::{alerts, dashboard_queries, exported_names, root, used_metric_names};

fn promtool(args: &[&str]) -> String {
    let program = std::env::var("PROMTOOL_BIN").expect("PROMTOOL_BIN: eval \"$(scripts/install-deps.sh)\"");
    let out = Command::new(program).args(args).current_dir(root()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn the_rules_check_and_every_alert_fires_in_its_unit_test() {
    let checked = promtool(&["check", "rules", "charts/kube-etcd-controller/files/alerts.yaml"]);
    assert!(checked.contains(&format!("SUCCESS: {} rules found", alerts().len())), "{checked}");
    promtool(&["test", "rules", "tests/alerts/alerts-test.yaml"]);
    // Every alert is tested firing (not only not firing).
    let text = std::fs::read_to_string(root().join("tests/alerts/alerts-test.yaml")).unwrap();
    let tests: Value = serde_yaml::from_str(&text).unwrap();
    let mut fired = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for check in test["alert_rule_test"].as_sequence().unwrap() {
            if check["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty()) {
                fired.insert(check["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let names: BTreeSet<String> = alerts().iter().map(|a| a["alert"].as_str().unwrap().to_string()).collect();
    let untested: Vec<_> = names.difference(&fired).collect();
    assert!(untested.is_empty(), "alerts no unit test sees firing: {untested:?}");
}

#[test]
fn every_alert_has_a_runbook_section_its_annotation_links_to() {
    let runbook = std::fs::read_to_string(root().join("docs/runbook.md")).unwrap();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(runbook.contains(&format!("\n## {name}\n")), "docs/runbook.md has no section `## {name}`");
        let url = alert["annotations"]["runbook_url"].as_str().unwrap_or_default();
        assert!(url.ends_with(&format!("docs/runbook.md#{}", name.to_lowercase())), "{name}: runbook_url {url}");
        for key in ["summary", "description"] {
            assert!(alert["annotations"][key].as_str().is_some_and(|s| !s.is_empty()), "{name} has a {key}");
        }
        let severity = alert["labels"]["severity"].as_str().unwrap_or_default();
        assert!(["warning", "critical"].contains(&severity), "{name}: severity {severity}");
    }
}

#[test]
fn every_dashboard_query_parses() {
    // promtool parses PromQL in rules files: each query becomes a recording rule of a scratch file.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        // Grafana's variables as a value they can take.
        let query = query.replace("$namespace", ".*").replace("$cluster", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&query).unwrap()
        ));
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, rules).unwrap();
    promtool(&["check", "rules", file.to_str().unwrap()]);
}

#[test]
fn every_controller_metric_the_alerts_and_dashboard_use_is_exported() {
    use controller::metrics::{BackupView, ClusterView, Metrics};
    let metrics = Metrics::new(&controller::build::BuildInfo::current());
    let view = |leader| ClusterView {
        desired_members: 3,
        etcd_reachable: true,
        observed_at: 1,
        members: 3,
        healthy_voters: 3,
        ready_members: 3,
        leader: Some(leader),
        db_size: [("demo-0000".to_string(), 1)].into(),
        quota_bytes: 2,
        nospace: false,
        phase: "Running".into(),
        conditions: vec![("Ready".into(), "True".into())],
        upgrading: true,
        upgrade_started: Some(1),
        recovering: false,
        waiting_for_person: false,
        backup: Some(BackupView {
            last_success: Some(1),
            consecutive_failures: 0,
            interval_seconds: Some(60),
            reachable: true,
        }),
        certificates: vec![("peer".into(), "demo-tls-peer".into(), 1)],
    };
    metrics.observe_cluster("ns", "demo", view(1));
    metrics.observe_cluster("ns", "demo", view(2));
    metrics.reconcile_failed("Example");
    metrics.reconcile_started().finish(true);
    let exposition = metrics.encode();
    let exported = exported_names(&exposition);
    let used = used_metric_names();
    assert!(used.len() > 15, "{used:?}");
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "used but not exported: {missing:?}\n{exposition}");
}
