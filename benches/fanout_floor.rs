//! The floor of a fan-out on this machine: the least a server can do to send one event to N
//! event-stream subscribers, to be measured by the same probe as the hub
//! (`gambiarra bench --subscribers N`), in the same run (`benches/fanout_floor.sh`).
//!
//! No runtime, no parsing beyond finding the end of a head, no events log, no mailbox: each
//! subscriber's socket is kept in a `Vec`, and an event is one blocking `write` of the same
//! bytes per socket, in a plain loop, split over `--threads` OS threads. Anything the hub does
//! on top of that is the hub's cost; what this takes is the kernel's.
//!
//! It answers just enough of the hub's API for the probe:
//! - `GET …/events`: `200`, an SSE head, then `event: connected`; the socket joins the list;
//! - `POST …/join` with a JSON body: `200 {"participantSecret":"floor"}`, then a
//!   `participant:joined` frame carrying the body to every subscriber;
//! - `DELETE …/leave/ID`: `200 {}`, then a `participant:left` frame naming `ID`.
//!
//! Usage: `cargo bench --bench fanout_floor -- PORT [THREADS]`. Run by `cargo bench` with no
//! arguments (as every bench target is), it prints how to use it and exits.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Largest request head or body read; the probe's are a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(port) = args.first().and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!(
            "usage: cargo bench --bench fanout_floor -- PORT [THREADS] (see benches/fanout_floor.sh)"
        );
        return;
    };
    let threads = args
        .get(1)
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or(2)
        .max(1);
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fanout_floor: bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let subscribers: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let subscribers = subscribers.clone();
        // A thread per request connection keeps a slow client from holding up the accepts;
        // a subscriber's thread ends once its socket is in the list.
        std::thread::spawn(move || serve(conn, &subscribers, threads));
    }
}

/// One connection: a subscriber (kept) or a join/leave (answered, then fanned out).
fn serve(mut conn: TcpStream, subscribers: &Mutex<Vec<TcpStream>>, threads: usize) {
    let _ = conn.set_nodelay(true);
    let Some((head, body)) = read_request(&mut conn) else {
        return;
    };
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "GET" && path.ends_with("/events") {
        let hello = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\nevent: connected\ndata: {}\n\n";
        if conn.write_all(hello).is_ok() {
            lock(subscribers).push(conn);
        }
        return;
    }
    let (answer, frame) = if method == "POST" && path.ends_with("/join") {
        let body = String::from_utf8_lossy(&body).replace('\n', " ");
        (
            r#"{"participantSecret":"floor"}"#,
            format!("event: participant:joined\ndata: {{\"participant\":{body}}}\n\n"),
        )
    } else if method == "DELETE" && path.contains("/leave/") {
        let id = path.rsplit('/').next().unwrap_or("");
        (
            "{}",
            format!("event: participant:left\ndata: {{\"participantId\":\"{id}\"}}\n\n"),
        )
    } else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    };
    let _ = conn.write_all(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        )
        .as_bytes(),
    );
    drop(conn);
    fan_out(subscribers, frame.as_bytes(), threads);
}

/// One `write` of `frame` per subscriber, the list split into `threads` runs written at once;
/// prints how long the writes took, from the first to the last, on stderr.
fn fan_out(subscribers: &Mutex<Vec<TcpStream>>, frame: &[u8], threads: usize) {
    let list = lock(subscribers);
    let started = std::time::Instant::now();
    let per = list.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for run in list.chunks(per) {
            s.spawn(move || {
                for mut sub in run {
                    // A subscriber that went away is skipped; the probe's do not.
                    let _ = sub.write_all(frame);
                }
            });
        }
    });
    eprintln!(
        "wrote {} in {:.3} ms",
        list.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
}

/// The request's head (as text) and its body (`content-length` bytes), or `None` if the
/// connection ends first or the request is larger than [`MAX_REQUEST`].
fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_REQUEST {
            return None;
        }
        let n = conn.read(&mut chunk).ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(MAX_REQUEST);
    let mut body = buf.split_off(end);
    while body.len() < length {
        let n = conn.read(&mut chunk).ok().filter(|&n| n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((head, body))
}

/// The list's lock; a writer that panicked left the list as it was, so poisoning is ignored.
fn lock(m: &Mutex<Vec<TcpStream>>) -> std::sync::MutexGuard<'_, Vec<TcpStream>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
