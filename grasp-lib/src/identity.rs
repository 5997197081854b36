//! The relay's own identity on Nostr, when an owner key is configured (`relay_owner_nsec`):
//! a kind 0 profile (`bot: true`, NIP-05 `_@<domain>` at the root mount) and a kind 10002
//! relay list naming this relay, signed by that key and stored here at start; and the
//! NIP-05 document `/.well-known/nostr.json` that makes `_@<domain>` resolve to the key.
//! Clients and peer servers use them to find out who runs a relay.

use nostr::{Event, EventBuilder, Keys, Kind, Metadata, RelayUrl, Tag};
use serde_json::json;

use crate::origin::ServiceOrigin;

/// The relay's websocket URL as clients should write it: `ws://` on a loopback host
/// (nothing terminates TLS there), `wss://` otherwise, with the base path.
pub fn relay_url(origin: &ServiceOrigin) -> String {
    let host = origin.authority();
    let bare = host.rsplit_once(':').map_or(host.as_str(), |(h, _)| h).trim_matches(['[', ']']);
    let loopback = bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    let scheme = if loopback { "ws" } else { "wss" };
    format!("{scheme}://{}", origin.service_address())
}

/// The profile (kind 0) and relay list (kind 10002) of the relay, signed by `keys`.
pub fn events(keys: &Keys, origin: &ServiceOrigin, name: &str) -> Vec<Event> {
    let mut profile = Metadata::new().name(name).custom_field("bot", true);
    if origin.base_path().is_empty() {
        profile = profile.nip05(format!("_@{}", origin.authority()));
    }
    let relay = relay_url(origin);
    let mut events =
        vec![EventBuilder::metadata(&profile).sign_with_keys(keys).expect("signing cannot fail")];
    if RelayUrl::parse(&relay).is_ok() {
        let list =
            EventBuilder::new(Kind::RelayList, "").tags([Tag::parse(["r", relay.as_str()]).expect("tag")]);
        events.push(list.sign_with_keys(keys).expect("signing cannot fail"));
    }
    events
}

/// The NIP-05 document: `_` names the relay owner.
pub fn nip05_document(keys: &Keys, origin: &ServiceOrigin) -> String {
    let hex = keys.public_key().to_hex();
    json!({ "names": { "_": hex }, "relays": { &hex: [relay_url(origin)] } }).to_string()
}

#[cfg(test)]
mod tests {
    use nostr::JsonUtil;

    use super::*;

    fn is_valid(event: &Event) -> bool {
        Event::from_json(event.as_json()).is_ok_and(|e| e.verify().is_ok())
    }

    #[test]
    fn profile_and_relay_list_name_this_relay() {
        let keys = Keys::generate();
        let root = ServiceOrigin::parse("git.example.com").unwrap();
        let events = events(&keys, &root, "my relay");
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(is_valid));
        let profile: serde_json::Value = serde_json::from_str(&events[0].content).unwrap();
        assert_eq!(profile["bot"], true);
        assert_eq!(profile["nip05"], "_@git.example.com");
        assert_eq!(profile["name"], "my relay");
        assert_eq!(events[1].kind, Kind::RelayList);
        assert_eq!(events[1].tags.first().unwrap().as_slice(), ["r", "wss://git.example.com"]);

        let mounted = ServiceOrigin::parse("127.0.0.1:7334").unwrap().with_base_path("/g".into());
        let events = super::events(&keys, &mounted, "x");
        let profile: serde_json::Value = serde_json::from_str(&events[0].content).unwrap();
        assert!(profile.get("nip05").is_none(), "no NIP-05 under a base path");
        assert_eq!(events[1].tags.first().unwrap().as_slice(), ["r", "ws://127.0.0.1:7334/g"]);
    }

    #[test]
    fn nip05_names_the_owner() {
        let keys = Keys::generate();
        let doc: serde_json::Value =
            serde_json::from_str(&nip05_document(&keys, &ServiceOrigin::parse("127.0.0.1:1").unwrap()))
                .unwrap();
        assert_eq!(doc["names"]["_"], keys.public_key().to_hex());
        assert_eq!(doc["relays"][keys.public_key().to_hex()][0], "ws://127.0.0.1:1");
    }
}
