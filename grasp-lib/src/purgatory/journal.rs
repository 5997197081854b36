//! Durability for purgatory: an append-only journal of JSON lines, synced to disk before a
//! change is acknowledged, replayed and compacted at start.
//!
//! A line is one record (`hold`, `drop`, `placeholder`, `drop_placeholder`); replay keeps
//! the last record per id. A crash can at worst leave a partial last line, which replay
//! skips. Deadlines are wall-clock milliseconds, so they survive restarts unchanged.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use nostr::EventId;
use serde::{Deserialize, Serialize};

use super::{HeldEvent, Placeholder};

/// One journal line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(super) enum Record {
    /// An event is held (or its entry changed, e.g. a new deadline).
    Hold { entry: Box<HeldEvent> },
    /// A held event left purgatory (released, expired, deleted).
    Drop { id: EventId },
    /// A git-first pull request ref is waiting for its event.
    Placeholder { placeholder: Placeholder },
    /// A placeholder is gone.
    DropPlaceholder { id: EventId },
}

/// Everything the journal holds after replay.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    pub held: HashMap<EventId, HeldEvent>,
    pub placeholders: HashMap<EventId, Placeholder>,
    /// Lines that could not be read (a torn last write).
    pub skipped: usize,
}

/// The open journal file.
#[derive(Debug)]
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    /// Records appended since the last compaction, to know when to compact.
    records: usize,
}

fn apply(replayed: &mut Replayed, record: Record) {
    match record {
        Record::Hold { entry } => {
            replayed.held.insert(entry.event.id, *entry);
        }
        Record::Drop { id } => {
            replayed.held.remove(&id);
        }
        Record::Placeholder { placeholder } => {
            replayed.placeholders.insert(placeholder.event_id, placeholder);
        }
        Record::DropPlaceholder { id } => {
            replayed.placeholders.remove(&id);
        }
    }
}

impl Journal {
    /// Opens (creating) the journal in `dir`, replays it and compacts it.
    pub(super) fn open(dir: &Path) -> std::io::Result<(Self, Replayed)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("purgatory.jsonl");
        let replayed = Self::replay(&path)?;
        let mut journal =
            Self { file: OpenOptions::new().create(true).append(true).open(&path)?, path, records: 0 };
        journal.compact(&replayed.held, &replayed.placeholders)?;
        Ok((journal, replayed))
    }

    /// Reads the journal at `path` without changing it (for operator tools).
    pub(super) fn replay(path: &Path) -> std::io::Result<Replayed> {
        let mut replayed = Replayed::default();
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(replayed),
            Err(e) => return Err(e),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Record>(&line) {
                Ok(record) => apply(&mut replayed, record),
                Err(_) => replayed.skipped += 1,
            }
        }
        Ok(replayed)
    }

    /// Appends records and syncs them to disk.
    pub(super) fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.records += records.len();
        Ok(())
    }

    /// True when the journal has grown well past the live entries.
    pub(super) fn wants_compaction(&self, live: usize) -> bool {
        self.records > 1024 && self.records > 2 * live
    }

    /// Rewrites the journal with only the live entries (write, sync, rename).
    pub(super) fn compact(
        &mut self,
        held: &HashMap<EventId, HeldEvent>,
        placeholders: &HashMap<EventId, Placeholder>,
    ) -> std::io::Result<()> {
        let tmp = self.path.with_extension("jsonl.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp)?);
            for entry in held.values() {
                serde_json::to_writer(&mut out, &Record::Hold { entry: Box::new(entry.clone()) })
                    .map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            for placeholder in placeholders.values() {
                serde_json::to_writer(&mut out, &Record::Placeholder { placeholder: placeholder.clone() })
                    .map_err(std::io::Error::other)?;
                out.write_all(b"\n")?;
            }
            out.flush()?;
            out.get_ref().sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.records = held.len() + placeholders.len();
        Ok(())
    }
}
