//! The client behind a trusted proxy: the address per-address limits are counted against.
//! Only a connection from a configured proxy may name another client, through
//! `X-Forwarded-For`; the client is the last address in it that is not itself a trusted
//! proxy (each proxy appends the address it saw, so the addresses to the right of it were
//! written by proxies we trust, and the ones to its left by whoever the client was).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

/// At most this many bytes of `X-Forwarded-For` are read.
const MAX_HEADER_BYTES: usize = 4096;

/// The address a request is attributed to.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let mut seen = 0;
    let mut hops: Vec<&str> = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        seen += value.len();
        if seen > MAX_HEADER_BYTES {
            return peer;
        }
        let Ok(text) = value.to_str() else {
            return peer;
        };
        hops.extend(text.split(','));
    }
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.trim().parse::<IpAddr>() else {
            // Unparseable: nothing to its left can be believed; blame the last good hop.
            return peer;
        };
        if !trusted.contains(&ip) {
            return SocketAddr::new(ip, 0);
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).expect("value"));
        }
        map
    }

    const PROXY: &str = "127.0.0.1:4000";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn an_untrusted_peer_is_its_own_client() {
        let peer: SocketAddr = "127.0.0.9:5000".parse().expect("addr");
        let got = client_address(peer, &headers(&["127.0.0.7"]), &[ip("127.0.0.1")]);
        assert_eq!(got, peer);
    }

    #[test]
    fn a_trusted_peer_names_the_last_untrusted_hop() {
        let peer: SocketAddr = PROXY.parse().expect("addr");
        let trusted = [ip("127.0.0.1"), ip("127.0.0.2")];
        let got = client_address(
            peer,
            &headers(&["127.0.0.5, 127.0.0.7, 127.0.0.2"]),
            &trusted,
        );
        assert_eq!(got.ip(), ip("127.0.0.7"));
        // Several headers read as one list, in order.
        let got = client_address(peer, &headers(&["127.0.0.5", "::1, 127.0.0.2"]), &trusted);
        assert_eq!(got.ip(), ip("::1"));
    }

    #[test]
    fn without_a_usable_header_the_proxy_is_the_client() {
        let peer: SocketAddr = PROXY.parse().expect("addr");
        let trusted = [ip("127.0.0.1")];
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer);
        assert_eq!(
            client_address(peer, &headers(&["127.0.0.1"]), &trusted),
            peer
        );
        assert_eq!(
            client_address(peer, &headers(&["not-an-address"]), &trusted),
            peer
        );
        let long = vec!["127.0.0.3"; 600].join(",");
        assert_eq!(client_address(peer, &headers(&[&long]), &trusted), peer);
    }
}
