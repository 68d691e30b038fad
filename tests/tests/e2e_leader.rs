//! End-to-end: leader election against the test bed's real API server. Of two candidates one holds the lease; the
//! other takes it over only once it has run out or been released, and the old holder then knows it lost it.
//! Needs `--features e2e` and `KUBECONFIG` pointing at the test bed.

mod support;

use std::time::Duration;

use controller::leader::{Attempt, LeaseConfig, lead, try_acquire};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::{Api, DeleteParams};
use support::fresh_namespace;

const NS: &str = "e2e-leader";

fn candidate(identity: &str, seconds: u64) -> LeaseConfig {
    let mut config = LeaseConfig::new("e2e-lease", NS, identity);
    config.lease_duration = Duration::from_secs(seconds);
    config.renew_deadline = Duration::from_secs(seconds * 2 / 3);
    config.renew_every = Duration::from_millis(300);
    config
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_takeover_only_after_the_lease_runs_out_or_is_released() {
    let client = Client::try_default().await.expect("KUBECONFIG must point at the test bed (tests/e2e/up.sh)");
    fresh_namespace(&client, NS).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);

    // Expiry: a holder that stops renewing loses the lease after its duration, not before.
    let (a, b) = (candidate("a", 3), candidate("b", 3));
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::Held);
    assert_eq!(try_acquire(&leases, &b).await.unwrap(), Attempt::HeldBy("a".into()));
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::Held, "the holder renews");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(try_acquire(&leases, &b).await.unwrap(), Attempt::HeldBy("a".into()), "not run out yet");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(try_acquire(&leases, &b).await.unwrap(), Attempt::Held, "run out: b takes over");
    assert_eq!(try_acquire(&leases, &a).await.unwrap(), Attempt::HeldBy("b".into()), "a knows it lost");
    let lease = leases.get("e2e-lease").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("b"));
    assert_eq!(lease.lease_transitions, Some(1));

    // The background renewal keeps a live leader's lease; a released lease is taken at once.
    leases.delete("e2e-lease", &DeleteParams::default()).await.unwrap();
    let (c, d) = (candidate("c", 2), candidate("d", 2));
    let leadership = lead(client.clone(), c.clone()).await;
    let lost = leadership.lost();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!lost.is_cancelled(), "a renewing leader keeps leading past its lease duration");
    assert_eq!(try_acquire(&leases, &d).await.unwrap(), Attempt::HeldBy("c".into()));
    leadership.release().await;
    assert_eq!(try_acquire(&leases, &d).await.unwrap(), Attempt::Held, "released: taken at once");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(try_acquire(&leases, &c).await.unwrap(), Attempt::HeldBy("d".into()), "and kept by the new holder");

    // A leader whose lease another replica takes over (here: by force, as after a long pause) learns it.
    let e = candidate("e", 2);
    let leadership = lead(client.clone(), e.clone()).await;
    let lost = leadership.lost();
    let mut lease = leases.get("e2e-lease").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("f".into());
    leases.replace("e2e-lease", &Default::default(), &lease).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), lost.cancelled())
        .await
        .expect("the old leader notices that another took the lease");

    // A leader that goes away without releasing (its task cancelled) stops renewing: the lease runs out.
    leases.delete("e2e-lease", &DeleteParams::default()).await.unwrap();
    let (g, h) = (candidate("g", 2), candidate("h", 2));
    let leadership = lead(client.clone(), g.clone()).await;
    drop(leadership);
    assert_eq!(try_acquire(&leases, &h).await.unwrap(), Attempt::HeldBy("g".into()), "not released");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(try_acquire(&leases, &h).await.unwrap(), Attempt::Held, "no renewal after the drop");
}
