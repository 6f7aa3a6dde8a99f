//! The accept loop: a `socket2`-configured listener, one task per connection, a connection limit
//! answered with 503, and a graceful drain on shutdown.
//!
//! The server knows nothing about what it serves: a [`Handler`] turns each [`Request`] into a
//! [`Response`](super::Response) and says how large a body it accepts for a given head.

use std::future::Future;
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
use super::head::RequestHead;
use super::response::Response;

/// Default for the most connections served at once; more are answered 503 and closed.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// A head must be complete within this long of its first byte (and a new connection must send
/// its first request within it). Past it → 408 and close.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in progress is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// While a body is being read, each read must bring bytes within this long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress for this long (a client that stopped reading) closes the
/// connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The listen backlog.
pub const LISTEN_BACKLOG: i32 = 1024;
/// At most this many over-limit connections are being answered 503 at once; beyond that they
/// are closed without a word.
const MAX_REJECTING: usize = 64;

/// Bounds and defaults of an HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Headers added to every response (e.g. CORS).
    pub default_headers: Vec<super::response::Header>,
    /// Terminate TLS on every connection (the handshake must finish within `head_timeout`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Live counters, shared by every clone of this config.
    pub stats: Arc<ServerStats>,
}

/// What the server counts as it runs.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections being served now.
    pub open: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_connections", &self.max_connections)
            .field("head_timeout", &self.head_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// A TLS acceptor for a certificate chain and its key (HTTP/1.1 via ALPN).
pub fn tls_acceptor(
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

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            head_timeout: HEAD_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
            default_headers: Vec::new(),
            tls: None,
            stats: Arc::default(),
        }
    }
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
}

/// A request with its whole (bounded) body.
#[derive(Debug)]
pub struct Request {
    pub head: RequestHead,
    pub body: Bytes,
}

/// What the server calls for each request.
pub trait Handler: Send + Sync + 'static {
    /// The largest body accepted for a request with this head; a larger one gets 413.
    fn body_limit(&self, head: &RequestHead) -> usize;

    /// Produce the response.
    fn handle(&self, req: Request, peer: &Peer) -> impl Future<Output = Response> + Send;
}

/// Resolve once `shutdown` holds `true` (at once if it already does).
pub async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before the future completes, so callers'
    // futures stay `Send`.
    let _ = shutdown.wait_for(|s| *s).await;
}

/// Bind a listener with SO_REUSEADDR, TCP_NODELAY (inherited by accepted sockets on Linux, and
/// set again on each) and a real backlog.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    config: Arc<ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max = config.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown_signalled(&mut shutdown) => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let handler = handler.clone();
                let config = config.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    use std::sync::atomic::Ordering::Relaxed;
                    let stats = config.stats.clone();
                    stats.open.fetch_add(1, Relaxed);
                    match config.tls.clone() {
                        None => {
                            let conn = Connection::new(stream, config);
                            conn.run(handler, Peer { addr }, shutdown).await;
                        }
                        Some(acceptor) => {
                            let handshake = timeout(config.head_timeout, acceptor.accept(stream));
                            if let Ok(Ok(tls)) = handshake.await {
                                let conn = Connection::new(tls, config);
                                conn.run(handler, Peer { addr }, shutdown).await;
                            }
                        }
                    }
                    stats.open.fetch_sub(1, Relaxed);
                    drop(permit);
                });
            }
            Err(_) => {
                if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                    let config = config.clone();
                    tokio::spawn(async move {
                        reject_busy(stream, &config).await;
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

/// Tell a connection over the limit that the server is full, then close it.
async fn reject_busy(mut stream: TcpStream, config: &ServerConfig) {
    let body = br#"{"error":"Server is at its connection limit, try again later"}"#;
    let mut out = bytes::BytesMut::new();
    super::response::encode_head(
        &mut out,
        503,
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
