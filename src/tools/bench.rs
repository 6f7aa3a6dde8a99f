//! The load generator behind `gambiarra bench`: N keep-alive connections, each sending
//! chat completions back to back for a fixed time, on the project's own HTTP client pieces.
//! Reports requests/s, latency and time-to-first-token percentiles, and relayed tokens/s.

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
    errors: u64,
    latencies: Vec<Duration>,
    ttfts: Vec<Duration>,
    tokens: u64,
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
    let body = format!(
        "{{\"model\":{},\"stream\":{},\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello.\"}}]{}{}}}",
        serde_json::Value::String(config.model.clone()),
        config.stream,
        if config.extra.is_empty() { "" } else { "," },
        config.extra
    );
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: */*\r\nUser-Agent: gambiarra-bench\r\nContent-Length: {}\r\n\r\n{}",
        config.path,
        config.host,
        body.len(),
        body
    );
    let request = bytes::Bytes::from(request);
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
    let mut all = WorkerStats::default();
    for w in workers {
        if let Ok(s) = w.await {
            all.requests += s.requests;
            all.errors += s.errors;
            all.tokens += s.tokens;
            all.latencies.extend(s.latencies);
            all.ttfts.extend(s.ttfts);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies.sort();
    all.ttfts.sort();
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
