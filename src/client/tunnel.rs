//! The agent's side of reverse tunnels: keep `pool` upgraded connections to the hub open; when
//! the hub writes a request on one, open its replacement at once and splice the socket to the
//! local model server until the exchange is over.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::HubClient;
use crate::http::client::read_head;
use crate::http::upstream::{Target, Upstream};
use crate::hub::proxy::tunnel::{SECRET_HEADER, UPGRADE_TOKEN};

/// Default tunnels kept open.
pub const TUNNEL_POOL: usize = 4;
/// Delay before retrying a tunnel that could not be opened; doubles up to 5 s.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What the tunnels need; the secret changes when the agent re-joins.
#[derive(Clone)]
pub struct TunnelSpec {
    pub hub: HubClient,
    pub code: String,
    pub id: String,
    pub secret: Arc<RwLock<String>>,
    /// The local model server the hub's requests are spliced to.
    pub local: Arc<Target>,
}

/// Most tunnels one agent keeps, used or idle.
pub const MAX_TUNNELS: usize = 64;

enum SlotEnd {
    /// The tunnel was used (it carried requests until one side closed it).
    Used,
    /// It could not be opened, or closed before any use.
    Unused { failed: bool },
}

/// Keep `pool` idle tunnels open until `stop` turns true. A tunnel's first request makes it a
/// pipe to one keep-alive connection of the local server, and another idle tunnel is opened at
/// once (up to [`MAX_TUNNELS`]), so the hub always has a free tunnel when demand grows. The
/// tunnels belong to this future: dropping or aborting it closes them all.
pub async fn run(spec: TunnelSpec, pool: usize, mut stop: watch::Receiver<bool>) {
    let pool = pool.clamp(1, MAX_TUNNELS);
    let (events, mut ended) = tokio::sync::mpsc::unbounded_channel::<Event>();
    let mut slots = tokio::task::JoinSet::new();
    let (mut idle, mut total, mut failures) = (0usize, 0usize, 0u32);
    let spawn = |slots: &mut tokio::task::JoinSet<()>, delay: Duration| {
        slots.spawn(slot(spec.clone(), events.clone(), delay));
    };
    for _ in 0..pool {
        spawn(&mut slots, Duration::ZERO);
    }
    idle += pool;
    total += pool;
    loop {
        let event = tokio::select! {
            e = ended.recv() => match e { Some(e) => e, None => return },
            _ = stop.changed() => return,
            Some(_) = slots.join_next() => continue,
        };
        match event {
            Event::FirstUse => {
                failures = 0;
                idle -= 1;
            }
            Event::End(SlotEnd::Used) => total -= 1,
            Event::End(SlotEnd::Unused { failed }) => {
                total -= 1;
                idle -= 1;
                failures = if failed {
                    failures.saturating_add(1)
                } else {
                    0
                };
            }
        }
        // Keep `pool` idle tunnels; back off while the hub cannot be reached.
        let delay = if failures == 0 {
            Duration::ZERO
        } else {
            (RETRY_MIN * 2u32.saturating_pow(failures.min(6) - 1)).min(RETRY_MAX)
        };
        while idle < pool && total < MAX_TUNNELS {
            spawn(&mut slots, delay);
            idle += 1;
            total += 1;
        }
    }
}

enum Event {
    FirstUse,
    End(SlotEnd),
}

/// A parked tunnel the hub closes this soon after opening it was refused, not retired: the next
/// one backs off like after a failed connection.
const REFUSED_WITHIN: Duration = Duration::from_secs(2);

/// One tunnel's life: open it, wait for its first request, then carry requests until either
/// side closes.
async fn slot(
    spec: TunnelSpec,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    delay: Duration,
) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let opened = tokio::time::Instant::now();
    let (mut io, mut first) = match open(&spec).await {
        Ok(t) => t,
        Err(_) => {
            let _ = events.send(Event::End(SlotEnd::Unused { failed: true }));
            return;
        }
    };
    // Parked at the hub: wait for the first request's bytes.
    if first.is_empty() && io.read_buf(&mut first).await.unwrap_or(0) == 0 {
        // The hub closed it (restart, re-join, too many parked). At once: it has no room for
        // this tunnel, so the next one waits (backs off) rather than spinning.
        let failed = opened.elapsed() < REFUSED_WITHIN;
        let _ = events.send(Event::End(SlotEnd::Unused { failed }));
        return;
    }
    let _ = events.send(Event::FirstUse);
    let _ = splice(&spec.hub, &spec.local, io, first).await;
    let _ = events.send(Event::End(SlotEnd::Used));
}

/// Connect to the hub and switch the connection to a tunnel. Returns it with any bytes that
/// came after the 101.
async fn open(spec: &TunnelSpec) -> std::io::Result<(Upstream, BytesMut)> {
    let target = &spec.hub.target;
    let mut conn = spec
        .hub
        .connector
        .connect_fresh(target)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let secret = spec.secret.read().map(|s| s.clone()).unwrap_or_default();
    let head = format!(
        "GET {}/rooms/{}/tunnel/{} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n{SECRET_HEADER}: {secret}\r\n{}User-Agent: gambiarra/{}\r\n\r\n",
        target.base_path,
        super::enc(&spec.code),
        super::enc(&spec.id),
        target.authority,
        spec.hub.password_header(),
        env!("CARGO_PKG_VERSION"),
    );
    conn.write_all(head.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    let resp = read_head(&mut conn, &mut buf).await?;
    if resp.status != 101 {
        return Err(std::io::Error::other(format!(
            "hub answered {}",
            resp.status
        )));
    }
    Ok((conn, buf))
}

/// Join the tunnel to a keep-alive connection of the local server and pass bytes both ways
/// until either side closes: requests from the hub, answers back, one after another.
async fn splice(
    hub: &HubClient,
    local: &Target,
    mut tunnel: Upstream,
    first: BytesMut,
) -> std::io::Result<()> {
    let mut server = match hub.connector.connect_fresh(local).await {
        Ok(s) => s,
        Err(e) => {
            // Tell the hub (and so the client) why, rather than hanging up.
            let body = serde_json::json!({"error": {
                "message": format!("The participant's model server is unreachable: {e}"),
                "type": "server_error", "code": "participant_server_unreachable"}})
            .to_string();
            let answer = format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            tunnel.write_all(answer.as_bytes()).await?;
            return tunnel.shutdown().await;
        }
    };
    server.write_all(&first).await?;
    let (mut tr, mut tw) = tokio::io::split(tunnel);
    let (mut sr, mut sw) = tokio::io::split(server);
    // Whichever side closes first ends the pipe: the local server after its keep-alive
    // timeout, or the hub when it drops the tunnel.
    tokio::select! {
        _ = tokio::io::copy(&mut tr, &mut sw) => {}
        _ = tokio::io::copy(&mut sr, &mut tw) => {}
    }
    Ok(())
}
