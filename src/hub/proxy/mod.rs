//! The OpenAI-compatible proxy: one `/v1` request from a client to a participant and back.
//!
//! 1. The body is scanned once ([`rewrite::scan`]): the `model` value's byte range, `stream`.
//! 2. A participant is chosen ([`State::select`]) and leased: it counts the request in flight.
//! 3. The upstream request is a fresh head (Host, Content-Type, Accept, User-Agent,
//!    Content-Length — never the client's Authorization or Cookie) and the body as slices, the
//!    model value spliced and config defaults added ([`rewrite::splice`]), in one vectored write.
//! 4. The response head is read within the time-to-first-byte timeout; status and end-to-end
//!    headers go to the client. The body follows as the very `Bytes` each read produced —
//!    chunk framing and all — while a [`TokenScanner`] looks at the same bytes for metrics.
//! 5. At the end, `llm:complete` (or `llm:error`), and the connection goes back to the pool if
//!    the response was complete. A client that leaves drops the body, which drops the upstream
//!    connection at once, so the model stops generating.
//!
//! A participant that refuses the connection or does not answer the connect in time, before
//! any byte was sent, is skipped for the next candidate (unless it was named by id); three such
//! failures in a row mark it offline.
//!
//! The other front doors (Ollama's API, Anthropic's Messages API, OpenAI's Responses API) are
//! in [`dialects`]: they hand this relay an OpenAI translation and the body as it came, and the
//! relay picks per attempt by what the chosen participant speaks ([`Native`]), answering in the
//! request's dialect ([`Shape`]).

pub(crate) mod dialects;
pub mod rewrite;
pub(crate) mod tokens;
pub(crate) mod tunnel;

use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio_util::io::poll_read_buf;

use crate::http::body::{BodyFraming, ChunkedDecoder};
use crate::http::client::{ResponseHead, is_hop_by_hop, parse_response};
use crate::http::upstream::{ConnectError, Target, Upstream};
use crate::http::{Body, BodyStream, Request, Response};
use crate::hub::HubInner;
use crate::hub::error::ApiError;
use crate::hub::metrics::Outcome;
use crate::hub::proxy::tokens::{BodyKind, TokenScanner};
use crate::hub::rooms::queue::{Want, client_key};
use crate::hub::rooms::state::{Lease, Room, SelectError};
use crate::hub::router::ProxyKind;
use crate::hub::translate::{MAX_ERROR_BODY, Translation, anthropic, ollama};
use crate::types::LlmMetrics;
use crate::types::Protocol;
use crate::types::Routing;
use crate::types::event::{self, Kind};

/// First read size from an upstream: a streamed token is ~150 bytes, and a thousand streams
/// waiting for their next token should not each hold a large buffer (4 KiB here was 3 KB of
/// each stream's footprint). Reads that fill it double it.
const READ_CHUNK: usize = 1024;
/// Reads grow (doubling) up to this when they keep filling the buffer (large JSON answers).
const READ_CHUNK_MAX: usize = 64 * 1024;

/// Most participants one request is offered to (the first and its failovers).
pub const MAX_ATTEMPTS: usize = 3;

pub(crate) const NO_PARTICIPANT: &str = "No available participant for the requested model";
pub(crate) const PARTICIPANT_OFFLINE: &str = "Participant is offline";
pub(crate) const QUEUE_FULL: &str =
    "Every participant for this model is busy and the room's queue is full";
pub(crate) const CLIENT_QUOTA: &str = "Every participant for this model is busy and you have the most requests a client (API key, or address) may have waiting in this room";
pub(crate) const QUEUE_TIMEOUT: &str =
    "Every participant for this model stayed busy for as long as a request may wait";

/// The request's client, for the queue's fairness ([`client_key`]): its API key in an open
/// room (in a protected one the key is the room's shared password, the same for everyone),
/// else its address.
fn client_of(hub: &HubInner, room: &Room, req: &Request, ip: IpAddr) -> u64 {
    let key = (!room.info.password_protected)
        .then(|| {
            crate::hub::guard::auth::bearer(&req.head)
                .or_else(|| req.head.header("x-api-key").map(<[u8]>::trim_ascii))
        })
        .flatten()
        .filter(|k| !k.is_empty());
    client_key(&hub.client_salt, key, ip)
}

/// Relay one `/v1` request. Errors come back in OpenAI's shape.
pub(crate) async fn handle(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    kind: ProxyKind,
    req: &Request,
    ip: IpAddr,
) -> Response {
    match proxy(hub, room, kind, req, ip, Shape::OpenAi, None).await {
        Ok(r) => r,
        Err(e) => e.into_openai_response(),
    }
}

/// A request in another protocol than OpenAI's, for the participants that speak it: its body
/// as it came (the model spliced, as on `/v1`) and the path it goes to.
pub(crate) struct Native<'a> {
    protocol: Protocol,
    req: &'a Request,
    scan: rewrite::BodyScan,
    path: &'static str,
    /// Only participants that speak it may take the request (the hub does not translate it).
    only: bool,
}

/// The dialect a relayed answer goes back in.
pub(crate) enum Shape {
    /// As the participant sent it, byte for byte.
    OpenAi,
    /// Translated to Ollama's ([`ollama::Out`]): `model` as the client asked for it.
    Ollama {
        op: ollama::Op,
        model: String,
        stream: bool,
    },
    /// Translated to Anthropic's ([`anthropic::Out`]).
    Anthropic {
        op: anthropic::Op,
        model: String,
        stream: bool,
    },
}

/// What failed on the way to a response head.
enum Failure {
    /// No connection: another participant may be tried.
    Connect(ConnectError),
    /// Sent, but no (valid) answer: not retried, the request may have run.
    Upstream(ApiError),
}

async fn proxy(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    kind: ProxyKind,
    req: &Request,
    ip: IpAddr,
    shape: Shape,
    native: Option<Native<'_>>,
) -> Result<Response, ApiError> {
    let scan = rewrite::scan(&req.body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    // Only a cache-aware room looks at the prompt.
    let prefix: Arc<[rewrite::PrefixBlock]> = match room.policy.routing {
        Routing::CacheAware => rewrite::prefix_chain_shared(&req.body, &scan),
        Routing::LeastLoaded => Arc::from(Vec::new()),
    };
    // What the client asked for, shared by each attempt's queue entry and the relay.
    let requested: Arc<str> = Arc::from(scan.model.as_str());
    let client = client_of(hub, &room, req, ip);
    let address = client_key(&hub.client_salt, None, ip);
    let mut tried: Vec<String> = Vec::new();
    let mut last_error: Option<ApiError> = None;
    loop {
        // One request tries a few participants, not every one in the room (a room full of
        // unreachable endpoints must not turn a request into a burst of connection attempts).
        if tried.len() >= MAX_ATTEMPTS {
            return Err(last_error.unwrap_or(ApiError::unavailable(NO_PARTICIPANT)));
        }
        let dialect = native.as_ref().map(|n| n.protocol);
        let only = native.as_ref().is_some_and(|n| n.only);
        let want = Want {
            requested: requested.clone(),
            tried: tried.clone(),
            dialect,
            only,
            prefix: prefix.clone(),
            client,
            address,
        };
        let lease = match hub.state.acquire(&room, want, client).await {
            Ok(l) => l,
            Err(SelectError::NoMatch) => return Err(ApiError::not_found(NO_PARTICIPANT)),
            Err(SelectError::Offline) => return Err(ApiError::unavailable(PARTICIPANT_OFFLINE)),
            Err(SelectError::Exhausted | SelectError::Full | SelectError::Defer) => {
                return Err(last_error.unwrap_or(ApiError::unavailable(NO_PARTICIPANT)));
            }
            Err(SelectError::QueueFull(retry)) => {
                return Err(ApiError::unavailable(QUEUE_FULL).retry_after(retry));
            }
            Err(SelectError::ClientQuota(retry)) => {
                return Err(ApiError::too_many(
                    format!(
                        "{CLIENT_QUOTA} ({} per key, {} per address)",
                        hub.state.limits.queue_per_client, hub.state.limits.queue_per_address
                    ),
                    retry,
                ));
            }
            Err(SelectError::TimedOut(retry)) => {
                return Err(ApiError::unavailable(format!(
                    "{QUEUE_TIMEOUT} ({} s)",
                    hub.state.limits.queue_timeout.as_secs()
                ))
                .retry_after(retry));
            }
        };
        room.lock().publish(
            Kind::LlmRequest,
            &event::LlmRequest {
                participant_id: lease.participant_id.as_str().into(),
                model: scan.model.as_str().into(),
                served_model: Some(lease.model.as_ref().into()),
            },
        );
        // The lease's start (read from the clock when it was granted, a moment ago).
        let started = lease.started.into_std();
        // If the client leaves while the participant has not answered yet, this future is
        // dropped (the connection watches the client): the guard reports it.
        let waiting = Waiting {
            hub,
            room: &room,
            participant_id: &lease.participant_id,
            armed: true,
        };
        // A participant that speaks the request's protocol gets it as it came; the others the
        // OpenAI translation.
        let (sent, sent_scan, path) = match &native {
            Some(n) if lease.native => (n.req, &n.scan, n.path),
            _ => (req, &scan, kind.upstream_path()),
        };
        let outcome = forward(hub, &lease, path, sent, sent_scan).await;
        waiting.disarm();
        match outcome {
            Ok(answer) => {
                if lease.had_failures {
                    hub.state.connect_ok(&room, &lease.participant_id);
                }
                let asked = Asked {
                    model: requested,
                    stream: scan.stream,
                    client_minor: req.head.minor_version,
                };
                // A translated answer always has a body; a status that may not carry one (1xx,
                // 204, 304) from a participant is not an answer the client's dialect can take.
                let status = answer.head.status;
                if !lease.native
                    && !matches!(shape, Shape::OpenAi)
                    && (status < 200 || status == 204 || status == 304)
                {
                    hub.metrics
                        .proxied(&lease.participant_id, Outcome::UpstreamError);
                    let message = format!("Participant answered {status} with no body");
                    llm_error(&room, &lease.participant_id, &message);
                    return Err(ApiError::new(502, message));
                }
                return Ok(match shape {
                    _ if lease.native => respond(hub, lease, asked, started, answer),
                    Shape::OpenAi => respond(hub, lease, asked, started, answer),
                    // Translated by what came (a participant may ignore `stream`).
                    Shape::Ollama { op, model, stream } => {
                        let (relay, kind) = relay(hub, lease, asked, started, answer);
                        let out =
                            ollama::Out::new(op, model, stream, status, kind == BodyKind::Sse);
                        let content_type = out.content_type();
                        translated(status, content_type, Translation::new(relay, out))
                    }
                    // The count's status depends on the answer's body: read it whole (it is small)
                    // before answering.
                    Shape::Anthropic {
                        op: anthropic::Op::CountTokens,
                        ..
                    } => {
                        let (relay, _) = relay(hub, lease, asked, started, answer);
                        let body = collect(relay, MAX_ERROR_BODY).await;
                        let (status, v) = anthropic::count_answer(status, &body);
                        Response::json(
                            status,
                            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
                        )
                    }
                    Shape::Anthropic { model, stream, .. } => {
                        let (relay, kind) = relay(hub, lease, asked, started, answer);
                        let out = anthropic::Out::new(model, stream, status, kind == BodyKind::Sse);
                        let content_type = out.content_type();
                        translated(status, content_type, Translation::new(relay, out))
                    }
                });
            }
            Err(Failure::Connect(e)) => {
                hub.metrics
                    .proxied(&lease.participant_id, Outcome::Unreachable);
                let message = e.to_string();
                llm_error(&room, &lease.participant_id, &message);
                if e.blames_participant() {
                    hub.state.connect_failed(&room, &lease.participant_id);
                }
                tracing::warn!(participant = %lease.participant_id, "{message}");
                let err = match e {
                    // Nobody to send it through (yet): unavailable, not a bad gateway.
                    ConnectError::NoTunnel => ApiError::unavailable(message),
                    _ => ApiError::new(502, format!("Participant unreachable: {message}")),
                };
                if lease.explicit {
                    return Err(err);
                }
                // Only a participant that could not be reached is passed over by the next
                // attempt (every other outcome ends the request).
                tried.push(lease.participant_id.clone());
                last_error = Some(err);
            }
            Err(Failure::Upstream(e)) => {
                hub.metrics
                    .proxied(&lease.participant_id, Outcome::UpstreamError);
                llm_error(&room, &lease.participant_id, &e.message);
                return Err(e);
            }
        }
    }
}

/// A translated answer: the participant's status, the dialect's Content-Type, the translation.
fn translated(status: u16, content_type: &'static [u8], body: impl BodyStream) -> Response {
    Response::new(status)
        .header("Content-Type", Bytes::from_static(content_type))
        .body(Body::Stream(Box::new(body)))
}

/// The whole of a (small) body, at most `limit` bytes kept; a failed read ends it.
async fn collect(mut body: impl BodyStream, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(Ok(b)) = std::future::poll_fn(|cx| body.poll_next(cx)).await {
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&b[..b.len().min(room)]);
    }
    out
}

/// Reports a request abandoned by its client before the participant answered (when dropped
/// armed); the lease, dropped with it, frees the participant.
struct Waiting<'a> {
    hub: &'a HubInner,
    room: &'a Room,
    participant_id: &'a str,
    armed: bool,
}

impl Waiting<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hub
                .metrics
                .proxied(self.participant_id, Outcome::ClientGone);
            llm_error(
                self.room,
                self.participant_id,
                "Client disconnected before the participant answered",
            );
        }
    }
}

fn llm_error(room: &Room, participant_id: &str, error: &str) {
    room.lock().publish(
        Kind::LlmError,
        &event::LlmError {
            participant_id: participant_id.into(),
            error: error.into(),
        },
    );
}

/// Connect (pooled or fresh), send the rewritten request, read the response head.
async fn forward(
    hub: &HubInner,
    lease: &Lease,
    path: &str,
    req: &Request,
    scan: &rewrite::BodyScan,
) -> Result<Answer, Failure> {
    let target = &lease.target;
    let body = rewrite::splice(&req.body, scan, &lease.defaults);
    let head = request_head(
        target,
        path,
        req,
        &hub.instance,
        body.iter().map(Bytes::len).sum(),
    );
    if lease.tunnel {
        // A parked tunnel the agent dropped meanwhile answers nothing; the next one is tried.
        let code = &lease.room().info.code;
        loop {
            let Some(up) = hub
                .tunnels
                .take(code, &lease.participant_id, hub.config.tunnel_wait)
                .await
            else {
                return Err(Failure::Connect(ConnectError::NoTunnel));
            };
            match exchange(hub, Upstream::Tunnel(Box::new(up)), &head, &body).await {
                Ok(answer) => return Ok(answer),
                Err(Exchange::NothingBack) => continue,
                Err(Exchange::Fail(e)) => return Err(Failure::Upstream(e)),
            }
        }
    }
    let connector = &hub.connector;
    // A pooled connection may have been closed by the participant just now; if it fails before
    // any byte of an answer, the request goes again on a fresh connection (the participant
    // cannot have processed it).
    // The pool is partitioned by what the participant may reach (`Lease::pool_key`): a
    // connection opened for one joined on the hub's machine never serves another.
    if let Some(conn) = connector.take_idle(&lease.pool_key) {
        match exchange(hub, conn, &head, &body).await {
            Ok(answer) => return Ok(answer),
            Err(Exchange::NothingBack) => {}
            Err(Exchange::Fail(e)) => return Err(Failure::Upstream(e)),
        }
    }
    let rules = &hub.config.endpoint_rules;
    let conn = connector
        .connect_checked(target, |ip| rules.permits(ip, lease.local_ok))
        .await
        .map_err(Failure::Connect)?;
    match exchange(hub, conn, &head, &body).await {
        Ok(answer) => Ok(answer),
        Err(Exchange::NothingBack) => Err(Failure::Upstream(ApiError::new(
            502,
            "Participant closed the connection without answering",
        ))),
        Err(Exchange::Fail(e)) => Err(Failure::Upstream(e)),
    }
}

enum Exchange {
    /// The connection ended before a single byte of response.
    NothingBack,
    Fail(ApiError),
}

async fn exchange(
    hub: &HubInner,
    mut conn: Upstream,
    head: &[u8],
    body: &[Bytes],
) -> Result<Answer, Exchange> {
    // The head and the body's slices, on the stack unless the body has many parts.
    let mut inline: [&[u8]; 16] = [&[]; 16];
    let spilled: Vec<&[u8]>;
    let parts: &[&[u8]] = if body.len() < inline.len() {
        inline[0] = head;
        for (slot, b) in inline[1..].iter_mut().zip(body) {
            *slot = b;
        }
        &inline[..=body.len()]
    } else {
        spilled = std::iter::once(head)
            .chain(body.iter().map(|b| &b[..]))
            .collect();
        &spilled
    };
    let write = crate::http::within(
        hub.config.server.write_timeout,
        crate::http::write_all_vectored(&mut conn, parts),
    )
    .await;
    if !matches!(write, Ok(Ok(()))) {
        return Err(Exchange::NothingBack);
    }
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let deadline = tokio::time::Instant::now() + hub.config.ttfb_timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, conn.read_buf(&mut buf)).await {
            Err(_) => {
                return Err(Exchange::Fail(ApiError::new(
                    504,
                    "Participant did not answer in time",
                )));
            }
            Ok(Err(_)) | Ok(Ok(0)) if buf.is_empty() => return Err(Exchange::NothingBack),
            Ok(Err(e)) => {
                return Err(Exchange::Fail(ApiError::new(
                    502,
                    format!("Participant connection failed: {e}"),
                )));
            }
            Ok(Ok(n)) => n,
        };
        if n == 0 {
            return Err(Exchange::Fail(ApiError::new(
                502,
                "Participant closed the connection mid-answer",
            )));
        }
        // Parse only once the blank line that ends a head may be in: a participant trickling a
        // 64 KiB head byte by byte must not cost a parse of the whole buffer per read.
        let fresh = buf.len() - n;
        if memchr::memmem::find(&buf[fresh.saturating_sub(3)..], b"\r\n\r\n").is_none()
            && memchr::memmem::find(&buf[fresh.saturating_sub(1)..], b"\n\n").is_none()
            && buf.len() <= crate::http::client::MAX_RESPONSE_HEAD
        {
            continue;
        }
        // Skip informational answers (100 Continue) the participant may send.
        loop {
            match parse_response(&buf) {
                Ok(Some(parts)) => {
                    let len = parts.len;
                    let resp = parts.freeze(buf.split_to(len).freeze());
                    if (100..200).contains(&resp.status) {
                        continue;
                    }
                    return Ok(Answer {
                        conn,
                        head: resp,
                        rest: buf,
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Exchange::Fail(ApiError::new(
                        502,
                        format!("Invalid answer from participant: {}", e.message()),
                    )));
                }
            }
        }
    }
}

/// The upstream request head. It carries `Via` and the `Gambiarra-Hop` list with this hub
/// added, so a participant endpoint that leads back here is caught (508) on the next pass.
fn request_head(
    target: &Target,
    path: &str,
    req: &Request,
    instance: &str,
    body_len: usize,
) -> Vec<u8> {
    let mut h = Vec::with_capacity(256);
    h.extend_from_slice(b"POST ");
    h.extend_from_slice(target.base_path.as_bytes());
    h.extend_from_slice(path.as_bytes());
    h.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    h.extend_from_slice(target.authority.as_bytes());
    // The body was validated as JSON, whatever the client labelled it (curl -d says
    // form-urlencoded), and participants' servers insist on the right type.
    h.extend_from_slice(b"\r\nContent-Type: application/json");
    for name in ["Accept", "User-Agent"] {
        if let Some(v) = req.head.header(name) {
            h.extend_from_slice(b"\r\n");
            h.extend_from_slice(name.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(v);
        }
    }
    h.extend_from_slice(b"\r\nVia: ");
    if let Some(v) = req.head.header("via") {
        h.extend_from_slice(v);
        h.extend_from_slice(b", ");
    }
    h.extend_from_slice(b"1.1 gambiarra\r\nGambiarra-Hop: ");
    if let Some(v) = req.head.header(crate::hub::guard::endpoints::HOP_HEADER) {
        h.extend_from_slice(v);
        h.extend_from_slice(b", ");
    }
    h.extend_from_slice(instance.as_bytes());
    h.extend_from_slice(b"\r\nContent-Length: ");
    h.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    h.extend_from_slice(b"\r\n\r\n");
    h
}

/// Build the client's response from the upstream head, with the body relayed as it arrives.
fn respond(
    hub: &Arc<HubInner>,
    lease: Lease,
    asked: Asked,
    started: Instant,
    answer: Answer,
) -> Response {
    let Answer { conn, head, rest } = answer;
    let mut resp = Response::new(head.status);
    resp.headers.reserve_exact(head.headers().count());
    // What the scanner reads: the answer's Content-Type says; without one, what was asked.
    let mut kind = if asked.stream {
        BodyKind::Sse
    } else {
        BodyKind::Document
    };
    for (name, value) in head.headers() {
        // A participant does not set cookies on the hub's origin (where the room page lives).
        if is_hop_by_hop(&name) || name.eq_ignore_ascii_case(b"set-cookie") {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-type") {
            kind = BodyKind::of_content_type(&value);
        }
        resp.headers.push((name, value));
    }
    let mut relay = Relay::new(hub, lease, asked.model, started, &head, conn, rest, kind);
    resp.body = match head.framing {
        BodyFraming::Empty => {
            relay.finish_now();
            Body::Empty
        }
        BodyFraming::Length(n) => Body::Raw {
            length: Some(n),
            stream: Box::new(relay),
        },
        BodyFraming::Chunked if asked.client_minor >= 1 => Body::Raw {
            length: None,
            stream: Box::new(relay),
        },
        // An HTTP/1.0 client cannot take chunked framing; an until-close body has none. Both go
        // out as plain data, framed by the connection.
        BodyFraming::Chunked | BodyFraming::UntilClose => {
            relay.passthrough = false;
            Body::Stream(Box::new(relay))
        }
    };
    resp
}

/// The answer's body decoded (no chunk framing), for a translator to read; counted and
/// announced as [`respond`]'s relay is.
fn relay(
    hub: &Arc<HubInner>,
    lease: Lease,
    asked: Asked,
    started: Instant,
    answer: Answer,
) -> (Relay, BodyKind) {
    let Answer { conn, head, rest } = answer;
    let kind = head
        .headers()
        .find(|(name, _)| name.eq_ignore_ascii_case(b"content-type"))
        .map_or(
            if asked.stream {
                BodyKind::Sse
            } else {
                BodyKind::Document
            },
            |(_, value)| BodyKind::of_content_type(&value),
        );
    let mut relay = Relay::new(hub, lease, asked.model, started, &head, conn, rest, kind);
    relay.passthrough = false;
    if matches!(head.framing, BodyFraming::Empty) {
        relay.finish_now();
    }
    (relay, kind)
}

impl Relay {
    /// A relay of `head`'s body from `conn` (`rest`: what was read past the head).
    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of an answer and its request"
    )]
    fn new(
        hub: &Arc<HubInner>,
        lease: Lease,
        requested: Arc<str>,
        started: Instant,
        head: &ResponseHead,
        conn: Upstream,
        rest: BytesMut,
        kind: BodyKind,
    ) -> Relay {
        Relay {
            io: Some(conn),
            buf: rest,
            read_size: READ_CHUNK,
            framing: match head.framing {
                BodyFraming::Length(n) => Framing::Length(n),
                BodyFraming::Chunked => Framing::Chunked(ChunkedDecoder::new()),
                BodyFraming::UntilClose => Framing::UntilClose,
                BodyFraming::Empty => Framing::Length(0),
            },
            passthrough: true,
            pending: VecDeque::new(),
            scanner: TokenScanner::new(kind),
            done: matches!(head.framing, BodyFraming::Empty),
            failure: None,
            finish: Some(Finish {
                hub: hub.clone(),
                lease,
                requested,
                started,
                status: head.status,
                keep_alive: head.keep_alive,
            }),
        }
    }
}

/// What the client asked, as the relay needs it.
struct Asked {
    /// `model` as sent.
    model: Arc<str>,
    /// `"stream": true` was asked (the body is scanned as SSE when no Content-Type says).
    stream: bool,
    /// The client's HTTP minor version (1.0 clients cannot take chunked framing).
    client_minor: u8,
}

/// A participant's answer, its head read: the connection, the head, and the body bytes that
/// came with the head.
struct Answer {
    conn: Upstream,
    head: ResponseHead,
    rest: BytesMut,
}

enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// What happens when the relay ends, however it ends.
struct Finish {
    hub: Arc<HubInner>,
    lease: Lease,
    /// What the client asked for (`model` as sent).
    requested: Arc<str>,
    started: Instant,
    status: u16,
    keep_alive: bool,
}

/// The response body: upstream bytes, relayed as read.
struct Relay {
    io: Option<Upstream>,
    buf: BytesMut,
    /// Current read size (grows while reads fill it).
    read_size: usize,
    framing: Framing,
    /// Forward raw bytes (framing included); else only payload.
    passthrough: bool,
    /// Payload slices waiting to go (non-passthrough chunked only).
    pending: VecDeque<Bytes>,
    scanner: TokenScanner,
    done: bool,
    failure: Option<String>,
    finish: Option<Finish>,
}

impl Relay {
    /// Take what is buffered and due to the client, if anything.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, String> {
        if let Some(b) = self.pending.pop_front() {
            return Ok(Some(b));
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.framing {
            Framing::Length(rem) => {
                let n = (*rem).min(self.buf.len() as u64) as usize;
                let chunk = self.buf.split_to(n).freeze();
                *rem -= n as u64;
                self.done = *rem == 0;
                if self.done {
                    self.scanner.feed_last(&chunk);
                } else {
                    self.scanner.feed(&chunk);
                }
                Ok(Some(chunk))
            }
            Framing::UntilClose => {
                let chunk = self.buf.split().freeze();
                self.scanner.feed(&chunk);
                Ok(Some(chunk))
            }
            Framing::Chunked(dec) => {
                let scanner = &mut self.scanner;
                if self.passthrough {
                    let p = dec
                        .feed(&self.buf, |d| scanner.feed(d))
                        .map_err(|e| format!("Participant sent {e}"))?;
                    self.done = p.done;
                    Ok(Some(self.buf.split_to(p.consumed).freeze()))
                } else {
                    let base = self.buf.as_ptr() as usize;
                    let mut ranges = Vec::new();
                    let p = dec
                        .feed(&self.buf, |d| {
                            scanner.feed(d);
                            let start = d.as_ptr() as usize - base;
                            ranges.push(start..start + d.len());
                        })
                        .map_err(|e| format!("Participant sent {e}"))?;
                    self.done = p.done;
                    let consumed = self.buf.split_to(p.consumed).freeze();
                    self.pending
                        .extend(ranges.into_iter().map(|r| consumed.slice(r)));
                    Ok(self.pending.pop_front())
                }
            }
        }
    }

    /// The response ended (completely or not): the connection back to its pool when it can
    /// serve again, then the outcome counted and announced, and the participant released.
    fn finish_now(&mut self) {
        let Some(f) = self.finish.take() else {
            return;
        };
        self.recycle(&f);
        // Complete: the body ended as framed — or the stream said it was done (`[DONE]`) and
        // the client hung up before the terminating chunk (SDKs stop reading at `[DONE]`).
        let complete = (self.done || self.scanner.finished) && self.failure.is_none();
        if !complete {
            match self.failure.take() {
                Some(error) => f.failed(Outcome::Truncated, &error),
                None => f.failed(
                    Outcome::ClientGone,
                    "Client disconnected before the answer was complete",
                ),
            }
        } else if !(200..300).contains(&f.status) {
            let error = format!("Participant answered with status {}", f.status);
            f.failed(Outcome::ErrorStatus, &error);
        } else {
            self.scanner.finish();
            let duration = f.started.elapsed();
            let ttft = self
                .scanner
                .first_content
                .map_or(duration, |t| t.duration_since(f.started));
            f.completed(self.scanner.tokens(), ttft, duration);
        }
    }

    /// A connection whose answer ended cleanly (nothing unread) serves the next request: a
    /// direct one from the connector's pool, a tunnel from the participant's parked tunnels.
    fn recycle(&mut self, f: &Finish) {
        if !(self.done && self.failure.is_none() && f.keep_alive && self.buf.is_empty()) {
            return;
        }
        match self.io.take() {
            Some(Upstream::Tunnel(up)) => {
                // Refused (shutdown, bounds): the socket closes, the agent opens another.
                let room = f.lease.room();
                let _ = f
                    .hub
                    .tunnels
                    .park(&room.info.code, &f.lease.participant_id, *up);
            }
            Some(conn) => f.hub.connector.put_idle(&f.lease.pool_key, conn),
            None => {}
        }
    }
}

impl Finish {
    /// Count and announce a request that did not end well; the lease frees the participant.
    fn failed(self, outcome: Outcome, error: &str) {
        let room = self.lease.room().clone();
        let id = self.lease.participant_id.clone();
        self.hub.metrics.proxied(&id, outcome);
        drop(self.lease);
        llm_error(&room, &id, error);
    }

    /// Count a complete generation and announce it with its measurements.
    fn completed(self, tokens: u64, ttft: Duration, duration: Duration) {
        let metrics = &self.hub.metrics;
        let id = &self.lease.participant_id;
        metrics.proxied(id, Outcome::Ok);
        metrics.tokens(tokens);
        metrics.ttft.observe(ttft);
        metrics.duration.observe(duration);
        // Tokens per second of generating (after the first token), or of the whole answer
        // when it came at once.
        let generating = duration.saturating_sub(ttft).as_secs_f64();
        let secs = if generating > 0.0 {
            generating
        } else {
            duration.as_secs_f64()
        };
        let tps = if secs > 0.0 {
            tokens as f64 / secs
        } else {
            0.0
        };
        let measured = LlmMetrics {
            tokens,
            latency_first_token_ms: ttft.as_millis() as u64,
            duration_ms: duration.as_millis() as u64,
            tokens_per_second: (tps * 100.0).round() / 100.0,
        };
        // Release the participant and announce under one lock, so a listing after the event
        // shows it idle.
        let room = self.lease.room().clone();
        let mut inner = room.lock();
        let mut lease = self.lease;
        lease.release(&mut inner);
        let event = event::LlmComplete {
            participant_id: lease.participant_id.as_str().into(),
            model: lease.model.as_ref().into(),
            requested: Some(self.requested.as_ref().into()),
            metrics: measured,
        };
        inner.events.publish_json(Kind::LlmComplete.name(), &event);
        inner.ran(&lease.participant_id, &lease.model);
    }
}

impl BodyStream for Relay {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        loop {
            match self.take_buffered() {
                Ok(Some(b)) if !b.is_empty() => return Poll::Ready(Some(Ok(b))),
                Ok(_) => {}
                Err(e) => {
                    self.failure = Some(e);
                    self.finish_now();
                    return Poll::Ready(Some(Err(io::Error::other("upstream framing error"))));
                }
            }
            if self.done {
                self.finish_now();
                return Poll::Ready(None);
            }
            let Some(io) = self.io.as_mut() else {
                return Poll::Ready(None);
            };
            self.buf.reserve(self.read_size);
            let room = self.buf.capacity() - self.buf.len();
            match poll_read_buf(Pin::new(io), cx, &mut self.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(self.framing, Framing::UntilClose) {
                        self.done = true;
                        continue;
                    }
                    self.failure = Some("Participant closed the connection mid-answer".into());
                    self.finish_now();
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                Poll::Ready(Ok(n)) => {
                    if n == room && self.read_size < READ_CHUNK_MAX {
                        self.read_size *= 2;
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    self.failure = Some(format!("Participant connection failed: {e}"));
                    self.finish_now();
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Whatever is unfinished is announced; an upstream connection not returned to the pool
        // is closed as `io` drops, which stops the generation.
        self.finish_now();
    }
}
