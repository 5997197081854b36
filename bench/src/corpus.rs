//! The clone benchmark corpus: a real repository of well over 100 MB packed, built from
//! source text found on this machine (the crates cargo downloaded, the Rust toolchain's
//! HTML documentation and rendered sources, Python's standard library, C headers), with a
//! long history: one commit per crate or top-level directory, then hundreds of small edits.
//! Built once and cached.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// Bump when the recipe changes, so old caches are rebuilt.
const VERSION: &str = "v2";
/// Edit commits after the crates are in.
const EDITS: usize = 400;

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.invalid")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.invalid")
        .output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            bytes += copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            bytes += std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(bytes)
}

/// Other text trees to add when present, as (where, name in the corpus).
fn other_sources() -> Vec<(PathBuf, String)> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let rustup = std::env::var_os("RUSTUP_HOME").map(PathBuf::from).unwrap_or_else(|| home.join(".rustup"));
    let mut roots: Vec<(PathBuf, String)> = Vec::new();
    if let Ok(toolchains) = std::fs::read_dir(rustup.join("toolchains")) {
        let mut toolchains: Vec<PathBuf> = toolchains.filter_map(|t| t.ok().map(|t| t.path())).collect();
        toolchains.sort();
        if let Some(first) = toolchains.first() {
            roots.push((first.join("share/doc/rust/html"), "rust-docs".into()));
        }
    }
    roots.push((PathBuf::from("/usr/lib/python3.11"), "python".into()));
    roots.push((PathBuf::from("/usr/include"), "include".into()));
    let mut out = Vec::new();
    for (root, name) in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut entries: Vec<PathBuf> =
            entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        entries.sort();
        out.extend(entries.into_iter().map(|p| {
            let leaf = p.file_name().expect("dir name").to_string_lossy().into_owned();
            (p, format!("{name}/{leaf}"))
        }));
    }
    out
}

fn registry_sources() -> anyhow::Result<Vec<PathBuf>> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?;
    let mut crates = Vec::new();
    for index in std::fs::read_dir(cargo_home.join("registry/src"))? {
        for krate in std::fs::read_dir(index?.path())? {
            let path = krate?.path();
            if path.is_dir() {
                crates.push(path);
            }
        }
    }
    crates.sort();
    if crates.is_empty() {
        bail!("no crate sources under {}/registry/src: run cargo build first", cargo_home.display());
    }
    Ok(crates)
}

/// The bare corpus repository (built on first use under `cache`), with its size on disk.
pub fn ensure(cache: &Path) -> anyhow::Result<(PathBuf, u64)> {
    let base = cache.join(format!("corpus-{VERSION}"));
    let bare = base.join("corpus.git");
    if !base.join("DONE").exists() {
        let _ = std::fs::remove_dir_all(&base);
        let work = base.join("work");
        std::fs::create_dir_all(&work)?;
        git(&work, &["init", "-q", "-b", "main"])?;
        let mut sources: Vec<(PathBuf, String)> = registry_sources()?
            .into_iter()
            .map(|p| {
                let name = format!("crates/{}", p.file_name().expect("crate dir name").to_string_lossy());
                (p, name)
            })
            .collect();
        sources.extend(other_sources());
        eprintln!("building the corpus from {} trees (once; cached in {})", sources.len(), base.display());
        let mut copied = 0u64;
        for (source, name) in &sources {
            copied += copy_tree(source, &work.join(name))?;
            git(&work, &["add", "-A", "-f"])?;
            git(&work, &["commit", "-q", "--allow-empty", "--no-verify", "-m", &format!("add {name}")])?;
        }
        let crates = &sources;
        let files: Vec<String> = git(&work, &["ls-files", "*.rs"])?.lines().map(str::to_owned).collect();
        for i in 0..EDITS {
            let file = &files[(i * 7919) % files.len()];
            let path = work.join(file);
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!("\n// benchmark edit {i}\n"));
            std::fs::write(&path, text)?;
            git(&work, &["commit", "-q", "-a", "--no-verify", "-m", &format!("edit {i}")])?;
        }
        eprintln!("corpus: {} MiB of source, {} commits; packing", copied >> 20, crates.len() + EDITS);
        git(&base, &["clone", "-q", "--bare", "--no-local", "work", "corpus.git"])?;
        git(&bare, &["repack", "-a", "-d", "-q"])?;
        git(&bare, &["config", "uploadpack.allowFilter", "true"])?;
        git(&bare, &["config", "uploadpack.allowReachableSHA1InWant", "true"])?;
        git(&bare, &["config", "http.receivepack", "true"])?;
        std::fs::remove_dir_all(&work)?;
        std::fs::write(base.join("DONE"), "")?;
    }
    Ok((bare.clone(), dir_size(&bare)?))
}

/// Bytes of all files under `dir`.
pub fn dir_size(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        total += if kind.is_dir() { dir_size(&entry.path())? } else { entry.metadata()?.len() };
    }
    Ok(total)
}

/// The commit `main` points at.
pub fn head(bare: &Path) -> anyhow::Result<String> {
    git(bare, &["rev-parse", "main"])
}
