//! Hostile peers, over real sockets: each test is a defect an attacker found (see issue
//! "Hostile peers"), reproduced as the attacker did it, and what the hub does now.
#![cfg(feature = "tools")]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gambiarra::HubConfig;
use gambiarra::mock::{MockConfig, MockLlm};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn mock() -> MockLlm {
    MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "m".into(),
            tokens: 3,
            token_delay: Duration::ZERO,
        },
        true,
    )
    .await
    .unwrap()
}

fn join_body(id: &str, model: &str, endpoint: &str) -> Value {
    json!({"id": id, "nickname": id, "model": model, "endpoint": endpoint})
}

/// An upstream that reads one request (head and Content-Length body) per connection and
/// answers each with `answer`, then closes.
async fn raw_upstream(answer: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                read_request(&mut s).await;
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Read one request's head and Content-Length body.
async fn read_request(s: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                return buf;
            }
        }
        match s.read(&mut tmp).await {
            Ok(0) | Err(_) => return buf,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

async fn room_with(addr: SocketAddr, id: &str, model: &str, endpoint: &str) -> String {
    let code = create_room(addr, "r").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(join_body(id, model, endpoint)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    code
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn reserved_ids_cannot_be_joined_and_wildcards_never_reach_an_id() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock().await;
    let code = room_with(addr, "honest", "m", &up.url()).await;
    for id in ["*", "any", "ANY", "model:m", "Model:x"] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(join_body(id, "m", &up.url())),
        )
        .await;
        assert_eq!(r.status, 400, "{id}: {}", r.error());
        assert!(r.error().contains("reserved"), "{}", r.error());
    }
    // "*", "any" and "model:m" are served by the one real participant.
    for model in ["*", "any", "model:m"] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(chat(model)),
        )
        .await;
        assert_eq!(r.status, 200, "{model}: {}", r.error());
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn an_online_id_cannot_be_taken_but_an_offline_one_can() {
    let hub = start(HubConfig {
        health_interval: Duration::from_millis(20),
        participant_timeout: Duration::from_millis(100),
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = room_with(addr, "victim", "m", "http://127.0.0.1:1").await;
    let path = format!("/rooms/{code}/join");
    let thief = join_body("victim", "m", "http://127.0.0.1:2");
    let r = req(addr, "POST", &path, Some(thief.clone())).await;
    assert_eq!(r.status, 403, "{}", r.error());
    // Health checks need no secret (they only say "alive"), so the seed's CLI still works.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/health"),
        Some(json!({"id": "victim"})),
    )
    .await;
    assert_eq!(r.status, 200);
    // Silent past the timeout: offline, and the id is free for a new registration.
    let mut sse = Sse::open(addr, &code, "").await.2;
    sse.until("participant:offline").await;
    let r = req(addr, "POST", &path, Some(thief)).await;
    assert_eq!(r.status, 201, "{}", r.error());
    assert_eq!(r.json()["participant"]["endpoint"], "http://127.0.0.1:2");
    hub.shutdown().await;
}

#[tokio::test]
async fn duplicate_model_keys_are_refused_before_anything_is_sent() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock().await;
    let code = room_with(addr, "p", "m", &up.url()).await;
    let body = br#"{"model":"p","model":"*","messages":[]}"#;
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    c.send(body).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().contains("Duplicate"), "{}", r.error());
    assert!(up.requests().is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn upstream_heads_are_bounded_and_statuses_checked() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // A complete head of ~130 KB.
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..60 {
        huge.extend_from_slice(format!("X-Pad-{i}: {}\r\n", "a".repeat(2200)).as_bytes());
    }
    huge.extend_from_slice(b"Content-Length: 2\r\n\r\n{}");
    let odd = b"HTTP/1.1 999 Strange\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    for (answer, what) in [(huge, "oversized head"), (odd, "status 999")] {
        let up = raw_upstream(answer).await;
        let code = room_with(addr, "p", "m", &format!("http://{up}")).await;
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(chat("p")),
        )
        .await;
        assert_eq!(r.status, 502, "{what}: {}", r.error());
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_non_chunked_coding_is_read_to_the_close() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // Content-Length says 3, but a Transfer-Encoding other than chunked means "until close".
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabcdef"
            .to_vec(),
    )
    .await;
    let code = room_with(addr, "p", "m", &format!("http://{up}")).await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(chat("p")),
    )
    .await;
    assert_eq!((r.status, &r.body[..]), (200, &b"abcdef"[..]));
    hub.shutdown().await;
}

#[tokio::test]
async fn host_header_head_requests_and_absolute_targets() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    for (raw, status) in [
        ("GET /health HTTP/1.1\r\n\r\n", 400),
        ("GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET /health HTTP/1.0\r\n\r\n", 200),
        (
            "GET http://hub.example/health HTTP/1.1\r\nHost: hub.example\r\n\r\n",
            200,
        ),
    ] {
        let mut c = Conn::open(addr).await;
        c.send(raw.as_bytes()).await;
        assert_eq!(c.read_response().await.unwrap().status, status, "{raw:?}");
    }
    // HEAD: GET's head without its body; the next request on the connection is read right.
    let mut c = Conn::open(addr).await;
    c.send(b"HEAD /rooms HTTP/1.1\r\nHost: t\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let (status, headers) = c.read_head().await.unwrap();
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("content-length") && v != "0")
    );
    let next = c.read_response().await.unwrap();
    assert_eq!(next.json()["status"], "ok");
    hub.shutdown().await;
}

#[tokio::test]
async fn bytes_sent_after_an_answer_never_reach_the_next_client() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // Each connection: a proper keep-alive answer, then, a moment later and unasked, a second
    // "answer" meant for whoever is next on the pooled connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    if read_request(&mut s).await.is_empty() {
                        return;
                    }
                    let good = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"ok\":1} ";
                    if s.write_all(good).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let evil = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"evil\":1} ";
                    if s.write_all(evil).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let code = room_with(addr, "p", "m", &format!("http://{up}")).await;
    for _ in 0..3 {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(chat("p")),
        )
        .await;
        assert_eq!(r.json(), json!({"ok": 1}));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    hub.shutdown().await;
}
