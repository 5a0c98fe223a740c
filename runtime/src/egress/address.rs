//! Which addresses outbound HTTP may connect to: public ones only. Loopback, private
//! (RFC 1918, unique-local), link-local, shared (CGNAT), multicast, unspecified, broadcast,
//! reserved and the cloud metadata addresses are refused, also inside IPv4-mapped, NAT64
//! and 6to4 IPv6 addresses, unless a rule names the address itself (the operator's choice,
//! decided by the caller).
//!
//! The [`Resolver`] is the HTTP client's: it resolves a name and hands the client only the
//! addresses this check lets through, so the address connected to is an address that was
//! checked (no window for DNS rebinding between a check and the connection).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why `ip` may not be connected to, or `None` for a public address.
pub fn refusal(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4),
        IpAddr::V6(v6) => refusal_v6(v6),
    }
}

fn refusal_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match () {
        () if ip == Ipv4Addr::new(169, 254, 169, 254) => "a cloud metadata address",
        () if ip.is_unspecified() || a == 0 => "an unspecified address",
        () if ip.is_loopback() => "a loopback address",
        () if ip.is_private() => "a private address",
        () if ip.is_link_local() => "a link-local address",
        () if a == 100 && (64..128).contains(&b) => "a shared (carrier-grade NAT) address",
        () if ip.is_broadcast() => "the broadcast address",
        () if ip.is_multicast() => "a multicast address",
        () if a >= 240 => "a reserved address",
        () if a == 192 && b == 0 && c == 0 => "an IETF protocol address",
        () if a == 198 && (b == 18 || b == 19) => "a benchmarking address",
        () if ip.is_documentation() => "a documentation address",
        () => return None,
    })
}

fn refusal_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refusal_v4(v4);
    }
    let segments = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address a gateway reaches.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = segments[6].to_be_bytes();
        let [c, d] = segments[7].to_be_bytes();
        return refusal_v4(Ipv4Addr::new(a, b, c, d));
    }
    if segments[0] == 0x2002 {
        let [a, b] = segments[1].to_be_bytes();
        let [c, d] = segments[2].to_be_bytes();
        if let Some(why) = refusal_v4(Ipv4Addr::new(a, b, c, d)) {
            return Some(why);
        }
    }
    Some(match () {
        () if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            "a cloud metadata address"
        }
        () if ip.is_unspecified() => "an unspecified address",
        () if ip.is_loopback() => "a loopback address",
        () if segments[0] & 0xfe00 == 0xfc00 => "a unique-local address",
        () if segments[0] & 0xffc0 == 0xfe80 => "a link-local address",
        () if segments[0] & 0xffc0 == 0xfec0 => "a site-local address",
        () if ip.is_multicast() => "a multicast address",
        () if segments[0] == 0x2001 && segments[1] == 0xdb8 => "a documentation address",
        // The IPv4-compatible form (::a.b.c.d, deprecated) and the rest of ::/8.
        () if segments[0] == 0 => "a reserved address",
        () => return None,
    })
}

/// The HTTP client's resolver: the system's answer, less every refused address.
#[derive(Debug, Default, Clone, Copy)]
pub struct Resolver;

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> = found.filter(|a| refusal(a.ip()).is_none()).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no address that may be reached").into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// Values only: no socket is opened anywhere in these tests.
    #[test]
    fn private_and_special_addresses_are_refused() {
        for (address, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "metadata"),
            ("169.254.10.10", "link-local"),
            ("100.64.0.1", "shared"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("224.0.0.1", "multicast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "IETF"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fd00:ec2::254", "metadata"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("::127.0.0.1", "reserved"),
            ("2001:db8::1", "documentation"),
        ] {
            let refused = refusal(ip(address));
            assert!(
                refused.is_some_and(|r| r.contains(why)),
                "{address}: {refused:?}, expected {why}"
            );
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(refusal(ip(address)), None, "{address}");
        }
    }
}
