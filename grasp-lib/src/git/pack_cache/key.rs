//! The cache key: everything that decides the bytes pack-objects writes, and nothing about
//! who asked. The repository (its canonical path), a snapshot of its refs (HEAD,
//! `packed-refs` and every loose ref: a push changes it, so the next clone after a push is
//! computed afresh, and `--include-tag` sees the same tags), pack-objects' arguments
//! (`--progress` left out: it only changes stderr) and its whole input (wants, `--not`,
//! haves, `--shallow` lines; a filter arrives as an argument).

use std::ffi::OsString;
use std::io;
use std::path::Path;

use nostr::hashes::{sha256, Hash, HashEngine};

/// A cache key: 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key(String);

impl Key {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Arguments that do not change pack-objects' output.
const OUTPUT_NEUTRAL: [&str; 2] = ["--progress", "--quiet"];

/// The key of running `command` (`git [opts] pack-objects …`) in the repository at `repo`
/// with `input` on stdin.
pub fn compute(repo: &Path, command: &[OsString], input: &[u8]) -> io::Result<Key> {
    let repo = repo.canonicalize()?;
    let mut engine = sha256::HashEngine::default();
    field(&mut engine, b"grasp pack cache 1");
    field(&mut engine, repo.as_os_str().as_encoded_bytes());
    ref_snapshot(&repo, &mut engine)?;
    for arg in command.iter().filter(|a| !OUTPUT_NEUTRAL.iter().any(|n| a.as_os_str() == *n)) {
        field(&mut engine, arg.as_encoded_bytes());
    }
    field(&mut engine, b"stdin");
    field(&mut engine, input);
    Ok(Key(hex::encode(sha256::Hash::from_engine(engine).to_byte_array())))
}

/// A length-prefixed field, so that no two different inputs hash alike.
fn field(engine: &mut sha256::HashEngine, bytes: &[u8]) {
    engine.input(&(bytes.len() as u64).to_le_bytes());
    engine.input(bytes);
}

/// HEAD and every ref with its value, read as the ref advertisement reads them
/// ([`crate::git::advertise::ref_values`]): what the refs say, not how they are stored, so
/// `git pack-refs` in the background changes nothing. A repository whose refs git would
/// have to interpret gets no key (and no cache).
fn ref_snapshot(repo: &Path, engine: &mut sha256::HashEngine) -> io::Result<()> {
    let values = crate::git::advertise::ref_values(repo)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "refs not read exactly"))?;
    for (name, value) in values {
        field(engine, name.as_bytes());
        field(engine, value.as_bytes());
    }
    Ok(())
}

/// A key from its hex digits, for other modules' tests.
#[cfg(test)]
pub(crate) fn tests_key(hex: &str) -> Key {
    Key(hex.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git").current_dir(dir).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "-b", "main"]);
        git(
            dir.path(),
            &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one"],
        );
        dir
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_key_follows_input_arguments_and_refs_but_not_progress() {
        let dir = repo();
        let git_dir = dir.path().join(".git");
        let base = args(&["git", "pack-objects", "--revs", "--stdout"]);
        let a = compute(&git_dir, &base, b"want\n").unwrap();
        assert_eq!(a, compute(&git_dir, &base, b"want\n").unwrap());
        assert_ne!(a, compute(&git_dir, &base, b"other\n").unwrap(), "input");
        let filtered = args(&["git", "pack-objects", "--revs", "--stdout", "--filter=blob:none"]);
        assert_ne!(a, compute(&git_dir, &filtered, b"want\n").unwrap(), "filter");
        let progress = args(&["git", "pack-objects", "--revs", "--stdout", "--progress"]);
        assert_eq!(a, compute(&git_dir, &progress, b"want\n").unwrap(), "progress");
        git(
            dir.path(),
            &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "two"],
        );
        assert_ne!(a, compute(&git_dir, &base, b"want\n").unwrap(), "a new commit on main");
        let b = compute(&git_dir, &base, b"want\n").unwrap();
        git(dir.path(), &["pack-refs", "--all"]);
        assert_eq!(b, compute(&git_dir, &base, b"want\n").unwrap(), "packing refs changes nothing");
        git(dir.path(), &["tag", "v1"]);
        assert_ne!(b, compute(&git_dir, &base, b"want\n").unwrap(), "a new tag");
        assert_eq!(compute(&git_dir, &base, b"want\n").unwrap().as_str().len(), 64);
    }

    #[test]
    fn another_repository_gets_another_key() {
        let (one, two) = (repo(), repo());
        let base = args(&["git", "pack-objects"]);
        assert_ne!(
            compute(&one.path().join(".git"), &base, b"").unwrap(),
            compute(&two.path().join(".git"), &base, b"").unwrap()
        );
    }
}
