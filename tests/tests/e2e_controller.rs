//! End-to-end: the controller against the test bed's real API server and garbage collector. It runs in-process
//! (its library's `run`, watching one namespace of its own), as `etcd-controller run` would. Needs `--features
//! e2e` and `KUBECONFIG` pointing at the test bed.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::{clusters, eventually, example, install_crd, load};

#[tokio::test]
async fn creates_the_seed_and_services_reports_truthfully_stays_quiet_and_is_destroyed_with_its_cluster() {
    let client = support::testbed().await;
    install_crd(&client).await;
    let ns = "e2e-controller";
    support::fresh_namespace(&client, ns).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());

    let running = support::start_controller(&client, ns, "e2e", Duration::from_secs(3), Duration::from_secs(1)).await;

    let api = clusters(&client, ns);
    let mut object: kube::api::DynamicObject = load(&example("example-etcd-cluster.yaml"));
    // The test bed has a kubelet: a node selector that no node matches keeps the seed Pending, so this test sees
    // the controller wait on a member that cannot start (the lifecycle tests cover members that run).
    object.data["spec"]["pod"] =
        serde_json::json!({ "nodeSelector": { "kube-etcd-controller.dev/e2e": "no-such-node" } });
    api.create(&PostParams::default(), &object).await.unwrap();
    let name = object.name_any();

    // The seed member's pod and the services appear, owned by the cluster.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let (seed, took) = eventually("the seed pod", Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { pods.get_opt("example-etcd-cluster-0000").await.unwrap() }
    })
    .await;
    println!("seed pod created {:.1} s after the EtcdCluster", took.as_secs_f64());
    let command = seed.spec.as_ref().unwrap().containers[0].command.clone().unwrap();
    assert!(command.contains(&"--initial-cluster-state=new".to_string()), "{command:?}");
    assert_eq!(seed.owner_references()[0].name, name);

    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for service in [name.clone(), format!("{name}-client")] {
        let found = services.get(&service).await.unwrap();
        assert_eq!(found.owner_references()[0].name, name, "{service}");
    }
    let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    budgets.get(&name).await.unwrap();

    // Status tells the truth: the seed cannot be scheduled, so the cluster is creating.
    let (status, _) = eventually("a status", Duration::from_secs(20), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let current = api.get(&name).await.unwrap();
            let status = current.data.get("status").cloned()?;
            status.get("conditions").is_some().then_some(status)
        }
    })
    .await;
    assert_eq!(status["phase"], "Creating", "{status}");
    assert_eq!(status["nextMemberIndex"], 1);
    assert!(status["clusterToken"].as_str().is_some_and(|t| !t.is_empty()));
    let conditions = status["conditions"].as_array().unwrap();
    let available = conditions.iter().find(|c| c["type"] == "Available").unwrap();
    assert_eq!(available["status"], "False");

    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let reasons: Vec<String> =
        events.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|e| e.reason).collect();
    assert!(reasons.contains(&"SeedCreated".to_string()), "{reasons:?}");

    // Quiet: once the controller has said all there is to say (it waits on the seed, and the scheduler has
    // marked the seed unschedulable, which status reports as MemberPodStuck), several resyncs later nothing was
    // written, and no second seed was made.
    let (status, _) = eventually("the controller to wait on the stuck seed", Duration::from_secs(60), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let status = api.get(&name).await.unwrap().data["status"].clone();
            let conditions = status["conditions"].as_array()?.clone();
            let waiting = conditions.iter().any(|c| c["type"] == "Progressing" && c["reason"] == "WaitingForEtcd");
            let stuck = conditions.iter().any(|c| c["type"] == "Degraded" && c["reason"] == "MemberPodStuck");
            (waiting && stuck).then_some(status)
        }
    })
    .await;
    let stuck = status["conditions"].as_array().unwrap().iter().find(|c| c["reason"] == "MemberPodStuck").unwrap();
    assert!(stuck["message"].as_str().unwrap().contains("unschedulable"), "{stuck}");
    let before = api.get(&name).await.unwrap().resource_version();
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = api.get(&name).await.unwrap().resource_version();
    assert_eq!(before, after, "a reconcile with nothing to do wrote to the EtcdCluster");
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Destroy: the garbage collector removes everything the cluster owned.
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    let (_, took) = eventually("the owned objects to be collected", Duration::from_secs(60), || {
        let (pods, services, budgets) = (pods.clone(), services.clone(), budgets.clone());
        async move {
            let pods_left = pods.list(&ListParams::default()).await.unwrap().items.len();
            let services_left = services.list(&ListParams::default()).await.unwrap().items.len();
            let budgets_left = budgets.list(&ListParams::default()).await.unwrap().items.len();
            (pods_left + services_left + budgets_left == 0).then_some(())
        }
    })
    .await;
    println!("owned objects collected {:.1} s after the delete", took.as_secs_f64());

    running.abort();
    let _ = namespaces.delete(ns, &DeleteParams::default()).await;
}

/// A seed pod the API server refuses (it asks for more CPU than the namespace's ResourceQuota leaves, as a quota,
/// a LimitRange or an admission webhook refuses creates in real clusters): the controller burns no member name,
/// says why in status, and asks again only after a growing pause, so that a minute of refusals is a handful of
/// API writes, not a loop.
#[tokio::test]
async fn a_refused_seed_backs_off_burns_no_name_and_says_why() {
    let client = support::testbed().await;
    install_crd(&client).await;
    let ns = "e2e-controller-refused";
    support::fresh_namespace(&client, ns).await;
    let quotas: Api<k8s_openapi::api::core::v1::ResourceQuota> = Api::namespaced(client.clone(), ns);
    let quota = serde_json::json!({
        "metadata": { "name": "small" },
        "spec": { "hard": { "requests.cpu": "50m" } },
    });
    quotas.create(&PostParams::default(), &serde_json::from_value(quota).unwrap()).await.unwrap();
    // Until the quota controller has filled in its status, admission refuses with "status unknown for quota".
    eventually("the quota's status", Duration::from_secs(30), || {
        let quotas = quotas.clone();
        async move { quotas.get("small").await.unwrap().status?.hard.filter(|h| !h.is_empty()).map(|_| ()) }
    })
    .await;
    let running = support::start_controller(&client, ns, "e2e", Duration::from_secs(3), Duration::from_secs(1)).await;

    let api = clusters(&client, ns);
    let mut object: kube::api::DynamicObject = load(&example("example-etcd-cluster.yaml"));
    object.data["spec"]["pod"] = serde_json::json!({ "resources": { "requests": { "cpu": "100m" } } });
    api.create(&PostParams::default(), &object).await.unwrap();
    let name = object.name_any();

    let (status, took) = eventually("status to say the seed was refused", Duration::from_secs(30), || {
        let (api, name) = (api.clone(), name.clone());
        async move {
            let status = api.get(&name).await.unwrap().data["status"].clone();
            let degraded = status["conditions"].as_array()?.iter().find(|c| c["type"] == "Degraded")?.clone();
            (degraded["reason"] == "Refused").then_some(status)
        }
    })
    .await;
    let degraded = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
    println!("refused seed reported {:.1} s after the create: {}", took.as_secs_f64(), degraded["message"]);
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("creating pod") && message.contains("exceeded quota"), "{message}");
    assert_ne!(status["phase"], "Running", "no member: {status}");

    // Over a minute of refusals: no member name burned, no pod, at most a few attempts and status writes.
    let window = std::time::Instant::now();
    let before = api.get(&name).await.unwrap().resource_version();
    let mut versions = std::collections::BTreeSet::new();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    while window.elapsed() < Duration::from_secs(60) {
        let current = api.get(&name).await.unwrap();
        versions.insert(current.resource_version());
        let index = current.data["status"]["nextMemberIndex"].as_i64().unwrap_or(0);
        assert_eq!(index, 0, "a refused seed burns no member name");
        assert!(pods.list(&ListParams::default()).await.unwrap().items.is_empty());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    versions.remove(&before);
    assert!(versions.len() <= 2, "status written {} times in 60 s of refusals", versions.len());
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let attempts: i32 = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("KubernetesApiError"))
        .map(|e| e.series.as_ref().map_or(1, |s| s.count.max(1)))
        .sum();
    println!("refused seed: {attempts} attempts in all, {} status writes in the 60 s window", versions.len());
    // Pauses of 5, 10, 20, 40 s: four or five attempts by the end of the window, where a fixed 5 s retry makes 12.
    assert!((2..=6).contains(&attempts), "{attempts} create attempts");

    // Fixed: the spec change is tried at once, and the seed is created under the first name.
    let fixed = serde_json::json!({ "spec": { "pod": { "resources": { "requests": { "cpu": "20m" } } } } });
    api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&fixed)).await.unwrap();
    let (_, took) = eventually("the seed pod once the spec is fixed", Duration::from_secs(20), || {
        let pods = pods.clone();
        async move { pods.get_opt("example-etcd-cluster-0000").await.unwrap() }
    })
    .await;
    println!("seed created {:.1} s after the fix", took.as_secs_f64());

    api.delete(&name, &DeleteParams::default()).await.unwrap();
    running.abort();
}

/// The namespaced install (`example/etcd-controller-namespaced.yaml`): its ServiceAccount may touch nothing in
/// another namespace, and a controller with exactly its permissions, watching its own namespace and holding its
/// Lease there, runs a cluster to Running.
#[tokio::test]
async fn the_namespaced_install_runs_a_cluster_with_permissions_in_one_namespace_only() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let client = support::testbed().await;
    install_crd(&client).await;
    let ns = "e2e-namespaced";
    support::fresh_namespace(&client, ns).await;
    support::no_other_controller(&client).await;
    let as_controller = support::rbac::install_namespaced_rbac(ns).await;

    // Nothing outside its namespace: not even listing pods or reading Secrets elsewhere.
    let reviews: Api<SelfSubjectAccessReview> = Api::all(as_controller.clone());
    for (namespace, resource, verb, allowed) in [
        (Some(ns), "pods", "create", true),
        (Some("default"), "pods", "list", false),
        (Some("default"), "secrets", "get", false),
        (None, "pods", "list", false),
        (None, "nodes", "get", true),
    ] {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: namespace.map(String::from),
                    resource: Some(resource.into()),
                    verb: Some(verb.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = reviews.create(&PostParams::default(), &review).await.unwrap();
        let got = answer.status.is_some_and(|s| s.allowed);
        assert_eq!(got, allowed, "{verb} {resource} in {namespace:?}");
    }

    let args = controller::run::RunArgs {
        namespace: Some(ns.into()),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        etcd_timeout: Duration::from_secs(2),
        resync: Duration::from_secs(3),
        secret_propagation: support::SECRET_PROPAGATION,
        instance: "e2e-namespaced".into(),
        sidecar_image: support::sidecar_image(),
        leader_elect: true,
        lease_namespace: Some(ns.into()),
        controller_namespace: None,
        lease_name: "etcd-controller".into(),
    };
    let running = tokio::spawn(async move {
        let result = controller::run::run_with_client(as_controller, args, Default::default()).await;
        eprintln!("the namespaced controller stopped on its own: {result:?}");
        std::process::exit(101);
    });
    let api = clusters(&client, ns);
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": "solo" },
        "spec": { "size": 1 },
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    let (_, took) = eventually("the namespaced install's cluster Running", Duration::from_secs(120), || {
        let api = api.clone();
        async move {
            let status = api.get("solo").await.unwrap().data["status"].clone();
            (status["phase"] == "Running" && status["readyMembers"] == 1).then_some(())
        }
    })
    .await;
    println!("namespaced install: a one-member cluster Running {:.1} s after its create", took.as_secs_f64());
    api.delete("solo", &DeleteParams::default()).await.unwrap();
    running.abort();
    let _ = running.await;
}
