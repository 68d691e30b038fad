//! etcd versions: which ones the controller runs, which changes between them are safe, and the flags each version
//! takes, in one table.
//!
//! The rules are etcd's own (its upgrade and downgrade guides), enforced here because etcd itself only warns:
//! one minor at a time, patch floors before the next minor, no known-bad patches, and no minor downgrade once
//! the cluster version has moved on.

use std::fmt;

/// The minors the controller runs.
pub const SUPPORTED_MINORS: std::ops::RangeInclusive<u32> = 4..=7;

/// An etcd 3.x release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// The minor (3.**5**.35).
    pub minor: u32,
    /// The patch (3.5.**35**).
    pub patch: u32,
}

impl Version {
    /// `3.5.35` or `v3.5.35`; `None` for anything else (another major, a pre-release, a missing patch).
    pub fn parse(version: &str) -> Option<Self> {
        let version = version.trim();
        let version = version.strip_prefix('v').unwrap_or(version);
        let mut parts = version.split('.');
        let (Some("3"), Some(minor), Some(patch), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        let number = |s: &str| (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?;
        Some(Self { minor: number(minor)?, patch: number(patch)? })
    }

    /// A cluster version as etcd reports it (`3.5.0`: etcd reports the minor with patch 0).
    pub fn same_minor(self, other: Self) -> bool {
        self.minor == other.minor
    }

    /// The image tag: `v3.5.35`.
    pub fn tag(self) -> String {
        format!("v{self}")
    }

    /// `--bump-revision` and `--mark-compacted` of `snapshot restore` exist from 3.4.27, 3.5.10 and 3.6.0.
    pub fn restores_with_bump(self) -> bool {
        match self.minor {
            4 => self.patch >= 27,
            5 => self.patch >= 10,
            minor => minor >= 6,
        }
    }

    /// The tool that restores a snapshot into a data directory: `etcdutl` from 3.5 (3.4 has only `etcdctl`).
    pub fn restore_tool(self) -> &'static str {
        if self.minor >= 5 { "etcdutl" } else { "etcdctl" }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "3.{}.{}", self.minor, self.patch)
    }
}

/// The lowest patch of a minor that may move to the next minor, and the one etcd's guide recommends (below it the
/// move is allowed, with a warning).
pub fn patch_floor(minor: u32) -> Option<(u32, u32)> {
    match minor {
        // 3.5.26 syncs the v3 membership from v2 (zombie members after 3.6; etcd blog 2025-12-17); from 3.5.32
        // `etcdutl check v2store` also covers the WAL (the 3.6 upgrade guide's floor).
        5 => Some((26, 32)),
        // The 3.7 upgrade guide: every member on 3.6.11 or later.
        6 => Some((11, 11)),
        _ => None,
    }
}

/// Patches that must never run: 3.5.0 to 3.5.2 can lose data consistency (etcd's postmortem, fixed in 3.5.3).
pub fn known_bad(version: Version) -> Option<&'static str> {
    (version.minor == 5 && version.patch <= 2)
        .then_some("etcd 3.5.0 to 3.5.2 have a data inconsistency bug (fixed in 3.5.3); use the newest 3.5 patch")
}

/// Why a version or a change of version is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// A stable reason (`UnsupportedVersion`, `SkipsMinor`, `BelowPatchFloor`, `KnownBadVersion`, `Downgrade`,
    /// `FlagsRefused`).
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// What a version change is, once allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A patch within the minor the cluster runs (up or down).
    Patch,
    /// Up one minor.
    Minor,
    /// Back to the cluster version's minor while some members run the next one: the cluster version has not
    /// moved, so their binaries may go back.
    Rollback,
}

/// Whether a cluster whose members run `running` (their server versions) at cluster version `cluster` (etcd's,
/// when known) may go to `target`. `Ok(None)` when it is there already; `Ok(Some((change, warning)))` otherwise.
pub fn check(
    running: &[Version],
    cluster: Option<Version>,
    target: Option<Version>,
    spec: &str,
) -> Result<Option<(Change, Option<String>)>, Refusal> {
    let target = supported(target, spec)?;
    let (Some(&lowest), Some(&highest)) = (running.iter().min(), running.iter().max()) else {
        return Ok(None);
    };
    if running.iter().all(|&v| v == target) {
        return Ok(None);
    }
    // The cluster version is the lowest minor every member runs; before etcd reports it, the lowest server's.
    let floor_minor = cluster.map_or(lowest.minor, |c| c.minor);
    if target.minor < floor_minor {
        return Err(refuse(
            "Downgrade",
            format!(
                "{spec} is a downgrade from cluster version 3.{floor_minor}: once every member ran 3.{floor_minor}, \
                 older binaries refuse its data. Set spec.version back to 3.{floor_minor}.x; to go back, restore the \
                 backup taken before the upgrade (status.upgrade names it while one runs, status.lastUpgrade after; it stays pinned) into a new cluster"
            ),
        ));
    }
    // Every member runs the higher minor: etcd moves the cluster version within seconds, a race the controller
    // cannot win, and a member rolled back after it moved refuses its data. A rollback needs a member still
    // on the old minor, which holds the cluster version where it is.
    if target.minor == floor_minor && lowest.minor > floor_minor {
        return Err(refuse(
            "Downgrade",
            format!(
                "{spec} is a downgrade: every member already runs 3.{}, and etcd moves the cluster version to it \
                 within seconds, after which older binaries refuse its data. Set spec.version back to 3.{}.x; to go \
                 back, restore the backup taken before the upgrade into a new cluster",
                lowest.minor, lowest.minor
            ),
        ));
    }
    if target.minor == floor_minor {
        let change = if highest.minor > floor_minor { Change::Rollback } else { Change::Patch };
        return Ok(Some((change, None)));
    }
    if target.minor > floor_minor + 1 || lowest.minor + 1 < target.minor {
        return Err(refuse(
            "SkipsMinor",
            format!(
                "{spec} skips a minor: the cluster runs 3.{floor_minor}, and etcd upgrades one minor at a time. Set \
                 3.{}.x first, then {spec}",
                floor_minor + 1
            ),
        ));
    }
    // Up one minor: every member that is not there yet must be on its minor's floor.
    let mut warning = None;
    if let Some((floor, recommended)) = patch_floor(floor_minor)
        && let Some(low) = running.iter().filter(|v| v.minor == floor_minor).min()
    {
        if low.patch < floor {
            return Err(refuse(
                "BelowPatchFloor",
                format!(
                    "a member runs {low}, and etcd needs every member on 3.{floor_minor}.{floor} or later before \
                     3.{}: set spec.version to the newest 3.{floor_minor} patch first, then {spec}",
                    target.minor
                ),
            ));
        }
        if low.patch < recommended {
            warning = Some(format!(
                "a member runs {low}: etcd's guide recommends 3.{floor_minor}.{recommended} or later before 3.{}",
                target.minor
            ));
        }
    }
    Ok(Some((Change::Minor, warning)))
}

/// `target` if the controller runs it at all: a supported minor, not a known-bad patch.
pub fn supported(target: Option<Version>, spec: &str) -> Result<Version, Refusal> {
    let Some(target) = target else {
        return Err(refuse("UnsupportedVersion", format!("spec.version {spec:?} is no etcd 3.x.y version")));
    };
    if !SUPPORTED_MINORS.contains(&target.minor) {
        return Err(refuse(
            "UnsupportedVersion",
            format!("etcd {target} is not supported: the controller runs etcd 3.4, 3.5, 3.6 and 3.7"),
        ));
    }
    if let Some(why) = known_bad(target) {
        return Err(refuse("KnownBadVersion", why.into()));
    }
    Ok(target)
}

/// One flag of the etcd command line, and the minors whose binaries accept it. A member's command cannot change
/// while its pod lives (an upgrade changes only its image), so a flag rendered for a version must be accepted by
/// every later supported minor too: [`tests::every_rendered_flag_is_accepted_by_every_later_minor`] holds the
/// table to that.
struct Flag {
    /// `--name`, without its value.
    name: &'static str,
    /// First minor that accepts it.
    since: u32,
    /// Last minor that accepts it (`None`: every supported one).
    until: Option<u32>,
    /// For a flag whose value does not depend on the cluster: the minors a new member gets it at, and its value.
    /// The others are rendered by the pod from the spec, at every minor, or never (only known, so that a member
    /// created with one is refused an upgrade to a binary that would not start).
    render: Option<(std::ops::RangeInclusive<u32>, &'static str)>,
}

const fn flag(name: &'static str, since: u32, until: Option<u32>) -> Flag {
    Flag { name, since, until, render: None }
}

const fn fixed(name: &'static str, since: u32, minors: std::ops::RangeInclusive<u32>, value: &'static str) -> Flag {
    Flag { name, since, until: None, render: Some((minors, value)) }
}

/// Every flag the controller renders, and those it knows etcd dropped.
const FLAGS: &[Flag] = &[
    // Rendered by the pod (identity, URLs, spec.etcd options), the same at every minor.
    flag("--name", 4, None),
    flag("--data-dir", 4, None),
    flag("--listen-client-urls", 4, None),
    flag("--advertise-client-urls", 4, None),
    flag("--listen-peer-urls", 4, None),
    flag("--initial-advertise-peer-urls", 4, None),
    flag("--initial-cluster", 4, None),
    flag("--initial-cluster-state", 4, None),
    flag("--initial-cluster-token", 4, None),
    flag("--quota-backend-bytes", 4, None),
    flag("--auto-compaction-mode", 4, None),
    flag("--auto-compaction-retention", 4, None),
    // TLS (spec.tls), the same at every minor; the metrics listener serves the probes when the client port
    // asks for client certificates.
    flag("--peer-cert-file", 4, None),
    flag("--peer-key-file", 4, None),
    flag("--peer-trusted-ca-file", 4, None),
    flag("--peer-client-cert-auth", 4, None),
    flag("--cert-file", 4, None),
    flag("--key-file", 4, None),
    flag("--trusted-ca-file", 4, None),
    flag("--client-cert-auth", 4, None),
    flag("--listen-metrics-urls", 4, None),
    // 3.4 logs through capnslog by default (deprecated, unstructured); zap is the default from 3.5, and the only
    // logger.
    fixed("--logger", 4, 4..=4, "zap"),
    // Data corruption checks: before serving, a member compares its hash with its peers'; the leader compares
    // followers' hashes at each compaction. 3.6 moved experimental features behind feature gates, and 3.7 removed
    // the `--experimental-*` spellings: only the gates are rendered (from 3.6), because a 3.5 member created with
    // `--experimental-initial-corrupt-check` could not be upgraded to 3.7 in place.
    fixed("--feature-gates", 6, 6..=7, "InitialCorruptCheck=true,CompactHashCheck=true"),
    flag("--experimental-initial-corrupt-check", 4, Some(6)),
    flag("--experimental-compact-hash-check-enabled", 5, Some(6)),
    flag("--experimental-corrupt-check-time", 4, Some(6)),
    // Removed in 3.6.
    flag("--enable-v2", 4, Some(5)),
    flag("--experimental-enable-v2v3", 4, Some(5)),
];

/// The flags a member created at `version` gets beyond those the pod renders from the spec.
pub fn version_flags(version: Version) -> Vec<String> {
    FLAGS
        .iter()
        .filter_map(|f| {
            let (minors, value) = f.render.as_ref()?;
            minors.contains(&version.minor).then(|| format!("{}={value}", f.name))
        })
        .collect()
}

/// How the kubelet tells that a member of `version` serves (its readiness), which must write nothing to etcd's raft
/// log: a member carries its log across upgrades, and etcd 3.6 refuses to start on v2 requests in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// `GET` this path on this port: the client port, or with client TLS (which asks every client for a
    /// certificate, and a kubelet has none) the plain metrics listener. From 3.5, `/health` is a v3 linearizable
    /// read (no log entry), and `exclude=NOSPACE` keeps a member out of space in the client Service, so that the
    /// compaction and deletes that free space reach it.
    Http(&'static str, i32),
    /// Run this command in the container. 3.4's `/health` is a v2 quorum read (`QGET`), one raft log entry per
    /// probe, which etcd 3.6 refuses to replay ("detected disallowed v2 WAL"): a 3.4 member probed that way could
    /// not be upgraded 3.5 -> 3.6 until a snapshot (100,000 entries by default) pushed those entries out. `etcdctl
    /// endpoint health` is a v3 read instead.
    Exec(Vec<String>),
}

/// The port of the plain metrics and health listener a member with client TLS gets.
pub const METRICS_PORT: i32 = 2381;

/// The readiness check of a member created at `version`; `client_tls` is the directory of its serving certificate
/// (`tls.crt`, `tls.key`, `ca.crt`) when its client port speaks TLS.
pub fn readiness(version: Version, client_tls: Option<&str>) -> Readiness {
    match (version.minor, client_tls) {
        (4, None) => {
            let command =
                ["etcdctl", "--endpoints=http://127.0.0.1:2379", "--command-timeout=2s", "endpoint", "health"];
            Readiness::Exec(command.map(String::from).into())
        }
        // The member's own certificate is good for client authentication too.
        (4, Some(dir)) => Readiness::Exec(vec![
            "etcdctl".into(),
            "--endpoints=https://127.0.0.1:2379".into(),
            format!("--cacert={dir}/ca.crt"),
            format!("--cert={dir}/tls.crt"),
            format!("--key={dir}/tls.key"),
            "--command-timeout=2s".into(),
            "endpoint".into(),
            "health".into(),
        ]),
        (_, None) => Readiness::Http("/health?exclude=NOSPACE", 2379),
        (_, Some(_)) => Readiness::Http("/health?exclude=NOSPACE", METRICS_PORT),
    }
}

/// Whether the flag table knows `name` (`--data-dir`): every flag the controller renders must be in it.
pub fn known_flag(name: &str) -> bool {
    FLAGS.iter().any(|f| f.name == name)
}

/// Why the etcd of `version` would not start with `command`, if it would not: a flag it does not accept.
pub fn refused_flag(command: &[String], version: Version) -> Option<String> {
    command.iter().skip(1).find_map(|arg| {
        let name = arg.split('=').next().unwrap_or(arg);
        if !name.starts_with("--") {
            return None;
        }
        match FLAGS.iter().find(|f| f.name == name) {
            Some(f) if version.minor >= f.since && f.until.is_none_or(|until| version.minor <= until) => None,
            Some(f) => Some(format!(
                "{name} (etcd 3.{}{} only)",
                f.since,
                f.until.map_or_else(|| "+".to_string(), |u| format!(" to 3.{u}"))
            )),
            // Not in the table: the controller never rendered it, so it cannot say; etcd will.
            None => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn versions_parse_with_or_without_a_leading_v_and_nothing_else() {
        assert_eq!(Version::parse("3.5.35"), Some(Version { minor: 5, patch: 35 }));
        assert_eq!(Version::parse("v3.6.16"), Some(Version { minor: 6, patch: 16 }));
        for bad in ["3.5", "4.0.0", "3.5.x", "3.5.1-rc.0", "", "v", "3..1", "3.5.1.2", "V3.5.1"] {
            assert_eq!(Version::parse(bad), None, "{bad}");
        }
        assert_eq!(v("3.5.35").tag(), "v3.5.35");
        assert_eq!(v("v3.7.3").to_string(), "3.7.3");
    }

    #[test]
    fn only_supported_versions_that_are_not_known_bad_run() {
        assert!(supported(Some(v("3.4.23")), "3.4.23").is_ok());
        assert!(supported(Some(v("3.7.3")), "3.7.3").is_ok());
        assert_eq!(supported(Some(v("3.3.27")), "3.3.27").unwrap_err().reason, "UnsupportedVersion");
        assert_eq!(supported(Some(v("3.8.0")), "3.8.0").unwrap_err().reason, "UnsupportedVersion");
        assert_eq!(supported(None, "latest").unwrap_err().reason, "UnsupportedVersion");
        for bad in ["3.5.0", "3.5.1", "3.5.2"] {
            assert_eq!(supported(Some(v(bad)), bad).unwrap_err().reason, "KnownBadVersion", "{bad}");
        }
        assert!(supported(Some(v("3.5.3")), "3.5.3").is_ok());
    }

    fn change(running: &[&str], cluster: Option<&str>, target: &str) -> Result<Option<Change>, &'static str> {
        let running: Vec<Version> = running.iter().map(|s| v(s)).collect();
        check(&running, cluster.map(v), Version::parse(target), target)
            .map(|c| c.map(|(change, _)| change))
            .map_err(|r| r.reason)
    }

    #[test]
    fn upgrades_go_one_minor_at_a_time_from_a_patch_floor() {
        let all = |s: &str| [s, s, s].map(String::from);
        let same = all("3.5.35");
        let same: Vec<&str> = same.iter().map(String::as_str).collect();
        assert_eq!(change(&same, Some("3.5.0"), "3.5.35"), Ok(None), "already there");
        assert_eq!(change(&same, Some("3.5.0"), "v3.5.35"), Ok(None), "a leading v is the same version");
        assert_eq!(change(&same, Some("3.5.0"), "3.5.33"), Ok(Some(Change::Patch)), "a patch downgrade is fine");
        assert_eq!(change(&same, Some("3.5.0"), "3.6.16"), Ok(Some(Change::Minor)));
        assert_eq!(change(&same, Some("3.5.0"), "3.7.3"), Err("SkipsMinor"));
        assert_eq!(change(&same, Some("3.5.0"), "3.4.23"), Err("Downgrade"));
        assert_eq!(change(&["3.4.23"; 3], Some("3.4.0"), "3.6.16"), Err("SkipsMinor"), "etcd itself only warns");
        assert_eq!(change(&["3.4.23"; 3], Some("3.4.0"), "3.5.35"), Ok(Some(Change::Minor)), "3.4 has no floor");
        assert_eq!(change(&["3.5.25", "3.5.35", "3.5.35"], Some("3.5.0"), "3.6.16"), Err("BelowPatchFloor"));
        assert_eq!(change(&["3.6.10"; 3], Some("3.6.0"), "3.7.3"), Err("BelowPatchFloor"));
        assert_eq!(change(&["3.6.11"; 3], Some("3.6.0"), "3.7.3"), Ok(Some(Change::Minor)));
        assert_eq!(change(&same, Some("3.5.0"), "3.5.1"), Err("KnownBadVersion"));
    }

    #[test]
    fn a_patch_below_the_recommended_floor_is_allowed_with_a_warning() {
        let running = [v("3.5.28"); 3];
        let (change, warning) = check(&running, Some(v("3.5.0")), Some(v("3.6.16")), "3.6.16").unwrap().unwrap();
        assert_eq!(change, Change::Minor);
        assert!(warning.unwrap().contains("3.5.32"));
        let fine = check(&[v("3.5.35"); 3], Some(v("3.5.0")), Some(v("3.6.16")), "3.6.16").unwrap().unwrap();
        assert_eq!(fine.1, None);
    }

    #[test]
    fn a_mixed_cluster_goes_on_up_or_back_to_its_cluster_version_never_below() {
        let mixed = ["3.5.35", "3.6.16", "3.5.35"];
        assert_eq!(change(&mixed, Some("3.5.0"), "3.6.16"), Ok(Some(Change::Minor)), "carry on");
        assert_eq!(change(&mixed, Some("3.5.0"), "3.5.35"), Ok(Some(Change::Rollback)), "back while mixed");
        assert_eq!(change(&mixed, Some("3.5.0"), "3.7.3"), Err("SkipsMinor"));
        assert_eq!(change(&mixed, Some("3.5.0"), "3.4.23"), Err("Downgrade"));
        // Every member on 3.6 and the cluster version moved: 3.5 binaries would refuse the data.
        assert_eq!(change(&["3.6.16"; 3], Some("3.6.0"), "3.5.35"), Err("Downgrade"));
        // Every member on 3.6 but the cluster version not yet moved: etcd moves it within seconds, a race the
        // controller cannot win, so no rollback (review A4).
        assert_eq!(change(&["3.6.16"; 3], Some("3.5.0"), "3.5.35"), Err("Downgrade"));
        assert_eq!(change(&["3.6.16"; 3], None, "3.5.35"), Err("Downgrade"));
    }

    fn accepts(flag: &Flag, minor: u32) -> bool {
        minor >= flag.since && flag.until.is_none_or(|until| minor <= until)
    }

    #[test]
    fn every_rendered_flag_is_accepted_by_every_later_minor() {
        for minor in SUPPORTED_MINORS {
            for rendered in version_flags(Version { minor, patch: 0 }) {
                let name = rendered.split('=').next().unwrap();
                let flag = FLAGS.iter().find(|f| f.name == name).unwrap();
                for later in minor..=*SUPPORTED_MINORS.end() {
                    assert!(accepts(flag, later), "{name} rendered at 3.{minor} is refused by 3.{later}");
                }
            }
        }
        assert_eq!(version_flags(Version { minor: 4, patch: 23 }), ["--logger=zap"]);
        assert!(version_flags(Version { minor: 5, patch: 35 }).is_empty());
        let gates = ["--feature-gates=InitialCorruptCheck=true,CompactHashCheck=true"];
        assert_eq!(version_flags(Version { minor: 6, patch: 16 }), gates);
        assert_eq!(version_flags(Version { minor: 7, patch: 3 }), gates);
    }

    #[test]
    fn a_command_with_a_flag_the_target_dropped_is_refused() {
        let command =
            |flags: &[&str]| std::iter::once("etcd").chain(flags.iter().copied()).map(String::from).collect::<Vec<_>>();
        let old = command(&["--name=a", "--experimental-initial-corrupt-check=true"]);
        assert_eq!(refused_flag(&old, v("3.6.16")), None, "3.6 still takes it");
        assert!(refused_flag(&old, v("3.7.3")).unwrap().starts_with("--experimental-initial-corrupt-check"));
        let gates = command(&["--name=a", "--feature-gates=InitialCorruptCheck=true"]);
        assert!(refused_flag(&gates, v("3.5.35")).is_some(), "3.5 has no feature gates");
        assert_eq!(refused_flag(&gates, v("3.7.3")), None);
        assert!(refused_flag(&command(&["--name=a", "--enable-v2=false"]), v("3.6.16")).is_some());
    }
}
