//! What the hunt scheduler needs from the world, behind one trait: what an identifier's
//! held events still need and where to look, fetching from one URL, and the git-data step.
//!
//! [`super::HostingRemote`] is the real implementation (purgatory, repositories, `git
//! fetch`); unit tests drive the scheduler with [`mock::MockRemote`] and no network.

use std::collections::BTreeSet;

use futures::future::BoxFuture;

/// What an identifier's held events still need, and where it might be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Something that hunting can help (a state, pull request or announcement) is still held.
    pub held: bool,
    /// Object ids the held events name that are not here yet.
    pub oids: BTreeSet<String>,
    /// URLs to fetch from, in order of preference: http(s) only, never this server.
    pub urls: Vec<String>,
    /// URLs that may be asked only for some ids (a pull request's `clone` URL: its
    /// commit); a URL not here may be asked for any of [`Wanted::oids`].
    pub scoped: std::collections::BTreeMap<String, BTreeSet<String>>,
}

impl Wanted {
    /// True when no remote can help any more: nothing held, or nothing missing.
    pub fn is_done(&self) -> bool {
        !self.held || self.oids.is_empty()
    }
}

/// What one fetch brought.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Of the requested ids, those now in the repository here (they landed).
    pub landed: Vec<String>,
    /// Objects that were new to this server.
    pub new_objects: u64,
    /// Bytes the remote sent (pack and loose objects as stored).
    pub bytes: u64,
}

/// Why a fetch brought nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The remote could not be reached or answered with an error.
    #[error("failed: {0}")]
    Failed(String),
    /// The remote did not finish within the fetch timeout; the fetch was killed.
    #[error("timed out after {0} s")]
    Timeout(u64),
    /// The remote sent more than the size cap; the fetch was killed and nothing landed.
    #[error("cut off: more than {0} bytes")]
    TooLarge(u64),
    /// The URL may not be fetched (the outbound policy refused it).
    #[error("not fetchable: {0}")]
    Refused(String),
    /// Another fetch to the same address is running; tried again later.
    #[error("busy: {0}")]
    Busy(String),
    /// Nothing here to land the data in, or landing it failed.
    #[error("local: {0}")]
    Local(String),
}

impl FetchError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FetchError::Failed(_) => "error",
            FetchError::Timeout(_) => "timeout",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Refused(_) => "refused",
            FetchError::Busy(_) => "busy",
            FetchError::Local(_) => "local_error",
        }
    }
}

/// Everything the hunt needs from purgatory, the repositories and the network.
pub trait HuntRemote: Send + Sync + 'static {
    /// What the held events of `identifier` still need, and the URLs that may have it.
    fn wanted<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Wanted>;

    /// Fetches `oids` from `url` and lands what arrived in a repository of `identifier`
    /// here. An aborted fetch lands nothing.
    fn fetch<'a>(
        &'a self,
        identifier: &'a str,
        url: &'a str,
        oids: &'a [String],
    ) -> BoxFuture<'a, Result<Fetched, FetchError>>;

    /// Runs the git-data step for `identifier` (the one a push runs): releases every held
    /// event whose data is now here. Returns how many events were released.
    fn process<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, usize>;
}

#[cfg(test)]
pub(crate) mod mock {
    //! A scripted remote: each URL provides some object ids (or fails); fetching removes
    //! what it provides from what is needed, and processing "releases" once nothing is.

    use std::collections::{BTreeSet, HashMap};
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct State {
        needed: HashMap<String, BTreeSet<String>>,
        urls: HashMap<String, Vec<String>>,
        fetches: Vec<(String, String)>,
        processed: Vec<String>,
    }

    /// A remote whose answers are set up by the test.
    #[derive(Debug, Default)]
    pub(crate) struct MockRemote {
        state: Mutex<State>,
        provides: HashMap<String, Result<BTreeSet<String>, FetchError>>,
    }

    impl MockRemote {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// `identifier` needs `oids`, to be looked for at `urls`.
        pub(crate) fn needs(self, identifier: &str, oids: &[&str], urls: &[&str]) -> Self {
            {
                let mut s = self.state.lock().unwrap();
                s.needed.insert(identifier.into(), oids.iter().map(|o| o.to_string()).collect());
                s.urls.insert(identifier.into(), urls.iter().map(|u| u.to_string()).collect());
            }
            self
        }

        /// Fetching from `url` brings those of `oids` that were asked for.
        pub(crate) fn serves(mut self, url: &str, oids: &[&str]) -> Self {
            self.provides.insert(url.into(), Ok(oids.iter().map(|o| o.to_string()).collect()));
            self
        }

        /// Fetching from `url` fails with `error`.
        pub(crate) fn fails(mut self, url: &str, error: FetchError) -> Self {
            self.provides.insert(url.into(), Err(error));
            self
        }

        /// Adds needed ids later (a new event arrived).
        pub(crate) fn add_need(&self, identifier: &str, oid: &str) {
            self.state.lock().unwrap().needed.entry(identifier.into()).or_default().insert(oid.into());
        }

        /// Everything held for `identifier` went away (released by a push, or expired).
        pub(crate) fn release_all(&self, identifier: &str) {
            self.state.lock().unwrap().needed.remove(identifier);
        }

        /// (identifier, url) of every fetch, in order.
        pub(crate) fn fetches(&self) -> Vec<(String, String)> {
            self.state.lock().unwrap().fetches.clone()
        }

        /// Identifiers processed after fetches that brought data, in order.
        pub(crate) fn processed(&self) -> Vec<String> {
            self.state.lock().unwrap().processed.clone()
        }

        pub(crate) fn wanted_now(&self, identifier: &str) -> Wanted {
            let s = self.state.lock().unwrap();
            match s.needed.get(identifier) {
                Some(oids) if !oids.is_empty() => Wanted {
                    held: true,
                    oids: oids.clone(),
                    urls: s.urls.get(identifier).cloned().unwrap_or_default(),
                    scoped: Default::default(),
                },
                _ => Wanted::default(),
            }
        }

        pub(crate) fn fetch_now(
            &self,
            identifier: &str,
            url: &str,
            oids: &[String],
        ) -> Result<Fetched, FetchError> {
            let mut s = self.state.lock().unwrap();
            s.fetches.push((identifier.into(), url.into()));
            let provided = self.provides.get(url).cloned().unwrap_or_else(|| Ok(BTreeSet::new()))?;
            let landed: Vec<String> = oids.iter().filter(|o| provided.contains(*o)).cloned().collect();
            if let Some(needed) = s.needed.get_mut(identifier) {
                needed.retain(|o| !landed.contains(o));
            }
            Ok(Fetched { new_objects: landed.len() as u64, bytes: 100 * landed.len() as u64, landed })
        }

        pub(crate) fn process_now(&self, identifier: &str) -> usize {
            let mut s = self.state.lock().unwrap();
            s.processed.push(identifier.into());
            usize::from(s.needed.get(identifier).is_some_and(BTreeSet::is_empty))
        }
    }

    impl HuntRemote for MockRemote {
        fn wanted<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, Wanted> {
            Box::pin(async move { self.wanted_now(identifier) })
        }

        fn fetch<'a>(
            &'a self,
            identifier: &'a str,
            url: &'a str,
            oids: &'a [String],
        ) -> BoxFuture<'a, Result<Fetched, FetchError>> {
            Box::pin(async move { self.fetch_now(identifier, url, oids) })
        }

        fn process<'a>(&'a self, identifier: &'a str) -> BoxFuture<'a, usize> {
            Box::pin(async move { self.process_now(identifier) })
        }
    }
}
