//! A pause that grows for each refused step of a cluster: an answer the API server will give again (Pod Security
//! admission, a quota, a webhook, a value the schema let through) is not asked for again at once, which would load
//! the API server for every tenant and burn the cluster's reconciles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plan::WaitReason;

/// The first pause after a refusal.
pub const FIRST: Duration = Duration::from_secs(5);
/// The longest pause.
pub const MAX: Duration = Duration::from_secs(300);

/// The pause after the `attempts`-th refusal in a row: 5 s, 10 s, 20 s, ... at most [`MAX`].
pub fn pause(attempts: u32) -> Duration {
    FIRST.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(MAX)
}

#[derive(Debug)]
struct Entry {
    step: String,
    attempts: u32,
    until: Instant,
    wait: WaitReason,
}

/// Refused steps by cluster (`namespace/name`). A step is named by the spec generation and the action planned, so
/// that a changed spec, or another step, is tried at once.
#[derive(Debug, Default)]
pub struct Refusals(Mutex<HashMap<String, Entry>>);

impl Refusals {
    /// While `step` of `cluster` waits out its pause: what to report, and how long is left.
    pub fn pending(&self, cluster: &str, step: &str, now: Instant) -> Option<(WaitReason, Duration)> {
        let entries = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = entries.get(cluster).filter(|e| e.step == step && e.until > now)?;
        Some((entry.wait.clone(), entry.until - now))
    }

    /// Records that `step` of `cluster` was refused (`wait` says so); returns the pause before the next attempt.
    pub fn refused(&self, cluster: &str, step: &str, wait: WaitReason, now: Instant) -> Duration {
        let mut entries = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Clusters deleted (or fixed) long ago are forgotten.
        entries.retain(|_, e| e.until + MAX > now);
        let attempts = entries.get(cluster).filter(|e| e.step == step).map_or(0, |e| e.attempts) + 1;
        let pause = pause(attempts);
        entries.insert(cluster.into(), Entry { step: step.into(), attempts, until: now + pause, wait });
        pause
    }

    /// Forgets `cluster`'s refusals (a step went through, or the cluster is gone).
    pub fn clear(&self, cluster: &str) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(cluster);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait() -> WaitReason {
        WaitReason::Refused { op: "creating pod x".into(), why: "forbidden".into() }
    }

    #[test]
    fn the_pause_grows_and_is_capped() {
        let pauses: Vec<u64> = (1..=9).map(|n| pause(n).as_secs()).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(pause(u32::MAX), MAX);
    }

    #[test]
    fn a_refused_step_waits_its_pause_and_another_step_or_spec_does_not() {
        let refusals = Refusals::default();
        let t0 = Instant::now();
        assert!(refusals.pending("ns/a", "g1 seed", t0).is_none());
        assert_eq!(refusals.refused("ns/a", "g1 seed", wait(), t0), Duration::from_secs(5));
        let (shown, left) = refusals.pending("ns/a", "g1 seed", t0 + Duration::from_secs(1)).unwrap();
        assert_eq!(shown, wait());
        assert_eq!(left, Duration::from_secs(4));
        assert!(refusals.pending("ns/a", "g2 seed", t0).is_none(), "a changed spec is tried at once");
        assert!(refusals.pending("ns/b", "g1 seed", t0).is_none(), "per cluster");
        assert!(refusals.pending("ns/a", "g1 seed", t0 + Duration::from_secs(5)).is_none(), "the pause is over");
        // Refused again: a longer pause; refused for another step: it starts over.
        assert_eq!(refusals.refused("ns/a", "g1 seed", wait(), t0), Duration::from_secs(10));
        assert_eq!(refusals.refused("ns/a", "g1 seed", wait(), t0), Duration::from_secs(20));
        assert_eq!(refusals.refused("ns/a", "g2 seed", wait(), t0), Duration::from_secs(5));
        refusals.clear("ns/a");
        assert!(refusals.pending("ns/a", "g2 seed", t0).is_none());
    }
}
