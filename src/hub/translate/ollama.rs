//! Ollama's API in front of participants that speak OpenAI's: a request to `/api/chat`,
//! `/api/generate`, `/api/embed` or `/api/embeddings` becomes an OpenAI chat completion,
//! completion or embedding ([`request`]); the answer comes back in Ollama's shape ([`Out`]):
//! NDJSON lines ending with a `done: true` line carrying `done_reason` and the counts, or one
//! JSON document; errors as `{"error": "…"}`.
//!
//! Translation re-encodes by necessity (this is the one place the hub parses a whole body or
//! every streamed event as `serde_json::Value`), within bounds: an answer document at most
//! [`MAX_DOCUMENT`], a streamed line at most [`MAX_LINE`], streamed tool calls at most
//! [`MAX_TOOL_CALLS`].
//!
//! | Ollama                         | OpenAI                                         |
//! |--------------------------------|------------------------------------------------|
//! | `messages[].images` (base64)   | `content` parts `image_url` (`data:` URLs)     |
//! | `messages[].tool_calls` (`arguments` an object) | `tool_calls` (`arguments` a JSON string, ids made up) |
//! | `role: "tool"`                 | `role: "tool"`, `tool_call_id` of the call it answers |
//! | `options.num_predict`, `temperature`, `top_p`, `stop`, `seed`, penalties | `max_tokens`, the same names |
//! | `format: "json"` / a schema    | `response_format` `json_object` / `json_schema` |
//! | `stream` (default **true**)    | `stream`, with `stream_options.include_usage`  |
//! | `/api/generate` `system`, `prompt`, `images` | chat messages (`raw` or `suffix`: `/v1/completions`) |
//! | `eval_count`, `prompt_eval_count` | `usage.completion_tokens`, `prompt_tokens` (else the streamed events counted) |

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use serde_json::{Map, Value, json};

#[cfg(doc)]
use super::{MAX_DOCUMENT, MAX_LINE};
use super::{Translator, document_feed, sse_data, sse_feed, usage};
use crate::hub::router::ProxyKind;

/// Most bytes of tool-call names and arguments a stream may accumulate (they are sent whole,
/// at the end).
pub(crate) const MAX_TOOL_CALLS: usize = 1024 * 1024;

/// The Ollama operation a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Chat,
    Generate,
    Embed,
    /// The legacy `/api/embeddings` (`prompt` in, one `embedding` out).
    Embeddings,
}

impl Op {
    /// Where an Ollama server answers it.
    pub fn path(self) -> &'static str {
        match self {
            Op::Chat => "/api/chat",
            Op::Generate => "/api/generate",
            Op::Embed => "/api/embed",
            Op::Embeddings => "/api/embeddings",
        }
    }
}

/// An Ollama request as an OpenAI one.
#[derive(Debug)]
pub(crate) struct Translated {
    pub(crate) body: Bytes,
    pub(crate) kind: ProxyKind,
    pub(crate) stream: bool,
    pub(crate) model: String,
}

fn bad(message: impl Into<String>) -> String {
    message.into()
}

/// Translate an Ollama request body. `Err` is the client's mistake, in words.
pub(crate) fn request(op: Op, body: &[u8]) -> Result<Translated, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    let Value::Object(v) = v else {
        return Err(bad("the request must be a JSON object"));
    };
    let model = match v.get("model").or_else(|| v.get("name")) {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(bad("model is required")),
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    let (kind, stream) = match op {
        Op::Chat => {
            let stream = flag(&v, "stream", true)?;
            let messages = match v.get("messages") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(m)) => m.clone(),
                Some(_) => return Err(bad("messages must be an array")),
            };
            out.insert("messages".into(), Value::Array(chat_messages(messages)?));
            if let Some(tools) = v.get("tools").filter(|t| !t.is_null()) {
                if !tools.is_array() {
                    return Err(bad("tools must be an array"));
                }
                out.insert("tools".into(), tools.clone());
            }
            (ProxyKind::Chat, stream)
        }
        Op::Generate => {
            let stream = flag(&v, "stream", true)?;
            let prompt = text(&v, "prompt")?.unwrap_or_default();
            let raw = flag(&v, "raw", false)?;
            let suffix = text(&v, "suffix")?;
            if raw || suffix.is_some() {
                out.insert("prompt".into(), Value::String(prompt));
                if let Some(s) = suffix {
                    out.insert("suffix".into(), Value::String(s));
                }
                (ProxyKind::Completions, stream)
            } else {
                let mut messages = Vec::new();
                if let Some(system) = text(&v, "system")? {
                    messages.push(json!({"role": "system", "content": system}));
                }
                let images = images(v.get("images"))?;
                messages.push(json!({"role": "user", "content": content(prompt, &images)}));
                out.insert("messages".into(), Value::Array(messages));
                (ProxyKind::Chat, stream)
            }
        }
        Op::Embed => {
            let input = match v.get("input") {
                Some(s @ Value::String(_)) => s.clone(),
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => Value::Array(a.clone()),
                _ => return Err(bad("input must be a string or an array of strings")),
            };
            out.insert("input".into(), input);
            (ProxyKind::Embeddings, false)
        }
        Op::Embeddings => {
            let prompt = text(&v, "prompt")?.ok_or_else(|| bad("prompt is required"))?;
            out.insert("input".into(), Value::String(prompt));
            (ProxyKind::Embeddings, false)
        }
    };
    if kind != ProxyKind::Embeddings {
        options(&v, &mut out)?;
        out.insert("stream".into(), Value::Bool(stream));
        if stream {
            out.insert("stream_options".into(), json!({"include_usage": true}));
        }
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())?;
    Ok(Translated {
        body: Bytes::from(body),
        kind,
        stream,
        model,
    })
}

fn flag(v: &Map<String, Value>, key: &str, default: bool) -> Result<bool, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("{key} must be true or false")),
    }
}

fn text(v: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key} must be a string")),
    }
}

/// Base64 images as `data:` URLs, their type read from their first bytes.
fn images(v: Option<&Value>) -> Result<Vec<String>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let Value::Array(list) = v else {
        return Err(bad("images must be an array of base64 strings"));
    };
    list.iter()
        .map(|i| match i {
            Value::String(b64) => {
                let b64 = b64.trim();
                let mime = match b64.get(..4) {
                    Some("/9j/") => "image/jpeg",
                    Some("R0lG") => "image/gif",
                    Some("UklG") => "image/webp",
                    _ => "image/png",
                };
                Ok(format!("data:{mime};base64,{b64}"))
            }
            _ => Err(bad("images must be an array of base64 strings")),
        })
        .collect()
}

/// A message's content: the text alone, or text and image parts.
fn content(text: String, images: &[String]) -> Value {
    if images.is_empty() {
        return Value::String(text);
    }
    let mut parts = vec![json!({"type": "text", "text": text})];
    parts.extend(
        images
            .iter()
            .map(|url| json!({"type": "image_url", "image_url": {"url": url}})),
    );
    Value::Array(parts)
}

/// Ollama chat messages as OpenAI's. Tool calls get ids (`call_N`), and each tool answer the
/// id of the oldest call not yet answered.
fn chat_messages(messages: Vec<Value>) -> Result<Vec<Value>, String> {
    let mut out = Vec::with_capacity(messages.len());
    let mut calls = 0usize;
    let mut unanswered: VecDeque<String> = VecDeque::new();
    for m in messages {
        let Value::Object(m) = m else {
            return Err(bad("each message must be an object"));
        };
        let role = match m.get("role") {
            Some(Value::String(r)) => r.clone(),
            _ => return Err(bad("each message needs a role")),
        };
        let text = text(&m, "content")?.unwrap_or_default();
        let images = images(m.get("images"))?;
        let mut msg = Map::new();
        msg.insert("role".into(), Value::String(role.clone()));
        msg.insert("content".into(), content(text, &images));
        if let Some(Value::Array(tool_calls)) = m.get("tool_calls") {
            let mut converted = Vec::with_capacity(tool_calls.len());
            for call in tool_calls {
                let f = call.get("function").unwrap_or(&Value::Null);
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = match f.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(a) => a.to_string(),
                    None => "{}".into(),
                };
                let id = format!("call_{calls}");
                calls += 1;
                unanswered.push_back(id.clone());
                converted.push(json!({
                    "id": id, "type": "function",
                    "function": {"name": name, "arguments": args},
                }));
            }
            if !converted.is_empty() {
                msg.insert("tool_calls".into(), Value::Array(converted));
            }
        }
        if role == "tool" {
            let id = unanswered
                .pop_front()
                .unwrap_or_else(|| format!("call_{calls}"));
            msg.insert("tool_call_id".into(), Value::String(id));
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

/// `options` and `format` as OpenAI parameters.
fn options(v: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), String> {
    if let Some(options) = v.get("options").filter(|o| !o.is_null()) {
        let Value::Object(o) = options else {
            return Err(bad("options must be an object"));
        };
        for (from, to) in [
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
        ] {
            if let Some(x) = o.get(from).filter(|x| x.is_number()) {
                out.insert(to.into(), x.clone());
            }
        }
        // Ollama's -1 (unbounded) and -2 (fill the context) have no OpenAI form: left out.
        if let Some(n) = o
            .get("num_predict")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
        {
            out.insert("max_tokens".into(), json!(n));
        }
        match o.get("stop") {
            Some(s @ Value::String(_)) => {
                out.insert("stop".into(), json!([s]));
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                out.insert("stop".into(), Value::Array(a.clone()));
            }
            _ => {}
        }
    }
    match v.get("format") {
        None | Some(Value::Null) => {}
        Some(Value::String(f)) if f == "json" => {
            out.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(Value::String(f)) if f.is_empty() => {}
        Some(schema @ Value::Object(_)) => {
            out.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
            );
        }
        Some(_) => return Err(bad("format must be \"json\" or a JSON schema")),
    }
    Ok(())
}

/// The current UTC time as RFC 3339 with nanoseconds, as Ollama writes `created_at`.
pub(crate) fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_nanos())
}

/// Unix seconds (and nanoseconds) as RFC 3339 UTC.
pub(crate) fn rfc3339(secs: u64, nanos: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// An OpenAI answer (the relay's decoded body) as Ollama's.
pub(crate) struct Out {
    op: Op,
    model: String,
    /// NDJSON lines as they come (a 2xx streamed answer), else one document at the end.
    lines: bool,
    /// The client asked for a stream (a document then goes out as its one NDJSON line).
    stream_asked: bool,
    status: u16,
    started: Instant,
    first_output: Option<Instant>,
    buf: Vec<u8>,
    ready: VecDeque<Bytes>,
    // What a stream has said so far.
    events: u64,
    usage: Option<(u64, u64)>,
    finish_reason: Option<String>,
    /// Tool calls by index: (name, arguments so far).
    tool_calls: Vec<(String, String)>,
    /// Bytes in `tool_calls` (at most [`MAX_TOOL_CALLS`]).
    tool_bytes: usize,
}

impl Out {
    /// For the upstream answer's body, decoded (no chunk framing). `stream`: the client asked
    /// for NDJSON; `events_in`: the answer is an SSE stream (a participant may
    /// answer a document whatever was asked: it is translated as the document it is). An error
    /// status always answers one document.
    pub(crate) fn new(op: Op, model: String, stream: bool, status: u16, events_in: bool) -> Out {
        let ok = (200..300).contains(&status);
        Out {
            op,
            model,
            lines: stream && events_in && ok,
            stream_asked: stream && ok,
            status,
            started: Instant::now(),
            first_output: None,
            buf: Vec::new(),
            ready: VecDeque::new(),
            events: 0,
            usage: None,
            finish_reason: None,
            tool_calls: Vec::new(),
            tool_bytes: 0,
        }
    }

    /// The Content-Type of what this yields.
    pub(crate) fn content_type(&self) -> &'static [u8] {
        if self.stream_asked {
            b"application/x-ndjson"
        } else {
            b"application/json; charset=utf-8"
        }
    }

    fn line(&mut self, v: Value) {
        let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
        bytes.push(b'\n');
        self.ready.push_back(Bytes::from(bytes));
    }

    /// One event of the upstream's SSE stream.
    fn sse_event(&mut self, v: Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(u));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(r) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(r.to_string());
        }
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        let text = delta
            .get("content")
            .or_else(|| choice.get("text"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let thinking = delta
            .get("reasoning_content")
            .or_else(|| delta.get("reasoning"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for call in calls {
                let i = call.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                // An index far past the calls seen is not a real call: kept bounded.
                if i > self.tool_calls.len() || i >= 128 {
                    continue;
                }
                if i == self.tool_calls.len() {
                    self.tool_calls.push((String::new(), String::new()));
                }
                let f = call.get("function").unwrap_or(&Value::Null);
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                let args = f
                    .get("arguments")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                self.tool_bytes += name.len() + args.len();
                if self.tool_bytes > MAX_TOOL_CALLS {
                    return;
                }
                self.tool_calls[i].0.push_str(name);
                self.tool_calls[i].1.push_str(args);
            }
            self.first_output.get_or_insert_with(Instant::now);
            self.events += 1;
        }
        if text.is_empty() && thinking.is_empty() {
            return;
        }
        self.first_output.get_or_insert_with(Instant::now);
        self.events += 1;
        let mut piece = self.head();
        match self.op {
            Op::Chat => {
                let mut message = json!({"role": "assistant", "content": text});
                if !thinking.is_empty() {
                    message["thinking"] = json!(thinking);
                }
                piece["message"] = message;
            }
            _ => {
                piece["response"] = json!(text);
                if !thinking.is_empty() {
                    piece["thinking"] = json!(thinking);
                }
            }
        }
        piece["done"] = json!(false);
        self.line(piece);
    }

    /// `model` and `created_at`, the start of every answer object.
    fn head(&self) -> Value {
        json!({"model": self.model, "created_at": rfc3339_now()})
    }

    /// The counts and durations of a finished generation.
    fn totals(&self, piece: &mut Value, usage: Option<(u64, u64)>) {
        let total = self.started.elapsed().as_nanos() as u64;
        let first = self
            .first_output
            .map_or(total, |t| t.duration_since(self.started).as_nanos() as u64);
        let (prompt, completion) = usage.unwrap_or((0, self.events));
        piece["done_reason"] = json!(done_reason(self.finish_reason.as_deref()));
        piece["total_duration"] = json!(total);
        piece["load_duration"] = json!(0);
        piece["prompt_eval_count"] = json!(prompt);
        piece["prompt_eval_duration"] = json!(first);
        piece["eval_count"] = json!(completion);
        piece["eval_duration"] = json!(total.saturating_sub(first));
    }

    /// The upstream answer ended.
    fn finish(&mut self) {
        if self.lines {
            if let Some(v) = sse_data(&std::mem::take(&mut self.buf)) {
                self.sse_event(v);
            }
            if !self.tool_calls.is_empty() && self.op == Op::Chat {
                let mut piece = self.head();
                piece["message"] = json!({
                    "role": "assistant", "content": "",
                    "tool_calls": ollama_calls(self.tool_calls.iter().map(|(n, a)| (n.as_str(), a.as_str()))),
                });
                piece["done"] = json!(false);
                self.line(piece);
            }
            let mut last = self.head();
            match self.op {
                Op::Chat => last["message"] = json!({"role": "assistant", "content": ""}),
                _ => last["response"] = json!(""),
            }
            last["done"] = json!(true);
            self.totals(&mut last, self.usage);
            self.line(last);
            return;
        }
        let doc = std::mem::take(&mut self.buf);
        let v: Value = serde_json::from_slice(&doc).unwrap_or(Value::Null);
        let answer = if !(200..300).contains(&self.status) {
            json!({"error": error_message(&v, &doc, self.status)})
        } else {
            self.document(&v)
        };
        let mut bytes = serde_json::to_vec(&answer).unwrap_or_default();
        if self.op == Op::Chat || self.op == Op::Generate {
            bytes.push(b'\n');
        }
        self.ready.push_back(Bytes::from(bytes));
    }

    /// A whole OpenAI answer as Ollama's.
    fn document(&mut self, v: &Value) -> Value {
        match self.op {
            Op::Embed => {
                let embeddings: Vec<Value> = v["data"]
                    .as_array()
                    .map(|d| d.iter().map(|e| pooled(&e["embedding"])).collect())
                    .unwrap_or_default();
                let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap_or(0);
                json!({
                    "model": self.model, "embeddings": embeddings,
                    "total_duration": self.started.elapsed().as_nanos() as u64,
                    "load_duration": 0, "prompt_eval_count": prompt,
                })
            }
            Op::Embeddings => json!({"embedding": pooled(&v["data"][0]["embedding"])}),
            Op::Chat | Op::Generate => {
                let choice = &v["choices"][0];
                self.finish_reason = choice["finish_reason"].as_str().map(str::to_string);
                let message = &choice["message"];
                let text = message["content"]
                    .as_str()
                    .or_else(|| choice["text"].as_str())
                    .unwrap_or_default();
                let thinking = message["reasoning_content"]
                    .as_str()
                    .or_else(|| message["reasoning"].as_str());
                self.first_output = Some(Instant::now());
                let mut out = self.head();
                if self.op == Op::Chat {
                    let mut m = json!({"role": "assistant", "content": text});
                    if let Some(t) = thinking {
                        m["thinking"] = json!(t);
                    }
                    if let Some(calls) = message["tool_calls"].as_array().filter(|c| !c.is_empty())
                    {
                        m["tool_calls"] = ollama_calls(calls.iter().map(|c| {
                            (
                                c["function"]["name"].as_str().unwrap_or_default(),
                                c["function"]["arguments"].as_str().unwrap_or("{}"),
                            )
                        }));
                    }
                    out["message"] = m;
                } else {
                    out["response"] = json!(text);
                    if let Some(t) = thinking {
                        out["thinking"] = json!(t);
                    }
                }
                out["done"] = json!(true);
                let usage = v.get("usage").filter(|u| u.is_object()).map(usage);
                self.events = u64::from(!text.is_empty());
                self.totals(&mut out, usage);
                out
            }
        }
    }
}

/// One vector per input, as Ollama answers: a server without pooling (llama.cpp's, for a model
/// that has none) answers a vector per token, averaged here.
fn pooled(embedding: &Value) -> Value {
    let Some(rows) = embedding.as_array() else {
        return embedding.clone();
    };
    if !rows.first().is_some_and(Value::is_array) {
        return embedding.clone();
    }
    let width = rows[0].as_array().map_or(0, Vec::len);
    let mut sum = vec![0f64; width];
    for row in rows {
        for (s, x) in sum.iter_mut().zip(row.as_array().into_iter().flatten()) {
            *s += x.as_f64().unwrap_or(0.0);
        }
    }
    let n = rows.len() as f64;
    Value::Array(sum.into_iter().map(|s| json!(s / n)).collect())
}

/// OpenAI's finish reasons in Ollama's words.
fn done_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "length",
        _ => "stop",
    }
}

/// Tool calls with their arguments as objects (Ollama's form); arguments that are not JSON
/// are kept as the string they are.
fn ollama_calls<'a>(calls: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    Value::Array(
        calls
            .map(|(name, args)| {
                let arguments = serde_json::from_str::<Value>(args)
                    .ok()
                    .filter(Value::is_object)
                    .unwrap_or_else(|| Value::String(args.to_string()));
                json!({"function": {"name": name, "arguments": arguments}})
            })
            .collect(),
    )
}

/// The message of an upstream error: OpenAI's `error.message`, Ollama's `error`, else the
/// body's text.
fn error_message(v: &Value, raw: &[u8], status: u16) -> String {
    if let Some(m) = v["error"]["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
    {
        return m.to_string();
    }
    let text = String::from_utf8_lossy(raw);
    let text = text.trim();
    if text.is_empty() {
        format!("the participant answered {status}")
    } else {
        text.chars().take(1024).collect()
    }
}

impl Translator for Out {
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.lines {
            return document_feed(&mut self.buf, data, self.status);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let fed = sse_feed(&mut buf, data, |line| {
            if let Some(v) = sse_data(line) {
                self.sse_event(v);
            }
        });
        self.buf = buf;
        fed?;
        if self.tool_bytes > MAX_TOOL_CALLS {
            return Err(io::Error::other("tool calls too large to translate"));
        }
        Ok(())
    }

    fn end(&mut self) {
        self.finish();
    }

    fn ready(&mut self) -> &mut VecDeque<Bytes> {
        &mut self.ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::translate::{MAX_ERROR_BODY, Reads, Translation, drain};

    fn translated(op: Op, body: Value) -> (Value, ProxyKind, bool) {
        let t = request(op, body.to_string().as_bytes()).unwrap();
        (serde_json::from_slice(&t.body).unwrap(), t.kind, t.stream)
    }

    #[test]
    fn chat_requests() {
        let (v, kind, stream) = translated(
            Op::Chat,
            json!({
                "model": "llama3", "options": {"temperature": 0.2, "num_predict": 16, "stop": "\n", "top_k": 4},
                "format": "json",
                "messages": [
                    {"role": "system", "content": "be brief"},
                    {"role": "user", "content": "what is this?", "images": ["/9j/4AAQ"]},
                    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "look", "arguments": {"x": 1}}}]},
                    {"role": "tool", "content": "a cat"},
                ],
                "tools": [{"type": "function", "function": {"name": "look", "parameters": {}}}],
            }),
        );
        assert_eq!(kind, ProxyKind::Chat);
        assert!(stream, "Ollama streams unless told not to");
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["max_tokens"], 16);
        assert_eq!(v["stop"], json!(["\n"]));
        assert!(v.get("top_k").is_none());
        assert_eq!(v["response_format"], json!({"type": "json_object"}));
        let m = &v["messages"];
        assert_eq!(m[0], json!({"role": "system", "content": "be brief"}));
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/jpeg;base64,/9j/4AAQ"
        );
        assert_eq!(m[2]["tool_calls"][0]["id"], "call_0");
        assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], "{\"x\":1}");
        assert_eq!(m[3]["tool_call_id"], "call_0");
        assert_eq!(v["tools"][0]["function"]["name"], "look");
    }

    #[test]
    fn generate_embed_and_mistakes() {
        let (v, kind, stream) = translated(
            Op::Generate,
            json!({"model": "m", "prompt": "hi", "system": "s", "stream": false}),
        );
        assert_eq!((kind, stream), (ProxyKind::Chat, false));
        assert_eq!(v["messages"][1], json!({"role": "user", "content": "hi"}));
        assert!(v.get("stream_options").is_none());
        let (v, kind, _) = translated(
            Op::Generate,
            json!({"model": "m", "prompt": "def f(", "suffix": "return 1"}),
        );
        assert_eq!(kind, ProxyKind::Completions);
        assert_eq!(
            (v["prompt"].as_str(), v["suffix"].as_str()),
            (Some("def f("), Some("return 1"))
        );
        let (v, kind, stream) = translated(Op::Embed, json!({"model": "m", "input": ["a", "b"]}));
        assert_eq!((kind, stream), (ProxyKind::Embeddings, false));
        assert_eq!(v, json!({"model": "m", "input": ["a", "b"]}));
        let (v, _, _) = translated(Op::Embeddings, json!({"model": "m", "prompt": "a"}));
        assert_eq!(v["input"], "a");
        for (op, bad) in [
            (Op::Chat, json!({"messages": []})),
            (Op::Chat, json!({"model": "m", "messages": "hi"})),
            (Op::Chat, json!({"model": "m", "stream": "yes"})),
            (
                Op::Chat,
                json!({"model": "m", "messages": [{"content": "no role"}]}),
            ),
            (Op::Embed, json!({"model": "m", "input": [1]})),
            (Op::Generate, json!({"model": "m", "format": 5})),
            (Op::Chat, json!([1])),
        ] {
            assert!(request(op, bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert!(
            request(Op::Chat, b"{")
                .unwrap_err()
                .starts_with("Invalid JSON")
        );
    }

    /// What the translator makes of `reads` (the answer must not fail), as JSON lines.
    fn run(op: Op, stream: bool, status: u16, reads: &[&str]) -> Vec<Value> {
        let out = Out::new(op, "llama3".into(), stream, status, stream);
        let reads = Reads::of(reads.iter().map(|r| r.to_string()));
        let (text, failed) = drain(&mut Translation::new(reads, out));
        assert!(failed.is_none(), "{failed:?}");
        lines_of(&text)
    }

    fn lines_of(text: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_stream_becomes_ndjson() {
        let lines = run(
            Op::Chat,
            true,
            200,
            &[
                "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"del",
                "ta\":{\"content\":\"lo\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            ],
        );
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0]["message"],
            json!({"role": "assistant", "content": "Hel"})
        );
        assert_eq!(lines[0]["model"], "llama3");
        assert_eq!(lines[0]["done"], false);
        assert!(lines[0]["created_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["message"]["content"], "lo");
        assert_eq!(
            lines[2]["message"]["tool_calls"],
            json!([{"function": {"name": "f", "arguments": {"a": 1}}}])
        );
        let last = &lines[3];
        assert_eq!(
            (last["done"].as_bool(), last["done_reason"].as_str()),
            (Some(true), Some("stop"))
        );
        assert_eq!(
            (
                last["prompt_eval_count"].as_u64(),
                last["eval_count"].as_u64()
            ),
            (Some(7), Some(3))
        );
        // Without usage, the events that carried output are counted.
        let lines = run(
            Op::Generate,
            true,
            200,
            &[
                "data: {\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"choices\":[{\"text\":\"b\",\"finish_reason\":\"length\"}]}\n\n",
            ],
        );
        assert_eq!(lines[1]["response"], "b");
        assert_eq!(
            (
                lines[2]["eval_count"].as_u64(),
                lines[2]["done_reason"].as_str()
            ),
            (Some(2), Some("length"))
        );
    }

    #[test]
    fn documents_and_errors() {
        let chat = run(
            Op::Chat,
            false,
            200,
            &[
                r#"{"choices":[{"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"x","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":1}}"#,
            ],
        );
        assert_eq!(chat.len(), 1);
        assert_eq!(chat[0]["message"]["content"], "hi");
        assert_eq!(
            chat[0]["message"]["tool_calls"][0]["function"]["arguments"],
            json!({})
        );
        assert_eq!(
            (chat[0]["done"].as_bool(), chat[0]["eval_count"].as_u64()),
            (Some(true), Some(1))
        );
        let embed = run(
            Op::Embed,
            false,
            200,
            &[r#"{"data":[{"embedding":[0.5,1]},{"embedding":[2]}],"usage":{"prompt_tokens":2}}"#],
        );
        assert_eq!(embed[0]["embeddings"], json!([[0.5, 1], [2]]));
        assert_eq!(embed[0]["prompt_eval_count"], 2);
        let legacy = run(
            Op::Embeddings,
            false,
            200,
            &[r#"{"data":[{"embedding":[3]}]}"#],
        );
        assert_eq!(legacy[0], json!({"embedding": [3]}));
        // A vector per token (no pooling upstream): averaged into one.
        let tokens = run(
            Op::Embed,
            false,
            200,
            &[r#"{"data":[{"embedding":[[1,2],[3,4]]}]}"#],
        );
        assert_eq!(tokens[0]["embeddings"], json!([[2.0, 3.0]]));
        // An error answers one document, even when a stream was asked for.
        let err = run(
            Op::Chat,
            true,
            404,
            &[r#"{"error":{"message":"model \"x\" not found","type":"not_found_error"}}"#],
        );
        assert_eq!(err, [json!({"error": "model \"x\" not found"})]);
        let err = run(Op::Chat, false, 502, &["bad gateway"]);
        assert_eq!(err, [json!({"error": "bad gateway"})]);
    }

    #[test]
    fn a_document_where_a_stream_was_asked_is_its_one_line() {
        let reads = Reads::of([Bytes::from_static(
            br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
        )]);
        let out = Out::new(Op::Chat, "m".into(), true, 200, false);
        assert_eq!(out.content_type(), b"application/x-ndjson");
        let (text, failed) = drain(&mut Translation::new(reads, out));
        assert!(failed.is_none());
        let l = lines_of(&text);
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0]["message"]["content"].as_str(), l[0]["done"].as_bool()),
            (Some("hi"), Some(true))
        );
    }

    #[test]
    fn what_accumulates_is_bounded() {
        // Tool-call arguments are kept until the end: past MAX_TOOL_CALLS the answer fails.
        let piece = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"name\":\"f\",\"arguments\":\"{}\"}}}}]}}}}]}}\n\n",
            "a".repeat(100_000)
        );
        let reads = Reads::of(std::iter::repeat_n(piece, 12));
        let out = Out::new(Op::Chat, "m".into(), true, 200, true);
        let (_, failed) = drain(&mut Translation::new(reads, out));
        let failed = failed.expect("the answer fails").to_string();
        assert!(failed.contains("tool calls too large"), "{failed}");
        // An error's body is kept up to MAX_ERROR_BODY, and still answers its message.
        let big = format!(
            "{{\"error\":{{\"message\":\"short\"}}}}{}",
            " ".repeat(2 * MAX_ERROR_BODY)
        );
        assert_eq!(
            run(Op::Chat, false, 500, &[&big])[0]["error"]
                .as_str()
                .map(|m| m.len() <= 1024),
            Some(true)
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_441_949, 0), "2026-11-23T13:52:29.000000000Z");
    }
}
