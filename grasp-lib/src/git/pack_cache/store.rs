//! Entries on disk, under `<dir>/entries/<first two hex digits>/<key>`:
//!
//! | File | Meaning |
//! |---|---|
//! | `<key>.seen` | the key was asked for once; the next request writes an entry |
//! | `<key>.lock` | whoever holds its exclusive `flock` is writing the entry |
//! | `<key>.partial` | the entry being written; followers read it as it grows |
//! | `<key>.pack` | a complete entry (renamed from `.partial` only after pack-objects succeeded) |
//!
//! An entry is served while its `.pack` is younger than the expiry. A `.partial` is never
//! served as complete: a follower that reaches its end after the writer let go of the lock
//! checks that the `.pack` is the very file it read (same inode), so a writer that died
//! (a client that went away, a full disk) leaves nothing wrong behind. `<dir>/slots/<n>`
//! are `flock`s that limit how many pack-objects run at once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use super::key::Key;

/// How long a slot is waited for before pack-objects runs anyway (a limit that stalls a
/// fetch for longer than this would look like a dead server).
const SLOT_PATIENCE: Duration = Duration::from_secs(120);

/// A cache directory.
#[derive(Debug, Clone)]
pub struct CacheDir {
    root: PathBuf,
}

/// The files of one key.
#[derive(Debug, Clone)]
pub struct EntryPaths {
    /// Complete entry.
    pub pack: PathBuf,
    /// Entry being written.
    pub partial: PathBuf,
    /// Writer's lock.
    pub lock: PathBuf,
    /// First sighting.
    pub seen: PathBuf,
}

/// What a sweep found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Entries removed (expired or over the budget).
    pub evicted: u64,
    /// Bytes the remaining entries take.
    pub disk_bytes: u64,
    /// Entries remaining.
    pub entries: u64,
}

impl CacheDir {
    /// Opens (creating) the cache at `root`.
    pub fn open(root: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(root.join("entries"))?;
        std::fs::create_dir_all(root.join("slots"))?;
        Ok(Self { root: root.to_owned() })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The files of `key` (their directory is created).
    pub fn paths(&self, key: &Key) -> io::Result<EntryPaths> {
        let dir = self.root.join("entries").join(&key.as_str()[..2]);
        std::fs::create_dir_all(&dir)?;
        let file = |ext: &str| dir.join(format!("{}.{ext}", key.as_str()));
        Ok(EntryPaths {
            pack: file("pack"),
            partial: file("partial"),
            lock: file("lock"),
            seen: file("seen"),
        })
    }

    /// Free bytes on the cache's file system for an unprivileged writer.
    pub fn free_bytes(&self) -> io::Result<u64> {
        let stat = nix::sys::statvfs::statvfs(&self.root).map_err(io::Error::from)?;
        Ok((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
    }

    /// Waits for one of `max` generation slots (or gives up waiting after a while); the
    /// slot is held until the returned lock is dropped.
    pub fn slot(&self, max: usize) -> Option<Flock<File>> {
        let deadline = std::time::Instant::now() + SLOT_PATIENCE;
        loop {
            for n in 0..max.max(1) {
                let Ok(file) = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(self.root.join("slots").join(n.to_string()))
                else {
                    return None;
                };
                if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                    return Some(lock);
                }
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Removes expired entries and sightings, partial files nobody writes, and then the
    /// oldest entries until the rest fit `max_bytes`.
    pub fn sweep(&self, max_age: Duration, max_bytes: u64) -> io::Result<Sweep> {
        let now = SystemTime::now();
        let mut sweep = Sweep::default();
        let mut packs: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
        for shard in std::fs::read_dir(self.root.join("entries"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(shard.path())? {
                let entry = entry?;
                let path = entry.path();
                let Ok(meta) = entry.metadata() else { continue };
                let modified = meta.modified().unwrap_or(now);
                let age = now.duration_since(modified).unwrap_or_default();
                match path.extension().and_then(|e| e.to_str()) {
                    Some("pack") if age > max_age && std::fs::remove_file(&path).is_ok() => {
                        sweep.evicted += 1;
                    }
                    Some("pack") if age > max_age => {}
                    Some("pack") => packs.push((modified, meta.len(), path)),
                    Some("seen") if age > max_age => {
                        let _ = std::fs::remove_file(&path);
                    }
                    Some("partial") if age > max_age && !is_locked(&path.with_extension("lock")) => {
                        let _ = std::fs::remove_file(&path);
                    }
                    Some("lock") if age > max_age && !path.with_extension("partial").exists() => {
                        let _ = std::fs::remove_file(&path);
                    }
                    _ => {}
                }
            }
        }
        packs.sort();
        let mut total: u64 = packs.iter().map(|(_, len, _)| len).sum();
        let mut kept = packs.len() as u64;
        for (_, len, path) in &packs {
            if total <= max_bytes {
                break;
            }
            if std::fs::remove_file(path).is_ok() {
                total -= len;
                kept -= 1;
                sweep.evicted += 1;
            }
        }
        sweep.disk_bytes = total;
        sweep.entries = kept;
        Ok(sweep)
    }
}

/// True when someone holds the lock file at `path`.
pub fn is_locked(path: &Path) -> bool {
    match File::open(path) {
        Ok(file) => Flock::lock(file, FlockArg::LockSharedNonblock).is_err(),
        Err(_) => false,
    }
}

/// The complete entry at `path` when it is younger than `max_age`.
pub fn fresh(path: &Path, max_age: Duration) -> Option<File> {
    let file = File::open(path).ok()?;
    let modified = file.metadata().ok()?.modified().ok()?;
    let age = SystemTime::now().duration_since(modified).unwrap_or_default();
    (age <= max_age).then_some(file)
}

/// Records a sighting at `path`; true when it is the first within `max_age`. Atomic
/// (`create_new`): of many identical requests arriving at once exactly one is the first, and
/// the rest write or follow the entry instead of each running pack-objects.
pub fn first_sighting(path: &Path, max_age: Duration) -> bool {
    let stale = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|at| SystemTime::now().duration_since(at).unwrap_or_default() > max_age);
    if stale {
        let _ = std::fs::remove_file(path);
    }
    match OpenOptions::new().write(true).create_new(true).open(path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        // Cannot record it: treat as first, so nothing is written for it.
        Err(_) => true,
    }
}

/// True when `file` is the file at `path` (same device and inode).
pub fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(hex: char) -> Key {
        super::super::key::tests_key(&hex.to_string().repeat(64))
    }

    #[test]
    fn the_sweep_keeps_the_newest_entries_within_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        for (i, hex) in ['a', 'b', 'c'].into_iter().enumerate() {
            let paths = cache.paths(&key(hex)).unwrap();
            std::fs::write(&paths.pack, vec![0u8; 100]).unwrap();
            let at = SystemTime::now() - Duration::from_secs(30 - i as u64 * 10);
            File::options().write(true).open(&paths.pack).unwrap().set_modified(at).unwrap();
        }
        let sweep = cache.sweep(Duration::from_secs(300), 250).unwrap();
        assert_eq!(sweep, Sweep { evicted: 1, disk_bytes: 200, entries: 2 });
        assert!(!cache.paths(&key('a')).unwrap().pack.exists(), "the oldest goes first");
        let sweep = cache.sweep(Duration::from_secs(15), u64::MAX).unwrap();
        assert_eq!(sweep, Sweep { evicted: 1, disk_bytes: 100, entries: 1 }, "expired");
        assert!(fresh(&cache.paths(&key('c')).unwrap().pack, Duration::from_secs(15)).is_some());
        assert!(fresh(&cache.paths(&key('c')).unwrap().pack, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn a_partial_file_being_written_survives_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        let paths = cache.paths(&key('d')).unwrap();
        let lock = Flock::lock(File::create(&paths.lock).unwrap(), FlockArg::LockExclusive).unwrap();
        std::fs::write(&paths.partial, b"half").unwrap();
        assert!(is_locked(&paths.lock));
        cache.sweep(Duration::ZERO, u64::MAX).unwrap();
        assert!(paths.partial.exists());
        drop(lock);
        assert!(!is_locked(&paths.lock));
        cache.sweep(Duration::ZERO, u64::MAX).unwrap();
        assert!(!paths.partial.exists(), "an abandoned partial goes");
    }

    #[test]
    fn of_simultaneous_sightings_exactly_one_is_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("k.seen");
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let seen = seen.clone();
                std::thread::spawn(move || first_sighting(&seen, Duration::from_secs(300)))
            })
            .collect();
        let firsts = threads.into_iter().map(|t| t.join().unwrap()).filter(|f| *f).count();
        assert_eq!(firsts, 1);
        File::options()
            .write(true)
            .open(&seen)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        assert!(first_sighting(&seen, Duration::from_secs(5)), "a stale sighting counts no more");
    }

    #[test]
    fn slots_limit_how_many_are_held_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheDir::open(dir.path()).unwrap();
        let first = cache.slot(2).unwrap();
        let _second = cache.slot(2).unwrap();
        let waiter = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.slot(2).is_some())
        };
        drop(first);
        assert!(waiter.join().unwrap(), "a slot freed is taken");
    }
}
