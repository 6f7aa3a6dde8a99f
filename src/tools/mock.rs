//! A fake OpenAI-compatible LLM server (`gambiarra mock-llm`), served by the project's own HTTP
//! layer: chat completions (streaming and not), completions, embeddings, `/v1/models` and
//! Ollama's own API (`/api/tags`, `/api/ps`, and `/api/chat`, `/api/generate`, `/api/embed`
//! answered natively, NDJSON streams included), Anthropic's Messages API (its event stream
//! included, and `count_tokens`), and OpenAI's Responses API (not streamed). It lets anyone try a hub without a GPU, and it
//! is the upstream of the tests and benchmarks. Its models and which of them are "loaded" can change
//! while it runs ([`MockLlm::set_models`], [`MockLlm::set_loaded`]), as with `ollama pull`.
//!
//! It records every request it receives (head and body bytes) and counts streams that ended
//! early because the other side went away. Test-only behaviour is asked for in the request
//! body, since a hub forwards the body untouched: `"mock_status": 500` answers with that status,
//! `"mock_die_after": 3` drops the connection after three tokens, `"mock_tokens"` and
//! `"mock_delay_ms"` override the token count and delay, `"mock_style"` the [`Style`].
//!
//! With `slots` it answers llama.cpp's `GET /props` (`total_slots`), as the agent probes. With
//! `prefill_us_per_byte`, it models prompt processing and a KV cache: the first token waits that
//! long per byte of prompt that is not the head of one of its last `kv_cache` prompts (by the
//! hub's own prefix chain, see [`prefix_chain`]), so routing that reuses caches shows
//! reproducibly. It counts the requests it runs at once, and the most ever
//! ([`MockLlm::max_active`]).
//!
//! [`prefix_chain`]: crate::hub::proxy::rewrite::prefix_chain
//!
//! Real servers differ in how they write the same JSON, and the hub's metrics must be right for
//! all of them: the [`Style`]s reproduce what they send (spacing, reasoning deltas, tool-call
//! deltas, a usage chunk nobody asked for). Embeddings honour `encoding_format: "base64"`
//! (little-endian `f32`s, as OpenAI sends them and its Node SDK asks by default).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};

use crate::http::{self, Body, BodyStream, Handler, Method, Peer, Request, RequestHead, Response};

/// How the mock writes its JSON, after the servers it stands in for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Style {
    /// `{"a":1,"b":2}`, as Node, Go and Rust servers write it (Ollama's OpenAI API, vLLM).
    #[default]
    Compact,
    /// `{"a": 1, "b": 2}`, as Python's `json.dumps` writes it (llama-cpp-python, LM Studio's
    /// older builds).
    Spaced,
    /// A reasoning model: the first half of the tokens as `delta.reasoning_content`.
    Reasoning,
    /// A tool call: the tokens stream as `delta.tool_calls[0].function.arguments`.
    ToolCalls,
    /// A final `usage` chunk in every stream, asked for or not (llama.cpp's own server).
    UsageChunk,
}

impl std::str::FromStr for Style {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "compact" => Style::Compact,
            "spaced" => Style::Spaced,
            "reasoning" => Style::Reasoning,
            "tool-calls" => Style::ToolCalls,
            "usage-chunk" => Style::UsageChunk,
            other => {
                return Err(format!(
                    "unknown style {other:?} (compact, spaced, reasoning, tool-calls, usage-chunk)"
                ));
            }
        })
    }
}

/// Behaviour of a mock.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// The model name it serves.
    pub model: String,
    /// More models it lists after `model`.
    pub more_models: Vec<String>,
    /// The models `/api/ps` lists as loaded in memory.
    pub loaded: Vec<String>,
    /// Tokens per completion.
    pub tokens: u32,
    /// Delay between streamed tokens.
    pub token_delay: Duration,
    /// How its JSON looks (a request's `"mock_style"` overrides it).
    pub style: Style,
    /// Parallel slots it reports on `/props` (none: it answers 404 there, as non-llama.cpp
    /// servers do).
    pub slots: Option<u32>,
    /// Prompt processing time per byte of prompt not found in its KV cache (0: none).
    pub prefill_us_per_byte: f64,
    /// Prompts its KV cache holds (the most recent).
    pub kv_cache: usize,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            model: "llama3".into(),
            more_models: Vec::new(),
            loaded: Vec::new(),
            tokens: 50,
            token_delay: Duration::from_millis(20),
            style: Style::Compact,
            slots: None,
            prefill_us_per_byte: 0.0,
            kv_cache: 4,
        }
    }
}

/// JSON in a style: compact as serde writes it, or spaced like Python's `json.dumps`.
fn encode(v: &Value, style: Style) -> Vec<u8> {
    if style != Style::Spaced {
        return serde_json::to_vec(v).unwrap_or_default();
    }
    struct Spaced;
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    // Serialising a `Value` into memory cannot fail.
    let _ = serde::Serialize::serialize(v, &mut ser);
    out
}

/// Standard base64 (with padding), for `encoding_format: "base64"` embeddings.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub head: RequestHead,
    pub body: Bytes,
    /// The connection it came on (a reused connection keeps its port).
    pub peer: SocketAddr,
}

#[derive(Default)]
struct Stats {
    requests: Mutex<Vec<Recorded>>,
    cancelled: AtomicU64,
    completed: AtomicU64,
    record: bool,
    /// Generations running now, and the most ever at once.
    active: AtomicU64,
    max_active: AtomicU64,
    /// Prompt bytes seen, and those of them not found in the KV cache (prefill model).
    prompt_bytes: AtomicU64,
    prefilled_bytes: AtomicU64,
    /// The prompts in its KV cache, most recent first (prefix chains).
    kv: Mutex<std::collections::VecDeque<Vec<crate::hub::proxy::rewrite::PrefixBlock>>>,
}

/// One generation running; counted until dropped.
struct Active(Arc<Stats>);

impl Active {
    fn start(stats: &Arc<Stats>) -> Active {
        let now = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_active.fetch_max(now, Ordering::SeqCst);
        Active(stats.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stats {
    /// Prompt processing for `body` against the KV cache model: the bytes of its prompt not
    /// found as the head of a cached prompt; the prompt then becomes the most recent.
    fn uncached(&self, body: &[u8], keep: usize) -> u64 {
        use crate::hub::proxy::rewrite::{prefix_chain, scan};
        let Ok(scanned) = scan(body) else { return 0 };
        let chain = prefix_chain(body, &scanned);
        let total = chain.last().map_or(0, |b| u64::from(b.end));
        let mut kv = crate::sync::lock(&self.kv);
        let held = kv
            .iter()
            .map(|cached| {
                cached
                    .iter()
                    .zip(&chain)
                    .take_while(|(a, b)| a == b)
                    .last()
                    .map_or(0, |(_, b)| u64::from(b.end))
            })
            .max()
            .unwrap_or(0);
        kv.push_front(chain);
        kv.truncate(keep.max(1));
        self.prompt_bytes.fetch_add(total, Ordering::Relaxed);
        self.prefilled_bytes
            .fetch_add(total - held, Ordering::Relaxed);
        total - held
    }
}

struct MockService {
    config: MockConfig,
    stats: Arc<Stats>,
    catalog: Arc<Mutex<Catalog>>,
}

/// What the mock lists: its models and the loaded ones.
#[derive(Clone, Debug, Default)]
struct Catalog {
    models: Vec<String>,
    loaded: Vec<String>,
}

/// A running mock.
pub struct MockLlm {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    stats: Arc<Stats>,
    catalog: Arc<Mutex<Catalog>>,
}

impl MockLlm {
    /// Start on `addr` (port 0 for a free one). `record`: keep every request (tests).
    pub async fn start(addr: SocketAddr, config: MockConfig, record: bool) -> io::Result<MockLlm> {
        let listener = tokio::net::TcpListener::from_std(http::server::bind(addr)?)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats {
            record,
            ..Stats::default()
        });
        let (tx, rx) = watch::channel(false);
        let mut models = vec![config.model.clone()];
        models.extend(config.more_models.iter().cloned());
        let catalog = Arc::new(Mutex::new(Catalog {
            models,
            loaded: config.loaded.clone(),
        }));
        let service = Arc::new(MockService {
            config,
            stats: stats.clone(),
            catalog: catalog.clone(),
        });
        let server_config = Arc::new(http::limits::ServerConfig {
            shutdown_grace: Duration::from_secs(1),
            // A load tool's connections all come from one address: a stand-in for a model
            // server bounds none of them (the hub's default of 512 turned most of 1,000
            // streams into 429s).
            max_connections_per_ip: 0,
            ..http::limits::ServerConfig::default()
        });
        let task = tokio::spawn(http::server::serve(listener, service, server_config, rx));
        Ok(MockLlm {
            addr,
            shutdown: tx,
            task,
            stats,
            catalog,
        })
    }

    /// Change the models it lists (a model pulled or removed).
    pub fn set_models(&self, models: &[&str]) {
        crate::sync::lock(&self.catalog).models = models.iter().map(|m| m.to_string()).collect();
    }

    /// Change which models `/api/ps` lists as loaded.
    pub fn set_loaded(&self, loaded: &[&str]) {
        crate::sync::lock(&self.catalog).loaded = loaded.iter().map(|m| m.to_string()).collect();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the endpoint to register.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far (when recording).
    pub fn requests(&self) -> Vec<Recorded> {
        crate::sync::lock(&self.stats.requests).clone()
    }

    /// Streams abandoned by the client before their end.
    pub fn cancelled(&self) -> u64 {
        self.stats.cancelled.load(Ordering::SeqCst)
    }

    /// Completions answered in full.
    pub fn completed(&self) -> u64 {
        self.stats.completed.load(Ordering::SeqCst)
    }

    /// The most generations it ever ran at once.
    pub fn max_active(&self) -> u64 {
        self.stats.max_active.load(Ordering::SeqCst)
    }

    /// (prompt bytes seen, bytes of them processed: not in the modelled KV cache).
    pub fn prefill(&self) -> (u64, u64) {
        (
            self.stats.prompt_bytes.load(Ordering::Relaxed),
            self.stats.prefilled_bytes.load(Ordering::Relaxed),
        )
    }

    /// Generations running now.
    pub fn active(&self) -> u64 {
        self.stats.active.load(Ordering::SeqCst)
    }

    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        let _ = self.task.await;
    }
}

fn json_response(status: u16, v: &Value) -> Response {
    Response::json(status, Bytes::from(v.to_string()))
}

fn styled_response(status: u16, v: &Value, style: Style) -> Response {
    Response::json(status, Bytes::from(encode(v, style)))
}

fn now_secs() -> u64 {
    crate::types::now_ms() / 1000
}

impl Handler for MockService {
    type Admitted = ();

    async fn admit(&self, _head: &RequestHead, _peer: &Peer) -> Result<((), usize), Response> {
        Ok(((), crate::hub::V1_BODY_LIMIT))
    }

    async fn handle(&self, req: Request, _admitted: (), peer: &Peer) -> Response {
        if self.stats.record {
            crate::sync::lock(&self.stats.requests).push(Recorded {
                head: req.head.clone(),
                body: req.body.clone(),
                peer: peer.addr,
            });
        }
        let path = req.head.path().trim_end_matches('/');
        let catalog = crate::sync::lock(&self.catalog).clone();
        let listed = |names: &[String]| -> Vec<Value> {
            names
                .iter()
                .map(|m| json!({"name": m, "model": m, "size": 0}))
                .collect()
        };
        match (req.head.method, path) {
            (Method::Get, "/v1/models" | "/models") => {
                let data: Vec<Value> = catalog
                    .models
                    .iter()
                    .map(|m| json!({"id": m, "object": "model", "created": now_secs(), "owned_by": "gambiarra-mock"}))
                    .collect();
                json_response(200, &json!({"object": "list", "data": data}))
            }
            (Method::Get, "/api/tags") => {
                json_response(200, &json!({"models": listed(&catalog.models)}))
            }
            (Method::Get, "/api/ps") => {
                json_response(200, &json!({"models": listed(&catalog.loaded)}))
            }
            (Method::Get, "/health" | "/") => json_response(200, &json!({"status": "ok"})),
            (Method::Get, "/props") if self.config.slots.is_some() => json_response(
                200,
                &json!({"total_slots": self.config.slots, "model_path": self.config.model,
                        "default_generation_settings": {"n_ctx": 4096}}),
            ),
            (
                Method::Post,
                "/v1/chat/completions"
                | "/v1/completions"
                | "/v1/embeddings"
                | "/v1/responses"
                | "/v1/messages"
                | "/v1/messages/count_tokens"
                | "/api/chat"
                | "/api/generate"
                | "/api/embed"
                | "/api/embeddings",
            ) => {
                let body: Value = match serde_json::from_slice(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        return json_response(
                            400,
                            &json!({"error": {"message": format!("invalid JSON: {e}"), "type": "invalid_request_error"}}),
                        );
                    }
                };
                let active = Active::start(&self.stats);
                // Prompt processing: time for what the KV cache does not hold.
                let prefill = if self.config.prefill_us_per_byte > 0.0 {
                    let bytes = self.stats.uncached(&req.body, self.config.kv_cache);
                    Duration::from_secs_f64(bytes as f64 * self.config.prefill_us_per_byte / 1e6)
                } else {
                    Duration::ZERO
                };
                if !prefill.is_zero() {
                    tokio::time::sleep(prefill).await;
                }
                self.complete(path, &body, active)
            }
            _ => json_response(
                404,
                &json!({"error": {"message": "not found", "type": "not_found_error"}}),
            ),
        }
    }
}

impl MockService {
    /// A chat stream of `tokens` tokens in `form`, compact, at the configured pace, without
    /// test behaviour; `active` counts it until it ends.
    fn token_stream(&self, form: Form, model: String, tokens: u32, active: Active) -> TokenStream {
        TokenStream {
            form,
            chat: true,
            style: Style::Compact,
            model,
            tokens,
            delay: self.config.token_delay,
            die_after: None,
            usage: false,
            next: 0,
            sleep: None,
            finished: false,
            stats: self.stats.clone(),
            _active: Some(active),
        }
    }

    fn complete(&self, path: &str, body: &Value, active: Active) -> Response {
        if let Some(status) = body.get("mock_status").and_then(Value::as_u64) {
            return json_response(
                status as u16,
                &json!({"error": {"message": format!("mock says {status}"), "type": "server_error"}}),
            );
        }
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(&self.config.model)
            .to_string();
        if path.starts_with("/api/") {
            return self.ollama(path, body, model, active);
        }
        if path.starts_with("/v1/messages") {
            return self.anthropic(path, body, model, active);
        }
        if path == "/v1/responses" {
            // OpenAI's Responses API, not streamed: one message of output text.
            self.stats.completed.fetch_add(1, Ordering::SeqCst);
            let text: String = (0..self.config.tokens)
                .map(|i| format!("tok{i} "))
                .collect();
            return json_response(
                200,
                &json!({
                    "id": "resp_mock", "object": "response", "created_at": now_secs(),
                    "status": "completed", "model": model,
                    "output": [{"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant",
                                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": 5, "output_tokens": self.config.tokens,
                              "total_tokens": self.config.tokens + 5},
                }),
            );
        }
        let style = body
            .get("mock_style")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.config.style);
        if path == "/v1/embeddings" {
            let inputs = match body.get("input") {
                Some(Value::Array(a)) => a.len(),
                _ => 1,
            };
            let base64_wanted =
                body.get("encoding_format").and_then(Value::as_str) == Some("base64");
            let data: Vec<Value> = (0..inputs)
                .map(|i| {
                    let vector = [0.1f32, 0.2, 0.3, 0.4, i as f32];
                    let embedding = if base64_wanted {
                        let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                        json!(base64(&bytes))
                    } else {
                        json!(vector)
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            self.stats.completed.fetch_add(1, Ordering::SeqCst);
            return styled_response(
                200,
                &json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
                style,
            );
        }
        let tokens = body
            .get("mock_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(self.config.tokens as u64) as u32;
        let delay = body
            .get("mock_delay_ms")
            .and_then(Value::as_u64)
            .map(Duration::from_millis)
            .unwrap_or(self.config.token_delay);
        let chat = path == "/v1/chat/completions";
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            let usage = body
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true)
                || style == Style::UsageChunk;
            let mut stream = self.token_stream(Form::OpenAi, model, tokens, active);
            stream.chat = chat;
            stream.style = style;
            stream.delay = delay;
            stream.usage = usage;
            stream.die_after = body
                .get("mock_die_after")
                .and_then(Value::as_u64)
                .map(|n| n as u32);
            return Response::new(200)
                .header("Content-Type", Bytes::from_static(b"text/event-stream"))
                .header("Cache-Control", Bytes::from_static(b"no-cache"))
                .body(Body::Stream(Box::new(stream)));
        }
        let text: String = (0..tokens).map(|i| format!("tok{i} ")).collect();
        let choice = if chat && style == Style::ToolCalls {
            let args: String = (0..tokens).map(|i| tool_arguments(i, tokens)).collect();
            json!({"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_mock", "type": "function", "function": {"name": "lookup", "arguments": args}}]}})
        } else if chat {
            json!({"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}})
        } else {
            json!({"index": 0, "finish_reason": "stop", "text": text})
        };
        self.stats.completed.fetch_add(1, Ordering::SeqCst);
        styled_response(
            200,
            &json!({
                "id": "chatcmpl-mock", "object": if chat { "chat.completion" } else { "text_completion" },
                "created": now_secs(), "model": model, "choices": [choice],
                "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
            }),
            style,
        )
    }
}

impl MockService {
    /// Anthropic's Messages API: a message (streamed as its events when asked), and
    /// `count_tokens`.
    fn anthropic(&self, path: &str, body: &Value, model: String, active: Active) -> Response {
        if path.ends_with("/count_tokens") {
            return json_response(200, &json!({"input_tokens": 5}));
        }
        if body.get("max_tokens").and_then(Value::as_u64).is_none() {
            return json_response(
                400,
                &json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}}),
            );
        }
        if body.get("stream").and_then(Value::as_bool) == Some(true) {
            let stream = self.token_stream(Form::Anthropic, model, self.config.tokens, active);
            return Response::new(200)
                .header("Content-Type", Bytes::from_static(b"text/event-stream"))
                .body(Body::Stream(Box::new(stream)));
        }
        self.stats.completed.fetch_add(1, Ordering::SeqCst);
        let text: String = (0..self.config.tokens)
            .map(|i| format!("tok{i} "))
            .collect();
        json_response(
            200,
            &json!({"id": "msg_mock", "type": "message", "role": "assistant", "model": model,
                    "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
                    "stop_sequence": null, "usage": {"input_tokens": 5, "output_tokens": self.config.tokens}}),
        )
    }

    /// Ollama's own API: `/api/chat` and `/api/generate` (streamed as NDJSON unless
    /// `"stream": false`, as Ollama does), `/api/embed`, `/api/embeddings`.
    fn ollama(&self, path: &str, body: &Value, model: String, active: Active) -> Response {
        let created = crate::hub::translate::ollama::rfc3339_now();
        if path == "/api/embed" || path == "/api/embeddings" {
            self.stats.completed.fetch_add(1, Ordering::SeqCst);
            let inputs = match body.get("input") {
                Some(Value::Array(a)) => a.len(),
                _ => 1,
            };
            let vector = |i: usize| json!([0.1, 0.2, 0.3, 0.4, i as f64]);
            return if path == "/api/embed" {
                let embeddings: Vec<Value> = (0..inputs).map(vector).collect();
                json_response(
                    200,
                    &json!({"model": model, "embeddings": embeddings, "prompt_eval_count": inputs}),
                )
            } else {
                json_response(200, &json!({"embedding": vector(0)}))
            };
        }
        let tokens = body
            .get("options")
            .and_then(|o| o.get("num_predict"))
            .and_then(Value::as_u64)
            .map_or(self.config.tokens, |n| {
                n.min(u64::from(self.config.tokens)) as u32
            });
        let chat = path == "/api/chat";
        if body.get("stream").and_then(Value::as_bool) != Some(false) {
            let mut stream = self.token_stream(Form::Ollama, model, tokens, active);
            stream.chat = chat;
            return Response::new(200)
                .header("Content-Type", Bytes::from_static(b"application/x-ndjson"))
                .body(Body::Stream(Box::new(stream)));
        }
        self.stats.completed.fetch_add(1, Ordering::SeqCst);
        let text: String = (0..tokens).map(|i| format!("tok{i} ")).collect();
        let mut v = json!({"model": model, "created_at": created, "done": true, "done_reason": "stop",
            "prompt_eval_count": 5, "eval_count": tokens, "total_duration": 1000, "eval_duration": 500});
        if chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        json_response(200, &v)
    }
}

/// The `i`th piece of the mock tool call's arguments: together, `{"q":"tok0 tok1 … "}`.
fn tool_arguments(i: u32, tokens: u32) -> String {
    let open = if i == 0 { "{\"q\":\"" } else { "" };
    let close = if i + 1 == tokens { "\"}" } else { "" };
    format!("{open}tok{i} {close}")
}

/// A streamed completion: one SSE event per token, `delay` apart (or, `ollama`, one NDJSON
/// line per token and a `done` line, as Ollama's own API streams).
struct TokenStream {
    /// Whose stream it writes.
    form: Form,
    chat: bool,
    style: Style,
    model: String,
    tokens: u32,
    delay: Duration,
    die_after: Option<u32>,
    usage: bool,
    /// Next event: 0..tokens tokens, then the finish event, usage, `[DONE]`.
    next: u32,
    sleep: Option<std::pin::Pin<Box<Sleep>>>,
    finished: bool,
    stats: Arc<Stats>,
    /// The generation, counted while it streams.
    _active: Option<Active>,
}

/// The API a token stream is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    OpenAi,
    Ollama,
    Anthropic,
}

impl TokenStream {
    /// Anthropic's events: `message_start` and the text block's start with the first token,
    /// a `content_block_delta` per token, then the block's stop, `message_delta` and
    /// `message_stop` together.
    fn anthropic_event(&self, i: u32) -> Option<Bytes> {
        let event = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
        let mut out = String::new();
        if i == 0 {
            out.push_str(&event(
                "message_start",
                json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 5, "output_tokens": 1}}}),
            ));
            out.push_str(&event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
        }
        if i < self.tokens {
            out.push_str(&event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("tok{i} ")}}),
            ));
        } else if i == self.tokens {
            out.push_str(&event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            out.push_str(&event(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": self.tokens}}),
            ));
            out.push_str(&event("message_stop", json!({"type": "message_stop"})));
        } else {
            return None;
        }
        Some(Bytes::from(out))
    }

    fn ollama_line(&self, i: u32) -> Option<Bytes> {
        let created = crate::hub::translate::ollama::rfc3339_now();
        let mut v = json!({"model": self.model, "created_at": created});
        let text = if i < self.tokens {
            v["done"] = json!(false);
            format!("tok{i} ")
        } else if i == self.tokens {
            v["done"] = json!(true);
            v["done_reason"] = json!("stop");
            v["prompt_eval_count"] = json!(5);
            v["eval_count"] = json!(self.tokens);
            String::new()
        } else {
            return None;
        };
        if self.chat {
            v["message"] = json!({"role": "assistant", "content": text});
        } else {
            v["response"] = json!(text);
        }
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Some(Bytes::from(line))
    }

    fn event(&self, i: u32) -> Option<Bytes> {
        match self.form {
            Form::Ollama => return self.ollama_line(i),
            Form::Anthropic => return self.anthropic_event(i),
            Form::OpenAi => {}
        }
        let object = if self.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let base = |choices: Value| json!({"id": "chatcmpl-mock", "object": object, "created": now_secs(), "model": self.model, "choices": choices});
        let v = if i < self.tokens {
            let text = format!("tok{i} ");
            if self.chat {
                let delta = match self.style {
                    Style::Reasoning if i < self.tokens / 2 => json!({"reasoning_content": text}),
                    // The arguments, over all the events, are one JSON object.
                    Style::ToolCalls if i == 0 => {
                        let args = tool_arguments(i, self.tokens);
                        json!({"tool_calls": [{"index": 0, "id": "call_mock", "type": "function", "function": {"name": "lookup", "arguments": args}}]})
                    }
                    Style::ToolCalls => {
                        let args = tool_arguments(i, self.tokens);
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]})
                    }
                    _ => json!({"content": text}),
                };
                base(json!([{"index": 0, "delta": delta, "finish_reason": null}]))
            } else {
                base(json!([{"index": 0, "text": text, "finish_reason": null}]))
            }
        } else if i == self.tokens {
            if self.chat {
                let reason = if self.style == Style::ToolCalls {
                    "tool_calls"
                } else {
                    "stop"
                };
                base(json!([{"index": 0, "delta": {}, "finish_reason": reason}]))
            } else {
                base(json!([{"index": 0, "text": "", "finish_reason": "stop"}]))
            }
        } else if i == self.tokens + 1 && self.usage {
            let mut v = base(json!([]));
            v["usage"] = json!({"prompt_tokens": 5, "completion_tokens": self.tokens, "total_tokens": self.tokens + 5});
            v
        } else if i <= self.tokens + 2 {
            return Some(Bytes::from_static(b"data: [DONE]\n\n"));
        } else {
            return None;
        };
        let mut line = b"data: ".to_vec();
        line.extend_from_slice(&encode(&v, self.style));
        line.extend_from_slice(b"\n\n");
        Some(Bytes::from(line))
    }
}

impl BodyStream for TokenStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            if self.die_after.is_some_and(|d| self.next >= d) {
                self.finished = true;
                return Poll::Ready(Some(Err(io::Error::other("mock told to die"))));
            }
            // Tokens after the first wait `delay`.
            if self.next > 0 && self.next < self.tokens && !self.delay.is_zero() {
                let sleep = self.sleep.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + self.delay))
                });
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            let i = self.next;
            self.next += 1;
            if i == self.tokens + 1 && !self.usage && self.form == Form::OpenAi {
                continue;
            }
            return match self.event(i) {
                Some(b) => Poll::Ready(Some(Ok(b))),
                None => {
                    if !self.finished {
                        self.finished = true;
                        self.stats.completed.fetch_add(1, Ordering::SeqCst);
                    }
                    Poll::Ready(None)
                }
            };
        }
    }
}

impl Drop for TokenStream {
    fn drop(&mut self) {
        if !self.finished {
            self.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}
