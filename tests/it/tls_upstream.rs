//! `https://` participant endpoints: the hub speaks TLS (rustls) to the participant, verifying
//! its certificate. The participant here is the mock LLM behind a TLS terminator with a
//! certificate made at test time.
#![cfg(all(feature = "client", feature = "tools"))]

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use gambiarra::HubConfig;
use gambiarra::tools::mock::{MockConfig, MockLlm};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

/// A TLS endpoint for `localhost` in front of `backend`; returns its port and certificate.
async fn tls_front(backend: std::net::SocketAddr) -> (u16, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    (port, cert)
}

#[tokio::test]
async fn https_participant_streaming_and_not() {
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "secure".into(),
            tokens: 5,
            token_delay: Duration::from_millis(2),
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap();
    let (port, cert) = tls_front(mock.addr()).await;
    let hub = start(HubConfig {
        upstream_roots: vec![cert],
        ..HubConfig::default()
    })
    .await;
    let addr = hub.local_addr();
    let code = create_room(addr, "tls").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    let endpoint = format!("https://localhost:{port}/v1");
    assert_eq!(join(addr, &code, "sec", &endpoint).await.status, 201);
    let path = format!("/rooms/{code}/v1/chat/completions");

    let r = req(addr, "POST", &path, Some(json!({"model": "sec"}))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 tok3 tok4 "
    );
    let r = req(
        addr,
        "POST",
        &path,
        Some(json!({"model": "sec", "stream": true})),
    )
    .await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8(r.body).unwrap();
    assert!(text.contains("tok4") && text.trim_end().ends_with("[DONE]"));
    // What reached the participant, over TLS: its own model name, the right Host.
    let seen = mock.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].head.header_str("host"),
        Some(format!("localhost:{port}").as_str())
    );
    assert!(
        std::str::from_utf8(&seen[0].body)
            .unwrap()
            .contains("\"model\":\"llama3\"")
    );
    hub.shutdown().await;

    // A hub that does not trust the certificate refuses to talk to the participant.
    let strict = start_default().await;
    let addr = strict.local_addr();
    let code = create_room(addr, "tls").await["code"]
        .as_str()
        .unwrap()
        .to_string();
    join(addr, &code, "sec", &endpoint).await;
    let r = req(
        addr,
        "POST",
        &format!("/rooms/{code}/v1/chat/completions"),
        Some(json!({"model": "sec"})),
    )
    .await;
    assert_eq!(r.status, 502);
    assert!(r.error().contains("TLS handshake failed"), "{}", r.error());
    strict.shutdown().await;
}

#[tokio::test]
async fn sdk_talks_to_an_https_hub() {
    let hub = start_default().await;
    let (port, cert) = tls_front(hub.local_addr()).await;
    let url = format!("https://localhost:{port}");
    // Without the certificate trusted, the handshake is refused.
    let untrusting = gambiarra::client::HubClient::new(&url).unwrap();
    assert!(matches!(
        untrusting.list_rooms().await,
        Err(gambiarra::client::ClientError::Unreachable(e)) if e.contains("TLS")
    ));
    let client = gambiarra::client::HubClient::with_roots(&url, &[cert]).unwrap();
    let code = client.create_room("secure", None).await.unwrap().room.code;
    assert_eq!(client.list_rooms().await.unwrap()[0].code, code);
    let mut events = client.subscribe(&code, None).await.unwrap();
    assert!(matches!(
        events.next().await.unwrap().unwrap().event,
        gambiarra::client::events::HubEvent::Connected { .. }
    ));
    hub.shutdown().await;
}

#[tokio::test]
async fn tunnels_work_through_an_https_hub() {
    use gambiarra::client::Target;
    use gambiarra::client::tunnel::{TunnelSpec, run as run_tunnels};
    use gambiarra::client::{HubClient, JoinRequest};
    use std::sync::{Arc, RwLock};
    let hub = start_default().await;
    let addr = hub.local_addr();
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            tokens: 3,
            ..MockConfig::default()
        },
        false,
    )
    .await
    .unwrap();
    let (port, cert) = tls_front(addr).await;
    let client = HubClient::with_roots(&format!("https://localhost:{port}"), &[cert]).unwrap();
    let code = client
        .create_room("tls tunnels", None)
        .await
        .unwrap()
        .room
        .code;
    let joined = client
        .join(
            &code,
            &JoinRequest {
                id: "t".into(),
                nickname: "t".into(),
                model: "llama3".into(),
                endpoint: "http://127.0.0.1:1".into(),
                tunnel: true,
                ..JoinRequest::default()
            },
        )
        .await
        .unwrap();
    let spec = TunnelSpec {
        hub: client.clone(),
        code: code.clone(),
        id: "t".into(),
        secret: Arc::new(RwLock::new(joined.tunnel_secret.unwrap())),
        local: Arc::new(Target::from_endpoint(&mock.url()).unwrap()),
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let agent = tokio::spawn(run_tunnels(spec, 2, stopped));
    eventually("two tunnels parked", async || {
        hub.parked_tunnels(&code, "t") >= 2
    })
    .await;
    let path = format!("/rooms/{code}/v1/chat/completions");
    let r = req(addr, "POST", &path, Some(json!({"model": "t"}))).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "tok0 tok1 tok2 "
    );
    let r = req(
        addr,
        "POST",
        &path,
        Some(json!({"model": "t", "stream": true})),
    )
    .await;
    assert!(
        String::from_utf8(r.body)
            .unwrap()
            .trim_end()
            .ends_with("[DONE]")
    );
    agent.abort();
    hub.shutdown().await;
}
