//! Hot paths of the hub without sockets: parsing a request head and routing it, encoding an SSE
//! event, fanning one event out to many subscribers, and decoding a chunked body.
//!
//! Run: `cargo bench --bench hub`. Results and the machine are recorded in BENCHMARKS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gambiarra::internals::BodyKind;
use gambiarra::internals::ChunkedDecoder;
use gambiarra::internals::EventLog;
use gambiarra::internals::encode_event;
use gambiarra::internals::parse_request;
use gambiarra::internals::route;

const CHAT_HEAD: &[u8] = b"POST /rooms/ABC234/v1/chat/completions HTTP/1.1\r\n\
Host: 192.168.1.10:3000\r\nUser-Agent: OpenAI/Python 1.54.0\r\nAccept: application/json\r\n\
Content-Type: application/json\r\nAuthorization: Bearer sk-no-key\r\n\
X-Stainless-Lang: python\r\nX-Stainless-Package-Version: 1.54.0\r\nContent-Length: 180\r\n\r\n";

fn head_and_route(c: &mut Criterion) {
    let mut g = c.benchmark_group("head");
    g.throughput(Throughput::Bytes(CHAT_HEAD.len() as u64));
    // Baseline: httparse alone, the floor our parser (framing rules, header offsets) sits on.
    g.bench_function("httparse_baseline", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            black_box(req.parse(black_box(CHAT_HEAD)).unwrap())
        })
    });
    g.bench_function("parse_chat_head", |b| {
        b.iter(|| {
            let parts = parse_request(black_box(CHAT_HEAD)).unwrap().unwrap();
            black_box(parts.len)
        })
    });
    g.bench_function("parse_freeze_route", |b| {
        let raw = Bytes::from_static(CHAT_HEAD);
        b.iter(|| {
            let parts = parse_request(black_box(&raw)).unwrap().unwrap();
            let len = parts.len;
            let head = parts.freeze(raw.slice(..len));
            black_box(route(head.method, head.path()));
        })
    });
    g.finish();
    c.bench_function("route_only", |b| {
        b.iter(|| {
            black_box(route(
                gambiarra::internals::Method::Post,
                black_box("/rooms/ABC234/v1/chat/completions"),
            ))
        })
    });
}

fn sse(c: &mut Criterion) {
    let data = br#"{"id":"550e8400-e29b-41d4-a716-446655440000","nickname":"Alice","model":"llama3.2:3b","endpoint":"http://localhost:11434","specs":{},"config":{},"status":"online","joinedAt":1709409600000,"lastSeen":1709409600000}"#;
    c.bench_function("sse_encode_joined", |b| {
        b.iter(|| {
            black_box(encode_event(
                Some(1_709_409_600_000_123),
                "participant:joined",
                black_box(data),
            ))
        })
    });
    let mut g = c.benchmark_group("sse_fanout");
    for subs in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(subs as u64));
        g.bench_function(format!("publish_to_{subs}"), |b| {
            let mut log = EventLog::new(1, 256);
            // Each subscriber's queue is drained every iteration so none is evicted.
            let rxs: Vec<_> = (0..subs).map(|_| log.subscribe(None, 4).mailbox).collect();
            b.iter(|| {
                log.publish("participant:joined", black_box(data));
                for rx in rxs.iter() {
                    black_box(rx.try_recv().unwrap());
                }
            })
        });
    }
    g.finish();
}

fn chunked(c: &mut Criterion) {
    let mut body = Vec::new();
    let token = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"tok "}}]}"#;
    for _ in 0..200 {
        body.extend_from_slice(format!("{:x}\r\n", token.len() + 2).as_bytes());
        body.extend_from_slice(token);
        body.extend_from_slice(b"\n\n\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let mut g = c.benchmark_group("chunked");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("decode_200_token_stream", |b| {
        b.iter(|| {
            let mut d = ChunkedDecoder::new();
            let mut n = 0;
            let p = d.feed(black_box(&body), |s| n += s.len()).unwrap();
            assert!(p.done);
            black_box(n)
        })
    });
    g.finish();
}

/// A chat body of about `content` bytes, as SDKs send it.
fn chat_body(content: usize) -> Bytes {
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(content / 45 + 1);
    Bytes::from(format!(
        r#"{{"model":"model:llama3","messages":[{{"role":"system","content":"You are helpful."}},{{"role":"user","content":"{text}"}}],"temperature":0.7,"stream":true}}"#
    ))
}

fn rewrite(c: &mut Criterion) {
    let config: gambiarra::types::GenerationConfig =
        serde_json::from_str(r#"{"temperature":0.2,"max_tokens":512,"top_p":0.9}"#).unwrap();
    let defaults = gambiarra::internals::rewrite::Defaults::new("llama3:8b", &config);
    let mut g = c.benchmark_group("rewrite");
    for size in [512usize, 64 * 1024, 1024 * 1024] {
        let body = chat_body(size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("scan_splice_{}", body.len()), |b| {
            b.iter(|| {
                let scan = gambiarra::internals::rewrite::scan(black_box(&body)).unwrap();
                black_box(gambiarra::internals::rewrite::splice(
                    &body, &scan, &defaults,
                ))
            })
        });
        // Baseline: what a proxy that re-serialises would pay just to parse the body.
        g.bench_function(format!("serde_value_parse_{}", body.len()), |b| {
            b.iter(|| {
                black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
            })
        });
    }
    // What a cache-aware room adds: the prompt's prefix chain, on a 6-turn conversation with
    // a 1.5 KB system prompt (as benches/cache_routing.sh sends).
    let mut messages = vec![serde_json::json!({"role": "system", "content": "s".repeat(1500)})];
    for t in 0..6 {
        messages.push(
            serde_json::json!({"role": "user", "content": format!("question {t} ").repeat(20)}),
        );
        messages.push(
            serde_json::json!({"role": "assistant", "content": format!("answer {t} ").repeat(20)}),
        );
    }
    let conversation = Bytes::from(
        serde_json::json!({"model": "llama3", "stream": true, "messages": messages}).to_string(),
    );
    g.throughput(Throughput::Bytes(conversation.len() as u64));
    let scan = gambiarra::internals::rewrite::scan(&conversation).unwrap();
    g.bench_function(format!("prefix_chain_{}", conversation.len()), |b| {
        b.iter(|| {
            black_box(gambiarra::internals::rewrite::prefix_chain(
                black_box(&conversation),
                &scan,
            ))
        })
    });
    g.bench_function(format!("scan_splice_{}", conversation.len()), |b| {
        b.iter(|| {
            let scan = gambiarra::internals::rewrite::scan(black_box(&conversation)).unwrap();
            black_box(gambiarra::internals::rewrite::splice(
                &conversation,
                &scan,
                &defaults,
            ))
        })
    });
    g.finish();
}

fn token_stream() -> Vec<u8> {
    let token = br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama3","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}"#;
    let mut body = Vec::new();
    for _ in 0..200 {
        body.extend_from_slice(format!("{:x}\r\n", token.len() + 2).as_bytes());
        body.extend_from_slice(token);
        body.extend_from_slice(b"\n\n\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

fn relay(c: &mut Criterion) {
    let wire = token_stream();
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    // The token scanner alone over the de-chunked payload.
    let mut payload = Vec::new();
    ChunkedDecoder::new()
        .feed(&wire, |d| payload.extend_from_slice(d))
        .unwrap();
    g.bench_function("token_scanner_200_tokens", |b| {
        b.iter(|| {
            let mut s = gambiarra::internals::TokenScanner::new(BodyKind::Sse);
            s.feed(black_box(&payload));
            black_box(s.tokens())
        })
    });
    // What the relay does per upstream read: walk the chunk framing, scan the payload, and
    // split the read off as a `Bytes` for the client (no copy). One read per token.
    g.bench_function("chunk_relay_200_reads", |b| {
        let reads: Vec<&[u8]> = {
            let mut v = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = rest.len().min(wire.len() / 200 + 1);
                v.push(&rest[..n]);
                rest = &rest[n..];
            }
            v
        };
        b.iter(|| {
            let mut dec = ChunkedDecoder::new();
            let mut scanner = gambiarra::internals::TokenScanner::new(BodyKind::Sse);
            let mut buf = bytes::BytesMut::with_capacity(4096);
            let mut out = 0;
            for r in &reads {
                buf.extend_from_slice(r); // stands in for the socket read
                let p = dec.feed(&buf, |d| scanner.feed(d)).unwrap();
                out += buf.split_to(p.consumed).freeze().len();
            }
            black_box((out, scanner.tokens()))
        })
    });
    // Translation (Ollama's or Anthropic's API in front of an OpenAI participant): the same
    // 200-token stream, one read per event, decoded, through the answer translator (parse
    // each event, write the dialect's line or events). Compare with token_scanner_200_tokens,
    // what a passthrough does to the same bytes.
    let events: Vec<bytes::Bytes> = payload
        .split_inclusive(|b| *b == b'\n')
        .collect::<Vec<_>>()
        .chunks(2)
        .map(|c| bytes::Bytes::from(c.concat()))
        .collect();
    for (name, anthropic) in [
        ("translate_ollama_200_tokens", false),
        ("translate_anthropic_200_tokens", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                black_box(gambiarra::internals::fuzzing::translate_answer(
                    black_box(&events),
                    anthropic,
                ))
            })
        });
    }
    g.finish();
}

/// Typical stream events, as three real servers write them (150–400 bytes).
const EVENTS: [(&str, &str); 3] = [
    (
        "compact_180",
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732000000,"model":"llama3","choices":[{"index":0,"delta":{"content":" world"},"finish_reason":null}]}"#,
    ),
    (
        "spaced_260",
        r#"{"id": "chatcmpl-5b0c0d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e", "object": "chat.completion.chunk", "created": 1732000000, "model": "smollm2", "choices": [{"index": 0, "delta": {"content": " world"}, "logprobs": null, "finish_reason": null}]}"#,
    ),
    (
        "tool_call_400",
        r#"{"id":"chatcmpl-7f8e9d0c1b2a","object":"chat.completion.chunk","created":1732000000,"model":"qwen2.5:7b","system_fingerprint":"fp_ollama","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc123","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Porto Alegre\", \"unit\": \"celsius\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    ),
];

/// The metrics scanner per stream event: the JSON-parsing scanner, the substring scanner it
/// replaced (kept here, below, to measure both in one run), and the two JSON parsers on the
/// design card parsing the same bytes.
fn scanner(c: &mut Criterion) {
    use gambiarra::internals::TokenScanner;
    let mut g = c.benchmark_group("scanner");
    g.throughput(Throughput::Elements(1));
    for (name, event) in EVENTS {
        let line = format!("data: {event}\n\n");
        g.bench_function(format!("json_scanner/{name}"), |b| {
            let mut s = TokenScanner::new(BodyKind::Sse);
            b.iter(|| s.feed(black_box(line.as_bytes())))
        });
        g.bench_function(format!("substring_scanner_before/{name}"), |b| {
            let mut s = legacy::Scanner::default();
            b.iter(|| s.feed(black_box(line.as_bytes())))
        });
        g.bench_function(format!("parse_serde_json/{name}"), |b| {
            b.iter(|| serde_json::from_slice::<serde::de::IgnoredAny>(black_box(event.as_bytes())))
        });
        g.bench_function(format!("parse_simd_json/{name}"), |b| {
            // simd-json parses in place: it needs its own mutable copy of the bytes.
            let mut buf = event.as_bytes().to_vec();
            b.iter(|| {
                buf.copy_from_slice(event.as_bytes());
                simd_json::serde::from_slice::<serde::de::IgnoredAny>(black_box(&mut buf)).is_ok()
            })
        });
    }
    g.finish();
}

/// The substring scanner the JSON one replaced (from `hub/tokens.rs` before [2 of 8]): it
/// looked for `"content":"` and missed servers that write `"content": "`.
mod legacy {
    use memchr::memmem;

    #[derive(Default)]
    pub struct Scanner {
        carry: Vec<u8>,
        pub content_chunks: u64,
        pub usage_tokens: Option<u64>,
    }

    impl Scanner {
        pub fn feed(&mut self, mut data: &[u8]) {
            while let Some(nl) = memchr::memchr(b'\n', data) {
                let (line, rest) = data.split_at(nl);
                data = &rest[1..];
                if self.carry.is_empty() {
                    self.line(line);
                } else {
                    self.carry.extend_from_slice(line);
                    let joined = std::mem::take(&mut self.carry);
                    self.line(&joined);
                }
            }
            self.carry.extend_from_slice(data);
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
            }
            if let Some(i) = memmem::rfind(payload, b"\"completion_tokens\":") {
                let digits: Vec<u8> = payload[i + 20..]
                    .iter()
                    .skip_while(|c| c.is_ascii_whitespace())
                    .take_while(|c| c.is_ascii_digit())
                    .copied()
                    .collect();
                self.usage_tokens = std::str::from_utf8(&digits)
                    .ok()
                    .and_then(|d| d.parse().ok());
            }
        }
    }

    fn has_text(hay: &[u8], key: &[u8]) -> bool {
        memmem::find_iter(hay, key).any(|i| hay.get(i + key.len()).is_some_and(|&c| c != b'"'))
    }
}

/// A protected room's password check: Argon2id once (what the first request pays), then the
/// remembered digest (what every later request pays).
fn password(c: &mut Criterion) {
    use gambiarra::internals::{Auth, RoomSecrets, hash_password, verify_password};
    let hash = hash_password("correct horse battery staple").unwrap();
    let mut g = c.benchmark_group("password");
    g.sample_size(10);
    g.bench_function("argon2id_verify", |b| {
        b.iter(|| verify_password(&hash, b"correct horse battery staple"))
    });
    g.finish();
    let auth = Auth::new(None).unwrap();
    let secrets = RoomSecrets::new(Some(hash), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    rt.block_on(auth.check_password(&secrets, Some(b"correct horse battery staple"), ip))
        .unwrap();
    c.bench_function("password/remembered_check", |b| {
        b.iter(|| auth.check_remembered(&secrets, b"correct horse battery staple"))
    });
}

criterion_group!(
    benches,
    head_and_route,
    sse,
    chunked,
    rewrite,
    relay,
    scanner,
    password
);
criterion_main!(benches);
