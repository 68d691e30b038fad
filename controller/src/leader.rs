//! Leader election on a `coordination.k8s.io` Lease, so that two replicas of the controller are safe: only the
//! holder reconciles. The holder renews every `renew_every`; a holder that cannot renew within `renew_deadline`
//! stops leading (the process exits and is restarted), which is before `lease_duration` runs out and another
//! replica may take the lease over. Optimistic concurrency (the Lease's resourceVersion) settles races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Timing and naming of the lease.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease lasts without renewal before another replica may take it.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it stops leading.
    pub renew_deadline: Duration,
    /// How often the holder renews, and how often a candidate retries.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The usual timings (as client-go's): 15 s lease, 10 s renew deadline, renewal every 2 s.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Whether a lease attempt got the lease, and if not, who holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the lease now.
    Held,
    /// Another replica holds it.
    HeldBy(String),
}

/// Whether `lease` has run out at `now` (or names no holder).
pub fn expired(lease: &Lease, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return true };
    if spec.holder_identity.as_deref().unwrap_or_default().is_empty() {
        return true;
    }
    let (Some(renewed), Some(seconds)) = (&spec.renew_time, spec.lease_duration_seconds) else { return true };
    renewed.0 + SignedDuration::from_secs(i64::from(seconds)) < now
}

/// One attempt to take or renew the lease.
pub async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<Attempt, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    match api.get_opt(&config.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(config.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy("(another replica)".into())),
                Err(error) => Err(error),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            let holder = spec.holder_identity.clone().unwrap_or_default();
            let ours = holder == config.identity;
            if !ours && !expired(&lease, now) {
                return Ok(Attempt::HeldBy(holder));
            }
            let spec = lease.spec.get_or_insert_with(Default::default);
            if !ours {
                spec.holder_identity = Some(config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.lease_duration_seconds = Some(seconds);
            spec.renew_time = Some(MicroTime(now));
            // The resourceVersion read above makes this a compare-and-swap: of two racing replicas, one wins.
            match api.replace(&config.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::HeldBy(holder)),
                Err(error) => Err(error),
            }
        }
    }
}

/// Leadership held: renewed in the background until released or lost.
pub struct Leadership {
    config: LeaseConfig,
    api: Api<Lease>,
    lost: CancellationToken,
    stop: CancellationToken,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

/// Dropped without a release (the process's main task cancelled or panicking): renewal stops, so the lease runs
/// out and another replica takes over, instead of a background task holding it for a controller that is gone.
impl Drop for Leadership {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(renewal) = &self.renewal {
            renewal.abort();
        }
    }
}

impl Leadership {
    /// Cancelled when leadership is lost; the holder must then stop reconciling at once.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and gives the lease up (on a clean shutdown), so that another replica takes over at once
    /// instead of after the lease duration. Best effort.
    pub async fn release(mut self) {
        self.stop.cancel();
        if let Some(renewal) = self.renewal.take() {
            let _ = renewal.await;
        }
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else { return };
        let Some(spec) = lease.spec.as_mut() else { return };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        match self.api.replace(&self.config.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.config.name, "released the lease"),
            Err(error) => tracing::warn!(lease = %self.config.name, %error, "could not release the lease"),
        }
    }
}

/// Waits until this replica holds the lease, then keeps renewing it in the background.
pub async fn lead(client: kube::Client, config: LeaseConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &config.namespace);
    let mut last_holder = None;
    loop {
        match try_acquire(&api, &config).await {
            Ok(Attempt::Held) => break,
            Ok(Attempt::HeldBy(holder)) => {
                if last_holder.as_ref() != Some(&holder) {
                    tracing::info!(lease = %config.name, %holder, "waiting for the lease held by another replica");
                    last_holder = Some(holder);
                }
            }
            Err(error) => tracing::warn!(lease = %config.name, %error, "could not read or take the lease"),
        }
        tokio::time::sleep(config.renew_every).await;
    }
    tracing::info!(lease = %config.name, identity = %config.identity, "leading");
    let (lost, stop) = (CancellationToken::new(), CancellationToken::new());
    let renewal = {
        let (api, config, lost, stop) = (api.clone(), config.clone(), lost.clone(), stop.clone());
        tokio::spawn(async move {
            let mut renewed = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(config.renew_every) => {}
                }
                match try_acquire(&api, &config).await {
                    Ok(Attempt::Held) => renewed = tokio::time::Instant::now(),
                    Ok(Attempt::HeldBy(holder)) => {
                        tracing::error!(lease = %config.name, %holder, "another replica took the lease");
                        break;
                    }
                    Err(error) => tracing::warn!(lease = %config.name, %error, "could not renew the lease"),
                }
                if renewed.elapsed() > config.renew_deadline {
                    tracing::error!(lease = %config.name, "the lease was not renewed within the renew deadline");
                    break;
                }
            }
            lost.cancel();
        })
    };
    Leadership { config, api, lost, stop, renewal: Some(renewal) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, seconds: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(Into::into),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_lease_runs_out_only_after_its_duration_since_the_last_renewal() {
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(!expired(&lease(Some("a"), 100, 15), at(110)));
        assert!(!expired(&lease(Some("a"), 100, 15), at(115)));
        assert!(expired(&lease(Some("a"), 100, 15), at(116)));
        assert!(expired(&lease(None, 100, 15), at(101)), "a released lease is free");
        assert!(expired(&lease(Some(""), 100, 15), at(101)), "so is one with an empty holder");
    }
}
