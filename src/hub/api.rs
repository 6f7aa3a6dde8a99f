//! One handler per REST route: parse the body → change the state (which announces the change) →
//! answer. Every field a client sends is checked against a bound before it is stored.

use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use std::net::IpAddr;
use std::sync::Arc;

use crate::http::sse::encode_event;
use crate::http::{Body, Request, Response, url};
use crate::hub::HubInner;
use crate::hub::error::{ApiError, msg};
use crate::hub::guard::auth::{self, RoomSecrets};
use crate::hub::rooms::events::{Since, SseStream};
use crate::hub::rooms::models::{self, Dropped};
use crate::hub::rooms::state::Room;
use crate::types::event::{self, Kind};
use crate::types::{
    GenerationConfig, MachineSpecs, ModelInfo, ParticipantInfo, ParticipantStatus, Protocol, now_ms,
};

/// Longest room name.
pub(crate) const MAX_ROOM_NAME: usize = 128;
/// Longest participant id.
pub(crate) const MAX_PARTICIPANT_ID: usize = 128;
/// Longest nickname.
pub(crate) const MAX_NICKNAME: usize = 128;
/// Longest model name.
pub(crate) const MAX_MODEL: usize = crate::hub::rooms::models::MAX_MODEL_NAME;
/// Longest free-text spec (GPU, CPU name).
pub(crate) const MAX_SPEC_TEXT: usize = 256;
/// Most stop sequences in a config, and the longest one.
pub(crate) const MAX_STOP_SEQUENCES: usize = 16;
pub(crate) const MAX_STOP_LEN: usize = 256;

type Result<T> = std::result::Result<T, ApiError>;

/// Parse a JSON body; an empty body reads as `{}` so the route's own "… is required" message
/// is what the client sees.
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body = if body.trim_ascii().is_empty() {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Data => "Invalid request body",
            _ => "Invalid JSON",
        };
        ApiError::bad_request(format!("{what}: {e}"))
    })
}

fn json(status: u16, value: &serde_json::Value) -> Response {
    // Serialising a `Value` cannot fail.
    Response::json(
        status,
        Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
    )
}

fn check_len(field: &str, value: &str, max: usize) -> Result<()> {
    if value.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{field} is too long (at most {max} characters)"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain control characters"
        )));
    }
    if value.chars().any(crate::types::model::is_invisible_format) {
        return Err(ApiError::bad_request(format!(
            "{field} must not contain invisible formatting characters (bidi overrides, zero-width)"
        )));
    }
    Ok(())
}

pub(crate) fn health() -> Response {
    json(200, &json!({ "status": "ok", "timestamp": now_ms() }))
}

#[derive(Deserialize)]
struct CreateRoomBody {
    name: Option<String>,
    password: Option<String>,
    /// `least-loaded` or `cache-aware` (absent: the hub's `--routing`).
    routing: Option<String>,
}

/// `POST /rooms`: create a room, protected when a password is given. The answer carries the
/// `hostToken` (the only time it is ever sent) that deletes the room.
pub(crate) async fn create_room(hub: &HubInner, req: &Request, ip: IpAddr) -> Result<Response> {
    hub.auth.check_admin(auth::bearer(&req.head), ip)?;
    let body: CreateRoomBody = parse_json(&req.body)?;
    let name = body
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or(ApiError::bad_request(msg::NAME_REQUIRED))?;
    check_len("name", &name, MAX_ROOM_NAME)?;
    let routing = body
        .routing
        .map(|r| r.parse::<crate::types::Routing>())
        .transpose()
        .map_err(ApiError::bad_request)?;
    let password_hash = match body.password {
        None => None,
        Some(p) if p.is_empty() => {
            return Err(ApiError::bad_request(
                "password must not be empty (leave it out for an open room)",
            ));
        }
        Some(p) if p.len() > auth::MAX_PASSWORD => {
            return Err(ApiError::bad_request(format!(
                "password is too long (at most {} bytes)",
                auth::MAX_PASSWORD
            )));
        }
        Some(p) => Some(hub.auth.hash(p, ip).await?),
    };
    let host_token = crate::hub::rooms::ids::secret()?;
    let secrets = RoomSecrets::new(password_hash, Some(auth::token_hash(&host_token)));
    // The admin is not bounded per address; everyone else is.
    let creator = (!hub.auth.is_admin(auth::bearer(&req.head))).then_some(ip);
    let room = hub
        .state
        .create_room(name, routing, secrets, creator)
        .await?;
    tracing::info!(code = %room.info.code, name = %room.info.name, protected = room.info.password_protected, "room created");
    Ok(json(
        201,
        &json!({ "room": room.info, "hostId": room.info.host_id, "hostToken": host_token }),
    ))
}

/// `DELETE /rooms/:code`: for the room's host (`Authorization: Bearer <hostToken>`) or the hub
/// admin.
pub(crate) async fn delete_room(
    hub: &HubInner,
    room: Arc<Room>,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    hub.auth
        .check_host(&room.secrets, auth::bearer(&req.head), ip)?;
    let room = hub.state.delete_room(room).await?;
    for p in room.participants() {
        hub.tunnels.drop_participant(&room.info.code, &p.id);
        hub.metrics.forget_participant(&p.id);
    }
    tracing::info!(code = %room.info.code, "room deleted");
    Ok(json(200, &json!({ "success": true })))
}

/// `GET /metrics`: Prometheus text.
pub(crate) fn metrics(hub: &HubInner) -> Response {
    let open = hub
        .config
        .server
        .stats
        .open
        .load(std::sync::atomic::Ordering::Relaxed);
    Response::new(200)
        .header(
            "Content-Type",
            Bytes::from_static(b"text/plain; version=0.0.4; charset=utf-8"),
        )
        .body(Body::Full(Bytes::from(
            hub.metrics.render(&hub.state, open),
        )))
}

pub(crate) fn list_rooms(hub: &HubInner) -> Response {
    json(200, &json!({ "rooms": hub.state.list_rooms() }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinBody {
    id: Option<String>,
    nickname: Option<String>,
    /// The primary model (optional when `models` lists some: then its first).
    model: Option<String>,
    /// Every model it serves: names, or `{name, aliases, loaded}`.
    models: Option<Vec<ModelEntry>>,
    /// The APIs its server speaks besides OpenAI's.
    protocols: Option<Vec<Protocol>>,
    /// Requests its server runs at once.
    slots: Option<u32>,
    endpoint: Option<String>,
    specs: Option<MachineSpecs>,
    config: Option<GenerationConfig>,
    /// Checked before the handler runs (see `authorize`); accepted here so it is not refused.
    #[serde(rename = "password")]
    _password: Option<String>,
    /// Serve through reverse tunnels instead of being connected to.
    tunnel: Option<bool>,
    /// Re-joining an id that is online: the secret the earlier join answered with.
    participant_secret: Option<String>,
}

/// One model in a join or update: a name, or the whole entry.
#[derive(Deserialize)]
#[serde(untagged)]
enum ModelEntry {
    Name(String),
    Full(ModelInfo),
}

fn model_list(entries: Vec<ModelEntry>) -> Vec<ModelInfo> {
    entries
        .into_iter()
        .map(|e| match e {
            ModelEntry::Name(name) => ModelInfo::named(name),
            ModelEntry::Full(m) => m,
        })
        .collect()
}

/// The protocols a participant says it speaks besides OpenAI's, each once, known ones only
/// (a newer agent's unknown ones are ignored).
fn protocol_set(list: Option<Vec<Protocol>>) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = Vec::new();
    for p in list.unwrap_or_default() {
        if !matches!(p, Protocol::OpenAi | Protocol::Other) && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The answer's part about models left out, when some were.
fn add_dropped(answer: &mut serde_json::Value, dropped: &[Dropped]) {
    if !dropped.is_empty() {
        answer["dropped"] = json!(dropped);
    }
}

/// The header a participant proves it owns its id with (leave, re-join); the body field
/// `participantSecret` works too.
pub(crate) const PARTICIPANT_SECRET_HEADER: &str = "gambiarra-participant-secret";

/// The participant secret a request presents: the header, else the body's field.
fn presented_secret<'a>(
    head: &'a crate::http::RequestHead,
    field: Option<&'a str>,
) -> Option<&'a [u8]> {
    head.header(PARTICIPANT_SECRET_HEADER)
        .map(<[u8]>::trim_ascii)
        .or(field.map(str::as_bytes))
}

/// Ids a participant cannot take: they are what requests use to mean "any participant" or
/// "by model", and a participant holding one would receive those requests.
fn reserved_id(id: &str) -> bool {
    id == "*"
        || id.eq_ignore_ascii_case("any")
        || id
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("model:"))
}

fn validate_specs(specs: &MachineSpecs) -> Result<()> {
    for (name, v) in [("specs.gpu", &specs.gpu), ("specs.cpu", &specs.cpu)] {
        if let Some(v) = v {
            check_len(name, v, MAX_SPEC_TEXT)?;
        }
    }
    for (name, v) in [("specs.vram", &specs.vram), ("specs.ram", &specs.ram)] {
        if v.as_ref().and_then(|n| n.as_f64()).is_some_and(|x| x < 0.0) {
            return Err(ApiError::bad_request(format!(
                "{name} must not be negative"
            )));
        }
    }
    Ok(())
}

fn validate_config(config: &GenerationConfig) -> Result<()> {
    config.validate().map_err(ApiError::bad_request)?;
    if let Some(stop) = &config.stop {
        if stop.len() > MAX_STOP_SEQUENCES {
            return Err(ApiError::bad_request(format!(
                "config.stop has more than {MAX_STOP_SEQUENCES} sequences"
            )));
        }
        if stop.iter().any(|s| s.chars().count() > MAX_STOP_LEN) {
            return Err(ApiError::bad_request(format!(
                "config.stop sequences are at most {MAX_STOP_LEN} characters"
            )));
        }
    }
    Ok(())
}

pub(crate) fn join(
    hub: &HubInner,
    room: &Arc<Room>,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    let body: JoinBody = parse_json(&req.body)?;
    let nonempty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let list = body.models.map(model_list).unwrap_or_default();
    let model = nonempty(body.model);
    let (Some(id), Some(nickname), Some(endpoint), true) = (
        nonempty(body.id),
        nonempty(body.nickname),
        nonempty(body.endpoint),
        model.is_some() || !list.is_empty(),
    ) else {
        return Err(ApiError::bad_request(msg::MISSING_JOIN_FIELDS));
    };
    check_len("id", &id, MAX_PARTICIPANT_ID)?;
    if reserved_id(&id) {
        return Err(ApiError::bad_request(format!(
            "id {id:?} is reserved: \"*\", \"any\" and \"model:…\" name what a request asks for"
        )));
    }
    check_len("nickname", &nickname, MAX_NICKNAME)?;
    if let Some(model) = &model {
        check_len("model", model, MAX_MODEL)?;
    }
    let parsed = url::parse(&endpoint)
        .map_err(|e| ApiError::bad_request(format!("endpoint must be an http(s) URL: {e}")))?;
    let tunnel = body.tunnel.unwrap_or(false);
    // Only a participant on the hub's own machine may point the hub at that machine — and not
    // a web page in a browser there (it sends `Origin`): any site could otherwise register
    // the machine's local services and read them through the room.
    let on_this_machine = crate::http::url::canonical(ip).is_loopback()
        || crate::hub::guard::endpoints::is_own_address(ip);
    let local_ok = on_this_machine && req.head.header("origin").is_none();
    if !tunnel {
        let host = crate::http::url::host_of(parsed.host);
        hub.config
            .endpoint_rules
            .check_host(&host, local_ok)
            .map_err(|why| ApiError::bad_request(format!("endpoint not allowed: {why}")))?;
    }
    let specs = body.specs.unwrap_or_default();
    validate_specs(&specs)?;
    let config = body.config.unwrap_or_default();
    validate_config(&config)?;
    check_slots(body.slots)?;
    // The participant secret is made here and returned only in this answer; a re-join gets a
    // fresh one, so a secret that leaked stops working. Tunnels authenticate with it too.
    let secret = crate::hub::rooms::ids::secret()?;
    let presented = presented_secret(&req.head, body.participant_secret.as_deref());
    let (participant, dropped) = hub.state.join(
        room,
        ParticipantInfo {
            id,
            nickname,
            // Set by the state, from the models it keeps.
            model: String::new(),
            models: Vec::new(),
            protocols: protocol_set(body.protocols),
            slots: body.slots,
            endpoint,
            config,
            specs,
            status: ParticipantStatus::Online,
            in_flight: 0,
            joined_at: 0,
            last_seen: 0,
        },
        (model, list),
        auth::token_hash(&secret),
        (tunnel, local_ok),
        presented,
    )?;
    // A re-join replaces the participant: tunnels parked under the old registration go.
    hub.tunnels
        .drop_participant(&room.info.code, &participant.id);
    tracing::info!(room = %room.info.code, id = %participant.id, model = %participant.model, models = participant.models.len(), "participant joined");
    let mut answer = json!({
        "participant": participant,
        "roomId": room.info.id,
        "participantSecret": secret,
    });
    add_dropped(&mut answer, &dropped);
    if tunnel {
        answer["tunnelSecret"] = json!(secret);
    }
    Ok(json(201, &answer))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaveBody {
    participant_secret: Option<String>,
}

/// The header the room's host (or the hub admin) removes a participant with.
pub(crate) const HOST_TOKEN_HEADER: &str = "gambiarra-host-token";

/// `DELETE /rooms/:code/leave/:id`: with the participant's secret (header or body), or the
/// room's host token / the admin token in `Gambiarra-Host-Token` (removing someone).
pub(crate) fn leave(
    hub: &HubInner,
    room: &Arc<Room>,
    id: &str,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    // The body is only read when the header is absent (a DELETE usually has none).
    let field = match req.head.header(PARTICIPANT_SECRET_HEADER) {
        Some(_) => None,
        None => parse_json::<LeaveBody>(&req.body)?.participant_secret,
    };
    let presented = presented_secret(&req.head, field.as_deref());
    let host = req.head.header(HOST_TOKEN_HEADER).map(<[u8]>::trim_ascii);
    let by_host = match host {
        Some(token) if presented.is_none() => {
            hub.auth.check_host(&room.secrets, Some(token), ip)?;
            true
        }
        _ => false,
    };
    hub.state.leave(room, id, presented, by_host)?;
    hub.tunnels.drop_participant(&room.info.code, id);
    hub.metrics.forget_participant(id);
    tracing::info!(room = %room.info.code, id, "participant left");
    Ok(json(200, &json!({ "success": true })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthBody {
    id: Option<String>,
    participant_secret: Option<String>,
}

/// `POST /rooms/:code/health`: a sign of life. Our agent sends its secret (header or body),
/// after which this participant's checks must carry it; the seed's agent sends none.
pub(crate) fn health_check(
    hub: &HubInner,
    room: &Arc<Room>,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    let body: HealthBody = parse_json(&req.body)?;
    let id = body
        .id
        .filter(|s| !s.is_empty())
        .ok_or(ApiError::bad_request(msg::PARTICIPANT_ID_REQUIRED))?;
    let presented = presented_secret(&req.head, body.participant_secret.as_deref());
    if presented.is_some() {
        hub.auth.check_not_blocked(ip)?;
    }
    hub.state.health(room, &id, presented).inspect_err(|e| {
        if matches!(e, crate::hub::rooms::StateError::NotOwner(_)) {
            hub.auth.failed(ip);
        }
    })?;
    Ok(json(200, &json!({ "success": true })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    nickname: Option<String>,
    specs: Option<MachineSpecs>,
    config: Option<GenerationConfig>,
    model: Option<String>,
    models: Option<Vec<ModelEntry>>,
    protocols: Option<Vec<Protocol>>,
    slots: Option<u32>,
    participant_secret: Option<String>,
}

/// Most parallel slots a participant may declare.
pub(crate) const MAX_SLOTS: u32 = 1024;

/// A participant's declared slots, within 1..=[`MAX_SLOTS`].
fn check_slots(slots: Option<u32>) -> Result<()> {
    match slots {
        Some(n) if n == 0 || n > MAX_SLOTS => Err(ApiError::bad_request(format!(
            "slots must be between 1 and {MAX_SLOTS}"
        ))),
        _ => Ok(()),
    }
}

/// `PATCH /rooms/:code/participants/:id`: a participant changes its own entry (its models,
/// nickname, specs or config) with its secret; `participant:updated` announces it. The id,
/// endpoint and way of serving stay: those take a re-join.
pub(crate) fn update(
    hub: &HubInner,
    room: &Arc<Room>,
    id: &str,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    let body: UpdateBody = parse_json(&req.body)?;
    let presented = presented_secret(&req.head, body.participant_secret.as_deref());
    if presented.is_none() {
        return Err(ApiError::new(
            401,
            "Updating a participant needs its participantSecret",
        ));
    }
    hub.auth.check_not_blocked(ip)?;
    check_slots(body.slots)?;
    if let Some(nickname) = &body.nickname {
        if nickname.trim().is_empty() {
            return Err(ApiError::bad_request("nickname must not be empty"));
        }
        check_len("nickname", nickname, MAX_NICKNAME)?;
    }
    if let Some(model) = &body.model {
        models::check_name(model).map_err(|why| ApiError::bad_request(format!("model: {why}")))?;
    }
    if let Some(specs) = &body.specs {
        validate_specs(specs)?;
    }
    if let Some(config) = &body.config {
        validate_config(config)?;
    }
    let change = crate::hub::rooms::state::Update {
        nickname: body.nickname,
        specs: body.specs,
        config: body.config,
        model: body.model,
        models: body.models.map(model_list),
        protocols: body.protocols.map(|p| protocol_set(Some(p))),
        slots: body.slots,
    };
    let (participant, dropped) =
        hub.state
            .update(room, id, presented, change)
            .inspect_err(|e| {
                if matches!(e, crate::hub::rooms::StateError::NotOwner(_)) {
                    hub.auth.failed(ip);
                }
            })?;
    tracing::debug!(room = %room.info.code, id, models = participant.models.len(), "participant updated");
    let mut answer = json!({ "participant": participant });
    add_dropped(&mut answer, &dropped);
    Ok(json(200, &answer))
}

/// `GET /rooms/:code/participants`: each with its status and requests in flight, the
/// requests waiting in the room's queue, and the id of the last event published at that moment
/// (`eventId`), which a client that follows the event stream too uses to apply only the events
/// after it.
pub(crate) fn participants(room: &Room) -> Result<Response> {
    let (participants, queued, event_id) = room.live();
    Ok(json(
        200,
        &json!({ "participants": participants, "queued": queued, "eventId": event_id }),
    ))
}

/// `GET /rooms/:code/v1/models`, OpenAI's model list: first each model the room serves once
/// (its id a name to send; `gambiarra.participants` counts who serves it), then each
/// participant that can take a request (its id the participant's, as the seed lists them).
pub(crate) fn openai_models(room: &Room, req: &Request) -> Result<Response> {
    let participants = room.participants();
    // Anthropic's SDKs list models at the same path, and say who they are.
    if req.head.header("anthropic-version").is_some() {
        let data: Vec<_> = models::catalogue(&participants)
            .into_iter()
            .filter(|m| m.online > 0)
            .map(|m| {
                json!({
                    "type": "model", "id": m.id, "display_name": m.id,
                    "created_at": crate::hub::translate::ollama::rfc3339(m.created, 0),
                })
            })
            .collect();
        let first = data.first().map(|m| m["id"].clone());
        let last = data.last().map(|m| m["id"].clone());
        return Ok(json(
            200,
            &json!({ "data": data, "has_more": false, "first_id": first, "last_id": last }),
        ));
    }
    let mut data: Vec<_> = models::catalogue(&participants)
        .into_iter()
        .filter(|m| m.online > 0)
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": m.created,
                "owned_by": "gambiarra",
                "gambiarra": {
                    "names": m.names,
                    "participants": { "online": m.online, "busy": m.busy, "loaded": m.loaded },
                },
            })
        })
        .collect();
    data.extend(
        participants
            .into_iter()
            .filter(|p| p.status != ParticipantStatus::Offline)
            .map(|p| {
                // Exactly the seed's entry (its clients compare it whole): the participant's
                // models are in its listing and in the catalogue entries above.
                json!({
                    "id": p.id,
                    "object": "model",
                    "created": p.joined_at / 1000,
                    "owned_by": p.nickname,
                    "gambiarra": { "nickname": p.nickname, "model": p.model, "endpoint": p.endpoint },
                })
            }),
    );
    Ok(json(200, &json!({ "object": "list", "data": data })))
}

/// The Ollama version `/api/version` reports: the API level the translation follows (clients
/// compare it to decide what they may ask).
pub(crate) const OLLAMA_API_VERSION: &str = "0.9.0";

/// Ollama's catalogue routes on a room: `/api/tags` (the room's models served by a participant
/// not offline), `/api/ps` (those a participant has loaded), `/api/version`, `/api/show`.
pub(crate) fn ollama_catalogue(
    room: &Room,
    op: crate::hub::router::OllamaRoute,
    req: &Request,
) -> Result<Response> {
    use crate::hub::router::OllamaRoute;
    use crate::hub::translate::ollama::rfc3339;
    let details = json!({
        "parent_model": "", "format": "", "family": "", "families": null,
        "parameter_size": "", "quantization_level": "",
    });
    let models = || {
        models::catalogue(&room.participants())
            .into_iter()
            .filter(|m| m.online > 0)
    };
    let body = match op {
        OllamaRoute::Version => json!({ "version": OLLAMA_API_VERSION }),
        OllamaRoute::Tags => {
            let list: Vec<_> = models()
                .map(|m| {
                    json!({
                        "name": m.id, "model": m.id, "modified_at": rfc3339(m.created, 0),
                        "size": 0, "digest": "", "details": details,
                    })
                })
                .collect();
            json!({ "models": list })
        }
        OllamaRoute::Ps => {
            // Loaded models stay so for Ollama's default keep-alive (5 minutes) after their
            // last use; the hub does not know when that was, so it says from now.
            let expires = rfc3339(now_ms() / 1000 + 300, 0);
            let list: Vec<_> = models()
                .filter(|m| m.loaded > 0)
                .map(|m| {
                    json!({
                        "name": m.id, "model": m.id, "size": 0, "digest": "",
                        "details": details, "expires_at": expires, "size_vram": 0,
                    })
                })
                .collect();
            json!({ "models": list })
        }
        OllamaRoute::Show => {
            #[derive(Deserialize)]
            struct Show {
                model: Option<String>,
                name: Option<String>,
            }
            let asked: Show = parse_json(&req.body)?;
            let Some(name) = asked.model.or(asked.name).filter(|n| !n.is_empty()) else {
                return Err(ApiError::bad_request("model is required"));
            };
            let key = crate::types::model_key(&name);
            // A catalogue entry is every spelling of one key.
            let Some(m) = models().find(|m| crate::types::model_key(&m.id) == key) else {
                return Err(ApiError::not_found(format!("model '{name}' not found")));
            };
            json!({
                "modelfile": "", "parameters": "", "template": "", "details": details,
                "model_info": {}, "capabilities": ["completion"],
                "modified_at": rfc3339(m.created, 0),
            })
        }
        OllamaRoute::Run(_) => return Err(ApiError::not_found(msg::NOT_FOUND)),
    };
    Ok(json(200, &body))
}

/// `GET /rooms/:code/models`: the room's catalogue with each model's participants (offline
/// ones too, and models only they serve).
pub(crate) fn catalogue(room: &Room) -> Result<Response> {
    let models = models::catalogue(&room.participants());
    Ok(json(200, &json!({ "models": models })))
}

/// Where a stream starts: after the `Last-Event-ID` a reconnecting client sent (header, or
/// `lastEventId` in the query for EventSource polyfills; one that is not a number reads as 0:
/// unknown, so it gets `resync`); else with every event the room keeps when it asks for
/// `history=1` (a page's first connection: its recent past); else with the next event.
fn since(req: &Request) -> Since {
    let last = req
        .head
        .header_str("last-event-id")
        .or_else(|| req.head.query_param("lastEventId"));
    match last {
        Some(raw) => Since::After(raw.trim().parse().unwrap_or(0)),
        None if req.head.query_param("history") == Some("1") => Since::Kept,
        None => Since::Now,
    }
}

/// `GET /rooms/:code/events`: the SSE stream.
pub(crate) fn events(hub: &HubInner, room: Arc<Room>, req: &Request) -> Result<Response> {
    let (sub, slot) = hub.state.subscribe(&room, since(req))?;
    let client_id = crate::hub::rooms::ids::uuid_v4()?;
    let connected = encode_event(
        None,
        Kind::Connected.name(),
        &serde_json::to_vec(&event::Connected {
            client_id: client_id.into(),
        })
        .unwrap_or_default(),
    );
    let key = sub.key;
    let unsubscribe = {
        let room = room.clone();
        move || {
            room.lock().events.unsubscribe(key);
            drop(slot);
        }
    };
    let stream = SseStream::new(connected, sub, hub.config.sse_keepalive, unsubscribe);
    Ok(Response::new(200)
        .header("Content-Type", Bytes::from_static(b"text/event-stream"))
        .header("Cache-Control", Bytes::from_static(b"no-cache"))
        .header("X-Accel-Buffering", Bytes::from_static(b"no"))
        .body(Body::Stream(Box::new(stream))))
}

/// `GET /rooms/:code/tunnel/:id` with `Upgrade: gambiarra-tunnel`: authenticate the
/// participant's tunnel secret, answer 101, park the socket.
pub(crate) fn tunnel(
    hub: &Arc<HubInner>,
    room: Arc<Room>,
    id: &str,
    req: &Request,
    ip: IpAddr,
) -> Result<Response> {
    use crate::hub::proxy::tunnel::UPGRADE_TOKEN;
    let offered = req
        .head
        .header(crate::hub::proxy::tunnel::SECRET_HEADER)
        .map(<[u8]>::trim_ascii);
    hub.auth.check_not_blocked(ip)?;
    if !hub.state.tunnel_allowed(&room, id, offered)? {
        hub.auth.failed(ip);
        return Err(ApiError::new(401, "Invalid tunnel secret"));
    }
    let upgrading = req
        .head
        .header("connection")
        .is_some_and(|v| crate::http::head::has_token(v, "upgrade"))
        && req
            .head
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_TOKEN.as_bytes()));
    if !upgrading {
        return Err(ApiError::new(
            426,
            format!("Expected Connection: Upgrade and Upgrade: {UPGRADE_TOKEN}"),
        ));
    }
    if let Err(why) = hub.tunnels.has_room(&room.info.code, id) {
        let mut e = ApiError::unavailable(format!("No room for another tunnel ({why:?})"));
        e.retry_after = Some(5);
        return Err(e);
    }
    let hub = hub.clone();
    let (code, id) = (room.info.code.clone(), id.to_string());
    Ok(Response::new(101)
        .header("Connection", Bytes::from_static(b"Upgrade"))
        .header("Upgrade", Bytes::from_static(UPGRADE_TOKEN.as_bytes()))
        .body(Body::Upgrade(Box::new(move |up| {
            match hub.tunnels.park(&code, &id, up) {
                Ok(()) => hub.state.touch(&room, &id),
                Err(why) => tracing::debug!(room = %code, id, ?why, "tunnel not parked"),
            }
        }))))
}
