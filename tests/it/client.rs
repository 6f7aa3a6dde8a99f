//! The Rust SDK against a real hub: every call, and each error with the hub's status and
//! message; `create` and `list` through the real binary.
#![cfg(all(feature = "client", feature = "tools"))]

use crate::common::*;
use gambiarra::client::{ClientError, HubClient, JoinRequest};

fn join_req(id: &str) -> JoinRequest {
    JoinRequest {
        id: id.into(),
        nickname: format!("nick-{id}"),
        model: "llama3".into(),
        endpoint: "http://localhost:11434".into(),
        ..JoinRequest::default()
    }
}

fn hub_error(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Hub { status, message }) => (status, message),
        other => panic!("expected a hub error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_call_and_its_errors() {
    let hub = start_default().await;
    let client = HubClient::new(&format!("http://{}", hub.local_addr())).unwrap();

    assert!(client.list_rooms().await.unwrap().is_empty());
    let created = client.create_room("Lab", None).await.unwrap();
    let code = created.room.code.clone();
    assert_eq!(created.host_id, created.room.host_id);
    assert_eq!(
        hub_error(client.create_room("", None).await),
        (400, "Name is required".into())
    );

    let joined = client.join(&code, &join_req("p 1")).await.unwrap();
    assert_eq!(joined.room_id, created.room.id);
    assert_eq!(joined.participant.id, "p 1");
    assert_eq!(
        hub_error(client.join("ZZZZZZ", &join_req("x")).await),
        (404, "Room not found".into())
    );
    let mut missing = join_req("x");
    missing.model.clear();
    assert_eq!(
        hub_error(client.join(&code, &missing).await),
        (
            400,
            "Missing required fields: id, nickname, model, endpoint".into()
        )
    );

    let rooms = client.list_rooms().await.unwrap();
    assert_eq!((rooms.len(), rooms[0].participant_count), (1, 1));
    let ps = client.participants(&code.to_lowercase()).await.unwrap();
    assert_eq!(ps[0].nickname, "nick-p 1");
    assert_eq!(hub_error(client.participants("ZZZZZZ").await).0, 404);

    // Without the secret while none was ever sent (the seed's agents), with it, and then only
    // with it.
    client.health_check(&code, "p 1", None).await.unwrap();
    let secret = joined.participant_secret.as_deref();
    client.health_check(&code, "p 1", secret).await.unwrap();
    assert_eq!(
        hub_error(client.health_check(&code, "p 1", None).await).0,
        403
    );
    assert_eq!(
        hub_error(client.health_check(&code, "p 1", Some("forged")).await).0,
        403
    );
    assert_eq!(
        hub_error(client.health_check(&code, "nobody", None).await),
        (404, "Participant not found".into())
    );
    assert_eq!(secret.map(str::len), Some(64));
    // Nobody else can make it leave.
    assert_eq!(hub_error(client.leave(&code, "p 1", None).await).0, 403);
    assert_eq!(
        hub_error(client.leave(&code, "p 1", Some("guess")).await).0,
        403
    );
    client.leave(&code, "p 1", secret).await.unwrap();
    assert_eq!(
        hub_error(client.leave(&code, "p 1", secret).await),
        (404, "Participant not found".into())
    );
    assert_eq!(
        client.openai_base_url(&code),
        format!("http://{}/rooms/{code}/v1", hub.local_addr())
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn unreachable_hub() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = HubClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert!(matches!(
        client.list_rooms().await,
        Err(ClientError::Unreachable(_))
    ));
}

/// Run the real binary (off the async runtime, which serves the hub meanwhile).
async fn gambiarra(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
            .args(&args)
            .env_remove("GAMBIARRA_HUB")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn create_and_list_commands() {
    let hub = start_default().await;
    let url = format!("http://{}", hub.local_addr());
    let (ok, out) = gambiarra(&["list", "--hub", &url]).await;
    assert!(ok);
    assert_eq!(out.trim(), "No rooms available.");
    let (ok, out) = gambiarra(&["create", "--name", "Hack night", "--hub", &url, "--json"]).await;
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let code = v["room"]["code"].as_str().unwrap().to_string();
    let (ok, out) = gambiarra(&["list", "--hub", &url]).await;
    assert!(ok);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("CODE"));
    assert!(
        lines[1].starts_with(&code) && lines[1].contains("Hack night"),
        "{out}"
    );
    let (ok, out) = gambiarra(&["create", "--name", "Plain", "--hub", &url]).await;
    assert!(ok && out.contains("code:") && out.contains("/v1"), "{out}");
    // A room's participants and what each serves.
    let r = req(
        hub.local_addr(),
        "POST",
        &format!("/rooms/{code}/join"),
        Some(serde_json::json!({
            "id": "box", "nickname": "ana", "endpoint": "http://192.0.2.1:1",
            "models": [{"name": "llama3:latest", "loaded": true, "aliases": ["l3"]}, "phi3"],
        })),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.error());
    let (ok, out) = gambiarra(&["list", "--hub", &url, "--code", &code.to_lowercase()]).await;
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].ends_with("MODELS"),
        "{out}"
    );
    assert!(
        lines[1].contains("ana") && lines[1].ends_with("● llama3:latest (also: l3)"),
        "{out}"
    );
    assert!(lines[2].trim() == "phi3", "{out}");
    // An unreachable hub is a clear failure.
    let (ok, _) = gambiarra(&["list", "--hub", "http://127.0.0.1:1"]).await;
    assert!(!ok);
    hub.shutdown().await;
}

#[tokio::test]
async fn event_subscription_is_typed_and_resumes() {
    use gambiarra::client::events::HubEvent;
    let hub = start_default().await;
    let hub_addr = hub.local_addr();
    // A forwarder between the client and the hub, whose live connections the test can cut.
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front_addr = front.local_addr().unwrap();
    let live: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> =
        Default::default();
    let tasks = live.clone();
    let forwarder = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = front.accept().await {
            let task = tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(hub_addr).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
            tasks.lock().unwrap().push(task);
        }
    });
    let client = HubClient::new(&format!("http://{front_addr}")).unwrap();
    let code = client.create_room("events", None).await.unwrap().room.code;
    let mut events = client.subscribe(&code, None).await.unwrap();
    assert!(matches!(
        events.next().await.unwrap().unwrap().event,
        HubEvent::Connected { .. }
    ));
    let joined = client.join(&code, &join_req("a")).await.unwrap();
    match events.next().await.unwrap().unwrap().event {
        HubEvent::ParticipantJoined(p) => assert_eq!(p.id, "a"),
        other => panic!("{other:?}"),
    }
    // Cut the stream, and make something happen while it is down.
    for t in live.lock().unwrap().drain(..) {
        t.abort();
    }
    let direct = HubClient::new(&format!("http://{hub_addr}")).unwrap();
    direct
        .leave(&code, "a", joined.participant_secret.as_deref())
        .await
        .unwrap();
    assert!(matches!(
        events.next().await.unwrap().unwrap().event,
        HubEvent::Disconnected { .. }
    ));
    // It reconnects by itself with Last-Event-ID: the missed event is replayed.
    assert!(matches!(
        events.next().await.unwrap().unwrap().event,
        HubEvent::Connected { .. }
    ));
    let r = events.next().await.unwrap().unwrap();
    assert_eq!(
        r.event,
        HubEvent::ParticipantLeft {
            participant_id: "a".into()
        }
    );
    assert_eq!(events.last_event_id(), r.id);

    // Subscribing to a room that does not exist is the hub's 404.
    assert_eq!(
        hub_error(client.subscribe("ZZZZZZ", None).await.map(|_| ())),
        (404, "Room not found".into())
    );
    forwarder.abort();
    hub.shutdown().await;
}
