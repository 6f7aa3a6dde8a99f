//! The CLI against other hubs and in other hands: a hub of the TypeScript version (faked here:
//! it reads the join password only from the body and hands out no secrets), `create --json`
//! for scripts, and `monitor --plain` watching a whole hub.
#![cfg(feature = "client")]

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_gambiarra");

/// A hub that answers every request with `answer(method, path)` as JSON and records what it
/// received (head and body, as text).
async fn fake_hub(
    answer: impl Fn(&str, &str) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (answer, log) = (answer.clone(), log.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let request = loop {
                    if let Some(end) = find(&buf, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .to_ascii_lowercase()
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break String::from_utf8_lossy(&buf[..end + 4 + len]).to_string();
                        }
                    }
                    match s.read(&mut tmp).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                };
                let mut line = request.split(' ');
                let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                let (status, body) = answer(method, path);
                log.lock().unwrap().push(request.clone());
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn join_against_a_hub_of_the_typescript_version() {
    let participant = json!({"id": "p", "nickname": "p", "model": "m", "endpoint": "http://127.0.0.1:1",
        "config": {}, "specs": {}, "status": "online", "joinedAt": 1, "lastSeen": 1});
    let (url, seen) = fake_hub(move |method, path| match (method, path) {
        ("POST", p) if p.ends_with("/join") => (
            201,
            json!({"participant": participant.clone(), "roomId": "r"}).to_string(),
        ),
        _ => (200, json!({"success": true}).to_string()),
    })
    .await;
    let mut agent = tokio::process::Command::new(BIN)
        .args(["join", "--hub", &url, "--code", "ABCDEF", "--model", "m"])
        .args([
            "--endpoint",
            "http://127.0.0.1:1",
            "--id",
            "p",
            "--password",
            "pw",
        ])
        .args(["--no-probe", "--no-specs", "--health-interval-ms", "100"])
        .env_remove("GAMBIARRA_HUB")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Watch stderr for the one warning while health checks go by.
    let mut stderr = BufReader::new(agent.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = stderr.next_line().await {
            if line.contains("does not offer tunnels") {
                return line;
            }
        }
        String::new()
    })
    .await
    .expect("a warning about tunnels");
    assert!(warning.contains("serving directly"), "{warning}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = agent.kill().await;
    let seen = seen.lock().unwrap().clone();
    let join = &seen[0];
    assert!(join.starts_with("POST /rooms/ABCDEF/join "), "{join}");
    // The password goes as a Bearer (this hub) and in the body (the TypeScript hub).
    assert!(join.contains("Authorization: Bearer pw"), "{join}");
    assert!(join.contains(r#""password":"pw""#), "{join}");
    assert!(
        seen.iter()
            .any(|r| r.starts_with("POST /rooms/ABCDEF/health"))
    );
    // Falling back to direct: not a single tunnel attempt.
    assert!(!seen.iter().any(|r| r.contains("/tunnel/")), "{seen:?}");
}

#[tokio::test]
async fn create_json_prints_the_hubs_answer_as_it_came() {
    // An older hub's answer: fields this version does not know, `passwordProtected` absent.
    let answer = r#"{"room":{"id":"r1","code":"ABC234","name":"Lab","hostId":"h","createdAt":1,"password":"$argon2…"},"hostId":"h","somethingNew":[1,2]}"#;
    let (url, _) = fake_hub(move |_, _| (201, answer.to_string())).await;
    let out = tokio::process::Command::new(BIN)
        .args(["create", "--name", "Lab", "--hub", &url, "--json"])
        .env_remove("GAMBIARRA_HUB")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), answer);
    // The human output names the hub it was given, so its join line can be pasted.
    let (url, _) = fake_hub(move |_, _| (201, answer.to_string())).await;
    let out = tokio::process::Command::new(BIN)
        .args(["create", "--name", "Lab", "--hub", &url])
        .env_remove("GAMBIARRA_HUB")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "gambiarra join --code ABC234 --model MODEL --hub {url}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn monitor_plain_watches_a_whole_hub() {
    let hub = start_default().await;
    let addr = hub.local_addr();
    let a = room_code(addr, "alpha").await;
    let b = room_code(addr, "beta").await;
    assert_eq!(
        join(addr, &a, "early-bird", "http://127.0.0.1:1")
            .await
            .status,
        201
    );
    let locked = create_locked(addr, "secret").await;
    let mut monitor = tokio::process::Command::new(BIN)
        .args(["monitor", "--plain", "--hub", &format!("http://{addr}")])
        .env_remove("GAMBIARRA_HUB")
        .env_remove("GAMBIARRA_PASSWORD")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(monitor.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    let mut next_until = async |out: &mut Vec<String>, what: &dyn Fn(&str) -> bool| {
        tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                out.push(line.clone());
                if what(&line) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("not seen; so far:\n{}", out.join("\n")));
    };
    // Who is there at the start is listed.
    next_until(&mut out, &|l: &str| {
        l.contains("early-bird") && l.contains("is here")
    })
    .await;
    // The protected room is refused once, and not retried for ever.
    next_until(&mut out, &|l: &str| {
        l.contains(&locked) && l.contains("cannot watch")
    })
    .await;
    // A new room is announced once, not once per watched room — and then watched too.
    let c = room_code(addr, "gamma").await;
    next_until(&mut out, &|l: &str| {
        l.contains("room created") && l.contains(&c)
    })
    .await;
    // Once its stream is live (`connected`), nothing that happens in it is missed.
    next_until(&mut out, &|l: &str| {
        l.contains(&c) && l.contains("connected")
    })
    .await;
    assert_eq!(
        join(addr, &c, "newcomer", "http://127.0.0.1:1")
            .await
            .status,
        201
    );
    next_until(&mut out, &|l: &str| {
        l.contains(&c) && l.contains("newcomer joined")
    })
    .await;
    let _ = monitor.kill().await;
    let created = out.iter().filter(|l| l.contains("room created")).count();
    assert_eq!(created, 1, "{}", out.join("\n"));
    let refusals = out.iter().filter(|l| l.contains("cannot watch")).count();
    assert_eq!(refusals, 1, "{}", out.join("\n"));
    let _ = b;
    hub.shutdown().await;
}
