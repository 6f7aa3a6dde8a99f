//! Hostile peers, over real sockets: each test is a defect an attacker found (see issue
//! "Hostile peers"), reproduced as the attacker did it, and what the hub does now.
#![cfg(feature = "tools")]

use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::tools::mock::MockLlm;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

async fn mock() -> MockLlm {
    quick_mock().await
}

fn join_body(id: &str, model: &str, endpoint: &str) -> Value {
    json!({"id": id, "nickname": id, "model": model, "endpoint": endpoint})
}

/// A hand-written upstream: `serve` runs for each connection it accepts.
async fn upstream<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s));
        }
    });
    addr
}

/// An upstream that reads one request (head and Content-Length body) per connection and
/// answers each with `answer`, then closes.
async fn raw_upstream(answer: Vec<u8>) -> SocketAddr {
    let answer = std::sync::Arc::new(answer);
    upstream(move |mut s| {
        let answer = answer.clone();
        async move {
            read_request(&mut s).await;
            let _ = s.write_all(&answer).await;
            let _ = s.shutdown().await;
        }
    })
    .await
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
    let code = room_code(addr, "r").await;
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

// Virtual time: the participant goes silent without the test sleeping.
#[tokio::test(start_paused = true)]
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
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: session=evil\r\nTransfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabcdef"
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
    // A participant sets no cookies on the hub's origin.
    assert_eq!(r.header("set-cookie"), None);
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
    let up = upstream(|mut s| async move {
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
    })
    .await;
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

/// Join a tunnelled participant; returns (room code, participant secret).
async fn tunnelled(addr: SocketAddr, id: &str) -> (String, String) {
    let code = room_code(addr, "tunnels").await;
    let mut body = join_body(id, "m", "http://127.0.0.1:1");
    body["tunnel"] = json!(true);
    let r = req(addr, "POST", &format!("/rooms/{code}/join"), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.error());
    let secret = secret_of(&r);
    (code, secret)
}

/// Open a tunnel and read its `101`; the socket is then parked at the hub.
async fn open_tunnel(addr: SocketAddr, code: &str, id: &str, secret: &str) -> Conn {
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "GET /rooms/{code}/tunnel/{id} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: gambiarra-tunnel\r\nGambiarra-Tunnel-Secret: {secret}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.read_head().await.unwrap().0, 101);
    c
}

#[tokio::test]
async fn tunnels_count_against_the_connection_limits_and_are_reaped_when_closed() {
    let mut config = HubConfig::default();
    config.server.max_connections_per_ip = 8;
    config.control_rate = 0.0;
    let hub = start(config).await;
    let addr = hub.local_addr();
    let (code, secret) = tunnelled(addr, "t").await;
    let mut tunnels = Vec::new();
    for _ in 0..8 {
        tunnels.push(open_tunnel(addr, &code, "t", &secret).await);
    }
    eventually("8 parked", async || hub.parked_tunnels(&code, "t") == 8).await;
    // The address is at its limit: parked tunnels are connections like any other.
    let mut c = Conn::open(addr).await;
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.read_response().await.map(|r| r.status), Some(429));
    // The agent goes away: its parked sockets are closed at once (no CLOSE-WAIT until the
    // pool is next touched), and the address's places come back.
    drop(tunnels);
    eventually("reaped", async || hub.parked_tunnels_total() == 0).await;
    assert_eq!(hub.parked_tunnels(&code, "t"), 0);
    let mut c = Conn::open(addr).await;
    c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.read_response().await.map(|r| r.status), Some(200));
    hub.shutdown().await;
}

#[tokio::test]
async fn parked_tunnels_are_capped_across_the_hub_and_chatty_ones_closed() {
    let hub = start(HubConfig {
        max_tunnels: 2,
        control_rate: 0.0,
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let (a, sa) = tunnelled(addr, "a").await;
    let (b, sb) = tunnelled(addr, "b").await;
    let _one = open_tunnel(addr, &a, "a", &sa).await;
    let _two = open_tunnel(addr, &a, "a", &sa).await;
    eventually("2 parked", async || hub.parked_tunnels_total() == 2).await;
    // Over the hub-wide cap: refused before the upgrade, with a status the agent backs off on.
    let mut three = Conn::open(addr).await;
    three
        .send(
            format!(
                "GET /rooms/{b}/tunnel/b HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: gambiarra-tunnel\r\nGambiarra-Tunnel-Secret: {sb}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    let r = three.read_response().await.unwrap();
    assert_eq!(r.status, 503, "{}", r.error());
    assert!(r.header("retry-after").is_some());
    assert_eq!(hub.parked_tunnels(&b, "b"), 0);
    // A parked tunnel that speaks before it is asked is not a tunnel: closed.
    drop(_two);
    eventually("one parked", async || hub.parked_tunnels_total() == 1).await;
    let mut chatty = open_tunnel(addr, &b, "b", &sb).await;
    chatty.send(b"surprise").await;
    assert!(chatty.closed().await);
    hub.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_parked_tunnels() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let (code, secret) = tunnelled(addr, "t").await;
    let mut t = open_tunnel(addr, &code, "t", &secret).await;
    eventually("parked", async || hub.parked_tunnels_total() == 1).await;
    // Shutdown would otherwise wait its whole grace period for the parked socket's slot.
    tokio::time::timeout(Duration::from_secs(5), hub.shutdown())
        .await
        .expect("shutdown within 5 s");
    assert!(t.closed().await);
}

/// CPU time (user + system, in clock ticks) a process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn out_of_descriptors_the_hub_backs_off_and_recovers() {
    let port = free_port();
    let mut hub = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n 48 && exec {} serve --host 127.0.0.1 --port {port} --quiet --max-connections-per-ip 0 --rate-limit 0",
            env!("CARGO_BIN_EXE_gambiarra")
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let health = || async move {
        let Ok(Ok(mut c)) = tokio::time::timeout(WAIT, async {
            tokio::net::TcpStream::connect(addr)
                .await
                .map(|stream| Conn {
                    stream,
                    buf: Vec::new(),
                })
        })
        .await
        else {
            return None;
        };
        c.send(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await;
        tokio::time::timeout(Duration::from_secs(2), c.read_response())
            .await
            .ok()
            .flatten()
            .map(|r| r.status)
    };
    let mut up = false;
    for _ in 0..100 {
        if health().await == Some(200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "hub did not start");
    // Hold more connections than the hub has descriptors: accept starts failing (EMFILE).
    let mut held = Vec::new();
    for _ in 0..80 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = hub.id().unwrap();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    // A spinning accept loop burns a whole core (~100 ticks a second); backing off, ~none.
    assert!(used < 30, "the accept loop spins: {used} ticks in 1 s");
    // Descriptors come back: the hub serves again.
    drop(held);
    let mut back = false;
    for _ in 0..50 {
        if health().await == Some(200) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the hub did not recover after descriptors were freed");
    let _ = hub.kill().await;
}

#[tokio::test]
async fn parallel_wrong_passwords_get_429_without_running_argon2() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = create_locked(addr, "the right one").await;
    // A fresh room: its password has never been verified, so each check would be Argon2.
    let guesses: Vec<_> = (0..200)
        .map(|i| {
            let code = code.clone();
            tokio::spawn(async move {
                let mut c = Conn::open(addr).await;
                c.request_with(
                    "GET",
                    &format!("/rooms/{code}/v1/models"),
                    None,
                    &format!("Authorization: Bearer guess-{i}\r\n"),
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for g in guesses {
        statuses.push(g.await.unwrap());
    }
    let verified = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(verified + refused, 200, "{statuses:?}");
    // Only the allowance was ever verified; everything else was refused before Argon2.
    assert!(
        verified <= gambiarra::internals::FAILURE_BURST as usize,
        "{verified} guesses were verified"
    );
    // Someone else, with the password, is not held up by the attacker.
    let mut c = Conn::open_from(addr, [127, 0, 0, 2]).await;
    let r = c
        .request_with(
            "GET",
            &format!("/rooms/{code}/participants"),
            None,
            "Authorization: Bearer the right one\r\n",
        )
        .await;
    assert_eq!(r.status, 200);
    hub.shutdown().await;
}

#[tokio::test]
async fn refused_requests_never_have_their_bodies_read() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let locked = create_locked(addr, "pw").await;
    // A 16 MB prompt announced to an unknown room, and to a protected room without its
    // password: answered from the head, no `100 Continue`, no body byte read.
    for (path, status) in [
        ("/rooms/ZZZZZZ/v1/chat/completions".to_string(), 404),
        (format!("/rooms/{locked}/v1/chat/completions"), 401),
    ] {
        let mut c = Conn::open(addr).await;
        c.send(
            format!(
                "POST {path} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 16000000\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        let r = c.read_response().await.unwrap();
        assert_eq!(r.status, status, "{path}");
        // The connection is closed rather than left waiting for 16 MB nobody will read.
        assert!(c.closed().await);
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn request_bodies_share_a_memory_budget_fairly() {
    let mut config = HubConfig::default();
    config.server.body_memory = 1024 * 1024; // each address: a quarter, 256 KiB
    let hub = start(config).await;
    let addr = hub.local_addr();
    let up = mock().await;
    let code = room_with(addr, "p", "m", &up.url()).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    let head = |n: usize| {
        format!("POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {n}\r\n\r\n").into_bytes()
    };
    // One address trickles a large body: it holds its share of the body memory…
    let mut slow = Conn::open_from(addr, [127, 0, 0, 2]).await;
    slow.send(&head(250 * 1024)).await;
    slow.send(b"{\"model\":\"p\",").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // …so its next large one is refused at once (503, Retry-After)…
    let mut c = Conn::open_from(addr, [127, 0, 0, 2]).await;
    c.send(&head(200 * 1024)).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 503, "{}", r.error());
    assert_eq!(r.header("retry-after"), Some("1"));
    // …while its small requests (a health check, a join, a chat) are never held up by bodies,
    let mut c = Conn::open_from(addr, [127, 0, 0, 2]).await;
    let r = c.request("POST", &path, Some(&chat("p"))).await;
    assert_eq!(r.status, 200);
    // and other addresses keep their own share.
    let pad = "x".repeat(200 * 1024);
    let big = json!({"model": "p", "messages": [], "pad": pad});
    let mut other = Conn::open_from(addr, [127, 0, 0, 3]).await;
    assert_eq!(other.request("POST", &path, Some(&big)).await.status, 200);
    // The trickler leaves: its share comes back.
    drop(slow);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut again = Conn::open_from(addr, [127, 0, 0, 2]).await;
    let r = again.request("POST", &path, Some(&big)).await;
    assert_eq!(r.status, 200, "{}", r.error());
    hub.shutdown().await;
}

#[tokio::test]
async fn a_body_must_arrive_whole_within_its_deadline() {
    let mut config = HubConfig::default();
    config.server.body_deadline = Duration::from_millis(400);
    let hub = start(config).await;
    let addr = hub.local_addr();
    let up = mock().await;
    let code = room_with(addr, "p", "m", &up.url()).await;
    let mut c = Conn::open(addr).await;
    c.send(
        format!("POST /rooms/{code}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n")
            .as_bytes(),
    )
    .await;
    // One byte every 50 ms: each read is well within the per-read timeout, the whole is not.
    let trickle = async {
        for _ in 0..100 {
            if c.stream.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(600), trickle).await;
    let r = c.read_response().await.unwrap();
    assert_eq!(r.status, 408);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_frees_everything_at_once() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    // A participant that takes the request and never answers (a model loading for minutes).
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(1);
    let up = upstream(move |mut s| {
        let closed_tx = closed_tx.clone();
        async move {
            read_request(&mut s).await;
            // Wait for the hub to hang up.
            let mut b = [0u8; 16];
            while let Ok(n) = s.read(&mut b).await {
                if n == 0 {
                    break;
                }
            }
            let _ = closed_tx.send(()).await;
        }
    })
    .await;
    let code = room_with(addr, "p", "m", &format!("http://{up}")).await;
    let mut sse = Sse::open(addr, &code, "").await.2;
    let mut c = Conn::open(addr).await;
    c.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(&chat("p")),
        "",
    ))
    .await;
    sse.until("llm:request").await;
    drop(c);
    // Within moments, not the 300 s time-to-first-byte limit: the upstream is hung up on…
    tokio::time::timeout(WAIT, closed_rx.recv())
        .await
        .expect("the upstream connection was closed");
    // …the request is reported, and the participant is free again.
    let e = sse.until("llm:error").await;
    assert!(e.data["error"].as_str().unwrap().contains("disconnected"));
    eventually_status(addr, &code, "online").await;
    hub.shutdown().await;
}

async fn eventually_status(addr: SocketAddr, code: &str, status: &str) {
    let path = format!("/rooms/{code}/participants");
    eventually(&format!("participant {status}"), async || {
        req(addr, "GET", &path, None).await.json()["participants"][0]["status"] == status
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_that_leads_back_to_the_hub_is_a_loop_not_511_hops() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "loop").await;
    // The participant's "model server" is this very room.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(join_body(
            "mirror",
            "m",
            &format!("http://{addr}/rooms/{code}"),
        )),
    )
    .await;
    assert_eq!(r.status, 201);
    let mut sse = Sse::open(addr, &code, "").await.2;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(chat("mirror")),
    )
    .await;
    assert_eq!(r.status, 508, "{}", r.error());
    assert!(r.error().contains("Loop"), "{}", r.error());
    // One hop forwarded, the second refused: exactly one llm:request.
    sse.until("llm:request").await;
    let next = sse.until("llm:error").await;
    assert_eq!(next.data["participantId"], "mirror");
    hub.shutdown().await;
}

#[tokio::test]
async fn allowed_endpoint_networks_are_enforced_at_join() {
    let hub = start(HubConfig {
        endpoint_rules: gambiarra::hub::EndpointRules {
            allowed: vec!["192.168.77.0/24".parse().unwrap()],
        },
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = room_code(addr, "lan").await;
    for (endpoint, status) in [
        ("http://192.168.77.5:11434", 201),
        ("http://192.168.78.5:11434", 400),
        ("http://2130706433:11434", 400),
        ("http://localhost:11434", 400),
    ] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(join_body(
                &format!("p{status}{}", endpoint.len()),
                "m",
                endpoint,
            )),
        )
        .await;
        assert_eq!(r.status, status, "{endpoint}: {}", r.error());
    }
    // A tunnelled participant's endpoint is never connected to by the hub: not checked.
    let mut body = join_body("t", "m", "http://127.0.0.1:11434");
    body["tunnel"] = json!(true);
    let r = req(addr, "POST", &format!("/rooms/{code}/join"), Some(body)).await;
    assert_eq!(r.status, 201);
    hub.shutdown().await;
}

/// Two network namespaces joined by a veth pair: the hub in one (10.231.0.1), a "remote"
/// peer in the other (10.231.0.2). `None` where namespaces cannot be made (not root).
struct TwoHosts(String, String);

impl TwoHosts {
    fn create() -> Option<TwoHosts> {
        let run = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let id = std::process::id();
        let (a, b) = (format!("gh-a-{id}"), format!("gh-b-{id}"));
        if !run(&["netns", "add", &a]) {
            return None;
        }
        let hosts = TwoHosts(a.clone(), b.clone());
        let (va, vb) = (
            format!("gva{}", id % 100_000),
            format!("gvb{}", id % 100_000),
        );
        let ok = run(&["netns", "add", &b])
            && run(&["link", "add", &va, "type", "veth", "peer", "name", &vb])
            && run(&["link", "set", &va, "netns", &a])
            && run(&["link", "set", &vb, "netns", &b])
            && run(&["-n", &a, "addr", "add", "10.231.0.1/24", "dev", &va])
            && run(&["-n", &b, "addr", "add", "10.231.0.2/24", "dev", &vb])
            && run(&["-n", &a, "link", "set", &va, "up"])
            && run(&["-n", &b, "link", "set", &vb, "up"])
            && run(&["-n", &a, "link", "set", "lo", "up"])
            && run(&["-n", &b, "link", "set", "lo", "up"]);
        ok.then_some(hosts)
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in [&self.0, &self.1] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

#[tokio::test]
#[ignore = "needs root and iproute2 (network namespaces); CI runs it: cargo test -- --ignored"]
async fn a_remote_peer_cannot_aim_the_hub_at_the_hub_hosts_own_services() {
    let hosts =
        TwoHosts::create().expect("cannot create network namespaces (needs root and iproute2)");
    let mut hub = tokio::process::Command::new("ip")
        .args(["netns", "exec", &hosts.0, env!("CARGO_BIN_EXE_gambiarra")])
        .args(["serve", "--host", "0.0.0.0", "--port", "4311", "--quiet"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // The remote peer speaks to the hub with Python's standard library.
    let script = r#"
import json, sys, time, urllib.request, urllib.error
hub = "http://10.231.0.1:4311"
def call(method, path, body=None):
    req = urllib.request.Request(hub + path, method=method, data=json.dumps(body).encode() if body else None, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)
for _ in range(100):
    try:
        call("GET", "/health"); break
    except Exception:
        time.sleep(0.05)
code = call("POST", "/rooms", {"name": "lan"})[1]["room"]["code"]
out = {}
for ep in ["http://127.0.0.1:22", "http://10.231.0.1:22", "http://2130706433:22", "http://[::ffff:127.0.0.1]:22", "http://0x7f.1:22", "http://localhost:22", "http://169.254.169.254", "http://10.231.0.2:11434"]:
    out[ep] = call("POST", f"/rooms/{code}/join", {"id": ep, "nickname": "n", "model": "m", "endpoint": ep})[0]
print(json.dumps(out))
"#;
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &hosts.1, "python3", "-c", script])
        .output()
        .await
        .unwrap();
    let _ = hub.kill().await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: serde_json::Map<String, Value> = serde_json::from_slice(&out.stdout).unwrap();
    for (endpoint, status) in &statuses {
        let want = if endpoint.contains("10.231.0.2") {
            201
        } else {
            400
        };
        assert_eq!(status, want, "{endpoint} joined from another host");
    }
}

#[tokio::test]
async fn a_participant_knocked_offline_by_load_still_owns_its_id() {
    let hub = start(HubConfig {
        tunnel_wait: Duration::from_millis(50),
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    // A tunnelled victim whose tunnels are all busy, and a direct one whose endpoint refuses.
    let (code, secret) = tunnelled(addr, "victim").await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(join_body("flaky", "m", "http://127.0.0.1:1")),
    )
    .await;
    let flaky_secret = secret_of(&r);
    let chat_path = format!("/rooms/{code}/v1/chat/completions");
    for _ in 0..4 {
        req(addr, "POST", &chat_path, Some(chat("victim"))).await;
        req(addr, "POST", &chat_path, Some(chat("flaky"))).await;
    }
    // Both keep checking in, with their secrets.
    for (id, s) in [("victim", &secret), ("flaky", &flaky_secret)] {
        let r = Conn::open(addr)
            .await
            .request_with(
                "POST",
                &format!("/rooms/{code}/health"),
                Some(&json!({"id": id})),
                &format!("Gambiarra-Participant-Secret: {s}\r\n"),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    // Whatever their routing status, an attacker cannot take their ids while they live.
    for id in ["victim", "flaky"] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(join_body(id, "m", "http://127.0.0.1:2")),
        )
        .await;
        assert_eq!(r.status, 403, "{id}: {}", r.error());
    }
    // Nor keep them alive for them once they have authenticated their checks.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/health"),
        Some(json!({"id": "victim"})),
    )
    .await;
    assert_eq!(r.status, 403);
    hub.shutdown().await;
}

#[tokio::test]
async fn ids_cannot_shadow_models_and_entries_are_bounded() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let up = mock().await;
    let code = room_with(addr, "honest", "llama3", &up.url()).await;
    let path = format!("/rooms/{code}/join");
    // An id equal to a model served here would capture that model's requests.
    let r = req(
        addr,
        "POST",
        &path,
        Some(join_body("llama3", "x", "http://127.0.0.1:2")),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.error());
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(chat("llama3")),
    )
    .await;
    assert_eq!(r.status, 200);
    // Fields at their length bounds, full of characters JSON escapes: one entry would be
    // ~28 KB in every listing; refused.
    let quotes = "\"".repeat(128);
    let fat = json!({
        "id": quotes, "nickname": quotes, "model": "\"".repeat(256),
        "endpoint": format!("http://127.0.0.1:2/{}", "a".repeat(2000)),
        "specs": {"gpu": "\"".repeat(256), "cpu": "\"".repeat(256)},
        "config": {"stop": vec!["\"".repeat(256); 16]},
    });
    let r = req(addr, "POST", &path, Some(fat)).await;
    assert_eq!(r.status, 400, "{}", r.error());
    assert!(r.error().contains("too large"), "{}", r.error());
    hub.shutdown().await;
}

#[tokio::test]
async fn a_web_page_cannot_register_the_machines_local_services() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "r").await;
    // A browser on the hub's machine connects from loopback too, but says where the page came
    // from: not a local joiner.
    let body = join_body("page", "m", "http://127.0.0.1:22");
    let r = Conn::open(addr)
        .await
        .request_with(
            "POST",
            &format!("/rooms/{code}/join"),
            Some(&body),
            "Origin: https://evil.example\r\n",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.error());
    // The same join from a program on the machine is fine.
    let r = req(addr, "POST", &format!("/rooms/{code}/join"), Some(body)).await;
    assert_eq!(r.status, 201, "{}", r.error());
    hub.shutdown().await;
}

#[tokio::test]
async fn one_request_tries_a_few_participants_not_the_whole_room() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "r").await;
    for i in 0..20 {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(join_body(&format!("dead{i}"), "refm", "http://127.0.0.1:1")),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let mut sse = Sse::open(addr, &code, "").await.2;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(chat("model:refm")),
    )
    .await;
    assert_eq!(r.status, 502);
    let mut attempts = 0;
    while let Ok(e) =
        tokio::time::timeout(Duration::from_millis(300), sse.until("llm:request")).await
    {
        attempts += 1;
        let _ = e;
    }
    assert_eq!(attempts, gambiarra::internals::MAX_ATTEMPTS);
    hub.shutdown().await;
}

#[tokio::test]
async fn protected_rooms_are_hashed_a_few_at_a_time_per_address() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let creates: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                req(
                    addr,
                    "POST",
                    "/rooms",
                    Some(json!({"name": "r", "password": "x".repeat(256)})),
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for c in creates {
        statuses.push(c.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "ten parallel hashes from one address: {statuses:?}"
    );
    // Another address is not held up.
    let r = Conn::open_from(addr, [127, 0, 0, 2])
        .await
        .request(
            "POST",
            "/rooms",
            Some(&json!({"name": "mine", "password": "pw"})),
        )
        .await;
    assert_eq!(r.status, 201);
    hub.shutdown().await;
}

// Virtual time: the participant goes silent without the test sleeping.
#[tokio::test(start_paused = true)]
async fn one_address_cannot_fill_the_hub_with_rooms_or_a_room_with_the_departed() {
    let hub = start(HubConfig {
        max_rooms_per_ip: 3,
        health_interval: Duration::from_millis(20),
        participant_timeout: Duration::from_millis(100),
        forget_after: Duration::from_millis(300),
        control_rate: 0.0,
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(room_code(addr, "mine").await);
    }
    let r = req(addr, "POST", "/rooms", Some(json!({"name": "one more"}))).await;
    assert_eq!(r.status, 429, "{}", r.error());
    // Another address has its own allowance.
    let r = Conn::open_from(addr, [127, 0, 0, 2])
        .await
        .request("POST", "/rooms", Some(&json!({"name": "theirs"})))
        .await;
    assert_eq!(r.status, 201);
    // A participant that never checks in is forgotten after a while: its place comes back.
    let code = &codes[0];
    assert_eq!(
        join(addr, code, "ghost", "http://127.0.0.1:1").await.status,
        201
    );
    let mut sse = Sse::open(addr, code, "").await.2;
    sse.until("participant:offline").await;
    let left = sse.until("participant:left").await;
    assert_eq!(left.data["participantId"], "ghost");
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"], json!([]));
    hub.shutdown().await;
}
