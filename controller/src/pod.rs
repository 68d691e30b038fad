//! The member pod: one etcd process, `restartPolicy: Never`, an emptyDir data directory, reachable by a stable DNS
//! name through the headless service.

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EmptyDirVolumeSource, HTTPGetAction, Pod, PodAffinityTerm, PodAntiAffinity,
    PodSpec, Probe, TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use proto::cluster::EtcdCluster;

use crate::labels::{MEMBER_LABEL, client_url, cluster_labels, member_selector, owner, peer_url};

/// Where etcd keeps its data inside the pod.
pub const DATA_DIR: &str = "/var/lib/etcd";

/// How a member joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Join {
    /// The seed of a new cluster, with its unique token.
    New {
        /// `--initial-cluster-token`.
        token: String,
    },
    /// A member added to a running cluster (as a learner).
    Existing,
}

/// The pod of member `member` of `cluster`; `initial_cluster` names every member etcd lists at start, this one
/// included.
pub fn member_pod(cluster: &EtcdCluster, member: &str, initial_cluster: &[String], join: &Join) -> Pod {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let spec = &cluster.spec;
    let policy = &spec.pod;
    let mut labels = policy.labels.clone();
    labels.extend(cluster_labels(&name));
    labels.insert(MEMBER_LABEL.to_string(), member.to_string());

    let initial =
        initial_cluster.iter().map(|m| format!("{m}={}", peer_url(m, &name, &namespace))).collect::<Vec<_>>().join(",");
    let mut command = vec![
        "etcd".to_string(),
        format!("--name={member}"),
        format!("--data-dir={DATA_DIR}"),
        "--listen-client-urls=http://0.0.0.0:2379".to_string(),
        format!("--advertise-client-urls={}", client_url(member, &name, &namespace)),
        "--listen-peer-urls=http://0.0.0.0:2380".to_string(),
        format!("--initial-advertise-peer-urls={}", peer_url(member, &name, &namespace)),
        format!("--initial-cluster={initial}"),
    ];
    match join {
        Join::New { token } => {
            command.push("--initial-cluster-state=new".into());
            command.push(format!("--initial-cluster-token={token}"));
        }
        Join::Existing => command.push("--initial-cluster-state=existing".into()),
    }

    let container = Container {
        name: "etcd".into(),
        image: Some(format!("{}:v{}", spec.repository, spec.version)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(command),
        ports: Some(vec![
            ContainerPort { name: Some("client".into()), container_port: 2379, ..Default::default() },
            ContainerPort { name: Some("peer".into()), container_port: 2380, ..Default::default() },
        ]),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        }]),
        resources: policy.resources.clone(),
        // Ready when this member serves: `/health` needs quorum, which is right for taking traffic.
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/health".into()),
                port: IntOrString::Int(2379),
                ..Default::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        // Alive while the process listens. Never a quorum check: during an outage every member would fail it and
        // be killed, turning a recoverable quorum loss into the loss of every member.
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(2379), ..Default::default() }),
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        ..Default::default()
    };

    let affinity = policy.affinity.clone().or_else(|| {
        policy.anti_affinity.then(|| Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(member_selector(&name)),
                            ..Default::default()
                        }),
                        topology_key: "kubernetes.io/hostname".into(),
                        ..Default::default()
                    },
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    });

    Pod {
        metadata: ObjectMeta {
            name: Some(member.to_string()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: (!policy.annotations.is_empty()).then(|| policy.annotations.clone()),
            owner_references: Some(vec![owner(cluster)]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            hostname: Some(member.to_string()),
            subdomain: Some(name.clone()),
            restart_policy: Some("Never".into()),
            containers: vec![container],
            volumes: Some(vec![Volume {
                name: "data".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            }]),
            affinity,
            node_selector: (!policy.node_selector.is_empty()).then(|| policy.node_selector.clone()),
            tolerations: (!policy.tolerations.is_empty()).then(|| policy.tolerations.clone()),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cluster;

    fn command(pod: &Pod) -> Vec<String> {
        pod.spec.as_ref().unwrap().containers[0].command.clone().unwrap()
    }

    #[test]
    fn the_seed_starts_a_new_cluster_with_its_token() {
        let c = cluster("demo", 3);
        let pod = member_pod(&c, "demo-0000", &["demo-0000".into()], &Join::New { token: "tok-1".into() });
        let args = command(&pod);
        assert!(args.contains(&"--initial-cluster-state=new".into()));
        assert!(args.contains(&"--initial-cluster-token=tok-1".into()));
        assert!(args.contains(&"--initial-cluster=demo-0000=http://demo-0000.demo.ns.svc:2380".into()));
        assert!(args.contains(&"--advertise-client-urls=http://demo-0000.demo.ns.svc:2379".into()));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.hostname.as_deref(), Some("demo-0000"));
        assert_eq!(spec.subdomain.as_deref(), Some("demo"), "the headless service gives it its DNS name");
        assert!(spec.volumes.unwrap()[0].empty_dir.is_some());
        let container = &spec.containers[0];
        assert_eq!(container.image.as_deref(), Some("quay.io/coreos/etcd:v3.5.35"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    }

    #[test]
    fn a_joining_member_lists_every_member_and_joins_the_existing_cluster() {
        let c = cluster("demo", 3);
        let members = ["demo-0000".to_string(), "demo-0001".into(), "demo-0004".into()];
        let args = command(&member_pod(&c, "demo-0004", &members, &Join::Existing));
        assert!(args.contains(&"--initial-cluster-state=existing".into()));
        assert!(!args.iter().any(|a| a.starts_with("--initial-cluster-token")));
        let initial = args.iter().find(|a| a.starts_with("--initial-cluster=")).unwrap();
        assert_eq!(initial.matches("=http://").count(), 3, "{initial}");
    }

    #[test]
    fn liveness_never_depends_on_quorum_but_readiness_does() {
        let pod = member_pod(&cluster("demo", 1), "demo-0000", &["demo-0000".into()], &Join::Existing);
        let container = &pod.spec.unwrap().containers[0];
        let liveness = container.liveness_probe.as_ref().unwrap();
        assert!(liveness.tcp_socket.is_some() && liveness.http_get.is_none() && liveness.exec.is_none());
        let readiness = container.readiness_probe.as_ref().unwrap();
        assert_eq!(readiness.http_get.as_ref().unwrap().path.as_deref(), Some("/health"));
    }

    #[test]
    fn pods_carry_labels_owner_and_a_preferred_anti_affinity() {
        let mut c = cluster("demo", 3);
        c.spec.pod.labels.insert("team".into(), "storage".into());
        c.spec.pod.labels.insert(MEMBER_LABEL.into(), "spoofed".into());
        let pod = member_pod(&c, "demo-0002", &["demo-0002".into()], &Join::Existing);
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["team"], "storage");
        assert_eq!(labels[MEMBER_LABEL], "demo-0002", "the controller's labels win");
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.controller), ("EtcdCluster", "demo", Some(true)));
        let anti = pod.spec.unwrap().affinity.unwrap().pod_anti_affinity.unwrap();
        assert!(anti.required_during_scheduling_ignored_during_execution.is_none(), "a preference, not a rule");
        assert_eq!(anti.preferred_during_scheduling_ignored_during_execution.unwrap().len(), 1);

        c.spec.pod.anti_affinity = false;
        let pod = member_pod(&c, "demo-0002", &["demo-0002".into()], &Join::Existing);
        assert!(pod.spec.unwrap().affinity.is_none());
    }
}
