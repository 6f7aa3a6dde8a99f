//! The agent's side of reverse tunnels: keep `pool` upgraded connections to the hub open; when
//! the hub writes a request on one, open its replacement at once and splice the socket to the
//! local model server until the exchange is over.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::HubClient;
use crate::http::client::parse_response;
use crate::hub::connector::{Target, Upstream};
use crate::hub::tunnel::UPGRADE_TOKEN;

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

/// Run `pool` tunnel slots until `stop` turns true. The slots belong to this future:
/// dropping or aborting it closes every parked tunnel too.
pub async fn run(spec: TunnelSpec, pool: usize, stop: watch::Receiver<bool>) {
    let mut slots = tokio::task::JoinSet::new();
    for _ in 0..pool.max(1) {
        slots.spawn(slot(spec.clone(), stop.clone()));
    }
    while slots.join_next().await.is_some() {}
}

/// One slot: open a tunnel, wait for a request, hand it off and open the next.
async fn slot(spec: TunnelSpec, mut stop: watch::Receiver<bool>) {
    let mut retry = RETRY_MIN;
    while !*stop.borrow() {
        let opened = tokio::select! {
            r = open(&spec) => r,
            _ = stop.changed() => return,
        };
        let (mut io, mut first) = match opened {
            Ok(t) => t,
            Err(_) => {
                tokio::select! {
                    _ = tokio::time::sleep(retry) => {}
                    _ = stop.changed() => return,
                }
                retry = (retry * 2).min(RETRY_MAX);
                continue;
            }
        };
        retry = RETRY_MIN;
        // Parked at the hub: wait for the request's first bytes.
        if first.is_empty() {
            let n = tokio::select! {
                r = io.read_buf(&mut first) => r.unwrap_or(0),
                _ = stop.changed() => return,
            };
            if n == 0 {
                continue; // the hub closed it (restart, re-join): open another
            }
        }
        // Serve this one in the background; this slot opens the replacement right away.
        let local = spec.local.clone();
        let hub = spec.hub.clone();
        tokio::spawn(async move {
            let _ = splice(&hub, &local, io, first).await;
        });
    }
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
        "GET {}/rooms/{}/tunnel/{} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\nAuthorization: Bearer {secret}\r\nUser-Agent: gambiarra/{}\r\n\r\n",
        target.base_path,
        super::enc(&spec.code),
        super::enc(&spec.id),
        target.authority,
        env!("CARGO_PKG_VERSION"),
    );
    conn.write_all(head.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(parts) = parse_response(&buf).map_err(|e| std::io::Error::other(e.message()))? {
            let len = parts.len;
            let resp = parts.freeze(buf.split_to(len).freeze());
            if resp.status != 101 {
                return Err(std::io::Error::other(format!(
                    "hub answered {}",
                    resp.status
                )));
            }
            return Ok((conn, buf));
        }
        if conn.read_buf(&mut buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Pass the hub's request to the local server and its answer back, until both are done.
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
    tokio::io::copy_bidirectional(&mut tunnel, &mut server).await?;
    Ok(())
}
