//! A throw-away PostgreSQL for the `nodes` scenario, started and stopped by the benchmark
//! itself so that nothing outlives the run: the Debian `postgresql` server binaries
//! (`/usr/lib/postgresql/<version>/bin`), a fresh cluster in a temporary directory,
//! listening on 127.0.0.1 (a free port) and on a unix socket in that directory. Unlike the
//! test suite's (`scripts/postgres.sh`), durability settings stay at PostgreSQL's
//! defaults: the benchmark measures what an operator would run.
//!
//! initdb and postgres refuse to run as root: as root they run as the `postgres` system
//! user (the Debian package creates it), owning the temporary directory.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use grasp_tests::postgres::TestDatabase;
use grasp_tests::process::ProcessGroup;
use grasp_tests::upstream::free_port;
use tempfile::TempDir;

/// A running PostgreSQL; stopped (fast shutdown, then the process group killed) and its
/// directory removed on drop.
pub struct Postgres {
    // Fields drop in order: the server goes before its directory. `None` once it stopped.
    server: Option<ProcessGroup>,
    _dir: TempDir,
    /// `postgres://grasp@127.0.0.1:<port>/postgres`: the superuser, trusted on loopback.
    pub admin_url: String,
    /// `postgres --version`.
    pub version: String,
}

/// The uid and gid to run PostgreSQL as: `postgres` when we are root, else ourselves.
fn server_user() -> anyhow::Result<Option<(u32, u32)>> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    Ok(Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?)))
}

fn id(args: &[&str]) -> anyhow::Result<u32> {
    let out = Command::new("id").args(args).output()?;
    anyhow::ensure!(out.status.success(), "id {args:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// The newest `/usr/lib/postgresql/<version>/bin` with an initdb in it.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)",
        )?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context("no /usr/lib/postgresql/<version>/bin/initdb")
}

/// A command for PostgreSQL program `name`, run as `user` when given.
fn program(bin: &Path, name: &str, user: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut cmd = Command::new(bin.join(name));
    // The postgres user may not enter our working directory.
    cmd.current_dir(dir).stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

impl Postgres {
    /// initdb's a fresh cluster and starts it; fails with its log when it does not come up.
    pub fn start() -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let user = server_user()?;
        let dir = tempfile::Builder::new().prefix("grasp-bench-pg.").tempdir()?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let out = program(&bin, "initdb", user, dir.path())
            .arg("-D")
            .arg(&data)
            .args(["-U", "grasp", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let version = Command::new(bin.join("postgres")).arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        // A free port can be taken between finding and binding it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let log_path = dir.path().join(format!("server-{port}.log"));
            let log = std::fs::File::create(&log_path)?;
            let mut server = ProcessGroup::spawn(
                program(&bin, "postgres", user, dir.path())
                    .arg("-D")
                    .arg(&data)
                    .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-k"])
                    .arg(dir.path())
                    .stdout(log.try_clone()?)
                    .stderr(log),
            )
            .context("starting postgres")?;
            if wait_ready(&mut server, &bin, port)? {
                let admin_url = format!("postgres://grasp@127.0.0.1:{port}/postgres");
                return Ok(Self { server: Some(server), _dir: dir, admin_url, version });
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            eprintln!("PostgreSQL did not start on port {port}; trying another. Its log:\n{log}");
        }
        bail!("PostgreSQL did not start in 5 attempts")
    }

    /// A fresh, empty database, dropped (with its connections) when the value is dropped.
    pub fn database(&self) -> TestDatabase {
        TestDatabase::create(&self.admin_url)
    }
}

/// Polls `pg_isready` until `server` accepts connections; `false` when it exited first.
fn wait_ready(server: &mut ProcessGroup, bin: &Path, port: u16) -> anyhow::Result<bool> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if server.exited() {
            return Ok(false);
        }
        let ready = Command::new(bin.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", "grasp", "-d", "postgres"])
            .status()?;
        if ready.success() {
            return Ok(true);
        }
        anyhow::ensure!(Instant::now() < deadline, "PostgreSQL did not accept connections within 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut server) = self.server.take() else { return };
        // A fast shutdown (SIGINT) ends the sessions and removes the shared memory and the
        // pid file.
        let pid = server.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !server.exited() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if server.exited() {
            // Reaped, and its group is empty (the postmaster outlives its children): dropping
            // the handle would only have `kill` complain that the group is gone.
            std::mem::forget(server);
        }
        // Otherwise dropping it SIGKILLs the whole group.
    }
}
