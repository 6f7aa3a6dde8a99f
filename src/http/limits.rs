//! The server's bounds: [`ServerConfig`] (connections, timeouts, body memory), the live
//! [`ServerStats`], and the tokens that hold a share of a bound while something lives — a
//! [`ConnSlot`] per connection, an [`IpSlot`] per thing counted against an address, a
//! [`BodyBudget`] per request body.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default for the most connections served at once; more are answered 503 and closed.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default for the most connections open at once from one client address (an IPv6 client is
/// its /64); more are answered 429 and closed.
pub(crate) const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 512;
/// A head must be complete within this long of its first byte (and a new connection must send
/// its first request within it). Past it → 408 and close.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection with no request in progress is closed after this long.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// While a body is being read, each read must bring bytes within this long.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole body must arrive within this long of its head (a trickle of one byte per
/// `BODY_TIMEOUT` does not keep a connection and its buffer for ever). Past it → 408.
pub(crate) const BODY_DEADLINE: Duration = Duration::from_secs(120);
/// Default most bytes of request bodies held in memory across the server at once. A body that
/// would go past it is refused with 503 before it is read.
pub(crate) const DEFAULT_BODY_MEMORY: usize = 64 * 1024 * 1024;
/// A write that makes no progress for this long (a client that stopped reading) closes the
/// connection.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests before giving up on them.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Bounds and defaults of an HTTP server.
#[derive(Clone)]
pub struct ServerConfig {
    pub max_connections: usize,
    /// Per client address (see `client_key`); 0: no per-address bound.
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
    /// Request-body bytes held now, past each body's free allowance (see `BodyBudget`).
    pub body_bytes: std::sync::atomic::AtomicUsize,
    /// The same, per client address (see `client_key`).
    body_bytes_per_ip: std::sync::Mutex<HashMap<IpAddr, usize>>,
}

/// The first bytes of every body that the server's body memory does not count: a body this
/// small (every control route's) is bounded by the connection limits alone, so a few clients
/// holding large bodies can never stop a participant's health check or join.
pub(crate) const BODY_FREE: usize = 64 * 1024;
/// One client address may hold at most this share (1/N) of the server's body memory.
pub(crate) const BODY_SHARE_PER_IP: usize = 4;

/// Request-body bytes counted against [`ServerConfig::body_memory`] (and the client address's
/// share of it) until dropped, with the request.
#[derive(Debug)]
pub(crate) struct BodyBudget {
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
            let mut per_ip = crate::sync::lock(&self.stats.body_bytes_per_ip);
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
        let mut per_ip = crate::sync::lock(&self.stats.body_bytes_per_ip);
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
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
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

/// Things in progress per client address (see `client_key`): connections here, Argon2
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
        let mut map = crate::sync::lock(&self.0);
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
        let mut map = crate::sync::lock(&self.0.0);
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
pub(crate) struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip: IpSlot,
    stats: Arc<ServerStats>,
}

impl ConnSlot {
    pub(crate) fn new(
        permit: tokio::sync::OwnedSemaphorePermit,
        ip: IpSlot,
        stats: Arc<ServerStats>,
    ) -> Self {
        stats
            .open
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ConnSlot {
            _permit: permit,
            _ip: ip,
            stats,
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.stats
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
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
