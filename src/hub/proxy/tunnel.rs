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
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

use crate::http::Upgraded;

/// The header a tunnel opening carries its participant's tunnel secret in (`Authorization` is
/// the room password's, as on every route of a room).
pub(crate) const SECRET_HEADER: &str = "gambiarra-tunnel-secret";
/// The `Upgrade` token of the tunnel handshake.
pub(crate) const UPGRADE_TOKEN: &str = "gambiarra-tunnel";
/// Most sockets parked per participant (an agent keeps at most 64); more are closed.
pub(crate) const MAX_PARKED: usize = 64;
/// Default most sockets parked across the hub (`serve --max-tunnels`); more are closed. Each
/// also counts against the connection limits for its whole life.
pub(crate) const MAX_PARKED_TOTAL: usize = 4096;
/// How long a request waits for a parked socket when a participant has none free.
pub(crate) const TUNNEL_WAIT: Duration = Duration::from_secs(2);

/// A parked socket, shared by the pool and the socket's watcher task. Taking it is a lock and
/// a `take` — no round trip through the watcher (a request on a tunnel used to wait for the
/// watcher task to be scheduled and hand the socket back: two task wake-ups per request).
struct Parked {
    slot: Arc<Mutex<Slot>>,
}

/// The socket (with its place in the hub's count) while parked, and the watcher to wake when
/// it is taken or dropped.
struct Slot {
    io: Option<(Upgraded, Counted)>,
    watcher: Option<std::task::Waker>,
}

impl Parked {
    fn live(&self) -> bool {
        crate::sync::lock(&self.slot).io.is_some()
    }

    /// The socket, if its peer has not closed it meanwhile; its watcher is told to go. A
    /// socket with anything to read (bytes the agent's server sent after its last answer, that
    /// the watcher has not been polled to see yet) is closed instead: they would be read as the
    /// next request's answer.
    fn take(&self) -> Option<Upgraded> {
        let mut slot = crate::sync::lock(&self.slot);
        let (mut up, _count) = slot.io.take()?;
        if let Some(w) = slot.watcher.take() {
            w.wake();
        }
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        quiet(&mut up, &mut cx).then_some(up)
    }
}

/// Whether a parked socket has nothing to read: no EOF, no error, no bytes (its peer sends
/// nothing until the hub writes a request). Registers `cx` to be woken when that changes; one
/// byte read is a socket to close anyway.
fn quiet(up: &mut Upgraded, cx: &mut std::task::Context<'_>) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    Pin::new(&mut up.io).poll_read(cx, &mut buf).is_pending()
}

impl Drop for Parked {
    /// Forgotten by the pool (participant gone, shutdown): the socket closes now.
    fn drop(&mut self) {
        drop(self.take());
    }
}

#[derive(Default)]
struct Pool {
    parked: VecDeque<Parked>,
    notify: Arc<Notify>,
}

/// Why a socket was not parked (it is closed).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParkRefused {
    /// The hub is shutting down.
    Closed,
    /// The client sent bytes after its handshake: not a tunnel.
    Unexpected,
    /// This participant has [`MAX_PARKED`] already.
    ParticipantFull,
    /// The hub has its most parked sockets.
    HubFull,
}

/// Parked sockets, per (room code, participant id).
pub(crate) struct Tunnels {
    pools: Mutex<HashMap<(String, String), Pool>>,
    /// Sockets parked now, across the hub (live watchers).
    total: Arc<AtomicUsize>,
    max_total: usize,
    closed: AtomicBool,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels::new(MAX_PARKED_TOTAL)
    }
}

/// Counts one watched socket in `Tunnels::total` while it lives.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Watch a parked socket until the pool takes it (the slot is empty) or its peer closes it or
/// sends anything (a parked tunnel is quiet until the hub writes a request): then it is closed
/// and leaves the count at once.
async fn watch(slot: Arc<Mutex<Slot>>) {
    poll_fn(|cx| {
        let mut guard = crate::sync::lock(&slot);
        let slot = &mut *guard;
        let Some((up, _)) = slot.io.as_mut() else {
            return Poll::Ready(());
        };
        if quiet(up, cx) {
            if !slot
                .watcher
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                slot.watcher = Some(cx.waker().clone());
            }
            Poll::Pending
        } else {
            // EOF, an error, or bytes nobody asked for: done with this socket.
            slot.io = None;
            Poll::Ready(())
        }
    })
    .await;
}

impl Tunnels {
    /// At most `max_total` sockets parked across the hub.
    pub(crate) fn new(max_total: usize) -> Self {
        Tunnels {
            pools: Mutex::new(HashMap::new()),
            total: Arc::new(AtomicUsize::new(0)),
            max_total,
            closed: AtomicBool::new(false),
        }
    }

    fn pools(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Pool>> {
        crate::sync::lock(&self.pools)
    }

    /// Park a socket for a participant; refused (and closed) when it is not quiet, or a bound
    /// is reached. Must be called inside the tokio runtime (it starts the socket's watcher).
    pub(crate) fn park(&self, code: &str, id: &str, up: Upgraded) -> Result<(), ParkRefused> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ParkRefused::Closed);
        }
        if !up.read_ahead.is_empty() {
            return Err(ParkRefused::Unexpected);
        }
        let mut pools = self.pools();
        let pool = pools.entry((code.to_string(), id.to_string())).or_default();
        pool.parked.retain(Parked::live);
        if pool.parked.len() >= MAX_PARKED {
            return Err(ParkRefused::ParticipantFull);
        }
        if self.total.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            self.total.fetch_sub(1, Ordering::SeqCst);
            return Err(ParkRefused::HubFull);
        }
        let count = Counted(self.total.clone());
        let slot = Arc::new(Mutex::new(Slot {
            io: Some((up, count)),
            watcher: None,
        }));
        tokio::spawn(watch(slot.clone()));
        pool.parked.push_back(Parked { slot });
        pool.notify.notify_one();
        Ok(())
    }

    /// Whether a socket for this participant would be parked now (checked before answering
    /// `101`, so a full hub says so with a status instead of closing an accepted tunnel).
    pub(crate) fn has_room(&self, code: &str, id: &str) -> Result<(), ParkRefused> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(ParkRefused::Closed);
        }
        if self.total.load(Ordering::SeqCst) >= self.max_total {
            return Err(ParkRefused::HubFull);
        }
        if self.parked(code, id) >= MAX_PARKED {
            return Err(ParkRefused::ParticipantFull);
        }
        Ok(())
    }

    /// Sockets parked for a participant now.
    pub(crate) fn parked(&self, code: &str, id: &str) -> usize {
        let mut pools = self.pools();
        pools
            .get_mut(&(code.to_string(), id.to_string()))
            .map_or(0, |p| {
                p.parked.retain(Parked::live);
                p.parked.len()
            })
    }

    /// Sockets parked across the hub now.
    pub(crate) fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Close every parked socket of a participant (it left, or re-joined with a new secret).
    pub(crate) fn drop_participant(&self, code: &str, id: &str) {
        self.pools().remove(&(code.to_string(), id.to_string()));
    }

    /// Close every parked socket and park no more (shutdown).
    pub(crate) fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.pools().clear();
    }

    /// Forget the pools of participants that are gone (a request still waiting when its
    /// participant left can re-create an empty one), and stale entries of the others.
    /// Returns how many pools went.
    pub(crate) fn retain(&self, live: &std::collections::HashSet<(String, String)>) -> usize {
        let mut pools = self.pools();
        let before = pools.len();
        pools.retain(|key, pool| {
            pool.parked.retain(Parked::live);
            live.contains(key)
        });
        before - pools.len()
    }

    /// A live parked socket, waiting up to `wait` for one to arrive.
    pub(crate) async fn take(&self, code: &str, id: &str, wait: Duration) -> Option<Upgraded> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Most recently parked first: a tunnel that just served stays in use, and idle
            // ones stay idle (each first use makes the agent open another).
            let next = {
                let mut pools = self.pools();
                let pool = pools.entry((code.to_string(), id.to_string())).or_default();
                loop {
                    match pool.parked.pop_back() {
                        // Gone stale (its peer closed it): the next one.
                        Some(p) => match p.take() {
                            Some(up) => break Ok(up),
                            None => continue,
                        },
                        None => break Err(pool.notify.clone()),
                    }
                }
            };
            match next {
                Ok(up) => return Some(up),
                Err(notify) => {
                    let notified = notify.notified();
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }
}
