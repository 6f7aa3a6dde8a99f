//! `GET /metrics` in Prometheus text format.
//!
//! On the request path everything is a relaxed atomic add into fixed arrays (route × status,
//! histogram buckets); proxied requests also bump one counter in a small map keyed by
//! participant and outcome. Gauges that the state already knows (participants by status, event
//! subscribers) are read at scrape time, so nothing is kept twice.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use crate::hub::rooms::state::{Left, State};
use crate::types::ParticipantStatus;

/// The `route` label of `gambiarra_http_requests_total`: one per [`Route`] variant.
///
/// [`Route`]: crate::hub::router::Route
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteLabel {
    Health,
    CreateRoom,
    ListRooms,
    Join,
    Leave,
    HealthCheck,
    Participants,
    Events,
    Tunnel,
    Models,
    Proxy,
    Metrics,
    Preflight,
    MethodNotAllowed,
    NotFound,
    DeleteRoom,
    Update,
    Catalogue,
    Ollama,
    Anthropic,
    /// The pages: home, a room's page, their files, the QR code.
    Page,
    /// A room's summary (`GET /rooms/:code` as JSON).
    Room,
}

impl RouteLabel {
    /// Every label, in the order of their counters.
    pub(crate) const ALL: [RouteLabel; 22] = [
        RouteLabel::Health,
        RouteLabel::CreateRoom,
        RouteLabel::ListRooms,
        RouteLabel::Join,
        RouteLabel::Leave,
        RouteLabel::HealthCheck,
        RouteLabel::Participants,
        RouteLabel::Events,
        RouteLabel::Tunnel,
        RouteLabel::Models,
        RouteLabel::Proxy,
        RouteLabel::Metrics,
        RouteLabel::Preflight,
        RouteLabel::MethodNotAllowed,
        RouteLabel::NotFound,
        RouteLabel::DeleteRoom,
        RouteLabel::Update,
        RouteLabel::Catalogue,
        RouteLabel::Ollama,
        RouteLabel::Anthropic,
        RouteLabel::Page,
        RouteLabel::Room,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            RouteLabel::Health => "health",
            RouteLabel::CreateRoom => "create_room",
            RouteLabel::ListRooms => "list_rooms",
            RouteLabel::Join => "join",
            RouteLabel::Leave => "leave",
            RouteLabel::HealthCheck => "health_check",
            RouteLabel::Participants => "participants",
            RouteLabel::Events => "events",
            RouteLabel::Tunnel => "tunnel",
            RouteLabel::Models => "models",
            RouteLabel::Proxy => "proxy",
            RouteLabel::Metrics => "metrics",
            RouteLabel::Preflight => "preflight",
            RouteLabel::MethodNotAllowed => "method_not_allowed",
            RouteLabel::NotFound => "not_found",
            RouteLabel::DeleteRoom => "delete_room",
            RouteLabel::Update => "update_participant",
            RouteLabel::Catalogue => "catalogue",
            RouteLabel::Ollama => "ollama",
            RouteLabel::Anthropic => "anthropic",
            RouteLabel::Page => "page",
            RouteLabel::Room => "room",
        }
    }
}

/// The status codes counted one by one; any other lands in the last slot as "other".
const STATUSES: [u16; 19] = [
    101, 200, 201, 204, 400, 401, 403, 404, 405, 408, 413, 426, 429, 431, 500, 501, 502, 503, 504,
];
const STATUS_SLOTS: usize = STATUSES.len() + 1;

/// Most participants with series of their own in `gambiarra_proxied_requests_total`.
pub(crate) const MAX_PARTICIPANT_SERIES: usize = 4096;
/// The participant label of everyone past that bound.
pub(crate) const OTHER_PARTICIPANTS: &str = "_other";

/// The `outcome` label of `gambiarra_proxied_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The participant answered 2xx and the whole answer reached the client.
    Ok,
    /// The participant answered with an error status (relayed as is).
    ErrorStatus,
    /// No connection could be made to the participant.
    Unreachable,
    /// Connected, but no valid response head came back in time.
    UpstreamError,
    /// The participant's answer broke off before its end.
    Truncated,
    /// The client went away before the answer was complete.
    ClientGone,
}

impl Outcome {
    /// Every outcome, in the order of their counters.
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::ErrorStatus,
        Outcome::Unreachable,
        Outcome::UpstreamError,
        Outcome::Truncated,
        Outcome::ClientGone,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ErrorStatus => "error_status",
            Outcome::Unreachable => "unreachable",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Truncated => "truncated",
            Outcome::ClientGone => "client_gone",
        }
    }
}

/// Histogram bucket bounds, in seconds.
pub(crate) const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus histogram over fixed buckets.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// Everything counted.
pub(crate) struct Metrics {
    requests: Vec<[AtomicU64; STATUS_SLOTS]>,
    in_flight: AtomicI64,
    /// Per participant, a count per outcome (indexed by [`Outcome`]).
    proxied: Mutex<HashMap<String, [u64; Outcome::ALL.len()]>>,
    tokens: AtomicU64,
    pub(crate) ttft: Histogram,
    pub(crate) duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: RouteLabel::ALL.iter().map(|_| Default::default()).collect(),
            in_flight: AtomicI64::new(0),
            proxied: Mutex::new(HashMap::new()),
            tokens: AtomicU64::new(0),
            ttft: Histogram::default(),
            duration: Histogram::default(),
        }
    }
}

/// Counts a request in flight until dropped.
pub(crate) struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Count a finished request by route and status.
    pub(crate) fn request(&self, route: RouteLabel, status: u16) {
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUS_SLOTS - 1);
        if let Some(row) = self.requests.get(route as usize) {
            row[slot].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a proxied request's outcome. Allocates only the first time a
    /// participant is seen; past [`MAX_PARTICIPANT_SERIES`] participants, new ones are counted
    /// together under `participant="_other"`.
    pub(crate) fn proxied(&self, participant: &str, outcome: Outcome) {
        let i = outcome as usize;
        let mut map = crate::sync::lock(&self.proxied);
        if let Some(counts) = map.get_mut(participant) {
            counts[i] += 1;
            return;
        }
        let key = if map.len() >= MAX_PARTICIPANT_SERIES {
            OTHER_PARTICIPANTS
        } else {
            participant
        };
        map.entry(key.to_string())
            .or_insert([0; Outcome::ALL.len()])[i] += 1;
    }

    /// Drop a participant's series (it left, or its room was deleted): a hub whose
    /// participants come and go keeps its memory and its scrape size bounded.
    pub(crate) fn forget_participant(&self, participant: &str) {
        crate::sync::lock(&self.proxied).remove(participant);
    }

    /// Keep the series of participants for which `live` holds (and `_other`); drop the rest.
    /// A request that finishes after its participant left counts into a series `leave` had
    /// already dropped; the sweeper calls this so such series do not pile up.
    pub(crate) fn retain_participants(&self, live: impl Fn(&str) -> bool) {
        crate::sync::lock(&self.proxied).retain(|id, _| id == OTHER_PARTICIPANTS || live(id));
    }

    /// Participants with their own series now.
    #[cfg(test)]
    pub(crate) fn participant_series(&self) -> usize {
        crate::sync::lock(&self.proxied).len()
    }

    pub(crate) fn tokens(&self, n: u64) {
        self.tokens.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition.
    pub(crate) fn render(&self, state: &State, open_connections: usize) -> String {
        let mut out = String::with_capacity(8192);
        out.push_str("# HELP gambiarra_http_requests_total HTTP requests answered, by route and status.\n# TYPE gambiarra_http_requests_total counter\n");
        for (r, row) in self.requests.iter().enumerate() {
            for (i, n) in row.iter().enumerate() {
                let n = n.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = if i == STATUS_SLOTS - 1 {
                    "other".to_string()
                } else {
                    STATUSES[i].to_string()
                };
                let _ = writeln!(
                    out,
                    "gambiarra_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    RouteLabel::ALL[r].name()
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP gambiarra_http_requests_in_flight Requests being handled now.\n# TYPE gambiarra_http_requests_in_flight gauge\ngambiarra_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP gambiarra_open_connections Client connections open now.\n# TYPE gambiarra_open_connections gauge\ngambiarra_open_connections {open_connections}"
        );
        out.push_str("# HELP gambiarra_proxied_requests_total Proxied requests, by participant and outcome.\n# TYPE gambiarra_proxied_requests_total counter\n");
        {
            let map = crate::sync::lock(&self.proxied);
            let mut rows: Vec<_> = map.iter().collect();
            rows.sort();
            for (p, counts) in rows {
                for (outcome, n) in Outcome::ALL.iter().zip(counts) {
                    if *n > 0 {
                        let _ = writeln!(
                            out,
                            "gambiarra_proxied_requests_total{{participant=\"{}\",outcome=\"{}\"}} {n}",
                            escape(p),
                            outcome.name()
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP gambiarra_relayed_tokens_total Tokens relayed from participants.\n# TYPE gambiarra_relayed_tokens_total counter\ngambiarra_relayed_tokens_total {}",
            self.tokens.load(Ordering::Relaxed)
        );
        self.ttft.render(
            &mut out,
            "gambiarra_time_to_first_token_seconds",
            "Time from routing a request to its first token.",
        );
        self.duration.render(
            &mut out,
            "gambiarra_proxied_request_duration_seconds",
            "Time from routing a request to the end of its answer.",
        );
        let (mut online, mut busy, mut offline, mut subscribers, mut queued) = (0, 0, 0, 0, 0);
        for room in state.all_rooms() {
            let inner = room.lock();
            subscribers += inner.events.subscriber_count();
            queued += inner.queue.len();
            for p in &inner.participants {
                match p.status() {
                    ParticipantStatus::Online => online += 1,
                    ParticipantStatus::Busy => busy += 1,
                    ParticipantStatus::Offline => offline += 1,
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP gambiarra_participants Participants, by status.\n# TYPE gambiarra_participants gauge\ngambiarra_participants{{status=\"online\"}} {online}\ngambiarra_participants{{status=\"busy\"}} {busy}\ngambiarra_participants{{status=\"offline\"}} {offline}"
        );
        let _ = writeln!(
            out,
            "# HELP gambiarra_event_subscribers Open event streams.\n# TYPE gambiarra_event_subscribers gauge\ngambiarra_event_subscribers {subscribers}"
        );
        let q = &state.queue_stats;
        let _ = writeln!(
            out,
            "# HELP gambiarra_queue_depth Requests waiting for a participant slot, across rooms.\n# TYPE gambiarra_queue_depth gauge\ngambiarra_queue_depth {queued}"
        );
        let _ = writeln!(
            out,
            "# HELP gambiarra_queued_requests_total Requests that had to wait in a room's queue.\n# TYPE gambiarra_queued_requests_total counter\ngambiarra_queued_requests_total {}",
            q.queued.load(Ordering::Relaxed)
        );
        out.push_str("# HELP gambiarra_queue_left_total Requests that left a queue, by outcome (served, timeout, abandoned, refused).\n# TYPE gambiarra_queue_left_total counter\n");
        for left in Left::ALL {
            let _ = writeln!(
                out,
                "gambiarra_queue_left_total{{outcome=\"{}\"}} {}",
                left.name(),
                q.left[left as usize].load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP gambiarra_queue_rejected_total Requests refused a place in a queue, by reason.\n# TYPE gambiarra_queue_rejected_total counter\ngambiarra_queue_rejected_total{{reason=\"queue_full\"}} {}\ngambiarra_queue_rejected_total{{reason=\"client_quota\"}} {}",
            q.rejected_full.load(Ordering::Relaxed),
            q.rejected_client.load(Ordering::Relaxed)
        );
        q.wait.render(
            &mut out,
            "gambiarra_queue_wait_seconds",
            "Time requests spent in a room's queue.",
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_index_their_counters() {
        for (i, r) in RouteLabel::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
        }
    }

    #[test]
    fn participant_series_are_bounded_and_forgotten() {
        let m = Metrics::default();
        for i in 0..MAX_PARTICIPANT_SERIES + 10 {
            m.proxied(&format!("p{i}"), Outcome::Ok);
        }
        assert_eq!(m.participant_series(), MAX_PARTICIPANT_SERIES + 1);
        let other = m.proxied.lock().unwrap()[OTHER_PARTICIPANTS][0];
        assert_eq!(other, 10);
        m.forget_participant("p0");
        assert_eq!(m.participant_series(), MAX_PARTICIPANT_SERIES);
        // A known participant keeps counting in its own series.
        m.proxied("p1", Outcome::Ok);
        assert_eq!(m.proxied.lock().unwrap()["p1"][0], 2);
        // The sweeper keeps only participants still somewhere (and the shared series).
        m.retain_participants(|id| id == "p1");
        let left: Vec<String> = m.proxied.lock().unwrap().keys().cloned().collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(70));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.005\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.1\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"30\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3"));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }
}
