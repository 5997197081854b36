//! The configuration schema: every option, its type and its default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::authorization::PlaceholderCaps;
use crate::hunt::HuntSettings;
use crate::purgatory::bounds::HeldCaps;
use crate::relay::RelayLimits;
use crate::store::StoreBackend;
use crate::sync::SyncSettings;

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
    /// The path the whole service is mounted under (`/`: the root): relay, NIP-11, git,
    /// `/prs/`, pages and `/metrics` live below it.
    pub base_path: String,
    /// Directory of the bare repositories (`<git_data_path>/<npub>/<identifier>.git`).
    pub git_data_path: PathBuf,
    /// Directory of the LMDB event store.
    pub relay_data_path: PathBuf,
    /// `lmdb` (persistent, the default), `postgres` (several nodes on one database) or
    /// `memory`.
    pub database_backend: StoreBackend,
    /// PostgreSQL URL (`postgres://user:password@host:port/database`) for the `postgres`
    /// backend.
    pub database_url: Option<Secret>,
    /// Most PostgreSQL connections this node keeps open.
    pub database_pool_size: usize,
    /// This node's name in logs, metrics and leases (default: the host name and a random
    /// suffix, unique per process).
    pub node_id: Option<String>,
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
    /// Bytes of live events one connection may have waiting before its subscriptions are
    /// closed.
    pub subscriber_queue_bytes: usize,
    /// Most records one negentropy (NIP-77) session may cover.
    pub max_negentropy_items: usize,
    /// Most tags one event may carry (from clients and peers alike).
    pub max_event_tags: usize,
    /// Most events a COUNT counts before it answers `approximate`.
    pub max_count: usize,
    /// Most bytes of events in one REQ answer before EOSE.
    pub max_req_bytes: usize,
    /// Largest size the LMDB event store may grow to, in bytes.
    pub lmdb_map_size: u64,
    /// Events per minute one sync peer may send (the rest wait: nothing is lost).
    pub sync_events_per_minute: u32,
    /// Events per minute one sync peer may get newly accepted (stored or held); past that,
    /// its events wait (default: `events_per_minute`, what a client's address gets).
    pub sync_accepts_per_minute: Option<u32>,
    /// An IP holding more websocket connections than this at once counts in
    /// `ngit_websocket_flagged_abusers` (nothing is refused).
    pub abuser_connection_threshold: usize,
    /// Largest push (request body after decompression) accepted, in bytes.
    pub max_push_size: u64,
    /// Cache `git pack-objects` output for repeated fetches ([`crate::git::pack_cache`]).
    pub pack_cache: bool,
    /// Directory of the pack cache, on this node's local disk (default
    /// `<relay_data_path>/pack-cache`).
    pub pack_cache_path: Option<PathBuf>,
    /// Seconds a cached pack is served after it was written.
    pub pack_cache_max_age_secs: u64,
    /// Most bytes the pack cache may take.
    pub pack_cache_max_bytes: u64,
    /// No pack is cached while the disk has less free space than this.
    pub pack_cache_min_free_bytes: u64,
    /// Most `git pack-objects` run at once for fetches (default: the number of CPUs).
    pub pack_cache_max_generating: Option<usize>,
    /// The program whose `pack-objects-hook` subcommand serves the cache: set by the
    /// frontends (their own binary), never read from configuration. `None`: no cache.
    #[serde(skip)]
    pub pack_objects_hook: Option<PathBuf>,
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
    /// Hunting fetches in flight at once over every domain.
    pub hunt_max_concurrent_fetches: u32,
    /// Most bytes all hunting quarantines together may hold (each fetch gets its share).
    pub hunt_max_quarantine_bytes: u64,
    /// Clone URLs taken from one announcement or pull request.
    pub hunt_max_urls_per_event: usize,
    /// URLs hunted for one repository identifier.
    pub hunt_max_urls_per_identifier: usize,
    /// Hunting fetches at once to one resolved address (IPv6 by its group).
    pub hunt_max_fetches_per_address: u32,
    /// Dial loopback, private, link-local and other non-global addresses an event names
    /// (hunting, relay sync): for tests and closed networks only.
    pub allow_non_global_targets: bool,
    /// Test mode only: `name=ip` entries the outbound policy resolves instead of asking DNS.
    pub test_resolve: Vec<String>,
    /// Git processes serving clients at once (0: no cap).
    pub max_git_processes: usize,
    /// Git processes serving one client address group at once (0: no cap).
    pub max_git_processes_per_client: usize,
    /// Seconds a git request waits for a free slot before it is answered 503.
    pub git_queue_wait_secs: u64,
    /// Leading bits of an IPv6 address that name one client for every per-address bound.
    pub ipv6_client_prefix: u8,
    /// Serve `/metrics` on this address instead of the public listener (e.g. loopback).
    pub metrics_bind_address: Option<std::net::SocketAddr>,
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
    /// GRASP-03 Sync Plus: also ask the relays the people of hosted repositories use
    /// (NIP-65), when relay sync is on.
    pub sync_plus: bool,
    /// Relays asked for people's relay lists (default: public indexers; none in test mode).
    pub user_index_relays: Option<Vec<String>>,
    /// Relays used for people without a relay list (default: big public relays; none in
    /// test mode; empty: off).
    pub sync_plus_fallback_relays: Option<Vec<String>>,
    /// Most relays Sync Plus asks at once.
    pub sync_plus_max_relays: usize,
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
    /// Keep the pre-v3 maintainer rule: everyone an announcement in the set lists is a
    /// maintainer, without listing back (off: maintainer model v3, reciprocal).
    pub legacy_maintainers: bool,
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
    /// GRASP-08: the whole service is members-only (NIP-42 on the relay, NIP-98 on git).
    /// Turns GRASP-06 off unless `prs_hosting` is set, which is then an error.
    pub private_mode: bool,
    /// GRASP-08: the members (npub or hex), besides the owners of private relays that
    /// accepted announcements name.
    pub private_members: Vec<String>,
    /// GRASP-08: the origin clients reach this service at (`https://git.example.com`), when
    /// it differs from `http(s)://<domain>` (behind a TLS-terminating proxy); NIP-98
    /// credentials name repository URLs under it.
    pub private_public_origin: Option<String>,
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
    /// The defaults of a public server. Where a subsystem has a settings type, its own
    /// defaults are the source (`RelayLimits`, the purgatory and placeholder caps, hunting
    /// and sync settings), so the number lives next to the code it bounds.
    fn default() -> Self {
        let relay = RelayLimits::default();
        let hunt = HuntSettings::default();
        let sync = SyncSettings::for_mode(false);
        let held = HeldCaps::default();
        let placeholders = PlaceholderCaps::default();
        Self {
            bind_address: SocketAddr::from(([127, 0, 0, 1], 7334)),
            domain: None,
            base_path: "/".to_owned(),
            git_data_path: PathBuf::from("./data/repos"),
            relay_data_path: PathBuf::from("./data/relay"),
            database_backend: StoreBackend::Lmdb,
            database_url: None,
            database_pool_size: crate::store::postgres::DEFAULT_POOL_SIZE,
            node_id: None,
            relay_name: "grasp-server".to_owned(),
            relay_description: "A GRASP server: git repositories authorized by signed Nostr events"
                .to_owned(),
            relay_owner_nsec: None,
            relay_contact: None,
            log_level: "info".to_owned(),
            test_mode: false,
            max_message_size: relay.max_message_size,
            max_subscriptions: relay.max_subscriptions,
            max_filters: relay.max_filters,
            max_limit: relay.max_limit,
            events_per_minute: relay.events_per_minute,
            trust_forwarded_for: false,
            subscriber_queue: relay.subscriber_queue,
            subscriber_queue_bytes: relay.subscriber_queue_bytes,
            max_negentropy_items: relay.max_negentropy_items,
            max_event_tags: relay.max_event_tags,
            max_count: relay.max_count,
            max_req_bytes: relay.max_req_bytes,
            lmdb_map_size: crate::store::events::DEFAULT_MAP_SIZE,
            sync_events_per_minute: 6000,
            sync_accepts_per_minute: None,
            abuser_connection_threshold: relay.abuser_connection_threshold,
            max_push_size: 2 * 1024 * 1024 * 1024,
            pack_cache: true,
            pack_cache_path: None,
            pack_cache_max_age_secs: crate::git::pack_cache::DEFAULT_MAX_AGE_SECS,
            pack_cache_max_bytes: crate::git::pack_cache::DEFAULT_MAX_BYTES,
            pack_cache_min_free_bytes: crate::git::pack_cache::DEFAULT_MIN_FREE_BYTES,
            pack_cache_max_generating: None,
            pack_objects_hook: None,
            purgatory_expiry_secs: None,
            pr_ref_expiry_secs: None,
            push_extension_secs: None,
            event_policy: EventPolicyChoice::Grasp,
            hunting: true,
            hunt_client_delay_ms: None,
            hunt_sync_delay_ms: None,
            hunt_backoff_base_ms: None,
            hunt_backoff_max_ms: None,
            hunt_domain_concurrency: hunt.limits.concurrent,
            hunt_domain_requests_per_minute: hunt.limits.per_minute,
            hunt_fetch_timeout_secs: None,
            hunt_max_fetch_size: hunt.fetch.max_bytes,
            hunt_max_concurrent_fetches: hunt.limits.total,
            hunt_max_quarantine_bytes: 4 * 1024 * 1024 * 1024,
            hunt_max_urls_per_event: hunt.urls.per_event,
            hunt_max_urls_per_identifier: hunt.urls.per_identifier,
            hunt_max_fetches_per_address: hunt.urls.per_address,
            allow_non_global_targets: false,
            test_resolve: Vec::new(),
            metrics_bind_address: None,
            ipv6_client_prefix: crate::rate_limit::IPV6_CLIENT_PREFIX,
            max_git_processes: 64,
            max_git_processes_per_client: 16,
            git_queue_wait_secs: 10,
            local_api: true,
            local_api_socket: None,
            local_api_group: None,
            sync: true,
            sync_bootstrap_relays: Vec::new(),
            sync_plus: sync.plus.enabled,
            user_index_relays: None,
            sync_plus_fallback_relays: None,
            sync_plus_max_relays: sync.plus.max_relays,
            sync_negentropy: true,
            sync_max_peers: sync.max_peers,
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
            sync_page_size: sync.peer.historic.page_size,
            sync_filter_batch_size: sync.peer.limits.batch,
            sync_filters_per_req: sync.peer.limits.filters_per_req,
            sync_max_subscriptions: sync.peer.limits.max_subscriptions,
            sync_rejected_hot_secs: None,
            sync_rejected_hot_capacity: sync.memory.hot_capacity,
            sync_rejected_cold_secs: None,
            sync_rejected_cold_capacity: sync.memory.cold_capacity,
            sync_expired_block_secs: None,
            header_read_timeout_secs: 10,
            body_idle_timeout_secs: 60,
            websocket_ping_interval_secs: 30,
            websocket_missed_pongs: 2,
            max_connections: 0,
            max_connections_per_ip: 128,
            legacy_maintainers: false,
            prs_hosting: true,
            prs_max_push_size: 1024 * 1024 * 1024,
            prs_pushes_per_minute: 30,
            pushes_per_minute: 300,
            max_nostr_refs_per_push: placeholders.per_push,
            max_placeholders_per_repository: placeholders.per_repository,
            max_placeholders_per_client: placeholders.per_client,
            purgatory_max_events_per_client: held.per_client.events,
            purgatory_max_bytes_per_client: held.per_client.bytes,
            purgatory_max_events_per_pubkey: held.per_pubkey.events,
            purgatory_max_bytes_per_pubkey: held.per_pubkey.bytes,
            purgatory_max_events_per_identifier: held.per_identifier.events,
            purgatory_max_bytes_per_identifier: held.per_identifier.bytes,
            purgatory_max_events: held.total.events,
            purgatory_max_bytes: held.total.bytes,
            repository_quota_bytes: 0,
            min_free_disk_bytes: None,
            curation_file: None,
            curation_reload_secs: None,
            archive: Vec::new(),
            private_mode: false,
            private_members: Vec::new(),
            private_public_origin: None,
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
