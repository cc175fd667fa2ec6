//! CIDR sets (allow-lists, trusted proxies) with a lookup whose cost does not grow with the
//! number of entries: one hash probe per distinct prefix length present.

use std::{collections::HashSet, net::IpAddr};

use ipnet::{IpNet, Ipv4Net};

/// A set of IPv4 and IPv6 networks.
#[derive(Clone, Debug, Default)]
pub struct CidrSet {
    /// Every entry as written (normalised), for display.
    entries: Vec<IpNet>,
    /// (prefix length, network addresses with that prefix), longest prefixes first.
    v4: Vec<(u8, HashSet<u32>)>,
    v6: Vec<(u8, HashSet<u128>)>,
}

impl CidrSet {
    /// Builds a set from networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut set = CidrSet::default();
        for net in nets {
            match net {
                IpNet::V4(n) => insert(&mut set.v4, n.prefix_len(), u32::from(n.network())),
                IpNet::V6(n) => insert(&mut set.v6, n.prefix_len(), u128::from(n.network())),
            }
            set.entries.push(net);
        }
        set.v4.sort_by_key(|(prefix, _)| std::cmp::Reverse(*prefix));
        set.v6.sort_by_key(|(prefix, _)| std::cmp::Reverse(*prefix));
        set
    }

    /// Whether the set has no entry (an absent or empty allow-list allows everyone).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The networks, as configured.
    pub fn entries(&self) -> &[IpNet] {
        &self.entries
    }

    /// Whether `ip` is inside one of the networks. IPv4-mapped IPv6 addresses are looked up
    /// as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => contains(&self.v4, u32::from(v4), 32),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => contains(&self.v4, u32::from(v4), 32),
                None => contains(&self.v6, u128::from(v6), 128),
            },
        }
    }
}

trait Bits: Copy + std::hash::Hash + Eq {
    fn mask(self, prefix: u8, width: u8) -> Self;
}

impl Bits for u32 {
    fn mask(self, prefix: u8, width: u8) -> Self {
        if prefix == 0 {
            0
        } else {
            self & (u32::MAX << (width - prefix))
        }
    }
}

impl Bits for u128 {
    fn mask(self, prefix: u8, width: u8) -> Self {
        if prefix == 0 {
            0
        } else {
            self & (u128::MAX << (width - prefix))
        }
    }
}

fn insert<T: Bits>(table: &mut Vec<(u8, HashSet<T>)>, prefix: u8, network: T) {
    match table.iter_mut().find(|(p, _)| *p == prefix) {
        Some((_, set)) => {
            set.insert(network);
        }
        None => table.push((prefix, HashSet::from([network]))),
    }
}

fn contains<T: Bits>(table: &[(u8, HashSet<T>)], addr: T, width: u8) -> bool {
    table
        .iter()
        .any(|(prefix, set)| set.contains(&addr.mask(*prefix, width)))
}

/// Parses one entry: `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a /32 or /128).
/// IPv4-mapped IPv6 networks become IPv4 ones. Host bits set below the prefix are an error,
/// since they usually mean a typo in the prefix length.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = if text.contains('/') {
        text.parse::<IpNet>().map_err(|_| {
            format!("`{text}` is not a CIDR range (e.g. 10.0.0.0/8 or 2001:db8::/32)")
        })?
    } else {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        IpNet::from(ip)
    };
    if net.trunc() != net {
        return Err(format!(
            "`{text}` has host bits set below /{}; did you mean `{}`?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    Ok(match net {
        IpNet::V6(v6) => match (v6.network().to_ipv4_mapped(), v6.prefix_len()) {
            (Some(v4), len) if len >= 96 => {
                IpNet::V4(Ipv4Net::new(v4, len - 96).expect("96..=128 maps to 0..=32"))
            }
            _ => IpNet::V6(v6),
        },
        v4 => v4,
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn set(entries: &[&str]) -> CidrSet {
        CidrSet::new(entries.iter().map(|e| parse_cidr(e).unwrap()))
    }

    #[test]
    fn matches_v4_v6_bare_and_mapped() {
        let s = set(&[
            "111.111.111.0/24",
            "222.222.222.222",
            "2001:db8::/32",
            "::1",
        ]);
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(s.contains(ip("111.111.111.7")));
        assert!(!s.contains(ip("111.111.112.7")));
        assert!(s.contains(ip("222.222.222.222")));
        assert!(!s.contains(ip("222.222.222.223")));
        assert!(
            s.contains(ip("::ffff:111.111.111.9")),
            "mapped counts as IPv4"
        );
        assert!(s.contains(ip("2001:db8:1::5")));
        assert!(!s.contains(ip("2001:db9::5")));
        assert!(s.contains(ip("::1")));
        assert!(!s.contains(ip("::2")));
        assert!(set(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(!set(&["0.0.0.0/0"]).contains(ip("2001:db8::1")));
        assert!(set(&["::ffff:10.0.0.0/104"]).contains(ip("10.1.2.3")));
    }

    #[test]
    fn malformed_entries_are_errors() {
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("10.0.0.300").is_err());
        assert!(parse_cidr("hello").is_err());
        let e = parse_cidr("10.1.2.3/8").unwrap_err();
        assert!(e.contains("did you mean `10.0.0.0/8`"), "{e}");
    }

    #[test]
    fn ten_thousand_entries_still_match_exactly() {
        let nets: Vec<IpNet> = (0..10_000u32)
            .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap()))
            .collect();
        let s = CidrSet::new(nets);
        assert!(s.contains("10.0.39.15".parse().unwrap()));
        assert!(!s.contains("11.0.0.1".parse().unwrap()));
    }
}
