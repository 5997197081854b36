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
    let args = command.iter().filter(|a| !OUTPUT_NEUTRAL.iter().any(|n| a.as_os_str() == *n));
    let mut fields: Vec<&[u8]> = args.map(|a| a.as_encoded_bytes()).collect();
    fields.extend([b"stdin".as_slice(), input]);
    hash(b"grasp pack cache 1", repo, &fields)
}

/// The key of a whole upload-pack answer ([`super::response`]): the repository, its refs,
/// the `Git-Protocol` the client asked for and the request body (wants, haves, shallow
/// lines, filter and capabilities such as `no-progress` and `side-band-64k`).
pub fn compute_response(repo: &Path, git_protocol: Option<&str>, request: &[u8]) -> io::Result<Key> {
    let protocol = git_protocol.unwrap_or_default().as_bytes();
    hash(b"grasp upload-pack response 1", repo, &[protocol, b"request", request])
}

/// The hash of `domain`, the repository at `repo` with its ref snapshot, and `fields`.
fn hash(domain: &[u8], repo: &Path, fields: &[&[u8]]) -> io::Result<Key> {
    let repo = repo.canonicalize()?;
    let mut engine = sha256::HashEngine::default();
    field(&mut engine, domain);
    field(&mut engine, repo.as_os_str().as_encoded_bytes());
    ref_snapshot(&repo, &mut engine)?;
    for bytes in fields {
        field(&mut engine, bytes);
    }
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
    fn a_response_key_follows_the_protocol_and_the_request_and_differs_from_a_pack_key() {
        let dir = repo();
        let git_dir = dir.path().join(".git");
        let a = compute_response(&git_dir, None, b"want x\n").unwrap();
        assert_eq!(a, compute_response(&git_dir, None, b"want x\n").unwrap());
        assert_ne!(a, compute_response(&git_dir, Some("version=2"), b"want x\n").unwrap());
        assert_ne!(a, compute_response(&git_dir, None, b"want y\n").unwrap());
        assert_ne!(a, compute(&git_dir, &[], b"want x\n").unwrap(), "another domain");
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
