//! What a recovery from lost quorum may restore, decided right before anything is deleted: the one member a fresh
//! backup may come from, and the checks that backup must pass. Pure: `act` asks etcd and the sidecar, this decides.

use proto::backup::BackupInfo;
use proto::cluster::ServedRevision;

use crate::membership::Progress;

/// A member pod that runs, as the recovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Survivor {
    /// The pod (member) name.
    pub name: String,
    /// Where it is reached.
    pub endpoint: String,
    /// What it said of itself; `None` when it did not answer.
    pub progress: Option<Progress>,
}

/// The member a fresh backup may be taken from: the voting member that has committed the most, once it has
/// applied at least what any other member applied (a snapshot holds what was applied). A learner never (its backend
/// may be empty while it receives the leader's snapshot). None at all while a member pod that may hold data
/// (`holding`: running, or restarting in a loop) did not answer: it may hold writes the others never got, and the
/// pods are deleted once the recovery starts.
pub fn fresh_source<'a>(survivors: &'a [Survivor], holding: &[String]) -> Result<&'a Survivor, String> {
    let answered = |name: &String| survivors.iter().any(|s| &s.name == name && s.progress.is_some());
    let silent: Vec<&str> = holding.iter().filter(|name| !answered(name)).map(String::as_str).collect();
    if !silent.is_empty() {
        return Err(format!(
            "member pods {} run (or restart) but did not answer, and may hold writes newer than any other member's",
            silent.join(", ")
        ));
    }
    let source = survivors
        .iter()
        .filter(|s| s.progress.is_some_and(|p| !p.learner))
        .max_by(|a, b| {
            let index = |s: &Survivor| s.progress.map_or(0, |p| p.raft_index);
            // The most committed; of equals, the first by name.
            index(a).cmp(&index(b)).then_with(|| b.name.cmp(&a.name))
        })
        .ok_or(if survivors.is_empty() { "no member pod runs" } else { "no voting member runs (only learners)" })?;
    let applied = source.progress.map_or(0, |p| p.applied);
    if let Some(ahead) = survivors.iter().find(|s| s.progress.is_some_and(|p| p.applied > applied)) {
        return Err(format!(
            "{} committed the most but has applied less than {} (raft index {} against {}): waiting for it to \
             apply what it committed",
            source.name,
            ahead.name,
            applied,
            ahead.progress.map_or(0, |p| p.applied)
        ));
    }
    Ok(source)
}

/// Why `backup` must not be restored: its revision is below one this etcd cluster is known to have reached (a
/// backup of the same etcd cluster in `stored`, or the highest revision the controller saw it serve).
pub fn behind(backup: &BackupInfo, stored: &[BackupInfo], highest_seen: Option<&ServedRevision>) -> Option<String> {
    let same = |id: &str| id == backup.etcd_cluster_id;
    let ahead = stored.iter().filter(|s| same(&s.etcd_cluster_id)).max_by_key(|s| s.revision);
    if let Some(stored) = ahead.filter(|s| s.revision > backup.revision) {
        return Some(format!(
            "the fresh backup {} holds revision {}, below backup {} of the same cluster (revision {}): the member \
             it came from is behind what the cluster acknowledged",
            backup.name, backup.revision, stored.name, stored.revision
        ));
    }
    if let Some(seen) = highest_seen.filter(|s| same(&s.etcd_cluster_id) && s.revision > backup.revision) {
        return Some(format!(
            "the fresh backup {} holds revision {}, below revision {} that the controller saw this cluster serve: \
             the member it came from is behind what the cluster acknowledged",
            backup.name, backup.revision, seen.revision
        ));
    }
    None
}

/// Why a seed running `target` must not restore a backup taken from etcd `backup_version`: etcd moves one minor at
/// a time and never back below the version that wrote the data, so the seed runs the backup's minor or the next.
/// An unreadable recorded version is no reason to refuse (backups of older sidecars record it too).
pub fn seed_refused(backup: &str, backup_version: &str, target: crate::version::Version) -> Option<String> {
    let recorded = crate::version::Version::parse(backup_version)?;
    let (own, next) = proto::backup::seed_minors(backup_version)?;
    if target.minor == own || target.minor == next {
        return None;
    }
    Some(format!(
        "backup {backup} was taken from etcd {recorded}, and spec.version {target} cannot run its data (etcd moves \
         one minor at a time and never below the version that wrote it): set spec.version to 3.{}.x or 3.{}.x; \
         nothing was deleted or created",
        recorded.minor,
        recorded.minor + 1
    ))
}

/// The stored backup to restore instead of a `fresh` one that lags: the highest revision of the same etcd cluster
/// above the fresh one's (the same history, further on), unless it is behind what the cluster served itself.
pub fn better_stored<'a>(
    fresh: &BackupInfo,
    stored: &'a [BackupInfo],
    highest_seen: Option<&ServedRevision>,
) -> Option<&'a BackupInfo> {
    let best = stored
        .iter()
        .filter(|s| s.etcd_cluster_id == fresh.etcd_cluster_id && s.revision > fresh.revision)
        .max_by_key(|s| s.revision)?;
    behind(best, &[], highest_seen).is_none().then_some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn survivor(name: &str, answer: Option<(u64, bool)>) -> Survivor {
        Survivor {
            name: name.into(),
            endpoint: format!("http://{name}:2379"),
            progress: answer.map(|(raft_index, learner)| Progress { raft_index, applied: raft_index, learner }),
        }
    }

    fn running(survivors: &[Survivor]) -> Vec<String> {
        survivors.iter().map(|s| s.name.clone()).collect()
    }

    #[test]
    fn the_most_committed_voter_gives_the_backup() {
        let all =
            [survivor("a", Some((40, false))), survivor("b", Some((41, false))), survivor("c", Some((41, false)))];
        assert_eq!(fresh_source(&all, &running(&all)).unwrap().name, "b");
    }

    #[test]
    fn a_learner_never_gives_the_backup_however_far_it_claims_to_be() {
        let all = [survivor("a", Some((40, false))), survivor("d", Some((30, true)))];
        assert_eq!(fresh_source(&all, &running(&all)).unwrap().name, "a");
        // A learner that applied more than every voter that runs holds committed writes they lack: nothing is
        // taken (it cannot be the source: its backend may be a snapshot in flight).
        let ahead = [survivor("a", Some((40, false))), survivor("d", Some((90, true)))];
        assert!(fresh_source(&ahead, &running(&ahead)).is_err());
        let only_learner = [survivor("d", Some((90, true)))];
        assert!(fresh_source(&only_learner, &running(&only_learner)).unwrap_err().contains("only learners"));
        assert!(fresh_source(&[], &[]).is_err());
    }

    #[test]
    fn a_running_member_that_did_not_answer_withholds_every_fresh_backup() {
        // Withholding the answer of the one member that may be most advanced: no other member is taken instead.
        let all = [survivor("a", Some((40, false))), survivor("b", None), survivor("c", Some((10, false)))];
        let why = fresh_source(&all, &running(&all)).unwrap_err();
        assert!(why.contains("member pods b run"), "{why}");
    }

    #[test]
    fn a_member_restarting_in_a_loop_withholds_every_fresh_backup_too() {
        // b is not running (so not asked), but its etcd restarts on data that may be newer than a's.
        let all = [survivor("a", Some((40, false)))];
        let why = fresh_source(&all, &["a".into(), "b".into()]).unwrap_err();
        assert!(why.contains("member pods b run (or restart)"), "{why}");
        assert_eq!(fresh_source(&all, &["a".into()]).unwrap().name, "a", "nothing else may hold data");
    }

    #[test]
    fn the_source_must_have_applied_what_any_other_member_applied() {
        let mut all = [survivor("a", Some((50, false))), survivor("b", Some((45, false)))];
        all[0].progress.as_mut().unwrap().applied = 44;
        let why = fresh_source(&all, &running(&all)).unwrap_err();
        assert!(why.contains("a committed the most but has applied less than b"), "{why}");
        all[0].progress.as_mut().unwrap().applied = 45;
        assert_eq!(fresh_source(&all, &running(&all)).unwrap().name, "a");
    }

    fn info(name: &str, cluster: &str, revision: i64) -> BackupInfo {
        BackupInfo {
            name: name.into(),
            cluster_name: "demo".into(),
            cluster_uid: None,
            etcd_cluster_id: cluster.into(),
            etcd_member: String::new(),
            revision,
            etcd_version: "3.5.35".into(),
            raw_size: 0,
            compressed_size: 0,
            sha256: String::new(),
            started_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: chrono::DateTime::UNIX_EPOCH,
            pinned: None,
        }
    }

    fn seen(cluster: &str, revision: i64) -> ServedRevision {
        ServedRevision { etcd_cluster_id: cluster.into(), revision, seen_at: None }
    }

    #[test]
    fn a_fresh_backup_behind_a_stored_one_or_what_the_cluster_served_is_refused() {
        let fresh = info("fresh", "c1", 100);
        assert_eq!(behind(&fresh, &[], None), None);
        assert_eq!(behind(&fresh, &[info("old", "c1", 100)], Some(&seen("c1", 100))), None, "equal is fine");
        // The highest stored revision counts, not the newest by time.
        let stored = [info("later", "c1", 90), info("newer", "c1", 101), info("old", "c1", 50)];
        assert!(behind(&fresh, &stored, None).unwrap().contains("below backup newer"));
        assert!(behind(&fresh, &[], Some(&seen("c1", 500))).unwrap().contains("below revision 500"));
        // Another etcd cluster (before a restore, which gives a new ID) says nothing about this one's revisions.
        assert_eq!(behind(&fresh, &[info("other", "c0", 900)], Some(&seen("c0", 900))), None);
    }

    #[test]
    fn a_seed_runs_the_backups_minor_or_the_next() {
        let v = |text: &str| crate::version::Version::parse(text).unwrap();
        assert_eq!(seed_refused("b", "3.5.17", v("3.5.35")), None);
        assert_eq!(seed_refused("b", "3.5.17", v("3.6.16")), None, "an upgrade through the restore");
        assert!(seed_refused("b", "3.4.23", v("3.6.16")).unwrap().contains("3.4.x or 3.5.x"), "skips a minor");
        assert!(seed_refused("b", "3.6.16", v("3.5.35")).is_some(), "below the version that wrote it");
        assert_eq!(seed_refused("b", "", v("3.5.35")), None);
    }

    #[test]
    fn a_lagging_fresh_backup_gives_way_to_a_stored_one_that_holds_more_unless_that_one_lags_too() {
        let fresh = info("fresh", "c1", 100);
        let stored = [info("older", "c1", 90), info("ahead", "c1", 150), info("other", "c0", 900)];
        assert_eq!(better_stored(&fresh, &stored, None).map(|b| b.name.as_str()), Some("ahead"));
        assert_eq!(better_stored(&fresh, &stored, Some(&seen("c1", 150))).map(|b| b.name.as_str()), Some("ahead"));
        assert_eq!(better_stored(&fresh, &stored, Some(&seen("c1", 151))), None, "behind what was served");
        assert_eq!(better_stored(&fresh, &stored[..1], None), None, "nothing holds more");
    }
}
