//! Every row of the REST table, over real sockets, with the exact statuses and error texts that
//! the TypeScript version's clients match on.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn health_endpoint() {
    let hub = start_default().await;
    let r = req(hub.local_addr(), "GET", "/health", None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert!(v["timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    hub.shutdown().await;
}

#[tokio::test]
async fn create_and_list_rooms() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let r = req(addr, "POST", "/rooms", Some(json!({"name": "Team"}))).await;
    assert_eq!(r.status, 201);
    let v = r.json();
    let room = &v["room"];
    let code = room["code"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert!(
        code.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    );
    assert!(!code.contains(['0', 'O', '1', 'I']));
    assert_eq!(room["name"], "Team");
    assert_eq!(v["hostId"], room["hostId"]);
    assert!(room["createdAt"].as_u64().is_some());
    assert_eq!(room["id"].as_str().unwrap().len(), 21);

    join(addr, code, "a", "http://localhost:11434").await;
    join(addr, code, "b", "http://localhost:11434").await;
    let r = req(addr, "GET", "/rooms", None).await;
    assert_eq!(r.status, 200);
    let rooms = r.json()["rooms"].as_array().unwrap().clone();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["participantCount"], 2);
    assert_eq!(rooms[0]["code"], code);
    hub.shutdown().await;
}

#[tokio::test]
async fn create_room_errors() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    for body in [json!({}), json!({"name": ""}), json!({"name": "   "})] {
        let r = req(addr, "POST", "/rooms", Some(body)).await;
        assert_eq!((r.status, r.error()), (400, "Name is required".into()));
    }
    let r = req(addr, "POST", "/rooms", Some(json!({"name": 5}))).await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().starts_with("Invalid request body"),
        "{}",
        r.error()
    );
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(json!({"name": "x".repeat(129)})),
    )
    .await;
    assert_eq!(r.status, 400);

    let mut c = Conn::open(addr).await;
    c.send(b"POST /rooms HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n{\"name\": ")
        .await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.error().starts_with("Invalid JSON"), "{}", r.error());
    // A client mistake does not cost the connection.
    let r = c.request("GET", "/health", None).await;
    assert_eq!(r.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn join_and_replace() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({
            "id": "p1", "nickname": "Alice", "model": "llama3:8b",
            "endpoint": "http://localhost:11434/v1/",
            "specs": {"gpu": "RTX 4090", "vram": 24, "ram": 64, "cpu": "Ryzen"},
            "config": {"temperature": 0.7, "max_tokens": 2048, "stop": ["###"]}
        })),
    )
    .await;
    assert_eq!(r.status, 201);
    let v = r.json();
    assert_eq!(v["roomId"], room["id"]);
    let p = &v["participant"];
    assert_eq!(p["status"], "online");
    // Stored and listed exactly as given.
    assert_eq!(p["endpoint"], "http://localhost:11434/v1/");
    assert_eq!(
        p["specs"],
        json!({"gpu": "RTX 4090", "vram": 24, "ram": 64, "cpu": "Ryzen"})
    );
    assert_eq!(
        p["config"],
        json!({"temperature": 0.7, "max_tokens": 2048, "stop": ["###"]})
    );
    assert!(p["joinedAt"].as_u64().unwrap() <= p["lastSeen"].as_u64().unwrap());

    let secret = v["participantSecret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 64);
    assert!(
        v.get("tunnelSecret").is_none(),
        "only tunnelled participants get one"
    );

    // Joining again with the same id while it is online takes its secret…
    let again =
        json!({"id": "p1", "nickname": "Alice2", "model": "qwen", "endpoint": "https://x.example"});
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(again.clone()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.error());
    let mut with_secret = again.clone();
    with_secret["participantSecret"] = json!("0".repeat(64));
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(with_secret.clone()),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.error());
    // …and then replaces the entry, with a fresh secret.
    with_secret["participantSecret"] = json!(secret);
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(with_secret),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_ne!(
        r.json()["participantSecret"].as_str(),
        Some(secret.as_str())
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    let list = r.json()["participants"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["nickname"], "Alice2");
    assert_eq!(list[0]["specs"], json!({}));
    hub.shutdown().await;
}

#[tokio::test]
async fn join_errors() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let path = format!("/rooms/{code}/join");

    let r = join(addr, "ZZZZZZ", "a", "http://localhost:1").await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    let r = join(addr, "not-a-code", "a", "http://localhost:1").await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));

    for body in [
        json!({"id": "a"}),
        json!({"id": "a", "nickname": "b", "model": "c"}),
        json!({"id": "", "nickname": "b", "model": "c", "endpoint": "http://x"}),
    ] {
        let r = req(addr, "POST", &path, Some(body)).await;
        assert_eq!(
            (r.status, r.error()),
            (
                400,
                "Missing required fields: id, nickname, model, endpoint".into()
            )
        );
    }
    for endpoint in [
        "not a url",
        "ftp://x",
        "http://",
        "localhost:11434",
        "http://a:b@c",
    ] {
        let r = join(addr, code, "a", endpoint).await;
        assert_eq!(r.status, 400, "{endpoint}");
        assert!(r.error().contains("endpoint"), "{}", r.error());
    }
    for config in [
        json!({"temperature": 3}),
        json!({"top_p": 1.5}),
        json!({"presence_penalty": -3}),
        json!({"max_tokens": -1}),
        json!({"temperature": "hot"}),
    ] {
        let r = req(
            addr,
            "POST",
            &path,
            Some(json!({"id": "a", "nickname": "b", "model": "c", "endpoint": "http://x", "config": config})),
        )
        .await;
        assert_eq!(r.status, 400, "{config}");
    }
    let r = req(
        addr,
        "POST",
        &path,
        Some(json!({"id": "x".repeat(129), "nickname": "b", "model": "c", "endpoint": "http://x"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.error().contains("too long"));
    // Nothing of the above was stored.
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"], json!([]));
    hub.shutdown().await;
}

#[tokio::test]
async fn leave_routes() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let secret = join(addr, code, "p 1", "http://localhost:1").await.json()["participantSecret"]
        .as_str()
        .unwrap()
        .to_string();
    let path = format!("/rooms/{code}/leave/p%201");
    // Without its secret nobody can make a participant leave.
    let r = req(addr, "DELETE", &path, None).await;
    assert_eq!(r.status, 403, "{}", r.error());
    let wrong = "Gambiarra-Participant-Secret: nope\r\n";
    let r = Conn::open(addr)
        .await
        .request_with("DELETE", &path, None, wrong)
        .await;
    assert_eq!(r.status, 403);
    let header = format!("Gambiarra-Participant-Secret: {secret}\r\n");
    let r = Conn::open(addr)
        .await
        .request_with("DELETE", &path, None, &header)
        .await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})));
    let r = Conn::open(addr)
        .await
        .request_with("DELETE", &path, None, &header)
        .await;
    assert_eq!((r.status, r.error()), (404, "Participant not found".into()));
    // The body field works too (the TypeScript API's style).
    let secret =
        join(addr, code, "p2", "http://localhost:1").await.json()["participantSecret"].clone();
    let r = req(
        addr,
        "DELETE",
        &format!("/rooms/{code}/leave/p2"),
        Some(json!({"participantSecret": secret})),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = req(addr, "DELETE", "/rooms/ZZZZZZ/leave/x", None).await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    hub.shutdown().await;
}

#[tokio::test]
async fn health_check_routes() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let joined = join(addr, code, "p1", "http://localhost:1").await.json();
    let path = format!("/rooms/{code}/health");
    let r = req(addr, "POST", &path, Some(json!({"id": "p1"}))).await;
    assert_eq!((r.status, r.json()), (200, json!({"success": true})));
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert!(
        r.json()["participants"][0]["lastSeen"].as_u64()
            > joined["participant"]["lastSeen"].as_u64()
    );
    let r = req(addr, "POST", &path, Some(json!({"id": "nobody"}))).await;
    assert_eq!((r.status, r.error()), (404, "Participant not found".into()));
    let r = req(addr, "POST", &path, Some(json!({}))).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "Participant ID is required".into())
    );
    let r = req(addr, "POST", &path, None).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "Participant ID is required".into())
    );
    let r = req(
        addr,
        "POST",
        "/rooms/ZZZZZZ/health",
        Some(json!({"id": "p1"})),
    )
    .await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    hub.shutdown().await;
}

#[tokio::test]
async fn participants_and_models() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    join(addr, code, "p1", "http://localhost:11434").await;
    // Lower-case codes resolve.
    let r = req(
        addr,
        "GET",
        &format!("/rooms/{}/participants", code.to_lowercase()),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["participants"][0]["id"], "p1");
    let r = req(addr, "GET", "/rooms/ZZZZZZ/participants", None).await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));

    let r = req(addr, "GET", &format!("/rooms/{code}/v1/models"), None).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    // The catalogue first: each model once, named as users send it.
    let m = &v["data"][0];
    assert_eq!(m["id"], "llama3");
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "gambiarra");
    assert_eq!(
        m["gambiarra"],
        json!({"names": ["llama3"], "participants": {"online": 1, "busy": 0, "loaded": 0}})
    );
    // Then the participants, as the seed lists them.
    let m = &v["data"][1];
    assert_eq!(m["id"], "p1");
    assert_eq!(m["object"], "model");
    assert_eq!(m["owned_by"], "nick-p1");
    assert!(m["created"].as_u64().unwrap() < 10_000_000_000);
    assert_eq!(
        m["gambiarra"],
        json!({"nickname": "nick-p1", "model": "llama3", "endpoint": "http://localhost:11434"})
    );
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    // /v1 errors use OpenAI's shape.
    let r = req(addr, "GET", "/rooms/ZZZZZZ/v1/models", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["message"], "Room not found");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    hub.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let r = req(addr, "GET", "/nope", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = req(addr, "PUT", "/rooms", None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, POST"));
    let r = req(addr, "GET", "/rooms/ABCDEF/join", None).await;
    assert_eq!(r.status, 405);
    hub.shutdown().await;
}

#[tokio::test]
async fn preflight() {
    let hub = start_default().await;
    let r = req(
        hub.local_addr(),
        "OPTIONS",
        "/rooms/ABCDEF/v1/chat/completions",
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, POST, PATCH, DELETE, OPTIONS")
    );
    assert!(
        r.header("access-control-allow-headers")
            .unwrap()
            .starts_with("Content-Type, Authorization")
    );
    assert!(r.body.is_empty());
    hub.shutdown().await;
}
