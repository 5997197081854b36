//! A stock git server: nginx + fcgiwrap + `git http-backend`, the stack grasp-proxy sits
//! in front of (and the baseline the benchmarks compare against).
//!
//! Everything lives in a temporary directory: nginx's config, prefix, pid file, error and
//! access logs, and fcgiwrap's socket. nginx listens on 127.0.0.1 on a free port. Both run
//! in their own process groups, killed with everything they spawned when this is dropped.
//! The nginx configuration is the one `docs/how-to/proxy-in-front-of-git-http-backend.md`
//! shows.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::process::ProcessGroup;

/// A free TCP port on 127.0.0.1 (free when checked; callers retry if it is taken by then).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
        .with_context(|| {
            format!("{name} is not installed (scripts/test.sh and bench/run.sh install it with apt-get)")
        })
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

/// The `access_log` line format: enough to tell which git requests reached nginx.
pub const ACCESS_LOG_FORMAT: &str = "$request_method $uri $status $request_length";

/// The lines that make `git http-backend`'s upload-pack run grasp-proxy's pack cache:
/// `hook` is the command (`CacheSettings::hook_command`), passed as command-line config
/// (the only place git takes a program from besides system and global config).
pub fn pack_cache_params(hook: &str) -> String {
    format!(
        r#"        # The pack cache: upload-pack runs grasp-proxy's pack-objects-hook.
        fastcgi_param GIT_CONFIG_COUNT 1;
        fastcgi_param GIT_CONFIG_KEY_0 uploadpack.packObjectsHook;
        fastcgi_param GIT_CONFIG_VALUE_0 "{hook}";
"#
    )
}

/// The `server` block that serves every repository under `root` with `git http-backend`
/// through fcgiwrap on `socket`, listening on `listen`, with the pack cache's `hook` when
/// given. The how-to (`docs/how-to/proxy-in-front-of-git-http-backend.md`) shows it
/// verbatim.
pub fn git_server_block(
    listen: &str,
    root: &Path,
    socket: &Path,
    backend: &Path,
    hook: Option<&str>,
) -> String {
    let block = format!(
        r#"server {{
    # Only grasp-proxy may talk to this server: it authorizes every push.
    listen {listen};
    # grasp-proxy enforces max_push_size.
    client_max_body_size 0;
    location / {{
        fastcgi_pass unix:{socket};
        # Stream packs both ways instead of spooling them to disk.
        fastcgi_buffering off;
        fastcgi_request_buffering off;
        fastcgi_read_timeout 600s;
        fastcgi_send_timeout 600s;
        fastcgi_param SCRIPT_FILENAME {backend};
        fastcgi_param GIT_PROJECT_ROOT {root};
        fastcgi_param GIT_HTTP_EXPORT_ALL "";
        # Lets git http-backend run receive-pack: grasp-proxy authorized the push.
        fastcgi_param REMOTE_USER grasp-proxy;
        fastcgi_param PATH_INFO $uri;
        fastcgi_param QUERY_STRING $query_string;
        fastcgi_param REQUEST_METHOD $request_method;
        fastcgi_param CONTENT_TYPE $content_type;
        fastcgi_param CONTENT_LENGTH $content_length;
        fastcgi_param HTTP_CONTENT_ENCODING $http_content_encoding;
        fastcgi_param GIT_PROTOCOL $http_git_protocol;
    }}
}}
"#,
        socket = socket.display(),
        backend = backend.display(),
        root = root.display(),
    );
    match hook {
        Some(hook) => block.replacen("    }\n}\n", &format!("{}    }}\n}}\n", pack_cache_params(hook)), 1),
        None => block,
    }
}

/// A complete nginx configuration for tests: [`git_server_block`] on `127.0.0.1:port`, with
/// everything nginx writes (pid, logs, temporary files) under `dir`.
pub fn nginx_config(
    dir: &Path,
    root: &Path,
    socket: &Path,
    backend: &Path,
    port: u16,
    hook: Option<&str>,
) -> String {
    let d = dir.display();
    let user = if running_as_root() { "user root;\n" } else { "" };
    let server = git_server_block(&format!("127.0.0.1:{port}"), root, socket, backend, hook);
    let server: String = server.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        r#"{user}worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 1024; }}
http {{
    log_format git '{ACCESS_LOG_FORMAT}';
    access_log {d}/access.log git;
    client_body_temp_path {d}/body;
    fastcgi_temp_path {d}/fastcgi;
    proxy_temp_path {d}/proxy;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{server}}}
"#
    )
}

/// nginx + fcgiwrap + `git http-backend` serving the repositories under a directory.
pub struct NginxGit {
    // Dropped (killed) before the directory they use.
    nginx: ProcessGroup,
    _fcgiwrap: ProcessGroup,
    dir: TempDir,
    root: PathBuf,
    /// The port nginx listens on.
    pub port: u16,
}

impl NginxGit {
    /// Serves the repositories under `root` (which must exist).
    pub fn start(root: &Path) -> anyhow::Result<Self> {
        Self::start_with(root, None)
    }

    /// [`NginxGit::start`] with grasp-proxy's pack cache `hook` in front of pack-objects.
    pub fn start_with(root: &Path, hook: Option<&str>) -> anyhow::Result<Self> {
        let nginx_bin = find_program("nginx")?;
        let fcgiwrap_bin = find_program("fcgiwrap")?;
        let exec_path = Command::new("git").arg("--exec-path").output()?;
        let backend =
            PathBuf::from(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-http-backend");
        let dir = tempfile::tempdir()?;
        for sub in ["body", "fastcgi", "proxy", "uwsgi", "scgi"] {
            std::fs::create_dir_all(dir.path().join(sub))?;
        }
        let socket = dir.path().join("fcgiwrap.sock");
        let fcgiwrap = ProcessGroup::spawn(
            Command::new(fcgiwrap_bin)
                .args(["-c", "4", "-s", &format!("unix:{}", socket.display())])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )?;
        // Another process may take the free port before nginx binds it: try a few.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, nginx_config(dir.path(), root, &socket, &backend, port, hook))?;
            let _ = std::fs::remove_file(dir.path().join("nginx.pid"));
            let mut nginx = ProcessGroup::spawn(
                Command::new(&nginx_bin)
                    .arg("-c")
                    .arg(&conf)
                    .arg("-p")
                    .arg(dir.path())
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
            )?;
            match wait_until_serving(&mut nginx, dir.path(), port) {
                Ok(()) => {
                    return Ok(Self { nginx, _fcgiwrap: fcgiwrap, dir, root: root.to_path_buf(), port });
                }
                Err(e) => last_error = format!("{e:#}"),
            }
        }
        bail!("nginx did not start: {last_error}")
    }

    /// Serves an empty directory of its own ([`NginxGit::root`]).
    pub fn start_empty() -> anyhow::Result<(Self, TempDir)> {
        let root = tempfile::tempdir()?;
        Ok((Self::start(root.path())?, root))
    }

    /// The directory of the served repositories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The URL of `path` under the root (e.g. `corpus.git`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url())
    }

    /// nginx's access log so far, one request per line in [`ACCESS_LOG_FORMAT`].
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// nginx's process id (the master).
    pub fn pid(&self) -> u32 {
        self.nginx.id()
    }

    /// The process groups serving git: nginx's and fcgiwrap's (with the git http-backend,
    /// upload-pack and pack-objects processes they start).
    pub fn process_groups(&self) -> [u32; 2] {
        [self.nginx.id(), self._fcgiwrap.id()]
    }
}

/// Waits until nginx has written its pid file (its sockets are bound then) and answers on
/// `port`, or fails with its error log when it exits.
fn wait_until_serving(nginx: &mut ProcessGroup, dir: &Path, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let error_log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    while Instant::now() < deadline {
        if let Some(status) = nginx.child().try_wait()? {
            bail!("nginx exited ({status}): {}", error_log());
        }
        if dir.join("nginx.pid").exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nginx did not serve on port {port} within 30 s: {}", error_log())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_how_to_shows_the_server_block_the_tests_use() {
        let how_to = include_str!("../../docs/how-to/proxy-in-front-of-git-http-backend.md");
        let block = git_server_block(
            "127.0.0.1:8080",
            Path::new("/srv/git"),
            Path::new("/run/fcgiwrap.socket"),
            Path::new("/usr/lib/git-core/git-http-backend"),
            None,
        );
        assert!(how_to.contains(&block), "the how-to must show this block verbatim:\n{block}");
        let cache = pack_cache_params(
            "'/usr/local/bin/grasp-proxy' pack-objects-hook --dir '/var/lib/grasp/pack-cache' --max-age-secs 300 --max-bytes 1073741824 --min-free-bytes 1073741824 --max-generating 4",
        );
        assert!(how_to.contains(&cache), "the how-to must show the pack cache lines verbatim:\n{cache}");
    }
}
