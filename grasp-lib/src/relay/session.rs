//! One client connection's protocol state: its subscriptions and negentropy sessions.
//!
//! A session never blocks on the network: it returns the messages to send and lets the
//! transport write them. Anything malformed is answered (NOTICE, CLOSED, NEG-ERR or OK false)
//! and the session stays usable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use nostr::filter::MatchEventOptions;
use nostr::{ClientMessage, Event, EventId, Filter, Timestamp};
use serde_json::Value;

use super::answer::Answer;
use super::engine::Relay;
use super::gate::Gate;
use super::negentropy::NegentropySession;
use super::wire::{self, CLIENT_MESSAGE_TYPES, MAX_SUBSCRIPTION_ID_LEN};
use crate::metrics::kind_label;
use crate::policy::EventSource;
use crate::store::LiveEvent;

/// How far back a stored event counts as "recent": such events may still be on their way to
/// this connection as live events when the REQ answers, so their ids are remembered to
/// avoid sending them twice.
const RECENT_SECS: u64 = 600;

/// One open REQ.
struct Subscription {
    filters: Vec<Filter>,
    /// Recent events already sent from the store for this subscription.
    sent_recent: HashSet<EventId>,
}

/// A REQ whose stored events are being sent, page by page.
struct Answering {
    answer: Answer,
    filters: Vec<Filter>,
    started: Instant,
}

/// Protocol state of one client.
pub struct Session {
    relay: Arc<Relay>,
    peer: IpAddr,
    subscriptions: BTreeMap<String, Subscription>,
    negentropy: HashMap<String, NegentropySession>,
    answering: Option<Answering>,
    /// NIP-42 state, on a private relay.
    gate: Option<Gate>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer", &self.peer)
            .field("subscriptions", &self.subscriptions.len())
            .finish_non_exhaustive()
    }
}

/// Label of messages that are not valid client messages (bounded, whatever clients send).
const INVALID: &str = wire::INVALID_CLIENT_MESSAGE;

/// The `type` label of a client message.
fn message_type_label(kind: &str) -> &'static str {
    CLIENT_MESSAGE_TYPES.iter().find(|t| **t == kind).copied().unwrap_or(INVALID)
}

impl Relay {
    /// A new session for a client at `peer`.
    pub fn session(self: &Arc<Self>, peer: IpAddr) -> Session {
        Session::new(self.clone(), peer)
    }
}

impl Session {
    pub(super) fn new(relay: Arc<Relay>, peer: IpAddr) -> Self {
        let gate = relay.access().map(|access| Gate::new(access.clone()));
        Self {
            relay,
            peer,
            subscriptions: BTreeMap::new(),
            negentropy: HashMap::new(),
            answering: None,
            gate,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// What to send as soon as the connection opens: the NIP-42 challenge on a private
    /// relay, nothing otherwise.
    pub fn greeting(&self) -> Vec<String> {
        self.gate.iter().map(Gate::greeting).collect()
    }

    /// True when the connection must be closed after the messages already returned are
    /// written (a private relay refused the client).
    pub fn wants_close(&self) -> bool {
        self.gate.as_ref().is_some_and(Gate::closing)
    }

    /// When a connection that has not authenticated yet is closed (private relay).
    pub fn auth_deadline(&self) -> Option<tokio::time::Instant> {
        self.gate.as_ref().and_then(Gate::deadline)
    }

    /// The member this connection authenticated as (private relay).
    pub fn authenticated(&self) -> Option<nostr::PublicKey> {
        self.gate.as_ref().and_then(Gate::member)
    }

    /// Number of open REQ subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// Handles one client message and returns every message to send back, in order (a
    /// REQ's whole answer included). A transport that writes as it goes uses
    /// [`Session::receive`] and [`Session::more`] instead, so a long answer is never held
    /// in memory at once.
    pub async fn handle(&mut self, text: &str) -> Vec<String> {
        let mut messages = self.receive(text).await;
        while let Some(page) = self.more().await {
            messages.extend(page);
        }
        messages
    }

    /// The rest of a REQ answer that [`Session::receive`] started: the next page of
    /// messages, or `None` when nothing is pending. Call it after writing the previous
    /// messages, until it returns `None`, before the next client message.
    pub async fn more(&mut self) -> Option<Vec<String>> {
        let mut answering = self.answering.take()?;
        let sub = answering.answer.subscription().to_owned();
        let page = match answering.answer.next_page(self.relay.store()).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "REQ query failed");
                self.observe_req("error", answering.started);
                return Some(vec![wire::closed(&sub, &e.client_message())]);
            }
        };
        if page.done {
            self.observe_req("ok", answering.started);
            let sent_recent = answering.answer.into_recent();
            self.subscriptions.insert(sub, Subscription { filters: answering.filters, sent_recent });
        } else {
            self.answering = Some(answering);
        }
        Some(page.messages)
    }

    fn observe_req(&self, outcome: &str, started: Instant) {
        self.relay
            .metrics()
            .req_duration
            .with_label_values(&[outcome])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Handles one client message and returns the first messages to send back; a REQ's
    /// answer continues with [`Session::more`].
    pub async fn receive(&mut self, text: &str) -> Vec<String> {
        // A client message ends an answer still pending (the transport did not ask for
        // the rest): its subscription is not opened.
        self.answering = None;
        let metrics = self.relay.metrics();
        let limit = self.relay.limits().max_message_size;
        if text.len() > limit {
            metrics.messages_received.with_label_values(&[INVALID]).inc();
            return vec![wire::notice(&format!(
                "invalid: message of {} bytes exceeds the limit of {limit} bytes",
                text.len()
            ))];
        }
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                metrics.messages_received.with_label_values(&[INVALID]).inc();
                return vec![wire::notice(&format!("invalid: message is not valid JSON: {e}"))];
            }
        };
        let Some(kind) = value.as_array().and_then(|a| a.first()).and_then(Value::as_str).map(str::to_owned)
        else {
            metrics.messages_received.with_label_values(&[INVALID]).inc();
            return vec![wire::notice(
                "invalid: a message must be a JSON array whose first element is its type",
            )];
        };
        metrics.messages_received.with_label_values(&[message_type_label(&kind)]).inc();
        if let Some(gate) = &mut self.gate {
            if kind == "AUTH" {
                return vec![gate.authenticate(&value)];
            }
            if gate.member().is_none() {
                return vec![gate.refuse(&kind, &value)];
            }
        }
        match kind.as_str() {
            "EVENT" => vec![self.handle_event(&value).await],
            "REQ" => self.handle_req(value).await,
            "CLOSE" => self.handle_close(value),
            "COUNT" => vec![self.handle_count(value).await],
            "AUTH" => vec![self.handle_auth(&value)],
            "NEG-OPEN" | "NEG-MSG" | "NEG-CLOSE" => self.handle_negentropy(value).await,
            other => vec![wire::notice(&format!("invalid: unknown message type '{other}'"))],
        }
    }

    /// Messages for a live event: one EVENT per matching subscription.
    pub fn on_live(&self, live: &LiveEvent) -> Vec<String> {
        if self.gate.as_ref().is_some_and(|gate| gate.member().is_none()) {
            return Vec::new();
        }
        self.subscriptions
            .iter()
            .filter(|(_, sub)| !sub.sent_recent.contains(&live.event.id))
            .filter(|(_, sub)| {
                sub.filters.iter().any(|f| f.match_event(&live.event, MatchEventOptions::new()))
            })
            .map(|(id, _)| wire::event(id, &live.json))
            .collect()
    }

    /// Closes every live subscription after `missed` live events could not be queued for
    /// this client: a subscriber is never skipped silently.
    pub fn on_lagged(&mut self, missed: u64) -> Vec<String> {
        let closed: Vec<String> = std::mem::take(&mut self.subscriptions)
            .into_keys()
            .map(|id| {
                wire::closed(
                    &id,
                    &format!(
                        "error: subscriber too slow: {missed} live events could not be delivered; \
                         re-subscribe (with 'since') to catch up"
                    ),
                )
            })
            .collect();
        self.relay.metrics().slow_subscriptions_closed.inc_by(closed.len() as u64);
        closed
    }

    async fn handle_event(&mut self, value: &Value) -> String {
        let raw = value.get(1);
        let raw_id = raw.and_then(|e| e.get("id")).and_then(Value::as_str).unwrap_or("").to_owned();
        let event: Event = match raw.map(|e| serde_json::from_value::<Event>(e.clone())) {
            Some(Ok(event)) => event,
            Some(Err(e)) if !raw_id.is_empty() => {
                return wire::ok(&raw_id, false, &format!("invalid: malformed event: {e}"));
            }
            Some(Err(e)) => return wire::notice(&format!("invalid: malformed event: {e}")),
            None => return wire::notice("invalid: EVENT message has no event"),
        };
        let id = event.id.to_hex();
        let kind = kind_label(event.kind.as_u16());
        if !self.relay.allow_event_from(self.peer) {
            let per_minute = self.relay.limits().events_per_minute;
            let msg = format!(
                "rate-limited: more than {per_minute} events per minute from your address; slow down"
            );
            return wire::ok(&id, false, &self.relay.refuse_unverified(kind, "rate_limited", msg).message);
        }
        let outcome = self.relay.submit(event, EventSource::Client(Some(self.peer))).await;
        crate::crash::point("ingest-before-ok");
        wire::ok(&id, outcome.accepted, &outcome.message)
    }

    /// Parses a client message, or explains why not (for REQ/COUNT/NEG the subscription id
    /// is echoed in a CLOSED/NEG-ERR when it can be read).
    fn parse(value: Value) -> Result<ClientMessage<'static>, String> {
        ClientMessage::from_value(value).map_err(|e| e.to_string())
    }

    fn subscription_id_of(value: &Value) -> Option<String> {
        value.get(1).and_then(Value::as_str).map(str::to_owned)
    }

    fn check_subscription_id(id: &str) -> Result<(), String> {
        if id.is_empty() || id.chars().count() > MAX_SUBSCRIPTION_ID_LEN {
            Err(format!("invalid: subscription id must be 1 to {MAX_SUBSCRIPTION_ID_LEN} characters"))
        } else {
            Ok(())
        }
    }

    fn clamp(&self, mut filter: Filter) -> Filter {
        let max = self.relay.limits().max_limit;
        filter.limit = Some(filter.limit.map_or(max, |l| l.min(max)));
        filter
    }

    /// The refusal of a filter this relay cannot answer in bounded time: NIP-50 `search`
    /// would scan every event (the store has no search index).
    fn unanswerable(filters: &[Filter]) -> Option<&'static str> {
        filters
            .iter()
            .any(|f| f.search.is_some())
            .then_some("invalid: search (NIP-50) is not supported by this relay")
    }

    async fn handle_req(&mut self, value: Value) -> Vec<String> {
        let sub = Self::subscription_id_of(&value);
        let filters = match Self::parse(value) {
            Ok(ClientMessage::Req { filters, .. }) => filters,
            Ok(_) | Err(_) => {
                return vec![match sub {
                    Some(sub) => wire::closed(
                        &sub,
                        "invalid: REQ must be [\"REQ\", <subscription id>, <filter>, ...] with valid filters",
                    ),
                    None => wire::notice("invalid: REQ must be [\"REQ\", <subscription id>, <filter>, ...]"),
                }]
            }
        };
        let sub = sub.unwrap_or_default();
        if let Err(msg) = Self::check_subscription_id(&sub) {
            return vec![wire::closed(&sub, &msg)];
        }
        let limits = self.relay.limits();
        if filters.len() > limits.max_filters {
            return vec![wire::closed(
                &sub,
                &format!("invalid: too many filters ({}, at most {})", filters.len(), limits.max_filters),
            )];
        }
        if !self.subscriptions.contains_key(&sub) && self.subscriptions.len() >= limits.max_subscriptions {
            return vec![wire::closed(
                &sub,
                &format!(
                    "rate-limited: too many open subscriptions (at most {}); CLOSE one first",
                    limits.max_subscriptions
                ),
            )];
        }
        let filters: Vec<Filter> = filters.into_iter().map(|f| f.into_owned()).collect();
        if let Some(refusal) = Self::unanswerable(&filters) {
            return vec![wire::closed(&sub, refusal)];
        }
        let recent = Timestamp::now().as_secs().saturating_sub(RECENT_SECS);
        let clamped = filters.iter().map(|f| self.clamp(f.clone())).collect();
        let answer = Answer::new(sub, clamped, limits.max_req_bytes, recent);
        self.answering = Some(Answering { answer, filters, started: Instant::now() });
        self.more().await.unwrap_or_default()
    }

    fn handle_close(&mut self, value: Value) -> Vec<String> {
        match Self::subscription_id_of(&value) {
            Some(sub) => {
                self.subscriptions.remove(&sub);
                Vec::new()
            }
            None => vec![wire::notice("invalid: CLOSE must be [\"CLOSE\", <subscription id>]")],
        }
    }

    async fn handle_count(&mut self, value: Value) -> String {
        let Some(sub) = Self::subscription_id_of(&value) else {
            return wire::notice("invalid: COUNT must be [\"COUNT\", <subscription id>, <filter>, ...]");
        };
        if let Err(msg) = Self::check_subscription_id(&sub) {
            return wire::closed(&sub, &msg);
        }
        let raw_filters = value.as_array().map(|a| a[2..].to_vec()).unwrap_or_default();
        let filters: Result<Vec<Filter>, _> =
            raw_filters.into_iter().map(serde_json::from_value::<Filter>).collect();
        let filters = match filters {
            Ok(f) if !f.is_empty() && f.len() <= self.relay.limits().max_filters => f,
            Ok(_) => {
                return wire::closed(&sub, "invalid: COUNT needs between one filter and the filter limit")
            }
            Err(e) => return wire::closed(&sub, &format!("invalid: bad filter: {e}")),
        };
        if let Some(refusal) = Self::unanswerable(&filters) {
            return wire::closed(&sub, refusal);
        }
        // Each filter loads at most one more id than the cap; several filters may overlap,
        // so distinct ids are counted. Past the cap the answer is `approximate`.
        let cap = self.relay.limits().max_count;
        let store = self.relay.store();
        let mut ids: HashSet<EventId> = HashSet::new();
        for mut filter in filters {
            filter.limit = Some(filter.limit.map_or(cap + 1, |l| l.min(cap + 1)));
            match store.items_for_client(filter).await {
                Ok(items) => ids.extend(items.into_iter().map(|(id, _)| id)),
                Err(e) => {
                    tracing::warn!(error = %e, "COUNT failed");
                    return wire::closed(&sub, &e.client_message());
                }
            }
            if ids.len() > cap {
                return wire::count_at_least(&sub, cap);
            }
        }
        wire::count(&sub, ids.len())
    }

    fn handle_auth(&self, value: &Value) -> String {
        let id = value.get(1).and_then(|e| e.get("id")).and_then(Value::as_str).unwrap_or("");
        let msg = "unsupported: this relay does not offer NIP-42 authentication";
        if id.is_empty() {
            wire::notice(msg)
        } else {
            wire::ok(id, false, msg)
        }
    }

    async fn handle_negentropy(&mut self, value: Value) -> Vec<String> {
        let sub = Self::subscription_id_of(&value);
        let message = match Self::parse(value) {
            Ok(m) => m,
            Err(e) => {
                return vec![match sub {
                    Some(sub) => wire::neg_err(&sub, &format!("invalid: {e}")),
                    None => wire::notice(&format!("invalid: {e}")),
                }]
            }
        };
        match message {
            ClientMessage::NegOpen { subscription_id, filter, initial_message, .. } => {
                let sub = subscription_id.to_string();
                if let Err(msg) = Self::check_subscription_id(&sub) {
                    return vec![wire::neg_err(&sub, &msg)];
                }
                self.negentropy.remove(&sub);
                if let Some(refusal) = Self::unanswerable(std::slice::from_ref(&filter)) {
                    return vec![wire::neg_err(&sub, refusal)];
                }
                if self.negentropy.len() >= self.relay.limits().max_subscriptions {
                    return vec![wire::neg_err(
                        &sub,
                        "blocked: too many open negentropy sessions; NEG-CLOSE one first",
                    )];
                }
                let opened = NegentropySession::open(
                    self.relay.store(),
                    filter.into_owned(),
                    self.relay.limits().max_negentropy_items,
                )
                .await;
                let mut session = match opened {
                    Ok(s) => s,
                    Err(reason) => return vec![wire::neg_err(&sub, &reason)],
                };
                match session.reconcile(&initial_message) {
                    Ok(reply) => {
                        self.negentropy.insert(sub.clone(), session);
                        vec![wire::neg_msg(&sub, &reply)]
                    }
                    Err(reason) => vec![wire::neg_err(&sub, &reason)],
                }
            }
            ClientMessage::NegMsg { subscription_id, message } => {
                let sub = subscription_id.to_string();
                let Some(session) = self.negentropy.get_mut(&sub) else {
                    return vec![wire::neg_err(
                        &sub,
                        "closed: no open negentropy session with this id; send NEG-OPEN",
                    )];
                };
                match session.reconcile(&message) {
                    Ok(reply) => vec![wire::neg_msg(&sub, &reply)],
                    Err(reason) => {
                        self.negentropy.remove(&sub);
                        vec![wire::neg_err(&sub, &reason)]
                    }
                }
            }
            ClientMessage::NegClose { subscription_id } => {
                self.negentropy.remove(subscription_id.as_str());
                Vec::new()
            }
            _ => vec![wire::notice("invalid: unexpected negentropy message")],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nostr::{EventBuilder, Keys};

    use super::*;
    use crate::metrics::Metrics;
    use crate::policy::AcceptAll;
    use crate::relay::RelayLimits;
    use crate::store::EventStore;

    #[tokio::test]
    async fn an_event_sent_from_the_store_is_not_sent_again_live() {
        let relay = Arc::new(Relay::with_store(
            EventStore::memory(),
            Arc::new(AcceptAll),
            RelayLimits::default(),
            Metrics::new(),
        ));
        let mut live = relay.subscribe_live();
        let mut session = relay.session("127.0.0.1".parse().unwrap());
        let event = EventBuilder::text_note("hi").sign_with_keys(&Keys::generate()).unwrap();
        assert!(relay.ingest(event.clone()).await.accepted);
        // The REQ is answered before this connection got to the live copy of the event.
        let replies = session.handle(r#"["REQ","s",{"kinds":[1]}]"#).await;
        assert_eq!(replies.len(), 2, "{replies:?}");
        let pending = live.recv().await.unwrap();
        assert_eq!(pending.event.id, event.id);
        assert!(session.on_live(&pending).is_empty(), "duplicate live delivery");
        // A new event still arrives live.
        let other = EventBuilder::text_note("again").sign_with_keys(&Keys::generate()).unwrap();
        relay.ingest(other.clone()).await;
        assert_eq!(session.on_live(&live.recv().await.unwrap()).len(), 1);
    }
}
