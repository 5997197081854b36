//! The NIP-42 gate of one connection to a private relay (GRASP-08): the relay speaks first
//! with a challenge, and until a member answers it every message gets `auth-required:`
//! (nothing reaches the store). A valid answer from someone who is not a member gets
//! `restricted:` and the connection is closed; so is a connection after three failed
//! answers, or one that stays unauthenticated for 30 seconds. A member who stops being one
//! is disconnected.

use std::sync::Arc;

use nostr::{Event, PublicKey};
use serde_json::Value;
use tokio::time::{Duration, Instant};

use super::wire;
use crate::access::nip42::{Refusal, AUTH_TIMEOUT_SECS, MAX_ATTEMPTS};
use crate::access::PrivateAccess;

/// One connection's authentication state.
pub(super) struct Gate {
    access: Arc<PrivateAccess>,
    challenge: String,
    member: Option<PublicKey>,
    attempts: u32,
    deadline: Instant,
    closing: bool,
}

impl Gate {
    pub(super) fn new(access: Arc<PrivateAccess>) -> Self {
        Self {
            access,
            challenge: nostr::SubscriptionId::generate().to_string(),
            member: None,
            attempts: 0,
            deadline: Instant::now() + Duration::from_secs(AUTH_TIMEOUT_SECS),
            closing: false,
        }
    }

    /// What the relay sends as soon as the connection opens.
    pub(super) fn greeting(&self) -> String {
        wire::auth(&self.challenge)
    }

    /// The authenticated member, while they still are one.
    pub(super) fn member(&self) -> Option<PublicKey> {
        self.member.filter(|m| self.access.is_member(m))
    }

    /// When an unauthenticated connection is closed.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.member.is_none().then_some(self.deadline)
    }

    /// True when the connection must end: a non-member authenticated, too many failed
    /// attempts, or the member was removed.
    pub(super) fn closing(&self) -> bool {
        self.closing || (self.member.is_some() && self.member().is_none())
    }

    /// The answer to a client message of type `kind` before authentication.
    pub(super) fn refuse(&self, kind: &str, value: &Value) -> String {
        let second = value.get(1);
        let id = second.and_then(|e| e.get("id")).and_then(Value::as_str);
        let sub = second.and_then(Value::as_str);
        match (kind, id, sub) {
            ("EVENT", Some(id), _) => {
                wire::ok(id, false, "auth-required: authenticate (NIP-42) before publishing")
            }
            ("REQ" | "COUNT", _, Some(sub)) => {
                wire::closed(sub, "auth-required: authenticate (NIP-42) before reading")
            }
            ("NEG-OPEN", _, Some(sub)) => {
                wire::neg_err(sub, "auth-required: authenticate (NIP-42) before syncing")
            }
            _ => wire::notice("auth-required: authenticate (NIP-42) before sending relay messages"),
        }
    }

    /// Handles `["AUTH", <event>]`.
    pub(super) fn authenticate(&mut self, value: &Value) -> String {
        let raw = value.get(1);
        let id = raw.and_then(|e| e.get("id")).and_then(Value::as_str).unwrap_or("").to_owned();
        self.attempts += 1;
        let event = raw.and_then(|e| serde_json::from_value::<Event>(e.clone()).ok());
        let outcome = match &event {
            Some(event) => self.access.authenticate(event, &self.challenge),
            None => Err(Refusal::Kind),
        };
        let reply = |accepted: bool, message: &str| {
            if id.is_empty() {
                wire::notice(message)
            } else {
                wire::ok(&id, accepted, message)
            }
        };
        match outcome {
            Ok(member) => {
                self.member = Some(member);
                reply(true, "")
            }
            Err(Refusal::NotMember) => {
                self.closing = true;
                reply(false, "restricted: this is a private service and your key is not a member")
            }
            Err(why) => {
                if self.member.is_none() && self.attempts >= MAX_ATTEMPTS {
                    self.closing = true;
                }
                reply(false, &format!("auth-required: invalid NIP-42 authentication: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, JsonUtil, Keys, RelayUrl};
    use serde_json::json;

    use super::*;
    use crate::access::Members;
    use crate::origin::ServiceOrigin;

    fn gate(member: &Keys) -> Gate {
        let origin = ServiceOrigin::parse("127.0.0.1:7000").unwrap();
        Gate::new(Arc::new(PrivateAccess::new(Members::new([member.public_key()]), origin, None)))
    }

    fn answer(gate: &Gate, keys: &Keys) -> Value {
        let event =
            EventBuilder::auth(gate.challenge.clone(), RelayUrl::parse("ws://127.0.0.1:7000").unwrap())
                .sign_with_keys(keys)
                .unwrap();
        json!(["AUTH", serde_json::from_str::<Value>(&event.as_json()).unwrap()])
    }

    #[test]
    fn a_member_gets_in_and_others_are_refused_then_closed() {
        let member = Keys::generate();
        let mut g = gate(&member);
        assert!(g.greeting().starts_with("[\"AUTH\""));
        assert!(g.deadline().is_some() && g.member().is_none());
        let ok = g.authenticate(&answer(&g, &member));
        assert!(ok.contains("true"), "{ok}");
        assert_eq!(g.member(), Some(member.public_key()));
        assert!(g.deadline().is_none() && !g.closing());

        let mut g = gate(&member);
        let refused = g.authenticate(&answer(&g, &Keys::generate()));
        assert!(refused.contains("restricted:"), "{refused}");
        assert!(g.closing());
    }

    #[test]
    fn three_bad_answers_close_and_messages_before_are_auth_required() {
        let member = Keys::generate();
        let mut g = gate(&member);
        for attempt in 1..=3 {
            let bad = g.authenticate(&json!(["AUTH", {"id": "ab", "kind": 1}]));
            assert!(bad.contains("auth-required:"), "{bad}");
            assert_eq!(g.closing(), attempt == 3);
        }
        let g = gate(&member);
        assert!(g.refuse("REQ", &json!(["REQ", "s", {}])).starts_with("[\"CLOSED\",\"s\",\"auth-required:"));
        assert!(g
            .refuse("COUNT", &json!(["COUNT", "c", {}]))
            .starts_with("[\"CLOSED\",\"c\",\"auth-required:"));
        assert!(g
            .refuse("EVENT", &json!(["EVENT", {"id": "ab"}]))
            .starts_with("[\"OK\",\"ab\",false,\"auth-required:"));
        assert!(g
            .refuse("NEG-OPEN", &json!(["NEG-OPEN", "n"]))
            .starts_with("[\"NEG-ERR\",\"n\",\"auth-required:"));
        assert!(g.refuse("CLOSE", &json!(["CLOSE", "s"])).starts_with("[\"NOTICE\",\"auth-required:"));
    }
}
