//! Hub events into the monitor's model: follow a room's event stream (reconnecting, giving up
//! on a refusal), apply each event to the watched rooms, and resolve which rooms to watch.

use tokio::sync::mpsc;

use super::model::{GIVING_UP, RoomView, clock};
use crate::client::HubClient;
use crate::client::events::HubEvent;
use crate::types::now_ms;

/// An event of one room, for whoever renders.
pub(crate) struct RoomEvent {
    pub(crate) code: String,
    pub(crate) event: HubEvent,
}

/// Subscribe to `code` and forward its events until the receiver goes away. A hub that cannot
/// be reached is tried again (1 s, doubling to 30 s); one that refuses (a wrong password, a
/// room that is gone) is reported once as `Disconnected` ending in [`GIVING_UP`], and not
/// retried. Once subscribed, the stream reconnects by itself.
pub(crate) async fn follow(hub: HubClient, code: String, tx: mpsc::Sender<RoomEvent>) {
    // False once nobody listens any more.
    let forward = async |event: HubEvent| {
        let code = code.clone();
        tx.send(RoomEvent { code, event }).await.is_ok()
    };
    let mut wait = std::time::Duration::from_secs(1);
    let mut stream = loop {
        match hub.subscribe(&code, None).await {
            Ok(s) => break s,
            Err(e) => {
                let refused = matches!(e, crate::client::ClientError::Hub { status, .. } if (400..500).contains(&status));
                let error = if refused {
                    format!("{e}; {GIVING_UP}")
                } else {
                    format!("{e}; trying again in {} s", wait.as_secs())
                };
                if !forward(HubEvent::Disconnected { error }).await || refused {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    };
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(r) => r.event,
            Err(e) => HubEvent::Disconnected {
                error: e.to_string(),
            },
        };
        if !forward(event).await {
            return;
        }
    }
}

/// Apply a room event to the watched rooms (refetching the room's participants after a
/// `resync`); returns the room and the log line the event made.
pub(crate) async fn apply_event<'a>(
    hub: &HubClient,
    rooms: &'a mut [RoomView],
    ev: &RoomEvent,
) -> Option<(&'a RoomView, String)> {
    let room = rooms.iter_mut().find(|r| r.code == ev.code)?;
    if matches!(ev.event, HubEvent::Resync { .. })
        && let Ok(list) = hub.participants(&room.code).await
    {
        room.set_participants(list);
    }
    let line = room.apply(&ev.event, &clock(now_ms()))?;
    Some((room, line))
}

/// The rooms to watch, with their names: the ones asked for, else every room.
pub(crate) async fn resolve_rooms(
    hub: &HubClient,
    wanted: &[String],
) -> Result<Vec<RoomView>, String> {
    let rooms = hub.list_rooms().await.map_err(|e| e.to_string())?;
    if wanted.is_empty() {
        return Ok(rooms
            .iter()
            .map(|r| RoomView::new(&r.code, &r.name))
            .collect());
    }
    wanted
        .iter()
        .map(|w| {
            rooms
                .iter()
                .find(|r| r.code.eq_ignore_ascii_case(w))
                .map(|r| RoomView::new(&r.code, &r.name))
                .ok_or_else(|| format!("room {w} not found on {}", hub.url()))
        })
        .collect()
}
