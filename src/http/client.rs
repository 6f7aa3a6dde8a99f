//! The upstream side of HTTP/1.1: response heads parsed with httparse into a view over one
//! `Bytes` (like request heads), their body framing per RFC 9112 §6.3, and the hop-by-hop header
//! rules a proxy applies. The proxy (`hub::proxy`) writes requests and relays bodies with these.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::body::{BodyFraming, ChunkedDecoder};
use super::head::{HeadError, MAX_HEADERS, has_token};

/// The largest upstream response head accepted, complete or not (larger → the proxy answers
/// 502).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// A parsed response head.
#[derive(Clone, Debug)]
pub(crate) struct ResponseHead {
    raw: Bytes,
    pub(crate) status: u16,
    headers: Vec<(Range<usize>, Range<usize>)>,
    pub(crate) framing: BodyFraming,
    /// The upstream will keep the connection open after this response.
    pub(crate) keep_alive: bool,
}

impl ResponseHead {
    pub(crate) fn headers(&self) -> impl Iterator<Item = (Bytes, Bytes)> + '_ {
        self.headers
            .iter()
            .map(|(n, v)| (self.raw.slice(n.clone()), self.raw.slice(v.clone())))
    }

    #[cfg_attr(
        not(any(feature = "client", feature = "tools")),
        allow(dead_code, reason = "the SDK's and the load tool's")
    )]
    pub(crate) fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.raw[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| &self.raw[v.clone()])
    }
}

/// A response head parsed from a buffer, before its bytes are frozen: the caller splits `len`
/// bytes off its buffer and calls [`ResponseHeadParts::freeze`] with them.
#[derive(Debug)]
pub(crate) struct ResponseHeadParts {
    pub(crate) len: usize,
    head: ResponseHead,
}

impl ResponseHeadParts {
    pub(crate) fn freeze(mut self, raw: Bytes) -> ResponseHead {
        debug_assert_eq!(raw.len(), self.len);
        self.head.raw = raw;
        self.head
    }
}

/// Parse a response head at the start of `buf`. `Ok(None)`: incomplete.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<ResponseHeadParts>, HeadError> {
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
    if len > MAX_RESPONSE_HEAD {
        return Err(HeadError::TooLarge);
    }
    let status = resp.code.unwrap_or(0);
    if !(100..=599).contains(&status) {
        return Err(HeadError::Malformed("Invalid status code from upstream"));
    }
    let minor_version = resp.version.unwrap_or(1);
    let mut headers = Vec::with_capacity(resp.headers.len());
    let mut length: Option<u64> = None;
    let mut chunked = false;
    // A Transfer-Encoding whose last coding is not `chunked`: the body ends at the close, and
    // any Content-Length is ignored (RFC 9112 §6.3, rule 4).
    let mut encoded_until_close = false;
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
            encoded_until_close = !chunked;
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
    } else if encoded_until_close {
        close = true;
        BodyFraming::UntilClose
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
            headers,
            framing,
            keep_alive: !close,
        },
    }))
}

/// Why a response could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The socket failed.
    Io(std::io::Error),
    /// The peer closed before the head or the body was complete.
    Closed,
    /// The bytes are not HTTP (head or chunk framing).
    Invalid(String),
    /// The body is larger than the caller allows.
    TooLarge,
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Closed => f.write_str("connection closed before the answer was complete"),
            ReadError::Invalid(m) => f.write_str(m),
            ReadError::TooLarge => f.write_str("answer too large"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for std::io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io(e) => e,
            ReadError::Closed => std::io::ErrorKind::UnexpectedEof.into(),
            other => std::io::Error::other(other.to_string()),
        }
    }
}

async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> Result<(), ReadError> {
    match io.read_buf(buf).await {
        Ok(0) => Err(ReadError::Closed),
        Ok(_) => Ok(()),
        Err(e) => Err(ReadError::Io(e)),
    }
}

/// Read from `io` into `buf` until a response head parses. The head's bytes are split off
/// `buf`; whatever followed them stays there.
pub(crate) async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> Result<ResponseHead, ReadError> {
    loop {
        if let Some(parts) =
            parse_response(buf).map_err(|e| ReadError::Invalid(e.message().into()))?
        {
            let len = parts.len;
            return Ok(parts.freeze(buf.split_to(len).freeze()));
        }
        fill(io, buf).await?;
    }
}

/// Read a whole body framed by `framing` (starting with what is already in `buf`), handing
/// its payload to `on_data` piece by piece; more than `limit` bytes is `TooLarge`.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    framing: BodyFraming,
    limit: usize,
    mut on_data: impl FnMut(&[u8]),
) -> Result<(), ReadError> {
    match framing {
        BodyFraming::Empty => Ok(()),
        BodyFraming::Length(n) => {
            let mut left = usize::try_from(n).unwrap_or(usize::MAX);
            if left > limit {
                return Err(ReadError::TooLarge);
            }
            loop {
                let take = left.min(buf.len());
                on_data(&buf.split_to(take));
                left -= take;
                if left == 0 {
                    return Ok(());
                }
                fill(io, buf).await?;
            }
        }
        BodyFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut total = 0usize;
            loop {
                let p = decoder
                    .feed(buf, |d| {
                        total += d.len();
                        on_data(d);
                    })
                    .map_err(|e| ReadError::Invalid(e.to_string()))?;
                let _ = buf.split_to(p.consumed);
                // Checked before the end is accepted: a body that arrives in one read is bound too.
                if total > limit {
                    return Err(ReadError::TooLarge);
                }
                if p.done {
                    return Ok(());
                }
                fill(io, buf).await?;
            }
        }
        BodyFraming::UntilClose => {
            let mut total = 0usize;
            loop {
                total += buf.len();
                on_data(buf);
                buf.clear();
                if total > limit {
                    return Err(ReadError::TooLarge);
                }
                match fill(io, buf).await {
                    Ok(()) => {}
                    Err(ReadError::Closed) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the ones a
/// relay recomputes itself (`Content-Length`, `Date`) or sets itself (CORS).
pub(crate) fn is_hop_by_hop(name: &[u8]) -> bool {
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
        // A coding other than a final `chunked` reads to the close, whatever Content-Length
        // says (RFC 9112 §6.3).
        let h = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (BodyFraming::UntilClose, false));
    }

    #[test]
    fn heads_are_bounded_and_statuses_checked() {
        let mut big = String::from("HTTP/1.1 200 OK\r\n");
        while big.len() <= MAX_RESPONSE_HEAD {
            big.push_str("X-Filler: ");
            big.push_str(&"a".repeat(2000));
            big.push_str("\r\n");
        }
        big.push_str("Content-Length: 0\r\n\r\n");
        // Complete, but too large: refused just like an incomplete one.
        assert_eq!(
            parse_response(big.as_bytes()).unwrap_err(),
            HeadError::TooLarge
        );
        for status in ["000", "099", "600", "999"] {
            let raw = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            assert!(parse_response(raw.as_bytes()).is_err(), "{status}");
        }
    }

    async fn body(wire: &[u8], framing: BodyFraming, limit: usize) -> Result<Vec<u8>, ReadError> {
        // The first 3 bytes are "already read"; the rest comes from the socket.
        let mut buf = BytesMut::from(&wire[..3.min(wire.len())]);
        let mut io = &wire[3.min(wire.len())..];
        let mut out = Vec::new();
        read_body(&mut io, &mut buf, framing, limit, |d| {
            out.extend_from_slice(d)
        })
        .await?;
        Ok(out)
    }

    #[tokio::test]
    async fn head_then_bodies_by_framing() {
        let mut io = &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..];
        let mut buf = BytesMut::new();
        let head = read_head(&mut io, &mut buf).await.unwrap();
        assert_eq!(head.framing, BodyFraming::Length(5));
        assert!(matches!(
            read_head(&mut &b"HTTP/1.1 200"[..], &mut BytesMut::new()).await,
            Err(ReadError::Closed)
        ));
        assert!(matches!(
            read_head(&mut &b"garbage\r\n\r\n"[..], &mut BytesMut::new()).await,
            Err(ReadError::Invalid(_))
        ));

        assert_eq!(
            body(b"hello world", BodyFraming::Length(11), 11)
                .await
                .unwrap(),
            b"hello world"
        );
        assert!(matches!(
            body(b"hello", BodyFraming::Length(11), 64).await,
            Err(ReadError::Closed)
        ));
        assert!(matches!(
            body(b"hello", BodyFraming::Length(5), 4).await,
            Err(ReadError::TooLarge)
        ));
        let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        assert_eq!(
            body(chunked, BodyFraming::Chunked, 11).await.unwrap(),
            b"hello world"
        );
        assert!(matches!(
            body(chunked, BodyFraming::Chunked, 4).await,
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            body(&chunked[..12], BodyFraming::Chunked, 64).await,
            Err(ReadError::Closed)
        ));
        assert!(matches!(
            body(b"zz\r\n", BodyFraming::Chunked, 64).await,
            Err(ReadError::Invalid(_))
        ));
        assert_eq!(
            body(b"to the end", BodyFraming::UntilClose, 64)
                .await
                .unwrap(),
            b"to the end"
        );
        assert!(matches!(
            body(b"to the end", BodyFraming::UntilClose, 4).await,
            Err(ReadError::TooLarge)
        ));
        assert!(body(b"", BodyFraming::Empty, 0).await.unwrap().is_empty());
    }

    #[test]
    fn hop_by_hop() {
        assert!(is_hop_by_hop(b"Transfer-Encoding"));
        assert!(is_hop_by_hop(b"Connection"));
        assert!(!is_hop_by_hop(b"Content-Type"));
        assert!(!is_hop_by_hop(b"X-Request-Id"));
    }
}
