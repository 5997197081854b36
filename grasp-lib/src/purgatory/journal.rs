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

use super::entries::{HeldEvent, Placeholder};

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
    /// Length of the file up to its last complete record.
    len: u64,
    /// Records appended since the last compaction, to know when to compact.
    records: usize,
}

pub(super) fn apply(replayed: &mut Replayed, record: Record) {
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
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        let mut journal = Self { file, path, len, records: 0 };
        if let Err(e) = journal.compact(&replayed.held, &replayed.placeholders) {
            // A full disk must not keep the server from starting: go on with the journal as
            // it is, minus a torn last line.
            tracing::warn!(error = %e, "could not compact the purgatory journal; appending to it as it is");
            journal.cut_torn_tail()?;
        }
        Ok((journal, replayed))
    }

    /// Cuts the file back to the end of its last complete line.
    fn cut_torn_tail(&mut self) -> std::io::Result<()> {
        let bytes = std::fs::read(&self.path)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) as u64;
        if complete < bytes.len() as u64 {
            self.file.set_len(complete)?;
        }
        self.len = complete;
        Ok(())
    }

    /// The path of the journal file.
    pub(super) fn path(&self) -> &Path {
        &self.path
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

    /// Appends records and syncs them to disk. On failure (a full disk) the file is cut
    /// back to its last complete record, so a later append never lands after half a line.
    pub(super) fn append(&mut self, records: &[Record]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for record in records {
            serde_json::to_writer(&mut buf, record).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        if crate::crash::fires("purgatory-journal-torn") {
            let _ = self.file.write_all(&buf[..buf.len() / 2]);
            let _ = self.file.sync_data();
            crate::crash::die("purgatory-journal-torn");
        }
        let written = self.file.write_all(&buf).and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            if let Err(cut) = self.file.set_len(self.len) {
                tracing::warn!(error = %cut, "could not cut a failed purgatory journal write back");
            }
            return Err(e);
        }
        self.len += buf.len() as u64;
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
        let written = Self::write_compacted(&tmp, held, placeholders);
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            // Make the rename itself durable.
            File::open(dir)?.sync_all()?;
        }
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = self.file.metadata()?.len();
        self.records = held.len() + placeholders.len();
        Ok(())
    }

    fn write_compacted(
        tmp: &Path,
        held: &HashMap<EventId, HeldEvent>,
        placeholders: &HashMap<EventId, Placeholder>,
    ) -> std::io::Result<()> {
        {
            let mut out = std::io::BufWriter::new(File::create(tmp)?);
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
        Ok(())
    }
}
