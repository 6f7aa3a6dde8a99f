//! Body framing: how the end of a message body is found, and the chunked transfer-coding as an
//! explicit byte-at-a-time state machine (after pingora's body reader).
//!
//! The decoder never copies: [`ChunkedDecoder::feed`] walks a slice, reports how many bytes it
//! consumed and hands each run of payload to a callback as a sub-slice of the input. The server
//! uses it to collect request bodies; the proxy uses the same walk to find the end of an upstream
//! response while forwarding the raw bytes untouched.

/// The longest chunk-size line accepted (size, extensions, CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// The most trailer bytes accepted after the last chunk.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// A chunked body that does not follow RFC 9112 §7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// A byte that has no place where it stands.
    Invalid(&'static str),
    /// A chunk-size line or the trailers over their bound.
    TooLong,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChunkError::Invalid(m) => write!(f, "invalid chunked encoding: {m}"),
            ChunkError::TooLong => f.write_str("chunk line or trailers too long"),
        }
    }
}

impl std::error::Error for ChunkError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Reading hex digits of the chunk size (`digits` so far).
    Size { digits: u8 },
    /// Whitespace after the size, before `;` or CR.
    SizeWs,
    /// Inside a chunk extension, until CR.
    Ext,
    /// Expecting LF after the size line.
    SizeLf,
    /// Payload bytes remain in the current chunk.
    Data,
    /// Expecting CR after the payload.
    DataCr,
    /// Expecting LF after the payload.
    DataLf,
    /// At the start of a trailer line (or the final CRLF).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// Expecting LF ending a trailer line.
    TrailerLf,
    /// Expecting the final LF.
    EndLf,
    /// The terminating chunk and trailers have been consumed.
    Done,
}

/// Incremental decoder for the chunked transfer-coding.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the current chunk while reading it; bytes left while in `Data`.
    remaining: u64,
    line_len: usize,
    trailer_len: usize,
}

/// What one call to [`ChunkedDecoder::feed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Input bytes consumed (everything up to the end of the body if `done`, else all input).
    pub consumed: usize,
    /// The terminating chunk and trailers were seen.
    pub done: bool,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size { digits: 0 },
            remaining: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// True once the whole body (terminating chunk and trailers) has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Walk `input`, calling `on_data` with each run of payload bytes. Stops at the end of the
    /// body (bytes after it belong to the next message and are not consumed).
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        mut on_data: impl FnMut(&'a [u8]),
    ) -> Result<Progress, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let take =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                on_data(&input[i..i + take]);
                i += take;
                self.remaining -= take as u64;
                if self.remaining == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            if self.state == State::Done {
                break;
            }
            let b = input[i];
            i += 1;
            self.step(b)?;
        }
        Ok(Progress {
            consumed: i,
            done: self.state == State::Done,
        })
    }

    fn line_byte(&mut self) -> Result<(), ChunkError> {
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), ChunkError> {
        self.trailer_len += 1;
        if self.trailer_len > MAX_TRAILER_BYTES {
            return Err(ChunkError::TooLong);
        }
        Ok(())
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        self.state = match self.state {
            State::Size { digits } => {
                self.line_byte()?;
                match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // 15 hex digits fit in u64 with room; more is an absurd chunk.
                        if digits >= 15 {
                            return Err(ChunkError::Invalid("chunk size too large"));
                        }
                        let v = (b as char).to_digit(16).unwrap_or(0) as u64;
                        self.remaining = self.remaining * 16 + v;
                        State::Size { digits: digits + 1 }
                    }
                    _ if digits == 0 => return Err(ChunkError::Invalid("expected chunk size")),
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext,
                    b'\r' => State::SizeLf,
                    _ => return Err(ChunkError::Invalid("bad byte in chunk size")),
                }
            }
            State::SizeWs => {
                self.line_byte()?;
                match b {
                    b' ' | b'\t' => State::SizeWs,
                    b';' => State::Ext,
                    b'\r' => State::SizeLf,
                    _ => return Err(ChunkError::Invalid("bad byte after chunk size")),
                }
            }
            State::Ext => {
                self.line_byte()?;
                match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Err(ChunkError::Invalid("bare LF in chunk extension")),
                    _ => State::Ext,
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkError::Invalid("expected LF after chunk size"));
                }
                self.line_len = 0;
                if self.remaining == 0 {
                    State::TrailerStart
                } else {
                    State::Data
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkError::Invalid("expected CR after chunk data"));
                }
                State::DataLf
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkError::Invalid("expected LF after chunk data"));
                }
                State::Size { digits: 0 }
            }
            State::TrailerStart => match b {
                b'\r' => State::EndLf,
                b'\n' => return Err(ChunkError::Invalid("bare LF in trailers")),
                _ => {
                    self.trailer_byte()?;
                    State::Trailer
                }
            },
            State::Trailer => {
                self.trailer_byte()?;
                match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Err(ChunkError::Invalid("bare LF in trailers")),
                    _ => State::Trailer,
                }
            }
            State::TrailerLf => {
                self.trailer_byte()?;
                if b != b'\n' {
                    return Err(ChunkError::Invalid("expected LF after trailer"));
                }
                State::TrailerStart
            }
            State::EndLf => {
                if b != b'\n' {
                    return Err(ChunkError::Invalid("expected final LF"));
                }
                State::Done
            }
            // `feed` handles these two without calling `step`.
            State::Data | State::Done => self.state,
        };
        Ok(())
    }
}

/// The chunk-size line for a chunk of `len` bytes: hex digits and CRLF, in a fixed buffer.
#[derive(Clone, Copy)]
pub struct ChunkHeader {
    buf: [u8; 18],
    start: u8,
}

impl ChunkHeader {
    pub fn new(len: usize) -> Self {
        let mut buf = [0u8; 18];
        buf[16] = b'\r';
        buf[17] = b'\n';
        let mut n = len;
        let mut i = 16;
        loop {
            i -= 1;
            buf[i] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        ChunkHeader {
            buf,
            start: i as u8,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start as usize..]
    }
}

/// The terminating chunk of a chunked body with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// What follows the data of every chunk.
pub const CRLF: &[u8] = b"\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, Progress), ChunkError> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let p = d.feed(input, |s| out.extend_from_slice(s))?;
        Ok((out, p))
    }

    #[test]
    fn decodes_whole_body() {
        let (out, p) = decode_all(b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(out, b"hello world");
        assert!(p.done);
        assert_eq!(p.consumed, 32); // "NEXT" belongs to the next message
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let input = b"A\r\n0123456789\r\n1 \r\nx\r\n0\r\nX-T: 1\r\n\r\n";
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        for b in input.iter() {
            let p = d
                .feed(std::slice::from_ref(b), |s| out.extend_from_slice(s))
                .unwrap();
            assert_eq!(p.consumed, 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"0123456789x");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            &b"zz\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloX\r\n",
            b"\r\n",
            b"1234567890abcdef0\r\n",
            b"0\r\nX: y\nZ",
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!("1;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_all(long.as_bytes()).unwrap_err(),
            ChunkError::TooLong
        );
    }

    #[test]
    fn chunk_header_hex() {
        assert_eq!(ChunkHeader::new(0).as_bytes(), b"0\r\n");
        assert_eq!(ChunkHeader::new(255).as_bytes(), b"ff\r\n");
        assert_eq!(ChunkHeader::new(0x1234abcd).as_bytes(), b"1234abcd\r\n");
    }
}
