//! `kubectl etcd status`: the cluster as its status says (phase, versions, conditions, what the controller does),
//! each member as its own etcd says (health, leader, version, database size: read from the member's plain metrics
//! listener, the pod's port named `metrics`, through a port-forward), and its last backup.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use proto::cluster::EtcdCluster;

use crate::forward::Forward;

/// What a member's etcd says of itself in its metrics.
#[derive(Debug, Default, PartialEq)]
pub struct MemberMetrics {
    /// `etcd_server_has_leader`: it knows a leader (it is healthy as far as a member can tell alone).
    pub has_leader: Option<bool>,
    /// `etcd_server_is_leader`.
    pub is_leader: Option<bool>,
    /// `etcd_server_is_learner`.
    pub is_learner: Option<bool>,
    /// `etcd_server_version{server_version}`.
    pub version: Option<String>,
    /// `etcd_mvcc_db_total_size_in_bytes`.
    pub db_size: Option<u64>,
}

impl MemberMetrics {
    /// Reads them from a Prometheus text exposition of etcd.
    pub fn parse(text: &str) -> Self {
        let mut found = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else { continue };
            let flag = || value.parse::<f64>().ok().map(|v| v >= 1.0);
            match series {
                "etcd_server_has_leader" => found.has_leader = flag(),
                "etcd_server_is_leader" => found.is_leader = flag(),
                "etcd_server_is_learner" => found.is_learner = flag(),
                "etcd_mvcc_db_total_size_in_bytes" => found.db_size = value.parse::<f64>().ok().map(|v| v as u64),
                _ => {
                    if let Some(labels) = series.strip_prefix("etcd_server_version{") {
                        found.version = labels
                            .split(',')
                            .find_map(|l| l.strip_prefix("server_version=\""))
                            .map(|v| v.trim_end_matches(['"', '}']).to_string());
                    }
                }
            }
        }
        found
    }
}

/// The port a member pod serves its metrics on without a client certificate: the one named `metrics`, else (a
/// plain member created before every member had one) its client port, when that is plain.
pub fn metrics_port(pod: &Pod) -> Option<u16> {
    let etcd = pod.spec.as_ref()?.containers.iter().find(|c| c.name == "etcd")?;
    let named = etcd.ports.iter().flatten().find(|p| p.name.as_deref() == Some("metrics"));
    if let Some(port) = named {
        return u16::try_from(port.container_port).ok();
    }
    let plain = !etcd.command.iter().flatten().any(|a| a == "--client-cert-auth");
    plain.then_some(2379)
}

async fn scrape(pods: &Api<Pod>, pod: &Pod) -> anyhow::Result<MemberMetrics> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let port = metrics_port(pod).with_context(|| format!("{name} has no plain metrics port"))?;
    let forward = Forward::start(pods.clone(), &name, port).await?;
    let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(15)).build()?;
    let text = http.get(format!("http://{}/metrics", forward.local)).send().await?.error_for_status()?.text().await?;
    Ok(MemberMetrics::parse(&text))
}

/// Rows as aligned columns, the first row a header.
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..width).map(|i| rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints the status of `cluster`.
pub async fn status(client: &kube::Client, cluster: &EtcdCluster) -> anyhow::Result<()> {
    let name = cluster.metadata.name.clone().unwrap_or_default();
    let namespace = cluster.metadata.namespace.clone().unwrap_or_default();
    let status = cluster.status.clone().unwrap_or_default();
    let condition = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
    println!("Cluster:     {namespace}/{name}");
    println!("Phase:       {:?}", status.phase);
    println!(
        "Version:     {} (spec {}; cluster version {})",
        status.current_version.as_deref().unwrap_or("-"),
        cluster.spec.version,
        status.cluster_version.as_deref().unwrap_or("-")
    );
    println!("Members:     {} of {} Ready", status.ready_members, cluster.spec.size);
    let ready = condition("Ready").map_or("Unknown".into(), |c| format!("{} ({})", c.status, c.reason));
    println!("Ready:       {ready}");
    // What the controller is doing and why: Progressing while it works, Degraded when something is wrong.
    let doing = match (condition("Progressing"), condition("Degraded")) {
        (_, Some(d)) if d.status == "True" => format!("{}: {}", d.reason, d.message),
        (Some(p), _) if p.status == "True" => format!("{}: {}", p.reason, p.message),
        _ => "nothing: the cluster is as its spec asks".into(),
    };
    println!("Controller:  {doing}");
    if cluster.spec.paused {
        println!("Paused:      true (spec.paused: the controller changes nothing)");
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut members: Vec<String> = status.members.ready.iter().chain(&status.members.unready).cloned().collect();
    members.sort();
    let mut rows =
        vec![["MEMBER", "POD", "HEALTH", "LEADER", "VERSION", "DB SIZE", "PEER URL"].map(String::from).to_vec()];
    for member in &members {
        let pod = pods.get_opt(member).await.with_context(|| format!("reading pod {namespace}/{member}"))?;
        let pod_state = match &pod {
            None => "missing".to_string(),
            Some(_) if status.members.ready.contains(member) => "Ready".into(),
            Some(_) => "not Ready".into(),
        };
        let seen = match &pod {
            Some(pod) => scrape(&pods, pod).await.map_err(|e| format!("{e:#}")),
            None => Err("no pod".into()),
        };
        let (health, leader, version, size) = match &seen {
            Ok(m) => (
                match (m.has_leader, m.is_learner) {
                    (_, Some(true)) => "learner".to_string(),
                    (Some(true), _) => "healthy".into(),
                    (Some(false), _) => "no leader".into(),
                    (None, _) => "?".into(),
                },
                if m.is_leader == Some(true) { "*".to_string() } else { String::new() },
                m.version.clone().unwrap_or_else(|| "?".into()),
                m.db_size.map_or("?".into(), crate::sidecar::bytes),
            ),
            Err(_) => ("unreachable".into(), String::new(), "?".into(), "?".into()),
        };
        rows.push(vec![
            member.clone(),
            pod_state,
            health,
            leader,
            version,
            size,
            status.peer_urls.get(member).cloned().unwrap_or_default(),
        ]);
        if let Err(error) = seen {
            eprintln!("warning: {member}'s metrics could not be read: {error}");
        }
    }
    println!();
    print!("{}", columns(&rows));

    println!();
    let mut conditions = vec![["CONDITION", "STATUS", "REASON", "MESSAGE"].map(String::from).to_vec()];
    for c in &status.conditions {
        conditions.push(vec![c.type_.clone(), c.status.clone(), c.reason.clone(), c.message.clone()]);
    }
    print!("{}", columns(&conditions));

    if cluster.spec.backup.is_some() {
        println!();
        match crate::sidecar::Sidecar::reach(client, cluster).await {
            Ok(sidecar) => match sidecar.list().await {
                Ok(list) => match list.backups.first() {
                    Some(last) => println!(
                        "Last backup: {} ({} ago, revision {}, {})",
                        last.name,
                        crate::sidecar::age(Utc::now() - last.finished_at),
                        last.revision,
                        crate::sidecar::bytes(last.compressed_size)
                    ),
                    None => println!("Last backup: none yet"),
                },
                Err(error) => println!("Last backup: unknown ({error:#})"),
            },
            Err(error) => println!("Last backup: unknown ({error:#})"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_metrics_say_its_health_leadership_version_and_size() {
        let text = "# HELP etcd_server_has_leader Whether or not a leader exists.\n\
                    etcd_server_has_leader 1\n\
                    etcd_server_is_leader 0\n\
                    etcd_server_is_learner 0\n\
                    etcd_server_version{server_version=\"3.5.35\"} 1\n\
                    etcd_mvcc_db_total_size_in_bytes 2.097152e+06\n\
                    etcd_mvcc_db_total_size_in_use_in_bytes 1.2e+06\n";
        let parsed = MemberMetrics::parse(text);
        assert_eq!(
            parsed,
            MemberMetrics {
                has_leader: Some(true),
                is_leader: Some(false),
                is_learner: Some(false),
                version: Some("3.5.35".into()),
                db_size: Some(2_097_152),
            }
        );
        assert_eq!(MemberMetrics::parse("etcd_server_has_leader 0\n").has_leader, Some(false));
        assert_eq!(MemberMetrics::parse(""), MemberMetrics::default(), "nothing known, nothing made up");
    }

    #[test]
    fn metrics_are_read_on_the_port_named_metrics_or_a_plain_client_port() {
        let pod = |ports: serde_json::Value, command: &[&str]| -> Pod {
            serde_json::from_value(serde_json::json!({
                "spec": { "containers": [{ "name": "etcd", "ports": ports, "command": command }] }
            }))
            .unwrap()
        };
        let named = serde_json::json!([{ "name": "client", "containerPort": 2379 }, { "name": "metrics", "containerPort": 2381 }]);
        assert_eq!(metrics_port(&pod(named, &["etcd"])), Some(2381));
        let client_only = serde_json::json!([{ "name": "client", "containerPort": 2379 }]);
        assert_eq!(metrics_port(&pod(client_only.clone(), &["etcd"])), Some(2379), "an earlier plain member");
        assert_eq!(metrics_port(&pod(client_only, &["etcd", "--client-cert-auth"])), None, "TLS needs a certificate");
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![vec!["A".to_string(), "BB".into()], vec!["long".into(), "x".into()]];
        assert_eq!(columns(&rows), "A      BB\nlong   x\n");
    }
}
