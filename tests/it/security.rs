//! Protected rooms, host tokens, the admin token and the abuse limits, over real sockets.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::tools::mock::MockLlm;
use serde_json::{Value, json};

const PW: &str = "correct horse battery";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

async fn create_protected(addr: SocketAddr) -> Value {
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(json!({"name": "locked", "password": PW})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    r.json()
}

fn join_body(id: &str, endpoint: &str) -> Value {
    json!({"id": id, "nickname": id, "model": "m", "endpoint": endpoint})
}

async fn mock() -> MockLlm {
    quick_mock().await
}

#[tokio::test]
async fn the_password_never_leaves_the_hub() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // A subscriber of another room sees room:created for the new one.
    let other = create_room(addr, "open").await;
    let (_, _, mut sse) = Sse::open(addr, other["code"].as_str().unwrap(), "").await;
    sse.until("connected").await;

    let created = create_protected(addr).await;
    assert_eq!(created["room"]["passwordProtected"], true);
    let token = created["hostToken"].as_str().unwrap();
    assert_eq!(token.len(), 64, "256-bit host token");
    assert_ne!(created["hostId"], created["hostToken"]);
    let text = created.to_string();
    assert!(!text.contains(PW) && !text.contains("argon2"), "{text}");

    let ev = sse.until("room:created").await;
    assert_eq!(ev.data["passwordProtected"], true);
    let text = ev.data.to_string();
    assert!(
        !text.contains(PW) && !text.contains("argon2") && !text.contains(token),
        "{text}"
    );

    let list = req(addr, "GET", "/rooms", None).await.json();
    let text = list.to_string();
    assert!(!text.contains(PW) && !text.contains("argon2") && !text.contains(token));
    let rooms = list["rooms"].as_array().unwrap();
    let locked = rooms.iter().find(|r| r["name"] == "locked").unwrap();
    let open = rooms.iter().find(|r| r["name"] == "open").unwrap();
    assert_eq!(locked["passwordProtected"], true);
    assert_eq!(open["passwordProtected"], false);
    hub.shutdown().await;
}

#[tokio::test]
async fn every_route_of_a_protected_room_needs_the_password() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock().await;
    let endpoint = format!("http://{}", up.addr());
    let created = create_protected(addr).await;
    let code = created["room"]["code"].as_str().unwrap().to_string();
    let path = |p: &str| format!("/rooms/{code}{p}");

    // Join: without, wrong, then with the password in the body (as the TS API) or as Bearer.
    let r = req(
        addr,
        "POST",
        &path("/join"),
        Some(join_body("a", &endpoint)),
    )
    .await;
    assert_eq!((r.status, r.error().as_str()), (401, "Invalid password"));
    assert!(r.header("www-authenticate").is_some());
    let mut wrong = join_body("a", &endpoint);
    wrong["password"] = json!("nope");
    let r = req(addr, "POST", &path("/join"), Some(wrong)).await;
    assert_eq!((r.status, r.error().as_str()), (401, "Invalid password"));
    let mut right = join_body("a", &endpoint);
    right["password"] = json!(PW);
    assert_eq!(
        req(addr, "POST", &path("/join"), Some(right)).await.status,
        201
    );
    let r = req_with(
        addr,
        "POST",
        &path("/join"),
        Some(join_body("b", &endpoint)),
        &bearer(PW),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let b_secret = secret_of(&r);
    assert_eq!(hub.participants(&code).unwrap().len(), 2);

    // Reads, health checks and leaving.
    for (method, p, body) in [
        ("GET", path("/participants"), None),
        ("GET", path("/v1/models"), None),
        ("POST", path("/health"), Some(json!({"id": "a"}))),
        (
            "DELETE",
            path("/leave/b"),
            Some(json!({"participantSecret": b_secret})),
        ),
    ] {
        let r = req(addr, method, &p, body.clone()).await;
        assert_eq!(r.status, 401, "{method} {p} without the password");
        let r = req_with(addr, method, &p, body.clone(), &bearer("wrong")).await;
        assert_eq!(r.status, 401, "{method} {p} with a wrong password");
        let r = req_with(addr, method, &p, body, &bearer(PW)).await;
        assert_eq!(r.status, 200, "{method} {p}: {}", r.error());
    }

    // The proxy: OpenAI's error shape, and the password is not passed on to the participant.
    let chat = json!({"model": "*", "messages": [{"role": "user", "content": "hi"}]});
    let r = req(
        addr,
        "POST",
        &path("/v1/chat/completions"),
        Some(chat.clone()),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = req_with(
        addr,
        "POST",
        &path("/v1/chat/completions"),
        Some(chat),
        &bearer(PW),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].head.header("authorization").is_none());

    // Events: Bearer, or ?password= for EventSource (percent- and plus-decoded).
    let (status, _, _) = Sse::open(addr, &code, "").await;
    assert_eq!(status, 401);
    let (status, _, mut sse) = Sse::open(addr, &code, &bearer(PW)).await;
    assert_eq!(status, 200);
    sse.until("connected").await;
    let q = PW.replace(' ', "+");
    let mut c = Conn::open(addr).await;
    c.send(
        format!("GET /rooms/{code}/events?password=nope HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(c.read_head().await.unwrap().0, 401);
    let mut c = Conn::open(addr).await;
    c.send(format!("GET /rooms/{code}/events?password={q} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    assert_eq!(c.read_head().await.unwrap().0, 200);
    let mut c = Conn::open(addr).await;
    let q = PW.replace(' ', "%20");
    c.send(format!("GET /rooms/{code}/events?password={q} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    assert_eq!(c.read_head().await.unwrap().0, 200);

    // An open room ignores whatever Authorization an SDK sends.
    let open = create_room(addr, "open").await;
    let r = req_with(
        addr,
        "GET",
        &format!("/rooms/{}/participants", open["code"].as_str().unwrap()),
        None,
        &bearer("sk-anything"),
    )
    .await;
    assert_eq!(r.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn failed_passwords_are_rate_limited_per_address() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let created = create_protected(addr).await;
    let code = created["room"]["code"].as_str().unwrap();
    let p = format!("/rooms/{code}/participants");
    let from = |ip: [u8; 4], token: &'static str| {
        let p = p.clone();
        async move {
            let mut c = Conn::open_from(addr, ip).await;
            c.request_with("GET", &p, None, &bearer(token)).await
        }
    };
    for _ in 0..10 {
        assert_eq!(from([127, 0, 0, 1], "guess").await.status, 401);
    }
    let r = from([127, 0, 0, 1], "guess").await;
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Blocked even with the right password, until the allowance refills…
    assert_eq!(from([127, 0, 0, 1], PW).await.status, 429);
    // …while another address is not affected.
    assert_eq!(from([127, 0, 0, 2], PW).await.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn the_host_deletes_a_room_and_everyone_hears() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let created = create_protected(addr).await;
    let code = created["room"]["code"].as_str().unwrap().to_string();
    let token = created["hostToken"].as_str().unwrap().to_string();
    let mut body = join_body("p", "http://127.0.0.1:1");
    body["password"] = json!(PW);
    assert_eq!(
        req(addr, "POST", &format!("/rooms/{code}/join"), Some(body))
            .await
            .status,
        201
    );
    let (_, _, mut sse) = Sse::open(addr, &code, &bearer(PW)).await;
    sse.until("connected").await;
    let other = create_room(addr, "other").await;
    let (_, _, mut other_sse) = Sse::open(addr, other["code"].as_str().unwrap(), "").await;
    other_sse.until("connected").await;

    let del = |t: Option<String>| {
        let code = code.clone();
        async move {
            let extra = t.map(|t| bearer(&t)).unwrap_or_default();
            req_with(addr, "DELETE", &format!("/rooms/{code}"), None, &extra).await
        }
    };
    assert_eq!(del(None).await.status, 403);
    assert_eq!(
        del(Some(PW.into())).await.status,
        403,
        "password is not host"
    );
    let host_id = created["hostId"].as_str().unwrap().to_string();
    assert_eq!(del(Some(host_id)).await.status, 403, "hostId is public");
    let r = del(Some(token.clone())).await;
    assert_eq!(r.status, 200, "{}", r.error());

    let ev = sse.until("room:deleted").await;
    assert_eq!(ev.data["code"], code.as_str());
    assert!(
        matches!(sse.next_block().await, Some(Err(true))),
        "its stream ends cleanly"
    );
    let ev = other_sse.until("room:deleted").await;
    assert_eq!(ev.data["code"], code.as_str());

    // Its participant hears at its next health check; clients get 410.
    let r = req_with(
        addr,
        "POST",
        &format!("/rooms/{code}/health"),
        Some(json!({"id": "p"})),
        &bearer(PW),
    )
    .await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (410, "Room was removed by its host")
    );
    assert_eq!(del(Some(token)).await.status, 410);
    let list = req(addr, "GET", "/rooms", None).await.json();
    assert_eq!(list["rooms"].as_array().unwrap().len(), 1);
    // A code that never existed is still 404.
    let r = req_with(addr, "DELETE", "/rooms/ZZZZZZ", None, &bearer("x")).await;
    assert_eq!(r.status, 404);
    hub.shutdown().await;
}

#[tokio::test]
async fn the_admin_token_guards_creation_deletion_and_metrics() {
    let admin = "a-long-admin-token-1234";
    let hub = start(HubConfig {
        admin_token: Some(admin.into()),
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let body = || Some(json!({"name": "r"}));
    let r = req(addr, "POST", "/rooms", body()).await;
    assert_eq!(
        (r.status, r.error().as_str()),
        (401, "Admin token required")
    );
    assert_eq!(
        req_with(addr, "POST", "/rooms", body(), &bearer("nope"))
            .await
            .status,
        401
    );
    let r = req_with(addr, "POST", "/rooms", body(), &bearer(admin)).await;
    assert_eq!(r.status, 201);
    let code = r.json()["room"]["code"].as_str().unwrap().to_string();
    // Listing and joining stay open (the room is not protected).
    assert_eq!(req(addr, "GET", "/rooms", None).await.status, 200);
    assert_eq!(req(addr, "GET", "/metrics", None).await.status, 401);
    assert_eq!(
        req_with(addr, "GET", "/metrics", None, &bearer(admin))
            .await
            .status,
        200
    );
    // The admin deletes any room.
    let r = req_with(
        addr,
        "DELETE",
        &format!("/rooms/{code}"),
        None,
        &bearer(admin),
    )
    .await;
    assert_eq!(r.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn create_refuses_bad_passwords() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    for (pw, want) in [
        (json!(""), "password must not be empty"),
        (json!("x".repeat(257)), "password is too long"),
        (json!(5), "Invalid request body"),
    ] {
        let r = req(
            addr,
            "POST",
            "/rooms",
            Some(json!({"name": "n", "password": pw})),
        )
        .await;
        assert_eq!(r.status, 400);
        assert!(r.error().starts_with(want), "{}", r.error());
    }
    assert_eq!(
        req(addr, "GET", "/rooms", None).await.json()["rooms"],
        json!([])
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn connections_per_address_are_bounded() {
    let mut config = HubConfig::default();
    config.server.max_connections_per_ip = 3;
    let hub = start(config).await;
    let addr = hub.local_addr();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = Conn::open(addr).await;
        assert_eq!(c.request("GET", "/health", None).await.status, 200);
        held.push(c);
    }
    let mut fourth = Conn::open(addr).await;
    let r = fourth.read_response().await.expect("an answer, then close");
    assert_eq!(r.status, 429);
    assert!(r.error().contains("Too many connections from your address"));
    assert!(fourth.closed().await);
    // Another address, and the held connections, keep working.
    let mut c = Conn::open_from(addr, [127, 0, 0, 3]).await;
    assert_eq!(c.request("GET", "/health", None).await.status, 200);
    assert_eq!(held[0].request("GET", "/health", None).await.status, 200);
    // Closing one frees its place.
    drop(held.pop());
    let mut ok = None;
    for _ in 0..50 {
        let mut c = Conn::open(addr).await;
        c.send(&build("GET", "/health", None, "")).await;
        match c.read_response().await {
            Some(r) if r.status == 200 => {
                ok = Some(r);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(ok.is_some(), "a freed place is reusable");
    hub.shutdown().await;
}

#[tokio::test]
async fn control_routes_are_rate_limited_per_address() {
    let hub = start(HubConfig {
        control_rate: 0.5,
        control_burst: 3,
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let up = mock().await;
    // Set-up from another address (its own allowance).
    let room = {
        let mut c = Conn::open_from(addr, [127, 0, 0, 4]).await;
        let r = c
            .request("POST", "/rooms", Some(&json!({"name": "rate"})))
            .await;
        r.json()["room"]["code"].as_str().unwrap().to_string()
    };
    let mut c = Conn::open_from(addr, [127, 0, 0, 4]).await;
    let r = c
        .request(
            "POST",
            &format!("/rooms/{room}/join"),
            Some(&join_body("p", &format!("http://{}", up.addr()))),
        )
        .await;
    assert_eq!(r.status, 201);

    let mut c = Conn::open(addr).await;
    for _ in 0..3 {
        assert_eq!(c.request("GET", "/rooms", None).await.status, 200);
    }
    let r = c.request("GET", "/rooms", None).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    assert!(r.error().contains("slow down"));
    // The connection stays usable, /v1 is not a control route, others are unaffected.
    let chat = json!({"model": "*", "messages": []});
    for _ in 0..5 {
        let r = c
            .request(
                "POST",
                &format!("/rooms/{room}/v1/chat/completions"),
                Some(&chat),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let mut other = Conn::open_from(addr, [127, 0, 0, 5]).await;
    assert_eq!(other.request("GET", "/rooms", None).await.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn subscribers_are_bounded_across_the_hub() {
    let hub = start(HubConfig {
        max_subscribers: 2,
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let a = create_room(addr, "a").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let b = create_room(addr, "b").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let (s1, _, mut first) = Sse::open(addr, &a, "").await;
    let (s2, _, _second) = Sse::open(addr, &b, "").await;
    assert_eq!((s1, s2), (200, 200));
    first.until("connected").await;
    let mut c = Conn::open(addr).await;
    let r = c.request("GET", &format!("/rooms/{b}/events"), None).await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("Too many event subscribers on this hub"));
    // Other routes keep working; a freed place is reusable.
    assert_eq!(req(addr, "GET", "/rooms", None).await.status, 200);
    drop(first);
    let mut reopened = false;
    for _ in 0..50 {
        let (s, _, _) = Sse::open(addr, &a, "").await;
        if s == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reopened);
    hub.shutdown().await;
}
