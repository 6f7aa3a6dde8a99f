//! What the rooms' state refuses, in its own words. HTTP knows nothing of this type's variants
//! until `hub::error` maps each to a status and a message, in one place.

use super::ids::NoRandomness;

/// Why a change to rooms or participants did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StateError {
    RoomNotFound,
    /// The room existed and its host deleted it.
    RoomRemoved,
    ParticipantNotFound,
    /// The hub holds its most rooms (`--max-rooms`).
    RoomLimit,
    /// The creating address holds its most rooms (`--max-rooms-per-ip`).
    RoomsPerAddress,
    /// The room holds its most participants (`--max-participants`).
    ParticipantLimit,
    /// The room has its most event subscribers (`--max-subscribers`).
    RoomSubscriberLimit,
    /// The hub has its most event subscribers (`--max-subscribers-total`).
    HubSubscriberLimit,
    ShuttingDown,
    /// An entry the state will not hold (an endpoint it cannot use, an entry too large, an id
    /// that is another participant's model); the text says which.
    Invalid(String),
    /// The participant's secret is missing or wrong; the text says what needed it.
    NotOwner(&'static str),
    /// `--state` could not be written; the change was undone.
    SaveFailed {
        what: &'static str,
        error: String,
    },
    NoRandomness,
}

impl From<NoRandomness> for StateError {
    fn from(_: NoRandomness) -> Self {
        StateError::NoRandomness
    }
}
