//! The servers under test: grasp-server (release), nginx + fcgiwrap + git http-backend (the
//! stack of the Go reference server), and the nostr-relay-builder baseline relay.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use grasp_tests::server::binary;
use grasp_tests::TestServer;
use tempfile::TempDir;

/// A grasp-server tuned for measuring: no rate limit, quiet logs.
pub fn grasp_server(extra: &[&str]) -> TestServer {
    let mut builder = TestServer::builder().arg("--events-per-minute=0").env("GRASP_LOG_LEVEL", "warn");
    for arg in extra {
        builder = builder.arg(*arg);
    }
    builder.start()
}

/// A free TCP port on 127.0.0.1 (free when checked; good enough for a benchmark).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Waits until something listens on `port`.
fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on port {port} after {timeout:?}")
}

/// nginx + fcgiwrap + `git http-backend`, serving every repository under `root()`.
pub struct NginxGit {
    nginx: Child,
    fcgiwrap: Child,
    dir: TempDir,
    /// The port nginx listens on.
    pub port: u16,
}

impl NginxGit {
    /// Starts the stack; repositories go in [`NginxGit::root`].
    pub fn start() -> anyhow::Result<Self> {
        let nginx_bin = find_program("nginx").context("nginx not installed (bench/run.sh installs it)")?;
        let fcgiwrap_bin =
            find_program("fcgiwrap").context("fcgiwrap not installed (bench/run.sh installs it)")?;
        let backend = Command::new("git").arg("--exec-path").output()?;
        let backend = PathBuf::from(String::from_utf8_lossy(&backend.stdout).trim()).join("git-http-backend");
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("repos");
        std::fs::create_dir_all(&root)?;
        for sub in ["body", "fastcgi", "proxy", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let socket = dir.path().join("fcgiwrap.sock");
        let fcgiwrap = Command::new(fcgiwrap_bin)
            .args(["-c", "4", "-s", &format!("unix:{}", socket.display())])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let port = free_port();
        let d = dir.path().display();
        let user = if running_as_root() { "user root;" } else { "" };
        let conf = format!(
            r#"{user}
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            fastcgi_pass unix:{socket};
            fastcgi_buffering off;
            fastcgi_request_buffering off;
            fastcgi_read_timeout 600s;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {root};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param REMOTE_USER bench;
            fastcgi_param PATH_INFO $uri;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
            fastcgi_param GIT_PROTOCOL $http_git_protocol;
        }}
    }}
}}
"#,
            socket = socket.display(),
            backend = backend.display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let nginx = Command::new(nginx_bin)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        wait_for_port(port, Duration::from_secs(10))
            .with_context(|| std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default())?;
        Ok(Self { nginx, fcgiwrap, dir, port })
    }

    /// Where repositories served by this stack live.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("repos")
    }

    /// The URL of repository `name` (e.g. `corpus.git`).
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }
}

fn running_as_root() -> bool {
    // nginx needs `user root;` to run its workers as root; the uid is in /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for NginxGit {
    fn drop(&mut self) {
        let _ = self.nginx.kill();
        let _ = self.nginx.wait();
        let _ = self.fcgiwrap.kill();
        let _ = self.fcgiwrap.wait();
    }
}

/// The nostr-relay-builder 0.44 baseline relay on LMDB.
pub struct RelayBuilderBaseline {
    child: Child,
    _dir: TempDir,
    /// `ws://127.0.0.1:<port>`
    pub url: String,
}

impl RelayBuilderBaseline {
    /// Starts it with an empty LMDB store.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let mut child = Command::new(binary("relay-builder-baseline"))
            .arg(dir.path().join("lmdb"))
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).context("relay-builder baseline did not start")?;
        Ok(Self { child, _dir: dir, url: format!("ws://127.0.0.1:{port}") })
    }
}

impl Drop for RelayBuilderBaseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
