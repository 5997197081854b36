//! Per-client-address rate limits: the relay's EVENT limit and `/prs/` pushes.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Addresses remembered before the ones that are back to a full quota are forgotten.
const FORGET_ABOVE: usize = 100_000;

/// So many actions per minute per client address (a token bucket per address, refilled
/// evenly; bursts up to the per-minute count).
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
        rate.check_key(&client).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_zero_is_unlimited() {
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let limit = PerIpLimit::per_minute(2);
        assert!(limit.allow(a) && limit.allow(a));
        assert!(!limit.allow(a), "the third in the same minute");
        assert!(limit.allow(b), "another address has its own quota");
        let unlimited = PerIpLimit::per_minute(0);
        assert!((0..1000).all(|_| unlimited.allow(a)));
    }
}
