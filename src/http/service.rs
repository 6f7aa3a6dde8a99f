//! The contract between the server and what it serves: a [`Handler`] is asked about each
//! request twice — [`Handler::admit`] with the head alone, [`Handler::handle`] with the whole
//! [`Request`] — and answers with a [`Response`]. The server (`server`, `conn`) knows nothing
//! else about the application, and the application nothing about sockets.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::watch;

use super::head::RequestHead;
use super::limits::BodyBudget;
use super::response::Response;

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
}

/// A request with its whole (bounded) body.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) head: RequestHead,
    pub(crate) body: Bytes,
    /// The body's bytes, counted against the server's body memory until the request is
    /// dropped (held for its `Drop`, never read).
    #[expect(dead_code, reason = "held for its Drop")]
    pub(crate) budget: Option<BodyBudget>,
}

/// What the server calls for each request: first with the head alone, then with the body.
pub(crate) trait Handler: Send + Sync + 'static {
    /// What [`Handler::admit`] decided about a request, handed on to [`Handler::handle`].
    type Admitted: Send;

    /// Decide from the head alone — before a byte of the body is read or `100 Continue` is
    /// sent — whether to take the request, and the largest body it may have (larger → 413).
    /// `Err` is the answer, sent at once; the connection is closed if a body was announced.
    fn admit(
        &self,
        head: &RequestHead,
        peer: &Peer,
    ) -> impl Future<Output = Result<(Self::Admitted, usize), Response>> + Send;

    /// Produce the response. If the client closes its connection meanwhile, this future is
    /// dropped: whatever it was waiting on (an upstream answer) is abandoned at once.
    fn handle(
        &self,
        req: Request,
        admitted: Self::Admitted,
        peer: &Peer,
    ) -> impl Future<Output = Response> + Send;
}

/// Resolve once `shutdown` holds `true` (at once if it already does).
pub(crate) async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is dropped here, before the future completes, so callers'
    // futures stay `Send`.
    let _ = shutdown.wait_for(|s| *s).await;
}
