//! Server-sent events on the wire: `id:`/`event:`/`data:` lines encoded once into `Bytes`, and
//! the keep-alive comment.

use bytes::Bytes;

/// A comment line that keeps idle proxies and browsers from closing the stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Encode one event. `data` may span lines; each becomes its own `data:` line.
pub fn encode_event(id: Option<u64>, event: &str, data: &[u8]) -> Bytes {
    framed(|out| {
        frame_head(out, id, event);
        for line in data.split(|&b| b == b'\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.push(b'\n');
        }
        out.push(b'\n');
    })
}

/// Encode one event whose data is `value` as compact JSON. Compact JSON holds no line break
/// (strings escape theirs), so it is a single `data:` line. A value that fails to serialise
/// (none of the hub's plain event structs can) leaves the data empty.
pub fn encode_json<T: serde::Serialize + ?Sized>(id: Option<u64>, event: &str, value: &T) -> Bytes {
    framed(|out| {
        frame_head(out, id, event);
        out.extend_from_slice(b"data: ");
        let data_at = out.len();
        if serde_json::to_writer(&mut *out, value).is_err() {
            out.truncate(data_at);
        }
        out.extend_from_slice(b"\n\n");
    })
}

/// Most bytes the scratch buffer keeps between events (a larger event's buffer is let go).
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// Where a frame is written before it is copied out at its exact size. A `Vec`, not a
    /// `BytesMut`: serde writes a value in many small pieces, and `Vec`'s `io::Write` is a plain
    /// append (`BytesMut`'s writer took each through `BufMut`: about a third of an event's cost
    /// in perf). Copied, not handed over: a `Bytes` made from a `Vec` with room to spare
    /// allocates a shared header besides, and copying a few hundred bytes costs less than that
    /// allocation and its free.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The frame `write` makes, in a `Bytes` of its own size (one allocation).
fn framed(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| {
        let Ok(mut out) = scratch.try_borrow_mut() else {
            // Only if `write` itself encoded an event: it gets a buffer of its own.
            let mut out = Vec::new();
            write(&mut out);
            return Bytes::from(out);
        };
        out.clear();
        write(&mut out);
        let frame = Bytes::copy_from_slice(&out);
        if out.capacity() > SCRATCH_KEEP {
            *out = Vec::new();
        }
        frame
    })
}

/// Write an event's `id:` (when it has one) and `event:` lines.
fn frame_head(out: &mut Vec<u8>, id: Option<u64>, event: &str) {
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(itoa::Buffer::new().format(id).as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.push(b'\n');
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
        // A frame larger than the scratch keeps, then a small one: each whole, nothing carried.
        let big = vec![b'x'; 3 * SCRATCH_KEEP];
        let frame = encode_event(Some(1), "big", &big);
        assert_eq!(
            frame.len(),
            b"id: 1\nevent: big\ndata: \n\n".len() + big.len()
        );
        assert_eq!(&encode_event(None, "y", b"z")[..], b"event: y\ndata: z\n\n");
        // JSON straight into the frame: the same bytes as encoding it first.
        let v = serde_json::json!({"participantId": "a\nb", "n": 1});
        assert_eq!(
            encode_json(Some(7), "x", &v),
            encode_event(Some(7), "x", &serde_json::to_vec(&v).unwrap())
        );
    }
}
