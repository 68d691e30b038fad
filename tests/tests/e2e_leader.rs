//! End-to-end: leader election against the test bed's real API server. Of two candidates one holds the lease; the
//! other takes it over only once it has run out or been released, and the old holder then knows it lost it. The
//! release binary (`etcd-controller run`) gives its lease up on SIGTERM, and with `--leader-elect=false`
//! reconciles without one.
//! Needs `--features e2e` and `KUBECONFIG` pointing at the test bed.

mod support;

use std::time::{Duration, Instant};

use controller::leader::{Attempt, LeaseConfig, lead, try_acquire};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use support::{ControllerProcess, clusters, eventually, fresh_namespace, install_crd, no_other_controller, testbed};

const NS: &str = "e2e-leader";

/// A candidate whose lease lasts `seconds`; it keeps trying to renew for two thirds of that (never less than 2 s,
/// so one slow API round trip on a loaded two-core machine does not end its leadership) and renews every 300 ms.
fn candidate(identity: &str, seconds: u64) -> LeaseConfig {
    let mut config = LeaseConfig::new("e2e-lease", NS, identity);
    config.lease_duration = Duration::from_secs(seconds);
    config.renew_deadline = Duration::from_millis(seconds * 2000 / 3).max(Duration::from_secs(2));
    config.renew_every = Duration::from_millis(300);
    config
}

/// Tries to take the lease as `config` until it is held, and returns how long after `since` that was. A lease
/// whose holder last renewed at `since` (or later) can only be taken once its duration has passed since then.
async fn taken_over(leases: &Api<Lease>, config: &LeaseConfig, since: Instant) -> Duration {
    loop {
        if try_acquire(leases, config).await.unwrap() == Attempt::Held {
            return since.elapsed();
        }
        assert!(since.elapsed() < config.lease_duration * 3, "{} never took the lease over", config.identity);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_takeover_only_after_the_lease_runs_out_or_is_released() {
    let client = testbed().await;
    fresh_namespace(&client, NS).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    // The lease's times are microseconds: a takeover may come up to that much before the full duration.
    let rounding = Duration::from_millis(1);

    // Expiry: a holder that stops renewing loses the lease after its duration, not before.
    let (a, b) = (candidate("a", 4), candidate("b", 4));
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::Held);
    assert_eq!(try_acquire(&leases, &b).await.unwrap(), Attempt::HeldBy("a".into()));
    let renewed = Instant::now();
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::Held, "the holder renews");
    assert_eq!(try_acquire(&leases, &b).await.unwrap(), Attempt::HeldBy("a".into()), "not run out yet");
    let took = taken_over(&leases, &b, renewed).await;
    println!("lease of 4 s taken over {:.2} s after the last renewal", took.as_secs_f64());
    assert!(took + rounding >= a.lease_duration, "taken over before the lease ran out: {took:?}");
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::HeldBy("b".into()), "a knows it lost");
    let lease = leases.get("e2e-lease").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));

    // The background renewal keeps a live leader's lease; a released lease is taken at once.
    leases.delete("e2e-lease", &DeleteParams::default()).await.unwrap();
    let (c, d) = (candidate("c", 3), candidate("d", 3));
    let leadership = lead(client.clone(), c.clone()).await;
    let lost = leadership.lost();
    let led = Instant::now();
    while led.elapsed() < c.lease_duration * 2 {
        assert_eq!(try_acquire(&leases, &d).await.unwrap(), Attempt::HeldBy("c".into()), "a renewing leader keeps it");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!lost.is_cancelled(), "a renewing leader keeps leading past its lease duration");
    leadership.release().await;
    assert_eq!(try_acquire(&leases, &d).await.unwrap(), Attempt::Held, "released: taken at once");
    assert_eq!(try_acquire(&leases, &c).await.unwrap(), Attempt::HeldBy("d".into()), "and kept by the new holder");

    // A leader whose lease another replica takes over (here: by force, as after a long pause) learns it.
    let e = candidate("e", 3);
    let leadership = lead(client.clone(), e.clone()).await;
    let lost = leadership.lost();
    let mut lease = leases.get("e2e-lease").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("f".into());
    leases.replace("e2e-lease", &Default::default(), &lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), lost.cancelled())
        .await
        .expect("the old leader notices that another took the lease");

    // A leader that goes away without releasing (its task cancelled) stops renewing: the lease runs out.
    leases.delete("e2e-lease", &DeleteParams::default()).await.unwrap();
    let (g, h) = (candidate("g", 3), candidate("h", 3));
    let leadership = lead(client.clone(), g.clone()).await;
    let dropped = Instant::now();
    drop(leadership);
    assert_eq!(try_acquire(&leases, &h).await.unwrap(), Attempt::HeldBy("g".into()), "not released");
    // A renewal in flight at the drop may still land, so the bound is from the last renewal the lease shows (a
    // later one would only make the takeover later), in the same clock the lease is written in.
    let last = leases.get("e2e-lease").await.unwrap().spec.unwrap().renew_time.unwrap().0;
    let took = taken_over(&leases, &h, dropped).await;
    let after_renewal = k8s_openapi::jiff::Timestamp::now().duration_since(last);
    println!(
        "a dropped leader's lease of 3 s taken over {:.2} s after the drop, {:.2} s after its last renewal",
        took.as_secs_f64(),
        after_renewal.as_secs_f64()
    );
    let duration = k8s_openapi::jiff::SignedDuration::try_from(g.lease_duration - rounding).unwrap();
    assert!(after_renewal >= duration, "taken over before the lease ran out: {after_renewal:?}");
}

const BIN_NS: &str = "e2e-leader-bin";

#[tokio::test]
async fn the_binary_gives_its_lease_up_on_sigterm_and_reconciles_without_one_when_told_to() {
    let client = testbed().await;
    no_other_controller(&client).await;
    install_crd(&client).await;
    // Also deletes the binary's Lease for BIN_NS: it lives in the controller's own namespace, as the shipped RBAC
    // wants, where an earlier run's would outlive BIN_NS.
    fresh_namespace(&client, BIN_NS).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), support::rbac::NAMESPACE);
    let lease = support::rbac::lease_name(BIN_NS);

    // With leader election (the default): it takes the lease, and on SIGTERM exits 0 and gives it up.
    let mut leader = ControllerProcess::start(BIN_NS, &[], "bin-a", None).await;
    let (holder, took) = eventually("the binary to hold the lease", Duration::from_secs(60), || {
        let (leases, lease) = (leases.clone(), lease.clone());
        async move {
            let lease = leases.get_opt(&lease).await.unwrap()?;
            lease.spec?.holder_identity.filter(|h| h.starts_with("bin-a_"))
        }
    })
    .await;
    println!("etcd-controller run: lease {lease} held by {holder} {:.1} s after start", took.as_secs_f64());
    let spec = leases.get(&lease).await.unwrap().spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, Some(15), "the default lease duration");
    let status = leader.terminate().await;
    assert!(status.success(), "exit after SIGTERM: {status}");
    let spec = leases.get(&lease).await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity, None, "the lease is given up on SIGTERM, so a standby takes over at once");

    // With --leader-elect=false: no lease, and it reconciles (the seed pod of a new cluster appears).
    leases.delete(&lease, &DeleteParams::default()).await.unwrap();
    let mut alone = ControllerProcess::start(BIN_NS, &["--leader-elect=false"], "bin-b", None).await;
    let api = clusters(&client, BIN_NS);
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-etcd-controller.dev/v1alpha1",
        "kind": "EtcdCluster",
        "metadata": { "name": "alone" },
        // No node matches: the seed stays Pending, which is all this needs.
        "spec": { "size": 1, "pod": { "nodeSelector": { "kube-etcd-controller.dev/e2e": "no-such-node" } } },
    }))
    .unwrap();
    api.create(&Default::default(), &object).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), BIN_NS);
    eventually("the seed pod made without a lease", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move { pods.get_opt("alone-0000").await.unwrap().map(|_| ()) }
    })
    .await;
    assert!(leases.get_opt(&lease).await.unwrap().is_none(), "no lease was taken");
    assert!(alone.terminate().await.success());
    api.delete("alone", &DeleteParams::default()).await.unwrap();
}
