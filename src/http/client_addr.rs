//! Whose socket is it, by address: the peer's, or, behind a proxy the operator
//! trusts (`server.trusted_proxies`), the client address that proxy forwarded.
//! Per-address limits count by [`limit_key`]: one IPv4 address, or one IPv6 /64
//! (one subscriber's allocation), so rotating addresses within it gains nothing.

use ipnet::IpNet;
use std::net::{IpAddr, Ipv6Addr};

/// Proxies whose `X-Forwarded-For` / `Forwarded` headers are believed. Empty: none,
/// and the peer's address is the client's.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Each entry an address (`10.0.0.7`) or a network (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{e:?} is not an address or a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address. From a trusted peer: the rightmost forwarded address
    /// that is not itself a trusted proxy (what the proxy nearest us saw), from
    /// `Forwarded` or else `X-Forwarded-For`; from any other peer the headers are
    /// ignored, so a client cannot forge its way past a per-address limit.
    pub fn client(
        &self,
        peer: IpAddr,
        forwarded: Option<&str>,
        x_forwarded_for: Option<&str>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = match (forwarded, x_forwarded_for) {
            (Some(f), _) => f
                .split(',')
                .filter_map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        k.eq_ignore_ascii_case("for").then(|| parse_hop(v))?
                    })
                })
                .collect(),
            (None, Some(x)) => x.split(',').filter_map(parse_hop).collect(),
            (None, None) => Vec::new(),
        };
        hops.into_iter()
            .rev()
            .find(|ip| !self.trusts(*ip))
            .unwrap_or(peer)
    }
}

/// One forwarded hop: `1.2.3.4`, `1.2.3.4:5678`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let t = text.trim().trim_matches('"');
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = t.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    t.rsplit_once(':')?.0.parse().ok()
}

/// What per-address limits count by: the IPv4 address, or the IPv6 /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_may_name_the_client() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".into(), "192.168.1.1".into()]).unwrap();
        // An untrusted peer: headers ignored, forged or not.
        assert_eq!(
            trusted.client(ip("203.0.113.9"), None, Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        // A trusted peer: the rightmost untrusted hop.
        assert_eq!(
            trusted.client(
                ip("10.1.2.3"),
                None,
                Some("1.2.3.4, 198.51.100.7, 10.9.9.9")
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            trusted.client(
                ip("192.168.1.1"),
                Some(r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#),
                Some("1.2.3.4")
            ),
            ip("2001:db8::1")
        );
        // Nothing forwarded: the peer itself.
        assert_eq!(trusted.client(ip("10.1.2.3"), None, None), ip("10.1.2.3"));
        assert!(TrustedProxies::parse(&["not-an-ip".into()]).is_err());
    }

    #[test]
    fn ipv6_counts_per_64_and_ipv4_per_address() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            limit_key(ip("2001:db8:1:2:ffff::9")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:3::1")),
            limit_key(ip("2001:db8:1:2::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
