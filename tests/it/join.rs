//! The participant agent (`gambiarra join`, the real binary) against a real hub and the mock
//! LLM: probing, registration with specs, serving chats, re-joining when the hub forgets it,
//! and leaving on SIGINT.
#![cfg(all(feature = "client", feature = "tools"))]

use std::process::Stdio;

use crate::common::*;
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::{Value, json};

/// A hub, the mock LLM answering `tokens` tokens, and a room named `name`.
async fn setup(tokens: u32, name: &str) -> (gambiarra::Hub, std::net::SocketAddr, MockLlm, String) {
    let (hub, addr, mock, code, _) = setup_with_host_token(tokens, name).await;
    (hub, addr, mock, code)
}

async fn setup_with_host_token(
    tokens: u32,
    name: &str,
) -> (
    gambiarra::Hub,
    std::net::SocketAddr,
    MockLlm,
    String,
    String,
) {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let config = MockConfig {
        tokens,
        ..MockConfig::default()
    };
    let mock = MockLlm::start("127.0.0.1:0".parse().unwrap(), config, false)
        .await
        .unwrap();
    let created = req(
        addr,
        "POST",
        "/rooms",
        Some(serde_json::json!({ "name": name })),
    )
    .await
    .json();
    let code = created["room"]["code"].as_str().unwrap().to_string();
    let token = created["hostToken"].as_str().unwrap().to_string();
    (hub, addr, mock, code, token)
}

fn agent(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"));
    cmd.arg("join")
        .args(args)
        .env_remove("GAMBIARRA_HUB")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn participants(addr: std::net::SocketAddr, code: &str) -> Vec<Value> {
    req(addr, "GET", &format!("/rooms/{code}/participants"), None)
        .await
        .json()["participants"]
        .as_array()
        .unwrap()
        .clone()
}

/// Poll until `pred` holds for the room's participants.
async fn until(
    addr: std::net::SocketAddr,
    code: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut seen = Vec::new();
    eventually("the participants reach the expected state", async || {
        seen = participants(addr, code).await;
        pred(&seen)
    })
    .await;
    seen
}

#[tokio::test]
async fn join_serve_rejoin_and_leave() {
    let (hub, addr, mock, code, host_token) = setup_with_host_token(3, "agents").await;
    let hub_url = format!("http://{addr}");
    let child = agent(&[
        "--code",
        &code.to_lowercase(),
        "--model",
        "llama3",
        "--endpoint",
        &mock.url(),
        "--hub",
        &hub_url,
        "--nickname",
        "agent",
        "--id",
        "agent-1",
        "--health-interval-ms",
        "100",
    ])
    .spawn()
    .unwrap();

    // Registered, with this machine's specs.
    let ps = until(addr, &code, |ps| ps.len() == 1).await;
    assert_eq!(ps[0]["id"], "agent-1");
    assert_eq!(ps[0]["nickname"], "agent");
    assert_eq!(ps[0]["endpoint"], mock.url());
    assert!(
        ps[0]["specs"]["ram"].is_number() || ps[0]["specs"]["cpu"].is_string(),
        "{}",
        ps[0]
    );

    // A chat through the hub reaches the agent's model.
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(json!({"model": "agent-1"})),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 "
    );

    // The hub forgets the participant (the host removes it; as after a restart): the agent
    // re-joins by itself within a health interval or two.
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.next().await;
    let removed = Conn::open(addr)
        .await
        .request_with(
            "DELETE",
            &format!("/rooms/{code}/leave/agent-1"),
            None,
            &format!("Gambiarra-Host-Token: {host_token}\r\n"),
        )
        .await;
    assert_eq!(removed.status, 200, "{}", removed.error());
    assert_eq!(
        sse.until("participant:left").await.data["participantId"],
        "agent-1"
    );
    assert_eq!(sse.until("participant:joined").await.data["id"], "agent-1");

    // SIGINT: the agent leaves the room, then exits 0.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert_eq!(
        sse.until("participant:left").await.data["participantId"],
        "agent-1"
    );
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("re-joined room"), "{stdout}");
    assert!(stdout.contains("Left room"), "{stdout}");
    assert!(participants(addr, &code).await.is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn refuses_unknown_models_and_dead_endpoints() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let mock = MockLlm::start("127.0.0.1:0".parse().unwrap(), MockConfig::default(), false)
        .await
        .unwrap();
    let code = create_room(addr, "agents").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let hub_url = format!("http://{addr}");
    let out = agent(&[
        "--code",
        &code,
        "--model",
        "mistral",
        "--endpoint",
        &mock.url(),
        "--hub",
        &hub_url,
    ])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"mistral\" is not available") && err.contains("- llama3"),
        "{err}"
    );

    let dead = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    );
    let out = agent(&[
        "--code",
        &code,
        "--model",
        "llama3",
        "--endpoint",
        &dead,
        "--hub",
        &hub_url,
    ])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Is your model server running?"));

    // A room that does not exist is a clear failure too.
    let out = agent(&[
        "--code",
        "ZZZZZZ",
        "--model",
        "llama3",
        "--endpoint",
        &mock.url(),
        "--hub",
        &hub_url,
        "--no-specs",
    ])
    .output()
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Room not found"));
    assert!(participants(addr, &code).await.is_empty());
    hub.shutdown().await;
}

#[tokio::test]
async fn monitor_plain_prints_a_line_per_event() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let (hub, addr, mock, code) = setup(4, "watched").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
        .args([
            "monitor",
            "--plain",
            "--room",
            &code,
            "--hub",
            &format!("http://{addr}"),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    };
    assert!(
        next()
            .await
            .ends_with(&format!("{code} connected to the hub"))
    );
    join(addr, &code, "w1", &mock.url()).await;
    let l = next().await;
    assert!(
        l.contains(&code) && l.contains("nick-w1 joined with llama3"),
        "{l}"
    );
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(json!({"model": "w1"})),
    )
    .await;
    assert!(next().await.contains("request for w1 → nick-w1"));
    let l = next().await;
    assert!(l.contains("nick-w1 done: 4 tokens"), "{l}");
    // HH:MM:SS CODE text
    assert_eq!(l.as_bytes()[2], b':');
    child.kill().await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn a_protected_room_through_tunnels_until_its_host_deletes_it() {
    use gambiarra::client::HubClient;
    const PW: &str = "open sesame";
    let hub = start_default().await;
    let addr = hub.local_addr();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            tokens: 2,
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let client = HubClient::new(&format!("http://{addr}")).unwrap();
    let created = client.create_room("locked", Some(PW)).await.unwrap();
    let code = created.room.code.clone();
    let args = |pw: &'static str| {
        let (code, url, hub_url) = (code.clone(), mock.url(), format!("http://{addr}"));
        let mut cmd = agent(&[
            "--code",
            &code,
            "--model",
            "llama3",
            "--endpoint",
            &url,
            "--hub",
            &hub_url,
            "--id",
            "locked-1",
            "--no-specs",
            "--health-interval-ms",
            "100",
        ]);
        cmd.env("GAMBIARRA_PASSWORD", pw);
        cmd
    };

    // The wrong password: the agent says so and exits.
    let out = args("guess").output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Invalid password"), "{err}");

    // The right one (from $GAMBIARRA_PASSWORD): it joins, health-checks and serves through
    // its tunnels, which authenticate with the password too.
    let child = args(PW).spawn().unwrap();
    let member = client.clone().with_password(Some(PW));
    eventually("the agent joined the protected room", async || {
        member.participants(&code).await.unwrap().len() == 1
    })
    .await;
    let chat = json!({"model": "*", "messages": []});
    let r = req_with(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(chat),
        &format!("Authorization: Bearer {PW}\r\n"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    assert_eq!(r.json()["choices"][0]["message"]["content"], "tok0 tok1 ");

    // The host deletes the room; the agent hears at its next health check and stops.
    client
        .delete_room(&code, created.host_token.as_deref())
        .await
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the agent stops by itself")
        .unwrap();
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("was deleted by its host"), "{said}");
    hub.shutdown().await;
}
