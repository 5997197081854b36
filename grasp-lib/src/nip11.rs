//! The NIP-11 relay information document, with the GRASP fields.

use serde_json::{json, Value};

use crate::config::Config;
use crate::curation::CurationLists;
use crate::origin::ServiceOrigin;
use crate::relay::MAX_SUBSCRIPTION_ID_LEN;

/// NIPs this server implements.
pub const SUPPORTED_NIPS: &[u16] = &[1, 9, 11, 34, 45, 77];

/// GRASP documents this server always implements; [`supported_grasps`] adds the optional
/// ones switched on.
pub const SUPPORTED_GRASPS: &[&str] = &["GRASP-01"];

/// `supported_nips`: [`SUPPORTED_NIPS`], plus 42 (relay authentication) and 98 (HTTP
/// authentication) on a private service.
pub fn supported_nips(config: &Config) -> Vec<u16> {
    let mut nips = SUPPORTED_NIPS.to_vec();
    if config.private_mode {
        nips.extend([42, 98]);
    }
    nips.sort_unstable();
    nips
}

/// `supported_grasps`: [`SUPPORTED_GRASPS`] plus GRASP-02 (proactive sync) when both relay
/// sync and hunting (fetching git data from other clone URLs) are on, GRASP-05 (archive) and
/// GRASP-06 (`/prs/`) when configured.
pub fn supported_grasps(config: &Config) -> Vec<&'static str> {
    let mut grasps = SUPPORTED_GRASPS.to_vec();
    if config.sync && config.hunting {
        grasps.push("GRASP-02");
    }
    if config.sync && config.sync_plus {
        grasps.push("GRASP-03");
    }
    if !config.archive.is_empty() {
        grasps.push("GRASP-05");
    }
    if config.prs_hosting {
        grasps.push("GRASP-06");
    }
    if config.private_mode {
        grasps.push("GRASP-08");
    }
    grasps.sort_unstable();
    grasps
}

/// Human-readable announcement rule, as required by GRASP-01, with what GRASP-05, GRASP-06
/// and the operator's lists add.
pub fn repo_acceptance_criteria(config: &Config, origin: &ServiceOrigin, lists: &CurationLists) -> String {
    let authority = origin.service_address();
    let mut text = String::new();
    if config.private_mode {
        text.push_str(
            "Private service (GRASP-08): members only. Authenticate with NIP-42 on the relay and send a \
             NIP-98 credential (u: the repository URL, method: GET) with every git request. Only members \
             announce repositories. ",
        );
    }
    text.push_str(&format!(
        "Repository announcements (kind 30617) must list this server in both 'clone' \
         (http(s)://{authority}/<npub>/<identifier>.git) and 'relays' (ws(s)://{authority}). \
         Announcements by pubkeys that another announcement with the same identifier lists as maintainers \
         (role tags M/m or 'maintainers'; invitees included, since their acceptance is how the server learns \
         of it) are accepted without listing it; no repository is created for them. State events (30618) \
         count only from confirmed maintainers (maintainer model v3: reciprocal listing)."
    ));
    let archive = config.archive_selectors();
    if !archive.is_empty() {
        text.push_str(&format!(
            " Announcements that do not list this server are archived read-only when the archive list names \
             them (GRASP-05; {}).",
            archive.summary()
        ));
    }
    if config.prs_hosting {
        text.push_str(&format!(
            " Pull requests (kinds 1618, 1619) for repositories not hosted here are accepted when their 'clone' \
             tag names http(s)://{authority}/prs/<signer npub>/<identifier>.git for a repository they tag \
             (GRASP-06); push their commits there to refs/nostr/<event id>."
        ));
    }
    if !lists.allow.is_empty() {
        text.push_str(&format!(
            " Only repositories the operator allows are hosted (allow list: {}).",
            lists.allow.summary()
        ));
    }
    if !lists.deny.is_empty() {
        text.push_str(&format!(
            " Events from or about blocked keys and repositories are refused (deny list: {}).",
            lists.deny.summary()
        ));
    }
    text
}

/// The NIP-11 `curation` summary, when events are curated beyond generic spam limits: the
/// operator's lists or an archive list (GRASP-05). `None` means the field is omitted.
pub fn curation(config: &Config, lists: &CurationLists) -> Option<String> {
    let mut parts = Vec::new();
    if !lists.allow.is_empty() {
        parts.push(format!("only allowed repositories are hosted ({})", lists.allow.summary()));
    }
    if !lists.deny.is_empty() {
        parts.push(format!(
            "events from or about blocked keys and repositories are refused ({})",
            lists.deny.summary()
        ));
    }
    let archive = config.archive_selectors();
    if !archive.is_empty() {
        parts.push(format!(
            "read-only archive (GRASP-05) of repositories that do not list this server: {}",
            archive.summary()
        ));
    }
    (!parts.is_empty()).then(|| format!("Operator-curated: {}.", parts.join("; ")))
}

/// The document served on `GET /` with `Accept: application/nostr+json`. `lists` are the
/// curation lists in force (they can change while the server runs).
///
/// `curation` is omitted (not `null`) when nothing is curated.
pub fn document(config: &Config, origin: &ServiceOrigin, lists: &CurationLists) -> Value {
    let mut doc = json!({
        "name": config.relay_name,
        "description": config.relay_description,
        "software": "grasp-server",
        "version": env!("CARGO_PKG_VERSION"),
        "supported_nips": supported_nips(config),
        "supported_grasps": supported_grasps(config),
        "repo_acceptance_criteria": repo_acceptance_criteria(config, origin, lists),
        "limitation": {
            "max_message_length": config.max_message_size,
            "max_subscriptions": config.max_subscriptions,
            "max_filters": config.max_filters,
            "max_limit": config.max_limit,
            "max_subid_length": MAX_SUBSCRIPTION_ID_LEN,
            "auth_required": config.private_mode,
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
    if let Some(curation) = curation(config, lists) {
        doc["curation"] = json!(curation);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omits_curation_and_optional_fields_when_unset() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap();
        let doc = document(&Config::default(), &origin, &CurationLists::default());
        assert_eq!(doc["supported_grasps"], json!(["GRASP-01", "GRASP-02", "GRASP-03", "GRASP-06"]));
        let off =
            document(&Config { prs_hosting: false, ..Config::default() }, &origin, &CurationLists::default());
        assert_eq!(off["supported_grasps"], json!(["GRASP-01", "GRASP-02", "GRASP-03"]));
        assert!(!off["repo_acceptance_criteria"].as_str().unwrap().contains("/prs/"));
        assert!(doc.get("curation").is_none());
        assert!(doc.get("pubkey").is_none());
        assert_eq!(doc["limitation"]["max_limit"], 500);
        assert!(doc["repo_acceptance_criteria"].as_str().unwrap().contains("127.0.0.1:1"));
    }

    #[test]
    fn a_private_service_says_so() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap();
        let config = Config { private_mode: true, prs_hosting: false, ..Config::default() };
        let doc = document(&config, &origin, &CurationLists::default());
        assert_eq!(doc["supported_grasps"], json!(["GRASP-01", "GRASP-02", "GRASP-03", "GRASP-08"]));
        assert_eq!(doc["supported_nips"], json!([1, 9, 11, 34, 42, 45, 77, 98]));
        assert_eq!(doc["limitation"]["auth_required"], true);
        assert!(doc["repo_acceptance_criteria"].as_str().unwrap().starts_with("Private service"));
    }

    #[test]
    fn grasp_02_needs_relay_sync_and_hunting() {
        let origin = ServiceOrigin::parse("127.0.0.1:1").unwrap();
        let base = Config { prs_hosting: false, sync_plus: false, ..Config::default() };
        let lists = CurationLists::default();
        assert_eq!(document(&base, &origin, &lists)["supported_grasps"], json!(["GRASP-01", "GRASP-02"]));
        for config in [Config { sync: false, ..base.clone() }, Config { hunting: false, ..base.clone() }] {
            assert_eq!(document(&config, &origin, &lists)["supported_grasps"], json!(["GRASP-01"]));
        }
        // GRASP-03 (Sync Plus) while it runs: with relay sync.
        let plus = Config { sync_plus: true, ..base.clone() };
        assert_eq!(
            document(&plus, &origin, &lists)["supported_grasps"],
            json!(["GRASP-01", "GRASP-02", "GRASP-03"])
        );
        let no_sync = Config { sync: false, ..plus };
        assert_eq!(document(&no_sync, &origin, &lists)["supported_grasps"], json!(["GRASP-01"]));
    }

    #[test]
    fn publishes_owner_pubkey_not_secret() {
        let keys = nostr::Keys::generate();
        let secret = keys.secret_key().to_secret_hex();
        let config =
            Config { relay_owner_nsec: Some(crate::config::Secret(secret.clone())), ..Config::default() };
        let doc = document(&config, &ServiceOrigin::parse("x.example").unwrap(), &CurationLists::default());
        assert_eq!(doc["pubkey"], keys.public_key().to_hex());
        assert!(!doc.to_string().contains(&secret));
    }

    #[test]
    fn curation_and_archive_are_described() {
        use crate::curation::Selectors;
        let origin = ServiceOrigin::parse("x.example").unwrap();
        let pk = nostr::Keys::generate().public_key().to_hex();
        let lists = CurationLists {
            allow: Selectors::parse(&[pk.clone()]).unwrap(),
            deny: Selectors::parse(&["spam", "casino"]).unwrap(),
        };
        let doc = document(&Config::default(), &origin, &lists);
        let curation = doc["curation"].as_str().unwrap();
        assert!(
            curation.contains("only allowed repositories") && curation.contains("2 identifiers"),
            "{curation}"
        );
        assert!(!curation.contains(&pk), "the lists themselves are not published");
        let criteria = doc["repo_acceptance_criteria"].as_str().unwrap();
        assert!(criteria.contains("allow list: 1 pubkey") && criteria.contains("deny list"), "{criteria}");
        let archive = Config { archive: vec!["*".into()], ..Config::default() };
        let doc = document(&archive, &origin, &CurationLists::default());
        assert_eq!(
            doc["supported_grasps"],
            json!(["GRASP-01", "GRASP-02", "GRASP-03", "GRASP-05", "GRASP-06"])
        );
        assert!(doc["curation"].as_str().unwrap().contains("archive (GRASP-05)"));
        assert!(doc["repo_acceptance_criteria"].as_str().unwrap().contains("archived read-only"));
    }
}
