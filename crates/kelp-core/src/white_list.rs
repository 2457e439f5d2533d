//! The IP white list of SeaweedFS's guard (`-whiteList`, `[guard]
//! white_list`): comma-separated addresses and CIDR ranges, IPv4 or IPv6.
//! An empty list allows everyone. An IPv4 address arriving as an
//! IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is checked as IPv4.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhiteList {
    ranges: Vec<(IpAddr, u8)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhiteListError {
    #[error("{0:?} is not an IP address or CIDR range")]
    Bad(String),
    #[error("{0:?}: the prefix length is longer than the address")]
    Prefix(String),
}

impl FromStr for WhiteList {
    type Err = WhiteListError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut ranges = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let addr: IpAddr = addr
                .parse()
                .map_err(|_| WhiteListError::Bad(item.to_string()))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .map_err(|_| WhiteListError::Bad(item.to_string()))?,
            };
            if prefix > max {
                return Err(WhiteListError::Prefix(item.to_string()));
            }
            ranges.push((addr, prefix));
        }
        Ok(Self { ranges })
    }
}

impl fmt::Display for WhiteList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (addr, prefix)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{addr}/{prefix}")?;
        }
        Ok(())
    }
}

impl WhiteList {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether `ip` may call: always when the list is empty.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.ranges.is_empty() {
            return true;
        }
        let ip = ip.to_canonical();
        self.ranges
            .iter()
            .any(|&(net, prefix)| in_range(ip, net, prefix))
    }
}

fn in_range(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net.to_canonical()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = bits - u32::from(prefix);
    if shift >= 128 {
        return true;
    }
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_and_ranges() {
        let w: WhiteList = " 127.0.0.1, 10.1.0.0/16,::1,fd00::/8 ,".parse().unwrap();
        assert!(w.allows(ip("127.0.0.1")));
        assert!(!w.allows(ip("127.0.0.2")));
        assert!(w.allows(ip("10.1.200.3")));
        assert!(!w.allows(ip("10.2.0.1")));
        assert!(w.allows(ip("::1")));
        assert!(w.allows(ip("fd12::5")));
        assert!(!w.allows(ip("fe80::1")));
        // IPv4 seen through an IPv6 socket.
        assert!(w.allows(ip("::ffff:10.1.2.3")));
        assert!(!w.allows(ip("::ffff:10.9.2.3")));
        assert_eq!(
            w.to_string(),
            "127.0.0.1/32, 10.1.0.0/16, ::1/128, fd00::/8"
        );
    }

    #[test]
    fn empty_allows_all_and_zero_prefix_matches_all() {
        let w: WhiteList = "".parse().unwrap();
        assert!(w.is_empty() && w.allows(ip("8.8.8.8")));
        let w: WhiteList = "0.0.0.0/0".parse().unwrap();
        assert!(w.allows(ip("8.8.8.8")));
        assert!(!w.allows(ip("::2")));
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            "10.0.0.1, host".parse::<WhiteList>(),
            Err(WhiteListError::Bad("host".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<WhiteList>(),
            Err(WhiteListError::Prefix("10.0.0.0/33".into()))
        );
        assert!("10.0.0.0/x".parse::<WhiteList>().is_err());
        assert!("::/129".parse::<WhiteList>().is_err());
    }
}
