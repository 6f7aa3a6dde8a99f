//! The hub: rooms, participants, events and the OpenAI-compatible proxy, served over
//! `crate::http`.
//!
//! [`Hub`] is the embedding API: start it on an address or an existing listener, read its bound
//! address, and shut it down gracefully (stop accepting, end event streams, let in-flight
//! requests finish within the grace period).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use gambiarra::hub::{Hub, HubConfig};
//! let hub = Hub::bind("127.0.0.1:0".parse().unwrap(), HubConfig::default()).await?;
//! println!("hub on http://{}", hub.local_addr());
//! hub.shutdown().await;
//! # Ok(()) }
//! ```

//! Where things live:
//!
//! - `service`: every request's way in — admission, then one `match` over the `router`'s
//!   routes to the handler that answers it.
//! - `api`: one handler per REST route (rooms, join, leave, health, events, tunnels).
//! - `pages`: the routes for browsers (home, a room's page, its QR code) and room links.
//! - `proxy`: the `/v1` proxy, the body rewrite, the metrics scanner, reverse tunnels.
//! - `rooms`: rooms and participants, their events, persistence, the sweeper, ids.
//! - `guard`: admission, passwords and tokens, rate limits, endpoint rules.
//! - `error`: the one error type handlers answer with, and how state errors map onto it.
//! - `metrics`: the counters behind `/metrics`.

pub(crate) mod api;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod metrics;
pub(crate) mod pages;
pub(crate) mod proxy;
pub(crate) mod rooms;
pub(crate) mod router;
pub(crate) mod service;
pub(crate) mod translate;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http;
pub use crate::http::limits::{ServerConfig, ServerStats};
use crate::types::{HEALTH_CHECK_INTERVAL_MS, PARTICIPANT_TIMEOUT_MS};
pub use guard::endpoints::{Cidr, EndpointRules};
use guard::{auth, limits};
use proxy::tunnel;
use rooms::{Limits, State, events, ids, persist, sweeper};
use service::Service;

/// Largest body on the control routes (rooms, join, health). Larger → 413.
pub const CONTROL_BODY_LIMIT: usize = 64 * 1024;
/// Largest body on the `/v1` routes (prompts with long contexts). Larger → 413.
pub const V1_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// Default most rooms on one hub.
pub const DEFAULT_MAX_ROOMS: usize = 10_000;
/// Default most rooms one address may have at once.
pub const DEFAULT_MAX_ROOMS_PER_IP: usize = 64;
/// Default silence after which a participant is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Default most participants in one room.
pub const DEFAULT_MAX_PARTICIPANTS: usize = 1_000;
/// Default most event subscribers on one room.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 1_000;
/// Default most event subscribers on the whole hub.
pub const DEFAULT_MAX_SUBSCRIBERS_TOTAL: usize = 10_000;
/// Default sustained rate of control-route requests (everything but `/v1` and tunnels) per
/// client address, per second…
pub const DEFAULT_CONTROL_RATE: f64 = 50.0;
/// …and the burst allowed above it.
pub const DEFAULT_CONTROL_BURST: u32 = 200;

/// Everything a hub can be told at start. `Default` gives the production values.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Bounds of the HTTP server (connections, timeouts, grace period).
    pub server: ServerConfig,
    /// How often participants are expected to check in (the sweeper runs at least this often).
    pub health_interval: Duration,
    /// Silence after which a participant is offline.
    pub participant_timeout: Duration,
    pub max_rooms: usize,
    /// Rooms one address may have at once (the admin is not bounded); 0: no bound.
    pub max_rooms_per_ip: usize,
    /// Silence after which a participant is forgotten (removed, `participant:left`).
    pub forget_after: Duration,
    pub max_participants_per_room: usize,
    pub max_subscribers_per_room: usize,
    /// Event subscribers across all rooms.
    pub max_subscribers: usize,
    /// Control-route requests per second per client address (0: unlimited), and the burst.
    pub control_rate: f64,
    pub control_burst: u32,
    /// When set, creating and deleting rooms and reading `/metrics` need
    /// `Authorization: Bearer <admin token>`.
    pub admin_token: Option<String>,
    /// Events kept per room for `Last-Event-ID` replay.
    pub event_ring: usize,
    /// Events a subscriber may have queued before it is evicted.
    pub subscriber_queue: usize,
    /// Interval of SSE keep-alive comments.
    pub sse_keepalive: Duration,
    pub control_body_limit: usize,
    pub v1_body_limit: usize,
    /// Time allowed to connect to a participant.
    pub connect_timeout: Duration,
    /// Time a participant may take to start answering (models can take minutes to load).
    pub ttfb_timeout: Duration,
    /// Idle keep-alive connections kept per participant endpoint.
    pub pool_max_idle: usize,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout: Duration,
    /// Extra CA certificates trusted for `https://` participant endpoints (beyond the web PKI).
    pub upstream_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Save rooms here and load them at start (`--state`); in memory only when `None`.
    pub state_file: Option<std::path::PathBuf>,
    /// How long a request waits for a tunnelled participant's next tunnel socket.
    pub tunnel_wait: Duration,
    /// Most tunnel sockets parked across the hub (each also counts as a connection).
    pub max_tunnels: usize,
    /// What direct endpoints may be (`--allow-endpoint`); local addresses only for local
    /// joiners in any case.
    pub endpoint_rules: EndpointRules,
    /// Slots of a participant that declares none.
    pub default_slots: u32,
    /// Routing of rooms created without a choice.
    pub routing: crate::types::Routing,
    /// Requests waiting per room.
    pub queue_max: usize,
    /// Requests one client may have waiting per room.
    pub queue_per_client: usize,
    /// Requests one address may have waiting per room, whatever keys it sends.
    pub queue_per_address: usize,
    /// Longest wait in a room's queue.
    pub queue_timeout: Duration,
    /// Longest a queued request may be passed over, while it waits for the busy participant
    /// holding more of its prompt, by requests that take the free one (cache-aware rooms).
    pub affinity_wait: Duration,
    /// The hub's address as people reach it (`https://ai.example.org`, behind a reverse proxy):
    /// what room pages, QR codes and snippets show. `None`: the request's `Host`, or this
    /// machine's LAN address when that is a loopback name.
    pub public_url: Option<String>,
}

/// Slots of a participant that declares none (Ollama's server does not say; 4 is what it
/// runs by default with enough memory).
pub const DEFAULT_SLOTS: u32 = 4;
/// How long a queued request may be passed over while it waits for the participant that
/// holds its prompt, by default.
pub const AFFINITY_WAIT: Duration = Duration::from_millis(1500);

/// Default time a participant may take to start answering.
pub const TTFB_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            server: ServerConfig::default(),
            health_interval: Duration::from_millis(HEALTH_CHECK_INTERVAL_MS),
            participant_timeout: Duration::from_millis(PARTICIPANT_TIMEOUT_MS),
            max_rooms: DEFAULT_MAX_ROOMS,
            max_rooms_per_ip: DEFAULT_MAX_ROOMS_PER_IP,
            forget_after: FORGET_AFTER,
            max_participants_per_room: DEFAULT_MAX_PARTICIPANTS,
            max_subscribers_per_room: DEFAULT_MAX_SUBSCRIBERS,
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS_TOTAL,
            control_rate: DEFAULT_CONTROL_RATE,
            control_burst: DEFAULT_CONTROL_BURST,
            admin_token: None,
            event_ring: events::EVENT_RING,
            subscriber_queue: events::SUBSCRIBER_QUEUE,
            sse_keepalive: events::SSE_KEEPALIVE,
            control_body_limit: CONTROL_BODY_LIMIT,
            v1_body_limit: V1_BODY_LIMIT,
            connect_timeout: http::upstream::CONNECT_TIMEOUT,
            ttfb_timeout: TTFB_TIMEOUT,
            pool_max_idle: http::upstream::POOL_MAX_IDLE,
            pool_idle_timeout: http::upstream::POOL_IDLE_TIMEOUT,
            upstream_roots: Vec::new(),
            state_file: None,
            tunnel_wait: tunnel::TUNNEL_WAIT,
            max_tunnels: tunnel::MAX_PARKED_TOTAL,
            endpoint_rules: EndpointRules::default(),
            default_slots: DEFAULT_SLOTS,
            routing: crate::types::Routing::CacheAware,
            queue_max: rooms::queue::DEFAULT_QUEUE_MAX,
            queue_per_client: rooms::queue::DEFAULT_QUEUE_PER_CLIENT,
            queue_per_address: rooms::queue::DEFAULT_QUEUE_PER_ADDRESS,
            queue_timeout: rooms::queue::DEFAULT_QUEUE_TIMEOUT,
            affinity_wait: AFFINITY_WAIT,
            public_url: None,
        }
    }
}

/// What every request handler shares.
pub(crate) struct HubInner {
    pub state: State,
    pub config: HubConfig,
    pub connector: http::upstream::Connector,
    pub tunnels: tunnel::Tunnels,
    pub metrics: metrics::Metrics,
    pub auth: auth::Auth,
    /// Control-route requests per client address.
    pub control_rate: limits::RateLimiter,
    /// This hub's random instance id, in the `Gambiarra-Hop` list of requests it forwards.
    pub instance: String,
    /// Secret SipHash keys for client keys (queue fairness): what events show of a client
    /// reveals nothing of its API key or address. std's `RandomState`: keys drawn from the OS
    /// once per thread, each new state's then offset by one, so nobody outside knows them.
    pub client_salt: std::hash::RandomState,
    /// Where the hub listens (the port for links when a page was opened on loopback).
    pub listen: SocketAddr,
}

/// Stops a running hub when told to; cheap to clone.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Begin a graceful shutdown.
    pub fn shutdown(&self) {
        self.0.send_replace(true);
    }
}

/// A running hub.
pub struct Hub {
    addr: SocketAddr,
    shutdown: ShutdownHandle,
    task: JoinHandle<()>,
    inner: Arc<HubInner>,
}

impl Hub {
    /// Bind `addr` (port 0 picks a free port) and start serving.
    pub async fn bind(addr: SocketAddr, config: HubConfig) -> io::Result<Hub> {
        Hub::from_listener(http::server::bind(addr)?, config)
    }

    /// Serve on an already-bound listener. Must be called inside a tokio runtime.
    pub fn from_listener(
        listener: std::net::TcpListener,
        mut config: HubConfig,
    ) -> io::Result<Hub> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let addr = listener.local_addr()?;
        config.server.default_headers.push((
            Bytes::from_static(b"Access-Control-Allow-Origin"),
            Bytes::from_static(b"*"),
        ));
        let store = config.state_file.clone().map(persist::Store::new);
        let inner = Arc::new(HubInner {
            state: State::new(
                Limits {
                    max_rooms: config.max_rooms,
                    max_participants_per_room: config.max_participants_per_room,
                    max_subscribers_per_room: config.max_subscribers_per_room,
                    max_subscribers: config.max_subscribers,
                    event_ring: config.event_ring,
                    subscriber_queue: config.subscriber_queue,
                    participant_timeout: config.participant_timeout,
                    max_rooms_per_ip: config.max_rooms_per_ip,
                    forget_after: config.forget_after,
                    default_slots: config.default_slots.max(1),
                    routing: config.routing,
                    queue_max: config.queue_max,
                    queue_per_client: config.queue_per_client,
                    queue_per_address: config.queue_per_address,
                    queue_timeout: config.queue_timeout,
                    affinity_wait: config.affinity_wait,
                },
                store,
            ),
            connector: http::upstream::Connector::new(
                config.connect_timeout,
                config.pool_max_idle,
                config.pool_idle_timeout,
                &config.upstream_roots,
            ),
            tunnels: tunnel::Tunnels::new(config.max_tunnels),
            metrics: metrics::Metrics::default(),
            auth: auth::Auth::new(config.admin_token.clone())?,
            control_rate: limits::RateLimiter::new(config.control_rate, config.control_burst),
            instance: ids::secret()?[..16].to_string(),
            client_salt: std::hash::RandomState::new(),
            listen: addr,
            config,
        });
        let restored = inner.state.restore()?;
        if restored > 0 {
            tracing::info!(rooms = restored, "rooms restored from the state file");
        }
        let (tx, rx) = watch::channel(false);
        let shutdown = ShutdownHandle(Arc::new(tx));
        let task = tokio::spawn(run(listener, inner.clone(), rx));
        Ok(Hub {
            addr,
            shutdown,
            task,
            inner,
        })
    }

    /// The address the hub listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that can stop the hub from elsewhere (a signal handler, a test).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// The rooms, as `GET /rooms` lists them.
    pub fn rooms(&self) -> Vec<crate::types::RoomSummary> {
        self.inner.state.list_rooms()
    }

    /// A room's participants, as `GET /rooms/:code/participants` lists them; `None` when there
    /// is no such room.
    pub fn participants(&self, code: &str) -> Option<Vec<crate::types::ParticipantInfo>> {
        self.inner.state.room(code).ok().map(|r| r.participants())
    }

    /// Reverse-tunnel sockets parked for a participant (tests).
    #[doc(hidden)]
    pub fn parked_tunnels(&self, code: &str, id: &str) -> usize {
        self.inner.tunnels.parked(code, id)
    }

    /// A room's event-stream counts (tests): subscribers evicted for falling behind, and
    /// subscribers now.
    #[doc(hidden)]
    pub fn event_counts(&self, code: &str) -> Option<(u64, usize)> {
        let room = self.inner.state.room(code).ok()?;
        let inner = room.lock();
        Some((inner.events.evictions, inner.events.subscriber_count()))
    }

    /// Reverse-tunnel sockets parked across the hub (tests).
    #[doc(hidden)]
    pub fn parked_tunnels_total(&self) -> usize {
        self.inner.tunnels.total()
    }

    /// Shut down gracefully and wait until done.
    pub async fn shutdown(self) {
        self.shutdown.shutdown();
        self.wait().await;
    }

    /// Wait until the hub has stopped (after a shutdown was requested through a handle).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

async fn run(listener: TcpListener, inner: Arc<HubInner>, shutdown: watch::Receiver<bool>) {
    let sweeper = tokio::spawn(sweeper::run(inner.clone(), shutdown.clone()));
    let closer = {
        let inner = inner.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            http::service::shutdown_signalled(&mut shutdown).await;
            // Event streams and parked tunnels never end by themselves; end them so their
            // connections can close.
            inner.state.close_all_streams();
            inner.tunnels.close_all();
        })
    };
    let server_config = Arc::new(inner.config.server.clone());
    http::server::serve(listener, Arc::new(Service(inner)), server_config, shutdown).await;
    sweeper.abort();
    closer.abort();
    tracing::info!("hub stopped");
}
