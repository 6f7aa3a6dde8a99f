//! `monitor --plain`: one line per event (`HH:MM:SS CODE text`), for scripts and logs. Watching
//! every room, it follows rooms created later too.

use std::process::ExitCode;

use tokio::sync::mpsc;

use super::feed::{RoomEvent, apply_event, follow, resolve_rooms};
use super::model::{RoomView, clock};
use crate::client::HubClient;
use crate::client::events::HubEvent;
use crate::types::now_ms;

pub(super) async fn run(hub: HubClient, wanted: Vec<String>) -> ExitCode {
    let mut rooms = match resolve_rooms(&hub, &wanted).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gambiarra monitor: {e}");
            return ExitCode::FAILURE;
        }
    };
    if rooms.is_empty() && !wanted.is_empty() {
        println!("No rooms available.");
        return ExitCode::SUCCESS;
    }
    let every_room = wanted.is_empty();
    let (tx, mut rx) = mpsc::channel(1024);
    for room in &mut rooms {
        start_watching(&hub, room, &tx).await;
    }
    if rooms.is_empty() {
        println!(
            "{} No rooms yet; waiting for one to be created.",
            clock(now_ms())
        );
    }
    // Hub-wide events (a room created or deleted) arrive on every watched room's stream:
    // printed once each.
    let mut announced = std::collections::HashSet::new();
    let signal = crate::cli::wait_for_signal();
    tokio::pin!(signal);
    // Without rooms to follow there is no stream to hear of new ones: poll the list.
    let mut poll = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => return ExitCode::SUCCESS },
            _ = poll.tick(), if every_room && rooms.is_empty() => {
                if let Ok(found) = resolve_rooms(&hub, &[]).await {
                    for mut room in found {
                        println!("{} {} room: {}", clock(now_ms()), room.code, room.name);
                        start_watching(&hub, &mut room, &tx).await;
                        rooms.push(room);
                    }
                }
                continue;
            }
            _ = &mut signal => return ExitCode::SUCCESS,
        };
        let hub_wide = match &ev.event {
            HubEvent::RoomCreated(r) => Some(("created", r.code.clone())),
            HubEvent::RoomDeleted { code, .. } if *code != ev.code => {
                Some(("deleted", code.clone()))
            }
            _ => None,
        };
        if let Some(key) = hub_wide {
            if !announced.insert(key.clone()) {
                continue;
            }
            if announced.len() > 4096 {
                announced.clear();
            }
            // Watching every room: follow new ones too.
            if let HubEvent::RoomCreated(r) = &ev.event
                && every_room
                && !rooms.iter().any(|w| w.code == r.code)
            {
                let mut room = RoomView::new(&r.code, &r.name);
                start_watching(&hub, &mut room, &tx).await;
                rooms.push(room);
            }
        }
        if let Some((room, line)) = apply_event(&hub, &mut rooms, &ev).await {
            // `HH:MM:SS CODE text`
            let (time, text) = line.split_once(' ').unwrap_or(("", &line));
            println!("{time} {} {text}", room.code);
        }
    }
}

/// List who is in `room` now (a line each), then follow its events.
async fn start_watching(hub: &HubClient, room: &mut RoomView, tx: &mpsc::Sender<RoomEvent>) {
    if let Ok(list) = hub.participants(&room.code).await {
        let now = clock(now_ms());
        for p in &list {
            println!(
                "{now} {} {} is here with {} ({:?})",
                room.code,
                p.nickname,
                super::model::models_line(p),
                p.status
            );
        }
        room.set_participants(list);
    }
    tokio::spawn(follow(hub.clone(), room.code.clone(), tx.clone()));
}
