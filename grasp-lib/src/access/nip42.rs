//! NIP-42 relay authentication: the relay sends a challenge when a client connects; the
//! client answers with a signed kind-22242 event naming that challenge and this relay.

use nostr::{Event, Kind, PublicKey, Timestamp};

use crate::origin::ServiceOrigin;

/// How far `created_at` of an `AUTH` event may be from now, either way.
pub const MAX_SKEW_SECS: u64 = 600;

/// `AUTH` attempts a connection gets before it is closed.
pub const MAX_ATTEMPTS: u32 = 3;

/// Seconds a connection may stay unauthenticated.
pub const AUTH_TIMEOUT_SECS: u64 = 30;

/// Why an `AUTH` event does not authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not kind 22242.
    #[error("not a kind 22242 authentication event")]
    Kind,
    /// Id or signature do not verify.
    #[error("id or signature does not verify")]
    Signature,
    /// `created_at` too far from now.
    #[error("created_at is more than {MAX_SKEW_SECS} seconds from now; check your clock")]
    Stale,
    /// No `challenge` tag with this connection's challenge.
    #[error("the challenge tag does not match this connection's challenge")]
    Challenge,
    /// No `relay` tag naming this relay.
    #[error("no relay tag names this relay")]
    Relay,
    /// A valid event by someone who is not a member.
    #[error("not a member of this private service")]
    NotMember,
}

/// The key an `AUTH` event proves, when it answers `challenge` for the relay at `origin`.
pub fn verify(
    event: &Event,
    challenge: &str,
    origin: &ServiceOrigin,
    now: Timestamp,
) -> Result<PublicKey, Refusal> {
    if event.kind != Kind::Authentication {
        return Err(Refusal::Kind);
    }
    if event.verify().is_err() {
        return Err(Refusal::Signature);
    }
    if event.created_at.as_secs().abs_diff(now.as_secs()) > MAX_SKEW_SECS {
        return Err(Refusal::Stale);
    }
    let values = |name: &'static str| {
        event
            .tags
            .iter()
            .filter(move |t| t.as_slice().first().map(String::as_str) == Some(name))
            .filter_map(|t| t.as_slice().get(1).cloned())
    };
    if !values("challenge").any(|c| c == challenge) {
        return Err(Refusal::Challenge);
    }
    if !values("relay").any(|r| origin.is_relay_url(&r)) {
        return Err(Refusal::Relay);
    }
    Ok(event.pubkey)
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys, RelayUrl, Tag};

    use super::*;

    fn origin() -> ServiceOrigin {
        ServiceOrigin::parse("git.example.com").unwrap()
    }

    fn auth(keys: &Keys, challenge: &str, relay: &str) -> Event {
        EventBuilder::auth(challenge, RelayUrl::parse(relay).unwrap()).sign_with_keys(keys).unwrap()
    }

    #[test]
    fn an_answer_to_this_challenge_for_this_relay_authenticates() {
        let keys = Keys::generate();
        let now = Timestamp::now();
        for relay in ["wss://git.example.com", "ws://git.example.com/", "wss://GIT.example.com:443"] {
            assert_eq!(
                verify(&auth(&keys, "c1", relay), "c1", &origin(), now),
                Ok(keys.public_key()),
                "{relay}"
            );
        }
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        let keys = Keys::generate();
        let now = Timestamp::now();
        assert_eq!(
            verify(&auth(&keys, "c1", "wss://git.example.com"), "c2", &origin(), now),
            Err(Refusal::Challenge)
        );
        assert_eq!(
            verify(&auth(&keys, "c1", "wss://other.example"), "c1", &origin(), now),
            Err(Refusal::Relay)
        );
        assert_eq!(
            verify(&auth(&keys, "c1", "wss://git.example.com/base"), "c1", &origin(), now),
            Err(Refusal::Relay)
        );
        let later = Timestamp::from(now.as_secs() + MAX_SKEW_SECS + 5);
        assert_eq!(
            verify(&auth(&keys, "c1", "wss://git.example.com"), "c1", &origin(), later),
            Err(Refusal::Stale)
        );
        let note = EventBuilder::text_note("hi")
            .tags([
                Tag::parse(["challenge", "c1"]).unwrap(),
                Tag::parse(["relay", "wss://git.example.com"]).unwrap(),
            ])
            .sign_with_keys(&keys)
            .unwrap();
        assert_eq!(verify(&note, "c1", &origin(), now), Err(Refusal::Kind));
        let mut forged = auth(&keys, "c1", "wss://git.example.com");
        forged.pubkey = Keys::generate().public_key();
        assert_eq!(verify(&forged, "c1", &origin(), now), Err(Refusal::Signature));
    }
}
