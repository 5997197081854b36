//! Operator curation: allow and deny lists of pubkeys and repositories, read from a TOML
//! file that can change while the server runs.
//!
//! ```toml
//! # Refused with `blocked:`: every event these keys sign, every event about these
//! # repositories, and pushes to them.
//! deny = ["npub1spammer…", "npub1alice…/leaked-keys", "casino"]
//! # When not empty, only these get repositories hosted here (`restricted:` for the rest).
//! allow = ["npub1alice…", "npub1bob…/ngit"]
//! ```
//!
//! Entries use the grammar of [`selector`]. The rules themselves are pure functions in
//! [`crate::policy::curate`]; this module owns the lists and keeps them current: the
//! [`Curation`] handle re-reads the file when it changes ([`Curation::watch`]) or when asked
//! ([`Curation::reload`], which frontends call on `SIGHUP`). A file that no longer parses is
//! reported and the lists in force stay as they were.

pub mod selector;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;

pub use selector::{RepoSelector, SelectorError, Selectors};

/// How often the curation file is checked for changes: every 10 s, every second in test
/// mode (`curation_reload_secs` overrides it).
pub fn reload_interval(test_mode: bool) -> Duration {
    Duration::from_secs(if test_mode { 1 } else { 10 })
}

/// The lists in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurationLists {
    /// When not empty, only what these name gets hosting here.
    pub allow: Selectors,
    /// Refused outright.
    pub deny: Selectors,
}

impl CurationLists {
    /// True when the operator curates anything (NIP-11 then carries `curation`).
    pub fn is_curated(&self) -> bool {
        !self.allow.is_empty() || !self.deny.is_empty()
    }

    /// Parses the file format (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, CurationError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            allow: Vec<String>,
            #[serde(default)]
            deny: Vec<String>,
        }
        let file: File = toml::from_str(text).map_err(|e| {
            CurationError::Parse(e.to_string().split_whitespace().collect::<Vec<_>>().join(" "))
        })?;
        let allow = Selectors::parse(&file.allow).map_err(|e| CurationError::Entry("allow", e))?;
        let deny = Selectors::parse(&file.deny).map_err(|e| CurationError::Entry("deny", e))?;
        if deny.is_everything() {
            return Err(CurationError::DenyEverything);
        }
        Ok(Self { allow, deny })
    }
}

/// Why a curation file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CurationError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Not TOML of the expected shape.
    #[error("{0}")]
    Parse(String),
    /// An entry of a list is not valid.
    #[error("{0}: {1}")]
    Entry(&'static str, SelectorError),
    /// `*` in `deny` would refuse everything.
    #[error("deny: '*' would refuse every event; stop the server instead")]
    DenyEverything,
}

/// What [`Curation::reload`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// No file is configured.
    NoFile,
    /// The file is unchanged.
    Unchanged,
    /// New lists are in force.
    Changed,
}

/// The lists in force and where they come from. Cheap to read from any thread.
#[derive(Debug, Default)]
pub struct Curation {
    path: Option<PathBuf>,
    lists: RwLock<Arc<CurationLists>>,
    /// The file contents the lists were parsed from (to notice changes).
    loaded: Mutex<Option<String>>,
}

fn read(path: &Path) -> Result<String, CurationError> {
    std::fs::read_to_string(path).map_err(|e| CurationError::Read(path.to_path_buf(), e))
}

impl Curation {
    /// Fixed lists (no file; for embedding and tests).
    pub fn fixed(lists: CurationLists) -> Self {
        Self { path: None, lists: RwLock::new(Arc::new(lists)), loaded: Mutex::new(None) }
    }

    /// Reads the lists from `path` (no file: nothing is curated). A file that cannot be read
    /// or parsed is an error: the server should not start with lists it cannot apply.
    pub fn load(path: Option<&Path>) -> Result<Self, CurationError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = read(path)?;
        let lists = CurationLists::parse(&text)?;
        Ok(Self {
            path: Some(path.to_path_buf()),
            lists: RwLock::new(Arc::new(lists)),
            loaded: Mutex::new(Some(text)),
        })
    }

    /// The file the lists come from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The lists in force now.
    pub fn lists(&self) -> Arc<CurationLists> {
        self.lists.read().expect("curation lists poisoned").clone()
    }

    /// Re-reads the file and puts its lists in force when it changed. On error the lists in
    /// force stay.
    pub fn reload(&self) -> Result<Reload, CurationError> {
        let Some(path) = &self.path else { return Ok(Reload::NoFile) };
        let text = read(path)?;
        let mut loaded = self.loaded.lock().expect("curation file state poisoned");
        if loaded.as_deref() == Some(text.as_str()) {
            return Ok(Reload::Unchanged);
        }
        let lists = CurationLists::parse(&text)?;
        *self.lists.write().expect("curation lists poisoned") = Arc::new(lists);
        *loaded = Some(text);
        Ok(Reload::Changed)
    }

    /// [`Curation::reload`], logged: what an operator's `SIGHUP` or a file change triggers.
    pub fn reload_and_log(&self) -> Reload {
        match self.reload() {
            Ok(Reload::Changed) => {
                let lists = self.lists();
                tracing::info!(
                    file = ?self.path,
                    allow = %lists.allow.summary(),
                    deny = %lists.deny.summary(),
                    "curation lists reloaded"
                );
                Reload::Changed
            }
            Ok(other) => other,
            Err(e) => {
                tracing::warn!(file = ?self.path, error = %e, "curation file not reloaded; the previous lists stay in force");
                Reload::Unchanged
            }
        }
    }

    /// Checks the file every `every` and reloads it when it changed, for as long as the
    /// server runs (returns at once when no file is configured).
    pub async fn watch(self: Arc<Self>, every: Duration) {
        if self.path.is_none() {
            return;
        }
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.reload_and_log()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use nostr::nips::nip19::ToBech32;
    use nostr::Keys;

    use super::*;

    #[test]
    fn file_format_and_errors() {
        let npub = Keys::generate().public_key().to_bech32().unwrap();
        let lists = CurationLists::parse(&format!("allow = [\"{npub}\"]\ndeny = [\"spam\"]\n")).unwrap();
        assert!(lists.is_curated());
        assert_eq!((lists.allow.entries().len(), lists.deny.entries().len()), (1, 1));
        assert!(!CurationLists::parse("").unwrap().is_curated());
        for bad in ["allow = \"x\"", "alow = []", "deny = [\"npub1bad\"]", "deny = [\"*\"]", "deny = ["] {
            assert!(CurationLists::parse(bad).is_err(), "{bad}");
        }
        let err = CurationLists::parse("deny = [\"npub1bad\"]").unwrap_err().to_string();
        assert!(err.starts_with("deny: list entry \"npub1bad\""), "{err}");
    }

    #[test]
    fn reload_swaps_only_valid_changed_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("curation.toml");
        std::fs::write(&path, "deny = [\"a\"]\n").unwrap();
        let curation = Curation::load(Some(&path)).unwrap();
        assert_eq!(curation.lists().deny.entries().len(), 1);
        assert_eq!(curation.reload().unwrap(), Reload::Unchanged);
        std::fs::write(&path, "deny = [\"a\", \"b\"]\n").unwrap();
        assert_eq!(curation.reload().unwrap(), Reload::Changed);
        assert_eq!(curation.lists().deny.entries().len(), 2);
        std::fs::write(&path, "deny = [\"npub1broken\"]\n").unwrap();
        assert!(curation.reload().is_err());
        assert_eq!(curation.reload_and_log(), Reload::Unchanged);
        assert_eq!(curation.lists().deny.entries().len(), 2, "a broken file leaves the lists in force");
        assert_eq!(Curation::load(None).unwrap().reload().unwrap(), Reload::NoFile);
        assert!(Curation::load(Some(&dir.path().join("missing.toml"))).is_err());
    }
}
