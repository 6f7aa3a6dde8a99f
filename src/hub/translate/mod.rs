//! Other APIs in front of the OpenAI-speaking participants: each submodule turns its dialect's
//! request into an OpenAI one and the OpenAI answer back into its dialect, streaming included.
//! Pure byte-to-byte functions and a [`BodyStream`](crate::http::BodyStream) adapter; the
//! proxy does the routing, relaying and metrics as for `/v1`.

pub mod anthropic;
pub mod ollama;
