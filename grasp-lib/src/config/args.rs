//! Options from the command line and the environment (`--flag`, `GRASP_*`, and the
//! `NGIT_*` names of ngit-grasp), overlaid on a TOML file.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::BoolishValueParser;
use clap::{Args, Command};
use serde::{Deserialize, Serialize};

use super::schema::{Config, ConfigError, EventPolicyChoice};
use crate::store::StoreBackend;

impl Config {
    /// Loads the file (if any) and overlays the command line / environment values.
    pub fn load(args: &ConfigArgs) -> Result<Self, ConfigError> {
        let mut table = match &args.config {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        let overlay = toml::Table::try_from(args).map_err(|e| parse_error(None, e))?;
        table.extend(overlay);
        // A private service has no unauthenticated /prs/: GRASP-06 is off unless asked for
        // (and then validation refuses the combination).
        if table.get("private_mode").and_then(toml::Value::as_bool) == Some(true) {
            table.entry("prs_hosting").or_insert(toml::Value::Boolean(false));
        }
        let config: Config = Config::deserialize(toml::Value::Table(table))
            .map_err(|e| parse_error(args.config.as_deref(), e))?;
        config.validate()?;
        Ok(config)
    }
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
    /// Path the whole service is mounted under: relay and NIP-11 at <base>, git at <base>/<npub>/<id>.git
    #[arg(long, env = "GRASP_BASE_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// Directory of the bare repositories
    #[arg(long, env = "GRASP_GIT_DATA_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_data_path: Option<PathBuf>,
    /// Directory of the LMDB event store
    #[arg(long, env = "GRASP_RELAY_DATA_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_data_path: Option<PathBuf>,
    /// Event store backend: lmdb, postgres or memory
    #[arg(long, env = "GRASP_DATABASE_BACKEND", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_backend: Option<StoreBackend>,
    /// PostgreSQL URL for the postgres backend (postgres://user:password@host:port/database)
    #[arg(long, env = "GRASP_DATABASE_URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Most PostgreSQL connections this node keeps open
    #[arg(long, env = "GRASP_DATABASE_POOL_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_pool_size: Option<usize>,
    /// This node's name in logs, metrics and leases (default: host name and a random suffix)
    #[arg(long, env = "GRASP_NODE_ID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
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
    /// Bytes of live events one connection may have waiting before its subscriptions are closed
    #[arg(long, env = "GRASP_SUBSCRIBER_QUEUE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriber_queue_bytes: Option<usize>,
    /// Most records one negentropy (NIP-77) session may cover
    #[arg(long, env = "GRASP_MAX_NEGENTROPY_ITEMS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_negentropy_items: Option<usize>,
    /// Most tags one event may carry, from clients and sync peers alike
    #[arg(long, env = "GRASP_MAX_EVENT_TAGS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_event_tags: Option<usize>,
    /// Most events a COUNT counts before it answers approximate
    #[arg(long, env = "GRASP_MAX_COUNT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_count: Option<usize>,
    /// Most bytes of events in one REQ answer before EOSE (newest first)
    #[arg(long, env = "GRASP_MAX_REQ_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_req_bytes: Option<usize>,
    /// Largest size the LMDB event store may grow to, in bytes
    #[arg(long, env = "GRASP_LMDB_MAP_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lmdb_map_size: Option<u64>,
    /// Events per minute one sync peer may send; the rest wait (0 = unlimited)
    #[arg(long, env = "GRASP_SYNC_EVENTS_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_events_per_minute: Option<u32>,
    /// Events per minute one sync peer may get newly accepted; the rest wait (0 = unlimited)
    #[arg(long, env = "GRASP_SYNC_ACCEPTS_PER_MINUTE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_accepts_per_minute: Option<u32>,
    /// Open websocket connections from one IP above which it is counted as a flagged abuser
    #[arg(long, env = "GRASP_ABUSER_CONNECTION_THRESHOLD")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abuser_connection_threshold: Option<usize>,
    /// Largest push accepted, in bytes (after gzip decoding)
    #[arg(long, env = "GRASP_MAX_PUSH_SIZE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_push_size: Option<u64>,
    /// Cache git pack-objects output for repeated fetches (clone storms)
    #[arg(long, env = "GRASP_PACK_CACHE", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache: Option<bool>,
    /// Directory of the pack cache, on this node's local disk [default: <relay_data_path>/pack-cache]
    #[arg(long, env = "GRASP_PACK_CACHE_PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache_path: Option<PathBuf>,
    /// Seconds a cached pack is served after it was written [default: 300]
    #[arg(long, env = "GRASP_PACK_CACHE_MAX_AGE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache_max_age_secs: Option<u64>,
    /// Most bytes the pack cache may take [default: 1 GiB]
    #[arg(long, env = "GRASP_PACK_CACHE_MAX_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache_max_bytes: Option<u64>,
    /// No pack is cached while the disk has less free space than this [default: 1 GiB]
    #[arg(long, env = "GRASP_PACK_CACHE_MIN_FREE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache_min_free_bytes: Option<u64>,
    /// Most git pack-objects run at once for fetches [default: number of CPUs]
    #[arg(long, env = "GRASP_PACK_CACHE_MAX_GENERATING")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_cache_max_generating: Option<usize>,
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
    /// Hunting fetches in flight at once over every domain
    #[arg(long, env = "GRASP_HUNT_MAX_CONCURRENT_FETCHES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_concurrent_fetches: Option<u32>,
    /// Most bytes all hunting quarantines together may hold
    #[arg(long, env = "GRASP_HUNT_MAX_QUARANTINE_BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_quarantine_bytes: Option<u64>,
    /// Clone URLs hunted from one announcement or pull request
    #[arg(long, env = "GRASP_HUNT_MAX_URLS_PER_EVENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_urls_per_event: Option<usize>,
    /// URLs hunted for one repository identifier
    #[arg(long, env = "GRASP_HUNT_MAX_URLS_PER_IDENTIFIER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_urls_per_identifier: Option<usize>,
    /// Hunting fetches at once to one resolved address
    #[arg(long, env = "GRASP_HUNT_MAX_FETCHES_PER_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hunt_max_fetches_per_address: Option<u32>,
    /// Dial loopback, private and other non-global addresses events name (tests, closed networks)
    #[arg(long, env = "GRASP_ALLOW_NON_GLOBAL_TARGETS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_non_global_targets: Option<bool>,
    /// Test mode only: name=ip entries resolved instead of asking DNS, comma-separated
    #[arg(long, env = "GRASP_TEST_RESOLVE", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_resolve: Option<Vec<String>>,
    /// Git processes serving clients at once; more wait, then get 503 (0 = no cap)
    #[arg(long, env = "GRASP_MAX_GIT_PROCESSES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_git_processes: Option<usize>,
    /// Git processes serving one client address at once (0 = no cap)
    #[arg(long, env = "GRASP_MAX_GIT_PROCESSES_PER_CLIENT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_git_processes_per_client: Option<usize>,
    /// Seconds a git request waits for a free slot before it gets 503
    #[arg(long, env = "GRASP_GIT_QUEUE_WAIT_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_queue_wait_secs: Option<u64>,
    /// Leading bits of an IPv6 address that name one client for every per-address bound (1-128)
    #[arg(long, env = "GRASP_IPV6_CLIENT_PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_client_prefix: Option<u8>,
    /// Serve /metrics on this address (e.g. 127.0.0.1:9090) instead of the public listener
    #[arg(long, env = "GRASP_METRICS_BIND_ADDRESS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_bind_address: Option<SocketAddr>,
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
    /// GRASP-03 Sync Plus: also ask the relays the people of hosted repositories use (NIP-65), with relay sync
    #[arg(long, env = "GRASP_SYNC_PLUS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_plus: Option<bool>,
    /// Relays asked for people's relay lists, comma-separated [default: public indexers; none in test mode]
    #[arg(long, env = "GRASP_USER_INDEX_RELAYS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_index_relays: Option<Vec<String>>,
    /// Relays for people without a relay list, comma-separated; empty: off [default: big public relays; none in test mode]
    #[arg(long, env = "GRASP_SYNC_PLUS_FALLBACK_RELAYS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_plus_fallback_relays: Option<Vec<String>>,
    /// Most relays Sync Plus asks at once
    #[arg(long, env = "GRASP_SYNC_PLUS_MAX_RELAYS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_plus_max_relays: Option<usize>,
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
    /// Pre-v3 maintainer rule: being listed is enough, no listing back (off: reciprocal, maintainer model v3)
    #[arg(long, env = "GRASP_LEGACY_MAINTAINERS", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub legacy_maintainers: Option<bool>,
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
    /// GRASP-08: members only (NIP-42 on the relay, NIP-98 on git); GRASP-06 goes off
    #[arg(long, env = "GRASP_PRIVATE_MODE", value_parser = BoolishValueParser::new(),
          num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_mode: Option<bool>,
    /// GRASP-08: member keys, comma-separated npubs (or hex)
    #[arg(long, env = "GRASP_PRIVATE_MEMBERS", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_members: Option<Vec<String>>,
    /// GRASP-08: the origin clients use (https://host[:port]) when it differs from the domain; NIP-98 URLs name it
    #[arg(long, env = "GRASP_PRIVATE_PUBLIC_ORIGIN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_public_origin: Option<String>,
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
    ("base_path", "NGIT_BASE_PATH"),
    ("git_data_path", "NGIT_GIT_DATA_PATH"),
    ("relay_data_path", "NGIT_RELAY_DATA_PATH"),
    ("database_backend", "NGIT_DATABASE_BACKEND"),
    ("relay_name", "NGIT_RELAY_NAME"),
    ("relay_description", "NGIT_RELAY_DESCRIPTION"),
    ("relay_owner_nsec", "NGIT_RELAY_OWNER_NSEC"),
    ("relay_contact", "NGIT_RELAY_CONTACT"),
    ("log_level", "NGIT_LOG_LEVEL"),
    ("test_mode", "NGIT_TEST"),
    ("prs_hosting", "NGIT_GRASP06_ENABLE"),
    ("allow_non_global_targets", "NGIT_SYNC_ALLOW_NON_GLOBAL_TARGETS"),
    ("private_mode", "NGIT_PRIVATE_MODE"),
    ("sync_plus", "NGIT_SYNC_PLUS_ENABLED"),
    ("user_index_relays", "NGIT_USER_INDEX_RELAYS"),
    ("sync_plus_fallback_relays", "NGIT_SYNC_PLUS_FALLBACK_RELAYS"),
    ("private_members", "NGIT_PRIVATE_MEMBERS"),
    ("private_public_origin", "NGIT_PRIVATE_PUBLIC_ORIGIN"),
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
    fn zero_hunting_limits_are_refused() {
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
        let doc = include_str!("../../../docs/reference/configuration.md");
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
