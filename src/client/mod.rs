//! The Rust SDK: typed calls to a hub, on the project's own HTTP client (plain TCP or, for
//! `https://` hubs, the same rustls connector the proxy uses).
//!
//! ```no_run
//! # async fn demo() -> Result<(), gambiarra::client::ClientError> {
//! use gambiarra::client::HubClient;
//! let hub = HubClient::new("http://localhost:3000")?;
//! let created = hub.create_room("Lab", None).await?;
//! let code = created.room.code;
//! println!("OpenAI base URL: {}", hub.openai_base_url(&code));
//! for room in hub.list_rooms().await? {
//!     println!("{} {} ({} participants)", room.code, room.name, room.participant_count);
//! }
//! # Ok(()) }
//! ```

pub mod agent;
pub mod backend;
pub mod events;
pub mod specs;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::client::{ReadError, read_body, read_head};
use crate::http::upstream::Connector;
/// A participant's endpoint, normalised: what a [`tunnel::TunnelSpec`] serves.
pub use crate::http::upstream::Target;
use crate::types::{
    GenerationConfig, MachineSpecs, ModelInfo, ParticipantInfo, Protocol, RoomInfo, RoomSummary,
};

/// Time allowed for one call to a hub (connect, request, whole answer).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer a call reads.
pub const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The hub answered with an error status; `message` is its `error` text.
    Hub { status: u16, message: String },
    /// The hub could not be reached, or the connection failed.
    Unreachable(String),
    /// The hub's answer was not what the protocol says.
    Protocol(String),
    /// The hub URL is not usable.
    BadUrl(String),
}

impl ClientError {
    /// The hub's status code, for `Hub` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Hub { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Hub { status, message } => write!(f, "hub answered {status}: {message}"),
            ClientError::Unreachable(m) => write!(f, "hub unreachable: {m}"),
            ClientError::Protocol(m) => write!(f, "unexpected answer from hub: {m}"),
            ClientError::BadUrl(m) => write!(f, "bad hub URL: {m}"),
        }
    }
}

impl std::error::Error for ClientError {}

type Result<T> = std::result::Result<T, ClientError>;

/// `POST /rooms` answer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedRoom {
    pub room: RoomInfo,
    pub host_id: String,
    /// The secret that deletes the room ([`HubClient::delete_room`]); sent only in this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_token: Option<String>,
}

/// What a participant registers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinRequest {
    pub id: String,
    pub nickname: String,
    /// The primary model (the first of `models`, when there are several).
    pub model: String,
    /// Every model it serves, with aliases and whether each is loaded (empty: only `model`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    /// The APIs its server speaks besides OpenAI's (requests in those are passed through
    /// instead of translated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub protocols: Vec<Protocol>,
    /// Requests its server runs at once (none: the hub's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    pub endpoint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specs: Option<MachineSpecs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<GenerationConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Serve through reverse tunnels (the hub never connects to `endpoint`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tunnel: bool,
    /// Re-joining an id that is still online: the secret the previous join answered with
    /// (without it the hub refuses with 403, so nobody can take another's id).
    #[serde(rename = "participantSecret", skip_serializing_if = "Option::is_none")]
    pub participant_secret: Option<String>,
}

/// `POST /rooms/:code/join` answer.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Joined {
    pub participant: ParticipantInfo,
    pub room_id: String,
    /// For a tunnelled participant: what its tunnels authenticate with (only here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_secret: Option<String>,
    /// Proves this registration owns its id: needed to leave, and to re-join while online.
    /// Only in this answer (a hub older than this field sends none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_secret: Option<String>,
    /// Models the hub left out of the registration (over its bounds), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedModel>,
}

/// A model a hub did not register, and why (`alias=model` for an alias).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct DroppedModel {
    pub name: String,
    pub reason: String,
}

/// What a participant changes of its entry ([`HubClient::update_participant`]); `None`
/// fields stay as they are.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ParticipantUpdate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
    /// The primary model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<ModelInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocols: Option<Vec<Protocol>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specs: Option<MachineSpecs>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<GenerationConfig>,
}

/// `PATCH /rooms/:code/participants/:id` answer.
#[derive(Clone, Debug, Deserialize)]
pub struct Updated {
    pub participant: ParticipantInfo,
    #[serde(default)]
    pub dropped: Vec<DroppedModel>,
}

#[derive(Deserialize)]
struct Rooms {
    rooms: Vec<RoomSummary>,
}

#[derive(Deserialize)]
struct Participants {
    participants: Vec<ParticipantInfo>,
}

/// The `model` string that routes to any online participant.
pub fn any() -> &'static str {
    "*"
}

/// The `model` string that routes to one participant.
pub fn participant(id: &str) -> String {
    id.to_string()
}

/// The `model` string that routes to a participant serving `name`.
pub fn model(name: &str) -> String {
    format!("model:{name}")
}

/// A hub, reachable at a base URL.
#[derive(Clone)]
pub struct HubClient {
    base: String,
    target: Arc<Target>,
    connector: Arc<Connector>,
    /// Sent as `Authorization: Bearer` on a protected room's routes.
    password: Option<Arc<str>>,
    /// Sent as `Authorization: Bearer` to create rooms (and delete them without a host token).
    admin_token: Option<Arc<str>>,
}

impl HubClient {
    /// A client for the hub at `url` (`http://` or `https://`).
    pub fn new(url: &str) -> Result<HubClient> {
        Self::with_roots(url, &[])
    }

    /// As `new`, trusting extra CA certificates for an `https://` hub (a self-signed hub).
    pub fn with_roots(
        url: &str,
        roots: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<HubClient> {
        let base = url.trim_end_matches('/').to_string();
        let target = Target::from_endpoint(&base).map_err(ClientError::BadUrl)?;
        Ok(HubClient {
            base,
            target: Arc::new(target),
            connector: Arc::new(Connector::new(CALL_TIMEOUT, 0, Duration::ZERO, roots)),
            password: None,
            admin_token: None,
        })
    }

    /// Use `password` for a protected room: it goes as `Authorization: Bearer` on every call
    /// about a room (join, leave, health checks, participants, events, tunnels).
    pub fn with_password(mut self, password: Option<&str>) -> HubClient {
        self.password = password.filter(|p| !p.is_empty()).map(Arc::from);
        self
    }

    /// Use the hub's admin token to create rooms (and delete any room).
    pub fn with_admin_token(mut self, token: Option<&str>) -> HubClient {
        self.admin_token = token.filter(|t| !t.is_empty()).map(Arc::from);
        self
    }

    /// The room password this client sends, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// `Authorization: Bearer …\r\n` for the room password, or nothing.
    pub(crate) fn password_header(&self) -> String {
        bearer_line(self.password.as_deref())
    }

    /// The hub's base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The OpenAI base URL of a room: `http://HUB/rooms/CODE/v1`.
    pub fn openai_base_url(&self, code: &str) -> String {
        format!("{}/rooms/{}/v1", self.base, code)
    }

    /// Create a room.
    pub async fn create_room(&self, name: &str, password: Option<&str>) -> Result<CreatedRoom> {
        let raw = self.create_room_raw(name, password).await?;
        serde_json::from_str(&raw).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// [`HubClient::create_room`], answering with the hub's JSON exactly as it was sent
    /// (whatever fields a hub of another version adds or leaves out).
    pub async fn create_room_raw(&self, name: &str, password: Option<&str>) -> Result<String> {
        self.create_room_routed_raw(name, password, None).await
    }

    /// [`HubClient::create_room`] choosing how the room routes requests (`None`: the hub's
    /// default).
    pub async fn create_room_routed(
        &self,
        name: &str,
        password: Option<&str>,
        routing: Option<crate::types::Routing>,
    ) -> Result<CreatedRoom> {
        let raw = self.create_room_routed_raw(name, password, routing).await?;
        serde_json::from_str(&raw).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// [`HubClient::create_room_routed`], answering with the hub's JSON exactly as it was sent.
    pub async fn create_room_routed_raw(
        &self,
        name: &str,
        password: Option<&str>,
        routing: Option<crate::types::Routing>,
    ) -> Result<String> {
        #[derive(Serialize)]
        struct Body<'a> {
            name: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            password: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            routing: Option<crate::types::Routing>,
        }
        let body = serde_json::to_vec(&Body {
            name,
            password,
            routing,
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (status, answer) = self
            .timed_exchange("POST", "/rooms", &body, self.admin_token.as_deref(), None)
            .await?;
        decode::<serde::de::IgnoredAny>(status, &answer)?;
        String::from_utf8(answer).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Delete a room, with its host token (from [`CreatedRoom::host_token`]) or, when `None`,
    /// the client's admin token.
    pub async fn delete_room(&self, code: &str, host_token: Option<&str>) -> Result<()> {
        let token = host_token.or(self.admin_token.as_deref());
        self.call::<serde_json::Value, ()>("DELETE", &format!("/rooms/{}", enc(code)), None, token)
            .await
            .map(|_| ())
    }

    /// Every room on the hub, oldest first.
    pub async fn list_rooms(&self) -> Result<Vec<RoomSummary>> {
        Ok(self
            .call::<Rooms, ()>("GET", "/rooms", None, None)
            .await?
            .rooms)
    }

    /// Register (or re-register) a participant.
    pub async fn join(&self, code: &str, request: &JoinRequest) -> Result<Joined> {
        let pw = request.password.as_deref().or(self.password.as_deref());
        self.call(
            "POST",
            &format!("/rooms/{}/join", enc(code)),
            Some(request),
            pw,
        )
        .await
    }

    /// Remove a participant, proving ownership with the `participant_secret` its join
    /// answered with (`None` only for a hub that issued none).
    pub async fn leave(&self, code: &str, id: &str, secret: Option<&str>) -> Result<()> {
        let path = format!("/rooms/{}/leave/{}", enc(code), enc(id));
        let pw = self.password.as_deref();
        self.call_as::<serde_json::Value, ()>("DELETE", &path, None, pw, secret)
            .await
            .map(|_| ())
    }

    /// Change a participant's entry (its models, nickname, specs or config), proving
    /// ownership with its `participant_secret`. The hub announces `participant:updated`.
    pub async fn update_participant(
        &self,
        code: &str,
        id: &str,
        secret: &str,
        update: &ParticipantUpdate,
    ) -> Result<Updated> {
        let path = format!("/rooms/{}/participants/{}", enc(code), enc(id));
        let pw = self.password.as_deref();
        self.call_as("PATCH", &path, Some(update), pw, Some(secret))
            .await
    }

    /// A room's participants.
    pub async fn participants(&self, code: &str) -> Result<Vec<ParticipantInfo>> {
        Ok(self
            .call::<Participants, ()>(
                "GET",
                &format!("/rooms/{}/participants", enc(code)),
                None,
                self.password.as_deref(),
            )
            .await?
            .participants)
    }

    /// Report a participant alive, with the `participant_secret` of its join (then nobody
    /// else can keep it alive: the hub refuses checks without it from then on).
    pub async fn health_check(&self, code: &str, id: &str, secret: Option<&str>) -> Result<()> {
        #[derive(Serialize)]
        struct Body<'a> {
            id: &'a str,
        }
        let path = format!("/rooms/{}/health", enc(code));
        let pw = self.password.as_deref();
        self.call_as::<serde::de::IgnoredAny, _>("POST", &path, Some(&Body { id }), pw, secret)
            .await
            .map(|_| ())
    }

    /// `GET path` (below the URL's path), decoded as JSON; with the room password when set.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<T, ()>("GET", path, None, self.password.as_deref())
            .await
    }

    /// `POST path` with a JSON body, the answer decoded as JSON; with the room password when
    /// set.
    pub async fn post_json<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call("POST", path, Some(body), self.password.as_deref())
            .await
    }

    /// One request, one connection, the whole answer decoded as JSON.
    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        bearer: Option<&str>,
    ) -> Result<T> {
        self.call_as(method, path, body, bearer, None).await
    }

    /// [`HubClient::call`], also proving a participant's ownership with its secret.
    async fn call_as<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        bearer: Option<&str>,
        participant_secret: Option<&str>,
    ) -> Result<T> {
        let body = match body {
            Some(b) => serde_json::to_vec(b).map_err(|e| ClientError::Protocol(e.to_string()))?,
            None => Vec::new(),
        };
        let (status, answer) = self
            .timed_exchange(method, path, &body, bearer, participant_secret)
            .await?;
        decode(status, &answer)
    }

    /// [`HubClient::exchange`] within [`CALL_TIMEOUT`].
    async fn timed_exchange(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        bearer: Option<&str>,
        participant_secret: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        tokio::time::timeout(
            CALL_TIMEOUT,
            self.exchange(method, path, body, bearer, participant_secret),
        )
        .await
        .map_err(|_| ClientError::Unreachable("timed out".into()))?
    }
}

/// A hub answer: the JSON of a 2xx, else the hub's error message.
fn decode<T: DeserializeOwned>(status: u16, answer: &[u8]) -> Result<T> {
    if !(200..300).contains(&status) {
        let message = serde_json::from_slice::<serde_json::Value>(answer)
            .ok()
            .and_then(|v| match &v["error"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string),
                _ => None,
            })
            .unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned());
        return Err(ClientError::Hub { status, message });
    }
    serde_json::from_slice(answer).map_err(|e| ClientError::Protocol(e.to_string()))
}

impl HubClient {
    async fn exchange(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        bearer: Option<&str>,
        participant_secret: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let mut conn = self
            .connector
            .connect_fresh(&self.target)
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: gambiarra/{}\r\nAccept: application/json\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}{}Connection: close\r\n\r\n",
            self.target.base_path,
            self.target.authority,
            env!("CARGO_PKG_VERSION"),
            body.len(),
            bearer_line(bearer),
            header_line(
                crate::hub::api::PARTICIPANT_SECRET_HEADER,
                participant_secret
            ),
        );
        crate::http::write_all_vectored(&mut conn, &[head.as_bytes(), body])
            .await
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let mut buf = BytesMut::with_capacity(4096);
        let head = read_head(&mut conn, &mut buf)
            .await
            .map_err(|e| answer_error(e, "connection closed before an answer"))?;
        let mut answer = Vec::new();
        read_body(&mut conn, &mut buf, head.framing, MAX_ANSWER, |d| {
            answer.extend_from_slice(d)
        })
        .await
        .map_err(|e| answer_error(e, "answer cut short"))?;
        Ok((head.status, answer))
    }
}

/// A failed read of the hub's answer as the SDK reports it; `closed` says what an early close
/// means at that point.
fn answer_error(e: ReadError, closed: &str) -> ClientError {
    match e {
        ReadError::Io(e) => ClientError::Unreachable(e.to_string()),
        ReadError::Closed => ClientError::Protocol(closed.into()),
        other => ClientError::Protocol(other.to_string()),
    }
}

/// An `Authorization: Bearer` header line, or nothing. A credential with a line break would
/// forge headers; it is left out (the hub then answers 401).
fn bearer_line(token: Option<&str>) -> String {
    match token {
        Some(t) if !t.is_empty() && !t.contains(['\r', '\n']) => {
            format!("Authorization: Bearer {t}\r\n")
        }
        _ => String::new(),
    }
}

/// `name: value` as a header line, or nothing (left out, like a bearer, if it could forge
/// headers).
fn header_line(name: &str, value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() && !v.contains(['\r', '\n']) => format!("{name}: {v}\r\n"),
        _ => String::new(),
    }
}

/// Percent-encode a path segment (ids may hold any character).
fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_strings_and_encoding() {
        assert_eq!(any(), "*");
        assert_eq!(model("llama3"), "model:llama3");
        assert_eq!(participant("p-1"), "p-1");
        assert_eq!(enc("a b/c%"), "a%20b%2Fc%25");
        let c = HubClient::new("http://localhost:3000/").unwrap();
        assert_eq!(
            c.openai_base_url("ABC234"),
            "http://localhost:3000/rooms/ABC234/v1"
        );
        assert!(matches!(
            HubClient::new("ftp://x"),
            Err(ClientError::BadUrl(_))
        ));
    }
}
