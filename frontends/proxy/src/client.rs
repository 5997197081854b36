//! The client of a request: its address, and what a failed read from it means.

use grasp_lib::web;
use pingora::proxy::Session;
use pingora::ErrorType;

/// The client's address: the TCP peer, or the forwarded one when `trusted`.
pub fn client_of(session: &Session, trusted: bool) -> std::net::IpAddr {
    let forwarded = session.req_header().headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let remote = session.client_addr().and_then(|a| a.as_inet()).copied();
    web::client_ip(remote, forwarded, trusted)
}

/// A failed read from the client as an I/O error; a read timeout (the session's read
/// timeout is `body_idle_timeout_secs`) keeps its kind, so the library reports a stalled
/// client rather than a bad request.
pub fn client_error(e: &pingora::Error) -> std::io::Error {
    match e.etype() {
        ErrorType::ReadTimedout => std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string()),
        _ => std::io::Error::other(e.to_string()),
    }
}
