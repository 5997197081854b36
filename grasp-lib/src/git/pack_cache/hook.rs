//! The `pack-objects-hook` program: upload-pack runs it instead of `git pack-objects`, with
//! the same command line appended, the same input on stdin and the pack expected on
//! stdout (pack-objects' stderr, its progress, passes through). It answers:
//!
//! 1. from a fresh complete entry (a **hit**: the file is copied to stdout by the kernel);
//! 2. the first time a key is seen: by running pack-objects, uncached (a **miss**), and
//!    noting the sighting;
//! 3. the second time: by running pack-objects into a new entry while streaming it; a
//!    concurrent request for the same key follows that entry as it grows.
//!
//! The writer finishes the entry even when its own client goes away, so a disconnect
//! poisons nothing; a full disk (under the free-space floor, or a failed write) drops the
//! entry and the client still gets its pack. Any trouble with the cache itself ends in
//! plain pack-objects: the cache can make a fetch faster, never make it fail.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use super::key::{self, Key};
use super::stats;
use super::store::{self, CacheDir, EntryPaths};
use super::{CacheSettings, HookArgs};

/// Largest input (wants and haves) kept in memory for the key; a larger negotiation is
/// passed to pack-objects uncached.
const MAX_INPUT: usize = 16 * 1024 * 1024;

/// Bytes copied per read.
const CHUNK: usize = 256 * 1024;

/// How long a follower waits at the end of a growing entry before reading on.
const FOLLOW_POLL: Duration = Duration::from_millis(10);

/// How often a growing entry is checked for free disk space.
const FREE_SPACE_EVERY: u64 = 16 * 1024 * 1024;

/// The subcommand git runs: `<program> pack-objects-hook <settings> git pack-objects …`.
pub const SUBCOMMAND: &str = "pack-objects-hook";

/// When this process was started as the hook, runs it and returns its exit code; `None`
/// otherwise. Frontends call it first thing in `main`, before any runtime starts: a fetch
/// waits for it.
pub fn run_if_invoked() -> Option<ExitCode> {
    let mut argv = std::env::args_os();
    let program = argv.next()?;
    if argv.next()? != SUBCOMMAND {
        return None;
    }
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        hook: HookArgs,
    }
    let cli = match <Cli as clap::Parser>::try_parse_from(std::iter::once(program).chain(argv)) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("{SUBCOMMAND}: {e}");
            return Some(ExitCode::from(2));
        }
    };
    Some(run(cli.hook))
}

/// Runs the hook in the current directory (upload-pack runs it in the repository).
pub fn run(args: HookArgs) -> ExitCode {
    let HookArgs { settings, command } = args;
    if command.is_empty() {
        eprintln!("pack-objects-hook: no pack-objects command given");
        return ExitCode::from(2);
    }
    let mut input = Vec::new();
    let complete = match io::stdin().lock().take(MAX_INPUT as u64 + 1).read_to_end(&mut input) {
        Ok(_) => input.len() <= MAX_INPUT,
        Err(e) => {
            eprintln!("pack-objects-hook: cannot read the request: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cache = if complete && settings.max_bytes > 0 {
        CacheDir::open(&settings.dir)
            .and_then(|cache| Ok((key::compute(Path::new("."), &command, &input)?, cache)))
            .ok()
    } else {
        None
    };
    let Some((key, cache)) = cache else {
        return uncached(&settings, &command, &input, !complete);
    };
    match cached(&settings, &cache, &key, &command, &input) {
        Ok(code) => code,
        // Nothing was sent yet: pack-objects answers.
        Err(Untouched) => uncached(&settings, &command, &input, false),
    }
}

/// The cache could not answer and nothing was written to stdout yet.
struct Untouched;

fn cached(
    settings: &CacheSettings,
    cache: &CacheDir,
    key: &Key,
    command: &[OsString],
    input: &[u8],
) -> Result<ExitCode, Untouched> {
    let paths = cache.paths(key).map_err(|_| Untouched)?;
    let max_age = settings.max_age();
    if let Some(file) = store::fresh(&paths.pack, max_age) {
        return Ok(serve_entry(cache, file));
    }
    if store::first_sighting(&paths.seen, max_age) {
        return Err(Untouched);
    }
    if cache.free_bytes().map_err(|_| Untouched)? < settings.min_free_bytes {
        return Err(Untouched);
    }
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&paths.lock)
        .map_err(|_| Untouched)?;
    match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => {
            // Someone may have finished it between the look and the lock.
            if let Some(file) = store::fresh(&paths.pack, max_age) {
                drop(lock);
                return Ok(serve_entry(cache, file));
            }
            Ok(write_entry(settings, cache, &paths, lock, command, input))
        }
        Err(_) => follow(cache, &paths),
    }
}

/// Sends a complete entry.
fn serve_entry(cache: &CacheDir, mut file: File) -> ExitCode {
    let sent = io::copy(&mut file, &mut io::stdout().lock());
    let bytes = sent.as_ref().copied().unwrap_or(0);
    let _ = stats::update(cache.root(), |c| {
        c.hits += 1;
        c.served_bytes += bytes;
    });
    if sent.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs pack-objects with `input` (and, when `more` is set, the rest of our stdin) and
/// passes its output through.
fn uncached(settings: &CacheSettings, command: &[OsString], input: &[u8], more: bool) -> ExitCode {
    let cache = CacheDir::open(&settings.dir).ok();
    let _slot = cache.as_ref().and_then(|c| c.slot(settings.max_generating));
    let mut child = match spawn(command, input, more) {
        Ok(child) => child,
        Err(e) => {
            eprintln!("pack-objects-hook: cannot run pack-objects: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = child.stdout.take().expect("stdout is piped");
    let copied = io::copy(&mut out, &mut io::stdout().lock());
    drop(out);
    let status = child.wait();
    if let Some(cache) = cache {
        let bytes = copied.as_ref().copied().unwrap_or(0);
        let _ = stats::update(cache.root(), |c| {
            c.misses += 1;
            c.generated_bytes += bytes;
        });
    }
    match (copied, status) {
        (Ok(_), Ok(status)) if status.success() => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Starts pack-objects with `input` written to its stdin by a thread (followed by the rest
/// of our stdin when `more`). Its stderr (progress) is passed on by another thread that
/// keeps reading after upload-pack is gone: pack-objects would die of `SIGPIPE` writing
/// progress to a closed pipe, and take a half-written entry with it.
fn spawn(command: &[OsString], input: &[u8], more: bool) -> io::Result<Child> {
    let mut child = Command::new(&command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut progress = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stderr = io::stderr();
        let mut open = true;
        while let Ok(n @ 1..) = progress.read(&mut buf) {
            open = open && stderr.write_all(&buf[..n]).is_ok();
        }
    });
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    std::thread::spawn(move || {
        if stdin.write_all(&input).is_ok() && more {
            let _ = io::copy(&mut io::stdin().lock(), &mut stdin);
        }
    });
    Ok(child)
}

/// Runs pack-objects into a new entry while sending it; renames the entry complete only
/// when pack-objects succeeded and every byte reached the disk.
fn write_entry(
    settings: &CacheSettings,
    cache: &CacheDir,
    paths: &EntryPaths,
    lock: Flock<File>,
    command: &[OsString],
    input: &[u8],
) -> ExitCode {
    let _slot = cache.slot(settings.max_generating);
    outlive_the_client();
    // A new file: followers of an abandoned partial keep theirs and notice.
    let _ = std::fs::remove_file(&paths.partial);
    let mut partial = OpenOptions::new().write(true).create_new(true).open(&paths.partial).ok();
    let mut child = match spawn(command, input, false) {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&paths.partial);
            eprintln!("pack-objects-hook: cannot run pack-objects: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut stdout = io::stdout().lock();
    let mut client = true;
    let mut buf = vec![0u8; CHUNK];
    let (mut total, mut checked_at) = (0u64, 0u64);
    let read_ok = loop {
        let n = match out.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        };
        total += n as u64;
        if let Some(file) = partial.as_mut() {
            let low = total - checked_at >= FREE_SPACE_EVERY && {
                checked_at = total;
                cache.free_bytes().map_or(true, |free| free < settings.min_free_bytes)
            };
            if low || file.write_all(&buf[..n]).is_err() {
                partial = None;
                let _ = std::fs::remove_file(&paths.partial);
            }
        }
        if client && stdout.write_all(&buf[..n]).is_err() {
            client = false;
        }
        if !client && partial.is_none() {
            let _ = child.kill();
            break false;
        }
    };
    drop(out);
    let _ = stdout.flush();
    let succeeded = child.wait().is_ok_and(|s| s.success()) && read_ok;
    match partial {
        Some(file) if succeeded && file.sync_data().is_ok() => {
            if std::fs::rename(&paths.partial, &paths.pack).is_ok() {
                let _ = std::fs::remove_file(&paths.seen);
            }
        }
        _ => {
            let _ = std::fs::remove_file(&paths.partial);
        }
    }
    drop(lock);
    let sweep = cache.sweep(settings.max_age(), settings.max_bytes).unwrap_or_default();
    let _ = stats::update(cache.root(), |c| {
        c.misses += 1;
        c.generated_bytes += total;
        c.evicted += sweep.evicted;
        c.disk_bytes = sweep.disk_bytes;
        c.entries = sweep.entries;
    });
    if succeeded && client {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// When the client goes away, upload-pack ends and sends its pack-objects (this process) the
/// signal that ended it (git's `clean_on_exit`); the writer ignores it and finishes the
/// entry for the clients that follow. A server's process group kill (`SIGKILL`) still ends it.
#[allow(unsafe_code)]
fn outlive_the_client() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    for sig in [Signal::SIGTERM, Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code; nothing else in this process changes
        // signal dispositions concurrently.
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
}

/// Sends an entry another process is writing, as it grows.
fn follow(cache: &CacheDir, paths: &EntryPaths) -> Result<ExitCode, Untouched> {
    // The writer creates the partial right after taking the lock.
    let mut file = None;
    for _ in 0..2000 {
        if let Ok(f) = File::open(&paths.partial) {
            file = Some(f);
            break;
        }
        if !store::is_locked(&paths.lock) {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let Some(mut file) = file else {
        return match store::fresh(&paths.pack, Duration::MAX) {
            Some(file) => Ok(serve_entry(cache, file)),
            None => Err(Untouched),
        };
    };
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let mut writer_gone = false;
    loop {
        match file.read(&mut buf) {
            Ok(0) if writer_gone => break,
            Ok(0) => {
                if store::is_locked(&paths.lock) {
                    // The writer is usually slower than a follower: waking up often only
                    // burns the CPU the writer needs (a storm has many followers).
                    std::thread::sleep(FOLLOW_POLL);
                } else {
                    // One more pass reads what was written before it let go.
                    writer_gone = true;
                }
            }
            Ok(n) => {
                if stdout.write_all(&buf[..n]).is_err() {
                    return Ok(ExitCode::FAILURE);
                }
                sent += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) if sent == 0 => return Err(Untouched),
            Err(_) => return Ok(ExitCode::FAILURE),
        }
    }
    if store::same_file(&file, &paths.pack) {
        let _ = stdout.flush();
        let _ = stats::update(cache.root(), |c| {
            c.hits += 1;
            c.served_bytes += sent;
        });
        Ok(ExitCode::SUCCESS)
    } else if sent == 0 {
        Err(Untouched)
    } else {
        // The writer failed after we sent part of its pack: this fetch fails; the next
        // one starts afresh.
        Ok(ExitCode::FAILURE)
    }
}
