//! Request heads: `httparse` turns the bytes of a head into a [`RequestHead`], a view over the
//! frozen head bytes (ranges into one `Bytes`, nothing copied), plus the facts the connection
//! needs before it can read the body: framing, keep-alive, `Expect: 100-continue`.
//!
//! Everything a hostile peer controls is bounded here: the head size ([`MAX_HEAD_BYTES`]) and the
//! number of headers ([`MAX_HEADERS`]). Ambiguous framing (both `Content-Length` and
//! `Transfer-Encoding`, or conflicting lengths) is refused, which closes the door on request
//! smuggling through a proxy in front of the hub.

use std::ops::Range;

use bytes::Bytes;

use super::body::BodyFraming;

/// The largest request head accepted (request line + headers + blank line). Larger → 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// The most headers one request may carry. More → 431.
pub const MAX_HEADERS: usize = 64;

/// The request methods the hub distinguishes; anything else is `Other` (and gets a 404/405).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    Other,
}

impl Method {
    fn from_bytes(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// Why a head was refused. Each maps to one status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Head larger than [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] headers (431).
    TooLarge,
    /// Not HTTP/1.x, or framing the hub will not guess at (400).
    Malformed(&'static str),
    /// A `Transfer-Encoding` other than `chunked` (501).
    UnsupportedEncoding,
}

impl HeadError {
    pub fn status(&self) -> u16 {
        match self {
            HeadError::TooLarge => 431,
            HeadError::Malformed(_) => 400,
            HeadError::UnsupportedEncoding => 501,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            HeadError::TooLarge => "Request header fields too large",
            HeadError::Malformed(m) => m,
            HeadError::UnsupportedEncoding => "Unsupported Transfer-Encoding",
        }
    }
}

/// A parsed request head. Path and header names/values are ranges into `raw`, so reading them
/// allocates nothing and the whole head is one reference-counted buffer.
#[derive(Clone, Debug)]
pub struct RequestHead {
    raw: Bytes,
    pub method: Method,
    method_range: Range<usize>,
    target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    /// How the request body is delimited.
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The request target as sent (path plus optional query).
    pub fn target(&self) -> &str {
        // The target range was validated as UTF-8 (httparse only accepts visible ASCII).
        std::str::from_utf8(&self.raw[self.target.clone()]).unwrap_or("")
    }

    /// The target in origin form: an absolute-form target (`http://host/path`, which a
    /// server must accept, RFC 9112 §3.2.2) is reduced to its path and query.
    fn origin_form(&self) -> &str {
        let t = self.target();
        let Some(scheme_len) = absolute_form_scheme(t) else {
            return t;
        };
        let rest = &t[scheme_len..];
        match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
            // `http://host?x` and `http://host` mean the root.
            _ => "/",
        }
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        let t = self.origin_form();
        t.split_once('?').map_or(t, |(p, _)| p)
    }

    /// The query string (after `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.target().split_once('?').map(|(_, q)| q)
    }

    /// The raw (still percent-encoded) value of `name` in the query string.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// The method token as sent (useful for logs when it is `Other`).
    pub fn method_str(&self) -> &str {
        std::str::from_utf8(&self.raw[self.method_range.clone()]).unwrap_or("?")
    }

    /// All headers, in order, as (name, value) byte slices.
    pub fn headers(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.headers
            .iter()
            .map(|(n, v)| (&self.raw[n.clone()], &self.raw[v.clone()]))
    }

    /// The first header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The first header with this name, as text (None if absent or not UTF-8).
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The header value as a zero-copy `Bytes` (for forwarding it).
    pub fn header_bytes(&self, name: &str) -> Option<Bytes> {
        self.headers
            .iter()
            .find(|(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| self.raw.slice(v.clone()))
    }

    /// The raw bytes of the head.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }
}

/// The offsets of a head parsed from a buffer, before the buffer is frozen. `len` is the size of
/// the head; the caller splits that many bytes off its buffer and calls [`HeadParts::freeze`].
#[derive(Debug)]
pub struct HeadParts {
    pub len: usize,
    method: Method,
    method_range: Range<usize>,
    target: Range<usize>,
    minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    framing: BodyFraming,
    keep_alive: bool,
    expect_continue: bool,
}

impl HeadParts {
    /// Attach the head's bytes (exactly the `len` bytes that were parsed).
    pub fn freeze(self, raw: Bytes) -> RequestHead {
        debug_assert_eq!(raw.len(), self.len);
        RequestHead {
            raw,
            method: self.method,
            method_range: self.method_range,
            target: self.target,
            minor_version: self.minor_version,
            headers: self.headers,
            framing: self.framing,
            keep_alive: self.keep_alive,
            expect_continue: self.expect_continue,
        }
    }
}

fn offset_in(base: &[u8], part: &[u8]) -> Range<usize> {
    // Both slices come from the same buffer (httparse hands out sub-slices of its input), so the
    // pointer difference is the offset; no unsafe needed to compute it.
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// The length of `http://` or `https://` (any case) at the start of an absolute-form target.
fn absolute_form_scheme(target: &str) -> Option<usize> {
    let b = target.as_bytes();
    ["http://", "https://"]
        .iter()
        .find(|s| b.len() >= s.len() && b[..s.len()].eq_ignore_ascii_case(s.as_bytes()))
        .map(|s| s.len())
}

/// Does a comma-separated header value contain `token` (case-insensitive)?
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parse a request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (the caller enforces [`MAX_HEAD_BYTES`] on what it buffers;
/// this function also refuses a complete head larger than that).
pub fn parse_request(buf: &[u8]) -> Result<Option<HeadParts>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed("Unsupported HTTP version"));
        }
        Err(_) => return Err(HeadError::Malformed("Malformed request")),
    };
    if len > MAX_HEAD_BYTES {
        return Err(HeadError::TooLarge);
    }
    // httparse guarantees these are set on Complete.
    let method_s = req.method.unwrap_or("");
    let path_s = req.path.unwrap_or("");
    let minor_version = req.version.unwrap_or(1);
    if path_s.is_empty() {
        return Err(HeadError::Malformed("Malformed request target"));
    }

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut te_seen = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut hosts = 0;
    let mut headers = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        headers.push((offset_in(buf, name), offset_in(buf, h.value)));
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(HeadError::Malformed("Invalid Content-Length"))?;
            if content_length.is_some_and(|prev| prev != v) {
                return Err(HeadError::Malformed("Conflicting Content-Length headers"));
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if te_seen {
                return Err(HeadError::UnsupportedEncoding);
            }
            te_seen = true;
            if h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                chunked = true;
            } else {
                return Err(HeadError::UnsupportedEncoding);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            conn_close |= has_token(h.value, "close");
            conn_keep_alive |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case(b"expect") {
            if h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HeadError::Malformed("Unsupported Expect header"));
            }
        }
    }
    // RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host; more than one is refused
    // whatever the version (which of two hosts a request is for is anyone's guess).
    if hosts > 1 {
        return Err(HeadError::Malformed("More than one Host header"));
    }
    if hosts == 0 && minor_version == 1 {
        return Err(HeadError::Malformed("Missing Host header"));
    }
    let framing = match (chunked, content_length) {
        (true, Some(_)) => {
            return Err(HeadError::Malformed(
                "Both Content-Length and Transfer-Encoding",
            ));
        }
        (true, None) if minor_version == 0 => {
            return Err(HeadError::Malformed("Chunked body in an HTTP/1.0 request"));
        }
        (true, None) => BodyFraming::Chunked,
        (false, Some(0)) | (false, None) => BodyFraming::Empty,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let keep_alive = if minor_version == 0 {
        conn_keep_alive && !conn_close
    } else {
        !conn_close
    };
    Ok(Some(HeadParts {
        len,
        method: Method::from_bytes(method_s),
        method_range: offset_in(buf, method_s.as_bytes()),
        target: offset_in(buf, path_s.as_bytes()),
        minor_version,
        headers,
        framing,
        keep_alive,
        expect_continue: expect_continue && minor_version == 1,
    }))
}

/// Parse a complete head in one call (tests, benches, fuzzing).
pub fn parse_request_bytes(raw: &Bytes) -> Result<Option<RequestHead>, HeadError> {
    Ok(parse_request(raw)?.map(|parts| {
        let len = parts.len;
        parts.freeze(raw.slice(..len))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request_bytes(&Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn host_is_required_once_in_http_1_1() {
        assert_eq!(
            parse("GET / HTTP/1.1\r\n\r\n").unwrap_err(),
            HeadError::Malformed("Missing Host header")
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n").unwrap_err(),
            HeadError::Malformed("More than one Host header")
        );
        assert!(parse("GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn absolute_form_targets_route_by_path() {
        for (target, path, query) in [
            ("http://hub:4000/rooms?x=1", "/rooms", Some("x=1")),
            ("HTTPS://hub/rooms/ABC/events", "/rooms/ABC/events", None),
            ("http://hub", "/", None),
            ("http://hub?q", "/", Some("q")),
            ("/plain", "/plain", None),
        ] {
            let h = parse(&format!("GET {target} HTTP/1.1\r\nHost: hub\r\n\r\n"))
                .unwrap()
                .unwrap();
            assert_eq!((h.path(), h.query()), (path, query), "{target}");
        }
    }

    #[test]
    fn simple_get() {
        let h = parse("GET /rooms?x=1 HTTP/1.1\r\nHost: a\r\nX-Y: z\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.path(), "/rooms");
        assert_eq!(h.query(), Some("x=1"));
        assert_eq!(h.header_str("x-y"), Some("z"));
        assert!(h.keep_alive);
        assert_eq!(h.framing, BodyFraming::Empty);
    }

    #[test]
    fn partial_then_too_large() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let big = format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n",
            "a".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(parse(&big).unwrap_err(), HeadError::TooLarge);
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("H{i}: v\r\n"))
            .collect();
        assert_eq!(
            parse(&format!("GET / HTTP/1.1\r\nHost: t\r\n{many}\r\n")).unwrap_err(),
            HeadError::TooLarge
        );
    }

    #[test]
    fn framing_rules() {
        let h = parse("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(12));
        let h = parse("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, BodyFraming::Chunked);
        for bad in [
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1x\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parse(bad).unwrap_err().status(), 400, "{bad}");
        }
        assert_eq!(
            parse("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap_err(),
            HeadError::UnsupportedEncoding
        );
        // Repeated identical lengths are allowed (RFC 9112 §6.3).
        let h =
            parse("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.framing, BodyFraming::Length(3));
    }

    #[test]
    fn keep_alive_rules() {
        let h = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = parse("GET / HTTP/1.1\r\nHost: t\r\nConnection: foo, Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = parse(
            "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.expect_continue);
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            parse("\x00\x01\x02 / HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse("GET / HTTP/2.0\r\n\r\n").unwrap_err().status(), 400);
    }
}
