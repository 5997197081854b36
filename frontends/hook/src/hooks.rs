//! The two hooks. Git shows what a hook writes to stderr as `remote:` lines, and refuses the
//! whole push when `pre-receive` exits non-zero.
//!
//! Git runs `pre-receive` while the pushed objects are still in a quarantine directory
//! (`GIT_QUARANTINE_PATH`, `GIT_OBJECT_DIRECTORY`): nothing here reads objects (the node
//! decides from the pushed commands and the current refs), and a chained hook inherits the
//! environment unchanged, so it sees the quarantined objects as git intends.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use grasp_lib::authorization::PushDecision;
use grasp_lib::git::pktline::RefUpdate;
use grasp_lib::local_api::{LocalApiError, Response};

use crate::args::HookArgs;
use crate::repository::git_dir;

/// Largest hook input read (git writes one ~100-byte line per pushed ref).
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

fn read_input() -> Result<Vec<u8>, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the pushed refs from standard input: {e}"))?;
    if input.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!("more than {MAX_INPUT_BYTES} bytes of ref updates"));
    }
    Ok(input)
}

fn updates(input: &[u8]) -> Result<Vec<RefUpdate>, String> {
    let text = std::str::from_utf8(input).map_err(|_| "the pushed ref names are not UTF-8".to_owned())?;
    RefUpdate::parse_hook_input(text).map_err(|e| e.to_string())
}

/// Runs the hook that was installed before us with the same input and environment; its
/// output goes to git like ours.
fn run_chained(hook: &Path, input: &[u8]) -> Result<ExitCode, String> {
    let mut child = Command::new(hook)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run the chained hook {}: {e}", hook.display()))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    // A hook may exit without reading its input: write from a thread and ignore EPIPE.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let status = child.wait().map_err(|e| format!("waiting for {} failed: {e}", hook.display()))?;
    let _ = writer.join();
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE, // killed by a signal
    })
}

/// The pushing client's address, when the git server says it: `git http-backend` (behind
/// nginx or another CGI host) passes the web server's `REMOTE_ADDR` to the hooks it runs.
fn client_address() -> Option<std::net::IpAddr> {
    std::env::var("REMOTE_ADDR").ok()?.trim().parse().ok()
}

/// Asks the node; `Err` is the line to show the person pushing.
fn authorize(args: &HookArgs, input: &[u8]) -> Result<(), String> {
    let updates = updates(input)?;
    let repository = args.repository.resolve(&git_dir()?)?;
    match args.node.client().authorize_push(&repository, &updates, client_address()) {
        Ok(PushDecision::Authorized { .. }) => Ok(()),
        Ok(PushDecision::Rejected { reason, .. }) => Err(reason),
        Err(e @ (LocalApiError::Unreachable { .. } | LocalApiError::TimedOut { .. })) => {
            Err(format!("{e}. Pushes are refused until the node answers; ask the server's operator."))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `pre-receive`: ours first (a push GRASP refuses never reaches the forge's hook), then
/// the chained hook. Anything but a clear authorization refuses the push.
pub fn pre_receive(args: &HookArgs) -> ExitCode {
    let outcome = read_input().and_then(|input| authorize(args, &input).map(|()| input));
    match outcome {
        Ok(input) => match &args.chain {
            Some(chain) => run_chained(chain, &input).unwrap_or_else(|e| {
                eprintln!("grasp-hook: {e}");
                ExitCode::FAILURE
            }),
            None => ExitCode::SUCCESS,
        },
        Err(reason) => {
            eprintln!("rejected by GRASP: {reason}");
            ExitCode::FAILURE
        }
    }
}

/// `post-receive`: the chained hook first (the forge records the push as usual), then the
/// node's git-data step. The push has landed whatever happens here, so failures are
/// reported, not fatal; the exit code is the chained hook's.
pub fn post_receive(args: &HookArgs) -> ExitCode {
    let input = match read_input() {
        Ok(input) => input,
        Err(e) => {
            eprintln!("grasp-hook: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match &args.chain {
        Some(chain) => run_chained(chain, &input).unwrap_or_else(|e| {
            eprintln!("grasp-hook: {e}");
            ExitCode::FAILURE
        }),
        None => ExitCode::SUCCESS,
    };
    let processed = updates(&input).and_then(|updates| {
        let repository = args.repository.resolve(&git_dir()?)?;
        args.node.client().push_received(&repository, &updates, client_address()).map_err(|e| e.to_string())
    });
    match processed {
        Ok(Response::Processed { released, errors, .. }) => {
            if !released.is_empty() {
                let kinds: Vec<&str> = released.iter().map(|r| r.kind.as_str()).collect();
                eprintln!(
                    "grasp: released {} held event(s) ({}); served on the relay now",
                    kinds.len(),
                    kinds.join(", ")
                );
            }
            for error in errors {
                eprintln!("grasp: warning: {error}");
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "grasp: warning: the push landed, but the GRASP node could not process it: {e}. Events waiting \
             for this data are released at the next push, or when they are published again."
        ),
    }
    code
}
