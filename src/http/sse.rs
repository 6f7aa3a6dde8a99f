//! Server-sent events on the wire: `id:`/`event:`/`data:` lines encoded once into `Bytes`, and
//! the keep-alive comment.

use bytes::{BufMut, Bytes, BytesMut};

/// A comment line that keeps idle proxies and browsers from closing the stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encode one event. `data` may span lines; each becomes its own `data:` line.
pub fn encode_event(id: Option<u64>, event: &str, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + event.len() + 40);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(itoa::Buffer::new().format(id).as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_u8(b'\n');
    for line in data.split(|&b| b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_event() {
        assert_eq!(
            &encode_event(Some(7), "participant:left", br#"{"participantId":"a"}"#)[..],
            b"id: 7\nevent: participant:left\ndata: {\"participantId\":\"a\"}\n\n"
        );
        assert_eq!(
            &encode_event(None, "x", b"a\nb")[..],
            b"event: x\ndata: a\ndata: b\n\n"
        );
    }
}
