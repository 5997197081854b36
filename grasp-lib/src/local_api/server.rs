//! The node side: a Unix socket served next to a frontend's own listener.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nostr::PublicKey;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::protocol::{self, ProtocolError, ReleasedId, RepositoryRef, Request, Response};
use crate::authorization::PushDecision;
use crate::config::Config;
use crate::git::pktline::RefUpdate;
use crate::git::RepoRef;
use crate::nip34::RepoIdentifier;
use crate::Grasp;

/// Connections served at once; more wait for a slot (hooks are short-lived).
const MAX_CONNECTIONS: usize = 64;

/// Where and how the socket is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalApiOptions {
    /// The socket's path.
    pub socket: PathBuf,
    /// Group allowed to connect (name or numeric id): the socket gets mode `0660` and this
    /// group. `None`: mode `0600`, only the node's own user.
    pub group: Option<String>,
    /// How long the node waits for a request line before closing the connection.
    pub idle_timeout: Duration,
}

impl LocalApiOptions {
    /// The options configured in `config`, or `None` when the local API is switched off.
    pub fn from_config(config: &Config) -> Option<Self> {
        config.local_api.then(|| Self {
            socket: config.local_api_socket_path(),
            group: config.local_api_group.clone(),
            idle_timeout: Duration::from_secs(10),
        })
    }
}

/// Why the socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process answers on the socket.
    #[error(
        "another process already serves the local API at {0} (is another node running on this data path?)"
    )]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; remove it or set local_api_socket to another path")]
    NotASocket(PathBuf),
    /// The configured group does not exist.
    #[error("local_api_group: no group named {0:?} on this system")]
    UnknownGroup(String),
    /// The path is too long for a Unix socket address.
    #[error(
        "local_api_socket: {0} is too long for a Unix socket (at most 100 bytes); choose a shorter path"
    )]
    PathTooLong(PathBuf),
    /// Creating, binding or securing the socket failed.
    #[error("cannot serve the local API at {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// A served socket. Dropping it stops accepting and removes the socket file.
#[derive(Debug)]
pub struct LocalApiServer {
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl LocalApiServer {
    /// Where the socket is.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for LocalApiServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Longest socket path we bind (the kernel's `sun_path` holds 108 bytes with its NUL; the
/// temporary name we bind first is a few bytes longer than the final one).
const MAX_SOCKET_PATH: usize = 100;

/// Serves the local API of `grasp` at `options.socket` until the returned handle is
/// dropped. Must run inside a Tokio runtime. A stale socket left by a crashed node is
/// replaced; a live one is an error.
pub async fn serve(grasp: Grasp, options: LocalApiOptions) -> Result<LocalApiServer, ServeError> {
    let socket = options.socket.clone();
    let io_error = |source| ServeError::Io { path: socket.clone(), source };
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ServeError::PathTooLong(socket));
    }
    let gid = options.group.as_deref().map(group_id).transpose()?;
    let parent = socket.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_error)?;
    match std::fs::symlink_metadata(&socket) {
        Ok(meta) if meta.file_type().is_socket() => {
            if UnixStream::connect(&socket).await.is_ok() {
                return Err(ServeError::InUse(socket));
            }
            std::fs::remove_file(&socket).map_err(io_error)?;
        }
        Ok(_) => return Err(ServeError::NotASocket(socket)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(e)),
    }
    // Bind in a directory only we can enter, fix mode and group, then move into place: the
    // socket is never reachable with the default (umask) mode.
    let private = parent.join(format!(".la-{:08x}", std::process::id() ^ rand_suffix()));
    std::fs::DirBuilder::new().mode(0o700).create(&private).map_err(io_error)?;
    let staged = private.join("s");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        if let Some(gid) = gid {
            std::os::unix::fs::chown(&staged, None, Some(gid))?;
        }
        std::fs::rename(&staged, &socket)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    let listener = bound.map_err(io_error)?;
    tracing::info!(socket = %socket.display(), group = ?options.group, "local API listening");
    let task = tokio::spawn(accept_loop(listener, grasp, options.idle_timeout));
    Ok(LocalApiServer { socket, task })
}

/// A few bits that differ between two binds in one process (tests start many nodes).
fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    nanos.subsec_nanos() ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(16)
}

fn group_id(group: &str) -> Result<u32, ServeError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(found)) => Ok(found.gid.as_raw()),
        _ => Err(ServeError::UnknownGroup(group.to_owned())),
    }
}

async fn accept_loop(listener: UnixListener, grasp: Grasp, idle_timeout: Duration) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "local API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let grasp = grasp.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &grasp, idle_timeout).await {
                tracing::debug!(error = %e, "local API connection ended with an error");
            }
            drop(slot);
        });
    }
}

/// Reads one line of at most `max` bytes. `Ok(None)` at a clean end of input.
pub(super) async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> io::Result<Option<Result<Vec<u8>, ProtocolError>>> {
    let mut line = Vec::new();
    let n = reader.take(max as u64 + 1).read_until(b'\n', &mut line).await?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        return Ok(Some(Ok(line)));
    }
    if line.len() > max {
        return Ok(Some(Err(ProtocolError::TooLarge(max))));
    }
    Ok(Some(Ok(line))) // the last line may lack its newline
}

async fn serve_connection(stream: UnixStream, grasp: &Grasp, idle_timeout: Duration) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let line =
            match tokio::time::timeout(idle_timeout, read_line(&mut reader, protocol::MAX_REQUEST_BYTES))
                .await
            {
                Err(_) => return Ok(()), // idle: the client went quiet
                Ok(result) => match result? {
                    None => return Ok(()),
                    Some(line) => line,
                },
            };
        let (response, close) = match line.and_then(|l| protocol::decode::<Request>(&l)) {
            Ok(request) => (handle(grasp, request).await, false),
            // After an oversized line the stream is out of step: answer and hang up.
            Err(e @ ProtocolError::TooLarge(_)) => (Response::Error { message: e.to_string() }, true),
            Err(e) => (Response::Error { message: e.to_string() }, false),
        };
        count(grasp, &response);
        write.write_all(&protocol::encode(&response)).await?;
        if close {
            return Ok(());
        }
    }
}

fn count(grasp: &Grasp, response: &Response) {
    let result = match response {
        Response::Authorized { .. } => "authorized",
        Response::Rejected { .. } => "rejected",
        Response::Processed { .. } => "processed",
        Response::Pong { .. } => "pong",
        Response::Error { .. } => "error",
    };
    grasp.metrics().local_api_requests.with_label_values(&[result]).inc();
}

/// Answers one request.
pub(super) async fn handle(grasp: &Grasp, request: Request) -> Response {
    match request {
        Request::Ping => Response::Pong { node_version: env!("CARGO_PKG_VERSION").to_owned() },
        Request::AuthorizePush { repository, updates, client } => {
            let (repo, updates) = match resolve(grasp, &repository, &updates) {
                Ok(found) => found,
                Err(reason) => return Response::Rejected { reason },
            };
            match grasp.admit_push(&repo, &updates, client).await {
                Ok(PushDecision::Authorized { state }) => {
                    Response::Authorized { state: state.map(|id| id.to_hex()) }
                }
                Ok(PushDecision::Rejected { reason, .. }) => Response::Rejected { reason },
                Err(e) => Response::Error { message: format!("could not authorize the push: {e}") },
            }
        }
        Request::PushReceived { repository, updates, client } => {
            let (repo, updates) = match resolve(grasp, &repository, &updates) {
                Ok(found) => found,
                Err(message) => return Response::Error { message },
            };
            let report = grasp.push_received(&repo, &updates, client).await;
            Response::Processed {
                released: report
                    .released
                    .iter()
                    .map(|(id, kind)| ReleasedId { id: id.to_hex(), kind: kind.as_str().to_owned() })
                    .collect(),
                aligned: report.aligned.len(),
                waiting: report.waiting.len(),
                errors: report.errors,
            }
        }
    }
}

/// The hosted repository and ref updates a request names, or why they are not acceptable.
fn resolve(
    grasp: &Grasp,
    repository: &RepositoryRef,
    updates: &[String],
) -> Result<(RepoRef, Vec<RefUpdate>), String> {
    let owner = PublicKey::parse(&repository.owner)
        .map_err(|_| format!("'{}' is not an npub or hex public key", repository.owner.escape_debug()))?;
    let identifier = RepoIdentifier::new(&repository.identifier).map_err(|e| e.to_string())?;
    let repo = RepoRef::new(owner, identifier);
    let path = grasp.repositories().path(&repo);
    if !grasp.repositories().exists(&repo) {
        return Err(format!(
            "{repo} is not hosted by this GRASP node (it has no repository at {}); publish an announcement \
             that lists this server first",
            path.display()
        ));
    }
    if let Some(git_dir) = &repository.git_dir {
        let same = match (git_dir.canonicalize(), path.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if !same {
            return Err(format!(
                "the pushed repository {} is not the node's repository for {repo} ({}); serve the node's \
                 git_data_path or link the repository there",
                git_dir.display(),
                path.display()
            ));
        }
    }
    let updates =
        updates.iter().map(|u| RefUpdate::parse(u).map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    Ok((repo, updates))
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use nostr::Keys;

    use super::*;
    use crate::local_api::LocalApiClient;
    use crate::store::StoreBackend;

    async fn node(dir: &Path) -> Grasp {
        let config = Config {
            domain: Some("127.0.0.1:1".into()),
            database_backend: StoreBackend::Memory,
            git_data_path: dir.join("repos"),
            relay_data_path: dir.join("relay"),
            ..Config::default()
        };
        Grasp::open(config).await.unwrap()
    }

    fn options(dir: &Path) -> LocalApiOptions {
        LocalApiOptions { socket: dir.join("api.sock"), group: None, idle_timeout: Duration::from_secs(5) }
    }

    /// Sends raw lines on one blocking connection and reads one answer per line.
    fn exchange(socket: &Path, lines: &[&[u8]]) -> Vec<String> {
        let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut answers = Vec::new();
        for line in lines {
            stream.write_all(line).unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            answers.push(answer);
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn socket_is_private_and_answers_malformed_requests_without_closing() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(node(dir.path()).await, options(dir.path())).await.unwrap();
        let mode = std::fs::metadata(server.socket()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let socket = server.socket().to_path_buf();
        let answers = tokio::task::spawn_blocking(move || {
            exchange(
                &socket,
                &[
                    b"garbage\n",
                    b"{\"version\":7,\"request\":\"ping\"}\n",
                    b"{\"version\":1,\"request\":\"authorize_push\",\"repository\":{\"owner\":\"nope\",\"identifier\":\"x\"},\"updates\":[]}\n",
                    b"{\"version\":1,\"request\":\"ping\"}\n",
                ],
            )
        })
        .await
        .unwrap();
        assert!(
            answers[0].contains("\"result\":\"error\"") && answers[0].contains("malformed"),
            "{}",
            answers[0]
        );
        assert!(answers[1].contains("unsupported protocol version 7"), "{}", answers[1]);
        assert!(
            answers[2].contains("\"result\":\"rejected\"") && answers[2].contains("not an npub"),
            "{}",
            answers[2]
        );
        assert!(answers[3].contains("\"result\":\"pong\""), "{}", answers[3]);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn oversized_requests_are_refused_and_the_connection_closed() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve(node(dir.path()).await, options(dir.path())).await.unwrap();
        let socket = server.socket().to_path_buf();
        let (answer, rest) = tokio::task::spawn_blocking(move || {
            let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let big = vec![b'x'; protocol::MAX_REQUEST_BYTES + 10];
            let _ = stream.write_all(&big); // the node may stop reading early
            let mut reader = BufReader::new(stream);
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            let mut rest = String::new();
            let _ = reader.read_line(&mut rest);
            (answer, rest)
        })
        .await
        .unwrap();
        assert!(answer.contains("larger than"), "{answer}");
        assert!(rest.is_empty(), "closed after the refusal");
        // the node still serves
        let client = LocalApiClient::new(server.socket(), Duration::from_secs(20));
        let version = tokio::task::spawn_blocking(move || client.ping()).await.unwrap().unwrap();
        assert_eq!(version, env!("CARGO_PKG_VERSION"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn stale_sockets_are_replaced_live_ones_and_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let grasp = node(dir.path()).await;
        let mut first = serve(grasp.clone(), options(dir.path())).await.unwrap();
        assert!(matches!(serve(grasp.clone(), options(dir.path())).await, Err(ServeError::InUse(_))));
        // a crashed node leaves its socket behind: simulate by leaking the file
        first.task.abort();
        let _ = (&mut first.task).await;
        std::mem::forget(first);
        let second = serve(grasp.clone(), options(dir.path())).await.unwrap();
        let path = second.socket().to_path_buf();
        drop(second);
        assert!(!path.exists(), "dropping the server removes its socket");
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(matches!(serve(grasp.clone(), options(dir.path())).await, Err(ServeError::NotASocket(_))));
        let long = LocalApiOptions { socket: dir.path().join("x".repeat(120)), ..options(dir.path()) };
        assert!(matches!(serve(grasp.clone(), long).await, Err(ServeError::PathTooLong(_))));
        let group = LocalApiOptions { group: Some("no-such-group-here".into()), ..options(dir.path()) };
        assert!(matches!(serve(grasp, group).await, Err(ServeError::UnknownGroup(_))));
        // nothing stays behind in the data directory but the plain file we wrote
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| !n.to_string_lossy().starts_with(".la-")), "{names:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn group_mode_and_unreachable_node_errors() {
        let dir = tempfile::tempdir().unwrap();
        let gid = nix_free_gid();
        let opts = LocalApiOptions { group: Some(gid.to_string()), ..options(dir.path()) };
        let server = serve(node(dir.path()).await, opts).await.unwrap();
        let meta = std::fs::metadata(server.socket()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        let path = server.socket().to_path_buf();
        drop(server);
        let client = LocalApiClient::new(&path, Duration::from_secs(5));
        let repo = RepositoryRef {
            owner: Keys::generate().public_key().to_hex(),
            identifier: "x".into(),
            git_dir: None,
        };
        let err = client.authorize_push(&repo, &[], None).unwrap_err().to_string();
        assert!(err.contains("cannot reach the GRASP node") && err.contains("is the node running"), "{err}");
    }

    /// The process's own group: always one we may chown to.
    fn nix_free_gid() -> u32 {
        let probe = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(probe.path()).unwrap())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_silent_node_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Accepts connections but never answers.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = LocalApiClient::new(&path, Duration::from_millis(300));
        let err = tokio::task::spawn_blocking(move || client.ping()).await.unwrap().unwrap_err();
        assert!(matches!(err, crate::local_api::LocalApiError::TimedOut { .. }), "{err}");
    }
}
