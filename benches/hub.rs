//! Hot paths of the hub without sockets: parsing a request head and routing it, encoding an SSE
//! event, fanning one event out to many subscribers, and decoding a chunked body.
//!
//! Run: `cargo bench --bench hub`. Results and the machine are recorded in BENCHMARKS.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gambiarra::http::body::ChunkedDecoder;
use gambiarra::http::head::parse_request;
use gambiarra::http::sse::encode_event;
use gambiarra::hub::events::EventLog;
use gambiarra::hub::router::route;

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
                gambiarra::http::Method::Post,
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
            let mut rxs: Vec<_> = (0..subs).map(|_| log.subscribe(None, 4).rx).collect();
            b.iter(|| {
                log.publish("participant:joined", black_box(data));
                for rx in rxs.iter_mut() {
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

criterion_group!(benches, head_and_route, sse, chunked);
criterion_main!(benches);
