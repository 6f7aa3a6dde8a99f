//! Anthropic's Messages API in front of participants that speak OpenAI's: `POST /v1/messages`
//! becomes an OpenAI chat completion ([`request`]) and the answer comes back as Anthropic's
//! ([`Out`]): a `message` document, or the event stream `message_start`,
//! `content_block_start` / `content_block_delta` / `content_block_stop` per text or tool-use
//! block, `message_delta` (stop reason, output tokens), `message_stop`. Errors as
//! `{"type":"error","error":{"type","message"}}`. `count_tokens` asks the participant for a
//! one-token generation and answers the prompt tokens its own tokenizer counted ([`count_answer`]).
//!
//! | Anthropic                          | OpenAI                                        |
//! |------------------------------------|-----------------------------------------------|
//! | `system` (text or text blocks)     | a `system` message                            |
//! | `text` / `image` blocks            | `content` parts (`image_url`, `data:` URLs)   |
//! | assistant `tool_use` blocks        | `tool_calls` (`input` as a JSON string)       |
//! | user `tool_result` blocks          | `tool` messages with their `tool_call_id`     |
//! | `tools` (`input_schema`), `tool_choice` | `tools` (`parameters`), `tool_choice`    |
//! | `max_tokens`, `stop_sequences`, `temperature`, `top_p` | the same, `stop`      |
//! | `stop_reason` `end_turn` / `max_tokens` / `tool_use` | `finish_reason` `stop` / `length` / `tool_calls` |
//! | `usage.input_tokens` / `output_tokens` | `usage.prompt_tokens` / `completion_tokens` (else events counted) |
//!
//! What has no OpenAI form (server tools, documents, `thinking` requests) is refused with a
//! 400 naming it, rather than dropped silently. Bounds as in [`super::ollama`].

use std::collections::VecDeque;
use std::io;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Translator, document_feed, sse_data, sse_feed, usage};

/// What a request to the Messages API asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Messages,
    /// `/v1/messages/count_tokens`.
    CountTokens,
}

/// A Messages request as an OpenAI chat completion.
#[derive(Debug)]
pub(crate) struct Translated {
    pub(crate) body: Bytes,
    pub(crate) stream: bool,
    pub(crate) model: String,
}

/// Translate a Messages request body. `Err` is the client's mistake, in words.
pub(crate) fn request(op: Op, body: &[u8]) -> Result<Translated, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("Invalid JSON: {e}"))?;
    let Value::Object(v) = v else {
        return Err("the request must be a JSON object".into());
    };
    let model = match v.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err("model: Field required".into()),
    };
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    let mut messages = Vec::new();
    match v.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) => {
            let text = texts(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(_) => return Err("system: must be a string or a list of text blocks".into()),
    }
    let Some(Value::Array(list)) = v.get("messages") else {
        return Err("messages: Field required (a list)".into());
    };
    for m in list {
        convert_message(m, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    let stream = match op {
        Op::CountTokens => {
            // One token is enough for the participant to count the prompt.
            out.insert("max_tokens".into(), json!(1));
            out.insert("stream".into(), json!(false));
            false
        }
        Op::Messages => {
            match v.get("max_tokens").and_then(Value::as_u64) {
                Some(n) if n > 0 => out.insert("max_tokens".into(), json!(n)),
                _ => return Err("max_tokens: Field required (a positive integer)".into()),
            };
            let stream = match v.get("stream") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err("stream: must be true or false".into()),
            };
            out.insert("stream".into(), json!(stream));
            if stream {
                out.insert("stream_options".into(), json!({"include_usage": true}));
            }
            for key in ["temperature", "top_p"] {
                if let Some(x) = v.get(key).filter(|x| x.is_number()) {
                    out.insert(key.into(), x.clone());
                }
            }
            match v.get("stop_sequences") {
                None | Some(Value::Null) => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                    if !a.is_empty() {
                        out.insert("stop".into(), Value::Array(a.clone()));
                    }
                }
                Some(_) => return Err("stop_sequences: must be a list of strings".into()),
            }
            stream
        }
    };
    if let Some(thinking) = v.get("thinking").filter(|t| !t.is_null())
        && thinking["type"] != "disabled"
    {
        return Err(
            "thinking: extended thinking cannot be asked of the room's participants (their servers speak OpenAI's API)"
                .into(),
        );
    }
    if let Some(tools) = v.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else {
            return Err("tools: must be a list".into());
        };
        let mut converted = Vec::with_capacity(tools.len());
        for t in tools {
            let name = t["name"].as_str().unwrap_or_default();
            let Some(schema) = t.get("input_schema").filter(|s| s.is_object()) else {
                return Err(format!(
                    "tools: {name:?} is a server tool (type {}); only client tools with an input_schema can be served by the room's participants",
                    t["type"]
                ));
            };
            let mut f = json!({"name": name, "parameters": schema});
            if let Some(d) = t.get("description").filter(|d| d.is_string()) {
                f["description"] = d.clone();
            }
            converted.push(json!({"type": "function", "function": f}));
        }
        if !converted.is_empty() {
            out.insert("tools".into(), Value::Array(converted));
        }
    }
    if let Some(choice) = v.get("tool_choice").filter(|c| !c.is_null()) {
        let mapped = match choice["type"].as_str() {
            Some("auto") => json!("auto"),
            Some("any") => json!("required"),
            Some("none") => json!("none"),
            Some("tool") => {
                json!({"type": "function", "function": {"name": choice["name"].as_str().unwrap_or_default()}})
            }
            _ => return Err("tool_choice: type must be auto, any, tool or none".into()),
        };
        out.insert("tool_choice".into(), mapped);
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())?;
    Ok(Translated {
        body: Bytes::from(body),
        stream,
        model,
    })
}

/// The text of a list of text blocks.
fn texts(blocks: &[Value], field: &str) -> Result<String, String> {
    let mut text = String::new();
    for b in blocks {
        match (b["type"].as_str(), b["text"].as_str()) {
            (Some("text"), Some(t)) => text.push_str(t),
            _ => return Err(format!("{field}: only text blocks are supported here")),
        }
    }
    Ok(text)
}

/// One Messages message as OpenAI messages (a user turn's tool results become `tool`
/// messages, before the rest of the turn).
fn convert_message(m: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let role = match m["role"].as_str() {
        Some(r @ ("user" | "assistant")) => r,
        _ => return Err("messages: each role must be user or assistant".into()),
    };
    let blocks = match &m["content"] {
        Value::String(s) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err("messages: content must be a string or a list of blocks".into()),
    };
    let mut parts = Vec::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => {
                parts.push(json!({"type": "text", "text": b["text"].as_str().unwrap_or_default()}))
            }
            Some("image") => {
                let source = &b["source"];
                let url = match source["type"].as_str() {
                    Some("base64") => format!(
                        "data:{};base64,{}",
                        source["media_type"].as_str().unwrap_or("image/png"),
                        source["data"].as_str().unwrap_or_default()
                    ),
                    Some("url") => source["url"].as_str().unwrap_or_default().to_string(),
                    _ => return Err("messages: an image source must be base64 or url".into()),
                };
                parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
            }
            Some("tool_use") if role == "assistant" => {
                let args = b
                    .get("input")
                    .map_or_else(|| "{}".to_string(), Value::to_string);
                calls.push(json!({
                    "id": b["id"].as_str().unwrap_or_default(), "type": "function",
                    "function": {"name": b["name"].as_str().unwrap_or_default(), "arguments": args},
                }));
            }
            Some("tool_result") if role == "user" => {
                let content = match &b["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(inner) => texts(inner, "tool_result")?,
                    Value::Null => String::new(),
                    _ => return Err("tool_result: content must be text".into()),
                };
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": b["tool_use_id"].as_str().unwrap_or_default(),
                    "content": content,
                }));
            }
            // The assistant's earlier reasoning is not sent back to another server.
            Some("thinking" | "redacted_thinking") if role == "assistant" => {}
            other => {
                return Err(format!(
                    "messages: content blocks of type {} cannot be served by the room's participants",
                    other.unwrap_or("(none)")
                ));
            }
        }
    }
    if parts.is_empty() && calls.is_empty() {
        return Ok(());
    }
    let content = if parts.iter().all(|p| p["type"] == "text") {
        Value::String(parts.iter().filter_map(|p| p["text"].as_str()).collect())
    } else {
        Value::Array(parts)
    };
    let mut msg = json!({"role": role, "content": content});
    if !calls.is_empty() {
        msg["tool_calls"] = Value::Array(calls);
    }
    out.push(msg);
    Ok(())
}

/// Anthropic's error `type` for an HTTP status.
pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// Anthropic's error document.
pub(crate) fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

/// The answer to `count_tokens` from the participant's answer to the one-token generation
/// (`status`, `body`): `{"input_tokens"}` from its `usage.prompt_tokens`, else an error with a
/// status that says so (502 when the participant answered without the count).
pub(crate) fn count_answer(status: u16, body: &[u8]) -> (u16, Value) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let message = v["error"]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .map_or_else(
                || format!("the participant answered {status}"),
                str::to_string,
            );
        return (status, error_body(status, &message));
    }
    match v["usage"]["prompt_tokens"].as_u64() {
        Some(n) => (200, json!({"input_tokens": n})),
        None => (
            502,
            error_body(
                502,
                "the participant did not report how many tokens the prompt has",
            ),
        ),
    }
}

/// A `msg_…` id, unique in this process.
fn message_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "msg_gambiarra_{:x}_{}",
        crate::types::now_ms(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The open content block of a stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Text(usize),
    /// A tool call (OpenAI's index) as this block.
    Tool(usize, usize),
}

/// An OpenAI answer (the relay's decoded body) as Anthropic's.
pub(crate) struct Out {
    model: String,
    id: String,
    /// Translating an SSE stream into events as it comes.
    events: bool,
    /// The client asked for events (a document then goes out as the events it makes).
    stream_asked: bool,
    status: u16,
    buf: Vec<u8>,
    ready: VecDeque<Bytes>,
    // A stream's state.
    open: Option<Block>,
    blocks: usize,
    /// OpenAI tool-call index → Anthropic block index.
    tools: Vec<usize>,
    output_events: u64,
    usage: Option<(u64, u64)>,
    finish_reason: Option<String>,
}

impl Out {
    /// For the upstream answer's body, decoded. `stream`: the client asked for the event
    /// stream; `events_in`: the answer is an SSE stream (a participant may answer a
    /// document whatever was asked: it is translated as the document it is, then sent as the
    /// events it makes when events were asked). An error status always answers one document.
    pub(crate) fn new(model: String, stream: bool, status: u16, events_in: bool) -> Out {
        let stream_asked = stream && (200..300).contains(&status);
        let events = stream_asked && events_in;
        let mut out = Out {
            model,
            id: message_id(),
            events,
            stream_asked,
            status,
            buf: Vec::new(),
            ready: VecDeque::new(),
            open: None,
            blocks: 0,
            tools: Vec::new(),
            output_events: 0,
            usage: None,
            finish_reason: None,
        };
        if events {
            let start = json!({
                "type": "message_start",
                "message": {
                    "id": out.id, "type": "message", "role": "assistant", "model": out.model,
                    "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                },
            });
            out.event("message_start", &start);
        }
        out
    }

    pub(crate) fn content_type(&self) -> &'static [u8] {
        if self.stream_asked {
            b"text/event-stream"
        } else {
            b"application/json"
        }
    }

    fn event(&mut self, name: &str, data: &Value) {
        let mut e = Vec::with_capacity(64);
        e.extend_from_slice(b"event: ");
        e.extend_from_slice(name.as_bytes());
        e.extend_from_slice(b"\ndata: ");
        e.extend_from_slice(&serde_json::to_vec(data).unwrap_or_default());
        e.extend_from_slice(b"\n\n");
        self.ready.push_back(Bytes::from(e));
    }

    fn close_block(&mut self) {
        if let Some(b) = self.open.take() {
            let index = match b {
                Block::Text(i) | Block::Tool(_, i) => i,
            };
            self.event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    /// One event of the upstream's SSE stream.
    fn sse_event(&mut self, v: Value) {
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage(u));
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        if let Some(r) = choice["finish_reason"].as_str() {
            self.finish_reason = Some(r.to_string());
        }
        let delta = &choice["delta"];
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let index = match self.open {
                Some(Block::Text(i)) => i,
                _ => {
                    self.close_block();
                    let i = self.blocks;
                    self.blocks += 1;
                    self.open = Some(Block::Text(i));
                    self.event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                    );
                    i
                }
            };
            self.output_events += 1;
            self.event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}}),
            );
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for call in calls {
                let n = call["index"].as_u64().unwrap_or(0) as usize;
                // An index far past the calls seen is not a real call: kept bounded.
                if n > self.tools.len() || n >= 128 {
                    continue;
                }
                if n == self.tools.len() {
                    self.close_block();
                    let i = self.blocks;
                    self.blocks += 1;
                    self.tools.push(i);
                    self.open = Some(Block::Tool(n, i));
                    let id = call["id"]
                        .as_str()
                        .map_or_else(|| format!("toolu_{}_{n}", self.id), str::to_string);
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    self.event(
                        "content_block_start",
                        &json!({"type": "content_block_start", "index": i,
                                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                    );
                }
                if let Some(args) = call["function"]["arguments"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                {
                    self.output_events += 1;
                    let index = self.tools[n];
                    self.event(
                        "content_block_delta",
                        &json!({"type": "content_block_delta", "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
        }
    }

    /// The upstream answer ended.
    fn finish(&mut self) {
        if self.events {
            if let Some(v) = sse_data(&std::mem::take(&mut self.buf)) {
                self.sse_event(v);
            }
            self.close_block();
            let output = self.usage.map_or(self.output_events, |u| u.1);
            let mut usage = json!({"output_tokens": output});
            // Known only now (OpenAI reports it last); the SDKs take it from here too.
            if let Some((input, _)) = self.usage {
                usage["input_tokens"] = json!(input);
            }
            let delta = json!({
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason(self.finish_reason.as_deref()), "stop_sequence": null},
                "usage": usage,
            });
            self.event("message_delta", &delta);
            self.event("message_stop", &json!({"type": "message_stop"}));
            return;
        }
        let doc = std::mem::take(&mut self.buf);
        let v: Value = serde_json::from_slice(&doc).unwrap_or(Value::Null);
        let answer = if !(200..300).contains(&self.status) {
            let message = v["error"]["message"]
                .as_str()
                .or_else(|| v["error"].as_str())
                .map_or_else(
                    || String::from_utf8_lossy(&doc).chars().take(1024).collect(),
                    str::to_string,
                );
            error_body(self.status, &message)
        } else {
            self.message(&v)
        };
        if self.stream_asked && answer["type"] == "message" {
            self.message_as_events(answer);
            return;
        }
        self.ready
            .push_back(Bytes::from(serde_json::to_vec(&answer).unwrap_or_default()));
    }

    /// A whole `message` as the events a stream of it would have been.
    fn message_as_events(&mut self, message: Value) {
        let mut start = message.clone();
        start["content"] = json!([]);
        start["stop_reason"] = Value::Null;
        start["usage"]["output_tokens"] = json!(0);
        self.event(
            "message_start",
            &json!({"type": "message_start", "message": start}),
        );
        for (index, block) in message["content"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let (empty, delta) = if block["type"] == "tool_use" {
                let mut empty = block.clone();
                empty["input"] = json!({});
                let partial = block["input"].to_string();
                (
                    empty,
                    json!({"type": "input_json_delta", "partial_json": partial}),
                )
            } else {
                (
                    json!({"type": "text", "text": ""}),
                    json!({"type": "text_delta", "text": block["text"]}),
                )
            };
            self.event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": index, "content_block": empty}),
            );
            self.event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            );
            self.event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
        self.event(
            "message_delta",
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": message["stop_reason"], "stop_sequence": null},
                    "usage": message["usage"]}),
        );
        self.event("message_stop", &json!({"type": "message_stop"}));
    }

    /// A whole OpenAI chat completion as a Messages `message`.
    fn message(&self, v: &Value) -> Value {
        let choice = &v["choices"][0];
        let message = &choice["message"];
        let mut content = Vec::new();
        if let Some(text) = message["content"].as_str().filter(|t| !t.is_empty()) {
            content.push(json!({"type": "text", "text": text}));
        }
        for (n, call) in message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let args = call["function"]["arguments"].as_str().unwrap_or("{}");
            let input = serde_json::from_str::<Value>(args)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            let id = call["id"]
                .as_str()
                .map_or_else(|| format!("toolu_{}_{n}", self.id), str::to_string);
            content.push(json!({"type": "tool_use", "id": id,
                                "name": call["function"]["name"].as_str().unwrap_or_default(),
                                "input": input}));
        }
        let (input, output) = v
            .get("usage")
            .filter(|u| u.is_object())
            .map_or((0, 0), usage);
        json!({
            "id": self.id, "type": "message", "role": "assistant", "model": self.model,
            "content": content,
            "stop_reason": stop_reason(choice["finish_reason"].as_str()),
            "stop_sequence": null,
            "usage": {"input_tokens": input, "output_tokens": output},
        })
    }
}

/// OpenAI's finish reasons in Anthropic's words.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        _ => "end_turn",
    }
}

impl Translator for Out {
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        if !self.events {
            return document_feed(&mut self.buf, data, self.status);
        }
        let mut buf = std::mem::take(&mut self.buf);
        let fed = sse_feed(&mut buf, data, |line| {
            if let Some(v) = sse_data(line) {
                self.sse_event(v);
            }
        });
        self.buf = buf;
        fed
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
    use crate::hub::translate::{Reads, Translation, drain};

    fn translated(op: Op, body: Value) -> Value {
        let t = request(op, body.to_string().as_bytes()).unwrap();
        serde_json::from_slice(&t.body).unwrap()
    }

    #[test]
    fn requests() {
        let v = translated(
            Op::Messages,
            json!({
                "model": "llama3", "max_tokens": 64, "stream": true, "stop_sequences": ["END"],
                "system": [{"type": "text", "text": "Be brief."}],
                "tools": [{"name": "weather", "description": "d", "input_schema": {"type": "object"}}],
                "tool_choice": {"type": "any"},
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAA"}}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "Let me see."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Recife"}}]},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "31°C"},
                        {"type": "text", "text": "And tomorrow?"}]},
                ],
            }),
        );
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["stop"], json!(["END"]));
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(
            v["tools"][0]["function"]["parameters"],
            json!({"type": "object"})
        );
        let m = v["messages"].as_array().unwrap();
        assert_eq!(m[0], json!({"role": "system", "content": "Be brief."}));
        assert_eq!(
            m[1]["content"][1]["image_url"]["url"],
            "data:image/jpeg;base64,AAA"
        );
        assert_eq!(m[2]["content"], "Let me see.");
        assert_eq!(
            m[2]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Recife\"}"
        );
        assert_eq!(
            m[3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "31°C"})
        );
        assert_eq!(m[4], json!({"role": "user", "content": "And tomorrow?"}));
        let count = translated(
            Op::CountTokens,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
        );
        assert_eq!(
            (count["max_tokens"].as_u64(), count["stream"].as_bool()),
            (Some(1), Some(false))
        );
        for bad in [
            json!({"model": "m", "messages": []}),
            json!({"model": "m", "max_tokens": 5}),
            json!({"max_tokens": 5, "messages": []}),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            json!({"model": "m", "max_tokens": 5, "messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ] {
            assert!(
                request(Op::Messages, bad.to_string().as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    /// What the translator makes of `reads` (the answer must not fail).
    fn run(stream: bool, status: u16, reads: &[&str]) -> String {
        let out = Out::new("llama3".into(), stream, status, stream);
        let reads = Reads::of(reads.iter().map(|r| r.to_string()));
        let (text, failed) = drain(&mut Translation::new(reads, out));
        assert!(failed.is_none(), "{failed:?}");
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn a_stream_becomes_events() {
        let text = run(
            true,
            200,
            &[
                "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_9\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
                "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4}}\n\ndata: [DONE]\n\n",
            ],
        );
        let events: Vec<(String, Value)> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once("\ndata: ").unwrap();
                (
                    name.trim_start_matches("event: ").to_string(),
                    serde_json::from_str(data).unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].1["message"]["model"], "llama3");
        assert_eq!(
            events[2].1["delta"],
            json!({"type": "text_delta", "text": "Hi"})
        );
        assert_eq!(events[4].1["content_block"]["id"], "call_9");
        assert_eq!(events[6].1["delta"]["partial_json"], ":1}");
        assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(events[8].1["usage"]["output_tokens"], 4);
        for (name, data) in &events {
            assert_eq!(data["type"], name.as_str());
        }
    }

    #[test]
    fn a_document_where_events_were_asked_becomes_events() {
        // The participant ignored `stream`: its document is translated, then sent as events.
        let reads = Reads::of([Bytes::from_static(
            br#"{"choices":[{"message":{"content":"hello","tool_calls":[{"id":"c","function":{"name":"f","arguments":"{\"x\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#,
        )]);
        let out = Out::new("m".into(), true, 200, false);
        assert_eq!(out.content_type(), b"text/event-stream");
        let (text, failed) = drain(&mut Translation::new(reads, out));
        assert!(failed.is_none());
        let text = String::from_utf8(text).unwrap();
        let names: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("event: ")?.split('\n').next())
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(
            text.contains(r#""delta":{"text":"hello","type":"text_delta"}"#),
            "{text}"
        );
        assert!(text.contains(r#""partial_json":"{\"x\":1}""#), "{text}");
        assert!(text.contains(r#""stop_reason":"tool_use""#), "{text}");
    }

    #[test]
    fn documents_counts_and_errors() {
        let m: Value = serde_json::from_str(&run(false,
            200,
            &[r#"{"choices":[{"message":{"role":"assistant","content":"hi","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"x\":2}"}}]},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#],
        ))
        .unwrap();
        assert_eq!(m["type"], "message");
        assert!(m["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(m["content"][0], json!({"type": "text", "text": "hi"}));
        assert_eq!(
            m["content"][1],
            json!({"type": "tool_use", "id": "c", "name": "f", "input": {"x": 2}})
        );
        assert_eq!(m["stop_reason"], "max_tokens");
        assert_eq!(m["usage"], json!({"input_tokens": 3, "output_tokens": 2}));
        assert_eq!(
            count_answer(
                200,
                br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":1}}"#
            ),
            (200, json!({"input_tokens": 12}))
        );
        assert_eq!(count_answer(200, b"data: {}").0, 502);
        assert_eq!(
            count_answer(500, br#"{"error":{"message":"x"}}"#).1["error"]["message"],
            "x"
        );
        let err: Value =
            serde_json::from_str(&run(true, 404, &[r#"{"error":{"message":"no"}}"#])).unwrap();
        assert_eq!(
            err,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "no"}})
        );
    }
}
