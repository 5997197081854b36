//! Git child processes the server starts.

/// Makes a git child die when the server process dies (`PR_SET_PDEATHSIG`), so a crashed
/// server never leaves a receive-pack behind that updates refs after a restart has already
/// looked at them, and a killed server takes its clones and repacks with it.
#[allow(unsafe_code)]
pub fn dies_with_server(cmd: &mut tokio::process::Command) -> &mut tokio::process::Command {
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
