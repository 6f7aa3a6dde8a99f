//! The floor of a keep-alive reverse proxy on tokio: the least a proxy built like the hub
//! (tokio, httparse, one task per client connection, a pool of upstream connections) can do,
//! measured beside the hub and nginx in `benches/proxy_rounds.sh` (target `floor`).
//!
//! Per request it reads the client's head and `content-length` body, takes an idle upstream
//! connection (or opens one), writes the head and body to it in one `writev`, reads the
//! answer's head and `content-length` body, and writes them to the client in one `writev`.
//! Nothing else: no routing, JSON, limits, queue, events, metrics, timeouts or chunked bodies
//! (a chunked answer closes the connection), and no liveness check of a pooled connection
//! (one that fails before answering is retried once on a fresh connection).
//! What the hub spends above this on the same row is its features; what this spends above
//! nginx is the runtime's and the language's.
//!
//! Usage: `cargo bench --bench proxy_floor -- PORT UPSTREAM_PORT [THREADS]` (THREADS 1: a
//! `current_thread` runtime; default: tokio's multi-thread one). Run by `cargo bench` with no
//! arguments, it prints how to use it and exits.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest head or body it takes; the bench's are well under.
const MAX_MESSAGE: usize = 1 << 20;
/// Idle upstream connections kept.
const POOL: usize = 1024;

type Pool = Arc<Mutex<Vec<TcpStream>>>;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let port = |i: usize| args.get(i).and_then(|p| p.parse::<u16>().ok());
    let (Some(port), Some(upstream)) = (port(0), port(1)) else {
        eprintln!(
            "usage: cargo bench --bench proxy_floor -- PORT UPSTREAM_PORT [THREADS] (see benches/proxy_rounds.sh)"
        );
        return;
    };
    let threads = args.get(2).and_then(|t| t.parse::<usize>().ok());
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n.max(1))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("proxy_floor: runtime: {e}");
            std::process::exit(1);
        }
    };
    let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
    rt.block_on(async move {
        let listener = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("proxy_floor: bind 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            }
        };
        let pool = Pool::default();
        loop {
            let Ok((client, _)) = listener.accept().await else {
                continue;
            };
            let _ = client.set_nodelay(true);
            tokio::spawn(serve(client, upstream, pool.clone()));
        }
    });
}

/// One client connection: its requests, one after the other.
async fn serve(mut client: TcpStream, upstream: SocketAddr, pool: Pool) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut answer = BytesMut::with_capacity(4096);
    loop {
        let Some((head, body)) = read_message(&mut client, &mut buf, true).await else {
            return;
        };
        // A pooled connection the upstream closed while idle fails at once: the request is
        // sent again on a fresh one (what nginx does too). No other check is made.
        let mut pooled = pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let (up, rhead, rbody) = loop {
            let fresh = pooled.is_none();
            let mut up = match pooled.take() {
                Some(up) => up,
                None => match TcpStream::connect(upstream).await {
                    Ok(up) => {
                        let _ = up.set_nodelay(true);
                        up
                    }
                    Err(_) => return,
                },
            };
            let sent = write_two(&mut up, &buf[..head], &buf[head..head + body]).await;
            let answer_read = match sent {
                Ok(()) => read_message(&mut up, &mut answer, false).await,
                Err(_) => None,
            };
            match answer_read {
                Some((rhead, rbody)) => break (up, rhead, rbody),
                None if !fresh && answer.is_empty() => continue,
                None => return,
            }
        };
        buf.advance(head + body);
        if write_two(&mut client, &answer[..rhead], &answer[rhead..rhead + rbody])
            .await
            .is_err()
        {
            return;
        }
        answer.advance(rhead + rbody);
        if answer.is_empty() {
            let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < POOL {
                pool.push(up);
            }
        }
    }
}

/// Read one message into `buf`: the length of its head and of its `content-length` body, both
/// in `buf` from its start. `None` when the peer closes, the message is malformed or too
/// large, or its body is chunked.
async fn read_message(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    request: bool,
) -> Option<(usize, usize)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let parsed = if request {
            let mut req = httparse::Request::new(&mut headers);
            req.parse(buf).ok()?.is_complete().then_some(req.headers)
        } else {
            let mut resp = httparse::Response::new(&mut headers);
            resp.parse(buf).ok()?.is_complete().then_some(resp.headers)
        };
        if let Some(headers) = parsed {
            let mut length = 0;
            for h in headers.iter() {
                if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return None;
                }
                if h.name.eq_ignore_ascii_case("content-length") {
                    length = std::str::from_utf8(h.value).ok()?.trim().parse().ok()?;
                }
            }
            let head = headers_end(buf)?;
            if length > MAX_MESSAGE {
                return None;
            }
            while buf.len() < head + length {
                buf.reserve(head + length - buf.len());
                if io.read_buf(buf).await.ok()? == 0 {
                    return None;
                }
            }
            return Some((head, length));
        }
        if buf.len() > MAX_MESSAGE {
            return None;
        }
        buf.reserve(4096);
        if io.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

/// Where the head in `buf` ends (after its blank line).
fn headers_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Write `a` then `b`, in as few `writev`s as the socket takes.
async fn write_two(io: &mut TcpStream, a: &[u8], b: &[u8]) -> std::io::Result<()> {
    let (mut a, mut b) = (a, b);
    while !a.is_empty() || !b.is_empty() {
        let n = io
            .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}
