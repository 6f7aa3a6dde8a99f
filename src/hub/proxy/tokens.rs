//! Measuring a relayed generation without copying it: the scanner looks at the body bytes as
//! they pass (only a partial line at a read boundary is carried over), parses each complete
//! event with a real JSON parser, and records how many events carried generated output, when
//! the first one passed, and the completion tokens the server reports.
//!
//! Three body shapes, by the response's `Content-Type`:
//! * **SSE** (`text/event-stream`, OpenAI-style streams): each `data:` line is one JSON event.
//! * **NDJSON** (`application/x-ndjson`, Ollama's streams): each line is one JSON event.
//! * **a JSON document** (non-streaming answers): parsed once at the end, when it is small
//!   enough to keep ([`MAX_DOCUMENT`]); larger ones (embeddings) are not token-counted.
//!
//! What counts as generated output in an event, whatever the server's JSON spacing or string
//! escaping: a non-empty `choices[].delta.content`, `.delta.reasoning_content` / `.reasoning`
//! (reasoning models' thinking tokens), `.delta.tool_calls[].function.arguments`, a legacy
//! `choices[].text`, a `choices[].message.content`; Ollama's `message.content` / `response` /
//! `message.thinking`. Reported totals win over the count: `usage.completion_tokens` (OpenAI, in
//! a non-streaming answer or a stream's final usage chunk), `eval_count` (Ollama's last event),
//! `usage.output_tokens` (Anthropic's message, or its stream's `message_delta`); Anthropic's
//! `content_block_delta` events count as output.
//!
//! Parsing borrows from the bytes and allocates nothing: the event types below only note what
//! they saw (see [`Output`]).

use std::fmt;
use std::time::Instant;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Longest line (event) analysed; a longer one is skipped.
pub const MAX_LINE: usize = 64 * 1024;
/// Most tokens one answer counts for, whatever its participant reports: far above any model's
/// output, and low enough that the hub's running totals cannot wrap (a reported
/// `completion_tokens` of 2^64-1 made the Prometheus counter go backwards).
pub const MAX_ANSWER_TOKENS: u64 = 1 << 32;
/// Largest non-streaming JSON answer kept to be parsed at its end.
pub const MAX_DOCUMENT: usize = 64 * 1024;

/// What the body is, for the scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    Sse,
    Ndjson,
    Document,
}

impl BodyKind {
    /// From a response's `Content-Type`.
    pub fn of_content_type(value: &[u8]) -> BodyKind {
        let v = value.trim_ascii();
        let starts = |p: &[u8]| v.len() >= p.len() && v[..p.len()].eq_ignore_ascii_case(p);
        if starts(b"text/event-stream") {
            BodyKind::Sse
        } else if starts(b"application/x-ndjson") || starts(b"application/jsonl") {
            BodyKind::Ndjson
        } else {
            BodyKind::Document
        }
    }
}

/// Per-response measurements.
#[derive(Debug)]
pub struct TokenScanner {
    kind: BodyKind,
    carry: Vec<u8>,
    /// The line (or document) in `carry` went past its bound: skip it.
    overflow: bool,
    /// Events that carried generated output.
    pub content_chunks: u64,
    /// Completion tokens the server reported (`usage.completion_tokens`, `eval_count`).
    pub usage_tokens: Option<u64>,
    /// When the first output-bearing event passed.
    pub first_content: Option<Instant>,
    /// The stream said it is complete (`data: [DONE]`; Ollama's `"done": true`): a client that
    /// hangs up after this has its whole answer.
    pub finished: bool,
}

impl TokenScanner {
    pub fn new(kind: BodyKind) -> Self {
        TokenScanner {
            kind,
            carry: Vec::new(),
            overflow: false,
            content_chunks: 0,
            usage_tokens: None,
            first_content: None,
            finished: false,
        }
    }

    /// The tokens generated: the reported count, else the output events counted; at most
    /// [`MAX_ANSWER_TOKENS`] (a participant's report is not trusted to be sane).
    pub fn tokens(&self) -> u64 {
        self.usage_tokens
            .unwrap_or(self.content_chunks)
            .min(MAX_ANSWER_TOKENS)
    }

    /// Look at the next piece of the body.
    pub fn feed(&mut self, data: &[u8]) {
        match self.kind {
            BodyKind::Document => {
                if self.overflow || self.carry.len() + data.len() > MAX_DOCUMENT {
                    self.overflow = true;
                    self.carry = Vec::new();
                } else {
                    self.carry.extend_from_slice(data);
                }
            }
            BodyKind::Sse | BodyKind::Ndjson => self.feed_lines(data),
        }
    }

    /// The piece of the body that ends it. When it is the whole body (nothing was kept before
    /// it: a non-streaming answer that came in one read), a document is measured in place,
    /// without being copied to be kept for [`TokenScanner::finish`]; otherwise as [`feed`].
    ///
    /// [`feed`]: TokenScanner::feed
    pub fn feed_last(&mut self, piece: &[u8]) {
        if self.kind == BodyKind::Document && self.carry.is_empty() && !self.overflow {
            if piece.len() <= MAX_DOCUMENT {
                self.document(piece);
            }
            return;
        }
        self.feed(piece);
    }

    fn document(&mut self, doc: &[u8]) {
        if let Some(n) = reported_by_document(doc) {
            self.usage_tokens = Some(n);
        } else if let Ok(doc) = serde_json::from_slice::<Event>(doc) {
            self.note(&doc, false);
        }
    }

    /// The body ended: parse what was kept for the end (a JSON document, or a last line
    /// without its newline).
    pub fn finish(&mut self) {
        let rest = std::mem::take(&mut self.carry);
        if !self.overflow && !rest.is_empty() {
            match self.kind {
                BodyKind::Document => self.document(&rest),
                _ => self.line(&rest),
            }
        }
        self.overflow = false;
    }

    fn feed_lines(&mut self, mut data: &[u8]) {
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (line, rest) = data.split_at(nl);
            data = &rest[1..];
            if self.carry.is_empty() && !self.overflow {
                self.line(line);
            } else {
                self.push_carry(line);
                let joined = std::mem::take(&mut self.carry);
                if !self.overflow {
                    self.line(&joined);
                }
                self.carry = joined;
                self.carry.clear();
                self.overflow = false;
            }
        }
        self.push_carry(data);
    }

    fn push_carry(&mut self, part: &[u8]) {
        if self.overflow || self.carry.len() + part.len() > MAX_LINE {
            self.overflow = true;
            self.carry.clear();
        } else {
            self.carry.extend_from_slice(part);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let payload = match self.kind {
            BodyKind::Sse => match line.strip_prefix(b"data:") {
                Some(p) => p.trim_ascii(),
                None => return,
            },
            _ => line.trim_ascii(),
        };
        if payload == b"[DONE]" {
            self.finished = true;
            return;
        }
        if payload.is_empty() {
            return;
        }
        if let Ok(event) = serde_json::from_slice::<Event>(payload) {
            self.note(&event, true);
        }
    }

    fn note(&mut self, event: &Event, streamed: bool) {
        self.finished |= event.done == Some(true);
        if event.has_output() {
            self.content_chunks += 1;
            if streamed && self.first_content.is_none() {
                self.first_content = Some(Instant::now());
            }
        }
        if let Some(n) = event.reported_tokens() {
            self.usage_tokens = Some(n);
        }
    }
}

/// The count a whole (non-streaming) answer reports, found without parsing it into [`Event`]:
/// the regular shape — a top-level object whose one `usage` object has `completion_tokens`
/// (else `output_tokens`) as an integer, or, without those, one top-level `eval_count` — read
/// by walking the members (the document is validated all the same). Anything irregular (an
/// escaped key, a repeated one, another type) returns `None`, and the full parse decides.
/// Where both find a count they agree, and a reported count wins over what the answer's
/// content shows, so the content is not looked at (measured: the full parse was the largest
/// single cost of relaying a short answer).
fn reported_by_document(doc: &[u8]) -> Option<u64> {
    let integer = |v: &[u8]| -> Option<Option<u64>> {
        match v {
            b"null" => Some(None),
            _ => std::str::from_utf8(v).ok()?.parse().ok().map(Some),
        }
    };
    let [usage, eval_count] = two_members(doc, b"usage", b"eval_count")?;
    let reported = match usage {
        Some(u) if u.first() == Some(&b'{') => {
            let [completion, output] = two_members(u, b"completion_tokens", b"output_tokens")?;
            let completion = completion.map_or(Some(None), integer)?;
            let output = output.map_or(Some(None), integer)?;
            completion.or(output)
        }
        None | Some(b"null") => None,
        Some(_) => return None,
    };
    reported.or_else(|| eval_count.and_then(|v| integer(v).flatten()))
}

/// The values of keys `a` and `b` in the JSON object `obj` (validated whole); `None` when it is
/// not one, or is irregular for this reading: a key written with escapes, `a` or `b` repeated.
fn two_members<'a>(obj: &'a [u8], a: &[u8], b: &[u8]) -> Option<[Option<&'a [u8]>; 2]> {
    let (mut va, mut vb) = (None, None);
    let mut regular = true;
    crate::hub::proxy::rewrite::object_members(obj, |key, value| match key {
        Some(k) if k == a => regular &= va.replace(&obj[value]).is_none(),
        Some(k) if k == b => regular &= vb.replace(&obj[value]).is_none(),
        Some(_) => {}
        None => regular = false,
    })
    .ok()?;
    regular.then_some([va, vb])
}

/// One event (or a whole answer), as far as measuring goes.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Event {
    choices: AnyOutput<Choice>,
    usage: Option<Usage>,
    // Ollama's shapes: `/api/chat` (message), `/api/generate` (response), the last event's count.
    message: Option<Delta>,
    response: Output,
    eval_count: Option<u64>,
    done: Option<bool>,
    /// Anthropic's `content_block_delta` (`text`, `partial_json`, `thinking`).
    delta: Option<BlockDelta>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct BlockDelta {
    text: Output,
    partial_json: Output,
    thinking: Output,
}

impl Event {
    fn has_output(&self) -> bool {
        self.choices.0
            || self.message.as_ref().is_some_and(Delta::has_output)
            || self.response.0
            || self
                .delta
                .as_ref()
                .is_some_and(|d| d.text.0 || d.partial_json.0 || d.thinking.0)
    }

    fn reported_tokens(&self) -> Option<u64> {
        self.usage
            .as_ref()
            .and_then(|u| u.completion_tokens.or(u.output_tokens))
            .or(self.eval_count)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Usage {
    completion_tokens: Option<u64>,
    /// Anthropic's (a message, or a stream's `message_delta`).
    output_tokens: Option<u64>,
}

/// `choices[i]`: a streamed delta, a whole message, or legacy completion text.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice {
    delta: Option<Delta>,
    message: Option<Delta>,
    text: Output,
}

impl HasOutput for Choice {
    fn has_output(&self) -> bool {
        self.delta.as_ref().is_some_and(Delta::has_output)
            || self.message.as_ref().is_some_and(Delta::has_output)
            || self.text.0
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta {
    content: Output,
    reasoning_content: Output,
    reasoning: Output,
    /// Ollama's thinking models.
    thinking: Output,
    tool_calls: AnyOutput<ToolCall>,
}

impl Delta {
    fn has_output(&self) -> bool {
        self.content.0
            || self.reasoning_content.0
            || self.reasoning.0
            || self.thinking.0
            || self.tool_calls.0
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall {
    function: Option<Function>,
}

impl HasOutput for ToolCall {
    fn has_output(&self) -> bool {
        self.function
            .as_ref()
            .is_some_and(|f| f.arguments.0 || f.name.0)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Function {
    name: Output,
    arguments: Output,
}

trait HasOutput {
    fn has_output(&self) -> bool;
}

/// Whether a value is generated output: a non-empty string (escaped or not), or content parts
/// (`[{"type":"text","text":"…"}]`) with a non-empty text; `null`, numbers, objects are not.
/// Nothing is kept but the answer.
#[derive(Default)]
struct Output(bool);

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Output;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Output, E> {
                Ok(Output(!s.is_empty()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Output, E> {
                Ok(Output(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Output, E> {
                Ok(Output(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Output, E> {
                Ok(Output(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Output, E> {
                Ok(Output(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Output, E> {
                Ok(Output(false))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Output, A::Error> {
                // Content parts: `[{"type": "text", "text": "…"}, …]`.
                let mut any = false;
                while let Some(part) = seq.next_element::<Part>()? {
                    any |= part.text.0;
                }
                Ok(Output(any))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Output, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Output(false))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Part {
    text: Output,
}

/// An array whose elements are looked at one by one (none kept): whether any had output.
struct AnyOutput<T>(bool, std::marker::PhantomData<T>);

impl<T> Default for AnyOutput<T> {
    fn default() -> Self {
        AnyOutput(false, std::marker::PhantomData)
    }
}

impl<'de, T: Deserialize<'de> + HasOutput> Deserialize<'de> for AnyOutput<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + HasOutput> Visitor<'de> for V<T> {
            type Value = AnyOutput<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AnyOutput<T>, A::Error> {
                let mut any = false;
                while let Some(item) = seq.next_element::<T>()? {
                    any |= item.has_output();
                }
                Ok(AnyOutput(any, std::marker::PhantomData))
            }
            fn visit_unit<E: de::Error>(self) -> Result<AnyOutput<T>, E> {
                Ok(AnyOutput::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
data: [DONE]\n\n";

    fn scan(kind: BodyKind, body: &[u8], split: usize) -> TokenScanner {
        let mut s = TokenScanner::new(kind);
        for piece in body.chunks(split.max(1)) {
            s.feed(piece);
        }
        s.finish();
        s
    }

    /// The full parse's answer for a whole document.
    fn parsed(doc: &str) -> Option<u64> {
        serde_json::from_slice::<Event>(doc.as_bytes())
            .ok()?
            .reported_tokens()
    }

    #[test]
    fn a_documents_count_is_found_without_the_full_parse_when_regular() {
        let regular = [
            (
                r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":3,"completion_tokens":7,"total_tokens":10}}"#,
                7,
            ),
            (
                r#" { "usage" : { "output_tokens" : 12 } , "content":[{"type":"text","text":"x"}] } "#,
                12,
            ),
            (
                r#"{"usage":{"completion_tokens":null,"output_tokens":4}}"#,
                4,
            ),
            (
                r#"{"message":{"content":"x"},"done":true,"eval_count":9}"#,
                9,
            ),
            (r#"{"usage":null,"eval_count":5}"#, 5),
            (r#"{"usage":{"completion_tokens":3},"eval_count":5}"#, 3),
        ];
        for (doc, n) in regular {
            assert_eq!(reported_by_document(doc.as_bytes()), Some(n), "{doc}");
            assert_eq!(parsed(doc), Some(n), "{doc}");
        }
        // Irregular or countless: left to the full parse (which may or may not find a count).
        for doc in [
            r#"{"choices":[{"message":{"content":"hi"}}]}"#,
            r#"{"usage":{"completion_tokens":1},"usage":{"completion_tokens":2}}"#,
            r#"{"us\u0061ge":{"completion_tokens":1}}"#,
            r#"{"usage":{"completion_tokens":1.5}}"#,
            r#"{"usage":{"completion_tokens":-1}}"#,
            r#"{"usage":"many"}"#,
            r#"{"usage":{"completion_tokens":1}"#,
            r#"{"usage":{"completion_tokens":1}} x"#,
            r#"[{"usage":{"completion_tokens":1}}]"#,
            r#"{"eval_count":"9"}"#,
        ] {
            assert_eq!(reported_by_document(doc.as_bytes()), None, "{doc}");
        }
        // A report past any sane count is capped.
        let mut huge = TokenScanner::new(BodyKind::Document);
        huge.feed_last(br#"{"usage":{"completion_tokens":18446744073709551615}}"#);
        huge.finish();
        assert_eq!(huge.tokens(), MAX_ANSWER_TOKENS);
        // Through the scanner, either way, in pieces or whole.
        for (doc, n) in [
            (regular[0].0, 7),
            (r#"{"choices":[{"message":{"content":"hi"}}]}"#, 1),
        ] {
            assert_eq!(scan(BodyKind::Document, doc.as_bytes(), 5).tokens(), n);
            let mut whole = TokenScanner::new(BodyKind::Document);
            whole.feed_last(doc.as_bytes());
            whole.finish();
            assert_eq!(whole.tokens(), n);
        }
    }

    #[test]
    fn counts_content_events_in_any_split() {
        for split in 1..STREAM.len() {
            let s = scan(BodyKind::Sse, STREAM.as_bytes(), split);
            assert_eq!(s.content_chunks, 2, "split {split}");
            assert!(s.first_content.is_some() && s.finished);
            assert_eq!(s.tokens(), 2);
        }
    }

    #[test]
    fn spacing_and_escapes_do_not_matter() {
        // llama.cpp's server (Python's json.dumps): spaces after colons and commas.
        let spaced = "data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hey\"}, \"finish_reason\": null}]}\r\n\r\n\
data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \" \\u00e9\\\"\"}}]}\r\n\r\n\
data: {\"id\": \"c\", \"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}]}\r\n\r\n\
data: [DONE]\r\n\r\n";
        for split in [1, 7, 64, 4096] {
            let s = scan(BodyKind::Sse, spaced.as_bytes(), split);
            assert_eq!(s.content_chunks, 2, "split {split}");
        }
        // An escaped key is the same key.
        let s = scan(
            BodyKind::Sse,
            b"data: {\"choices\":[{\"delta\":{\"cont\\u0065nt\":\"x\"}}]}\n\n",
            3,
        );
        assert_eq!(s.content_chunks, 1);
    }

    #[test]
    fn reasoning_tool_calls_and_legacy_text_count() {
        for event in [
            r#"{"choices":[{"delta":{"reasoning_content":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"reasoning":"hmm"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]}"#,
            r#"{"choices":[{"text":" world","index":0}]}"#,
            r#"{"choices":[{"delta":{"content":[{"type":"text","text":"part"}]}}]}"#,
        ] {
            let s = scan(BodyKind::Sse, format!("data: {event}\n\n").as_bytes(), 5);
            assert_eq!(s.content_chunks, 1, "{event}");
        }
        for event in [
            r#"{"choices":[{"delta":{"content":null}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":""}}]}}]}"#,
            r#"{"choices":[]}"#,
            r#"{"object":"chat.completion.chunk"}"#,
            r#"not json at all"#,
        ] {
            let s = scan(BodyKind::Sse, format!("data: {event}\n\n").as_bytes(), 5);
            assert_eq!(s.content_chunks, 0, "{event}");
        }
    }

    #[test]
    fn reported_usage_wins() {
        let mut body = STREAM.as_bytes().to_vec();
        body.extend_from_slice(
            b"data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 17}}\n\n",
        );
        assert_eq!(scan(BodyKind::Sse, &body, 9).tokens(), 17);
        let doc = br#"{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3, "completion_tokens": 42, "total_tokens": 45}}"#;
        for split in 1..doc.len() {
            let s = scan(BodyKind::Document, doc, split);
            assert_eq!(s.usage_tokens, Some(42), "split {split}");
            assert!(
                s.first_content.is_none(),
                "a document has no first token of its own"
            );
        }
    }

    #[test]
    fn ollama_streams() {
        let chat = b"{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n\
{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\",\"content\":\"!\"},\"done\":false}\n\
{\"model\":\"llama3\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"eval_count\":12}";
        let s = scan(BodyKind::Ndjson, chat, 11);
        assert_eq!((s.content_chunks, s.tokens(), s.finished), (2, 12, true));
        let generate =
            b"{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":false}\n";
        assert_eq!(scan(BodyKind::Ndjson, generate, 4).tokens(), 2);
    }

    #[test]
    fn overlong_lines_and_documents_are_skipped() {
        let long = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{}\"}}}}]}}\n\ndata: {{\"choices\":[{{\"delta\":{{\"content\":\"x\"}}}}]}}\n\n",
            "a".repeat(MAX_LINE)
        );
        assert_eq!(scan(BodyKind::Sse, long.as_bytes(), 1000).content_chunks, 1);
        let big = format!(
            "{{\"pad\":\"{}\",\"usage\":{{\"completion_tokens\":5}}}}",
            "a".repeat(MAX_DOCUMENT)
        );
        assert_eq!(
            scan(BodyKind::Document, big.as_bytes(), 4096).usage_tokens,
            None
        );
    }

    #[test]
    fn kinds_from_content_type() {
        assert_eq!(
            BodyKind::of_content_type(b"text/event-stream; charset=utf-8"),
            BodyKind::Sse
        );
        assert_eq!(
            BodyKind::of_content_type(b"application/x-ndjson"),
            BodyKind::Ndjson
        );
        assert_eq!(
            BodyKind::of_content_type(b"application/json"),
            BodyKind::Document
        );
    }
}
