//! Relay sync's websocket dialer: every dial (reconnects included) asks the
//! [`OutboundPolicy`] first, then opens the TCP connection to an address the policy vetted
//! and runs the websocket (and TLS) handshake over it with the original URL, so the `Host`
//! header and TLS server name stay the relay's name while the name is never looked up a
//! second time. Operator-configured relays are dialed as configured.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_wsocket::futures_util::{Sink, SinkExt, StreamExt, TryStreamExt};
use async_wsocket::{ConnectionMode, Message, WebSocket};
use nostr::util::BoxedFuture;
use nostr::Url;
use nostr_sdk::pool::transport::error::TransportError;
use nostr_sdk::pool::transport::websocket::{WebSocketSink, WebSocketStream, WebSocketTransport};
use tokio::net::TcpStream;

use super::target::{OutboundPolicy, Refused, TargetKind};

/// The transport relay sync's client dials with.
#[derive(Debug, Clone)]
pub struct PinnedTransport {
    policy: Arc<OutboundPolicy>,
}

impl PinnedTransport {
    /// Dials through `policy`.
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        Self { policy }
    }
}

impl WebSocketTransport for PinnedTransport {
    fn support_ping(&self) -> bool {
        true
    }

    fn connect<'a>(
        &'a self,
        url: &'a Url,
        mode: &'a ConnectionMode,
        timeout: Duration,
    ) -> BoxedFuture<'a, Result<(WebSocketSink, WebSocketStream), TransportError>> {
        Box::pin(async move {
            let socket = if self.policy.is_trusted(url.as_str()) {
                WebSocket::connect(url, mode, timeout).await.map_err(TransportError::backend)?
            } else {
                tokio::time::timeout(timeout, self.dial_vetted(url)).await.map_err(|_| {
                    TransportError::backend(std::io::Error::from(std::io::ErrorKind::TimedOut))
                })??
            };
            let (tx, rx) = socket.split();
            let sink: WebSocketSink = Box::new(Sink_(tx));
            let stream: WebSocketStream = Box::pin(rx.map_err(TransportError::backend));
            Ok((sink, stream))
        })
    }
}

impl PinnedTransport {
    async fn dial_vetted(&self, url: &Url) -> Result<WebSocket, TransportError> {
        let target = self.policy.resolve(TargetKind::Relay, url.as_str()).await.map_err(refused)?;
        let tcp = if target.addresses.is_empty() {
            // Non-global targets allowed: the system resolver, as configured.
            TcpStream::connect((target.host.as_str(), target.port)).await
        } else {
            connect_any(&target.addresses).await
        }
        .map_err(TransportError::backend)?;
        tcp.set_nodelay(true).map_err(TransportError::backend)?;
        let (stream, _) = Box::pin(tokio_tungstenite026::client_async_tls(url.as_str(), tcp))
            .await
            .map_err(TransportError::backend)?;
        Ok(WebSocket::Tokio(stream))
    }
}

/// The first of `addresses` that accepts a connection.
async fn connect_any(addresses: &[std::net::SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::AddrNotAvailable, "no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn refused(refused: Refused) -> TransportError {
    TransportError::backend(std::io::Error::new(std::io::ErrorKind::PermissionDenied, refused.reason))
}

/// The sink half, with errors mapped to the transport's (no `sink_map_err`: see
/// rust-nostr issue 984).
struct Sink_(async_wsocket::futures_util::stream::SplitSink<WebSocket, Message>);

impl Sink<Message> for Sink_ {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready_unpin(cx).map_err(TransportError::backend)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        self.0.start_send_unpin(item).map_err(TransportError::backend)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_flush_unpin(cx).map_err(TransportError::backend)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_close_unpin(cx).map_err(TransportError::backend)
    }
}
