//! Per-room event broadcast with replay.
//!
//! An event is encoded once (`id:`/`event:`/`data:` lines) into a `Bytes`, kept in a bounded
//! ring for replay, and the same `Bytes` is handed to every subscriber's bounded queue (its
//! [`Mailbox`]: a deque and a waker behind one small lock, about 100 bytes while empty, where
//! a channel took 1.4 KB). A subscriber whose queue is full has fallen too far behind: it is
//! evicted (its stream is cut at once, even mid-write) instead of being buffered without limit
//! or slowing the others.
//!
//! Event ids increase by one per room and start at the room's creation time in milliseconds ×
//! 1000, so an id from before a hub restart is recognisable. A reconnect with `Last-Event-ID`
//! gets every event it missed from the ring, or — if the ring no longer reaches back that far, or
//! the id is not from this room's history — a `resync` event first, telling it to refetch state.

use crate::types::event::{self, Kind};
use std::collections::VecDeque;
use std::task::{Context, Poll};
use std::time::Duration;

use std::sync::{Arc, Mutex};
use std::task::Waker;

use bytes::Bytes;
use tokio::time::{Interval, MissedTickBehavior, interval_at};

use crate::http::BodyStream;
use crate::http::sse::{KEEP_ALIVE, encode_event};

/// Default number of events a room keeps for replay.
pub const EVENT_RING: usize = 256;
/// Most bytes of encoded events a room keeps for replay, whatever their number: a room whose
/// participants send large entries (model lists) keeps fewer of them.
pub const EVENT_RING_BYTES: usize = 1024 * 1024;
/// Default number of events a subscriber may have queued before it is evicted.
pub const SUBSCRIBER_QUEUE: usize = 256;
/// Interval of the `: keep-alive` comment on every stream.
pub const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

struct Subscriber {
    key: u64,
    mailbox: Arc<Mailbox>,
    /// Events it may have waiting before it is evicted.
    cap: usize,
}

/// Most queue slots a subscriber keeps allocated while its queue is empty.
const MAILBOX_KEEP: usize = 8;

/// One subscriber's queue: the events published for it and not yet sent, and the task to wake.
#[derive(Default)]
pub struct Mailbox(Mutex<MailboxInner>);

#[derive(Default)]
struct MailboxInner {
    queue: VecDeque<Bytes>,
    waker: Option<Waker>,
    state: MailboxState,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum MailboxState {
    #[default]
    Open,
    /// No more events will come (the room closed its streams): end after the queued ones.
    Closed,
    /// Fell too far behind: cut the stream at once.
    Evicted,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, MailboxInner> {
        crate::sync::lock(&self.0)
    }

    /// Queue an event; false (and evicted) when `cap` are waiting already.
    fn deliver(&self, event: &Bytes, cap: usize) -> bool {
        let mut inner = self.lock();
        let ok = inner.queue.len() < cap;
        if ok {
            inner.queue.push_back(event.clone());
        } else {
            inner.state = MailboxState::Evicted;
            inner.queue = VecDeque::new();
        }
        Self::wake(&mut inner);
        ok
    }

    fn wake(inner: &mut MailboxInner) {
        if let Some(w) = inner.waker.take() {
            w.wake();
        }
    }

    fn close(&self) {
        let mut inner = self.lock();
        if inner.state == MailboxState::Open {
            inner.state = MailboxState::Closed;
        }
        Self::wake(&mut inner);
    }

    fn register(inner: &mut MailboxInner, cx: &Context<'_>) {
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
    }

    /// The next event; `None` once the room closed the stream and the queue is empty.
    pub fn poll_recv(&self, cx: &Context<'_>) -> Poll<Option<Bytes>> {
        let mut inner = self.lock();
        if let Some(b) = inner.queue.pop_front() {
            return Poll::Ready(Some(b));
        }
        // A subscriber that once fell behind does not keep the room it needed then.
        if inner.queue.capacity() > MAILBOX_KEEP {
            inner.queue = VecDeque::new();
        }
        if inner.state == MailboxState::Closed {
            return Poll::Ready(None);
        }
        Self::register(&mut inner, cx);
        Poll::Pending
    }

    /// Ready once the subscriber is evicted.
    pub fn poll_evicted(&self, cx: &Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.state == MailboxState::Evicted {
            return Poll::Ready(());
        }
        Self::register(&mut inner, cx);
        Poll::Pending
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Bytes> {
        self.lock().queue.pop_front()
    }

    pub fn is_evicted(&self) -> bool {
        self.lock().state == MailboxState::Evicted
    }
}

/// One room's event history and subscribers. Lives under the room's lock; nothing here blocks.
pub struct EventLog {
    /// The id of the first event this log assigned.
    base: u64,
    next_id: u64,
    ring: VecDeque<(u64, Bytes)>,
    ring_cap: usize,
    /// Encoded bytes in `ring` (at most [`EVENT_RING_BYTES`], beyond its newest event).
    ring_bytes: usize,
    /// The highest id that has fallen out of the ring (`base - 1` while none has).
    evicted_upto: u64,
    subs: Vec<Subscriber>,
    next_key: u64,
    /// Subscribers evicted for falling behind, over the log's life.
    pub evictions: u64,
}

/// Where a new subscriber's stream starts, after `connected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// With the next event.
    Now,
    /// After this id (`Last-Event-ID`): what was missed, or `resync` first.
    After(u64),
    /// With every event the room still keeps (`?history=1`): a new page's recent past.
    Kept,
}

/// What a new subscriber gets.
pub struct Subscription {
    pub key: u64,
    pub mailbox: Arc<Mailbox>,
    /// Events to send before anything live (replay, possibly preceded by `resync`).
    pub backlog: Vec<Bytes>,
}

impl EventLog {
    pub fn new(base: u64, ring_cap: usize) -> Self {
        let base = base.max(1);
        EventLog {
            base,
            next_id: base,
            ring: VecDeque::with_capacity(ring_cap.min(64)),
            ring_cap: ring_cap.max(1),
            ring_bytes: 0,
            evicted_upto: base - 1,
            subs: Vec::new(),
            next_key: 0,
            evictions: 0,
        }
    }

    /// Encode and broadcast an event; returns its id.
    pub fn publish(&mut self, event: &str, data: &[u8]) -> u64 {
        self.publish_with(|id| encode_event(Some(id), event, data))
    }

    /// Broadcast `value` as JSON under `event` (serialised once, straight into the frame).
    pub fn publish_json<T: serde::Serialize + ?Sized>(&mut self, event: &str, value: &T) -> u64 {
        self.publish_with(|id| crate::http::sse::encode_json(Some(id), event, value))
    }

    /// Keep and deliver the event `encode` makes with the next id.
    fn publish_with(&mut self, encode: impl FnOnce(u64) -> Bytes) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = encode(id);
        self.ring_bytes += bytes.len();
        self.ring.push_back((id, bytes.clone()));
        while self.ring.len() > self.ring_cap
            || (self.ring_bytes > EVENT_RING_BYTES && self.ring.len() > 1)
        {
            let Some((old, gone)) = self.ring.pop_front() else {
                break;
            };
            self.ring_bytes -= gone.len();
            self.evicted_upto = old;
        }
        let mut evicted = 0;
        self.subs.retain(|s| {
            let kept = s.mailbox.deliver(&bytes, s.cap);
            evicted += u64::from(!kept);
            kept
        });
        self.evictions += evicted;
        id
    }

    /// Register a subscriber. `last_id` is the client's `Last-Event-ID`, if it sent one.
    pub fn subscribe(&mut self, last_id: Option<u64>, queue: usize) -> Subscription {
        let mailbox = Arc::new(Mailbox::default());
        let key = self.next_key;
        self.next_key += 1;
        self.subs.push(Subscriber {
            key,
            mailbox: mailbox.clone(),
            cap: queue.max(1),
        });
        let mut backlog = Vec::new();
        if let Some(last) = last_id {
            let newest = self.next_id - 1;
            let complete = last >= self.evicted_upto && last <= newest;
            if !complete {
                let reason = if last > newest || last < self.base {
                    "unknown-event-id"
                } else {
                    "history-truncated"
                };
                let data = serde_json::to_vec(&event::Resync {
                    reason: reason.into(),
                })
                .unwrap_or_default();
                backlog.push(encode_event(None, Kind::Resync.name(), &data));
            }
            if last <= newest {
                backlog.extend(
                    self.ring
                        .iter()
                        .filter(|(id, _)| *id > last)
                        .map(|(_, b)| b.clone()),
                );
            }
        }
        Subscription {
            key,
            mailbox,
            backlog,
        }
    }

    pub fn unsubscribe(&mut self, key: u64) {
        self.subs.retain(|s| s.key != key);
    }

    pub fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    /// End every subscriber's stream after what it has queued (shutdown, room removed).
    pub fn close_all(&mut self) {
        for s in self.subs.drain(..) {
            s.mailbox.close();
        }
    }

    /// The id of the oldest event kept for replay (the next event's id while none is kept).
    pub fn oldest_kept(&self) -> u64 {
        self.evicted_upto + 1
    }

    /// The id the next event will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }
}

/// A subscriber's stream: the `connected` event, the backlog, then live events and keep-alive
/// comments. Dropping it unsubscribes (through `on_drop`).
pub struct SseStream {
    backlog: VecDeque<Bytes>,
    mailbox: Arc<Mailbox>,
    keepalive: Interval,
    on_drop: Option<Box<dyn FnOnce() + Send>>,
}

impl SseStream {
    pub fn new(
        first: Bytes,
        sub: Subscription,
        keepalive: Duration,
        on_drop: impl FnOnce() + Send + 'static,
    ) -> Self {
        let mut backlog = VecDeque::with_capacity(sub.backlog.len() + 1);
        backlog.push_back(first);
        backlog.extend(sub.backlog);
        let period = keepalive.max(Duration::from_millis(10));
        let mut keepalive = interval_at(tokio::time::Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
        SseStream {
            backlog,
            mailbox: sub.mailbox,
            keepalive,
            on_drop: Some(Box::new(on_drop)),
        }
    }
}

impl BodyStream for SseStream {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<Bytes>>> {
        if let Some(b) = self.backlog.pop_front() {
            return Poll::Ready(Some(Ok(b)));
        }
        match self.mailbox.poll_recv(cx) {
            Poll::Ready(item) => return Poll::Ready(item.map(Ok)),
            Poll::Pending => {}
        }
        match self.keepalive.poll_tick(cx) {
            Poll::Ready(_) => Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.mailbox.poll_evicted(cx)
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(backlog: &[Bytes]) -> Vec<String> {
        backlog
            .iter()
            .map(|b| {
                let s = std::str::from_utf8(b).unwrap();
                s.lines().next().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn replay_from_last_id() {
        let mut log = EventLog::new(1000, 4);
        for i in 0..3 {
            log.publish("e", format!("{i}").as_bytes());
        }
        let sub = log.subscribe(Some(1000), 8);
        assert_eq!(ids(&sub.backlog), ["id: 1001", "id: 1002"]);
        let sub = log.subscribe(Some(1002), 8);
        assert!(sub.backlog.is_empty());
        // Base minus one means "before the first event": everything is replayed.
        let sub = log.subscribe(Some(999), 8);
        assert_eq!(sub.backlog.len(), 3);
    }

    #[test]
    fn resync_when_history_is_gone_or_foreign() {
        let mut log = EventLog::new(1000, 2);
        for _ in 0..5 {
            log.publish("e", b"{}");
        }
        // Ring holds 1003, 1004; 1001 and 1002 are gone.
        let sub = log.subscribe(Some(1000), 8);
        assert_eq!(ids(&sub.backlog), ["event: resync", "id: 1003", "id: 1004"]);
        let sub = log.subscribe(Some(1002), 8);
        assert_eq!(ids(&sub.backlog), ["id: 1003", "id: 1004"]);
        let sub = log.subscribe(Some(5_000), 8);
        assert_eq!(ids(&sub.backlog), ["event: resync"]);
        let sub = log.subscribe(Some(3), 8);
        assert!(
            std::str::from_utf8(&sub.backlog[0])
                .unwrap()
                .contains("unknown-event-id")
        );
    }

    #[test]
    fn the_ring_is_bounded_in_bytes_too() {
        let mut log = EventLog::new(1000, 256);
        let big = vec![b'x'; 100 * 1024];
        for _ in 0..30 {
            log.publish("e", &big);
        }
        // 30 events of 100 KiB: only the newest 10 fit in 1 MiB.
        assert!(log.ring_bytes <= EVENT_RING_BYTES, "{}", log.ring_bytes);
        assert_eq!(log.ring.len(), 10);
        let sub = log.subscribe(Some(1000), 64);
        assert_eq!(ids(&sub.backlog)[0], "event: resync");
        assert_eq!(sub.backlog.len(), 11);
        // One event larger than the bound is still kept, alone.
        log.publish("e", &vec![b'y'; 2 * EVENT_RING_BYTES]);
        assert_eq!(log.ring.len(), 1);
    }

    #[test]
    fn a_mailbox_that_emptied_gives_back_its_room() {
        let mut log = EventLog::new(1, 64);
        let sub = log.subscribe(None, 64);
        for _ in 0..40 {
            log.publish("e", b"{}");
        }
        assert!(sub.mailbox.lock().queue.capacity() >= 40);
        let cx = Context::from_waker(std::task::Waker::noop());
        let mut got = 0;
        while let Poll::Ready(Some(_)) = sub.mailbox.poll_recv(&cx) {
            got += 1;
        }
        assert_eq!(got, 40);
        assert!(sub.mailbox.lock().queue.capacity() <= MAILBOX_KEEP);
    }

    #[tokio::test]
    async fn slow_subscriber_is_evicted_others_unaffected() {
        let mut log = EventLog::new(1, 64);
        let slow = log.subscribe(None, 2);
        let fast = log.subscribe(None, 2);
        for i in 0..5 {
            log.publish("e", b"{}");
            // The fast one keeps up.
            let got = fast.mailbox.try_recv().unwrap();
            assert!(got.starts_with(format!("id: {}", i + 1).as_bytes()));
        }
        assert_eq!(log.subscriber_count(), 1);
        assert_eq!(log.evictions, 1);
        assert!(slow.mailbox.is_evicted());
        assert!(!fast.mailbox.is_evicted());
        // Closing ends the stream after what is queued.
        log.publish("e", b"{}");
        log.close_all();
        assert!(fast.mailbox.try_recv().is_some());
        let waker = std::task::Waker::noop();
        let cx = Context::from_waker(waker);
        assert_eq!(fast.mailbox.poll_recv(&cx), Poll::Ready(None));
    }
}
