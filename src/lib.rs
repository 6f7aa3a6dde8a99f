//! Gambiarra: pool the local LLMs of everyone on a network behind one OpenAI-compatible URL.
//!
//! - [`http`]: a hand-rolled HTTP/1.1 server on tokio (no knowledge of rooms).
//! - [`hub`]: rooms, participants, events, the proxy; [`hub::Hub`] embeds a hub.
//! - [`tools`]: a fake OpenAI-compatible LLM (`mock`) and a load generator (`bench`).
//! - [`types`]: the protocol's types and constants.
//! - [`client`]: the Rust SDK — typed calls to a hub.
//! - [`cli`]: the `gambiarra` command's subcommands.

pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod http;
pub mod hub;
pub mod mdns;
mod sync;
pub mod tools;
pub mod types;

/// What benches, fuzz targets and tests reach inside the crate; not an API.
#[doc(hidden)]
pub mod internals {
    pub use crate::tools::fuzzing;
}

pub use hub::{Hub, HubConfig, ShutdownHandle};
