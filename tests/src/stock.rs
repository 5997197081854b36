//! Stock git servers for hook tests: `git daemon` with receive-pack enabled, and
//! `git http-backend` behind a small in-process CGI runner. Each serves a directory of bare
//! repositories on 127.0.0.1 and is stopped, children included, when dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Buf;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::process::ProcessGroup;

/// A port that was free a moment ago (the caller retries if someone takes it meanwhile).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().expect("local addr").port()
}

/// `git daemon` serving `root` with push (receive-pack) enabled.
pub struct GitDaemon {
    _process: ProcessGroup,
    /// `127.0.0.1:<port>`
    pub addr: String,
    root: PathBuf,
}

impl GitDaemon {
    /// Starts a daemon for every repository under `root` (created if missing).
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root).expect("create the daemon's root");
        let root = root.canonicalize().expect("root resolves");
        for _attempt in 0..5 {
            let port = free_port();
            let mut process = ProcessGroup::spawn(
                Command::new("git")
                    .arg("daemon")
                    .arg("--reuseaddr")
                    .arg("--export-all")
                    .arg("--enable=receive-pack")
                    .arg("--informative-errors")
                    .arg("--listen=127.0.0.1")
                    .arg(format!("--port={port}"))
                    .arg(format!("--base-path={}", root.display()))
                    .arg(&root)
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .env("GIT_CONFIG_GLOBAL", "/dev/null")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )
            .expect("spawn git daemon");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && !process.exited() {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { _process: process, addr: format!("127.0.0.1:{port}"), root };
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            // The port was taken meanwhile (the daemon exited) or it never came up: retry.
        }
        panic!("git daemon did not start on 127.0.0.1 after 5 attempts");
    }

    /// `git://127.0.0.1:<port>/<path under root>`
    pub fn url(&self, repo: &Path) -> String {
        let relative = repo.strip_prefix(&self.root).unwrap_or(repo);
        format!("git://{}/{}", self.addr, relative.display())
    }
}

/// `git http-backend` behind a minimal CGI runner (one `git http-backend` process per
/// request, receive-pack enabled), serving every repository under `root`.
pub struct HttpBackend {
    /// `127.0.0.1:<port>`
    pub addr: SocketAddr,
    root: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl HttpBackend {
    /// Starts the runner on an ephemeral port (inside the current Tokio runtime).
    pub async fn start(root: &Path) -> Self {
        use warp::Filter;
        std::fs::create_dir_all(root).expect("create the backend's root");
        let root = root.canonicalize().expect("root resolves");
        let project_root = root.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::headers_cloned())
            .and(warp::body::stream())
            .then(move |method, path: warp::path::FullPath, query, headers, body| {
                cgi(project_root.clone(), method, path.as_str().to_owned(), query, headers, body)
            });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = warp::serve(route).incoming(listener).graceful(async {
            let _ = rx.await;
        });
        tokio::spawn(server.run());
        Self { addr, root, shutdown: Some(tx) }
    }

    /// `http://127.0.0.1:<port>/<path under root>`
    pub fn url(&self, repo: &Path) -> String {
        let relative = repo.strip_prefix(&self.root).unwrap_or(repo);
        format!("http://{}/{}", self.addr, relative.display())
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Runs one request through `git http-backend` (RFC 3875 CGI).
async fn cgi<S, B>(
    root: PathBuf,
    method: warp::http::Method,
    path: String,
    query: String,
    headers: warp::http::HeaderMap,
    body: S,
) -> warp::reply::Response
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Send + Unpin + 'static,
    B: Buf + Send,
{
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        // Anonymous pushes, as on a server where the hook is the authorization.
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_TYPE", header("content-type"))
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(length) = headers.get("content-length").and_then(|v| v.to_str().ok()) {
        cmd.env("CONTENT_LENGTH", length);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return error_response(format!("cannot run git http-backend: {e}")),
    };
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let feed = tokio::spawn(async move {
        let mut body = body;
        while let Some(Ok(mut chunk)) = body.next().await {
            let bytes = chunk.copy_to_bytes(chunk.remaining());
            if stdin.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut out = Vec::new();
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let _ = stdout.read_to_end(&mut out).await;
    let _ = feed.await;
    let _ = child.wait().await;
    let Some(split) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
    else {
        return error_response("git http-backend wrote no CGI header".to_owned());
    };
    let mut response = warp::reply::Response::new(out[split.0 + split.1..].to_vec().into());
    for line in String::from_utf8_lossy(&out[..split.0]).lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            *response.status_mut() = warp::http::StatusCode::from_u16(code).unwrap_or_default();
        } else if let (Ok(name), Ok(value)) =
            (warp::http::HeaderName::from_bytes(name.trim().as_bytes()), value.parse())
        {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

fn error_response(message: String) -> warp::reply::Response {
    let mut response = warp::reply::Response::new(message.into());
    *response.status_mut() = warp::http::StatusCode::INTERNAL_SERVER_ERROR;
    response
}

/// Runs the `grasp-hook` binary with `args`; returns (success, stdout + stderr).
pub fn grasp_hook(args: &[&str]) -> (bool, String) {
    let out = Command::new(crate::server::binary("grasp-hook"))
        .args(args)
        .env_remove("GRASP_HOOK_SOCKET")
        .env_remove("GRASP_HOOK_ROOT")
        .output()
        .expect("run grasp-hook");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
