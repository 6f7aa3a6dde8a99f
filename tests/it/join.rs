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

/// The `model` of each request the mock received.
fn upstream_models(mock: &MockLlm) -> Vec<String> {
    mock.requests()
        .iter()
        .filter(|r| r.head.path().ends_with("/completions"))
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["model"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn one_agent_shares_every_model_and_follows_the_server() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "ollama box").await;
    // An Ollama with three models, llama3 in memory.
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "llama3:latest".into(),
            more_models: vec!["phi3:latest".into(), "qwen2.5:7b".into()],
            loaded: vec!["llama3:latest".into()],
            tokens: 2,
            token_delay: std::time::Duration::ZERO,
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap();
    let (_, _, mut sse) = Sse::open(addr, &code, "").await;
    sse.until("connected").await;
    let hub_url = format!("http://{addr}");
    let child = agent(&[
        "--code",
        &code,
        "--all-models",
        "--model",
        "qwen2.5:7b",
        "--alias",
        "l3=llama3",
        "--endpoint",
        &mock.url(),
        "--hub",
        &hub_url,
        "--id",
        "box",
        "--no-specs",
        "--probe-interval-ms",
        "150",
        "--health-interval-ms",
        "1000",
    ])
    .spawn()
    .unwrap();
    let joined = sse.until("participant:joined").await.data;
    assert_eq!(joined["model"], "qwen2.5:7b", "the named model is primary");
    // It answered Ollama's /api/tags, and has a /v1/responses and a /v1/messages.
    assert_eq!(
        joined["protocols"],
        json!(["ollama", "responses", "anthropic"])
    );
    assert_eq!(
        joined["models"],
        json!([
            {"name": "qwen2.5:7b", "loaded": false},
            {"name": "llama3:latest", "aliases": ["l3"], "loaded": true},
            {"name": "phi3:latest", "loaded": false},
        ])
    );
    // Routing by the names users send: the server gets its own.
    for (asked, served) in [
        ("llama3", "llama3:latest"),
        ("l3", "llama3:latest"),
        ("PHI3", "phi3:latest"),
        ("box", "qwen2.5:7b"),
    ] {
        let r = req(
            addr,
            "POST",
            &format!("/rooms/{code}/v1/chat/completions"),
            Some(json!({"model": asked, "messages": []})),
        )
        .await;
        assert_eq!(r.status, 200, "{asked}: {}", r.error());
        assert_eq!(upstream_models(&mock).last().unwrap(), served, "{asked}");
    }
    // `ollama pull mistral`, and phi3 loaded in llama3's place: one re-probe later the room
    // knows.
    mock.set_models(&[
        "llama3:latest",
        "phi3:latest",
        "qwen2.5:7b",
        "mistral:latest",
    ]);
    mock.set_loaded(&["phi3:latest"]);
    // (Two looks may see the two changes apart: wait for the entry with both.)
    let want = json!([
        {"name": "qwen2.5:7b", "loaded": false},
        {"name": "llama3:latest", "aliases": ["l3"], "loaded": false},
        {"name": "phi3:latest", "loaded": true},
        {"name": "mistral:latest", "loaded": false},
    ]);
    while sse.until("participant:updated").await.data["models"] != want {}
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(json!({"model": "mistral", "messages": []})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.error());
    // `ollama rm phi3`: gone from the room too.
    mock.set_models(&["llama3:latest", "qwen2.5:7b", "mistral:latest"]);
    while sse.until("participant:updated").await.data["models"]
        .as_array()
        .is_some_and(|m| m.len() != 3)
    {}
    let catalogue = req(addr, "GET", &format!("/rooms/{code}/v1/models"), None)
        .await
        .json();
    let ids: Vec<&str> = catalogue["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["qwen2.5:7b", "llama3:latest", "l3", "mistral:latest", "box"]
    );
    // SIGINT: the agent finishes what it is doing, leaves, and exits.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("(Ollama) serves qwen2.5:7b ○, llama3:latest ●"),
        "{stdout}"
    );
    assert!(stdout.contains("+ Now sharing mistral:latest"), "{stdout}");
    assert!(
        stdout.contains("- No longer sharing phi3:latest"),
        "{stdout}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn what_to_share_must_be_said() {
    for (args, says) in [
        (
            &["--code", "ABCDEF"][..],
            "--model NAME (repeatable) or --all-models",
        ),
        (
            &["--code", "ABCDEF", "--all-models", "--no-probe"][..],
            "drop --no-probe",
        ),
        (
            &["--code", "ABCDEF", "--model", "m", "--alias", "x"][..],
            "expected ALIAS=MODEL",
        ),
    ] {
        let out = agent(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
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

#[tokio::test]
async fn the_agent_tells_the_hub_its_servers_slots() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let code = room_code(addr, "slots").await;
    // A llama.cpp-like server reports 3 slots on /props; --parallel overrides what it says.
    let llama = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            slots: Some(3),
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let hub_url = format!("http://{addr}");
    let llama_url = llama.url();
    let mut children = Vec::new();
    for (id, extra) in [("probed", None), ("told", Some("2"))] {
        let mut args = vec![
            "--code",
            &code,
            "--model",
            "llama3",
            "--endpoint",
            &llama_url,
            "--hub",
            &hub_url,
            "--id",
            id,
            "--no-specs",
        ];
        if let Some(n) = extra {
            args.extend(["--parallel", n]);
        }
        children.push(agent(&args).spawn().unwrap());
    }
    let ps = until(addr, &code, |ps| ps.len() == 2).await;
    let slots = |id: &str| ps.iter().find(|p| p["id"] == id).unwrap()["slots"].clone();
    assert_eq!(slots("probed"), json!(3));
    assert_eq!(slots("told"), json!(2));
    // A server that does not say (no /props): none sent, the hub's default applies.
    let plain = MockLlm::start("127.0.0.1:0".parse().unwrap(), MockConfig::default(), false)
        .await
        .unwrap();
    let code2 = room_code(addr, "plain").await;
    children.push(
        agent(&[
            "--code",
            &code2,
            "--model",
            "llama3",
            "--endpoint",
            &plain.url(),
            "--hub",
            &hub_url,
            "--no-specs",
        ])
        .spawn()
        .unwrap(),
    );
    let ps = until(addr, &code2, |ps| ps.len() == 1).await;
    assert!(ps[0].get("slots").is_none(), "{}", ps[0]);
    let bad = agent(&[
        "--code",
        &code2,
        "--model",
        "llama3",
        "--parallel",
        "0",
        "--hub",
        &hub_url,
    ])
    .output()
    .await
    .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--parallel must be between 1 and 1024"));
    drop(children);
    hub.shutdown().await;
}
