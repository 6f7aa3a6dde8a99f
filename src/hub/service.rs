//! The hub's face to the HTTP server: every request is admitted from its head
//! ([`guard::admission`](super::guard::admission)), then answered by the one `match` over
//! [`Route`] in [`Service::serve`] — the place to start when asking "what happens to
//! `POST /rooms/:code/join`?". Counting (`/metrics`) and the per-request log line wrap both.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::HubInner;
use super::api;
use super::error::{ApiError, msg};
use super::guard::admission::{self, Admission};
use super::pages;
use super::proxy;
use super::router::{self, Route};
use crate::http::{Handler, Peer, Request, RequestHead, Response};

/// The HTTP face of the hub.
pub(crate) struct Service(pub(crate) Arc<HubInner>);

impl Handler for Service {
    type Admitted = Admission;

    async fn admit(&self, head: &RequestHead, peer: &Peer) -> Result<(Admission, usize), Response> {
        let route = router::route(head.method, head.path());
        let limit = if route.is_v1() || route.is_relayed() {
            self.0.config.v1_body_limit
        } else {
            self.0.config.control_body_limit
        };
        match admission::admit(&self.0, head, &route, peer.addr.ip()).await {
            Ok(admission) => Ok((admission, limit)),
            Err(e) => {
                self.0.metrics.request(route.label(), e.status);
                Err(pages::missing_room(&route, head, e.status)
                    .unwrap_or_else(|| e.render_for(&route)))
            }
        }
    }

    async fn handle(&self, req: Request, admission: Admission, peer: &Peer) -> Response {
        // Timing costs a clock read; only when the per-request log line will be written.
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let _in_flight = self.0.metrics.start();
        let route = router::route(req.head.method, req.head.path());
        let resp = match self.serve(&req, &route, admission, peer.addr.ip()).await {
            Ok(resp) => resp,
            Err(e) => e.render_for(&route),
        };
        self.0.metrics.request(route.label(), resp.status);
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
    /// Every route and what answers it. A room route gets here only with its room (admission
    /// looked it up, or refused the request).
    async fn serve(
        &self,
        req: &Request,
        route: &Route<'_>,
        admission: Admission,
        ip: IpAddr,
    ) -> Result<Response, ApiError> {
        let hub = &self.0;
        let room = match admission {
            Admission {
                room: Some(room),
                password_in_body: true,
            } => {
                admission::check_body_password(hub, &room, req, ip).await?;
                Some(room)
            }
            Admission { room, .. } => room,
        };
        match (route, room) {
            (Route::Preflight, _) => Ok(preflight()),
            (Route::Home, _) => Ok(pages::home(req)),
            (Route::Asset { name }, _) => pages::asset(name, req),
            (Route::Room { .. }, Some(room)) => pages::room(hub, &room, req),
            (Route::RoomQr { .. }, Some(room)) => pages::room_qr(hub, &room, req),
            (Route::Health, _) => Ok(api::health()),
            (Route::Metrics, _) => Ok(api::metrics(hub)),
            (Route::CreateRoom, _) => api::create_room(hub, req, ip).await,
            (Route::ListRooms, _) => Ok(api::list_rooms(hub)),
            (Route::DeleteRoom { .. }, Some(room)) => api::delete_room(hub, room, req, ip).await,
            (Route::Join { .. }, Some(room)) => api::join(hub, &room, req, ip),
            (Route::Leave { id, .. }, Some(room)) => api::leave(hub, &room, id, req, ip),
            (Route::HealthCheck { .. }, Some(room)) => api::health_check(hub, &room, req, ip),
            (Route::Participants { .. }, Some(room)) => api::participants(&room),
            (Route::Update { id, .. }, Some(room)) => api::update(hub, &room, id, req, ip),
            (Route::Catalogue { .. }, Some(room)) => api::catalogue(&room),
            (Route::Events { .. }, Some(room)) => api::events(hub, room, req),
            (Route::Tunnel { id, .. }, Some(room)) => api::tunnel(hub, room, id, req, ip),
            (Route::Models { .. }, Some(room)) => api::openai_models(&room, req),
            (
                Route::Ollama {
                    op: router::OllamaRoute::Run(op),
                    ..
                },
                Some(room),
            ) => Ok(proxy::dialects::handle_ollama(hub, room, *op, req, ip).await),
            (Route::Ollama { op, .. }, Some(room)) => api::ollama_catalogue(&room, *op, req),
            (Route::Responses { .. }, Some(room)) => {
                Ok(proxy::dialects::handle_responses(hub, room, req, ip).await)
            }
            (Route::Anthropic { op, .. }, Some(room)) => {
                Ok(proxy::dialects::handle_anthropic(hub, room, *op, req, ip).await)
            }
            (Route::Proxy { kind, .. }, Some(room)) => {
                Ok(proxy::handle(hub, room, *kind, req, ip).await)
            }
            (Route::MethodNotAllowed { allow }, _) => {
                Ok(ApiError::new(405, msg::METHOD_NOT_ALLOWED)
                    .into_response()
                    .header("Allow", Bytes::from_static(allow.as_bytes())))
            }
            (Route::NotFound, _)
            | (
                Route::DeleteRoom { .. }
                | Route::Room { .. }
                | Route::RoomQr { .. }
                | Route::Join { .. }
                | Route::Leave { .. }
                | Route::HealthCheck { .. }
                | Route::Participants { .. }
                | Route::Update { .. }
                | Route::Catalogue { .. }
                | Route::Events { .. }
                | Route::Tunnel { .. }
                | Route::Models { .. }
                | Route::Proxy { .. }
                | Route::Ollama { .. }
                | Route::Anthropic { .. }
                | Route::Responses { .. },
                None,
            ) => Err(ApiError::not_found(msg::NOT_FOUND)),
        }
    }
}

/// `OPTIONS`: what a browser may send cross-origin (every response allows any origin).
fn preflight() -> Response {
    Response::new(204)
        .header(
            "Access-Control-Allow-Methods",
            Bytes::from_static(b"GET, POST, PATCH, DELETE, OPTIONS"),
        )
        .header(
            "Access-Control-Allow-Headers",
            Bytes::from_static(b"Content-Type, Authorization, Last-Event-ID"),
        )
        .header("Access-Control-Max-Age", Bytes::from_static(b"86400"))
}
