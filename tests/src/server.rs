//! A GRASP server under test: `grasp-server`, or `grasp-proxy` in front of its own nginx +
//! fcgiwrap + `git http-backend` ([`Frontend`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nostr_sdk::prelude::*;
use tempfile::TempDir;

use crate::process::ProcessGroup;
use crate::upstream::NginxGit;
use crate::Frontend;

/// Path of a workspace binary built next to the running executable: a test binary lives in
/// `target/<profile>/deps/`, a tool (the benchmark runner) in `target/<profile>/`.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let here = exe.parent().expect("executable directory");
    let candidates = [Some(here), here.parent()];
    let found = candidates.into_iter().flatten().map(|dir| dir.join(name)).find(|p| p.exists());
    found.unwrap_or_else(|| {
        panic!(
            "{name} not found next to {}: build the binaries first (cargo build --workspace --bins), \
             or run the suite with scripts/test.sh",
            exe.display()
        )
    })
}

/// How to start a server.
#[derive(Debug, Default, Clone)]
pub struct TestServerBuilder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    relative_data_paths: bool,
    frontend: Frontend,
    strict_outbound: bool,
}

impl TestServerBuilder {
    /// Which frontend to start (default: grasp-server).
    pub fn frontend(mut self, frontend: Frontend) -> Self {
        self.frontend = frontend;
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the process.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Keeps the outbound policy strict: by default test servers may dial 127.0.0.1 (their
    /// peers and remotes live there), as `allow_non_global_targets` allows.
    pub fn strict_outbound(mut self) -> Self {
        self.strict_outbound = true;
        self
    }

    /// Runs the server inside its data directory and gives it the data paths relative to
    /// that (`repos`, `relay`), as an operator who keeps the default `./data/...` does.
    pub fn relative_data_paths(mut self) -> Self {
        self.relative_data_paths = true;
        self
    }

    /// True when the test chose the event store itself (a flag or an environment name).
    fn chose_backend(&self) -> bool {
        self.args.iter().any(|a| a.starts_with("--database-backend"))
            || self.env.iter().any(|(k, _)| k == "GRASP_DATABASE_BACKEND" || k == "NGIT_DATABASE_BACKEND")
    }

    /// Starts the server with fresh temporary data directories (and, for the proxy, its
    /// upstream serving `repos/` there). With `GRASP_TEST_BACKEND=postgres` the server
    /// stores events in a fresh PostgreSQL database of its own (dropped with the server),
    /// unless the test chose a backend.
    pub fn start(mut self) -> TestServer {
        let database = (crate::postgres::suite_on_postgres() && !self.chose_backend()).then(|| {
            let admin = crate::postgres::admin_url("GRASP_TEST_BACKEND=postgres")
                .expect("GRASP_TEST_BACKEND=postgres needs GRASP_TEST_DATABASE_URL");
            crate::postgres::TestDatabase::create(&admin)
        });
        if let Some(db) = &database {
            self.args.push("--database-backend=postgres".to_owned());
            self.args.push(format!("--database-url={}", db.url));
        }
        let data = tempfile::tempdir().expect("temp dir");
        let upstream = match self.frontend {
            Frontend::Inline => None,
            Frontend::Proxy => {
                let repos = data.path().join("repos");
                std::fs::create_dir_all(&repos).expect("repos dir");
                // grasp-proxy's pack cache, as the proxy itself says to set it up.
                let hook = pack_cache_hook(&self.args, data.path());
                Some(
                    NginxGit::start_with(&repos, hook.as_deref())
                        .unwrap_or_else(|e| panic!("the proxy's upstream: {e:#}")),
                )
            }
        };
        let (child, addr) = TestServer::spawn(&self, data.path(), upstream.as_ref(), &[]);
        TestServer { child, addr, upstream, _database: database, data, builder: self }
    }
}

/// What `grasp-proxy pack-cache-hook` prints for a proxy started with `args` and its data
/// in `data` (`None` when the pack cache is off).
fn pack_cache_hook(args: &[String], data: &Path) -> Option<String> {
    let out = Command::new(binary("grasp-proxy"))
        .arg(format!("--relay-data-path={}", data.join("relay").display()))
        .args(args)
        .arg("pack-cache-hook")
        .stdin(Stdio::null())
        .output()
        .expect("grasp-proxy pack-cache-hook runs");
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A running server with its own data directory; killed (with everything it spawned, and
/// its upstream) on drop.
pub struct TestServer {
    // Fields drop in order: the server goes before its upstream and its directory.
    child: ProcessGroup,
    /// `127.0.0.1:<port>`
    pub addr: String,
    upstream: Option<NginxGit>,
    /// The PostgreSQL database of a `GRASP_TEST_BACKEND=postgres` run (dropped after the
    /// server is killed).
    _database: Option<crate::postgres::TestDatabase>,
    data: TempDir,
    builder: TestServerBuilder,
}

impl TestServer {
    /// A server with default settings (LMDB store, generous rate limit).
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// A builder for custom arguments and environment.
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// Starts the process in its own process group (so the group can be killed with every
    /// git child in it), with `extra` environment for this start only.
    fn spawn(
        builder: &TestServerBuilder,
        data: &Path,
        upstream: Option<&NginxGit>,
        extra: &[(&str, &str)],
    ) -> (ProcessGroup, String) {
        let name = builder.frontend.binary();
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data.join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(binary(name));
        let root = if builder.relative_data_paths {
            cmd.current_dir(data);
            Path::new("")
        } else {
            data
        };
        cmd.arg("--bind-address=127.0.0.1:0")
            .arg(format!("--git-data-path={}", root.join("repos").display()))
            .arg(format!("--relay-data-path={}", root.join("relay").display()))
            .arg("--events-per-minute=100000")
            .arg("--test-mode")
            // Servers of one test often list each other; relay sync between them is
            // switched on only by the tests about it (`sync::syncing`).
            .arg("--sync=false");
        if !builder.strict_outbound {
            cmd.arg("--allow-non-global-targets");
        }
        if let Some(upstream) = upstream {
            cmd.arg(format!("--upstream={}", upstream.base_url()));
        }
        cmd.args(&builder.args)
            .env("GRASP_LOG_LEVEL", "info,grasp_lib=debug")
            .envs(builder.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = ProcessGroup::spawn(&mut cmd).unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.child().stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        let ready = format!("{name} listening on ");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix(&ready) {
                    let addr = url.trim().trim_start_matches("http://").trim_start_matches("https://");
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => {
                child.kill();
                let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
                panic!("{name} did not start within 30 s; its log:\n{log}");
            }
        };
        (child, addr)
    }

    /// The frontend this server runs.
    pub fn frontend(&self) -> Frontend {
        self.builder.frontend
    }

    /// The upstream git server (proxy only).
    pub fn upstream(&self) -> Option<&NginxGit> {
        self.upstream.as_ref()
    }

    /// `http://127.0.0.1:<port>`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port>`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The clone URL of `identifier` owned by `owner` on this server.
    pub fn clone_url(&self, owner: &PublicKey, identifier: &str) -> String {
        format!("{}/{}/{}.git", self.http_url(), owner.to_bech32().expect("npub"), identifier)
    }

    /// The GRASP-06 URL `/prs/<npub>/<identifier>.git` of `contributor` on this server.
    pub fn prs_url(&self, contributor: &PublicKey, identifier: &str) -> String {
        format!("{}/prs/{}/{}.git", self.http_url(), contributor.to_bech32().expect("npub"), identifier)
    }

    /// Where the `/prs/` repository of `contributor`/`identifier` lives on the server's disk:
    /// under the hex pubkey, where ngit's test harness looks.
    pub fn prs_path(&self, contributor: &PublicKey, identifier: &str) -> PathBuf {
        self.data
            .path()
            .join("repos")
            .join("prs")
            .join(contributor.to_hex())
            .join(format!("{identifier}.git"))
    }

    /// The data directory (repos/, relay/, server.log).
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Where the bare repository of `owner`/`identifier` lives on the server's disk.
    pub fn repo_path(&self, owner: &PublicKey, identifier: &str) -> PathBuf {
        self.data
            .path()
            .join("repos")
            .join(owner.to_bech32().expect("npub"))
            .join(format!("{identifier}.git"))
    }

    /// The server's process id (for memory measurements).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `grasp-server purgatory list --json` on this server's data directory.
    pub fn purgatory_list(&self) -> Vec<serde_json::Value> {
        purgatory_list_in(&self.data.path().join("relay"), &self.database_args())
    }

    /// The options naming this server's event store (purgatory lives there on PostgreSQL).
    pub fn database_args(&self) -> Vec<String> {
        self.builder.args.iter().filter(|a| a.starts_with("--database-")).cloned().collect()
    }

    /// `grasp-server purgatory list` (the human table).
    pub fn purgatory_table(&self) -> String {
        let out = Command::new(binary("grasp-server"))
            .arg(format!("--relay-data-path={}", self.data.path().join("relay").display()))
            .args(self.database_args())
            .args(["purgatory", "list"])
            .output()
            .expect("run grasp-server purgatory list");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The NIP-11 document (`GET /` with `Accept: application/nostr+json`).
    pub async fn nip11(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(self.http_url())
            .header("Accept", "application/nostr+json")
            .send()
            .await
            .expect("NIP-11 request")
            .json()
            .await
            .expect("NIP-11 JSON")
    }

    /// The text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.http_url()))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL, with what it spawned) and starts it again on the same data
    /// directory; a proxy's upstream keeps running. The port changes.
    pub fn restart(&mut self) {
        self.restart_with_env(&[]);
    }

    /// [`TestServer::restart`] with extra environment for this start only (e.g. a
    /// `FAILPOINTS` crash injection).
    pub fn restart_with_env(&mut self, extra: &[(&str, &str)]) {
        self.child.kill();
        let (child, addr) = Self::spawn(&self.builder, self.data.path(), self.upstream.as_ref(), extra);
        self.child = child;
        self.addr = addr;
    }

    /// Kills the process (SIGKILL) and keeps its data directory, e.g. to see what clients
    /// of a stopped node get; [`TestServer::resume`] starts it again.
    pub fn stop(&mut self) {
        self.child.kill();
    }

    /// The node's local API socket (what `grasp-hook` connects to).
    pub fn local_api_socket(&self) -> PathBuf {
        self.data.path().join("relay").join("local-api.sock")
    }

    /// Starts a stopped server again on the same data directory (and, when the builder
    /// fixed `--bind-address`, the same port).
    pub fn resume(&mut self) {
        let (child, addr) = Self::spawn(&self.builder, self.data.path(), self.upstream.as_ref(), &[]);
        self.child = child;
        self.addr = addr;
    }

    /// True once the server process has exited (crashed, or was stopped).
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.child().try_wait(), Ok(None))
    }

    /// A connected nostr-sdk client for this relay.
    pub async fn client(&self) -> Client {
        self.client_with_keys(Keys::generate()).await
    }

    /// A connected nostr-sdk client that signs with `keys`.
    pub async fn client_with_keys(&self, keys: Keys) -> Client {
        let client = Client::new(keys);
        client.add_relay(self.ws_url()).await.expect("add relay");
        client.connect().await;
        client.wait_for_connection(Duration::from_secs(10)).await;
        client
    }
}

/// `grasp-server purgatory list --json` for the relay data directory `relay` (and the
/// options `database` naming the event store, when it is not there).
pub fn purgatory_list_in(relay: &Path, database: &[String]) -> Vec<serde_json::Value> {
    let out = Command::new(binary("grasp-server"))
        .arg(format!("--relay-data-path={}", relay.display()))
        .args(database)
        .args(["purgatory", "list", "--json"])
        .env_remove("GRASP_LOG_LEVEL")
        .output()
        .expect("run grasp-server purgatory list");
    assert!(out.status.success(), "purgatory list failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("purgatory list prints JSON")
}
