//! The git server behind the proxy: where it is, how long to wait for it, and how its
//! failures are reported to clients.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use grasp_lib::config::Config;
use grasp_lib::web::{self, WebResponse};
use http::StatusCode;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

/// The configured upstream (`upstream`, `upstream_*_timeout_secs`).
#[derive(Debug, Clone)]
pub struct Upstream {
    address: SocketAddr,
    tls: bool,
    host: String,
    /// Path prefix without a trailing `/` (empty for none).
    prefix: String,
    /// The service's own mount path (`base_path`), taken off before the prefix goes on: the
    /// upstream serves `<prefix>/<npub>/<id>.git` whatever the public mount.
    base: String,
    connect_timeout: Duration,
    timeout: Duration,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.address, self.prefix)
    }
}

impl Upstream {
    /// Reads and resolves the upstream of `config`.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let Some(url) = config.upstream_url() else {
            return Err("grasp-proxy needs the URL of the git server it forwards to: set --upstream (GRASP_UPSTREAM), e.g. http://127.0.0.1:8080".into());
        };
        let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut found| found.next())
            .ok_or_else(|| format!("cannot resolve {host}:{port}"))?;
        Ok(Self {
            address,
            tls: url.scheme() == "https",
            host,
            prefix: url.path().trim_end_matches('/').to_owned(),
            base: grasp_lib::origin::parse_base_path(&config.base_path).unwrap_or_default(),
            connect_timeout: Duration::from_secs(config.upstream_connect_timeout_secs),
            timeout: Duration::from_secs(config.upstream_timeout_secs),
        })
    }

    /// Where and how to connect, with the configured timeouts.
    pub fn peer(&self) -> Box<HttpPeer> {
        let mut peer = HttpPeer::new(self.address, self.tls, self.host.clone());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(self.timeout);
        peer.options.write_timeout = Some(self.timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Box::new(peer)
    }

    /// Points a forwarded request at the upstream: the path prefix goes in front, and a
    /// `Git-Protocol` header that does not look like one is dropped (as grasp-server does
    /// before it runs git).
    pub fn rewrite(&self, request: &mut RequestHeader) -> pingora::Result<()> {
        if !self.prefix.is_empty() || !self.base.is_empty() {
            let path_and_query = request.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            // Only requests under the mount are routed upstream.
            let relative = path_and_query.strip_prefix(self.base.as_str()).unwrap_or(path_and_query);
            let uri = format!("{}{relative}", self.prefix)
                .parse()
                .map_err(|e| Error::explain(ErrorType::InternalError, format!("upstream path: {e}")))?;
            request.set_uri(uri);
        }
        let protocol = request.headers.get("git-protocol").and_then(|v| v.to_str().ok());
        if protocol.is_some() && grasp_lib::git::smart_http::sanitize_git_protocol(protocol).is_none() {
            request.remove_header("git-protocol");
        }
        Ok(())
    }
}

/// The answer when the upstream failed: `504` when it did not answer in time, `502`
/// otherwise, with a sentence saying so.
pub fn failure_response(error: &Error) -> WebResponse {
    use ErrorType::*;
    match error.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => web::text(
            StatusCode::GATEWAY_TIMEOUT,
            "the git server behind this GRASP proxy did not answer in time; try again later",
        ),
        _ => web::text(
            StatusCode::BAD_GATEWAY,
            format!(
                "the git server behind this GRASP proxy failed: {}; try again later",
                error.etype().as_str()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        let config = Config { upstream: Some(url.into()), ..Config::default() };
        Upstream::from_config(&config).unwrap()
    }

    #[test]
    fn prefixes_paths_and_drops_odd_git_protocol_headers() {
        let mut request =
            RequestHeader::build("GET", b"/npub1x/r.git/info/refs?service=git-upload-pack", None).unwrap();
        request.insert_header("git-protocol", "version=2; rm -rf /").unwrap();
        upstream("http://127.0.0.1:8080/git/").rewrite(&mut request).unwrap();
        assert_eq!(request.uri.to_string(), "/git/npub1x/r.git/info/refs?service=git-upload-pack");
        assert!(request.headers.get("git-protocol").is_none());

        let mut request = RequestHeader::build("GET", b"/a.git/info/refs", None).unwrap();
        request.insert_header("git-protocol", "version=2").unwrap();
        upstream("http://127.0.0.1:8080").rewrite(&mut request).unwrap();
        assert_eq!(request.uri.to_string(), "/a.git/info/refs");
        assert_eq!(request.headers["git-protocol"], "version=2");
    }

    #[test]
    fn the_mount_path_is_taken_off_before_the_prefix_goes_on() {
        let config = Config {
            upstream: Some("http://127.0.0.1:8080/git".into()),
            base_path: "/services/grasp".into(),
            ..Config::default()
        };
        let mut request = RequestHeader::build(
            "GET",
            b"/services/grasp/npub1x/r.git/info/refs?service=git-upload-pack",
            None,
        )
        .unwrap();
        Upstream::from_config(&config).unwrap().rewrite(&mut request).unwrap();
        assert_eq!(request.uri.to_string(), "/git/npub1x/r.git/info/refs?service=git-upload-pack");
    }

    #[test]
    fn timeouts_are_504_and_other_failures_502() {
        let timeout = Error::new(ErrorType::ReadTimedout);
        assert_eq!(failure_response(&timeout).status(), StatusCode::GATEWAY_TIMEOUT);
        let refused = Error::new(ErrorType::ConnectRefused);
        let response = failure_response(&refused);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(response.body()).contains("ConnectRefused"));
    }

    #[test]
    fn a_missing_upstream_is_explained() {
        let err = Upstream::from_config(&Config::default()).unwrap_err();
        assert!(err.contains("--upstream"), "{err}");
    }
}
