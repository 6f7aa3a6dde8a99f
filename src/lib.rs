//! Gambiarra: pool the local LLMs of everyone on a network behind one OpenAI-compatible URL.
//!
//! What the library offers:
//!
//! - [`Hub`] ([`hub`]): run a hub inside your program — bind, read its address, shut down.
//! - `client` (feature `client`): the Rust SDK — typed calls to a hub, the participant agent,
//!   the event stream.
//! - [`types`]: the protocol's types, constants and event payloads.
//! - [`tools`] (feature `tools`): a fake OpenAI-compatible LLM (`mock`) and a load generator
//!   (`bench`), for testing and measuring hubs.
//! - [`cli`]: the `gambiarra` command (what `main.rs` runs).
//!
//! Inside (not an API; see ARCHITECTURE.md): `http` (hand-rolled HTTP/1.1 on tokio, no
//! knowledge of rooms), the hub's modules under `hub`, `mdns`.

pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub(crate) mod http;
pub mod hub;
pub(crate) mod mdns;
mod sync;
pub mod tools;
pub mod types;
#[cfg(feature = "web")]
pub(crate) mod web;

/// What benches, fuzz targets and integration tests reach inside the crate; not an API, and
/// not stable.
#[doc(hidden)]
pub mod internals {
    pub use crate::http::body::ChunkedDecoder;
    pub use crate::http::head::Method;
    pub use crate::http::head::{MAX_HEAD_BYTES, parse_request};
    pub use crate::http::sse::encode_event;
    pub use crate::hub::guard::auth::{
        Auth, FAILURE_BURST, RoomSecrets, hash_password, verify_password,
    };
    pub use crate::hub::proxy::MAX_ATTEMPTS;
    pub use crate::hub::proxy::rewrite;
    pub use crate::hub::proxy::tokens::{BodyKind, TokenScanner};
    pub use crate::hub::rooms::events::EventLog;
    pub use crate::hub::router::route;
    pub use crate::mdns::packet;
    pub use crate::tools::fuzzing;
}

pub use hub::{Hub, HubConfig, ShutdownHandle};
