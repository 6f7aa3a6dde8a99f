//! The OpenAI-compatible proxy over real sockets, with the mock LLM as upstream.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::{Value, json};

async fn mock(model: &str, tokens: u32, delay_ms: u64) -> MockLlm {
    MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: model.into(),
            tokens,
            token_delay: Duration::from_millis(delay_ms),
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap()
}

async fn join_as(
    addr: SocketAddr,
    code: &str,
    id: &str,
    model: &str,
    endpoint: &str,
    config: Value,
) {
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": id, "nickname": format!("nick-{id}"), "model": model, "endpoint": endpoint, "config": config})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
}

async fn chat(addr: SocketAddr, code: &str, body: Value) -> Resp {
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(body),
    )
    .await
}

/// Send a chat request on a fresh connection; the caller reads the answer as it needs.
async fn send_chat(addr: SocketAddr, code: &str, body: Value) -> Conn {
    let mut c = Conn::open(addr).await;
    c.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(&body),
        "",
    ))
    .await;
    c
}

async fn room(addr: SocketAddr) -> String {
    create_room(addr, "proxy").await["code"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn routing_patterns() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let (a, b) = (mock("alpha", 2, 0).await, mock("beta", 3, 0).await);
    let code = room(addr).await;
    join_as(addr, &code, "pa", "alpha:7b", &a.url(), json!({})).await;
    join_as(addr, &code, "pb", "beta", &b.url(), json!({})).await;
    for (model, want_upstream) in [
        ("pa", "a"),
        ("pb", "b"),
        ("model:alpha:7b", "a"),
        ("model:beta", "b"),
        ("beta", "b"),
        ("alpha:7b", "a"),
    ] {
        let before = (a.requests().len(), b.requests().len());
        let r = chat(addr, &code, json!({"model": model, "messages": []})).await;
        assert_eq!(r.status, 200, "{model}: {}", r.error());
        let after = (a.requests().len(), b.requests().len());
        let hit = if after.0 > before.0 { "a" } else { "b" };
        assert_eq!(hit, want_upstream, "model={model}");
        // The upstream saw its own model name.
        assert_eq!(
            r.json()["model"],
            if hit == "a" { "alpha:7b" } else { "beta" }
        );
    }
    for any in ["*", "any"] {
        let before = (a.requests().len(), b.requests().len());
        for _ in 0..10 {
            assert_eq!(chat(addr, &code, json!({"model": any})).await.status, 200);
        }
        let (da, db) = (a.requests().len() - before.0, b.requests().len() - before.1);
        // Idle participants tie; ties rotate.
        assert_eq!((da, db), (5, 5), "model={any}");
    }
    // Nothing matches.
    let r = chat(addr, &code, json!({"model": "model:gamma"})).await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "No available participant for the requested model"
    );
    let r = chat(addr, &code, json!({"model": "gamma"})).await;
    assert_eq!(r.status, 404);
    // Room unknown.
    let r = chat(addr, "ZZZZZZ", json!({"model": "*"})).await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    // Completions and embeddings route the same way, to the right upstream path.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/completions"),
        Some(json!({"model": "pa", "prompt": "x"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(a.requests().last().unwrap().head.path(), "/v1/completions");
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/embeddings"),
        Some(json!({"model": "pb", "input": ["x", "y"]})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    assert_eq!(b.requests().last().unwrap().head.path(), "/v1/embeddings");
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_400() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room(addr).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    for (raw, want) in [
        (&b"{not json"[..], "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"[1]", "JSON object"),
        (br#"{"messages":[]}"#, "Missing required field: model"),
        (br#"{"model":7}"#, "model must be a string"),
    ] {
        let mut c = Conn::open(addr).await;
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                raw.len()
            )
            .as_bytes(),
        )
        .await;
        c.send(raw).await;
        let r = c.read_response().await.unwrap();
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        assert!(r.error().contains(want), "{} vs {want}", r.error());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn rewrite_is_byte_exact_and_applies_config_defaults() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("llama3:8b", 1, 0).await;
    let code = room(addr).await;
    join_as(
        addr,
        &code,
        "p1",
        "llama3:8b",
        &(up.url() + "/v1/"),
        json!({"temperature": 0.2, "max_tokens": 64, "stop": ["###"]}),
    )
    .await;
    let big = "é🦀 ".repeat(1024 * 1024 / 7);
    let body = format!(
        "{{ \"messages\" :[{{\"role\":\"user\",\"content\":\"{big}\\n\\u00e9 \\\"model\\\":\\\"x\\\"\"}}] ,\n\t\"temperature\" : 1.25,\r\n \"model\"   :   \"p1\"   , \"extra\": {{\"model\": \"keep\"}} }}"
    );
    assert!(body.len() > 1_000_000);
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nAuthorization: Bearer room-secret\r\nCookie: s=1\r\nUser-Agent: test-agent/1\r\nAccept: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(body.as_bytes()).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let got = up.requests().pop().unwrap();
    let expected = body.replacen("\"p1\"", "\"llama3:8b\"", 1);
    let expected = format!(
        "{},\"max_tokens\":64,\"stop\":[\"###\"]}}",
        expected.strip_suffix('}').unwrap()
    );
    assert_eq!(got.body.len(), expected.len());
    assert!(
        got.body == expected.as_bytes(),
        "the upstream body differs beyond the model and defaults"
    );
    // Only what the request needs goes upstream.
    let h = &got.head;
    assert_eq!(h.path(), "/v1/chat/completions");
    assert_eq!(
        h.header_str("host"),
        Some(up.url().trim_start_matches("http://"))
    );
    assert_eq!(
        h.header_str("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(h.header_str("user-agent"), Some("test-agent/1"));
    // curl -d labels JSON as a form; the participant gets the type the body really has.
    assert_eq!(h.header_str("content-type"), Some("application/json"));
    assert_eq!(h.header_str("accept"), Some("application/json"));
    assert_eq!(
        h.header("authorization"),
        None,
        "a room password must never reach a participant"
    );
    assert_eq!(h.header("cookie"), None);
    hub.shutdown().await;
}

#[tokio::test]
async fn streaming_is_incremental() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 4, 300).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    let mut c = send_chat(addr, &code, json!({"model": "p", "stream": true})).await;
    let (status, headers) = c.read_head().await.unwrap();
    assert_eq!(status, 200);
    let ct = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .unwrap();
    assert_eq!(ct.1, "text/event-stream");
    // The first token arrives on its own, long before the upstream has finished (tokens are
    // 300 ms apart): nothing is buffered.
    let first = c.read_chunk().await.unwrap();
    assert!(String::from_utf8_lossy(&first).contains("tok0"));
    assert!(!String::from_utf8_lossy(&first).contains("tok1"));
    assert_eq!(up.completed(), 0, "the upstream should still be generating");
    let mut rest = Vec::new();
    loop {
        let chunk = c.read_chunk().await.expect("stream ends cleanly");
        if chunk.is_empty() {
            break;
        }
        rest.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(rest).unwrap();
    assert!(text.contains("tok3") && text.trim_end().ends_with("data: [DONE]"));
    // The connection is reusable after a complete stream.
    assert_eq!(c.request("GET", "/health", None).await.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 100, 100).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;
    let mut c = send_chat(addr, &code, json!({"model": "p", "stream": true})).await;
    c.read_head().await.unwrap();
    c.read_chunk().await.unwrap();
    drop(c);
    // The upstream stream is abandoned (the mock sees its client go away) long before its
    // 10 s of tokens are done.
    eventually(
        "the upstream stops generating for a client that left",
        async || up.cancelled() == 1,
    )
    .await;
    assert_eq!(sse.until("llm:request").await.data["participantId"], "p");
    let e = sse.until("llm:error").await;
    assert!(
        e.data["error"]
            .as_str()
            .unwrap()
            .contains("Client disconnected")
    );
    // The participant is idle again.
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"][0]["status"], "online");
    hub.shutdown().await;
}

#[tokio::test]
async fn upstream_death_truncates_the_stream() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 10, 0).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;
    let mut c = send_chat(
        addr,
        &code,
        json!({"model": "p", "stream": true, "mock_die_after": 3}),
    )
    .await;
    let (status, _) = c.read_head().await.unwrap();
    assert_eq!(status, 200);
    let mut text = String::new();
    let clean = loop {
        match c.read_chunk().await {
            Some(chunk) if chunk.is_empty() => break true,
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            None => break false,
        }
    };
    assert!(
        !clean,
        "a truncated stream must not end with the terminating chunk"
    );
    assert!(text.contains("tok2") && !text.contains("[DONE]"));
    let e = sse.until("llm:error").await;
    assert_eq!(e.data["participantId"], "p");
    assert!(
        e.data["error"].as_str().unwrap().contains("mid-answer"),
        "{}",
        e.data
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn events_carry_metrics() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 7, 5).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;
    // Streaming: tokens counted from content events.
    let r = chat(addr, &code, json!({"model": "model:m", "stream": true})).await;
    assert_eq!(r.status, 200);
    let e = sse.until("llm:request").await;
    // `model` is what the client asked for (the seed's field), `servedModel` what runs.
    assert_eq!(
        e.data,
        json!({"participantId": "p", "model": "model:m", "servedModel": "m"})
    );
    let e = sse.until("llm:complete").await;
    assert_eq!(e.data["participantId"], "p");
    assert_eq!(e.data["model"], "m");
    assert_eq!(e.data["requested"], "model:m");
    let m = &e.data["metrics"];
    assert_eq!(m["tokens"], 7);
    assert!(m["durationMs"].as_u64().unwrap() >= 30, "{m}");
    assert!(m["latencyFirstTokenMs"].as_u64().unwrap() <= m["durationMs"].as_u64().unwrap());
    assert!(m["tokensPerSecond"].as_f64().unwrap() > 0.0);
    // Streaming with usage reported: usage wins.
    chat(addr, &code, json!({"model": "p", "stream": true, "stream_options": {"include_usage": true}, "mock_tokens": 3})).await;
    assert_eq!(sse.until("llm:complete").await.data["metrics"]["tokens"], 3);
    // Non-streaming: usage.completion_tokens.
    chat(addr, &code, json!({"model": "p", "mock_tokens": 11})).await;
    assert_eq!(
        sse.until("llm:complete").await.data["metrics"]["tokens"],
        11
    );
    // An upstream error status passes through and is an llm:error.
    let r = chat(addr, &code, json!({"model": "p", "mock_status": 503})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "mock says 503");
    let e = sse.until("llm:error").await;
    assert!(e.data["error"].as_str().unwrap().contains("503"));
    hub.shutdown().await;
}

#[tokio::test]
async fn least_loaded_spread_and_busy_status() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let (slow, fast) = (mock("m", 30, 100).await, mock("m", 1, 0).await);
    let code = room(addr).await;
    join_as(addr, &code, "slow", "m", &slow.url(), json!({})).await;
    join_as(addr, &code, "fast", "m", &fast.url(), json!({})).await;
    // Pin a long request on `slow`.
    let mut c = send_chat(addr, &code, json!({"model": "slow", "stream": true})).await;
    c.read_head().await.unwrap();
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    let statuses: Vec<(String, String)> = r.json()["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().into(),
                p["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("slow".into(), "busy".into()),
            ("fast".into(), "online".into())
        ]
    );
    // Busy participants are still offered, and counted busy in their model's entry.
    let r = req(addr, "GET", &format!("/rooms/{code}/v1/models"), None).await;
    let data = r.json()["data"].as_array().unwrap().clone();
    let models = data.iter().filter(|m| m["owned_by"] == "gambiarra").count();
    assert_eq!((models, data.len()), (1, 3));
    assert_eq!(
        data[0]["gambiarra"]["participants"],
        json!({"online": 2, "busy": 1, "loaded": 0})
    );
    // While `slow` is busy, every `*` request goes to the idle one.
    for _ in 0..6 {
        assert_eq!(chat(addr, &code, json!({"model": "*"})).await.status, 200);
    }
    assert_eq!(fast.requests().len(), 6);
    assert_eq!(slow.requests().len(), 1);
    drop(c);
    hub.shutdown().await;
}

#[tokio::test]
async fn failover_and_three_strikes() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 1, 0).await;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let code = room(addr).await;
    join_as(addr, &code, "dead", "m", &dead, json!({})).await;
    join_as(addr, &code, "live", "m", &up.url(), json!({})).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;
    // Named by id: no failover, 502.
    let r = chat(addr, &code, json!({"model": "dead"})).await;
    assert_eq!(r.status, 502);
    assert!(r.error().starts_with("Participant unreachable"));
    let e = sse.until("llm:error").await;
    assert_eq!(e.data["participantId"], "dead");
    // By model: whenever `dead` is picked, the request fails over to `live` and succeeds.
    for _ in 0..4 {
        let r = chat(addr, &code, json!({"model": "m"})).await;
        assert_eq!(r.status, 200, "{}", r.error());
    }
    // Three consecutive failures took `dead` offline, announced once.
    let e = sse.until("participant:offline").await;
    assert_eq!(e.data["participantId"], "dead");
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"][0]["status"], "offline");
    // An offline participant named by id is 503.
    let r = chat(addr, &code, json!({"model": "dead"})).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["message"], "Participant is offline");
    // Its next health check brings it back.
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/health"),
        Some(json!({"id": "dead"})),
    )
    .await;
    assert_eq!(
        sse.until("participant:online").await.data["participantId"],
        "dead"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock("m", 2, 0).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    for stream in [false, true, false, true] {
        assert_eq!(
            chat(addr, &code, json!({"model": "p", "stream": stream}))
                .await
                .status,
            200
        );
    }
    // Sequential requests reused one keep-alive connection: the mock saw them all come from
    // the same hub-side port.
    let ports: std::collections::HashSet<_> = up.requests().iter().map(|r| r.peer).collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    hub.shutdown().await;
}

#[tokio::test]
async fn ttfb_timeout_is_504() {
    let config = HubConfig {
        ttfb_timeout: Duration::from_millis(200),
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let addr = hub.local_addr();
    // An upstream that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &url, json!({})).await;
    let r = chat(addr, &code, json!({"model": "p"})).await;
    assert_eq!(r.status, 504);
    assert_eq!(
        r.json()["error"]["message"],
        "Participant did not answer in time"
    );
    hold.abort();
    hub.shutdown().await;
}

#[tokio::test]
async fn client_that_stops_reading_is_cut_off() {
    let mut config = HubConfig::default();
    config.server.write_timeout = Duration::from_millis(300);
    let hub = start(config).await;
    let addr = hub.local_addr();
    // An answer far larger than any socket buffer, as fast as possible.
    let up = mock("m", 1_000_000, 0).await;
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &up.url(), json!({})).await;
    let mut c = Conn::open_small_rcvbuf(addr).await;
    c.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(&json!({"model": "p", "stream": true})),
        "",
    ))
    .await;
    // Read nothing. Once the hub's writes stop making progress for the write timeout, it
    // closes the connection and the upstream with it.
    eventually(
        "a client that stopped reading no longer keeps the upstream generating",
        async || up.cancelled() == 1,
    )
    .await;
    drop(c);
    // Everyone else is served as usual.
    assert_eq!(
        chat(addr, &code, json!({"model": "p", "mock_tokens": 2}))
            .await
            .status,
        200
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn pooled_connection_closed_by_participant_is_retried_fresh() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // A participant that answers one request per connection and then closes it, without
    // saying `Connection: close`: the hub pools the connection, and the next request finds it
    // dead.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while find(&got, b"\r\n\r\n").is_none() {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = br#"{"choices":[{"message":{"content":"once"}}]}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body).await;
                // Close after a moment, as an idle timeout would.
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    let code = room(addr).await;
    join_as(addr, &code, "p", "m", &url, json!({})).await;
    for _ in 0..3 {
        let r = chat(addr, &code, json!({"model": "p"})).await;
        assert_eq!(r.status, 200, "{}", r.error());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 3);
    server.abort();
    hub.shutdown().await;
}

#[tokio::test]
async fn the_responses_api_goes_only_to_participants_that_speak_it() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "responses").await;
    let (speaks, not) = (quick_mock().await, quick_mock().await);
    let path = format!("/rooms/{code}/v1/responses");
    let ask = json!({"model": "llama3", "input": "hi"});
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "chat-only", "nickname": "c", "model": "llama3", "endpoint": not.url(), "protocols": ["ollama"]})),
    )
    .await;
    assert_eq!(r.status, 201);
    // Nobody speaks it: 501, in OpenAI's shape, naming what the room speaks.
    let r = req(addr, "POST", &path, Some(ask.clone())).await;
    assert_eq!(r.status, 501);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "not_implemented");
    assert!(e["message"].as_str().unwrap().contains("ollama"), "{e}");
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "modern", "nickname": "m", "model": "llama3", "endpoint": speaks.url(), "protocols": ["responses"]})),
    )
    .await;
    assert_eq!(r.status, 201);
    // Now it goes to the one that speaks it, every time, as it came.
    for _ in 0..3 {
        let r = req(addr, "POST", &path, Some(ask.clone())).await;
        assert_eq!(r.status, 200, "{}", r.error());
        assert_eq!(r.json()["object"], "response");
    }
    assert_eq!((speaks.requests().len(), not.requests().len()), (3, 0));
    assert_eq!(speaks.requests()[0].head.path(), "/v1/responses");
    // Named by id, one that does not speak it cannot take it.
    let r = req(
        addr,
        "POST",
        &path,
        Some(json!({"model": "chat-only", "input": "hi"})),
    )
    .await;
    assert_eq!(r.status, 404);
    hub.shutdown().await;
}
