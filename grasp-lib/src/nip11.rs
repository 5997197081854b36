//! The NIP-11 relay information document, with the GRASP fields.

use serde_json::{json, Value};

use crate::config::Config;
use crate::origin::ServiceOrigin;
use crate::relay::MAX_SUBSCRIPTION_ID_LEN;

/// NIPs this server implements.
pub const SUPPORTED_NIPS: &[u16] = &[1, 9, 11, 34, 45, 77];

/// GRASP documents this server always implements; [`supported_grasps`] adds the optional
/// ones switched on.
pub const SUPPORTED_GRASPS: &[&str] = &["GRASP-01"];

/// `supported_grasps`: [`SUPPORTED_GRASPS`] plus GRASP-02 (proactive sync) when both relay
/// sync and hunting (fetching git data from other clone URLs) are on.
pub fn supported_grasps(config: &Config) -> Vec<&'static str> {
    let mut grasps = SUPPORTED_GRASPS.to_vec();
    if config.sync && config.hunting {
        grasps.push("GRASP-02");
    }
    grasps.sort_unstable();
    grasps
}

/// Human-readable announcement rule, as required by GRASP-01.
pub fn repo_acceptance_criteria(origin: &ServiceOrigin) -> String {
    let authority = origin.authority();
    format!(
        "Repository announcements (kind 30617) must list this server in both 'clone' \
         (http(s)://{authority}/<npub>/<identifier>.git) and 'relays' (ws(s)://{authority}). \
         Announcements by members of a hosted repository's recursive maintainer set with the same \
         identifier are accepted without listing it; no repository is created for them."
    )
}

/// The document served on `GET /` with `Accept: application/nostr+json`.
///
/// `curation` is omitted: this server curates nothing beyond generic spam limits.
pub fn document(config: &Config, origin: &ServiceOrigin) -> Value {
    let mut doc = json!({
        "name": config.relay_name,
        "description": config.relay_description,
        "software": "grasp-server",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": SUPPORTED_NIPS,
        "supported_grasps": supported_grasps(config),
        "repo_acceptance_criteria": repo_acceptance_criteria(origin),
        "limitation": {
            "max_message_length": config.max_message_size,
            "max_subscriptions": config.max_subscriptions,
            "max_filters": config.max_filters,
            "max_limit": config.max_limit,
            "max_subid_length": MAX_SUBSCRIPTION_ID_LEN,
            "auth_required": false,
            "payment_required": false,
            "restricted_writes": true,
            "created_at_upper_limit": crate::policy::decide::MAX_FUTURE_SECS,
        },
    });
    if let Some(keys) = config.owner_keys() {
        doc["pubkey"] = json!(keys.public_key().to_hex());
    }
    if let Some(contact) = &config.relay_contact {
        doc["contact"] = json!(contact);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omits_curation_and_optional_fields_when_unset() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap();
        let doc = document(&Config::default(), &origin);
        assert!(doc.get("curation").is_none());
        assert!(doc.get("pubkey").is_none());
        assert_eq!(doc["limitation"]["max_limit"], 500);
        assert!(doc["repo_acceptance_criteria"].as_str().unwrap().contains("127.0.0.1:1"));
    }

    #[test]
    fn grasp_02_needs_relay_sync_and_hunting() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap();
        assert_eq!(
            document(&Config::default(), &origin)["supported_grasps"],
            json!(["GRASP-01", "GRASP-02"])
        );
        for config in
            [Config { sync: false, ..Config::default() }, Config { hunting: false, ..Config::default() }]
        {
            assert_eq!(document(&config, &origin)["supported_grasps"], json!(["GRASP-01"]));
        }
    }

    #[test]
    fn publishes_owner_pubkey_not_secret() {
        let keys = nostr::Keys::generate();
        let secret = keys.secret_key().to_secret_hex();
        let config =
            Config { relay_owner_nsec: Some(crate::config::Secret(secret.clone())), ..Config::default() };
        let doc = document(&config, &ServiceOrigin::parse("x.example").unwrap());
        assert_eq!(doc["pubkey"], keys.public_key().to_hex());
        assert!(!doc.to_string().contains(&secret));
    }
}
