//! Ref advertisements answered in-process, byte for byte what git prints: `GET info/refs`
//! for both services (protocol v0, v1 and v2) and the protocol v2 `ls-refs` command. A push
//! then spawns git once (receive-pack) instead of twice, and the ref listing of a v2 clone or
//! fetch spawns nothing.
//!
//! What depends only on git's version and configuration (the capability lists, the v2
//! capability advertisement) is learned once per process from git itself, on a scratch
//! repository made like every hosted one ([`learned`]), and checked there against git's
//! own answers before it is used. What depends on the repository (HEAD, the refs, peeled
//! tags) is read here the way git's files backend reads it. Whenever a repository holds
//! anything this reader does not reproduce exactly (a config that changes what git
//! advertises or hides, reftable, a symbolic ref under `refs/`, a ref to a missing object,
//! an odd file), the answer is `None` and the caller spawns git as before: git's output is
//! the specification, and the tests compare the two byte for byte.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use git2::{ObjectType, Oid};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::pktline::{self, FLUSH};
use super::refs::{HIDDEN_PREFIX, SERVING_SETTINGS};
use super::smart_http::{self, command, Service};
use super::{GitError, ZERO_OID};

/// Who answered a ref advertisement (the `answered_by` metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredBy {
    /// Made in-process.
    Grasp,
    /// Left to a spawned git.
    Git,
}

impl AnsweredBy {
    /// Both values.
    pub const ALL: [Self; 2] = [Self::Grasp, Self::Git];

    /// The metrics label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grasp => "grasp",
            Self::Git => "git",
        }
    }
}

/// The protocol version git serves for a `GIT_PROTOCOL` value: the highest `version=` among
/// its `:`-separated entries that git knows (others are ignored), as git decides it.
pub fn protocol_version(git_protocol: Option<&str>) -> u8 {
    git_protocol
        .into_iter()
        .flat_map(|value| value.split(':'))
        .filter_map(|entry| match entry.strip_prefix("version=")? {
            "0" => Some(0),
            "1" => Some(1),
            "2" => Some(2),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// The body of `GET info/refs?service=…` (the service header included for protocol v0/v1)
/// as [`smart_http::advertisement`] makes it with git, made in-process when it can be made
/// exactly so; and who made it.
pub async fn advertisement(
    path: &Path,
    service: Service,
    git_protocol: Option<&str>,
) -> Result<(Vec<u8>, AnsweredBy), GitError> {
    match info_refs(path, service, git_protocol).await {
        Some(advertised) => {
            Ok((smart_http::advertisement_body(service, git_protocol, advertised), AnsweredBy::Grasp))
        }
        None => Ok((smart_http::advertisement(path, service, git_protocol).await?, AnsweredBy::Git)),
    }
}

/// Git's output (without the `# service=` header smart HTTP puts in front) for
/// `git <service> --stateless-rpc --advertise-refs` on the repository at `path`, or `None`
/// when it has to come from git.
pub async fn info_refs(path: &Path, service: Service, git_protocol: Option<&str>) -> Option<Vec<u8>> {
    let learned = learned().await?;
    let version = protocol_version(git_protocol);
    let owned = path.to_owned();
    let made = tokio::task::spawn_blocking(move || info_refs_now(&owned, service, version, learned)).await;
    exact_or_log(path, made)
}

/// Git's answer to a protocol v2 `ls-refs` command on the repository at `path`, or `None`
/// when it has to come from git.
pub async fn ls_refs(path: &Path, request: &LsRefs) -> Option<Vec<u8>> {
    let learned = learned().await?;
    let (owned, request) = (path.to_owned(), request.clone());
    let made = tokio::task::spawn_blocking(move || ls_refs_now(&owned, &request, learned)).await;
    exact_or_log(path, made)
}

fn exact_or_log(path: &Path, made: Result<Exact<Vec<u8>>, tokio::task::JoinError>) -> Option<Vec<u8>> {
    match made {
        Ok(Ok(bytes)) => Some(bytes),
        Ok(Err(LeaveToGit(why))) => {
            tracing::debug!(repo = %path.display(), "ref advertisement left to git: {why}");
            None
        }
        Err(e) => {
            tracing::warn!(repo = %path.display(), "ref advertisement failed: {e}");
            None
        }
    }
}

/// Why an answer is left to git.
#[derive(Debug)]
struct LeaveToGit(String);

type Exact<T> = Result<T, LeaveToGit>;

fn leave<T>(why: impl Into<String>) -> Exact<T> {
    Err(LeaveToGit(why.into()))
}

impl From<git2::Error> for LeaveToGit {
    fn from(e: git2::Error) -> Self {
        Self(e.message().to_owned())
    }
}

impl From<std::io::Error> for LeaveToGit {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

fn info_refs_now(path: &Path, service: Service, version: u8, learned: &Learned) -> Exact<Vec<u8>> {
    let repo = Repo::open(path, service)?;
    if service == Service::UploadPack && version == 2 {
        // Only git's capabilities, the same for every repository this serves.
        return Ok(learned.v2.clone());
    }
    let snapshot = repo.snapshot()?;
    let mut out = Vec::new();
    // receive-pack has no protocol v2 and answers a v2 client in v0.
    if version == 1 {
        out.extend(pktline::encode(b"version 1\n"));
    }
    match service {
        Service::UploadPack => upload_pack_v0(&snapshot, learned, &mut out),
        Service::ReceivePack => receive_pack_v0(&snapshot, learned, &mut out),
    }
    Ok(out)
}

fn ls_refs_now(path: &Path, request: &LsRefs, learned: &Learned) -> Exact<Vec<u8>> {
    if request.unborn && !learned.unborn {
        // `lsrefs.unborn` is `allow` or `ignore`: git does not say which.
        return leave("unborn asked for, and git does not advertise it");
    }
    let snapshot = Repo::open(path, Service::UploadPack)?.snapshot()?;
    Ok(ls_refs_answer(&snapshot, request))
}

// ---------------------------------------------------------------------------------------
// What git prints whatever the repository: learned once per process.

/// Git's answers that depend on git's version and configuration only.
#[derive(Debug, Clone)]
struct Learned {
    /// upload-pack's capabilities before and after the place where git puts
    /// ` symref=HEAD:<branch>` (only when HEAD names an existing branch).
    upload: (String, String),
    /// receive-pack's capabilities.
    receive: String,
    /// upload-pack's whole protocol v2 answer to `info/refs`.
    v2: Vec<u8>,
    /// `ls-refs=unborn` is advertised, so git also honours `unborn`.
    unborn: bool,
}

/// Environment variables that make git read another object store or other refs than the
/// repository's own (git2 opens the repository as it is on disk).
const ENVIRONMENT_OVERRIDES: [&str; 7] = [
    "GIT_NAMESPACE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_REF_PARANOIA",
    "GIT_SHALLOW_FILE",
    "GIT_GRAFT_FILE",
];

/// The branch the scratch repository's HEAD names.
const PROBE_BRANCH: &str = "refs/heads/main";

static LEARNED: tokio::sync::OnceCell<Option<Learned>> = tokio::sync::OnceCell::const_new();

/// What git prints whatever the repository, learned at first use; `None` (everything is
/// left to git) when it cannot be learned or does not check out.
async fn learned() -> Option<&'static Learned> {
    LEARNED
        .get_or_init(|| async {
            match learn().await {
                Ok(learned) => Some(learned),
                Err(why) => {
                    tracing::warn!("ref advertisements are left to git: {why}");
                    None
                }
            }
        })
        .await
        .as_ref()
}

/// Asks git for its advertisements on a scratch repository made as every hosted one is:
/// empty (for the capability lists), then with a branch, an annotated tag and a hidden ref
/// (for where `symref=` goes), and finally checks the in-process answers for that
/// repository against git's, every service and protocol version.
async fn learn() -> Result<Learned, String> {
    if let Some(var) = ENVIRONMENT_OVERRIDES.iter().find(|var| std::env::var_os(var).is_some()) {
        return Err(format!("{var} is set"));
    }
    let scratch = tempfile::Builder::new().prefix("grasp-advertise-").tempdir().map_err(|e| e.to_string())?;
    let path = scratch.path().join("probe.git");
    let owned = path.clone();
    blocking(move || super::refs::init_bare(&owned).map(drop).map_err(|e| e.to_string())).await?;
    hidden_refs_are_ours(&path).await?;

    let empty_caps = |service: Service, output: &[u8]| -> Result<String, String> {
        let prefix = format!("{ZERO_OID} capabilities^{{}}\0");
        match packets(output).as_deref() {
            Some([Packet::Data(line), Packet::Flush]) => line
                .strip_prefix(prefix.as_bytes())
                .and_then(|caps| caps.strip_suffix(b"\n"))
                .and_then(|caps| String::from_utf8(caps.to_vec()).ok())
                .ok_or_else(|| {
                    format!("unexpected {} advertisement of an empty repository", service.command())
                }),
            _ => Err(format!("unexpected {} advertisement of an empty repository", service.command())),
        }
    };
    let upload = empty_caps(Service::UploadPack, &git(&path, Service::UploadPack, None, None).await?)?;
    let receive = empty_caps(Service::ReceivePack, &git(&path, Service::ReceivePack, None, None).await?)?;
    let v2 = git(&path, Service::UploadPack, Some("version=2"), None).await?;
    let unborn = packets(&v2)
        .ok_or("unexpected protocol v2 advertisement")?
        .iter()
        .any(|packet| matches!(packet, Packet::Data(line) if advertises_unborn(line)));
    for (what, text) in [("upload-pack", &upload), ("receive-pack", &receive)] {
        // Different in every process or every second: not something to learn.
        if text.split(' ').any(|cap| cap.starts_with("session-id") || cap.starts_with("push-cert")) {
            return Err(format!("{what} advertises per-session capabilities: {text}"));
        }
    }
    if String::from_utf8_lossy(&v2).contains("session-id") {
        return Err("upload-pack v2 advertises a session id".into());
    }

    let owned = path.clone();
    blocking(move || populate_probe(&owned).map_err(|e| e.to_string())).await?;
    let populated = git(&path, Service::UploadPack, None, None).await?;
    let symref = format!(" symref=HEAD:{PROBE_BRANCH}");
    let caps = match packets(&populated).as_deref() {
        Some([Packet::Data(first), ..]) => first
            .splitn(2, |b| *b == 0)
            .nth(1)
            .and_then(|caps| caps.strip_suffix(b"\n"))
            .and_then(|caps| String::from_utf8(caps.to_vec()).ok()),
        _ => None,
    }
    .ok_or("unexpected upload-pack advertisement")?;
    let (before, after) = match caps.match_indices(&symref).collect::<Vec<_>>().as_slice() {
        [(at, _)] => (caps[..*at].to_owned(), caps[at + symref.len()..].to_owned()),
        _ => return Err(format!("no single '{symref}' in upload-pack's capabilities: {caps}")),
    };
    if format!("{before}{after}") != upload {
        return Err(format!("upload-pack's capabilities differ beyond symref: '{caps}' and '{upload}'"));
    }
    let learned = Learned { upload: (before, after), receive, v2, unborn };
    check_against_git(&path, &learned, &populated).await?;
    drop(scratch);
    Ok(learned)
}

/// True for git's `ls-refs=…` capability line when it lists `unborn`.
fn advertises_unborn(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_prefix(b"ls-refs=")
        .is_some_and(|features| features.split(|b| *b == b' ').any(|f| f == b"unborn"))
}

/// Every `hideRefs` setting git sees outside the `-c` it gets (system, global and the
/// repository's own config) must be [`HIDDEN_PREFIX`]: hidden refs are the one thing the
/// advertisements on the scratch repository cannot reveal.
async fn hidden_refs_are_ours(path: &Path) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("git");
    super::dies_with_server(&mut cmd);
    let output = cmd
        .arg("--git-dir")
        .arg(path)
        .args(["config", "--get-regexp", r"^(transfer|uploadpack|receive)\.hiderefs$"])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().find(|line| line.split_once(' ').map(|(_, value)| value) != Some(HIDDEN_PREFIX)) {
        Some(line) => Err(format!("git's config hides other refs: {line}")),
        None => Ok(()),
    }
}

/// A commit on [`PROBE_BRANCH`] (HEAD), an annotated tag of it and a hidden ref.
fn populate_probe(path: &Path) -> Result<(), git2::Error> {
    let repo = git2::Repository::open_bare(path)?;
    let signature = git2::Signature::new("grasp", "grasp@localhost", &git2::Time::new(0, 0))?;
    let tree = repo.find_tree(repo.treebuilder(None)?.write()?)?;
    let commit = repo.commit(Some(PROBE_BRANCH), &signature, &signature, "probe", &tree, &[])?;
    repo.tag("v1", &repo.find_object(commit, None)?, &signature, "probe", false)?;
    repo.reference(&format!("{HIDDEN_PREFIX}probe"), commit, false, "probe")?;
    repo.set_head(PROBE_BRANCH)
}

/// The in-process answers for the scratch repository must be git's, or nothing learned is
/// used: a git that words its advertisements otherwise than this module expects is caught
/// here, once, instead of answering clients wrongly.
async fn check_against_git(path: &Path, learned: &Learned, upload_v0: &[u8]) -> Result<(), String> {
    let cases = [
        (Service::UploadPack, None),
        (Service::UploadPack, Some("version=1")),
        (Service::ReceivePack, None),
        (Service::ReceivePack, Some("version=1")),
        (Service::ReceivePack, Some("version=2")),
    ];
    for (service, git_protocol) in cases {
        let theirs = match (service, git_protocol) {
            (Service::UploadPack, None) => upload_v0.to_vec(),
            _ => git(path, service, git_protocol, None).await?,
        };
        let (owned, copy) = (path.to_owned(), learned.clone());
        let version = protocol_version(git_protocol);
        let ours =
            blocking(move || info_refs_now(&owned, service, version, &copy).map_err(|LeaveToGit(why)| why))
                .await?;
        if ours != theirs {
            return Err(format!(
                "{} {git_protocol:?}: git says {:?}, this module {:?}",
                service.command(),
                String::from_utf8_lossy(&theirs),
                String::from_utf8_lossy(&ours)
            ));
        }
    }
    let mut lines = vec!["command=ls-refs\n", "object-format=sha1\n", "0001", "peel\n", "symrefs\n"];
    if learned.unborn {
        lines.push("unborn\n");
    }
    lines.extend(["ref-prefix HEAD\n", "ref-prefix refs/heads/\n", "ref-prefix refs/tags/\n", "0000"]);
    let request: Vec<u8> = lines
        .iter()
        .flat_map(|line| match *line {
            "0000" | "0001" => line.as_bytes().to_vec(),
            _ => pktline::encode(line.as_bytes()),
        })
        .collect();
    let Sniffed::LsRefs(parsed) = sniff(&request) else {
        return Err("ls-refs request not understood".into());
    };
    let theirs = git(path, Service::UploadPack, Some("version=2"), Some(&request)).await?;
    let (owned, copy) = (path.to_owned(), learned.clone());
    let ours = blocking(move || ls_refs_now(&owned, &parsed, &copy).map_err(|LeaveToGit(why)| why)).await?;
    if ours != theirs {
        return Err(format!(
            "ls-refs: git says {:?}, this module {:?}",
            String::from_utf8_lossy(&theirs),
            String::from_utf8_lossy(&ours)
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| e.to_string())?
}

/// Git's standard output for `service` on `path` as the server runs it: the advertisement
/// without `input`, the stateless-rpc answer to `input` with it.
async fn git(
    path: &Path,
    service: Service,
    git_protocol: Option<&str>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut child = command(service, path, git_protocol, input.is_none())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    if let Some(input) = input {
        stdin.write_all(input).await.map_err(|e| e.to_string())?;
    }
    drop(stdin);
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "git {} failed: {}",
            service.command(),
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output.stdout)
}

// ---------------------------------------------------------------------------------------
// A repository's refs, read as git reads them.

/// A bare repository this module can read exactly as git does.
struct Repo {
    path: PathBuf,
    git: git2::Repository,
}

impl Repo {
    /// Opens the repository at `path` when git serving `service` would read that very
    /// repository with nothing in it changing what git shows.
    fn open(path: &Path, service: Service) -> Exact<Self> {
        // git tries `<path>/.git` before `<path>`.
        if path.join(".git").symlink_metadata().is_ok() {
            return leave("a .git inside the repository");
        }
        if !path.join("objects").is_dir() || !path.join("refs").is_dir() {
            return leave("not a repository");
        }
        // Other ref storage, a linked worktree, shallow lines in the advertisement.
        for odd in ["reftable", "commondir", "shallow", "info/grafts"] {
            if path.join(odd).symlink_metadata().is_ok() {
                return leave(format!("the repository has {odd}"));
            }
        }
        // receive-pack advertises the alternates' refs as `.have` lines.
        if service == Service::ReceivePack && super::smart_http::has_alternates(path) {
            return leave("the repository has alternates");
        }
        config_is_plain(&path.join("config"))?;
        let git = git2::Repository::open_bare(path)?;
        Ok(Self { path: path.to_owned(), git })
    }

    /// HEAD and the refs git shows, with their objects checked and tags peeled.
    fn snapshot(&self) -> Exact<Snapshot> {
        let stored = read_refs(&self.path)?;
        let head = read_head(&self.path.join("HEAD"))?;
        let mut objects = Objects { odb: self.git.odb()?, seen: HashMap::new() };
        let mut refs = Vec::with_capacity(stored.len());
        let hidden = HIDDEN_PREFIX.trim_end_matches('/');
        for (name, stored) in &stored {
            if is_hidden(name) {
                continue;
            }
            // git also drops packed refs that merely start with the hidden prefix
            // (`refs/graspy`), in receive-pack and ls-refs but not in upload-pack's v0.
            if name.starts_with(hidden) {
                return leave(format!("{name} starts like the hidden refs"));
            }
            let shown = objects.show(stored.oid)?;
            // git takes a packed ref's peeled value from packed-refs when that file has it.
            if stored.packed_peel.is_some_and(|known| known != shown.peeled) {
                return leave(format!("packed-refs peels {name} otherwise"));
            }
            refs.push((name.clone(), shown));
        }
        let head = match head {
            HeadFile::Detached(oid) => Head::Detached(objects.show(oid)?),
            HeadFile::Symbolic(target) if is_hidden(&target) => return leave("HEAD names a hidden ref"),
            HeadFile::Symbolic(target) => {
                let shown = match stored.get(&target) {
                    Some(stored) => Some(objects.show(stored.oid)?),
                    None => None,
                };
                Head::Symbolic { target, shown }
            }
        };
        Ok(Snapshot { head, refs })
    }
}

/// Only config that leaves git's advertisements as learned on the scratch repository: no
/// includes, no extensions (object format, ref storage), nothing of `transfer`, `lsrefs`
/// or `protocol`, and of `uploadpack` and `receive` only [`SERVING_SETTINGS`] as they are.
fn config_is_plain(path: &Path) -> Exact<()> {
    let config = git2::Config::open(path)?;
    let mut odd = None;
    config.entries(None)?.for_each(|entry| {
        let name = entry.name().ok().map(str::to_ascii_lowercase);
        // A key without `=` is a boolean true; git2 panics when asked for its value.
        let value = if entry.has_value() { entry.value().ok() } else { None };
        let plain = match &name {
            Some(name) => match name.split('.').next().unwrap_or_default() {
                "include" | "includeif" | "extensions" | "transfer" | "lsrefs" | "uploadpackfilter"
                | "protocol" => false,
                "uploadpack" | "receive" => SERVING_SETTINGS
                    .iter()
                    .any(|(key, v)| key.eq_ignore_ascii_case(name) && Some(*v) == value),
                "core" if name == "core.repositoryformatversion" => matches!(value, Some("0" | "1")),
                _ => true,
            },
            None => false,
        };
        if !plain && odd.is_none() {
            odd = Some(format!("{}={}", name.unwrap_or_default(), value.unwrap_or_default()));
        }
    })?;
    match odd {
        Some(entry) => leave(format!("config {entry}")),
        None => Ok(()),
    }
}

/// A ref git hides from both services (`uploadpack.hideRefs` and `receive.hideRefs` are
/// [`HIDDEN_PREFIX`]; git drops the trailing slash and matches whole components).
fn is_hidden(name: &str) -> bool {
    let prefix = HIDDEN_PREFIX.trim_end_matches('/');
    name.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What HEAD holds.
enum HeadFile {
    Detached(Oid),
    Symbolic(String),
}

fn read_head(path: &Path) -> Exact<HeadFile> {
    if !path.symlink_metadata()?.is_file() {
        return leave("HEAD is not a file");
    }
    let text = String::from_utf8(std::fs::read(path)?).map_err(|_| LeaveToGit("HEAD is not UTF-8".into()))?;
    let Some(line) = text.strip_suffix('\n') else { return leave("HEAD has no newline") };
    if let Some(target) = line.strip_prefix("ref: ") {
        return match is_ref_name(target) {
            true => Ok(HeadFile::Symbolic(target.to_owned())),
            false => leave(format!("HEAD names {target:?}")),
        };
    }
    Ok(HeadFile::Detached(parse_oid(line)?))
}

/// HEAD (its target or object id) and every ref with its object id, read as the
/// advertisement reads them (loose over packed, in name order), hidden refs included: what
/// the refs say, not how they are stored. `None` when the repository holds anything git
/// would have to interpret (the pack cache then leaves that repository uncached).
pub(crate) fn ref_values(path: &Path) -> Option<Vec<(String, String)>> {
    let head = match read_head(&path.join("HEAD")).ok()? {
        HeadFile::Detached(oid) => oid.to_string(),
        HeadFile::Symbolic(target) => format!("ref: {target}"),
    };
    let refs = read_refs(path).ok()?;
    let mut values = Vec::with_capacity(refs.len() + 1);
    values.push(("HEAD".to_owned(), head));
    values.extend(refs.into_iter().map(|(name, stored)| (name, stored.oid.to_string())));
    Some(values)
}

/// A ref as stored: its object, and the peeled value git takes from packed-refs instead
/// of the object database when that file records it (`Some(None)`: not a tag).
#[derive(Debug, Clone, Copy)]
struct Stored {
    oid: Oid,
    packed_peel: Option<Option<Oid>>,
}

/// Every ref under `refs/`, loose ones overriding packed ones, in git's order (byte order
/// of the names). Loose refs are read first, as git reads them: a `git pack-refs` running
/// meanwhile moves refs from loose files into packed-refs, never the other way.
fn read_refs(path: &Path) -> Exact<BTreeMap<String, Stored>> {
    let mut refs = BTreeMap::new();
    read_loose_refs(&path.join("refs"), "refs/", &mut refs)?;
    for (name, stored) in read_packed_refs(&path.join("packed-refs"))? {
        refs.entry(name).or_insert(stored);
    }
    Ok(refs)
}

fn read_packed_refs(path: &Path) -> Exact<BTreeMap<String, Stored>> {
    let mut refs = BTreeMap::new();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(refs),
        Err(e) => return Err(e.into()),
    };
    let text = String::from_utf8(bytes).map_err(|_| LeaveToGit("packed-refs is not UTF-8".into()))?;
    if text.is_empty() {
        return Ok(refs);
    }
    let Some(body) = text.strip_suffix('\n') else { return leave("packed-refs has no final newline") };
    let mut lines = body.split('\n').peekable();
    let (mut fully_peeled, mut tags_peeled) = (false, false);
    if let Some(header) = lines.next_if(|line| line.starts_with('#')) {
        let Some(traits) = header.strip_prefix("# pack-refs with:") else {
            return leave("packed-refs has an unknown header");
        };
        fully_peeled = traits.split(' ').any(|t| t == "fully-peeled");
        tags_peeled = traits.split(' ').any(|t| t == "peeled");
    }
    // The ref the next `^` line may peel.
    let mut last: Option<String> = None;
    for line in lines {
        if let Some(peeled) = line.strip_prefix('^') {
            let peeled = parse_oid(peeled)?;
            let Some(stored) = last.take().and_then(|name| refs.get_mut(&name)) else {
                return leave("a peeled line in packed-refs follows no ref");
            };
            stored.packed_peel = Some(Some(peeled));
            continue;
        }
        let Some((oid, name)) = line.split_once(' ') else { return leave("odd line in packed-refs") };
        if !is_ref_name(name) {
            return leave(format!("packed ref {name:?}"));
        }
        let knows_peeled = fully_peeled || (tags_peeled && name.starts_with("refs/tags/"));
        let stored = Stored { oid: parse_oid(oid)?, packed_peel: knows_peeled.then_some(None) };
        if refs.insert(name.to_owned(), stored).is_some() {
            return leave(format!("{name} is packed twice"));
        }
        last = Some(name.to_owned());
    }
    Ok(refs)
}

fn read_loose_refs(dir: &Path, prefix: &str, refs: &mut BTreeMap<String, Stored>) -> Exact<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(file_name) = entry.file_name().into_string() else {
            return leave("a ref file name is not UTF-8");
        };
        // git skips these too: dot files and the lock files of updates in progress.
        if file_name.starts_with('.') || file_name.ends_with(".lock") {
            continue;
        }
        let name = format!("{prefix}{file_name}");
        let kind = entry.file_type()?;
        if kind.is_dir() {
            read_loose_refs(&entry.path(), &format!("{name}/"), refs)?;
        } else if kind.is_file() {
            if !is_ref_name(&name) {
                return leave(format!("loose ref {name:?}"));
            }
            let contents = std::fs::read(entry.path())?;
            // A symbolic ref, or anything else git would have to make sense of.
            let Some(oid) = contents.strip_suffix(b"\n").and_then(|hex| std::str::from_utf8(hex).ok()) else {
                return leave(format!("{name} holds no object id"));
            };
            refs.insert(name, Stored { oid: parse_oid(oid)?, packed_peel: None });
        } else {
            return leave(format!("{name} is neither a file nor a directory"));
        }
    }
    Ok(())
}

/// 40 lowercase hex digits (what git writes; anything else is left to git).
fn parse_oid(hex: &str) -> Exact<Oid> {
    if hex.len() != 40 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return leave(format!("not an object id: {hex:?}"));
    }
    Ok(Oid::from_str(hex)?)
}

/// Longer ref names are left to git (a pkt-line holds at most 65516 bytes).
const MAX_REF_NAME: usize = 4096;

/// A name under `refs/` that git's `check_refname_format` accepts, so git shows the ref
/// rather than skipping it as broken.
fn is_ref_name(name: &str) -> bool {
    name.len() <= MAX_REF_NAME
        && name.starts_with("refs/")
        && !name.ends_with('.')
        && !name.contains("..")
        && !name.contains("@{")
        && name.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && !part.ends_with(".lock"))
        && name
            .bytes()
            .all(|b| b > b' ' && b != 0x7f && !matches!(b, b'~' | b'^' | b':' | b'?' | b'*' | b'[' | b'\\'))
}

/// A ref's object as the advertisement shows it.
#[derive(Debug, Clone, Copy)]
struct Shown {
    oid: Oid,
    /// What an annotated tag peels to (through tags of tags).
    peeled: Option<Oid>,
}

/// Tag chains longer than this are left to git.
const MAX_TAG_CHAIN: usize = 16;

/// Object lookups, each object once.
struct Objects<'r> {
    odb: git2::Odb<'r>,
    seen: HashMap<Oid, Shown>,
}

impl Objects<'_> {
    /// The object must exist (git shows refs to missing objects; that is left to git).
    fn show(&mut self, oid: Oid) -> Exact<Shown> {
        if let Some(shown) = self.seen.get(&oid) {
            return Ok(*shown);
        }
        let (_, kind) =
            self.odb.read_header(oid).map_err(|e| LeaveToGit(format!("object {oid}: {}", e.message())))?;
        let peeled = match kind {
            ObjectType::Tag => Some(self.peel(oid)?),
            _ => None,
        };
        let shown = Shown { oid, peeled };
        self.seen.insert(oid, shown);
        Ok(shown)
    }

    /// Follows tags to the first object that is not one, as git does, checking on the way
    /// that every object is the type its tag says (git trusts the tag; a lie is left to it).
    fn peel(&self, mut oid: Oid) -> Exact<Oid> {
        for _ in 0..MAX_TAG_CHAIN {
            let tag = self.odb.read(oid)?;
            let Some((target, declared)) = tag_target(tag.data()) else {
                return leave(format!("tag {oid} does not parse"));
            };
            let (_, actual) = self.odb.read_header(target)?;
            if actual != declared {
                return leave(format!("tag {oid} names a {actual} as a {declared}"));
            }
            if declared != ObjectType::Tag {
                return Ok(target);
            }
            oid = target;
        }
        leave("a long chain of tags")
    }
}

/// The object and type a tag names, when the tag passes the checks git's tag parser makes
/// before it trusts them (`object`, `type` and a `tag` line, a minimum size).
fn tag_target(data: &[u8]) -> Option<(Oid, ObjectType)> {
    if data.len() < 40 + 24 {
        return None;
    }
    let rest = data.strip_prefix(b"object ")?;
    let hex = std::str::from_utf8(rest.get(..40)?).ok()?;
    let oid = parse_oid(hex).ok()?;
    let rest = rest[40..].strip_prefix(b"\n")?.strip_prefix(b"type ")?;
    let end = rest.iter().position(|b| *b == b'\n')?;
    let kind = match &rest[..end] {
        b"commit" => ObjectType::Commit,
        b"tree" => ObjectType::Tree,
        b"blob" => ObjectType::Blob,
        b"tag" => ObjectType::Tag,
        _ => return None,
    };
    rest[end + 1..].strip_prefix(b"tag ")?.contains(&b'\n').then_some((oid, kind))
}

/// What git shows of a repository.
struct Snapshot {
    head: Head,
    /// The refs git shows (hidden ones left out), in git's order.
    refs: Vec<(String, Shown)>,
}

enum Head {
    Detached(Shown),
    /// `shown` is `None` while the branch is unborn.
    Symbolic {
        target: String,
        shown: Option<Shown>,
    },
}

// ---------------------------------------------------------------------------------------
// Protocol v0 (and v1, which only puts a version line first).

/// Ref lines, the first carrying the capabilities (or, without refs, the
/// `capabilities^{}` line), then a flush.
struct V0Lines<'o> {
    out: &'o mut Vec<u8>,
    caps: Option<String>,
}

impl V0Lines<'_> {
    fn line(&mut self, name: &str, shown: Shown, peel: bool) {
        let line = match self.caps.take() {
            Some(caps) => format!("{} {name}\0{caps}\n", shown.oid),
            None => format!("{} {name}\n", shown.oid),
        };
        self.out.extend(pktline::encode(line.as_bytes()));
        if let (true, Some(peeled)) = (peel, shown.peeled) {
            self.out.extend(pktline::encode(format!("{peeled} {name}^{{}}\n").as_bytes()));
        }
    }

    fn finish(self) {
        if let Some(caps) = self.caps {
            self.out.extend(pktline::encode(format!("{ZERO_OID} capabilities^{{}}\0{caps}\n").as_bytes()));
        }
        self.out.extend_from_slice(FLUSH);
    }
}

/// HEAD (when it resolves) first, then the refs with their peeled tags.
fn upload_pack_v0(snapshot: &Snapshot, learned: &Learned, out: &mut Vec<u8>) {
    let (before, after) = &learned.upload;
    let (head, symref) = match &snapshot.head {
        Head::Detached(shown) => (Some(*shown), String::new()),
        Head::Symbolic { target, shown: Some(shown) } => (Some(*shown), format!(" symref=HEAD:{target}")),
        Head::Symbolic { shown: None, .. } => (None, String::new()),
    };
    let mut lines = V0Lines { out, caps: Some(format!("{before}{symref}{after}")) };
    if let Some(head) = head {
        lines.line("HEAD", head, true);
    }
    for (name, shown) in &snapshot.refs {
        lines.line(name, *shown, true);
    }
    lines.finish();
}

/// The refs only: no HEAD, no peeled tags.
fn receive_pack_v0(snapshot: &Snapshot, learned: &Learned, out: &mut Vec<u8>) {
    let mut lines = V0Lines { out, caps: Some(learned.receive.clone()) };
    for (name, shown) in &snapshot.refs {
        lines.line(name, *shown, false);
    }
    lines.finish();
}

// ---------------------------------------------------------------------------------------
// Protocol v2 `ls-refs`.

/// An `ls-refs` command this module answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsRefs {
    symrefs: bool,
    peel: bool,
    unborn: bool,
    prefixes: Vec<String>,
}

/// How much of a request is read to find an `ls-refs` command; a longer one goes to git.
pub const MAX_LS_REFS_REQUEST: usize = 64 * 1024;

/// Longer `ref-prefix` arguments go to git.
const MAX_PREFIX: usize = 1024;

/// Reads the start of a protocol v2 upload-pack request from `body`, as far as needed to
/// tell whether it is an `ls-refs` command answered here (at most about
/// [`MAX_LS_REFS_REQUEST`] bytes). Returns the bytes read, which belong in front of the
/// rest of the body when git gets the request after all, and the command.
pub async fn read_ls_refs<R: AsyncRead + Unpin + ?Sized>(
    body: &mut R,
) -> std::io::Result<(Vec<u8>, Option<LsRefs>)> {
    let mut read = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match sniff(&read) {
            Sniffed::LsRefs(request) => return Ok((read, Some(request))),
            Sniffed::ToGit => return Ok((read, None)),
            Sniffed::NeedMore if read.len() >= MAX_LS_REFS_REQUEST => return Ok((read, None)),
            Sniffed::NeedMore => {}
        }
        let n = body.read(&mut chunk).await?;
        if n == 0 {
            return Ok((read, None));
        }
        read.extend_from_slice(&chunk[..n]);
    }
}

/// What the first bytes of a v2 request are.
#[derive(Debug, PartialEq, Eq)]
enum Sniffed {
    NeedMore,
    /// Another command, or anything this module does not answer exactly as git.
    ToGit,
    LsRefs(LsRefs),
}

/// Parses a v2 request as git's `serve` and `ls-refs` do, accepting only what git
/// accepts and this module reproduces: `command=ls-refs`, `agent=…` and
/// `object-format=sha1` before the delimiter, `symrefs`, `peel`, `unborn` and
/// `ref-prefix <prefix>` after it, then a flush (whatever follows it git never reads).
fn sniff(request: &[u8]) -> Sniffed {
    let mut rest = request;
    let mut command = false;
    loop {
        match next_packet(&mut rest) {
            None => return Sniffed::NeedMore,
            Some(Some(Packet::Data(line))) => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                if !line.iter().all(|b| (b' '..0x7f).contains(b)) {
                    return Sniffed::ToGit;
                }
                match line.strip_prefix(b"command=") {
                    Some(b"ls-refs") if !command => command = true,
                    Some(_) => return Sniffed::ToGit,
                    None if line.starts_with(b"agent=") || line == b"object-format=sha1" => {}
                    None => return Sniffed::ToGit,
                }
            }
            // Without a command, git ends quietly; with one and no arguments, it lists.
            Some(Some(Packet::Flush)) if command => return Sniffed::LsRefs(LsRefs::default()),
            Some(Some(Packet::Delim)) if command => break,
            Some(_) => return Sniffed::ToGit,
        }
    }
    let mut ls_refs = LsRefs::default();
    loop {
        match next_packet(&mut rest) {
            None => return Sniffed::NeedMore,
            Some(Some(Packet::Data(line))) => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let Ok(line) = std::str::from_utf8(line) else { return Sniffed::ToGit };
                if line.chars().any(char::is_control) {
                    return Sniffed::ToGit;
                }
                match line {
                    "symrefs" => ls_refs.symrefs = true,
                    "peel" => ls_refs.peel = true,
                    "unborn" => ls_refs.unborn = true,
                    _ => match line.strip_prefix("ref-prefix ") {
                        Some(prefix) if prefix.len() <= MAX_PREFIX => {
                            ls_refs.prefixes.push(prefix.to_owned())
                        }
                        _ => return Sniffed::ToGit,
                    },
                }
            }
            Some(Some(Packet::Flush)) => return Sniffed::LsRefs(ls_refs),
            Some(_) => return Sniffed::ToGit,
        }
    }
}

/// A pkt-line.
#[derive(Debug, PartialEq, Eq)]
enum Packet<'a> {
    Flush,
    Delim,
    ResponseEnd,
    Data(&'a [u8]),
}

/// The next packet of `rest`, advancing it: `None` when it is not all there yet,
/// `Some(None)` when it is not a pkt-line (or an empty one, which git refuses here).
fn next_packet<'a>(rest: &mut &'a [u8]) -> Option<Option<Packet<'a>>> {
    let header = rest.get(..4)?;
    let Some(length) = std::str::from_utf8(header).ok().and_then(|h| usize::from_str_radix(h, 16).ok())
    else {
        return Some(None);
    };
    let packet = match length {
        0 => Packet::Flush,
        1 => Packet::Delim,
        2 => Packet::ResponseEnd,
        3 | 4 => return Some(None),
        _ => Packet::Data(rest.get(4..length)?),
    };
    *rest = &rest[length.max(4)..];
    Some(Some(packet))
}

/// All packets of `bytes`, when it is nothing but complete pkt-lines.
fn packets(mut bytes: &[u8]) -> Option<Vec<Packet<'_>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        out.push(next_packet(&mut bytes)??);
    }
    Some(out)
}

/// HEAD, then the refs under each of git's "longest prefixes" of the `ref-prefix`
/// arguments, each line filtered by the arguments themselves, then a flush.
fn ls_refs_answer(snapshot: &Snapshot, request: &LsRefs) -> Vec<u8> {
    let mut out = Vec::new();
    let matches = |name: &str| {
        request.prefixes.is_empty() || request.prefixes.iter().any(|p| name.starts_with(p.as_str()))
    };
    let mut line = |name: &str, shown: Option<Shown>, symref: Option<&str>| {
        let mut text = match shown {
            Some(shown) => format!("{} {name}", shown.oid),
            None => format!("unborn {name}"),
        };
        if let (true, Some(target)) = (request.symrefs, symref) {
            text.push_str(&format!(" symref-target:{target}"));
        }
        if let (true, Some(peeled)) = (request.peel, shown.and_then(|s| s.peeled)) {
            text.push_str(&format!(" peeled:{peeled}"));
        }
        text.push('\n');
        out.extend(pktline::encode(text.as_bytes()));
    };
    if matches("HEAD") {
        match &snapshot.head {
            Head::Detached(shown) => line("HEAD", Some(*shown), None),
            Head::Symbolic { target, shown: Some(shown) } => line("HEAD", Some(*shown), Some(target)),
            Head::Symbolic { target, shown: None } if request.unborn && request.symrefs => {
                line("HEAD", None, Some(target))
            }
            Head::Symbolic { shown: None, .. } => {}
        }
    }
    let roots = match request.prefixes.is_empty() {
        true => vec![Vec::new()],
        false => longest_prefixes(&request.prefixes),
    };
    for root in roots {
        let start = snapshot.refs.partition_point(|(name, _)| name.as_bytes() < root.as_slice());
        for (name, shown) in
            snapshot.refs[start..].iter().take_while(|(name, _)| name.as_bytes().starts_with(&root))
        {
            if matches(name) {
                line(name, Some(*shown), None);
            }
        }
    }
    out.extend_from_slice(FLUSH);
    out
}

/// The prefixes git walks the refs under for a set of `ref-prefix` arguments
/// (`find_longest_prefixes`): sorted, grouped by shared leading bytes, and cut where an
/// argument ends or a glob character starts. None is a prefix of another.
fn longest_prefixes(patterns: &[String]) -> Vec<Vec<u8>> {
    fn walk(out: &mut Vec<Vec<u8>>, prefix: &mut Vec<u8>, patterns: &[&[u8]]) {
        let at = prefix.len();
        if patterns.iter().any(|p| p.get(at).is_none_or(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))) {
            out.push(prefix.clone());
            return;
        }
        let mut start = 0;
        while start < patterns.len() {
            let byte = patterns[start][at];
            let end = start + patterns[start..].iter().take_while(|p| p[at] == byte).count();
            prefix.push(byte);
            walk(out, prefix, &patterns[start..end]);
            prefix.pop();
            start = end;
        }
    }
    let mut sorted: Vec<&[u8]> = patterns.iter().map(|p| p.as_bytes()).collect();
    sorted.sort();
    let mut out = Vec::new();
    walk(&mut out, &mut Vec::new(), &sorted);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bare repository made as the server makes them, changed with the real git.
    struct Fixture {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("repo.git");
            super::super::refs::init_bare(&path).unwrap();
            Self { _dir: dir, path }
        }

        fn git_with(&self, args: &[&str], input: &[u8]) -> String {
            use std::io::Write;
            let mut child = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&self.path)
                .args(args)
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        }

        fn git(&self, args: &[&str]) -> String {
            self.git_with(args, b"")
        }

        fn blob(&self, content: &str) -> String {
            self.git_with(&["hash-object", "-w", "--stdin"], content.as_bytes())
        }

        fn tree(&self, file: &str, content: &str) -> String {
            let blob = self.blob(content);
            self.git_with(&["mktree"], format!("100644 blob {blob}\t{file}\n").as_bytes())
        }

        fn commit(&self, message: &str, parents: &[&str]) -> String {
            let tree = self.tree("file", message);
            let mut args = vec!["commit-tree", &tree, "-m", message];
            for parent in parents {
                args.extend(["-p", parent]);
            }
            self.git(&args)
        }

        fn set(&self, name: &str, oid: &str) {
            self.git(&["update-ref", name, oid]);
        }

        fn file(&self, name: &str, contents: &str) {
            std::fs::write(self.path.join(name), contents).unwrap();
        }
    }

    const PROTOCOLS: [Option<&str>; 7] = [
        None,
        Some("version=0"),
        Some("version=1"),
        Some("version=2"),
        Some("version=2:object-format=sha1"),
        Some("version=1:version=0"),
        Some("version=3"),
    ];

    fn request(lines: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in lines {
            match *line {
                "0000" | "0001" => out.extend_from_slice(line.as_bytes()),
                _ => out.extend(pktline::encode(line.as_bytes())),
            }
        }
        out
    }

    /// `ls-refs` requests as git clients send them (clone, fetch, ls-remote) and odder ones.
    fn ls_refs_requests() -> Vec<Vec<u8>> {
        let caps = ["command=ls-refs\n", "agent=git/2.47.3\n", "object-format=sha1\n", "0001"];
        let with = |args: &[&str]| request(&[&caps[..], args, &["0000"]].concat());
        vec![
            with(&[
                "peel\n",
                "symrefs\n",
                "unborn\n",
                "ref-prefix HEAD\n",
                "ref-prefix refs/heads/\n",
                "ref-prefix refs/tags/\n",
            ]),
            with(&["symrefs\n", "peel\n", "unborn\n"]),
            with(&["symrefs\n", "unborn\n"]),
            with(&["unborn\n", "peel\n"]),
            with(&[]),
            request(&["command=ls-refs\n", "0000"]),
            request(&["command=ls-refs", "0001", "peel", "symrefs", "0000"]),
            with(&[
                "peel\n",
                "ref-prefix refs/nostr/\n",
                "ref-prefix refs/grasp/\n",
                "ref-prefix refs/tags/v\n",
            ]),
            with(&[
                "symrefs\n",
                "ref-prefix refs/heads/m\n",
                "ref-prefix refs/heads/\n",
                "ref-prefix refs/heads/main\n",
                "ref-prefix refs/heads/main\n",
            ]),
            with(&["ref-prefix \n", "peel\n"]),
            with(&["symrefs\n", "ref-prefix H\n", "ref-prefix refs/t*\n", "ref-prefix refs/heads/x\\\n"]),
            // `git fetch origin main`
            with(&[
                "peel\n",
                "symrefs\n",
                "ref-prefix main\n",
                "ref-prefix refs/main\n",
                "ref-prefix refs/tags/main\n",
                "ref-prefix refs/heads/main\n",
                "ref-prefix refs/remotes/main\n",
                "ref-prefix refs/remotes/main/HEAD\n",
                "ref-prefix refs/tags/\n",
            ]),
        ]
    }

    fn same(ours: &[u8], theirs: &[u8], what: &str) {
        assert!(
            ours == theirs,
            "{what}\ngit:\n{}\nin-process:\n{}",
            String::from_utf8_lossy(theirs).replace('\0', "\\0"),
            String::from_utf8_lossy(ours).replace('\0', "\\0")
        );
    }

    /// Every advertisement and every `ls-refs` request, in-process and by git: the same
    /// bytes, and none of them left to git.
    async fn assert_as_git(path: &Path, state: &str) {
        for service in [Service::UploadPack, Service::ReceivePack] {
            for protocol in PROTOCOLS {
                let what = format!("{state}: {} {protocol:?}", service.command());
                let theirs = git(path, service, protocol, None).await.unwrap();
                let ours =
                    info_refs(path, service, protocol).await.unwrap_or_else(|| panic!("{what}: left to git"));
                same(&ours, &theirs, &what);
            }
        }
        for request in ls_refs_requests() {
            let what = format!("{state}: ls-refs {:?}", String::from_utf8_lossy(&request));
            let Sniffed::LsRefs(parsed) = sniff(&request) else { panic!("{what}: not read as ls-refs") };
            let theirs = git(path, Service::UploadPack, Some("version=2"), Some(&request)).await.unwrap();
            let ours = ls_refs(path, &parsed).await.unwrap_or_else(|| panic!("{what}: left to git"));
            same(&ours, &theirs, &what);
        }
    }

    /// The advertisements that list refs, and `ls-refs`, are left to git; whatever is
    /// answered in-process is still git's answer.
    async fn assert_left_to_git(path: &Path, state: &str) {
        for service in [Service::UploadPack, Service::ReceivePack] {
            for protocol in PROTOCOLS {
                let what = format!("{state}: {} {protocol:?}", service.command());
                let ours = info_refs(path, service, protocol).await;
                let lists_refs = !(service == Service::UploadPack && protocol_version(protocol) == 2);
                if lists_refs {
                    assert!(ours.is_none(), "{what}: answered in-process");
                } else if let Some(ours) = ours {
                    same(&ours, &git(path, service, protocol, None).await.unwrap(), &what);
                }
            }
        }
        for request in ls_refs_requests() {
            let Sniffed::LsRefs(parsed) = sniff(&request) else { panic!("not read as ls-refs") };
            assert!(ls_refs(path, &parsed).await.is_none(), "{state}: ls-refs answered in-process");
        }
    }

    const PR: &str = "7f3c5c0e3b7c3f0b0a9e1e6f6b9f8d1c2b3a4d5e6f708192a3b4c5d6e7f80910";

    #[tokio::test]
    async fn an_empty_repository() {
        let repo = Fixture::new();
        assert_as_git(&repo.path, "empty").await;
        // Only hidden refs: still the empty form.
        let commit = repo.commit("waiting", &[]);
        repo.set(&format!("refs/grasp/waiting/{PR}"), &commit);
        assert_as_git(&repo.path, "hidden refs only").await;
    }

    #[tokio::test]
    async fn an_unborn_head_with_other_refs() {
        let repo = Fixture::new();
        let commit = repo.commit("one", &[]);
        repo.set("refs/heads/other", &commit);
        repo.set(&format!("refs/nostr/{PR}"), &commit);
        repo.git(&["symbolic-ref", "HEAD", "refs/heads/unborn"]);
        assert_as_git(&repo.path, "unborn HEAD").await;
        repo.git(&["pack-refs", "--all"]);
        assert_as_git(&repo.path, "unborn HEAD, refs packed").await;
    }

    #[tokio::test]
    async fn branches_tags_and_pull_request_refs_loose_packed_and_repacked() {
        let repo = Fixture::new();
        let one = repo.commit("one", &[]);
        let two = repo.commit("two", &[&one]);
        repo.set("refs/heads/main", &two);
        repo.git(&["symbolic-ref", "HEAD", "refs/heads/main"]);
        repo.set("refs/heads/feature/x", &one);
        repo.git(&["tag", "light", &one]);
        repo.git(&["tag", "-a", "-m", "v1", "v1", &one]);
        repo.git(&["tag", "-a", "-m", "tag of a tag", "v1-again", "v1"]);
        repo.git(&["tag", "-a", "-m", "tag of a tag of a tag", "v1-thrice", "v1-again"]);
        let tree = repo.tree("t", "tree");
        repo.git(&["tag", "-a", "-m", "a tree", "tree", &tree]);
        let blob = repo.blob("blob");
        repo.git(&["tag", "-a", "-m", "a blob", "blob", &blob]);
        repo.set(&format!("refs/nostr/{PR}"), &two);
        repo.set(&format!("refs/grasp/waiting/{}1", &PR[..63]), &one);
        assert_as_git(&repo.path, "loose").await;

        repo.git(&["pack-refs"]);
        assert_as_git(&repo.path, "tags packed").await;
        repo.git(&["pack-refs", "--all"]);
        assert_as_git(&repo.path, "all packed").await;

        let three = repo.commit("three", &[&two]);
        repo.set("refs/heads/main", &three);
        repo.git(&["update-ref", "-d", "refs/heads/feature/x"]);
        repo.git(&["tag", "-a", "-m", "v3", "v3", &three]);
        assert_as_git(&repo.path, "loose over packed").await;

        repo.git(&["gc", "--quiet", "--prune=now"]);
        assert!(std::fs::read_dir(repo.path.join("objects/pack")).unwrap().count() > 0);
        assert_as_git(&repo.path, "after gc").await;

        let four = repo.commit("four", &[&three]);
        repo.set("refs/heads/next", &four);
        repo.git(&["tag", "-a", "-m", "v4", "v4", &four]);
        repo.git(&["repack", "-d", "--geometric=2", "--write-midx", "--write-bitmap-index", "--quiet"]);
        assert_as_git(&repo.path, "after a geometric repack").await;

        // packed-refs as older gits wrote it: tags peeled, other refs not.
        let packed = std::fs::read_to_string(repo.path.join("packed-refs")).unwrap();
        let (header, body) = packed.split_once('\n').unwrap();
        assert!(header.contains("fully-peeled"), "{header}");
        repo.file("packed-refs", &format!("# pack-refs with: peeled \n{body}"));
        assert_as_git(&repo.path, "packed-refs peeled").await;
        // No header: unsorted, nothing known peeled but the `^` lines.
        let mut lines: Vec<&str> = body.lines().collect();
        let mut records: Vec<String> = Vec::new();
        for line in lines.drain(..) {
            match line.strip_prefix('^') {
                Some(_) => records.last_mut().unwrap().push_str(&format!("\n{line}")),
                None => records.push(line.to_owned()),
            }
        }
        records.reverse();
        repo.file("packed-refs", &format!("{}\n", records.join("\n")));
        assert_as_git(&repo.path, "packed-refs without header").await;
    }

    #[tokio::test]
    async fn detached_head_and_head_on_a_tag() {
        let repo = Fixture::new();
        let one = repo.commit("one", &[]);
        let two = repo.commit("two", &[&one]);
        repo.set("refs/heads/main", &two);
        repo.git(&["tag", "-a", "-m", "v1", "v1", &one]);
        repo.git(&["update-ref", "--no-deref", "HEAD", &one]);
        assert_as_git(&repo.path, "detached HEAD").await;
        // git refuses to put a tag there itself, but reads it.
        let tag = repo.git(&["rev-parse", "v1"]);
        repo.file("HEAD", &format!("{tag}\n"));
        assert_as_git(&repo.path, "HEAD detached at an annotated tag").await;
        repo.git(&["symbolic-ref", "HEAD", "refs/tags/v1"]);
        assert_as_git(&repo.path, "HEAD naming a tag").await;
    }

    #[tokio::test]
    async fn ref_names_in_gits_order() {
        let repo = Fixture::new();
        let one = repo.commit("one", &[]);
        for name in ["x-y", "x/y", "x.y", "x0", "x/y-z/w", "Z", "\u{fc}ber", "a@b", "x+y", "_"] {
            repo.set(&format!("refs/heads/{name}"), &one);
        }
        repo.set("refs/heads/main", &one);
        repo.set("refs/notes/commits", &one);
        repo.set("refs/gras", &one);
        // Per-worktree refs; a bare repository's are its own.
        for name in ["refs/bisect/bad", "refs/worktree/x", "refs/rewritten/y", "refs/stash"] {
            repo.set(name, &one);
        }
        assert_as_git(&repo.path, "names").await;
        repo.git(&["pack-refs", "--all"]);
        repo.set("refs/heads/x/a", &one);
        repo.set("refs/heads/x-a", &one);
        assert_as_git(&repo.path, "names, some packed").await;
    }

    #[tokio::test]
    async fn what_cannot_be_reproduced_is_left_to_git() {
        let populated = || {
            let repo = Fixture::new();
            let one = repo.commit("one", &[]);
            repo.set("refs/heads/main", &one);
            repo.git(&["symbolic-ref", "HEAD", "refs/heads/main"]);
            repo.git(&["tag", "-a", "-m", "v1", "v1", &one]);
            (repo, one)
        };
        let config = |settings: &[(&str, &str)]| {
            let (repo, _) = populated();
            for (key, value) in settings {
                repo.git(&["config", "--add", key, value]);
            }
            repo
        };
        for settings in [
            &[("uploadpack.hideRefs", "refs/nostr/")][..],
            &[("receive.hideRefs", "refs/tags")],
            &[("transfer.hideRefs", "refs/grasp/")],
            &[("uploadpack.allowAnySHA1InWant", "true")],
            &[("receive.advertisePushOptions", "true")],
            &[("lsrefs.unborn", "ignore")],
            &[("core.repositoryformatversion", "1"), ("extensions.objectFormat", "sha1")],
        ] {
            let repo = config(settings);
            assert_left_to_git(&repo.path, &format!("{settings:?}")).await;
        }

        let (repo, _) = populated();
        let included = repo.path.join("more.config");
        std::fs::write(&included, "[transfer]\n\thideRefs = refs/heads/\n").unwrap();
        repo.git(&["config", "include.path", included.to_str().unwrap()]);
        assert_left_to_git(&repo.path, "an include").await;

        let (repo, _) = populated();
        let included = repo.path.join("more.config");
        std::fs::write(&included, "[uploadpack]\n\thideRefs = refs/heads/\n").unwrap();
        let condition = format!("includeIf.gitdir:{}/.path", repo.path.display());
        repo.git(&["config", &condition, included.to_str().unwrap()]);
        assert_left_to_git(&repo.path, "a conditional include").await;

        let (repo, _) = populated();
        repo.git(&["symbolic-ref", "refs/heads/alias", "refs/heads/main"]);
        assert_left_to_git(&repo.path, "a symbolic ref under refs/").await;

        let (repo, _) = populated();
        repo.file("refs/heads/gone", &format!("{}\n", "1".repeat(40)));
        assert_left_to_git(&repo.path, "a ref to a missing object").await;

        let (repo, one) = populated();
        repo.set("refs/graspy/x", &one);
        assert_left_to_git(&repo.path, "a ref named like the hidden ones").await;
        repo.git(&["pack-refs", "--all"]);
        assert_left_to_git(&repo.path, "a packed ref named like the hidden ones").await;

        let (repo, one) = populated();
        repo.file("shallow", &format!("{one}\n"));
        assert_left_to_git(&repo.path, "a shallow repository").await;

        let (repo, one) = populated();
        // A tag that says it tags a tree but tags a commit (git trusts the tag).
        let lie = format!("object {one}\ntype tree\ntag lie\ntagger t <t@example.invalid> 0 +0000\n\nlie\n");
        let tag =
            repo.git_with(&["hash-object", "-t", "tag", "-w", "--stdin", "--literally"], lie.as_bytes());
        repo.set("refs/tags/lie", &tag);
        assert_left_to_git(&repo.path, "a lying tag").await;

        let dir = tempfile::tempdir().unwrap();
        let reftable = dir.path().join("reftable.git");
        let out = std::process::Command::new("git")
            .args(["init", "--bare", "--quiet", "--ref-format=reftable"])
            .arg(&reftable)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        for (key, value) in SERVING_SETTINGS {
            let out = std::process::Command::new("git")
                .arg("--git-dir")
                .arg(&reftable)
                .args(["config", key, value])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        assert_left_to_git(&reftable, "reftable").await;

        let missing = dir.path().join("missing.git");
        assert_left_to_git(&missing, "no repository").await;
    }

    #[tokio::test]
    async fn the_server_answer_says_who_made_it() {
        let repo = Fixture::new();
        let one = repo.commit("one", &[]);
        repo.set("refs/heads/main", &one);
        for (service, protocol) in [(Service::UploadPack, None), (Service::ReceivePack, Some("version=1"))] {
            let (body, by) = advertisement(&repo.path, service, protocol).await.unwrap();
            assert_eq!(by, AnsweredBy::Grasp);
            let header = format!("# service=git-{}\n", service.command());
            let theirs = [
                pktline::encode(header.as_bytes()),
                FLUSH.to_vec(),
                git(&repo.path, service, protocol, None).await.unwrap(),
            ]
            .concat();
            same(&body, &theirs, "in-process");
        }
        repo.git(&["config", "--add", "uploadpack.hideRefs", "refs/heads/"]);
        let (body, by) = advertisement(&repo.path, Service::UploadPack, None).await.unwrap();
        assert_eq!(by, AnsweredBy::Git);
        assert!(!String::from_utf8_lossy(&body).contains("refs/heads/main"));
    }

    #[test]
    fn requests_other_than_plain_ls_refs_go_to_git() {
        let caps = ["command=ls-refs\n", "agent=git/2.47.3\n", "object-format=sha1\n"];
        let to_git: Vec<Vec<&str>> = vec![
            vec!["command=fetch\n", "0001", "done\n", "0000"],
            vec!["command=ls-refs\n", "command=ls-refs\n", "0000"],
            vec!["command=ls-refs=x\n", "0000"],
            vec!["agent=git/2.47.3\n", "0000"],
            vec!["0000"],
            vec!["command=ls-refs\n", "object-format=sha256\n", "0000"],
            vec!["command=ls-refs\n", "session-id=abc\n", "0000"],
            vec!["command=ls-refs\n", "server-option=x\n", "0000"],
            [&caps[..], &["0001", "peel\n", "follow\n", "0000"]].concat(),
            [&caps[..], &["0001", "ref-prefix\n", "0000"]].concat(),
            [&caps[..], &["0001", "peel\n", "0001", "0000"]].concat(),
            [&caps[..], &["0001", "ref-prefix refs/\u{1}x\n", "0000"]].concat(),
        ];
        for lines in to_git {
            assert_eq!(sniff(&request(&lines)), Sniffed::ToGit, "{lines:?}");
        }
        assert_eq!(sniff(b"0004"), Sniffed::ToGit);
        assert_eq!(sniff(b"zzzz"), Sniffed::ToGit);
        assert_eq!(sniff(b"0002"), Sniffed::ToGit);
        let long = format!("ref-prefix {}\n", "r".repeat(MAX_PREFIX + 1));
        assert_eq!(sniff(&request(&[&caps[..], &["0001", &long, "0000"]].concat())), Sniffed::ToGit);

        let whole =
            request(&[&caps[..], &["0001", "symrefs\n", "ref-prefix refs/heads/\n", "0000"]].concat());
        for end in 0..whole.len() {
            assert_eq!(sniff(&whole[..end]), Sniffed::NeedMore, "{end}");
        }
        let expected = LsRefs { symrefs: true, prefixes: vec!["refs/heads/".into()], ..LsRefs::default() };
        assert_eq!(sniff(&whole), Sniffed::LsRefs(expected.clone()));
        // git answers one request per POST and never reads what follows it.
        assert_eq!(
            sniff(&[whole.as_slice(), b"0014command=ls-refs\n0000"].concat()),
            Sniffed::LsRefs(expected)
        );
    }

    #[tokio::test]
    async fn reading_a_request_keeps_every_byte_it_took() {
        use futures::StreamExt;
        let trickle = |bytes: Vec<u8>| {
            let chunks = bytes.into_iter().map(|b| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b])));
            tokio_util::io::StreamReader::new(futures::stream::iter(chunks).boxed())
        };
        let ls = request(&["command=ls-refs\n", "0001", "peel\n", "0000"]);
        let mut body = trickle(ls.clone());
        let (read, parsed) = read_ls_refs(&mut body).await.unwrap();
        assert_eq!(read, ls);
        assert!(parsed.is_some_and(|r| r.peel));

        let mut fetch = request(&["command=fetch\n", "0001", "thin-pack\n"]);
        fetch.extend(std::iter::repeat_n(b'x', 100_000));
        let mut body = trickle(fetch.clone());
        let (read, parsed) = read_ls_refs(&mut body).await.unwrap();
        assert!(parsed.is_none());
        let mut rest = Vec::new();
        body.read_to_end(&mut rest).await.unwrap();
        assert_eq!([read, rest].concat(), fetch);

        // A request that never gets to the point is read up to the limit, then left to git.
        let endless = request(&["command=ls-refs\n", "0001"])
            .into_iter()
            .chain(std::iter::repeat_n(pktline::encode(b"ref-prefix refs/heads/x\n"), 10_000).flatten());
        let mut body = std::io::Cursor::new(endless.collect::<Vec<u8>>());
        let (read, parsed) = read_ls_refs(&mut body).await.unwrap();
        assert!(parsed.is_none());
        assert!(read.len() >= MAX_LS_REFS_REQUEST && read.len() < MAX_LS_REFS_REQUEST + 16 * 1024);
    }

    #[tokio::test]
    async fn other_hidden_refs_in_gits_config_are_noticed() {
        let repo = Fixture::new();
        assert_eq!(hidden_refs_are_ours(&repo.path).await, Ok(()));
        repo.git(&["config", "--add", "transfer.hideRefs", "refs/tags/"]);
        assert!(hidden_refs_are_ours(&repo.path).await.is_err());
    }

    #[test]
    fn the_protocol_version_is_the_highest_git_knows() {
        assert_eq!(protocol_version(None), 0);
        assert_eq!(protocol_version(Some("version=1")), 1);
        assert_eq!(protocol_version(Some("version=2:version=1")), 2);
        assert_eq!(protocol_version(Some("version=3")), 0);
        assert_eq!(protocol_version(Some("object-format=sha1:version=2")), 2);
    }
}
