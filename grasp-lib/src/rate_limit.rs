//! Per-client-address rate limits (the relay's EVENT limit, pushes, `/prs/` pushes) and the
//! one rule every per-address bound of this server counts by: [`address_group`].

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU8, Ordering};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Addresses remembered before the ones that are back to a full quota are forgotten.
const FORGET_ABOVE: usize = 100_000;

/// How many leading bits of an IPv6 address name one client by default: a /64 is what one
/// subscriber, one host or one cloud instance usually gets, so counting single IPv6
/// addresses would let one client act as 2^64 clients.
pub const IPV6_CLIENT_PREFIX: u8 = 64;

/// The prefix in effect (`ipv6_client_prefix`): one value for the whole process, since
/// every per-address bound of a node must count alike.
static PREFIX: AtomicU8 = AtomicU8::new(IPV6_CLIENT_PREFIX);

/// Sets how many leading bits of an IPv6 address name one client (1 to 128), for every
/// per-address bound in this process.
pub fn set_ipv6_client_prefix(bits: u8) {
    PREFIX.store(bits.clamp(1, 128), Ordering::Relaxed);
}

/// The key a client address is counted under by every per-address bound: IPv4 addresses as
/// they are (an IPv4-mapped IPv6 address counts as its IPv4 address), IPv6 addresses
/// grouped by their first bits ([`set_ipv6_client_prefix`], /64 by default).
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & prefix_mask(PREFIX.load(Ordering::Relaxed)))),
        },
    }
}

fn prefix_mask(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0)
}

/// So many actions per minute per key: a token bucket per key, refilled evenly; bursts up
/// to the per-minute count. Relay sync keys its peers' budgets by peer URL.
pub struct PerKeyLimit<K: std::hash::Hash + Eq + Clone>(Option<DefaultKeyedRateLimiter<K>>);

impl<K: std::hash::Hash + Eq + Clone> std::fmt::Debug for PerKeyLimit<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PerKeyLimit").field(&self.0.as_ref().map(|r| r.len())).finish()
    }
}

impl<K: std::hash::Hash + Eq + Clone> PerKeyLimit<K> {
    /// `per_minute` actions per minute per key; `0` means unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))))
    }

    /// Waits until `key` may act (and counts the action): back-pressure instead of a
    /// refusal, for work that must not be lost.
    pub async fn wait(&self, key: &K) {
        let Some(rate) = &self.0 else { return };
        if rate.len() > FORGET_ABOVE {
            rate.retain_recent();
        }
        rate.until_key_ready(key).await;
    }
}

/// So many actions per minute per client address group ([`address_group`]): a token bucket
/// per group, refilled evenly; bursts up to the per-minute count.
pub struct PerIpLimit(Option<DefaultKeyedRateLimiter<IpAddr>>);

impl std::fmt::Debug for PerIpLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PerIpLimit").field(&self.0.as_ref().map(|r| r.len())).finish()
    }
}

impl PerIpLimit {
    /// `per_minute` actions per minute per address; `0` means unlimited.
    pub fn per_minute(per_minute: u32) -> Self {
        Self(NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))))
    }

    /// True when `client` may act now (and counts this action).
    pub fn allow(&self, client: IpAddr) -> bool {
        let Some(rate) = &self.0 else { return true };
        if rate.len() > FORGET_ABOVE {
            rate.retain_recent();
        }
        rate.check_key(&address_group(client)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_address_and_zero_is_unlimited() {
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let limit = PerIpLimit::per_minute(2);
        assert!(limit.allow(a) && limit.allow(a));
        assert!(!limit.allow(a), "the third in the same minute");
        assert!(limit.allow(b), "another address has its own quota");
        let unlimited = PerIpLimit::per_minute(0);
        assert!((0..1000).all(|_| unlimited.allow(a)));
    }

    #[tokio::test]
    async fn a_keyed_limit_waits_instead_of_refusing() {
        // A burst of a minute's worth, then one a second.
        let limit: PerKeyLimit<String> = PerKeyLimit::per_minute(60);
        let peer = "peer".to_owned();
        for _ in 0..60 {
            limit.wait(&peer).await;
        }
        let next = tokio::time::timeout(std::time::Duration::from_millis(50), limit.wait(&peer)).await;
        assert!(next.is_err(), "the 61st waits for its turn");
        limit.wait(&"another".to_owned()).await;
        let unlimited: PerKeyLimit<String> = PerKeyLimit::per_minute(0);
        for _ in 0..1000 {
            unlimited.wait(&peer).await;
        }
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_are_one_client() {
        assert_eq!(address_group(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(address_group(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")), ip("2001:db8:1:2::"));
        assert_ne!(address_group(ip("2001:db8:1:3::1")), address_group(ip("2001:db8:1:2::1")));
        assert_eq!(address_group(ip("::ffff:192.0.2.7")), ip("192.0.2.7"), "IPv4-mapped counts as IPv4");
        assert_eq!(address_group(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(address_group(ip("::1")), ip("::"));
        let limit = PerIpLimit::per_minute(1);
        assert!(limit.allow(ip("2001:db8::1")));
        assert!(!limit.allow(ip("2001:db8::2")), "a second address of the same /64 shares the quota");
        assert!(limit.allow(ip("2001:db8:0:1::1")), "the next /64 is another client");
    }

    #[test]
    fn other_prefixes_group_wider_or_narrower() {
        assert_eq!(prefix_mask(128), u128::MAX);
        assert_eq!(prefix_mask(48), u128::MAX << 80);
        let group = |bits: u8, s: &str| {
            Ipv6Addr::from(u128::from(s.parse::<Ipv6Addr>().unwrap()) & prefix_mask(bits))
        };
        assert_eq!(group(48, "2001:db8:1:2::1"), group(48, "2001:db8:1:ffff::1"));
        assert_ne!(group(128, "2001:db8::1"), group(128, "2001:db8::2"));
    }
}
