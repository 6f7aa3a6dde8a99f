//! The accept loop: a `socket2`-configured listener, one task per connection, a connection limit
//! answered with 503, and a graceful drain on shutdown.
//!
//! The server knows nothing about what it serves: a [`Handler`] turns each [`Request`] into a
//! [`Response`](super::Response) and says how large a body it accepts for a given head.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
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
/// Default for the most connections open at once from one client address (an IPv6 client is
/// its /64); more are answered 429 and closed.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 512;
/// A head must be complete within this long of its first byte (and a new connection must send
/// its first request within it). Past it → 408 and close.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in progress is closed after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// While a body is being read, each read must bring bytes within this long.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole body must arrive within this long of its head (a trickle of one byte per
/// `BODY_TIMEOUT` does not keep a connection and its buffer for ever). Past it → 408.
pub const BODY_DEADLINE: Duration = Duration::from_secs(120);
/// Default most bytes of request bodies held in memory across the server at once. A body that
/// would go past it is refused with 503 before it is read.
pub const DEFAULT_BODY_MEMORY: usize = 64 * 1024 * 1024;
/// A write that makes no progress for this long (a client that stopped reading) closes the
/// connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The listen backlog.
pub const LISTEN_BACKLOG: i32 = 1024;
/// After a failed accept (out of descriptors), the accept loop pauses this long, doubling on
/// each further failure up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most this many over-limit connections are being answered 503 at once; beyond that they
/// are closed without a word.
const MAX_REJECTING: usize = 64;

/// Bounds and defaults of an HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    /// Per client address (see [`client_key`]); 0: no per-address bound.
    pub max_connections_per_ip: usize,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    /// A whole body must arrive within this long of its head.
    pub body_deadline: Duration,
    /// Request-body bytes held in memory across the server at once.
    pub body_memory: usize,
    pub write_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Headers added to every response (e.g. CORS).
    pub default_headers: Vec<super::response::Header>,
    /// Terminate TLS on every connection (the handshake must finish within `head_timeout`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Live counters, shared by every clone of this config.
    pub stats: Arc<ServerStats>,
}

/// What the server counts as it runs, and the budget all connections share.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections being served now.
    pub open: std::sync::atomic::AtomicUsize,
    /// Request-body bytes held now, past each body's free allowance (see [`BodyBudget`]).
    pub body_bytes: std::sync::atomic::AtomicUsize,
    /// The same, per client address (see [`client_key`]).
    body_bytes_per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// The first bytes of every body that the server's body memory does not count: a body this
/// small (every control route's) is bounded by the connection limits alone, so a few clients
/// holding large bodies can never stop a participant's health check or join.
pub const BODY_FREE: usize = 64 * 1024;
/// One client address may hold at most this share (1/N) of the server's body memory.
pub const BODY_SHARE_PER_IP: usize = 4;

/// Request-body bytes counted against [`ServerConfig::body_memory`] (and the client address's
/// share of it) until dropped, with the request.
#[derive(Debug)]
pub struct BodyBudget {
    stats: Arc<ServerStats>,
    ip: IpAddr,
    /// Bytes of the body so far (the first [`BODY_FREE`] are not counted).
    seen: usize,
    held: usize,
}

impl BodyBudget {
    pub(crate) fn new(stats: Arc<ServerStats>, ip: IpAddr) -> Self {
        BodyBudget {
            stats,
            ip: client_key(ip),
            seen: 0,
            held: 0,
        }
    }

    /// The body grows by `n` bytes: allowed if the server's memory `max` and this address's
    /// share of it allow.
    pub(crate) fn grow(&mut self, n: usize, max: usize) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let before = self.seen.saturating_sub(BODY_FREE);
        let after = self.seen.saturating_add(n).saturating_sub(BODY_FREE);
        let extra = after - before;
        if extra > 0 {
            let mut per_ip = self
                .stats
                .body_bytes_per_ip
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mine = per_ip.get(&self.ip).copied().unwrap_or(0);
            if mine + extra > max / BODY_SHARE_PER_IP {
                return false;
            }
            let fits = self
                .stats
                .body_bytes
                .fetch_update(SeqCst, SeqCst, |held| {
                    held.checked_add(extra).filter(|total| *total <= max)
                })
                .is_ok();
            if !fits {
                return false;
            }
            *per_ip.entry(self.ip).or_insert(0) += extra;
            self.held += extra;
        }
        self.seen = self.seen.saturating_add(n);
        true
    }
}

impl Drop for BodyBudget {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        self.stats
            .body_bytes
            .fetch_sub(self.held, std::sync::atomic::Ordering::SeqCst);
        let mut per_ip = self
            .stats
            .body_bytes_per_ip
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(self.held);
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
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
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            head_timeout: HEAD_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            body_timeout: BODY_TIMEOUT,
            body_deadline: BODY_DEADLINE,
            body_memory: DEFAULT_BODY_MEMORY,
            write_timeout: WRITE_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
            default_headers: Vec::new(),
            tls: None,
            stats: Arc::default(),
        }
    }
}

/// The address limits are kept by: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64, the
/// block one host or network usually holds, so a client cannot take a fresh allowance per
/// address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Things in progress per client address (see [`client_key`]): connections here, Argon2
/// computations in `hub::auth`.
#[derive(Default)]
pub(crate) struct PerIp(std::sync::Mutex<HashMap<IpAddr, usize>>);

/// One thing counted against its address; dropping it uncounts it.
pub(crate) struct IpSlot(Arc<PerIp>, IpAddr);

impl PerIp {
    /// Count one more for `ip`, unless it has `max` already (0: no bound).
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        if max == 0 {
            return Some(IpSlot(self.clone(), ip));
        }
        let key = client_key(ip);
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), key))
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.0.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.1);
            }
        }
    }
}

/// One connection counted against the server's bounds (the connection limit, its address's
/// limit, the open-connections gauge). It lives as long as the socket does: with the
/// connection task, or, after an upgrade, with the upgraded socket (a parked tunnel).
pub struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip: IpSlot,
    stats: Arc<ServerStats>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.stats
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
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
    /// The body's bytes counted against the server's body memory while the request lives.
    pub budget: Option<BodyBudget>,
}

impl Request {
    /// A request not read from a connection (tests, embedders).
    pub fn new(head: RequestHead, body: Bytes) -> Self {
        Request {
            head,
            body,
            budget: None,
        }
    }
}

/// What the server calls for each request: first with the head alone, then with the body.
pub trait Handler: Send + Sync + 'static {
    /// What [`Handler::admit`] decided about a request, handed on to [`Handler::handle`].
    type Admitted: Send;

    /// Decide from the head alone — before a byte of the body is read or `100 Continue` is
    /// sent — whether to take the request, and the largest body it may have (larger → 413).
    /// `Err` is the answer, sent at once; the connection is closed if a body was announced.
    fn admit(
        &self,
        head: &RequestHead,
        peer: &Peer,
    ) -> impl Future<Output = Result<(Self::Admitted, usize), Response>> + Send;

    /// Produce the response. If the client closes its connection meanwhile, this future is
    /// dropped: whatever it was waiting on (an upstream answer) is abandoned at once.
    fn handle(
        &self,
        req: Request,
        admitted: Self::Admitted,
        peer: &Peer,
    ) -> impl Future<Output = Response> + Send;
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
                config
                    .stats
                    .open
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let slot = ConnSlot {
                    _permit: permit,
                    _ip: ip_slot,
                    stats: config.stats.clone(),
                };
                tokio::spawn(async move {
                    match config.tls.clone() {
                        None => {
                            let conn = Connection::new(stream, config, slot);
                            conn.run(handler, Peer { addr }, shutdown).await;
                        }
                        Some(acceptor) => {
                            let handshake = timeout(config.head_timeout, acceptor.accept(stream));
                            if let Ok(Ok(tls)) = handshake.await {
                                let conn = Connection::new(tls, config, slot);
                                conn.run(handler, Peer { addr }, shutdown).await;
                            }
                        }
                    }
                });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_budget_free_allowance_share_and_total() {
        let stats = Arc::new(ServerStats::default());
        let max = 1024 * 1024;
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        // Small bodies are free.
        let mut small = BodyBudget::new(stats.clone(), ip(1));
        assert!(small.grow(BODY_FREE, max));
        assert_eq!(
            stats.body_bytes.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        // One address: at most a quarter.
        let mut a = BodyBudget::new(stats.clone(), ip(1));
        assert!(a.grow(BODY_FREE + max / 4, max));
        let mut a2 = BodyBudget::new(stats.clone(), ip(1));
        assert!(!a2.grow(BODY_FREE + 1, max));
        // Three more addresses fill the rest; a fifth gets nothing.
        let mut others: Vec<_> = (2..5)
            .map(|n| BodyBudget::new(stats.clone(), ip(n)))
            .collect();
        for b in &mut others {
            assert!(b.grow(BODY_FREE + max / 4, max));
        }
        assert!(!BodyBudget::new(stats.clone(), ip(9)).grow(BODY_FREE + 1, max));
        drop(a);
        assert!(BodyBudget::new(stats.clone(), ip(9)).grow(BODY_FREE + 1, max));
        drop(others);
        assert_eq!(
            stats.body_bytes.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
        assert!(stats.body_bytes_per_ip.lock().unwrap().is_empty());
    }
}
