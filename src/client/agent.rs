//! The participant agent behind `gambiarra join`: check the local model server, register with
//! the hub, keep the registration alive, and leave cleanly.
//!
//! Unlike the TypeScript agent, which exited on the first failed health check, this one rides
//! out network blips (retrying with backoff, up to the health interval) and re-joins by itself
//! when the hub no longer knows it (the hub restarted, or the participant was removed).
//!
//! With [`Reprobe`], it also asks its model server every so often which models it has and
//! which are loaded ([`backend`]), and updates its entry on the hub (with its
//! participant secret) when that changed: a model pulled, removed, loaded or unloaded.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::backend::{self, Flavor, Sharing};
use super::tunnel::TunnelSpec;
use super::{ClientError, DroppedModel, HubClient, JoinRequest, ParticipantUpdate};
use crate::http::upstream::Target;
use crate::types::{ModelInfo, ParticipantInfo};

/// First retry delay after a failed health check; doubles up to the health interval.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Time allowed for the leave call on shutdown.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time between two looks at the model server's models.
pub const REPROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Time allowed for one look at the model server's models.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Between health checks.
    pub interval: Duration,
    /// Tunnel connections kept open (with `JoinRequest::tunnel`).
    pub tunnels: usize,
    /// Keep the registered models in step with the server's (`None`: register them once).
    pub reprobe: Option<Reprobe>,
}

/// Looking again at the model server's models.
#[derive(Clone, Debug)]
pub struct Reprobe {
    pub every: Duration,
    /// What to share of what the server lists.
    pub sharing: Sharing,
    /// The kind of server the first look found (asked the same way again).
    pub flavor: Flavor,
}

pub use super::backend::{ProbeError, list_models, probe};

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
    /// The hub left these models out of the registration (over its bounds).
    Dropped(Vec<DroppedModel>),
    /// The registered models changed (the hub has the new list).
    ModelsChanged {
        added: Vec<String>,
        removed: Vec<String>,
        loaded: Vec<String>,
        unloaded: Vec<String>,
    },
    /// Models named to share that the server no longer lists (or lists again: empty).
    Missing(Vec<String>),
    /// The model server did not answer its listing; the registered models stay as they are.
    ProbeFailed(String),
    /// The model server answers its listing again.
    ProbeRecovered,
    /// The hub did not take the new model list; it is sent again at the next look.
    UpdateFailed(String),
}

/// Register `request` in room `code`, keep it alive every `options.interval`, and leave when
/// `shutdown` resolves, or stop when the room is deleted. Fails only if the first join fails.
/// With `request.tunnel`, `options.tunnels` connections to the hub are kept open for the hub
/// to send requests through (`request.endpoint` is where they are spliced to).
pub async fn run(
    hub: &HubClient,
    code: &str,
    request: &JoinRequest,
    options: &Options,
    shutdown: impl Future<Output = ()>,
    mut on_event: impl FnMut(AgentEvent),
) -> Result<(), ClientError> {
    let joined = hub.join(code, request).await?;
    let mut me = Registration {
        request: request.clone(),
        tunnel_secret: Arc::new(RwLock::new(
            joined.tunnel_secret.clone().unwrap_or_default(),
        )),
        unsent: false,
    };
    if !joined.dropped.is_empty() {
        on_event(AgentEvent::Dropped(joined.dropped.clone()));
    }
    // What proves this registration owns its id: re-joins and the leave present it.
    me.request.participant_secret = joined.participant_secret.clone();
    if me.request.tunnel && joined.tunnel_secret.is_none() {
        // An older hub registered us as a direct participant: say so once, open no tunnels.
        me.request.tunnel = false;
        on_event(AgentEvent::TunnelsUnsupported);
    }
    let tunnels = Tunnels::start(hub, code, &me, options.tunnels)?;
    on_event(AgentEvent::Joined(joined.participant));
    let ended = keep_alive(hub, code, &mut me, options, shutdown, &mut on_event).await;
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
    /// `request.models` changed but the hub has not taken them yet.
    unsent: bool,
}

impl Registration {
    /// A re-join answered: its secrets replace the old ones.
    fn renew(&mut self, joined: super::Joined) -> ParticipantInfo {
        if let (Some(s), Ok(mut current)) = (joined.tunnel_secret, self.tunnel_secret.write()) {
            *current = s;
        }
        self.request.participant_secret = joined.participant_secret;
        // The join carried the current models.
        self.unsent = false;
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
    options: &Options,
    shutdown: impl Future<Output = ()>,
    on_event: &mut impl FnMut(AgentEvent),
) -> Ended {
    tokio::pin!(shutdown);
    let interval = options.interval;
    let mut probing = options.reprobe.clone().map(Probing::new);
    // While failing: the delay before the next try.
    let mut retry: Option<Duration> = None;
    let mut next_check = tokio::time::Instant::now() + interval;
    loop {
        let next_probe = probing.as_ref().map(|p| p.next);
        tokio::select! {
            _ = tokio::time::sleep_until(next_check) => {}
            _ = sleep_until_some(next_probe) => {
                if let Some(p) = probing.as_mut() {
                    p.look(hub, code, me, on_event).await;
                }
                continue;
            }
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
        next_check = tokio::time::Instant::now() + retry.unwrap_or(interval);
    }
}

/// Sleep until `at`, or for ever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The re-probe's state between looks.
struct Probing {
    config: Reprobe,
    next: tokio::time::Instant,
    /// The last look failed (said once, until one succeeds).
    failing: bool,
    /// Named models the server did not list at the last look.
    missing: Vec<String>,
}

impl Probing {
    fn new(config: Reprobe) -> Probing {
        Probing {
            next: tokio::time::Instant::now() + config.every,
            config,
            failing: false,
            missing: Vec::new(),
        }
    }

    /// Look at the server's models; when what to share changed (or an earlier change did
    /// not reach the hub), update the hub. A participant the hub forgot re-joins at the next
    /// health check, with the new list.
    async fn look(
        &mut self,
        hub: &HubClient,
        code: &str,
        me: &mut Registration,
        on_event: &mut impl FnMut(AgentEvent),
    ) {
        self.next = tokio::time::Instant::now() + self.config.every;
        let endpoint = me.request.endpoint.clone();
        let flavor = self.config.flavor;
        let listing = tokio::time::timeout(PROBE_TIMEOUT, async {
            match backend::list_as(&endpoint, flavor).await {
                // The server may have been replaced by another kind: find out again.
                Err(backend::ProbeError::NoListing { .. }) => backend::list(&endpoint).await,
                other => other,
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(backend::ProbeError::Unreachable {
                endpoint: endpoint.clone(),
                detail: "timed out".into(),
            })
        });
        let listing = match listing {
            Ok(l) => l,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    on_event(AgentEvent::ProbeFailed(e.to_string()));
                }
                return;
            }
        };
        if std::mem::replace(&mut self.failing, false) {
            on_event(AgentEvent::ProbeRecovered);
        }
        self.config.flavor = listing.flavor;
        let protocols = backend::protocols(&endpoint, listing.flavor).await;
        if protocols != me.request.protocols {
            me.request.protocols = protocols;
            me.unsent = true;
        }
        let chosen = self.config.sharing.choose(Some(&listing));
        if chosen.missing != self.missing {
            self.missing = chosen.missing.clone();
            on_event(AgentEvent::Missing(chosen.missing.clone()));
        }
        // Nothing to share now: keep the last list rather than register none (the hub needs
        // one, and a server briefly listing nothing is likelier than one emptied for good).
        if chosen.models.is_empty() || (chosen.models == me.request.models && !me.unsent) {
            return;
        }
        let change = models_change(&me.request.models, &chosen.models);
        me.request.model = chosen.models[0].name.clone();
        me.request.models = chosen.models;
        me.unsent = true;
        let Some(secret) = me.request.participant_secret.clone() else {
            // A hub without participant secrets has no update either: re-join to change.
            return;
        };
        let update = ParticipantUpdate {
            model: Some(me.request.model.clone()),
            models: Some(me.request.models.clone()),
            protocols: Some(me.request.protocols.clone()),
            ..ParticipantUpdate::default()
        };
        match hub
            .update_participant(code, &me.request.id, &secret, &update)
            .await
        {
            Ok(updated) => {
                me.unsent = false;
                if !updated.dropped.is_empty() {
                    on_event(AgentEvent::Dropped(updated.dropped));
                }
                on_event(change);
            }
            // Forgotten: the next health check re-joins with the new list.
            Err(ClientError::Hub { status: 404, .. }) => {}
            Err(e) => on_event(AgentEvent::UpdateFailed(e.to_string())),
        }
    }
}

/// What changed between two model lists, as an event.
fn models_change(before: &[ModelInfo], after: &[ModelInfo]) -> AgentEvent {
    let names = |list: &[ModelInfo], other: &[ModelInfo]| -> Vec<String> {
        list.iter()
            .filter(|m| !other.iter().any(|o| o.name == m.name))
            .map(|m| m.name.clone())
            .collect()
    };
    let became = |state: bool| -> Vec<String> {
        after
            .iter()
            .filter(|m| {
                m.loaded == Some(state)
                    && before
                        .iter()
                        .any(|b| b.name == m.name && b.loaded != Some(state))
            })
            .map(|m| m.name.clone())
            .collect()
    };
    AgentEvent::ModelsChanged {
        added: names(after, before),
        removed: names(before, after),
        loaded: became(true),
        unloaded: became(false),
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
    fn backoff_doubles_up_to_the_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(backoff(RETRY_MIN, i), Duration::from_secs(1));
        assert_eq!(backoff(Duration::from_secs(8), i), i);
    }
}
