//! The upstream side of HTTP/1.1: response heads parsed with httparse into a view over one
//! `Bytes` (like request heads), their body framing per RFC 9112 §6.3, and the hop-by-hop header
//! rules a proxy applies. The proxy (`hub::proxy`) writes requests and relays bodies with these.

use std::ops::Range;

use bytes::Bytes;

use super::body::BodyFraming;
use super::head::{HeadError, MAX_HEADERS, has_token};

/// The largest upstream response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A parsed response head.
#[derive(Clone, Debug)]
pub struct ResponseHead {
    raw: Bytes,
    pub status: u16,
    pub minor_version: u8,
    headers: Vec<(Range<usize>, Range<usize>)>,
    pub framing: BodyFraming,
    /// The upstream will keep the connection open after this response.
    pub keep_alive: bool,
}

impl ResponseHead {
    pub fn headers(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (self.raw.slice(n.clone()), self.raw.slice(v.clone())))
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }
}

/// A response head parsed from a buffer, before its bytes are frozen: the caller splits `len`
/// bytes off its buffer and calls [`ResponseHeadParts::freeze`] with them.
#[derive(Debug)]
pub struct ResponseHeadParts {
    pub len: usize,
    head: ResponseHead,
}

impl ResponseHeadParts {
    pub fn freeze(mut self, raw: Bytes) -> ResponseHead {
        debug_assert_eq!(raw.len(), self.len);
        self.head.raw = raw;
        self.head
    }
}

/// Parse a response head at the start of `buf`. `Ok(None)`: incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHeadParts>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed("Malformed response from upstream")),
    };
    let status = resp.code.unwrap_or(0);
    let minor_version = resp.version.unwrap_or(1);
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut close = minor_version == 0;
    let base = buf.as_ptr() as usize;
    for h in resp.headers.iter() {
        let n = h.name.as_bytes();
        let ns = n.as_ptr() as usize - base;
        let vs = h.value.as_ptr() as usize - base;
        headers.push((ns..ns + n.len(), vs..vs + h.value.len()));
        if n.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(HeadError::Malformed("Invalid Content-Length from upstream"))?;
            if length.is_some_and(|l| l != v) {
                return Err(HeadError::Malformed(
                    "Conflicting Content-Length from upstream",
                ));
            }
            length = Some(v);
        } else if n.eq_ignore_ascii_case(b"transfer-encoding") {
            // Only a final `chunked` coding delimits the body; anything else reads to close.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            if !chunked {
                close = true;
            }
        } else if n.eq_ignore_ascii_case(b"connection") {
            if has_token(h.value, "close") {
                close = true;
            } else if minor_version == 0 && has_token(h.value, "keep-alive") {
                close = false;
            }
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        BodyFraming::Empty
    } else if chunked {
        BodyFraming::Chunked
    } else if let Some(n) = length {
        if n == 0 {
            BodyFraming::Empty
        } else {
            BodyFraming::Length(n)
        }
    } else {
        close = true;
        BodyFraming::UntilClose
    };
    Ok(Some(ResponseHeadParts {
        len,
        head: ResponseHead {
            raw: Bytes::new(),
            status,
            minor_version,
            headers,
            framing,
            keep_alive: !close,
        },
    }))
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones a
/// relay recomputes itself (`Content-Length`, `Date`) or sets itself (CORS).
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const DROP: [&[u8]; 13] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"date",
        b"access-control-allow-origin",
        b"access-control-allow-credentials",
    ];
    DROP.iter().any(|d| name.eq_ignore_ascii_case(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ResponseHead {
        let raw = Bytes::copy_from_slice(s.as_bytes());
        let parts = parse_response(&raw).unwrap().unwrap();
        let n = parts.len;
        parts.freeze(raw.slice(..n))
    }

    #[test]
    fn framing() {
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, BodyFraming::Length(5), true)
        );
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, BodyFraming::Chunked);
        let h = parse("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::UntilClose, false));
        let h = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h = parse("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::Empty, true));
        let h = parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive);
        assert_eq!(h.header("content-length"), Some(&b"3"[..]));
    }

    #[test]
    fn hop_by_hop() {
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(is_hop_by_hop(b"Connection"));
        assert!(!is_hop_by_hop(b"Content-Type"));
        assert!(!is_hop_by_hop(b"X-Request-Id"));
    }
}
