//! Rooms and participants, in memory.
//!
//! A map of rooms behind one `RwLock` (read on every request, written only to create a room);
//! each room has its own `Mutex` over its participants and its [`EventLog`]. A state change and
//! the event announcing it happen under the same lock, so subscribers see events in the order
//! the changes happened. No lock is ever held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::Serialize;

use super::error::StateError;
use crate::http::upstream::Target;
use crate::hub::guard::auth::RoomSecrets;
use crate::hub::metrics::Histogram;
use crate::hub::proxy::rewrite::Defaults;
use crate::hub::rooms::events::{EventLog, Since, Subscription};
use crate::hub::rooms::ids;
use crate::hub::rooms::models::{Dropped, ModelSet};
use crate::hub::rooms::persist::SavedRoom;
use crate::hub::rooms::prefix::PrefixCache;
use crate::hub::rooms::queue::{Grant, Queue, Waiter, Want};
use crate::types::event::{self, Kind};
use crate::types::{
    ModelInfo, ParticipantInfo, ParticipantStatus, RoomInfo, RoomSummary, Routing, now_ms,
};

/// Bounds on what the state holds.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub(crate) max_rooms: usize,
    pub(crate) max_participants_per_room: usize,
    pub(crate) max_subscribers_per_room: usize,
    /// Event subscribers across all rooms.
    pub(crate) max_subscribers: usize,
    pub(crate) event_ring: usize,
    pub(crate) subscriber_queue: usize,
    /// Rooms one address may have at once (0: no bound).
    pub(crate) max_rooms_per_ip: usize,
    /// Silence after which a participant is forgotten (removed, `participant:left`).
    pub(crate) forget_after: std::time::Duration,
    /// Silence after which a participant's id may be taken by a new join (its liveness, not
    /// its routing status: a participant marked offline because its connections failed still
    /// owns its id while it checks in).
    pub(crate) participant_timeout: std::time::Duration,
    /// Slots of a participant that declares none (`--default-slots`).
    pub(crate) default_slots: u32,
    /// Routing of rooms created without a choice (`--routing`).
    pub(crate) routing: Routing,
    /// Requests waiting per room (`--queue-max`).
    pub(crate) queue_max: usize,
    /// Requests one client may have waiting per room (`--queue-per-client`).
    pub(crate) queue_per_client: usize,
    /// Requests one address may have waiting per room, whatever its keys
    /// (`--queue-per-address`).
    pub(crate) queue_per_address: usize,
    /// Longest wait in a queue (`--queue-timeout`).
    pub(crate) queue_timeout: std::time::Duration,
    /// Longest a queued request may be passed over while it waits for a busy participant
    /// holding more of its prompt (`--affinity-wait-ms`; cache-aware rooms).
    pub(crate) affinity_wait: std::time::Duration,
}

/// A cache-aware choice stays with the participant holding the longest prefix while it has at
/// most this many requests in flight more than the least loaded candidate; past that, loads
/// are too uneven and the least loaded is chosen.
pub(crate) const AFFINITY_MAX_EXTRA_LOAD: u32 = 2;

/// How a room chooses, fixed when it is made, and where its queue is counted.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) routing: Routing,
    pub(crate) default_slots: u32,
    pub(crate) affinity_wait: std::time::Duration,
    pub(crate) stats: Arc<QueueStats>,
}

/// The queues' counters across rooms, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct QueueStats {
    pub(crate) queued: std::sync::atomic::AtomicU64,
    /// By outcome, in the order of [`Left::ALL`].
    pub(crate) left: [std::sync::atomic::AtomicU64; 4],
    /// Refused at the door: the room's queue full.
    pub(crate) rejected_full: std::sync::atomic::AtomicU64,
    /// Refused at the door: the client's share of the queue full.
    pub(crate) rejected_client: std::sync::atomic::AtomicU64,
    pub(crate) wait: Histogram,
}

/// Why a request left the queue (the `outcome` of `llm:dequeued`, the metrics' label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Left {
    Served,
    Timeout,
    Abandoned,
    Refused,
}

impl Left {
    pub(crate) const ALL: [Left; 4] = [Left::Served, Left::Timeout, Left::Abandoned, Left::Refused];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Left::Served => "served",
            Left::Timeout => "timeout",
            Left::Abandoned => "abandoned",
            Left::Refused => "refused",
        }
    }
}

/// One participant as the hub tracks it.
#[derive(Clone, Debug)]
pub(crate) struct Participant {
    /// As registered; `status` here is only ever `Online` or `Offline`.
    pub(crate) info: ParticipantInfo,
    /// Proxied requests in flight to this participant (never more than its slots).
    pub(crate) in_flight: u32,
    /// Slots that freed a moment ago, held before the queue is offered them.
    pub(crate) held: u32,
    /// Which registration of its id this is (new at each join that is not a re-join in
    /// place): a lease gives its slot back only to the registration it was taken on, so one
    /// that left and joined again starts from zero in flight.
    pub(crate) generation: u64,
    /// The prompt prefixes it was last given (cache-aware rooms).
    pub(crate) prefixes: PrefixCache,
    /// Consecutive failed connection attempts.
    pub(crate) conn_failures: u32,
    /// The endpoint, parsed and normalised once at join.
    pub(crate) target: Arc<Target>,
    /// The models it serves, indexed by name, each encoded once for the body rewrite (in the
    /// order of `info.models`). Shared with the leases.
    pub(crate) models: Arc<ModelSet>,
    /// BLAKE2b of the participant secret (hex): what proves ownership of this id on leave and
    /// re-join, and what its tunnels authenticate with. The secret itself is only ever in the
    /// join answer; this is never listed or broadcast.
    pub(crate) secret_hash: String,
    /// Serves through reverse tunnels (the hub never connects to its endpoint).
    pub(crate) tunnel: bool,
    /// Joined from the hub's own machine: its direct endpoint may be a local address.
    pub(crate) local_ok: bool,
    /// Its idle connections' pool: the endpoint's, apart for participants joined on the hub's
    /// machine (their connections may reach what others may not, so they are never shared).
    pub(crate) pool_key: Arc<str>,
    /// Its health checks have carried its secret: from then on, those that do not are
    /// refused, so nobody else can keep this registration alive once its agent is gone.
    pub(crate) health_authenticated: bool,
    /// The last sign of life, on the runtime's monotonic clock (virtual in tests that pause
    /// time): liveness must not jump when the wall clock is stepped (a router without a
    /// battery-backed clock syncing NTP). `info.lastSeen` keeps the wall time for the wire.
    pub(crate) seen: tokio::time::Instant,
}

impl Participant {
    /// Requests it runs at once.
    pub(crate) fn slots(&self, default: u32) -> u32 {
        self.info.slots.unwrap_or(default).max(1)
    }

    /// All its slots are taken (slots held a moment after they freed count as taken, see
    /// [`RELEASE_GRACE`]).
    fn full(&self, default_slots: u32) -> bool {
        self.in_flight + self.held >= self.slots(default_slots)
    }

    /// The status as listed: `busy` while a request is in flight.
    pub(crate) fn status(&self) -> ParticipantStatus {
        match self.info.status {
            ParticipantStatus::Offline => ParticipantStatus::Offline,
            _ if self.in_flight > 0 => ParticipantStatus::Busy,
            _ => ParticipantStatus::Online,
        }
    }

    /// The participant as listed and broadcast.
    pub(crate) fn snapshot(&self) -> ParticipantInfo {
        let mut info = self.info.clone();
        info.status = self.status();
        info.in_flight = self.in_flight;
        info
    }
}

/// What a room's lock protects.
pub(crate) struct RoomInner {
    /// In join order.
    pub(crate) participants: Vec<Participant>,
    pub(crate) events: EventLog,
    /// Rotates ties between equally loaded candidates.
    rotation: usize,
    /// Requests waiting for a slot.
    pub(crate) queue: Queue,
    /// Registrations made so far (each participant's `generation`).
    generations: u64,
    /// How long a request holds a slot, on average (exponentially weighted, milliseconds): what
    /// `Retry-After` is estimated from.
    service_ms: f64,
}

impl RoomInner {
    pub(crate) fn find(&self, id: &str) -> Option<usize> {
        self.participants.iter().position(|p| p.info.id == id)
    }

    /// A generation of `model` by participant `id` completed: the model is in its memory now.
    /// Where the participant had said it was not, its entry says loaded from now on (until
    /// its next look at its server says otherwise), and `participant:updated` announces it.
    pub(crate) fn ran(&mut self, id: &str, model: &str) {
        let Some(i) = self.find(id) else {
            return;
        };
        let p = &mut self.participants[i];
        let Some(m) = p.info.models.iter_mut().find(|m| m.name == model) else {
            return;
        };
        if m.loaded == Some(false) {
            m.loaded = Some(true);
            let snapshot = p.snapshot();
            self.publish(Kind::ParticipantUpdated, &snapshot);
        }
    }

    /// The models of participant `info` (its id, its config) from `primary` and `list`, within
    /// the bounds ([`ModelSet::build`]), leaving out names that are, by
    /// [`model_key`](crate::types::model_key), another participant's id. `info.model` and
    /// `info.models` become what was kept; returned: the set and what was left out. A short
    /// list checks its names by scanning the ids, no allocation; a long one builds a set of
    /// them once, so a join costs O(participants) whatever its list.
    fn build_models(
        &self,
        primary: Option<&str>,
        list: Vec<ModelInfo>,
        info: &mut ParticipantInfo,
    ) -> Result<(ModelSet, Vec<Dropped>), StateError> {
        let me = info.id.as_str();
        let others = || self.participants.iter().filter(|p| p.info.id != me);
        let ids = std::cell::OnceCell::new();
        let many = names_in(&list) > FEW_NAMES;
        let is_other_id = |key: &str| {
            if many {
                ids.get_or_init(|| {
                    others()
                        .map(|p| crate::types::model_key(&p.info.id).into_owned())
                        .collect::<std::collections::HashSet<_>>()
                })
                .contains(key)
            } else {
                others().any(|p| crate::types::model_key(&p.info.id) == key)
            }
        };
        let (set, kept, dropped) = ModelSet::build(primary, list, &info.config, &is_other_id)
            .map_err(StateError::Invalid)?;
        info.model = kept[0].name.clone();
        info.models = kept;
        Ok((set, dropped))
    }

    /// Count and announce a waiter leaving the queue.
    fn left_queue(&mut self, room: &Room, w: &Waiter, why: Left) {
        let waited = w.since.elapsed();
        let stats = &room.policy.stats;
        stats.left[why as usize].fetch_add(1, Ordering::Relaxed);
        stats.wait.observe(waited);
        let depth = self.queue.len();
        self.publish(
            Kind::LlmDequeued,
            &event::LlmDequeued {
                client: client_hex(w.client).into(),
                model: w.want.requested.as_ref().into(),
                outcome: why.name().into(),
                waited_ms: waited.as_millis() as u64,
                depth,
            },
        );
    }

    /// Seconds until `ahead` queued requests have been served, roughly (for `Retry-After`):
    /// the average time a slot is held, times the rounds they take over the room's slots.
    fn retry_after(&self, ahead: usize, default_slots: u32) -> u64 {
        let slots: u64 = self
            .participants
            .iter()
            .filter(|p| p.info.status != ParticipantStatus::Offline)
            .map(|p| u64::from(p.slots(default_slots)))
            .sum::<u64>()
            .max(1);
        let secs = self.service_ms * (ahead as f64 + 1.0) / slots as f64 / 1000.0;
        (secs.ceil() as u64).clamp(1, 600)
    }

    /// The participants as listed and broadcast, in join order.
    fn listed(&self) -> Vec<ParticipantInfo> {
        self.participants
            .iter()
            .map(Participant::snapshot)
            .collect()
    }

    /// Broadcast `data` as JSON under `event`.
    pub(crate) fn publish<T: Serialize + ?Sized>(&mut self, event: Kind, data: &T) {
        self.events.publish_json(event.name(), data);
    }
}

/// A room.
pub(crate) struct Room {
    pub(crate) info: RoomInfo,
    /// Password hash and host-token hash; never listed or broadcast.
    pub(crate) secrets: RoomSecrets,
    /// The address (IPv6: its /64) that created it, for the per-address room bound; `None`
    /// for rooms restored from the state file and those an admin created.
    pub(crate) creator: Option<std::net::IpAddr>,
    pub(crate) policy: Policy,
    inner: Mutex<RoomInner>,
}

impl Room {
    /// Lock the room. A panic while holding the lock cannot leave the participant list
    /// half-written (every change is a single push/replace/remove), so poisoning is ignored.
    pub(crate) fn lock(&self) -> MutexGuard<'_, RoomInner> {
        crate::sync::lock(&self.inner)
    }

    pub(crate) fn participants(&self) -> Vec<ParticipantInfo> {
        self.lock().listed()
    }

    /// The participants, the requests waiting in the queue, and the id of the last event
    /// published, read together: a client that also follows the event stream applies only the
    /// events after that id to this picture.
    pub(crate) fn live(&self) -> (Vec<ParticipantInfo>, usize, u64) {
        let inner = self.lock();
        (
            inner.listed(),
            inner.queue.len(),
            inner.events.next_id() - 1,
        )
    }

    /// The room as `GET /rooms` lists it.
    pub(crate) fn summary(&self) -> RoomSummary {
        RoomSummary {
            id: self.info.id.clone(),
            code: self.info.code.clone(),
            name: self.info.name.clone(),
            host_id: self.info.host_id.clone(),
            created_at: self.info.created_at,
            participant_count: self.lock().participants.len(),
            password_protected: self.info.password_protected,
        }
    }
}

/// The payload naming one participant (`participant:left`, `:offline`, `:online`).
fn about(id: &str) -> event::ParticipantRef<'_> {
    event::ParticipantRef {
        participant_id: id.into(),
    }
}

/// One event subscriber counted against the hub-wide bound; dropping it frees the place.
pub(crate) struct SubscriberSlot(Arc<AtomicUsize>);

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Outcome of a health check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HealthOutcome {
    Ok,
    /// The participant had been offline and is back.
    BackOnline,
}

/// What a participant changes of its entry ([`State::update`]); `None` keeps the current.
#[derive(Debug, Default)]
pub(crate) struct Update {
    pub(crate) nickname: Option<String>,
    pub(crate) specs: Option<crate::types::MachineSpecs>,
    pub(crate) config: Option<crate::types::GenerationConfig>,
    /// The primary model (validated by the caller).
    pub(crate) model: Option<String>,
    /// The whole model list (bounded by [`ModelSet::build`]).
    pub(crate) models: Option<Vec<crate::types::ModelInfo>>,
    /// The APIs it speaks besides OpenAI's.
    pub(crate) protocols: Option<Vec<crate::types::Protocol>>,
    /// Its parallel slots (validated by the caller).
    pub(crate) slots: Option<u32>,
}

/// Largest participant entry, encoded as JSON (what every listing and event carries), not
/// counting its model list (bounded on its own by [`MAX_MODELS_JSON`]).
///
/// [`MAX_MODELS_JSON`]: crate::hub::rooms::models::MAX_MODELS_JSON
pub(crate) const MAX_PARTICIPANT_JSON: usize = 8 * 1024;

/// Refuse an entry over [`MAX_PARTICIPANT_JSON`] (its model list aside), whatever mix of long
/// fields (and characters JSON escapes) it has.
fn check_entry_size(info: &ParticipantInfo) -> Result<(), StateError> {
    // Serialising these plain structs cannot fail.
    let full = serde_json::to_vec(info).map_or(usize::MAX, |v| v.len());
    let models = serde_json::to_vec(&info.models).map_or(0, |v| v.len());
    let encoded = full.saturating_sub(models);
    if encoded > MAX_PARTICIPANT_JSON {
        return Err(StateError::Invalid(format!(
            "participant entry too large ({encoded} bytes as JSON besides its models, at most {MAX_PARTICIPANT_JSON})"
        )));
    }
    Ok(())
}

/// Consecutive connection failures after which a participant is marked offline.
pub(crate) const STRIKES_OFFLINE: u32 = 3;

/// A participant chosen for one request. While it lives the participant counts the request as
/// in flight (and lists as `busy`); dropping it releases that.
pub(crate) struct Lease {
    room: Arc<Room>,
    pub(crate) participant_id: String,
    pub(crate) target: Arc<Target>,
    /// The chosen model's name and the participant's config, encoded for the body rewrite.
    pub(crate) defaults: Arc<Defaults>,
    /// The participant's own name for the chosen model (what the upstream is asked for).
    pub(crate) model: Arc<str>,
    /// Reach it through a parked tunnel socket, not by connecting.
    pub(crate) tunnel: bool,
    /// Its endpoint may be a local address of the hub's machine (it joined from there).
    pub(crate) local_ok: bool,
    /// Where its idle connections are pooled (see `Participant::pool_key`).
    pub(crate) pool_key: Arc<str>,
    /// The request named this participant by id (no failover to others).
    pub(crate) explicit: bool,
    /// The participant had failed connections before this request (a success resets them).
    pub(crate) had_failures: bool,
    /// The participant speaks the request's own protocol (no translation needed).
    pub(crate) native: bool,
    /// When the slot was taken; the proxy times the request from it too.
    pub(crate) started: tokio::time::Instant,
    /// Its tag in the room's fair queue, when it came through it.
    queue_tag: Option<u64>,
    /// The client it runs for.
    client: u64,
    /// The participant's registration it was taken on.
    generation: u64,
    released: bool,
}

impl Lease {
    pub(crate) fn room(&self) -> &Arc<Room> {
        &self.room
    }

    /// Release under a lock the caller already holds on this lease's room: the slot goes to
    /// the next waiter in the room's queue, if one can take it.
    pub(crate) fn release(&mut self, inner: &mut RoomInner) {
        if !self.free_slot(inner) || inner.queue.len() == 0 {
            return;
        }
        // Others wait: the slot is held for a moment before they are offered it, so a client
        // that sends its next request at once is among them ([`RELEASE_GRACE`]).
        let (Ok(rt), Some(i)) = (
            tokio::runtime::Handle::try_current(),
            inner.find(&self.participant_id),
        ) else {
            dispatch(&self.room, inner);
            return;
        };
        inner.participants[i].held += 1;
        let (room, id) = (self.room.clone(), self.participant_id.clone());
        rt.spawn(async move {
            tokio::time::sleep(RELEASE_GRACE).await;
            let mut inner = room.lock();
            if let Some(i) = inner.find(&id) {
                let p = &mut inner.participants[i];
                p.held = p.held.saturating_sub(1);
            }
            dispatch(&room, &mut inner);
        });
    }

    /// Give the slot back without dispatching it (the caller does); whether it was held.
    fn free_slot(&mut self, inner: &mut RoomInner) -> bool {
        if std::mem::replace(&mut self.released, true) {
            return false;
        }
        let held = self.started.elapsed().as_secs_f64() * 1000.0;
        inner.service_ms = 0.8 * inner.service_ms + 0.2 * held;
        inner.queue.finished(self.client, self.queue_tag);
        if let Some(i) = inner.find(&self.participant_id)
            && inner.participants[i].generation == self.generation
        {
            let p = &mut inner.participants[i];
            p.in_flight = p.in_flight.saturating_sub(1);
        }
        true
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let room = self.room.clone();
        let mut inner = room.lock();
        self.release(&mut inner);
    }
}

/// How long a freed slot is held before the room's waiters are offered it (about one tick of
/// the runtime's timer). A client that sends its next request as soon as its answer ends (a
/// script, a benchmark: closed loop) gets there within this and competes for the slot by its
/// turn; offered at once, the slot would go to whoever was already waiting, and such a client
/// would wait a whole request behind every backlog. Measured (benches/fairness.sh): Jain's
/// index 0.91 offered at once, 0.999 held this long. Costs a slot this long idle per request
/// while others wait.
pub(crate) const RELEASE_GRACE: std::time::Duration = std::time::Duration::from_millis(1);

/// What a request's `model` names, read once for choosing a participant: `*`/`any` (every
/// participant, with its primary model), `model:NAME` (a model, never an id), or a bare
/// string (a participant id if one has it, else a model name). No participant can take the
/// wildcards or `model:` as its id (refused at join).
struct Asked<'a> {
    any: bool,
    /// The participant id it may be.
    id: Option<&'a str>,
    /// The model name it may be, and its key for [`ModelSet::resolve`].
    name: &'a str,
    key: std::borrow::Cow<'a, str>,
}

impl<'a> Asked<'a> {
    fn new(requested: &'a str) -> Self {
        let any = requested == "*" || requested.eq_ignore_ascii_case("any");
        let by_model = requested.strip_prefix("model:");
        let name = by_model.unwrap_or(requested);
        Asked {
            any,
            id: (!any && by_model.is_none()).then_some(requested),
            name,
            key: crate::types::model_key(name),
        }
    }

    /// The model of `p` it names (index, spelled exactly), as a model name or `*`.
    fn serves(&self, p: &Participant) -> Option<(usize, bool)> {
        if self.any {
            Some((0, true))
        } else {
            p.models.resolve(self.name, &self.key)
        }
    }
}

/// A client key as shown in events.
pub(crate) fn client_hex(client: u64) -> String {
    format!("{client:016x}")
}

/// Choose a participant with a free slot for `want` and lease it (its in-flight count goes up).
///
/// A participant id is served by that participant only, with its primary model; `*`/`any` by
/// any participant with its primary model; a name (or `model:NAME`) by every participant with
/// a model of that name or alias, spelled so or equal by
/// [`model_key`](crate::types::model_key). Participants offline, already tried by this
/// request, or (`only`) not speaking its protocol are left out, and so are those at their slots.
/// Among the rest, the least loaded (in-flight requests over slots) wins, then one that has the
/// model loaded, then one that speaks the request's protocol, then an exact spelling, the
/// remaining ties rotating. In a cache-aware room, the choice is first narrowed to the
/// candidates holding the longest head of the request's prompt, unless those have more than
/// [`AFFINITY_MAX_EXTRA_LOAD`] requests in flight over the least loaded; and with `wait`, a
/// request whose prompt a full participant holds enough more of (so that it would process at
/// most half the bytes the best free one would) is deferred rather than sent to a free one
/// that would recompute it ([`SelectError::Defer`]).
fn pick(
    room: &Arc<Room>,
    participants: &mut [Participant],
    rotation: &mut usize,
    want: &Want,
    wait: Option<&Demand>,
) -> Result<Lease, SelectError> {
    let policy = &room.policy;
    let dialect = want.dialect;
    let speaks = |p: &Participant| dialect.is_some_and(|d| p.info.protocols.contains(&d));
    let full = |p: &Participant| p.full(policy.default_slots);
    let cache_aware = policy.routing == Routing::CacheAware && !want.prefix.is_empty();
    let lease = |p: &mut Participant, model: usize, explicit: bool| {
        p.in_flight += 1;
        if cache_aware {
            p.prefixes.record(&want.prefix);
        }
        let served = &p.models.models[model];
        Lease {
            room: room.clone(),
            participant_id: p.info.id.clone(),
            target: p.target.clone(),
            defaults: served.defaults.clone(),
            model: served.name.clone(),
            tunnel: p.tunnel,
            local_ok: p.local_ok,
            pool_key: p.pool_key.clone(),
            explicit,
            had_failures: p.conn_failures > 0,
            native: speaks(p),
            started: tokio::time::Instant::now(),
            queue_tag: None,
            client: want.client,
            generation: p.generation,
            released: false,
        }
    };
    let asked = Asked::new(&want.requested);
    if let Some(p) = asked
        .id
        .and_then(|id| participants.iter_mut().find(|p| p.info.id == id))
    {
        if want.tried.contains(&p.info.id) {
            return Err(SelectError::Exhausted);
        }
        if p.info.status == ParticipantStatus::Offline {
            return Err(SelectError::Offline);
        }
        if want.only && !speaks(p) {
            return Err(SelectError::NoMatch);
        }
        if full(p) {
            return Err(SelectError::Full);
        }
        return Ok(lease(p, 0, true));
    }
    // Free participants that can take it.
    let mut candidates: Vec<Candidate> = Vec::new();
    let (mut matched_any, mut any_full, mut busy_holds) = (false, false, 0u32);
    let mut busy_best: Option<usize> = None;
    for (i, p) in participants.iter().enumerate() {
        if p.info.status == ParticipantStatus::Offline || (want.only && !speaks(p)) {
            continue;
        }
        let foreign = !speaks(p) && dialect.is_some();
        let Some((model, exact)) = asked.serves(p) else {
            continue;
        };
        // Loaded, unknown, not loaded (`*` takes the primary, whatever its state).
        let loaded = match p.info.models.get(model).and_then(|m| m.loaded) {
            _ if asked.any => 0,
            Some(true) => 0,
            None => 1,
            Some(false) => 2,
        };
        matched_any = true;
        if want.tried.contains(&p.info.id) {
            continue;
        }
        let is_full = full(p);
        // A model it says is not loaded holds no KV cache; a full one matters only to a
        // request that may wait for it.
        let holds = if cache_aware && loaded < 2 && (!is_full || wait.is_some()) {
            p.prefixes.matched(&want.prefix)
        } else {
            0
        };
        if is_full {
            any_full = true;
            if holds > busy_holds {
                busy_holds = holds;
                busy_best = Some(i);
            }
            continue;
        }
        // Load as a share of its slots, so a big server is not left idle for a small one.
        let load = ((u64::from(p.in_flight) << 16) / u64::from(p.slots(policy.default_slots)))
            .min(u64::from(u32::MAX)) as u32;
        candidates.push((i, model, (load, loaded, foreign, !exact), holds));
    }
    if candidates.is_empty() {
        return Err(if any_full {
            SelectError::Full
        } else if matched_any {
            SelectError::Exhausted
        } else {
            SelectError::NoMatch
        });
    }
    if cache_aware {
        let best = candidates.iter().map(|c| c.3).max().unwrap_or(0);
        // Worth waiting for when the busy one would process at most half of what the best
        // free one would (the prompt is `total` bytes; each recomputes what it does not hold),
        // and its load — in flight and waiting for it — is not too far above the free one's:
        // otherwise the conversation moves, so uneven groups even out.
        let total = want.prefix.last().map_or(0, |b| b.end);
        if let (Some(demand), Some(busy)) = (wait, busy_best)
            && busy_holds > best
            && 2 * (total - busy_holds) <= total - best
        {
            let load = |i: usize| {
                let p = &participants[i];
                p.in_flight + demand.get(p.info.id.as_str()).copied().unwrap_or(0)
            };
            let free_best = candidates
                .iter()
                .filter(|c| c.3 == best)
                .map(|c| load(c.0))
                .min()
                .unwrap_or(0);
            if load(busy) <= free_best + AFFINITY_MAX_EXTRA_LOAD {
                return Err(SelectError::Defer);
            }
        }
        if best > 0 {
            let least = candidates
                .iter()
                .map(|c| participants[c.0].in_flight)
                .min()
                .unwrap_or(0);
            let near = |c: &Candidate| {
                c.3 == best && participants[c.0].in_flight <= least + AFFINITY_MAX_EXTRA_LOAD
            };
            if candidates.iter().any(near) {
                candidates.retain(near);
            }
        }
    }
    let best = candidates.iter().map(|c| c.2).min().unwrap_or_default();
    candidates.retain(|c| c.2 == best);
    let (pick, model, _, _) = candidates[*rotation % candidates.len()];
    *rotation = rotation.wrapping_add(1);
    Ok(lease(&mut participants[pick], model, false))
}

/// Requests waiting in a room's queue for each participant (by index) that holds the most of
/// their prompt: what a cache-aware choice counts as that participant's load beside its
/// requests in flight.
pub(crate) type Demand = std::collections::HashMap<String, u32>;

/// The participant holding the most of `want`'s prompt, among those that could serve it, when
/// any holds some (its id; worked out once, when the request joins the queue).
fn preferred(participants: &[Participant], want: &Want) -> Option<String> {
    if want.prefix.is_empty() {
        return None;
    }
    let asked = Asked::new(&want.requested);
    participants
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            p.info.status != ParticipantStatus::Offline
                && !want.tried.contains(&p.info.id)
                && asked.serves(p).is_some()
        })
        .map(|(i, p)| (p.prefixes.matched(&want.prefix), i))
        .filter(|(holds, _)| *holds > 0)
        .max()
        .map(|(_, i)| participants[i].info.id.clone())
}

/// The [`Demand`] of a room's queue (cache-aware rooms; empty otherwise): one pass over the
/// waiters, each counted for the participant it preferred when it came.
fn demand_of(queue: &Queue) -> Demand {
    let mut d = Demand::new();
    for id in queue.waiters().filter_map(|w| w.prefers.as_deref()) {
        match d.get_mut(id) {
            Some(n) => *n += 1,
            None => {
                d.insert(id.to_string(), 1);
            }
        }
    }
    d
}

/// Whether what `requested` names (a participant id, `model:NAME`, a name, `*`) has a
/// participant not offline that serves it, and whether one of those is not full: a cheap test
/// before [`pick`], so that a queue of requests for a model whose participants are all busy
/// costs one scan per model per dispatch, not one per waiter.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Availability {
    /// One with a free slot: [`pick`] may serve it.
    Free,
    /// Some, all full: not now.
    Busy,
    /// None: [`pick`] says why (the waiter is refused).
    Gone,
}

fn availability(participants: &[Participant], requested: &str, default_slots: u32) -> Availability {
    let mut found = false;
    let mut consider = |p: &Participant| -> bool {
        if p.info.status == ParticipantStatus::Offline {
            return false;
        }
        found = true;
        !p.full(default_slots)
    };
    let asked = Asked::new(requested);
    let free = match asked
        .id
        .and_then(|id| participants.iter().find(|p| p.info.id == id))
    {
        Some(p) => consider(p),
        None => participants
            .iter()
            .filter(|p| asked.serves(p).is_some())
            .any(&mut consider),
    };
    match (free, found) {
        (true, _) => Availability::Free,
        (false, true) => Availability::Busy,
        (false, false) => Availability::Gone,
    }
}

/// A participant [`pick`] may choose: (its index, its model's index, its rank — load over
/// slots, loaded state, foreign protocol, not the exact name; lower is better —, bytes of the
/// request's prompt it holds).
type Candidate = (usize, usize, (u32, u8, bool, bool), u32);

/// Offer the room's free slots to its queue ([`Queue::dispatch`]), announcing who leaves it.
/// Called whenever a slot may have freed or a participant appeared or changed (under the room's
/// lock, which the caller holds).
///
/// Cache-aware rooms first let each waiter decline a free participant for a busy one holding
/// more of its prompt (within its affinity window), so the free slot goes to a waiter whose
/// prompt it holds; if every waiter it could serve declines it, the first of them in turn takes
/// it anyway: a slot is never left idle while a request that could use it waits.
pub(crate) fn dispatch(room: &Arc<Room>, inner: &mut RoomInner) {
    let now = tokio::time::Instant::now();
    while inner.queue.len() > 0 {
        let RoomInner {
            participants,
            rotation,
            queue,
            ..
        } = &mut *inner;
        let slots = room.policy.default_slots;
        let mut deferred = false;
        let demand = demand_of(queue);
        // Per name asked for, whether anything serves it now (once per dispatch).
        let mut seen: std::collections::HashMap<String, Availability> =
            std::collections::HashMap::new();
        let mut answered = queue.dispatch(|w: &Waiter| {
            let requested = w.want.requested.as_ref();
            let now_for = match seen.get(requested) {
                Some(&known) => known,
                None => {
                    let v = availability(participants, requested, slots);
                    seen.insert(requested.to_string(), v);
                    v
                }
            };
            if now_for == Availability::Busy {
                return None;
            }
            let wait = w.affinity_until.is_some_and(|t| now < t).then_some(&demand);
            match pick(room, participants, rotation, &w.want, wait) {
                Ok(lease) => Some((Ok(lease), true)),
                Err(SelectError::Defer) => {
                    deferred = true;
                    None
                }
                Err(SelectError::Full) => None,
                Err(e) => Some((Err(e), false)),
            }
        });
        if answered.is_empty() && deferred {
            // A free slot every waiter declined for a busy participant that holds more of its
            // prompt: rather than leave it idle, the first of them in turn order takes it.
            let mut taken = false;
            answered = queue.dispatch(|w: &Waiter| {
                if taken
                    || availability(participants, &w.want.requested, slots) != Availability::Free
                {
                    return None;
                }
                match pick(room, participants, rotation, &w.want, None) {
                    Ok(lease) => {
                        taken = true;
                        Some((Ok(lease), true))
                    }
                    Err(SelectError::Full | SelectError::Defer) => None,
                    Err(e) => Some((Err(e), false)),
                }
            });
        }
        if answered.is_empty() {
            return;
        }
        let mut freed = false;
        for (w, mut grant) in answered {
            let left = if let Ok(lease) = &mut grant {
                // Counted as running by the queue when it left it.
                lease.queue_tag = Some(w.tag());
                Left::Served
            } else {
                Left::Refused
            };
            inner.left_queue(room, &w, left);
            // The receiver lives as long as the waiter is queued (its ticket takes it out
            // before letting go); should it be gone, the slot is given back here.
            if let Err(Ok(mut lease)) = w.tx.send(grant) {
                freed |= lease.free_slot(inner);
            }
        }
        if !freed {
            return;
        }
    }
}

/// A request's place in the queue, while its task waits. Dropped before an answer (deadline,
/// or the client left and its task was dropped), it takes the request out; if a participant
/// was handed over meanwhile, the slot goes back to the queue.
struct Ticket<'a> {
    room: &'a Arc<Room>,
    id: u64,
    rx: tokio::sync::oneshot::Receiver<Grant>,
    gone: Left,
    answered: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut inner = self.room.lock();
        if let Some(w) = inner.queue.remove(self.id) {
            inner.left_queue(self.room, &w, self.gone);
            return;
        }
        if let Ok(Ok(mut lease)) = self.rx.try_recv() {
            lease.release(&mut inner);
        }
    }
}

/// Why no participant could be chosen.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SelectError {
    /// Nothing in the room matches (404).
    NoMatch,
    /// The participant named by id is offline (503).
    Offline,
    /// Every match was already tried in this request.
    Exhausted,
    /// Every match that may take it is at its slots: it waits in the queue.
    Full,
    /// A free participant could take it, but a busy one holds more of its prompt: it waits
    /// for that one (a while).
    Defer,
    /// The room's queue is full (503); seconds after which a retry may get in.
    QueueFull(u64),
    /// The client's share of the queue is full (429).
    ClientQuota(u64),
    /// It waited `--queue-timeout` (503).
    TimedOut(u64),
}

/// Whether `presented` is the secret whose hash is `hash` (constant time).
fn owns(hash: &str, presented: Option<&[u8]>) -> bool {
    presented
        .and_then(|p| std::str::from_utf8(p).ok())
        .is_some_and(|p| {
            crate::hub::guard::auth::same_secret(
                hash.as_bytes(),
                crate::hub::guard::auth::token_hash(p).as_bytes(),
            )
        })
}

/// Model names and aliases up to which a join checks each against the other participants' ids
/// by scanning them (more: through a set built once).
const FEW_NAMES: usize = 8;

/// The names and aliases in a model list.
fn names_in(list: &[ModelInfo]) -> usize {
    list.iter().map(|m| 1 + m.aliases.len()).sum()
}

/// Codes of deleted rooms remembered, so their participants and clients hear "removed" (410)
/// rather than "not found".
pub(crate) const REMOVED_REMEMBERED: usize = 1024;

/// All rooms.
pub(crate) struct State {
    rooms: RwLock<HashMap<String, Arc<Room>>>,
    /// Codes of recently deleted rooms, oldest first.
    removed: Mutex<VecDeque<String>>,
    pub(crate) limits: Limits,
    /// Set at shutdown: no new event streams.
    closed: AtomicBool,
    /// Event subscribers across all rooms (each holds a [`SubscriberSlot`]).
    subscribers: Arc<AtomicUsize>,
    /// Where rooms are saved (`--state`), if anywhere.
    store: Option<Arc<crate::hub::rooms::persist::Store>>,
    /// The queues' counters, shared by every room.
    pub(crate) queue_stats: Arc<QueueStats>,
}

impl State {
    pub(crate) fn new(limits: Limits, store: Option<crate::hub::rooms::persist::Store>) -> Self {
        let store = store.map(Arc::new);
        State {
            rooms: RwLock::new(HashMap::new()),
            removed: Mutex::new(VecDeque::new()),
            limits,
            closed: AtomicBool::new(false),
            subscribers: Arc::new(AtomicUsize::new(0)),
            store,
            queue_stats: Arc::new(QueueStats::default()),
        }
    }

    fn rooms(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Room>>> {
        crate::sync::read(&self.rooms)
    }

    fn rooms_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<Room>>> {
        crate::sync::write(&self.rooms)
    }

    /// With `--state`, save the rooms; when that fails, put the map back with `undo` and fail
    /// with [`StateError::SaveFailed`], so nothing unsaved is acknowledged.
    async fn save_or_undo(
        &self,
        what: &'static str,
        undo: impl FnOnce(&mut HashMap<String, Arc<Room>>),
    ) -> Result<(), StateError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let snapshot = store.snapshot(|| self.saved_rooms());
        store.save(snapshot).await.map_err(|e| {
            undo(&mut self.rooms_mut());
            tracing::error!("cannot save {}: {e}", store.path().display());
            StateError::SaveFailed {
                what,
                error: e.to_string(),
            }
        })
    }

    /// Look a room up by code, case-insensitively.
    pub(crate) fn room(&self, code: &str) -> Result<Arc<Room>, StateError> {
        let code = ids::normalize_code(code).ok_or(StateError::RoomNotFound)?;
        let code = code.as_str();
        if let Some(room) = self.rooms().get(code) {
            return Ok(room.clone());
        }
        let removed = crate::sync::lock(&self.removed);
        Err(if removed.iter().any(|r| r == code) {
            StateError::RoomRemoved
        } else {
            StateError::RoomNotFound
        })
    }

    /// Create a room and announce it to every subscriber of every room.
    /// `creator`: the creating address, counted against `max_rooms_per_ip` (`None`: not
    /// bounded, for the admin).
    pub(crate) async fn create_room(
        &self,
        name: String,
        routing: Option<Routing>,
        secrets: RoomSecrets,
        creator: Option<std::net::IpAddr>,
    ) -> Result<Arc<Room>, StateError> {
        let now = now_ms();
        let creator = creator.map(crate::hub::guard::limits::client_key);
        let room = {
            let mut rooms = self.rooms_mut();
            if rooms.len() >= self.limits.max_rooms {
                return Err(StateError::RoomLimit);
            }
            if let Some(ip) = creator
                && self.limits.max_rooms_per_ip > 0
                && rooms.values().filter(|r| r.creator == Some(ip)).count()
                    >= self.limits.max_rooms_per_ip
            {
                return Err(StateError::RoomsPerAddress);
            }
            let code = loop {
                let c = ids::room_code()?;
                if !rooms.contains_key(&c) {
                    break c;
                }
            };
            let room = self.new_room(
                RoomInfo {
                    id: ids::room_id()?,
                    code: code.clone(),
                    name,
                    host_id: ids::uuid_v4()?,
                    created_at: now,
                    password_protected: secrets.protected(),
                    routing,
                },
                secrets,
                creator,
            );
            rooms.insert(code, room.clone());
            room
        };
        // Durable before it is announced or acknowledged (with --state).
        self.save_or_undo("the room", |rooms| {
            rooms.remove(&room.info.code);
        })
        .await?;
        let json = serde_json::to_vec(&room.info).unwrap_or_default();
        for other in self.all_rooms() {
            if !Arc::ptr_eq(&other, &room) {
                other.lock().events.publish(Kind::RoomCreated.name(), &json);
            }
        }
        Ok(room)
    }

    /// Delete a room: it is gone at once (saved first, with `--state`), `room:deleted` goes to
    /// every room's subscribers, and its own event streams end. Requests already being proxied
    /// finish; its participants hear 410 at their next health check.
    pub(crate) async fn delete_room(&self, room: Arc<Room>) -> Result<Arc<Room>, StateError> {
        let code = room.info.code.clone();
        if self.rooms_mut().remove(&code).is_none() {
            // Deleted meanwhile by another request.
            return Err(StateError::RoomRemoved);
        }
        self.save_or_undo("the change", |rooms| {
            rooms.insert(code.clone(), room.clone());
        })
        .await?;
        {
            let mut removed = crate::sync::lock(&self.removed);
            if removed.len() >= REMOVED_REMEMBERED {
                removed.pop_front();
            }
            removed.push_back(code.clone());
        }
        let json = serde_json::to_vec(&event::RoomDeleted {
            room_id: room.info.id.as_str().into(),
            code: code.as_str().into(),
        })
        .unwrap_or_default();
        for other in self.all_rooms() {
            other.lock().events.publish(Kind::RoomDeleted.name(), &json);
        }
        {
            let mut inner = room.lock();
            inner.events.publish(Kind::RoomDeleted.name(), &json);
            inner.events.close_all();
            for w in inner.queue.drain() {
                room.policy.stats.left[Left::Refused as usize].fetch_add(1, Ordering::Relaxed);
                let _ = w.tx.send(Err(SelectError::Exhausted));
            }
        }
        Ok(room)
    }

    fn new_room(
        &self,
        info: RoomInfo,
        secrets: RoomSecrets,
        creator: Option<std::net::IpAddr>,
    ) -> Arc<Room> {
        // Event ids start from now: ids a client saw before a restart are recognised as foreign.
        let base = now_ms().saturating_mul(1000);
        let policy = Policy {
            routing: info.routing.unwrap_or(self.limits.routing),
            default_slots: self.limits.default_slots,
            affinity_wait: self.limits.affinity_wait,
            stats: self.queue_stats.clone(),
        };
        Arc::new(Room {
            info,
            secrets,
            creator,
            policy,
            inner: Mutex::new(RoomInner {
                participants: Vec::new(),
                events: EventLog::new(base, self.limits.event_ring),
                rotation: 0,
                queue: Queue::default(),
                generations: 0,
                service_ms: 1000.0,
            }),
        })
    }

    /// The rooms as saved: everything but participants.
    pub(crate) fn saved_rooms(&self) -> Vec<SavedRoom> {
        self.all_rooms()
            .iter()
            .map(|r| SavedRoom {
                info: r.info.clone(),
                password_hash: r.secrets.password_hash.clone(),
                host_token_hash: r.secrets.host_token_hash.clone(),
            })
            .collect()
    }

    /// Load the saved rooms (at start, with `--state`). Returns how many.
    pub(crate) fn restore(&self) -> std::io::Result<usize> {
        let Some(store) = &self.store else {
            return Ok(0);
        };
        let saved = store.load()?;
        let mut rooms = self.rooms_mut();
        for saved in saved {
            let mut info = saved.info;
            info.password_protected = saved.password_hash.is_some();
            let code = info.code.clone();
            let secrets = RoomSecrets::new(saved.password_hash, saved.host_token_hash);
            rooms.insert(code, self.new_room(info, secrets, None));
        }
        Ok(rooms.len())
    }

    /// (room code, participant id) of every participant in every room.
    pub(crate) fn participant_keys(&self) -> std::collections::HashSet<(String, String)> {
        let mut keys = std::collections::HashSet::new();
        for room in self.all_rooms() {
            for p in &room.lock().participants {
                keys.insert((room.info.code.clone(), p.info.id.clone()));
            }
        }
        keys
    }

    /// Every room, oldest first.
    pub(crate) fn all_rooms(&self) -> Vec<Arc<Room>> {
        let mut v: Vec<_> = self.rooms().values().cloned().collect();
        v.sort_by(|a, b| (a.info.created_at, &a.info.code).cmp(&(b.info.created_at, &b.info.code)));
        v
    }

    pub(crate) fn list_rooms(&self) -> Vec<RoomSummary> {
        self.all_rooms().iter().map(|r| r.summary()).collect()
    }

    /// Add a participant (or replace the one with the same id) and announce it. An id whose
    /// participant showed a sign of life within the participant timeout is replaced only when
    /// `presented` is that participant's secret (403 otherwise); a silent one may be taken by
    /// anyone, whatever its routing status. `secret_hash` is the hash of the fresh secret the
    /// new registration gets.
    pub(crate) fn join(
        &self,
        room: &Arc<Room>,
        mut info: ParticipantInfo,
        (primary, list): (Option<String>, Vec<ModelInfo>),
        secret_hash: String,
        (tunnel, local_ok): (bool, bool),
        presented: Option<&[u8]>,
    ) -> Result<(ParticipantInfo, Vec<Dropped>), StateError> {
        let now = now_ms();
        info.status = ParticipantStatus::Online;
        info.joined_at = now;
        info.last_seen = now;
        // The API validated the endpoint with the same parser; this cannot fail for it.
        let target = Arc::new(Target::from_endpoint(&info.endpoint).map_err(StateError::Invalid)?);
        let pool_key: Arc<str> = if local_ok {
            format!("{} (joined on the hub's machine)", target.key).into()
        } else {
            target.key.as_str().into()
        };
        let mut inner = room.lock();
        let id = info.id.as_str();
        // Ids and model names share one namespace (first come, first served): an id that
        // names another participant's model (any spelling or alias) would capture the requests
        // for that model (an id wins over a model name), so it is refused; and the models
        // built below leave out names that are other participants' ids. `model:NAME` is never
        // ambiguous.
        let key = crate::types::model_key(id);
        if inner
            .participants
            .iter()
            .any(|other| other.info.id != id && other.models.resolve(id, &key).is_some())
        {
            return Err(StateError::Invalid(format!(
                "id {id:?} is the name of a model served in this room: choose another id"
            )));
        }
        let existing = inner.find(id);
        match existing {
            Some(i) => {
                let old = &inner.participants[i];
                let silent = old.seen.elapsed() > self.limits.participant_timeout;
                if !silent && !owns(&old.secret_hash, presented) {
                    return Err(StateError::NotOwner(
                        "This participant id is in use; re-joining it needs its participantSecret",
                    ));
                }
            }
            None if inner.participants.len() >= self.limits.max_participants_per_room => {
                return Err(StateError::ParticipantLimit);
            }
            None => {}
        }
        let (set, dropped) = inner.build_models(primary.as_deref(), list, &mut info)?;
        let p = Participant {
            info,
            in_flight: 0,
            held: 0,
            generation: 0,
            prefixes: PrefixCache::default(),
            conn_failures: 0,
            target,
            models: Arc::new(set),
            secret_hash,
            tunnel,
            local_ok,
            pool_key,
            health_authenticated: false,
            seen: tokio::time::Instant::now(),
        };
        let snapshot = p.snapshot();
        // Every listing and event carries the entry.
        check_entry_size(&snapshot)?;
        match existing {
            // A re-join in place keeps the count of what runs there, and its leases.
            Some(i) => {
                let old = &inner.participants[i];
                let (in_flight, generation) = (old.in_flight, old.generation);
                inner.participants[i] = Participant {
                    in_flight,
                    generation,
                    ..p
                };
            }
            None => {
                inner.generations += 1;
                let generation = inner.generations;
                inner.participants.push(Participant { generation, ..p });
            }
        }
        inner.publish(Kind::ParticipantJoined, &snapshot);
        dispatch(room, &mut inner);
        Ok((snapshot, dropped))
    }

    /// Remove a participant and announce it: with its secret, or (`by_host`) on the say of
    /// the room's host, already authenticated by the caller.
    pub(crate) fn leave(
        &self,
        room: &Arc<Room>,
        id: &str,
        presented: Option<&[u8]>,
        by_host: bool,
    ) -> Result<(), StateError> {
        let mut inner = room.lock();
        let i = inner.find(id).ok_or(StateError::ParticipantNotFound)?;
        if !by_host && !owns(&inner.participants[i].secret_hash, presented) {
            return Err(StateError::NotOwner(
                "Only the participant itself can leave: present its participantSecret",
            ));
        }
        inner.participants.remove(i);
        inner.publish(Kind::ParticipantLeft, &about(id));
        // Waiters only it could serve hear so now.
        dispatch(room, &mut inner);
        Ok(())
    }

    /// Record a health check; an offline participant comes back online (announced once).
    /// `presented`: the participant secret the check carried, if any. A wrong one is refused;
    /// none is accepted (the seed's agents send none) until the participant has once sent its
    /// secret, and refused after.
    pub(crate) fn health(
        &self,
        room: &Arc<Room>,
        id: &str,
        presented: Option<&[u8]>,
    ) -> Result<HealthOutcome, StateError> {
        let mut inner = room.lock();
        let i = inner.find(id).ok_or(StateError::ParticipantNotFound)?;
        let p = &mut inner.participants[i];
        match presented {
            Some(_) if owns(&p.secret_hash, presented) => p.health_authenticated = true,
            None if !p.health_authenticated => {}
            _ => {
                return Err(StateError::NotOwner(
                    "This participant's health checks need its participantSecret",
                ));
            }
        }
        p.info.last_seen = now_ms().max(p.info.last_seen + 1);
        p.seen = tokio::time::Instant::now();
        if p.info.status == ParticipantStatus::Offline {
            p.info.status = ParticipantStatus::Online;
            p.conn_failures = 0;
            inner.publish(Kind::ParticipantOnline, &about(id));
            dispatch(room, &mut inner);
            return Ok(HealthOutcome::BackOnline);
        }
        Ok(HealthOutcome::Ok)
    }

    /// Change a participant's entry on its own say (`presented` must be its secret) and
    /// announce it (`participant:updated`, only if something changed). A new model list is
    /// bounded as at join; what did not fit is returned. Without a new primary the current
    /// one stays if the list still has it, else the list's first is primary. Counts as a sign
    /// of life (an offline participant is back online).
    pub(crate) fn update(
        &self,
        room: &Arc<Room>,
        id: &str,
        presented: Option<&[u8]>,
        change: Update,
    ) -> Result<(ParticipantInfo, Vec<Dropped>), StateError> {
        let mut inner = room.lock();
        let i = inner.find(id).ok_or(StateError::ParticipantNotFound)?;
        let p = &inner.participants[i];
        if !owns(&p.secret_hash, presented) {
            return Err(StateError::NotOwner(
                "Only the participant itself can update its entry: present its participantSecret",
            ));
        }
        let mut info = p.info.clone();
        if let Some(nickname) = change.nickname {
            info.nickname = nickname;
        }
        if let Some(specs) = change.specs {
            info.specs = specs;
        }
        if let Some(protocols) = change.protocols {
            info.protocols = protocols;
        }
        if change.slots.is_some() {
            info.slots = change.slots;
        }
        let config_changed = change.config.is_some();
        if let Some(config) = change.config {
            info.config = config;
        }
        let mut dropped = Vec::new();
        let mut models = None;
        if change.model.is_some() || change.models.is_some() || config_changed {
            let list = change.models.unwrap_or_else(|| info.models.clone());
            let primary = change.model.or_else(|| {
                list.iter()
                    .any(|m| m.name == info.model)
                    .then(|| info.model.clone())
            });
            let (set, left_out) = inner.build_models(primary.as_deref(), list, &mut info)?;
            dropped = left_out;
            models = Some(Arc::new(set));
        }
        check_entry_size(&info)?;
        let p = &mut inner.participants[i];
        let changed = info != p.info;
        p.info = info;
        if let Some(set) = models {
            p.models = set;
        }
        p.info.last_seen = now_ms().max(p.info.last_seen);
        p.seen = tokio::time::Instant::now();
        // Proof of life as good as a health check: an offline participant is back.
        let back = p.info.status == ParticipantStatus::Offline;
        if back {
            p.info.status = ParticipantStatus::Online;
            p.conn_failures = 0;
        }
        let snapshot = p.snapshot();
        if back {
            inner.publish(Kind::ParticipantOnline, &about(id));
        }
        if changed {
            inner.publish(Kind::ParticipantUpdated, &snapshot);
        }
        if back || changed {
            dispatch(room, &mut inner);
        }
        Ok((snapshot, dropped))
    }

    /// Mark participants silent for longer than the participant timeout offline (by the
    /// monotonic clock), announcing each once, and forget those silent past `forget_after`.
    /// Returns how many went offline.
    pub(crate) fn sweep(&self, now: tokio::time::Instant) -> usize {
        let timeout = self.limits.participant_timeout;
        let mut n = 0;
        for room in self.all_rooms() {
            let mut inner = room.lock();
            let mut gone = Vec::new();
            for p in inner.participants.iter_mut() {
                if p.info.status != ParticipantStatus::Offline
                    && now.saturating_duration_since(p.seen) > timeout
                {
                    p.info.status = ParticipantStatus::Offline;
                    gone.push(p.info.id.clone());
                }
            }
            for id in &gone {
                inner.publish(Kind::ParticipantOffline, &about(id));
            }
            n += gone.len();
            // Silent for much longer: forgotten, so a room's places are not held for ever by
            // participants that never come back.
            let forget = self.limits.forget_after;
            let mut forgotten = Vec::new();
            inner.participants.retain(|p| {
                let keep = now.saturating_duration_since(p.seen) <= forget;
                if !keep {
                    forgotten.push(p.info.id.clone());
                }
                keep
            });
            for id in &forgotten {
                inner.publish(Kind::ParticipantLeft, &about(id));
            }
            if !gone.is_empty() || !forgotten.is_empty() {
                dispatch(&room, &mut inner);
            }
        }
        n
    }

    /// A participant for `want`: one with a free slot now ([`pick`]), or — every one that
    /// could take it being full — the first the room's fair queue hands it, within the
    /// queue's bounds and `--queue-timeout`. `client` is the request's client key
    /// ([`client_key`](super::queue::client_key)). Dropping the future (the client left)
    /// takes the request out of the queue at once; a slot handed to it meanwhile goes to the
    /// next waiter.
    pub(crate) async fn acquire(
        &self,
        room: &Arc<Room>,
        want: Want,
        client: u64,
    ) -> Result<Lease, SelectError> {
        let want = Arc::new(want);
        let now = tokio::time::Instant::now();
        let mut affinity = (room.policy.routing == Routing::CacheAware && !want.prefix.is_empty())
            .then(|| now + room.policy.affinity_wait);
        let (id, rx) = {
            let mut guard = room.lock();
            let inner = &mut *guard;
            let room_full = inner.queue.len() >= self.limits.queue_max;
            let share_full = inner.queue.waiting(client) >= self.limits.queue_per_client
                || inner.queue.waiting_from(want.address) >= self.limits.queue_per_address;
            // With nobody waiting, a free participant is taken at once. With others waiting,
            // the request takes its turn among them (below) — unless it could not wait: then
            // only a free participant serves it.
            if inner.queue.len() == 0 || room_full || share_full {
                let demand = demand_of(&inner.queue);
                match pick(
                    room,
                    &mut inner.participants,
                    &mut inner.rotation,
                    &want,
                    affinity.is_some().then_some(&demand),
                ) {
                    Ok(lease) => {
                        inner.queue.started(client, None);
                        return Ok(lease);
                    }
                    Err(SelectError::Full | SelectError::Defer) => {}
                    Err(e) => return Err(e),
                }
            }
            let stats = &room.policy.stats;
            if room_full {
                stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                return Err(SelectError::QueueFull(
                    inner.retry_after(inner.queue.len(), room.policy.default_slots),
                ));
            }
            if share_full {
                stats.rejected_client.fetch_add(1, Ordering::Relaxed);
                let ahead = inner.queue.waiting(client);
                return Err(SelectError::ClientQuota(
                    inner.retry_after(ahead, room.policy.default_slots),
                ));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let id = inner.queue.next_id();
            let mut waiter = Waiter::new(id, client, want.clone(), now, affinity, tx);
            if affinity.is_some() {
                waiter.prefers = preferred(&inner.participants, &want);
            }
            let position = inner.queue.push(waiter);
            stats.queued.fetch_add(1, Ordering::Relaxed);
            let depth = inner.queue.len();
            inner.publish(
                Kind::LlmQueued,
                &event::LlmQueued {
                    client: client_hex(client).into(),
                    model: want.requested.as_ref().into(),
                    position,
                    depth,
                },
            );
            // A free slot goes to whoever's turn it is (this request, if first); one it declined
            // for a busy participant holding its prompt is not left idle if nobody else takes it.
            dispatch(room, inner);
            (id, rx)
        };
        let mut ticket = Ticket {
            room,
            id,
            rx,
            gone: Left::Abandoned,
            answered: false,
        };
        let deadline = now + self.limits.queue_timeout;
        loop {
            tokio::select! {
                grant = &mut ticket.rx => {
                    ticket.answered = true;
                    // The sender lives in the queue until it answers.
                    return grant.unwrap_or(Err(SelectError::Exhausted));
                }
                () = tokio::time::sleep_until(deadline) => {
                    ticket.gone = Left::Timeout;
                    let retry = room.lock().retry_after(1, room.policy.default_slots);
                    return Err(SelectError::TimedOut(retry));
                }
                () = tokio::time::sleep_until(affinity.unwrap_or(deadline)), if affinity.is_some() => {
                    // Waited long enough for the participant that holds its prompt: any will do.
                    affinity = None;
                    let mut inner = room.lock();
                    if let Some(w) = inner.queue.get_mut(id) {
                        w.affinity_until = None;
                    }
                    dispatch(room, &mut inner);
                }
            }
        }
    }

    /// Record a failed connection attempt; the third in a row marks the participant offline
    /// (announced). Returns whether it went offline now.
    pub(crate) fn connect_failed(&self, room: &Arc<Room>, id: &str) -> bool {
        let mut inner = room.lock();
        let Some(i) = inner.find(id) else {
            return false;
        };
        let p = &mut inner.participants[i];
        p.conn_failures += 1;
        if p.conn_failures >= STRIKES_OFFLINE && p.info.status != ParticipantStatus::Offline {
            p.info.status = ParticipantStatus::Offline;
            inner.publish(Kind::ParticipantOffline, &about(id));
            dispatch(room, &mut inner);
            return true;
        }
        false
    }

    /// Whether `presented` is the secret of a participant that serves through tunnels.
    pub(crate) fn tunnel_allowed(
        &self,
        room: &Room,
        id: &str,
        presented: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        let inner = room.lock();
        let i = inner.find(id).ok_or(StateError::ParticipantNotFound)?;
        let p = &inner.participants[i];
        Ok(p.tunnel && owns(&p.secret_hash, presented))
    }

    /// A sign of life other than a health check (a tunnel socket parked).
    pub(crate) fn touch(&self, room: &Room, id: &str) {
        let mut inner = room.lock();
        if let Some(i) = inner.find(id) {
            let p = &mut inner.participants[i];
            p.info.last_seen = now_ms().max(p.info.last_seen);
            p.seen = tokio::time::Instant::now();
        }
    }

    /// Record a successful connection: the strike count starts again.
    pub(crate) fn connect_ok(&self, room: &Room, id: &str) {
        let mut inner = room.lock();
        if let Some(i) = inner.find(id) {
            inner.participants[i].conn_failures = 0;
        }
    }

    /// Subscribe to a room's events, within the per-room and hub-wide subscriber bounds. The
    /// slot counts against the hub-wide bound until it is dropped (with the stream).
    pub(crate) fn subscribe(
        &self,
        room: &Room,
        since: Since,
    ) -> Result<(Subscription, SubscriberSlot), StateError> {
        let mut inner = room.lock();
        // Checked under the room lock, which `close_all_streams` takes after setting the flag:
        // no stream can slip in after the close.
        if self.closed.load(Ordering::SeqCst) {
            return Err(StateError::ShuttingDown);
        }
        if inner.events.subscriber_count() >= self.limits.max_subscribers_per_room {
            return Err(StateError::RoomSubscriberLimit);
        }
        let taken = self.subscribers.fetch_add(1, Ordering::SeqCst);
        let slot = SubscriberSlot(self.subscribers.clone());
        if taken >= self.limits.max_subscribers {
            return Err(StateError::HubSubscriberLimit);
        }
        let last_id = match since {
            Since::Now => None,
            Since::After(id) => Some(id),
            Since::Kept => Some(inner.events.oldest_kept() - 1),
        };
        let sub = inner
            .events
            .subscribe(last_id, self.limits.subscriber_queue);
        Ok((sub, slot))
    }

    /// End every event stream (shutdown).
    pub(crate) fn close_all_streams(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for room in self.all_rooms() {
            room.lock().events.close_all();
        }
    }
}
