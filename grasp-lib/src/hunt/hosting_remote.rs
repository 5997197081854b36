//! The real [`HuntRemote`]: needs come from purgatory and the repositories here, URLs from
//! the announcements of the identifier's confirmed maintainers (for anything missing) and
//! the `clone` tags of held pull requests (for that pull request's commit only), a few per
//! event and per identifier; every URL passes the [outbound policy](crate::outbound) and
//! the fetch is pinned to the vetted addresses; fetches go through a quarantine, and the
//! git-data step is [`Hosting::process`], the same one a push runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use nostr::PublicKey;

use super::fetch::{self, FetchLimits, Quarantine};
use super::metrics::HuntMetrics;
use super::remote::{FetchError, Fetched, HuntRemote, Wanted};
use crate::access::PrivatePeers;
use crate::authorization::EventView;
use crate::git::{refs, RepoRef};
use crate::hosting::authoritative_state;
use crate::hosting::{Arrival, Hosting};
use crate::limits::StorageLimits;
use crate::nip34::{
    clone_tag_urls, commit_tag, kinds, EventReferences, RepoAnnouncement, RepoIdentifier, RepoState,
};
use crate::outbound::{OutboundPolicy, TargetKind};
use crate::purgatory::HeldKind;

/// How many URLs one held event, and one identifier in all, may have hunted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UrlCaps {
    /// Clone URLs taken from one announcement or pull request.
    pub per_event: usize,
    /// URLs hunted for one identifier (maintainers' first).
    pub per_identifier: usize,
    /// Fetches at once to one resolved address (however many names point at it).
    pub per_address: u32,
}

impl Default for UrlCaps {
    fn default() -> Self {
        Self { per_event: 8, per_identifier: 8, per_address: 2 }
    }
}

/// Hunting over this server's hosting.
#[derive(Debug)]
pub struct HostingRemote {
    hosting: Arc<Hosting>,
    quarantine_root: PathBuf,
    limits: FetchLimits,
    storage: StorageLimits,
    metrics: HuntMetrics,
    policy: Arc<OutboundPolicy>,
    caps: UrlCaps,
    busy_addresses: Mutex<HashMap<IpAddr, u32>>,
    private_peers: Option<Arc<PrivatePeers>>,
}

/// A fetch's hold on the addresses it dials; released when dropped.
struct AddressSlots<'a> {
    addresses: Vec<IpAddr>,
    busy: &'a Mutex<HashMap<IpAddr, u32>>,
}

impl Drop for AddressSlots<'_> {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().expect("address slots poisoned");
        for address in &self.addresses {
            if let Some(n) = busy.get_mut(address) {
                *n -= 1;
                if *n == 0 {
                    busy.remove(address);
                }
            }
        }
    }
}

/// A SHA-1 object id: the only kind the repositories here can hold.
fn is_sha1(oid: &str) -> bool {
    oid.len() == 40 && oid.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What one identifier looks like right now.
struct Situation {
    announcements: Vec<RepoAnnouncement>,
    /// Where fetched data lands; the git-data step copies it to the other repositories.
    landing: RepoRef,
    /// Members of the maintainer set of any repository here with the identifier.
    authorized: HashSet<PublicKey>,
}

impl HostingRemote {
    /// Hunting for `hosting`, with quarantines under `quarantine_root`; no fetch starts
    /// while the repositories' filesystem is below the free-disk floor of `storage`.
    pub fn new(
        hosting: Arc<Hosting>,
        quarantine_root: PathBuf,
        limits: FetchLimits,
        storage: StorageLimits,
        metrics: HuntMetrics,
    ) -> Self {
        Self {
            hosting,
            quarantine_root,
            limits,
            storage,
            metrics,
            policy: Arc::new(OutboundPolicy::default()),
            caps: UrlCaps::default(),
            busy_addresses: Mutex::default(),
            private_peers: None,
        }
    }

    /// Shows other private servers this server's NIP-98 credential when fetching from them
    /// (GRASP-08 mirroring).
    pub fn with_private_peers(mut self, peers: Option<Arc<PrivatePeers>>) -> Self {
        self.private_peers = peers;
        self
    }

    /// Dials only what `policy` lets through (default: global addresses only).
    pub fn with_policy(mut self, policy: Arc<OutboundPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Caps on the URLs hunted (default: [`UrlCaps::default`]).
    pub fn with_url_caps(mut self, caps: UrlCaps) -> Self {
        self.caps = caps;
        self
    }

    /// Takes a slot of every address of a vetted target, or says which one is busy.
    fn take_addresses(&self, addresses: Vec<IpAddr>) -> Result<AddressSlots<'_>, IpAddr> {
        let mut busy = self.busy_addresses.lock().expect("address slots poisoned");
        let group: Vec<IpAddr> = addresses.into_iter().map(crate::rate_limit::address_group).collect();
        if let Some(full) = group.iter().find(|a| busy.get(a).copied().unwrap_or(0) >= self.caps.per_address)
        {
            return Err(*full);
        }
        for address in &group {
            *busy.entry(*address).or_default() += 1;
        }
        Ok(AddressSlots { addresses: group, busy: &self.busy_addresses })
    }

    async fn situation(&self, identifier: &RepoIdentifier) -> Option<Situation> {
        let d = identifier.as_str();
        let announcements = match self.hosting.maintainer_announcements(d).await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(%identifier, error = %e, "hunting cannot read announcements");
                return None;
            }
        };
        let owners: BTreeSet<PublicKey> = announcements.iter().map(|a| a.owner).collect();
        let mut hosted = self.hosting.repos().with_identifier(owners, identifier);
        hosted.sort();
        let authorized = hosted
            .iter()
            .flat_map(|r| {
                self.hosting.maintainer_set(r.owner, &announcements).members().copied().collect::<Vec<_>>()
            })
            .collect();
        let landing = hosted.into_iter().next()?;
        Some(Situation { announcements, landing, authorized })
    }

    /// Object ids the held events of the identifier name.
    async fn named_oids(&self, d: &str, situation: &Situation) -> BTreeSet<String> {
        let purgatory = self.hosting.purgatory();
        let mut oids = BTreeSet::new();
        for entry in purgatory.held_for(d, HeldKind::State) {
            if let Ok(state) = RepoState::parse(&entry.event) {
                // A state with malformed ref values can never be released: nothing to fetch.
                if state.is_well_formed() && situation.authorized.contains(&state.author) {
                    oids.extend(state.refs.into_values());
                }
            }
        }
        for entry in purgatory.held_for(d, HeldKind::PullRequest) {
            oids.extend(commit_tag(&entry.event));
        }
        let held_owners: Vec<PublicKey> =
            self.hosting.held_announcements(d).into_iter().map(|(_, a)| a.owner).collect();
        if !held_owners.is_empty() {
            // A held announcement waits for its repository to follow a stored state.
            if let Ok(states) = EventView::states(self.hosting.store(), d).await {
                for owner in held_owners {
                    let set = self.hosting.maintainer_set(owner, &situation.announcements);
                    if let Some(state) = authoritative_state(&set, &states) {
                        oids.extend(state.refs.values().cloned());
                    }
                }
            }
        }
        oids.retain(|o| is_sha1(o));
        oids
    }

    /// The URLs to hunt from, and for pull request URLs the one commit each may be asked
    /// for: confirmed maintainers' clone URLs first, then held pull requests' `clone` tags,
    /// at most [`UrlCaps::per_event`] from one event and [`UrlCaps::per_identifier`] in all,
    /// each past the outbound policy's URL checks.
    fn urls(&self, d: &str, situation: &Situation) -> (Vec<String>, BTreeMap<String, BTreeSet<String>>) {
        let caps = self.caps;
        let from_announcements = situation
            .announcements
            .iter()
            .filter(|a| situation.authorized.contains(&a.owner))
            .flat_map(|a| a.clone_urls.iter().take(caps.per_event).map(|u| (u.clone(), None)));
        let from_pull_requests =
            self.hosting.purgatory().held_for(d, HeldKind::PullRequest).into_iter().flat_map(|e| {
                // `Some(None)`: a pull request whose `c` is malformed, so nothing can be asked for.
                let commit = Some(commit_tag(&e.event));
                clone_tag_urls(&e.event).into_iter().take(caps.per_event).map(move |u| (u, commit.clone()))
            });
        let mut urls: Vec<String> = Vec::new();
        let mut scoped: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut unscoped = HashSet::new();
        for (url, commit) in from_announcements.chain(from_pull_requests) {
            let Ok(target) = self.policy.check(TargetKind::Git, &url) else { continue };
            let url = target.url.to_string();
            match commit {
                None => {
                    unscoped.insert(url.clone());
                    scoped.remove(&url);
                }
                // A pull request's URL serves its own commit only.
                Some(Some(commit)) if !unscoped.contains(&url) => {
                    scoped.entry(url.clone()).or_default().insert(commit);
                }
                Some(Some(_)) => {}
                Some(None) => continue,
            }
            if !urls.contains(&url) {
                if urls.len() >= caps.per_identifier {
                    scoped.remove(&url);
                    continue;
                }
                urls.push(url);
            }
        }
        (urls, scoped)
    }

    async fn wanted_now(&self, identifier: &str) -> Wanted {
        let Ok(identifier) = RepoIdentifier::new(identifier) else { return Wanted::default() };
        let d = identifier.as_str();
        let purgatory = self.hosting.purgatory();
        let held = [HeldKind::State, HeldKind::PullRequest, HeldKind::Announcement]
            .into_iter()
            .any(|kind| !purgatory.held_for(d, kind).is_empty());
        if !held {
            return Wanted::default();
        }
        let Some(situation) = self.situation(&identifier).await else {
            return Wanted { held, ..Wanted::default() };
        };
        let named: Vec<String> = self.named_oids(d, &situation).await.into_iter().collect();
        let path = self.hosting.repos().path(&situation.landing);
        let missing = tokio::task::spawn_blocking(move || refs::missing_objects(&refs::open(&path)?, &named))
            .await
            .map_err(crate::git::GitError::from)
            .and_then(|r| r);
        let oids = match missing {
            Ok(missing) => missing.into_iter().collect(),
            Err(e) => {
                tracing::warn!(%identifier, error = %e, "hunting cannot read the repository");
                BTreeSet::new()
            }
        };
        let (urls, scoped) = self.urls(d, &situation);
        Wanted { held, oids, urls, scoped }
    }

    async fn fetch_now(&self, identifier: &str, url: &str, oids: &[String]) -> Result<Fetched, FetchError> {
        let target = self
            .policy
            .resolve(TargetKind::Git, url)
            .await
            .map_err(|refused| FetchError::Refused(refused.reason))?;
        let _slots = self
            .take_addresses(target.addresses.iter().map(|a| a.ip()).collect())
            .map_err(|busy| FetchError::Busy(format!("another fetch to {busy} is running")))?;
        let free = crate::limits::storage::free_bytes(self.hosting.repos().root());
        if let Some(why) = crate::limits::storage::below_floor(&self.storage, free) {
            return Err(FetchError::Local(why));
        }
        let identifier = RepoIdentifier::new(identifier).map_err(|e| FetchError::Local(e.to_string()))?;
        let _alive = self.hosting.fetch_in_progress(identifier.as_str());
        let situation = self
            .situation(&identifier)
            .await
            .ok_or_else(|| FetchError::Local("no repository here for this identifier".to_owned()))?;
        let landing = self.hosting.repos().path(&situation.landing);
        let quarantine = Quarantine::create(&self.quarantine_root, &landing)
            .map_err(|e| FetchError::Local(format!("cannot create a quarantine: {e}")))?;
        let authorization = self.private_peers.as_ref().and_then(|peers| peers.authorization_for(url));
        let remote = fetch::Remote { url, pin: target.curl_resolve(), authorization };
        fetch::fetch(&quarantine, &remote, oids, self.limits).await?;
        let bytes = quarantine.size();
        let new_objects = quarantine.object_count();
        let landed = quarantine.present(oids);
        if !landed.is_empty() && new_objects > 0 {
            refs::copy_objects(quarantine.path(), &landing, &landed)
                .await
                .map_err(|e| FetchError::Local(format!("landing the fetched objects failed: {e}")))?;
            self.hosting.maintenance().schedule(landing.clone());
        }
        self.metrics.objects_fetched.inc_by(new_objects);
        self.metrics.bytes_fetched.inc_by(bytes);
        Ok(Fetched { landed, new_objects, bytes })
    }

    /// Points `refs/nostr/<id>` at the commit of each held pull request whose commit hunting
    /// brought into the landing repository, as the pull request's author pushing it would
    /// have, in the repositories here that the pull request tags (`a` 30617:<owner>:<d>),
    /// and only those: a pull request never puts its commit into another owner's repository
    /// of the same name. (Accepted, it is offered to the other maintainers' repositories by
    /// the git-data step, as after a push.)
    async fn adopt_pull_request_commits(&self, identifier: &RepoIdentifier, landing: &RepoRef) {
        let d = identifier.as_str();
        for entry in self.hosting.purgatory().held_for(d, HeldKind::PullRequest) {
            let Some(commit) = commit_tag(&entry.event).filter(|c| is_sha1(c)) else { continue };
            let tagged: BTreeSet<PublicKey> = EventReferences::of(&entry.event)
                .coordinates
                .into_iter()
                .filter(|c| c.kind == kinds::REPO_ANNOUNCEMENT && c.identifier == d)
                .map(|c| c.pubkey)
                .collect();
            for target in self.hosting.repos().with_identifier(tagged, identifier) {
                match self.adopt(landing, &target, &entry.event.id, &commit).await {
                    Ok(true) => {
                        tracing::debug!(repo = %target, event_id = %entry.event.id, "pull request ref set from a fetched commit")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(repo = %target, error = %e, "setting a pull request ref failed"),
                }
            }
        }
    }

    /// Sets `refs/nostr/<id>` to `commit` in `target` unless it has the ref already,
    /// copying the commit from `landing` when `target` lacks it. `false` when there was
    /// nothing to do (the ref exists, or the commit is in neither repository).
    async fn adopt(
        &self,
        landing: &RepoRef,
        target: &RepoRef,
        id: &nostr::EventId,
        commit: &str,
    ) -> Result<bool, crate::git::GitError> {
        let (landing_path, target_path) =
            (self.hosting.repos().path(landing), self.hosting.repos().path(target));
        let (probe, name, wanted) = (target_path.clone(), refs::nostr_ref(id), commit.to_owned());
        let has = tokio::task::spawn_blocking(move || -> Result<(bool, bool), crate::git::GitError> {
            let git = refs::open(&probe)?;
            Ok((refs::ref_target(&git, &name).is_some(), refs::has_commit(&git, &wanted)))
        })
        .await??;
        match has {
            (true, _) => return Ok(false),
            (false, false) if landing == target => return Ok(false),
            (false, false) => refs::copy_objects(&landing_path, &target_path, &[commit.to_owned()]).await?,
            (false, true) => {}
        }
        let (name, commit) = (refs::nostr_ref(id), commit.to_owned());
        tokio::task::spawn_blocking(move || {
            let message = "grasp: pull request commit found by hunting";
            refs::create_ref_if_absent(&refs::open(&target_path)?, &name, &commit, message)
        })
        .await?
    }

    async fn process_now(&self, identifier: &str) -> usize {
        let Ok(identifier) = RepoIdentifier::new(identifier) else { return 0 };
        let Some(situation) = self.situation(&identifier).await else { return 0 };
        self.adopt_pull_request_commits(&identifier, &situation.landing).await;
        let report = self.hosting.process(&identifier, Arrival::GitData(Some(&situation.landing))).await;
        for (id, kind) in &report.released {
            tracing::info!(%identifier, event_id = %id, kind = kind.as_str(), "hunting found the git data: released");
            self.metrics.released.with_label_values(&[kind.as_str()]).inc();
        }
        for error in &report.errors {
            tracing::warn!(%identifier, %error, "git-data step after hunting");
        }
        report.released.len()
    }
}

impl HuntRemote for HostingRemote {
    fn wanted<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Wanted> {
        Box::pin(self.wanted_now(identifier))
    }

    fn fetch<'a>(
        &'a self,
        identifier: &'a str,
        url: &'a str,
        oids: &'a [String],
    ) -> BoxFuture<'a, Result<Fetched, FetchError>> {
        Box::pin(self.fetch_now(identifier, url, oids))
    }

    fn process<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, usize> {
        Box::pin(self.process_now(identifier))
    }
}
