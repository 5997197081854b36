//! What sync asks peers for: filters in layers, batched, and packed into subscriptions a
//! peer accepts.
//!
//! - **Layer 1 (anchors)**: every announcement (30617) and user grasp list (10317), so new
//!   repositories that list this server are found; and the states (30618) of the
//!   repositories hosted here, by `#d`. A repository still in purgatory syncs only this.
//! - **Layer 2 (repositories)**: events tagging a served repository coordinate with `a`,
//!   `A` or `q` (issues, patches, pull requests, statuses, comments on the repository…).
//! - **Layer 3 (conversations)**: events tagging a stored root (patch, pull request or
//!   issue) with `e`, `E` or `q` (comments, updates, statuses, reactions…).
//!
//! Values are batched (about 100 per filter). When the filters do not fit the subscription
//! limits of a peer, they are consolidated: first larger batches, then a layer is
//! broadened to a kinds-only filter (more events to evaluate, none missed).

use std::collections::BTreeSet;

use nostr::{EventId, Filter, Kind, SingleLetterTag, Timestamp};

use crate::nip34::kinds;

/// What this server hosts, as far as sync cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncScope {
    /// Coordinates (`30617:<pubkey>:<d>`) of the stored announcements: served repositories
    /// and their maintainers' announcements.
    pub served_coordinates: BTreeSet<String>,
    /// Identifiers whose states are synced: served repositories and those still held.
    pub state_identifiers: BTreeSet<String>,
    /// Stored root events (patches, pull requests, issues) of served repositories.
    pub roots: BTreeSet<EventId>,
}

impl SyncScope {
    /// What `self` has that `previous` has not.
    pub fn added_since(&self, previous: &SyncScope) -> SyncScope {
        SyncScope {
            served_coordinates: self
                .served_coordinates
                .difference(&previous.served_coordinates)
                .cloned()
                .collect(),
            state_identifiers: self
                .state_identifiers
                .difference(&previous.state_identifiers)
                .cloned()
                .collect(),
            roots: self.roots.difference(&previous.roots).copied().collect(),
        }
    }
}

/// The three layers (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// Announcements, grasp lists, states.
    Anchors,
    /// Events tagging a repository coordinate.
    Repositories,
    /// Events tagging a root event.
    Conversations,
}

impl Layer {
    /// Lower-case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Anchors => "anchors",
            Layer::Repositories => "repositories",
            Layer::Conversations => "conversations",
        }
    }
}

/// One filter and the layer it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayeredFilter {
    /// The layer.
    pub layer: Layer,
    /// The filter (no `since`, `until` or `limit`; callers add those).
    pub filter: Filter,
}

/// Kinds that relate to repositories and their conversations: what a broadened layer 2 or 3
/// asks for instead of tag values.
pub const RELATED_KINDS: [u16; 15] =
    [1, 7, 16, 1111, 1617, 1618, 1619, 1621, 1630, 1631, 1632, 1633, 1985, 9735, kinds::DELETION];

/// Roots of layer 3.
pub const ROOT_KINDS: [u16; 3] = [kinds::PATCH, kinds::PULL_REQUEST, kinds::ISSUE];

/// How big filters and subscriptions may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// Tag values per filter.
    pub batch: usize,
    /// Tag values a consolidated filter may grow to.
    pub max_batch: usize,
    /// Filters per REQ.
    pub filters_per_req: usize,
    /// Live subscriptions (REQs) per peer.
    pub max_subscriptions: usize,
    /// Largest REQ message, in bytes.
    pub max_req_bytes: usize,
}

impl Default for FilterLimits {
    fn default() -> Self {
        Self {
            batch: 100,
            max_batch: 1000,
            filters_per_req: 10,
            max_subscriptions: 8,
            max_req_bytes: 64 * 1024,
        }
    }
}

/// Which layers were broadened to kinds-only filters to fit the limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Broadened {
    /// States: all 30618 instead of `#d`.
    pub states: bool,
    /// Layer 2: [`RELATED_KINDS`] instead of coordinates.
    pub repositories: bool,
    /// Layer 3: [`RELATED_KINDS`] instead of root ids.
    pub conversations: bool,
}

/// The filters for one scope, and how they are packed into live subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterPlan {
    /// The scope the plan covers.
    pub scope: SyncScope,
    /// Every filter, layer by layer.
    pub filters: Vec<LayeredFilter>,
    /// The filters grouped into REQs (each within the limits).
    pub subscriptions: Vec<Vec<Filter>>,
    /// Tag values per filter actually used.
    pub batch: usize,
    /// Layers broadened to fit.
    pub broadened: Broadened,
    /// A Sync Plus plan for someone's inbox or outbox: no announcements, never broadened.
    pub mailbox: bool,
}

fn tag(c: char) -> SingleLetterTag {
    SingleLetterTag::from_char(c).expect("ASCII letter")
}

fn kinds_filter(kinds: &[u16]) -> Filter {
    Filter::new().kinds(kinds.iter().map(|k| Kind::Custom(*k)))
}

fn batched<T: Clone>(values: &BTreeSet<T>, batch: usize) -> Vec<Vec<T>> {
    let items: Vec<T> = values.iter().cloned().collect();
    items.chunks(batch.max(1)).map(<[T]>::to_vec).collect()
}

/// The filters for `scope`, layer by layer, with `batch` values per filter.
/// `announcements` adds the layer-1 filter for all announcements and grasp lists (a catch-up
/// for newly added scope does not need it again).
fn build(scope: &SyncScope, batch: usize, broadened: Broadened, announcements: bool) -> Vec<LayeredFilter> {
    let mut out = Vec::new();
    let mut push = |layer, filter| out.push(LayeredFilter { layer, filter });
    if announcements {
        push(Layer::Anchors, kinds_filter(&[kinds::REPO_ANNOUNCEMENT, kinds::USER_GRASP_LIST]));
    }
    if broadened.states {
        if announcements && !scope.state_identifiers.is_empty() {
            push(Layer::Anchors, kinds_filter(&[kinds::REPO_STATE]));
        }
    } else {
        for ids in batched(&scope.state_identifiers, batch) {
            push(Layer::Anchors, kinds_filter(&[kinds::REPO_STATE]).identifiers(ids));
        }
    }
    if broadened.repositories {
        if announcements && !scope.served_coordinates.is_empty() {
            push(Layer::Repositories, kinds_filter(&RELATED_KINDS));
        }
    } else {
        for letter in ['a', 'A', 'q'] {
            for coordinates in batched(&scope.served_coordinates, batch) {
                push(Layer::Repositories, Filter::new().custom_tags(tag(letter), coordinates));
            }
        }
    }
    if broadened.conversations {
        if announcements && !scope.roots.is_empty() && !broadened.repositories {
            push(Layer::Conversations, kinds_filter(&RELATED_KINDS));
        }
    } else {
        for letter in ['e', 'E', 'q'] {
            for ids in batched(&scope.roots, batch) {
                push(
                    Layer::Conversations,
                    Filter::new().custom_tags(tag(letter), ids.iter().map(EventId::to_hex)),
                );
            }
        }
    }
    merge_kinds_only(out)
}

/// Kinds-only filters are one filter with the union of their kinds (filters are OR-ed),
/// so a fully broadened plan fits a peer that takes a single filter.
fn merge_kinds_only(filters: Vec<LayeredFilter>) -> Vec<LayeredFilter> {
    let kinds_only =
        |f: &Filter| f.generic_tags.is_empty() && f.kinds.is_some() && f.ids.is_none() && f.authors.is_none();
    if filters.iter().filter(|f| kinds_only(&f.filter)).count() < 2
        || filters.iter().any(|f| !kinds_only(&f.filter))
    {
        return filters;
    }
    let kinds: BTreeSet<Kind> =
        filters.iter().flat_map(|f| f.filter.kinds.iter().flatten().copied()).collect();
    vec![LayeredFilter { layer: Layer::Anchors, filter: Filter::new().kinds(kinds) }]
}

/// Packs filters into REQs: at most `filters_per_req` filters and `max_req_bytes` each.
fn pack(filters: &[LayeredFilter], limits: &FilterLimits) -> Vec<Vec<Filter>> {
    let mut groups: Vec<Vec<Filter>> = Vec::new();
    let mut bytes = 0;
    for LayeredFilter { filter, .. } in filters {
        // A live subscription only wants what comes next.
        let live = filter.clone().limit(0);
        let size = json_size(&live);
        let fits = groups
            .last()
            .is_some_and(|g| g.len() < limits.filters_per_req.max(1) && bytes + size <= limits.max_req_bytes);
        if !fits {
            groups.push(Vec::new());
            bytes = 64; // ["REQ","<id>", … ]
        }
        bytes += size;
        groups.last_mut().expect("a group").push(live);
    }
    groups
}

/// The length of a filter's JSON, estimated from its parts (serializing thousands of
/// filters while consolidating would cost more than the plan is worth). Never less than
/// the real length.
fn json_size(filter: &Filter) -> usize {
    let tags: usize = filter
        .generic_tags
        .values()
        .map(|values| 8 + values.iter().map(|v| v.len() + 3).sum::<usize>())
        .sum();
    let kinds = filter.kinds.as_ref().map_or(0, |k| 10 + 6 * k.len());
    let ids = filter.ids.as_ref().map_or(0, |i| 10 + 67 * i.len());
    let authors = filter.authors.as_ref().map_or(0, |a| 14 + 67 * a.len());
    32 + tags + kinds + ids + authors
}

/// The JSON sizes of the filters [`build`] makes, computed from the values alone, so
/// consolidation tries batch sizes and broadenings without building filters.
fn shape(scope: &SyncScope, batch: usize, broadened: Broadened) -> Vec<usize> {
    let chunk_sizes = |lengths: Vec<usize>| -> Vec<usize> {
        lengths.chunks(batch.max(1)).map(|c| 72 + c.iter().map(|l| l + 3).sum::<usize>()).collect()
    };
    let kinds_only = 32 + 10 + 6 * RELATED_KINDS.len();
    if broadened.states && broadened.repositories && broadened.conversations {
        return vec![kinds_only + 18];
    }
    let mut sizes = vec![54];
    if broadened.states {
        sizes.push(48);
    } else {
        sizes.extend(chunk_sizes(scope.state_identifiers.iter().map(String::len).collect()));
    }
    if broadened.repositories {
        sizes.push(kinds_only);
    } else {
        let coordinates = chunk_sizes(scope.served_coordinates.iter().map(String::len).collect());
        sizes.extend(coordinates.iter().chain(&coordinates).chain(&coordinates));
    }
    if broadened.conversations {
        if !broadened.repositories {
            sizes.push(kinds_only);
        }
    } else {
        let ids = chunk_sizes(vec![64; scope.roots.len()]);
        sizes.extend(ids.iter().chain(&ids).chain(&ids));
    }
    sizes
}

/// How many REQs [`pack`] makes of filters of these sizes.
fn requests_needed(sizes: &[usize], limits: &FilterLimits) -> usize {
    let mut groups = 0;
    let (mut count, mut bytes) = (0, 0);
    for &size in sizes {
        if groups == 0 || count >= limits.filters_per_req.max(1) || bytes + size > limits.max_req_bytes {
            groups += 1;
            count = 0;
            bytes = 64;
        }
        count += 1;
        bytes += size;
    }
    groups
}

impl FilterPlan {
    /// Plans `scope` within `limits`, consolidating when the filters do not fit.
    pub fn new(scope: SyncScope, limits: &FilterLimits) -> Self {
        let mut batch = limits.batch.max(1);
        let mut broadened = Broadened::default();
        loop {
            let fits =
                requests_needed(&shape(&scope, batch, broadened), limits) <= limits.max_subscriptions.max(1);
            let done = broadened.states && broadened.repositories && broadened.conversations;
            if fits || done {
                let filters = build(&scope, batch, broadened, true);
                let subscriptions = pack(&filters, limits);
                return Self { scope, filters, subscriptions, batch, broadened, mailbox: false };
            }
            if batch < limits.max_batch {
                batch = (batch * 2).min(limits.max_batch);
                continue;
            }
            batch = limits.batch.max(1);
            if !broadened.conversations {
                broadened.conversations = true;
            } else if !broadened.repositories {
                broadened.repositories = true;
            } else {
                broadened.states = true;
            }
        }
    }

    /// Plans the scope of a Sync Plus relay (someone's inbox or outbox, usually a busy public
    /// relay): only the tag filters of `scope`, no announcements, and never broadened to
    /// kinds (that would ask a public relay for every issue and comment it has). Batches grow
    /// to fit `limits`; what still does not fit is synced from history but not followed
    /// live, so the relay never gets more live subscriptions than the limits allow.
    pub fn mailbox(scope: SyncScope, limits: &FilterLimits) -> Self {
        let broadened = Broadened::default();
        let mut batch = limits.batch.max(1);
        while batch < limits.max_batch
            && requests_needed(&shape(&scope, batch, broadened), limits) > limits.max_subscriptions.max(1)
        {
            batch = (batch * 2).min(limits.max_batch);
        }
        let filters = build(&scope, batch, broadened, false);
        let mut subscriptions = pack(&filters, limits);
        if subscriptions.len() > limits.max_subscriptions.max(1) {
            tracing::debug!(
                wanted = subscriptions.len(),
                "sync plus: a relay's scope does not fit its subscriptions; the rest waits"
            );
            subscriptions.truncate(limits.max_subscriptions.max(1));
        }
        Self { scope, filters, subscriptions, batch, broadened, mailbox: true }
    }

    /// This plan's scope planned again within `limits` (a peer that refused the usual ones).
    pub fn replan(&self, limits: &FilterLimits) -> Self {
        if self.mailbox {
            Self::mailbox(self.scope.clone(), limits)
        } else {
            Self::new(self.scope.clone(), limits)
        }
    }

    /// The filters that catch up with what this plan adds to `previous`: only the new tag
    /// values, plus any broadened filter `previous` did not have.
    pub fn catch_up_filters(&self, previous: &FilterPlan) -> Vec<LayeredFilter> {
        let added = self.scope.added_since(&previous.scope);
        let mut out = build(&added, self.batch, self.broadened, false);
        for filter in &self.filters {
            let broad = filter.filter.generic_tags.is_empty() && filter.filter.kinds.is_some();
            if broad && !previous.filters.iter().any(|p| p.filter == filter.filter) {
                out.push(filter.clone());
            }
        }
        out.sort_by_key(|f| f.layer);
        out
    }
}

/// `filter` restricted to events created at or after `since`.
pub fn since(filter: &Filter, since: Option<Timestamp>) -> Filter {
    match since {
        Some(at) => filter.clone().since(at),
        None => filter.clone(),
    }
}

/// True when a filter has no tag values and no kinds: it would match everything.
pub fn is_unbounded(filter: &Filter) -> bool {
    filter.kinds.is_none()
        && filter.generic_tags.is_empty()
        && filter.ids.is_none()
        && filter.authors.is_none()
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn coordinate(n: usize) -> String {
        format!("30617:{:064x}:repo-{n}", n % 7)
    }

    fn scope(coordinates: usize, held: usize, roots: usize) -> SyncScope {
        let served: BTreeSet<String> = (0..coordinates).map(coordinate).collect();
        let mut ids: BTreeSet<String> =
            served.iter().map(|c| c.rsplit(':').next().unwrap().to_owned()).collect();
        ids.extend((0..held).map(|n| format!("held-{n}")));
        let roots = (0..roots as u64)
            .map(|n| {
                let mut bytes = [0u8; 32];
                bytes[..8].copy_from_slice(&n.to_be_bytes());
                EventId::from_byte_array(bytes)
            })
            .collect();
        SyncScope { served_coordinates: served, state_identifiers: ids, roots }
    }

    /// True when a filter has no tag values and no kinds: it would match everything.
    fn is_unbounded(filter: &Filter) -> bool {
        filter.kinds.is_none()
            && filter.generic_tags.is_empty()
            && filter.ids.is_none()
            && filter.authors.is_none()
    }

    fn letters(filter: &Filter) -> Vec<char> {
        filter.generic_tags.keys().map(SingleLetterTag::as_char).collect()
    }

    #[test]
    fn layers_in_order_with_every_tag_letter() {
        let plan = FilterPlan::new(scope(2, 1, 3), &FilterLimits::default());
        let layers: Vec<Layer> = plan.filters.iter().map(|f| f.layer).collect();
        assert_eq!(
            layers,
            [
                Layer::Anchors,
                Layer::Anchors,
                Layer::Repositories,
                Layer::Repositories,
                Layer::Repositories,
                Layer::Conversations,
                Layer::Conversations,
                Layer::Conversations
            ]
        );
        let anns = &plan.filters[0].filter;
        assert_eq!(anns.kinds.as_ref().unwrap().len(), 2);
        let states = &plan.filters[1].filter;
        assert_eq!(states.kinds.as_ref().unwrap().iter().next().unwrap().as_u16(), 30618);
        assert_eq!(
            states.generic_tags.values().next().unwrap().len(),
            3,
            "two served and one held identifier"
        );
        let l2: Vec<Vec<char>> = plan.filters[2..5].iter().map(|f| letters(&f.filter)).collect();
        assert_eq!(l2, [vec!['a'], vec!['A'], vec!['q']]);
        let l3: Vec<Vec<char>> = plan.filters[5..].iter().map(|f| letters(&f.filter)).collect();
        assert_eq!(l3, [vec!['e'], vec!['E'], vec!['q']]);
        assert!(plan.filters.iter().all(|f| !is_unbounded(&f.filter)));
    }

    #[test]
    fn held_repositories_sync_only_their_states() {
        let plan = FilterPlan::new(scope(0, 2, 0), &FilterLimits::default());
        assert_eq!(plan.filters.len(), 2, "{:?}", plan.filters);
        assert!(plan.filters.iter().all(|f| f.layer == Layer::Anchors));
    }

    #[test]
    fn values_are_batched_by_a_hundred() {
        let plan =
            FilterPlan::new(scope(250, 0, 0), &FilterLimits { max_subscriptions: 100, ..Default::default() });
        let l2: Vec<usize> = plan
            .filters
            .iter()
            .filter(|f| f.layer == Layer::Repositories)
            .map(|f| f.filter.generic_tags.values().next().unwrap().len())
            .collect();
        assert_eq!(l2, [100, 100, 50, 100, 100, 50, 100, 100, 50]);
        assert!(plan.subscriptions.iter().all(|g| g.len() <= 10));
        assert!(plan.subscriptions.iter().flatten().all(|f| f.limit == Some(0)));
    }

    #[test]
    fn consolidation_respects_peer_limits() {
        for (coordinates, roots) in [(10, 10), (300, 2000), (3000, 20_000)] {
            for limits in [
                FilterLimits::default(),
                FilterLimits { filters_per_req: 2, max_subscriptions: 2, ..Default::default() },
                FilterLimits {
                    filters_per_req: 1,
                    max_subscriptions: 1,
                    max_req_bytes: 4096,
                    ..Default::default()
                },
            ] {
                let s = scope(coordinates, 5, roots);
                let plan = FilterPlan::new(s.clone(), &limits);
                assert!(
                    plan.subscriptions.len() <= limits.max_subscriptions,
                    "{coordinates}/{roots}: {limits:?}"
                );
                for group in &plan.subscriptions {
                    assert!(group.len() <= limits.filters_per_req);
                }
                // Nothing is dropped: every value is still asked for, or its layer is broadened.
                let asked = |letter: char| -> HashSet<&String> {
                    plan.filters
                        .iter()
                        .filter_map(|f| f.filter.generic_tags.get(&tag(letter)))
                        .flatten()
                        .collect()
                };
                let (a, e) = (asked('a'), asked('E'));
                for c in &s.served_coordinates {
                    assert!(plan.broadened.repositories || a.contains(c));
                }
                for id in &s.roots {
                    assert!(plan.broadened.conversations || e.contains(&id.to_hex()));
                }
            }
        }
        let tight = FilterLimits {
            filters_per_req: 1,
            max_subscriptions: 1,
            max_req_bytes: 4096,
            ..Default::default()
        };
        let plan = FilterPlan::new(scope(300, 5, 2000), &tight);
        assert!(plan.broadened.conversations && plan.broadened.repositories && plan.broadened.states);
        let grown = FilterPlan::new(
            scope(300, 0, 0),
            &FilterLimits {
                filters_per_req: 3,
                max_subscriptions: 2,
                max_req_bytes: 1 << 20,
                ..Default::default()
            },
        );
        assert!(grown.batch > 100 && !grown.broadened.repositories, "{:?}", grown.broadened);
    }

    #[test]
    fn size_estimates_are_never_short() {
        use nostr::JsonUtil;
        let plan = FilterPlan::new(
            scope(150, 3, 150),
            &FilterLimits { max_subscriptions: 100, ..Default::default() },
        );
        for filter in plan.subscriptions.iter().flatten() {
            assert!(json_size(filter) >= filter.as_json().len(), "{}", filter.as_json());
        }
        let s = scope(230, 4, 170);
        for broadened in [
            Broadened::default(),
            Broadened { conversations: true, ..Default::default() },
            Broadened { conversations: true, repositories: true, ..Default::default() },
            Broadened { conversations: true, repositories: true, states: true },
        ] {
            for batch in [1, 7, 100, 1000] {
                let built = build(&s, batch, broadened, true);
                let sizes = shape(&s, batch, broadened);
                assert_eq!(built.len(), sizes.len(), "{batch} {broadened:?}");
                for (filter, size) in built.iter().zip(&sizes) {
                    assert!(*size >= json_size(&filter.filter.clone().limit(0)), "{batch} {broadened:?}");
                }
                let limits = FilterLimits { filters_per_req: 3, max_req_bytes: 2048, ..Default::default() };
                assert!(requests_needed(&sizes, &limits) >= pack(&built, &limits).len());
            }
        }
    }

    #[test]
    fn catch_up_asks_only_for_new_values() {
        let limits = FilterLimits::default();
        let before = scope(3, 0, 2);
        let old = FilterPlan::new(before.clone(), &limits);
        let mut after = before.clone();
        let new_root = EventId::from_byte_array([0xee; 32]);
        after.roots.insert(new_root);
        let plan = FilterPlan::new(after, &limits);
        let catch_up = plan.catch_up_filters(&old);
        assert_eq!(catch_up.len(), 3, "{catch_up:?}");
        for f in &catch_up {
            assert_eq!(f.layer, Layer::Conversations);
            let values = f.filter.generic_tags.values().next().unwrap();
            assert_eq!(values.iter().collect::<Vec<_>>(), [&new_root.to_hex()]);
        }
        assert!(plan.catch_up_filters(&plan).is_empty());
    }
}
