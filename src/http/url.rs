//! Just enough of URLs for the hub: `http(s)://host[:port][/path]`, as participants register
//! their endpoints and as the upstream client connects to them, and the one normal form of a
//! host ([`host_of`]) every address check starts from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed absolute http(s) URL, borrowing from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Url<'a> {
    pub(crate) scheme: Scheme,
    /// Host name or IP address; an IPv6 address keeps its brackets.
    pub(crate) host: &'a str,
    /// Explicit port, or the scheme's default.
    pub(crate) port: u16,
    /// Path without query and fragment; empty when the URL has none.
    pub(crate) path: &'a str,
}

/// The longest URL accepted.
pub(crate) const MAX_URL_LEN: usize = 2048;

/// Parse an absolute `http://` or `https://` URL. User info (`user:pass@`) is refused: a
/// credential in an endpoint would be shown to everyone who lists the room.
pub(crate) fn parse(s: &str) -> Result<Url<'_>, &'static str> {
    if s.len() > MAX_URL_LEN {
        return Err("URL too long");
    }
    if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err("URL contains whitespace or control characters");
    }
    let (scheme, rest) = if let Some(r) = strip_prefix_ci(s, "http://") {
        (Scheme::Http, r)
    } else if let Some(r) = strip_prefix_ci(s, "https://") {
        (Scheme::Https, r)
    } else {
        return Err("URL must start with http:// or https://");
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.contains('@') {
        return Err("URL must not contain credentials");
    }
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let close = v6.find(']').ok_or("unterminated IPv6 address")?;
        let addr = &v6[..close];
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("invalid IPv6 address");
        }
        let after = &v6[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err("invalid characters after IPv6 address"),
        };
        (&authority[..close + 2], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("URL has no host");
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err("invalid host name");
    }
    let port = match port {
        None => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or("invalid port")?,
    };
    Ok(Url {
        scheme,
        host,
        port,
        path,
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A URL's host, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Host {
    Ip(IpAddr),
    /// A DNS name, lower-case, without a trailing dot.
    Name(String),
}

/// Normalise a URL's host (`[v6]` keeps its brackets in URLs). IPv4-mapped IPv6 addresses
/// become IPv4.
pub(crate) fn host_of(raw: &str) -> Host {
    if let Some(v6) = raw.strip_prefix('[').and_then(|r| r.strip_suffix(']'))
        && let Ok(ip) = v6.parse::<Ipv6Addr>()
    {
        return Host::Ip(canonical(IpAddr::V6(ip)));
    }
    let name = raw.trim_end_matches('.').to_ascii_lowercase();
    match loose_ipv4(&name) {
        Some(v4) => Host::Ip(IpAddr::V4(v4)),
        None => Host::Name(name),
    }
}

/// IPv4 in any form `inet_aton` accepts: one to four parts, each decimal, `0x` hex or
/// `0`-prefixed octal, the last filling the remaining bytes (`127.1`, `2130706433`).
fn loose_ipv4(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or(p.strip_prefix("0X")) {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if digits.is_empty() && radix != 16 {
            return None;
        }
        let n = if digits.is_empty() {
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|n| *n > 255) {
        return None;
    }
    let room = 8 * (4 - init.len() as u32);
    if room < 64 && *last >= 1u64 << room {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        v |= n << (24 - 8 * i as u32);
    }
    Some(Ipv4Addr::from((v | last) as u32))
}

/// IPv4-mapped IPv6 as IPv4; everything else as is.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Host {
        Host::Ip(s.parse().unwrap())
    }

    #[test]
    fn numeric_hosts_are_normalised() {
        for (raw, want) in [
            ("2130706433", ip("127.0.0.1")),
            ("0x7f000001", ip("127.0.0.1")),
            ("0X7F.1", ip("127.0.0.1")),
            ("0177.0.0.1", ip("127.0.0.1")),
            ("127.1", ip("127.0.0.1")),
            ("127.0.1", ip("127.0.0.1")),
            ("[::ffff:127.0.0.1]", ip("127.0.0.1")),
            ("[::1]", ip("::1")),
            ("0", ip("0.0.0.0")),
            ("169.254.169.254", ip("169.254.169.254")),
            ("192.168.1.10", ip("192.168.1.10")),
            ("LocalHost.", Host::Name("localhost".into())),
            ("llm.lan", Host::Name("llm.lan".into())),
            ("1.2.3.4.5", Host::Name("1.2.3.4.5".into())),
            ("256.1.1.1", Host::Name("256.1.1.1".into())),
            ("4294967296", Host::Name("4294967296".into())),
            ("0x", ip("0.0.0.0")),
            ("08", Host::Name("08".into())),
        ] {
            assert_eq!(host_of(raw), want, "{raw}");
        }
    }

    #[test]
    fn parses_endpoints() {
        let u = parse("http://localhost:11434").unwrap();
        assert_eq!(
            (u.scheme, u.host, u.port, u.path),
            (Scheme::Http, "localhost", 11434, "")
        );
        let u = parse("HTTPS://api.example.com/v1/?x=1").unwrap();
        assert_eq!(
            (u.scheme, u.host, u.port, u.path),
            (Scheme::Https, "api.example.com", 443, "/v1/")
        );
        let u = parse("http://[::1]:8080/v1").unwrap();
        assert_eq!((u.host, u.port, u.path), ("[::1]", 8080, "/v1"));
        let u = parse("http://192.168.1.50:1234").unwrap();
        assert_eq!(u.port, 1234);
    }

    #[test]
    fn rejects_non_urls() {
        for bad in [
            "not a url",
            "ftp://x",
            "http://",
            "http://:80",
            "http://host:0",
            "http://host:99999",
            "http://host:",
            "http://u:p@host",
            "http://ho st",
            "http://[::1",
            "http://[zz]:1",
            "http://a/b c",
            "http://h$st",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
