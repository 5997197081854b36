//! Values that parse but cannot work are refused with the option's name.

use url::Url;

use super::schema::{Config, ConfigError, Secret};
use crate::origin::ServiceOrigin;
use crate::store::StoreBackend;

impl Config {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        if let Some(domain) = &self.domain {
            if let Err(e) = ServiceOrigin::parse(domain) {
                return invalid("domain", e.to_string());
            }
        }
        if let Err(e) = crate::origin::parse_base_path(&self.base_path) {
            return invalid("base_path", e.to_string());
        }
        if !self.test_resolve.is_empty() && !self.test_mode {
            return invalid("test_resolve", "is accepted only in test mode".to_owned());
        }
        if let Err(e) = crate::outbound::TableResolver::parse(&self.test_resolve) {
            return invalid("test_resolve", e);
        }
        if !(1..=128).contains(&self.ipv6_client_prefix) {
            return invalid("ipv6_client_prefix", "must be between 1 and 128".to_owned());
        }
        if self.hunt_max_concurrent_fetches == 0 {
            return invalid("hunt_max_concurrent_fetches", "must be at least 1".to_owned());
        }
        match (self.database_backend, &self.database_url) {
            (StoreBackend::Postgres, None) => {
                return invalid(
                    "database_url",
                    "is required with database_backend = \"postgres\" (postgres://user:password@host:port/database)"
                        .to_owned(),
                );
            }
            (StoreBackend::Postgres, Some(url)) => {
                if let Err(e) = url.0.parse::<tokio_postgres::Config>() {
                    return invalid("database_url", format!("not a valid PostgreSQL URL: {e}"));
                }
            }
            (backend, Some(_)) => {
                return invalid(
                    "database_url",
                    format!(
                        "is only read by database_backend = \"postgres\", but the backend is {}",
                        backend.as_str()
                    ),
                );
            }
            (_, None) => {}
        }
        if self.database_pool_size == 0 {
            return invalid("database_pool_size", "must be at least 1".to_owned());
        }
        if let Some(node) = &self.node_id {
            let printable = node.chars().all(|c| c.is_ascii_graphic());
            if node.is_empty() || node.len() > 64 || !printable {
                return invalid(
                    "node_id",
                    "must be 1 to 64 printable ASCII characters without spaces".to_owned(),
                );
            }
        }
        if let Some(secret) = &self.relay_owner_nsec {
            if owner_keys(secret).is_none() {
                return invalid("relay_owner_nsec", "not a valid nsec or hex secret key".to_owned());
            }
        }
        if self.max_message_size < 1024 {
            return invalid("max_message_size", "must be at least 1024 bytes".to_owned());
        }
        for (option, value) in [
            ("max_subscriptions", self.max_subscriptions),
            ("max_filters", self.max_filters),
            ("max_limit", self.max_limit),
            ("max_negentropy_items", self.max_negentropy_items),
            ("abuser_connection_threshold", self.abuser_connection_threshold),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        if self.max_push_size < 1024 {
            return invalid("max_push_size", "must be at least 1024 bytes".to_owned());
        }
        for (option, value) in [
            ("header_read_timeout_secs", self.header_read_timeout_secs),
            ("body_idle_timeout_secs", self.body_idle_timeout_secs),
            ("websocket_missed_pongs", u64::from(self.websocket_missed_pongs)),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        for (option, value) in [
            ("purgatory_expiry_secs", self.purgatory_expiry_secs),
            ("pr_ref_expiry_secs", self.pr_ref_expiry_secs),
            ("push_extension_secs", self.push_extension_secs),
        ] {
            if value == Some(0) {
                return invalid(option, "must be at least 1 second".to_owned());
            }
        }
        for (option, value) in [
            ("hunt_domain_concurrency", self.hunt_domain_concurrency),
            ("hunt_domain_requests_per_minute", self.hunt_domain_requests_per_minute),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        for (option, value) in [
            ("hunt_backoff_base_ms", self.hunt_backoff_base_ms),
            ("hunt_backoff_max_ms", self.hunt_backoff_max_ms),
            ("hunt_fetch_timeout_secs", self.hunt_fetch_timeout_secs),
        ] {
            if value == Some(0) {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        if self.curation_reload_secs == Some(0) {
            return invalid("curation_reload_secs", "must be at least 1 second".to_owned());
        }
        if let Err(e) = crate::curation::Selectors::parse(&self.archive) {
            return invalid("archive", e.to_string());
        }
        if self.prs_max_push_size < 1024 {
            return invalid("prs_max_push_size", "must be at least 1024 bytes".to_owned());
        }
        for (option, value) in [
            ("max_nostr_refs_per_push", self.max_nostr_refs_per_push),
            ("max_placeholders_per_repository", self.max_placeholders_per_repository),
            ("max_placeholders_per_client", self.max_placeholders_per_client),
            ("purgatory_max_events_per_client", self.purgatory_max_events_per_client),
            ("purgatory_max_events_per_pubkey", self.purgatory_max_events_per_pubkey),
            ("purgatory_max_events_per_identifier", self.purgatory_max_events_per_identifier),
            ("purgatory_max_events", self.purgatory_max_events),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        for (option, value) in [
            ("purgatory_max_bytes_per_client", self.purgatory_max_bytes_per_client),
            ("purgatory_max_bytes_per_pubkey", self.purgatory_max_bytes_per_pubkey),
            ("purgatory_max_bytes_per_identifier", self.purgatory_max_bytes_per_identifier),
            ("purgatory_max_bytes", self.purgatory_max_bytes),
        ] {
            if value < 1024 {
                return invalid(option, "must be at least 1024 bytes".to_owned());
            }
        }
        if self.hunt_max_fetch_size < 1024 {
            return invalid("hunt_max_fetch_size", "must be at least 1024 bytes".to_owned());
        }
        if self.subscriber_queue < 16 {
            return invalid("subscriber_queue", "must be at least 16".to_owned());
        }
        self.validate_sync()?;
        self.validate_private()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return invalid("log_level", e.to_string());
        }
        self.validate_proxy()
    }

    /// The grasp-proxy options.
    fn validate_proxy(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        if let Some(upstream) = &self.upstream {
            if let Err(reason) = parse_upstream(upstream) {
                return invalid("upstream", reason);
            }
        }
        for (option, value) in [
            ("upstream_connect_timeout_secs", self.upstream_connect_timeout_secs),
            ("upstream_timeout_secs", self.upstream_timeout_secs),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1 second".to_owned());
            }
        }
        if self.tls_certificate_path.is_some() != self.tls_private_key_path.is_some() {
            let reason = "set both tls_certificate_path and tls_private_key_path, or neither".to_owned();
            return invalid("tls_certificate_path", reason);
        }
        Ok(())
    }

    /// GRASP-08: members only, nothing unauthenticated.
    fn validate_private(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        for member in &self.private_members {
            if crate::access::parse_member(member).is_none() {
                return invalid("private_members", format!("'{member}' is not an npub (or hex public key)"));
            }
        }
        if let Some(origin) = &self.private_public_origin {
            if let Err(reason) = crate::access::parse_public_origin(origin) {
                return invalid("private_public_origin", reason);
            }
        }
        if !self.private_mode {
            if !self.private_members.is_empty() {
                return invalid("private_members", "is used only with private_mode = true".to_owned());
            }
            return Ok(());
        }
        if self.private_members.is_empty() {
            return invalid(
                "private_mode",
                "a private service needs at least one member: set private_members (npubs)".to_owned(),
            );
        }
        if self.prs_hosting {
            return invalid(
                "private_mode",
                "cannot be combined with prs_hosting (GRASP-06 /prs/ takes pushes without \
                 authentication); leave prs_hosting unset or false"
                    .to_owned(),
            );
        }
        Ok(())
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        for (option, relays) in [
            ("sync_bootstrap_relays", self.sync_bootstrap_relays.clone()),
            ("user_index_relays", self.user_index_relays()),
            ("sync_plus_fallback_relays", self.sync_plus_fallback_relays()),
        ] {
            for relay in &relays {
                if let Err(e) = crate::sync::peers::PeerUrl::parse(relay) {
                    return invalid(option, e.to_string());
                }
            }
        }
        for (option, value) in [
            ("sync_max_peers", self.sync_max_peers),
            ("sync_plus_max_relays", self.sync_plus_max_relays),
            ("sync_page_size", self.sync_page_size),
            ("sync_filter_batch_size", self.sync_filter_batch_size),
            ("sync_filters_per_req", self.sync_filters_per_req),
            ("sync_max_subscriptions", self.sync_max_subscriptions),
            ("sync_rejected_hot_capacity", self.sync_rejected_hot_capacity),
            ("sync_rejected_cold_capacity", self.sync_rejected_cold_capacity),
        ] {
            if value == 0 {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        for (option, value) in [
            ("sync_reconnect_min_ms", self.sync_reconnect_min_ms),
            ("sync_reconnect_max_secs", self.sync_reconnect_max_secs),
            ("sync_dead_retry_secs", self.sync_dead_retry_secs),
            ("sync_full_interval_secs", self.sync_full_interval_secs),
            ("sync_connect_timeout_secs", self.sync_connect_timeout_secs),
            ("sync_request_timeout_secs", self.sync_request_timeout_secs),
        ] {
            if value == Some(0) {
                return invalid(option, "must be at least 1".to_owned());
            }
        }
        Ok(())
    }
}

/// An upstream is an `http(s)://host[:port][/prefix]` URL without query or credentials.
pub(super) fn parse_upstream(value: &str) -> Result<Url, String> {
    let url = Url::parse(value)
        .map_err(|e| format!("'{value}' is not a URL ({e}); use e.g. http://127.0.0.1:8080"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("'{value}' must be an http:// or https:// URL with a host"));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!("'{value}' must not carry credentials, a query or a fragment"));
    }
    Ok(url)
}

pub(super) fn owner_keys(secret: &Secret) -> Option<nostr::Keys> {
    nostr::Keys::parse(secret.0.trim()).ok()
}
