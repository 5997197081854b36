//! Hosting one relay connection on whatever websocket a frontend has: the frontend turns
//! frames into [`Inbound`] values and sends [`Outbound`] ones; this runs the relay session
//! (which counts the connection, and pings by the configured keep-alive) until either side
//! closes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use futures::{Sink, Stream};

use crate::config::Config;
use crate::relay::connection::{self, Inbound, Outbound};
use crate::Grasp;

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

/// The largest websocket frame and message a transport should accept. It sits above the
/// relay's own message limit, so an oversized message gets a NOTICE from the relay instead
/// of a dropped connection; only absurd frames hit the transport limit.
pub fn transport_cap(config: &Config) -> usize {
    let limit = config.max_message_size;
    limit.saturating_mul(2).max(limit + 64 * 1024)
}

/// Runs one relay connection from `peer` to completion, with the configured keep-alive.
pub async fn serve_relay<R, W>(grasp: &Grasp, peer: IpAddr, incoming: R, outgoing: W)
where
    R: Stream<Item = Inbound> + Unpin,
    W: Sink<Outbound> + Unpin,
{
    tracing::debug!(%peer, "websocket connected");
    let relay = grasp.relay();
    let keep_alive = grasp.config().keep_alive();
    let ended = connection::drive(relay.session(peer), relay, incoming, outgoing, keep_alive).await;
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

    #[test]
    fn transport_cap_leaves_room_above_the_relay_limit() {
        let config = Config { max_message_size: 1024, ..Config::default() };
        assert_eq!(transport_cap(&config), 1024 + 64 * 1024);
        let config = Config { max_message_size: 1 << 20, ..Config::default() };
        assert_eq!(transport_cap(&config), 2 << 20);
    }
}
