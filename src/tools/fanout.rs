//! `gambiarra bench --subscribers N`: how a hub carries N event-stream subscribers on one
//! room. It opens N `GET /rooms/CODE/events` streams, waits until each has its `connected`
//! event, reads the hub's memory (given its pid), then makes one event at a time (a probe
//! participant joins, then leaves) and times when each subscriber receives it, from just
//! before the request that causes it.
//!
//! Built so the client is not what is measured: one small task per stream, each reading into
//! a 512-byte buffer and looking only for the probe's id; connections are opened at most 256
//! at a time (a SYN burst of 10,000 overflows a listen backlog), and the arrival times are
//! written to a preallocated table, not sent anywhere.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

/// Connections being opened at once.
const CONNECTS_AT_ONCE: usize = 256;
/// How long to wait for every subscriber to be connected, and for an event to reach all.
const WAIT: Duration = Duration::from_secs(60);

/// What to measure.
#[derive(Clone, Debug)]
pub struct FanoutConfig {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    pub code: String,
    pub subscribers: usize,
    /// Events timed (each a join or a leave of the probe).
    pub events: usize,
    /// The hub's process id, to read its resident memory before and after.
    pub hub_pid: Option<u32>,
}

/// One event's delivery.
#[derive(Debug, Serialize)]
pub struct Delivery {
    pub event: String,
    /// Subscribers that received it.
    pub received: usize,
    /// From just before the request that caused it to its arrival, in ms.
    pub first_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The last subscriber's arrival: the time to reach all.
    pub all_ms: f64,
}

/// What was measured.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    pub subscribers: usize,
    /// Time to open them all and receive each one's `connected`.
    pub connect_s: f64,
    /// The hub's resident memory before the subscribers, and with them (KiB; from
    /// `/proc/PID/status`), and the difference per subscriber (bytes).
    pub hub_rss_before_kib: Option<u64>,
    pub hub_rss_after_kib: Option<u64>,
    pub bytes_per_subscriber: Option<f64>,
    pub deliveries: Vec<Delivery>,
}

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Shared {
    /// Per event, per subscriber: nanoseconds after `base` it arrived (0: not yet).
    arrivals: Vec<Vec<AtomicU64>>,
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Why the first failure failed.
    why: std::sync::Mutex<Option<String>>,
    ready: Notify,
    base: Instant,
}

/// Run the measurement.
pub async fn run(config: FanoutConfig) -> Result<FanoutReport, String> {
    let n = config.subscribers;
    let shared = Arc::new(Shared {
        arrivals: (0..config.events)
            .map(|_| (0..n).map(|_| AtomicU64::new(0)).collect())
            .collect(),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        why: std::sync::Mutex::new(None),
        ready: Notify::new(),
        base: Instant::now(),
    });
    let probe = format!("fanout-probe-{}", std::process::id());
    let rss_before = config.hub_pid.and_then(rss_kib);
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECTS_AT_ONCE));
    let request = format!(
        "GET /rooms/{}/events HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        config.code, config.host
    );
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (shared, gate, request, probe) =
            (shared.clone(), gate.clone(), request.clone(), probe.clone());
        let addr = config.addr;
        tasks.push(tokio::spawn(async move {
            subscriber(i, addr, &request, &probe, &shared, &gate).await;
        }));
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let notified = shared.ready.notified();
        let (ok, bad) = (
            shared.connected.load(Ordering::SeqCst),
            shared.failed.load(Ordering::SeqCst),
        );
        if bad > 0 {
            let why = crate::sync::lock(&shared.why).clone().unwrap_or_default();
            return Err(format!(
                "{bad} of {n} subscribers could not connect, the first: {why} (are the hub's \
                 --rate-limit, --max-subscribers(-total), --max-connections-per-ip or either side's \
                 `ulimit -n` below {n}?)"
            ));
        }
        if ok == n {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(format!(
                "only {ok} of {n} subscribers connected within {WAIT:?}"
            ));
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    // Let the hub settle (buffers shrink, the allocator returns what it can) before reading it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = config.hub_pid.and_then(rss_kib);

    let mut deliveries = Vec::with_capacity(config.events);
    let mut secret = String::new();
    for e in 0..config.events {
        let joining = e % 2 == 0;
        let sent = shared.base.elapsed().as_nanos() as u64;
        if joining {
            let body = format!(
                r#"{{"id":"{probe}","nickname":"probe","model":"fanout-probe","endpoint":"http://127.0.0.1:9"}}"#
            );
            let answer = call(
                config.addr,
                &config.host,
                "POST",
                &format!("/rooms/{}/join", config.code),
                &body,
                "",
            )
            .await?;
            secret = serde_json::from_str::<serde_json::Value>(&answer)
                .ok()
                .and_then(|v| v["participantSecret"].as_str().map(str::to_string))
                .ok_or_else(|| format!("the probe's join was refused: {answer}"))?;
        } else {
            call(
                config.addr,
                &config.host,
                "DELETE",
                &format!("/rooms/{}/leave/{probe}", config.code),
                "",
                &format!("Gambiarra-Participant-Secret: {secret}\r\n"),
            )
            .await?;
        }
        // Wait until everyone has it (or the deadline).
        let until = Instant::now() + WAIT;
        let row = &shared.arrivals[e];
        while row.iter().any(|a| a.load(Ordering::Relaxed) == 0) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut times: Vec<f64> = row
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .filter(|&t| t != 0)
            .map(|t| t.saturating_sub(sent) as f64 / 1e6)
            .collect();
        times.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            times
                .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        deliveries.push(Delivery {
            event: if joining {
                "participant:joined"
            } else {
                "participant:left"
            }
            .into(),
            received: times.len(),
            first_ms: times.first().copied().unwrap_or(f64::NAN),
            p50_ms: pick(0.5),
            p99_ms: pick(0.99),
            all_ms: times.last().copied().unwrap_or(f64::NAN),
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        t.abort();
    }
    Ok(FanoutReport {
        subscribers: n,
        connect_s,
        hub_rss_before_kib: rss_before,
        hub_rss_after_kib: rss_after,
        bytes_per_subscriber: match (rss_before, rss_after) {
            (Some(b), Some(a)) => Some((a.saturating_sub(b) * 1024) as f64 / n as f64),
            _ => None,
        },
        deliveries,
    })
}

/// One subscriber: connect, send the request, wait for `connected`, then note when each event
/// naming the probe arrives.
async fn subscriber(
    i: usize,
    addr: SocketAddr,
    request: &str,
    probe: &str,
    shared: &Shared,
    gate: &Semaphore,
) {
    let fail = |why: String| {
        crate::sync::lock(&shared.why).get_or_insert(why);
        shared.failed.fetch_add(1, Ordering::SeqCst);
        shared.ready.notify_one();
    };
    let stream = {
        let Ok(_permit) = gate.acquire().await else {
            return fail("closed".into());
        };
        let mut s = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return fail(format!("connect: {e}")),
        };
        if let Err(e) = s.write_all(request.as_bytes()).await {
            return fail(format!("send: {e}"));
        }
        s
    };
    let mut stream = stream;
    let mut buf = [0u8; 512];
    // What the last read ended with, so a marker split across two reads is still found.
    let mut carry: Vec<u8> = Vec::new();
    let mut connected = false;
    let mut next_event = 0;
    // Quoted: the probe's id, not its nickname or model.
    let quoted = format!("\"{probe}\"");
    let needle = quoted.as_bytes();
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                if !connected {
                    fail(format!("closed: {}", String::from_utf8_lossy(&carry)));
                }
                return;
            }
            Err(e) => {
                if !connected {
                    fail(format!("read: {e}"));
                }
                return;
            }
            Ok(n) => n,
        };
        let at = shared.base.elapsed().as_nanos() as u64;
        carry.extend_from_slice(&buf[..n]);
        if !connected {
            if memchr::memmem::find(&carry, b"event: connected").is_some() {
                connected = true;
                shared.connected.fetch_add(1, Ordering::SeqCst);
                shared.ready.notify_one();
                // Whatever came with it is before any probe event.
                carry.clear();
            } else if carry.len() >= 12 && !carry.starts_with(b"HTTP/1.1 200") {
                return fail(String::from_utf8_lossy(&carry).into_owned());
            }
            continue;
        }
        // Each probe event names the probe once.
        let mut from = 0;
        while let Some(pos) = memchr::memmem::find(&carry[from..], needle) {
            if let Some(row) = shared.arrivals.get(next_event) {
                row[i].store(at.max(1), Ordering::Relaxed);
            }
            next_event += 1;
            from += pos + needle.len();
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep.max(from));
    }
}

/// One request on a fresh connection; the answer's body (the whole response after its head).
async fn call(
    addr: SocketAddr,
    host: &str,
    method: &str,
    path: &str,
    body: &str,
    extra: &str,
) -> Result<String, String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 2") {
        return Err(format!(
            "{method} {path}: {}",
            text.lines().next().unwrap_or("")
        ));
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
