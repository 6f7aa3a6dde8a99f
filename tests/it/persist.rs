//! `serve --state FILE`: rooms survive restarts, a crash mid-burst loses nothing that was
//! acknowledged, and participants' agents come back by themselves.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use crate::common::*;
use gambiarra::HubConfig;
#[cfg(all(feature = "client", feature = "tools"))]
use gambiarra::tools::mock::{MockConfig, MockLlm};
use serde_json::{Value, json};

fn state_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gambiarra-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("state.json");
    let _ = std::fs::remove_file(&path);
    path
}

fn serve(port: u16, state: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--quiet",
        ])
        .arg("--state")
        .arg(state)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn wait_up(addr: SocketAddr) {
    eventually("the hub is up", async || {
        tokio::net::TcpStream::connect(addr).await.is_ok()
    })
    .await;
}

#[cfg(all(feature = "client", feature = "tools"))]
async fn count(addr: SocketAddr, code: &str) -> usize {
    req(addr, "GET", &format!("/rooms/{code}/participants"), None)
        .await
        .json()["participants"]
        .as_array()
        .map_or(0, |a| a.len())
}

async fn codes(addr: SocketAddr) -> Vec<String> {
    req(addr, "GET", "/rooms", None).await.json()["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn rooms_survive_a_restart() {
    let path = state_path("restart");
    let config = || HubConfig {
        state_file: Some(path.clone()),
        ..HubConfig::default()
    };
    let hub = start(config()).await;
    let a = create_room(hub.local_addr(), "first").await;
    let b = create_room(hub.local_addr(), "second").await;
    join(
        hub.local_addr(),
        a["code"].as_str().unwrap(),
        "p",
        "http://x",
    )
    .await;
    hub.shutdown().await;

    let hub = start(config()).await;
    let rooms = req(hub.local_addr(), "GET", "/rooms", None).await.json()["rooms"].clone();
    let rooms = rooms.as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    for (saved, loaded) in [&a, &b].iter().zip(rooms) {
        for key in ["id", "code", "name", "hostId", "createdAt"] {
            assert_eq!(saved[key], loaded[key], "{key}");
        }
    }
    // Participants are not saved: their agents re-join.
    assert_eq!(rooms[0]["participantCount"], 0);
    hub.shutdown().await;
}

#[tokio::test]
async fn a_bad_state_file_stops_the_hub_from_starting() {
    let path = state_path("bad");
    std::fs::write(&path, b"{not a state file").unwrap();
    let err = gambiarra::Hub::bind(
        "127.0.0.1:0".parse().unwrap(),
        HubConfig {
            state_file: Some(path),
            ..HubConfig::default()
        },
    )
    .await
    .err()
    .expect("refuses to start");
    assert!(
        err.to_string().contains("not a Gambiarra state file"),
        "{err}"
    );
}

#[tokio::test]
async fn kill_9_mid_burst_keeps_every_acknowledged_room() {
    let path = state_path("kill9");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut hub = serve(port, &path);
    wait_up(addr).await;
    // A burst of creations on several connections; the hub is killed while it runs.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut burst = Vec::new();
    for w in 0..4 {
        let tx = tx.clone();
        burst.push(tokio::spawn(async move {
            for i in 0.. {
                let mut c = match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => Conn {
                        stream: s,
                        buf: Vec::new(),
                    },
                    Err(_) => return,
                };
                c.send(&build(
                    "POST",
                    "/rooms",
                    Some(&json!({"name": format!("w{w}-{i}")})),
                    "",
                ))
                .await;
                match c.read_response().await {
                    Some(r) if r.status == 201 => {
                        let _ = tx.send(r.json()["room"]["code"].as_str().unwrap().to_string());
                    }
                    _ => return,
                }
            }
        }));
    }
    drop(tx);
    let mut acked = Vec::new();
    while acked.len() < 40 {
        acked.push(rx.recv().await.expect("the burst stopped early"));
    }
    hub.start_kill().unwrap(); // SIGKILL
    hub.wait().await.unwrap();
    for b in burst {
        let _ = b.await;
    }
    while let Ok(code) = rx.try_recv() {
        acked.push(code);
    }
    // The file is a valid state, and holds every room that was acknowledged.
    let saved: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(saved["version"], 1);
    let mut hub = serve(port, &path);
    wait_up(addr).await;
    let now = codes(addr).await;
    for code in &acked {
        assert!(now.contains(code), "acknowledged room {code} was lost");
    }
    hub.start_kill().unwrap();
    hub.wait().await.unwrap();
}

#[cfg(all(feature = "client", feature = "tools"))] // runs `gambiarra join` with the mock
#[tokio::test]
async fn agent_is_back_after_a_hub_restart() {
    let path = state_path("agent");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mock = MockLlm::start("127.0.0.1:0".parse().unwrap(), MockConfig::default(), false)
        .await
        .unwrap();
    let mut hub = serve(port, &path);
    wait_up(addr).await;
    let code = create_room(addr, "persistent").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
        .args([
            "join",
            "--code",
            &code,
            "--model",
            "llama3",
            "--endpoint",
            &mock.url(),
        ])
        .args([
            "--hub",
            &format!("http://{addr}"),
            "--id",
            "survivor",
            "--no-specs",
            "--health-interval-ms",
            "200",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually("the agent joined", async || count(addr, &code).await == 1).await;
    // Restart the hub: the room comes back from the state file, the agent re-joins it.
    std::process::Command::new("kill")
        .args(["-TERM", &hub.id().unwrap().to_string()])
        .status()
        .unwrap();
    hub.wait().await.unwrap();
    let mut hub = serve(port, &path);
    wait_up(addr).await;
    eventually("the agent re-joined after the restart", async || {
        count(addr, &code).await == 1
    })
    .await;
    std::process::Command::new("kill")
        .args(["-INT", &agent.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = agent.wait_with_output().await.unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-joined room"));
    hub.start_kill().unwrap();
    hub.wait().await.unwrap();
}

#[tokio::test]
async fn protected_rooms_keep_their_password_and_host_token_across_a_restart() {
    let path = state_path("protected");
    let config = || HubConfig {
        state_file: Some(path.clone()),
        ..HubConfig::default()
    };
    let hub = start(config()).await;
    let r = req(
        hub.local_addr(),
        "POST",
        "/rooms",
        Some(json!({"name": "locked", "password": "s3cret pass"})),
    )
    .await;
    assert_eq!(r.status, 201);
    let created = r.json();
    let code = created["room"]["code"].as_str().unwrap().to_string();
    let token = created["hostToken"].as_str().unwrap().to_string();
    hub.shutdown().await;

    // Hashes only, on disk.
    let saved = std::fs::read_to_string(&path).unwrap();
    assert!(saved.contains("$argon2id$"), "{saved}");
    assert!(!saved.contains("s3cret pass") && !saved.contains(&token));

    let hub = start(config()).await;
    let addr = hub.local_addr();
    let list = req(addr, "GET", "/rooms", None).await.json();
    assert_eq!(list["rooms"][0]["passwordProtected"], true);
    let p = format!("/rooms/{code}/participants");
    assert_eq!(req(addr, "GET", &p, None).await.status, 401);
    let bearer = |t: &str| format!("Authorization: Bearer {t}\r\n");
    assert_eq!(
        req_with(addr, "GET", &p, None, &bearer("nope"))
            .await
            .status,
        401
    );
    assert_eq!(
        req_with(addr, "GET", &p, None, &bearer("s3cret pass"))
            .await
            .status,
        200
    );
    let del = format!("/rooms/{code}");
    assert_eq!(
        req_with(addr, "DELETE", &del, None, &bearer("nope"))
            .await
            .status,
        403
    );
    assert_eq!(
        req_with(addr, "DELETE", &del, None, &bearer(&token))
            .await
            .status,
        200
    );
    hub.shutdown().await;
    // The deletion was saved too.
    let hub = start(config()).await;
    assert_eq!(
        req(hub.local_addr(), "GET", "/rooms", None).await.json()["rooms"],
        json!([])
    );
    hub.shutdown().await;
}
