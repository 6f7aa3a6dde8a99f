//! Ollama's API on a room (`http://HUB/rooms/CODE` as an Ollama host), over real sockets, with
//! an OpenAI-speaking mock as the participant: the catalogue routes, chat and generate
//! (streamed as NDJSON and not), embeddings, errors in Ollama's shape, protected rooms.
#![cfg(feature = "tools")]

use std::net::SocketAddr;

use serde_json::{Value, json};

use crate::common::*;

async fn room_with_mock(password: Option<&str>) -> (gambiarra::Hub, SocketAddr, String, String) {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = match password {
        Some(p) => create_locked(addr, p).await,
        None => room_code(addr, "ollama").await,
    };
    let mock = quick_mock().await;
    let url = mock.url();
    // The mock lives as long as the test: leaked on purpose (a test process).
    std::mem::forget(mock);
    let auth = password.map_or(String::new(), |p| format!("Authorization: Bearer {p}\r\n"));
    let r = req_with(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "endpoint": url,
                    "models": [{"name": "llama3:latest", "loaded": true}, "nomic-embed-text"]})),
        &auth,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    (hub, addr, code, auth)
}

/// NDJSON lines of a body.
fn lines(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn catalogue_routes() {
    let (hub, addr, code, _) = room_with_mock(None).await;
    let r = req(addr, "GET", &format!("/rooms/{code}/api/version"), None).await;
    assert_eq!(r.status, 200);
    assert!(r.json()["version"].is_string());
    let r = req(addr, "GET", &format!("/rooms/{code}/api/tags"), None).await;
    let names: Vec<Value> = r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(names, [json!("llama3:latest"), json!("nomic-embed-text")]);
    assert!(
        r.json()["models"][0]["modified_at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/api/ps"), None).await;
    assert_eq!(
        r.json()["models"].as_array().unwrap().len(),
        1,
        "only the loaded one"
    );
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/show"),
        Some(json!({"model": "LLAMA3"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert!(r.json()["capabilities"].is_array());
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/show"),
        Some(json!({"model": "nope"})),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "model 'nope' not found"}))
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/api/chat"), None).await;
    assert_eq!(r.status, 405);
    hub.shutdown().await;
}

#[tokio::test]
async fn chat_and_generate_through_an_openai_participant() {
    let (hub, addr, code, _) = room_with_mock(None).await;
    // Not streamed: one document.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/chat"),
        Some(json!({"model": "llama3", "stream": false,
                    "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 8}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v = r.json();
    assert_eq!(v["model"], "llama3");
    assert_eq!(v["message"]["role"], "assistant");
    assert_eq!(v["message"]["content"], "tok0 tok1 tok2 ");
    assert_eq!(
        (v["done"].as_bool(), v["done_reason"].as_str()),
        (Some(true), Some("stop"))
    );
    assert!(v["eval_count"].as_u64().unwrap() > 0);
    // Streamed (Ollama's default): NDJSON, a line per token, then the done line.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/chat"),
        Some(json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let l = lines(&r.body);
    assert_eq!(l.len(), 4, "{l:?}");
    let text: String = l
        .iter()
        .filter_map(|x| x["message"]["content"].as_str())
        .collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(l[3]["done"], true);
    assert_eq!(l[3]["eval_count"], 3);
    // generate, streamed.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/generate"),
        Some(json!({"model": "llama3:latest", "prompt": "once", "system": "brief"})),
    )
    .await;
    let l = lines(&r.body);
    let text: String = l.iter().filter_map(|x| x["response"].as_str()).collect();
    assert_eq!(text, "tok0 tok1 tok2 ");
    assert_eq!(l.last().unwrap()["done"], true);
    hub.shutdown().await;
}

#[tokio::test]
async fn embeddings_and_errors_in_ollamas_shape() {
    let (hub, addr, code, _) = room_with_mock(None).await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/embed"),
        Some(json!({"model": "nomic-embed-text", "input": ["a", "b"]})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    let e = r.json()["embeddings"].as_array().unwrap().clone();
    assert_eq!(e.len(), 2);
    assert!(e[0].as_array().unwrap().iter().all(Value::is_number));
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/embeddings"),
        Some(json!({"model": "nomic-embed-text", "prompt": "a"})),
    )
    .await;
    assert!(r.json()["embedding"].is_array(), "{}", r.error());
    for (body, status) in [
        (json!({"model": "nope", "messages": []}), 404),
        (json!({"messages": []}), 400),
        (json!({"model": "llama3", "messages": "hi"}), 400),
    ] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/api/chat"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, status, "{body}");
        assert!(r.json()["error"].is_string(), "{body}: {:?}", r.json());
    }
    // A participant that cannot be reached: the hub's error, in Ollama's shape. (The
    // participant's own error documents are translated too: unit tests in translate::ollama.)
    let dead = free_port();
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "dead", "nickname": "d", "model": "gone", "endpoint": format!("http://127.0.0.1:{dead}")})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/api/generate"),
        Some(json!({"model": "gone", "prompt": "hi"})),
    )
    .await;
    assert_eq!(r.status, 502);
    assert!(
        r.json()["error"].as_str().unwrap().contains("unreachable"),
        "{:?}",
        r.json()
    );
    let r = req(addr, "GET", "/rooms/ZZZZZZ/api/tags", None).await;
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"error": "Room not found"}))
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_protected_room_wants_its_password() {
    let (hub, addr, code, auth) = room_with_mock(Some("s3cret")).await;
    let path = format!("/rooms/{code}/api/chat");
    let body = json!({"model": "llama3", "stream": false, "messages": []});
    let r = req(addr, "POST", &path, Some(body.clone())).await;
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].is_string());
    let r = req_with(addr, "POST", &path, Some(body), &auth).await;
    assert_eq!(r.status, 200, "{}", r.error());
    let r = req(addr, "GET", &format!("/rooms/{code}/api/tags"), None).await;
    assert_eq!(r.status, 401);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_participant_that_speaks_ollama_gets_the_request_as_it_came() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "native").await;
    let (native, openai) = (quick_mock().await, quick_mock().await);
    for (id, mock, protocols) in [
        ("native", &native, json!(["ollama"])),
        ("openai", &openai, json!([])),
    ] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(
                json!({"id": id, "nickname": id, "model": "llama3:latest", "endpoint": mock.url(),
                        "protocols": protocols}),
            ),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.error());
        // Empty (OpenAI's only) is left out of the entry.
        let listed = &r.json()["participant"]["protocols"];
        assert_eq!(
            listed.as_array().map_or(0, Vec::len),
            protocols.as_array().unwrap().len()
        );
    }
    // At equal load the one that speaks Ollama is chosen, and gets Ollama's request (the
    // model spliced to its own name), its NDJSON relayed as it wrote it.
    let body = json!({"model": "llama3", "messages": [{"role": "user", "content": "hi"}], "keep_alive": "5m"});
    for _ in 0..3 {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/api/chat"),
            Some(body.clone()),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.error());
        assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
        let l = lines(&r.body);
        assert_eq!(l.last().unwrap()["eval_count"], 3);
    }
    let got = native.requests();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].head.path(), "/api/chat");
    let sent: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (sent["model"].as_str(), sent["keep_alive"].as_str()),
        (Some("llama3:latest"), Some("5m"))
    );
    assert!(openai.requests().is_empty());
    // /v1 requests are OpenAI's: both serve them.
    for _ in 0..2 {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(json!({"model": "llama3", "messages": []})),
        )
        .await;
        assert_eq!(r.status, 200);
    }
    assert_eq!((native.requests().len(), openai.requests().len()), (4, 1));
    // A protocol this hub does not know is ignored; OpenAI's is implied.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(
            json!({"id": "x", "nickname": "x", "model": "m", "endpoint": "http://192.0.2.1:1",
                    "protocols": ["openai", "carrier-pigeon", "ollama", "ollama"]}),
        ),
    )
    .await;
    assert_eq!(r.json()["participant"]["protocols"], json!(["ollama"]));
    hub.shutdown().await;
}

#[tokio::test]
async fn a_bodiless_answer_cannot_be_translated() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A participant that answers every request 204 No Content.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            });
        }
    });
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "bodiless").await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "llama3", "endpoint": format!("http://127.0.0.1:{port}")})),
    )
    .await;
    assert_eq!(r.status, 201);
    // On one keep-alive connection: a clear 502 in each dialect, then the next request works.
    let mut c = Conn::open(addr).await;
    let r = c
        .request(
            "POST",
            &format!("/rooms/{code}/api/chat"),
            Some(&json!({"model": "llama3", "messages": []})),
        )
        .await;
    assert_eq!(r.status, 502);
    assert!(r.json()["error"].as_str().unwrap().contains("204"));
    let r = c
        .request(
            "POST",
            &format!("/rooms/{code}/v1/messages"),
            Some(&json!({"model": "llama3", "max_tokens": 4, "messages": []})),
        )
        .await;
    assert_eq!((r.status, r.json()["type"].as_str()), (502, Some("error")));
    assert_eq!(c.request("GET", "/health", None).await.status, 200);
    hub.shutdown().await;
}
