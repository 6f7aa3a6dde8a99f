//! The hub: rooms, participants, events and the OpenAI-compatible proxy, served over
//! [`crate::http`].
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

pub mod api;
pub mod auth;
pub mod connector;
pub mod endpoints;
pub mod error;
pub mod events;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod persist;
pub mod proxy;
pub mod rewrite;
pub mod router;
pub mod state;
pub mod sweeper;
pub mod tokens;
pub mod tunnel;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::http::{self, Handler, Peer, Request, RequestHead, Response};
use crate::types::{HEALTH_CHECK_INTERVAL_MS, PARTICIPANT_TIMEOUT_MS};
use error::{ApiError, msg};
use router::Route;
use state::{Limits, State};

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
    pub server: http::ServerConfig,
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
    pub endpoint_rules: endpoints::EndpointRules,
}

/// Default time a participant may take to start answering.
pub const TTFB_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            server: http::ServerConfig::default(),
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
            connect_timeout: connector::CONNECT_TIMEOUT,
            ttfb_timeout: TTFB_TIMEOUT,
            pool_max_idle: connector::POOL_MAX_IDLE,
            pool_idle_timeout: connector::POOL_IDLE_TIMEOUT,
            upstream_roots: Vec::new(),
            state_file: None,
            tunnel_wait: tunnel::TUNNEL_WAIT,
            max_tunnels: tunnel::MAX_PARKED_TOTAL,
            endpoint_rules: endpoints::EndpointRules::default(),
        }
    }
}

/// What every request handler shares.
pub struct HubInner {
    pub state: State,
    pub config: HubConfig,
    pub connector: connector::Connector,
    pub tunnels: tunnel::Tunnels,
    pub metrics: metrics::Metrics,
    pub auth: auth::Auth,
    /// Control-route requests per client address.
    pub control_rate: limits::RateLimiter,
    /// This hub's random instance id, in the `Gambiarra-Hop` list of requests it forwards.
    pub instance: String,
}

/// The HTTP face of the hub.
struct Service(Arc<HubInner>);

/// What the hub decided from a request's head, before reading its body.
pub struct Admission {
    /// The room of a room route, looked up once.
    room: Option<Arc<state::Room>>,
    /// A join into a protected room without `Authorization`: the password is in the body (the
    /// TypeScript API's style), checked as soon as the (small) body is read.
    password_in_body: bool,
}

impl Admission {
    /// Outside any room, or inside one whose credentials are settled.
    pub fn of(room: Option<Arc<state::Room>>) -> Self {
        Admission {
            room,
            password_in_body: false,
        }
    }
}

/// The metrics label of a request.
fn label(method: http::Method, route: &Route<'_>) -> usize {
    if method == http::Method::Options {
        12 // preflight
    } else {
        route.label()
    }
}

impl Handler for Service {
    type Admitted = Admission;

    async fn admit(&self, head: &RequestHead, peer: &Peer) -> Result<(Admission, usize), Response> {
        let route = router::route(head.method, head.path());
        let v1 = route.is_v1();
        let limit = if v1 {
            self.0.config.v1_body_limit
        } else {
            self.0.config.control_body_limit
        };
        match self.admit_head(head, &route, peer.addr.ip()).await {
            Ok(admission) => Ok((admission, limit)),
            Err(e) => {
                self.0.metrics.request(label(head.method, &route), e.status);
                Err(e.render(v1))
            }
        }
    }

    async fn handle(&self, req: Request, admission: Admission, peer: &Peer) -> Response {
        // Timing costs a clock read; only when the per-request log line will be written.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let _in_flight = self.0.metrics.start();
        let route = router::route(req.head.method, req.head.path());
        let label = label(req.head.method, &route);
        let ip = peer.addr.ip();
        let v1 = route.is_v1();
        let resp = match admission {
            Admission {
                room: Some(room),
                password_in_body: true,
            } => match api::check_body_password(&self.0, &room, &req, ip).await {
                Ok(()) => self.in_room(&req, route, room, ip),
                Err(e) => e.render(v1),
            },
            Admission {
                room: Some(room), ..
            } => match route {
                Route::Proxy { kind, .. } => proxy::handle(&self.0, room, kind, &req).await,
                route => self.in_room(&req, route, room, ip),
            },
            Admission { room: None, .. } => match route {
                Route::CreateRoom => api::create_room(&self.0, &req, ip)
                    .await
                    .unwrap_or_else(ApiError::into_response),
                route => self.dispatch(&req, route),
            },
        };
        self.0.metrics.request(label, resp.status);
        tracing::debug!(
            method = req.head.method_str(),
            path = req.head.path(),
            status = resp.status,
            micros = started.map_or(0, |s| s.elapsed().as_micros() as u64),
            "request"
        );
        resp
    }
}

impl Service {
    /// Let a request through, from its head alone: within its address's control-route rate
    /// (not `/v1` or tunnels: those are the product, bounded by connections), and, inside a
    /// protected room, with the room's password.
    async fn admit_head(
        &self,
        head: &RequestHead,
        route: &Route<'_>,
        ip: std::net::IpAddr,
    ) -> Result<Admission, ApiError> {
        if head.method == http::Method::Options {
            return Ok(Admission::of(None));
        }
        if matches!(route, Route::Proxy { .. })
            && endpoints::is_loop(head.header(endpoints::HOP_HEADER), &self.0.instance)
        {
            return Err(ApiError::new(
                508,
                "Loop detected: this request was already forwarded by this hub (a participant's \
                 endpoint leads back to the hub)",
            ));
        }
        if !route.is_v1()
            && !matches!(route, Route::Tunnel { .. })
            && let Err(wait) = self.0.control_rate.take(ip)
        {
            return Err(ApiError::too_many(
                "Too many requests from your address, slow down",
                limits::retry_secs(wait),
            ));
        }
        api::authorize(&self.0, route, head, ip).await
    }

    /// Answer a request inside `room` (not the proxy), already admitted by `handle`.
    fn in_room(
        &self,
        req: &Request,
        route: Route<'_>,
        room: Arc<state::Room>,
        ip: std::net::IpAddr,
    ) -> Response {
        let hub = &self.0;
        let result = match &route {
            Route::DeleteRoom { .. } => api::delete_room(hub, room, req, ip),
            Route::Join { .. } => api::join(hub, &room, req, ip),
            Route::Leave { id, .. } => api::leave(hub, &room, id, req, ip),
            Route::HealthCheck { .. } => api::health_check(hub, &room, req, ip),
            Route::Participants { .. } => api::participants(&room),
            Route::Events { .. } => api::events(hub, room, req),
            Route::Tunnel { id, .. } => api::tunnel(hub, room, id, req, ip),
            Route::Models { .. } => api::models(&room),
            // Only routes with a room code get here, and the proxy is answered in `handle`.
            _ => Err(ApiError::not_found(msg::NOT_FOUND)),
        };
        result.unwrap_or_else(|e| e.render(route.is_v1()))
    }

    /// Answer a request outside any room, already routed and admitted by `handle`.
    fn dispatch(&self, req: &Request, route: Route<'_>) -> Response {
        let hub = &self.0;
        if req.head.method == http::Method::Options {
            return Response::new(204)
                .header(
                    "Access-Control-Allow-Methods",
                    Bytes::from_static(b"GET, POST, DELETE, OPTIONS"),
                )
                .header(
                    "Access-Control-Allow-Headers",
                    Bytes::from_static(b"Content-Type, Authorization, Last-Event-ID"),
                )
                .header("Access-Control-Max-Age", Bytes::from_static(b"86400"));
        }
        let v1 = route.is_v1();
        let result = match route {
            Route::Health => Ok(api::health()),
            Route::Metrics => Ok(Response::new(200)
                .header(
                    "Content-Type",
                    Bytes::from_static(b"text/plain; version=0.0.4; charset=utf-8"),
                )
                .body(http::Body::Full(Bytes::from(
                    hub.metrics.render(
                        &hub.state,
                        hub.config
                            .server
                            .stats
                            .open
                            .load(std::sync::atomic::Ordering::Relaxed),
                    ),
                )))),
            Route::ListRooms => Ok(api::list_rooms(hub)),
            // Handled (asynchronously: the password is hashed) in `handle`; room routes are
            // answered by `in_room`.
            Route::CreateRoom
            | Route::DeleteRoom { .. }
            | Route::Join { .. }
            | Route::Leave { .. }
            | Route::HealthCheck { .. }
            | Route::Participants { .. }
            | Route::Events { .. }
            | Route::Tunnel { .. }
            | Route::Models { .. }
            | Route::Proxy { .. } => Err(ApiError::not_found(msg::NOT_FOUND)),
            Route::MethodNotAllowed { allow } => {
                return ApiError::new(405, msg::METHOD_NOT_ALLOWED)
                    .into_response()
                    .header("Allow", Bytes::from_static(allow.as_bytes()));
            }
            Route::NotFound => Err(ApiError::not_found(msg::NOT_FOUND)),
        };
        result.unwrap_or_else(|e| e.render(v1))
    }
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
                },
                store,
            ),
            connector: connector::Connector::new(
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

    /// The hub's rooms and participants (read-only use by embedders and tests).
    pub fn state(&self) -> &State {
        &self.inner.state
    }

    /// The parked reverse-tunnel sockets.
    pub fn tunnels(&self) -> &tunnel::Tunnels {
        &self.inner.tunnels
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
            http::server::shutdown_signalled(&mut shutdown).await;
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
