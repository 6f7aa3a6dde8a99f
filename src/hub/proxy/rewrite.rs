//! The request-body rewrite, by splicing bytes.
//!
//! [`scan`] walks a JSON body once — validating it — and records where the top-level `model`
//! value lies, whether `stream` is `true`, and which generation-config keys are present.
//! [`splice`] then produces the upstream body as a list of `Bytes`: the bytes before the model
//! value, the participant's model name, the bytes after it, and the participant's config
//! defaults for keys the request did not set, inserted before the closing brace. Every other
//! byte of the request goes upstream unchanged, and nothing is re-serialised or copied.

use std::ops::Range;

use bytes::Bytes;

use crate::types::GenerationConfig;

/// Deepest nesting accepted in a request body.
pub const MAX_DEPTH: usize = 128;

/// The config keys that can be injected as defaults, in the order they are written.
const CONFIG_KEYS: [&str; 7] = [
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
];

/// What [`scan`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyScan {
    /// The `model` value's bytes, quotes included. A body with two top-level `model` keys is
    /// refused: a parser that keeps the first and one that keeps the last would route and run
    /// different models.
    pub model_range: Range<usize>,
    /// The `model` value, unescaped.
    pub model: String,
    /// `"stream": true` at the top level.
    pub stream: bool,
    /// Bit i set: `CONFIG_KEYS[i]` is present.
    present: u8,
    /// Offset of the top-level object's closing brace.
    close: usize,
    /// The prompt's head, when separate: `system` (Anthropic) or `instructions` (Responses).
    system: Option<Range<usize>>,
    /// The prompt: `messages` (chat), `prompt` (completions) or `input` (Responses,
    /// embeddings), the first of them.
    prompt: Option<Range<usize>>,
}

/// Why a body cannot be proxied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Not valid JSON (what and where).
    Invalid(String),
    NotObject,
    MissingModel,
    ModelNotString,
    /// Two top-level `model` keys (possibly one of them escaped).
    DuplicateModel,
}

impl std::fmt::Display for ScanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanError::Invalid(m) => write!(f, "Invalid JSON: {m}"),
            ScanError::NotObject => f.write_str("Request body must be a JSON object"),
            ScanError::MissingModel => f.write_str("Missing required field: model"),
            ScanError::ModelNotString => f.write_str("model must be a string"),
            ScanError::DuplicateModel => f.write_str("Duplicate top-level key: model"),
        }
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn err(&self, what: &str) -> ScanError {
        ScanError::Invalid(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// The next key of an object being walked — `first` right after its `{`, else after a
    /// member's value — as its range (quotes included) and whether it holds escapes; `None` at
    /// the object's `}` (consumed).
    fn key(&mut self, first: bool) -> Result<Option<(Range<usize>, bool)>, ScanError> {
        self.ws();
        match self.peek() {
            Some(b'}') => {
                self.i += 1;
                return Ok(None);
            }
            Some(b',') if !first => self.i += 1,
            _ if first => {}
            _ => return Err(self.err("expected ',' or '}'")),
        }
        self.ws();
        self.string().map(Some)
    }

    /// The `:` between a key and its value, with the space around it.
    fn colon(&mut self) -> Result<(), ScanError> {
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(())
    }

    fn expect(&mut self, c: u8) -> Result<(), ScanError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected '{}'", c as char)))
        }
    }

    /// A string starting at the opening quote; returns its range (quotes included) and whether
    /// it contains escapes.
    fn string(&mut self) -> Result<(Range<usize>, bool), ScanError> {
        let start = self.i;
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            // Jump to the next quote or backslash; the bytes skipped must hold no control
            // character (checked branch-free, so the compiler vectorises it).
            let rest = &self.b[self.i..];
            let n = memchr::memchr2(b'"', b'\\', rest)
                .ok_or_else(|| self.err("unterminated string"))?;
            if rest[..n].iter().fold(false, |acc, &c| acc | (c < 0x20)) {
                self.i += rest[..n].iter().position(|&c| c < 0x20).unwrap_or(0);
                return Err(self.err("control character in string"));
            }
            self.i += n;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok((start..self.i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self
                                .b
                                .get(self.i + 1..self.i + 5)
                                .ok_or_else(|| self.err("bad \\u escape"))?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(self.err("bad \\u escape"));
                            }
                            self.i += 5;
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                _ => return Err(self.err("control character in string")),
            }
        }
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), ScanError> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.err("bad number"));
        }
        Ok(())
    }

    fn number(&mut self) -> Result<(), ScanError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.err("bad number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        debug_assert!(self.i > start);
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("unexpected token"))
        }
    }

    /// Any value, iteratively (an explicit stack of open containers bounds the depth).
    fn value(&mut self) -> Result<Range<usize>, ScanError> {
        let start = self.i;
        // true = inside an object, false = inside an array; on the stack, not the heap (a
        // body's every nested value passes here).
        let mut stack = DepthStack::default();
        loop {
            self.ws();
            // Parse one value or open a container.
            match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    let object = c == b'{';
                    self.i += 1;
                    self.ws();
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        // An empty container is a complete value.
                        self.i += 1;
                    } else {
                        if !stack.push(object) {
                            return Err(self.err("nesting too deep"));
                        }
                        if object {
                            self.string()?;
                            self.ws();
                            self.expect(b':')?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                Some(_) => return Err(self.err("unexpected character")),
                None => return Err(self.err("unexpected end")),
            }
            // A value is complete: close containers or move to the next element.
            loop {
                let Some(in_object) = stack.last() else {
                    return Ok(start..self.i);
                };
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if in_object {
                            self.ws();
                            self.string()?;
                            self.ws();
                            self.expect(b':')?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.i += 1;
                        stack.pop();
                    }
                    Some(b']') if !in_object => {
                        self.i += 1;
                        stack.pop();
                    }
                    _ => return Err(self.err("expected ',' or a closing bracket")),
                }
            }
        }
    }
}

/// The open containers of a [`Scanner::value`], at most [`MAX_DEPTH`], one bit each.
#[derive(Default)]
struct DepthStack {
    bits: [u64; MAX_DEPTH / 64],
    len: usize,
}

impl DepthStack {
    /// Open a container (`true`: an object); false when [`MAX_DEPTH`] are open already.
    fn push(&mut self, object: bool) -> bool {
        if self.len >= MAX_DEPTH {
            return false;
        }
        let (word, bit) = (self.len / 64, self.len % 64);
        self.bits[word] = (self.bits[word] & !(1 << bit)) | (u64::from(object) << bit);
        self.len += 1;
        true
    }

    fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    /// The innermost open container (`true`: an object).
    fn last(&self) -> Option<bool> {
        let top = self.len.checked_sub(1)?;
        Some(self.bits[top / 64] >> (top % 64) & 1 == 1)
    }
}

/// Walk the members of the JSON object `body` (all of it must be one valid object): `member`
/// sees each key's raw bytes without quotes (`None` for a key written with escapes) and the
/// byte range of its value, in order. Nothing is allocated.
pub(crate) fn object_members(
    body: &[u8],
    mut member: impl FnMut(Option<&[u8]>, Range<usize>),
) -> Result<(), ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    s.expect(b'{')?;
    let mut first = true;
    while let Some((key, escaped)) = s.key(first)? {
        first = false;
        s.colon()?;
        let value = s.value()?;
        member((!escaped).then(|| &body[key.start + 1..key.end - 1]), value);
    }
    s.ws();
    if s.i != body.len() {
        return Err(s.err("trailing characters"));
    }
    Ok(())
}

/// The text of a JSON string token (quotes included); serde only when there is an escape.
fn unescape(raw: &[u8]) -> Result<String, ScanError> {
    if raw.len() >= 2 && !raw.contains(&b'\\') {
        return std::str::from_utf8(&raw[1..raw.len() - 1])
            .map(str::to_owned)
            .map_err(|_| ScanError::Invalid("string is not UTF-8".into()));
    }
    serde_json::from_slice::<String>(raw).map_err(|e| ScanError::Invalid(e.to_string()))
}

/// Scan a request body (see the module docs).
pub fn scan(body: &[u8]) -> Result<BodyScan, ScanError> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return if body.trim_ascii().is_empty() {
            Err(ScanError::Invalid("empty body".into()))
        } else if s.peek().is_some_and(|c| b"[\"-0123456789tfn".contains(&c)) {
            s.value()?;
            s.ws();
            if s.peek().is_some() {
                return Err(s.err("trailing characters"));
            }
            Err(ScanError::NotObject)
        } else {
            Err(s.err("unexpected character"))
        };
    }
    s.i += 1;
    let mut model: Option<(Range<usize>, Result<String, ScanError>)> = None;
    let mut stream = false;
    let mut present = 0u8;
    let mut duplicate_model = false;
    let (mut system, mut prompt) = (None, None);
    let mut first = true;
    while let Some((key, escaped)) = s.key(first)? {
        first = false;
        let key_text: std::borrow::Cow<'_, str> = if escaped {
            unescape(&body[key.clone()])?.into()
        } else {
            // Unescaped and from a valid UTF-8 check below; keys are compared as bytes.
            String::from_utf8_lossy(&body[key.start + 1..key.end - 1])
        };
        s.colon()?;
        let value = s.value()?;
        match key_text.as_ref() {
            "model" => {
                // Refused once the whole body is known to be JSON (see below).
                duplicate_model |= model.is_some();
                let v = &body[value.clone()];
                let text = if v.first() == Some(&b'"') {
                    unescape(v)
                } else {
                    Err(ScanError::ModelNotString)
                };
                model = Some((value, text));
            }
            "stream" => stream = &body[value] == b"true",
            "system" | "instructions" => {
                system.get_or_insert(value);
            }
            "messages" | "prompt" | "input" => {
                prompt.get_or_insert(value);
            }
            k => {
                if let Some(i) = CONFIG_KEYS.iter().position(|c| *c == k) {
                    present |= 1 << i;
                }
            }
        }
    }
    let close = s.i - 1;
    s.ws();
    if s.i != body.len() {
        return Err(s.err("trailing characters"));
    }
    if std::str::from_utf8(body).is_err() {
        return Err(ScanError::Invalid("body is not UTF-8".into()));
    }
    if duplicate_model {
        return Err(ScanError::DuplicateModel);
    }
    let (model_range, model) = model.ok_or(ScanError::MissingModel)?;
    Ok(BodyScan {
        model_range,
        model: model?,
        stream,
        present,
        close,
        system,
        prompt,
    })
}

/// Bytes of prompt per block of a [`prefix_chain`] (a message is cut into blocks this long).
pub const PREFIX_BLOCK: usize = 1024;
/// Most blocks a [`prefix_chain`] has: the head of the prompt, which is what a KV cache
/// reuses, is what routing needs to recognise.
pub const MAX_PREFIX_BLOCKS: usize = 64;

/// One block of a prompt's [`prefix_chain`]: the hash of the prompt from its start to the
/// block's end, and that end (bytes of prompt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixBlock {
    pub hash: u64,
    pub end: u32,
}

/// The prompt of a scanned body as a chain of block hashes, head first: the system part, then
/// each message (or the prompt string) as it came, each cut into [`PREFIX_BLOCK`]-byte blocks,
/// each block's hash covering every byte before it. Two requests share their first k blocks
/// exactly when their prompts share those bytes, so a conversation's next turn matches all of
/// its earlier turn but the last message. Nothing is copied: the hashes are taken over the
/// body's own bytes (JSON as sent, so equal messages must be sent alike, as clients do).
pub fn prefix_chain(body: &[u8], scan: &BodyScan) -> Vec<PrefixBlock> {
    let mut blocks = [PrefixBlock { hash: 0, end: 0 }; MAX_PREFIX_BLOCKS];
    let n = prefix_chain_into(body, scan, &mut blocks);
    blocks[..n].to_vec()
}

/// [`prefix_chain`], built on the stack and shared: one allocation, the `Arc` itself (it goes
/// with the request into the room's queue).
pub fn prefix_chain_shared(body: &[u8], scan: &BodyScan) -> std::sync::Arc<[PrefixBlock]> {
    let mut blocks = [PrefixBlock { hash: 0, end: 0 }; MAX_PREFIX_BLOCKS];
    let n = prefix_chain_into(body, scan, &mut blocks);
    std::sync::Arc::from(&blocks[..n])
}

/// Fill `chain` with the prefix chain; returns how many blocks it has.
fn prefix_chain_into(
    body: &[u8],
    scan: &BodyScan,
    chain: &mut [PrefixBlock; MAX_PREFIX_BLOCKS],
) -> usize {
    use std::hash::Hasher;
    let mut len = 0;
    let mut hash = 0u64;
    let mut end = 0u32;
    let mut push = |element: &[u8], len: &mut usize| {
        for block in element.chunks(PREFIX_BLOCK) {
            if *len >= MAX_PREFIX_BLOCKS {
                return;
            }
            let mut h = std::hash::DefaultHasher::new();
            h.write_u64(hash);
            h.write(block);
            hash = h.finish();
            end = end.saturating_add(block.len() as u32);
            chain[*len] = PrefixBlock { hash, end };
            *len += 1;
        }
    };
    if let Some(r) = &scan.system {
        push(&body[r.clone()], &mut len);
    }
    let Some(r) = scan.prompt.clone() else {
        return len;
    };
    if body.get(r.start) != Some(&b'[') {
        push(&body[r], &mut len);
        return len;
    }
    // The elements of an array the scan validated.
    let mut s = Scanner {
        b: &body[..r.end],
        i: r.start + 1,
    };
    while len < MAX_PREFIX_BLOCKS {
        s.ws();
        if matches!(s.peek(), Some(b']') | None) {
            break;
        }
        let Ok(element) = s.value() else { break };
        push(&body[element], &mut len);
        s.ws();
        if s.peek() == Some(b',') {
            s.i += 1;
        }
    }
    len
}

/// A participant's side of the rewrite, encoded once at join: its model name as a JSON string
/// and each config default as a `,"key":value` member, ready to be spliced in.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    model: Bytes,
    /// (bit of the key in `CONFIG_KEYS`, encoded member).
    members: Vec<(u8, Bytes)>,
}

impl Defaults {
    pub fn new(model: &str, config: &GenerationConfig) -> Self {
        // Serialising a string and the config's plain numbers and strings cannot fail.
        let value = serde_json::to_value(config).unwrap_or_default();
        let members = CONFIG_KEYS
            .iter()
            .enumerate()
            .filter_map(|(i, key)| {
                let v = value.get(*key)?;
                Some((1u8 << i, Bytes::from(format!(",\"{key}\":{v}"))))
            })
            .collect();
        Defaults {
            model: Bytes::from(serde_json::to_vec(model).unwrap_or_default()),
            members,
        }
    }
}

/// The upstream body as slices: everything of `body` but the model value, which becomes the
/// participant's, and its config defaults for absent keys before the closing brace.
pub fn splice(body: &Bytes, scan: &BodyScan, defaults: &Defaults) -> Vec<Bytes> {
    let mut parts = Vec::with_capacity(4 + defaults.members.len());
    parts.push(body.slice(..scan.model_range.start));
    parts.push(defaults.model.clone());
    parts.push(body.slice(scan.model_range.end..scan.close));
    for (bit, member) in &defaults.members {
        if scan.present & bit == 0 {
            parts.push(member.clone());
        }
    }
    parts.push(body.slice(scan.close..));
    parts.retain(|p| !p.is_empty());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(parts: &[Bytes]) -> String {
        parts
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect()
    }

    #[test]
    fn replaces_only_the_model_bytes() {
        let body = Bytes::from_static(
            "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"ol\u{e1} \\\"model\\\": x\"} ],\n\t\"model\"  :  \"p-1\" , \"stream\":true }".as_bytes(),
        );
        let s = scan(&body).unwrap();
        assert_eq!(s.model, "p-1");
        assert!(s.stream);
        let out = joined(&splice(
            &body,
            &s,
            &Defaults::new("llama3:8b", &GenerationConfig::default()),
        ));
        assert_eq!(
            out,
            "{ \"messages\" : [ {\"role\":\"user\",\"content\":\"ol\u{e1} \\\"model\\\": x\"} ],\n\t\"model\"  :  \"llama3:8b\" , \"stream\":true }"
        );
    }

    #[test]
    fn adds_only_absent_config_keys() {
        let body = Bytes::from_static(br#"{"model":"*","temperature":1.5,"messages":[]}"#);
        let s = scan(&body).unwrap();
        let config: GenerationConfig =
            serde_json::from_str(r#"{"temperature":0.2,"max_tokens":64,"stop":["\n"]}"#).unwrap();
        let out = joined(&splice(&body, &s, &Defaults::new("m", &config)));
        assert_eq!(
            out,
            r#"{"model":"m","temperature":1.5,"messages":[],"max_tokens":64,"stop":["\n"]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["temperature"], 1.5);
    }

    #[test]
    fn escaped_names_and_duplicates() {
        let body = Bytes::from_static(br#"{"mod\u0065l":"b\"c","messages":[]}"#);
        let s = scan(&body).unwrap();
        assert_eq!(s.model, "b\"c");
        let out = joined(&splice(
            &body,
            &s,
            &Defaults::new("x\"y", &GenerationConfig::default()),
        ));
        assert_eq!(out, r#"{"mod\u0065l":"x\"y","messages":[]}"#);
        // Two `model` keys, however spelled, are refused: which one counts is parser-dependent.
        for body in [
            &br#"{"model":"a","model":"*"}"#[..],
            br#"{"mod\u0065l":"a","model":"b"}"#,
            br#"{"model":"a","x":{"model":"nested is fine"},"model":"b"}"#,
        ] {
            assert_eq!(scan(body), Err(ScanError::DuplicateModel));
        }
        assert!(scan(br#"{"model":"a","x":{"model":"b"}}"#).is_ok());
    }

    #[test]
    fn errors() {
        assert!(matches!(scan(b"{not json"), Err(ScanError::Invalid(_))));
        assert!(matches!(scan(b""), Err(ScanError::Invalid(_))));
        assert_eq!(scan(b"[1,2]"), Err(ScanError::NotObject));
        assert_eq!(scan(br#"{"messages":[]}"#), Err(ScanError::MissingModel));
        assert_eq!(scan(br#"{"model":5}"#), Err(ScanError::ModelNotString));
        assert!(matches!(
            scan(br#"{"model":"a"} x"#),
            Err(ScanError::Invalid(_))
        ));
        assert!(matches!(
            scan(br#"{"model":"a",}"#),
            Err(ScanError::Invalid(_))
        ));
        assert!(matches!(
            scan(br#"{"model":"a","x":01}"#),
            Err(ScanError::Invalid(_))
        ));
        assert!(matches!(
            scan(b"{\"model\":\"a\x01\"}"),
            Err(ScanError::Invalid(_))
        ));
        let deep = format!(
            "{{\"model\":\"a\",\"x\":{}{}}}",
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(matches!(scan(deep.as_bytes()), Err(ScanError::Invalid(_))));
        let ok = format!(
            "{{\"model\":\"a\",\"x\":{}{}}}",
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(scan(ok.as_bytes()).is_ok());
    }

    #[test]
    fn agrees_with_serde_on_validity() {
        for s in [
            r#"{"model":"a","n":-0.5e+3,"t":true,"f":false,"z":null,"o":{"k":[1,{"a":[]}]}}"#,
            r#"{"model":"a","n":1.}"#,
            r#"{"model":"a","n":.5}"#,
            r#"{"model":"a" "b":1}"#,
            r#"{"model":"\ud83d\ude00"}"#,
            r#"{"model":"a","s":"\x"}"#,
        ] {
            let ours = scan(s.as_bytes()).is_ok();
            let serde = serde_json::from_str::<serde_json::Value>(s).is_ok();
            assert_eq!(ours, serde, "{s}");
        }
    }

    fn chain(body: &str) -> Vec<PrefixBlock> {
        prefix_chain(body.as_bytes(), &scan(body.as_bytes()).unwrap())
    }

    #[test]
    fn a_conversation_matches_its_earlier_turns() {
        let sys = "s".repeat(1500);
        let turn1 = format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{sys}"}},{{"role":"user","content":"hi"}}]}}"#
        );
        let turn2 = format!(
            r#"{{"stream":true,"messages":[{{"role":"system","content":"{sys}"}}, {{"role":"user","content":"hi"}},{{"role":"assistant","content":"yo"}},{{"role":"user","content":"more"}}],"model":"x"}}"#
        );
        let other = format!(
            r#"{{"model":"m","messages":[{{"role":"system","content":"{sys}"}},{{"role":"user","content":"bye"}}]}}"#
        );
        let (a, b, c) = (chain(&turn1), chain(&turn2), chain(&other));
        // The system message is two blocks (over 1 KiB), then one per short message.
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 5);
        assert_eq!(
            &b[..3],
            &a[..],
            "turn 2 begins with turn 1 (other keys, spacing aside)"
        );
        assert_eq!(&c[..2], &a[..2], "the shared system prompt");
        assert_ne!(c[2], a[2]);
        assert_eq!(a[0].end, PREFIX_BLOCK as u32);
        // Anthropic's system comes first whatever the key order; a prompt string is one run.
        let anth = chain(
            r#"{"messages":[{"role":"user","content":"q"}],"model":"m","system":"be brief"}"#,
        );
        let anth2 = chain(
            r#"{"model":"m","system":"be brief","messages":[{"role":"user","content":"r"}]}"#,
        );
        assert_eq!(anth.len(), 2);
        assert_eq!(anth[0], anth2[0]);
        assert_ne!(anth[1], anth2[1]);
        assert_eq!(chain(r#"{"model":"m","prompt":"abc"}"#).len(), 1);
        assert!(chain(r#"{"model":"m"}"#).is_empty());
        assert!(chain(r#"{"model":"m","messages":[]}"#).is_empty());
    }

    #[test]
    fn a_chain_is_bounded() {
        let msgs: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"role":"user","content":"{i}"}}"#))
            .collect();
        let body = format!(r#"{{"model":"m","messages":[{}]}}"#, msgs.join(","));
        assert_eq!(chain(&body).len(), MAX_PREFIX_BLOCKS);
        let long = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(1 << 20));
        assert_eq!(chain(&long).len(), MAX_PREFIX_BLOCKS);
    }
}
