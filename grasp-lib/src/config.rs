//! Configuration: one [`Config`] from a TOML file, `GRASP_*` environment variables and CLI
//! flags, with precedence CLI > environment > file > defaults.
//!
//! The environment names of ngit-grasp (`NGIT_*`) are accepted as aliases with the same
//! meaning, so existing deployments and client test harnesses switch over unchanged. A
//! `GRASP_*` variable wins over its `NGIT_*` alias.
//!
//! Every option has the same name in all three places: `max_limit` in the file,
//! `--max-limit` on the command line, `GRASP_MAX_LIMIT` in the environment.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use clap::{Args, Command};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::origin::ServiceOrigin;
use crate::store::StoreBackend;

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole server configuration. See `docs/reference/configuration.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP/websocket listener binds to.
    pub bind_address: SocketAddr,
    /// Public `host[:port]` that announcements must list; defaults to the bound address.
    pub domain: Option<String>,
    /// Directory of the bare repositories (`<git_data_path>/<npub>/<identifier>.git`).
    pub git_data_path: PathBuf,
    /// Directory of the LMDB event store.
    pub relay_data_path: PathBuf,
    /// `lmdb` (persistent) or `memory`.
    pub database_backend: StoreBackend,
    /// NIP-11 `name`.
    pub relay_name: String,
    /// NIP-11 `description`.
    pub relay_description: String,
    /// Operator key (nsec or hex); its public key is NIP-11 `pubkey`.
    pub relay_owner_nsec: Option<Secret>,
    /// NIP-11 `contact`.
    pub relay_contact: Option<String>,
    /// Log filter: `error`, `warn`, `info`, `debug`, `trace` or a tracing directive list.
    pub log_level: String,
    /// Shorten every timer so tests run fast.
    pub test_mode: bool,
    /// Largest websocket message accepted, in bytes.
    pub max_message_size: usize,
    /// Open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Filters per REQ.
    pub max_filters: usize,
    /// Largest `limit` honoured; also applied to filters without a limit.
    pub max_limit: usize,
    /// EVENT messages per minute per client IP (0 = unlimited).
    pub events_per_minute: u32,
    /// Take the client IP from the last `X-Forwarded-For` entry (set by your reverse proxy)
    /// instead of the TCP peer, for per-IP limits. Only behind a proxy you run.
    pub trust_forwarded_for: bool,
    /// Live events buffered per connection before a slow subscriber is cut off.
    pub subscriber_queue: usize,
    /// Most records one negentropy (NIP-77) session may cover.
    pub max_negentropy_items: usize,
    /// An IP holding more websocket connections than this at once counts in
    /// `ngit_websocket_flagged_abusers` (nothing is refused).
    pub abuser_connection_threshold: usize,
    /// Largest push (request body after decompression) accepted, in bytes.
    pub max_push_size: u64,
    /// Seconds a held event waits for its git data (default 1800; 60 in test mode).
    pub purgatory_expiry_secs: Option<u64>,
    /// Seconds an unmatched `refs/nostr/<id>` ref waits for its event (default 1200; 40 in
    /// test mode).
    pub pr_ref_expiry_secs: Option<u64>,
    /// Seconds a push that uses a held event guarantees it (default 900; 30 in test mode).
    pub push_extension_secs: Option<u64>,
    /// `grasp` (GRASP-01 acceptance and purgatory) or `accept-all` (every valid event is
    /// stored: a plain relay, for benchmarks; never for a public GRASP server).
    pub event_policy: EventPolicyChoice,
    /// Fetch the missing git data of held events from the other clone URLs.
    pub hunting: bool,
    /// Milliseconds before the first hunt for an event a client published (default 180000;
    /// 1000 in test mode).
    pub hunt_client_delay_ms: Option<u64>,
    /// Milliseconds before the first hunt for an event relay sync brought (default 500;
    /// 100 in test mode).
    pub hunt_sync_delay_ms: Option<u64>,
    /// Milliseconds of backoff after the first attempt that left events waiting; doubles
    /// each time (default 20000; 500 in test mode).
    pub hunt_backoff_base_ms: Option<u64>,
    /// Longest backoff between attempts, in milliseconds (default 120000; 2000 in test mode).
    pub hunt_backoff_max_ms: Option<u64>,
    /// Hunting fetches in flight at once per domain.
    pub hunt_domain_concurrency: u32,
    /// Hunting fetches started per minute per domain.
    pub hunt_domain_requests_per_minute: u32,
    /// Seconds one hunting fetch may run (default 300; 30 in test mode).
    pub hunt_fetch_timeout_secs: Option<u64>,
    /// Most bytes one hunting fetch may bring.
    pub hunt_max_fetch_size: u64,
    /// Serve the local API (a Unix socket) that `grasp-hook` and other programs on this
    /// machine use to ask the node about pushes.
    pub local_api: bool,
    /// Path of the local API socket (default `<relay_data_path>/local-api.sock`).
    pub local_api_socket: Option<PathBuf>,
    /// Group allowed to use the local API socket (mode 0660); unset: only the node's user
    /// (mode 0600).
    pub local_api_group: Option<String>,
    /// Pull the events of hosted repositories from the other relays their announcements
    /// list (GRASP-02 relay sync).
    pub sync: bool,
    /// Relays always synced with (scheme optional: `wss://`, or `ws://` for loopback hosts).
    pub sync_bootstrap_relays: Vec<String>,
    /// Use NIP-77 negentropy with peers that support it (`false`: always REQ pages).
    pub sync_negentropy: bool,
    /// Most peers synced with at once.
    pub sync_max_peers: usize,
    /// Milliseconds before the first reconnect; doubles per failure (default 5000; 200 in
    /// test mode).
    pub sync_reconnect_min_ms: Option<u64>,
    /// Longest wait between reconnects, in seconds (default 3600; 5 in test mode).
    pub sync_reconnect_max_secs: Option<u64>,
    /// Seconds a peer that rate-limited us is left alone (default 600; 3 in test mode).
    pub sync_rate_limit_cooldown_secs: Option<u64>,
    /// Seconds without a connection after which a peer is dead (default 86400; 30 in test
    /// mode).
    pub sync_dead_after_secs: Option<u64>,
    /// Seconds between attempts to reach a dead peer (default 21600; 5 in test mode).
    pub sync_dead_retry_secs: Option<u64>,
    /// A reconnect this many seconds after a disconnect catches up with `since` (default 900).
    pub sync_catch_up_window_secs: Option<u64>,
    /// Seconds between full reconciliations with a connected peer (default 86400; 60 in test
    /// mode).
    pub sync_full_interval_secs: Option<u64>,
    /// Seconds to open a connection to a peer (and to wait for its first negentropy answer)
    /// (default 10; 5 in test mode).
    pub sync_connect_timeout_secs: Option<u64>,
    /// Seconds one reconciliation or REQ page may take (default 120; 30 in test mode).
    pub sync_request_timeout_secs: Option<u64>,
    /// Milliseconds changes settle before sync re-reads what is hosted (default 1000; 100 in
    /// test mode).
    pub sync_debounce_ms: Option<u64>,
    /// Events per REQ page when a peer is paged instead of reconciled.
    pub sync_page_size: usize,
    /// Tag values (coordinates, ids) per filter.
    pub sync_filter_batch_size: usize,
    /// Filters per REQ sent to a peer.
    pub sync_filters_per_req: usize,
    /// Live subscriptions per peer.
    pub sync_max_subscriptions: usize,
    /// Seconds refused synced events are kept in full, to evaluate them again when what
    /// they depend on arrives (default 600; 60 in test mode).
    pub sync_rejected_hot_secs: Option<u64>,
    /// Most refused synced events kept in full.
    pub sync_rejected_hot_capacity: usize,
    /// Seconds refused synced events are remembered by id, so they are not fetched again
    /// (default 604800).
    pub sync_rejected_cold_secs: Option<u64>,
    /// Most refused synced events remembered by id.
    pub sync_rejected_cold_capacity: usize,
    /// Seconds a synced copy of an event that expired in purgatory here is refused
    /// (decision 10; default 86400).
    pub sync_expired_block_secs: Option<u64>,
    /// Seconds a client may take to send the headers of a request; then the connection is
    /// closed. Also bounds how long an idle keep-alive connection stays open.
    pub header_read_timeout_secs: u64,
    /// Seconds a request body (a push) or a response (a clone) may make no progress before
    /// it is aborted and its git process ended.
    pub body_idle_timeout_secs: u64,
    /// Seconds between websocket pings (0: no pings).
    pub websocket_ping_interval_secs: u64,
    /// Ping intervals a websocket may stay silent (no pong, no message) or leave a write
    /// unfinished before it is closed.
    pub websocket_missed_pongs: u32,
    /// Open connections in all (0: automatic, under the open-file limit; see
    /// [`crate::limits::ServerLimits`]).
    pub max_connections: usize,
    /// Open connections per client IP (0: unlimited).
    pub max_connections_per_ip: usize,
    /// GRASP-06: contributors push pull request commits to `/prs/<npub>/<identifier>.git`
    /// without announcing a repository (`false`: `/prs/` answers 404).
    pub prs_hosting: bool,
    /// Largest push to a `/prs/` repository, in bytes (after gzip decoding).
    pub prs_max_push_size: u64,
    /// Pushes to `/prs/` repositories per minute per client IP (0 = unlimited).
    pub prs_pushes_per_minute: u32,
    /// Pushes to any repository per minute per client address (IPv6 grouped by /64;
    /// 0 = unlimited).
    pub pushes_per_minute: u32,
    /// Most `refs/nostr/<id>` refs one push may carry.
    pub max_nostr_refs_per_push: usize,
    /// Most `refs/nostr/<id>` refs waiting for their pull request event in one repository.
    pub max_placeholders_per_repository: usize,
    /// Most `refs/nostr/<id>` refs waiting for their event that one client address has
    /// pushed, across repositories.
    pub max_placeholders_per_client: usize,
    /// Most events held in purgatory that one client address published.
    pub purgatory_max_events_per_client: usize,
    /// Most bytes (event JSON) held in purgatory that one client address published.
    pub purgatory_max_bytes_per_client: u64,
    /// Most events held in purgatory signed by one key.
    pub purgatory_max_events_per_pubkey: usize,
    /// Most bytes held in purgatory signed by one key.
    pub purgatory_max_bytes_per_pubkey: u64,
    /// Most events held in purgatory for one repository identifier.
    pub purgatory_max_events_per_identifier: usize,
    /// Most bytes held in purgatory for one repository identifier.
    pub purgatory_max_bytes_per_identifier: u64,
    /// Most events held in purgatory in all.
    pub purgatory_max_events: usize,
    /// Most bytes held in purgatory in all.
    pub purgatory_max_bytes: u64,
    /// Most bytes the repositories of one owner (pubkey) may use; pushes to them are refused
    /// beyond it (0 = no quota).
    pub repository_quota_bytes: u64,
    /// Free bytes the repository filesystem keeps: below it pushes and hunted fetches are
    /// refused while relay traffic goes on (default 1 GiB; 0 in test mode; 0 = off).
    pub min_free_disk_bytes: Option<u64>,
    /// TOML file with the operator's `allow` / `deny` lists (see [`crate::curation`]);
    /// re-read when it changes and on `SIGHUP`.
    pub curation_file: Option<PathBuf>,
    /// Seconds between checks of `curation_file` for changes (default 10; 1 in test mode).
    pub curation_reload_secs: Option<u64>,
    /// GRASP-05: what to archive read-only although its announcement does not list this
    /// server: `*`, `<npub>`, `<npub>/<identifier>` or `<identifier>` (empty: off).
    pub archive: Vec<String>,
    /// grasp-proxy: base URL of the git server repository requests are forwarded to
    /// (`http://127.0.0.1:8080`, optionally with a path prefix). Required by grasp-proxy.
    pub upstream: Option<String>,
    /// grasp-proxy: seconds to wait for a connection to the upstream.
    pub upstream_connect_timeout_secs: u64,
    /// grasp-proxy: seconds the upstream may stay silent (not sending, not reading) before
    /// the request fails with 504.
    pub upstream_timeout_secs: u64,
    /// grasp-proxy: PEM certificate chain; with `tls_private_key_path` the listener speaks
    /// HTTPS and WSS.
    pub tls_certificate_path: Option<PathBuf>,
    /// grasp-proxy: PEM private key of `tls_certificate_path`.
    pub tls_private_key_path: Option<PathBuf>,
}

/// Which acceptance policy the relay runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum EventPolicyChoice {
    /// GRASP-01 acceptance, purgatory and repository provisioning.
    #[default]
    Grasp,
    /// Store every event with a valid id and signature (benchmark baseline).
    AcceptAll,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 7334)),
            domain: None,
            git_data_path: PathBuf::from("./data/repos"),
            relay_data_path: PathBuf::from("./data/relay"),
            database_backend: StoreBackend::Lmdb,
            relay_name: "grasp-server".to_owned(),
            relay_description: "A GRASP server: git repositories authorized by signed Nostr events"
                .to_owned(),
            relay_owner_nsec: None,
            relay_contact: None,
            log_level: "info".to_owned(),
            test_mode: false,
            max_message_size: 512 * 1024,
            max_subscriptions: 32,
            max_filters: 16,
            max_limit: 500,
            events_per_minute: 600,
            trust_forwarded_for: false,
            subscriber_queue: 4096,
            max_negentropy_items: 500_000,
            abuser_connection_threshold: 20,
            max_push_size: 2 * 1024 * 1024 * 1024,
            purgatory_expiry_secs: None,
            pr_ref_expiry_secs: None,
            push_extension_secs: None,
            event_policy: EventPolicyChoice::Grasp,
            hunting: true,
            hunt_client_delay_ms: None,
            hunt_sync_delay_ms: None,
            hunt_backoff_base_ms: None,
            hunt_backoff_max_ms: None,
            hunt_domain_concurrency: 5,
            hunt_domain_requests_per_minute: 30,
            hunt_fetch_timeout_secs: None,
            hunt_max_fetch_size: 1024 * 1024 * 1024,
            local_api: true,
            local_api_socket: None,
            local_api_group: None,
            sync: true,
            sync_bootstrap_relays: Vec::new(),
            sync_negentropy: true,
            sync_max_peers: 500,
            sync_reconnect_min_ms: None,
            sync_reconnect_max_secs: None,
            sync_rate_limit_cooldown_secs: None,
            sync_dead_after_secs: None,
            sync_dead_retry_secs: None,
            sync_catch_up_window_secs: None,
            sync_full_interval_secs: None,
            sync_connect_timeout_secs: None,
            sync_request_timeout_secs: None,
            sync_debounce_ms: None,
            sync_page_size: 250,
            sync_filter_batch_size: 100,
            sync_filters_per_req: 10,
            sync_max_subscriptions: 8,
            sync_rejected_hot_secs: None,
            sync_rejected_hot_capacity: 10_000,
            sync_rejected_cold_secs: None,
            sync_rejected_cold_capacity: 100_000,
            sync_expired_block_secs: None,
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 60,
            websocket_ping_interval_secs: 30,
            websocket_missed_pongs: 2,
            max_connections: 0,
            max_connections_per_ip: 128,
            prs_hosting: true,
            prs_max_push_size: 1024 * 1024 * 1024,
            prs_pushes_per_minute: 30,
            pushes_per_minute: 120,
            max_nostr_refs_per_push: 32,
            max_placeholders_per_repository: 100,
            max_placeholders_per_client: 100,
            purgatory_max_events_per_client: 200,
            purgatory_max_bytes_per_client: 50 * 1024 * 1024,
            purgatory_max_events_per_pubkey: 200,
            purgatory_max_bytes_per_pubkey: 50 * 1024 * 1024,
            purgatory_max_events_per_identifier: 2_000,
            purgatory_max_bytes_per_identifier: 256 * 1024 * 1024,
            purgatory_max_events: 100_000,
            purgatory_max_bytes: 2 * 1024 * 1024 * 1024,
            repository_quota_bytes: 0,
            min_free_disk_bytes: None,
            curation_file: None,
            curation_reload_secs: None,
            archive: Vec::new(),
            upstream: None,
            upstream_connect_timeout_secs: 10,
            upstream_timeout_secs: 600,
            tls_certificate_path: None,
            tls_private_key_path: None,
        }
    }
}

/// Why a configuration cannot be used. `Display` is one line naming the option.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or a merged value does not fit the schema.
    #[error("bad configuration{}: {message}", .path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when it came from one.
        path: Option<PathBuf>,
        /// What toml/serde said, on one line.
        message: String,
    },
    /// A value parses but is not usable.
    #[error("bad configuration: {option}: {reason}")]
    Invalid {
        /// The option name.
        option: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        if let Some(domain) = &self.domain {
            if let Err(e) = ServiceOrigin::parse(domain) {
                return invalid("domain", e.to_string());
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

    /// The parsed `upstream` URL (grasp-proxy), when one is configured.
    pub fn upstream_url(&self) -> Option<Url> {
        self.upstream.as_deref().and_then(|u| parse_upstream(u).ok())
    }

    /// Purgatory timers: the configured values, or the defaults (short ones in test mode).
    pub fn purgatory_timers(&self) -> crate::purgatory::PurgatoryTimers {
        use std::time::Duration;
        let (expiry, pr_refs, extension) = if self.test_mode { (60, 40, 30) } else { (1800, 1200, 900) };
        crate::purgatory::PurgatoryTimers {
            expiry: Duration::from_secs(self.purgatory_expiry_secs.unwrap_or(expiry)),
            pr_ref_expiry: Duration::from_secs(self.pr_ref_expiry_secs.unwrap_or(pr_refs)),
            push_extension: Duration::from_secs(self.push_extension_secs.unwrap_or(extension)),
        }
    }

    /// The caps on what purgatory holds.
    pub fn purgatory_caps(&self) -> crate::purgatory::bounds::HeldCaps {
        use crate::purgatory::bounds::{Cap, HeldCaps};
        HeldCaps {
            per_client: Cap {
                events: self.purgatory_max_events_per_client,
                bytes: self.purgatory_max_bytes_per_client,
            },
            per_pubkey: Cap {
                events: self.purgatory_max_events_per_pubkey,
                bytes: self.purgatory_max_bytes_per_pubkey,
            },
            per_identifier: Cap {
                events: self.purgatory_max_events_per_identifier,
                bytes: self.purgatory_max_bytes_per_identifier,
            },
            total: Cap { events: self.purgatory_max_events, bytes: self.purgatory_max_bytes },
        }
    }

    /// The caps on `refs/nostr/<id>` refs waiting for their event.
    pub fn placeholder_caps(&self) -> crate::purgatory::bounds::PlaceholderCaps {
        crate::purgatory::bounds::PlaceholderCaps {
            per_push: self.max_nostr_refs_per_push,
            per_repository: self.max_placeholders_per_repository,
            per_client: self.max_placeholders_per_client,
        }
    }

    /// The free-disk floor and the per-owner quota (the floor is off in test mode unless
    /// set).
    pub fn storage_limits(&self) -> crate::limits::StorageLimits {
        let floor = if self.test_mode { 0 } else { 1024 * 1024 * 1024 };
        crate::limits::StorageLimits {
            min_free_bytes: self.min_free_disk_bytes.unwrap_or(floor),
            quota_per_owner: (self.repository_quota_bytes > 0).then_some(self.repository_quota_bytes),
        }
    }

    /// Hunting settings: the configured values, or the defaults (short timers in test mode).
    pub fn hunt_settings(&self) -> crate::hunt::HuntSettings {
        use std::time::Duration;
        let (client, sync, base, max, timeout) =
            if self.test_mode { (1000, 100, 500, 2000, 30) } else { (180_000, 500, 20_000, 120_000, 300) };
        let base = self.hunt_backoff_base_ms.unwrap_or(base);
        crate::hunt::HuntSettings {
            timers: crate::hunt::queue::QueueTimers {
                client_delay: Duration::from_millis(self.hunt_client_delay_ms.unwrap_or(client)),
                sync_delay: Duration::from_millis(self.hunt_sync_delay_ms.unwrap_or(sync)),
                backoff_base: Duration::from_millis(base),
                backoff_max: Duration::from_millis(self.hunt_backoff_max_ms.unwrap_or(max).max(base)),
            },
            limits: crate::hunt::throttle::ThrottleLimits {
                concurrent: self.hunt_domain_concurrency,
                per_minute: self.hunt_domain_requests_per_minute,
            },
            fetch: crate::hunt::fetch::FetchLimits {
                timeout: Duration::from_secs(self.hunt_fetch_timeout_secs.unwrap_or(timeout)),
                max_bytes: self.hunt_max_fetch_size,
            },
        }
    }

    /// Where the local API socket is: `local_api_socket`, or `local-api.sock` in the relay
    /// data directory.
    pub fn local_api_socket_path(&self) -> PathBuf {
        self.local_api_socket.clone().unwrap_or_else(|| self.relay_data_path.join("local-api.sock"))
    }

    fn validate_sync(&self) -> Result<(), ConfigError> {
        let invalid = |option, reason: String| Err(ConfigError::Invalid { option, reason });
        for relay in &self.sync_bootstrap_relays {
            if let Err(e) = crate::sync::peers::PeerUrl::parse(relay) {
                return invalid("sync_bootstrap_relays", e.to_string());
            }
        }
        for (option, value) in [
            ("sync_max_peers", self.sync_max_peers),
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

    /// Relay sync settings: the configured values, or the defaults (short timers in test
    /// mode). Bootstrap relays that do not parse are skipped ([`Config::validate`] refuses
    /// them).
    pub fn sync_settings(&self) -> crate::sync::SyncSettings {
        use crate::sync::{filters::FilterLimits, health::HealthTimers, historic::HistoricSettings};
        use std::time::Duration;
        let secs = |value: Option<u64>, normal: u64, test: u64| {
            Duration::from_secs(value.unwrap_or(if self.test_mode { test } else { normal }))
        };
        let millis = |value: Option<u64>, normal: u64, test: u64| {
            Duration::from_millis(value.unwrap_or(if self.test_mode { test } else { normal }))
        };
        let reconnect_min = millis(self.sync_reconnect_min_ms, 5000, 200);
        let connect = secs(self.sync_connect_timeout_secs, 10, 5);
        crate::sync::SyncSettings {
            bootstrap: self
                .sync_bootstrap_relays
                .iter()
                .filter_map(|r| crate::sync::peers::PeerUrl::parse(r).ok())
                .collect(),
            max_peers: self.sync_max_peers,
            peer: crate::sync::peer::PeerSettings {
                historic: HistoricSettings {
                    negentropy: self.sync_negentropy,
                    page_size: self.sync_page_size,
                    ..HistoricSettings::default()
                },
                limits: FilterLimits {
                    batch: self.sync_filter_batch_size,
                    max_batch: self.sync_filter_batch_size.max(1000),
                    filters_per_req: self.sync_filters_per_req,
                    max_subscriptions: self.sync_max_subscriptions,
                    ..FilterLimits::default()
                },
                timers: HealthTimers {
                    reconnect_min,
                    reconnect_max: secs(self.sync_reconnect_max_secs, 3600, 5).max(reconnect_min),
                    rate_limit_cooldown: secs(self.sync_rate_limit_cooldown_secs, 600, 3),
                    dead_after: secs(self.sync_dead_after_secs, 24 * 3600, 30),
                    dead_retry: secs(self.sync_dead_retry_secs, 6 * 3600, 5),
                    catch_up_window: secs(self.sync_catch_up_window_secs, 15 * 60, 15 * 60),
                    full_interval: secs(self.sync_full_interval_secs, 24 * 3600, 60),
                },
            },
            memory: crate::sync::rejected::MemoryLimits {
                hot_ttl: secs(self.sync_rejected_hot_secs, 600, 60),
                hot_capacity: self.sync_rejected_hot_capacity,
                cold_ttl: secs(self.sync_rejected_cold_secs, 7 * 24 * 3600, 7 * 24 * 3600),
                cold_capacity: self.sync_rejected_cold_capacity,
                expired_block: secs(self.sync_expired_block_secs, 24 * 3600, 24 * 3600),
                expired_capacity: self.sync_rejected_cold_capacity,
            },
            timeouts: crate::sync::remote::RemoteTimeouts {
                connect,
                negentropy_probe: connect,
                request: secs(self.sync_request_timeout_secs, 120, 30),
            },
            debounce: millis(self.sync_debounce_ms, 1000, 100),
            refresh: secs(None, 30, 1),
        }
    }

    /// How often the curation file is checked for changes.
    pub fn curation_reload_interval(&self) -> std::time::Duration {
        let default = if self.test_mode { 1 } else { 10 };
        std::time::Duration::from_secs(self.curation_reload_secs.unwrap_or(default))
    }

    /// The archive list (GRASP-05), parsed ([`Config::validate`] checked it).
    pub fn archive_selectors(&self) -> crate::curation::Selectors {
        crate::curation::Selectors::parse(&self.archive).unwrap_or_default()
    }

    /// The relay operator's keys, when an owner key is configured.
    pub fn owner_keys(&self) -> Option<nostr::Keys> {
        self.relay_owner_nsec.as_ref().and_then(owner_keys)
    }

    /// Loads the file (if any) and overlays the command line / environment values.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut table = match &args.config {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let overlay = toml::Table::try_from(args).map_err(|e| parse_error(None, e))?;
        table.extend(overlay);
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(args.config.as_deref(), e))?;
        config.validate()?;
        Ok(config)
    }
}

/// An upstream is an `http(s)://host[:port][/prefix]` URL without query or credentials.
fn parse_upstream(value: &str) -> Result<Url, String> {
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

fn owner_keys(secret: &Secret) -> Option<nostr::Keys> {
    nostr::Keys::parse(secret.0.trim()).ok()
}

fn parse_error(path: Option<&Path>, e: impl fmt::Display) -> ConfigError {
    let message = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    ConfigError::Parse { path: path.map(Path::to_path_buf), message }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    text.parse::<toml::Table>().map_err(|e| parse_error(Some(path), e))
}

/// Command-line flags and `GRASP_*` variables; `None` means "not given here".
///
/// Frontends flatten this into their own `clap` parser and then call [`Config::load`].
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ConfigArgs {
    /// TOML configuration file (same option names as below, snake_case)
    #[arg(long, env = "GRASP_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on for the relay, NIP-11, git and /metrics
    #[arg(long, env = "GRASP_BIND_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<SocketAddr>,
    /// Public host[:port] announcements must list in 'clone' and 'relays' (default: the bound address)
    #[arg(long, env = "GRASP_DOMAIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Directory of the bare repositories
    #[arg(long, env = "GRASP_GIT_DATA_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_data_path: Option<PathBuf>,
    /// Directory of the LMDB event store
    #[arg(long, env = "GRASP_RELAY_DATA_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_data_path: Option<PathBuf>,
    /// Event store backend: lmdb or memory
    #[arg(long, env = "GRASP_DATABASE_BACKEND", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_backend: Option<StoreBackend>,
    /// Relay name in NIP-11
    #[arg(long, env = "GRASP_RELAY_NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_name: Option<String>,
    /// Relay description in NIP-11
    #[arg(long, env = "GRASP_RELAY_DESCRIPTION")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_description: Option<String>,
    /// Operator secret key (nsec or hex); its public key is published in NIP-11
    #[arg(long, env = "GRASP_RELAY_OWNER_NSEC", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_owner_nsec: Option<String>,
    /// Operator contact in NIP-11
    #[arg(long, env = "GRASP_RELAY_CONTACT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_contact: Option<String>,
    /// Log filter (error, warn, info, debug, trace, or tracing directives)
    #[arg(long, env = "GRASP_LOG_LEVEL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Shorten every timer so tests run fast
    #[arg(long = "test-mode", env = "GRASP_TEST", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_mode: Option<bool>,
    /// Largest websocket message accepted, in bytes
    #[arg(long, env = "GRASP_MAX_MESSAGE_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_message_size: Option<usize>,
    /// Open subscriptions allowed per connection
    #[arg(long, env = "GRASP_MAX_SUBSCRIPTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<usize>,
    /// Filters allowed per REQ
    #[arg(long, env = "GRASP_MAX_FILTERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_filters: Option<usize>,
    /// Largest filter limit honoured (also used when a filter has none)
    #[arg(long, env = "GRASP_MAX_LIMIT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<usize>,
    /// EVENT messages per minute per client IP (0 = unlimited)
    #[arg(long, env = "GRASP_EVENTS_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events_per_minute: Option<u32>,
    /// Use the last X-Forwarded-For address as the client IP (only behind your own reverse proxy)
    #[arg(long, env = "GRASP_TRUST_FORWARDED_FOR", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_forwarded_for: Option<bool>,
    /// Live events buffered per connection before a slow subscriber is cut off
    #[arg(long, env = "GRASP_SUBSCRIBER_QUEUE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_queue: Option<usize>,
    /// Most records one negentropy (NIP-77) session may cover
    #[arg(long, env = "GRASP_MAX_NEGENTROPY_ITEMS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_negentropy_items: Option<usize>,
    /// Open websocket connections from one IP above which it is counted as a flagged abuser
    #[arg(long, env = "GRASP_ABUSER_CONNECTION_THRESHOLD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuser_connection_threshold: Option<usize>,
    /// Largest push accepted, in bytes (after gzip decoding)
    #[arg(long, env = "GRASP_MAX_PUSH_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_push_size: Option<u64>,
    /// Seconds a held event waits for its git data [default: 1800, or 60 in test mode]
    #[arg(long, env = "GRASP_PURGATORY_EXPIRY_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_expiry_secs: Option<u64>,
    /// Seconds an unmatched refs/nostr/<id> ref waits for its event [default: 1200, or 40 in test mode]
    #[arg(long, env = "GRASP_PR_REF_EXPIRY_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pr_ref_expiry_secs: Option<u64>,
    /// Seconds of life a push guarantees the held events it uses [default: 900, or 30 in test mode]
    #[arg(long, env = "GRASP_PUSH_EXTENSION_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_extension_secs: Option<u64>,
    /// Acceptance policy: grasp, or accept-all (plain relay; benchmarks only)
    #[arg(long, env = "GRASP_EVENT_POLICY", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_policy: Option<EventPolicyChoice>,
    /// Fetch the missing git data of held events from the other clone URLs
    #[arg(long, env = "GRASP_HUNTING", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunting: Option<bool>,
    /// Milliseconds before hunting for an event a client published [default: 180000, or 1000 in test mode]
    #[arg(long, env = "GRASP_HUNT_CLIENT_DELAY_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_client_delay_ms: Option<u64>,
    /// Milliseconds before hunting for an event relay sync brought [default: 500, or 100 in test mode]
    #[arg(long, env = "GRASP_HUNT_SYNC_DELAY_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_sync_delay_ms: Option<u64>,
    /// First hunting backoff in milliseconds, doubling per attempt [default: 20000, or 500 in test mode]
    #[arg(long, env = "GRASP_HUNT_BACKOFF_BASE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_backoff_base_ms: Option<u64>,
    /// Longest hunting backoff in milliseconds [default: 120000, or 2000 in test mode]
    #[arg(long, env = "GRASP_HUNT_BACKOFF_MAX_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_backoff_max_ms: Option<u64>,
    /// Hunting fetches in flight at once per domain
    #[arg(long, env = "GRASP_HUNT_DOMAIN_CONCURRENCY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_domain_concurrency: Option<u32>,
    /// Hunting fetches started per minute per domain
    #[arg(long, env = "GRASP_HUNT_DOMAIN_REQUESTS_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_domain_requests_per_minute: Option<u32>,
    /// Seconds one hunting fetch may run before it is killed [default: 300, or 30 in test mode]
    #[arg(long, env = "GRASP_HUNT_FETCH_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_fetch_timeout_secs: Option<u64>,
    /// Most bytes one hunting fetch may bring before it is killed
    #[arg(long, env = "GRASP_HUNT_MAX_FETCH_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_fetch_size: Option<u64>,
    /// Serve the local API socket used by grasp-hook (true or false)
    #[arg(long, env = "GRASP_LOCAL_API", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_api: Option<bool>,
    /// Path of the local API socket [default: <relay_data_path>/local-api.sock]
    #[arg(long, env = "GRASP_LOCAL_API_SOCKET")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_api_socket: Option<PathBuf>,
    /// Group allowed to connect to the local API socket (mode 0660) [default: none, mode 0600]
    #[arg(long, env = "GRASP_LOCAL_API_GROUP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_api_group: Option<String>,
    /// Pull the events of hosted repositories from the other relays their announcements list (GRASP-02)
    #[arg(long, env = "GRASP_SYNC", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<bool>,
    /// Relays always synced with, comma-separated; scheme optional (wss://, or ws:// for loopback hosts)
    #[arg(long, env = "GRASP_SYNC_BOOTSTRAP_RELAYS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_bootstrap_relays: Option<Vec<String>>,
    /// Use NIP-77 negentropy with peers that support it (false: always page with REQ)
    #[arg(long, env = "GRASP_SYNC_NEGENTROPY", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_negentropy: Option<bool>,
    /// Most peer relays synced with at once
    #[arg(long, env = "GRASP_SYNC_MAX_PEERS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_max_peers: Option<usize>,
    /// Milliseconds before the first reconnect to a peer, doubling per failure [default: 5000, or 200 in test mode]
    #[arg(long, env = "GRASP_SYNC_RECONNECT_MIN_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_reconnect_min_ms: Option<u64>,
    /// Longest wait between reconnects to a peer, in seconds [default: 3600, or 5 in test mode]
    #[arg(long, env = "GRASP_SYNC_RECONNECT_MAX_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_reconnect_max_secs: Option<u64>,
    /// Seconds a peer that rate-limited us is left alone [default: 600, or 3 in test mode]
    #[arg(long, env = "GRASP_SYNC_RATE_LIMIT_COOLDOWN_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rate_limit_cooldown_secs: Option<u64>,
    /// Seconds without a connection after which a peer is dead [default: 86400, or 30 in test mode]
    #[arg(long, env = "GRASP_SYNC_DEAD_AFTER_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_dead_after_secs: Option<u64>,
    /// Seconds between attempts to reach a dead peer [default: 21600, or 5 in test mode]
    #[arg(long, env = "GRASP_SYNC_DEAD_RETRY_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_dead_retry_secs: Option<u64>,
    /// A reconnect within this many seconds of a disconnect catches up with since [default: 900]
    #[arg(long, env = "GRASP_SYNC_CATCH_UP_WINDOW_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_catch_up_window_secs: Option<u64>,
    /// Seconds between full reconciliations with a connected peer [default: 86400, or 60 in test mode]
    #[arg(long, env = "GRASP_SYNC_FULL_INTERVAL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_full_interval_secs: Option<u64>,
    /// Seconds to connect to a peer and to wait for its first negentropy answer [default: 10, or 5 in test mode]
    #[arg(long, env = "GRASP_SYNC_CONNECT_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_connect_timeout_secs: Option<u64>,
    /// Seconds one reconciliation or REQ page may take [default: 120, or 30 in test mode]
    #[arg(long, env = "GRASP_SYNC_REQUEST_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_request_timeout_secs: Option<u64>,
    /// Milliseconds changes settle before sync re-reads what is hosted [default: 1000, or 100 in test mode]
    #[arg(long, env = "GRASP_SYNC_DEBOUNCE_MS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_debounce_ms: Option<u64>,
    /// Events per REQ page when a peer is paged instead of reconciled
    #[arg(long, env = "GRASP_SYNC_PAGE_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_page_size: Option<usize>,
    /// Tag values (coordinates, event ids) per sync filter
    #[arg(long, env = "GRASP_SYNC_FILTER_BATCH_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_filter_batch_size: Option<usize>,
    /// Filters per REQ sent to a peer
    #[arg(long, env = "GRASP_SYNC_FILTERS_PER_REQ")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_filters_per_req: Option<usize>,
    /// Live subscriptions per peer
    #[arg(long, env = "GRASP_SYNC_MAX_SUBSCRIPTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_max_subscriptions: Option<usize>,
    /// Seconds refused synced events are kept in full to evaluate them again [default: 600, or 60 in test mode]
    #[arg(long, env = "GRASP_SYNC_REJECTED_HOT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rejected_hot_secs: Option<u64>,
    /// Most refused synced events kept in full
    #[arg(long, env = "GRASP_SYNC_REJECTED_HOT_CAPACITY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rejected_hot_capacity: Option<usize>,
    /// Seconds refused synced events are remembered by id [default: 604800]
    #[arg(long, env = "GRASP_SYNC_REJECTED_COLD_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rejected_cold_secs: Option<u64>,
    /// Most refused synced events remembered by id
    #[arg(long, env = "GRASP_SYNC_REJECTED_COLD_CAPACITY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_rejected_cold_capacity: Option<usize>,
    /// Seconds a synced copy of an event that expired here is refused [default: 86400]
    #[arg(long, env = "GRASP_SYNC_EXPIRED_BLOCK_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_expired_block_secs: Option<u64>,
    /// Seconds a client may take to send request headers (also the idle keep-alive time)
    #[arg(long, env = "GRASP_HEADER_READ_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a push body or a clone response may make no progress before it is aborted
    #[arg(long, env = "GRASP_BODY_IDLE_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_idle_timeout_secs: Option<u64>,
    /// Seconds between websocket pings (0: none)
    #[arg(long, env = "GRASP_WEBSOCKET_PING_INTERVAL_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket_ping_interval_secs: Option<u64>,
    /// Ping intervals a websocket may stay silent or blocked before it is closed
    #[arg(long, env = "GRASP_WEBSOCKET_MISSED_PONGS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub websocket_missed_pongs: Option<u32>,
    /// Open connections in all (0: automatic, under the open-file limit)
    #[arg(long, env = "GRASP_MAX_CONNECTIONS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open connections per client IP (0: unlimited)
    #[arg(long, env = "GRASP_MAX_CONNECTIONS_PER_IP")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// GRASP-06: accept pull request commits at /prs/<npub>/<identifier>.git (false: /prs/ answers 404)
    #[arg(long, env = "GRASP_PRS_HOSTING", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prs_hosting: Option<bool>,
    /// Largest push to a /prs/ repository, in bytes (after gzip decoding)
    #[arg(long, env = "GRASP_PRS_MAX_PUSH_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prs_max_push_size: Option<u64>,
    /// Pushes to /prs/ repositories per minute per client IP (0 = unlimited)
    #[arg(long, env = "GRASP_PRS_PUSHES_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prs_pushes_per_minute: Option<u32>,
    /// Pushes to any repository per minute per client address, IPv6 by /64 (0 = unlimited)
    #[arg(long, env = "GRASP_PUSHES_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pushes_per_minute: Option<u32>,
    /// Most refs/nostr/<id> refs in one push
    #[arg(long, env = "GRASP_MAX_NOSTR_REFS_PER_PUSH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_nostr_refs_per_push: Option<usize>,
    /// Most refs/nostr/<id> refs waiting for their event in one repository
    #[arg(long, env = "GRASP_MAX_PLACEHOLDERS_PER_REPOSITORY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_placeholders_per_repository: Option<usize>,
    /// Most refs/nostr/<id> refs waiting for their event pushed from one client address
    #[arg(long, env = "GRASP_MAX_PLACEHOLDERS_PER_CLIENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_placeholders_per_client: Option<usize>,
    /// Most held events published from one client address
    #[arg(long, env = "GRASP_PURGATORY_MAX_EVENTS_PER_CLIENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_events_per_client: Option<usize>,
    /// Most bytes of held events published from one client address
    #[arg(long, env = "GRASP_PURGATORY_MAX_BYTES_PER_CLIENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_bytes_per_client: Option<u64>,
    /// Most held events signed by one key
    #[arg(long, env = "GRASP_PURGATORY_MAX_EVENTS_PER_PUBKEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_events_per_pubkey: Option<usize>,
    /// Most bytes of held events signed by one key
    #[arg(long, env = "GRASP_PURGATORY_MAX_BYTES_PER_PUBKEY")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_bytes_per_pubkey: Option<u64>,
    /// Most held events for one repository identifier
    #[arg(long, env = "GRASP_PURGATORY_MAX_EVENTS_PER_IDENTIFIER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_events_per_identifier: Option<usize>,
    /// Most bytes of held events for one repository identifier
    #[arg(long, env = "GRASP_PURGATORY_MAX_BYTES_PER_IDENTIFIER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_bytes_per_identifier: Option<u64>,
    /// Most held events in all
    #[arg(long, env = "GRASP_PURGATORY_MAX_EVENTS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_events: Option<usize>,
    /// Most bytes of held events in all
    #[arg(long, env = "GRASP_PURGATORY_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purgatory_max_bytes: Option<u64>,
    /// Most bytes the repositories of one owner may use (0 = no quota)
    #[arg(long, env = "GRASP_REPOSITORY_QUOTA_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_quota_bytes: Option<u64>,
    /// Free bytes the repository filesystem keeps; below it pushes and hunted fetches are refused (0 = off)
    #[arg(long, env = "GRASP_MIN_FREE_DISK_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_free_disk_bytes: Option<u64>,
    /// TOML file with the operator's allow / deny lists, re-read when it changes and on SIGHUP
    #[arg(long, env = "GRASP_CURATION_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curation_file: Option<PathBuf>,
    /// Seconds between checks of the curation file for changes [default: 10, or 1 in test mode]
    #[arg(long, env = "GRASP_CURATION_RELOAD_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curation_reload_secs: Option<u64>,
    /// GRASP-05: archive read-only what this names (comma-separated: *, <npub>, <npub>/<identifier>, <identifier>)
    #[arg(long, env = "GRASP_ARCHIVE", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<Vec<String>>,
    /// grasp-proxy: URL of the git server (git http-backend) repository requests go to, e.g. http://127.0.0.1:8080
    #[arg(long, env = "GRASP_UPSTREAM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// grasp-proxy: seconds to wait for a connection to the upstream
    #[arg(long, env = "GRASP_UPSTREAM_CONNECT_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_connect_timeout_secs: Option<u64>,
    /// grasp-proxy: seconds the upstream may stay silent before the request fails with 504
    #[arg(long, env = "GRASP_UPSTREAM_TIMEOUT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_secs: Option<u64>,
    /// grasp-proxy: PEM certificate chain; with --tls-private-key-path the listener speaks HTTPS and WSS
    #[arg(long, env = "GRASP_TLS_CERTIFICATE_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_certificate_path: Option<PathBuf>,
    /// grasp-proxy: PEM private key of --tls-certificate-path
    #[arg(long, env = "GRASP_TLS_PRIVATE_KEY_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_private_key_path: Option<PathBuf>,
}

/// Options only grasp-proxy reads; other frontends hide them from `--help` ([`hide_options`]).
pub const PROXY_OPTIONS: &[&str] = &[
    "upstream",
    "upstream_connect_timeout_secs",
    "upstream_timeout_secs",
    "tls_certificate_path",
    "tls_private_key_path",
];

/// Hides `options` from `--help` (they still parse), for a frontend that does not use them.
pub fn hide_options(cmd: Command, options: &'static [&'static str]) -> Command {
    cmd.mut_args(|arg| {
        let hide = options.contains(&arg.get_id().as_str());
        arg.hide(hide)
    })
}

/// ngit-grasp environment names accepted as aliases: (option, alias).
pub const NGIT_ENV_ALIASES: &[(&str, &str)] = &[
    ("bind_address", "NGIT_BIND_ADDRESS"),
    ("domain", "NGIT_DOMAIN"),
    ("git_data_path", "NGIT_GIT_DATA_PATH"),
    ("relay_data_path", "NGIT_RELAY_DATA_PATH"),
    ("database_backend", "NGIT_DATABASE_BACKEND"),
    ("relay_name", "NGIT_RELAY_NAME"),
    ("relay_description", "NGIT_RELAY_DESCRIPTION"),
    ("relay_owner_nsec", "NGIT_RELAY_OWNER_NSEC"),
    ("relay_contact", "NGIT_RELAY_CONTACT"),
    ("log_level", "NGIT_LOG_LEVEL"),
    ("test_mode", "NGIT_TEST"),
];

fn primary_env(option: &str) -> String {
    match option {
        "test_mode" => "GRASP_TEST".to_owned(),
        other => format!("GRASP_{}", other.to_ascii_uppercase()),
    }
}

/// Turns set `NGIT_*` aliases into leading `--flag=value` arguments (only when the
/// `GRASP_*` name is unset), so clap gives them the same parsing and error messages. Flags
/// given by the user come later and win, because the command overrides repeated flags.
pub fn with_env_aliases<I>(argv: I, env: impl Fn(&str) -> Option<String>) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut argv = argv.into_iter();
    let mut out: Vec<OsString> = argv.next().into_iter().collect();
    for (option, alias) in NGIT_ENV_ALIASES {
        if env(&primary_env(option)).is_some() {
            continue;
        }
        if let Some(value) = env(alias) {
            let flag = if *option == "test_mode" { "test-mode".to_owned() } else { option.replace('_', "-") };
            out.push(format!("--{flag}={value}").into());
        }
    }
    out.extend(argv);
    out
}

/// Adds each option's default and `NGIT_*` alias to its `--help` line, from
/// [`Config::default`] and [`NGIT_ENV_ALIASES`], so the help never drifts from the code.
pub fn annotate_help(cmd: Command) -> Command {
    let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
    let options: Vec<String> = ConfigArgs::augment_args(Command::new("options"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    cmd.args_override_self(true).mut_args(move |arg| {
        let id = arg.get_id().as_str().to_owned();
        if !options.contains(&id) {
            return arg;
        }
        // Options may follow a subcommand (`grasp-server purgatory list --relay-data-path …`).
        let arg = arg.global(true);
        let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
        if id == "config" {
            return arg;
        }
        let mut text = match defaults.get(&id) {
            Some(toml::Value::String(s)) => format!("{help} [default: {s}]"),
            Some(toml::Value::Array(list)) if list.is_empty() => format!("{help} [default: none]"),
            Some(v) => format!("{help} [default: {v}]"),
            None => help,
        };
        if let Some((_, alias)) = NGIT_ENV_ALIASES.iter().find(|(o, _)| *o == id) {
            text.push_str(&format!(" [alias env: {alias}]"));
        }
        arg.help(text)
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn parse(argv: &[&str], env: &[(&str, &str)]) -> Result<ConfigArgs, clap::Error> {
        let env_fn = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let argv = with_env_aliases(argv.iter().map(OsString::from), env_fn);
        let cmd = annotate_help(Cli::command());
        let m = cmd.try_get_matches_from(argv)?;
        Ok(Cli::from_arg_matches(&m)?.config)
    }

    #[test]
    fn ngit_alias_applies_and_cli_wins() {
        let a = parse(&["x"], &[("NGIT_DOMAIN", "a.example")]).unwrap();
        assert_eq!(a.domain.as_deref(), Some("a.example"));
        let a = parse(&["x", "--domain", "b.example"], &[("NGIT_DOMAIN", "a.example")]).unwrap();
        assert_eq!(a.domain.as_deref(), Some("b.example"));
        let a = parse(&["x"], &[("NGIT_TEST", "1"), ("NGIT_DATABASE_BACKEND", "memory")]).unwrap();
        assert_eq!(a.test_mode, Some(true));
        assert_eq!(a.database_backend, Some(StoreBackend::Memory));
        // the native name wins over the alias
        let a = parse(&["x"], &[("NGIT_DOMAIN", "a.example"), ("GRASP_DOMAIN", "c.example")]);
        // (GRASP_DOMAIN is read by clap from the real environment, so here only the alias is skipped)
        assert_eq!(a.unwrap().domain, None);
    }

    #[test]
    fn file_is_overridden_by_args_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grasp.toml");
        std::fs::write(&path, "max_limit = 7\nrelay_name = \"from-file\"\n").unwrap();
        let args =
            ConfigArgs { config: Some(path.clone()), relay_name: Some("cli".into()), ..Default::default() };
        let c = Config::load(&args).unwrap();
        assert_eq!(c.max_limit, 7);
        assert_eq!(c.relay_name, "cli");
        assert_eq!(c.max_filters, Config::default().max_filters);

        std::fs::write(&path, "max_limt = 7\n").unwrap();
        let err =
            Config::load(&ConfigArgs { config: Some(path), ..Default::default() }).unwrap_err().to_string();
        assert!(err.contains("max_limt") && !err.contains('\n'), "{err}");
    }

    #[test]
    fn invalid_values_name_the_option() {
        let bad = ConfigArgs { domain: Some("https://x/y".into()), ..Default::default() };
        assert!(Config::load(&bad).unwrap_err().to_string().contains("domain"));
        let bad = ConfigArgs { relay_owner_nsec: Some("nope".into()), ..Default::default() };
        assert!(Config::load(&bad).unwrap_err().to_string().contains("relay_owner_nsec"));
        let bad = ConfigArgs { max_limit: Some(0), ..Default::default() };
        assert!(Config::load(&bad).unwrap_err().to_string().contains("max_limit"));
    }

    #[test]
    fn hunt_timers_are_short_in_test_mode_and_explicit_values_win() {
        let normal = Config::default().hunt_settings();
        assert_eq!(normal.timers.client_delay.as_secs(), 180);
        assert_eq!(normal.timers.sync_delay.as_millis(), 500);
        assert_eq!((normal.timers.backoff_base.as_secs(), normal.timers.backoff_max.as_secs()), (20, 120));
        assert_eq!((normal.limits.concurrent, normal.limits.per_minute), (5, 30));
        let test =
            Config { test_mode: true, hunt_sync_delay_ms: Some(7), ..Config::default() }.hunt_settings();
        assert_eq!(test.timers.client_delay.as_millis(), 1000);
        assert_eq!(test.timers.sync_delay.as_millis(), 7);
        let bad = ConfigArgs { hunt_domain_concurrency: Some(0), ..Default::default() };
        assert!(Config::load(&bad).unwrap_err().to_string().contains("hunt_domain_concurrency"));
    }

    #[test]
    fn archive_list_from_flags_env_style_and_file() {
        let a = parse(&["x", "--archive", "ngit,*"], &[]).unwrap();
        assert_eq!(a.archive, Some(vec!["ngit".to_owned(), "*".to_owned()]));
        let c = Config::load(&a).unwrap();
        assert!(c.archive_selectors().is_everything());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grasp.toml");
        std::fs::write(&path, "archive = [\"ngit\"]\n").unwrap();
        let c = Config::load(&ConfigArgs { config: Some(path), ..Default::default() }).unwrap();
        assert_eq!(c.archive, vec!["ngit".to_owned()]);
        let bad = ConfigArgs { archive: Some(vec!["npub1bad".into()]), ..Default::default() };
        assert!(Config::load(&bad).unwrap_err().to_string().contains("archive"));
    }

    #[test]
    fn proxy_options_are_validated() {
        let ok = ConfigArgs { upstream: Some("http://127.0.0.1:8080/git".into()), ..Default::default() };
        assert_eq!(Config::load(&ok).unwrap().upstream_url().unwrap().path(), "/git");
        for bad in ["127.0.0.1:8080", "ftp://x", "http://u:p@x", "http://x/?q"] {
            let args = ConfigArgs { upstream: Some(bad.into()), ..Default::default() };
            assert!(Config::load(&args).unwrap_err().to_string().contains("upstream"), "{bad}");
        }
        let half = ConfigArgs { tls_certificate_path: Some("cert.pem".into()), ..Default::default() };
        assert!(Config::load(&half).unwrap_err().to_string().contains("tls_certificate_path"));
        let zero = ConfigArgs { upstream_timeout_secs: Some(0), ..Default::default() };
        assert!(Config::load(&zero).unwrap_err().to_string().contains("upstream_timeout_secs"));
    }

    #[test]
    fn hidden_options_still_parse() {
        let cmd = hide_options(annotate_help(Cli::command()), PROXY_OPTIONS);
        assert!(!cmd.clone().render_long_help().to_string().contains("--upstream"));
        let m = cmd.try_get_matches_from(["x", "--upstream=http://127.0.0.1:1"]).unwrap();
        assert_eq!(Cli::from_arg_matches(&m).unwrap().config.upstream.as_deref(), Some("http://127.0.0.1:1"));
    }

    #[test]
    fn help_lists_defaults_and_aliases() {
        let help = annotate_help(Cli::command()).render_long_help().to_string();
        assert!(help.contains("GRASP_BIND_ADDRESS"));
        assert!(help.contains("[default: 127.0.0.1:7334]"));
        assert!(help.contains("NGIT_BIND_ADDRESS"));
        assert!(help.contains("[default: lmdb]"));
        assert!(!help.contains("[default: []]"), "an empty list reads 'none'");
    }

    #[test]
    fn configuration_reference_documents_every_option() {
        let doc = include_str!("../../docs/reference/configuration.md");
        for arg in ConfigArgs::augment_args(Command::new("x")).get_arguments() {
            let id = arg.get_id().as_str();
            let long = arg.get_long().unwrap();
            assert!(doc.contains(&format!("`--{long}`")), "docs/reference/configuration.md lacks --{long}");
            if id != "config" {
                assert!(doc.contains(&format!("| `{id}` |")), "docs/reference/configuration.md lacks {id}");
            }
            if let Some(env) = arg.get_env() {
                assert!(doc.contains(env.to_str().unwrap()), "docs lack {env:?}");
            }
        }
        for (_, alias) in NGIT_ENV_ALIASES {
            assert!(doc.contains(alias), "docs/reference/configuration.md lacks {alias}");
        }
    }
}
