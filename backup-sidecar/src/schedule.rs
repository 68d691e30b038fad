//! When scheduled backups run: a fixed interval or a cron expression, with retries after failures.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
pub use tokio_util::sync::CancellationToken;

/// The first retry after a failure waits this long; each further one twice as long.
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// Retries never wait longer than this.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// A backup schedule.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every fixed interval; the first run is at start-up.
    Every(Duration),
    /// At the times a cron expression (five fields, UTC) names.
    Cron(Box<Cron>, String),
}

/// Why a schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The interval does not parse or is too short.
    #[error("invalid interval {0:?}: {1}")]
    Interval(String, String),
    /// The cron expression does not parse.
    #[error("invalid cron expression {0:?}: {1}")]
    Cron(String, String),
}

impl Schedule {
    /// Parses `--every` (`30m`, `1h 30m`); intervals under ten seconds are refused.
    pub fn every(text: &str) -> Result<Self, ScheduleError> {
        let interval =
            humantime::parse_duration(text).map_err(|e| ScheduleError::Interval(text.into(), e.to_string()))?;
        if interval < Duration::from_secs(1) {
            return Err(ScheduleError::Interval(text.into(), "must be at least 1s".into()));
        }
        Ok(Self::Every(interval))
    }

    /// Parses `--cron` (`0 */6 * * *`).
    pub fn cron(text: &str) -> Result<Self, ScheduleError> {
        let cron = Cron::from_str(text).map_err(|e| ScheduleError::Cron(text.into(), e.to_string()))?;
        // An expression that never fires (30 February) is as wrong as one that does not parse.
        cron.find_next_occurrence(&Utc::now(), false).map_err(|e| ScheduleError::Cron(text.into(), e.to_string()))?;
        Ok(Self::Cron(Box::new(cron), text.to_string()))
    }

    /// How long after `now` the next regular run is due. `first` is true for the run right after start-up.
    pub fn delay_after(&self, now: DateTime<Utc>, first: bool) -> Duration {
        match self {
            Self::Every(_) if first => Duration::ZERO,
            Self::Every(interval) => *interval,
            Self::Cron(cron, _) => cron
                .find_next_occurrence(&now, false)
                .ok()
                .and_then(|next| (next - now).to_std().ok())
                // Checked at parse time to have a next occurrence; a day is a safe fallback if the calendar ends.
                .unwrap_or(Duration::from_secs(86_400)),
        }
    }

    /// The schedule as configured, for status.
    pub fn describe(&self) -> String {
        match self {
            Self::Every(interval) => format!("every {}", humantime::format_duration(*interval)),
            Self::Cron(_, text) => format!("cron {text}"),
        }
    }
}

/// How long to wait before retry number `failures` (1-based): doubling from [`RETRY_BASE`], at most [`RETRY_MAX`].
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    RETRY_BASE.saturating_mul(factor).min(RETRY_MAX)
}

/// Runs `job` on `schedule` until `shutdown` is cancelled. After a failure the job is retried with backoff, but
/// never later than the next regular run. `on_next` hears when the next run is due.
pub async fn run<F, Fut, E>(
    schedule: Schedule,
    mut job: F,
    on_next: impl Fn(DateTime<Utc>),
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let mut delay = schedule.delay_after(Utc::now(), true);
    let mut failures = 0u32;
    loop {
        on_next(Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let regular = schedule.delay_after(Utc::now(), false);
        delay = match job().await {
            Ok(()) => {
                failures = 0;
                regular
            }
            Err(_) => {
                failures += 1;
                retry_delay(failures).min(regular)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn parses_intervals_and_cron_and_refuses_nonsense() {
        assert!(matches!(Schedule::every("30m").unwrap(), Schedule::Every(d) if d == Duration::from_secs(1800)));
        assert!(Schedule::every("soon").is_err());
        assert!(Schedule::every("10ms").is_err());
        let cron = Schedule::cron("0 */6 * * *").unwrap();
        let midnight = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(cron.delay_after(midnight, true), Duration::from_secs(6 * 3600));
        assert_eq!(cron.describe(), "cron 0 */6 * * *");
        assert!(Schedule::cron("61 * * * *").is_err());
        assert!(Schedule::cron("0 0 30 2 *").is_err(), "30 February never comes");
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(5));
        assert_eq!(retry_delay(2), Duration::from_secs(10));
        assert_eq!(retry_delay(4), Duration::from_secs(40));
        assert_eq!(retry_delay(30), RETRY_MAX);
    }

    /// Runs the loop in paused time with a job whose results are scripted; returns when each call happened.
    async fn record(interval: Duration, results: Vec<bool>, run_for: Duration) -> Vec<Duration> {
        let start = tokio::time::Instant::now();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let results = Arc::new(Mutex::new(results.into_iter()));
        let shutdown = CancellationToken::new();
        let job = {
            let calls = calls.clone();
            move || {
                calls.lock().unwrap().push(start.elapsed());
                let ok = results.lock().unwrap().next().unwrap_or(true);
                async move { if ok { Ok(()) } else { Err("failed") } }
            }
        };
        let task = tokio::spawn(run(Schedule::Every(interval), job, |_| {}, shutdown.clone()));
        tokio::time::sleep(run_for).await;
        shutdown.cancel();
        task.await.unwrap();
        calls.lock().unwrap().clone()
    }

    #[tokio::test(start_paused = true)]
    async fn runs_at_start_then_every_interval() {
        let calls = record(Duration::from_secs(60), vec![], Duration::from_secs(185)).await;
        let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [0, 60, 120, 180]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_with_backoff_then_return_to_the_interval() {
        let calls = record(Duration::from_secs(60), vec![false, false, false, true], Duration::from_secs(100)).await;
        let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
        // 0 fails, retry after 5 s, fails, after 10 s, fails, after 20 s succeeds, then the regular 60 s.
        assert_eq!(secs, [0, 5, 15, 35, 95]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_never_waits_past_the_next_regular_run() {
        let calls = record(Duration::from_secs(8), vec![false, false, false], Duration::from_secs(30)).await;
        let secs: Vec<u64> = calls.iter().map(Duration::as_secs).collect();
        // Backoff would be 5, 10, 20 s; the 8 s interval caps it.
        assert_eq!(secs, [0, 5, 13, 21, 29]);
    }
}
