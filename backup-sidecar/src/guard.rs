//! `etcd-backup-sidecar guard`: run before etcd starts on a member's volume, it refuses a volume that belongs to
//! another cluster or member, or that holds etcd data it did not write; on an empty volume it writes the guard.

use std::path::{Path, PathBuf};

use proto::backup::{GUARD_FILE, VolumeGuard};

/// Why a volume is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    /// The volume is not this member's.
    #[error("volume refused: {0}")]
    Refused(String),
    /// The volume is this member's (or empty), but the pod's user cannot read and write it: its data is intact.
    #[error("volume unusable: {0}")]
    Unusable(String),
    /// The volume could not be read or written.
    #[error("{0}")]
    Io(String),
}

/// What the member about to start is.
#[derive(Clone, Debug)]
pub struct Expected {
    /// The volume's root (the guard lives there).
    pub volume: PathBuf,
    /// etcd's data directory, inside the volume.
    pub data_dir: PathBuf,
    /// The EtcdCluster's UID.
    pub cluster_uid: String,
    /// `namespace/name`.
    pub cluster: String,
    /// The member name.
    pub member: String,
    /// The member's etcd ID (hex), when known.
    pub member_id: Option<String>,
    /// The member ran on this volume before: it must hold its guard and its data (an empty volume now is a lost one,
    /// and etcd would start as that member with no log).
    pub expect_data: bool,
}

/// What the check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The volume was empty: the guard was written.
    Claimed,
    /// The guard names this member.
    Matches,
}

/// Checks the volume against `expected`, writing the guard on an empty volume (and the member ID when it is learnt).
pub fn check(expected: &Expected) -> Result<Verdict, GuardError> {
    let path = expected.volume.join(GUARD_FILE);
    let io = |what: &str, e: std::io::Error| GuardError::Io(format!("{what} {}: {e}", path.display()));
    let found = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice::<VolumeGuard>(&bytes).map_err(|e| {
            GuardError::Refused(format!(
                "its guard {} cannot be read ({e}): whose data it holds is unknown",
                path.display()
            ))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            usable(&expected.volume, &expected.data_dir)?;
            return Err(GuardError::Unusable(format!(
                "its guard {} cannot be read by uid {} ({e}): the data is left as it is; give the volume's files to \
                 the member's user (`chown -R`), or set spec.pod.securityContext to the user that wrote them",
                path.display(),
                nix::unistd::geteuid()
            )));
        }
        Err(e) => return Err(io("reading", e)),
    };
    // Whose volume it is comes first: another cluster's is refused as such, whatever its files' owner.
    if let Some(guard) = &found {
        identity(guard, expected)?;
    }
    usable(&expected.volume, &expected.data_dir)?;
    let has_data = holds_data(&expected.data_dir).map_err(|e| io("listing", e))?;
    if expected.expect_data && (found.is_none() || !has_data) {
        return Err(GuardError::Refused(format!(
            "member {} ran on this claim, but the volume holds no {}: its data is gone (a new or wiped volume), \
             and etcd is not started on it as that member",
            expected.member,
            if found.is_none() { "guard" } else { "data" }
        )));
    }
    let Some(guard) = found else {
        if has_data {
            return Err(GuardError::Refused(format!(
                "it holds etcd data ({}) but no guard: it was not written by this member, and is not started on",
                expected.data_dir.display()
            )));
        }
        write(&path, &guard_of(expected)).map_err(|e| io("writing", e))?;
        return Ok(Verdict::Claimed);
    };
    if guard.member_id.is_none() && expected.member_id.is_some() {
        write(&path, &guard_of(expected)).map_err(|e| io("writing", e))?;
    }
    Ok(Verdict::Matches)
}

/// Refuses a guard that names another cluster, member or etcd member ID.
fn identity(guard: &VolumeGuard, expected: &Expected) -> Result<(), GuardError> {
    if guard.cluster_uid != expected.cluster_uid {
        return Err(GuardError::Refused(format!(
            "it belongs to cluster {} (uid {}), not to {} (uid {})",
            guard.cluster, guard.cluster_uid, expected.cluster, expected.cluster_uid
        )));
    }
    if guard.member != expected.member {
        return Err(GuardError::Refused(format!(
            "it belongs to member {} of {}, not to {}",
            guard.member, guard.cluster, expected.member
        )));
    }
    match (&guard.member_id, &expected.member_id) {
        (Some(found), Some(wanted)) if !found.eq_ignore_ascii_case(wanted) => Err(GuardError::Refused(format!(
            "it belongs to etcd member {found} of {}, not to member {wanted} (an earlier member of the same name)",
            guard.cluster
        ))),
        _ => Ok(()),
    }
}

/// Refuses a volume this process cannot use as etcd will: its root must take new files (the guard, a data directory
/// made by etcd or a restore), and everything in the data directory must be readable and writable. The usual
/// cause is data a member running as root wrote, on a volume whose driver does not give it to the pod's `fsGroup`
/// (hostPath does not): etcd would fail on it at start, and be restarted on it again and again.
fn usable(volume: &Path, data_dir: &Path) -> Result<(), GuardError> {
    use nix::unistd::{AccessFlags, access};
    let refuse = |path: &Path, e: nix::Error| {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::symlink_metadata(path)
            .map(|m| format!("owned by uid {} gid {}, mode {:o}", m.uid(), m.gid(), m.mode() & 0o7777))
            .unwrap_or_else(|e| format!("not inspectable: {e}"));
        GuardError::Unusable(format!(
            "{} ({owner}) cannot be used by uid {} gid {} ({e}): its files were written by another user (or the \
             volume is read-only), and its driver did not give them to the pod's fsGroup. The data is left as it \
             is: give the files to the member's user (`chown -R`), or set spec.pod.securityContext to the user that \
             wrote them",
            path.display(),
            nix::unistd::geteuid(),
            nix::unistd::getegid(),
        ))
    };
    let rwx = AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK;
    access(volume, rwx).map_err(|e| refuse(volume, e))?;
    let mut pending = vec![data_dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        // The data directory itself is followed if it is a link; links inside it are etcd's business.
        let metadata = if path == data_dir { std::fs::metadata(&path) } else { std::fs::symlink_metadata(&path) };
        let metadata = match metadata {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(GuardError::Io(format!("inspecting {}: {e}", path.display()))),
        };
        if metadata.is_symlink() {
            continue;
        }
        let wanted = if metadata.is_dir() { rwx } else { AccessFlags::R_OK | AccessFlags::W_OK };
        access(&path, wanted).map_err(|e| refuse(&path, e))?;
        if metadata.is_dir() {
            let entries =
                std::fs::read_dir(&path).map_err(|e| GuardError::Io(format!("listing {}: {e}", path.display())))?;
            for entry in entries {
                pending.push(entry.map_err(|e| GuardError::Io(format!("listing {}: {e}", path.display())))?.path());
            }
        }
    }
    Ok(())
}

fn guard_of(expected: &Expected) -> VolumeGuard {
    VolumeGuard {
        cluster_uid: expected.cluster_uid.clone(),
        cluster: expected.cluster.clone(),
        member: expected.member.clone(),
        member_id: expected.member_id.clone(),
    }
}

/// Whether `dir` exists and is not empty.
fn holds_data(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes the guard through a temporary file and a rename, synced: a crash leaves the old guard or the new one.
fn write(path: &Path, guard: &VolumeGuard) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // One left by a crash, possibly by another user: replaced, not written through.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec_pretty(guard).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(volume: &Path, uid: &str, member: &str, id: Option<&str>) -> Expected {
        Expected {
            volume: volume.to_path_buf(),
            data_dir: volume.join("data"),
            cluster_uid: uid.into(),
            cluster: "ns/demo".into(),
            member: member.into(),
            member_id: id.map(Into::into),
            expect_data: false,
        }
    }

    #[test]
    fn an_empty_volume_is_claimed_and_then_only_its_member_starts_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let me = expected(dir.path(), "uid-1", "demo-0001", None);
        assert_eq!(check(&me), Ok(Verdict::Claimed));
        std::fs::create_dir_all(dir.path().join("data/member/wal")).unwrap();
        assert_eq!(check(&me), Ok(Verdict::Matches), "its own data, again");
        // The member ID, once known, is recorded and then held to.
        assert_eq!(check(&expected(dir.path(), "uid-1", "demo-0001", Some("8e9e05c52164694d"))), Ok(Verdict::Matches));
        assert_eq!(check(&me), Ok(Verdict::Matches), "an unknown ID is no conflict");
        let other_id = check(&expected(dir.path(), "uid-1", "demo-0001", Some("1234"))).unwrap_err();
        assert!(matches!(&other_id, GuardError::Refused(why) if why.contains("8e9e05c52164694d")), "{other_id}");

        let other_cluster = check(&expected(dir.path(), "uid-2", "demo-0001", None)).unwrap_err();
        assert!(matches!(&other_cluster, GuardError::Refused(why) if why.contains("uid-1")), "{other_cluster}");
        let other_member = check(&expected(dir.path(), "uid-1", "demo-0002", None)).unwrap_err();
        assert!(matches!(&other_member, GuardError::Refused(why) if why.contains("demo-0001")), "{other_member}");
    }

    #[test]
    fn a_member_that_ran_on_its_volume_is_never_started_on_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let again = Expected { expect_data: true, ..expected(dir.path(), "uid-1", "demo-0001", Some("abc")) };
        let refused = check(&again).unwrap_err();
        assert!(matches!(&refused, GuardError::Refused(why) if why.contains("no guard")), "{refused}");
        assert!(!dir.path().join(GUARD_FILE).exists(), "nothing written: the volume stays as it was found");
        // Its guard there, its data gone.
        assert_eq!(check(&expected(dir.path(), "uid-1", "demo-0001", Some("abc"))), Ok(Verdict::Claimed));
        assert!(matches!(check(&again), Err(GuardError::Refused(why)) if why.contains("no data")));
        std::fs::create_dir_all(dir.path().join("data/member/wal")).unwrap();
        assert_eq!(check(&again), Ok(Verdict::Matches));
    }

    #[test]
    fn data_without_a_guard_or_an_unreadable_guard_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data/member/snap")).unwrap();
        let me = expected(dir.path(), "uid-1", "demo-0001", None);
        assert!(matches!(check(&me), Err(GuardError::Refused(why)) if why.contains("no guard")));
        assert!(!dir.path().join(GUARD_FILE).exists(), "nothing written");
        std::fs::write(dir.path().join(GUARD_FILE), b"{not json").unwrap();
        assert!(matches!(check(&me), Err(GuardError::Refused(why)) if why.contains("cannot be read")));
        // An empty data directory (a restore's leftover of nothing) is no data.
        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(empty.path().join("data")).unwrap();
        assert_eq!(check(&expected(empty.path(), "uid-1", "demo-0001", None)), Ok(Verdict::Claimed));
    }
}
