//! The etcd membership layer: the member list with each member's health, and the membership changes the planner
//! asks for (add as learner, promote, remove).

use etcd_client::{Client, MemberAddOptions};

use crate::dial::Dial;

use crate::observe::Member;

/// Errors talking to etcd about its membership.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// No endpoint answered.
    #[error("etcd is unreachable at {endpoints}: {source}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error.
        #[source]
        source: etcd_client::Error,
    },
    /// A learner is not yet caught up with the leader; promoting it must wait.
    #[error("learner {0:x} is not caught up with the leader yet")]
    NotCaughtUp(u64),
    /// etcd refuses membership changes until its leader has been connected to every voting member for a few
    /// seconds (strict reconfiguration check); the change must be retried shortly.
    #[error("etcd is not ready to {op} member {member}: {why}")]
    NotReady {
        /// The change.
        op: &'static str,
        /// The member concerned.
        member: String,
        /// etcd's answer.
        why: String,
    },
    /// etcd refused the change.
    #[error("etcd refused to {op} member {member}: {source}")]
    Refused {
        /// The change.
        op: &'static str,
        /// The member concerned.
        member: String,
        /// etcd's answer.
        #[source]
        source: etcd_client::Error,
    },
}

impl MembershipError {
    /// Stable short reason, for metrics and events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "EtcdUnreachable",
            Self::NotCaughtUp(_) => "LearnerNotCaughtUp",
            Self::NotReady { .. } => "EtcdNotReadyForChange",
            Self::Refused { .. } => "MembershipChangeRefused",
        }
    }
}

/// A member as etcd lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Member ID.
    pub id: u64,
    /// etcd's name for it; empty until the member has started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty until the member has started.
    pub client_urls: Vec<String>,
    /// Whether it is a learner.
    pub learner: bool,
}

/// A connection to a cluster's members for membership work.
pub struct Membership {
    client: Client,
    endpoints: Vec<String>,
    dial: Dial,
}

impl Membership {
    /// Connects to the first of `endpoints` that answers, is a voting member and knows a leader: learners refuse
    /// membership requests, a voter's member list is the one the cluster agreed on, and a voter cut off from its
    /// peers (no leader) would refuse every change, forever if it always came first. Without such a voter, the
    /// first leaderless one (its member list still tells what etcd knows).
    pub async fn connect(endpoints: &[String], dial: &Dial) -> Result<Self, MembershipError> {
        let timeout = dial.timeout;
        // A membership change waits for a raft commit, possibly across a leader election: give it longer than a
        // health probe gets.
        let mut last_error = None;
        let mut leaderless = None;
        for endpoint in endpoints {
            let options = dial.options(endpoint, timeout * 5);
            let attempt = async {
                let mut client = Client::connect([endpoint], Some(options)).await?;
                let status = client.status().await?;
                Ok::<_, etcd_client::Error>((client, status.is_learner(), status.leader() != 0))
            };
            match tokio::time::timeout(timeout * 2, attempt).await {
                Ok(Ok((client, false, true))) => {
                    return Ok(Self { client, endpoints: vec![endpoint.clone()], dial: dial.clone() });
                }
                Ok(Ok((client, false, false))) => {
                    if leaderless.is_none() {
                        leaderless = Some(Self { client, endpoints: vec![endpoint.clone()], dial: dial.clone() });
                    }
                }
                Ok(Ok((_, true, _))) => {}
                Ok(Err(error)) => last_error = Some(error),
                Err(_) => last_error = Some(etcd_client::Error::InvalidArgs(format!("{endpoint} timed out"))),
            }
        }
        leaderless.ok_or_else(|| MembershipError::Unreachable {
            endpoints: endpoints.join(","),
            source: last_error.unwrap_or_else(|| etcd_client::Error::InvalidArgs("no voting member among them".into())),
        })
    }

    /// The member this connection goes through.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// etcd's member list.
    pub async fn list(&mut self) -> Result<Vec<Listed>, MembershipError> {
        let response = self
            .client
            .member_list()
            .await
            .map_err(|source| MembershipError::Unreachable { endpoints: self.endpoints.join(","), source })?;
        Ok(response
            .members()
            .iter()
            .map(|m| Listed {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                client_urls: m.client_urls().to_vec(),
                learner: m.is_learner(),
            })
            .collect())
    }

    /// The alarms raised in the cluster (they are replicated: any member lists every member's), as
    /// `(member ID, NOSPACE or CORRUPT)`.
    pub async fn alarms(&mut self) -> Result<Vec<(u64, &'static str)>, MembershipError> {
        use etcd_client::{AlarmAction, AlarmType};
        let response = self
            .client
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await
            .map_err(|source| MembershipError::Unreachable { endpoints: self.endpoints.join(","), source })?;
        Ok(response
            .alarms()
            .iter()
            .filter_map(|a| match a.alarm() {
                AlarmType::Nospace => Some((a.member_id(), "NOSPACE")),
                AlarmType::Corrupt => Some((a.member_id(), "CORRUPT")),
                AlarmType::None => None,
            })
            .collect())
    }

    /// The member list with each member's health: a member is healthy when its own client URL answers a status
    /// request within the timeout and it knows a leader (a member cut off from the others answers, but serves
    /// nothing that needs a quorum). `name_of` names a member (pod names in Kubernetes, from peer URLs); `url_of`
    /// gives the URL to reach a named member at (its pod's address in Kubernetes, so that the controller needs no
    /// cluster DNS), `None` for one that cannot be reached.
    pub async fn observe(
        &mut self,
        name_of: impl Fn(&Listed) -> String,
        url_of: impl Fn(&Listed, &str) -> Option<String>,
    ) -> Result<Vec<Member>, MembershipError> {
        let listed = self.list().await?;
        // The leader is the member that says it leads (its own ID as leader), of the highest term if two say so
        // (one deposed and not yet told): a follower's view may be stale right after an election.
        let mut leader: Option<(u64, u64)> = None;
        let mut members = Vec::with_capacity(listed.len());
        for entry in &listed {
            let name = name_of(entry);
            let status = match url_of(entry, &name) {
                Some(url) => status_of(&url, &self.dial).await,
                None => None,
            };
            if let Some(status) = &status {
                let own = status.header().map(|h| h.member_id()).unwrap_or_default();
                if own != 0 && status.leader() == own && leader.is_none_or(|(_, term)| status.raft_term() > term) {
                    leader = Some((own, status.raft_term()));
                }
            }
            members.push(Member {
                id: entry.id,
                name,
                started: !entry.name.is_empty(),
                peer_urls: entry.peer_urls.clone(),
                learner: entry.learner,
                healthy: status.as_ref().is_some_and(|s| s.leader() != 0),
                leader: false,
                version: status.as_ref().and_then(|s| crate::version::Version::parse(s.version())),
                raft: status.as_ref().map_or((0, 0), |s| (s.raft_index(), s.raft_applied_index())),
                served: status.as_ref().and_then(|s| {
                    let header = s.header()?;
                    Some(proto::cluster::ServedRevision {
                        etcd_cluster_id: format!("{:x}", header.cluster_id()),
                        revision: header.revision(),
                        seen_at: None,
                    })
                }),
                db_size: status.as_ref().map(|s| s.db_size()),
            });
        }
        for member in &mut members {
            member.leader = leader.is_some_and(|(id, _)| id == member.id);
        }
        Ok(members)
    }

    /// Adds a learner with `peer_url`; returns its ID.
    pub async fn add_learner(&mut self, peer_url: &str) -> Result<u64, MembershipError> {
        let response = self
            .client
            .member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
            .await
            .map_err(|source| refused("add", peer_url.to_string(), source))?;
        Ok(response.member().map(|m| m.id()).unwrap_or_default())
    }

    /// Registers `peer_url` as member `id`'s one peer URL: the others dial it there from now on (no restart).
    pub async fn update_peer_url(&mut self, id: u64, peer_url: &str) -> Result<(), MembershipError> {
        self.client
            .member_update(id, vec![peer_url.to_string()])
            .await
            .map(|_| ())
            .map_err(|source| refused("update the peer URL of", format!("{id:x}"), source))
    }

    /// Promotes learner `id` to a voting member.
    pub async fn promote(&mut self, id: u64) -> Result<(), MembershipError> {
        match self.client.member_promote(id).await {
            Ok(_) => Ok(()),
            // etcd refuses to promote a learner whose log is not close enough to the leader's.
            Err(error)
                if error.to_string().contains("in sync with leader") || error.to_string().contains("not ready") =>
            {
                Err(MembershipError::NotCaughtUp(id))
            }
            Err(source) => Err(refused("promote", format!("{id:x}"), source)),
        }
    }

    /// Moves leadership to member `to`; must be asked of the leader (`connect_to` it).
    pub async fn move_leader(&mut self, to: u64) -> Result<(), MembershipError> {
        match self.client.move_leader(to).await {
            Ok(_) => Ok(()),
            Err(source) => Err(refused("move leadership to", format!("{to:x}"), source)),
        }
    }

    /// A connection to the one member at `endpoint` (a leader, for [`Membership::move_leader`]).
    pub async fn connect_to(endpoint: &str, dial: &Dial) -> Result<Self, MembershipError> {
        let options = dial.options(endpoint, dial.timeout * 5);
        // Bounded as a whole: the connect timeout covers TCP only, and a TLS handshake with a member that accepted
        // the connection but does not serve yet would wait forever.
        let client = match tokio::time::timeout(dial.timeout * 2, Client::connect([endpoint], Some(options))).await {
            Ok(connected) => connected,
            Err(_) => Err(etcd_client::Error::InvalidArgs(format!("{endpoint} timed out"))),
        }
        .map_err(|source| MembershipError::Unreachable { endpoints: endpoint.to_string(), source })?;
        Ok(Self { client, endpoints: vec![endpoint.to_string()], dial: dial.clone() })
    }

    /// Removes member `id`; a member that is already gone (an earlier attempt that timed out went through) is
    /// fine.
    pub async fn remove(&mut self, id: u64) -> Result<(), MembershipError> {
        match self.client.member_remove(id).await {
            Ok(_) => Ok(()),
            Err(error) if error.to_string().contains("member not found") => Ok(()),
            Err(source) => Err(refused("remove", format!("{id:x}"), source)),
        }
    }
}

impl MembershipError {
    /// Whether etcd refused the change before proposing it (its strict reconfiguration check: the cluster would be
    /// unhealthy, or not enough members are started), so that it certainly was not applied. A timeout or a leader
    /// change is not that: the change may have gone through.
    pub fn refused_before_proposing(&self) -> bool {
        matches!(self, Self::NotReady { why, .. }
            if why.contains("unhealthy cluster") || why.contains("not enough started members"))
    }
}

/// Tells a change etcd refuses for now (its strict reconfiguration check, an election) from one it refuses
/// outright.
fn refused(op: &'static str, member: String, source: etcd_client::Error) -> MembershipError {
    let why = source.to_string();
    // A leader election in progress (a member just died) or a slow commit: the same change goes through a moment
    // later. A timed-out change may also have been applied; the next observation sees which.
    let transient =
        ["unhealthy cluster", "not enough started members", "Timeout expired", "leader changed", "no leader"];
    if transient.iter().any(|t| why.contains(t)) {
        MembershipError::NotReady { op, member, why }
    } else {
        MembershipError::Refused { op, member, source }
    }
}

/// The status the member at `client_url` reports on its own, or `None` when it does not answer in time.
async fn status_of(client_url: &str, dial: &Dial) -> Option<etcd_client::StatusResponse> {
    let timeout = dial.timeout;
    let options = dial.options(client_url, timeout);
    let attempt = async { Client::connect([client_url], Some(options)).await.ok()?.status().await.ok() };
    tokio::time::timeout(timeout * 2, attempt).await.ok().flatten()
}

/// `endpoints` ordered by how much of the log each member has committed, most first; members that do not answer
/// come last. After a quorum loss the survivors may differ: a backup from the first holds every write any of them
/// acknowledged.
pub async fn by_progress(endpoints: &[String], dial: &Dial) -> Vec<(String, Option<u64>)> {
    let mut progress = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        progress.push((endpoint.clone(), status_of(endpoint, dial).await.map(|s| s.raft_index())));
    }
    order_by_progress(progress)
}

/// What a member says of itself: how much of the log it has committed, and whether it is a learner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The raft index it has committed.
    pub raft_index: u64,
    /// The raft index it has applied (what a snapshot of it holds).
    pub applied: u64,
    /// Whether it is a learner (which holds only what the voters committed, and may hold much less).
    pub learner: bool,
}

/// Each of `endpoints` with its [`Progress`], `None` for one that did not answer.
pub async fn survey(endpoints: &[String], dial: &Dial) -> Vec<(String, Option<Progress>)> {
    let mut answers = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let status = status_of(endpoint, dial).await;
        answers.push((
            endpoint.clone(),
            status.map(|s| Progress {
                raft_index: s.raft_index(),
                applied: s.raft_applied_index(),
                learner: s.is_learner(),
            }),
        ));
    }
    answers
}

/// Most committed first, silent members last; ties keep their order.
fn order_by_progress(mut progress: Vec<(String, Option<u64>)>) -> Vec<(String, Option<u64>)> {
    progress.sort_by_key(|(_, index)| std::cmp::Reverse(index.map_or(0, |i| i + 1)));
    progress
}

/// The pod name in a Kubernetes peer URL (`http://<pod>.<cluster>.<namespace>.svc:2380`), else etcd's own name.
pub fn pod_name(listed: &Listed) -> String {
    listed
        .peer_urls
        .first()
        .and_then(|url| url.split("://").nth(1))
        .and_then(|rest| rest.split([':', '/']).next())
        .filter(|host| host.parse::<std::net::IpAddr>().is_err() && host.contains('.'))
        .and_then(|host| host.split('.').next())
        .map(str::to_string)
        .unwrap_or_else(|| listed.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(peer: &str, name: &str) -> Listed {
        Listed { id: 1, name: name.into(), peer_urls: vec![peer.into()], client_urls: vec![], learner: false }
    }

    #[test]
    fn only_a_refusal_before_proposing_says_the_change_was_not_applied() {
        let not_ready = |why: &str| MembershipError::NotReady { op: "remove", member: "a".into(), why: why.into() };
        assert!(not_ready("etcdserver: unhealthy cluster").refused_before_proposing());
        assert!(
            not_ready("etcdserver: re-configuration failed due to not enough started members")
                .refused_before_proposing()
        );
        // A timed-out or interrupted change may have gone through.
        assert!(!not_ready("etcdserver: request timed out, Timeout expired").refused_before_proposing());
        assert!(!not_ready("etcdserver: leader changed").refused_before_proposing());
        assert!(!MembershipError::NotCaughtUp(1).refused_before_proposing());
    }

    #[test]
    fn the_most_committed_member_comes_first_and_silent_ones_last() {
        let progress =
            vec![("a".to_string(), None), ("b".into(), Some(40)), ("c".into(), Some(0)), ("d".into(), Some(41))];
        let order: Vec<_> = order_by_progress(progress).into_iter().map(|(e, _)| e).collect();
        assert_eq!(order, ["d", "b", "c", "a"]);
    }

    #[test]
    fn pod_names_come_from_peer_urls_even_before_a_member_starts() {
        assert_eq!(pod_name(&listed("http://etcd-0003.etcd.default.svc:2380", "")), "etcd-0003");
        assert_eq!(pod_name(&listed("https://etcd-0001.etcd.ns.svc.cluster.local:2380", "etcd-0001")), "etcd-0001");
        assert_eq!(pod_name(&listed("http://127.0.0.1:2380", "m1")), "m1");
    }
}
