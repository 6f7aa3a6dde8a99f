//! The HTTP/1.1 layer over real sockets: keep-alive, pipelining, chunked request bodies,
//! 100-continue, HTTP/1.0, and what happens at every bound.

use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::hub::{CONTROL_BODY_LIMIT, V1_BODY_LIMIT};
use gambiarra::internals::MAX_HEAD_BYTES;
use serde_json::json;

#[tokio::test]
async fn keep_alive_many_requests() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    for _ in 0..50 {
        let r = c.request("GET", "/health", None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_answered_in_order() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    let mut burst = Vec::new();
    burst.extend(build("POST", "/rooms", Some(&json!({"name": "one"})), ""));
    burst.extend(build("GET", "/health", None, ""));
    burst.extend(build("POST", "/rooms", Some(&json!({"name": "two"})), ""));
    burst.extend(build("GET", "/nope", None, ""));
    burst.extend(build("GET", "/rooms", None, ""));
    c.send(&burst).await;
    let statuses_names = [
        (201, Some("one")),
        (200, None),
        (201, Some("two")),
        (404, None),
        (200, None),
    ];
    for (status, name) in statuses_names {
        let r = c.read_response().await.unwrap();
        assert_eq!(r.status, status);
        if let Some(name) = name {
            assert_eq!(r.json()["room"]["name"], name);
        }
    }
    let r = c.request("GET", "/rooms", None).await;
    assert_eq!(r.json()["rooms"].as_array().unwrap().len(), 2);
    hub.shutdown().await;
}

#[tokio::test]
async fn chunked_request_body() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(
        b"POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          3\r\n{\"n\r\n9;ext=1\r\name\": \"Ch\r\n5\r\nunky\"\r\n1\r\n}\r\n0\r\nX-Trailer: y\r\n\r\n",
    )
    .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["room"]["name"], "Chunky");
    // The connection is still in sync.
    assert_eq!(c.request("GET", "/health", None).await.status, 200);

    // Broken chunk framing: 400 and the connection closed.
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 400);
    assert!(c.closed().await);
    hub.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    let body = json!({"name": "x".repeat(100)}).to_string();
    c.send(
        format!(
            "POST /rooms HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let (status, _) = c.read_head().await.unwrap();
    assert_eq!(status, 100);
    c.send(body.as_bytes()).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 201);

    // Over the limit: 413 straight away, no 100, and the body is never read.
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(
        format!(
            "POST /rooms HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            CONTROL_BODY_LIMIT + 1
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 413);
    assert!(c.closed().await);
    hub.shutdown().await;
}

#[tokio::test]
async fn http10_and_connection_close() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"GET /health HTTP/1.0\r\n\r\n").await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed().await);

    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(c.request("GET", "/health", None).await.status, 200);

    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    // The second, pipelined request is not answered: the client asked to close.
    assert!(c.closed().await);
    assert!(c.buf.is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn head_too_large_is_431() {
    let hub = start_default().await;
    let mut c = Conn::open(hub.local_addr()).await;
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    c.send(big.as_bytes()).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 431);
    assert!(!r.error().is_empty());
    assert!(c.closed().await);
    // Just under the limit is fine.
    let mut c = Conn::open(hub.local_addr()).await;
    let ok = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES - 64)
    );
    c.send(ok.as_bytes()).await;
    assert_eq!(c.read_response().await.unwrap().status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn body_limits_are_413() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // Control route: one byte over.
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            CONTROL_BODY_LIMIT + 1
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 413);
    assert!(c.closed().await);
    // Exactly at the limit is read (and then judged on its content).
    let mut c = Conn::open(addr).await;
    let body = format!(
        "{{\"name\":\"x\",\"pad\":\"{}\"}}",
        "p".repeat(CONTROL_BODY_LIMIT - 21)
    );
    assert_eq!(body.len(), CONTROL_BODY_LIMIT);
    c.send(
        format!(
            "POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.read_response().await.unwrap().status, 201);
    // Chunked bodies are bounded too.
    let mut c = Conn::open(addr).await;
    let chunk = "a".repeat(40 * 1024);
    c.send(
        format!(
            "POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len(),
            chunk.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.read_response().await.unwrap().status, 413);
    // /v1 routes take up to 16 MiB; one byte more is refused from the head alone (once the
    // room is known to exist: an unknown room is 404 before any size matters).
    let code = create_room(addr, "big").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            V1_BODY_LIMIT + 1
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 413);
    // A /v1 body well over the control limit is accepted for reading.
    let mut c = Conn::open(addr).await;
    let big = format!("{{\"model\":\"*\",\"pad\":\"{}\"}}", "p".repeat(200 * 1024));
    c.send(
        format!(
            "POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    )
    .await;
    let r = c.read_response().await.unwrap();
    assert_ne!(r.status, 413);
    hub.shutdown().await;
}

#[tokio::test]
async fn malformed_requests_get_400_and_close() {
    let hub = start_default().await;
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let mut c = Conn::open(hub.local_addr()).await;
        c.send(bad).await;
        let r = c.read_response().await.expect("an answer");
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.closed().await);
    }
    // Unsupported transfer codings are 501.
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"POST /rooms HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n")
        .await;
    assert_eq!(c.read_response().await.unwrap().status, 501);
    // The hub is unharmed.
    assert_eq!(
        req(hub.local_addr(), "GET", "/health", None).await.status,
        200
    );
    hub.shutdown().await;
}

fn quick_timeouts() -> HubConfig {
    let mut config = HubConfig::default();
    config.server.head_timeout = Duration::from_millis(300);
    config.server.idle_timeout = Duration::from_millis(300);
    config.server.body_timeout = Duration::from_millis(300);
    config
}

#[tokio::test]
async fn slow_head_gets_408_and_close() {
    let hub = start(quick_timeouts()).await;
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"GET /health HTTP/1.1\r\nHost: slow").await;
    let r = c.read_response().await.expect("408");
    assert_eq!(r.status, 408);
    assert!(c.closed().await);
    hub.shutdown().await;
}

#[tokio::test]
async fn slow_body_gets_408_and_close() {
    let hub = start(quick_timeouts()).await;
    let mut c = Conn::open(hub.local_addr()).await;
    c.send(b"POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n{\"na")
        .await;
    let r = c.read_response().await.expect("408");
    assert_eq!(r.status, 408);
    assert!(c.closed().await);
    hub.shutdown().await;
}

#[tokio::test]
async fn silent_connections_are_closed() {
    let hub = start(quick_timeouts()).await;
    // A connection that never sends anything.
    let mut c = Conn::open(hub.local_addr()).await;
    assert!(c.closed().await);
    assert!(c.buf.is_empty());
    // An idle keep-alive connection, after one request.
    let mut c = Conn::open(hub.local_addr()).await;
    assert_eq!(c.request("GET", "/health", None).await.status, 200);
    assert!(c.closed().await);
    assert!(c.buf.is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn connection_limit_answers_503() {
    let mut config = HubConfig::default();
    config.server.max_connections = 2;
    let hub = start(config).await;
    let addr = hub.local_addr();
    let mut a = Conn::open(addr).await;
    let mut b = Conn::open(addr).await;
    // Make sure both were accepted and hold their slots.
    assert_eq!(a.request("GET", "/health", None).await.status, 200);
    assert_eq!(b.request("GET", "/health", None).await.status, 200);
    let mut c = Conn::open(addr).await;
    c.send(&build("GET", "/health", None, "")).await;
    let r = c.read_response().await.expect("503");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.error().contains("connection limit"));
    assert!(c.closed().await);
    // The two served connections are undisturbed.
    assert_eq!(a.request("GET", "/health", None).await.status, 200);
    // A freed slot is reused.
    drop(b);
    eventually("a freed slot is reused", async || {
        req(addr, "GET", "/health", None).await.status == 200
    })
    .await;
    hub.shutdown().await;
}

#[tokio::test]
async fn responses_carry_date_and_cors() {
    let hub = start_default().await;
    let r = req(hub.local_addr(), "GET", "/rooms", None).await;
    assert!(r.header("date").unwrap().ends_with(" GMT"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    hub.shutdown().await;
}
