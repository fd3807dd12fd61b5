//! The client's address behind load balancers and reverse proxies.
//!
//! Behind nginx or a Kubernetes ingress, the TCP peer of every request is
//! the proxy. Per-client decisions (the gateway's connection-attempt limit
//! per address) and logs need the address of the client itself, which the
//! proxy reports in `X-Forwarded-For` or `Forwarded` (RFC 7239). Anyone can
//! send those headers, so they are believed only from the proxies listed in
//! [`TrustedProxies`] (the `http.trusted_proxies` setting), and only as far
//! as a trusted proxy wrote them:
//!
//! - a request whose TCP peer is not trusted comes from its peer; its
//!   headers are ignored;
//! - otherwise the addresses of the header are walked from the right (each
//!   proxy appends the address it received the request from), skipping
//!   trusted ones: the first untrusted address is the client. Addresses
//!   left of it were written by the client and are never read;
//! - if every address is trusted, the leftmost one is the client (a request
//!   made from a proxy's own network);
//! - a header that cannot be read where the walk needs it (not an address,
//!   `unknown`, an obfuscated RFC 7239 identifier, not ASCII) gives the TCP
//!   peer: a proxy that writes garbage is not believed.
//!
//! Which header is read is the `http.forwarded_header` setting
//! ([`ForwardedHeader`]): only one, because a proxy that sets one of them
//! passes the other along as the client sent it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// The proxies whose forwarding headers are believed: addresses
/// (`10.0.0.7`, `::1`) or networks in CIDR form (`10.0.0.0/8`,
/// `fd00::/8`). Empty (the default) believes no header: the TCP peer is the
/// client.
///
/// Deserialises from a list of strings or one comma-separated string
/// (`PULSE__HTTP__TRUSTED_PROXIES=10.0.0.0/8,192.168.0.0/16`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// An entry of [`TrustedProxies`] that is neither an address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or a CIDR network (e.g. 10.0.0.0/8)")]
pub struct InvalidProxyEntry(pub String);

impl TrustedProxies {
    /// Parses the entries (addresses or CIDR networks).
    ///
    /// # Errors
    ///
    /// [`InvalidProxyEntry`] naming the first entry that does not parse.
    pub fn parse<I, S>(entries: I) -> Result<Self, InvalidProxyEntry>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map(|net| IpNet::new(canonical(net.addr()), prefix_of(net)).unwrap_or(net))
                    .map_err(|_| InvalidProxyEntry(entry.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted (forwarding headers are ignored).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address for a request from TCP peer `peer` with these
    /// `headers`, read from `header`. See the [module docs](self).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap, header: ForwardedHeader) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let mut lines = Vec::new();
        for value in headers.get_all(header.name()) {
            match value.to_str() {
                Ok(line) => lines.push(line),
                Err(_) => return peer,
            }
        }
        let mut client = peer;
        for line in lines.iter().rev() {
            for element in split_elements(line).rev() {
                let element = element.trim();
                if element.is_empty() {
                    // `a, , b` or a trailing comma: nothing was written here.
                    continue;
                }
                let node = match header {
                    ForwardedHeader::XForwardedFor => Some(element),
                    ForwardedHeader::Forwarded => forwarded_for(element),
                };
                let Some(ip) = node.and_then(parse_node) else { return peer };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
        }
        client
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries = crate::string_list::deserialize(deserializer)?;
        Self::parse(entries).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, net) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{net}")?;
        }
        Ok(())
    }
}

/// The header a trusted proxy reports the client's address in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx's
    /// `$proxy_add_x_forwarded_for`, most ingresses and cloud load balancers).
    #[default]
    #[serde(rename = "x-forwarded-for", alias = "X-Forwarded-For")]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    #[serde(rename = "forwarded", alias = "Forwarded")]
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name, lower case.
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket
/// reports) as plain IPv4, so `10.0.0.0/8` matches them.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn prefix_of(net: IpNet) -> u8 {
    match (net, canonical(net.addr())) {
        // `::ffff:10.0.0.0/104` is `10.0.0.0/8`.
        (IpNet::V6(v6), IpAddr::V4(_)) => v6.prefix_len().saturating_sub(96),
        _ => net.prefix_len(),
    }
}

/// The comma-separated elements of a header line, quotes respected (RFC
/// 7239 allows a comma inside a quoted string).
fn split_elements(line: &str) -> impl DoubleEndedIterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, byte) in line.bytes().enumerate() {
        match byte {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                parts.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&line[start..]);
    parts.into_iter()
}

/// The `for=` value of one RFC 7239 element (`for=1.2.3.4;proto=https`),
/// unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        Some(value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value))
    })
}

/// An address as proxies write it: `1.2.3.4`, `2001:db8::1`,
/// `[2001:db8::1]`, with or without a port (`1.2.3.4:80`,
/// `[2001:db8::1]:4711`). `unknown` and obfuscated identifiers are `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim();
    let ip = IpAddr::from_str(node)
        .ok()
        .or_else(|| SocketAddr::from_str(node).ok().map(|s| s.ip()))
        .or_else(|| node.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok())?;
    Some(canonical(ip))
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(HeaderName::from_static(name), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    const XFF: ForwardedHeader = ForwardedHeader::XForwardedFor;
    const FWD: ForwardedHeader = ForwardedHeader::Forwarded;

    #[test]
    fn entries_are_addresses_or_networks() {
        let t = trusted(&["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8", " 172.16.0.0/12 "]);
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("::1")));
        assert!(t.contains(ip("fd12::5")));
        assert!(t.contains(ip("172.31.255.255")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped peers match IPv4 networks");
        assert!(!t.contains(ip("11.0.0.1")));
        assert_eq!(t.to_string(), "10.0.0.0/8,192.168.1.7/32,::1/128,fd00::/8,172.16.0.0/12");
        let err = TrustedProxies::parse(["10.0.0.0/8", "nginx"]).unwrap_err();
        assert_eq!(err, InvalidProxyEntry("nginx".into()));
        assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let h = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(TrustedProxies::default().client_ip(ip("9.9.9.9"), &h, XFF), ip("9.9.9.9"));
        assert_eq!(trusted(&["10.0.0.0/8"]).client_ip(ip("9.9.9.9"), &h, XFF), ip("9.9.9.9"));
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        // The client forged the leftmost entry; nginx appended the real one.
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.9, 10.0.0.5"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("203.0.113.9"));
        // Several header lines are one list, in order.
        let h = headers("x-forwarded-for", &["6.6.6.6", "203.0.113.9", "10.0.0.5"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("203.0.113.9"));
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.1.1.1, 10.0.0.5"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("10.1.1.1"));
        // No header: the peer.
        assert_eq!(t.client_ip(peer, &HeaderMap::new(), XFF), peer);
        // Ports and brackets as some proxies write them.
        let h = headers("x-forwarded-for", &["[2001:db8::7]:443"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("2001:db8::7"));
        let h = headers("x-forwarded-for", &["203.0.113.9:5000 ,"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("203.0.113.9"));
    }

    #[test]
    fn garbage_where_the_client_should_be_gives_the_peer() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        for value in ["not-an-ip", "unknown", "1.2.3.4.5", "203.0.113.9, bogus", "300.1.1.1"] {
            let h = headers("x-forwarded-for", &[value]);
            assert_eq!(t.client_ip(peer, &h, XFF), peer, "{value}");
        }
        // Garbage left of the client is never read.
        let h = headers("x-forwarded-for", &["bogus, 203.0.113.9"]);
        assert_eq!(t.client_ip(peer, &h, XFF), ip("203.0.113.9"));
        // Not ASCII.
        let mut h = HeaderMap::new();
        h.insert(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap());
        assert_eq!(t.client_ip(peer, &h, XFF), peer);
    }

    #[test]
    fn forwarded_rfc_7239() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.2");
        let h = headers(
            "forwarded",
            &[r#"for=6.6.6.6, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.9;by=10.0.0.2"#],
        );
        assert_eq!(t.client_ip(peer, &h, FWD), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &[r#"proto=https;for="203.0.113.9:80""#]);
        assert_eq!(t.client_ip(peer, &h, FWD), ip("203.0.113.9"));
        // A quoted comma does not split an element.
        let h = headers("forwarded", &[r#"for=203.0.113.9;ext="a,b""#]);
        assert_eq!(t.client_ip(peer, &h, FWD), ip("203.0.113.9"));
        for value in ["for=unknown", "for=_hidden", "proto=https", "for=\"[::1\""] {
            assert_eq!(t.client_ip(peer, &headers("forwarded", &[value]), FWD), peer, "{value}");
        }
        // Only the configured header is read.
        let h = headers("forwarded", &["for=203.0.113.9"]);
        assert_eq!(t.client_ip(peer, &h, XFF), peer);
    }

    #[test]
    fn deserialises_from_a_list_or_a_comma_separated_string() {
        #[derive(Deserialize)]
        struct S {
            #[serde(default)]
            trusted_proxies: TrustedProxies,
            #[serde(default)]
            forwarded_header: ForwardedHeader,
        }
        let s: S = serde_json::from_str(r#"{"trusted_proxies": ["10.0.0.0/8", "::1"]}"#).unwrap();
        assert_eq!(s.trusted_proxies, trusted(&["10.0.0.0/8", "::1"]));
        assert_eq!(s.forwarded_header, XFF);
        let s: S =
            serde_json::from_str(r#"{"trusted_proxies": "10.0.0.0/8, ::1", "forwarded_header": "forwarded"}"#).unwrap();
        assert_eq!(s.trusted_proxies, trusted(&["10.0.0.0/8", "::1"]));
        assert_eq!(s.forwarded_header, FWD);
        let err = serde_json::from_str::<S>(r#"{"trusted_proxies": ["nginx"]}"#).err().unwrap();
        assert!(err.to_string().contains("\"nginx\" is not an IP address"), "{err}");
    }
}
