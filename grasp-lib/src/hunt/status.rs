//! The hunt status operators see in `grasp-server purgatory list`: per identifier, when the
//! next attempt is due and which URLs were tried with what result.
//!
//! It is written by the running server as one small JSON file next to the purgatory journal
//! (write to a temporary file, sync, rename), so another process reads a whole, consistent
//! file at any time. It is also what a restarted server resumes from.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One URL tried for an identifier, with its latest result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriedUrl {
    /// The clone URL.
    pub url: String,
    /// When it was last tried (ms since the Unix epoch).
    pub at: u64,
    /// What happened, e.g. `landed 2 of 3 objects ids (17 new objects)` or `failed: …`.
    pub result: String,
}

/// Hunting state of one identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentifierHunt {
    /// When the next attempt starts (ms since the Unix epoch); in the past while one runs.
    pub next_attempt: u64,
    /// Attempts since the last new event.
    pub attempts: u32,
    /// An attempt is running now.
    pub running: bool,
    /// URLs tried since the identifier was queued, oldest first.
    pub tried: Vec<TriedUrl>,
}

/// Hunting state of every queued identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HuntStatus {
    /// By repository identifier.
    pub identifiers: BTreeMap<String, IdentifierHunt>,
}

impl HuntStatus {
    /// Where the status of a store in `relay_data_path` lives.
    pub fn path(relay_data_path: &Path) -> PathBuf {
        crate::purgatory::Purgatory::directory(relay_data_path).join("hunt.json")
    }

    /// Reads the status file; a missing file is an empty status.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the status file atomically: readers see the old or the new file, whole.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            let mut file = File::create(&tmp)?;
            serde_json::to_writer(&mut file, self).map_err(std::io::Error::other)?;
            file.flush()?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_round_trips_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = HuntStatus::path(dir.path());
        assert_eq!(HuntStatus::read(&path).unwrap(), HuntStatus::default());
        let mut status = HuntStatus::default();
        status.identifiers.insert(
            "r".into(),
            IdentifierHunt {
                next_attempt: 5,
                attempts: 2,
                running: false,
                tried: vec![TriedUrl { url: "http://a/x.git".into(), at: 3, result: "failed: x".into() }],
            },
        );
        status.write(&path).unwrap();
        assert_eq!(HuntStatus::read(&path).unwrap(), status);
        assert!(!path.with_extension("json.tmp").exists());
    }
}
