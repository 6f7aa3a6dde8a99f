//! Gambiarra: pool the local LLMs of everyone on a network behind one OpenAI-compatible URL.
//!
//! - [`http`]: a hand-rolled HTTP/1.1 server on tokio (no knowledge of rooms).
//! - [`hub`]: rooms, participants, events, the proxy; [`hub::Hub`] embeds a hub.
//! - [`bench`]: the load generator behind `gambiarra bench`.
//! - [`mock`]: a fake OpenAI-compatible LLM for trying the hub and for tests.
//! - [`types`]: the protocol's types and constants.
//! - [`client`]: the Rust SDK — typed calls to a hub.
//! - [`cli`]: the `gambiarra` command's subcommands.

#[cfg(feature = "tools")]
pub mod bench;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod mdns;
#[cfg(feature = "tools")]
pub mod mock;
#[cfg(feature = "client")]
pub mod monitor;
pub mod types;

pub use hub::{Hub, HubConfig, ShutdownHandle};
