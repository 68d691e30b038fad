//! End-to-end on the three-node test bed: node faults, made with tests/e2e/fault.sh, against one three-member
//! cluster on node-pinned volumes (`spec.storage`, the local-path provisioner) with backups and automatic recovery (a controller that wrongly took a fault for a lost quorum would
//! restore that backup and lose what was written since). In order:
//! 1. the members sit on three different nodes (and zones);
//! 2. two nodes, the majority, partitioned from the API server and from the third node but not from each other:
//!    they keep serving a writer on their side, the controller deletes nothing (status says members sit on
//!    NotReady nodes), and after healing the cluster is the same pods with every write;
//! 3. every node powered off and on again: nothing is deleted while they are down, and the members come back on
//!    their own data, without a restore;
//! 4. one node partitioned from everything (a minority): the majority serves a writer through the client Service,
//!    the cut-off member is replaced, no recovery runs, no acknowledged write is lost, and after healing the old
//!    member is gone for good;
//! 5. the node of one member powered off under a writer, and that member's pod deleted (so it sits Terminating,
//!    with no kubelet to confirm): the member is replaced on another node once the node is NotReady, the pod is
//!    force-deleted, and no acknowledged write is lost (the time from power-off to three healthy members is
//!    printed);
//! 6. grown to five members, more than the nodes: they still schedule, spread 2, 2, 1;
//! 7. the controller's own node powered off: of two controllers (the release binary) on two nodes, the standby
//!    takes over within the lease time and replaces the member that went with the leader's node.
//!
//! The controller runs in-process (its library's `run`) on this machine, outside the nodes, until step 7.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use support::{
    ControllerProcess, NodeFault, Writer, clusters, converged, converged_now, count_keys, eventually, fresh_namespace,
    host_dir, install_crd, local_volume, lost_writes, node_of, testbed,
};

const NS: &str = "e2e-nodes";
const CLUSTER: &str = "nodes";
const MEMBERS: &str = "kube-etcd-controller.dev/cluster=nodes,kube-etcd-controller.dev/member";
/// The node-monitor grace period the test bed's controller-manager runs with (tests/e2e/up.sh).
const NODE_MONITOR_GRACE: Duration = Duration::from_secs(16);
/// How long the test bed's API server lets a pod tolerate a NotReady or unreachable node by default
/// (`--default-not-ready-toleration-seconds`, `--default-unreachable-toleration-seconds` in tests/e2e/up.sh; 300 s
/// in a stock cluster), after which the taint manager evicts it.
const EVICTION_AFTER: Duration = Duration::from_secs(30);
/// The pause image every test-bed node holds (tests/e2e/images.sh).
const PAUSE_IMAGE: &str = "kec.local/pause:3.10";

async fn status(api: &Api<DynamicObject>) -> serde_json::Value {
    api.get(CLUSTER).await.unwrap().data["status"].clone()
}

fn condition(status: &serde_json::Value, kind: &str) -> Option<serde_json::Value> {
    status["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
}

/// Member pods by name: (UID, node).
async fn placement(pods: &Api<Pod>) -> BTreeMap<String, (String, String)> {
    let listed = pods.list(&ListParams::default().labels(MEMBERS)).await.unwrap().items;
    listed
        .into_iter()
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
            (p.metadata.name.unwrap(), (p.metadata.uid.unwrap(), node))
        })
        .collect()
}

/// The node names whose Ready condition is True.
async fn ready_nodes(client: &Client) -> BTreeSet<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|n| n.metadata.name.unwrap())
        .collect()
}

/// Waits until every node is Ready and carries none of the node lifecycle controller's taints
/// (`node.kubernetes.io/...`: a node just back keeps its unreachable taint for a moment, and the spread leaves a
/// tainted node out).
async fn all_nodes_schedulable(client: &Client) {
    eventually("every node Ready and untainted", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let nodes: Api<Node> = Api::all(client.clone());
            let listed = nodes.list(&ListParams::default()).await.unwrap().items;
            let tainted = listed.iter().any(|n| {
                let taints = n.spec.as_ref().and_then(|s| s.taints.as_ref());
                taints.is_some_and(|t| t.iter().any(|t| t.key.starts_with("node.kubernetes.io/")))
            });
            (ready_nodes(&client).await.len() == 3 && !tainted).then_some(())
        }
    })
    .await;
}

/// Undoes `faults` side by side (powering nodes on one after another would leave the last off for longer).
fn undo_together(faults: Vec<NodeFault>) {
    std::thread::scope(|scope| {
        for fault in faults {
            scope.spawn(move || drop(fault));
        }
    });
}

/// Whether an etcd process of member `member` still runs anywhere on this machine (on any node).
fn etcd_runs(member: &str) -> bool {
    !etcd_processes(member).is_empty()
}

/// The etcd processes of member `member` on this machine (any node): (PID, start time in clock ticks since boot),
/// which tells a process restarted under a reused PID from the same one.
fn etcd_processes(member: &str) -> BTreeSet<(u32, u64)> {
    let name = format!("--name={member}");
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if !(args.first().is_some_and(|a| a.ends_with("etcd")) && args.contains(&name)) {
            continue;
        }
        // Field 22 of /proc/PID/stat, counted after the command's closing parenthesis.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else { continue };
        if let Some(start) = after.split_whitespace().nth(19).and_then(|t| t.parse().ok()) {
            found.insert((pid, start));
        }
    }
    found
}

/// Polls for `how_long`, asserting every second that nothing was deleted or restored: the member pods are still
/// exactly `before` (same UIDs) and status has no recovery. Returns the Degraded conditions seen.
async fn nothing_deleted_for(
    api: &Api<DynamicObject>,
    pods: &Api<Pod>,
    before: &BTreeMap<String, (String, String)>,
    how_long: Duration,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let until = Instant::now() + how_long;
    while Instant::now() < until {
        let now = placement(pods).await;
        assert_eq!(now.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "no member pod deleted");
        for (name, (uid, _)) in &now {
            assert_eq!(uid, &before[name].0, "{name} is the same pod");
        }
        let listed = pods.list(&ListParams::default().labels(MEMBERS)).await.unwrap().items;
        for pod in &listed {
            assert!(pod.metadata.deletion_timestamp.is_none(), "{:?} is not marked for deletion", pod.metadata.name);
        }
        let status = status(api).await;
        assert!(status.get("recovery").is_none_or(|r| r.is_null()), "no recovery starts: {status}");
        if let Some(degraded) = condition(&status, "Degraded").filter(|d| d["status"] == "True") {
            seen.insert(format!("{}: {}", degraded["reason"], degraded["message"]));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    seen
}

/// A pod on `node` with no toleration of its own: the API server gives it the default tolerations of the
/// not-ready and unreachable taints (`--default-*-toleration-seconds`), so the taint manager evicts it once its
/// node has been NotReady that long.
fn evictable_pod(node: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": { "generateName": "evictable-" },
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
            "containers": [{
                "name": "pause", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                "securityContext": { "allowPrivilegeEscalation": false, "capabilities": { "drop": ["ALL"] } },
            }],
        },
    }))
    .unwrap()
}

fn zone(node: &str) -> &str {
    node.strip_prefix("kec-").unwrap_or(node)
}

// Several threads: undoing a fault (fault.sh poweron waits for the node) blocks its thread, and the in-process
// controller must go on reconciling meanwhile, as a real one would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_faults_never_cost_an_acknowledged_write() {
    let client = testbed().await;
    let all_nodes = ready_nodes(&client).await;
    assert_eq!(all_nodes, BTreeSet::from(["kec-a".into(), "kec-b".into(), "kec-c".into()]), "a three-node test bed");
    all_nodes_schedulable(&client).await;
    install_crd(&client).await;
    fresh_namespace(&client, NS).await;
    let dir = host_dir("nodes");
    local_volume("kec-e2e-nodes", dir.path(), NS, "nodes-backups");
    let running =
        support::start_controller(&client, NS, "e2e-nodes", Duration::from_secs(5), Duration::from_secs(2)).await;
    let api = clusters(&client, NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let object: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": CLUSTER },
        "spec": {
            "size": 3,
            "backup": { "every": "1h", "storage": { "pvc": { "claimName": "nodes-backups" } } },
            "recovery": { "quorumLossGrace": "10s" },
            // Members on node-pinned volumes (the test bed's local-path class), as zonal disks are.
            "storage": { "size": "256Mi" },
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let (members, took) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(120)).await;
    println!("create: 3 members in {:.1} s", took.as_secs_f64());

    // 1. One member per node, and so per zone.
    let placed = placement(&pods).await;
    let nodes: BTreeSet<String> = placed.values().map(|(_, n)| n.clone()).collect();
    assert_eq!(nodes, all_nodes, "one member per node: {placed:?}");
    let zones: BTreeSet<&str> = nodes.iter().map(|n| zone(n)).collect();
    println!("spread: {:?} (zones {zones:?})", placed.iter().map(|(m, (_, n))| (m, n)).collect::<Vec<_>>());

    let endpoint = |ip: &str| format!("http://{ip}:2379");
    let mut etcd = etcd_client::Client::connect([endpoint(&members[0].1)], None).await.unwrap();
    for i in 0..100 {
        etcd.put(format!("/keep/{i:03}"), format!("value {i}"), None).await.unwrap();
    }
    let backup = support::take_backup(&client, NS, CLUSTER).await;
    println!("a backup a wrong recovery could restore: {} (revision {})", backup.name, backup.revision);

    // 2. The majority (the nodes of two members) cut from the API server, from this machine and from the third
    //    node, not from each other. Their members keep a quorum and serve a writer on their side; the controller
    //    sees a member without a leader and two it cannot reach, on NotReady nodes: it must wait.
    let by_node: BTreeMap<String, (String, String)> =
        members.iter().map(|(m, ip)| (placed[m].1.clone(), (m.clone(), ip.clone()))).collect();
    let majority: Vec<String> = by_node.keys().filter(|n| *n != "kec-a").cloned().collect();
    assert_eq!(majority, ["kec-b", "kec-c"]);
    let majority_ips: Vec<String> = majority.iter().map(|n| endpoint(&by_node[n].1)).collect();
    //    The partition lasts past the moment Kubernetes' taint manager evicts a pod that tolerates the taints of
    //    an unreachable node only for the default time (300 s in a stock cluster, EVICTION_AFTER on the test
    //    bed): a pod without tolerations on kec-b shows that moment; the members' pods tolerate those taints
    //    without a limit and are never marked for deletion.
    let evictable = pods.create(&PostParams::default(), &evictable_pod("kec-b")).await.unwrap();
    let evictable_name = evictable.metadata.name.clone().unwrap();
    eventually("the evictable pod running on kec-b", Duration::from_secs(60), || {
        let (pods, name) = (pods.clone(), evictable_name.clone());
        async move {
            let pod = pods.get(&name).await.ok()?;
            (pod.status?.phase.as_deref() == Some("Running")).then_some(())
        }
    })
    .await;
    let writer = Writer::start(majority_ips.clone(), "/majority/", Some("kec-b"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    let faults = [NodeFault::partition("b", "host,a"), NodeFault::partition("c", "host,a")];
    let (_, took) = eventually("kec-b and kec-c NotReady", Duration::from_secs(60), || {
        let client = client.clone();
        async move { (ready_nodes(&client).await == BTreeSet::from(["kec-a".to_string()])).then_some(()) }
    })
    .await;
    let not_ready = Instant::now();
    println!("majority partition: kec-b and kec-c NotReady {:.1} s after the cut", took.as_secs_f64());
    // Well past the 10 s quorum-loss grace period: a controller that timed this as a loss would have acted.
    let mut seen = nothing_deleted_for(&api, &pods, &placed, Duration::from_secs(20)).await;
    // Until the taint manager evicted the pod that has only the default tolerations, and 10 s more.
    let evicted = loop {
        // Marked for deletion, or gone already (it has no grace period).
        let pod = pods.get_opt(&evictable_name).await.unwrap();
        if pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
            break not_ready.elapsed();
        }
        assert!(not_ready.elapsed() < EVICTION_AFTER * 3, "the taint manager evicts a pod with default tolerations");
        seen.extend(nothing_deleted_for(&api, &pods, &placed, Duration::from_secs(1)).await);
    };
    println!(
        "majority partition: the pod with the default tolerations marked for deletion {:.1} s after NotReady; \
         the members' pods are not",
        evicted.as_secs_f64()
    );
    seen.extend(nothing_deleted_for(&api, &pods, &placed, Duration::from_secs(10)).await);
    println!("majority partition: status said {seen:?}");
    assert!(
        seen.iter().any(|d| d.starts_with("\"MembersOnNotReadyNodes\"") && d.contains("kec-b") && d.contains("kec-c")),
        "status names the NotReady nodes: {seen:?}"
    );
    undo_together(faults.into());
    let healed = Instant::now();
    eventually("every node Ready again", Duration::from_secs(60), || {
        let client = client.clone();
        async move { (ready_nodes(&client).await.len() == 3).then_some(()) }
    })
    .await;
    let nodes_back = healed.elapsed();
    eventually("the same three members, healthy again", Duration::from_secs(240), || {
        let pods = pods.clone();
        let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
        async move {
            let ready = converged_now(&pods, CLUSTER, 3, &[]).await?;
            (ready.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>() == names).then_some(())
        }
    })
    .await;
    let took = healed.elapsed();
    println!("majority partition: healed; nodes Ready {:.1} s later", nodes_back.as_secs_f64());
    let written = writer.stop();
    println!(
        "majority partition: healed, three members healthy {:.1} s later; the majority's writer: {} of {} \
         acknowledged during {:.0} s, longest gap {:.1} s",
        took.as_secs_f64(),
        written.acked.len(),
        written.tried,
        cut.elapsed().as_secs_f64(),
        written.longest_gap.as_secs_f64()
    );
    let now = placement(&pods).await;
    assert_eq!(now, placed, "the same pods on the same nodes");
    let ready = support::ready_members(&pods, CLUSTER).await;
    let lost = lost_writes(&endpoint(&ready[0].1), "/majority/", &written).await;
    // Counted from the moment both nodes were NotReady to the heal: what the majority served while cut off.
    let during = written.acked_between(not_ready, healed);
    println!(
        "majority partition: {during} writes acknowledged by the majority in the {:.0} s both its nodes were \
         NotReady, longest gap {:.1} s",
        (healed - not_ready).as_secs_f64(),
        written.longest_gap_within(not_ready, healed).as_secs_f64()
    );
    assert!(during > 50, "the majority served its writer while cut off: {during} acknowledged");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let _ = pods.delete(&evictable_name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;

    // 3. Every node powered off, then on: the members come back on their own data (emptyDir survives a reboot of
    //    a node whose pods are still bound), and nothing is restored. (A member whose node comes back last may be
    //    replaced once the other two have a quorum again: by then its node has been down far longer than the
    //    lost-node limit. What must hold is that nothing is restored and nothing is lost.)
    let before = placement(&pods).await;
    let processes: BTreeMap<String, BTreeSet<(u32, u64)>> =
        before.keys().map(|m| (m.clone(), etcd_processes(m))).collect();
    assert!(processes.values().all(|p| p.len() == 1), "one etcd process per member: {processes:?}");
    let off: Vec<NodeFault> = ["a", "b", "c"].into_iter().map(NodeFault::power_off).collect();
    let powered_off = Instant::now();
    // The power-off killed every member's etcd (not only took the network down).
    for member in before.keys() {
        assert!(!etcd_runs(member), "{member}'s etcd died with its node");
    }
    eventually("every node NotReady", Duration::from_secs(60), || {
        let client = client.clone();
        async move { ready_nodes(&client).await.is_empty().then_some(()) }
    })
    .await;
    let seen = nothing_deleted_for(&api, &pods, &before, Duration::from_secs(20)).await;
    println!("all nodes off: status said {seen:?} ({:.0} s off)", powered_off.elapsed().as_secs_f64());
    assert!(seen.iter().any(|d| d.starts_with("\"MembersOnNotReadyNodes\"")), "status says why: {seen:?}");
    let powered_on = Instant::now();
    undo_together(off);
    let (back, _) = converged(&pods, CLUSTER, 3, &[], Duration::from_secs(180)).await;
    let kept: Vec<&String> = back.iter().map(|(n, _)| n).filter(|n| before.contains_key(*n)).collect();
    println!(
        "all nodes off and on: three members healthy {:.1} s after power-on; {} of 3 members the same ({kept:?})",
        powered_on.elapsed().as_secs_f64(),
        kept.len()
    );
    assert!(kept.len() >= 2, "a quorum of the members came back on its own data: {back:?}");
    for member in &kept {
        let now = etcd_processes(member);
        assert!(!now.is_empty() && now.is_disjoint(&processes[*member]), "{member}'s etcd is a new process: {now:?}");
    }
    assert_eq!(count_keys(&endpoint(&back[0].1), "/keep/").await, 100, "every key, from the members' own data");
    assert_eq!(lost_writes(&endpoint(&back[0].1), "/majority/", &written).await, Vec::<u64>::new());
    let (after, _) = eventually("status Running", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let status = status(&api).await;
            (status["phase"] == "Running").then_some(status)
        }
    })
    .await;
    assert!(after.get("recovery").is_none_or(|r| r.is_null()), "nothing was restored: {after}");
    assert!(after.get("restoredFrom").is_none_or(|r| r.is_null()), "nothing was restored: {after}");
    println!("all nodes off and on: Running again with no recovery: the members restarted on their own data");
    all_nodes_schedulable(&client).await;

    // 4. One node partitioned from everything: its member is replaced, the rest serve throughout.
    let placed = placement(&pods).await;
    let (victim, (_, victim_node)) = placed.iter().next().map(|(m, p)| (m.clone(), p.clone())).unwrap();
    let service = support::client_service(&client, NS, CLUSTER).await;
    let writer = Writer::start(vec![service.clone()], "/minority/", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cut = Instant::now();
    let fault = NodeFault::partition(zone(&victim_node), "all");
    let gone = vec![victim.clone()];
    let degraded = std::sync::Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let (replaced, took) = eventually("the cut-off member replaced", Duration::from_secs(120), || {
        let (api, pods, gone, degraded) = (api.clone(), pods.clone(), gone.clone(), degraded.clone());
        async move {
            let status = status(&api).await;
            assert!(status.get("recovery").is_none_or(|r| r.is_null()), "no recovery for a minority: {status}");
            if let Some(d) = condition(&status, "Degraded").filter(|d| d["status"] == "True") {
                degraded.lock().unwrap().insert(format!("{}: {}", d["reason"], d["message"]));
            }
            converged_now(&pods, CLUSTER, 3, &gone).await
        }
    })
    .await;
    let degraded = degraded.lock().unwrap().clone();
    println!(
        "minority partition of {victim_node}: {victim} replaced {:.1} s after the cut; status said {degraded:?}",
        took.as_secs_f64()
    );
    assert!(degraded.iter().any(|d| d.contains(&victim)), "status reported the cut-off member: {degraded:?}");
    drop(fault);
    eventually("the old member's etcd to stop once its node is back", Duration::from_secs(90), || {
        let victim = victim.clone();
        async move { (!etcd_runs(&victim)).then_some(()) }
    })
    .await;
    let written = writer.stop();
    let lost = lost_writes(&endpoint(&replaced[0].1), "/minority/", &written).await;
    println!(
        "minority partition: {} of {} writes acknowledged over {:.0} s, {} lost, longest gap {:.1} s",
        written.acked.len(),
        written.tried,
        cut.elapsed().as_secs_f64(),
        lost.len(),
        written.longest_gap.as_secs_f64()
    );
    let during = written.acked_since(cut);
    assert!(during > 10, "the majority served through the client Service during the partition: {during}");
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(count_keys(&endpoint(&replaced[0].1), "/keep/").await, 100);
    all_nodes_schedulable(&client).await;

    // 5. The node of a member that is alone on its node powered off, under a writer through the client Service.
    let placed = placement(&pods).await;
    let mut per_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (member, (_, node)) in &placed {
        per_node.entry(node.clone()).or_default().push(member.clone());
    }
    let (victim_node, victim) =
        per_node.iter().find(|(_, m)| m.len() == 1).map(|(n, m)| (n.clone(), m[0].clone())).unwrap();
    let writer = Writer::start(vec![service.clone()], "/poweroff/", None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let off = NodeFault::power_off(zone(&victim_node));
    let powered_off = Instant::now();
    // Deleted as a person or a drain would: its kubelet is gone, so the pod stays Terminating until the controller
    // force-deletes it (it must not wait for a confirmation that never comes).
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    let gone = vec![victim.clone()];
    let (replaced, took) = converged(&pods, CLUSTER, 3, &gone, Duration::from_secs(150)).await;
    assert!(
        pods.get_opt(&victim).await.unwrap().is_none(),
        "the Terminating pod of the lost node is gone from the API"
    );
    println!(
        "power-off of {victim_node}: {victim} replaced, three healthy members {:.1} s after the power-off (goal: \
         under the node-monitor grace period {} s plus 30 s)",
        took.as_secs_f64(),
        NODE_MONITOR_GRACE.as_secs()
    );
    let written = writer.stop();
    let lost = lost_writes(&endpoint(&replaced[0].1), "/poweroff/", &written).await;
    println!(
        "power-off: {} of {} writes acknowledged, {} lost, longest gap {:.1} s",
        written.acked.len(),
        written.tried,
        lost.len(),
        written.longest_gap.as_secs_f64()
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let during = written.acked_since(powered_off);
    assert!(during > 10, "the cluster served through the client Service after the power-off: {during}");
    for (member, _) in &replaced {
        assert_ne!(node_of(&pods, member).await, victim_node, "{member} is not on the powered-off node");
    }
    drop(off);
    all_nodes_schedulable(&client).await;

    // 6. Five members on three nodes: the rule relaxes to an even spread.
    api.patch(CLUSTER, &PatchParams::default(), &Patch::Merge(serde_json::json!({ "spec": { "size": 5 } })))
        .await
        .unwrap();
    converged(&pods, CLUSTER, 5, &[], Duration::from_secs(180)).await;
    let mut counts: BTreeMap<String, usize> = all_nodes.iter().map(|n| (n.clone(), 0)).collect();
    for (_, node) in placement(&pods).await.values() {
        *counts.get_mut(node).unwrap() += 1;
    }
    println!("five members on three nodes: {counts:?}");
    let (least, most) = (counts.values().min().unwrap(), counts.values().max().unwrap());
    assert!(*least >= 1 && most - least <= 1, "spread evenly: {counts:?}");

    // 7. The controller's own node powered off. Two controllers (the release binary, with leader election) run on
    //    two nodes, as two replicas would; the leader's node, which also holds a member, loses power. The standby
    //    takes the lease once it runs out and replaces the member.
    support::kill_controller(&client, NS, running).await;
    let placed = placement(&pods).await;
    let mut per_node: BTreeMap<String, Vec<String>> = all_nodes.iter().map(|n| (n.clone(), Vec::new())).collect();
    for (member, (_, node)) in &placed {
        per_node.get_mut(node).unwrap().push(member.clone());
    }
    let (leader_node, victims) =
        per_node.iter().min_by_key(|(_, m)| m.len()).map(|(n, m)| (n.clone(), m.clone())).unwrap();
    let standby_node = all_nodes.iter().find(|n| **n != leader_node).unwrap().clone();
    // The Lease the in-process controller held (deleted when it was killed): one per test namespace, in
    // the controller's own namespace, where the shipped RBAC allows it.
    let leases: Api<Lease> = Api::namespaced(client.clone(), support::rbac::NAMESPACE);
    let lease = support::rbac::lease_name(NS);
    let holder = || {
        let (leases, lease) = (leases.clone(), lease.clone());
        async move { leases.get_opt(&lease).await.unwrap()?.spec?.holder_identity }
    };
    let _leader = ControllerProcess::start(NS, &[], "ctl-leader", Some(&leader_node)).await;
    eventually("the controller on the first node to lead", Duration::from_secs(60), || async {
        holder().await.filter(|h| h.starts_with("ctl-leader_"))
    })
    .await;
    let _standby = ControllerProcess::start(NS, &[], "ctl-standby", Some(&standby_node)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(holder().await.is_some_and(|h| h.starts_with("ctl-leader_")), "the standby waits");
    let off = NodeFault::power_off(zone(&leader_node));
    let powered_off = Instant::now();
    let (_, took_lease) = eventually("the standby to take the lease", Duration::from_secs(60), || async {
        holder().await.filter(|h| h.starts_with("ctl-standby_"))
    })
    .await;
    converged(&pods, CLUSTER, 5, &victims, Duration::from_secs(180)).await;
    println!(
        "controller's node {leader_node} powered off with {victims:?}: the standby on {standby_node} led {:.1} s \
         later (lease 15 s), five healthy members again {:.1} s after the power-off",
        took_lease.as_secs_f64(),
        powered_off.elapsed().as_secs_f64()
    );
    drop(off);

    api.delete(CLUSTER, &DeleteParams::default()).await.unwrap();
}
