//! `GET /metrics`: Prometheus text that follows the traffic.
#![cfg(feature = "tools")]

mod common;

use std::time::Duration;

use common::*;
use gambiarra::mock::{MockConfig, MockLlm};
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
    let code = create_room(addr, "metered").await["code"]
        .as_str()
        .unwrap()
        .to_string();
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
