//! Who may do what, before a handler runs: room passwords, host and admin tokens and the
//! Argon2 pool ([`auth`]); per-address token buckets ([`limits`]); which endpoints a
//! participant may point the hub at, and forwarding loops ([`endpoints`]); and the admission of
//! a request from its head ([`admission`]).

pub(crate) mod admission;
pub(crate) mod auth;
pub(crate) mod endpoints;
pub(crate) mod limits;
