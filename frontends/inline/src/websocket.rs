//! Hosts a `grasp-lib` relay session on a warp websocket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures::{future, SinkExt, StreamExt};
use grasp_lib::limits::KeepAlive;
use grasp_lib::relay::connection::{self, Inbound, Outbound};
use grasp_lib::Grasp;
use warp::ws::{Message, WebSocket, Ws};
use warp::Reply;

/// The client address for per-IP limits: the TCP peer, or, when the operator trusts their
/// reverse proxy, the last `X-Forwarded-For` entry (the one that proxy appended; entries
/// further left come from the client and can be forged).
pub fn client_ip(
    remote: Option<SocketAddr>,
    forwarded_for: Option<&str>,
    trust_forwarded_for: bool,
) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| forwarded_for?.rsplit(',').next()?.trim().parse::<IpAddr>().ok())
        .flatten();
    forwarded.or(remote.map(|a| a.ip())).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Accepts the upgrade. The transport cap sits above the relay's own message limit, so an
/// oversized message gets a NOTICE from the relay instead of a dropped connection; only
/// absurd frames hit the transport limit.
pub fn upgrade(
    ws: Ws,
    remote: Option<SocketAddr>,
    forwarded_for: Option<String>,
    grasp: Grasp,
) -> impl Reply {
    let limit = grasp.config().max_message_size;
    let transport_cap = limit.saturating_mul(2).max(limit + 64 * 1024);
    let peer = client_ip(remote, forwarded_for.as_deref(), grasp.config().trust_forwarded_for);
    ws.max_message_size(transport_cap)
        .max_frame_size(transport_cap)
        .on_upgrade(move |socket| serve(socket, peer, grasp))
}

async fn serve(socket: WebSocket, peer: IpAddr, grasp: Grasp) {
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
    let outgoing = sink.with(|frame: Outbound| {
        future::ok::<_, warp::Error>(match frame {
            Outbound::Text(text) => Message::text(text),
            Outbound::Ping => Message::ping(Vec::new()),
        })
    });
    let relay = grasp.relay().clone();
    let keep_alive = KeepAlive::from_config(grasp.config());
    let ended =
        connection::drive(relay.session(peer), &relay, Box::pin(incoming), Box::pin(outgoing), keep_alive)
            .await;
    tracing::debug!(%peer, ?ended, "websocket disconnected");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_used_only_when_trusted_and_only_its_last_entry() {
        let remote = Some("10.0.0.1:5000".parse().unwrap());
        let header = Some("6.6.6.6, 203.0.113.7");
        assert_eq!(client_ip(remote, header, false).to_string(), "10.0.0.1");
        assert_eq!(client_ip(remote, header, true).to_string(), "203.0.113.7");
        assert_eq!(client_ip(remote, Some("garbage"), true).to_string(), "10.0.0.1");
        assert_eq!(client_ip(remote, None, true).to_string(), "10.0.0.1");
    }
}
