//! The change notification a save sends, for live delivery across nodes ([`super::fanout`]
//! listens): `<node>:<event id>`, followed by `:<event JSON>` when the whole payload fits
//! in a notification, so the listeners need not load the event (most events are small;
//! PostgreSQL caps a payload at 8000 bytes).

use nostr::{Event, EventId, JsonUtil};

/// The notification channel.
pub const CHANNEL: &str = "grasp_events";

/// The longest payload sent (PostgreSQL refuses longer ones).
const MAX_PAYLOAD: usize = 7999;

/// The payload announcing that `node` stored `event`.
pub fn payload(node: &str, event: &Event) -> String {
    let short = format!("{node}:{}", event.id.to_hex());
    let json = event.as_json();
    if short.len() + 1 + json.len() <= MAX_PAYLOAD {
        format!("{short}:{json}")
    } else {
        short
    }
}

/// What a payload announces: the node, the event id, and the event when it came along.
#[derive(Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    /// The node that stored it.
    pub node: &'a str,
    /// Its id.
    pub id: EventId,
    /// The event, when it fitted in the payload (and its id matches).
    pub event: Option<Event>,
}

/// Reads a payload (`None` when it is not one of ours).
pub fn parse(payload: &str) -> Option<Stored<'_>> {
    let mut parts = payload.splitn(3, ':');
    let (node, id) = (parts.next()?, EventId::from_hex(parts.next()?).ok()?);
    let event = parts.next().and_then(|json| Event::from_json(json).ok()).filter(|e| e.id == id);
    Some(Stored { node, id, event })
}

#[cfg(test)]
mod tests {
    use nostr::{EventBuilder, Keys};

    use super::*;

    #[test]
    fn a_payload_names_the_node_and_carries_a_small_event() {
        let event = EventBuilder::text_note("hi").sign_with_keys(&Keys::generate()).unwrap();
        let text = payload("ab12", &event);
        let stored = parse(&text).unwrap();
        assert_eq!((stored.node, stored.id, stored.event), ("ab12", event.id, Some(event.clone())));
        assert_eq!(parse("no separator"), None);
        assert_eq!(parse("node:not-hex"), None);
    }

    #[test]
    fn a_large_event_is_announced_by_id_only() {
        let event = EventBuilder::text_note("x".repeat(10_000)).sign_with_keys(&Keys::generate()).unwrap();
        let text = payload("ab12", &event);
        assert!(text.len() <= MAX_PAYLOAD);
        assert_eq!(parse(&text).unwrap().event, None);
        assert_eq!(parse(&text).unwrap().id, event.id);
    }
}
