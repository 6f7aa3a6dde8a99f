//! A room's fair queue: the requests waiting for a participant slot when every participant
//! that could take them is full.
//!
//! Fairness is per client (see [`client_key`]): each client has its own line, first in first
//! out, and the lines take turns round-robin, so a client with fifty requests waiting gets no
//! more turns than one with one. When a slot frees, [`Queue::dispatch`] offers it, in turn
//! order, to the first waiter of each line that the slot can serve (another model's waiter
//! behind it does not block it); the line served goes to the back. Everything here runs under
//! the room's lock, with no `.await`: a waiter's task sleeps on its own channel and is handed
//! its participant directly, so a freed slot never wakes every waiter.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{Lease, SelectError};
use crate::hub::proxy::rewrite::PrefixBlock;
use crate::types::Protocol;

/// Requests waiting in one room, by default (`serve --queue-max`).
pub const DEFAULT_QUEUE_MAX: usize = 256;
/// Requests one client may have waiting in one room, by default (`serve --queue-per-client`).
pub const DEFAULT_QUEUE_PER_CLIENT: usize = 64;
/// Longest wait for a slot, by default (`serve --queue-timeout`).
pub const DEFAULT_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a request asks of the room: everything choosing a participant for it needs.
#[derive(Debug)]
pub(crate) struct Want {
    /// A participant id, `model:NAME`, a model name, or `*`/`any`.
    pub(crate) requested: String,
    /// Participants this request already failed to reach.
    pub(crate) tried: Vec<String>,
    /// The protocol the request came in, when not OpenAI's.
    pub(crate) dialect: Option<Protocol>,
    /// Only participants speaking `dialect` may take it.
    pub(crate) only: bool,
    /// Its prompt's prefix chain (empty unless the room routes cache-aware).
    pub(crate) prefix: Arc<[PrefixBlock]>,
}

/// What a waiter is handed: its participant, or why it will never get one.
pub(crate) type Grant = Result<Lease, SelectError>;

/// One waiting request.
pub(crate) struct Waiter {
    pub(crate) id: u64,
    pub(crate) client: u64,
    pub(crate) want: Arc<Want>,
    pub(crate) since: Instant,
    /// Until then it may decline a free participant for a busy one that holds more of its
    /// prefix (cache-aware rooms).
    pub(crate) affinity_until: Option<Instant>,
    pub(crate) tx: oneshot::Sender<Grant>,
}

/// One client's waiting requests, oldest first.
struct Line {
    client: u64,
    waiters: VecDeque<Waiter>,
}

/// A room's queue.
#[derive(Default)]
pub(crate) struct Queue {
    /// Round-robin: the front line has the next turn.
    lines: VecDeque<Line>,
    len: usize,
    next_id: u64,
}

impl Queue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Requests `client` has waiting.
    pub(crate) fn waiting(&self, client: u64) -> usize {
        self.lines
            .iter()
            .find(|l| l.client == client)
            .map_or(0, |l| l.waiters.len())
    }

    /// A fresh waiter id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Add a waiter at the end of its client's line (a new line waits behind the others).
    /// Returns its position in turn order (1: next), were nobody else to come.
    pub(crate) fn push(&mut self, waiter: Waiter) -> usize {
        self.len += 1;
        let client = waiter.client;
        let i = match self.lines.iter().position(|l| l.client == client) {
            Some(i) => {
                self.lines[i].waiters.push_back(waiter);
                i
            }
            None => {
                self.lines.push_back(Line {
                    client,
                    waiters: VecDeque::from([waiter]),
                });
                self.lines.len() - 1
            }
        };
        // Lines ahead of its own have one more turn than it waits rounds; those behind, as many.
        let rounds = self.lines[i].waiters.len() - 1;
        self.lines
            .iter()
            .enumerate()
            .map(|(j, l)| match j.cmp(&i) {
                std::cmp::Ordering::Less => l.waiters.len().min(rounds + 1),
                std::cmp::Ordering::Equal => rounds + 1,
                std::cmp::Ordering::Greater => l.waiters.len().min(rounds),
            })
            .sum()
    }

    /// Take a waiter out (it gave up: deadline, or its client left). `None`: it was already
    /// served or refused.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Waiter> {
        let (li, wi) = self
            .lines
            .iter()
            .enumerate()
            .find_map(|(li, l)| l.waiters.iter().position(|w| w.id == id).map(|wi| (li, wi)))?;
        let w = self.lines[li].waiters.remove(wi);
        if self.lines[li].waiters.is_empty() {
            self.lines.remove(li);
        }
        self.len -= 1;
        w
    }

    /// A waiter, to change what it allows.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.lines
            .iter_mut()
            .flat_map(|l| l.waiters.iter_mut())
            .find(|w| w.id == id)
    }

    /// Hand out what can be handed out: `offer` is asked, for the first waiter of each line in
    /// turn order (then the waiters behind them), whether it can be answered now — `Some((answer,
    /// true))`: served, its line's turn is used; `Some((answer, false))`: answered without a
    /// turn (it never will be served); `None`: not now. Each answered waiter leaves the queue
    /// (a served line goes to the back), until no waiter can be answered. Returns the waiters
    /// answered with their answers, for the caller to send (under the same lock) and count.
    pub(crate) fn dispatch<G>(
        &mut self,
        mut offer: impl FnMut(&Waiter) -> Option<(G, bool)>,
    ) -> Vec<(Waiter, G)> {
        let mut answered = Vec::new();
        'rounds: loop {
            for li in 0..self.lines.len() {
                for wi in 0..self.lines[li].waiters.len() {
                    let Some((answer, served)) = offer(&self.lines[li].waiters[wi]) else {
                        continue;
                    };
                    // Both indices were just read: these cannot miss.
                    let (Some(w), Some(line)) =
                        (self.lines[li].waiters.remove(wi), self.lines.remove(li))
                    else {
                        break 'rounds;
                    };
                    self.len -= 1;
                    if !line.waiters.is_empty() {
                        if served {
                            self.lines.push_back(line);
                        } else {
                            self.lines.insert(li, line);
                        }
                    }
                    answered.push((w, answer));
                    continue 'rounds;
                }
            }
            break;
        }
        answered
    }

    /// Every waiter's (client, requested, since) in turn order.
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> Vec<(u64, &str, Instant)> {
        let mut out = Vec::with_capacity(self.len);
        let depth = self
            .lines
            .iter()
            .map(|l| l.waiters.len())
            .max()
            .unwrap_or(0);
        for round in 0..depth {
            for l in &self.lines {
                if let Some(w) = l.waiters.get(round) {
                    out.push((l.client, w.want.requested.as_str(), w.since));
                }
            }
        }
        out
    }

    /// Every waiter refused (room deleted, hub shutting down): they hear `why`.
    pub(crate) fn drain(&mut self) -> Vec<Waiter> {
        self.len = 0;
        self.lines.drain(..).flat_map(|l| l.waiters).collect()
    }
}

/// Who a request comes from, for fairness: its API key (`Authorization: Bearer` or
/// `x-api-key`) when it sends one that is not the room's shared password, else its address
/// (IPv6: its /64, as one machine holds a whole /64). Keyed with the hub's own random salt,
/// so the number (shown in events as hex) reveals nothing of the key.
pub(crate) fn client_key(salt: &[u8; 16], api_key: Option<&[u8]>, ip: IpAddr) -> u64 {
    use blake2::digest::{Update, VariableOutput};
    // An 8-byte output is within BLAKE2b's range: this cannot fail.
    let mut h = blake2::Blake2bVar::new(8).expect("8 is a valid BLAKE2b output size");
    h.update(salt);
    match api_key {
        Some(k) => {
            h.update(b"key:");
            h.update(k);
        }
        None => {
            h.update(b"ip:");
            match crate::hub::guard::limits::client_key(ip) {
                IpAddr::V4(a) => h.update(&a.octets()),
                IpAddr::V6(a) => h.update(&a.octets()),
            }
        }
    }
    let mut out = [0u8; 8];
    // The buffer is the output size chosen above.
    let _ = h.finalize_variable(&mut out);
    u64::from_be_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(q: &mut Queue, client: u64, requested: &str) -> (u64, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        let id = q.next_id();
        q.push(Waiter {
            id,
            client,
            want: Arc::new(Want {
                requested: requested.into(),
                tried: Vec::new(),
                dialect: None,
                only: false,
                prefix: Arc::from(Vec::new()),
            }),
            since: Instant::now(),
            affinity_until: None,
            tx,
        });
        (id, rx)
    }

    #[test]
    fn lines_take_turns() {
        let mut q = Queue::default();
        for _ in 0..5 {
            waiter(&mut q, 1, "m");
        }
        waiter(&mut q, 2, "m");
        waiter(&mut q, 3, "m");
        waiter(&mut q, 2, "m");
        assert_eq!(q.len(), 8);
        assert_eq!(q.waiting(1), 5);
        let order: Vec<u64> = q.snapshot().iter().map(|(c, _, _)| *c).collect();
        assert_eq!(order, [1, 2, 3, 1, 2, 1, 1, 1]);
        let positions: Vec<usize> = {
            let mut q2 = Queue::default();
            [1, 1, 2, 3, 2, 1]
                .iter()
                .map(|&c| {
                    let (tx, _rx) = oneshot::channel();
                    let id = q2.next_id();
                    q2.push(Waiter {
                        id,
                        client: c,
                        want: q.lines[0].waiters[0].want.clone(),
                        since: Instant::now(),
                        affinity_until: None,
                        tx,
                    })
                })
                .collect()
        };
        // Each as it came: 1 1 2 3 2 1 queue in turn order 1 2 3 1 2 1.
        assert_eq!(positions, [1, 2, 2, 3, 5, 6]);
        // Served one at a time (a free slot each), the greedy client 1 gets every third turn
        // while the others wait, then the rest.
        let mut served = Vec::new();
        for _ in 0..8 {
            let mut once = true;
            for (w, _) in q.dispatch(|_| std::mem::take(&mut once).then_some(("lease", true))) {
                served.push(w.client);
            }
        }
        assert_eq!(served, [1, 2, 3, 1, 2, 1, 1, 1]);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_refusal_uses_no_turn() {
        let mut q = Queue::default();
        waiter(&mut q, 1, "gone");
        waiter(&mut q, 1, "m");
        waiter(&mut q, 2, "m");
        let mut first = true;
        let answered = q.dispatch(|w| match w.want.requested.as_str() {
            "gone" => Some(("refused", false)),
            _ if std::mem::take(&mut first) => Some(("lease", true)),
            _ => None,
        });
        let got: Vec<(u64, &str)> = answered.iter().map(|(w, g)| (w.client, *g)).collect();
        // Client 1's refused waiter did not cost it its turn.
        assert_eq!(got, [(1, "refused"), (1, "lease")]);
        assert_eq!(q.snapshot()[0].0, 2);
    }

    #[test]
    fn another_models_waiter_does_not_block() {
        let mut q = Queue::default();
        let (_a, _ra) = waiter(&mut q, 1, "big");
        let (_b, mut rb) = waiter(&mut q, 1, "small");
        let answered = q.dispatch(|w| {
            (w.want.requested == "small").then_some((Err(SelectError::NoMatch), false))
        });
        assert_eq!(answered.len(), 1);
        assert_eq!(answered[0].0.want.requested, "small");
        for (w, g) in answered {
            let _ = w.tx.send(g);
        }
        assert!(matches!(rb.try_recv(), Ok(Err(SelectError::NoMatch))));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn removal_and_drain() {
        let mut q = Queue::default();
        let (a, _ra) = waiter(&mut q, 1, "m");
        let (b, _rb) = waiter(&mut q, 2, "m");
        assert!(q.remove(a).is_some());
        assert!(q.remove(a).is_none());
        assert_eq!(q.waiting(1), 0);
        assert!(q.get_mut(b).is_some());
        assert_eq!(q.drain().len(), 1);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn client_keys() {
        let salt = [7u8; 16];
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        assert_eq!(
            client_key(&salt, None, a),
            client_key(&salt, None, b),
            "one /64"
        );
        assert_ne!(client_key(&salt, None, a), client_key(&salt, None, c));
        assert_ne!(
            client_key(&salt, Some(b"k1"), v4),
            client_key(&salt, Some(b"k2"), v4)
        );
        assert_eq!(
            client_key(&salt, Some(b"k1"), v4),
            client_key(&salt, Some(b"k1"), a)
        );
        assert_ne!(
            client_key(&[8; 16], Some(b"k1"), v4),
            client_key(&salt, Some(b"k1"), v4)
        );
    }
}
