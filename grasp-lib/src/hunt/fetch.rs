//! Fetching from a URL someone else chose, safely.
//!
//! Every fetch goes into a quarantine: a temporary bare repository under
//! `<git_data_path>/.hunt-quarantine/` that borrows the objects of the repository the data
//! is for (git alternates), so only objects we lack are transferred. Nothing reaches a
//! hosted repository unless the fetch finished; the caller then copies the wanted objects
//! over and the quarantine is deleted, whatever happened. A crash can leave a quarantine
//! behind: [`sweep`] removes leftovers at start.
//!
//! `git fetch` runs with only http and https allowed (for git's helpers too), no
//! redirects, no proxies, no prompts, askpass or credential helpers, no user or system git
//! configuration, and object checks on; a name is pinned to the addresses the outbound
//! policy vetted (`http.curloptResolve`), so curl never looks it up again. It runs in its own process group: when it takes
//! longer than the timeout or the quarantine grows past the size cap, the whole group
//! (git, its http helper, index-pack) is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::remote::FetchError;

/// Bounds of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest a fetch may run.
    pub timeout: Duration,
    /// Most bytes a fetch may write into its quarantine.
    pub max_bytes: u64,
}

impl Default for FetchLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(300), max_bytes: 1024 * 1024 * 1024 }
    }
}

impl FetchLimits {
    /// The limits a test suite runs with: a shorter timeout.
    pub fn test_mode() -> Self {
        Self { timeout: Duration::from_secs(30), ..Self::default() }
    }
}

/// How often the size of a running fetch is checked.
const SIZE_CHECK: Duration = Duration::from_millis(100);

/// The message `git fetch` prints when a (protocol v0) server does not let clients ask
/// for objects it did not advertise; then the refs are fetched instead.
const UNADVERTISED: &str = "does not allow request for unadvertised object";

/// What a fetch of refs asks for when the remote refuses object ids.
const REF_SPECS: [&str; 3] =
    ["+refs/heads/*:refs/hunt/heads/*", "+refs/tags/*:refs/hunt/tags/*", "+refs/nostr/*:refs/hunt/nostr/*"];

/// Configuration every hunting fetch runs with (see the module documentation).
const GIT_CONFIG: [&str; 12] = [
    "protocol.allow=never",
    "http.proxy=",
    "protocol.http.allow=always",
    "protocol.https.allow=always",
    "http.followRedirects=false",
    "credential.helper=",
    "core.askPass=",
    "transfer.fsckObjects=true",
    "fetch.writeCommitGraph=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "core.hooksPath=/dev/null",
];

/// The directory quarantines live in.
pub fn quarantine_root(git_data_path: &Path) -> PathBuf {
    git_data_path.join(".hunt-quarantine")
}

/// Removes every quarantine left by an earlier run (a crash mid-fetch).
pub fn sweep(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a leftover hunting quarantine"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover hunting quarantine")
            }
        }
    }
}

/// A temporary bare repository one fetch lands in; deleted when dropped.
#[derive(Debug)]
pub struct Quarantine {
    dir: tempfile::TempDir,
}

impl Quarantine {
    /// A new quarantine under `root` that sees the objects of the bare repository at
    /// `borrow_from` as its own.
    pub fn create(root: &Path, borrow_from: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(root)?;
        let dir = tempfile::Builder::new().prefix("fetch-").suffix(".git").tempdir_in(root)?;
        git2::Repository::init_bare(dir.path()).map_err(std::io::Error::other)?;
        let objects = std::path::absolute(borrow_from.join("objects"))?;
        let info = dir.path().join("objects").join("info");
        std::fs::create_dir_all(&info)?;
        std::fs::write(info.join("alternates"), format!("{}\n", objects.display()))?;
        Ok(Self { dir })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes of objects it holds (its own, not the borrowed ones), including a pack that
    /// is still being received.
    pub fn size(&self) -> u64 {
        dir_size(&self.path().join("objects"))
    }

    /// Number of objects it holds: the counts in its pack indexes plus loose objects.
    pub fn object_count(&self) -> u64 {
        let objects = self.path().join("objects");
        let Ok(entries) = std::fs::read_dir(&objects) else { return 0 };
        let mut count = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name == "pack" {
                let packs = std::fs::read_dir(entry.path()).into_iter().flatten().flatten();
                count += packs
                    .filter(|p| p.path().extension().is_some_and(|e| e == "idx"))
                    .filter_map(|p| std::fs::read(p.path()).ok())
                    .map(|idx| pack_index_count(&idx))
                    .sum::<u64>();
            } else if name.len() == 2 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                count += std::fs::read_dir(entry.path()).map(|d| d.count() as u64).unwrap_or(0);
            }
        }
        count
    }

    /// Those of `oids` it can read now (its own objects or borrowed ones).
    pub fn present(&self, oids: &[String]) -> Vec<String> {
        let Ok(repo) = git2::Repository::open_bare(self.path()) else { return Vec::new() };
        let Ok(odb) = repo.odb() else { return Vec::new() };
        oids.iter().filter(|o| git2::Oid::from_str(o).is_ok_and(|oid| odb.exists(oid))).cloned().collect()
    }
}

/// The object count of a pack index (version 2, or the original version without a header):
/// the last entry of its fan-out table.
fn pack_index_count(idx: &[u8]) -> u64 {
    let fanout = if idx.starts_with(b"\xfftOc") { 8 } else { 0 };
    let at = fanout + 255 * 4;
    idx.get(at..at + 4).map_or(0, |b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
}

fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

/// Fetches `oids` from `url` into `quarantine`.
///
/// A fetch of several ids fails as a whole when the remote lacks one of them; git names
/// that id, so it is dropped and the rest asked for again (a remote that has none of them
/// is not an error: nothing lands). When the remote refuses to hand out objects it did not
/// advertise (older servers, protocol v0), its branches, tags and `refs/nostr/*` are
/// fetched instead, which brings the wanted objects if they are reachable from those.
pub async fn fetch(
    quarantine: &Quarantine,
    remote: &Remote<'_>,
    oids: &[String],
    limits: FetchLimits,
) -> Result<(), FetchError> {
    let url = remote.url;
    let mut asking = oids.to_vec();
    while !asking.is_empty() {
        match run_git_fetch(quarantine, remote, &asking, limits).await {
            Err(FetchError::Failed(message)) if message.contains(UNADVERTISED) => {
                tracing::debug!(%url, "remote refuses unadvertised objects; fetching its refs");
                let specs: Vec<String> = REF_SPECS.iter().map(|s| s.to_string()).collect();
                return run_git_fetch(quarantine, remote, &specs, limits).await;
            }
            Err(FetchError::Failed(message)) => match absent_id(&message) {
                Some(id) if asking.contains(&id) => {
                    tracing::debug!(%url, %id, "remote lacks this object");
                    asking.retain(|o| *o != id);
                }
                _ => return Err(FetchError::Failed(message)),
            },
            other => return other,
        }
    }
    Ok(())
}

/// Where a fetch goes.
#[derive(Debug, Clone, Default)]
pub struct Remote<'a> {
    /// The clone URL.
    pub url: &'a str,
    /// `http.curloptResolve`, pinning the host to vetted addresses.
    pub pin: Option<String>,
    /// An `Authorization` header value (a NIP-98 credential for a private server); passed
    /// to git in its environment, not on the command line.
    pub authorization: Option<String>,
}

/// The id in git's "not our ref <id>" (the remote does not have that object).
fn absent_id(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("not our ref ")?;
    let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (id.len() == 40 || id.len() == 64).then(|| id.to_ascii_lowercase())
}

async fn run_git_fetch(
    quarantine: &Quarantine,
    remote: &Remote<'_>,
    specs: &[String],
    limits: FetchLimits,
) -> Result<(), FetchError> {
    let url = remote.url;
    let mut cmd = tokio::process::Command::new("git");
    crate::git::dies_with_server_in_own_group(&mut cmd);
    cmd.arg("-C").arg(quarantine.path());
    for config in GIT_CONFIG {
        cmd.arg("-c").arg(config);
    }
    if let Some(pin) = &remote.pin {
        cmd.arg("-c").arg(format!("http.curloptResolve={pin}"));
    }
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "GIT_PROXY_COMMAND",
    ] {
        cmd.env_remove(proxy);
    }
    cmd.args([
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-recurse-submodules",
        "--no-auto-maintenance",
        "--no-show-forced-updates",
    ])
    .arg(url)
    .args(specs)
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_ALLOW_PROTOCOL", "http:https")
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .env("GIT_HTTP_USER_AGENT", concat!("grasp-hunt/", env!("CARGO_PKG_VERSION")))
    .env("GIT_ASKPASS", "/bin/false")
    .env_remove("SSH_ASKPASS")
    .env_remove("GIT_DIR")
    .env_remove("GIT_OBJECT_DIRECTORY")
    .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
    .env_remove("GIT_CONFIG_PARAMETERS")
    .env_remove("GIT_CONFIG_COUNT")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    // In the environment (after the inherited configuration variables are cleared), so the
    // credential is not on the command line for everyone to see.
    if let Some(authorization) = &remote.authorization {
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env("GIT_CONFIG_VALUE_0", format!("Authorization: {authorization}"));
    }
    let mut child = cmd.spawn().map_err(|e| FetchError::Local(format!("cannot run git: {e}")))?;
    let group = child.id();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Keep the first 16 KiB of what git says; drain the rest so git never blocks on it.
    let said = tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if kept.len() < 16 * 1024 {
                kept.extend_from_slice(&buf[..n]);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    });
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut check = tokio::time::interval(SIZE_CHECK);
    let outcome = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(|e| FetchError::Local(e.to_string())),
            _ = check.tick() => {
                if quarantine.size() > limits.max_bytes {
                    break Err(FetchError::TooLarge(limits.max_bytes));
                }
            }
            _ = tokio::time::sleep_until(deadline) => break Err(FetchError::Timeout(limits.timeout.as_secs())),
        }
    };
    // Whatever happened, nothing of this fetch keeps running.
    kill_group(group);
    let _ = child.wait().await;
    let said = said.await.unwrap_or_default();
    match outcome {
        Ok(status) if status.success() => {
            if quarantine.size() > limits.max_bytes {
                return Err(FetchError::TooLarge(limits.max_bytes));
            }
            Ok(())
        }
        Ok(_) => Err(FetchError::Failed(summary(&said))),
        Err(e) => Err(e),
    }
}

/// The lines of git's complaint, joined, without progress noise.
fn summary(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "git fetch failed".to_owned();
    }
    lines.join("; ").chars().take(400).collect()
}

#[cfg(target_os = "linux")]
fn kill_group(group: Option<u32>) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;
    if let Some(pid) = group.and_then(|g| i32::try_from(g).ok()) {
        // ESRCH (the group is gone) is the normal case after a clean exit.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_group(_group: Option<u32>) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(dir: &Path) -> PathBuf {
        let path = dir.join("landing.git");
        git2::Repository::init_bare(&path).unwrap();
        path
    }

    #[test]
    fn quarantines_borrow_objects_count_their_own_and_vanish() {
        let tmp = tempfile::tempdir().unwrap();
        let landing = bare(tmp.path());
        let blob = git2::Repository::open_bare(&landing).unwrap().blob(b"borrowed").unwrap().to_string();
        let root = quarantine_root(tmp.path());
        let q = Quarantine::create(&root, &landing).unwrap();
        let path = q.path().to_path_buf();
        assert_eq!(q.present(&[blob.clone(), "1".repeat(40)]), vec![blob]);
        assert_eq!(q.object_count(), 0);
        git2::Repository::open_bare(q.path()).unwrap().blob(b"own").unwrap();
        assert_eq!(q.object_count(), 1);
        assert!(q.size() > 0);
        drop(q);
        assert!(!path.exists());
    }

    #[test]
    fn sweep_removes_leftovers() {
        let tmp = tempfile::tempdir().unwrap();
        let landing = bare(tmp.path());
        let root = quarantine_root(tmp.path());
        let q = Quarantine::create(&root, &landing).unwrap();
        let left = q.dir.keep();
        assert!(left.exists());
        sweep(&root);
        assert!(!left.exists());
        sweep(&tmp.path().join("missing")); // no directory: nothing to do
    }

    #[test]
    fn pack_index_counts() {
        let mut v2 = b"\xfftOc\0\0\0\x02".to_vec();
        v2.extend(std::iter::repeat_n(0u8, 255 * 4));
        v2.extend(7u32.to_be_bytes());
        assert_eq!(pack_index_count(&v2), 7);
        let mut v1 = vec![0u8; 255 * 4];
        v1.extend(3u32.to_be_bytes());
        assert_eq!(pack_index_count(&v1), 3);
        assert_eq!(pack_index_count(b"short"), 0);
    }

    #[test]
    fn absent_ids_are_read_from_git_errors() {
        let id = "9".repeat(40);
        assert_eq!(absent_id(&format!("fatal: remote error: upload-pack: not our ref {id}; x")), Some(id));
        assert_eq!(absent_id("fatal: unable to access: Connection refused"), None);
        assert_eq!(absent_id("not our ref abc"), None);
    }

    #[tokio::test]
    async fn only_http_and_https_are_fetched() {
        let tmp = tempfile::tempdir().unwrap();
        let landing = bare(tmp.path());
        let source = tmp.path().join("source.git");
        let repo = git2::Repository::init_bare(&source).unwrap();
        let blob = repo.blob(b"x").unwrap().to_string();
        let q = Quarantine::create(&quarantine_root(tmp.path()), &landing).unwrap();
        let limits = FetchLimits::default();
        for url in [format!("file://{}", source.display()), source.display().to_string()] {
            let err = fetch(&q, &Remote { url: &url, ..Remote::default() }, &[blob.clone()], limits)
                .await
                .unwrap_err();
            assert!(matches!(err, FetchError::Failed(ref m) if m.contains("not allowed")), "{url}: {err}");
        }
        assert!(q.present(&[blob]).is_empty());
    }
}
