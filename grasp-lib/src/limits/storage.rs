//! Storage bounds on what anonymous clients can make the server write: a free-disk floor
//! below which pushes and hunted fetches are refused (relay traffic goes on), and an
//! optional byte quota on the repository data of one owner (pubkey).

use std::path::Path;

/// The storage bounds in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorageLimits {
    /// Free bytes the filesystem of the repositories must keep; 0 turns the floor off.
    pub min_free_bytes: u64,
    /// Most bytes the repositories of one owner may use (`None`: no quota).
    pub quota_per_owner: Option<u64>,
}

impl StorageLimits {
    /// A 1 GiB free-disk floor and no quota; no floor in test mode.
    pub fn for_mode(test_mode: bool) -> Self {
        Self { min_free_bytes: if test_mode { 0 } else { 1024 * 1024 * 1024 }, quota_per_owner: None }
    }
}

/// Bytes available to this process on the filesystem holding `path` (`None` when it cannot
/// be read, e.g. the directory does not exist yet: then the floor is not enforced).
pub fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stat = nix::sys::statvfs::statvfs(path).ok()?;
        Some((stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Bytes of the files under `dir` (0 when it does not exist). Blocking; walks the tree
/// without following symbolic links.
pub fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}

/// Why a write that needs disk space is refused, if it is: `free` bytes are left (when
/// known) against the floor.
pub fn below_floor(limits: &StorageLimits, free: Option<u64>) -> Option<String> {
    let free = free?;
    (limits.min_free_bytes > 0 && free < limits.min_free_bytes).then(|| {
        format!(
            "this server is low on disk space ({} free, it keeps {} free: min_free_disk_bytes); try again later",
            human_bytes(free),
            human_bytes(limits.min_free_bytes)
        )
    })
}

/// Why a push to an owner whose repositories use `used` bytes is refused, if it is.
pub fn over_quota(limits: &StorageLimits, used: u64) -> Option<String> {
    let quota = limits.quota_per_owner?;
    (used >= quota).then(|| {
        format!(
            "the repositories of this owner use {}, the most this server keeps for one owner is {} \
             (repository_quota_bytes); ask the operator, or move the repository elsewhere",
            human_bytes(used),
            human_bytes(quota)
        )
    })
}

const MIB: u64 = 1024 * 1024;

/// `2 GiB`, `50 MiB`, `39 KiB`, `512 bytes`: a size for a sentence.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * MIB => format!("{} GiB", b / (1024 * MIB)),
        b if b >= MIB => format!("{} MiB", b / MIB),
        b if b >= 1024 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_and_the_quota_refuse_only_past_their_bound() {
        let limits = StorageLimits { min_free_bytes: 100 * MIB, quota_per_owner: Some(10 * MIB) };
        assert!(below_floor(&limits, Some(99 * MIB)).unwrap().contains("99 MiB free"));
        assert_eq!(below_floor(&limits, Some(100 * MIB)), None);
        assert_eq!(below_floor(&limits, None), None, "unknown: not enforced");
        assert_eq!(below_floor(&StorageLimits::default(), Some(0)), None, "0 turns the floor off");
        assert!(over_quota(&limits, 10 * MIB).unwrap().contains("10 MiB"));
        assert_eq!(over_quota(&limits, 10 * MIB - 1), None);
        assert_eq!(over_quota(&StorageLimits::default(), u64::MAX), None);
    }

    #[test]
    fn used_bytes_adds_up_the_files_of_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/one"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("a/b/two"), [0u8; 23]).unwrap();
        assert_eq!(used_bytes(dir.path()), 123);
        assert_eq!(used_bytes(&dir.path().join("missing")), 0);
        assert!(free_bytes(dir.path()).is_some_and(|free| free > 0));
    }
}
