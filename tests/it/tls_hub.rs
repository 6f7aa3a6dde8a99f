//! `serve --tls-cert --tls-key`: the hub itself speaks HTTPS; the CLI reaches it with `--ca`.
#![cfg(all(feature = "client", feature = "tools"))]

use crate::common::free_port;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gambiarra(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
        .args(args)
        .env_remove("GAMBIARRA_HUB")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn https_hub_end_to_end() {
    let dir = std::env::temp_dir().join(format!("gambiarra-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_pem, ck.cert.pem()).unwrap();
    std::fs::write(&key_pem, ck.signing_key.serialize_pem()).unwrap();
    let port = free_port();
    let mut hub = tokio::process::Command::new(env!("CARGO_BIN_EXE_gambiarra"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--quiet",
        ])
        .arg("--tls-cert")
        .arg(&cert_pem)
        .arg("--tls-key")
        .arg(&key_pem)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = format!("https://localhost:{port}");
    let ca = cert_pem.to_str().unwrap();

    // Without --ca the self-signed hub is refused; with it, the CLI works over TLS.
    let (ok, _, err) = gambiarra(&["list", "--hub", &url]).await;
    assert!(!ok && err.contains("TLS"), "{err}");
    let (ok, out, err) = gambiarra(&["list", "--hub", &url, "--ca", ca]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "No rooms available.");
    let (ok, out, _) = gambiarra(&[
        "create", "--name", "secure", "--hub", &url, "--ca", ca, "--json",
    ])
    .await;
    assert!(ok);
    let code = serde_json::from_str::<serde_json::Value>(&out).unwrap()["room"]["code"]
        .as_str()
        .unwrap()
        .to_string();

    // A raw HTTPS request, as any client would send it.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(format!("GET /rooms/{code}/participants HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains(r#""participants":[]"#), "{answer}");

    // Plain HTTP on the TLS port is dropped, and the hub carries on.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    let (ok, out, _) = gambiarra(&["list", "--hub", &url, "--ca", ca]).await;
    assert!(ok && out.contains("secure"));
    hub.start_kill().unwrap();
    let _ = hub.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
