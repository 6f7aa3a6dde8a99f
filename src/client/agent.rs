//! The participant agent behind `gambiarra join`: check the local model server, register with
//! the hub, keep the registration alive, and leave cleanly.
//!
//! Unlike the TypeScript agent, which exited on the first failed health check, this one rides
//! out network blips (retrying with backoff, up to the health interval) and re-joins by itself
//! when the hub no longer knows it (the hub restarted, or the participant was removed).

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Deserialize;

use super::tunnel::TunnelSpec;
use super::{ClientError, HubClient, JoinRequest};
use crate::http::upstream::Target;
use crate::types::ParticipantInfo;

/// First retry delay after a failed health check; doubles up to the health interval.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Time allowed for the leave call on shutdown.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the local model server cannot be used.
#[derive(Debug)]
pub enum ProbeError {
    /// Nothing answered at the endpoint.
    Unreachable { endpoint: String, detail: String },
    /// The server answered, but does not serve the model.
    UnknownModel {
        model: String,
        available: Vec<String>,
    },
    /// The server answered neither Ollama's nor OpenAI's model listing.
    NoListing { endpoint: String, detail: String },
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Unreachable { endpoint, detail } => write!(
                f,
                "nothing answers at {endpoint} ({detail}).\n  Is your model server running? For Ollama: `ollama serve`; for LM Studio: start its server (default http://localhost:1234).\n  Or point to it with --endpoint URL."
            ),
            ProbeError::UnknownModel { model, available } if available.is_empty() => {
                write!(
                    f,
                    "model {model:?} is not available: the server lists no models"
                )
            }
            ProbeError::UnknownModel { model, available } => write!(
                f,
                "model {model:?} is not available. The server has:\n{}",
                available
                    .iter()
                    .map(|m| format!("  - {m}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
            ProbeError::NoListing { endpoint, detail } => write!(
                f,
                "{endpoint} answered, but neither /api/tags (Ollama) nor /v1/models (OpenAI) listed models ({detail})"
            ),
        }
    }
}

impl std::error::Error for ProbeError {}

#[derive(Deserialize)]
struct OllamaTags {
    models: Vec<OllamaModel>,
}

#[derive(Deserialize)]
struct OllamaModel {
    name: String,
}

#[derive(Deserialize)]
struct OpenAiModels {
    data: Vec<OpenAiModel>,
}

#[derive(Deserialize)]
struct OpenAiModel {
    id: String,
}

/// Does `listed` name `wanted`? Ollama lists `llama3:latest` for `llama3`.
pub fn model_matches(listed: &str, wanted: &str) -> bool {
    listed == wanted
        || listed.strip_suffix(":latest") == Some(wanted)
        || wanted.strip_suffix(":latest") == Some(listed)
}

/// The models an OpenAI-compatible (or Ollama) server offers: Ollama's `/api/tags` first, then
/// `/v1/models`.
pub async fn list_models(endpoint: &str) -> Result<Vec<String>, ProbeError> {
    let server = HubClient::new(endpoint).map_err(|e| ProbeError::Unreachable {
        endpoint: endpoint.into(),
        detail: e.to_string(),
    })?;
    match server.get_json::<OllamaTags>("/api/tags").await {
        Ok(tags) => return Ok(tags.models.into_iter().map(|m| m.name).collect()),
        Err(ClientError::Unreachable(detail)) => {
            return Err(ProbeError::Unreachable {
                endpoint: endpoint.into(),
                detail,
            });
        }
        Err(_) => {}
    }
    server
        .get_json::<OpenAiModels>("/v1/models")
        .await
        .map(|m| m.data.into_iter().map(|m| m.id).collect())
        .map_err(|e| ProbeError::NoListing {
            endpoint: endpoint.into(),
            detail: e.to_string(),
        })
}

/// Check that `endpoint` serves `model`.
pub async fn probe(endpoint: &str, model: &str) -> Result<(), ProbeError> {
    let available = list_models(endpoint).await?;
    if available.iter().any(|m| model_matches(m, model)) {
        Ok(())
    } else {
        Err(ProbeError::UnknownModel {
            model: model.into(),
            available,
        })
    }
}

/// What the agent tells its user.
#[derive(Debug)]
pub enum AgentEvent {
    Joined(ParticipantInfo),
    /// Tunnels were asked for, but the hub's join answer has no tunnel secret (a hub older
    /// than tunnels): the agent serves directly, and the hub must be able to reach the
    /// endpoint.
    TunnelsUnsupported,
    /// The hub had forgotten the participant; it is registered again.
    Rejoined(ParticipantInfo),
    /// A health check failed; the next try is in `retry_in`.
    HealthFailed {
        error: String,
        retry_in: Duration,
    },
    /// Health checks go through again after failures.
    Recovered,
    /// Re-joining failed (e.g. the room is gone); it is tried again later.
    RejoinFailed {
        error: String,
        retry_in: Duration,
    },
    Left,
    LeaveFailed(String),
    /// The room's host deleted the room; the agent stops.
    RoomRemoved,
}

/// Register `request` in room `code`, keep it alive every `interval`, and leave when
/// `shutdown` resolves, or stop when the room is deleted. Fails only if the first join fails.
/// With `request.tunnel`, `tunnels` connections to the hub are kept open for the hub to send
/// requests through (`request.endpoint` is where they are spliced to).
pub async fn run(
    hub: &HubClient,
    code: &str,
    request: &JoinRequest,
    interval: Duration,
    tunnels: usize,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(AgentEvent),
) -> Result<(), ClientError> {
    let joined = hub.join(code, request).await?;
    let mut me = Registration {
        request: request.clone(),
        tunnel_secret: Arc::new(RwLock::new(
            joined.tunnel_secret.clone().unwrap_or_default(),
        )),
    };
    // What proves this registration owns its id: re-joins and the leave present it.
    me.request.participant_secret = joined.participant_secret.clone();
    if me.request.tunnel && joined.tunnel_secret.is_none() {
        // An older hub registered us as a direct participant: say so once, open no tunnels.
        me.request.tunnel = false;
        on_event(AgentEvent::TunnelsUnsupported);
    }
    let tunnels = Tunnels::start(hub, code, &me, tunnels)?;
    on_event(AgentEvent::Joined(joined.participant));
    let ended = keep_alive(hub, code, &mut me, interval, shutdown, &mut on_event).await;
    tunnels.stop().await;
    match ended {
        Ended::Removed => on_event(AgentEvent::RoomRemoved),
        Ended::Shutdown => on_event(leave(hub, code, &me).await),
    }
    Ok(())
}

/// This participant as the hub knows it: the join request (with the participant secret of the
/// current registration) and the tunnel secret the tunnels authenticate with.
struct Registration {
    request: JoinRequest,
    tunnel_secret: Arc<RwLock<String>>,
}

impl Registration {
    /// A re-join answered: its secrets replace the old ones.
    fn renew(&mut self, joined: super::Joined) -> ParticipantInfo {
        if let (Some(s), Ok(mut current)) = (joined.tunnel_secret, self.tunnel_secret.write()) {
            *current = s;
        }
        self.request.participant_secret = joined.participant_secret;
        joined.participant
    }
}

/// The reverse tunnels, when the participant serves through them.
struct Tunnels {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Tunnels {
    fn start(
        hub: &HubClient,
        code: &str,
        me: &Registration,
        count: usize,
    ) -> Result<Tunnels, ClientError> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut task = None;
        if me.request.tunnel {
            let local = Target::from_endpoint(&me.request.endpoint).map_err(ClientError::BadUrl)?;
            let spec = TunnelSpec {
                hub: hub.clone(),
                code: code.to_string(),
                id: me.request.id.clone(),
                secret: me.tunnel_secret.clone(),
                local: Arc::new(local),
            };
            task = Some(tokio::spawn(super::tunnel::run(spec, count, stopped)));
        }
        Ok(Tunnels { stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}

/// Why the health loop ended.
enum Ended {
    Shutdown,
    /// The room was deleted by its host.
    Removed,
}

/// What one health check (and the re-join it may lead to) came to.
enum Round {
    Healthy,
    Rejoined(Box<ParticipantInfo>),
    Removed,
    /// The check failed, or (`rejoin`) the hub did not know us and joining again failed.
    Failed {
        error: String,
        rejoin: bool,
    },
}

/// Check in every `interval` until `shutdown`; after a failure, retry sooner (from
/// [`RETRY_MIN`], doubling up to `interval`); re-join when the hub no longer knows us.
async fn keep_alive(
    hub: &HubClient,
    code: &str,
    me: &mut Registration,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
    on_event: &mut impl FnMut(AgentEvent),
) -> Ended {
    tokio::pin!(shutdown);
    // While failing: the delay before the next try.
    let mut retry: Option<Duration> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(retry.unwrap_or(interval)) => {}
            _ = &mut shutdown => return Ended::Shutdown,
        }
        match round(hub, code, me).await {
            Round::Healthy => {
                if retry.take().is_some() {
                    on_event(AgentEvent::Recovered);
                }
            }
            Round::Rejoined(participant) => {
                retry = None;
                on_event(AgentEvent::Rejoined(*participant));
            }
            Round::Removed => return Ended::Removed,
            Round::Failed { error, rejoin } => {
                let wait = match retry {
                    Some(wait) => backoff(wait, interval),
                    None if rejoin => backoff(interval, interval),
                    None => RETRY_MIN.min(interval),
                };
                retry = Some(wait);
                on_event(if rejoin {
                    AgentEvent::RejoinFailed {
                        error,
                        retry_in: wait,
                    }
                } else {
                    AgentEvent::HealthFailed {
                        error,
                        retry_in: wait,
                    }
                });
            }
        }
    }
}

async fn round(hub: &HubClient, code: &str, me: &mut Registration) -> Round {
    let request = &me.request;
    match hub
        .health_check(code, &request.id, request.participant_secret.as_deref())
        .await
    {
        Ok(()) => Round::Healthy,
        Err(ClientError::Hub { status: 410, .. }) => Round::Removed,
        // The hub does not know us (or our room): register again.
        Err(ClientError::Hub { status: 404, .. }) => match hub.join(code, request).await {
            Ok(joined) => Round::Rejoined(Box::new(me.renew(joined))),
            Err(ClientError::Hub { status: 410, .. }) => Round::Removed,
            Err(e) => Round::Failed {
                error: e.to_string(),
                rejoin: true,
            },
        },
        Err(e) => Round::Failed {
            error: e.to_string(),
            rejoin: false,
        },
    }
}

/// Leave the room, within [`LEAVE_TIMEOUT`].
async fn leave(hub: &HubClient, code: &str, me: &Registration) -> AgentEvent {
    let request = &me.request;
    match tokio::time::timeout(
        LEAVE_TIMEOUT,
        hub.leave(code, &request.id, request.participant_secret.as_deref()),
    )
    .await
    {
        Ok(Ok(())) => AgentEvent::Left,
        Ok(Err(e)) => AgentEvent::LeaveFailed(e.to_string()),
        Err(_) => AgentEvent::LeaveFailed("timed out".into()),
    }
}

/// The next retry delay: double, between `RETRY_MIN` and `interval`.
fn backoff(current: Duration, interval: Duration) -> Duration {
    (current * 2).clamp(RETRY_MIN.min(interval), interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_and_backoff() {
        assert!(model_matches("llama3:latest", "llama3"));
        assert!(model_matches("llama3", "llama3:latest"));
        assert!(model_matches("qwen2.5:7b", "qwen2.5:7b"));
        assert!(!model_matches("llama3:8b", "llama3"));
        let i = Duration::from_secs(10);
        assert_eq!(backoff(RETRY_MIN, i), Duration::from_secs(1));
        assert_eq!(backoff(Duration::from_secs(8), i), i);
    }
}
