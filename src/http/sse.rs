//! Server-sent events on the wire: `id:`/`event:`/`data:` lines encoded once into `Bytes`, and
//! the keep-alive comment.

use bytes::{BufMut, Bytes, BytesMut};

/// A comment line that keeps idle proxies and browsers from closing the stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encode one event. `data` may span lines; each becomes its own `data:` line.
pub fn encode_event(id: Option<u64>, event: &str, data: &[u8]) -> Bytes {
    let mut out = frame_head(id, event, data.len() + 40);
    for line in data.split(|&b| b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// An event's `id:` (when it has one) and `event:` lines, in a buffer with room for `more`
/// bytes after them.
fn frame_head(id: Option<u64>, event: &str, more: usize) -> BytesMut {
    let mut out = BytesMut::with_capacity(event.len() + more);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(itoa::Buffer::new().format(id).as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_u8(b'\n');
    out
}

/// Encode one event whose data is `value` as compact JSON, serialised straight into the frame:
/// one allocation, no intermediate copy. Compact JSON holds no line break (strings escape
/// theirs), so it is a single `data:` line. A value that fails to serialise (none of the
/// hub's plain event structs can) leaves the data empty.
pub fn encode_json<T: serde::Serialize + ?Sized>(id: Option<u64>, event: &str, value: &T) -> Bytes {
    let mut out = frame_head(id, event, 192);
    out.put_slice(b"data: ");
    let data_at = out.len();
    let mut w = out.writer();
    if serde_json::to_writer(&mut w, value).is_err() {
        w.get_mut().truncate(data_at);
    }
    let mut out = w.into_inner();
    out.put_slice(b"\n\n");
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
        // JSON straight into the frame: the same bytes as encoding it first.
        let v = serde_json::json!({"participantId": "a\nb", "n": 1});
        assert_eq!(
            encode_json(Some(7), "x", &v),
            encode_event(Some(7), "x", &serde_json::to_vec(&v).unwrap())
        );
    }
}
