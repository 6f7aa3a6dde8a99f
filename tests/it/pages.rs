//! The routes for browsers over real sockets: the pages and their files (with their security
//! headers), content negotiation on `/` and `/rooms/:code`, the room's links and QR code, and
//! what the room page reads: the participants with their load and the last event id, and the
//! event stream's `history=1`.

use std::net::SocketAddr;

use crate::common::*;
use gambiarra::HubConfig;

/// A GET with exactly these header lines (and nothing else but `Connection: close`).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> Resp {
    let mut c = Conn::open(addr).await;
    c.send(format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").as_bytes())
        .await;
    c.read_response().await.expect("response")
}

#[cfg(feature = "web")]
const BROWSER: &str = "Host: hub.lan:3000\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n";

#[cfg(feature = "web")]
#[tokio::test]
async fn browsers_get_pages_and_api_clients_json() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "Workshop").await;

    // The home page, and the room's page, for a browser: HTML under a strict policy.
    for path in ["/".to_string(), format!("/rooms/{code}")] {
        let r = get(addr, &path, BROWSER).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
        let html = String::from_utf8(r.body.clone()).unwrap();
        assert!(html.starts_with("<!doctype html>"));
        // The room's data is not in the page: its script fetches it.
        assert!(!html.contains("Workshop"));
    }

    // The same paths for an API client: JSON.
    let r = get(addr, "/", "Host: hub.lan:3000\r\nAccept: */*\r\n").await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["service"], "gambiarra");
    let r = get(addr, &format!("/rooms/{code}"), "Host: hub.lan:3000\r\n").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["room"]["code"], code.as_str());
    assert_eq!(v["room"]["name"], "Workshop");
    assert_eq!(v["room"]["participantCount"], 0);
    assert_eq!(v["room"]["routing"], "cache-aware");
    let page = format!("http://hub.lan:3000/rooms/{code}");
    assert_eq!(v["links"]["page"], page.as_str());
    assert_eq!(v["links"]["openai"], format!("{page}/v1").as_str());
    assert_eq!(v["links"]["anthropic"], page.as_str());
    assert_eq!(v["links"]["ollama"], page.as_str());

    // HEAD is GET without the body; other methods on the page are refused.
    let mut c = Conn::open(addr).await;
    c.send(format!("HEAD /rooms/{code} HTTP/1.1\r\n{BROWSER}\r\n").as_bytes())
        .await;
    let (status, _) = c.read_head().await.unwrap();
    assert_eq!(status, 200);
    let r = req(addr, "PUT", &format!("/rooms/{code}"), None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, DELETE"));

    // An unknown room: the page with 404 for a browser (its script says there is no such
    // room), JSON for anyone else; both vary by Accept.
    let r = get(addr, "/rooms/ZZZZZZ", BROWSER).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.header("content-security-policy").is_some());
    assert_eq!(r.header("vary"), Some("Accept"));
    let r = get(addr, "/rooms/ZZZZZZ", "Host: h\r\n").await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    let r = get(addr, "/", "Host: h\r\n").await;
    assert_eq!(r.header("vary"), Some("Accept"));
    // `q=0` refuses HTML.
    let r = get(
        addr,
        &format!("/rooms/{code}"),
        "Host: h\r\nAccept: application/json, text/html;q=0\r\n",
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/json"));
    hub.shutdown().await;
}

#[cfg(feature = "web")]
#[tokio::test]
async fn the_pages_files_are_served_with_validators() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    for (file, kind) in [
        ("room.js", "text/javascript; charset=utf-8"),
        ("common.js", "text/javascript; charset=utf-8"),
        ("home.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let r = get(addr, &format!("/ui/{file}"), "Host: h\r\n").await;
        assert_eq!(r.status, 200, "{file}");
        assert_eq!(r.header("content-type"), Some(kind));
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        assert!(r.header("content-security-policy").is_some());
        let etag = r.header("etag").unwrap().to_string();
        let again = get(
            addr,
            &format!("/ui/{file}"),
            &format!("Host: h\r\nIf-None-Match: {etag}\r\n"),
        )
        .await;
        assert_eq!(again.status, 304);
        assert!(again.body.is_empty());
    }
    for missing in [
        "/ui/nope.js",
        "/ui/room.html",
        "/ui/..%2FCargo.toml",
        "/ui/a/b",
    ] {
        let r = get(addr, missing, "Host: h\r\n").await;
        assert_eq!(r.status, 404, "{missing}");
    }
    // The pages' files are not rate-limited like the API: a page load is several of them.
    hub.shutdown().await;
}

#[tokio::test]
async fn links_use_the_host_the_client_used_and_never_a_hostile_one() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "R").await;
    let page = |r: &Resp| r.json()["links"]["page"].as_str().unwrap().to_string();

    let r = get(addr, &format!("/rooms/{code}"), "Host: [fd00::5]:3000\r\n").await;
    assert_eq!(page(&r), format!("http://[fd00::5]:3000/rooms/{code}"));
    // On this machine (a loopback name) the hub, listening on loopback only, says so.
    let r = get(addr, &format!("/rooms/{code}"), "Host: localhost\r\n").await;
    assert_eq!(page(&r), format!("http://{addr}/rooms/{code}"));
    // A Host that is not a host is not used.
    let r = get(
        addr,
        &format!("/rooms/{code}"),
        "Host: evil\"><script>x</script>\r\n",
    )
    .await;
    assert_eq!(page(&r), format!("http://{addr}/rooms/{code}"));
    hub.shutdown().await;

    // `--public-url` wins over everything.
    let hub = start(HubConfig {
        public_url: Some("https://ai.example.org".into()),
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = room_code(addr, "R").await;
    let r = get(addr, &format!("/rooms/{code}"), "Host: localhost\r\n").await;
    assert_eq!(page(&r), format!("https://ai.example.org/rooms/{code}"));
    hub.shutdown().await;
}

#[cfg(feature = "web")]
#[tokio::test]
async fn the_qr_code_is_an_svg_of_the_room_page() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "R").await;
    let r = get(addr, &format!("/rooms/{code}/qr.svg"), "Host: hub.lan\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    let svg = String::from_utf8(r.body.clone()).unwrap();
    // "http://hub.lan/rooms/XXXXXX" (27 bytes; version 2 holds 26) is a version 3 code: 29
    // modules and a quiet zone of 4 on each side.
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 37 37\""));
    assert!(!svg.contains("hub.lan"), "the URL is drawn, not written");
    let r = get(addr, "/rooms/ZZZZZZ/qr.svg", "Host: hub.lan\r\n").await;
    assert_eq!(r.status, 404);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_protected_rooms_page_summary_and_qr_are_public_its_participants_are_not() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = create_locked(addr, "pw-pages").await;
    let r = get(addr, &format!("/rooms/{code}"), "Host: h\r\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["room"]["passwordProtected"], true);
    #[cfg(feature = "web")]
    {
        assert_eq!(
            get(addr, &format!("/rooms/{code}"), BROWSER).await.status,
            200
        );
        assert_eq!(
            get(addr, &format!("/rooms/{code}/qr.svg"), "Host: h\r\n")
                .await
                .status,
            200
        );
    }
    let r = get(addr, &format!("/rooms/{code}/participants"), "Host: h\r\n").await;
    assert_eq!(r.status, 401);
    let r = get(
        addr,
        &format!("/rooms/{code}/participants"),
        "Host: h\r\nAuthorization: Bearer pw-pages\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    // The page's event stream carries the password in its URL (EventSource sends no headers).
    let (status, _, sse) = Sse::open_path(
        Conn::open(addr).await,
        &format!("/rooms/{code}/events?history=1&password=pw-pages"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    drop(sse);
    hub.shutdown().await;
}

#[cfg(feature = "tools")]
#[tokio::test]
async fn participants_carry_their_load_the_queue_and_the_last_event_id() {
    use gambiarra::tools::mock::{MockConfig, MockLlm};
    use serde_json::{Value, json};
    use std::time::Duration;
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "m".into(),
            tokens: 200,
            token_delay: Duration::from_millis(20),
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "R").await;
    let joined = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "m", "endpoint": format!("http://{}", mock.addr()), "slots": 1})),
    )
    .await;
    assert_eq!(joined.status, 201);
    let list = |r: Resp| -> Value { r.json() };
    let idle = list(req(addr, "GET", &format!("/rooms/{code}/participants"), None).await);
    assert_eq!(idle["queued"], 0);
    assert!(idle["participants"][0].get("inFlight").is_none());
    let before = idle["eventId"].as_u64().unwrap();

    // One stream runs, another waits for the one slot.
    let chat =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let path = format!("/rooms/{code}/v1/chat/completions");
    let mut running = Conn::open(addr).await;
    running.send(&build("POST", &path, Some(&chat), "")).await;
    assert_eq!(running.read_head().await.unwrap().0, 200);
    let mut waiting = Conn::open(addr).await;
    waiting.send(&build("POST", &path, Some(&chat), "")).await;
    eventually("one running, one queued", async || {
        let v = list(req(addr, "GET", &format!("/rooms/{code}/participants"), None).await);
        v["queued"] == 1
            && v["participants"][0]["inFlight"] == 1
            && v["participants"][0]["status"] == "busy"
    })
    .await;
    let busy = list(req(addr, "GET", &format!("/rooms/{code}/participants"), None).await);
    // llm:request and llm:queued were published since.
    assert!(busy["eventId"].as_u64().unwrap() >= before + 2);

    // A page's first connection with `history=1` replays what the room keeps, from its
    // first event, without `resync`; `Last-Event-ID` still wins over it.
    let (status, _, mut sse) = Sse::open_path(
        Conn::open(addr).await,
        &format!("/rooms/{code}/events?history=1"),
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sse.next().await.name, "connected");
    let first = sse.next().await;
    assert_eq!(first.name, "participant:joined");
    assert_eq!(sse.next().await.name, "llm:request");
    assert_eq!(sse.next().await.name, "llm:queued");
    let (_, _, mut sse2) = Sse::open_path(
        Conn::open(addr).await,
        &format!("/rooms/{code}/events?history=1"),
        &format!("Last-Event-ID: {}\r\n", first.id.unwrap()),
    )
    .await;
    assert_eq!(sse2.next().await.name, "connected");
    assert_eq!(sse2.next().await.name, "llm:request");
    drop((sse, sse2, running, waiting));
    hub.shutdown().await;
}
