//! Carrying out a recovery from lost quorum: the backup it restores, the lost pods, and its end.

use super::*;

pub(super) async fn start_recovery(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::StartRecovery { first_index } = action else { return Ok(()) };
    let Step { ctx, cluster, observed, addresses, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    let etcd_timeout = step.ctx.etcd_timeout;
    // Pods already terminating are going anyway; recording them would make the recovery look touched.
    let lost = observed.pods.iter().filter(|p| p.state != PodState::Terminating).map(|p| p.name.clone()).collect();
    // Pods whose etcd may have run on data that no backup holds: running (answering or not) or in a
    // restart loop. Only pods that failed for good, never started, or are being deleted hold nothing.
    let holding: Vec<String> = observed
        .pods
        .iter()
        .filter(|p| matches!(p.state, PodState::Running { .. } | PodState::CrashLooping))
        .map(|p| p.name.clone())
        .collect();
    let recovery = RecoveryInput { addresses, dial: step.dial, first_index: *first_index, lost, holding };
    if let Some(fresh) = choose_backup(client, recorder, cluster, recovery, etcd_timeout).await? {
        ctx.metrics.recovery_started(if fresh { "fresh" } else { "newest" });
    }
    Ok(())
}

pub(super) async fn delete_lost_member(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::DeleteLostMember { name: member } = action else { return Ok(()) };
    let Step { cluster, observed, namespace, pods, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    // The object this step was planned from may predate an abandoned (cleared) or a different recovery:
    // delete only while the very record the plan saw is still there.
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &cluster.namespace().unwrap_or_default());
    let current = api.get_status(&cluster.name_any()).await.map_err(kube_error("reading status"))?;
    let record = |s: Option<&proto::cluster::EtcdClusterStatus>| {
        s.and_then(|s| s.recovery.as_ref()).map(|r| (r.backup.clone(), r.first_member_index))
    };
    let planned = record(cluster.status.as_ref());
    if planned.is_none() || record(current.status.as_ref()) != planned {
        tracing::info!(%member, "the recovery record changed since this step was planned; nothing deleted");
        return Ok(());
    }
    super::members::delete_member_pod(pods, observed, member).await?;
    // Its claim holds the lost cluster's data: never mounted again, and kept.
    super::volumes::retire_lost(step, member).await?;
    publish(
        recorder,
        cluster,
        member_event(
            "LostMemberDeleted",
            format!("deleted pod {member} of the cluster that lost quorum"),
            namespace,
            member,
        ),
    )
    .await;
    Ok(())
}

pub(super) async fn abandon_recovery(step: &Step<'_>, action: &Action) -> Result<(), ActError> {
    let Action::AbandonRecovery { why } = action else { return Ok(()) };
    let Step { ctx, cluster, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    let backup = cluster.status.as_ref().and_then(|s| s.recovery.as_ref()).map(|r| r.backup.clone());
    patch_status(client, cluster, json!({ "recovery": null, "quorumLostSince": null }), "abandoning the recovery")
        .await?;
    let note = format!(
        "recovery from backup {} abandoned before anything was deleted: {why}; the cluster is kept",
        backup.unwrap_or_default()
    );
    ctx.metrics.recovery_abandoned();
    publish(recorder, cluster, event("RecoveryAbandoned", note)).await;
    Ok(())
}

pub(super) async fn complete_recovery(step: &Step<'_>) -> Result<(), ActError> {
    let Step { cluster, .. } = step;
    let client = &step.ctx.client;
    let recorder = &step.ctx.recorder;
    let status = cluster.status.clone().unwrap_or_default();
    let since = status.quorum_lost_since.as_ref().map(|t| t.0);
    let took = since.map_or_else(String::new, |since| {
        let seconds = k8s_openapi::jiff::Timestamp::now().duration_since(since).as_secs_f64();
        format!(" {seconds:.0} s after quorum was lost")
    });
    let backup = status.recovery.as_ref().map_or_else(String::new, |r| r.backup.clone());
    patch_status(client, cluster, json!({ "recovery": null, "quorumLostSince": null }), "ending the recovery").await?;
    publish(
        recorder,
        cluster,
        event(
            "RecoveryCompleted",
            format!("the cluster serves again from backup {backup}{took}; growing back to its size"),
        ),
    )
    .await;
    Ok(())
}

/// Where a new seed's data comes from: the recorded recovery's backup from the cluster's own sidecar, or
/// `spec.restore` (with `latest` resolved now). `None` for a seed that starts empty.
pub(super) async fn seed_source(
    client: &kube::Client,
    cluster: &EtcdCluster,
    sidecar_image: &str,
    timeout: Duration,
) -> Result<Option<(SeedRestore, RestoredFrom)>, ActError> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    let image =
        cluster.spec.backup.as_ref().and_then(|b| b.sidecar_image.clone()).unwrap_or_else(|| sidecar_image.into());
    if let Some(recovery) = cluster.status.as_ref().and_then(|s| s.recovery.as_ref()) {
        let reach = backup::sidecar_reach(client, &namespace, &name).await?;
        let source = reach.url;
        let restore = SeedRestore {
            source: source.clone(),
            token_secret: Some(backup::token_secret_name(&name)),
            ca_secret: reach.ca_secret,
            backup: recovery.backup.clone(),
            storage: None,
            sidecar_image: image,
        };
        let from = RestoredFrom { source, backup: recovery.backup.clone(), revision: recovery.revision };
        return Ok(Some((restore, from)));
    }
    let Some(spec) = &cluster.spec.restore else { return Ok(None) };
    if let Some(storage) = &spec.storage {
        // No sidecar to ask: the fetch resolves `latest` itself and reports what it restored (name, revision) in
        // its termination message, which the status picks up. Until then the revision reads 0.
        let source = backup::storage_url_of(cluster, storage);
        let restore = SeedRestore {
            source: source.clone(),
            token_secret: None,
            ca_secret: None,
            backup: spec.backup.clone(),
            storage: Some(Box::new(storage.clone())),
            sidecar_image: image,
        };
        return Ok(Some((restore, RestoredFrom { source, backup: spec.backup.clone(), revision: 0 })));
    }
    let (sidecar, source, token_secret, ca_secret) = match (&spec.cluster, &spec.url) {
        (Some(other), _) if !backup::sidecar_exists(client, &namespace, other).await? => {
            return Err(ActError::SeedSource(format!(
                "spec.restore.cluster names {other}, which has no backup sidecar in namespace {namespace} (no \
                 EtcdCluster of that name with spec.backup); nothing was created"
            )));
        }
        (Some(other), _) => {
            let reach = backup::sidecar_reach(client, &namespace, other).await?;
            (
                SidecarClient::for_cluster(client, &namespace, other, timeout).await?,
                reach.url,
                Some(backup::token_secret_name(other)),
                reach.ca_secret,
            )
        }
        (None, Some(url)) => {
            let token = match &spec.token_secret {
                Some(secret) => read_token(client, &namespace, secret).await?,
                None => None,
            };
            (SidecarClient::new(url.clone(), token, timeout)?, url.clone(), spec.token_secret.clone(), None)
        }
        (None, None) => {
            return Err(ActError::NoBackup("spec.restore names no cluster, url or storage".into()));
        }
    };
    let info = sidecar.find(&spec.backup).await?.ok_or_else(|| {
        ActError::SeedSource(format!("spec.restore: {source} has no backup {:?}; nothing was created", spec.backup))
    })?;
    if let Some(target) = crate::version::Version::parse(&cluster.spec.version)
        && let Some(why) = crate::recovery::seed_refused(&info.name, &info.etcd_version, target)
    {
        return Err(ActError::SeedSource(format!("spec.restore: {why}")));
    }
    let restore = SeedRestore {
        source: source.clone(),
        token_secret,
        ca_secret,
        backup: info.name.clone(),
        storage: None,
        sidecar_image: image,
    };
    Ok(Some((restore, RestoredFrom { source, backup: info.name, revision: info.revision })))
}

async fn read_token(client: &kube::Client, namespace: &str, secret: &str) -> Result<Option<String>, ActError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let stored = secrets.get_opt(secret).await.map_err(kube_error(format!("reading secret {secret}")))?;
    let stored = stored.ok_or_else(|| {
        ActError::SeedSource(format!("spec.restore.tokenSecret names Secret {secret}, which does not exist"))
    })?;
    restore_token(&stored).map_err(ActError::SeedSource)
}

/// The label a Secret must carry, set to `"true"`, before the controller reads it as `spec.restore.tokenSecret`
/// and sends its `token` to `spec.restore.url`: whoever may create an EtcdCluster must not be able to make the
/// controller send any Secret of the namespace (another cluster's backup token, a ServiceAccount token) anywhere.
pub const RESTORE_TOKEN_LABEL: &str = "kube-etcd-controller.dev/restore-token";

/// The `token` of a restore token Secret, if it opted in ([`RESTORE_TOKEN_LABEL`]).
pub fn restore_token(secret: &Secret) -> Result<Option<String>, String> {
    let name = secret.name_any();
    if secret.labels().get(RESTORE_TOKEN_LABEL).map(String::as_str) != Some("true") {
        return Err(format!(
            "Secret {name} (spec.restore.tokenSecret) is not labelled {RESTORE_TOKEN_LABEL}=true: the controller \
             sends only a Secret that opted in to spec.restore.url; label it if it holds that server's token"
        ));
    }
    let token = secret.data.as_ref().and_then(|d| d.get(backup::TOKEN_KEY));
    let token =
        token.ok_or_else(|| format!("Secret {name} (spec.restore.tokenSecret) has no key {:?}", backup::TOKEN_KEY))?;
    String::from_utf8(token.0.clone())
        .map(Some)
        .map_err(|_| format!("the {:?} of Secret {name} is not text", backup::TOKEN_KEY))
}

/// The oldest backup an automatic recovery restores (`spec.recovery.maxBackupAge`): by default three backup
/// intervals, or [`proto::cluster::DEFAULT_CRON_MAX_BACKUP_AGE`] for a cron schedule.
pub fn max_backup_age(spec: &proto::cluster::EtcdClusterSpec) -> Duration {
    let parse = |d: &str| humantime::parse_duration(d).ok();
    if let Some(age) = spec.recovery.as_ref().and_then(|r| r.max_backup_age.as_deref()).and_then(parse) {
        return age;
    }
    let backup = spec.backup.as_ref();
    if backup.is_some_and(|b| b.cron.is_some()) {
        return parse(proto::cluster::DEFAULT_CRON_MAX_BACKUP_AGE).unwrap_or(Duration::from_secs(72 * 3600));
    }
    let every = backup.and_then(|b| b.every.as_deref()).unwrap_or(proto::cluster::DEFAULT_BACKUP_EVERY);
    parse(every).unwrap_or(Duration::from_secs(1800)) * 3
}

/// Chooses the backup a lost cluster is recovered from and records the choice, before anything is deleted: a
/// fresh backup from the most advanced member that still runs (so nothing the survivors acknowledged is lost);
/// with no member pod left that may hold data, the newest backup of this cluster if it is recent enough; else
/// nothing ([`ActError::NoBackup`], which status reports). Returns whether the backup is a fresh one, or `None`
/// when a recovery was already recorded.
async fn choose_backup(
    client: &kube::Client,
    recorder: &Recorder,
    cluster: &EtcdCluster,
    input: RecoveryInput<'_>,
    timeout: Duration,
) -> Result<Option<bool>, ActError> {
    let RecoveryInput { addresses, dial, first_index, lost: lost_pods, holding } = input;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_else(|| "default".into());
    // The object this step was planned from may predate a recovery already recorded: never choose twice.
    let api: Api<EtcdCluster> = Api::namespaced(client.clone(), &namespace);
    let current = api.get_status(&name).await.map_err(kube_error("reading status"))?;
    let current = current.status.unwrap_or_default();
    if current.recovery.is_some() {
        return Ok(None);
    }
    // A snapshot takes longer than an etcd request: give the sidecar time.
    let sidecar =
        SidecarClient::for_cluster(client, &namespace, &name, (timeout * 60).max(Duration::from_secs(60))).await?;
    // Only backups of this EtcdCluster: one deleted and created again under its name starts anew.
    let created = cluster.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second());
    let since = created.and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0));
    let uid = cluster.metadata.uid.as_deref();
    // The survivors may have committed different amounts: the backup comes from the voter that committed the
    // most, and from no other (falling back to a less advanced one would delete the pod that holds more).
    let endpoints: Vec<String> = addresses.values().cloned().collect();
    let survivors: Vec<Survivor> = membership::survey(&endpoints, dial)
        .await
        .into_iter()
        .map(|(endpoint, progress)| {
            let name = addresses.iter().find(|(_, url)| **url == endpoint).map_or(endpoint.clone(), |(n, _)| n.clone());
            Survivor { name, endpoint, progress }
        })
        .collect();
    // What this cluster's backups reached, read before the fresh one exists.
    let stored = sidecar.own(&name, uid, since).await?;
    let mut fresh = match crate::recovery::fresh_source(&survivors, &holding) {
        Ok(source) => match sidecar.trigger(std::slice::from_ref(&source.endpoint)).await {
            Ok(info) => Ok((info, source)),
            Err(error) => {
                tracing::warn!(member = %source.name, %error, "no fresh backup from the most advanced voter");
                Err(format!("the most advanced voting member, {}, gave no backup: {error}", source.name))
            }
        },
        Err(why) => Err(why),
    };
    // A backup behind what this etcd cluster is known to have reached would give up acknowledged writes. A stored
    // backup of the same etcd cluster at a higher revision holds everything the lagging member applied, and more:
    // that one is restored instead, if it is not behind itself.
    let seen = current.highest_revision_seen.as_ref();
    let mut instead = None;
    if let Ok((info, source)) = &fresh
        && let Some(why) = crate::recovery::behind(info, &stored, seen)
    {
        match crate::recovery::better_stored(info, &stored, seen) {
            Some(better) => {
                tracing::warn!(fresh = %info.name, stored = %better.name, %why, "a stored backup holds more");
                let from = format!(
                    "backup {} (revision {}) of the same etcd cluster: the most advanced voting member that runs, {}, \
                     gave revision {} only, so the stored backup holds everything it held; writes after that backup \
                     are lost",
                    better.name, better.revision, source.name, info.revision
                );
                instead = Some((better.clone(), from));
            }
            None => {
                tracing::warn!(backup = %info.name, %why, "fresh backup refused");
                fresh = Err(why);
            }
        }
    }
    let fresh = fresh.map(|(info, source)| {
        let index = source.progress.map_or(0, |p| p.raft_index);
        let others: Vec<String> = survivors
            .iter()
            .filter(|s| s.name != source.name)
            .map(|s| format!("{} at {}", s.name, s.progress.map_or(0, |p| p.raft_index)))
            .collect();
        let others = if others.is_empty() { String::new() } else { format!(" (the others: {})", others.join(", ")) };
        let from = format!(
            "{} at raft index {index}, the voting member that committed the most of those that run{others}; writes \
             that only the lost members held, if any, are not in it",
            source.name
        );
        instead.unwrap_or((info, from))
    });
    let was_fresh = fresh.is_ok();
    let (info, reason) = match fresh {
        Ok((info, from)) => {
            let reason = format!(
                "a fresh backup from the member pods still running ({}), taken from {from}",
                addresses.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            (info, reason)
        }
        Err(why) => {
            // A member whose etcd runs may hold writes newer than any backup: it is not given up for an older
            // one while it may still answer another way (or a person decides to).
            if !holding.is_empty() {
                return Err(ActError::NoBackup(format!(
                    "member pods {} run (or restart) and may hold writes newer than any backup, but no fresh backup \
                     could be taken from them ({why}); nothing was deleted. Make them reachable from the backup \
                     sidecar, or delete those pods (giving up their data) to recover from the newest backup",
                    holding.join(", ")
                )));
            }
            let newest = sidecar.newest_of(&name, uid, since).await?.ok_or_else(|| {
                ActError::NoBackup(format!(
                    "quorum is lost and there is no backup of this cluster to recover from (a fresh one failed: \
                     {why}); nothing was deleted. Backups of an earlier cluster of this name are not restored \
                     automatically: restore one into a new EtcdCluster (spec.restore) if you want its data"
                ))
            })?;
            // A quiet cluster's newest backup may be old and still hold everything: the sidecar skips a backup
            // while etcd's revision has not moved, and says when it last found that backup current.
            let confirmed = sidecar.status().await.ok().and_then(|status| {
                let same = status.last_success.as_ref().is_some_and(|b| b.name == newest.name);
                same.then_some(status.last_success_at).flatten()
            });
            let current_at = confirmed.map_or(newest.finished_at, |at| at.max(newest.finished_at));
            let age = k8s_openapi::jiff::Timestamp::now().as_second() - current_at.timestamp();
            let age = Duration::from_secs(u64::try_from(age).unwrap_or(0));
            let max_age = max_backup_age(&cluster.spec);
            if age > max_age {
                return Err(ActError::NoBackup(format!(
                    "the newest backup, {}, was last known current {} ago, longer ago than \
                     spec.recovery.maxBackupAge ({}): \
                     restoring it would give up everything written since, so that is for a person to decide; \
                     nothing was deleted. Raise maxBackupAge to restore it, or restore into a new EtcdCluster",
                    newest.name,
                    humantime::format_duration(age),
                    humantime::format_duration(max_age)
                )));
            }
            let reason = format!(
                "the newest backup, finished {} and last known current {} ago: writes after that are lost (a \
                 fresh backup failed: {why})",
                newest.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                humantime::format_duration(age)
            );
            (newest, reason)
        }
    };
    // The seed runs spec.version: a backup it cannot run is refused before anything is deleted.
    if let Some(target) = crate::version::Version::parse(&cluster.spec.version)
        && let Some(why) = crate::recovery::seed_refused(&info.name, &info.etcd_version, target)
    {
        return Err(ActError::NoBackup(why));
    }
    let recovery = RecoveryStatus {
        started_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        backup: info.name.clone(),
        revision: info.revision,
        reason: reason.clone(),
        first_member_index: i32::try_from(first_index).unwrap_or(i32::MAX),
        lost_pods: Some(lost_pods),
    };
    patch_status(client, cluster, json!({ "recovery": recovery }), "recording the recovery").await?;
    let note = format!(
        "quorum lost: recovering from backup {} (revision {}), {reason}; the lost members' pods are deleted and a \
         new cluster is seeded from it",
        info.name, info.revision
    );
    let warning = Event {
        type_: EventType::Warning,
        reason: "RecoveryStarted".into(),
        note: Some(note),
        action: "RecoverFromBackup".into(),
        secondary: None,
    };
    publish(recorder, cluster, warning).await;
    Ok(Some(was_fresh))
}
