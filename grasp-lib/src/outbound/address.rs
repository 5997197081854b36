//! Which IP addresses a target named by an event may resolve to: only globally routable
//! ones. Everything private, local, shared, reserved or special-purpose is refused, and an
//! IPv6 address that embeds an IPv4 address (mapped, NAT64, 6to4) is judged by the address
//! it embeds. Pure: unit-tested range by range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not a global one (`None`: it is).
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => v6_refusal(v6),
    }
}

/// True for a globally routable address.
pub fn is_global(ip: IpAddr) -> bool {
    refusal(ip).is_none()
}

fn v4_refusal(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = if a == 0 {
        "this-network address (0.0.0.0/8)"
    } else if ip.is_loopback() {
        "loopback address"
    } else if ip.is_private() {
        "private address (RFC 1918)"
    } else if a == 100 && (b & 0xc0) == 0x40 {
        "shared address space (100.64.0.0/10, carrier-grade NAT)"
    } else if ip.is_link_local() {
        "link-local address (169.254.0.0/16, cloud metadata)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol assignment (192.0.0.0/24)"
    } else if ip.is_documentation() {
        "documentation address"
    } else if a == 198 && (b & 0xfe) == 18 {
        "benchmarking address (198.18.0.0/15)"
    } else if a == 192 && b == 88 && c == 99 {
        "6to4 relay anycast (192.88.99.0/24)"
    } else if ip.is_multicast() {
        "multicast address"
    } else if a >= 240 {
        "reserved or broadcast address (240.0.0.0/4)"
    } else {
        return None;
    };
    Some(reason)
}

fn embedded_v4(ip: Ipv6Addr, at: usize) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3])
}

fn in_prefix(ip: Ipv6Addr, prefix: u128, bits: u32) -> bool {
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    (u128::from(ip) & mask) == prefix
}

fn v6_refusal(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_refusal(v4);
    }
    let value = u128::from(ip);
    // NAT64 (well-known prefix) and 6to4 embed an IPv4 address: it decides.
    if in_prefix(ip, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return v4_refusal(embedded_v4(ip, 12));
    }
    if in_prefix(ip, 0x2002 << 112, 16) {
        return v4_refusal(embedded_v4(ip, 2));
    }
    let reason = if ip.is_unspecified() {
        "unspecified address"
    } else if ip.is_loopback() {
        "loopback address"
    } else if value >> 32 == 0 {
        "IPv4-compatible address (::/96, deprecated)"
    } else if in_prefix(ip, 0xffff_0000 << 32, 96) {
        "IPv4-translated address (::ffff:0:0:0/96)"
    } else if in_prefix(ip, 0x0064_ff9b_0001 << 80, 48) {
        "local-use NAT64 prefix (64:ff9b:1::/48)"
    } else if in_prefix(ip, 0x0100 << 112, 64) {
        "discard-only prefix (100::/64)"
    } else if in_prefix(ip, 0x2001_0db8 << 96, 32) || in_prefix(ip, 0x3fff << 112, 20) {
        "documentation address"
    } else if in_prefix(ip, 0x2001 << 112, 23) {
        "IETF special-purpose block (2001::/23: Teredo, benchmarking, ORCHID)"
    } else if ip.is_unique_local() {
        "unique-local address (fc00::/7)"
    } else if ip.is_unicast_link_local() {
        "link-local address (fe80::/10)"
    } else if in_prefix(ip, 0xfec0 << 112, 10) {
        "site-local address (fec0::/10, deprecated)"
    } else if ip.is_multicast() {
        "multicast address"
    } else {
        return None;
    };
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(s: &str) -> bool {
        is_global(s.parse().unwrap())
    }

    #[test]
    fn ipv4_special_ranges_are_refused() {
        for refused in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.9",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "192.88.99.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!global(refused), "{refused} must be refused");
        }
        for allowed in
            ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.1", "198.20.0.1", "104.16.0.1"]
        {
            assert!(global(allowed), "{allowed} is global");
        }
    }

    #[test]
    fn ipv6_special_ranges_are_refused() {
        for refused in [
            "::",
            "::1",
            "::1.2.3.4",
            "::ffff:0:7f00:1",
            "fe80::1",
            "fec0::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "64:ff9b:1::1",
        ] {
            assert!(!global(refused), "{refused} must be refused");
        }
        for allowed in ["2606:4700:4700::1111", "2a00:1450:4001::1", "2600::1"] {
            assert!(global(allowed), "{allowed} is global");
        }
    }

    #[test]
    fn embedded_ipv4_addresses_decide() {
        // IPv4-mapped.
        assert!(global("::ffff:8.8.8.8"));
        assert!(!global("::ffff:127.0.0.1"));
        assert!(!global("::ffff:10.0.0.1"));
        assert!(!global("::ffff:169.254.169.254"));
        // NAT64 well-known prefix.
        assert!(global("64:ff9b::8.8.8.8"));
        assert!(!global("64:ff9b::127.0.0.1"));
        assert!(!global("64:ff9b::a9fe:a9fe"));
        // 6to4.
        assert!(global("2002:808:808::1"));
        assert!(!global("2002:7f00:1::1"));
        assert!(!global("2002:a00:1::"));
        assert!(!global("2002:a9fe:a9fe::1"));
    }

    #[test]
    fn every_refusal_says_why() {
        assert_eq!(
            refusal("169.254.169.254".parse().unwrap()),
            Some("link-local address (169.254.0.0/16, cloud metadata)")
        );
        assert_eq!(refusal("1.1.1.1".parse().unwrap()), None);
    }
}
