//! Just enough of URLs for the hub: `http(s)://host[:port][/path]`, as participants register
//! their endpoints and as the upstream client connects to them.

/// `http` or `https`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// A parsed absolute http(s) URL, borrowing from its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Url<'a> {
    pub scheme: Scheme,
    /// Host name or IP address; an IPv6 address keeps its brackets.
    pub host: &'a str,
    /// Explicit port, or the scheme's default.
    pub port: u16,
    /// Path without query and fragment; empty when the URL has none.
    pub path: &'a str,
}

/// The longest URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// Parse an absolute `http://` or `https://` URL. User info (`user:pass@`) is refused: a
/// credential in an endpoint would be shown to everyone who lists the room.
pub fn parse(s: &str) -> Result<Url<'_>, &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
