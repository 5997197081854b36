//! A real browser for tests: Debian's chromium driven by puppeteer-core through
//! `tests/browser/run.mjs`, which serves the client page from its own 127.0.0.1 origin.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process::ProcessGroup;

/// `tests/browser`: the page, the driver, and its npm packages.
pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// The chromium binary (`$CHROMIUM`, else Debian's `/usr/bin/chromium`), or why the
/// browser tests cannot run on this machine.
pub fn chromium() -> Result<PathBuf, String> {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    let runs = Command::new(&path).arg("--version").output().map(|o| o.status.success());
    match runs {
        Ok(true) => Ok(path),
        _ => Err(format!(
            "{} cannot run; install Debian's chromium (scripts/test.sh does: apt-get install chromium)",
            path.display()
        )),
    }
}

/// Installs the npm packages of `tests/browser` from its lock file when they are missing.
fn ensure_packages(dir: &Path) {
    if dir.join("node_modules/.package-lock.json").is_file() {
        return;
    }
    let out = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .expect("run npm (node and npm are needed for the browser tests)");
    assert!(
        out.status.success(),
        "npm ci in {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs the driver with `options` (see `tests/browser/run.mjs`) and returns what it printed
/// after `RESULT `. Panics after `timeout`; node, its static server and chromium are killed
/// with their process group either way.
pub fn run(options: &Value, timeout: Duration) -> Value {
    let dir = browser_dir();
    ensure_packages(&dir);
    let mut driver = ProcessGroup::spawn(
        Command::new("node")
            .arg(dir.join("run.mjs"))
            .arg(options.to_string())
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .expect("start node");
    let stdout = driver.child().stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the browser run did not finish within {timeout:?}"));
        // puppeteer starts chromium in a process group of its own: kill that one too.
        if let Some(pid) = line.strip_prefix("BROWSER_PID ").and_then(|p| p.trim().parse().ok()) {
            driver.also_kill_group(pid);
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            return serde_json::from_str(json).expect("the driver prints JSON");
        }
    }
}
