//! Relay-to-client messages (NIP-01, NIP-45, NIP-77), written straight to JSON text.
//!
//! Events are serialized once when they enter the relay; `EVENT` messages splice that text
//! in, so a broadcast to many subscribers never re-encodes the event.

use serde_json::json;

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings always serialize")
}

/// `["EVENT", <sub>, <event json>]`
pub fn event(subscription_id: &str, event_json: &str) -> String {
    format!("[\"EVENT\",{},{}]", quoted(subscription_id), event_json)
}

/// `["OK", <id>, <accepted>, <message>]`
pub fn ok(event_id: &str, accepted: bool, message: &str) -> String {
    json!(["OK", event_id, accepted, message]).to_string()
}

/// `["EOSE", <sub>]`
pub fn eose(subscription_id: &str) -> String {
    json!(["EOSE", subscription_id]).to_string()
}

/// `["CLOSED", <sub>, <message>]`
pub fn closed(subscription_id: &str, message: &str) -> String {
    json!(["CLOSED", subscription_id, message]).to_string()
}

/// `["NOTICE", <message>]`
pub fn notice(message: &str) -> String {
    json!(["NOTICE", message]).to_string()
}

/// `["COUNT", <sub>, {"count": n}]`
pub fn count(subscription_id: &str, n: usize) -> String {
    json!(["COUNT", subscription_id, {"count": n}]).to_string()
}

/// `["COUNT", <sub>, {"count": n, "approximate": true}]`: at least `n` (NIP-45).
pub fn count_at_least(subscription_id: &str, n: usize) -> String {
    json!(["COUNT", subscription_id, {"count": n, "approximate": true}]).to_string()
}

/// `["NEG-MSG", <sub>, <hex>]`
pub fn neg_msg(subscription_id: &str, hex_message: &str) -> String {
    json!(["NEG-MSG", subscription_id, hex_message]).to_string()
}

/// `["NEG-ERR", <sub>, <reason>]`
pub fn neg_err(subscription_id: &str, reason: &str) -> String {
    json!(["NEG-ERR", subscription_id, reason]).to_string()
}

/// `["AUTH", <challenge>]`: the NIP-42 challenge of a connection.
pub fn auth(challenge: &str) -> String {
    json!(["AUTH", challenge]).to_string()
}

/// Every `type` label of client messages: the NIP-01/45/77 names, then
/// [`INVALID_CLIENT_MESSAGE`].
pub const CLIENT_MESSAGE_TYPES: &[&str] =
    &["EVENT", "REQ", "CLOSE", "COUNT", "AUTH", "NEG-OPEN", "NEG-MSG", "NEG-CLOSE", INVALID_CLIENT_MESSAGE];

/// The `type` label of a message that is not a valid client message.
pub const INVALID_CLIENT_MESSAGE: &str = "INVALID";

/// Longest subscription id NIP-01 allows.
pub const MAX_SUBSCRIPTION_ID_LEN: usize = 64;

/// Every value [`message_type`] returns.
pub const MESSAGE_TYPES: &[&str] =
    &["EVENT", "OK", "EOSE", "CLOSED", "NOTICE", "COUNT", "NEG-MSG", "NEG-ERR", "AUTH", "OTHER"];

/// The type of a relay message written by this module (`EVENT`, `OK`, …), for metrics.
pub fn message_type(message: &str) -> &'static str {
    let name = message.strip_prefix("[\"").and_then(|rest| rest.split('"').next()).unwrap_or("");
    MESSAGE_TYPES.iter().find(|t| **t == name).copied().unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_are_read_from_the_written_text() {
        assert_eq!(message_type(&event("s", "{}")), "EVENT");
        assert_eq!(message_type(&ok("ab", true, "")), "OK");
        assert_eq!(message_type(&neg_err("s", "x")), "NEG-ERR");
        assert_eq!(message_type(&closed("s", "x")), "CLOSED");
        assert_eq!(message_type("[\"WHATEVER\"]"), "OTHER");
    }

    #[test]
    fn messages_are_valid_json_arrays() {
        let e = event("s\"1", "{\"id\":\"x\"}");
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v[0], "EVENT");
        assert_eq!(v[1], "s\"1");
        assert_eq!(v[2]["id"], "x");
        assert_eq!(ok("ab", false, "invalid: x"), r#"["OK","ab",false,"invalid: x"]"#);
        assert_eq!(count("c", 3), r#"["COUNT","c",{"count":3}]"#);
    }
}
