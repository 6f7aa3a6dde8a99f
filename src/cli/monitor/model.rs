//! What `gambiarra monitor` knows about the rooms it watches, independent of how it is shown:
//! participants with their live status (busy while a request runs, the last tokens/s and
//! time-to-first-token), and an activity log. Both the terminal UI and `--plain` feed hub events
//! into a [`RoomView`] and render from it.

use std::collections::VecDeque;

use crate::client::events::HubEvent;
use crate::types::{LlmMetrics, ModelInfo, ParticipantInfo, ParticipantStatus};

/// Lines kept in a room's activity log.
pub(crate) const LOG_LINES: usize = 500;

/// A participant as the monitor shows it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Card {
    pub(crate) info: ParticipantInfo,
    /// Requests seen start and not yet finish.
    pub(crate) in_flight: u32,
    pub(crate) last: Option<LlmMetrics>,
}

impl Card {
    /// The status to show: `busy` while a request runs.
    pub(crate) fn status(&self) -> ParticipantStatus {
        match self.info.status {
            ParticipantStatus::Offline => ParticipantStatus::Offline,
            _ if self.in_flight > 0 => ParticipantStatus::Busy,
            s => s,
        }
    }
}

/// One watched room.
#[derive(Clone, Debug, Default)]
pub(crate) struct RoomView {
    pub(crate) code: String,
    pub(crate) name: String,
    pub(crate) cards: Vec<Card>,
    pub(crate) log: VecDeque<String>,
    /// Connected to the hub's event stream right now.
    pub(crate) connected: bool,
    /// Requests waiting in the room's queue (as of the last queue event).
    pub(crate) queued: usize,
}

impl RoomView {
    pub(crate) fn new(code: &str, name: &str) -> Self {
        RoomView {
            code: code.to_string(),
            name: name.to_string(),
            ..RoomView::default()
        }
    }

    /// Replace the participants with a fresh listing (start, and after `resync`).
    pub(crate) fn set_participants(&mut self, list: Vec<ParticipantInfo>) {
        self.cards = list
            .into_iter()
            .map(|info| Card {
                // Hubs before `inFlight` said only "busy".
                in_flight: info
                    .in_flight
                    .max(u32::from(info.status == ParticipantStatus::Busy)),
                info,
                last: None,
            })
            .collect();
    }

    fn nickname(&self, id: &str) -> String {
        self.cards
            .iter()
            .find(|c| c.info.id == id)
            .map_or_else(|| id.to_string(), |c| c.info.nickname.clone())
    }

    fn card(&mut self, id: &str) -> Option<&mut Card> {
        self.cards.iter_mut().find(|c| c.info.id == id)
    }

    /// Apply an event; returns the log line it makes (also appended to the log), if any.
    pub(crate) fn apply(&mut self, event: &HubEvent, clock: &str) -> Option<String> {
        let mut text = describe(event, |id| self.nickname(id))?;
        match event {
            HubEvent::Connected { .. } => self.connected = true,
            HubEvent::Disconnected { .. } => self.connected = false,
            HubEvent::ParticipantJoined(p) => {
                let card = Card {
                    info: (**p).clone(),
                    in_flight: 0,
                    last: None,
                };
                match self.card(&p.id) {
                    Some(c) => *c = card,
                    None => self.cards.push(card),
                }
            }
            HubEvent::ParticipantUpdated(p) => match self.card(&p.id) {
                Some(c) => {
                    if let Some(diff) = model_changes(&c.info, p) {
                        text = format!("{}: {diff}", p.nickname);
                    }
                    c.info = (**p).clone();
                }
                None => self.cards.push(Card {
                    info: (**p).clone(),
                    in_flight: 0,
                    last: None,
                }),
            },
            HubEvent::ParticipantLeft { participant_id } => {
                self.cards.retain(|c| &c.info.id != participant_id)
            }
            HubEvent::ParticipantOffline { participant_id } => {
                if let Some(c) = self.card(participant_id) {
                    c.info.status = ParticipantStatus::Offline;
                }
            }
            HubEvent::ParticipantOnline { participant_id } => {
                if let Some(c) = self.card(participant_id) {
                    c.info.status = ParticipantStatus::Online;
                }
            }
            HubEvent::LlmRequest { participant_id, .. } => {
                if let Some(c) = self.card(participant_id) {
                    c.in_flight += 1;
                }
            }
            HubEvent::LlmComplete {
                participant_id,
                metrics,
                ..
            } => {
                if let Some(c) = self.card(participant_id) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                    c.last = Some(metrics.clone());
                }
            }
            HubEvent::LlmError { participant_id, .. } => {
                if let Some(c) = self.card(participant_id) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                }
            }
            HubEvent::LlmQueued { depth, .. } | HubEvent::LlmDequeued { depth, .. } => {
                self.queued = *depth;
            }
            _ => {}
        }
        let line = format!("{clock} {text}");
        if self.log.len() == LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(line.clone());
        Some(line)
    }
}

/// How a `Disconnected` error ends when the hub refused a subscription for good (a wrong
/// password, a room that is gone): the watcher does not retry.
pub(crate) const GIVING_UP: &str = "not retrying";

/// The human sentence for an event (`name` resolves a participant id to a nickname).
pub(crate) fn describe(event: &HubEvent, name: impl Fn(&str) -> String) -> Option<String> {
    Some(match event {
        HubEvent::Connected { .. } => "connected to the hub".into(),
        HubEvent::Disconnected { error } if error.ends_with(GIVING_UP) => {
            format!("cannot watch: {error}")
        }
        HubEvent::Disconnected { error } if error.contains("trying again") => {
            format!("cannot reach the hub ({error})")
        }
        HubEvent::Disconnected { error } => format!("disconnected ({error}); reconnecting"),
        HubEvent::RoomCreated(r) => format!("room created: {} ({})", r.name, r.code),
        HubEvent::RoomDeleted { code, .. } => format!("room {code} was deleted by its host"),
        HubEvent::ParticipantJoined(p) => {
            format!(
                "{} joined with {} at {}",
                p.nickname,
                models_line(p),
                p.endpoint
            )
        }
        HubEvent::ParticipantUpdated(p) => {
            format!("{} updated: serves {}", p.nickname, models_line(p))
        }
        HubEvent::ParticipantLeft { participant_id } => format!("{} left", name(participant_id)),
        HubEvent::ParticipantOffline { participant_id } => {
            format!("{} went offline", name(participant_id))
        }
        HubEvent::ParticipantOnline { participant_id } => {
            format!("{} is back online", name(participant_id))
        }
        HubEvent::LlmRequest {
            participant_id,
            model,
            requested,
        } => match requested {
            Some(asked) if asked != model => {
                format!("request for {asked} → {} ({model})", name(participant_id))
            }
            _ => format!("request for {model} → {}", name(participant_id)),
        },
        HubEvent::LlmComplete {
            participant_id,
            metrics,
            ..
        } => format!(
            "{} done: {} tokens, {:.1} tok/s, first token {} ms, {} ms total",
            name(participant_id),
            metrics.tokens,
            metrics.tokens_per_second,
            metrics.latency_first_token_ms,
            metrics.duration_ms
        ),
        HubEvent::LlmError {
            participant_id,
            error,
        } => format!("{} failed: {error}", name(participant_id)),
        HubEvent::LlmQueued {
            client,
            model,
            position,
            depth,
        } => format!(
            "request for {model} from client {} queued: all busy (#{position}, {depth} waiting)",
            short(client)
        ),
        HubEvent::LlmDequeued {
            client,
            model,
            outcome,
            waited_ms,
            depth,
        } => format!(
            "request for {model} from client {} left the queue: {outcome} after {:.1} s ({depth} waiting)",
            short(client),
            *waited_ms as f64 / 1000.0
        ),
        HubEvent::Resync { reason } => format!("missed events ({reason}); refreshed"),
        HubEvent::Unknown { event, .. } => format!("event {event}"),
    })
}

/// A client hash, shortened for a log line.
fn short(client: &str) -> &str {
    client.get(..8).unwrap_or(client)
}

/// A participant's models in one line (see [`models_summary`]).
pub(crate) fn models_line(p: &ParticipantInfo) -> String {
    if p.models.is_empty() {
        return p.model.clone();
    }
    models_summary(&p.models)
}

/// Models listed in one line, at most [`MODELS_IN_A_LINE`], loaded ones marked `●`, unloaded
/// `○` (nothing when the backend does not say).
pub(crate) fn models_summary(models: &[ModelInfo]) -> String {
    let mut line: Vec<String> = models
        .iter()
        .take(MODELS_IN_A_LINE)
        .map(|m| match m.loaded {
            Some(true) => format!("{} ●", m.name),
            Some(false) => format!("{} ○", m.name),
            None => m.name.clone(),
        })
        .collect();
    if models.len() > MODELS_IN_A_LINE {
        line.push(format!("+{} more", models.len() - MODELS_IN_A_LINE));
    }
    line.join(", ")
}

/// Most models named in one line.
pub(crate) const MODELS_IN_A_LINE: usize = 4;

/// What changed in a participant's models, in words (`None`: nothing did).
fn model_changes(before: &ParticipantInfo, after: &ParticipantInfo) -> Option<String> {
    let names =
        |p: &ParticipantInfo| -> Vec<String> { p.models.iter().map(|m| m.name.clone()).collect() };
    let (old, new) = (names(before), names(after));
    let mut parts = Vec::new();
    let added: Vec<&str> = new
        .iter()
        .filter(|n| !old.contains(n))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = old
        .iter()
        .filter(|n| !new.contains(n))
        .map(String::as_str)
        .collect();
    if !added.is_empty() {
        parts.push(format!("now serves {}", added.join(", ")));
    }
    if !removed.is_empty() {
        parts.push(format!("no longer serves {}", removed.join(", ")));
    }
    let loaded: Vec<&str> = after
        .models
        .iter()
        .filter(|m| {
            m.loaded == Some(true)
                && before
                    .models
                    .iter()
                    .any(|b| b.name == m.name && b.loaded != Some(true))
        })
        .map(|m| m.name.as_str())
        .collect();
    if !loaded.is_empty() {
        parts.push(format!("loaded {}", loaded.join(", ")));
    }
    let unloaded: Vec<&str> = after
        .models
        .iter()
        .filter(|m| {
            m.loaded == Some(false)
                && before
                    .models
                    .iter()
                    .any(|b| b.name == m.name && b.loaded == Some(true))
        })
        .map(|m| m.name.as_str())
        .collect();
    if !unloaded.is_empty() {
        parts.push(format!("unloaded {}", unloaded.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// `HH:MM:SS` (UTC) of a Unix-milliseconds time.
pub(crate) fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{GenerationConfig, MachineSpecs};

    fn p(id: &str) -> ParticipantInfo {
        ParticipantInfo {
            id: id.into(),
            nickname: format!("nick-{id}"),
            model: "llama3".into(),
            models: vec![crate::types::ModelInfo::named("llama3")],
            protocols: Vec::new(),
            slots: None,
            endpoint: "http://x".into(),
            config: GenerationConfig::default(),
            specs: MachineSpecs::default(),
            status: ParticipantStatus::Online,
            in_flight: 0,
            joined_at: 0,
            last_seen: 0,
        }
    }

    #[test]
    fn follows_the_room() {
        let mut room = RoomView::new("ABC234", "Lab");
        room.apply(&HubEvent::ParticipantJoined(Box::new(p("a"))), "t");
        room.apply(
            &HubEvent::LlmRequest {
                participant_id: "a".into(),
                model: "m".into(),
                requested: Some("*".into()),
            },
            "t",
        );
        assert_eq!(room.cards[0].status(), ParticipantStatus::Busy);
        let metrics = LlmMetrics {
            tokens: 10,
            latency_first_token_ms: 5,
            duration_ms: 100,
            tokens_per_second: 105.3,
        };
        let line = room
            .apply(
                &HubEvent::LlmComplete {
                    participant_id: "a".into(),
                    model: "m".into(),
                    requested: None,
                    metrics,
                },
                "12:00:00",
            )
            .unwrap();
        assert_eq!(
            line,
            "12:00:00 nick-a done: 10 tokens, 105.3 tok/s, first token 5 ms, 100 ms total"
        );
        assert_eq!(room.cards[0].status(), ParticipantStatus::Online);
        room.apply(
            &HubEvent::ParticipantOffline {
                participant_id: "a".into(),
            },
            "t",
        );
        assert_eq!(room.cards[0].status(), ParticipantStatus::Offline);
        room.apply(
            &HubEvent::ParticipantLeft {
                participant_id: "a".into(),
            },
            "t",
        );
        assert!(room.cards.is_empty());
        assert_eq!(room.log.len(), 5);
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
