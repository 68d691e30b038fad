//! A member's peer URL (where the other members dial it, as etcd's member list holds it) and where its pod listens
//! for peers, while peer TLS is turned on for a running cluster.
//!
//! etcd cannot serve both schemes on one peer port, and every member dials a peer at the URL the member list holds
//! for it. So a member changes scheme in three steps, one member at a time, each health-gated by the rollout
//! ([`crate::plan`]): its pod is rolled to listen on its registered URL and, with the new scheme, on the other of
//! the two peer ports ([`PEER_PORT`], [`SWITCH_PORT`]), holding the certificates its own dials present from then on;
//! once every member's pod does, its registered URL is switched to the new one (a membership update, no restart:
//! the others dial it there from their next connection); then its pod is rolled to listen on that URL alone. A
//! member therefore keeps the port it was switched to: a cluster that turned peer TLS on runs it on
//! [`SWITCH_PORT`], one created with it on [`PEER_PORT`]. What a pod listens on follows its member's registered
//! URL, never a fixed port.

/// The peer port of a member created with its cluster's scheme.
pub const PEER_PORT: u16 = 2380;
/// The other peer port: where a member listens with its new scheme while it changes scheme.
pub const SWITCH_PORT: u16 = 2382;

/// A peer URL, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUrl {
    /// Whether it is `https`.
    pub tls: bool,
    /// Its host (a DNS name; an IP address in tests).
    pub host: String,
    /// Its port.
    pub port: u16,
}

impl PeerUrl {
    /// `http(s)://host:port`, if `url` is one.
    pub fn parse(url: &str) -> Option<Self> {
        let (scheme, rest) = url.split_once("://")?;
        let tls = match scheme {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
        Some(Self { tls, host: host.to_string(), port: port.parse().ok()? })
    }

    /// The URL.
    pub fn render(&self) -> String {
        format!("{}://{}:{}", scheme(self.tls), self.host, self.port)
    }

    /// The listen URL of the same scheme and port.
    fn listen(&self) -> String {
        format!("{}://0.0.0.0:{}", scheme(self.tls), self.port)
    }

    /// The URL this member is to be registered at when its cluster asks for `tls`: this one if it has that scheme,
    /// else that scheme on the other peer port.
    pub fn wanted(&self, tls: bool) -> Self {
        if self.tls == tls {
            return self.clone();
        }
        let port = if self.port == SWITCH_PORT { PEER_PORT } else { SWITCH_PORT };
        Self { tls, host: self.host.clone(), port }
    }
}

fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Where the pod of a member registered at `registered` listens for peers while its cluster asks for `tls`: on its
/// registered URL and, while that has the other scheme, on the URL it is to be switched to. A member etcd does not
/// list yet (a new seed) listens with `tls` on [`PEER_PORT`].
pub fn listen(registered: Option<&str>, tls: bool) -> Vec<String> {
    match registered.and_then(PeerUrl::parse) {
        None => vec![format!("{}://0.0.0.0:{PEER_PORT}", scheme(tls))],
        Some(url) if url.tls == tls => vec![url.listen()],
        Some(url) => vec![url.listen(), url.wanted(tls).listen()],
    }
}

/// Whether a member that joins a cluster whose members are registered at `registered` is registered with TLS, when
/// its cluster asks for `tls`: once no member is registered plain, or every member's pod holds the peer
/// certificates its dials present (`certified`: rolled to listen on both schemes). Until then it joins plain, as its
/// peers are dialled, and changes scheme with them: a member without certificates could not dial it over TLS.
/// (So a member on an emptyDir replaced to listen on both schemes joins plain and is replaced once more after its
/// switch; one replaced once every pod holds certificates joins with TLS and is done.)
pub fn joins_with_tls(registered: &[&str], tls: bool, certified: bool) -> bool {
    tls && (certified || registered.iter().all(|url| PeerUrl::parse(url).is_none_or(|u| u.tls)))
}

/// The listen URLs in a pod's `--listen-peer-urls` flag, as written.
pub fn listened(command: &[String]) -> Vec<String> {
    command
        .iter()
        .find_map(|a| a.strip_prefix("--listen-peer-urls="))
        .map(|urls| urls.split(',').filter(|u| !u.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether a pod's etcd command serves clients over TLS (its `--listen-client-urls` is `https`).
pub fn serves_client_tls(command: &[String]) -> bool {
    command.iter().any(|a| a.starts_with("--listen-client-urls=https://"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "http://demo-0000.demo.ns.svc:2380";

    #[test]
    fn a_member_of_the_wanted_scheme_listens_on_its_registered_url_alone() {
        assert_eq!(listen(Some(PLAIN), false), ["http://0.0.0.0:2380"]);
        assert_eq!(listen(Some("https://demo-0000.demo.ns.svc:2382"), true), ["https://0.0.0.0:2382"]);
        assert_eq!(listen(None, true), ["https://0.0.0.0:2380"], "a new seed: the cluster's scheme on 2380");
        assert_eq!(listen(None, false), ["http://0.0.0.0:2380"]);
    }

    #[test]
    fn a_member_changing_scheme_listens_on_both_ports_and_is_switched_to_the_other() {
        assert_eq!(listen(Some(PLAIN), true), ["http://0.0.0.0:2380", "https://0.0.0.0:2382"]);
        let switched = PeerUrl::parse(PLAIN).unwrap().wanted(true);
        assert_eq!(switched.render(), "https://demo-0000.demo.ns.svc:2382");
        // Once switched it listens there alone; switched back, it returns to 2380.
        assert_eq!(listen(Some(&switched.render()), true), ["https://0.0.0.0:2382"]);
        assert_eq!(switched.wanted(false).render(), PLAIN);
        assert_eq!(PeerUrl::parse(PLAIN).unwrap().wanted(false).render(), PLAIN, "no change, no new URL");
    }

    #[test]
    fn a_member_joins_plain_while_any_member_is_registered_plain_and_lacks_certificates() {
        let tls = "https://demo-0001.demo.ns.svc:2382";
        assert!(!joins_with_tls(&[PLAIN, tls], true, false));
        assert!(joins_with_tls(&[PLAIN, tls], true, true), "every peer holds certificates: it can dial it");
        assert!(joins_with_tls(&[tls], true, false));
        assert!(joins_with_tls(&[], true, false));
        assert!(!joins_with_tls(&[tls], false, true));
    }

    #[test]
    fn urls_parse_and_flags_read_back() {
        assert_eq!(PeerUrl::parse("ftp://x:1"), None);
        assert_eq!(PeerUrl::parse("http://x"), None);
        assert_eq!(PeerUrl::parse("https://[fd00::1]:2380").map(|u| u.port), Some(2380));
        let command = ["etcd".to_string(), "--listen-peer-urls=http://0.0.0.0:2380,https://0.0.0.0:2382".into()];
        assert_eq!(listened(&command), ["http://0.0.0.0:2380", "https://0.0.0.0:2382"]);
        assert!(listened(&["etcd".to_string()]).is_empty());
    }
}
