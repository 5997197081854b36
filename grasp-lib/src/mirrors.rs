//! GRASP-08 mirroring: on a private service, the owners of other private GRASP servers that
//! hosted repositories name (stored or held announcements: only members announce) become
//! members, so those servers can sync and fetch what they
//! host together. A relay qualifies when its NIP-11 document lists `GRASP-08`; its
//! `pubkey` is the member. Everything dialed here is named by events, so it goes through
//! the outbound policy (pinned, no redirects, no proxy) with a short timeout and a small
//! body cap; answers are cached and asked again after a while, and the learned members are
//! replaced as a whole each round (a server that stops qualifying stops being a member).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use nostr::{Filter, Kind, PublicKey};
use tokio::time::Instant;

use crate::access::peers::authority_of;
use crate::access::{PrivateAccess, PrivatePeers};
use crate::hosting::Hosting;
use crate::nip34::{kinds, RepoAnnouncement};
use crate::outbound::{OutboundPolicy, TargetKind};
use crate::purgatory::HeldKind;
use crate::sync::peers::{discover, OwnUrls, PeerUrl};

/// Largest NIP-11 document read.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024;

/// NIP-11 documents fetched at once.
const CONCURRENT_FETCHES: usize = 4;

/// How mirroring discovery runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorSettings {
    /// Time between rounds (reading the announcements, asking relays whose answer is old).
    pub round: Duration,
    /// How long a relay's answer is used before it is asked again.
    pub ttl: Duration,
    /// Time limit of one NIP-11 request.
    pub timeout: Duration,
    /// Most relays looked at (ranked as relay sync ranks its peers).
    pub max_relays: usize,
}

impl MirrorSettings {
    /// Production timings, or short ones in test mode.
    pub fn for_mode(test_mode: bool) -> Self {
        if test_mode {
            Self {
                round: Duration::from_millis(500),
                ttl: Duration::from_secs(5),
                timeout: Duration::from_secs(3),
                max_relays: 50,
            }
        } else {
            Self {
                round: Duration::from_secs(60),
                ttl: Duration::from_secs(3600),
                timeout: Duration::from_secs(5),
                max_relays: 50,
            }
        }
    }
}

/// What one relay said about itself.
#[derive(Debug, Clone, Copy)]
struct Answer {
    at: Instant,
    /// The owner, when the relay is a private GRASP server with a `pubkey`.
    private_owner: Option<PublicKey>,
}

/// Runs discovery until the process ends.
pub fn start(
    hosting: Arc<Hosting>,
    access: Arc<PrivateAccess>,
    peers: Arc<PrivatePeers>,
    policy: Arc<OutboundPolicy>,
    own: OwnUrls,
    settings: MirrorSettings,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut answers: HashMap<PeerUrl, Answer> = HashMap::new();
        loop {
            if let Err(e) = round(&hosting, &access, &peers, &policy, &own, settings, &mut answers).await {
                tracing::warn!(error = %e, "private mirroring: cannot read announcements");
            }
            tokio::time::sleep(settings.round).await;
        }
    })
}

async fn round(
    hosting: &Hosting,
    access: &PrivateAccess,
    peers: &PrivatePeers,
    policy: &OutboundPolicy,
    own: &OwnUrls,
    settings: MirrorSettings,
    answers: &mut HashMap<PeerUrl, Answer>,
) -> Result<(), crate::store::StoreError> {
    // Stored and held announcements: on a private service only members announce, so a
    // held one is as trusted as a stored one, and a repository waiting for its data must
    // be able to fetch it from another private server.
    let stored = hosting.store().query(Filter::new().kind(Kind::Custom(kinds::REPO_ANNOUNCEMENT))).await?;
    let held = hosting.purgatory().held_of_kind(HeldKind::Announcement);
    let announcements: Vec<RepoAnnouncement> = stored
        .iter()
        .chain(held.iter().map(|entry| &entry.event))
        .filter_map(|e| RepoAnnouncement::parse(e).ok())
        .collect();
    let relays = discover(&[], &announcements, own, settings.max_relays, |peer| {
        policy.check(TargetKind::Relay, peer.as_str()).is_ok()
    });
    let stale: Vec<PeerUrl> = relays
        .iter()
        .filter(|r| answers.get(*r).is_none_or(|a| a.at.elapsed() >= settings.ttl))
        .cloned()
        .collect();
    let fresh: Vec<(PeerUrl, Option<PublicKey>)> = futures::stream::iter(stale)
        .map(|relay| async move {
            let owner = match private_owner(policy, relay.as_str(), settings.timeout).await {
                Ok(owner) => owner,
                Err(why) => {
                    tracing::debug!(relay = %relay, %why, "private mirroring: no NIP-11 answer");
                    None
                }
            };
            (relay, owner)
        })
        .buffer_unordered(CONCURRENT_FETCHES)
        .collect()
        .await;
    for (relay, private_owner) in fresh {
        answers.insert(relay, Answer { at: Instant::now(), private_owner });
    }
    answers.retain(|relay, _| relays.contains(relay));
    let private: Vec<(&PeerUrl, PublicKey)> =
        answers.iter().filter_map(|(relay, a)| a.private_owner.map(|o| (relay, o))).collect();
    let members: HashSet<PublicKey> = private.iter().map(|(_, owner)| *owner).collect();
    peers.set(private.iter().filter_map(|(relay, _)| authority_of(relay.as_str())).collect());
    if access.members().set_learned(members.clone()) {
        tracing::info!(
            servers = members.len(),
            "private mirroring: members from other private servers changed"
        );
    }
    Ok(())
}

/// The owner of the relay at `relay` when its NIP-11 says it is a private GRASP server.
async fn private_owner(
    policy: &OutboundPolicy,
    relay: &str,
    timeout: Duration,
) -> Result<Option<PublicKey>, String> {
    let target = policy.resolve(TargetKind::Relay, relay).await.map_err(|r| r.reason)?;
    let mut url = target.url.clone();
    let scheme = if url.scheme() == "wss" { "https" } else { "http" };
    url.set_scheme(scheme).map_err(|()| "cannot make an http URL of it".to_owned())?;
    let mut client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .user_agent(concat!("grasp-server/", env!("CARGO_PKG_VERSION")));
    if target.is_name && !target.addresses.is_empty() {
        // Pinned to the addresses the policy vetted.
        client = client.resolve_to_addrs(&target.host, &target.addresses);
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/nostr+json")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("document larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
    }
    Ok(owner_if_private(&body))
}

/// The `pubkey` of a NIP-11 document that lists `GRASP-08`.
fn owner_if_private(document: &[u8]) -> Option<PublicKey> {
    let doc: serde_json::Value = serde_json::from_slice(document).ok()?;
    let private = doc["supported_grasps"].as_array()?.iter().any(|g| g.as_str() == Some("GRASP-08"));
    private.then(|| doc["pubkey"].as_str().and_then(|p| PublicKey::from_hex(p).ok())).flatten()
}

#[cfg(test)]
mod tests {
    use nostr::Keys;
    use serde_json::json;

    use super::*;

    #[test]
    fn only_a_private_grasp_server_with_a_pubkey_names_a_member() {
        let owner = Keys::generate().public_key();
        let doc = |v: serde_json::Value| owner_if_private(v.to_string().as_bytes());
        assert_eq!(
            doc(json!({"supported_grasps": ["GRASP-01", "GRASP-08"], "pubkey": owner.to_hex()})),
            Some(owner)
        );
        assert_eq!(doc(json!({"supported_grasps": ["GRASP-01"], "pubkey": owner.to_hex()})), None);
        assert_eq!(doc(json!({"supported_grasps": ["GRASP-08"]})), None);
        assert_eq!(doc(json!({"supported_grasps": "GRASP-08", "pubkey": owner.to_hex()})), None);
        assert_eq!(owner_if_private(b"not json"), None);
    }
}
