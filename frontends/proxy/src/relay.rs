//! Hosts a relay connection inside the proxy, on the client's own connection.
//!
//! pingora has no websocket server of its own, but it does hand over a connection once a
//! `101 Switching Protocols` was written: from then on the session's request body is the
//! raw byte stream from the client and its response body the raw stream back. This
//! module answers the handshake, lets tungstenite speak websocket over an in-memory pipe,
//! and pumps bytes between that pipe and the session. The relay itself is
//! `grasp_lib::web::serve_relay`, the same call grasp-server makes.

use bytes::Bytes;
use futures::{future, SinkExt, StreamExt};
use grasp_lib::relay::connection::{Inbound, Outbound};
use grasp_lib::web;
use grasp_lib::Grasp;
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::respond;

/// Bytes buffered between the client connection and the websocket codec, each way.
const PIPE_BYTES: usize = 64 * 1024;

/// Completes the websocket handshake on `session` and serves the relay until either side
/// closes.
pub async fn serve(session: &mut Session, grasp: &Grasp) -> pingora::Result<()> {
    let request = session.req_header();
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let key = match (header("sec-websocket-key"), header("sec-websocket-version")) {
        (Some(key), Some("13")) => key.to_owned(),
        _ => {
            let refusal = web::text(
                StatusCode::BAD_REQUEST,
                "bad websocket handshake: send Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            );
            return respond::send(session, refusal).await;
        }
    };
    let config = grasp.config();
    let remote = session.client_addr().and_then(|a| a.as_inet()).copied();
    let peer = web::client_ip(remote, header("x-forwarded-for"), config.trust_forwarded_for);

    let mut switching = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, Some(8))?;
    switching.insert_header("upgrade", "websocket")?;
    switching.insert_header("connection", "Upgrade")?;
    switching.insert_header("sec-websocket-accept", derive_accept_key(key.as_bytes()))?;
    respond::add_cors(&mut switching)?;
    session.write_response_header(Box::new(switching), false).await?;
    // A relay connection may sit idle for hours between messages; the relay's keep-alive
    // (pings, silence limit) decides when a quiet client is gone.
    session.set_read_timeout(None);

    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    let cap = web::transport_cap(config);
    let codec = WebSocketConfig::default().max_message_size(Some(cap)).max_frame_size(Some(cap));
    let socket = WebSocketStream::from_raw_socket(theirs, Role::Server, Some(codec)).await;
    let (sink, stream) = socket.split();
    let incoming = stream
        .map(|frame| match frame {
            Ok(Message::Text(text)) => Inbound::Text(text.as_str().to_owned()),
            Ok(Message::Binary(_)) => Inbound::Binary,
            Ok(Message::Close(_)) => Inbound::Close,
            Ok(_) => Inbound::Control,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "websocket read failed");
                Inbound::Close
            }
        })
        // Nothing after a close frame matters.
        .take_while(|frame| future::ready(!matches!(frame, Inbound::Close)));
    let outgoing = sink.with(|frame: Outbound| {
        future::ok::<_, tokio_tungstenite::tungstenite::Error>(match frame {
            Outbound::Text(text) => Message::text(text),
            Outbound::Ping => Message::Ping(Default::default()),
        })
    });
    let relay = async move {
        web::serve_relay(grasp, peer, Box::pin(incoming), Box::pin(outgoing)).await;
    };
    tokio::join!(relay, pump(session, ours));
    Ok(())
}

/// Moves bytes between the client connection and the codec's end of the pipe until the
/// codec closes it (the relay ended) or the client goes away.
async fn pump(session: &mut Session, pipe: DuplexStream) {
    let (mut from_codec, mut to_codec) = tokio::io::split(pipe);
    let mut buf = vec![0u8; PIPE_BYTES];
    // Client bytes not yet taken by the codec: the client is not read while they wait, so
    // a relay that stops reading slows the client down instead of growing memory.
    let mut pending = Bytes::new();
    let mut client_open = true;
    loop {
        tokio::select! {
            read = session.read_request_body(), if client_open && pending.is_empty() => match read {
                Ok(Some(bytes)) => pending = bytes,
                Ok(None) | Err(_) => {
                    client_open = false;
                    let _ = to_codec.shutdown().await;
                }
            },
            written = to_codec.write(&pending), if !pending.is_empty() => match written {
                Ok(n) => {
                    let _ = pending.split_to(n);
                }
                Err(_) => break,
            },
            read = from_codec.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    if session.write_response_body(Some(chunk), false).await.is_err() {
                        break;
                    }
                }
            },
        }
    }
    // The client may be gone already; there is nobody left to tell.
    let _ = session.write_response_body(None, true).await;
}
