//! The accept loop: a `socket2`-configured listener, one task per connection, a connection limit
//! answered with 503, and a graceful drain on shutdown.
//!
//! The server knows nothing about what it serves: it hands each connection to `conn`, which
//! asks a [`Handler`](super::service::Handler) about each request.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout;

use super::conn::Connection;
use super::limits::{ConnSlot, PerIp, ServerConfig};
use super::service::{Handler, Peer, shutdown_signalled};

/// The listen backlog.
pub(crate) const LISTEN_BACKLOG: i32 = 1024;
/// After a failed accept (out of descriptors), the accept loop pauses this long, doubling on
/// each further failure up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most this many over-limit connections are being answered 503 at once; beyond that they
/// are closed without a word.
const MAX_REJECTING: usize = 64;

/// A TLS acceptor for a certificate chain and its key (HTTP/1.1 via ALPN).
pub(crate) fn tls_acceptor(
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Bind a listener with SO_REUSEADDR, TCP_NODELAY (inherited by accepted sockets on Linux, and
/// set again on each) and a real backlog.
pub(crate) fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    if addr.is_ipv6() {
        // Accept IPv4 too on a `[::]` listener where the system allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accept connections until `shutdown` turns true, then wait (up to the grace period) for the
/// open connections to finish.
pub(crate) async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let per_ip = Arc::new(PerIp::default());
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            r = listener.accept() => match r {
                Ok(pair) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE, ENFILE) and the like: the pending
                    // connection stays in the backlog and accept fails again at once, so
                    // back off (doubling, up to a second) instead of spinning; connections
                    // that close meanwhile free descriptors and serving goes on.
                    tracing::warn!("accept failed, pausing {} ms: {e}", backoff.as_millis());
                    tokio::select! {
                        _ = shutdown_signalled(&mut shutdown) => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(ip_slot) = per_ip.take(addr.ip(), config.max_connections_per_ip) else {
            if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                let config = config.clone();
                tokio::spawn(async move {
                    reject(stream, &config, 429, PER_IP_FULL).await;
                    drop(permit);
                });
            }
            continue;
        };
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let handler = handler.clone();
                let config = config.clone();
                let shutdown = shutdown.clone();
                let slot = ConnSlot::new(permit, ip_slot, config.stats.clone());
                // Two kinds of task, each as large as its own state: a plain connection's
                // future does not carry room for a TLS session it will never have.
                match config.tls.clone() {
                    None => {
                        let conn = Connection::new(stream, config, slot);
                        tokio::spawn(conn.run(handler, Peer { addr }, shutdown));
                    }
                    Some(acceptor) => {
                        tokio::spawn(async move {
                            let handshake = timeout(config.head_timeout, acceptor.accept(stream));
                            if let Ok(Ok(tls)) = handshake.await {
                                let conn = Connection::new(tls, config, slot);
                                conn.run(handler, Peer { addr }, shutdown).await;
                            }
                        });
                    }
                }
            }
            Err(_) => {
                if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                    let config = config.clone();
                    tokio::spawn(async move {
                        reject(stream, &config, 503, SERVER_FULL).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    drop(listener);
    // Every connection holds a slot; all slots free means all connections are done.
    let _ = timeout(config.shutdown_grace, slots.acquire_many(max as u32)).await;
}

const SERVER_FULL: &[u8] = br#"{"error":"Server is at its connection limit, try again later"}"#;
const PER_IP_FULL: &[u8] =
    br#"{"error":"Too many connections from your address, try again later"}"#;

/// Tell a connection over a limit why it is refused, then close it.
async fn reject(mut stream: TcpStream, config: &ServerConfig, status: u16, body: &[u8]) {
    let mut out = bytes::BytesMut::new();
    super::response::encode_head(
        &mut out,
        status,
        &[
            (
                Bytes::from_static(b"Content-Type"),
                Bytes::from_static(b"application/json"),
            ),
            (Bytes::from_static(b"Retry-After"), Bytes::from_static(b"1")),
        ],
        &config.default_headers,
        super::response::WireFraming::Length(body.len() as u64),
        false,
    );
    out.extend_from_slice(body);
    let _ = timeout(Duration::from_secs(1), async {
        stream.write_all(&out).await?;
        stream.shutdown().await?;
        // Read what the client sent so closing does not reset the connection before it has
        // read the answer.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        io::Result::Ok(())
    })
    .await;
}
