//! Responses: status, headers and a body that is either whole bytes or a stream of chunks, and
//! the encoder that turns a response head into bytes. The connection writes the head and a whole
//! body together with one vectored write.

use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};

use super::date;

/// A header: name and value as bytes (static names cost nothing; relayed ones are slices of the
/// upstream head).
pub(crate) type Header = (Bytes, Bytes);

/// A source of body chunks for a streamed response (SSE, proxied bodies). Polled by the
/// connection, which also watches the client socket while streaming.
pub(crate) trait BodyStream: Send + 'static {
    /// The next piece of the body; `None` ends it normally. An error ends it abnormally: the
    /// connection is closed without the terminating chunk, so the client knows the body is
    /// truncated.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>>;

    /// Ready when the stream must be abandoned at once, even in the middle of a write that the
    /// client is not reading (an evicted SSE subscriber). Defaults to never.
    fn poll_cancelled(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

/// Any byte stream a connection can be handed over as.
pub(crate) trait AsyncStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> AsyncStream for T {}

/// A connection handed over by an `Upgrade` response, after its `101` went out.
pub(crate) struct Upgraded {
    pub(crate) io: Box<dyn AsyncStream>,
    /// Bytes the client sent after its request, already read from the socket.
    pub(crate) read_ahead: Bytes,
    /// Keeps the connection counted against the server's limits (`--max-connections`, per
    /// address) for as long as the socket lives, wherever it goes after the upgrade (held for
    /// its `Drop`, never read).
    #[expect(dead_code, reason = "held for its Drop")]
    pub(crate) slot: Option<super::limits::ConnSlot>,
}

/// Takes over an upgraded connection.
pub(crate) type OnUpgrade = Box<dyn FnOnce(Upgraded) + Send>;

/// The body of a response.
pub(crate) enum Body {
    Empty,
    /// Sent with `Content-Length`.
    Full(Bytes),
    /// Sent with `Transfer-Encoding: chunked` (one chunk per item), or delimited by closing the
    /// connection for an HTTP/1.0 client.
    Stream(Box<dyn BodyStream>),
    /// Bytes that already carry their framing, passed through untouched: exactly `length` bytes
    /// (`Content-Length`), or (`None`) a complete chunked encoding including its last chunk.
    Raw {
        length: Option<u64>,
        stream: Box<dyn BodyStream>,
    },
    /// Switch protocols: the status (101) and headers go out, then the connection is handed to
    /// the callback and no longer served as HTTP.
    Upgrade(OnUpgrade),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Empty"),
            Body::Full(b) => write!(f, "Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Stream"),
            Body::Raw { length, .. } => write!(f, "Raw({length:?})"),
            Body::Upgrade(_) => f.write_str("Upgrade"),
        }
    }
}

/// A response on its way to the client.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<Header>,
    pub(crate) body: Body,
    /// Close the connection after this response, whatever the client asked for.
    pub(crate) close: bool,
}

impl Response {
    pub(crate) fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
            close: false,
        }
    }

    /// A JSON response from already-encoded bytes.
    pub(crate) fn json(status: u16, body: impl Into<Bytes>) -> Self {
        Response::new(status)
            .header("Content-Type", Bytes::from_static(b"application/json"))
            .body(Body::Full(body.into()))
    }

    /// `{"error": message}` with this status.
    pub(crate) fn json_error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
        Response::json(status, body)
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<Bytes>) -> Self {
        self.headers
            .push((Bytes::from_static(name.as_bytes()), value.into()));
        self
    }

    pub(crate) fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

/// The reason phrase for the status codes the hub sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        414 => "URI Too Long",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "Unknown",
    }
}

/// How the body will be framed on the wire, decided by the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WireFraming {
    Length(u64),
    Chunked,
    /// HTTP/1.0 client and a streamed body: the end is the close.
    Close,
}

/// Append the response head to `out`: status line, the response's headers, `extra` headers
/// (server-wide defaults such as CORS), `Date`, framing and `Connection`.
pub(crate) fn encode_head(
    out: &mut BytesMut,
    status: u16,
    headers: &[Header],
    extra: &[Header],
    framing: WireFraming,
    keep_alive: bool,
) {
    out.reserve(256);
    out.put_slice(b"HTTP/1.1 ");
    let mut code = itoa::Buffer::new();
    out.put_slice(code.format(status).as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason(status).as_bytes());
    out.put_slice(b"\r\n");
    for (name, value) in headers.iter().chain(extra.iter()) {
        out.put_slice(name);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"Date: ");
    date::with_http_date(|d| out.put_slice(d));
    out.put_slice(b"\r\n");
    match framing {
        // 1xx, 204 and 304 carry no body and no Content-Length.
        WireFraming::Length(_) if status < 200 || status == 204 || status == 304 => {}
        WireFraming::Length(n) => {
            out.put_slice(b"Content-Length: ");
            let mut len = itoa::Buffer::new();
            out.put_slice(len.format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        WireFraming::Chunked => out.put_slice(b"Transfer-Encoding: chunked\r\n"),
        WireFraming::Close => {}
    }
    if status >= 200 {
        out.put_slice(if keep_alive {
            b"Connection: keep-alive\r\n\r\n"
        } else {
            b"Connection: close\r\n\r\n"
        });
    } else {
        out.put_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_encoding() {
        let mut out = BytesMut::new();
        encode_head(
            &mut out,
            201,
            &[(
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"application/json"),
            )],
            &[(
                Bytes::from_static(b"Access-Control-Allow-Origin"),
                Bytes::from_static(b"*"),
            )],
            WireFraming::Length(12),
            true,
        );
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"));
        assert!(s.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(s.contains("\r\nDate: "));
        assert!(s.ends_with("Content-Length: 12\r\nConnection: keep-alive\r\n\r\n"));

        let mut out = BytesMut::new();
        encode_head(&mut out, 204, &[], &[], WireFraming::Length(0), false);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(!s.contains("Content-Length"));
        assert!(s.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn json_error_escapes() {
        let r = Response::json_error(400, "bad \"quote\"");
        match r.body {
            Body::Full(b) => assert_eq!(&b[..], br#"{"error":"bad \"quote\""}"#),
            _ => panic!("expected a full body"),
        }
    }
}
