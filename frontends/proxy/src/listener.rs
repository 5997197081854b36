//! The one listening socket, its accept loop, and the connection limits of
//! `grasp_lib::limits` that apply before pingora sees a request.
//!
//! pingora's `HttpProxy` is hosted on our own loop (pingora documents this use) instead of
//! pingora's `Server`: the socket (`grasp_lib::web::listen`) is bound before anything else,
//! so port 0 works and the chosen address can be printed, and the whole process (pingora
//! sessions, the relay, grasp-lib's background tasks) shares one Tokio runtime. TLS, when
//! configured, is pingora's rustls acceptor. Where each limit applies:
//!
//! - **total cap** and, without `trust_forwarded_for`, the **per-IP cap**: at accept, before
//!   a byte is read; a refused connection gets a short 503 and is closed. The permit lives
//!   as long as the connection task (websockets included).
//! - **header read timeout**: each request's headers (and the idle time before them on a
//!   keep-alive connection) must arrive within `header_read_timeout_secs` of the moment
//!   the connection was ready for them, or the connection is closed. The proxy tells the
//!   loop the headers are in through the connection context pingora hands it
//!   ([`HeadersArrived`]).
//! - the per-IP cap behind a trusted proxy and the body idle timeout apply per request, in
//!   [`crate::proxy`].

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use grasp_lib::config::Config;
use grasp_lib::limits::{Admission, Permit, ServerLimits};
use grasp_lib::metrics::Metrics;
use pingora::apps::HttpServerApp;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::server::Session as ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::tls::{self as rustls, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A TLS acceptor for the listener.
pub type Tls = Arc<Acceptor>;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The rustls acceptor for `tls_certificate_path` / `tls_private_key_path`, when set. Only
/// HTTP/1.1 is offered: websocket upgrades and git's smart HTTP both use it.
pub fn tls_acceptor(config: &Config) -> Result<Option<Tls>, String> {
    let (Some(cert), Some(key)) = (&config.tls_certificate_path, &config.tls_private_key_path) else {
        return Ok(None);
    };
    for path in [cert, key] {
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    }
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let loaded = rustls::load_certs_and_key_files(&cert, &key)
        .map_err(|e| format!("cannot load {cert} and {key}: {}", e.to_string().trim()))?;
    let Some((certs, key_der)) = loaded else {
        return Err(format!("no certificate in {cert} or no private key in {key}"));
    };
    rustls::install_default_crypto_provider();
    let mut server =
        ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
            .with_no_client_auth()
            .with_single_cert(certs, key_der)
            .map_err(|e| format!("{cert} and {key} do not make a usable certificate: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(Acceptor::from_server_config(Arc::new(server)))))
}

/// Set by the proxy once a request's headers were read (pingora hands this connection
/// context to `ProxyHttp::on_connection_reuse` right after it parsed them); until then the
/// header read timeout runs.
#[derive(Debug, Default)]
pub struct HeadersArrived(Arc<AtomicBool>);

impl HeadersArrived {
    /// Marks the headers as read.
    pub fn arrived(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What every connection task needs besides its socket.
struct Shared<A> {
    app: Arc<A>,
    tls: Option<Tls>,
    header_read_timeout: Duration,
    metrics: Metrics,
}

/// Accepts connections until `shutdown` resolves, handing each admitted one to `app`.
pub async fn serve<A>(
    listener: TcpListener,
    tls: Option<Tls>,
    app: Arc<A>,
    limits: &ServerLimits,
    admission: Admission,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let shared = Arc::new(Shared { app, tls, header_read_timeout: limits.header_read_timeout, metrics });
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, remote, permit) = tokio::select! {
            admitted = admission.accept(&listener, limits.per_ip_after_headers) => admitted,
            () = &mut shutdown => break,
        };
        tokio::spawn(connection(l4_stream(tcp, remote), shared.clone(), stopping.clone(), permit));
    }
    drop(listener);
    let _ = stop.send(true);
    // Keep-alive connections waiting for their next request end now.
    shared.app.http_cleanup().await;
}

/// The accepted socket as pingora's stream, with the peer address pingora's own listener
/// would record.
fn l4_stream(tcp: tokio::net::TcpStream, remote: SocketAddr) -> L4Stream {
    let mut stream = L4Stream::from(tcp);
    let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
    let _ = digest.peer_addr.set(Some(remote.into()));
    stream.set_socket_digest(digest);
    stream
}

/// One client connection: the TLS handshake if any, then HTTP/1.1 requests until it closes.
/// `_permit` holds the connection's slot until then.
async fn connection<A>(
    stream: L4Stream,
    shared: Arc<Shared<A>>,
    stopping: watch::Receiver<bool>,
    _permit: Permit,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let mut stream: Stream = match &shared.tls {
        None => Box::new(stream),
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.tls_handshake(stream)).await
        {
            Ok(Ok(tls_stream)) => Box::new(tls_stream),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                return;
            }
        },
    };
    // pingora's own idle limit between keep-alive requests sits a second above the header
    // deadline below, so the deadline (which counts the timeout) is what ends the wait.
    let idle_secs = shared.header_read_timeout.as_secs() + 1;
    loop {
        let mut session = ServerSession::new_http1(stream);
        // Between requests pingora itself closes a connection idle this long.
        session.set_keepalive((!*stopping.borrow()).then_some(idle_secs));
        let arrived = HeadersArrived::default();
        let flag = arrived.0.clone();
        session.set_connection_user_context(Some(Box::new(arrived)));
        let served = shared.app.process_new_http(session, &stopping);
        let reused = tokio::select! {
            reused = served => reused,
            () = header_deadline(shared.header_read_timeout, &flag) => {
                shared.metrics.timeouts.with_label_values(&["header_read"]).inc();
                tracing::debug!("request headers did not arrive in time; connection closed");
                return;
            }
        };
        match reused {
            Some(reused) => stream = reused.consume().0,
            None => return,
        }
    }
}

/// Resolves when `timeout` passed and the headers had not arrived by then; never once
/// they did.
async fn header_deadline(timeout: Duration, arrived: &AtomicBool) {
    tokio::time::sleep(timeout).await;
    if arrived.load(Ordering::Acquire) {
        std::future::pending::<()>().await;
    }
}
