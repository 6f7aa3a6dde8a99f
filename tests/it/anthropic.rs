//! Anthropic's Messages API on a room (`http://HUB/rooms/CODE` as the base URL), over real
//! sockets, with an OpenAI-speaking mock as the participant: create, stream, count_tokens,
//! the model list in Anthropic's shape, errors in Anthropic's shape, `x-api-key`.
#![cfg(feature = "tools")]

use serde_json::{Value, json};

use crate::common::*;

async fn room(password: Option<&str>) -> (gambiarra::Hub, std::net::SocketAddr, String, String) {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = match password {
        Some(p) => create_locked(addr, p).await,
        None => room_code(addr, "anthropic").await,
    };
    let mock = quick_mock().await;
    let url = mock.url();
    std::mem::forget(mock);
    let key = password.map_or(String::new(), |p| format!("x-api-key: {p}\r\n"));
    let r = req_with(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "llama3", "endpoint": url})),
        &key,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    (hub, addr, code, key)
}

fn events(body: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let (name, data) = e.split_once("\ndata: ").unwrap();
            (
                name.trim_start_matches("event: ").to_string(),
                serde_json::from_str(data).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn messages_streamed_and_not_and_counted() {
    let (hub, addr, code, _) = room(None).await;
    let path = format!("/rooms/{code}/v1/messages");
    let ask = json!({"model": "llama3", "max_tokens": 16, "system": "Be brief.",
                     "messages": [{"role": "user", "content": "hi"}]});
    let r = req_with(
        addr,
        "POST",
        &path,
        Some(ask.clone()),
        "anthropic-version: 2023-06-01\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    let m = r.json();
    assert_eq!(
        (m["type"].as_str(), m["role"].as_str()),
        (Some("message"), Some("assistant"))
    );
    assert_eq!(
        m["content"],
        json!([{"type": "text", "text": "tok0 tok1 tok2 "}])
    );
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["usage"], json!({"input_tokens": 5, "output_tokens": 3}));
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = req(addr, "POST", &path, Some(streamed)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let e = events(&r.body);
    let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let text: String = e
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(
        e[e.len() - 2].1["usage"],
        json!({"output_tokens": 3, "input_tokens": 5})
    );
    let r = req(
        addr,
        "POST",
        &format!("{path}/count_tokens"),
        Some(json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"input_tokens": 5})));
    // The model list, in Anthropic's shape when an Anthropic SDK asks.
    let r = req_with(
        addr,
        "GET",
        &format!("/rooms/{code}/v1/models"),
        None,
        "anthropic-version: 2023-06-01\r\n",
    )
    .await;
    assert_eq!(r.json()["data"][0]["type"], "model");
    assert_eq!(r.json()["data"][0]["id"], "llama3");
    assert_eq!(r.json()["has_more"], false);
    hub.shutdown().await;
}

#[tokio::test]
async fn errors_in_anthropics_shape_and_x_api_key() {
    let (hub, addr, code, key) = room(Some("pw")).await;
    let path = format!("/rooms/{code}/v1/messages");
    let ask = json!({"model": "llama3", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]});
    let r = req(addr, "POST", &path, Some(ask.clone())).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = req_with(addr, "POST", &path, Some(ask.clone()), &key).await;
    assert_eq!(r.status, 200, "{}", r.error());
    for (body, status, kind) in [
        (
            json!({"model": "nope", "max_tokens": 8, "messages": []}),
            404,
            "not_found_error",
        ),
        (
            json!({"model": "llama3", "messages": []}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "llama3", "max_tokens": 8, "messages": [], "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            400,
            "invalid_request_error",
        ),
    ] {
        let r = req_with(addr, "POST", &path, Some(body.clone()), &key).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.json()["error"]["type"], kind, "{body}");
        assert!(r.json()["error"]["message"].is_string());
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn a_participant_that_speaks_anthropic_gets_the_request_as_it_came() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "native").await;
    let mock = quick_mock().await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "claude-ish", "nickname": "c", "model": "llama3:latest", "endpoint": mock.url(),
                    "protocols": ["anthropic"]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let path = format!("/rooms/{code}/v1/messages");
    let ask = json!({"model": "llama3", "max_tokens": 8, "stream": true, "metadata": {"user_id": "u"},
                     "messages": [{"role": "user", "content": "hi"}]});
    let r = req(addr, "POST", &path, Some(ask)).await;
    assert_eq!(r.status, 200, "{}", r.error());
    let e = events(&r.body);
    assert_eq!(
        e[0].1["message"]["id"], "msg_mock",
        "the participant's own events"
    );
    let sent: Value = serde_json::from_slice(&mock.requests()[0].body).unwrap();
    assert_eq!(mock.requests()[0].head.path(), "/v1/messages");
    assert_eq!(sent["model"], "llama3:latest");
    assert_eq!(
        sent["metadata"]["user_id"], "u",
        "passed through, not translated"
    );
    // Measured from Anthropic's own events.
    let done = sse.until("llm:complete").await;
    assert_eq!(done.data["metrics"]["tokens"], 3);
    let r = req(
        addr,
        "POST",
        &format!("{path}/count_tokens"),
        Some(json!({"model": "llama3", "messages": []})),
    )
    .await;
    assert_eq!(r.json(), json!({"input_tokens": 5}));
    assert_eq!(mock.requests()[1].head.path(), "/v1/messages/count_tokens");
    hub.shutdown().await;
}
