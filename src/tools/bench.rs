//! The load generator behind `gambiarra bench`, on the project's own HTTP client pieces. Three
//! workloads:
//! - [`run`]: N keep-alive connections, each sending chat completions back to back for a fixed
//!   time; requests/s, latency and time-to-first-token percentiles, relayed tokens/s.
//! - [`run_clients`]: the same, from several clients (each its API key and its number of
//!   connections) at once; each client's throughput and latency, and Jain's fairness index of
//!   their throughputs.
//! - [`run_conversations`]: N multi-turn conversations at once, each turn sending the whole
//!   history (a shared system prompt, the questions and the answers streamed back), as chat
//!   clients do; time to first token per turn and in all, and the time the whole took.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::client::{read_body, read_head};
use crate::hub::proxy::tokens::{BodyKind, TokenScanner};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Hub (or any OpenAI-compatible server) address.
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path, e.g. `/rooms/ABC234/v1/chat/completions`.
    pub path: String,
    pub model: String,
    pub stream: bool,
    pub concurrency: usize,
    pub duration: Duration,
    /// Extra JSON members for the body (e.g. `"max_tokens":16`), without braces.
    pub extra: String,
}

/// The outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
    pub tokens: u64,
    pub tokens_per_second: f64,
}

#[derive(Default)]
struct WorkerStats {
    requests: u64,
    /// Requests answered (2xx) by the deadline: what throughput is counted from, so requests
    /// still queued when the run ends do not stretch its duration.
    in_time: u64,
    errors: u64,
    latencies: Vec<Duration>,
    ttfts: Vec<Duration>,
    tokens: u64,
}

impl WorkerStats {
    /// The workers' stats added up, latencies and times to first token sorted.
    async fn gather(workers: Vec<tokio::task::JoinHandle<WorkerStats>>) -> WorkerStats {
        let mut all = WorkerStats::default();
        for w in workers {
            if let Ok(s) = w.await {
                all.requests += s.requests;
                all.in_time += s.in_time;
                all.errors += s.errors;
                all.tokens += s.tokens;
                all.latencies.extend(s.latencies);
                all.ttfts.extend(s.ttfts);
            }
        }
        all.latencies.sort();
        all.ttfts.sort();
        all
    }
}

/// The request bytes for `body`, with `extra` header lines (each ending in `\r\n`).
fn request_bytes(config: &BenchConfig, body: &str, extra: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: */*\r\nUser-Agent: gambiarra-bench\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        config.path,
        config.host,
        body.len(),
    ))
}

/// The one-message body of [`run`] and [`run_clients`].
fn hello_body(config: &BenchConfig) -> String {
    format!(
        "{{\"model\":{},\"stream\":{},\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello.\"}}]{}{}}}",
        serde_json::Value::String(config.model.clone()),
        config.stream,
        if config.extra.is_empty() { "" } else { "," },
        config.extra
    )
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// Run the benchmark.
pub async fn run(config: BenchConfig) -> BenchReport {
    let request = request_bytes(&config, &hello_body(&config), "");
    let started = Instant::now();
    let deadline = started + config.duration;
    let workers: Vec<_> = (0..config.concurrency.max(1))
        .map(|_| {
            let request = request.clone();
            let addr = config.addr;
            let stream = config.stream;
            tokio::spawn(async move { worker(addr, request, stream, deadline).await })
        })
        .collect();
    let all = WorkerStats::gather(workers).await;
    let seconds = started.elapsed().as_secs_f64();
    BenchReport {
        requests: all.requests,
        errors: all.errors,
        seconds,
        requests_per_second: all.requests as f64 / seconds,
        latency_ms_p50: percentile(&all.latencies, 0.50),
        latency_ms_p99: percentile(&all.latencies, 0.99),
        ttft_ms_p50: percentile(&all.ttfts, 0.50),
        ttft_ms_p99: percentile(&all.ttfts, 0.99),
        tokens: all.tokens,
        tokens_per_second: all.tokens as f64 / seconds,
    }
}

async fn worker(
    addr: SocketAddr,
    request: bytes::Bytes,
    stream: bool,
    deadline: Instant,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let mut conn: Option<TcpStream> = None;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    while Instant::now() < deadline {
        if conn.is_none() {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                    buf.clear();
                }
                Err(_) => {
                    stats.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(sock) = conn.as_mut() else { continue };
        let t0 = Instant::now();
        match one(sock, &mut buf, &request, stream, t0).await {
            Ok((ok, keep, ttft, tokens)) => {
                stats.requests += 1;
                if !ok {
                    stats.errors += 1;
                } else if Instant::now() <= deadline {
                    stats.in_time += 1;
                }
                stats.latencies.push(t0.elapsed());
                stats.ttfts.push(ttft);
                stats.tokens += tokens;
                if !keep {
                    conn = None;
                }
            }
            Err(_) => {
                stats.errors += 1;
                conn = None;
            }
        }
    }
    stats
}

/// One request/response; returns (2xx, keep-alive, time to first token, tokens).
async fn one(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    request: &[u8],
    stream: bool,
    t0: Instant,
) -> std::io::Result<(bool, bool, Duration, u64)> {
    sock.write_all(request).await?;
    let head = read_head(sock, buf).await?;
    let head_at = t0.elapsed();
    let kind = match head.header("content-type") {
        Some(ct) => BodyKind::of_content_type(ct),
        None if stream => BodyKind::Sse,
        None => BodyKind::Document,
    };
    let mut scanner = TokenScanner::new(kind);
    read_body(sock, buf, head.framing, usize::MAX, |d| scanner.feed(d)).await?;
    scanner.finish();
    let ttft = scanner
        .first_content
        .map_or(head_at, |t| t.duration_since(t0));
    Ok((
        (200..300).contains(&head.status),
        head.keep_alive,
        ttft,
        scanner.tokens(),
    ))
}

/// One client of [`run_clients`]: the API key it sends and the requests it keeps in flight.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub key: String,
    pub concurrency: usize,
}

impl std::str::FromStr for ClientSpec {
    type Err = String;
    /// `KEY=CONNECTIONS`, e.g. `greedy=32`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (key, n) = s
            .split_once('=')
            .ok_or_else(|| format!("--client {s:?}: expected KEY=CONNECTIONS"))?;
        let concurrency: usize = n
            .parse()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| format!("--client {s:?}: CONNECTIONS is 1 to 10000"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("--client {s:?}: KEY is printable ASCII"));
        }
        Ok(ClientSpec {
            key: key.into(),
            concurrency,
        })
    }
}

/// One client's share of a [`run_clients`] run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientReport {
    pub key: String,
    pub concurrency: usize,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p99: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p99: f64,
}

/// The outcome of [`run_clients`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientsReport {
    pub seconds: f64,
    pub clients: Vec<ClientReport>,
    /// Jain's index of the clients' throughputs: 1 when equal, 1/n when one client has it all.
    pub jain_index: f64,
}

/// Jain's fairness index of `xs`: (Σx)² / (n·Σx²).
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return 1.0;
    }
    sum * sum / (xs.len() as f64 * squares)
}

/// Several clients at once, each with its API key (`Authorization: Bearer`) and its number of
/// connections sending back to back, for `config.duration`.
pub async fn run_clients(config: BenchConfig, clients: &[ClientSpec]) -> ClientsReport {
    let body = hello_body(&config);
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut handles = Vec::new();
    for c in clients {
        let request = request_bytes(
            &config,
            &body,
            &format!("Authorization: Bearer {}\r\n", c.key),
        );
        let workers: Vec<_> = (0..c.concurrency.max(1))
            .map(|_| {
                let request = request.clone();
                let (addr, stream) = (config.addr, config.stream);
                tokio::spawn(async move { worker(addr, request, stream, deadline).await })
            })
            .collect();
        handles.push((c.clone(), workers));
    }
    let mut reports = Vec::new();
    for (spec, workers) in handles {
        reports.push((spec, WorkerStats::gather(workers).await));
    }
    // Throughput over the run's own time, from what was answered within it.
    let seconds = config.duration.as_secs_f64();
    let clients: Vec<ClientReport> = reports
        .into_iter()
        .map(|(spec, all)| ClientReport {
            key: spec.key,
            concurrency: spec.concurrency,
            requests: all.requests,
            errors: all.errors,
            requests_per_second: all.in_time as f64 / seconds,
            latency_ms_p50: percentile(&all.latencies, 0.50),
            latency_ms_p99: percentile(&all.latencies, 0.99),
            ttft_ms_p50: percentile(&all.ttfts, 0.50),
            ttft_ms_p99: percentile(&all.ttfts, 0.99),
        })
        .collect();
    let throughputs: Vec<f64> = clients.iter().map(|c| c.requests_per_second).collect();
    ClientsReport {
        seconds,
        jain_index: jain(&throughputs),
        clients,
    }
}

/// What [`run_conversations`] runs.
#[derive(Clone, Debug)]
pub struct ConversationConfig {
    pub conversations: usize,
    pub turns: usize,
    /// Bytes of the system prompt every conversation starts with.
    pub system_bytes: usize,
    /// Bytes of each question.
    pub question_bytes: usize,
    /// Mean pause between an answer and the next question (each pause drawn between half and
    /// one and a half times it, the same in every run): people read before they ask again.
    pub think: Duration,
}

/// The outcome of [`run_conversations`].
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationReport {
    pub conversations: usize,
    pub turns: usize,
    pub requests: u64,
    pub errors: u64,
    /// From the first request to the last answer's end.
    pub seconds: f64,
    pub ttft_ms_p50: f64,
    pub ttft_ms_p90: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    /// The median time to first token of each turn (the first turn has no history).
    pub ttft_ms_p50_by_turn: Vec<f64>,
    pub tokens: u64,
}

/// Text of `n` bytes, varied enough not to be a run of one character, starting with `tag`.
fn filler(tag: &str, n: usize) -> String {
    const WORDS: [&str; 12] = [
        "the",
        "model",
        "answers",
        "questions",
        "about",
        "local",
        "networks",
        "and",
        "shared",
        "machines",
        "in",
        "rooms",
    ];
    let mut out = String::from(tag);
    let mut i = tag.len();
    while out.len() < n {
        out.push(' ');
        out.push_str(WORDS[i % WORDS.len()]);
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    out.truncate(n.max(tag.len()));
    out
}

/// N conversations at once (each its own client: `Authorization: Bearer conv-i`), each
/// sending its turns back to back on one keep-alive connection: every turn is the whole
/// history (the shared system prompt, every question and the answer streamed back) plus a new
/// question, streamed, with `config.extra` (e.g. `"max_tokens":32`).
pub async fn run_conversations(
    config: BenchConfig,
    conv: ConversationConfig,
) -> ConversationReport {
    let system = filler(
        "You are a helpful assistant for a LAN party.",
        conv.system_bytes,
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..conv.conversations.max(1))
        .map(|i| {
            let (config, conv, system) = (config.clone(), conv.clone(), system.clone());
            tokio::spawn(async move { conversation(&config, &conv, &system, i).await })
        })
        .collect();
    let mut by_turn: Vec<Vec<Duration>> = vec![Vec::new(); conv.turns];
    let (mut ttfts, mut latencies) = (Vec::new(), Vec::new());
    let (mut requests, mut errors, mut tokens) = (0, 0, 0);
    for t in tasks {
        let Ok(turns) = t.await else {
            errors += 1;
            continue;
        };
        for (k, turn) in turns.into_iter().enumerate() {
            requests += 1;
            match turn {
                Some((ttft, latency, n)) => {
                    ttfts.push(ttft);
                    latencies.push(latency);
                    by_turn[k].push(ttft);
                    tokens += n;
                }
                None => errors += 1,
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    ttfts.sort();
    latencies.sort();
    ConversationReport {
        conversations: conv.conversations,
        turns: conv.turns,
        requests,
        errors,
        seconds,
        ttft_ms_p50: percentile(&ttfts, 0.5),
        ttft_ms_p90: percentile(&ttfts, 0.9),
        latency_ms_p50: percentile(&latencies, 0.5),
        latency_ms_p90: percentile(&latencies, 0.9),
        ttft_ms_p50_by_turn: by_turn
            .iter_mut()
            .map(|v| {
                v.sort();
                percentile(v, 0.5)
            })
            .collect(),
        tokens,
    }
}

/// One conversation's turns: (time to first token, latency, tokens) each, `None` if it failed
/// (the conversation stops there).
async fn conversation(
    config: &BenchConfig,
    conv: &ConversationConfig,
    system: &str,
    i: usize,
) -> Vec<Option<(Duration, Duration, u64)>> {
    use serde_json::{Value, json};
    let mut messages = vec![json!({"role": "system", "content": system})];
    let mut out = Vec::new();
    let auth = format!("Authorization: Bearer conv-{i}\r\n");
    let mut conn: Option<TcpStream> = None;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // A small deterministic generator per conversation (xorshift), for the pauses.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    for t in 0..conv.turns {
        if t > 0 && !conv.think.is_zero() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let factor = 0.5 + (seed % 1000) as f64 / 1000.0;
            tokio::time::sleep(conv.think.mul_f64(factor)).await;
        }
        messages.push(json!({"role": "user", "content": filler(&format!("Conversation {i}, question {t}:"), conv.question_bytes)}));
        let mut body = json!({"model": config.model, "stream": true, "messages": messages});
        if !config.extra.is_empty()
            && let Ok(Value::Object(extra)) =
                serde_json::from_str::<Value>(&format!("{{{}}}", config.extra))
        {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        let request = request_bytes(config, &body.to_string(), &auth);
        if conn.is_none() {
            match TcpStream::connect(config.addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    conn = Some(s);
                    buf.clear();
                }
                Err(_) => {
                    out.push(None);
                    return out;
                }
            }
        }
        let Some(sock) = conn.as_mut() else {
            return out;
        };
        let t0 = Instant::now();
        match answer(sock, &mut buf, &request, t0).await {
            Ok((true, keep, ttft, tokens, text)) => {
                out.push(Some((ttft, t0.elapsed(), tokens)));
                messages.push(json!({"role": "assistant", "content": text}));
                if !keep {
                    conn = None;
                }
            }
            _ => {
                out.push(None);
                return out;
            }
        }
    }
    out
}

/// One streamed chat: (2xx, keep-alive, time to first token, tokens, the answer's text).
async fn answer(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    request: &[u8],
    t0: Instant,
) -> std::io::Result<(bool, bool, Duration, u64, String)> {
    sock.write_all(request).await?;
    let head = read_head(sock, buf).await?;
    let head_at = t0.elapsed();
    let mut scanner = TokenScanner::new(BodyKind::Sse);
    let mut body = Vec::new();
    read_body(sock, buf, head.framing, 16 << 20, |d| {
        scanner.feed(d);
        body.extend_from_slice(d);
    })
    .await?;
    scanner.finish();
    let mut text = String::new();
    for line in body.split(|&b| b == b'\n') {
        let Some(data) = line.strip_prefix(b"data: ") else {
            continue;
        };
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
            && let Some(piece) = v
                .pointer("/choices/0/delta/content")
                .and_then(|c| c.as_str())
        {
            text.push_str(piece);
        }
    }
    let ttft = scanner
        .first_content
        .map_or(head_at, |t| t.duration_since(t0));
    Ok((
        (200..300).contains(&head.status),
        head.keep_alive,
        ttft,
        scanner.tokens(),
        text,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jain_and_specs() {
        assert!((jain(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-9);
        assert!((jain(&[4.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-9);
        let c: ClientSpec = "greedy=32".parse().unwrap();
        assert_eq!((c.key.as_str(), c.concurrency), ("greedy", 32));
        assert!("x".parse::<ClientSpec>().is_err());
        assert!("x=0".parse::<ClientSpec>().is_err());
        assert!("=3".parse::<ClientSpec>().is_err());
        let f = filler("tag", 100);
        assert_eq!(f.len(), 100);
        assert!(f.starts_with("tag "));
    }
}
