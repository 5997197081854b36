//! A cache of `git pack-objects` output, for clone storms: many clients cloning one
//! repository (CI jobs, a release announcement) ask git for the same pack, and computing it
//! is most of a clone's server CPU. upload-pack runs pack-objects through
//! `uploadpack.packObjectsHook`, which both frontends point at their own binary's
//! `pack-objects-hook` subcommand ([`hook::run`]); for the stock `git http-backend` behind
//! grasp-proxy the web server passes the same setting in `GIT_CONFIG_*` variables.
//!
//! - The key ([`key`]) is a hash of the repository, its refs, pack-objects' arguments and
//!   its input (wants, haves, shallow lines, filter): never who asks.
//! - An entry is written only when its key is seen a second time within the expiry, so
//!   one-off fetches cost nothing; concurrent identical requests stream the one entry while
//!   it is still being written ([`store`]).
//! - Entries expire (default 5 minutes: a push changes the refs, hence the key, anyway),
//!   the cache keeps within a byte budget (oldest evicted first) and stops writing when the
//!   disk's free space falls under a floor; at most `max_generating` pack-objects run at once
//!   through the hook.
//! - Counters live in a small file every hook process adds to ([`stats`]); the server reads
//!   them for `/metrics`.
//!
//! | Module | What it holds |
//! |---|---|
//! | [`key`] | the cache key: repository, ref snapshot, arguments, input |
//! | [`store`] | entries on disk: lookup, generation lock, partial files, expiry, budget, slots |
//! | [`stats`] | counters shared by the hook processes, and their Prometheus collector |
//! | [`hook`] | the `pack-objects-hook` program upload-pack runs |
//! | [`response`] | whole upload-pack answers, cached by the serving process itself |

pub mod hook;
pub mod key;
pub mod response;
pub mod stats;
pub mod store;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The git setting that makes upload-pack run the cache instead of pack-objects.
pub const HOOK_SETTING: &str = super::smart_http::PACK_OBJECTS_HOOK;

/// Default seconds an entry is served.
pub const DEFAULT_MAX_AGE_SECS: u64 = 300;
/// Default byte budget.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
/// Default free-space floor.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 1 << 30;

/// How the cache runs; also the options of the `pack-objects-hook` subcommand, so the hook
/// process gets them on the command line git runs.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CacheSettings {
    /// Directory of the cache (local disk; created when missing)
    #[arg(long)]
    pub dir: PathBuf,
    /// Seconds an entry is served after it was written
    #[arg(long, default_value_t = DEFAULT_MAX_AGE_SECS)]
    pub max_age_secs: u64,
    /// Most bytes the entries may take (oldest evicted first); 0: nothing is cached
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    pub max_bytes: u64,
    /// No entry is written while the disk has less free space than this
    #[arg(long, default_value_t = DEFAULT_MIN_FREE_BYTES)]
    pub min_free_bytes: u64,
    /// Most pack-objects processes the hook runs at once (others wait for a slot)
    #[arg(long, default_value_t = 4)]
    pub max_generating: usize,
}

impl CacheSettings {
    /// The defaults, with entries in `dir` and `max_generating` pack-objects at once.
    pub fn new(dir: PathBuf, max_generating: usize) -> Self {
        Self {
            dir,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
            max_bytes: DEFAULT_MAX_BYTES,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            max_generating,
        }
    }

    /// How long an entry (or the first sighting of a key) counts.
    pub fn max_age(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }

    /// The shell command git runs as `uploadpack.packObjectsHook` (git appends
    /// `git pack-objects <args>`): `program pack-objects-hook <these settings>`.
    pub fn hook_command(&self, program: &Path) -> String {
        let dir = std::path::absolute(&self.dir).unwrap_or_else(|_| self.dir.clone());
        format!(
            "{} {} --dir {} --max-age-secs {} --max-bytes {} --min-free-bytes {} --max-generating {}",
            shell_quote(program.as_os_str()),
            hook::SUBCOMMAND,
            shell_quote(dir.as_os_str()),
            self.max_age_secs,
            self.max_bytes,
            self.min_free_bytes,
            self.max_generating.max(1),
        )
    }
}

/// Prepares the cache for a server: creates its directory, sweeps what expired while the
/// server was down and registers its `/metrics` series. A cache that cannot be prepared
/// is only logged: the hook then runs plain pack-objects.
pub fn open_for_serving(settings: &CacheSettings, registry: &prometheus::Registry) {
    match store::CacheDir::open(&settings.dir)
        .and_then(|dir| dir.sweep(settings.max_age(), settings.max_bytes))
    {
        Ok(sweep) => {
            let _ = stats::update(&settings.dir, |c| {
                c.evicted += sweep.evicted;
                c.disk_bytes = sweep.disk_bytes;
                c.entries = sweep.entries;
            });
        }
        Err(e) => tracing::warn!(dir = %settings.dir.display(), error = %e, "the pack cache cannot be used"),
    }
    match stats::StatsCollector::new(settings.dir.clone()) {
        Ok(collector) => {
            if let Err(e) = registry.register(Box::new(collector)) {
                tracing::warn!(error = %e, "pack cache metrics not registered");
            }
        }
        Err(e) => tracing::warn!(error = %e, "pack cache metrics not registered"),
    }
}

/// The `pack-objects-hook` subcommand's arguments: the settings, then the command
/// upload-pack would have run (`git pack-objects …`).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct HookArgs {
    /// How the cache runs.
    #[command(flatten)]
    pub settings: CacheSettings,
    /// The pack-objects command line git appended
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<OsString>,
}

/// `value` in single quotes for `sh` (git runs the hook through the shell).
fn shell_quote(value: &std::ffi::OsStr) -> String {
    format!("'{}'", value.to_string_lossy().replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_command_survives_the_shell() {
        let settings = CacheSettings {
            dir: PathBuf::from("/srv/it's here/cache"),
            max_age_secs: 60,
            max_bytes: 10,
            min_free_bytes: 20,
            max_generating: 0,
        };
        let command = settings.hook_command(Path::new("/opt/grasp server/bin"));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("for a in {command}; do printf '%s\\n' \"$a\"; done"))
            .output()
            .unwrap();
        let words: Vec<String> = String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect();
        assert_eq!(words[0], "/opt/grasp server/bin");
        assert_eq!(words[1], "pack-objects-hook");
        assert_eq!(words[3], "/srv/it's here/cache");
        assert_eq!(words.last().unwrap(), "1", "at least one generator");
    }
}
