//! How bytes reach a participant. A [`Target`] is a participant's endpoint, normalised; the
//! [`Connector`] yields an [`Upstream`] byte stream to it — a pooled keep-alive connection when
//! one is idle, else a fresh TCP connection within the connect timeout.
//!
//! `Upstream` is an enum, not a trait object: the reverse tunnel (a participant-initiated
//! socket) and TLS join it as variants, and the relay code stays the same for all of them.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::url::{self, Scheme};

/// Default time allowed to establish a connection to a participant.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default most idle connections kept per endpoint: enough for the concurrency a busy room
/// reaches, so steady load reuses connections instead of opening (and leaving in TIME_WAIT)
/// one per request.
pub const POOL_MAX_IDLE: usize = 128;
/// Default time an idle pooled connection is kept.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A participant's endpoint, ready to connect to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Host for connecting (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `Host` header value.
    pub authority: String,
    /// Path prefix before `/v1/...`: the endpoint's path without a trailing `/` or `/v1`.
    pub base_path: String,
    /// Pool key.
    pub key: String,
}

impl Target {
    /// Parse and normalise an endpoint: `http://h:1234/`, `http://h:1234/v1` and
    /// `http://h:1234` all give base path "" so requests go to `/v1/...` once.
    pub fn from_endpoint(endpoint: &str) -> Result<Target, String> {
        let u = url::parse(endpoint).map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
        let mut base = u.path.trim_end_matches('/');
        if let Some(b) = base.strip_suffix("/v1") {
            base = b.trim_end_matches('/');
        }
        // Numeric hosts in their one canonical form (`2130706433` is 127.0.0.1).
        let (host, shown) = match url::host_of(u.host) {
            url::Host::Ip(std::net::IpAddr::V6(v6)) => (v6.to_string(), format!("[{v6}]")),
            url::Host::Ip(ip) => (ip.to_string(), ip.to_string()),
            url::Host::Name(n) => (n.clone(), n),
        };
        let default_port = match u.scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        };
        let authority = if u.port == default_port {
            shown
        } else {
            format!("{shown}:{}", u.port)
        };
        let scheme_s = match u.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        Ok(Target {
            scheme: u.scheme,
            key: format!("{scheme_s}://{host}:{}", u.port),
            host,
            port: u.port,
            authority,
            base_path: base.to_string(),
        })
    }
}

/// A byte stream to a participant.
pub enum Upstream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A socket the participant opened to the hub (reverse tunnel), with its place in the
    /// server's connection bounds. Between requests it is parked with the participant's
    /// tunnels, not in the connector's pool.
    Tunnel(Box<crate::http::Upgraded>),
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Upstream::Tcp(_) => "Upstream::Tcp",
            Upstream::Tls(_) => "Upstream::Tls",
            Upstream::Tunnel(_) => "Upstream::Tunnel",
        })
    }
}

impl Upstream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Upstream::Tcp(s) => Some(s),
            Upstream::Tls(s) => Some(s.get_ref().0),
            Upstream::Tunnel(_) => None,
        }
    }

    /// An idle connection is reusable only if nothing is waiting on it: no EOF, and no bytes
    /// (for TLS, likely a close_notify). Peeking leaves the bytes in place, so a TLS stream is
    /// never corrupted by the check.
    ///
    /// Always a syscall: the reactor's readiness is not enough. Bytes a participant sent after
    /// its answer may be in the kernel before the reactor's next turn has seen them (a
    /// pipelined request reuses the connection in the same turn as the answer's last read),
    /// and a connection reused then would hand them to the next client as its answer — one
    /// client's answer to another (measured by an outside test: 579 wrong answers of 1,200
    /// with a readiness check, 57–85 with the peek, all from an upstream that sends unasked
    /// responses; the rest is the race any keep-alive proxy has with such an upstream).
    fn is_reusable(&self) -> bool {
        let Some(tcp) = self.tcp() else {
            return false;
        };
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(
            socket2::SockRef::from(tcp).peek(&mut probe),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        )
    }
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Upstream::Tunnel(s) => Pin::new(s.io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Upstream::Tunnel(s) => Pin::new(s.io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Upstream::Tunnel(s) => Pin::new(s.io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Upstream::Tcp(s) => s.is_write_vectored(),
            Upstream::Tls(s) => s.is_write_vectored(),
            Upstream::Tunnel(s) => s.io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Upstream::Tunnel(s) => Pin::new(s.io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Upstream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Upstream::Tunnel(s) => Pin::new(s.io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why no connection could be made.
#[derive(Debug)]
pub enum ConnectError {
    Refused(io::Error),
    Timeout,
    /// The TLS handshake failed (bad certificate, protocol mismatch).
    Tls(io::Error),
    /// A tunnelled participant has no open tunnel (its agent is gone or overloaded).
    NoTunnel,
    /// The endpoint resolves only to addresses the hub may not connect to for this
    /// participant (see `endpoints`).
    Forbidden(String),
}

impl ConnectError {
    /// The failure says something about the participant (not about this machine running out
    /// of ports or descriptors, nor about a build without TLS).
    pub fn blames_participant(&self) -> bool {
        match self {
            ConnectError::Refused(e) => {
                !matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable
                        | io::ErrorKind::AddrInUse
                        | io::ErrorKind::OutOfMemory
                ) && e.raw_os_error() != Some(24)
            } // EMFILE
            ConnectError::Timeout | ConnectError::Tls(_) | ConnectError::Forbidden(_) => true,
            // Every tunnel busy is load, not a dead participant: an agent that is alive parks
            // more, and its health checks say it lives (counting these as strikes let anyone
            // knock a participant offline by keeping its tunnels busy).
            ConnectError::NoTunnel => false,
        }
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Refused(e) => write!(f, "Connection failed: {e}"),
            ConnectError::Timeout => f.write_str("Connection timed out"),
            ConnectError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            ConnectError::NoTunnel => f.write_str("Participant has no open tunnel"),
            ConnectError::Forbidden(why) => write!(f, "Endpoint not allowed: {why}"),
        }
    }
}

/// Connections to participants, with a keep-alive pool per endpoint.
pub struct Connector {
    idle: Mutex<HashMap<String, Vec<(Upstream, Instant)>>>,
    tls: tokio_rustls::TlsConnector,
    pub connect_timeout: Duration,
    pub max_idle: usize,
    pub idle_timeout: Duration,
}

impl Connector {
    /// `extra_roots`: certificates trusted for `https://` endpoints besides the public web PKI
    /// roots (a participant with a self-signed certificate).
    pub fn new(
        connect_timeout: Duration,
        max_idle: usize,
        idle_timeout: Duration,
        extra_roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        // The public web PKI, unless built without it (feature `web-roots`): then only the
        // extra roots (`--upstream-ca`, `--ca`) are trusted.
        #[cfg(feature = "web-roots")]
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            if let Err(e) = roots.add(cert.clone()) {
                tracing::warn!("ignoring an extra upstream CA certificate: {e}");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // The ring provider supports the safe default protocol versions; this cannot fail.
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .unwrap_or_else(|_| {
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth()
            });
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Connector {
            idle: Mutex::new(HashMap::new()),
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            connect_timeout,
            max_idle,
            idle_timeout,
        }
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Upstream, Instant)>>> {
        crate::sync::lock(&self.idle)
    }

    /// A pooled connection to `target`, if a live one is idle. Every one is checked (one
    /// `peek`) before reuse: a participant that sent anything after its last answer — a close,
    /// or bytes that would be read as the next client's answer — has its connection dropped.
    pub fn take_idle(&self, pool_key: &str) -> Option<Upstream> {
        let mut pool = self.pool();
        let list = pool.get_mut(pool_key)?;
        while let Some((conn, since)) = list.pop() {
            if since.elapsed() < self.idle_timeout && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// A fresh connection; for `https://`, the TLS handshake is part of it (and of its
    /// timeout).
    #[cfg_attr(not(feature = "client"), allow(dead_code, reason = "the SDK's"))]
    pub async fn connect_fresh(&self, target: &Target) -> Result<Upstream, ConnectError> {
        self.connect_checked(target, |_| Ok(())).await
    }

    /// A fresh connection to the first address `target` resolves to that `allowed` accepts
    /// (names are resolved here, at each connection, so the check sees what is connected to).
    pub async fn connect_checked(
        &self,
        target: &Target,
        allowed: impl Fn(std::net::IpAddr) -> Result<(), String>,
    ) -> Result<Upstream, ConnectError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let addrs = tokio::time::timeout_at(
            deadline,
            tokio::net::lookup_host((target.host.as_str(), target.port)),
        )
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(ConnectError::Refused)?;
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            if let Err(why) = allowed(addr.ip()) {
                last = Some(ConnectError::Forbidden(why));
                continue;
            }
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => return Err(ConnectError::Timeout),
                Ok(Err(e)) => last = Some(ConnectError::Refused(e)),
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
            }
        }
        let Some(stream) = stream else {
            return Err(last.unwrap_or_else(|| {
                ConnectError::Refused(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the endpoint's name resolves to no address",
                ))
            }));
        };
        let _ = stream.set_nodelay(true);
        if target.scheme == Scheme::Http {
            return Ok(Upstream::Tcp(stream));
        }
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            ConnectError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
        })?;
        let tls = tokio::time::timeout_at(deadline, self.tls.connect(name, stream))
            .await
            .map_err(|_| ConnectError::Timeout)?
            .map_err(ConnectError::Tls)?;
        Ok(Upstream::Tls(Box::new(tls)))
    }

    /// Give a connection whose last response was complete back to the pool. Whether anything
    /// arrived on it since is checked once, when it is taken ([`Connector::take_idle`]).
    pub fn put_idle(&self, target_key: &str, conn: Upstream) {
        let mut pool = self.pool();
        if !pool.contains_key(target_key) {
            pool.insert(target_key.to_string(), Vec::new());
        }
        let Some(list) = pool.get_mut(target_key) else {
            return;
        };
        // Oldest first (pushed in time order, taken from the end): the expired ones are a
        // prefix, found with one clock read — not one per pooled connection, per request.
        let now = Instant::now();
        let expired =
            list.partition_point(|(_, since)| now.duration_since(*since) >= self.idle_timeout);
        list.drain(..expired);
        if list.len() < self.max_idle {
            list.push((conn, now));
        }
    }

    /// Close pooled connections idle past the idle timeout, and forget endpoints with none
    /// (the sweeper calls this, so a participant that left does not keep sockets open).
    /// Returns how many were closed.
    pub fn prune_idle(&self) -> usize {
        let mut pool = self.pool();
        let mut closed = 0;
        pool.retain(|_, list| {
            let before = list.len();
            list.retain(|(_, since)| since.elapsed() < self.idle_timeout);
            closed += before - list.len();
            !list.is_empty()
        });
        closed
    }

    /// Idle connections currently pooled for `target_key` (tests, metrics).
    #[cfg(test)]
    pub fn idle_count(&self, target_key: &str) -> usize {
        self.pool().get(target_key).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_connections_past_their_timeout_are_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Connector::new(CONNECT_TIMEOUT, 8, Duration::from_millis(50), &[]);
        let conn = TcpStream::connect(addr).await.unwrap();
        let (mut server_side, _) = listener.accept().await.unwrap();
        c.put_idle("ep", Upstream::Tcp(conn));
        assert_eq!((c.prune_idle(), c.idle_count("ep")), (0, 1));
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!((c.prune_idle(), c.idle_count("ep")), (1, 0));
        assert!(c.pool().is_empty(), "the endpoint is forgotten");
        // The participant's side sees the close.
        use tokio::io::AsyncReadExt;
        assert_eq!(server_side.read(&mut [0u8; 8]).await.unwrap(), 0);
    }

    #[test]
    fn endpoint_normalisation() {
        for (ep, base) in [
            ("http://h:1234", ""),
            ("http://h:1234/", ""),
            ("http://h:1234/v1", ""),
            ("http://h:1234/v1/", ""),
            ("http://h:1234/api/openai/v1", "/api/openai"),
            ("http://h:1234/proxy/", "/proxy"),
        ] {
            let t = Target::from_endpoint(ep).unwrap();
            assert_eq!(t.base_path, base, "{ep}");
            assert_eq!(t.authority, "h:1234");
            assert_eq!(t.key, "http://h:1234");
        }
        let t = Target::from_endpoint("http://[::1]:80/").unwrap();
        assert_eq!((t.host.as_str(), t.authority.as_str()), ("::1", "[::1]"));
    }
}
