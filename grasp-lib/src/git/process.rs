//! Git child processes the server starts, and how they die with it.
//!
//! A git child must never outlive a killed server: a receive-pack left behind could move
//! refs after a restart, or another node, has already looked at them, and a killed server
//! should take its clones and repacks with it. Two ways to get that:
//!
//! - **The child guard** (grasp-server): a small process forked at start, while the server
//!   still has one thread, leads a process group of its own. The kernel signals it when the
//!   server dies (`PR_SET_PDEATHSIG`), and it then kills its whole group. Git children
//!   join that group when they start, which `posix_spawn` can do, so starting git does not
//!   fork the whole server (about a millisecond of a small push on two cores); and git's
//!   own children (receive-pack's unpack-objects and connectivity check) are in the group
//!   too.
//! - **Per child** (no guard, or a child that needs a process group of its own so it can be
//!   killed with its descendants): the child sets `PR_SET_PDEATHSIG` itself between fork
//!   and exec, which makes std fork the server for it.

#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(target_os = "linux")]
use std::sync::OnceLock;

/// The guard's pid, which is also its process group's id.
#[cfg(target_os = "linux")]
static GUARD: OnceLock<i32> = OnceLock::new();
/// Set once the guard is found gone (killed from outside), so children fall back.
#[cfg(target_os = "linux")]
static GUARD_GONE: AtomicBool = AtomicBool::new(false);

/// Starts the child guard. Call it first thing in `main`, while the process has a single
/// thread (before any async runtime or logging thread): the guard is a fork of the process
/// as it is then. Without a guard (it could not start, or this is never called), every git
/// child ties itself to the server instead.
#[allow(unsafe_code)]
pub fn start_child_guard() {
    #[cfg(target_os = "linux")]
    {
        use nix::unistd::{fork, getpid, setpgid, ForkResult};
        let server = getpid();
        // SAFETY: the caller guarantees the process has one thread, so the child may run
        // ordinary code (it allocates nothing anyway and never returns).
        match unsafe { fork() } {
            Ok(ForkResult::Child) => guard_main(server),
            Ok(ForkResult::Parent { child }) => {
                // Both sides make the guard a group leader, so the group exists before the
                // first git child asks to join it.
                let _ = setpgid(child, child);
                let _ = GUARD.set(child.as_raw());
            }
            Err(_) => {}
        }
    }
}

/// The guard: waits for the server to die, then kills its group (every git child the server
/// started, and itself). Signals sent to it while the server lives (a `pkill` meant for the
/// server) change nothing.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn guard_main(server: nix::unistd::Pid) -> ! {
    use nix::sys::signal::{killpg, SigSet, Signal};
    use nix::unistd::{getpgrp, getppid, setpgid, Pid};
    let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
    // Let go of the server's descriptors (its stdout pipe, an inherited listener), so
    // nothing waits for the guard to close them.
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors of this single-threaded process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: close_range on descriptors this process no longer uses.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let mut signals = SigSet::empty();
    for signal in
        [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT, Signal::SIGUSR1, Signal::SIGUSR2]
    {
        signals.add(signal);
    }
    let _ = signals.thread_block();
    let _ = nix::sys::prctl::set_name(c"grasp-git-guard");
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    loop {
        // Also covers a server that died before the death signal was armed.
        if getppid() != server {
            let _ = killpg(getpgrp(), Signal::SIGKILL);
            // SAFETY: ends this process without running the server's exit handlers.
            unsafe { libc::_exit(0) };
        }
        let _ = signals.wait();
    }
}

/// The guard's process group, when the guard is running.
#[cfg(target_os = "linux")]
fn live_guard() -> Option<i32> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let guard = *GUARD.get()?;
    if GUARD_GONE.load(Ordering::Relaxed) {
        return None;
    }
    match waitpid(nix::unistd::Pid::from_raw(guard), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => Some(guard),
        // Exited (now reaped) or not ours: fall back for good.
        _ => {
            GUARD_GONE.store(true, Ordering::Relaxed);
            None
        }
    }
}

/// Makes a git child die when the server process dies: it joins the child guard's process
/// group when there is a guard, otherwise it arms `PR_SET_PDEATHSIG` itself. Do not give
/// the command a process group of its own afterwards; use
/// [`dies_with_server_in_own_group`] for that.
pub fn dies_with_server(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    #[cfg(target_os = "linux")]
    if let Some(group) = live_guard() {
        return cmd.process_group(group);
    }
    arm_death_signal(cmd)
}

/// [`dies_with_server`] for a child that leads a process group of its own, so that it can
/// be killed with all its descendants (hunting fetches, repacks).
pub fn dies_with_server_in_own_group(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    arm_death_signal(cmd).process_group(0)
}

#[allow(unsafe_code)]
fn arm_death_signal(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
    #[cfg(target_os = "linux")]
    {
        let server = std::process::id();
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (prctl, getppid); it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                // The server may have died between fork and prctl.
                if nix::unistd::getppid().as_raw() as u32 != server {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
                }
                Ok(())
            });
        }
    }
    cmd
}
