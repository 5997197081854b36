//! The cache's counters, shared by every hook process: a small file of little-endian
//! `u64`s in the cache directory, updated under an exclusive `flock`. The server reads it
//! when `/metrics` is scraped ([`StatsCollector`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts};

/// The counters' file name in the cache directory.
pub const FILE: &str = "stats";

/// What the cache did, since its directory was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered from an entry.
    pub hits: u64,
    /// Requests that ran pack-objects (first sightings, generations, fallbacks).
    pub misses: u64,
    /// Bytes sent from entries.
    pub served_bytes: u64,
    /// Bytes pack-objects wrote through the hook (cached or not).
    pub generated_bytes: u64,
    /// Entries removed for the byte budget or expiry.
    pub evicted: u64,
    /// Bytes the entries take (at the last sweep).
    pub disk_bytes: u64,
    /// Entries on disk (at the last sweep).
    pub entries: u64,
}

const FIELDS: usize = 7;

impl Counters {
    fn to_bytes(self) -> [u8; FIELDS * 8] {
        let values = [
            self.hits,
            self.misses,
            self.served_bytes,
            self.generated_bytes,
            self.evicted,
            self.disk_bytes,
            self.entries,
        ];
        let mut out = [0u8; FIELDS * 8];
        for (i, value) in values.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let value = |i: usize| {
            bytes.get(i * 8..i * 8 + 8).map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        Counters {
            hits: value(0),
            misses: value(1),
            served_bytes: value(2),
            generated_bytes: value(3),
            evicted: value(4),
            disk_bytes: value(5),
            entries: value(6),
        }
    }
}

/// Changes the counters of the cache at `dir` with `change`, under the file's lock.
pub fn update(dir: &Path, change: impl FnOnce(&mut Counters)) -> io::Result<()> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(dir.join(FILE))?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let mut bytes = Vec::with_capacity(FIELDS * 8);
    file.read_to_end(&mut bytes)?;
    let mut counters = Counters::from_bytes(&bytes);
    change(&mut counters);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&counters.to_bytes())?;
    Ok(())
}

/// The counters of the cache at `dir` (zero when it has none yet).
pub fn read(dir: &Path) -> io::Result<Counters> {
    let file = match File::open(dir.join(FILE)) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Counters::default()),
        Err(e) => return Err(e),
    };
    let mut file = Flock::lock(file, FlockArg::LockShared).map_err(|(_, e)| io::Error::from(e))?;
    let mut bytes = Vec::with_capacity(FIELDS * 8);
    file.read_to_end(&mut bytes)?;
    Ok(Counters::from_bytes(&bytes))
}

/// `/metrics` series read from the counters file at each scrape.
pub struct StatsCollector {
    dir: PathBuf,
    hits: IntCounter,
    misses: IntCounter,
    served_bytes: IntCounter,
    generated_bytes: IntCounter,
    evicted: IntCounter,
    disk_bytes: IntGauge,
    entries: IntGauge,
    descs: Vec<Desc>,
}

impl StatsCollector {
    /// A collector for the cache at `dir`.
    pub fn new(dir: PathBuf) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| IntCounter::with_opts(Opts::new(name, help));
        let gauge = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help));
        let hits = counter("grasp_pack_cache_hits_total", "Fetches answered from the pack cache")?;
        let misses = counter("grasp_pack_cache_misses_total", "Fetches that ran git pack-objects")?;
        let served_bytes = counter("grasp_pack_cache_served_bytes_total", "Pack bytes sent from the cache")?;
        let generated_bytes =
            counter("grasp_pack_cache_generated_bytes_total", "Pack bytes git pack-objects wrote")?;
        let evicted = counter("grasp_pack_cache_evicted_total", "Cache entries removed (budget or expiry)")?;
        let disk_bytes = gauge("grasp_pack_cache_disk_bytes", "Bytes the cache entries take on disk")?;
        let entries = gauge("grasp_pack_cache_entries", "Cache entries on disk")?;
        let mut descs = Vec::new();
        for c in [&hits, &misses, &served_bytes, &generated_bytes, &evicted] {
            descs.extend(c.desc().into_iter().cloned());
        }
        for g in [&disk_bytes, &entries] {
            descs.extend(g.desc().into_iter().cloned());
        }
        Ok(Self { dir, hits, misses, served_bytes, generated_bytes, evicted, disk_bytes, entries, descs })
    }
}

impl Collector for StatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let counters = read(&self.dir).unwrap_or_default();
        let catch_up = |counter: &IntCounter, value: u64| {
            let now = counter.get();
            if value > now {
                counter.inc_by(value - now);
            }
        };
        catch_up(&self.hits, counters.hits);
        catch_up(&self.misses, counters.misses);
        catch_up(&self.served_bytes, counters.served_bytes);
        catch_up(&self.generated_bytes, counters.generated_bytes);
        catch_up(&self.evicted, counters.evicted);
        self.disk_bytes.set(counters.disk_bytes as i64);
        self.entries.set(counters.entries as i64);
        let mut out = Vec::new();
        for c in [&self.hits, &self.misses, &self.served_bytes, &self.generated_bytes, &self.evicted] {
            out.extend(c.collect());
        }
        for g in [&self.disk_bytes, &self.entries] {
            out.extend(g.collect());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_updates_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        update(&dir, |c| {
                            c.hits += 1;
                            c.served_bytes += 10;
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let counters = read(dir.path()).unwrap();
        assert_eq!((counters.hits, counters.served_bytes), (400, 4000));
        let collector = StatsCollector::new(dir.path().to_owned()).unwrap();
        let families = collector.collect();
        let hits = families.iter().find(|f| f.name() == "grasp_pack_cache_hits_total").unwrap();
        assert_eq!(hits.get_metric()[0].get_counter().get_value(), 400.0);
    }
}
