//! The integration tests, one binary: each module talks to a real hub over real sockets (in
//! process via `Hub::bind`, or the built `gambiarra` binary), with the mock LLM upstream where
//! a participant is needed. Shared set-up lives in `common`.

mod common;

mod anthropic;
mod api;
mod client;
mod events;
mod fuzz_corpus;
mod hostile;
mod http;
mod interop;
mod join;
mod mdns;
mod metrics;
mod models;
mod ollama;
mod pages;
mod persist;
mod proxy;
#[cfg(feature = "tools")]
mod queue;
mod security;
mod tls_hub;
mod tls_upstream;
mod tunnel;
