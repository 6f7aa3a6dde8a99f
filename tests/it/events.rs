//! The event stream and the health sweeper, over real sockets.

use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn stream_headers_and_room_events() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let (status, headers, mut sse) = Sse::open(addr, code, "").await;
    assert_eq!(status, 200);
    let h = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(h("content-type").as_deref(), Some("text/event-stream"));
    assert_eq!(h("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(h("connection").as_deref(), Some("keep-alive"));
    assert_eq!(h("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(h("access-control-allow-origin").as_deref(), Some("*"));

    let connected = sse.next().await;
    assert_eq!(connected.name, "connected");
    assert_eq!(connected.id, None);
    assert_eq!(connected.data["clientId"].as_str().unwrap().len(), 36);

    let secret = secret_of(&join(addr, code, "p1", "http://localhost:1").await);
    let e = sse.next().await;
    assert_eq!(e.name, "participant:joined");
    assert_eq!(e.data["id"], "p1");
    assert_eq!(e.data["status"], "online");
    let first_id = e.id.unwrap();

    // Joining again with the same id is announced again.
    let secret = secret_of(&rejoin(addr, code, "p1", "http://localhost:2", &secret).await);
    let e = sse.next().await;
    assert_eq!(e.name, "participant:joined");
    assert_eq!(e.data["endpoint"], "http://localhost:2");
    assert_eq!(e.id, Some(first_id + 1));

    leave(addr, code, "p1", &secret).await;
    let e = sse.next().await;
    assert_eq!(
        (e.name.as_str(), e.data.clone()),
        ("participant:left", json!({"participantId": "p1"}))
    );

    // room:created reaches every room's subscribers; other rooms' events do not.
    let other = create_room(addr, "Other").await;
    let other_code = other["code"].as_str().unwrap();
    join(addr, other_code, "elsewhere", "http://localhost:1").await;
    join(addr, code, "marker", "http://localhost:1").await;
    let e = sse.next().await;
    assert_eq!(e.name, "room:created");
    assert_eq!(e.data["code"], other_code);
    assert_eq!(e.data["name"], "Other");
    let e = sse.next().await;
    assert_eq!(e.name, "participant:joined");
    assert_eq!(e.data["id"], "marker", "an event of another room leaked");
    hub.shutdown().await;
}

#[tokio::test]
async fn unknown_room_is_404_json() {
    let hub = start_default().await;
    let r = req(hub.local_addr(), "GET", "/rooms/ZZZZZZ/events", None).await;
    assert_eq!((r.status, r.error()), (404, "Room not found".into()));
    hub.shutdown().await;
}

#[tokio::test]
async fn keep_alive_comments() {
    let config = HubConfig {
        sse_keepalive: Duration::from_millis(50),
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let room = create_room(hub.local_addr(), "R").await;
    let (_, _, mut sse) = Sse::open(hub.local_addr(), room["code"].as_str().unwrap(), "").await;
    assert_eq!(sse.next().await.name, "connected");
    for _ in 0..2 {
        match sse.next_block().await {
            Some(Ok(e)) => assert_eq!(e.name, ":comment"),
            other => panic!("expected a keep-alive comment, got {other:?}"),
        }
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn reconnect_replays_missed_events() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let (_, _, mut sse) = Sse::open(addr, code, "").await;
    sse.next().await;
    let secret = secret_of(&join(addr, code, "a", "http://localhost:1").await);
    let seen = sse.next().await;
    drop(sse);
    // Missed while disconnected:
    join(addr, code, "b", "http://localhost:1").await;
    leave(addr, code, "a", &secret).await;

    let last = seen.id.unwrap();
    let (_, _, mut sse) = Sse::open(addr, code, &format!("Last-Event-ID: {last}\r\n")).await;
    assert_eq!(sse.next().await.name, "connected");
    let e = sse.next().await;
    assert_eq!(
        (e.name.as_str(), e.id),
        ("participant:joined", Some(last + 1))
    );
    assert_eq!(e.data["id"], "b");
    let e = sse.next().await;
    assert_eq!(
        (e.name.as_str(), e.id),
        ("participant:left", Some(last + 2))
    );
    // Then live events continue.
    join(addr, code, "c", "http://localhost:1").await;
    assert_eq!(sse.next().await.id, Some(last + 3));

    // The query-string form (EventSource polyfills) works too.
    let path_q = format!("{code}/events?lastEventId={}", last + 2);
    let mut c = Conn::open(addr).await;
    c.send(format!("GET /rooms/{path_q} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await;
    let (status, _) = c.read_head().await.unwrap();
    assert_eq!(status, 200);

    // An id this room never issued (a hub restart) gets `resync` first.
    let (_, _, mut sse) = Sse::open(addr, code, "Last-Event-ID: 12\r\n").await;
    assert_eq!(sse.next().await.name, "connected");
    let e = sse.next().await;
    assert_eq!(e.name, "resync");
    assert_eq!(e.data["reason"], "unknown-event-id");
    hub.shutdown().await;
}

#[tokio::test]
async fn replay_beyond_the_ring_says_resync() {
    let config = HubConfig {
        event_ring: 3,
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let (_, _, mut sse) = Sse::open(addr, code, "").await;
    sse.next().await;
    join(addr, code, "p0", "http://localhost:1").await;
    let last = sse.next().await.id.unwrap();
    drop(sse);
    for i in 1..=5 {
        join(addr, code, &format!("p{i}"), "http://localhost:1").await;
    }
    let (_, _, mut sse) = Sse::open(addr, code, &format!("Last-Event-ID: {last}\r\n")).await;
    sse.next().await;
    let e = sse.next().await;
    assert_eq!(e.name, "resync");
    assert_eq!(e.data["reason"], "history-truncated");
    // Then what the ring still has: the last three.
    for i in 3..=5 {
        let e = sse.next().await;
        assert_eq!(e.data["id"], format!("p{i}"));
    }
    hub.shutdown().await;
}

#[tokio::test]
async fn slow_subscriber_is_evicted_without_stalling_others() {
    const JOINS: usize = 3000;
    // Each pipelined burst below (20 joins) fits in the queue, so a subscriber that keeps
    // reading is never evicted, even on this single-threaded test runtime.
    let config = HubConfig {
        subscriber_queue: 64,
        max_participants_per_room: JOINS,
        // Hundreds of joins as fast as the socket goes: not what the rate limit is testing.
        control_rate: 0.0,
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap().to_string();

    // The slow subscriber reads its head and then nothing.
    let (_, _, mut slow) = Sse::open_on(Conn::open_small_rcvbuf(addr).await, &code, "").await;
    // The fast one reads everything, concurrently.
    let (_, _, mut fast) = Sse::open(addr, &code, "").await;
    assert_eq!(fast.next().await.name, "connected");
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < JOINS {
            let e = fast.next().await;
            assert_eq!(e.name, "participant:joined");
            n += 1;
        }
        (n, fast)
    });

    // Large events (long endpoint) fill the slow client's socket buffers, then its queue.
    let endpoint = format!("http://example.com/{}", "p".repeat(2000));
    let mut c = Conn::open(addr).await;
    for batch in 0..JOINS / 20 {
        let mut burst = Vec::new();
        for i in 0..20 {
            let body = json!({
                "id": format!("p{}", batch * 20 + i),
                "nickname": "n".repeat(128), "model": "m".repeat(256), "endpoint": endpoint
            });
            burst.extend(build(
                "POST",
                &format!("/rooms/{code}/join"),
                Some(&body),
                "",
            ));
        }
        c.stream.write_all(&burst).await.unwrap();
        for _ in 0..20 {
            assert_eq!(c.read_response().await.unwrap().status, 201);
        }
    }
    let (n, _fast) = reader.await.unwrap();
    assert_eq!(n, JOINS, "the fast subscriber missed events");

    // The slow one was cut off: its stream ends without the terminating chunk.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match slow.next_block().await {
                Some(Ok(_)) => continue,
                Some(Err(clean)) => break clean,
                None => unreachable!(),
            }
        }
    })
    .await
    .expect("the slow subscriber was never cut off");
    assert!(
        !ended,
        "an evicted subscriber must not see a clean end of stream"
    );
    let (evictions, subscribers) = hub.event_counts(&code).unwrap();
    assert_eq!(evictions, 1);
    assert_eq!(subscribers, 1);
    hub.shutdown().await;
}

#[tokio::test]
async fn subscriber_bound_per_room() {
    let config = HubConfig {
        max_subscribers_per_room: 1,
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let room = create_room(hub.local_addr(), "R").await;
    let code = room["code"].as_str().unwrap();
    let (status, _, mut first) = Sse::open(hub.local_addr(), code, "").await;
    assert_eq!(status, 200);
    first.next().await;
    let r = req(
        hub.local_addr(),
        "GET",
        &format!("/rooms/{code}/events"),
        None,
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("subscribers"));
    // A subscriber that leaves frees its place.
    drop(first);
    eventually("the evicted subscriber's place is free", async || {
        Sse::open(hub.local_addr(), code, "").await.0 == 200
    })
    .await;
    hub.shutdown().await;
}

// Virtual time: the sweeps and the wait for "many more sweeps" pass without sleeping.
#[tokio::test(start_paused = true)]
async fn sweeper_marks_offline_once_and_health_brings_back() {
    let config = HubConfig {
        health_interval: Duration::from_millis(50),
        participant_timeout: Duration::from_millis(200),
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let code = room["code"].as_str().unwrap();
    let (_, _, mut sse) = Sse::open(addr, code, "").await;
    sse.next().await;
    join(addr, code, "quiet", "http://localhost:1").await;
    assert_eq!(sse.next().await.name, "participant:joined");
    let e = sse.next().await;
    assert_eq!(
        (e.name.as_str(), e.data.clone()),
        ("participant:offline", json!({"participantId": "quiet"}))
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"][0]["status"], "offline");
    // Offline participants are not offered as models.
    let r = req(addr, "GET", &format!("/rooms/{code}/v1/models"), None).await;
    assert_eq!(r.json()["data"], json!([]));

    // Many more sweeps pass; the offline event is not repeated. The next event is the one the
    // health check causes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/health"),
        Some(json!({"id": "quiet"})),
    )
    .await;
    assert_eq!(r.status, 200);
    let e = sse.next().await;
    assert_eq!(
        (e.name.as_str(), e.data.clone()),
        ("participant:online", json!({"participantId": "quiet"}))
    );
    let r = req(addr, "GET", &format!("/rooms/{code}/participants"), None).await;
    assert_eq!(r.json()["participants"][0]["status"], "online");
    hub.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_streams_cleanly() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let (_, _, mut sse) = Sse::open(addr, room["code"].as_str().unwrap(), "").await;
    sse.next().await;
    let done = tokio::spawn(hub.shutdown());
    let end = loop {
        match sse.next_block().await {
            Some(Ok(_)) => continue,
            Some(Err(clean)) => break clean,
            None => unreachable!(),
        }
    };
    assert!(end, "the stream should end with its terminating chunk");
    tokio::time::timeout(WAIT, done).await.unwrap().unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn room_and_participant_limits() {
    let config = HubConfig {
        max_rooms: 2,
        max_participants_per_room: 2,
        ..HubConfig::default()
    };
    let hub = start(config).await;
    let addr = hub.local_addr();
    let room = create_room(addr, "a").await;
    create_room(addr, "b").await;
    let r = req(addr, "POST", "/rooms", Some(json!({"name": "c"}))).await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("Room limit"));
    let code = room["code"].as_str().unwrap();
    let first = join(addr, code, "1", "http://x").await;
    assert_eq!(first.status, 201);
    assert_eq!(join(addr, code, "2", "http://x").await.status, 201);
    let r = join(addr, code, "3", "http://x").await;
    assert_eq!(r.status, 503);
    assert!(r.error().contains("Participant limit"));
    // Re-joining with a known id is a replacement, not a new place.
    let secret = secret_of(&first);
    assert_eq!(
        rejoin(addr, code, "1", "http://y", &secret).await.status,
        201
    );
    hub.shutdown().await;
}

/// `gambiarra bench --subscribers`: every subscriber receives every timed event, and the
/// hub's memory is read when its pid is given.
#[cfg(feature = "tools")]
#[tokio::test]
async fn the_fanout_probe_times_every_subscriber() {
    use gambiarra::tools::fanout::{FanoutConfig, run};
    let hub = start_default().await;
    let addr = hub.local_addr();
    let room = create_room(addr, "R").await;
    let report = run(FanoutConfig {
        addr,
        host: addr.to_string(),
        code: room["code"].as_str().unwrap().to_string(),
        subscribers: 40,
        events: 3,
        hub_pid: Some(std::process::id()),
    })
    .await
    .unwrap();
    assert_eq!(report.deliveries.len(), 3);
    for d in &report.deliveries {
        assert_eq!(d.received, 40, "{d:?}");
        assert!(d.first_ms <= d.p50_ms && d.p50_ms <= d.all_ms, "{d:?}");
    }
    assert_eq!(report.deliveries[1].event, "participant:left");
    assert!(report.hub_rss_after_kib.is_some());
    hub.shutdown().await;
}
