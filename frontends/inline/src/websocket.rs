//! Hosts a `grasp-lib` relay session on a warp websocket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures::{future, SinkExt, StreamExt};
use grasp_lib::relay::connection::{self, Inbound};
use grasp_lib::Grasp;
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

/// Accepts the upgrade. The transport cap sits above the relay's own message limit, so an
/// oversized message gets a NOTICE from the relay instead of a dropped connection; only
/// absurd frames hit the transport limit.
pub fn upgrade(ws: Ws, remote: Option<SocketAddr>, grasp: Grasp) -> impl Reply {
    let limit = grasp.config().max_message_size;
    let transport_cap = limit.saturating_mul(2).max(limit + 64 * 1024);
    let peer = remote.map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    ws.max_message_size(transport_cap)
        .max_frame_size(transport_cap)
        .on_upgrade(move |socket| serve(socket, peer, grasp))
}

async fn serve(socket: WebSocket, peer: IpAddr, grasp: Grasp) {
    let metrics = grasp.metrics().clone();
    metrics.connections_total.inc();
    metrics.connections_active.inc();
    tracing::debug!(%peer, "websocket connected");

    let (sink, stream) = socket.split();
    let incoming = stream
        .map(|frame| match frame {
            Ok(msg) if msg.is_text() => Inbound::Text(msg.to_str().unwrap_or_default().to_owned()),
            Ok(msg) if msg.is_binary() => Inbound::Binary,
            Ok(msg) if msg.is_close() => Inbound::Close,
            Ok(_) => Inbound::Control,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "websocket read failed");
                Inbound::Close
            }
        })
        // Nothing after a close frame matters.
        .take_while(|frame| future::ready(!matches!(frame, Inbound::Close)));
    let outgoing = sink.with(|text: String| future::ok::<_, warp::Error>(Message::text(text)));
    let relay = grasp.relay().clone();
    connection::drive(relay.session(peer), &relay, Box::pin(incoming), Box::pin(outgoing)).await;

    metrics.connections_active.dec();
    tracing::debug!(%peer, "websocket disconnected");
}
