//! Which participant endpoints the hub will connect to, and how it recognises a request it
//! forwarded itself.
//!
//! * **Hosts are normalised before any check.** `2130706433`, `0x7f000001`, `0177.1`,
//!   `127.1` and `[::ffff:127.0.0.1]` are all 127.0.0.1 to the resolver, so they are to the
//!   hub too ([`host_of`](crate::http::url::host_of) parses IPv4 the way browsers and `inet_aton` do).
//! * **Local addresses are for local participants.** A direct endpoint on a loopback,
//!   link-local or unspecified address reaches the hub host's own services; it is accepted only
//!   from a joiner that itself connects from loopback. A remote peer serving a model on its own
//!   `localhost` uses a reverse tunnel instead. The machine's other addresses (its LAN address)
//!   count as local too: a service listening on every interface answers there. Names are checked when connecting, against
//!   every address they resolve to then (so a name cannot be re-pointed after the join).
//! * **`serve --allow-endpoint CIDR`** (repeatable) narrows direct endpoints to those networks.
//! * **Loops.** Every request the proxy forwards carries `Via: 1.1 gambiarra` and
//!   `Gambiarra-Hop`, the list of hubs it went through (each hub's random instance id); a hub
//!   that finds itself in the list, or a list longer than [`MAX_HOPS`], answers 508.

use std::net::{IpAddr, Ipv4Addr};

use crate::http::url::{Host, canonical};

/// The header listing the hubs a request was forwarded by.
pub(crate) const HOP_HEADER: &str = "gambiarra-hop";
/// Most hubs a request may have been forwarded through (hub → participant that is a hub …).
pub(crate) const MAX_HOPS: usize = 8;

/// Loopback, link-local or unspecified: an address that means "this machine" or its link —
/// also when it is an IPv4 one inside an IPv6 form that a resolver or a translator would turn
/// back into it (IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`).
pub(crate) fn is_local(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => local_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xffc0) == 0xfe80
                || (s[..6] == [0; 6] && local_v4(embedded(s[6], s[7])))
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && local_v4(embedded(s[6], s[7])))
                || (s[0] == 0x2002 && local_v4(embedded(s[1], s[2])))
        }
    }
}

/// Whether `ip` is one of this machine's own addresses (its LAN address, say): a service that
/// listens on every interface answers there as on loopback. Asked of the kernel by binding a
/// socket to it, which only an address of this machine allows — unless the system allows
/// binding to any address (`ip_nonlocal_bind`), which a bind to a documentation address
/// reveals: then nothing is known, and only [`is_local`] applies.
pub(crate) fn is_own_address(ip: IpAddr) -> bool {
    use std::net::{SocketAddr, UdpSocket};
    static NONLOCAL_BIND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let binds = |ip: IpAddr| UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok();
    let anything_binds =
        *NONLOCAL_BIND.get_or_init(|| binds(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77))));
    !anything_binds && binds(canonical(ip))
}

fn local_v4(v4: Ipv4Addr) -> bool {
    v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.octets()[0] == 0
}

/// A network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net = canonical(
            addr.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an address or network (a.b.c.d/n, x::/n)"))?,
        );
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The hub's rules for direct endpoints.
#[derive(Clone, Debug, Default)]
pub struct EndpointRules {
    /// `--allow-endpoint`: when not empty, direct endpoints must lie in one of these.
    pub allowed: Vec<Cidr>,
}

impl EndpointRules {
    /// May the hub connect to `ip` for a participant that joined from loopback (`local_ok`)
    /// or not? The reason when not.
    pub(crate) fn permits(&self, ip: IpAddr, local_ok: bool) -> Result<(), String> {
        let ip = canonical(ip);
        // `local_ok` first: a local joiner may reach anything, without the kernel being asked.
        if !local_ok && (is_local(ip) || is_own_address(ip)) {
            return Err(format!(
                "{ip} is a local address of the hub's machine: only a participant on that machine \
                 may use it (from elsewhere, serve through a tunnel: `gambiarra join` without --direct)"
            ));
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|c| c.contains(ip)) {
            return Err(format!(
                "{ip} is outside the networks this hub allows for endpoints (--allow-endpoint)"
            ));
        }
        Ok(())
    }

    /// The join-time check of a direct endpoint's host: addresses now, `localhost` names as
    /// loopback; other names are checked at each connection, against what they resolve to.
    pub(crate) fn check_host(&self, host: &Host, local_ok: bool) -> Result<(), String> {
        match host {
            Host::Ip(ip) => self.permits(*ip, local_ok),
            Host::Name(n) if n == "localhost" || n.ends_with(".localhost") => {
                self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST), local_ok)
            }
            Host::Name(_) => Ok(()),
        }
    }
}

/// Whether a request's `Gambiarra-Hop` list shows a loop through the hub `me` (or is longer
/// than [`MAX_HOPS`]).
pub(crate) fn is_loop(hops: Option<&[u8]>, me: &str) -> bool {
    let Some(hops) = hops else {
        return false;
    };
    let mut n = 0;
    for hop in hops.split(|b| *b == b',') {
        let hop = hop.trim_ascii();
        if hop.is_empty() {
            continue;
        }
        n += 1;
        if hop == me.as_bytes() || n > MAX_HOPS {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::url::host_of;

    #[test]
    fn local_addresses_need_a_local_joiner() {
        let rules = EndpointRules::default();
        for raw in [
            "127.0.0.1",
            "2130706433",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "0.0.0.0",
            "169.254.169.254",
            "[fe80::1]",
            "[::127.0.0.1]",
            "[64:ff9b::7f00:1]",
            "[2002:7f00:1::]",
            "[64:ff9b::a9fe:a9fe]",
            "localhost",
        ] {
            assert!(rules.check_host(&host_of(raw), false).is_err(), "{raw}");
            assert!(rules.check_host(&host_of(raw), true).is_ok(), "{raw}");
        }
        for raw in [
            "192.168.1.10",
            "10.0.0.2",
            "llm.lan",
            "[2001:db8::1]",
            "[64:ff9b::c0a8:10a]",
        ] {
            assert!(rules.check_host(&host_of(raw), false).is_ok(), "{raw}");
        }
    }

    #[test]
    fn allowed_networks() {
        let rules = EndpointRules {
            allowed: vec![
                "192.168.1.0/24".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
            ],
        };
        assert!(
            rules
                .permits("192.168.1.77".parse().unwrap(), false)
                .is_ok()
        );
        assert!(
            rules
                .permits("192.168.2.1".parse().unwrap(), false)
                .is_err()
        );
        assert!(rules.permits("fd12::1".parse().unwrap(), false).is_ok());
        assert!(
            rules
                .permits("::ffff:192.168.1.5".parse().unwrap(), false)
                .is_ok()
        );
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn loops() {
        assert!(!is_loop(None, "me"));
        assert!(!is_loop(Some(b"a, b"), "me"));
        assert!(is_loop(Some(b"a, me"), "me"));
        assert!(is_loop(Some(b"1,2,3,4,5,6,7,8,9"), "me"));
    }
}
