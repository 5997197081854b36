//! `grasp-hook install`: writes the `pre-receive` and `post-receive` hooks, idempotently,
//! without breaking hooks that were there before.
//!
//! - A hook that is not ours is renamed `<name>.grasp-chained` and run by ours with the
//!   same input (`--chain`), so a forge's own hook keeps working.
//! - Ours is recognised by [`MARKER`]: installing again rewrites it in place (new paths,
//!   same chain) and never chains it to itself.
//! - Where git hooks are a directory of drop-ins (`hooks/pre-receive.d/`, as Gitea and
//!   Forgejo generate), ours goes in there as `grasp` and nothing is renamed.
//! - The hooks directory is the one git uses for the repository (`git rev-parse
//!   --git-path hooks`), so `core.hooksPath` is honoured.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::Args;

use crate::args::NodeArgs;
use crate::repository::RepositoryArgs;

/// The line that marks a hook file as written by `grasp-hook install`.
pub const MARKER: &str = "# grasp-hook: managed hook";

/// The hooks we install.
const HOOKS: [&str; 2] = ["pre-receive", "post-receive"];

/// How deep `install <root>` looks for repositories (`<root>/<npub>/<identifier>.git` is 2).
const MAX_DEPTH: usize = 4;

/// Arguments of `grasp-hook install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// A bare repository, or a directory whose bare repositories (e.g. <npub>/<identifier>.git) all get the hooks
    #[arg(required_unless_present = "hooks_dir")]
    target: Option<PathBuf>,
    /// Write the hooks into this directory instead (for core.hooksPath or a git template directory)
    #[arg(long, conflicts_with = "target")]
    hooks_dir: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    repository: RepositoryArgs,
    /// The grasp-hook binary the hooks run [default: this one]
    #[arg(long)]
    binary: Option<PathBuf>,
}

/// What happened to one hook file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Written where there was none.
    New,
    /// Ours was there: rewritten.
    Updated,
    /// Another hook was there: it now runs from `<name>.grasp-chained`.
    Chained,
    /// Written into the `<name>.d/` drop-in directory.
    DropIn,
}

fn quote(value: &Path) -> String {
    format!("'{}'", value.to_string_lossy().replace('\'', "'\\''"))
}

fn absolute(path: &Path) -> Result<PathBuf, String> {
    path.canonicalize().map_err(|e| format!("{}: {e}", path.display()))
}

/// The `grasp-hook <hook> …` arguments baked into the scripts (without `--chain`).
fn hook_arguments(args: &InstallArgs, root: Option<&Path>) -> Result<Vec<String>, String> {
    let socket = std::path::absolute(&args.node.socket).map_err(|e| format!("--socket: {e}"))?;
    let mut out =
        vec![format!("--socket {}", quote(&socket)), format!("--timeout-secs {}", args.node.timeout_secs)];
    let repo = &args.repository;
    if let (Some(owner), Some(identifier)) = (&repo.owner, &repo.identifier) {
        out.push(format!("--owner {}", quote(Path::new(owner))));
        out.push(format!("--identifier {}", quote(Path::new(identifier))));
    } else if let Some(url_path) = &repo.url_path {
        out.push(format!("--url-path {}", quote(Path::new(url_path))));
    } else {
        let root = repo.root.as_deref().or(root).ok_or("--root is needed with --hooks-dir")?;
        out.push(format!("--root {}", quote(&absolute(root)?)));
    }
    Ok(out)
}

fn script(binary: &Path, hook: &str, arguments: &[String], chain: Option<&Path>) -> String {
    let mut line = format!("exec {} {hook} {}", quote(binary), arguments.join(" "));
    if let Some(chain) = chain {
        line.push_str(&format!(" --chain {}", quote(chain)));
    }
    format!(
        "#!/bin/sh\n{MARKER} (re-run `grasp-hook install` to update it; a hook that was here before runs \
         from {hook}.grasp-chained)\n{line}\n"
    )
}

fn write_executable(path: &Path, text: &str) -> Result<(), String> {
    let staged = path.with_extension("grasp-new");
    std::fs::write(&staged, text).map_err(|e| format!("{}: {e}", staged.display()))?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", staged.display()))?;
    std::fs::rename(&staged, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn is_ours(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|text| String::from_utf8_lossy(&text).contains(MARKER))
}

/// Installs hook `hook` into `hooks_dir`; see the module documentation.
pub fn install_hook(
    hooks_dir: &Path,
    hook: &str,
    binary: &Path,
    arguments: &[String],
) -> Result<Installed, String> {
    std::fs::create_dir_all(hooks_dir).map_err(|e| format!("{}: {e}", hooks_dir.display()))?;
    let drop_ins = hooks_dir.join(format!("{hook}.d"));
    if drop_ins.is_dir() {
        write_executable(&drop_ins.join("grasp"), &script(binary, hook, arguments, None))?;
        return Ok(Installed::DropIn);
    }
    let path = hooks_dir.join(hook);
    let chained = hooks_dir.join(format!("{hook}.grasp-chained"));
    let exists = std::fs::symlink_metadata(&path).is_ok();
    let outcome = if !exists {
        Installed::New
    } else if is_ours(&path) {
        Installed::Updated
    } else if std::fs::symlink_metadata(&chained).is_ok() {
        return Err(format!(
            "{} is not ours and {} exists too; move one of them away and install again",
            path.display(),
            chained.display()
        ));
    } else {
        std::fs::rename(&path, &chained).map_err(|e| format!("{}: {e}", path.display()))?;
        Installed::Chained
    };
    let chain = std::fs::symlink_metadata(&chained).is_ok().then_some(chained.as_path());
    write_executable(&path, &script(binary, hook, arguments, chain))?;
    Ok(outcome)
}

fn is_bare_repository(dir: &Path) -> bool {
    dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir()
}

/// Bare repositories under `root` (not descending into repositories), sorted.
fn repositories_under(root: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if is_bare_repository(root) {
        out.push(root.to_path_buf());
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else { return };
    let mut dirs: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    for dir in dirs {
        repositories_under(&dir, depth - 1, out);
    }
}

/// The hooks directory git uses for `repo` (honours `core.hooksPath`).
fn hooks_dir_of(repo: &Path) -> Result<PathBuf, String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!("{}: {}", repo.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if dir.is_absolute() { dir } else { repo.join(dir) })
}

fn report(place: &Path, results: &[(&str, Installed)]) {
    let text: Vec<String> = results.iter().map(|(hook, how)| format!("{hook}: {how:?}")).collect();
    println!("{}: {}", place.display(), text.join(", ").to_lowercase());
}

/// Runs `grasp-hook install`.
pub fn run(args: &InstallArgs) -> ExitCode {
    match install(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grasp-hook install: {e}");
            ExitCode::FAILURE
        }
    }
}

fn install(args: &InstallArgs) -> Result<(), String> {
    let binary = match &args.binary {
        Some(binary) => absolute(binary)?,
        None => std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?,
    };
    let install_into = |hooks_dir: &Path, arguments: &[String]| -> Result<(), String> {
        let results = HOOKS
            .iter()
            .map(|hook| install_hook(hooks_dir, hook, &binary, arguments).map(|how| (*hook, how)))
            .collect::<Result<Vec<_>, _>>()?;
        report(hooks_dir, &results);
        Ok(())
    };
    if let Some(hooks_dir) = &args.hooks_dir {
        return install_into(hooks_dir, &hook_arguments(args, None)?);
    }
    let target = absolute(args.target.as_deref().expect("clap requires a target without --hooks-dir"))?;
    let (repos, root) = if is_bare_repository(&target) {
        // A single repository: by default its root is two levels up (<root>/<npub>/<id>.git).
        (vec![target.clone()], target.parent().and_then(Path::parent).map(Path::to_path_buf))
    } else {
        let mut repos = Vec::new();
        repositories_under(&target, MAX_DEPTH, &mut repos);
        (repos, Some(target.clone()))
    };
    let named = args.repository.owner.is_some() || args.repository.url_path.is_some();
    if named && repos.len() != 1 {
        return Err(
            "--owner/--identifier and --url-path name one repository: give a repository, not a root".into()
        );
    }
    let arguments = hook_arguments(args, root.as_deref())?;
    let mut done = BTreeSet::new();
    for repo in &repos {
        let hooks_dir = hooks_dir_of(repo)?;
        // Repositories sharing a hooks directory (core.hooksPath) need it written once.
        if done.insert(hooks_dir.canonicalize().unwrap_or_else(|_| hooks_dir.clone())) {
            install_into(&hooks_dir, &arguments)?;
        }
    }
    println!("grasp-hook hooks are in place for {} repositories under {}", repos.len(), target.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        vec!["--socket '/run/grasp.sock'".into(), "--root '/srv/git'".into()]
    }

    #[test]
    fn installing_is_idempotent_and_chains_the_hook_that_was_there() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path();
        let bin = Path::new("/usr/local/bin/grasp-hook");
        let forge = "#!/bin/sh\necho forge hook\n";
        std::fs::write(hooks.join("pre-receive"), forge).unwrap();

        assert_eq!(install_hook(hooks, "pre-receive", bin, &args()).unwrap(), Installed::Chained);
        assert_eq!(std::fs::read_to_string(hooks.join("pre-receive.grasp-chained")).unwrap(), forge);
        let ours = std::fs::read_to_string(hooks.join("pre-receive")).unwrap();
        assert!(
            ours.contains(MARKER) && ours.contains("--chain") && ours.contains("pre-receive.grasp-chained")
        );
        let mode = std::fs::metadata(hooks.join("pre-receive")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        // again: rewritten in place, still chaining the forge's hook once, never itself
        assert_eq!(install_hook(hooks, "pre-receive", bin, &args()).unwrap(), Installed::Updated);
        assert_eq!(std::fs::read_to_string(hooks.join("pre-receive")).unwrap(), ours);
        assert_eq!(std::fs::read_to_string(hooks.join("pre-receive.grasp-chained")).unwrap(), forge);

        // a fresh hook name: no chain
        assert_eq!(install_hook(hooks, "post-receive", bin, &args()).unwrap(), Installed::New);
        assert!(!std::fs::read_to_string(hooks.join("post-receive")).unwrap().contains("--chain"));

        // someone replaced ours with their own while a chained one exists: refuse to guess
        std::fs::write(hooks.join("pre-receive"), "#!/bin/sh\nexit 0\n").unwrap();
        let err = install_hook(hooks, "pre-receive", bin, &args()).unwrap_err();
        assert!(err.contains("move one of them away"), "{err}");
        let names: Vec<_> = std::fs::read_dir(hooks).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!names.iter().any(|n| n.to_string_lossy().ends_with("grasp-new")), "{names:?}");
    }

    #[test]
    fn drop_in_directories_get_a_file_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let hooks = dir.path();
        std::fs::create_dir(hooks.join("pre-receive.d")).unwrap();
        let generated = "#!/bin/sh\n# runs every pre-receive.d/* hook\n";
        std::fs::write(hooks.join("pre-receive"), generated).unwrap();
        let bin = Path::new("/opt/grasp hook/it's here");
        assert_eq!(install_hook(hooks, "pre-receive", bin, &args()).unwrap(), Installed::DropIn);
        assert_eq!(std::fs::read_to_string(hooks.join("pre-receive")).unwrap(), generated);
        let ours = std::fs::read_to_string(hooks.join("pre-receive.d/grasp")).unwrap();
        assert!(ours.contains(r"exec '/opt/grasp hook/it'\''s here' pre-receive"), "{ours}");
        assert_eq!(install_hook(hooks, "pre-receive", bin, &args()).unwrap(), Installed::DropIn);
    }
}
