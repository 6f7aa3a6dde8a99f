//! Rooms and what lives in them: participants and their liveness ([`state`]), the event log
//! every change is announced on ([`events`]), the file rooms survive restarts in ([`persist`]),
//! the timer that notices silence ([`sweeper`]), and the random names and secrets ([`ids`]).

pub mod error;
pub mod events;
pub mod ids;
pub mod persist;
pub mod state;
pub mod sweeper;

pub use error::StateError;
pub use state::{Limits, Room, State};
