//! Git smart-HTTP, served by spawning `git upload-pack` / `git receive-pack` with
//! `--stateless-rpc`. Request and response bodies are streamed: memory use does not grow
//! with pack size.

use std::path::Path;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio_util::io::ReaderStream;

use super::pktline::{self, PushCommands};
use super::GitError;
use crate::limits::{is_idle_timeout, IdleTimeout};

/// The git setting that makes upload-pack run a program of ours instead of pack-objects.
pub const PACK_OBJECTS_HOOK: &str = "uploadpack.packObjectsHook";

/// Bytes read from git per response chunk.
const PACK_CHUNK: usize = 256 * 1024;

/// How long a git process may take to exit after `SIGTERM` before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// Grows the pipe git writes the pack into (64 KiB by default on Linux) so git and the
/// server hand over data in fewer, larger steps. Best effort: a failure only costs speed.
fn widen_pipe(stdout: &tokio::process::ChildStdout) {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg};
        let _ = fcntl(stdout, FcntlArg::F_SETPIPE_SZ(1024 * 1024));
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stdout;
}

/// A request body as an async byte reader (already gzip-decoded, see [`decode_body`]).
pub type Body = Pin<Box<dyn AsyncRead + Send>>;

/// A request body in a `Content-Encoding` this server does not decode (answer 415).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported Content-Encoding: {0}")]
pub struct UnsupportedEncoding(pub String);

/// Reads a request body as sent with `content_encoding`: as is, or gunzipped.
pub fn decode_body<'a, R: AsyncBufRead + Send + 'a>(
    raw: R,
    content_encoding: Option<&str>,
) -> Result<Pin<Box<dyn AsyncRead + Send + 'a>>, UnsupportedEncoding> {
    match content_encoding.map(str::trim) {
        None | Some("") | Some("identity") => Ok(Box::pin(raw)),
        Some("gzip") | Some("x-gzip") => Ok(Box::pin(GzipDecoder::new(raw))),
        Some(other) => Err(UnsupportedEncoding(other.to_owned())),
    }
}

/// Counts the bytes git will read from a request body that is forwarded as it was sent
/// (grasp-proxy passes pushes on untouched): a gzip body is inflated on the side, every
/// member of it, and the count stops at a limit, so a small body that inflates to gigabytes
/// is caught, and costs no more than the limit to find out.
pub struct DecodedLength {
    decoder: Option<flate2::write::MultiGzDecoder<Tally>>,
    plain: u64,
    limit: u64,
}

/// Where the side decoder writes: counts, keeps nothing, and stops past the limit.
struct Tally {
    bytes: u64,
    limit: u64,
}

impl std::io::Write for Tally {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        if self.bytes > self.limit {
            return Err(std::io::Error::other("over the limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What [`DecodedLength::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// The body so far decodes to this many bytes, within the limit.
    Within(u64),
    /// The body decodes to more than the limit.
    TooLarge,
    /// The body is not valid in its `Content-Encoding` (git would fail on it too).
    Malformed,
}

impl DecodedLength {
    /// A counter for a body sent with `content_encoding` (already checked by
    /// [`decode_body`]), stopping at `limit` decoded bytes.
    pub fn new(content_encoding: Option<&str>, limit: u64) -> Self {
        let gzip = matches!(content_encoding.map(str::trim), Some("gzip") | Some("x-gzip"));
        let decoder = gzip.then(|| flate2::write::MultiGzDecoder::new(Tally { bytes: 0, limit }));
        Self { decoder, plain: 0, limit }
    }

    /// Counts the next `chunk` of the body as sent.
    pub fn feed(&mut self, chunk: &[u8]) -> Decoded {
        let Some(decoder) = &mut self.decoder else {
            self.plain += chunk.len() as u64;
            return if self.plain > self.limit { Decoded::TooLarge } else { Decoded::Within(self.plain) };
        };
        // Flushing hands over what the chunk decodes to now, not a buffer later.
        let written = std::io::Write::write_all(decoder, chunk).and_then(|()| std::io::Write::flush(decoder));
        let bytes = decoder.get_ref().bytes;
        match written {
            _ if bytes > self.limit => Decoded::TooLarge,
            Ok(()) => Decoded::Within(bytes),
            Err(_) => Decoded::Malformed,
        }
    }
}

/// The two git services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Fetch and clone.
    UploadPack,
    /// Push.
    ReceivePack,
}

impl Service {
    /// From the `service=` query value or the POST path segment (`git-upload-pack`, …).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "git-upload-pack" => Some(Self::UploadPack),
            "git-receive-pack" => Some(Self::ReceivePack),
            _ => None,
        }
    }

    /// `upload-pack` or `receive-pack`.
    pub fn command(self) -> &'static str {
        match self {
            Self::UploadPack => "upload-pack",
            Self::ReceivePack => "receive-pack",
        }
    }

    /// Content type of the `info/refs` answer.
    pub fn advertisement_content_type(self) -> &'static str {
        match self {
            Self::UploadPack => "application/x-git-upload-pack-advertisement",
            Self::ReceivePack => "application/x-git-receive-pack-advertisement",
        }
    }

    /// Content type of the POST answer.
    pub fn result_content_type(self) -> &'static str {
        match self {
            Self::UploadPack => "application/x-git-upload-pack-result",
            Self::ReceivePack => "application/x-git-receive-pack-result",
        }
    }
}

/// Keeps a client-supplied `Git-Protocol` header only when it looks like one
/// (`version=2`, `key=value:key=value`), so nothing odd reaches git's environment.
pub fn sanitize_git_protocol(header: Option<&str>) -> Option<String> {
    let value = header?.trim();
    let ok = !value.is_empty()
        && value.len() <= 256
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b':' | b'.' | b'-' | b'_'));
    ok.then(|| value.to_owned())
}

fn is_protocol_v2(git_protocol: Option<&str>) -> bool {
    git_protocol.is_some_and(|p| p.split(':').any(|kv| kv == "version=2"))
}

/// The `git` command for `service` on the repository at `path`, with the serving settings
/// (refs waiting for their event hidden, pushed objects checked).
pub fn command(service: Service, path: &Path, git_protocol: Option<&str>, advertise: bool) -> Command {
    command_with(service, path, git_protocol, advertise, None)
}

/// [`command`] with one more `-c key=value` setting: a setting that names a program
/// (`uploadpack.packObjectsHook`) counts only on git's command line (or in system and
/// global config), never in a repository's own config.
fn command_with(
    service: Service,
    path: &Path,
    git_protocol: Option<&str>,
    advertise: bool,
    extra: Option<(&str, &str)>,
) -> Command {
    let mut cmd = Command::new("git");
    super::dies_with_server(&mut cmd);
    if let Some((key, value)) = extra {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    // Also in every repository's own config, for stock servers; passed here so
    // repositories created before that still serve GRASP clients.
    let section = match service {
        Service::UploadPack => "uploadpack.",
        Service::ReceivePack => "receive.",
    };
    for (key, value) in super::refs::SERVING_SETTINGS.iter().filter(|(key, _)| key.starts_with(section)) {
        cmd.arg("-c").arg(format!("{key}={value}"));
    }
    if service == Service::ReceivePack && !advertise && !has_alternates(path) {
        // After a push, git's connectivity check also lists the refs of every alternate
        // object store, with one more git process. During a push the repository's own store
        // is one (git's quarantine) and its refs are the repository's, which the check
        // already counts: skip that process.
        cmd.arg("-c").arg("core.alternateRefsCommand=true");
    }
    cmd.arg(service.command()).arg("--stateless-rpc");
    if advertise {
        cmd.arg("--advertise-refs");
    }
    cmd.arg(path).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true);
    match git_protocol {
        Some(p) => cmd.env("GIT_PROTOCOL", p),
        None => cmd.env_remove("GIT_PROTOCOL"),
    };
    cmd
}

/// True when the repository borrows objects from another store (`objects/info/alternates`).
pub fn has_alternates(path: &Path) -> bool {
    path.join("objects/info/alternates").symlink_metadata().is_ok()
}

/// The body of `GET info/refs?service=…`: the service header (protocol v0/v1 only)
/// followed by git's ref advertisement.
pub async fn advertisement(
    path: &Path,
    service: Service,
    git_protocol: Option<&str>,
) -> Result<Vec<u8>, GitError> {
    let output = command(service, path, git_protocol, true).stdin(Stdio::null()).output().await?;
    if !output.status.success() {
        return Err(GitError::Command {
            command: format!("{} --advertise-refs", service.command()),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(advertisement_body(service, git_protocol, output.stdout))
}

/// What `git <service> --advertise-refs` printed, as the body of `GET info/refs`: behind
/// the service header for protocol v0/v1.
pub fn advertisement_body(service: Service, git_protocol: Option<&str>, advertised: Vec<u8>) -> Vec<u8> {
    let mut body = Vec::with_capacity(advertised.len() + 64);
    if !is_protocol_v2(git_protocol) {
        body.extend(pktline::encode(format!("# service=git-{}\n", service.command()).as_bytes()));
        body.extend_from_slice(pktline::FLUSH);
    }
    body.extend(advertised);
    body
}

/// How piping a request body into git ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piped {
    /// Everything was written; the total byte count.
    Complete(u64),
    /// The body went over the limit; git's stdin was closed early.
    TooLarge,
}

/// Writes `prefix` and then `body` into git's stdin, at most `limit` bytes in all, and
/// closes it. Memory use is one 64 KiB buffer whatever the body size.
pub async fn pipe_body(
    mut stdin: ChildStdin,
    prefix: &[u8],
    body: &mut Body,
    limit: u64,
) -> std::io::Result<Piped> {
    let mut written = prefix.len() as u64;
    if written > limit {
        return Ok(Piped::TooLarge);
    }
    stdin.write_all(prefix).await?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > limit {
            return Ok(Piped::TooLarge);
        }
        stdin.write_all(&buf[..n]).await?;
    }
    stdin.shutdown().await?;
    Ok(Piped::Complete(written))
}

/// Runs `git upload-pack --stateless-rpc` with `body` as its input and returns its output
/// as a stream. Fails (so the frontend can answer 500) when git exits without output.
///
/// Both directions have an idle limit of `idle`: a request body that stops arriving, or a
/// client that stops reading the pack, ends git and the stream (`on_stall` is called with
/// `body_idle` or `response_idle`, for metrics). A client that goes away ends git too.
/// `pack_objects_hook` is the pack cache's command, when it is on: upload-pack runs it
/// instead of `git pack-objects` ([`PACK_OBJECTS_HOOK`]).
pub async fn upload_pack(
    path: &Path,
    git_protocol: Option<&str>,
    pack_objects_hook: Option<&str>,
    body: Body,
    max_request: u64,
    idle: Duration,
    on_stall: impl FnOnce(&'static str) + Send + 'static,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>, GitError> {
    let (exited, _) = tokio::sync::oneshot::channel();
    upload_pack_reporting(path, git_protocol, pack_objects_hook, body, max_request, idle, on_stall, exited)
        .await
}

/// [`upload_pack`] for a caller that must know whether git finished well (the response
/// cache keeps only complete answers): `exited` gets `true` once git's whole output was
/// handed over and git exited successfully, `false` otherwise.
#[allow(clippy::too_many_arguments)]
pub async fn upload_pack_reporting(
    path: &Path,
    git_protocol: Option<&str>,
    pack_objects_hook: Option<&str>,
    body: Body,
    max_request: u64,
    idle: Duration,
    on_stall: impl FnOnce(&'static str) + Send + 'static,
    exited: tokio::sync::oneshot::Sender<bool>,
) -> Result<BoxStream<'static, std::io::Result<Bytes>>, GitError> {
    let mut body: Body = Box::pin(IdleTimeout::new(body, idle));
    let hook = pack_objects_hook.map(|hook| (PACK_OBJECTS_HOOK, hook));
    let mut child = command_with(Service::UploadPack, path, git_protocol, false, hook)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    widen_pipe(&stdout);
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdin_task = tokio::spawn(async move { pipe_body(stdin, &[], &mut body, max_request).await });
    let mut output = ReaderStream::with_capacity(stdout, PACK_CHUNK);
    let first = match output.next().await {
        Some(Ok(chunk)) => chunk,
        other => {
            let status = child.wait().await?;
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err).await;
            let piped = stdin_task.await;
            if let Ok(Err(e)) = &piped {
                if is_idle_timeout(e) {
                    on_stall("body_idle");
                    return Err(GitError::BadRequest(e.to_string()));
                }
            }
            if let Some(Err(e)) = other {
                return Err(e.into());
            }
            if status.success() {
                let _ = exited.send(true);
                return Ok(stream::empty().boxed());
            }
            // A readable repository means git choked on the request, not on our data.
            if super::refs::open(path).is_ok() {
                return Err(GitError::BadRequest(err.trim().to_owned()));
            }
            return Err(GitError::Command { command: "upload-pack".into(), stderr: err.trim().to_owned() });
        }
    };
    // A pump owns git and hands its output over one chunk at a time: when the client stops
    // reading (the hand-over waits longer than `idle`) or goes away (the receiver is
    // dropped), git is ended and the response stops.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
    // git's messages (progress without side-band) are read and dropped: a closed pipe
    // would end git with SIGPIPE.
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    });
    tokio::spawn(async move {
        let mut next = Some(Ok(first));
        let mut ended_early = false;
        while let Some(chunk) = next.take() {
            match tokio::time::timeout(idle, tx.send(chunk)).await {
                Ok(Ok(())) => next = output.next().await,
                // The client went away.
                Ok(Err(_)) => ended_early = true,
                Err(_) => {
                    on_stall("response_idle");
                    ended_early = true;
                    break;
                }
            }
        }
        if ended_early {
            terminate(&mut child).await;
        }
        let status = child.wait().await;
        stdin_task.abort();
        let _ = exited.send(!ended_early && status.is_ok_and(|s| s.success()));
    });
    Ok(tokio_stream_from(rx))
}

/// The receiver as a stream of chunks.
pub(crate) fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Ends a git process the server gave up on: `SIGTERM` first, so that receive-pack removes
/// its quarantine of half-received objects, then `SIGKILL` if it lingers.
pub async fn terminate(child: &mut Child) {
    #[cfg(target_os = "linux")]
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        use nix::sys::signal::{kill, Signal};
        let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
        if tokio::time::timeout(TERMINATE_GRACE, child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

/// The answer to a refused push, in the form the client asked for, so `git push` prints
/// `reason` next to every ref (report-status `ng`), framed for side-band when negotiated;
/// clients that asked for no status report get an `ERR` packet.
pub fn rejection_response(commands: &PushCommands, reason: &str) -> Vec<u8> {
    let reason: String = reason.chars().filter(|c| !c.is_control()).take(1000).collect();
    let sideband = commands.has_capability("side-band-64k") || commands.has_capability("side-band");
    if !(commands.has_capability("report-status") || commands.has_capability("report-status-v2")) {
        return if sideband {
            let mut out = pktline::sideband(3, format!("{reason}\n").as_bytes());
            out.extend_from_slice(pktline::FLUSH);
            out
        } else {
            pktline::encode(format!("ERR {reason}\n").as_bytes())
        };
    }
    let mut status = pktline::encode(b"unpack ok\n");
    for update in &commands.updates {
        status.extend(pktline::encode(format!("ng {} {reason}\n", update.name).as_bytes()));
    }
    status.extend_from_slice(pktline::FLUSH);
    if !sideband {
        return status;
    }
    let mut out = Vec::new();
    if !commands.has_capability("quiet") {
        out.extend(pktline::sideband(2, format!("error: {reason}\n").as_bytes()));
    }
    out.extend(pktline::sideband(1, &status));
    out.extend_from_slice(pktline::FLUSH);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::pktline::RefUpdate;

    fn commands(caps: &[&str]) -> PushCommands {
        PushCommands {
            updates: vec![RefUpdate {
                old: "0".repeat(40),
                new: "1".repeat(40),
                name: "refs/heads/main".into(),
            }],
            capabilities: caps.iter().map(|c| c.to_string()).collect(),
            raw: vec![],
        }
    }

    #[test]
    fn rejection_uses_report_status_and_sideband_when_asked() {
        let plain = rejection_response(&commands(&["report-status"]), "no state");
        assert_eq!(plain, b"000eunpack ok\n0020ng refs/heads/main no state\n0000".to_vec());
        let banded = rejection_response(&commands(&["report-status", "side-band-64k"]), "no state");
        let text = String::from_utf8_lossy(&banded);
        assert!(text.contains("\u{2}error: no state\n"), "{text:?}");
        assert!(text.contains("\u{1}000eunpack ok\n0020ng refs/heads/main no state\n0000"), "{text:?}");
        assert!(banded.ends_with(b"0000"));
        let err = rejection_response(&commands(&[]), "bad\nthing");
        assert_eq!(err, b"0011ERR badthing\n".to_vec());
    }

    #[test]
    fn decoded_length_counts_what_git_reads_and_stops_at_the_limit() {
        use std::io::Write;
        let gzip = |data: &[u8]| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        };
        let mut plain = DecodedLength::new(None, 10);
        assert_eq!(plain.feed(b"0123456789"), Decoded::Within(10));
        assert_eq!(plain.feed(b"x"), Decoded::TooLarge);

        // 64 KiB of zeros compress to a few hundred bytes; two gzip members in a row.
        let mut body = gzip(&[0u8; 65_536]);
        body.extend(gzip(&[0u8; 65_536]));
        assert!(body.len() < 1000);
        let mut roomy = DecodedLength::new(Some("gzip"), 1 << 20);
        let mut last = Decoded::Within(0);
        for chunk in body.chunks(97) {
            last = roomy.feed(chunk);
        }
        assert_eq!(last, Decoded::Within(131_072), "both members count");
        let mut tight = DecodedLength::new(Some("x-gzip"), 100_000);
        let verdicts: Vec<Decoded> = body.chunks(97).map(|c| tight.feed(c)).collect();
        assert_eq!(verdicts.last(), Some(&Decoded::TooLarge));
        let mut broken = DecodedLength::new(Some("gzip"), 1 << 20);
        assert_eq!(broken.feed(b"this is not gzip at all"), Decoded::Malformed);
    }

    #[test]
    fn git_protocol_header_is_sanitized() {
        assert_eq!(sanitize_git_protocol(Some("version=2")).as_deref(), Some("version=2"));
        assert_eq!(
            sanitize_git_protocol(Some("version=2:object-format=sha1")).as_deref(),
            Some("version=2:object-format=sha1")
        );
        assert_eq!(sanitize_git_protocol(Some("version=2; rm -rf")), None);
        assert_eq!(sanitize_git_protocol(None), None);
        assert!(is_protocol_v2(Some("version=2")));
        assert!(!is_protocol_v2(Some("version=1")));
    }

    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[tokio::test]
    async fn a_clone_nobody_reads_ends_git_after_the_idle_time() {
        // A repository whose pack is far larger than one chunk.
        let dir = tempfile::tempdir().unwrap();
        run_git(dir.path(), &["init", "-q"]);
        let noise: Vec<u8> = (0..8u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(dir.path().join("noise"), noise).unwrap();
        run_git(dir.path(), &["add", "noise"]);
        run_git(dir.path(), &["commit", "-q", "-m", "noise"]);
        let head = run_git(dir.path(), &["rev-parse", "HEAD"]);
        let mut request = pktline::encode(format!("want {head} side-band-64k\n").as_bytes());
        request.extend_from_slice(pktline::FLUSH);
        request.extend(pktline::encode(b"done\n"));
        let body: Body = Box::pin(std::io::Cursor::new(request));

        let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
        let on_stall = move |what: &'static str| {
            let _ = stalled_tx.send(what);
        };
        let path = dir.path().join(".git");
        let mut stream = upload_pack(&path, None, None, body, 1 << 20, Duration::from_secs(1), on_stall)
            .await
            .expect("upload-pack starts");
        // The client reads one chunk and then nothing.
        assert!(stream.next().await.unwrap().is_ok());
        let what = tokio::time::timeout(Duration::from_secs(60), stalled_rx).await.expect("stall noticed");
        assert_eq!(what.unwrap(), "response_idle");
        // The stream ends (what was buffered, then nothing) instead of waiting forever.
        let rest = tokio::time::timeout(Duration::from_secs(60), async {
            let mut n = 0;
            while stream.next().await.is_some() {
                n += 1;
            }
            n
        })
        .await
        .expect("the response ends");
        assert!(rest <= 1, "{rest} chunks after the stall");
    }
}
