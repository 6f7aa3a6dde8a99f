//! Test helpers: start a hub on a free port, and a raw HTTP/1.1 client that shows exactly what
//! went over the wire (statuses, headers, framing, connection closes).
#![allow(dead_code, reason = "not every test module uses every helper")]

use std::net::SocketAddr;
use std::time::Duration;

use gambiarra::{Hub, HubConfig};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Generous bound on any single wait in a test: only reached when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

/// Wait until `check` holds, trying every 10 ms for up to [`WAIT`]; past that the test fails
/// naming `what`. For conditions that become true by themselves (a sweep, a reconnect, a
/// socket reaped), never as a timing assertion.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn start(config: HubConfig) -> Hub {
    Hub::bind("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("hub starts")
}

/// A loopback port that was free a moment ago (for spawning the real binary on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn start_default() -> Hub {
    start(HubConfig::default()).await
}

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn error(&self) -> String {
        let v = self.json();
        match &v["error"] {
            Value::String(s) => s.clone(),
            Value::Object(o) => o["message"].as_str().unwrap_or("").to_string(),
            _ => String::new(),
        }
    }
}

/// A client connection with its own read buffer.
pub struct Conn {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A connection whose receive buffer is fixed small (no autotuning): it fills quickly when
    /// the test stops reading.
    /// A connection from another loopback address (127.0.0.0/8 is all local on Linux), to
    /// show that per-address limits leave other clients alone.
    pub async fn open_from(addr: SocketAddr, source: [u8; 4]) -> Conn {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from((source, 0))).unwrap();
        Conn {
            stream: sock.connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    /// A request with extra header lines (each ending in `\r\n`).
    pub async fn request_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &str,
    ) -> Resp {
        let req = build(method, path, body, extra);
        self.send(&req).await;
        self.read_response().await.expect("response")
    }

    pub async fn open_small_rcvbuf(addr: SocketAddr) -> Conn {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        Conn {
            stream: sock.connect(addr).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Read more bytes; false on EOF.
    pub async fn fill(&mut self) -> bool {
        // On the heap: test futures live on the test thread's stack.
        let mut tmp = vec![0u8; 65536];
        match timeout(WAIT, self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                true
            }
            Err(_) => panic!("timed out waiting for bytes from the hub"),
        }
    }

    /// Read a response head; None if the connection closed first.
    pub async fn read_head(&mut self) -> Option<(u16, Vec<(String, String)>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..end + 4);
                let mut lines = head.split("\r\n");
                let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                    .collect();
                return Some((status, headers));
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Read a whole response (Content-Length or chunked; not streams that never end).
    pub async fn read_response(&mut self) -> Option<Resp> {
        let (status, headers) = self.read_head().await?;
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if status == 100 {
            return Some(resp);
        }
        if resp
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            loop {
                let chunk = self.read_chunk().await?;
                if chunk.is_empty() {
                    break;
                }
                resp.body.extend_from_slice(&chunk);
            }
        } else {
            let n: usize = resp
                .header("content-length")
                .map(|v| v.parse().unwrap())
                .unwrap_or(0);
            while self.buf.len() < n {
                if !self.fill().await {
                    return None;
                }
            }
            resp.body = self.buf.drain(..n).collect();
        }
        Some(resp)
    }

    /// Read one chunk of a chunked body; empty for the last chunk; None on EOF mid-way.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(eol) = find(&self.buf, b"\r\n") {
                let size = usize::from_str_radix(
                    std::str::from_utf8(&self.buf[..eol])
                        .unwrap()
                        .split(';')
                        .next()
                        .unwrap(),
                    16,
                )
                .expect("chunk size");
                let need = eol + 2 + size + 2;
                if self.buf.len() >= need {
                    let data = self.buf[eol + 2..eol + 2 + size].to_vec();
                    self.buf.drain(..need);
                    return Some(data);
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// True if the hub closes the connection (after any bytes it still sends).
    pub async fn closed(&mut self) -> bool {
        loop {
            let mut tmp = vec![0u8; 4096];
            match timeout(WAIT, self.stream.read(&mut tmp)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    pub async fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let req = build(method, path, body, "");
        self.send(&req).await;
        self.read_response().await.expect("response")
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes of a request with an optional JSON body and extra header lines.
pub fn build(method: &str, path: &str, body: Option<&Value>, extra: &str) -> Vec<u8> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One request on a fresh connection.
pub async fn req(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Resp {
    let mut c = Conn::open(addr).await;
    c.request(method, path, body.as_ref()).await
}

pub async fn create_room(addr: SocketAddr, name: &str) -> Value {
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(serde_json::json!({ "name": name })),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["room"].clone()
}

pub async fn join(addr: SocketAddr, code: &str, id: &str, endpoint: &str) -> Resp {
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(serde_json::json!({
            "id": id, "nickname": format!("nick-{id}"), "model": "llama3", "endpoint": endpoint
        })),
    )
    .await
}

/// A recording mock LLM serving model `m`: 3 tokens, no delay.
#[cfg(feature = "tools")]
pub async fn quick_mock() -> gambiarra::tools::mock::MockLlm {
    use gambiarra::tools::mock::{MockConfig, MockLlm};
    MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        MockConfig {
            model: "m".into(),
            tokens: 3,
            token_delay: Duration::ZERO,
            ..MockConfig::default()
        },
        true,
    )
    .await
    .unwrap()
}

/// A new open room's code.
pub async fn room_code(addr: SocketAddr, name: &str) -> String {
    create_room(addr, name).await["code"]
        .as_str()
        .expect("a room has a code")
        .to_string()
}

/// A room protected by `password`; its code.
pub async fn create_locked(addr: SocketAddr, password: &str) -> String {
    let r = req(
        addr,
        "POST",
        "/rooms",
        Some(serde_json::json!({"name": "locked", "password": password})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", String::from_utf8_lossy(&r.body));
    r.json()["room"]["code"].as_str().unwrap().to_string()
}

/// The `participantSecret` of a join answer.
pub fn secret_of(joined: &Resp) -> String {
    joined.json()["participantSecret"]
        .as_str()
        .expect("a join answer carries participantSecret")
        .to_string()
}

/// Re-join an id (online or not) with the secret of its last join.
pub async fn rejoin(addr: SocketAddr, code: &str, id: &str, endpoint: &str, secret: &str) -> Resp {
    req(
        addr,
        "POST",
        &format!("/rooms/{code}/join"),
        Some(serde_json::json!({
            "id": id, "nickname": format!("nick-{id}"), "model": "llama3", "endpoint": endpoint,
            "participantSecret": secret,
        })),
    )
    .await
}

/// Leave with the participant's secret.
pub async fn leave(addr: SocketAddr, code: &str, id: &str, secret: &str) -> Resp {
    let mut c = Conn::open(addr).await;
    c.request_with(
        "DELETE",
        &format!("/rooms/{code}/leave/{id}"),
        None,
        &format!("Gambiarra-Participant-Secret: {secret}\r\n"),
    )
    .await
}

/// An SSE subscriber on a raw connection.
pub struct Sse {
    pub conn: Conn,
    pending: Vec<u8>,
}

/// One parsed event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Option<u64>,
    pub name: String,
    pub data: Value,
}

impl Sse {
    pub async fn open(
        addr: SocketAddr,
        code: &str,
        extra: &str,
    ) -> (u16, Vec<(String, String)>, Sse) {
        Self::open_on(Conn::open(addr).await, code, extra).await
    }

    pub async fn open_on(conn: Conn, code: &str, extra: &str) -> (u16, Vec<(String, String)>, Sse) {
        Self::open_path(conn, &format!("/rooms/{code}/events"), extra).await
    }

    /// A stream at `path` (with a query, say).
    pub async fn open_path(
        mut conn: Conn,
        path: &str,
        extra: &str,
    ) -> (u16, Vec<(String, String)>, Sse) {
        conn.send(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{extra}\r\n")
                .as_bytes(),
        )
        .await;
        let (status, headers) = conn.read_head().await.expect("head");
        (
            status,
            headers,
            Sse {
                conn,
                pending: Vec::new(),
            },
        )
    }

    /// The next event or comment block (comments come back with name ":comment"). None when the
    /// stream ends; `ended_cleanly` tells whether it ended with the terminating chunk.
    pub async fn next_block(&mut self) -> Option<Result<Event, bool>> {
        loop {
            if let Some(end) = find(&self.pending, b"\n\n") {
                let block = String::from_utf8(self.pending.drain(..end + 2).collect()).unwrap();
                let mut ev = Event {
                    id: None,
                    name: String::from("message"),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.name = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    } else if line.starts_with(':') {
                        ev.name = ":comment".into();
                    }
                }
                if !data.is_empty() {
                    ev.data = serde_json::from_str(&data).unwrap();
                }
                return Some(Ok(ev));
            }
            match self.conn.read_chunk().await {
                Some(c) if c.is_empty() => return Some(Err(true)),
                Some(c) => self.pending.extend_from_slice(&c),
                None => return Some(Err(false)),
            }
        }
    }

    /// The next event that is not a comment; panics if the stream ends.
    pub async fn next(&mut self) -> Event {
        loop {
            match self.next_block().await {
                Some(Ok(e)) if e.name == ":comment" => continue,
                Some(Ok(e)) => return e,
                other => panic!("stream ended: {other:?}"),
            }
        }
    }

    /// Skip events until one named `name`.
    pub async fn until(&mut self, name: &str) -> Event {
        loop {
            let e = self.next().await;
            if e.name == name {
                return e;
            }
        }
    }
}

/// One request with extra header lines on a fresh connection.
pub async fn req_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
    extra: &str,
) -> Resp {
    let mut c = Conn::open(addr).await;
    c.request_with(method, path, body.as_ref(), extra).await
}
