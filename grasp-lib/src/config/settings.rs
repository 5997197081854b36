//! The projection of the flat options into each subsystem's own settings: a subsystem
//! never reads the configuration; its settings type carries its defaults (and its test-mode
//! ones), and an option that is set overrides them here.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::schema::Config;
use super::validate::{owner_keys, parse_upstream};
use crate::authorization::PlaceholderCaps;
use crate::curation::Selectors;
use crate::hunt::fetch::FetchLimits;
use crate::hunt::hosting_remote::UrlCaps;
use crate::hunt::queue::QueueTimers;
use crate::hunt::throttle::ThrottleLimits;
use crate::hunt::HuntSettings;
use crate::limits::{self, KeepAlive, ServerLimits, StorageLimits};
use crate::maintainers::MaintainerModel;
use crate::purgatory::bounds::{Cap, HeldCaps};
use crate::purgatory::PurgatoryTimers;
use crate::relay::RelayLimits;
use crate::sync::filters::FilterLimits;
use crate::sync::health::HealthTimers;
use crate::sync::historic::HistoricSettings;
use crate::sync::peer::PeerSettings;
use crate::sync::peers::PeerUrl;
use crate::sync::rejected::MemoryLimits;
use crate::sync::remote::RemoteTimeouts;

use crate::sync::SyncSettings;

fn secs(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_secs)
}

fn millis(value: Option<u64>) -> Option<Duration> {
    value.map(Duration::from_millis)
}

impl Config {
    /// The parsed `upstream` URL (grasp-proxy), when one is configured.
    pub fn upstream_url(&self) -> Option<Url> {
        self.upstream.as_deref().and_then(|u| parse_upstream(u).ok())
    }

    /// The pack cache's settings, when it is on and the frontend serves its hook.
    pub fn pack_cache_settings(&self) -> Option<crate::git::pack_cache::CacheSettings> {
        if !self.pack_cache || self.pack_objects_hook.is_none() {
            return None;
        }
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Some(crate::git::pack_cache::CacheSettings {
            dir: self.pack_cache_path.clone().unwrap_or_else(|| self.relay_data_path.join("pack-cache")),
            max_age_secs: self.pack_cache_max_age_secs,
            max_bytes: self.pack_cache_max_bytes,
            min_free_bytes: self.pack_cache_min_free_bytes,
            max_generating: self.pack_cache_max_generating.unwrap_or(cpus).max(1),
        })
    }

    /// The `uploadpack.packObjectsHook` command for git, when the pack cache is on.
    pub fn pack_objects_hook_command(&self) -> Option<String> {
        let program = self.pack_objects_hook.as_deref()?;
        Some(self.pack_cache_settings()?.hook_command(program))
    }

    /// Purgatory timers: the configured values, or the defaults (short ones in test mode).
    pub fn purgatory_timers(&self) -> PurgatoryTimers {
        let d = PurgatoryTimers::for_mode(self.test_mode);
        PurgatoryTimers {
            expiry: secs(self.purgatory_expiry_secs).unwrap_or(d.expiry),
            pr_ref_expiry: secs(self.pr_ref_expiry_secs).unwrap_or(d.pr_ref_expiry),
            push_extension: secs(self.push_extension_secs).unwrap_or(d.push_extension),
        }
    }

    /// The caps on what purgatory holds.
    pub fn purgatory_caps(&self) -> HeldCaps {
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

    /// The public origin: `domain` (`None` until a frontend set it) under `base_path`.
    pub fn service_origin(&self) -> Option<crate::origin::ServiceOrigin> {
        let origin = crate::origin::ServiceOrigin::parse(self.domain.as_deref()?).ok()?;
        Some(origin.with_base_path(crate::origin::parse_base_path(&self.base_path).ok()?))
    }

    /// The user-index relays in force: configured, or public indexers (none in test mode).
    pub fn user_index_relays(&self) -> Vec<String> {
        match &self.user_index_relays {
            Some(relays) => relays.iter().filter(|r| !r.trim().is_empty()).cloned().collect(),
            None if self.test_mode => Vec::new(),
            None => crate::sync::plus::DEFAULT_USER_INDEX_RELAYS.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// The Sync Plus fallback relays in force: configured, or big public relays (none in
    /// test mode).
    pub fn sync_plus_fallback_relays(&self) -> Vec<String> {
        match &self.sync_plus_fallback_relays {
            Some(relays) => relays.iter().filter(|r| !r.trim().is_empty()).cloned().collect(),
            None if self.test_mode => Vec::new(),
            None => crate::sync::plus::DEFAULT_FALLBACK_RELAYS.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    /// Sync Plus, from the options over `defaults`.
    fn plus_settings(&self, defaults: &crate::sync::plus::PlusSettings) -> crate::sync::plus::PlusSettings {
        let parse = |relays: Vec<String>| relays.iter().filter_map(|r| PeerUrl::parse(r).ok()).collect();
        crate::sync::plus::PlusSettings {
            enabled: self.sync_plus,
            index: parse(self.user_index_relays()),
            fallback: parse(self.sync_plus_fallback_relays()),
            max_relays: self.sync_plus_max_relays,
            private: self.private_mode,
            ..defaults.clone()
        }
    }

    /// GRASP-08: who may use the service at `origin`, when it is private.
    pub fn private_access(
        &self,
        origin: &crate::origin::ServiceOrigin,
    ) -> Option<crate::access::PrivateAccess> {
        if !self.private_mode {
            return None;
        }
        let members = crate::access::Members::new(
            self.private_members.iter().filter_map(|m| crate::access::parse_member(m)),
        );
        let public = self
            .private_public_origin
            .as_deref()
            .and_then(|o| crate::access::parse_public_origin(o).ok())
            .and_then(|authority| crate::origin::ServiceOrigin::parse(&authority).ok())
            .map(|o| o.with_base_path(origin.base_path().to_owned()));
        Some(crate::access::PrivateAccess::new(members, origin.clone(), public))
    }

    /// The outbound target policy for the service at `origin` (decision 28): own listener
    /// and grasp-proxy's upstream refused, bootstrap relays trusted, the test resolver in
    /// test mode.
    pub fn outbound_policy(&self, origin: crate::origin::ServiceOrigin) -> crate::outbound::OutboundPolicy {
        let mut own = vec![self.bind_address];
        if let Some(upstream) = self.upstream_url() {
            let port = upstream.port_or_known_default().unwrap_or(80);
            if let Some(host) = upstream.host_str() {
                use std::net::ToSocketAddrs;
                own.extend((host.trim_matches(['[', ']']), port).to_socket_addrs().into_iter().flatten());
            }
        }
        let mut policy = crate::outbound::OutboundPolicy::new(origin)
            .allow_non_global(self.allow_non_global_targets)
            .with_own_addresses(own)
            .with_trusted(
                self.sync_bootstrap_relays
                    .iter()
                    .cloned()
                    .chain(self.user_index_relays())
                    .chain(self.sync_plus_fallback_relays())
                    .map(|r| crate::sync::peers::PeerUrl::parse(&r).map(|p| p.to_string()).unwrap_or(r)),
            );
        if !self.test_resolve.is_empty() {
            let table = crate::outbound::TableResolver::parse(&self.test_resolve).unwrap_or_default();
            policy = policy.with_resolver(std::sync::Arc::new(table));
        }
        policy
    }

    /// The caps on git processes serving clients.
    pub fn git_slot_limits(&self) -> crate::limits::GitSlotLimits {
        crate::limits::GitSlotLimits {
            total: self.max_git_processes,
            per_client: self.max_git_processes_per_client,
            wait: Duration::from_secs(self.git_queue_wait_secs),
        }
    }

    /// The maintainer rule (`legacy_maintainers` keeps the pre-v3 one).
    pub fn maintainer_model(&self) -> MaintainerModel {
        if self.legacy_maintainers {
            MaintainerModel::Listed
        } else {
            MaintainerModel::Reciprocal
        }
    }

    /// The caps on `refs/nostr/<id>` refs waiting for their event.
    pub fn placeholder_caps(&self) -> PlaceholderCaps {
        PlaceholderCaps {
            per_push: self.max_nostr_refs_per_push,
            per_repository: self.max_placeholders_per_repository,
            per_client: self.max_placeholders_per_client,
        }
    }

    /// The free-disk floor and the per-owner quota (the floor is off in test mode unless
    /// set).
    pub fn storage_limits(&self) -> StorageLimits {
        let d = StorageLimits::for_mode(self.test_mode);
        StorageLimits {
            min_free_bytes: self.min_free_disk_bytes.unwrap_or(d.min_free_bytes),
            quota_per_owner: (self.repository_quota_bytes > 0).then_some(self.repository_quota_bytes),
        }
    }

    /// Hunting settings: the configured values, or the defaults (short timers in test mode).
    pub fn hunt_settings(&self) -> HuntSettings {
        let d = HuntSettings::for_mode(self.test_mode);
        let backoff_base = millis(self.hunt_backoff_base_ms).unwrap_or(d.timers.backoff_base);
        HuntSettings {
            timers: QueueTimers {
                client_delay: millis(self.hunt_client_delay_ms).unwrap_or(d.timers.client_delay),
                sync_delay: millis(self.hunt_sync_delay_ms).unwrap_or(d.timers.sync_delay),
                backoff_base,
                backoff_max: millis(self.hunt_backoff_max_ms)
                    .unwrap_or(d.timers.backoff_max)
                    .max(backoff_base),
            },
            limits: ThrottleLimits {
                concurrent: self.hunt_domain_concurrency,
                per_minute: self.hunt_domain_requests_per_minute,
                total: self.hunt_max_concurrent_fetches,
            },
            fetch: FetchLimits {
                timeout: secs(self.hunt_fetch_timeout_secs).unwrap_or(d.fetch.timeout),
                // The quarantines together stay under the total: each fetch gets its share.
                max_bytes: self
                    .hunt_max_fetch_size
                    .min(self.hunt_max_quarantine_bytes / u64::from(self.hunt_max_concurrent_fetches.max(1))),
            },
            urls: UrlCaps {
                per_event: self.hunt_max_urls_per_event,
                per_identifier: self.hunt_max_urls_per_identifier,
                per_address: self.hunt_max_fetches_per_address,
            },
        }
    }

    /// Where the local API socket is: `local_api_socket`, or `local-api.sock` in the relay
    /// data directory.
    pub fn local_api_socket_path(&self) -> PathBuf {
        self.local_api_socket.clone().unwrap_or_else(|| self.relay_data_path.join("local-api.sock"))
    }

    /// Relay sync settings: the configured values, or the defaults (short timers in test
    /// mode). Bootstrap relays that do not parse are skipped ([`Config::validate`] refuses
    /// them).
    pub fn sync_settings(&self) -> SyncSettings {
        let d = SyncSettings::for_mode(self.test_mode);
        let timers = d.peer.timers;
        let reconnect_min = millis(self.sync_reconnect_min_ms).unwrap_or(timers.reconnect_min);
        let connect = secs(self.sync_connect_timeout_secs).unwrap_or(d.timeouts.connect);
        SyncSettings {
            bootstrap: self.sync_bootstrap_relays.iter().filter_map(|r| PeerUrl::parse(r).ok()).collect(),
            max_peers: self.sync_max_peers,
            peer: PeerSettings {
                historic: HistoricSettings {
                    negentropy: self.sync_negentropy,
                    page_size: self.sync_page_size,
                    ..d.peer.historic
                },
                limits: FilterLimits {
                    batch: self.sync_filter_batch_size,
                    max_batch: self.sync_filter_batch_size.max(d.peer.limits.max_batch),
                    filters_per_req: self.sync_filters_per_req,
                    max_subscriptions: self.sync_max_subscriptions,
                    ..d.peer.limits
                },
                timers: HealthTimers {
                    reconnect_min,
                    reconnect_max: secs(self.sync_reconnect_max_secs)
                        .unwrap_or(timers.reconnect_max)
                        .max(reconnect_min),
                    rate_limit_cooldown: secs(self.sync_rate_limit_cooldown_secs)
                        .unwrap_or(timers.rate_limit_cooldown),
                    dead_after: secs(self.sync_dead_after_secs).unwrap_or(timers.dead_after),
                    dead_retry: secs(self.sync_dead_retry_secs).unwrap_or(timers.dead_retry),
                    catch_up_window: secs(self.sync_catch_up_window_secs).unwrap_or(timers.catch_up_window),
                    full_interval: secs(self.sync_full_interval_secs).unwrap_or(timers.full_interval),
                },
            },
            memory: MemoryLimits {
                hot_ttl: secs(self.sync_rejected_hot_secs).unwrap_or(d.memory.hot_ttl),
                hot_capacity: self.sync_rejected_hot_capacity,
                hot_max_bytes: d.memory.hot_max_bytes,
                cold_ttl: secs(self.sync_rejected_cold_secs).unwrap_or(d.memory.cold_ttl),
                cold_capacity: self.sync_rejected_cold_capacity,
                expired_block: secs(self.sync_expired_block_secs).unwrap_or(d.memory.expired_block),
                expired_capacity: self.sync_rejected_cold_capacity,
            },
            budgets: crate::sync::ingest::PeerBudgets {
                events_per_minute: self.sync_events_per_minute,
                accepts_per_minute: self.sync_accepts_per_minute.unwrap_or(self.events_per_minute),
            },
            timeouts: RemoteTimeouts {
                connect,
                negentropy_probe: connect,
                request: secs(self.sync_request_timeout_secs).unwrap_or(d.timeouts.request),
            },
            debounce: millis(self.sync_debounce_ms).unwrap_or(d.debounce),
            refresh: d.refresh,
            // A private server mirrors with other private servers, which ask who it is.
            plus: self.plus_settings(&d.plus),
            identity: if self.private_mode { self.owner_keys() } else { None },
        }
    }

    /// How often the curation file is checked for changes.
    pub fn curation_reload_interval(&self) -> Duration {
        secs(self.curation_reload_secs).unwrap_or(crate::curation::reload_interval(self.test_mode))
    }

    /// The archive list (GRASP-05), parsed ([`Config::validate`] checked it).
    pub fn archive_selectors(&self) -> Selectors {
        Selectors::parse(&self.archive).unwrap_or_default()
    }

    /// The relay operator's keys, when an owner key is configured.
    pub fn owner_keys(&self) -> Option<nostr::Keys> {
        self.relay_owner_nsec.as_ref().and_then(owner_keys)
    }

    /// `(database_url, database_pool_size)` for the PostgreSQL backend (none for the
    /// others).
    pub fn postgres(&self) -> Option<(&str, usize)> {
        match self.database_backend {
            crate::store::StoreBackend::Postgres => {
                self.database_url.as_ref().map(|url| (url.0.as_str(), self.database_pool_size))
            }
            _ => None,
        }
    }

    /// This node's id when it is one node of a cluster (the postgres backend) or was given
    /// one (`node_id`): what its log lines start with. Sets the process's id.
    pub fn cluster_node_id(&self) -> Option<&'static str> {
        let clustered =
            self.database_backend == crate::store::StoreBackend::Postgres || self.node_id.is_some();
        clustered.then(|| crate::cluster::node::set(self.node_id.as_deref()))
    }

    /// How long the leader lease lasts without renewal: a dead leader's jobs move to another
    /// node within this time (15 s; 3 s in test mode).
    pub fn leader_lease_term(&self) -> std::time::Duration {
        std::time::Duration::from_secs(if self.test_mode { 3 } else { 15 })
    }

    /// The relay's limits (`max_message_size`, `max_subscriptions`, ...).
    pub fn relay_limits(&self) -> RelayLimits {
        RelayLimits {
            max_message_size: self.max_message_size,
            max_subscriptions: self.max_subscriptions,
            max_filters: self.max_filters,
            max_limit: self.max_limit,
            events_per_minute: self.events_per_minute,
            subscriber_queue: self.subscriber_queue,
            subscriber_queue_bytes: self.subscriber_queue_bytes,
            max_negentropy_items: self.max_negentropy_items,
            abuser_connection_threshold: self.abuser_connection_threshold,
            max_event_tags: self.max_event_tags,
            max_count: self.max_count,
            max_req_bytes: self.max_req_bytes,
        }
    }

    /// The websocket keep-alive (`websocket_ping_interval_secs`, `websocket_missed_pongs`).
    pub fn keep_alive(&self) -> KeepAlive {
        KeepAlive::new(self.websocket_ping_interval_secs, self.websocket_missed_pongs)
    }

    /// The limits a frontend applies; an automatic `max_connections` (0) is derived from the
    /// soft descriptor limit `nofile` (see [`crate::limits::raise_nofile_limit`]).
    pub fn server_limits(&self, nofile: Option<u64>) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_idle_timeout: Duration::from_secs(self.body_idle_timeout_secs),
            keep_alive: self.keep_alive(),
            max_connections: limits::max_connections(self.max_connections, nofile),
            max_connections_per_ip: self.max_connections_per_ip,
            per_ip_after_headers: self.trust_forwarded_for,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn the_defaults_are_the_subsystems_own() {
        let config = Config::default();
        assert_eq!(config.relay_limits(), RelayLimits::default());
        assert_eq!(config.purgatory_timers(), PurgatoryTimers::default());
        assert_eq!(config.purgatory_caps(), HeldCaps::default());
        assert_eq!(config.placeholder_caps(), PlaceholderCaps::default());
        assert_eq!(config.hunt_settings(), HuntSettings::default());
        assert_eq!(config.sync_settings(), SyncSettings::for_mode(false));
        let test = Config { test_mode: true, ..Config::default() };
        assert_eq!(test.purgatory_timers(), PurgatoryTimers::for_mode(true));
        assert_eq!(test.sync_settings(), SyncSettings::for_mode(true));
        assert_eq!(test.storage_limits(), StorageLimits::for_mode(true));
    }

    #[test]
    fn server_limits_follow_the_options() {
        let config = Config { max_connections: 7, ..Config::default() };
        assert_eq!(config.server_limits(Some(1024)).max_connections, 7);
        let limits = Config::default().server_limits(Some(65_536));
        assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
        assert_eq!(limits.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.keep_alive.silence_limit(), Some(Duration::from_secs(60)));
        assert_eq!(limits.max_connections_per_ip, 128);
        assert!(!limits.per_ip_after_headers);
        let quiet = Config { websocket_ping_interval_secs: 0, ..Config::default() };
        assert_eq!(quiet.server_limits(None).keep_alive.silence_limit(), None);
    }
}
