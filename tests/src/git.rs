//! Driving the real `git` CLI: a working repository to commit in and push from, isolated
//! from the user's git configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs git with a clean, deterministic environment.
pub fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.invalid")
        .env("GIT_COMMITTER_NAME", "Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.invalid")
        .env_remove("GIT_DIR")
        .output()
        .expect("run git")
}

/// Output of a git command that must succeed.
pub fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(
        out.status.success(),
        "git {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The combined stdout+stderr of a git command that must fail.
pub fn git_fails(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "git {args:?} unexpectedly succeeded:\n{text}");
    text
}

/// A non-bare repository in a temporary directory.
pub struct Workdir {
    dir: TempDir,
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

impl Workdir {
    /// `git init` on branch `main`.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        git_ok(dir.path(), &["init", "-q", "-b", "main"]);
        Self { dir }
    }

    /// A clone of `url` (extra git options such as `--filter=blob:none` before the URL).
    pub fn clone_from(url: &str, options: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["clone", "-q"];
        args.extend_from_slice(options);
        args.extend([url, "."]);
        git_ok(dir.path(), &args);
        Self { dir }
    }

    /// The working directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs a git command that must succeed; returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        git_ok(self.path(), args)
    }

    /// Runs a git command that must fail; returns its output.
    pub fn fails(&self, args: &[&str]) -> String {
        git_fails(self.path(), args)
    }

    /// Writes `file` and commits it; returns the new commit id.
    pub fn commit(&self, file: &str, content: &[u8]) -> String {
        let path: PathBuf = self.path().join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&path, content).expect("write file");
        self.ok(&["add", "-A"]);
        self.ok(&["commit", "-q", "-m", &format!("change {file}")]);
        self.rev("HEAD")
    }

    /// `git rev-parse <rev>`.
    pub fn rev(&self, rev: &str) -> String {
        self.ok(&["rev-parse", rev])
    }

    /// The pack of everything `new` reaches that `old` does not (what `git push` sends for
    /// `new` on top of `old`).
    pub fn pack(&self, old: &str, new: &str) -> Vec<u8> {
        let mut child = std::process::Command::new("git")
            .current_dir(self.path())
            .args(["pack-objects", "--stdout", "--revs", "-q"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("git pack-objects");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            writeln!(stdin, "{new}\n^{old}").expect("write revisions");
        }
        let out = child.wait_with_output().expect("git pack-objects");
        assert!(out.status.success(), "git pack-objects failed");
        out.stdout
    }
}

/// Reads refs and HEAD of a bare repository on the server's disk.
pub fn bare_refs(path: &Path) -> (Vec<(String, String)>, String) {
    let refs = git_ok(path, &["for-each-ref", "--format=%(refname) %(objectname)"]);
    let refs =
        refs.lines().filter_map(|l| l.split_once(' ').map(|(n, o)| (n.to_owned(), o.to_owned()))).collect();
    let head = git_ok(path, &["symbolic-ref", "HEAD"]);
    (refs, head)
}

/// What the ref `name` points at in the bare repository at `path` ("" when absent, or when
/// the repository is not there).
pub fn ref_at(path: &Path, name: &str) -> String {
    if !path.exists() {
        return String::new();
    }
    git_ok(path, &["for-each-ref", "--format=%(objectname)", name])
}

/// `refs/grasp/waiting/<id>`: where a `refs/nostr/<id>` push for an event the server does not
/// know waits for it (outside the served refs).
pub fn waiting_ref(id: &str) -> String {
    format!("refs/grasp/waiting/{id}")
}

/// The body of a plain protocol v0 clone request for `tip` (no capabilities).
pub fn v0_clone_body(tip: &str) -> String {
    format!("0032want {tip}\n00000009done\n")
}

/// Sends `body` as `POST <url>/git-upload-pack` to `server` (`127.0.0.1:<port>`), reads the
/// start of the answer and resets the connection: a client hanging up mid-clone. Returns
/// the start it read.
pub async fn hang_up_mid_upload_pack(server: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST {path}/git-upload-pack HTTP/1.1\r\nHost: {server}\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(server).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut start = [0u8; 4096];
    let n = stream.read(&mut start).await.expect("read");
    stream.set_zero_linger().expect("linger");
    String::from_utf8_lossy(&start[..n]).into_owned()
}
