//! The room event stream's vocabulary, defined once: the hub publishes with these types and the
//! SDK (`client::events`) decodes with them. An event is an SSE `event:` name ([`Kind`]) and a
//! JSON `data:` payload. Strings are `Cow`s, so the hub serialises borrowed fields without
//! copying them and the SDK decodes into owned ones.
//!
//! | event                 | data                              |
//! |-----------------------|-----------------------------------|
//! | `connected`           | [`Connected`]                     |
//! | `resync`              | [`Resync`]                        |
//! | `room:created`        | [`RoomInfo`](super::RoomInfo)     |
//! | `room:deleted`        | [`RoomDeleted`]                   |
//! | `participant:joined`  | [`ParticipantInfo`](super::ParticipantInfo) |
//! | `participant:updated` | [`ParticipantInfo`](super::ParticipantInfo) |
//! | `participant:left`    | [`ParticipantRef`]                |
//! | `participant:offline` | [`ParticipantRef`]                |
//! | `participant:online`  | [`ParticipantRef`]                |
//! | `llm:request`         | [`LlmRequest`]                    |
//! | `llm:complete`        | [`LlmComplete`]                   |
//! | `llm:error`           | [`LlmError`]                      |
//! | `llm:queued`          | [`LlmQueued`]                     |
//! | `llm:dequeued`        | [`LlmDequeued`]                   |

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::LlmMetrics;

/// An event's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Connected,
    Resync,
    RoomCreated,
    RoomDeleted,
    ParticipantJoined,
    ParticipantUpdated,
    ParticipantLeft,
    ParticipantOffline,
    ParticipantOnline,
    LlmRequest,
    LlmComplete,
    LlmError,
    LlmQueued,
    LlmDequeued,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::Connected,
        Kind::Resync,
        Kind::RoomCreated,
        Kind::RoomDeleted,
        Kind::ParticipantJoined,
        Kind::ParticipantUpdated,
        Kind::ParticipantLeft,
        Kind::ParticipantOffline,
        Kind::ParticipantOnline,
        Kind::LlmRequest,
        Kind::LlmComplete,
        Kind::LlmError,
        Kind::LlmQueued,
        Kind::LlmDequeued,
    ];

    /// The SSE `event:` name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Connected => "connected",
            Kind::Resync => "resync",
            Kind::RoomCreated => "room:created",
            Kind::RoomDeleted => "room:deleted",
            Kind::ParticipantJoined => "participant:joined",
            Kind::ParticipantUpdated => "participant:updated",
            Kind::ParticipantLeft => "participant:left",
            Kind::ParticipantOffline => "participant:offline",
            Kind::ParticipantOnline => "participant:online",
            Kind::LlmRequest => "llm:request",
            Kind::LlmComplete => "llm:complete",
            Kind::LlmError => "llm:error",
            Kind::LlmQueued => "llm:queued",
            Kind::LlmDequeued => "llm:dequeued",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// `connected`: the first event of every stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected<'a> {
    #[serde(borrow)]
    pub client_id: Cow<'a, str>,
}

/// `resync`: the hub could not replay everything since `Last-Event-ID`; refetch the room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resync<'a> {
    /// `unknown-event-id` or `history-truncated`.
    #[serde(borrow)]
    pub reason: Cow<'a, str>,
}

/// `room:deleted`: a room was deleted by its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomDeleted<'a> {
    #[serde(borrow)]
    pub room_id: Cow<'a, str>,
    #[serde(borrow)]
    pub code: Cow<'a, str>,
}

/// `participant:left`, `participant:offline`, `participant:online`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRef<'a> {
    #[serde(borrow)]
    pub participant_id: Cow<'a, str>,
}

/// `llm:request`: a request was routed to a participant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmRequest<'a> {
    #[serde(borrow)]
    pub participant_id: Cow<'a, str>,
    /// What the client asked for (`*`, `model:x`, an id, a name), as the seed specifies.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// The model the participant serves (what runs); hubs before it sent none.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub served_model: Option<Cow<'a, str>>,
}

/// `llm:complete`: a generation ended, with its measurements.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmComplete<'a> {
    #[serde(borrow)]
    pub participant_id: Cow<'a, str>,
    /// The model the participant serves.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// What the client asked for; hubs before it sent none.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<Cow<'a, str>>,
    pub metrics: LlmMetrics,
}

/// `llm:error`: a routed request failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmError<'a> {
    #[serde(borrow)]
    pub participant_id: Cow<'a, str>,
    #[serde(borrow)]
    pub error: Cow<'a, str>,
}

/// `llm:queued`: every participant that could take a request is full; it waits in the room's
/// queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmQueued<'a> {
    /// The client it came from, as a salted hash (hex): the same client, the same string.
    #[serde(borrow)]
    pub client: Cow<'a, str>,
    /// What the client asked for.
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// Its place in turn order (1: next).
    pub position: usize,
    /// Requests waiting in the room, this one included.
    pub depth: usize,
}

/// `llm:dequeued`: a request left the room's queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmDequeued<'a> {
    #[serde(borrow)]
    pub client: Cow<'a, str>,
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// `served` (a participant took it), `timeout` (`--queue-timeout`), `abandoned` (its client
    /// left), `refused` (nothing can serve it any more).
    #[serde(borrow)]
    pub outcome: Cow<'a, str>,
    pub waited_ms: u64,
    /// Requests still waiting in the room.
    pub depth: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_name("llm:token"), None);
    }

    #[test]
    fn payloads_are_camel_case_and_borrow() {
        let r = LlmRequest {
            participant_id: "p".into(),
            model: "*".into(),
            served_model: Some("llama3".into()),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"participantId":"p","model":"*","servedModel":"llama3"}"#
        );
        let back: LlmRequest<'_> = serde_json::from_str(&s).unwrap();
        assert!(matches!(back.participant_id, Cow::Borrowed("p")));
        // An older hub's event, without the newer field.
        let old: LlmRequest<'_> =
            serde_json::from_str(r#"{"participantId":"p","model":"m"}"#).unwrap();
        assert_eq!(old.served_model, None);
    }
}
