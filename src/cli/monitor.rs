//! `gambiarra monitor`: watch rooms live. `--plain` (and any stdout that is not a terminal)
//! prints one line per event; otherwise a terminal UI (feature `tui`).

use std::io::IsTerminal;
use std::process::ExitCode;

use argh::FromArgs;
use tokio::sync::mpsc;

use crate::client::HubClient;
use crate::client::events::HubEvent;
use crate::monitor::{GIVING_UP, RoomView, clock};
use crate::types::now_ms;

/// Watch rooms live: participants, their status and every request.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "monitor",
    example = "Watch one room in the terminal UI:\n  $ gambiarra monitor --room K7QF2M\nOne line per event, for scripts and logs:\n  $ gambiarra monitor --room K7QF2M --plain",
    note = "Without --room, --plain watches every room on the hub and the terminal UI offers a room picker."
)]
pub struct MonitorArgs {
    /// hub URL (default: $GAMBIARRA_HUB, else the one hub discovered on the LAN, else
    /// http://localhost:3000)
    #[argh(option)]
    pub hub: Option<String>,
    /// PEM CA certificate to trust for an https:// hub with a self-signed certificate
    #[argh(option)]
    pub ca: Vec<String>,
    /// password of a protected room (default: $GAMBIARRA_PASSWORD)
    #[argh(option)]
    pub password: Option<String>,
    /// room to watch (repeatable)
    #[argh(option, short = 'r')]
    pub room: Vec<String>,
    /// print one line per event instead of the terminal UI
    #[argh(switch)]
    pub plain: bool,
}

/// An event of one room, for whoever renders.
pub struct RoomEvent {
    pub code: String,
    pub event: HubEvent,
}

/// Subscribe to `code` and forward its events until the receiver goes away. A hub that cannot
/// be reached is tried again (1 s, doubling to 30 s); one that refuses (a wrong password, a
/// room that is gone) is reported once as `Disconnected` ending in [`GIVING_UP`], and not
/// retried. Once subscribed, the stream reconnects by itself.
pub async fn follow(hub: HubClient, code: String, tx: mpsc::Sender<RoomEvent>) {
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
pub async fn apply_event<'a>(
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
pub async fn resolve_rooms(hub: &HubClient, wanted: &[String]) -> Result<Vec<RoomView>, String> {
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

pub fn run(args: MonitorArgs) -> ExitCode {
    let (hub, rt) = match super::hub_session("monitor", args.hub.clone(), &args.ca) {
        Ok(session) => session,
        Err(code) => return code,
    };
    let password = super::secret_or_env(args.password.clone(), "GAMBIARRA_PASSWORD");
    let hub = hub.with_password(password.as_deref());
    let plain = args.plain || !std::io::stdout().is_terminal() || !cfg!(feature = "tui");
    if plain {
        rt.block_on(plain_mode(hub, args.room))
    } else {
        #[cfg(feature = "tui")]
        {
            rt.block_on(super::monitor_tui::run(hub, args.room))
        }
        #[cfg(not(feature = "tui"))]
        {
            unreachable!("plain is forced without the tui feature")
        }
    }
}

async fn plain_mode(hub: HubClient, wanted: Vec<String>) -> ExitCode {
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
    let signal = super::wait_for_signal();
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
                room.code, p.nickname, p.model, p.status
            );
        }
        room.set_participants(list);
    }
    tokio::spawn(follow(hub.clone(), room.code.clone(), tx.clone()));
}
