//! `gambiarra monitor`: watch rooms live. `--plain` (and any stdout that is not a terminal)
//! prints one line per event; otherwise a terminal UI (feature `tui`).

use std::io::IsTerminal;
use std::process::ExitCode;

use argh::FromArgs;
use tokio::sync::mpsc;

use crate::client::HubClient;
use crate::client::events::HubEvent;
use crate::monitor::{RoomView, clock};
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

/// Subscribe to `code` and forward its events until the receiver goes away. A refused
/// reconnect (the room is gone) is forwarded as `Disconnected`; the stream keeps retrying.
pub async fn follow(hub: HubClient, code: String, tx: mpsc::Sender<RoomEvent>) {
    let mut stream = match hub.subscribe(&code, None).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx
                .send(RoomEvent {
                    code,
                    event: HubEvent::Disconnected {
                        error: e.to_string(),
                    },
                })
                .await;
            return;
        }
    };
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(r) => r.event,
            Err(e) => HubEvent::Disconnected {
                error: e.to_string(),
            },
        };
        if tx
            .send(RoomEvent {
                code: code.clone(),
                event,
            })
            .await
            .is_err()
        {
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
    if rooms.is_empty() {
        println!("No rooms available.");
        return ExitCode::SUCCESS;
    }
    let (tx, mut rx) = mpsc::channel(1024);
    for room in &mut rooms {
        if let Ok(list) = hub.participants(&room.code).await {
            room.set_participants(list);
        }
        tokio::spawn(follow(hub.clone(), room.code.clone(), tx.clone()));
    }
    drop(tx);
    let signal = super::serve::wait_for_signal();
    tokio::pin!(signal);
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => match ev { Some(ev) => ev, None => return ExitCode::SUCCESS },
            _ = &mut signal => return ExitCode::SUCCESS,
        };
        if let Some((room, line)) = apply_event(&hub, &mut rooms, &ev).await {
            // `HH:MM:SS CODE text`
            let (time, text) = line.split_once(' ').unwrap_or(("", &line));
            println!("{time} {} {text}", room.code);
        }
    }
}
