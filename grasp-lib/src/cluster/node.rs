//! This node's id: `node_id` from the configuration, or the host name and a random suffix
//! (unique per process, so two nodes on one machine differ too).

use std::sync::OnceLock;

static NODE_ID: OnceLock<String> = OnceLock::new();

/// Sets this process's node id (once, at start; later calls change nothing).
pub fn set(configured: Option<&str>) -> &'static str {
    NODE_ID.get_or_init(|| match configured {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ => generated(),
    })
}

/// This process's node id (generated on first use when none was set).
pub fn id() -> &'static str {
    NODE_ID.get_or_init(generated)
}

fn generated() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", &random_hex()[..6])
}

/// 64 random bits in hex (std's per-process random hasher keys, with the process id and
/// the clock): a name no other process picks.
pub fn random_hex() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    format!("{:016x}", hasher.finish())
}
