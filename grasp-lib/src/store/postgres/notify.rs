//! The change notification a save sends (`NOTIFY grasp_events, '<node>:<event id>'`), for
//! live delivery across nodes ([`super::fanout`] listens).

use nostr::EventId;

/// The notification channel.
pub const CHANNEL: &str = "grasp_events";

/// The payload announcing that `node` stored `id`.
pub fn payload(node: &str, id: &EventId) -> String {
    format!("{node}:{}", id.to_hex())
}

/// `(node, event id)` of a payload.
pub fn parse(payload: &str) -> Option<(&str, EventId)> {
    let (node, id) = payload.split_once(':')?;
    Some((node, EventId::from_hex(id).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_the_node_and_the_event() {
        let id = EventId::all_zeros();
        assert_eq!(parse(&payload("ab12", &id)), Some(("ab12", id)));
        assert_eq!(parse("no separator"), None);
        assert_eq!(parse("node:not-hex"), None);
    }
}
