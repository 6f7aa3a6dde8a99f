//! HTTP/1.1, hand-rolled on tokio, with no idea what a room is.
//!
//! - [`head`]: httparse request heads → borrowed views; size limits; framing rules.
//! - [`body`]: body framing and the chunked decoder/encoder state machine.
//! - [`response`]: status, headers, whole or streamed bodies; head encoding.
//! - [`conn`]: one connection's keep-alive loop, pipelining, timeouts, streaming pump.
//! - [`service`]: the contract with the application: [`Handler`], [`Request`], [`Peer`].
//! - [`server`]: the listener, the accept loop, the connection limit, graceful drain.
//! - [`limits`]: every server bound ([`ServerConfig`]) and the slots that hold a share of one.
//! - [`client`]: the upstream side: response heads, their framing, hop-by-hop rules.
//! - [`upstream`]: connections to an upstream (pooled TCP, TLS, a reverse tunnel).
//! - [`url`]: `http(s)://host:port/path` URLs.
//! - [`sse`]: server-sent event encoding.
//! - [`date`]: the cached `Date` header.

pub mod body;
pub mod client;
mod conn;
pub mod date;
pub mod head;
pub mod limits;
pub mod response;
pub mod server;
pub mod service;
pub mod sse;
pub mod upstream;
pub mod url;

pub(crate) use conn::{within, write_all_vectored};
pub(crate) use head::{Method, RequestHead};
pub(crate) use response::{Body, BodyStream, Response, Upgraded};
pub(crate) use service::{Handler, Peer, Request};
