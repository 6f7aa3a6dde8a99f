//! Rooms and what lives in them: participants and their liveness ([`state`]), the event log
//! every change is announced on ([`events`]), the file rooms survive restarts in ([`persist`]),
//! the timer that notices silence ([`sweeper`]), the random names and secrets ([`ids`]), and
//! the models participants serve, matched by name ([`models`]).

pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod ids;
pub(crate) mod models;
pub(crate) mod persist;
pub(crate) mod prefix;
pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod sweeper;

pub(crate) use error::StateError;
pub(crate) use state::{Limits, Room, State};
