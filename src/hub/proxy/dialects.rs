//! The other front doors of the proxy: Ollama's API, Anthropic's Messages API and OpenAI's
//! Responses API on a room. Each translates its request for OpenAI-speaking participants
//! ([`translate`](crate::hub::translate)), names the body a participant that speaks its
//! protocol gets instead ([`Native`]), and hands both to the same relay as `/v1`, which picks
//! per attempt; errors come back in its own dialect.

use std::sync::Arc;

use super::{Native, Shape, proxy, rewrite};
use crate::http::{Request, Response};
use crate::hub::HubInner;
use crate::hub::error::ApiError;
use crate::hub::rooms::state::Room;
use crate::hub::router::ProxyKind;
use crate::hub::translate::{anthropic, ollama};
use crate::types::Protocol;

/// Relay one request of Ollama's API (`/api/chat`, `/api/generate`, `/api/embed`,
/// `/api/embeddings`), translated to OpenAI's for the participant and back
/// ([`translate::ollama`]). Errors come back in Ollama's shape, `{"error": "…"}`.
pub(crate) async fn handle_ollama(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    op: ollama::Op,
    req: &Request,
    ip: std::net::IpAddr,
) -> Response {
    let translated = match ollama::request(op, &req.body) {
        Ok(t) => t,
        Err(why) => return ApiError::bad_request(why).into_response(),
    };
    let openai = Request {
        head: req.head.clone(),
        body: translated.body,
        budget: None,
    };
    let shape = Shape::Ollama {
        op,
        model: translated.model,
        stream: translated.stream,
    };
    // Participants whose server is an Ollama get the request as it came.
    let native = match rewrite::scan(&req.body) {
        Ok(scan) => Some(Native {
            protocol: Protocol::Ollama,
            req,
            scan,
            path: op.path(),
            only: false,
        }),
        Err(_) => None,
    };
    match proxy(hub, room, translated.kind, &openai, ip, shape, native).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Relay one request of Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`),
/// translated to an OpenAI chat completion for the participant and back
/// ([`translate::anthropic`]); passed through as it came to a participant whose server speaks
/// Anthropic's API. Errors come back in Anthropic's shape.
pub(crate) async fn handle_anthropic(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    op: anthropic::Op,
    req: &Request,
    ip: std::net::IpAddr,
) -> Response {
    let translated = match anthropic::request(op, &req.body) {
        Ok(t) => t,
        Err(why) => return ApiError::bad_request(why).into_anthropic_response(),
    };
    let openai = Request {
        head: req.head.clone(),
        body: translated.body,
        budget: None,
    };
    let shape = Shape::Anthropic {
        op,
        model: translated.model,
        stream: translated.stream,
    };
    let native = match rewrite::scan(&req.body) {
        Ok(scan) => Some(Native {
            protocol: Protocol::Anthropic,
            req,
            scan,
            path: match op {
                anthropic::Op::Messages => "/v1/messages",
                anthropic::Op::CountTokens => "/v1/messages/count_tokens",
            },
            only: false,
        }),
        Err(_) => None,
    };
    match proxy(hub, room, ProxyKind::Chat, &openai, ip, shape, native).await {
        Ok(r) => r,
        Err(e) => e.into_anthropic_response(),
    }
}

/// Relay one request of OpenAI's Responses API (`/v1/responses`) to a participant whose server
/// speaks it, as it came (the model spliced). The hub does not translate this API: a room where
/// nobody speaks it answers 501, naming what its participants speak. Errors in OpenAI's shape.
pub(crate) async fn handle_responses(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    req: &Request,
    ip: std::net::IpAddr,
) -> Response {
    let online: Vec<_> = room
        .participants()
        .into_iter()
        .filter(|p| p.status != crate::types::ParticipantStatus::Offline)
        .collect();
    if !online
        .iter()
        .any(|p| p.protocols.contains(&Protocol::Responses))
    {
        let mut spoken = vec!["openai (chat completions)"];
        for (protocol, name) in [
            (Protocol::Ollama, "ollama"),
            (Protocol::Anthropic, "anthropic"),
        ] {
            if online.iter().any(|p| p.protocols.contains(&protocol)) {
                spoken.push(name);
            }
        }
        return ApiError::new(
            501,
            format!(
                "No participant in this room speaks the Responses API, and the hub does not translate it; its participants speak: {}. Use /v1/chat/completions",
                spoken.join(", ")
            ),
        )
        .into_openai_response();
    }
    let scan = match rewrite::scan(&req.body) {
        Ok(scan) => scan,
        Err(e) => return ApiError::bad_request(e.to_string()).into_openai_response(),
    };
    let native = Native {
        protocol: Protocol::Responses,
        req,
        scan,
        path: "/v1/responses",
        only: true,
    };
    match proxy(
        hub,
        room,
        ProxyKind::Chat,
        req,
        ip,
        Shape::OpenAi,
        Some(native),
    )
    .await
    {
        Ok(r) => r,
        Err(e) => e.into_openai_response(),
    }
}
