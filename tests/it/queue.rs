//! Participant slots, the room's fair queue and its bounds, and cache-aware routing, over real
//! sockets with mock participants.

use std::net::SocketAddr;
use std::time::Duration;

use gambiarra::hub::HubConfig;
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::{Value, json};

use super::common::*;

/// A recording mock serving `m`: 2 tokens, 10 ms apart.
async fn mock() -> MockLlm {
    MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "m".into(),
            tokens: 2,
            token_delay: Duration::from_millis(10),
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap()
}

async fn hub_with(change: impl FnOnce(&mut HubConfig)) -> gambiarra::hub::Hub {
    let mut config = HubConfig::default();
    change(&mut config);
    start(config).await
}

async fn join_slots(addr: SocketAddr, code: &str, id: &str, mock: &MockLlm, slots: u32) {
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(
            json!({"id": id, "nickname": id, "model": "m", "endpoint": mock.url(), "slots": slots}),
        ),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    assert_eq!(r.json()["participant"]["slots"], slots);
}

/// A streamed chat: `tag` is its only message; `long` streams for minutes (until the client
/// leaves), else two tokens.
fn chat(model: &str, tag: &str, long: bool) -> Value {
    json!({"model": model, "stream": true, "mock_tokens": if long { 100_000 } else { 2 },
           "mock_delay_ms": 10, "messages": [{"role": "user", "content": tag}]})
}

fn key(k: &str) -> String {
    format!("Authorization: Bearer {k}\r\n")
}

/// Send a chat on a fresh connection and wait for its response head (a participant took it).
async fn open(addr: SocketAddr, code: &str, body: &Value, extra: &str) -> (u16, Conn) {
    let mut c = Conn::open(addr).await;
    c.send(&build(
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(body),
        extra,
    ))
    .await;
    let (status, _) = c.read_head().await.expect("a response head");
    (status, c)
}

/// A chat sent in the background; its whole response.
fn spawn_chat(
    addr: SocketAddr,
    code: &str,
    body: Value,
    extra: String,
) -> tokio::task::JoinHandle<Resp> {
    let path = format!("/rooms/{code}/v1/chat/completions");
    tokio::spawn(async move { req_with(addr, "POST", &path, Some(body), &extra).await })
}

/// The `content` tags of the chats a mock received, in order.
fn tags(mock: &MockLlm) -> Vec<String> {
    mock.requests()
        .iter()
        .filter_map(|r| {
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            Some(
                v["messages"].as_array()?.last()?["content"]
                    .as_str()?
                    .to_string(),
            )
        })
        .collect()
}

async fn metric(addr: SocketAddr, line: &str) -> bool {
    let text = String::from_utf8(req(addr, "GET", "/metrics", None).await.body).unwrap();
    text.lines().any(|l| l == line)
}

/// A hub configured by `change` with a room whose one participant (`m`, one slot) is busy with
/// a long stream sent with `extra` headers (`long`: dropping it frees the slot), and an event
/// stream past `connected`.
struct Busy {
    hub: gambiarra::hub::Hub,
    addr: SocketAddr,
    code: String,
    _m: MockLlm,
    sse: Sse,
    long: Conn,
}

async fn one_busy_slot(change: impl FnOnce(&mut HubConfig), extra: &str) -> Busy {
    let hub = hub_with(change).await;
    let addr = hub.local_addr();
    let code = room_code(addr, "busy").await;
    let m = mock().await;
    join_slots(addr, &code, "p", &m, 1).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let (status, long) = open(addr, &code, &chat("m", "long", true), extra).await;
    assert_eq!(status, 200);
    Busy {
        hub,
        addr,
        code,
        _m: m,
        sse,
        long,
    }
}

#[tokio::test]
async fn a_participant_never_runs_more_than_its_slots() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "slots").await;
    let m = mock().await;
    join_slots(addr, &code, "p", &m, 2).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let chats: Vec<_> = (0..6)
        .map(|i| {
            spawn_chat(
                addr,
                &code,
                chat("m", &format!("c{i}"), false),
                String::new(),
            )
        })
        .collect();
    for c in chats {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert_eq!(m.max_active(), 2, "two at once, never more");
    assert_eq!(m.requests().len(), 6);
    let q = sse.until("llm:queued").await;
    assert_eq!(q.data["model"], "m");
    assert!(q.data["position"].as_u64().unwrap() >= 1);
    assert_eq!(q.data["client"].as_str().unwrap().len(), 16);
    let d = sse.until("llm:dequeued").await;
    assert_eq!(d.data["outcome"], "served");
    assert!(metric(addr, "gambiarra_queue_depth 0").await);
    assert!(!metric(addr, "gambiarra_queued_requests_total 0").await);
    // Slots are bounded and checked.
    for bad in [json!(0), json!(1025), json!(-1), json!("2")] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/join"),
            Some(json!({"id": "x", "nickname": "x", "model": "m", "endpoint": m.url(), "slots": bad})),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}");
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn the_queue_and_each_clients_share_are_bounded() {
    let mut busy = one_busy_slot(
        |c| {
            c.queue_max = 2;
            c.queue_per_client = 1;
        },
        &key("a"),
    )
    .await;
    let (addr, code) = (busy.addr, busy.code.clone());
    let a2 = spawn_chat(addr, &code, chat("m", "a2", false), key("a"));
    assert_eq!(busy.sse.until("llm:queued").await.data["depth"], 1);
    // Client a has its one place in the queue: 429, with when to retry.
    let path = format!("/rooms/{code}/v1/chat/completions");
    let r = req_with(addr, "POST", &path, Some(chat("m", "a3", false)), &key("a")).await;
    assert_eq!(r.status, 429);
    assert!(
        r.error().contains("most requests a client"),
        "{}",
        r.error()
    );
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // Another client still gets in; then the room's queue is full: 503.
    let b = spawn_chat(addr, &code, chat("m", "b1", false), key("b"));
    assert_eq!(busy.sse.until("llm:queued").await.data["depth"], 2);
    let r = req_with(addr, "POST", &path, Some(chat("m", "c1", false)), &key("c")).await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("queue is full"), "{}", r.error());
    assert!(r.header("retry-after").is_some());
    // Nothing else was disturbed: once the slot frees, both waiters are served.
    drop(busy.long);
    assert_eq!(a2.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
    assert!(
        metric(
            addr,
            "gambiarra_queue_rejected_total{reason=\"client_quota\"} 1"
        )
        .await
    );
    assert!(
        metric(
            addr,
            "gambiarra_queue_rejected_total{reason=\"queue_full\"} 1"
        )
        .await
    );
    busy.hub.shutdown().await;
}

#[tokio::test]
async fn a_request_waits_no_longer_than_the_queue_timeout() {
    let hub = hub_with(|c| c.queue_timeout = Duration::from_millis(300)).await;
    let addr = hub.local_addr();
    let code = room_code(addr, "deadline").await;
    let m = mock().await;
    join_slots(addr, &code, "p", &m, 1).await;
    let (_, long) = open(addr, &code, &chat("m", "long", true), "").await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    let r = req_with(addr, "POST", &path, Some(chat("m", "late", false)), "").await;
    assert_eq!(r.status, 503);
    assert!(
        r.error().contains("as long as a request may wait"),
        "{}",
        r.error()
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(r.json()["error"]["type"], "server_error", "OpenAI's shape");
    assert!(metric(addr, "gambiarra_queue_left_total{outcome=\"timeout\"} 1").await);
    assert!(metric(addr, "gambiarra_queue_depth 0").await);
    assert_eq!(
        tags(&m),
        ["long"],
        "the late one never reached the participant"
    );
    drop(long);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_client_that_leaves_leaves_the_queue() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "gone").await;
    let m = mock().await;
    join_slots(addr, &code, "p", &m, 1).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let (_, long) = open(addr, &code, &chat("m", "long", true), "").await;
    let mut waiting = Conn::open(addr).await;
    waiting
        .send(&build(
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(&chat("m", "abandoned", false)),
            "",
        ))
        .await;
    assert_eq!(sse.until("llm:queued").await.data["depth"], 1);
    drop(waiting);
    let d = sse.until("llm:dequeued").await;
    assert_eq!(d.data["outcome"], "abandoned");
    assert_eq!(d.data["depth"], 0);
    drop(long);
    let path = format!("/rooms/{code}/v1/chat/completions");
    let r = req_with(addr, "POST", &path, Some(chat("m", "next", false)), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(tags(&m), ["long", "next"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn clients_take_turns() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "turns").await;
    let m = mock().await;
    join_slots(addr, &code, "p", &m, 1).await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let (_, long) = open(addr, &code, &chat("m", "long", true), &key("x")).await;
    // Client a queues three, then client b one.
    let mut waiters = Vec::new();
    for (k, tag) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")] {
        waiters.push(spawn_chat(addr, &code, chat("m", tag, false), key(k)));
        sse.until("llm:queued").await;
    }
    drop(long);
    for w in waiters {
        assert_eq!(w.await.unwrap().status, 200);
    }
    assert_eq!(tags(&m), ["long", "a1", "b1", "a2", "a3"]);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_waiter_is_told_when_nobody_can_serve_it() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "left").await;
    let m = mock().await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "m", "endpoint": m.url(), "slots": 1})),
    )
    .await;
    let secret = secret_of(&r);
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let (_, long) = open(addr, &code, &chat("m", "long", true), "").await;
    let w = spawn_chat(addr, &code, chat("m", "w", false), String::new());
    sse.until("llm:queued").await;
    assert_eq!(leave(addr, &code, "p", &secret).await.status, 200);
    let r = w.await.unwrap();
    assert_eq!(r.status, 404, "{}", r.error());
    assert_eq!(sse.until("llm:dequeued").await.data["outcome"], "refused");
    drop(long);
    hub.shutdown().await;
}

/// A conversation turn: a long system prompt of its own, then `turns` user/assistant pairs.
fn turn(conv: &str, turns: usize, model: &str) -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": format!("{conv} {}", "s".repeat(2000))})];
    for t in 0..turns {
        messages.push(json!({"role": "user", "content": format!("{conv} question {t}")}));
        if t + 1 < turns {
            messages.push(json!({"role": "assistant", "content": format!("answer {t}")}));
        }
    }
    json!({"model": model, "stream": true, "mock_tokens": 2, "messages": messages})
}

/// Which of the mocks got the last request whose system prompt starts with `conv`.
fn served_by(mocks: &[&MockLlm], conv: &str) -> usize {
    let holds = |m: &MockLlm| {
        m.requests().iter().any(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["messages"][0]["content"]
                .as_str()
                .is_some_and(|c| c.starts_with(&format!("{conv} ")))
        })
    };
    let found: Vec<usize> = (0..mocks.len()).filter(|&i| holds(mocks[i])).collect();
    assert_eq!(found.len(), 1, "{conv} went to one participant: {found:?}");
    found[0]
}

#[tokio::test]
async fn a_conversation_stays_where_its_prefix_is() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "affinity").await;
    let (p, q) = (mock().await, mock().await);
    join_slots(addr, &code, "p", &p, 4).await;
    join_slots(addr, &code, "q", &q, 4).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    // Six conversations, three turns each, one at a time: each conversation's turns all land
    // where its first did (rotation alone would alternate them).
    for t in 1..=3 {
        for c in ["c1", "c2", "c3", "c4", "c5", "c6"] {
            let r = req_with(addr, "POST", &path, Some(turn(c, t, "m")), "").await;
            assert_eq!(r.status, 200);
        }
    }
    let mut spread = [0, 0];
    for c in ["c1", "c2", "c3", "c4", "c5", "c6"] {
        spread[served_by(&[&p, &q], c)] += 1;
    }
    assert!(spread[0] > 0 && spread[1] > 0, "both used: {spread:?}");
    // A request naming a participant goes there, whatever it holds.
    let holder = served_by(&[&p, &q], "c1");
    let other = ["p", "q"][1 - holder];
    let r = req_with(addr, "POST", &path, Some(turn("c1", 4, other)), "").await;
    assert_eq!(r.status, 200);
    let other_mock = [&p, &q][1 - holder];
    assert_eq!(
        other_mock.requests().last().map(|r| r.body.len()),
        Some(turn("c1", 4, "m").to_string().len())
    );
    hub.shutdown().await;
}

/// A hub (affinity wait 30 s) and a room named `name` with two one-slot participants, p and q
/// (their mocks, in that order), its chat path, and an event stream past `connected`.
async fn pair(
    name: &str,
) -> (
    gambiarra::hub::Hub,
    SocketAddr,
    String,
    [MockLlm; 2],
    String,
    Sse,
) {
    let hub = hub_with(|c| c.affinity_wait = Duration::from_secs(30)).await;
    let addr = hub.local_addr();
    let code = room_code(addr, name).await;
    let (p, q) = (mock().await, mock().await);
    join_slots(addr, &code, "p", &p, 1).await;
    join_slots(addr, &code, "q", &q, 1).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    (hub, addr, code, [p, q], path, sse)
}

#[tokio::test]
async fn a_waiter_lets_others_by_for_the_participant_holding_its_prompt() {
    let (hub, addr, code, [_p, q], path, mut sse) = pair("affinity-queue").await;
    // c1 ran on p, c2 on q; then both are busy with something else.
    assert_eq!(
        req_with(addr, "POST", &path, Some(turn("c1", 1, "p")), "")
            .await
            .status,
        200
    );
    assert_eq!(
        req_with(addr, "POST", &path, Some(turn("c2", 1, "q")), "")
            .await
            .status,
        200
    );
    let (_, long_p) = open(addr, &code, &chat("p", "long", true), "").await;
    let (_, long_q) = open(addr, &code, &chat("q", "long", true), "").await;
    // c1's next turn queues first, c2's second (different clients).
    let c1 = spawn_chat(addr, &code, turn("c1", 2, "m"), key("one"));
    sse.until("llm:queued").await;
    let c2 = spawn_chat(addr, &code, turn("c2", 2, "m"), key("two"));
    sse.until("llm:queued").await;
    // q frees first: c1, first in turn, lets c2 (whose prompt q holds) by.
    drop(long_q);
    assert_eq!(c2.await.unwrap().status, 200);
    // Then q is free again and nobody else wants it: c1 takes it rather than leave it idle
    // while p stays busy.
    assert_eq!(c1.await.unwrap().status, 200);
    let firsts: Vec<String> = q
        .requests()
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            v["messages"][0]["content"].as_str().unwrap()[..2].to_string()
        })
        .collect();
    assert_eq!(firsts, ["c2", "lo", "c2", "c1"], "c2 went before c1");
    drop(long_p);
    hub.shutdown().await;
}

#[tokio::test]
async fn an_uneven_split_evens_out() {
    let (hub, addr, code, [_p, q], path, mut sse) = pair("balance").await;
    // Three conversations live on p, one on q; both are busy.
    for (c, at) in [("c1", "p"), ("c2", "p"), ("c3", "p"), ("c4", "q")] {
        let r = req_with(addr, "POST", &path, Some(turn(c, 1, at)), "").await;
        assert_eq!(r.status, 200);
    }
    let (_, long_p) = open(addr, &code, &chat("p", "long", true), "").await;
    let (_, long_q) = open(addr, &code, &chat("q", "long", true), "").await;
    let mut waiting = Vec::new();
    for c in ["c1", "c2", "c3", "c4"] {
        waiting.push(spawn_chat(addr, &code, turn(c, 2, "m"), key(c)));
        sse.until("llm:queued").await;
    }
    // q frees. c1, first in turn, would rather wait for p, but p has three waiting for it
    // and q one: too uneven, so c1 moves to q.
    drop(long_q);
    eventually("q takes the next waiter", async || q.requests().len() >= 3).await;
    let third: Value = serde_json::from_slice(&q.requests()[2].body).unwrap();
    assert!(
        third["messages"][0]["content"]
            .as_str()
            .unwrap()
            .starts_with("c1 "),
        "{third}"
    );
    drop(long_p);
    for w in waiting {
        assert_eq!(w.await.unwrap().status, 200);
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn affinity_falls_back_to_load_when_the_holder_is_full() {
    let (hub, addr, code, [_p, q], path, _sse) = pair("fallback").await;
    assert_eq!(
        req_with(addr, "POST", &path, Some(turn("c1", 1, "p")), "")
            .await
            .status,
        200
    );
    let (_, long) = open(addr, &code, &chat("p", "long", true), "").await;
    // Nobody else wants q: the next turn takes it rather than leave it idle.
    let r = req_with(addr, "POST", &path, Some(turn("c1", 2, "m")), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(q.requests().len(), 1, "taken by the free participant");
    drop(long);
    hub.shutdown().await;
}

#[tokio::test]
async fn affinity_falls_back_when_the_holder_is_offline() {
    let hub = hub_with(|c| c.affinity_wait = Duration::from_secs(30)).await;
    let addr = hub.local_addr();
    let code = room_code(addr, "offline").await;
    let (p, q) = (mock().await, mock().await);
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(json!({"id": "p", "nickname": "p", "model": "m", "endpoint": p.url(), "slots": 1})),
    )
    .await;
    let p_secret = secret_of(&r);
    join_slots(addr, &code, "q", &q, 1).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    assert_eq!(
        req_with(addr, "POST", &path, Some(turn("c1", 1, "p")), "")
            .await
            .status,
        200
    );
    assert_eq!(leave(addr, &code, "p", &p_secret).await.status, 200);
    let r = req_with(addr, "POST", &path, Some(turn("c1", 2, "m")), "").await;
    assert_eq!(r.status, 200);
    assert_eq!(q.requests().len(), 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_least_loaded_room_ignores_prompts() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(json!({"name": "ll", "routing": "least-loaded"})),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["room"]["routing"], "least-loaded");
    let code = r.json()["room"]["code"].as_str().unwrap().to_string();
    let (p, q) = (mock().await, mock().await);
    join_slots(addr, &code, "p", &p, 4).await;
    join_slots(addr, &code, "q", &q, 4).await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    for t in 1..=4 {
        assert_eq!(
            req_with(addr, "POST", &path, Some(turn("c1", t, "m")), "")
                .await
                .status,
            200
        );
    }
    // Rotation spreads one conversation over both.
    assert_eq!((p.requests().len(), q.requests().len()), (2, 2));
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(json!({"name": "x", "routing": "random"})),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.error().contains("least-loaded or cache-aware"),
        "{}",
        r.error()
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn keys_invented_per_request_do_not_fill_the_queue() {
    let mut busy = one_busy_slot(
        |c| {
            c.queue_per_client = 10;
            c.queue_per_address = 2;
        },
        "",
    )
    .await;
    let (addr, code) = (busy.addr, busy.code.clone());
    let a = spawn_chat(addr, &code, chat("m", "k1", false), key("k1"));
    busy.sse.until("llm:queued").await;
    let b = spawn_chat(addr, &code, chat("m", "k2", false), key("k2"));
    busy.sse.until("llm:queued").await;
    // A third key from the same address: over the address's share.
    let path = format!("/rooms/{code}/v1/chat/completions");
    let r = req_with(
        addr,
        "POST",
        &path,
        Some(chat("m", "k3", false)),
        &key("k3"),
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.error());
    assert!(r.header("retry-after").is_some());
    // Another address still gets in.
    let mut other = Conn::open_from(addr, [127, 0, 0, 2]).await;
    other
        .send(&build("POST", &path, Some(&chat("m", "other", false)), ""))
        .await;
    assert_eq!(busy.sse.until("llm:queued").await.data["depth"], 3);
    drop(busy.long);
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);
    assert_eq!(other.read_response().await.unwrap().status, 200);
    busy.hub.shutdown().await;
}

#[tokio::test]
async fn a_participant_that_left_and_came_back_starts_from_zero() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "rejoin").await;
    let m = mock().await;
    let body = json!({"id": "p", "nickname": "p", "model": "m", "endpoint": m.url(), "slots": 2});
    let join_path = format!("/rooms/{code}/join");
    let secret = secret_of(&req(addr, "POST", &join_path, Some(body.clone())).await);
    let (_, old1) = open(addr, &code, &chat("m", "old1", true), "").await;
    let (_, old2) = open(addr, &code, &chat("m", "old2", true), "").await;
    assert_eq!(leave(addr, &code, "p", &secret).await.status, 200);
    assert_eq!(req(addr, "POST", &join_path, Some(body)).await.status, 201);
    // The new registration has its 2 slots: two more run, a third waits.
    let (_, new1) = open(addr, &code, &chat("m", "new1", true), "").await;
    let (_, new2) = open(addr, &code, &chat("m", "new2", true), "").await;
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let third = spawn_chat(addr, &code, chat("m", "new3", false), String::new());
    sse.until("llm:queued").await;
    // The old registration's requests end: they free nothing of the new one's.
    drop((old1, old2));
    eventually("the old streams end at the participant", async || {
        m.active() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        metric(addr, "gambiarra_queue_depth 1").await,
        "the third still waits"
    );
    drop(new1);
    assert_eq!(third.await.unwrap().status, 200);
    drop(new2);
    hub.shutdown().await;
}
