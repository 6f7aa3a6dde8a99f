//! Reverse tunnels: participants behind NAT, or whose model server listens on their own
//! `localhost`, serve through connections they open to the hub.
//!
//! The agent sends `GET /rooms/:code/tunnel/:id` with `Connection: Upgrade`,
//! `Upgrade: gambiarra-tunnel` and `Authorization: Bearer <tunnel secret>` (the secret is in the
//! join answer and nowhere else). The hub answers `101` and parks the socket here. A request
//! routed to the participant takes one parked socket, writes the request on it and relays the
//! answer exactly as for a direct connection (`Upstream::Tunnel`). A tunnel whose answer ended
//! cleanly is parked again, like a keep-alive connection; at the agent it is a pipe to one
//! keep-alive connection of the local server. The agent opens a fresh tunnel whenever one is
//! used for the first time, so a free one is waiting when demand grows.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

use crate::http::Upgraded;

/// The header a tunnel opening carries its participant's tunnel secret in (`Authorization` is
/// the room password's, as on every route of a room).
pub const SECRET_HEADER: &str = "gambiarra-tunnel-secret";
/// The `Upgrade` token of the tunnel handshake.
pub const UPGRADE_TOKEN: &str = "gambiarra-tunnel";
/// Most sockets parked per participant (an agent keeps at most 64); more are closed.
pub const MAX_PARKED: usize = 64;
/// How long a request waits for a parked socket when a participant has none free.
pub const TUNNEL_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Pool {
    parked: VecDeque<Upgraded>,
    notify: Arc<Notify>,
}

/// Parked sockets, per (room code, participant id).
#[derive(Default)]
pub struct Tunnels {
    pools: Mutex<HashMap<(String, String), Pool>>,
}

/// Is a parked socket still open, with nothing unexpected waiting on it? Polled once, with a
/// no-op waker: an open, quiet socket is `Pending` and loses nothing.
fn alive(up: &mut Upgraded) -> bool {
    if !up.read_ahead.is_empty() {
        return false;
    }
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Pin::new(&mut up.io).poll_read(&mut cx, &mut buf),
        Poll::Pending
    )
}

impl Tunnels {
    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Pool>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Park a socket for a participant. Returns false (and closes it) when the pool is full.
    pub fn park(&self, code: &str, id: &str, up: Upgraded) -> bool {
        let mut pools = self.pools();
        let pool = pools.entry((code.to_string(), id.to_string())).or_default();
        pool.parked.retain_mut(alive);
        if pool.parked.len() >= MAX_PARKED {
            return false;
        }
        pool.parked.push_back(up);
        pool.notify.notify_one();
        true
    }

    /// Sockets parked for a participant now (after dropping dead ones).
    pub fn parked(&self, code: &str, id: &str) -> usize {
        let mut pools = self.pools();
        pools
            .get_mut(&(code.to_string(), id.to_string()))
            .map_or(0, |p| {
                p.parked.retain_mut(alive);
                p.parked.len()
            })
    }

    /// Close every parked socket of a participant (it left, or re-joined with a new secret).
    pub fn drop_participant(&self, code: &str, id: &str) {
        self.pools().remove(&(code.to_string(), id.to_string()));
    }

    /// Forget the pools of participants that are gone (a request still waiting when its
    /// participant left can re-create an empty one). Returns how many went.
    pub fn retain(&self, live: &std::collections::HashSet<(String, String)>) -> usize {
        let mut pools = self.pools();
        let before = pools.len();
        pools.retain(|key, _| live.contains(key));
        before - pools.len()
    }

    /// A live parked socket, waiting up to `wait` for one to arrive.
    pub async fn take(&self, code: &str, id: &str, wait: Duration) -> Option<Upgraded> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notify = {
                let mut pools = self.pools();
                let pool = pools.entry((code.to_string(), id.to_string())).or_default();
                // Most recently parked first: a tunnel that just served stays in use, and idle
                // ones stay idle (each first use makes the agent open another).
                while let Some(mut up) = pool.parked.pop_back() {
                    if alive(&mut up) {
                        return Some(up);
                    }
                }
                pool.notify.clone()
            };
            let notified = notify.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }
}
