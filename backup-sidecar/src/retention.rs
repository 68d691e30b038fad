//! Which backups a retention policy lets go. Pure: the caller lists and deletes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use proto::backup::BackupManifest;

/// How many and how old backups to keep. With neither limit set, every backup is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep at most this many backups.
    pub max_backups: Option<usize>,
    /// Keep only backups that finished less than this long ago.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// The backups of etcd cluster `cluster_id` to delete from `newest_first` (sorted by
    /// [`crate::storage::sort_newest_first`]). Only that cluster's backups are counted and deleted: a cluster
    /// re-created under an old name (or restored, which gives it a new cluster ID) never deletes the backups of the
    /// cluster before it, which may be the only copy of its data. The newest backup is never deleted, whatever its
    /// age, so retention can never leave a cluster with no backup. Nor is any backup of a higher revision than
    /// `published`, the one just taken: a backup taken from a member that lags (a recovery's, or one asked of a
    /// named member) must never cost the cluster a backup that holds more. Nor is the newest pinned backup in
    /// `newest_first` (the rollback point of the last upgrade; an older pinned one counts as any other).
    pub fn expired<'a>(
        &self,
        newest_first: &'a [BackupManifest],
        cluster_id: &str,
        published: i64,
        now: DateTime<Utc>,
    ) -> Vec<&'a BackupManifest> {
        // The rollback point of the last upgrade, whichever etcd cluster it was taken of.
        let pinned = newest_first.iter().find(|backup| backup.info.pinned.is_some()).map(|b| b.info.name.as_str());
        newest_first
            .iter()
            .filter(|backup| backup.info.etcd_cluster_id == cluster_id)
            .enumerate()
            .skip(1)
            .filter(|(_, backup)| backup.info.revision <= published)
            .filter(|(_, backup)| Some(backup.info.name.as_str()) != pinned)
            .filter(|(index, backup)| {
                let too_many = self.max_backups.is_some_and(|max| *index >= max.max(1));
                let too_old = self.max_age.is_some_and(|max_age| {
                    now.signed_duration_since(backup.info.finished_at).to_std().is_ok_and(|age| age > max_age)
                });
                too_many || too_old
            })
            .map(|(_, backup)| backup)
            .collect()
    }

    /// A short description for logs and status.
    pub fn describe(&self) -> String {
        match (self.max_backups, self.max_age) {
            (None, None) => "keep all".to_string(),
            (Some(n), None) => format!("keep {n}"),
            (None, Some(age)) => format!("keep {}", humantime::format_duration(age)),
            (Some(n), Some(age)) => {
                format!("keep {n}, at most {}", humantime::format_duration(age))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{manifest_for, sort_newest_first};
    use proto::backup::BackupInfo;

    fn backup(name: &str, revision: i64, minutes_ago: i64, now: DateTime<Utc>) -> BackupManifest {
        let at = now - chrono::Duration::minutes(minutes_ago);
        manifest_for(BackupInfo {
            name: name.into(),
            cluster_name: "c".into(),
            cluster_uid: None,
            etcd_cluster_id: "1".into(),
            etcd_member: "m".into(),
            revision,
            etcd_version: "3.4.23".into(),
            raw_size: 1,
            compressed_size: 1,
            sha256: String::new(),
            started_at: at,
            finished_at: at,
            pinned: None,
        })
    }

    fn names(list: Vec<&BackupManifest>) -> Vec<&str> {
        list.into_iter().map(|b| b.info.name.as_str()).collect()
    }

    #[test]
    fn keeps_the_newest_n_sorted_on_time_not_on_names() {
        let now = Utc::now();
        // Names that sort wrongly as strings: r9 > r10 as text.
        let mut all = vec![
            backup("r9", 9, 30, now),
            backup("r10", 10, 20, now),
            backup("r100", 100, 10, now),
            backup("r2", 2, 40, now),
        ];
        sort_newest_first(&mut all);
        let policy = Retention { max_backups: Some(2), max_age: None };
        assert_eq!(names(policy.expired(&all, "1", 100, now)), ["r9", "r2"]);
    }

    #[test]
    fn drops_backups_older_than_max_age_but_never_the_newest() {
        let now = Utc::now();
        let mut all = vec![backup("a", 3, 120, now), backup("b", 2, 180, now), backup("c", 1, 240, now)];
        sort_newest_first(&mut all);
        let policy = Retention { max_backups: None, max_age: Some(Duration::from_secs(3600)) };
        assert_eq!(names(policy.expired(&all, "1", 3, now)), ["b", "c"]);
    }

    #[test]
    fn both_limits_apply_and_no_limit_keeps_everything() {
        let now = Utc::now();
        let mut all =
            vec![backup("a", 4, 1, now), backup("b", 3, 2, now), backup("c", 2, 90, now), backup("d", 1, 3, now)];
        sort_newest_first(&mut all);
        let both = Retention { max_backups: Some(3), max_age: Some(Duration::from_secs(3600)) };
        assert_eq!(names(both.expired(&all, "1", 4, now)), ["c"]);
        let none = Retention::default();
        assert!(none.expired(&all, "1", 4, now).is_empty());
        let zero = Retention { max_backups: Some(0), max_age: None };
        assert_eq!(zero.expired(&all, "1", 4, now).len(), 3, "max 0 still keeps the newest");
    }

    #[test]
    fn only_the_current_clusters_backups_are_counted_and_deleted() {
        let now = Utc::now();
        let other = |name: &str, minutes_ago| {
            let mut b = backup(name, 1, minutes_ago, now);
            b.info.etcd_cluster_id = "2".into();
            b
        };
        // The cluster re-created under this name (ID 1) has two backups; the one before it (ID 2) left three older.
        let mut all = vec![
            backup("new-b", 5, 1, now),
            backup("new-a", 4, 2, now),
            other("old-c", 60),
            other("old-b", 120),
            other("old-a", 180),
        ];
        sort_newest_first(&mut all);
        let keep_one = Retention { max_backups: Some(1), max_age: Some(Duration::from_secs(600)) };
        assert_eq!(names(keep_one.expired(&all, "1", 5, now)), ["new-a"], "the old cluster's backups are untouched");
        assert_eq!(names(keep_one.expired(&all, "2", 1, now)), ["old-b", "old-a"]);
    }

    #[test]
    fn a_backup_that_holds_less_never_costs_one_that_holds_more() {
        let now = Utc::now();
        // A recovery's backup from a lagging member (revision 3) is the newest by time; the older ones hold more.
        let mut all = vec![backup("lagging", 3, 0, now), backup("complete", 90, 30, now), backup("old", 2, 60, now)];
        sort_newest_first(&mut all);
        let keep_one = Retention { max_backups: Some(1), max_age: Some(Duration::from_secs(60)) };
        assert_eq!(names(keep_one.expired(&all, "1", 3, now)), ["old"], "the higher revision is kept");
        assert_eq!(names(keep_one.expired(&all, "1", 90, now)), ["complete", "old"], "once one holds as much");
    }

    #[test]
    fn the_newest_pinned_backup_is_kept_and_an_older_pin_is_released() {
        let now = Utc::now();
        let pin = |mut b: BackupManifest| {
            b.info.pinned = Some("before the upgrade to 3.6.16".into());
            b
        };
        let mut all = vec![
            backup("d", 40, 1, now),
            backup("c", 30, 2, now),
            pin(backup("b", 20, 3, now)),
            pin(backup("a", 10, 4, now)),
        ];
        sort_newest_first(&mut all);
        let keep_one = Retention { max_backups: Some(1), max_age: None };
        assert_eq!(names(keep_one.expired(&all, "1", 40, now)), ["c", "a"], "b is the rollback point");
    }
}
