//! ngit 3's test harness contract for a server it starts: `--internal-test-listener-support`
//! prints [`PROBE_ANSWER`], and `NGIT_TEST_LISTENER_FD=<fd>` hands the server a listening
//! loopback socket the harness bound itself, so no port can be taken in between. Only in
//! test mode; this is a private test protocol, not deployment configuration.

use std::net::TcpListener;

/// The argument the harness probes with.
pub const PROBE_ARGUMENT: &str = "--internal-test-listener-support";

/// The exact line the probe must print (with a newline) before anything else happens.
pub const PROBE_ANSWER: &str = "ngit-test-listener-v1";

/// The environment variable that names the inherited listener.
pub const LISTENER_FD_VARIABLE: &str = "NGIT_TEST_LISTENER_FD";

/// True when the process was started as the harness's capability probe (the first argument
/// is [`PROBE_ARGUMENT`]); the caller prints [`PROBE_ANSWER`] and exits 0 before parsing
/// any configuration.
pub fn is_probe() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == PROBE_ARGUMENT)
}

/// Why an inherited listener cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TestListenerError {
    /// The variable is set outside test mode.
    #[error("{LISTENER_FD_VARIABLE} is accepted only in test mode (GRASP_TEST / NGIT_TEST)")]
    NotTestMode,
    /// The value is not a file descriptor number above the standard streams.
    #[error("{LISTENER_FD_VARIABLE}='{0}' is not a file descriptor number of 3 or more")]
    BadNumber(String),
    /// The descriptor is not a listening loopback TCP socket.
    #[error("{LISTENER_FD_VARIABLE}: the test listener must be a listening loopback TCP socket ({0})")]
    NotAListener(String),
}

/// The listener the harness handed over, when [`LISTENER_FD_VARIABLE`] is set.
pub fn inherited(test_mode: bool) -> Result<Option<TcpListener>, TestListenerError> {
    let Ok(value) = std::env::var(LISTENER_FD_VARIABLE) else { return Ok(None) };
    if !test_mode {
        return Err(TestListenerError::NotTestMode);
    }
    let fd: i32 =
        value.trim().parse().ok().filter(|fd| *fd >= 3).ok_or(TestListenerError::BadNumber(value))?;
    adopt(fd).map(Some)
}

#[cfg(unix)]
fn adopt(fd: i32) -> Result<TcpListener, TestListenerError> {
    use std::os::fd::{BorrowedFd, FromRawFd};

    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use nix::sys::socket::{getsockopt, sockopt};

    let not_a_listener = |why: String| TestListenerError::NotAListener(why);
    // Checked through a borrow first, so a descriptor that is not ours to own is left alone.
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is only borrowed for these checks, and `fcntl` on a number that
    // is not open fails with EBADF instead of touching anything.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    fcntl(borrowed, FcntlArg::F_GETFD).map_err(|e| not_a_listener(format!("descriptor {fd}: {e}")))?;
    let listening = getsockopt(&borrowed, sockopt::AcceptConn).map_err(|e| not_a_listener(e.to_string()))?;
    if !listening {
        return Err(not_a_listener("the socket is not listening".to_owned()));
    }
    // Git and every other child must not inherit it.
    fcntl(borrowed, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| not_a_listener(e.to_string()))?;
    #[allow(unsafe_code)]
    // SAFETY: the harness handed this open, listening socket to this process for it to own;
    // nothing else in the process uses the number.
    let listener = unsafe { TcpListener::from_raw_fd(fd) };
    let local = listener.local_addr().map_err(|e| not_a_listener(e.to_string()))?;
    if !local.ip().is_loopback() {
        return Err(not_a_listener(format!("it listens on {local}, not on loopback")));
    }
    listener.set_nonblocking(true).map_err(|e| not_a_listener(e.to_string()))?;
    Ok(listener)
}

#[cfg(not(unix))]
fn adopt(_fd: i32) -> Result<TcpListener, TestListenerError> {
    Err(TestListenerError::NotAListener("only supported on Unix".to_owned()))
}
