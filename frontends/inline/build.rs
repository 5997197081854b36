//! Records the git commit the binary is built from, for the `ngit_build_info` metric.
//!
//! `GRASP_BUILD_COMMIT` in the environment wins (packagers building from a tarball set it);
//! otherwise `git rev-parse` in the source tree; otherwise `unknown`. Cargo reruns this
//! script when HEAD or the branch it points at moves, so the label follows new commits
//! without rebuilding the library.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Asks cargo to rerun when `path` changes; a missing file would make it rerun every build.
fn watch(path: String) {
    if std::path::Path::new(&path).exists() {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=GRASP_BUILD_COMMIT");
    let commit = std::env::var("GRASP_BUILD_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        ["HEAD", "packed-refs"]
            .into_iter()
            .filter_map(|p| git(&["rev-parse", "--git-path", p]))
            .for_each(watch);
        if let Some(branch) =
            git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|b| b.starts_with("refs/"))
        {
            git(&["rev-parse", "--git-path", &branch]).into_iter().for_each(watch);
        }
        git(&["rev-parse", "--short=12", "HEAD"])
    });
    println!("cargo:rustc-env=GRASP_BUILD_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
}
