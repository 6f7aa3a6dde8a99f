//! `GET /metrics`: Prometheus text that follows the traffic.
#![cfg(feature = "tools")]

use std::time::Duration;

use crate::common::*;
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::json;

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn metrics_follow_the_traffic() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            tokens: 3,
            token_delay: Duration::from_millis(1),
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let code = room_code(addr, "metered").await;
    join(addr, &code, "p", &mock.url()).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    assert_eq!(
        req(addr, "POST", &path, Some(json!({"model": "p"})))
            .await
            .status,
        200
    );
    assert_eq!(
        req(
            addr,
            "POST",
            &path,
            Some(json!({"model": "p", "stream": true}))
        )
        .await
        .status,
        200
    );
    assert_eq!(
        req(
            addr,
            "POST",
            &path,
            Some(json!({"model": "p", "mock_status": 500}))
        )
        .await
        .status,
        500
    );
    assert_eq!(req(addr, "GET", "/nope", None).await.status, 404);
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;

    let r = req(addr, "GET", "/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(r.body).unwrap();
    assert_eq!(
        value(
            &text,
            r#"gambiarra_http_requests_total{route="create_room",status="201"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_http_requests_total{route="join",status="201"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_http_requests_total{route="proxy",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_http_requests_total{route="proxy",status="500"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_http_requests_total{route="not_found",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_proxied_requests_total{participant="p",outcome="ok"}"#
        ),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_proxied_requests_total{participant="p",outcome="error_status"}"#
        ),
        1.0
    );
    // 3 from usage (non-streaming) + 3 content events (streaming).
    assert_eq!(value(&text, "gambiarra_relayed_tokens_total"), 6.0);
    assert_eq!(
        value(&text, "gambiarra_time_to_first_token_seconds_count"),
        2.0
    );
    assert_eq!(
        value(
            &text,
            r#"gambiarra_proxied_request_duration_seconds_bucket{le="+Inf"}"#
        ),
        2.0
    );
    assert_eq!(
        value(&text, r#"gambiarra_participants{status="online"}"#),
        1.0
    );
    assert_eq!(value(&text, "gambiarra_event_subscribers"), 1.0);
    // This request and the event stream, at least.
    assert!(value(&text, "gambiarra_open_connections") >= 2.0);
    assert_eq!(value(&text, "gambiarra_http_requests_in_flight"), 1.0);
    hub.shutdown().await;
}

/// `llm:complete` reports what the server generated, whatever JSON style it writes: every
/// `mock-llm --style`, streamed (with and without a usage chunk) and not.
#[tokio::test]
async fn token_metrics_are_right_for_every_server_style() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "served-name".into(),
            tokens: 12,
            token_delay: Duration::from_millis(3),
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let code = room_code(addr, "styles").await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "served-name", "endpoint": mock.url()})),
    )
    .await;
    assert_eq!(r.status, 201);
    let mut sse = Sse::open(addr, &code, "").await.2;
    let path = format!("/rooms/{code}/v1/chat/completions");
    for style in [
        "compact",
        "spaced",
        "reasoning",
        "tool-calls",
        "usage-chunk",
    ] {
        for (stream, usage) in [(false, false), (true, false), (true, true)] {
            let mut body = json!({
                "model": "model:served-name", "stream": stream, "mock_style": style,
                "messages": [{"role": "user", "content": "hi"}],
            });
            if usage {
                body["stream_options"] = json!({"include_usage": true});
            }
            let r = req(addr, "POST", &path, Some(body)).await;
            assert_eq!(r.status, 200, "{style}");
            let request = sse.until("llm:request").await;
            assert_eq!(request.data["model"], "model:served-name");
            assert_eq!(request.data["servedModel"], "served-name");
            let done = sse.until("llm:complete").await;
            let m = &done.data["metrics"];
            let what = format!("{style}, stream {stream}, usage {usage}: {m}");
            assert_eq!(m["tokens"], 12, "{what}");
            assert_eq!(done.data["model"], "served-name", "{what}");
            if stream {
                assert!(
                    m["latencyFirstTokenMs"].as_u64() < m["durationMs"].as_u64(),
                    "{what}"
                );
                assert!(m["tokensPerSecond"].as_f64().unwrap() > 0.0, "{what}");
            }
        }
    }
    hub.shutdown().await;
}

/// The OpenAI Node SDK asks for base64 embeddings by default: the mock answers in kind.
#[tokio::test]
async fn base64_embeddings() {
    let mock = MockLlm::start("127.0.0.1:0".parse().unwrap(), MockConfig::default(), false)
        .await
        .unwrap();
    let r = req(
        mock.addr(),
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "m", "input": ["a", "b"], "encoding_format": "base64"})),
    )
    .await;
    let v = r.json();
    let b64 = v["data"][1]["embedding"].as_str().unwrap();
    // 5 little-endian f32s: 20 bytes, 28 base64 characters.
    assert_eq!(b64.len(), 28);
    let bytes = decode_base64(b64);
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(floats, vec![0.1, 0.2, 0.3, 0.4, 1.0]);
    let plain = req(
        mock.addr(),
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "m", "input": "a"})),
    )
    .await
    .json();
    assert!(plain["data"][0]["embedding"].is_array());
}

fn decode_base64(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        bits = bits << 6 | ABC.iter().position(|a| *a == c).unwrap() as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    out
}

/// SDKs stop reading at `data: [DONE]` and hang up; an upstream that sends its terminating
/// chunk a moment later has still answered in full: `llm:complete`, not `llm:error`.
#[tokio::test]
async fn a_client_hanging_up_after_done_got_a_complete_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hub = start_default().await;
    let addr = hub.local_addr();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 65536];
                let _ = s.read(&mut buf).await;
                let events = "data: {\"choices\": [{\"delta\": {\"content\": \"a\"}}]}\n\ndata: {\"choices\": [{\"delta\": {\"content\": \"b\"}}]}\n\ndata: [DONE]\n\n";
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{events}\r\n",
                    events.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = s.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let code = room_code(addr, "done").await;
    join(addr, &code, "p", &format!("http://{up}")).await;
    let mut sse = Sse::open(addr, &code, "").await.2;
    let mut c = Conn::open(addr).await;
    c.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(&json!({"model": "p", "stream": true})),
        "",
    ))
    .await;
    while find(&c.buf, b"[DONE]").is_none() {
        assert!(c.fill().await, "closed before [DONE]");
    }
    drop(c);
    let done = sse.until("llm:complete").await;
    assert_eq!(done.data["metrics"]["tokens"], 2);
    hub.shutdown().await;
}
