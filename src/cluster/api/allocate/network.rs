//! The address ranges the API server allocates from (`--cluster-cidr`, `--service-cidr`,
//! `--service-node-port-range`), and the IPv4 CIDR arithmetic over them.

use std::fmt;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// An IPv4 network: a base address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    base: u32,
    prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Cidr> {
        if prefix > 32 {
            return None;
        }
        let base = u32::from(addr) & Self::mask(prefix);
        Some(Ipv4Cidr { base, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        }
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// How many addresses the network holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == self.base
    }

    /// The address at `offset` from the base.
    pub fn nth(&self, offset: u64) -> Ipv4Addr {
        Ipv4Addr::from(self.base.wrapping_add(offset as u32))
    }

    /// How far `ip` is from the base.
    pub fn offset_of(&self, ip: Ipv4Addr) -> u64 {
        u64::from(u32::from(ip).wrapping_sub(self.base))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (like 10.96.0.0/16)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to 32"))?;
        let cidr = Ipv4Cidr::new(addr, prefix).expect("prefix checked");
        if u32::from(addr) != cidr.base {
            return Err(format!(
                "{s:?} has host bits set: did you mean {cidr}? (the address must be the network's first)"
            ));
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The address ranges of the cluster (flags of `berth server`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// Pod addresses of the whole cluster; each node gets one block of it.
    pub cluster_cidr: Ipv4Cidr,
    /// Prefix length of a node's block.
    pub node_mask: u8,
    /// Service virtual IPs; the first address is the `kubernetes` Service's.
    pub service_cidr: Ipv4Cidr,
    pub node_ports: RangeInclusive<u16>,
}

impl Default for Network {
    fn default() -> Network {
        Network {
            cluster_cidr: "10.244.0.0/16".parse().expect("valid"),
            node_mask: 24,
            service_cidr: "10.96.0.0/16".parse().expect("valid"),
            node_ports: 30000..=32767,
        }
    }
}

impl Network {
    /// Checks the ranges fit together; the message names the flag.
    pub fn check(&self) -> Result<(), String> {
        if self.node_mask < self.cluster_cidr.prefix || self.node_mask > 30 {
            return Err(format!(
                "--node-cidr-mask-size {} must be between the --cluster-cidr prefix ({}) and 30",
                self.node_mask, self.cluster_cidr.prefix
            ));
        }
        if self.service_cidr.prefix > 29 {
            return Err(format!(
                "--service-cidr {} is too small: use a /29 or larger (like 10.96.0.0/16)",
                self.service_cidr
            ));
        }
        if self.node_ports.is_empty() {
            return Err("--service-node-port-range is empty (like 30000-32767)".into());
        }
        Ok(())
    }

    /// The ClusterIP of the built-in `kubernetes` Service: the first address of the range.
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_cidr.nth(1)
    }
}

/// Parses `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let bad = || format!("{s:?} is not a port range (like 30000-32767)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_refuse_host_bits() {
        let c: Ipv4Cidr = "10.96.0.0/16".parse().unwrap();
        assert_eq!(c.size(), 65536);
        assert!(c.contains("10.96.255.1".parse().unwrap()));
        assert!(!c.contains("10.97.0.1".parse().unwrap()));
        let e = "10.96.0.1/16".parse::<Ipv4Cidr>().unwrap_err();
        assert!(e.contains("did you mean 10.96.0.0/16"), "{e}");
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
        assert!(parse_port_range("3-2").is_err());
    }
}
