//! Reverse tunnels: a participant whose model server the hub cannot reach serves through
//! connections it opens to the hub; only its own secret can attach them.
#![cfg(all(feature = "client", feature = "tools"))]

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::client::Target;
use gambiarra::client::tunnel::{TunnelSpec, run as run_tunnels};
use gambiarra::client::{HubClient, JoinRequest};
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::json;

struct Setup {
    hub: gambiarra::Hub,
    client: HubClient,
    code: String,
    secret: String,
    mock: MockLlm,
}

/// A hub, and a tunnelled participant "t" whose registered endpoint is dead: the hub can only
/// reach the mock through the tunnels.
async fn setup() -> Setup {
    let hub = start(HubConfig {
        tunnel_wait: Duration::from_millis(300),
        ..HubConfig::default()
    })
    .await;
    let client = HubClient::new(&format!("http://{}", hub.local_addr())).unwrap();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            tokens: 5,
            token_delay: Duration::from_millis(5),
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap();
    let code = client.create_room("tunnels", None).await.unwrap().room.code;
    let dead = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let joined = client
        .join(
            &code,
            &JoinRequest {
                id: "t".into(),
                nickname: "tunneller".into(),
                model: "llama3".into(),
                endpoint: dead,
                tunnel: true,
                ..JoinRequest::default()
            },
        )
        .await
        .unwrap();
    let secret = joined
        .tunnel_secret
        .expect("a tunnelled join gets its secret");
    Setup {
        hub,
        client,
        code,
        secret,
        mock,
    }
}

fn spec(s: &Setup) -> TunnelSpec {
    TunnelSpec {
        hub: s.client.clone(),
        code: s.code.clone(),
        id: "t".into(),
        secret: Arc::new(RwLock::new(s.secret.clone())),
        local: Arc::new(Target::from_endpoint(&s.mock.url()).unwrap()),
    }
}

async fn wait_parked(s: &Setup, n: usize) {
    eventually("tunnels parked", async || {
        s.hub.participants(&s.code).is_some() && parked(s) >= n
    })
    .await;
}

fn parked(s: &Setup) -> usize {
    // Counted through the public API: participants list does not show tunnels, so ask the hub
    // object the test embeds.
    s.hub.parked_tunnels(&s.code, "t")
}

#[tokio::test]
async fn chats_go_through_the_tunnel() {
    let s = setup().await;
    let addr = s.hub.local_addr();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run_tunnels(spec(&s), 3, stopped));
    wait_parked(&s, 3).await;
    // The secret is in the join answer only: never in listings.
    let listing = req(
        addr,
        "GET",
        &format!("/rooms/{}/participants", s.code),
        None,
    )
    .await;
    assert!(!String::from_utf8_lossy(&listing.body).contains(&s.secret));

    let path = format!("/rooms/{}/v1/chat/completions", s.code);
    for _ in 0..5 {
        let r = req(addr, "POST", &path, Some(json!({"model": "t"}))).await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "tok0 tok1 tok2 tok3 tok4 "
        );
        let r = req(
            addr,
            "POST",
            &path,
            Some(json!({"model": "*", "stream": true})),
        )
        .await;
        assert_eq!(r.status, 200);
        let text = String::from_utf8(r.body).unwrap();
        assert!(text.contains("tok4") && text.trim_end().ends_with("[DONE]"));
    }
    // The participant saw its own model name; the pool is warm again.
    assert!(String::from_utf8_lossy(&s.mock.requests()[0].body).contains("\"model\":\"llama3\""));
    wait_parked(&s, 3).await;
    // Tunnels are reused like keep-alive connections: ten requests one after another reached
    // the local server over one connection, and the pool did not grow for them.
    let peers: std::collections::HashSet<_> = s.mock.requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 1, "{peers:?}");
    assert!(parked(&s) <= 4, "parked: {}", parked(&s));

    // The agent goes away: its tunnels close, and requests fail fast with 503.
    stop.send(true).unwrap();
    agent.await.unwrap();
    let t0 = std::time::Instant::now();
    let r = req(addr, "POST", &path, Some(json!({"model": "t"}))).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.json()["error"]["message"],
        "Participant has no open tunnel"
    );
    assert!(t0.elapsed() < WAIT);
    // No free tunnel is load, not death: however many times, it does not mark the participant
    // offline (else anyone could, by keeping its tunnels busy, and then take its id). Its
    // health checks stopping does.
    req(addr, "POST", &path, Some(json!({"model": "t"}))).await;
    req(addr, "POST", &path, Some(json!({"model": "t"}))).await;
    let r = req(
        addr,
        "GET",
        &format!("/rooms/{}/participants", s.code),
        None,
    )
    .await;
    assert_eq!(r.json()["participants"][0]["status"], "online");
    s.hub.shutdown().await;
}

#[tokio::test]
async fn killed_agent_sockets_are_noticed() {
    let s = setup().await;
    let addr = s.hub.local_addr();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run_tunnels(spec(&s), 2, stopped));
    wait_parked(&s, 2).await;
    // Kill the agent outright (its sockets close without a word).
    agent.abort();
    let _ = agent.await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{}/v1/chat/completions", s.code),
        Some(json!({"model": "t"})),
    )
    .await;
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    s.hub.shutdown().await;
}

#[tokio::test]
async fn only_the_participant_secret_attaches_a_tunnel() {
    let s = setup().await;
    let addr = s.hub.local_addr();
    let attempt = |auth: Option<String>, id: &'static str| {
        let code = s.code.clone();
        async move {
            let mut c = Conn::open(addr).await;
            let auth = auth
                .map(|a| format!("Gambiarra-Tunnel-Secret: {a}\r\n"))
                .unwrap_or_default();
            c.send(
                format!("GET /rooms/{code}/tunnel/{id} HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: gambiarra-tunnel\r\n{auth}\r\n")
                    .as_bytes(),
            )
            .await;
            c.read_head().await.unwrap().0
        }
    };
    assert_eq!(attempt(None, "t").await, 401);
    assert_eq!(attempt(Some("0".repeat(64)), "t").await, 401);
    assert_eq!(attempt(Some(s.secret[..10].to_string()), "t").await, 401);
    assert_eq!(attempt(Some(s.secret.clone()), "nobody").await, 404);
    assert_eq!(attempt(Some(s.secret.clone()), "t").await, 101);
    // A direct participant has no tunnel to attach.
    join(addr, &s.code, "direct", "http://127.0.0.1:1").await;
    assert_eq!(attempt(Some(s.secret.clone()), "direct").await, 401);
    // The right secret without the Upgrade headers is refused too.
    let mut c = Conn::open(addr).await;
    c.send(
        format!(
            "GET /rooms/{}/tunnel/t HTTP/1.1\r\nHost: t\r\nGambiarra-Tunnel-Secret: {}\r\n\r\n",
            s.code, s.secret
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.read_response().await.unwrap().status, 426);
    // Nobody can re-join an online id without its secret…
    let mut rejoin = JoinRequest {
        id: "t".into(),
        nickname: "n".into(),
        model: "llama3".into(),
        endpoint: "http://127.0.0.1:1".into(),
        tunnel: true,
        ..JoinRequest::default()
    };
    match s.client.join(&s.code, &rejoin).await {
        Err(gambiarra::client::ClientError::Hub { status, .. }) => assert_eq!(status, 403),
        other => panic!("{other:?}"),
    }
    assert_eq!(attempt(Some(s.secret.clone()), "t").await, 101);
    // …and a re-join with it issues a new secret; the old one stops working.
    rejoin.participant_secret = Some(s.secret.clone());
    let again = s.client.join(&s.code, &rejoin).await.unwrap();
    assert_eq!(again.tunnel_secret, again.participant_secret);
    assert_ne!(again.tunnel_secret.as_deref(), Some(s.secret.as_str()));
    assert_eq!(attempt(Some(s.secret.clone()), "t").await, 401);
    s.hub.shutdown().await;
}
