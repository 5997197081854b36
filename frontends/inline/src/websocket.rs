//! Hosts a `grasp-lib` relay connection on a warp websocket.

use std::net::SocketAddr;

use futures::{future, SinkExt, StreamExt};
use grasp_lib::relay::connection::{Inbound, Outbound};
use grasp_lib::web;
use grasp_lib::Grasp;
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

/// Accepts the upgrade, with the frame limits the library asks transports for.
pub fn upgrade(ws: Ws, remote: Option<SocketAddr>, forwarded_for: Option<&str>, grasp: Grasp) -> impl Reply {
    let cap = web::transport_cap(grasp.config());
    let peer = web::client_ip(remote, forwarded_for, grasp.config().trust_forwarded_for);
    ws.max_message_size(cap).max_frame_size(cap).on_upgrade(move |socket| async move {
        let (incoming, outgoing) = frames(socket);
        web::serve_relay(&grasp, peer, incoming, outgoing).await
    })
}

/// The websocket as relay input (text messages) and output (replies and keep-alive pings).
fn frames(
    socket: WebSocket,
) -> (impl futures::Stream<Item = Inbound> + Unpin, impl futures::Sink<Outbound> + Unpin) {
    let (sink, stream) = socket.split();
    let incoming = stream
        .map(|frame| match frame {
            Ok(msg) if msg.is_text() => Inbound::Text(msg.to_str().unwrap_or_default().to_owned()),
            Ok(msg) if msg.is_binary() => Inbound::Binary,
            Ok(msg) if msg.is_close() => Inbound::Close,
            Ok(_) => Inbound::Control,
            Err(e) => {
                tracing::debug!(error = %e, "websocket read failed");
                Inbound::Close
            }
        })
        // Nothing after a close frame matters.
        .take_while(|frame| future::ready(!matches!(frame, Inbound::Close)));
    let outgoing = sink.with(|frame: Outbound| {
        future::ok::<_, warp::Error>(match frame {
            Outbound::Text(text) => Message::text(text),
            Outbound::Ping => Message::ping(Vec::new()),
        })
    });
    (Box::pin(incoming), Box::pin(outgoing))
}
