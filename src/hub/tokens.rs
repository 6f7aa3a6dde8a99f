//! Measuring a relayed generation without copying it: the scanner reads the body bytes in place
//! as they pass (only a partial line at a read boundary is carried over) and counts
//! content-bearing `data:` events of an SSE stream, notes when the first one passed, and picks
//! up `usage.completion_tokens` where the upstream reports it (non-streaming JSON, or a stream's
//! final usage chunk).

use std::time::Instant;

use memchr::memmem;

/// Longest SSE line analysed; the rest of a longer line is skipped (it still counts once).
pub const MAX_LINE: usize = 64 * 1024;
const USAGE_KEY: &[u8] = b"\"completion_tokens\":";

/// Per-response measurements.
#[derive(Debug)]
pub struct TokenScanner {
    sse: bool,
    carry: Vec<u8>,
    /// The line in `carry` overflowed `MAX_LINE`.
    overflow: bool,
    /// `data:` events that carried generated text.
    pub content_chunks: u64,
    /// `usage.completion_tokens`, if the upstream sent it.
    pub usage_tokens: Option<u64>,
    /// When the first content-bearing event passed.
    pub first_content: Option<Instant>,
}

impl TokenScanner {
    /// `sse`: the body is an event stream (else a JSON document).
    pub fn new(sse: bool) -> Self {
        TokenScanner {
            sse,
            carry: Vec::new(),
            overflow: false,
            content_chunks: 0,
            usage_tokens: None,
            first_content: None,
        }
    }

    /// The tokens generated: the reported usage, else the content events counted.
    pub fn tokens(&self) -> u64 {
        self.usage_tokens.unwrap_or(self.content_chunks)
    }

    /// Look at the next piece of the body.
    pub fn feed(&mut self, data: &[u8]) {
        if self.sse {
            self.feed_sse(data);
        } else {
            self.feed_json(data);
        }
    }

    fn feed_json(&mut self, data: &[u8]) {
        // Keep just enough of the previous piece to find a key split across two reads.
        // A number cut by a read boundary is found again, whole, in the next window; the last
        // find wins.
        let keep = USAGE_KEY.len() + 24;
        let mut window = std::mem::take(&mut self.carry);
        if data.len() <= keep {
            window.extend_from_slice(data);
            self.find_usage_in(&window);
        } else {
            window.extend_from_slice(&data[..keep]);
            self.find_usage_in(&window);
            self.find_usage_in(data);
            window.clear();
            window.extend_from_slice(&data[data.len() - keep..]);
        }
        let cut = window.len().saturating_sub(keep);
        window.drain(..cut);
        self.carry = window;
    }

    fn find_usage_in(&mut self, hay: &[u8]) {
        if let Some(n) = usage_in(hay) {
            self.usage_tokens = Some(n);
        }
    }

    fn feed_sse(&mut self, mut data: &[u8]) {
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (line, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.carry.is_empty() && !self.overflow {
                self.line(line);
            } else {
                self.push_carry(line);
                let joined = std::mem::take(&mut self.carry);
                self.line(&joined);
                self.carry = joined;
                self.carry.clear();
                self.overflow = false;
            }
        }
        self.push_carry(data);
    }

    fn push_carry(&mut self, part: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.carry.len());
        if part.len() > room {
            self.overflow = true;
        }
        self.carry.extend_from_slice(&part[..part.len().min(room)]);
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(payload) = line.strip_prefix(b"data:") else {
            return;
        };
        let payload = payload.trim_ascii_start();
        if payload == b"[DONE]" {
            return;
        }
        if has_text(payload, b"\"content\":\"") || has_text(payload, b"\"text\":\"") {
            self.content_chunks += 1;
            if self.first_content.is_none() {
                self.first_content = Some(Instant::now());
            }
        }
        if let Some(n) = usage_in(payload) {
            self.usage_tokens = Some(n);
        }
    }
}

/// `key` followed by a non-empty string value somewhere in `hay`.
fn has_text(hay: &[u8], key: &[u8]) -> bool {
    memmem::find_iter(hay, key).any(|i| hay.get(i + key.len()).is_some_and(|&c| c != b'"'))
}

/// The number after `"completion_tokens":`, if any.
fn usage_in(hay: &[u8]) -> Option<u64> {
    let i = memmem::rfind(hay, USAGE_KEY)? + USAGE_KEY.len();
    let digits: Vec<u8> = hay[i..]
        .iter()
        .skip_while(|c| c.is_ascii_whitespace())
        .take_while(|c| c.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";

    #[test]
    fn counts_content_events_in_any_split() {
        for split in 1..STREAM.len() {
            let mut s = TokenScanner::new(true);
            for piece in STREAM.as_bytes().chunks(split) {
                s.feed(piece);
            }
            assert_eq!(s.content_chunks, 2, "split {split}");
            assert!(s.first_content.is_some());
            assert_eq!(s.tokens(), 2);
        }
    }

    #[test]
    fn usage_wins() {
        let mut s = TokenScanner::new(true);
        s.feed(STREAM.as_bytes());
        s.feed(
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\": 17}}\n\n",
        );
        assert_eq!(s.tokens(), 17);
        let body = br#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":42,"total_tokens":45}}"#;
        for split in 1..body.len() {
            let mut s = TokenScanner::new(false);
            for piece in body.chunks(split) {
                s.feed(piece);
            }
            assert_eq!(s.usage_tokens, Some(42), "split {split}");
        }
    }

    #[test]
    fn completions_text_counts() {
        let mut s = TokenScanner::new(true);
        s.feed(b"data: {\"choices\":[{\"text\":\" world\"}]}\r\n\r\n");
        assert_eq!(s.content_chunks, 1);
    }
}
