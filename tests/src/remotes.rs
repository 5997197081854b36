//! Git remotes that are not GRASP servers, for hunting tests: plain `git http-backend`
//! served over HTTP, a server that accepts connections and never answers, and an address
//! nothing listens on. Each runs on its own threads (tests block on the git CLI) and stops,
//! children included, when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::git::git_ok;

/// A listener thread that stops when told to.
struct Listener {
    addr: String,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Accepts connections and hands each to `handle` on its own thread.
    fn start(handle: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let active = Arc::new(AtomicUsize::new(0));
        let handle = Arc::new(handle);
        let thread = {
            let (stop, active) = (stop.clone(), active.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (stop, active, handle) = (stop.clone(), active.clone(), handle.clone());
                    active.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        handle(stream, &stop);
                        active.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Self { addr, stop, active, thread: Some(thread) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Request handlers finish their git child before they return.
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Stock `git http-backend` (as CGI, one request per connection) over bare repositories in
/// a temporary directory: a git server that knows nothing about GRASP.
pub struct GitHttpBackend {
    listener: Listener,
    root: TempDir,
}

impl GitHttpBackend {
    /// Serves with the protocol the client asks for (v2 for current git).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Serves protocol v0 only, like older servers: objects that no ref points at directly
    /// cannot be asked for by id.
    pub fn start_v0_only() -> Self {
        Self::start_with(true)
    }

    fn start_with(v0_only: bool) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let project_root = root.path().to_path_buf();
        let listener = Listener::start(move |stream, _| {
            if let Err(e) = serve_cgi(stream, &project_root, v0_only) {
                eprintln!("git http-backend helper: {e}");
            }
        });
        Self { listener, root }
    }

    /// `http://127.0.0.1:<port>/<name>.git`
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.listener.addr)
    }

    /// The bare repository `<name>.git` (created empty on first use).
    pub fn repo(&self, name: &str) -> PathBuf {
        let path = self.root.path().join(format!("{name}.git"));
        if !path.exists() {
            git_ok(self.root.path(), &["init", "-q", "--bare", path.to_str().expect("utf-8 path")]);
        }
        path
    }
}

/// Reads one HTTP/1.1 request, runs `git http-backend` for it and writes its answer.
fn serve_cgi(stream: TcpStream, project_root: &Path, v0_only: bool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or("GET").to_owned(), parts.next().unwrap_or("/").to_owned());
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(t) = header("content-type") {
        cmd.env("CONTENT_TYPE", t);
    }
    if let Some(e) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", e);
    }
    if let (Some(p), false) = (header("git-protocol"), v0_only) {
        cmd.env("GIT_PROTOCOL", p);
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut output)?;
    let _ = writer.join();
    child.wait()?;
    let split = output.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let split = split.or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&output[..i]).into_owned(), &output[i + n..]),
        None => (String::new(), &output[..]),
    };
    let mut status = "200 OK".to_owned();
    let mut response = Vec::new();
    let mut out_headers = String::new();
    for h in head.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match h.split_once(':') {
            Some((name, value)) if name.eq_ignore_ascii_case("status") => status = value.trim().to_owned(),
            _ => out_headers.push_str(&format!("{h}\r\n")),
        }
    }
    response.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\n{out_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    response.extend_from_slice(body);
    let mut stream = stream;
    stream.write_all(&response)?;
    stream.flush()
}

/// Accepts connections and never answers: a remote that hangs.
pub struct SilentRemote {
    listener: Listener,
}

impl SilentRemote {
    /// Starts listening on 127.0.0.1.
    pub fn start() -> Self {
        let listener = Listener::start(|stream, stop| {
            // Hold the connection open, silently, until the test ends or the peer gives up.
            let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = [0u8; 1024];
            let mut stream = stream;
            while !stop.load(Ordering::SeqCst) {
                match stream.read(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Self { listener }
    }

    /// A repository URL on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.listener.addr)
    }
}

/// A URL on 127.0.0.1 where nothing listens (connections are refused).
pub fn refused_url(path: &str) -> String {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port();
    format!("http://127.0.0.1:{port}/{path}")
}

/// `len` bytes that do not compress (a fixed xorshift sequence).
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
