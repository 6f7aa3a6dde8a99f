//! A room's fair queue: the requests waiting for a participant slot when every participant
//! that could take them is full.
//!
//! Fairness is per client (see [`client_key`]), by start-time fair queuing: each request gets a
//! virtual start tag, the later of the queue's virtual time and the tag after its client's
//! previous request, and waiters are served in tag order (arrival order among equal tags).
//! The virtual time is the lowest tag still running or waiting, so a client that keeps one
//! request in flight (it cannot send the next before the answer) keeps its place while that
//! one runs, rather than losing the turns that went by meanwhile; and among equal tags the
//! client with fewer requests running goes first.
//! A client with fifty requests waiting has tags stretching fifty turns ahead, so a client that
//! sends one request now and then is served at the next free slot, ahead of that backlog —
//! not behind it, as a plain round-robin that puts a returning client at the back would do —
//! while two clients that always have requests waiting get equal turns. A client's own
//! requests keep their order. A waiter that leaves unserved gives its turn back.
//!
//! When a slot frees, [`Queue::dispatch`] offers it in tag order to the first waiter of each
//! client that the slot can serve (another model's waiter ahead does not block it).
//! Everything here runs under the room's lock, with no `.await`: a waiter's task sleeps on its
//! own channel and is handed its participant directly, so a freed slot never wakes every
//! waiter.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
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
/// Requests one address (IPv6: /64) may have waiting in one room, whatever keys it sends, by
/// default (`serve --queue-per-address`): keys are not identities in an open room, and a host
/// inventing one per request must not fill the queue.
pub const DEFAULT_QUEUE_PER_ADDRESS: usize = 128;
/// Longest wait for a slot, by default (`serve --queue-timeout`).
pub const DEFAULT_QUEUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What a request asks of the room: everything choosing a participant for it needs.
#[derive(Debug)]
pub(crate) struct Want {
    /// A participant id, `model:NAME`, a model name, or `*`/`any`.
    pub(crate) requested: Arc<str>,
    /// Participants this request already failed to reach.
    pub(crate) tried: Vec<String>,
    /// The protocol the request came in, when not OpenAI's.
    pub(crate) dialect: Option<Protocol>,
    /// Only participants speaking `dialect` may take it.
    pub(crate) only: bool,
    /// Its prompt's prefix chain (empty unless the room routes cache-aware).
    pub(crate) prefix: Arc<[PrefixBlock]>,
    /// Its client ([`client_key`]).
    pub(crate) client: u64,
    /// Its address's key ([`client_key`] without an API key).
    pub(crate) address: u64,
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
    /// The participant holding the most of its prompt when it came (cache-aware rooms): what
    /// it counts toward as waiting demand.
    pub(crate) prefers: Option<String>,
    /// Its virtual start tag and arrival number (set by [`Queue::push`]).
    tag: u64,
    seq: u64,
}

impl Waiter {
    pub(crate) fn new(
        id: u64,
        client: u64,
        want: Arc<Want>,
        since: Instant,
        affinity_until: Option<Instant>,
        tx: oneshot::Sender<Grant>,
    ) -> Self {
        Waiter {
            id,
            client,
            want,
            since,
            affinity_until,
            tx,
            prefers: None,
            tag: 0,
            seq: 0,
        }
    }

    fn order(&self) -> (u64, u64) {
        (self.tag, self.seq)
    }

    /// Its virtual start tag.
    pub(crate) fn tag(&self) -> u64 {
        self.tag
    }
}

/// One client's waiting requests, oldest first.
struct Line {
    client: u64,
    waiters: VecDeque<Waiter>,
}

/// A room's queue.
#[derive(Default)]
pub(crate) struct Queue {
    /// One per client with requests waiting.
    lines: Vec<Line>,
    /// Per client, the tag after its last request's: where its next one starts, unless the
    /// virtual time is past it. Entries behind the virtual time mean nothing and are dropped.
    next_tag: HashMap<u64, u64>,
    /// The tag of the last request served.
    now: u64,
    /// Tags of the requests served from the queue and still running (tag → how many).
    running: std::collections::BTreeMap<u64, u32>,
    /// Requests running per client (served from the queue or not).
    running_by_client: HashMap<u64, u32>,
    len: usize,
    next_id: u64,
    arrivals: u64,
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

    /// Requests from `address` waiting, whatever their keys.
    pub(crate) fn waiting_from(&self, address: u64) -> usize {
        self.waiters().filter(|w| w.want.address == address).count()
    }

    /// A fresh waiter id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// The virtual time: the lowest tag running or waiting, else the last served.
    fn virtual_time(&self) -> u64 {
        let running = self.running.keys().next().copied();
        let waiting = self
            .lines
            .iter()
            .filter_map(|l| l.waiters.front().map(|w| w.tag))
            .min();
        match (running, waiting) {
            (Some(r), Some(w)) => r.min(w),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => self.now,
        }
    }

    /// A request of `client` runs now (`tag`: served from the queue with it), until
    /// [`Queue::finished`].
    pub(crate) fn started(&mut self, client: u64, tag: Option<u64>) {
        *self.running_by_client.entry(client).or_insert(0) += 1;
        if let Some(tag) = tag {
            *self.running.entry(tag).or_insert(0) += 1;
        }
    }

    /// A request [`started`](Queue::started) let go of its slot.
    pub(crate) fn finished(&mut self, client: u64, tag: Option<u64>) {
        fn down(n: Option<&mut u32>) -> bool {
            n.map(|n| {
                *n = n.saturating_sub(1);
                *n == 0
            })
            .unwrap_or(false)
        }
        if down(self.running_by_client.get_mut(&client)) {
            self.running_by_client.remove(&client);
        }
        if let Some(tag) = tag
            && down(self.running.get_mut(&tag))
        {
            self.running.remove(&tag);
        }
    }

    /// Add a waiter behind its client's others, with its tag. Returns its position in turn
    /// order (1: next), were nobody else to come.
    pub(crate) fn push(&mut self, mut waiter: Waiter) -> usize {
        self.len += 1;
        self.arrivals += 1;
        let client = waiter.client;
        let now = self.virtual_time();
        let next = self.next_tag.entry(client).or_insert(0);
        waiter.tag = (*next).max(now);
        waiter.seq = self.arrivals;
        *next = waiter.tag + 1;
        let order = waiter.order();
        match self.lines.iter_mut().find(|l| l.client == client) {
            Some(line) => line.waiters.push_back(waiter),
            None => self.lines.push(Line {
                client,
                waiters: VecDeque::from([waiter]),
            }),
        }
        1 + self
            .lines
            .iter()
            .flat_map(|l| l.waiters.iter())
            .filter(|w| w.order() < order)
            .count()
    }

    /// Take waiter `wi` of line `li` out; one that leaves unserved gives its turn back (its
    /// client's later waiters move up a turn).
    fn take(&mut self, li: usize, wi: usize, served: bool) -> Option<Waiter> {
        let now = self.virtual_time();
        let line = self.lines.get_mut(li)?;
        let w = line.waiters.remove(wi)?;
        if !served {
            for later in line.waiters.iter_mut().skip(wi) {
                later.tag = later.tag.saturating_sub(1).max(now);
            }
        }
        if line.waiters.is_empty() {
            self.lines.swap_remove(li);
        }
        self.len -= 1;
        if served {
            self.now = self.now.max(w.tag);
            self.started(w.client, Some(w.tag));
        } else if let Some(next) = self.next_tag.get_mut(&w.client) {
            *next = next.saturating_sub(1).max(now);
        }
        if self.next_tag.len() > 2 * self.lines.len() + 64 {
            let now = self.virtual_time();
            self.next_tag.retain(|_, next| *next > now);
        }
        Some(w)
    }

    /// Take a waiter out (it gave up: deadline, or its client left). `None`: it was already
    /// served or refused.
    pub(crate) fn remove(&mut self, id: u64) -> Option<Waiter> {
        let (li, wi) = self
            .lines
            .iter()
            .enumerate()
            .find_map(|(li, l)| l.waiters.iter().position(|w| w.id == id).map(|wi| (li, wi)))?;
        self.take(li, wi, false)
    }

    /// Every waiter, in no particular order.
    pub(crate) fn waiters(&self) -> impl Iterator<Item = &Waiter> {
        self.lines.iter().flat_map(|l| l.waiters.iter())
    }

    /// A waiter, to change what it allows.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.lines
            .iter_mut()
            .flat_map(|l| l.waiters.iter_mut())
            .find(|w| w.id == id)
    }

    /// Hand out what can be handed out: `offer` is asked, for each client's waiters in turn
    /// order (its first that can be answered, so another model's waiter ahead blocks
    /// nothing), whether it can be answered now — `Some((answer, true))`: served;
    /// `Some((answer, false))`: answered without being served (it never will be: its turn is
    /// given back); `None`: not now. Each answered waiter leaves the queue, until no waiter can
    /// be answered. Returns the waiters answered with their answers, for the caller to send
    /// (under the same lock) and count.
    pub(crate) fn dispatch<G>(
        &mut self,
        mut offer: impl FnMut(&Waiter) -> Option<(G, bool)>,
    ) -> Vec<(Waiter, G)> {
        let mut answered = Vec::new();
        'rounds: loop {
            // Clients in the order of their first waiter's turn (at equal tags, the one with
            // fewer running first).
            let mut order: Vec<usize> = (0..self.lines.len()).collect();
            order.sort_by_key(|&li| {
                let line = &self.lines[li];
                let running = self.running_by_client.get(&line.client).copied();
                line.waiters
                    .front()
                    .map(|w| (w.tag, running.unwrap_or(0), w.seq))
            });
            for li in order {
                for wi in 0..self.lines[li].waiters.len() {
                    let Some((answer, served)) = offer(&self.lines[li].waiters[wi]) else {
                        continue;
                    };
                    // The indices were just read: this cannot miss.
                    let Some(w) = self.take(li, wi, served) else {
                        break 'rounds;
                    };
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
        let mut all: Vec<&Waiter> = self.lines.iter().flat_map(|l| l.waiters.iter()).collect();
        all.sort_by_key(|w| w.order());
        all.iter()
            .map(|w| (w.client, w.want.requested.as_ref(), w.since))
            .collect()
    }

    /// Every waiter refused (room deleted, hub shutting down): they hear `why`.
    pub(crate) fn drain(&mut self) -> Vec<Waiter> {
        self.len = 0;
        self.next_tag.clear();
        self.lines.drain(..).flat_map(|l| l.waiters).collect()
    }
}

/// Who a request comes from, for fairness: its API key (`Authorization: Bearer` or
/// `x-api-key`) when it sends one that is not the room's shared password, else its address
/// (IPv6: its /64, as one machine holds a whole /64). Keyed with the hub's own random salt,
/// so the number (shown in events as hex) reveals nothing of the key.
pub(crate) fn client_key(salt: &RandomState, api_key: Option<&[u8]>, ip: IpAddr) -> u64 {
    // SipHash under the hub's secret 128-bit key: a keyed PRF, and cheap (this runs twice for
    // every proxied request; perf: BLAKE2b here was 1.45 % of the hub's samples, this 0.2 %).
    match api_key {
        Some(k) => salt.hash_one((b"key:", k)),
        None => match crate::hub::guard::limits::client_key(ip) {
            IpAddr::V4(a) => salt.hash_one((b"ip4:", a.octets())),
            IpAddr::V6(a) => salt.hash_one((b"ip6:", a.octets())),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(q: &mut Queue, client: u64, requested: &str) -> (u64, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        let id = q.next_id();
        let want = Arc::new(Want {
            requested: requested.into(),
            tried: Vec::new(),
            dialect: None,
            only: false,
            prefix: Arc::from(Vec::new()),
            client,
            address: 0,
        });
        q.push(Waiter::new(id, client, want, Instant::now(), None, tx));
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
                    let want = q.lines[0].waiters[0].want.clone();
                    q2.push(Waiter::new(id, c, want, Instant::now(), None, tx))
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
    fn a_returning_client_goes_ahead_of_a_backlog() {
        let mut q = Queue::default();
        for _ in 0..10 {
            waiter(&mut q, 1, "m");
        }
        waiter(&mut q, 2, "m");
        // Client 2 is served, then comes back while client 1 still has a backlog.
        let serve_one = |q: &mut Queue| {
            let mut once = true;
            q.dispatch(|_| std::mem::take(&mut once).then_some(((), true)))
                .pop()
                .map(|(w, _)| w.client)
        };
        assert_eq!(serve_one(&mut q), Some(1));
        assert_eq!(serve_one(&mut q), Some(2));
        assert_eq!(serve_one(&mut q), Some(1));
        waiter(&mut q, 2, "m");
        // Next after the one client 1 has at the current turn, not after its whole backlog.
        assert_eq!(serve_one(&mut q), Some(2));
        assert_eq!(q.waiting(1), 8);
        // The remembered tags stay bounded by the clients waiting.
        for c in 100..400 {
            let (id, _rx) = waiter(&mut q, c, "m");
            q.remove(id);
        }
        assert!(
            q.next_tag.len() <= 2 * q.lines.len() + 64 + 1,
            "{}",
            q.next_tag.len()
        );
    }

    #[test]
    fn a_refusal_uses_no_turn() {
        let mut q = Queue::default();
        waiter(&mut q, 1, "gone");
        waiter(&mut q, 1, "m");
        waiter(&mut q, 2, "m");
        let mut first = true;
        let answered = q.dispatch(|w| match w.want.requested.as_ref() {
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
            (&*w.want.requested == "small").then_some((Err(SelectError::NoMatch), false))
        });
        assert_eq!(answered.len(), 1);
        assert_eq!(&*answered[0].0.want.requested, "small");
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
        let salt = RandomState::new();
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
            client_key(&RandomState::new(), Some(b"k1"), v4),
            client_key(&salt, Some(b"k1"), v4)
        );
    }
}
